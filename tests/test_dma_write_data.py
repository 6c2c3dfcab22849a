"""The DMA engine's write data (amaranth.sim): committed RX frames fed from the core's queues
through the staging FIFO and cut into chunks (`FrameFeed`), and the writer's data in the order
of its commands, frame chunks and completion entries interleaved (`WriteData`)."""

import random

from amaranth.sim import Simulator

from partner.hdl.core import host_rx_layout
from partner.hdl.pcie.dma_entries import entry_out_layout
from partner.hdl.pcie.dma_write_data import FrameFeed, WriteData
from partner.hdl.stream import packet_layout
from partner.sim.models.pcie_host import StreamSink, StreamSource, pack, unpack

WB = 8


def beats(payload, layout=None, **meta):
    parts = [payload[i:i + WB] for i in range(0, len(payload), WB)]
    out = []
    for n, part in enumerate(parts):
        beat = pack(packet_layout(WB), data=int.from_bytes(part, "little"), nbytes=len(part),
                    first=n == 0, last=n == len(parts) - 1)
        out.append(beat if layout is None else pack(layout, beat=beat, **meta))
    return out


def packets(sink):
    """The byte strings of the packets a sink took."""
    out, current = [], b""
    for raw in sink.items:
        beat = unpack(packet_layout(WB), raw)
        current += beat["data"].to_bytes(WB, "little")[:beat["nbytes"]]
        if beat["last"]:
            out.append(current)
            current = b""
    return out


def test_frame_feed_takes_only_committed_frames_and_marks_draining():
    """Frames of two queues, committed out of queue order and cut into chunks (one with a
    discarded tail): the chunks come out in commit order; a queue's next frame stays in its
    stream until it is committed; `draining` is set by the commit and cleared when the
    frame's last beat has left the queue's stream."""
    dut = FrameFeed(WB, 2, staging_bytes=256)
    rng = random.Random(3)
    frames = {q: [rng.randbytes(rng.randint(1, 90)) for _ in range(3)] for q in range(2)}
    sources = []
    for q in range(2):
        source = StreamSource(dut.rx[q], random.Random(q), 0.8)
        for frame in frames[q]:
            source.put(*beats(frame, host_rx_layout(WB)))
        sources.append(source)
    sink = StreamSink(dut.o, random.Random(9), 0.6)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for process in (*(s.run for s in sources), sink.run):
        sim.add_process(process)
    order = [1, 0, 0, 1, 1, 0]
    expected = []

    async def testbench(ctx):
        taken = {0: 0, 1: 0}
        for q in order:
            frame = frames[q][taken[q]]
            taken[q] += 1
            ctx.set(dut.commit.payload, q)
            ctx.set(dut.commit.valid, 1)
            await ctx.tick().until(dut.commit.ready)
            ctx.set(dut.commit.valid, 0)
            assert ctx.get(dut.draining) >> q & 1, "the commit marks the queue draining"
            # Two chunks; a frame longer than 40 bytes has its second piece discarded.
            cut = max(1, len(frame) // 2)
            pieces = [(0, cut, 0)]
            if cut < len(frame):
                pieces.append((cut, len(frame) - cut, int(len(frame) > 40)))
            for at, length, discard in pieces:
                ctx.set(dut.cmd.payload, {"length": length, "discard": discard})
                ctx.set(dut.cmd.valid, 1)
                await ctx.tick().until(dut.cmd.ready)
                ctx.set(dut.cmd.valid, 0)
                if not discard:
                    expected.append(frame[at:at + length])
            await ctx.tick().until(~dut.draining[q])
            waiting = sum(-(-len(f) // WB) for f in frames[q][taken[q]:])
            assert len(sources[q].queue) == waiting, "a frame was taken before its commit"
        await ctx.tick().until(~dut.busy)
        await ctx.tick().repeat(5)

    sim.add_testbench(testbench)
    sim.run()
    assert packets(sink) == expected


def test_write_data_follows_the_commands():
    """Commands of frame chunks and completion entries interleaved: `o` delivers each
    command's bytes as one packet in command order, under backpressure on every side."""
    dut = WriteData(WB, commands=4, entries=2)
    rng = random.Random(5)
    kinds = [rng.randrange(2) for _ in range(40)]
    chunks = [rng.randbytes(rng.randint(1, 40)) for k in kinds if k == 0]
    entries = [(rng.randbytes(16), rng.choice([8, 16])) for k in kinds if k == 1]
    kind_src = StreamSource(dut.kind, random.Random(1), 0.7)
    kind_src.put(*(pack(dut.kind.payload.shape(), entry=k) for k in kinds))
    entry_src = StreamSource(dut.entry, random.Random(2), 0.5)
    entry_src.put(*(pack(entry_out_layout(), entry=int.from_bytes(e, "little"), nbytes=n)
                    for e, n in entries))
    frame_src = StreamSource(dut.frames, random.Random(3), 0.6)
    for chunk in chunks:
        frame_src.put(*beats(chunk))
    sink = StreamSink(dut.o, random.Random(4), 0.5)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for process in (kind_src.run, entry_src.run, frame_src.run, sink.run):
        sim.add_process(process)

    async def testbench(ctx):
        await ctx.tick().repeat(3000)

    sim.add_testbench(testbench)
    sim.run()
    chunk_it, entry_it = iter(chunks), iter(entries)
    expected = [next(chunk_it) if k == 0 else (lambda e: e[0][:e[1]])(next(entry_it))
                for k in kinds]
    assert packets(sink) == expected
