"""cocotb bench for the PacketFIFO Verilog (run by tests/test_sim_harness.py).

The DUT's width and depth come from FIFO_WIDTH / FIFO_DEPTH in the environment. Beats are packed
and unpacked with the same ``packet_layout`` the gateware uses.
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from partner.hdl.stream import packet_layout

WIDTH = int(os.environ.get("FIFO_WIDTH", "4"))
DEPTH = int(os.environ.get("FIFO_DEPTH", "16"))
LAYOUT = packet_layout(WIDTH)


def beats_of(payload):
    chunks = [payload[i:i + WIDTH] for i in range(0, len(payload), WIDTH)]
    return [LAYOUT.const({"data": int.from_bytes(c, "little"), "nbytes": len(c),
                          "first": n == 0, "last": n == len(chunks) - 1}).as_bits()
            for n, c in enumerate(chunks)]


async def run_traffic(dut, frames, ready_p, rng, idle_after=64):
    """Drive ``frames`` [(bytes, drop)] back to back; return the frames seen on the output.

    One loop per clock cycle drives both sides: inputs are set after a rising edge and the
    output is sampled in ReadOnly, so a beat counts when valid and ready meet at the next edge.
    """
    schedule = [(beat, drop and n == len(beats) - 1)
                for payload, drop in frames
                for beats in [beats_of(payload)] for n, beat in enumerate(beats)]
    schedule += [None] * idle_after
    received, current = [], bytearray()
    for item in schedule:
        await RisingEdge(dut.clk)
        dut.i_stream__valid.value = item is not None
        dut.i_stream__payload.value = item[0] if item else 0
        dut.i_drop.value = bool(item and item[1])
        dut.o_stream__ready.value = rng.random() < ready_p
        await ReadOnly()
        assert dut.i_stream__ready.value == 1, "the input must never stall"
        if dut.o_stream__valid.value and dut.o_stream__ready.value:
            beat = LAYOUT.from_bits(dut.o_stream__payload.value.to_unsigned())
            assert beat.first == (len(current) == 0), "first flag out of place"
            current += beat.data.to_bytes(WIDTH, "little")[:beat.nbytes]
            if beat.last:
                received.append(bytes(current))
                current.clear()
    assert not current, "a partial frame was left on the output"
    return received


async def reset(dut):
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.i_stream__valid.value = 0
    dut.o_stream__ready.value = 0
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


def counters(dut):
    return (dut.frames_committed.value.to_unsigned(),
            dut.frames_dropped_error.value.to_unsigned(),
            dut.frames_dropped_overflow.value.to_unsigned())


@cocotb.test()
async def frames_with_and_without_drop(dut):
    """Good frames come out intact and in order, dropped frames never appear."""
    await reset(dut)
    rng = random.Random(1)
    frames = [(rng.randbytes(rng.randint(1, (DEPTH // 2) * WIDTH)), rng.random() < 0.3)
              for _ in range(60)]
    # An always-ready consumer drains faster than frames of at most DEPTH/2 beats arrive,
    # so nothing may overflow here.
    received = await run_traffic(dut, frames, ready_p=1.0, rng=rng)
    assert received == [p for p, drop in frames if not drop]
    assert counters(dut) == (len(received), sum(d for _, d in frames), 0)
    assert dut.level.value.to_unsigned() == 0


@cocotb.test()
async def overflow_drops_whole_frames(dut):
    """A stalled consumer and an oversize frame cause overflow drops, never partial frames."""
    await reset(dut)
    rng = random.Random(2)
    frames = [(rng.randbytes((DEPTH + 2) * WIDTH), False)]  # can never fit
    frames += [(rng.randbytes(rng.randint(1, DEPTH * WIDTH)), False) for _ in range(40)]
    received = await run_traffic(dut, frames, ready_p=0.2, rng=rng, idle_after=40 * DEPTH)
    committed, errors, overflows = counters(dut)
    assert errors == 0 and overflows >= 2
    assert committed == len(received) and committed + overflows == len(frames)
    it = iter(p for p, _ in frames)
    assert all(any(r == p for p in it) for r in received), "output is not a subsequence of input"
