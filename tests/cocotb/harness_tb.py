"""Benches that exercise the simulation harness itself (tests/test_sim_harness.py)."""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles


@cocotb.test()
async def idle_fifo_is_empty(dut):
    Clock(dut.clk, 10, unit="ns").start()
    await ClockCycles(dut.clk, 3)
    assert dut.o_stream__valid.value == 0


@cocotb.test()
async def deliberately_fails(dut):
    """Run only by the harness test that checks failures are reported."""
    Clock(dut.clk, 10, unit="ns").start()
    await ClockCycles(dut.clk, 3)
    assert dut.level.value.to_unsigned() == 7, "this failure is expected"
