"""The device core end to end under cocotb + Verilator (tests/cocotb/core_tb.py): cocotbext-eth
MAC peers on both ports, scapy traffic, and the real host driver programming the rules."""

from pathlib import Path

import pytest

from partner.hdl.core import DeviceCore
from partner.sim import verilator

pytestmark = pytest.mark.cocotb

BENCH = Path(__file__).parent / "cocotb" / "core_tb.py"


def core_model(width: int):
    return verilator.build(lambda: DeviceCore(ports=2, width_bytes=width, rules=16, queues=2),
                           name=f"core_w{width}")


def check_core_system(width: int):
    result = core_model(width).run(BENCH, env={"PARTNER_CORE_WIDTH": str(width)}, seed=1)
    names = {name.rsplit(".", 1)[1] for name in result.passed}
    assert names == {"demux_delivers_forwards_and_drops", "bad_frames_are_counted_not_delivered",
                     "host_transmit_and_refused_settings", "fuzz_every_frame_is_accounted_for",
                     "quota_drops_are_counted_and_raise_an_event",
                     "host_transmit_waits_instead_of_dropping"}


# One class per width: pytest-xdist (`--dist loadscope`, see tests/conftest.py) hands out a class
# as a unit, so the two widths' models are built and simulated on different workers.
class TestCoreWidth1:
    def test_core_system(self):
        check_core_system(1)


class TestCoreWidth8:
    def test_core_system(self):
        check_core_system(8)
