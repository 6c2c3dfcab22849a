"""Register slice (amaranth.sim): beats through a skid buffer, in order, with random
backpressure, and one beat per cycle when nothing stalls."""

import random

from amaranth.lib import data
from amaranth.sim import Simulator

from partner.hdl.stream import StreamSlice
from partner.sim.models.pcie_host import StreamSink, StreamSource


def test_stream_slice_keeps_every_beat_in_order():
    dut = StreamSlice(data.StructLayout({"x": 16}))
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    src = StreamSource(dut.i, random.Random(4), 0.8)
    src.put(*range(300))
    sink = StreamSink(dut.o, random.Random(5), 0.5)
    sim.add_process(src.run)
    sim.add_process(sink.run)

    async def check(ctx):
        await ctx.tick().repeat(800)
        assert sink.items == list(range(300))

    sim.add_testbench(check)
    sim.run()


def test_stream_slice_full_rate():
    dut = StreamSlice(data.StructLayout({"x": 8}))
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    src = StreamSource(dut.i, random.Random(4))
    src.put(*range(100))
    sink = StreamSink(dut.o, random.Random(5))
    sim.add_process(src.run)
    sim.add_process(sink.run)

    async def check(ctx):
        await ctx.tick().repeat(103)
        assert sink.items == list(range(100)), "one beat per cycle, two cycles of latency"

    sim.add_testbench(check)
    sim.run()
