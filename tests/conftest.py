"""Test ordering for pytest-xdist.

`make test` runs `pytest -n 2 --dist loadscope --no-loadscope-reorder`: each module (or class)
goes to one worker as a whole, so that its Verilator model is built once, and modules are handed
out in collection order. The simulations that build Verilator models (marker `cocotb`) take most
of the run, so they are collected first: each worker starts on one of them, and the quick
unit tests fill the gaps at the end instead of leaving a long build for last.
"""


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("cocotb") is None)
