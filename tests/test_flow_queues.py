"""FlowQueues against the cycle model of partner.sim.models.flow_queues, in amaranth.sim.

Every bench compares the gateware with the model in every cycle (output valid, beat, flow,
metadata, free cells, frames queued), and ends with the counters, a drained buffer (free cells
== cells) and no allocator error.
"""

import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from amaranth.sim import Simulator

from partner.hdl.flow_queues import FlowQueues
from partner.hdl.stream import packet_layout
from partner.sim.beats import packet_beats
from partner.sim.models.flow_queues import (
    FlowQueuesCycleModel,
    FlowQueuesModel,
    Verdict,
    by_flow,
    expected_by_flow,
)


@dataclass
class Traffic:
    """Frames to send: (flow, payload, meta[, announced length]) and gaps between beats."""

    frames: list
    gap: object = None  # callable: idle cycles before each beat (default none)

    def cycles(self, width):
        for frame in self.frames:
            flow, payload, meta = frame[:3]
            length = frame[3] if len(frame) > 3 else len(payload)
            for beat in packet_beats(width, payload):
                yield from [None] * (self.gap() if self.gap else 0)
                yield (beat, flow, length, meta)


@dataclass
class Run:
    """What a bench saw: frames out (flow, payload bytes, meta), cycles, per-cycle output."""

    frames: list = field(default_factory=list)
    cycles: int = 0
    out_cycles: list = field(default_factory=list)  # cycle of every output beat
    first_out: list = field(default_factory=list)  # cycle of every first beat out


def build(width=4, flows=3, cells=16, cell_bytes=8, classes=4, quantum=16, meta_bits=8):
    dut = FlowQueues(width, flows, cells, cell_bytes, classes, meta=meta_bits, quantum=quantum)
    core = FlowQueuesModel(flows, cells, cell_bytes, classes, quantum)
    return dut, core


async def configure(ctx, dut, model, flow, quota, cls=0, weight=1):
    """Write one flow's configuration (one cycle, output stalled), in step with the model."""
    await step(ctx, dut, model, None, False, cfg=cfg_of(flow, quota, cls, weight))


def cfg_of(flow, quota, cls=0, weight=1):
    return {"flow": flow, "quota": quota, "cls": cls, "weight": weight}


async def step(ctx, dut, model, item, ready, cfg=None, run=None, reserve=None):
    """One cycle: drive, compare every output with the model, clock both. ``item`` may carry
    a fifth element, ``i_reserved``; ``reserve`` is None or the cells requested on
    ``reserve`` (``model.granted`` then says whether they were taken)."""
    layout = packet_layout(dut.width_bytes)
    i, o = dut.i_stream, dut.o_stream
    ctx.set(i.valid, item is not None)
    ctx.set(dut.reserve.valid, reserve is not None)
    ctx.set(dut.reserve.payload, reserve or 0)
    if item is not None:
        beat, flow, length, meta = item[:4]
        ctx.set(dut.i_reserved, len(item) > 4 and item[4])
        ctx.set(i.payload, beat)
        ctx.set(dut.i_flow, flow)
        ctx.set(dut.i_length, length)
        meta_shape = dut.meta_shape
        ctx.set(dut.i_meta, meta_shape.from_bits(meta) if hasattr(meta_shape, "from_bits")
                else meta)
    ctx.set(o.ready, ready)
    ctx.set(dut.cfg_en, cfg is not None)
    if cfg is not None:
        ctx.set(dut.cfg_flow, cfg["flow"])
        ctx.set(dut.cfg_quota_bytes, cfg["quota"])
        ctx.set(dut.cfg_class, cfg["cls"])
        ctx.set(dut.cfg_weight, cfg["weight"])
    assert ctx.get(i.ready) == 1
    valid, beat, flow, meta = model.outputs()
    assert ctx.get(o.valid) == valid, "output valid"
    if valid:
        assert ctx.get(o.payload).as_bits() == layout.const(beat).as_bits(), "output beat"
        assert ctx.get(dut.o_flow) == flow, "o_flow"
        got = ctx.get(dut.o_meta)
        assert (got.as_bits() if hasattr(got, "as_bits") else got) == meta, "o_meta"
    assert ctx.get(dut.free_cells) == model.free_cells, "free cells"
    assert ctx.get(dut.frames_queued) == model.core.frames_queued, "frames queued"
    if reserve is not None:
        assert ctx.get(dut.reserve.ready) == model.reserve_ready(reserve), "reserve ready"
    if run is not None and valid and ready:
        run.out_cycles.append(run.cycles)
        if beat["first"]:
            run.first_out.append(run.cycles)
    left = model.clock(item, ready, cfg, reserve)
    if run is not None:
        run.cycles += 1
        if left is not None:
            data = b"".join(b.to_bytes(dut.width_bytes, "little") for b in left.beats)
            run.frames.append((left.flow, data[:left.stored_len], left.meta))
    await ctx.tick()


async def run_traffic(ctx, dut, model, cycles, ready=lambda: True, run=None, drain=True,
                      cfg=lambda: None):
    """Drive an iterable of per-cycle input items; then (``drain``) run with the output ready
    until everything has left. ``ready()`` and ``cfg()`` are asked once per cycle."""
    run = run if run is not None else Run()
    for item in cycles:
        await step(ctx, dut, model, item, ready(), cfg=cfg(), run=run)
    while drain and not model.idle():
        await step(ctx, dut, model, None, True, run=run)
    return run


async def read_counters(ctx, dut, flow, names):
    """A snapshot through the shared port: request it, wait for ``c_valid``."""
    ctx.set(dut.c_flow, flow)
    ctx.set(dut.c_req, 1)
    await ctx.tick()
    ctx.set(dut.c_req, 0)
    for _ in range(8):
        if ctx.get(dut.c_valid):
            return {name: ctx.get(getattr(dut, f"c_{name}")) for name in names}
        await ctx.tick()
    raise AssertionError("no counter snapshot within 8 cycles of an idle block")


async def check_counters(ctx, dut, model):
    """Counters through a snapshot, bytes in use two cycles after ``c_flow`` is set."""
    for flow in range(dut.flows):
        expect = model.core.counter_values(flow)
        assert await read_counters(ctx, dut, flow, expect) == expect, f"flow {flow} counters"
        await ctx.tick()
        assert ctx.get(dut.c_bytes_in_use) == model.core.bytes_in_use[flow]


async def check_drained(ctx, dut, model):
    """No frame left, every cell free again, and the allocator never ran dry."""
    assert model.idle()
    for _ in range(3):
        await step(ctx, dut, model, None, True)
    assert ctx.get(dut.o_stream.valid) == 0
    assert ctx.get(dut.free_cells) == dut.cells
    assert ctx.get(dut.frames_queued) == 0
    assert ctx.get(dut.alloc_error) == 0
    await check_counters(ctx, dut, model)
    assert all(b == 0 for b in model.core.bytes_in_use)


async def fill_to_the_brim(ctx, dut, model):
    """With the output stalled, frames that need every cell are all admitted and stored: no
    cell has been lost by the allocator (a lost cell would raise ``alloc_error``). The stalled
    output register may hold the first frame's first beat: with one beat per cell, that cell
    is then free again."""
    cell_bytes, flows = dut.cell_bytes, dut.flows
    for flow in range(flows):
        await configure(ctx, dut, model, flow, quota=dut.cells * cell_bytes)
    frames = [(k % flows, bytes([k & 0xFF]) * cell_bytes, k & 0xFF) for k in range(dut.cells)]
    await run_traffic(ctx, dut, model, Traffic(frames).cycles(dut.width_bytes),
                      ready=lambda: False, drain=False)
    for _ in range(4):
        await step(ctx, dut, model, None, False)
    one_read = ctx.get(dut.o_stream.valid) and dut.cell_bytes == dut.width_bytes
    assert ctx.get(dut.free_cells) == int(one_read)
    assert all(v is Verdict.ENQUEUED for v, _, _ in model.admitted[-dut.cells:])
    await run_traffic(ctx, dut, model, [])
    await check_drained(ctx, dut, model)


STALLED = staticmethod(lambda: False)


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# -- directed tests ----------------------------------------------------------------------------

def test_directed_frames_out_whole_and_in_order():
    dut, core = build(width=4, flows=2, cells=16, cell_bytes=8)
    model = FlowQueuesCycleModel(core, 4)
    frames = [(0, bytes(range(1, 11)), 0x11), (1, b"\x42", 0x22), (0, bytes(range(30)), 0x33)]

    async def bench(ctx):
        for flow in range(2):
            await configure(ctx, dut, model, flow, quota=1000)
        run = await run_traffic(ctx, dut, model, Traffic(frames).cycles(4))
        # Independent of the model: every frame came out intact, per flow in order.
        assert by_flow(run.frames) == expected_by_flow(frames, model.admitted)
        assert len(run.frames) == 3
        await check_drained(ctx, dut, model)

    simulate(dut, bench)


def test_default_meta_is_frame_meta():
    """With no ``meta`` argument the sideband is the FRAME_META layout, passed through."""
    from partner.formats import FRAME_META
    from partner.hdl.wire import layout

    dut = FlowQueues(8, 2, 8, 64)
    assert dut.meta_shape == layout(FRAME_META)
    model = FlowQueuesCycleModel(FlowQueuesModel(2, 8, 64, 4, 256), 8)
    metas = [FRAME_META.pack(length=70, in_port=3, flow=200, hit=1, flags=0x48,
                             action=0x1ABCDE), FRAME_META.pack(length=5, flow=7)]
    frames = [(1, bytes(70), metas[0]), (0, bytes(5), metas[1])]

    async def bench(ctx):
        for flow in range(2):
            await configure(ctx, dut, model, flow, quota=4096)
        run = await run_traffic(ctx, dut, model, Traffic(frames).cycles(8))
        assert sorted(meta for _, _, meta in run.frames) == sorted(metas)
        await check_drained(ctx, dut, model)

    simulate(dut, bench)


def random_frames(rng, n, flows, max_len, mismatch=0.0):
    frames = []
    for _ in range(n):
        roll = rng.random()
        length = (rng.randint(1, 12) if roll < 0.5 else rng.randint(13, 60) if roll < 0.9
                  else rng.randint(61, max_len))
        frame = (rng.randrange(flows), rng.randbytes(length), rng.randrange(256))
        if rng.random() < mismatch:  # the announced length disagrees with the beats
            frame += (max(0, length + rng.choice([-20, -5, -1, 1, 4, 30])),)
        frames.append(frame)
    return frames


@pytest.mark.parametrize(("width", "cells", "cell_bytes", "seed"),
                         [(1, 16, 4, 1), (4, 16, 4, 2), (4, 32, 16, 3), (8, 16, 64, 4),
                          (1, 5, 16, 5), (4, 288, 4, 11), (8, 3, 64, 7)])
def test_random_against_model(width, cells, cell_bytes, seed):
    """Random frames, flows, classes, weights, quotas (some closed), input gaps, output
    backpressure and configuration changes while frames are queued. Buffers of 5, 288 and 3
    cells (not powers of two) wrap the free-cell FIFO explicitly."""
    rng = random.Random(seed)
    flows, quantum = 4, 16
    dut, core = build(width, flows, cells, cell_bytes, classes=2, quantum=quantum)
    model = FlowQueuesCycleModel(core, width)
    capacity = cells * cell_bytes
    frames = random_frames(rng, 160, flows, max_len=min(capacity + 8, 200), mismatch=0.05)
    traffic = Traffic(frames, gap=lambda: rng.choice([0, 0, 0, 0, 1, 3]))

    def random_cfg(flow=None):
        flow = rng.randrange(flows) if flow is None else flow
        quota = rng.choice([0, capacity // 4, capacity // 2, capacity, 4 * capacity])
        return cfg_of(flow, quota, rng.randrange(2), rng.choice([0, 1, 2, 3]))

    phase = {"p": 1.0, "n": 0}

    def ready():
        phase["n"] += 1
        if phase["n"] % 48 == 0:
            phase["p"] = rng.choice([1.0, 0.8, 0.4, 0.0])
        return rng.random() < phase["p"]

    async def bench(ctx):
        for flow in range(flows):
            cfg = random_cfg(flow)
            await configure(ctx, dut, model, flow, cfg["quota"] or capacity // 2, cfg["cls"],
                            cfg["weight"])
        run = await run_traffic(ctx, dut, model, traffic.cycles(width), ready=ready,
                                cfg=lambda: random_cfg() if rng.random() < 0.004 else None)
        assert by_flow(run.frames) == expected_by_flow(frames, model.admitted)
        verdicts = [v for v, _, _ in model.admitted]
        for verdict in Verdict:
            assert verdicts.count(verdict) >= 3, verdict
        await check_drained(ctx, dut, model)
        await fill_to_the_brim(ctx, dut, model)

    simulate(dut, bench)


@pytest.mark.parametrize(("width", "cells", "cell_bytes", "patience", "seed"),
                         [(4, 16, 8, 12, 1), (1, 16, 4, 300, 2), (8, 5, 16, 3, 3),
                          (4, 16, 8, 0, 4)])
def test_reserved_frames_are_never_dropped(width, cells, cell_bytes, patience, seed):
    """A source that reserves its frames' cells first (the host's TX in the core) pushes far
    more than the buffer holds into flows 0 and 1, whose quotas are far below their traffic,
    while unreserved frames (forwarded ones) into flows 2 and 3 compete for the same cells and
    the output is slow. Every reserved frame of an open flow is admitted and leaves intact and
    in order; those of flow 1 while it is closed are dropped and their cells come back;
    unreserved frames are dropped when their cells are promised. Up to two reservations are
    granted ahead of their frames, as the core's slices and switch hold frames in flight. With
    a patience of 0 the unreserved frames get no cells while a reservation waits."""
    rng = random.Random(seed)
    flows, capacity = 4, cells * cell_bytes
    dut = FlowQueues(width, flows, cells, cell_bytes, 2, meta=8, quantum=16, patience=patience)
    core = FlowQueuesModel(flows, cells, cell_bytes, 2, 16)
    model = FlowQueuesCycleModel(core, width, patience)
    host = [(rng.randrange(2), rng.randbytes(rng.randint(1, capacity)), k) for k in range(70)]
    forwarded = [(2 + rng.randrange(2), rng.randbytes(rng.randint(1, capacity // 2)), 100 + k)
                 for k in range(90)]
    host_cells = [-(-len(payload) // cell_bytes) for _, payload, _ in host]

    async def bench(ctx):
        for flow in range(flows):
            await configure(ctx, dut, model, flow, quota=cell_bytes if flow < 2 else capacity,
                            cls=flow % 2)
        run, granted, requested, sent, beats = Run(), [], 0, [], []
        pending = list(forwarded)
        while requested < len(host) or granted or pending or beats:
            cfg = None
            if not beats and len(sent) in (len(host) // 3, len(host) // 2):
                # Flow 1 closed for a while: its frames are dropped, their cells come back.
                cfg = cfg_of(1, 0 if len(sent) == len(host) // 3 else cell_bytes, 1)
            want = host_cells[requested] if requested < len(host) and len(granted) < 2 else None
            if not beats and rng.random() < 0.7:  # between frames: pick the next one
                if granted and (not pending or rng.random() < 0.5):
                    flow, payload, meta = frame = host[granted.pop(0)]
                    sent.append(frame)
                    beats = [(b, flow, len(payload), meta, True)
                             for b in packet_beats(width, payload)]
                elif pending and rng.random() < 0.6:
                    flow, payload, meta = pending.pop(0)
                    beats = [(b, flow, len(payload), meta) for b in packet_beats(width, payload)]
            item = beats.pop(0) if beats and rng.random() < 0.9 else None
            await step(ctx, dut, model, item, rng.random() < 0.35, cfg=cfg, run=run,
                       reserve=want)
            if model.granted:
                granted.append(requested)
                requested += 1
        await run_traffic(ctx, dut, model, [], run=run)
        host_verdicts = [v for v, flow, _ in model.admitted if flow < 2]
        kept = [frame for frame, v in zip(sent, host_verdicts, strict=True)
                if v is Verdict.ENQUEUED]
        dropped = [frame for frame, v in zip(sent, host_verdicts, strict=True)
                   if v is not Verdict.ENQUEUED]
        assert all(v in (Verdict.ENQUEUED, Verdict.DROP_QUOTA) for v in host_verdicts)
        assert dropped and all(flow == 1 for flow, _, _ in dropped)  # only while closed
        assert len(kept) * capacity > 8 * capacity and len(kept) > 40
        out = by_flow(run.frames)
        for flow in range(2):
            assert out.get(flow, []) == [f for f in kept if f[0] == flow]
        fwd = [v for v, flow, _ in model.admitted if flow >= 2]
        assert Verdict.DROP_NOBUF in fwd
        assert (Verdict.ENQUEUED in fwd) == (patience > 0)
        await check_drained(ctx, dut, model)

    simulate(dut, bench)


@pytest.mark.parametrize(("width", "cells", "cell_bytes"), [(1, 4, 2), (2, 4, 2), (1, 3, 2),
                                                           (2, 5, 2)])
def test_exhaustive_short_sequences(width, cells, cell_bytes):
    """Pointer and quota logic, bounded exhaustive check: 2 flows, 4 (or 3, or 5) cells of 2
    bytes; every sequence of up to 3 frames over {flow 0, 1} x {1, 3, 5 bytes} (1, 2 and 3
    cells), each with the output stalled during the input, always ready, and ready every other
    cycle. The sequences run one after the other in one simulation, so they start from every
    free-FIFO rotation the previous ones left. Quotas: flow 0 6 bytes, flow 1 the whole
    buffer; both in one class with weights 1 and 2 and a 2-byte quantum, so DRR needs several
    turns for a 5-byte frame."""
    flows = 2
    dut, core = build(width, flows, cells, cell_bytes, classes=1, quantum=2)
    model = FlowQueuesCycleModel(core, width)
    alphabet = [(flow, length) for flow in range(flows) for length in (1, 3, 5)]
    rng = random.Random(5)
    stats = {"runs": 0}

    async def bench(ctx):
        await configure(ctx, dut, model, 0, quota=6, weight=1)
        await configure(ctx, dut, model, 1, quota=cells * cell_bytes, weight=2)
        for n in range(1, 4):
            for seq in itertools.product(alphabet, repeat=n):
                frames = [(f, rng.randbytes(length), rng.randrange(256)) for f, length in seq]
                for mode in ("stalled", "ready", "alternate"):
                    tick = itertools.count()
                    ready = {"stalled": lambda: False, "ready": lambda: True,
                             "alternate": lambda t=tick: next(t) % 2 == 0}[mode]
                    start = len(model.admitted)
                    run = await run_traffic(ctx, dut, model, Traffic(frames).cycles(width),
                                            ready=ready)
                    assert by_flow(run.frames) == expected_by_flow(
                        frames, model.admitted[start:])
                    assert ctx.get(dut.free_cells) == cells  # drained: nothing leaked
                    stats["runs"] += 1
        await check_drained(ctx, dut, model)
        await fill_to_the_brim(ctx, dut, model)

    simulate(dut, bench)
    assert stats["runs"] == 3 * (6 + 36 + 216)
    verdicts = [v for v, _, _ in model.admitted]
    assert all(verdicts.count(v) > 50 for v in Verdict)


def test_quota_exhaustion_and_recovery():
    """Quota drops, closed flows, no-buffer drops, and admission again once frames left.
    Expected numbers are worked out here, independently of the model."""
    width, cells, cell_bytes = 4, 32, 8  # 256 bytes
    dut, core = build(width, flows=3, cells=cells, cell_bytes=cell_bytes)
    model = FlowQueuesCycleModel(core, width)
    f30 = [(0, bytes([k]) * 30, k) for k in range(5)]  # 4 cells each
    closed = [(1, b"closed", 9)]
    big = [(2, bytes([0x80 + k]) * 30, k) for k in range(7)]

    async def bench(ctx):
        await configure(ctx, dut, model, 0, quota=100)
        await configure(ctx, dut, model, 1, quota=0)
        await configure(ctx, dut, model, 2, quota=10_000)
        stalled = lambda: False  # noqa: E731
        await run_traffic(ctx, dut, model, Traffic(f30 + closed + big).cycles(width),
                          ready=stalled, drain=False)
        for _ in range(3):
            await step(ctx, dut, model, None, False)
        # flow 0: 3 x 30 fit in 100, the 4th would make 120. Then 20 cells are left: flow 2
        # gets 5 frames of 4 cells, its 6th and 7th find no buffer.
        assert ctx.get(dut.free_cells) == 0
        await check_counters(ctx, dut, model)
        expect = [(3, 90, 2, 0), (0, 0, 1, 0), (5, 150, 0, 2)]
        assert [(c.enq_frames, c.enq_bytes, c.drop_quota, c.drop_nobuf)
                for c in core.counters] == expect
        # The input never stalled meanwhile (step() checks ready every cycle). Now drain and
        # send the same again: everything that fitted fits again.
        run = await run_traffic(ctx, dut, model, [])
        assert len(run.frames) == 8
        await check_drained(ctx, dut, model)
        await run_traffic(ctx, dut, model, Traffic(f30 + big).cycles(width),
                          ready=stalled, drain=False)
        assert [(c.enq_frames, c.drop_quota, c.drop_nobuf) for c in core.counters] == [
            (6, 4, 0), (0, 1, 0), (10, 0, 4)]
        # Lowering a quota below what a flow holds drops its new frames until it drains.
        await configure(ctx, dut, model, 2, quota=40)
        await run_traffic(ctx, dut, model, Traffic(big[:1]).cycles(width), ready=stalled,
                          drain=False)
        assert core.counters[2].drop_quota == 1
        await run_traffic(ctx, dut, model, [])
        await run_traffic(ctx, dut, model, Traffic(big[:2]).cycles(width))
        # the first fits in 40 again; the second arrives while the first still holds 30
        assert (core.counters[2].enq_frames, core.counters[2].drop_quota) == (11, 2)
        await check_drained(ctx, dut, model)

    simulate(dut, bench)


def test_counter_snapshot_waits_for_a_free_port():
    """The host's snapshot shares the counters' update port: it waits while a first beat
    updates them in every cycle (one-beat frames back to back), then holds the counters of that
    instant, writes in flight included; a newer request cancels an older one."""
    width = 4
    dut, core = build(width, flows=3, cells=16, cell_bytes=8)
    model = FlowQueuesCycleModel(core, width)
    names = list(core.counter_values(0))
    frames = [(k % 3, bytes([k]) * (1 + k % 4), k) for k in range(24)]  # one beat each
    seen = []

    async def bench(ctx):
        for flow in range(3):
            await configure(ctx, dut, model, flow, quota=20)
        items = list(Traffic(frames).cycles(width)) + [None] * 12
        for k, item in enumerate(items):
            ctx.set(dut.c_flow, 1)
            ctx.set(dut.c_req, k == 5)
            if ctx.get(dut.c_valid):
                seen.append((k, {name: ctx.get(getattr(dut, f"c_{name}")) for name in names}))
            await step(ctx, dut, model, item, False)
        ctx.set(dut.c_req, 0)
        # The request comes while the first beats' counter updates start in every cycle (stage
        # 5, from cycle 5). The last first beat is accepted at edge 23 and starts its update in
        # cycle 28; the port is free in cycle 29 (and no update starts in 30), the two entries
        # are read in cycles 29 and 30, their values registered in 31 and 32, and the snapshot
        # is valid in cycle 33.
        assert [k for k, _ in seen] == [len(frames) + 9]
        assert seen[0][1] == core.counter_values(1)
        assert core.counters[1].drop_nobuf > 0  # the run included drops, counted too
        # Two requests a cycle apart: only the second one's snapshot comes.
        valid = []
        for k in range(7):
            ctx.set(dut.c_flow, [0, 2][k > 0])
            ctx.set(dut.c_req, k < 2)
            valid.append(ctx.get(dut.c_valid))
            if valid[-1]:
                assert {name: ctx.get(getattr(dut, f"c_{name}"))
                        for name in names} == core.counter_values(2)
            await step(ctx, dut, model, None, False)
        ctx.set(dut.c_req, 0)
        assert valid == [0, 0, 0, 0, 0, 1, 0]
        await run_traffic(ctx, dut, model, [])
        await check_drained(ctx, dut, model)

    simulate(dut, bench)


def _core_default(name):
    import inspect

    from partner.hdl.core import DeviceCore
    return inspect.signature(DeviceCore).parameters[name].default


@pytest.mark.parametrize(("width", "quantum", "weight"),
                         [(1, 256, 1), (8, 256, 36), (8, "core", 1)])
def test_jumbo_frames_back_to_back(width, quantum, weight):
    """9000-byte frames (8996 bytes without the FCS) back to back at line rate (24 byte times
    from one frame to the next: FCS, preamble, SFD and gap) through a block of the device
    core's size (17 flows, 288 cells of 64 bytes, 8 classes), four flows in turn, the output
    always ready: every frame is admitted and they leave at the rate they came. Two frames take
    282 cells, so each frame is admitted while the last-but-one is still leaving: only into
    the cells that frame has already left (with whole frames released after their last beat,
    every third frame was dropped, at both widths).

    How much of the last-but-one is left depends on how long a frame waits for the scheduler:
    with a 256-byte quantum and weight 1, 35 wasted DRR steps (about 140 cycles). That is 3
    cells at width 1, but 18 at width 8, more than the 6 to spare: there the flows' turn must
    cover most of a frame, as with weight 36, or with the core's quantum at weight 1 (four
    wasted steps)."""
    size, flows = 8996, 17
    quantum = _core_default("quantum") if quantum == "core" else quantum
    cells, cell_bytes = _core_default("cells"), _core_default("cell_bytes")
    dut = FlowQueues(width, flows, cells, cell_bytes, classes=8, meta=8, quantum=quantum)
    model = FlowQueuesCycleModel(FlowQueuesModel(flows, cells, cell_bytes, 8, quantum), width)
    frames = [(1 + k % 4, bytes([k + 1]) * size, k) for k in range(5)]
    starts = [-(-k * (size + 24) // width) for k in range(len(frames))]
    cycles = []
    for start, frame in zip(starts, frames, strict=True):
        cycles += [None] * (start - len(cycles)) + list(Traffic([frame]).cycles(width))

    async def bench(ctx):
        for flow in range(1, 5):
            await configure(ctx, dut, model, flow, quota=1 << 21, weight=weight)
        run = await run_traffic(ctx, dut, model, cycles, run=Run())
        assert [v for v, _, _ in model.admitted] == [Verdict.ENQUEUED] * len(frames)
        assert by_flow(run.frames) == expected_by_flow(frames, model.admitted)
        spacing = [b - a for a, b in itertools.pairwise(run.first_out)]
        assert max(spacing) <= -(-(size + 24) // width), spacing  # at the input's rate
        await check_drained(ctx, dut, model)

    simulate(dut, bench)


def test_release_timing():
    """A frame's bytes are free for a frame whose first beat is accepted four edges after the
    old frame's last beat left, not earlier (checked over a sweep of offsets)."""
    width = 4
    dut, core = build(width, flows=1, cells=16, cell_bytes=8)
    model = FlowQueuesCycleModel(core, width)
    outcome = {}

    async def bench(ctx):
        await configure(ctx, dut, model, 0, quota=12)
        for offset in range(8, 24):
            a, b = (0, bytes(12), 1), (0, bytes(range(12)), 2)
            await run_traffic(ctx, dut, model, Traffic([a]).cycles(width),
                              ready=lambda: False, drain=False)
            for _ in range(3):
                await step(ctx, dut, model, None, False)
            run = Run()
            cycles = [None] * offset + list(Traffic([b]).cycles(width))
            start = len(model.admitted)
            await run_traffic(ctx, dut, model, cycles, run=run)
            left_a = run.out_cycles[2]  # a's third (last) beat
            # b's first beat was accepted in run cycle `offset`
            outcome[offset - left_a] = model.admitted[start][0]
        await check_drained(ctx, dut, model)

    simulate(dut, bench)
    assert {k: v for k, v in outcome.items() if k < 4} == {
        k: Verdict.DROP_QUOTA for k in outcome if k < 4}
    assert {k: v for k, v in outcome.items() if k >= 4} == {
        k: Verdict.ENQUEUED for k in outcome if k >= 4}
    assert min(outcome) < 0 and max(outcome) > 4


def test_reset_forgets_queued_frames():
    """A reset with frames queued and in flight empties every queue: all cells free, no byte
    in use (the per-flow totals and counts read as 0 without a sweep of their memories), and
    the block works as new, against a fresh model; counters and configuration survive."""
    from amaranth.hdl import ClockDomain, Module
    from amaranth.sim import Simulator

    width, cells = 4, 16
    dut, core = build(width, flows=3, cells=cells, cell_bytes=8)
    model = FlowQueuesCycleModel(core, width)
    top = Module()
    top.domains.sync = cd = ClockDomain()
    top.submodules.dut = dut
    rng = random.Random(21)
    frames = [(k % 3, rng.randbytes(rng.randint(1, 20)), k) for k in range(12)]

    async def bench(ctx):
        for flow in range(3):
            await configure(ctx, dut, model, flow, quota=64, cls=flow % 2, weight=flow)
        await run_traffic(ctx, dut, model, Traffic(frames).cycles(width), ready=STALLED,
                          drain=False)
        for _ in range(8):  # every admission decided and counted, frames queued
            await step(ctx, dut, model, None, False)
        counters = [core.counter_values(flow) for flow in range(3)]
        assert ctx.get(dut.free_cells) < cells and ctx.get(dut.frames_queued) > 0
        ctx.set(dut.c_flow, 0)
        await ctx.tick().repeat(2)
        assert ctx.get(dut.c_bytes_in_use) > 0
        ctx.set(cd.rst, 1)
        await ctx.tick()
        ctx.set(cd.rst, 0)
        assert ctx.get(dut.free_cells) == cells and ctx.get(dut.frames_queued) == 0
        assert ctx.get(dut.o_stream.valid) == 0
        # The same configuration and counters, nothing queued.
        fresh = FlowQueuesModel(3, cells, 8, 4, 16)
        for flow in range(3):
            fresh.configure(flow, quota=64, cls=flow % 2, weight=flow)
            for name, value in counters[flow].items():
                setattr(fresh.counters[flow], name, value)
        again = FlowQueuesCycleModel(fresh, width)
        await check_counters(ctx, dut, again)
        run = await run_traffic(ctx, dut, again, Traffic(frames).cycles(width))
        assert by_flow(run.frames) == expected_by_flow(frames, again.admitted)
        await check_drained(ctx, dut, again)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_strict_priority_between_classes():
    """Preloaded queues leave class by class, highest first; a high-class frame that arrives
    while a low class streams waits for at most the frame on the wire and the one already
    selected (the one-frame lookahead)."""
    width = 4
    dut, core = build(width, flows=3, cells=64, cell_bytes=16, classes=3, quantum=64)
    model = FlowQueuesCycleModel(core, width)
    rng = random.Random(11)
    frames = [(rng.randrange(3), rng.randbytes(rng.randint(1, 60)), k) for k in range(30)]

    async def bench(ctx):
        for flow in range(3):
            await configure(ctx, dut, model, flow, quota=4096, cls=flow)
        await run_traffic(ctx, dut, model, Traffic(frames).cycles(width), ready=lambda: False,
                          drain=False)
        run = await run_traffic(ctx, dut, model, [])
        # The first frame queued was selected into the lookahead slot before the others
        # arrived; everything after it leaves by class.
        flows = [f for f, _, _ in run.frames]
        assert run.frames[0][2] == frames[0][2]
        assert flows[1:] == sorted(flows[1:], reverse=True)
        assert flows[1:] != sorted(flows[1:])
        assert by_flow(run.frames) == expected_by_flow(frames, model.admitted)
        # Dynamic: class 0 streams long frames, a class 2 frame arrives in the middle.
        low = [(0, bytes([k]) * 60, k) for k in range(8)]
        await run_traffic(ctx, dut, model, Traffic(low).cycles(width), ready=lambda: False,
                          drain=False)
        run = Run()
        cycles = [None] * 40 + list(Traffic([(2, b"urgent", 99)]).cycles(width))
        await run_traffic(ctx, dut, model, cycles, run=run)
        order = [meta for _, _, meta in run.frames]
        # Its last beat is accepted at edge 41 and queued at edge 46; the activation reaches
        # the scheduler in cycle 50.
        arrived = 41 + 5 + 4
        before = sum(1 for c in run.first_out if c < arrived)
        assert order.index(99) <= before + 1
        await check_drained(ctx, dut, model)

    simulate(dut, bench)


def test_fresh_deficit_takes_the_weight_of_the_cycle_the_activation_is_taken():
    """An activation carries its flow's class, not its weight: the flow's first deficit is the
    quantum of the weight configured when the scheduler takes the activation. A weight write
    swept across the cycles around the activation (before the frame is queued, while the
    activation waits in its FIFO, after it was taken) must match the model in every cycle."""
    width, quantum = 4, 16
    dut, core = build(width, flows=2, cells=64, cell_bytes=16, quantum=quantum)
    model = FlowQueuesCycleModel(core, width)
    # Flow 1 is backlogged first; flow 0's first frame is queued at edge 24 (its last beat
    # accepted at edge 19) and its activation can be taken from cycle 28.
    frames = [(flow, bytes([16 * flow + k]) * 16, 16 * flow + k)
              for flow in (1, 0) for k in range(4)]
    orders = []

    async def bench(ctx):
        for flow in range(2):
            await configure(ctx, dut, model, flow, quota=4096)
        heavy = cfg_of(0, quota=4096, weight=4)

        def write_at(when):
            cycle = iter(range(1 << 10))
            return lambda: heavy if next(cycle) == when else None

        for when in range(14, 34):
            run = await run_traffic(ctx, dut, model, Traffic(frames).cycles(width),
                                    ready=lambda: False, drain=False, cfg=write_at(when))
            run = await run_traffic(ctx, dut, model, [None] * 4)
            orders.append(tuple(meta for _, _, meta in run.frames))
            await configure(ctx, dut, model, 0, quota=4096, weight=1)
        await check_drained(ctx, dut, model)

    simulate(dut, bench)
    # The write came early enough to count in some rounds and too late in others.
    assert len(set(orders)) > 1


def test_burst_cannot_starve_a_flow_of_the_same_class():
    """Flow 0 has a burst queued (and more arriving, some dropped by its quota); flow 1's frames
    arrive now and then. Each leaves after at most a quantum plus two maximum frames of flow 0
    once queued (DRR's bound, plus the frame on the wire and the one already selected)."""
    width, quantum, max_len = 4, 32, 48
    dut, core = build(width, flows=2, cells=64, cell_bytes=16, classes=1, quantum=quantum)
    model = FlowQueuesCycleModel(core, width)
    rng = random.Random(12)

    async def bench(ctx):
        await configure(ctx, dut, model, 0, quota=400)
        await configure(ctx, dut, model, 1, quota=400)
        burst = [(0, rng.randbytes(rng.randint(1, max_len)), k) for k in range(20)]
        await run_traffic(ctx, dut, model, Traffic(burst).cycles(width), ready=lambda: False,
                          drain=False)
        mixed = [(0, rng.randbytes(max_len), 100 + k) for k in range(30)]
        for k in (3, 11, 19, 27):
            mixed.insert(k, (1, rng.randbytes(rng.randint(1, quantum)), 200 + k))
        run = Run()
        await run_traffic(ctx, dut, model, Traffic(mixed).cycles(width), run=run)
        assert core.counters[0].drop_quota > 0  # flow 0 hit its quota; flow 1 never did
        assert core.counters[1].drop_quota == 0 and core.counters[1].enq_frames == 4
        # Flow 1's frames in output order, with flow 0's bytes since each one was queued.
        queued_at = {}
        for cycle, item in enumerate(Traffic(mixed).cycles(width)):
            beat, flow, _, meta = item
            if beat["last"] and flow == 1:
                queued_at[meta] = cycle + 3  # in its queue from this cycle on
        firsts = dict(zip([meta for _, _, meta in run.frames], run.first_out, strict=True))
        for meta, queued in queued_at.items():
            burst_bytes = sum(len(payload) for flow, payload, m in run.frames
                              if flow == 0 and queued <= firsts[m] < firsts[meta])
            assert burst_bytes <= quantum + 2 * max_len, (meta, burst_bytes)
        await check_drained(ctx, dut, model)

    simulate(dut, bench)


def frame_gaps(run, frames):
    """Idle output cycles before each frame after the first, while backlogged."""
    starts = run.first_out
    lengths = [len(payload) for _, payload, _ in run.frames]
    return [starts[k] - starts[k - 1] - beats for k, beats in enumerate(lengths) if k > 0
            for beats in [-(-lengths[k - 1] // frames)]]


@pytest.mark.parametrize("width", [1, 8])
def test_throughput(width):
    """One beat per cycle with no idle cycle between 60- and 64-byte frames, from one flow,
    alternating between flows, or from a new flow each time (every frame an activation); in
    steady state with the input always valid and the output always ready, one beat out per
    cycle. Frames that need several DRR turns (quantum below the frame) and short frames at
    width 8 pay the scheduler's steps: the figures are pinned here and in docs/queues.md."""
    dut, core = build(width, flows=3, cells=64, cell_bytes=64, classes=1, quantum=8)
    model = FlowQueuesCycleModel(core, width)
    report = {}

    async def weights(ctx, weight):
        for flow in range(3):
            await configure(ctx, dut, model, flow, quota=4096, weight=weight)

    async def backlogged(ctx, frames):
        await run_traffic(ctx, dut, model, Traffic(frames).cycles(width), ready=lambda: False,
                          drain=False)
        for _ in range(8):
            await step(ctx, dut, model, None, False)
        run = await run_traffic(ctx, dut, model, [])
        return frame_gaps(run, width)

    async def bench(ctx):
        await weights(ctx, 8)  # quantum 8 x 8 = one 64-byte frame per turn
        one_flow = [(0, bytes([k]) * 64, k) for k in range(12)]
        alternating = [(k % 2, bytes([k]) * 64, k) for k in range(12)]
        report["64B one flow"] = await backlogged(ctx, one_flow)
        report["64B alternating"] = await backlogged(ctx, alternating)
        # Minimum Ethernet frames (60 bytes without FCS), one flow, and a round robin over
        # three flows.
        report["60B one flow"] = await backlogged(ctx, [(0, bytes(60), k) for k in range(12)])
        report["60B three flows"] = await backlogged(
            ctx, [(k % 3, bytes(60), k) for k in range(12)])
        # 32-byte quantum: frames need two turns. One flow: one wasted step per frame. Two
        # flows: their turns interleave, two wasted steps before every other frame.
        await weights(ctx, 4)
        report["64B two turns, one flow"] = await backlogged(ctx, one_flow)
        report["64B two turns, alternating"] = await backlogged(ctx, alternating)
        await weights(ctx, 8)
        # Steady state: input always valid, output always ready; each frame's flow has just
        # been emptied, so every frame is an activation.
        run = Run()
        steady = [(k % 3, bytes([k]) * 64, k) for k in range(12)]
        await run_traffic(ctx, dut, model, Traffic(steady).cycles(width), run=run)
        beats = len(run.out_cycles)
        span = run.out_cycles[-1] - run.out_cycles[0] + 1
        report["steady beats/cycle"] = beats / span
        report["latency last in -> first out"] = run.first_out[0] - (64 // width - 1)
        if width == 8:
            await weights(ctx, 255)
            for beats in range(1, 6):
                short = [(k % 2, bytes(8 * beats), k) for k in range(8)]
                report[f"{8 * beats}B"] = await backlogged(ctx, short)
        await check_drained(ctx, dut, model)

    simulate(dut, bench)
    print(f"\nwidth {width}: {report}")
    for name in ("64B one flow", "64B alternating", "60B one flow", "60B three flows"):
        assert report[name] == [0] * 11, name
    assert report["steady beats/cycle"] == 1.0
    # Last beat accepted at edge c, decided on in c+4 and queued at c+5 (five writer stages);
    # the flow's activation reaches the idle scheduler in c+9, the step starts in c+10 and
    # fills the slot at c+13, the first beat is loaded at c+14 and valid during c+15.
    assert report["latency last in -> first out"] == 15
    if width == 1:
        assert report["64B two turns, one flow"] == [0] * 11
        assert report["64B two turns, alternating"] == [0] * 11
    else:
        # A wasted step costs 4 cycles, a step that ends a turn 7: 11 cycles per 8-beat frame
        # with one flow; with two, 2 wasted steps and 2 turn ends every other frame.
        assert report["64B two turns, one flow"] == [0, 1] + [3] * 9
        assert report["64B two turns, alternating"] == [0, 5] + [0, 6] * 4 + [0]
        # Short frames: a step and an activation per frame take more cycles than they have
        # beats.
        assert report["40B"] == [0, 0, 2, 2, 0, 2, 2]
        assert report["32B"] == [0, 1, 3, 3, 1, 3, 3]
        assert report["24B"] == [0, 2, 4, 2, 4, 4, 4]
        assert report["16B"] == [0, 3, 5, 3, 5, 5, 5]
        assert report["8B"] == [6, 6, 6, 4, 6, 6, 6]


# -- cocotb + Verilator: long random run and a deeper exhaustive bound ---------------------------

BENCH = Path(__file__).parent / "cocotb" / "flow_queues_tb.py"


def cocotb_env(width, flows, cells, cell_bytes, classes, quantum, meta_bits, **extra):
    env = {"width": width, "flows": flows, "cells": cells, "cell_bytes": cell_bytes,
           "classes": classes, "quantum": quantum, "meta_bits": meta_bits, **extra}
    return {f"FQ_{name.upper()}": str(value) for name, value in env.items()}


def cocotb_build(name, width, flows, cells, cell_bytes, classes, quantum, meta_bits):
    verilator = pytest.importorskip("partner.sim.verilator")
    return verilator.build(
        FlowQueues(width, flows, cells, cell_bytes, classes, meta=meta_bits, quantum=quantum),
        name=name)


LONG = {"width": 8, "flows": 8, "cells": 64, "cell_bytes": 64, "classes": 4, "quantum": 64,
        "meta_bits": 16}
SMALL = {"width": 1, "flows": 2, "cells": 4, "cell_bytes": 2, "classes": 1, "quantum": 2,
         "meta_bits": 8}


@pytest.mark.cocotb
def test_cocotb_random_long_run():
    model = cocotb_build("flow_queues", **LONG)
    model.run(BENCH, testcase="random_long_run", env=cocotb_env(**LONG, seed=1, frames=3000),
              seed=1)


@pytest.mark.cocotb
@pytest.mark.parametrize("cells", [4, 3])
def test_cocotb_exhaustive_sequences_of_4(cells):
    params = {**SMALL, "cells": cells}
    model = cocotb_build(f"flow_queues_small_c{cells}", **params)
    model.run(BENCH, testcase="exhaustive_sequences", env=cocotb_env(**params, max_seq=4),
              seed=1)
