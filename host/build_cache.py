"""Where the gateware tools keep their builds, and the lock that lets parallel runs share them.

Simulation models (`partner.sim.verilator`) and synthesis runs (`partner.boards.synth`) are
cached per design hash under ``<build>/<kind>/``; ``<build>`` is ``$PARTNER_BUILD_DIR``, else the
checkout's ``build/`` (or ``./build`` for an installed package). pytest-xdist workers and
benchmarks that want the same design wait on one file lock instead of building it twice.
"""

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["build_root", "locked", "log_tail"]


def build_root(kind: str) -> Path:
    """``$PARTNER_BUILD_DIR/<kind>``, else ``<repo>/build/<kind>``."""
    if env := os.environ.get("PARTNER_BUILD_DIR"):
        return Path(env).resolve() / kind
    repo = Path(__file__).resolve().parent.parent
    if not (repo / "pyproject.toml").is_file():  # installed, not run from a checkout
        repo = Path.cwd()
    return repo / "build" / kind


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a tool's log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path.name} was not written)"
