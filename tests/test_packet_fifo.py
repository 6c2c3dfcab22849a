"""PacketFIFO against a reference model, in amaranth.sim."""

import random
from collections import deque

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from partner.hdl.packet_fifo import PacketFIFO
from partner.hdl.stream import keep_mask, packet_layout
from partner.sim.beats import packet_beats

# -- stream helpers --------------------------------------------------------------------------

async def stream_put(ctx, stream, payload):
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream):
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def put_frame(ctx, dut, beats, drop=False):
    for beat in beats:
        ctx.set(dut.i_drop, drop and beat["last"])
        await stream_put(ctx, dut.i_stream, beat)
    ctx.set(dut.i_drop, 0)


async def get_frame(ctx, dut):
    beats = []
    while not beats or not beats[-1].last:
        beats.append(await stream_get(ctx, dut.o_stream))
    return b"".join(b.data.to_bytes(dut.width_bytes, "little")[:b.nbytes] for b in beats)


def simulate(dut, *testbenches):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in testbenches:
        sim.add_testbench(tb)
    sim.run()


# -- reference model -------------------------------------------------------------------------

class FIFOModel:
    """Cycle-level model of PacketFIFO: what the RTL must show before each clock edge."""

    def __init__(self, depth, meta_depth=None):
        self.depth = depth
        self.memory = deque()   # committed beats not yet in the output register
        self.pending = []       # beats of the frame being written
        self.overflowed = False
        self.out = None         # beat in the output register
        self.committed = self.dropped_error = self.dropped_overflow = 0
        self.ended = None  # the counter the last edge's frame end adds to, a cycle later
        self.meta_depth = meta_depth  # None: no metadata
        self.metas = deque()    # metadata of committed frames not yet fully read
        self.committed_pulse = False  # o_committed

    @property
    def level(self):
        return len(self.memory) + len(self.pending)

    @property
    def meta_out(self):
        """``o_meta`` while a beat is on the output: the oldest frame not fully read."""
        return self.metas[0]

    def clock(self, beat, drop, ready, meta=None):
        """Advance one edge with ``beat`` (or None) offered and ``ready`` driven; returns the
        beat transferred on the output during this edge (or None)."""
        delivered = self.out if ready else None
        full = self.level == self.depth
        meta_full = self.meta_depth is not None and len(self.metas) == self.meta_depth
        if delivered is not None and delivered["last"] and self.meta_depth is not None:
            self.metas.popleft()
        self.committed_pulse = False
        if self.ended is not None:  # the counters count a cycle after the frame's end
            setattr(self, self.ended, getattr(self, self.ended) + 1)
            self.ended = None
        if self.out is None or ready:
            self.out = self.memory.popleft() if self.memory else None
        if beat is not None:
            store = not self.overflowed and not full
            if beat["last"]:
                self.overflowed = False
                if drop:
                    self.ended = "dropped_error"
                elif not store or meta_full:
                    self.ended = "dropped_overflow"
                else:
                    self.memory.extend([*self.pending, beat])
                    self.ended = "committed"
                    self.committed_pulse = True
                    if self.meta_depth is not None:
                        self.metas.append(meta)
                self.pending = []
            elif store:
                self.pending.append(beat)
            else:
                self.pending, self.overflowed = [], True
        return delivered


# -- tests -----------------------------------------------------------------------------------

def test_directed_put_get():
    dut = PacketFIFO(width_bytes=4, depth=16)
    good, bad = bytes(range(1, 11)), bytes(range(100, 107))

    async def producer(ctx):
        await put_frame(ctx, dut, packet_beats(4, bad), drop=True)
        await put_frame(ctx, dut, packet_beats(4, good))
        await put_frame(ctx, dut, packet_beats(4, b"\x42"))

    async def consumer(ctx):
        assert await get_frame(ctx, dut) == good
        assert await get_frame(ctx, dut) == b"\x42"
        await ctx.tick().repeat(4)
        assert ctx.get(dut.o_stream.valid) == 0
        assert ctx.get(dut.frames_committed) == 2
        assert ctx.get(dut.frames_dropped_error) == 1
        assert ctx.get(dut.frames_dropped_overflow) == 0
        assert ctx.get(dut.level) == 0

    simulate(dut, producer, consumer)


def random_traffic(rng, width, depth, nframes):
    """(beats, drop) per frame: mostly small, some near or above the FIFO's size."""
    frames = []
    for _ in range(nframes):
        roll = rng.random()
        if roll < 0.1:
            nbytes = rng.randint(depth * width + 1, (depth + 4) * width)  # can never fit
        elif roll < 0.3:
            nbytes = rng.randint(depth * width // 2, depth * width)
        else:
            nbytes = rng.randint(1, 3 * width)
        frames.append((packet_beats(width, rng.randbytes(nbytes)), rng.random() < 0.2))
    return frames


@pytest.mark.parametrize(("width", "depth", "meta_depth", "seed"),
                         [(1, 8, None, 1), (4, 16, None, 2), (8, 32, None, 3),
                          (2, 16, 16, 4), (4, 16, 2, 5)])
def test_random_against_model(width, depth, meta_depth, seed):
    """Random traffic; with ``meta_depth``, every frame also carries a metadata word (12 bits),
    and ``meta_depth`` 2 makes the metadata memory a second reason for overflow."""
    rng = random.Random(seed)
    meta_layout = None if meta_depth is None else 12
    dut = PacketFIFO(width_bytes=width, depth=depth, meta_layout=meta_layout,
                     meta_depth=meta_depth)
    layout = packet_layout(width)
    frames = random_traffic(rng, width, depth, nframes=400)
    meta_rng = random.Random(seed + 100)  # leaves the traffic of each seed as it was
    metas = [meta_rng.randrange(1 << 12) for _ in frames]
    model = FIFOModel(depth, meta_depth)
    received, current = [], []
    stats = {}

    async def bench(ctx):
        # Each phase of the consumer: probability of ready, stalls make overflows likely.
        ready_p = 1.0
        schedule = deque()
        for index, (beats, drop) in enumerate(frames):
            schedule.extend([None] * rng.choice([0, 0, 0, 1, 3]))
            for beat in beats:
                if rng.random() < 0.05:
                    schedule.append(None)  # a hole inside the frame
                schedule.append((index, beat, drop and beat["last"]))
        schedule.extend([None] * (depth * 4))
        cycle = 0
        while schedule:
            if cycle % 64 == 0:
                ready_p = rng.choice([1.0, 0.7, 0.3, 0.0])
            item = schedule.popleft()
            beat, drop = (item[1], item[2]) if item else (None, False)
            meta = metas[item[0]] if item else None
            ready = rng.random() < ready_p
            ctx.set(dut.i_stream.valid, beat is not None)
            if beat is not None:
                ctx.set(dut.i_stream.payload, beat)
                if meta_depth is not None:
                    # Only sampled with the last beat: drive junk on the others.
                    ctx.set(dut.i_meta, meta if beat["last"] else meta_rng.randrange(4096))
            ctx.set(dut.i_drop, drop)
            ctx.set(dut.o_stream.ready, ready)

            assert ctx.get(dut.i_stream.ready) == 1
            valid = ctx.get(dut.o_stream.valid)
            assert valid == (model.out is not None), f"cycle {cycle}: valid"
            if valid:
                got = ctx.get(dut.o_stream.payload).as_bits()
                assert got == layout.const(model.out).as_bits(), f"cycle {cycle}: payload"
                # Whole frames only: the frame being output has been committed.
                assert ctx.get(dut.frames_committed) > len(received), f"cycle {cycle}: partial"
                if meta_depth is not None:
                    assert ctx.get(dut.o_meta) == model.meta_out, f"cycle {cycle}: meta"
            assert ctx.get(dut.level) == model.level, f"cycle {cycle}: level"
            assert ctx.get(dut.frames_committed) == model.committed
            assert ctx.get(dut.frames_dropped_error) == model.dropped_error
            assert ctx.get(dut.frames_dropped_overflow) == model.dropped_overflow
            assert ctx.get(dut.o_committed) == model.committed_pulse, f"cycle {cycle}: strobe"

            out = model.clock(beat, drop, ready, meta)  # equal to the DUT's output (above)
            if out is not None:
                current.append(out)
                if out["last"]:
                    received.append(current[:])
                    current.clear()
            await ctx.tick()
            cycle += 1
        stats["cycles"] = cycle

    simulate(dut, bench)

    # Accounting, independent of the cycle model: every frame is accounted for exactly once,
    # drops by their cause, and what came out is exactly the committed frames, in order.
    sent_good = [beats for beats, drop in frames if not drop]
    assert model.committed + model.dropped_error + model.dropped_overflow == len(frames)
    assert model.dropped_error == sum(drop for _, drop in frames)
    assert model.committed == len(received)
    assert not current
    it = iter(sent_good)
    assert all(any(frame == good for good in it) for frame in received), "not a subsequence"
    too_big = sum(len(beats) > depth for beats, drop in frames if not drop)
    assert model.dropped_overflow >= too_big > 0
    assert model.dropped_overflow > too_big, "traffic never overflowed a frame that could fit"


def test_metadata_travels_with_whole_frames():
    """i_meta is taken with the last beat of committed frames only; o_meta is the frame's
    metadata on every one of its beats, through output stalls; with meta_depth 2, a third
    complete frame waiting in the FIFO is dropped although its data would fit."""
    dut = PacketFIFO(width_bytes=2, depth=16, meta_layout=packet_layout(1), meta_depth=2)
    meta_layout = packet_layout(1)
    frames = [(bytes(range(5)), 0x11, False), (b"xyz", 0x22, True), (b"ab", 0x33, False),
              (b"c", 0x44, False), (b"d", 0x55, False)]

    async def producer(ctx):
        for payload, tag, drop in frames:
            beats = packet_beats(2, payload)
            for beat in beats:
                ctx.set(dut.i_meta, {"data": tag if beat["last"] else 0xEE, "nbytes": 1})
                ctx.set(dut.i_drop, drop and beat["last"])
                await stream_put(ctx, dut.i_stream, beat)
        ctx.set(dut.i_drop, 0)

    async def consumer(ctx):
        await ctx.tick().repeat(30)  # everything has arrived; 0x44 (3rd) and 0x55 overflowed
        assert ctx.get(dut.frames_committed) == 2
        assert ctx.get(dut.frames_dropped_error) == 1
        assert ctx.get(dut.frames_dropped_overflow) == 2
        seen = []
        for n in range(40):
            ready = n % 3 != 1  # stalls inside frames
            ctx.set(dut.o_stream.ready, ready)
            if ctx.get(dut.o_stream.valid):
                beat = ctx.get(dut.o_stream.payload)
                seen.append((ctx.get(dut.o_meta).data, beat.first, beat.last))
                if not ready:
                    seen.pop()
            await ctx.tick()
        assert seen == [(0x11, 1, 0), (0x11, 0, 0), (0x11, 0, 1), (0x33, 1, 1)]
        assert ctx.get(meta_layout.from_bits(0).data) == 0  # layout round trip sanity

    simulate(dut, producer, consumer)


def test_committed_strobe():
    dut = PacketFIFO(width_bytes=1, depth=8)

    async def bench(ctx):
        pulses = []
        for payload, drop in ((b"ab", False), (b"c", True), (b"d", False)):
            for beat in packet_beats(1, payload):
                ctx.set(dut.i_drop, drop and beat["last"])
                ctx.set(dut.i_stream.valid, 1)
                ctx.set(dut.i_stream.payload, beat)
                await ctx.tick()
                pulses.append(ctx.get(dut.o_committed))
        ctx.set(dut.i_stream.valid, 0)
        await ctx.tick()
        pulses.append(ctx.get(dut.o_committed))
        # sampled after each beat's edge: high in the cycle after each committed last beat
        assert pulses == [0, 1, 0, 1, 0]
        assert ctx.get(dut.frames_committed) == 2

    simulate(dut, bench)


def test_no_partial_frame_visible():
    dut = PacketFIFO(width_bytes=2, depth=16)
    beats = packet_beats(2, bytes(range(12)))

    async def bench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        for drop in (True, False):
            for beat in beats[:-1]:
                await stream_put(ctx, dut.i_stream, beat)
                for _ in range(5):  # the input pauses mid-frame; nothing must leak out
                    assert ctx.get(dut.o_stream.valid) == 0
                    await ctx.tick()
            ctx.set(dut.i_drop, drop)
            await stream_put(ctx, dut.i_stream, beats[-1])
            ctx.set(dut.i_drop, 0)
            seen = []
            for _ in range(len(beats) + 4):
                if ctx.get(dut.o_stream.valid):
                    seen.append(ctx.get(dut.o_stream.payload).as_bits())
                await ctx.tick()
            expected = [] if drop else [packet_layout(2).const(b).as_bits() for b in beats]
            assert seen == expected

    simulate(dut, bench)


def test_throughput_one_beat_per_cycle():
    width, depth, nframes, length = 4, 32, 12, 7
    dut = PacketFIFO(width_bytes=width, depth=depth)
    frames = [packet_beats(width, bytes([n]) * (length * width)) for n in range(nframes)]
    cycles = {"in": [], "out": []}

    async def producer(ctx):
        for beats in frames:
            for beat in beats:
                ctx.set(dut.i_stream.valid, 1)
                ctx.set(dut.i_stream.payload, beat)
                _, _, ready = await ctx.tick().sample(dut.i_stream.ready)
                assert ready
                cycles["in"].append(ctx.get(count))
        ctx.set(dut.i_stream.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o_stream.ready, 1)
        while len(cycles["out"]) < nframes * length:
            _, _, valid = await ctx.tick().sample(dut.o_stream.valid)
            if valid:
                cycles["out"].append(ctx.get(count))

    count = Signal(16)  # a cycle counter next to the DUT
    top = Module()
    top.submodules.dut = dut
    top.d.sync += count.eq(count + 1)
    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()

    total = nframes * length
    # The input took one beat per cycle; equal frames leave back to back after the first
    # one is stored, i.e. the output has no bubble either.
    assert cycles["in"] == list(range(cycles["in"][0], cycles["in"][0] + total))
    assert cycles["out"] == list(range(cycles["out"][0], cycles["out"][0] + total))
    assert cycles["out"][0] - cycles["in"][0] == length + 1  # store-and-forward latency


def test_packet_layout_and_keep_mask():
    layout = packet_layout(8)
    assert layout.size == 64 + 4 + 1 + 1
    assert list(layout.members) == ["data", "nbytes", "first", "last"]
    nbytes, mask = Signal(range(9)), Signal(8)
    m = Module()
    m.d.comb += mask.eq(keep_mask(nbytes, 8))

    async def bench(ctx):
        for n in range(9):
            ctx.set(nbytes, n)
            assert ctx.get(mask) == (1 << n) - 1

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
