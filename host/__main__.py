"""``python -m partner``: the same command line as the ``partner`` script."""

import sys

from .cli import main

sys.exit(main())
