"""Repacker (amaranth.sim): a byte stream cut into commanded packets, with random
backpressure."""

import random

import pytest
from amaranth.sim import Simulator

from partner.hdl.pcie.dma_repack import Repacker, repack_command_layout
from partner.hdl.stream import packet_layout
from partner.sim.models.pcie_host import StreamSink, StreamSource, pack, unpack


def beats(wb, payload, chunked=None):
    """Packet beats of `payload`; `chunked` cuts it into several packets (short beats inside)."""
    layout = packet_layout(wb)
    out = []
    for piece in chunked or [payload]:
        parts = [piece[i:i + wb] for i in range(0, len(piece), wb)]
        for n, c in enumerate(parts):
            # Lanes past nbytes carry junk: the repacker must ignore them.
            raw = int.from_bytes(c + b"\xa5" * (wb - len(c)), "little")
            out.append(pack(layout, data=raw, nbytes=len(c), first=n == 0,
                            last=n == len(parts) - 1))
    return out


def cut(rng, total):
    sizes = []
    while total:
        n = min(total, rng.choice([1, 2, 3, 7, 8, 9, 15, 64, 100, 1500]))
        sizes.append(n)
        total -= n
    return sizes


@pytest.mark.parametrize("wb", [8, 16])
def test_repacker_cuts_and_glues(wb):
    rng = random.Random(wb)
    dut = Repacker(wb)
    frames, expected, commands, inputs = [], [], [], []
    for _ in range(12):
        data = rng.randbytes(rng.randint(1, 700))
        frames.append(data)
        pieces = cut(rng, len(data))
        discard_last = len(pieces) > 1 and rng.random() < 0.4
        pos = 0
        for i, n in enumerate(pieces):
            drop = discard_last and i == len(pieces) - 1
            commands.append(pack(repack_command_layout(), length=n, discard=drop))
            if not drop:
                expected.append(data[pos:pos + n])
            pos += n
        # The input arrives as the frame, or cut into chunk packets of their own sizes.
        chunks, pos = [], 0
        for n in cut(rng, len(data)):
            chunks.append(data[pos:pos + n])
            pos += n
        inputs += beats(wb, data, chunks if rng.random() < 0.5 else None)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    src_cmd = StreamSource(dut.cmd, random.Random(1), 0.5)
    src_cmd.put(*commands)
    src = StreamSource(dut.i, random.Random(2), 0.7)
    src.put(*inputs)
    sink = StreamSink(dut.o, random.Random(3), 0.6)
    sim.add_process(src_cmd.run)
    sim.add_process(src.run)
    sim.add_process(sink.run)
    got = []

    async def check(ctx):
        packet = b""
        while len(got) < len(expected):
            await ctx.tick()
            while sink.items:
                beat = unpack(packet_layout(wb), sink.items.pop(0))
                assert beat["first"] == (packet == b"")
                assert beat["nbytes"] == wb or beat["last"], "a short beat before the last"
                packet += beat["data"].to_bytes(wb, "little")[:beat["nbytes"]]
                if beat["last"]:
                    got.append(packet)
                    packet = b""
        for _ in range(2000):  # the last frame may end with a long discarded tail
            if not src.queue:
                break
            await ctx.tick()
        assert not src.queue, "input left unread"
        assert not sink.items, "extra output"

    sim.add_testbench(check)
    sim.run()
    assert got == expected


def test_repacker_does_not_read_ahead():
    """Bytes no command asked for stay in the input stream (an RX frame waiting for a pvec)."""
    wb = 8
    dut = Repacker(wb)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    src = StreamSource(dut.i, random.Random(2))
    src.put(*beats(wb, bytes(range(24))), *beats(wb, b"next frame"))
    cmd = StreamSource(dut.cmd, random.Random(1))
    cmd.put(pack(repack_command_layout(), length=24))
    sink = StreamSink(dut.o, random.Random(3))
    sim.add_process(src.run)
    sim.add_process(cmd.run)
    sim.add_process(sink.run)

    async def check(ctx):
        await ctx.tick().repeat(40)
        assert len(src.queue) == 2, "the next frame was read without a command"
        assert len(sink.items) == 3

    sim.add_testbench(check)
    sim.run()


def test_repacker_full_rate_across_commands():
    """With input and commands waiting and the consumer always ready, a beat leaves every cycle,
    also from one command to the next (the next command is taken with the last beat)."""
    wb = 8
    dut = Repacker(wb)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sizes = [24, 8, 40, 16, 64]
    src = StreamSource(dut.i, random.Random(2))
    src.put(*beats(wb, bytes(sum(sizes))))
    cmd = StreamSource(dut.cmd, random.Random(1))
    cmd.put(*(pack(repack_command_layout(), length=n) for n in sizes))
    sink = StreamSink(dut.o, random.Random(3))
    for process in (src.run, cmd.run, sink.run):
        sim.add_process(process)
    cycles = []

    async def watch(ctx):
        cycle = 0
        async for _, _, valid, ready in ctx.tick().sample(dut.o.valid, dut.o.ready):
            cycle += 1
            if valid and ready:
                cycles.append(cycle)
            if len(cycles) == sum(sizes) // wb:
                return

    sim.add_testbench(watch)
    sim.run()
    assert cycles[-1] - cycles[0] == len(cycles) - 1, f"idle cycles between beats: {cycles}"

