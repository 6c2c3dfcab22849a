"""The Verilator/cocotb harness (partner.sim.verilator), exercised on the PacketFIFO."""

from pathlib import Path

import pytest

from partner.hdl.packet_fifo import PacketFIFO

verilator = pytest.importorskip("partner.sim.verilator")

pytestmark = pytest.mark.cocotb

BENCHES = Path(__file__).parent / "cocotb"
WIDTH, DEPTH = 4, 16
ENV = {"FIFO_WIDTH": str(WIDTH), "FIFO_DEPTH": str(DEPTH)}


@pytest.fixture(scope="module")
def fifo_model():
    return verilator.build(PacketFIFO(WIDTH, DEPTH), name="packet_fifo")


def test_packet_fifo_cocotb(fifo_model):
    result = fifo_model.run(BENCHES / "packet_fifo_tb.py", env=ENV, seed=1)
    assert sorted(name.rsplit(".", 1)[1] for name in result.passed) == [
        "frames_with_and_without_drop", "overflow_drops_whole_frames"]
    assert result.results_xml.is_relative_to(verilator.build_root())


def test_same_design_is_built_once(fifo_model):
    binary = fifo_model.build_dir / fifo_model.name
    mtime = binary.stat().st_mtime_ns
    # A fresh instance with the same parameters and a factory: same Verilog, same build.
    again = verilator.build(lambda: PacketFIFO(WIDTH, DEPTH), name="packet_fifo")
    assert again.built is False
    assert again.build_dir == fifo_model.build_dir
    assert binary.stat().st_mtime_ns == mtime
    assert fifo_model.build_dir.parent == verilator.build_root()


def test_failing_cocotb_test_raises(fifo_model):
    with pytest.raises(AssertionError, match="deliberately_fails") as info:
        fifo_model.run(BENCHES / "harness_tb.py", testcase="deliberately_fails")
    assert "this failure is expected" in str(info.value)
    passed = fifo_model.run(BENCHES / "harness_tb.py", testcase="idle_fifo_is_empty")
    assert [name.rsplit(".", 1)[1] for name in passed.passed] == ["idle_fifo_is_empty"]


def test_no_test_ran_raises(fifo_model):
    with pytest.raises(AssertionError, match="no cocotb test ran"):
        fifo_model.run(BENCHES / "harness_tb.py", testcase="no_such_test")
