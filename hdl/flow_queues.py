# Per-flow queues with byte quotas and early drop over a shared cell buffer, drained by a
# strict-priority + Deficit Round Robin scheduler (Shreedhar & Varghese, SIGCOMM 1995); the
# "early demux, early drop, per-flow accounting and scheduling" of Scout paths (partner paper
# §2.3). Stream format: partner.hdl.stream. Reference model: partner.sim.models.flow_queues.
"""Flow queues.

Frames arrive on ``i_stream`` with their flow, length and metadata valid with the first beat.
The first beat decides (*early drop*): the frame is admitted if its flow's quota is open
(non-zero), ``bytes_in_use + length <= quota``, and the shared buffer has the
``ceil(length / cell_bytes)`` cells it needs; otherwise all its beats are discarded and the
drop is counted by cause. ``i_stream.ready`` is always 1: no flow can hold up another.

A source that must not lose frames (the host's transmit stream in the device core) reserves a
frame's cells first, on the ``reserve`` stream (a cell count; granted when the count is free,
taken from ``free_cells`` at once), and then sends the frame with ``i_reserved``: such a frame
is admitted whatever its flow's bytes in use (only a closed flow or a zero length drops it, and
its reserved cells go back) and does not take cells again. Once a reservation has waited
``patience`` cycles, other frames are admitted only if they leave its cells free: neither side
can starve the other.

The writer has five stages: the beat is registered with its flow's quota and released bytes
(read from block RAM), framed, compared (``quota - length``, then a bound relative to the
released bytes), decided on in stage 4 (one subtraction against each forwarded value of the
flow's admitted bytes, and the free-cell count), and in stage 5 written: cells come from a
free-cell allocator (`partner.hdl.cell_buffer`), beats go into their cells of ``cell_bytes``
bytes, cells are chained through a link memory, counters are updated and, at the last beat,
the frame is queued: linked behind its flow's tail frame, or handed to the scheduler
(`partner.hdl.scheduler`) as an activation if the queue was empty. The output reads frames
cell by cell and returns each cell to the allocator as soon as it has been read; a frame's
cell counts as free for admission again a few cycles after it has been read, its bytes a few
cycles after the frame's last beat has left, so that a frame can be admitted into the cells of
one still leaving (`partner.sim.models.flow_queues.FlowQueuesCycleModel` has the exact timing).

``i_length`` must be the frame's byte count. Should the beats disagree, the structure stays
sound: beats beyond ``ceil(length / width)`` are discarded (the frame is cut to ``length``), a
frame that ends early is kept with the bytes it had (non-last beats count as full), and the
difference is given back to the quota and the buffer when it commits.

Memories (``amaranth.lib.memory.Memory``): cell data, cell links, per-frame metadata, per-frame
"next frame" pointers, free-cell FIFO, and every per-flow state, each with one writer: quotas,
admitted and released bytes and counters (`partner.hdl.rmw_memory`), tail frames and committed
counts here, and the scheduler's own. Registers per flow: one bit, "admitted since reset".
See docs/queues.md.
"""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from partner.formats import FRAME_META

from .cell_buffer import CellAllocator
from .rmw_memory import RmwMemory, registered_write
from .scheduler import Scheduler, frame_ref
from .stream import PacketStream, packet_layout
from .wire import layout

__all__ = ["LEN_BITS", "FlowQueues"]

LEN_BITS = FRAME_META["length"].width  # frame lengths (14 bits)

# The four writer-side counters of a flow are two entries of a counter pair each, because a
# frame moves one pair only: entry 2f is (frames, bytes) of flow f's admitted frames, 2f+1 its
# (quota, no-buffer) drops. A 64-bit entry is two block RAMs wide, where the four counters in
# one entry were four.
_COUNTER_PAIR = data.ArrayLayout(32, 2)
_ADMITTED, _DROPPED = 0, 1  # the entry of a flow's counter pair: Cat(kind, flow)

# Per-flow memories of at most this many bits per read port go to LUT RAM (TRELLIS_DPR16X4,
# 64 bits a cell: 36 cells), larger ones to block RAM (18 Kbit; 108 on a 45F, shared by every
# block of the device). With 16 rules every per-flow memory is LUT RAM; with 64 the quotas and
# the dequeue counters still are.
_LUT_RAM_BITS = 2304


def _ram_style(depth, bits, reads=1):
    return "distributed" if depth * bits * reads <= _LUT_RAM_BITS else "block"


def _power_of_two(name, value, minimum=1):
    if not isinstance(value, int) or value < minimum or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= {minimum}, not {value!r}")


class FlowQueues(wiring.Component):
    """Per-flow queues in a shared buffer of ``cells`` cells, scheduled by SP + DRR.

    Parameters
    ----------
    width_bytes : int
        Beat width of both streams (a power of two).
    flows : int
        Number of flows (queues).
    cells, cell_bytes : int
        Buffer size: ``cells`` cells (any number >= 2) of ``cell_bytes`` bytes (a power of two,
        ``cell_bytes >= width_bytes``).
    classes : int
        Strict-priority classes (larger wins).
    meta : shape
        Shape of the opaque per-frame metadata (default: the ``FRAME_META`` layout).
    quantum : int
        DRR bytes per unit of weight (a power of two): a flow's quantum is
        ``max(weight, 1) * quantum``.
    quota_bits : int
        Width of a quota in bytes.
    patience : int
        Cycles a reservation waits before other frames must leave its cells free (0: at once).

    Members
    -------
    i_stream : ``In(PacketStream(width_bytes))``; ``ready`` is always 1.
    i_flow, i_length, i_meta : inputs valid with the first beat.
    i_reserved : ``In(1)``, valid with the first beat: the frame's ``ceil(i_length /
        cell_bytes)`` cells were reserved through ``reserve``. It is admitted unless its flow
        is closed (quota 0) or its length is 0 (then dropped as over quota, its cells given
        back); its bytes count in its flow's bytes in use but are not checked against the quota.
    reserve : ``In(stream.Signature(range(cells + 1)))``
        Cells to reserve for the next ``i_reserved`` frame. ``ready`` (from registers and a
        compare with the free-cell count; independent of ``valid``) is high when that many
        cells are free and no first or last beat is being decided on in the cycle; the cells
        leave ``free_cells`` at the handshake. Once a request has waited ``patience`` cycles,
        a frame decided on a cycle later is admitted only if it leaves the requested cells
        free (else dropped as ``drop_nobuf``).
    o_stream : ``Out(PacketStream(width_bytes))``; whole frames, one beat per cycle.
    o_flow, o_meta : outputs valid while ``o_stream.valid`` (constant over a frame).
    cfg_flow, cfg_quota_bytes, cfg_class, cfg_weight, cfg_en : per-flow configuration write port
        (``cfg_en`` is the write strobe). Quota 0 closes a flow (all its frames are dropped).
    c_flow : ``In(range(flows))``; counter read address.
    c_req : ``In(1)``
        A strobe: a snapshot of the counters of ``c_flow`` is wanted (``c_flow`` must hold from
        this cycle until ``c_valid``). A newer request cancels an older one.
    c_valid : ``Out(1)``
        A strobe: the counters of the last request are on ``c_enq_*``, ``c_drop_*`` and
        ``c_deq_frames`` in this cycle (at the earliest four cycles after ``c_req``; later
        while the counters' memories are busy updating).
    c_enq_frames, c_enq_bytes, c_drop_quota, c_drop_nobuf, c_deq_frames : ``Out(32)``
        Counters of flow ``c_flow`` (wrapping) from registers, from ``c_valid`` until the next
        snapshot.
    c_bytes_in_use : bytes of flow ``c_flow`` held in the buffer, two cycles later.
    o_dropped : ``Out(1)``; a one-cycle strobe per frame dropped (quota or buffer).
    free_cells : cells not reserved by any frame.
    frames_queued : frames committed and not yet fully sent (counted until the release of their
        bytes). At most ``cells + 8``: a frame's cells are free once read, so besides the frames
        holding cells there are the one whose last beat waits in the output register and those
        that left in the last seven cycles.
    alloc_error : sticky; the allocator was asked for a cell it did not have (never expected).
    """

    def __init__(self, width_bytes: int, flows: int, cells: int, cell_bytes: int,
                 classes: int = 4, *, meta=None, quantum: int = 256, quota_bits: int = 24,
                 patience: int = 0):
        _power_of_two("width_bytes", width_bytes)
        if not isinstance(cells, int) or cells < 2:
            raise ValueError(f"cells must be an integer >= 2, not {cells!r}")
        _power_of_two("cell_bytes", cell_bytes, width_bytes)
        if flows < 1 or classes < 1:
            raise ValueError("need at least one flow and one class")
        self.width_bytes, self.flows, self.classes = width_bytes, flows, classes
        self.cells, self.cell_bytes, self.quantum = cells, cell_bytes, quantum
        self.patience = patience
        self.meta_shape = layout(FRAME_META) if meta is None else meta
        self.byte_capacity = cells * cell_bytes
        super().__init__({
            "i_stream": In(PacketStream(width_bytes)),
            "i_flow": In(range(flows)),
            "i_length": In(LEN_BITS),
            "i_meta": In(self.meta_shape),
            "i_reserved": In(1),
            "reserve": In(stream.Signature(range(cells + 1))),
            "o_stream": Out(PacketStream(width_bytes)),
            "o_flow": Out(range(flows)),
            "o_meta": Out(self.meta_shape),
            "cfg_flow": In(range(flows)),
            "cfg_quota_bytes": In(quota_bits),
            "cfg_class": In(range(classes)),
            "cfg_weight": In(8),
            "cfg_en": In(1),
            "c_flow": In(range(flows)),
            "c_req": In(1),
            "c_valid": Out(1),
            "c_enq_frames": Out(32),
            "c_enq_bytes": Out(32),
            "c_drop_quota": Out(32),
            "c_drop_nobuf": Out(32),
            "c_deq_frames": Out(32),
            "c_bytes_in_use": Out(range(self.byte_capacity + 1)),
            "free_cells": Out(range(cells + 1)),
            "frames_queued": Out(range(cells + 9)),
            "alloc_error": Out(1),
            "o_dropped": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        w, n, cells = self.width_bytes, self.flows, self.cells
        bpc = self.cell_bytes // w  # beats per cell
        # `cells` need not be a power of two: a cell number is `cbits` wide and only ever holds
        # 0 .. cells-1 (the allocator hands them out; links and frame handles copy them), the
        # data memory's address is `cell * bpc + beat` with `bpc` a power of two (a `Cat`),
        # and every memory indexed by a cell is `cells` deep.
        lbpc, lcb, cbits = exact_log2(bpc), exact_log2(self.cell_bytes), ceil_log2(cells)
        count_bits = cbits + 1  # frames one flow can hold (at most `cells`), plus one
        # Byte totals wrap modulo 2**acc_bits, the smallest power of two >= 8 times the buffer:
        # see "admission" below.
        acc_bits = ceil_log2(self.byte_capacity) + 3
        lut = {"ram_style": "distributed"}

        def cells_for(nbytes):
            return (nbytes + self.cell_bytes - 1) >> lcb

        m.submodules.alloc = alloc = CellAllocator(cells)
        m.submodules.sched = sched = Scheduler(n, self.classes, self.quantum, cell_bits=cbits,
                                               len_bits=LEN_BITS, count_bits=count_bits)
        m.d.comb += self.alloc_error.eq(alloc.underflow)
        ref = frame_ref(cbits, LEN_BITS)

        # -- memories -----------------------------------------------------------------------
        # Cell data, address `cell * bpc + beat`. A buffer whose size is not a power of two is
        # two banks: the first 2**(cbits-1) cells and the rest, chosen by the top bit of the
        # cell number. Each bank then maps onto block RAMs that need no multiplexer behind them
        # (as one memory, 288 cells of 64 bytes would be nine 2048-deep block RAMs behind a 9:1
        # multiplexer at width 1, five 512-deep ones behind a 5:1 at width 8: three LUT levels
        # between a block RAM and the output). The reader registers the bank of the beat it
        # loads, so the choice between the banks takes its select from a flip-flop.
        low_cells = cells if cells & (cells - 1) == 0 else 1 << (cbits - 1)
        bank_bits = exact_log2(low_cells)  # bits of a cell number inside its bank
        data_banks = [Memory(shape=8 * w, depth=low_cells * bpc, init=[])]
        if low_cells < cells:
            data_banks.append(Memory(shape=8 * w, depth=(cells - low_cells) * bpc, init=[]))
        for k, bank in enumerate(data_banks):
            m.submodules[("data_mem", "data_mem_high")[k]] = bank
        # Beats are written a cycle after stage 5 decides them, from registers: a bank is
        # several block RAMs wherever the placer found them, and the cell choice in front of
        # their address was a path across the chip. The reader reads a beat many cycles after
        # its frame is committed (through the scheduler), never in the cycle it is written.
        data_wr = [registered_write(m, bank) for bank in data_banks]
        data_rd = [bank.read_port() for bank in data_banks]

        def in_bank(k, cell):
            return 1 if len(data_banks) == 1 else cell[-1] == k
        # Next cell of the same frame, written when the writer moves to a new cell.
        m.submodules.link_mem = link_mem = Memory(shape=cbits, depth=cells, init=[])
        link_wr, link_rd = link_mem.write_port(), link_mem.read_port()
        # Indexed by a frame's first cell: the next frame of the same flow, and its length, so
        # that one read gives the scheduler the new head when a frame is dequeued.
        m.submodules.next_mem = next_mem = Memory(shape=ref, depth=cells, init=[])
        next_wr, next_rd = next_mem.write_port(), next_mem.read_port()
        m.submodules.meta_mem = meta_mem = Memory(shape=self.meta_shape, depth=cells, init=[])
        meta_wr, meta_rd = meta_mem.write_port(), meta_mem.read_port()
        qbits = len(self.cfg_quota_bytes)
        m.submodules.quota_mem = quota_mem = Memory(
            shape=qbits, depth=n, init=[], attrs={"ram_style": _ram_style(n, qbits)})
        quota_wr, quota_rd = quota_mem.write_port(), quota_mem.read_port()
        # Per-flow byte totals, one writer each: bytes admitted (the writer) and bytes released
        # (the output side); bytes in use = admitted - released.
        m.submodules.admitted = adm = RmwMemory(acc_bits, n, extra_reads=1,
                                                ram_style=_ram_style(n, acc_bits, 2),
                                                candidates=True)
        m.submodules.released = rel = RmwMemory(acc_bits, n, extra_reads=2,
                                                ram_style=_ram_style(n, acc_bits, 3))
        # Flows admitted to since reset. The released total and the dequeue count are the
        # references that a reset does not clear: a flow's first admission starts its admitted
        # total from its released total, its first commit its committed count from its dequeue
        # count, so that its bytes in use and its queue are empty without a memory sweep.
        seen = Signal(n)
        # The counters have no read port for the host: its snapshots take the update port in a
        # cycle in which no update starts (see "counter read port" below).
        m.submodules.enq_counters = enq = RmwMemory(_COUNTER_PAIR, 2 * n,
                                                    ram_style=_ram_style(2 * n, 64), adder=True)
        m.submodules.deq_counters = deq = RmwMemory(32, n, ram_style=_ram_style(n, 32))
        # Per-flow queue state of the writer: the tail frame and the frames ever committed.
        m.submodules.tail_mem = tail_mem = Memory(shape=cbits, depth=n, init=[], attrs=lut)
        tail_wr, tail_rd = tail_mem.write_port(), tail_mem.read_port(domain="comb")
        m.submodules.enq_count_mem = enq_count_mem = Memory(shape=count_bits, depth=n, init=[],
                                                            attrs=lut)
        enq_count_wr = enq_count_mem.write_port()
        enq_count_rd = enq_count_mem.read_port(domain="comb")
        enq_count_sched = enq_count_mem.read_port(domain="comb")

        free_avail = Signal(range(cells + 1), init=cells)
        m.d.comb += self.free_cells.eq(free_avail)

        # -- configuration --------------------------------------------------------------------
        m.d.comb += [
            quota_wr.addr.eq(self.cfg_flow), quota_wr.data.eq(self.cfg_quota_bytes),
            quota_wr.en.eq(self.cfg_en),
            sched.cfg_flow.eq(self.cfg_flow), sched.cfg_class.eq(self.cfg_class),
            sched.cfg_weight.eq(self.cfg_weight), sched.cfg_en.eq(self.cfg_en),
        ]

        # -- input: register the beat; its flow's quota and released bytes are read meanwhile --
        i = self.i_stream
        m.d.comb += [i.ready.eq(1), quota_rd.addr.eq(self.i_flow),
                     rel.x_addr[0].eq(self.i_flow)]
        # Data registers have no reset where a flag with one qualifies them (`v1`, the stage
        # flags, `busy`, `o.valid`, `slot_valid`, the counter strobes): a reset then reaches
        # a few hundred flip-flops fewer per block.
        v1 = Signal()
        beat1 = Signal(packet_layout(w), reset_less=True)
        flow_in1 = Signal(range(n), reset_less=True)
        len_in1 = Signal(LEN_BITS, reset_less=True)
        meta1 = Signal(self.meta_shape, reset_less=True)
        res1 = Signal(reset_less=True)
        m.d.sync += v1.eq(i.valid)
        # Comparisons of the announced length, precomputed for a first beat.
        need1 = Signal(LEN_BITS, reset_less=True)  # cells the frame needs
        # length > 0, length > width
        pos1, over1 = Signal(reset_less=True), Signal(reset_less=True)
        with m.If(i.valid):
            m.d.sync += [beat1.eq(i.payload), flow_in1.eq(self.i_flow),
                         len_in1.eq(self.i_length), meta1.eq(self.i_meta),
                         res1.eq(self.i_reserved),
                         need1.eq(cells_for(self.i_length)), pos1.eq(self.i_length != 0),
                         over1.eq(self.i_length > w)]

        # -- stage 1: framing; what the beat would do if its frame is admitted ----------------
        busy = Signal()  # between a first and a last beat
        w_flow = Signal(range(n), reset_less=True)
        w_len = Signal(LEN_BITS, reset_less=True)
        # position of the next beat in its cell (0: needs a new cell)
        w_bic = Signal(lbpc, reset_less=True)
        w_bic0 = Signal()  # w_bic == 0
        # Running remainders instead of sums, so that a beat needs one subtraction each:
        # announced bytes not covered by stored beats
        w_rem = Signal(signed(LEN_BITS + 1), reset_less=True)
        w_pos = Signal()  # w_rem > 0
        w_cells = Signal(signed(cbits + 2), reset_less=True)  # reserved cells not allocated yet

        start1 = v1 & ~busy
        last1 = beat1.last
        flow1 = Mux(start1, flow_in1, w_flow)
        length1 = Mux(start1, len_in1, w_len)
        rem = Signal(signed(LEN_BITS + 1))
        m.d.comb += rem.eq(Mux(start1, len_in1, w_rem))
        has_room = v1 & Mux(start1, pos1, w_pos)  # beats past the announced length are cut
        bic = Signal(lbpc)
        m.d.comb += bic.eq(Mux(start1, 0, w_bic))
        new_cell = has_room & (start1 | w_bic0)
        need = need1
        nbytes = beat1.nbytes
        nb = Mux(nbytes == 0, 1, Mux(nbytes > w, w, nbytes))  # non-last beats count as full
        with m.If(v1):
            m.d.sync += busy.eq(~last1)
            with m.If(start1):
                m.d.sync += [w_flow.eq(flow_in1), w_len.eq(len_in1), w_cells.eq(need1 - 1)]
            with m.Elif(new_cell):
                m.d.sync += w_cells.eq(w_cells - 1)
            with m.If(has_room):
                m.d.sync += [w_bic.eq(bic + 1), w_rem.eq(rem - w),
                             w_bic0.eq(Mux(start1, bpc == 1, w_bic == bpc - 1)),
                             w_pos.eq(Mux(start1, over1, w_rem > w))]

        def stage(name, shape, value):
            # One-bit stage registers are flags and keep their reset; wider ones are data.
            reg = Signal(shape, name=name, reset_less=Shape.cast(shape).width > 1)
            m.d.sync += reg.eq(value)
            return reg

        def follow(regs, n, drop=()):
            """The registers of stage ``n``: those of stage ``n - 1`` less ``drop``."""
            return {k: stage(f"s{n}_{k}", v.shape(), v) for k, v in regs.items()
                    if k not in drop}

        # Stage registers. A beat moves one stage per cycle; `sN` is its state in stage N.
        s2 = dict(
            valid=stage("s2_valid", 1, v1), start=stage("s2_start", 1, start1),
            last=stage("s2_last", 1, last1), flow=stage("s2_flow", range(n), flow1),
            len=stage("s2_len", LEN_BITS, length1),
            rem=stage("s2_rem", rem.shape(), rem), nb=stage("s2_nb", range(w + 1), nb),
            store=stage("s2_store", 1, has_room), new_cell=stage("s2_new_cell", 1, new_cell),
            bic=stage("s2_bic", lbpc, bic), data=stage("s2_data", 8 * w, beat1.data),
            meta=stage("s2_meta", self.meta_shape, meta1),
            need=stage("s2_need", LEN_BITS, need),
            cells_left=stage("s2_cells_left", w_cells.shape(), w_cells),
            quota=stage("s2_quota", len(self.cfg_quota_bytes), quota_rd.data),
            rel=stage("s2_rel", acc_bits, rel.x_data[0]),
            reserved=stage("s2_reserved", 1, start1 & res1),  # at a first beat only
        )
        # -- stage 2: headroom = quota - length; the admitted-bytes update starts --------------
        headroom = Signal(signed(len(self.cfg_quota_bytes) + 1))
        excess = Signal(signed(LEN_BITS + 2))
        m.d.comb += [headroom.eq(s2["quota"] - s2["len"]), adm.addr.eq(s2["flow"]),
                     excess.eq(s2["rem"] - s2["nb"])]
        s3 = follow(s2, 3, drop=("quota", "rem", "nb", "cells_left"))
        s3["headroom"] = stage("s3_headroom", headroom.shape(), headroom)
        closed = (s2["quota"] == 0) | (s2["len"] == 0)
        s3["closed"] = stage("s3_closed", 1, closed)
        # At the last beat: bytes announced but not delivered (a short frame) go back.
        s3["give"] = stage("s3_give", LEN_BITS, Mux(excess > 0, excess, 0))
        # A one-beat frame takes one cell; a longer frame reserves its cells at its first beat
        # and returns those it did not use at its last. A reserved frame took its cells
        # through `reserve`: a one-beat one returns all but one, a dropped one all of them.
        reserved_back = Mux(closed, s2["need"], Mux(s2["last"], s2["need"] - 1, 0))
        first_cells = Mux(s2["reserved"], reserved_back, Mux(s2["last"], -1, -s2["need"]))
        s3["cells_if"] = stage("s3_cells_if", signed(cbits + 2),
                               Mux(s2["start"], first_cells,
                                   Mux(s2["last"], s2["cells_left"] - s2["new_cell"], 0)))

        # -- stage 3: the admission bound, relative to the released bytes ----------------------
        # Admit iff in_use + length <= quota, in_use = admitted - released. With
        # h = min(quota - length, 2**(acc_bits-1) - 1) and y = released + h (mod 2**acc_bits),
        # that is: (y - admitted) mod 2**acc_bits < 2**(acc_bits-1), because in_use (as seen with
        # a released total a few cycles old) stays below twice the buffer, at most a quarter of
        # the modulus. Stage 4 then needs one subtraction.
        hmax = (1 << (acc_bits - 1)) - 1
        h = s3["headroom"]
        bound = Signal(acc_bits)
        m.d.comb += bound.eq(s3["rel"] + Mux(h > hmax, hmax, h[:acc_bits]))
        s4 = follow(s3, 4, drop=("headroom", "closed", "give", "cells_if", "need"))
        # The cells a frame needs, and those of a reservation that has waited `patience`
        # cycles (which the frame must leave free). A reservation granted at the end of this
        # cycle is counted twice: the frame may then be dropped with its cells free.
        res = self.reserve
        waited = Signal(range(self.patience + 1))
        urgent = res.valid & (waited == self.patience)
        m.d.sync += waited.eq(Mux(res.valid & ~res.ready,
                                  Mux(waited == self.patience, waited, waited + 1), 0))
        s4["need"] = stage("s4_need", LEN_BITS, s3["need"] + Mux(urgent, res.payload, 0))
        # A first or last beat decided on in stage 4 (its cells move): no reservation then.
        s4["edge"] = stage("s4_edge", 1, s3["valid"] & (s3["start"] | s3["last"]))
        # A first beat of a flow not admitted to since reset (the decisions of the last three
        # cycles are forwarded by the admitted-bytes memory, older ones are in `seen`).
        seen_set, seen_flow = Signal(), Signal(range(n))  # the decision of the last cycle
        s4["fresh"] = stage("s4_fresh", 1, s3["start"] & ~seen.bit_select(s3["flow"], 1)
                            & ~(seen_set & (seen_flow == s3["flow"])))
        stored = Signal(LEN_BITS)
        m.d.comb += stored.eq(s3["len"] - s3["give"])
        s4["stored"] = stage("s4_stored", LEN_BITS, stored)
        # A one-beat frame takes what it delivered; a longer frame reserves its announced
        # length at its first beat and returns what it did not deliver at its last.
        s4["bytes_if"] = stage("s4_bytes_if", signed(LEN_BITS + 1),
                               Mux(s3["start"], Mux(s3["last"], stored, s3["len"]),
                                   Mux(s3["last"], -s3["give"], 0)))
        s4["bound"] = stage("s4_bound", acc_bits, bound)
        # A reserved frame is only checked for a closed flow, not for its bytes in use.
        s4["bad"] = stage("s4_bad", 1, s3["closed"] | (h[-1] & ~s3["reserved"]))

        # -- stage 4: admission at the first beat (early drop) ---------------------------------
        w_admit = Signal()
        # bound - admitted for each value the admitted total may have (see RmwMemory), so
        # that no multiplexer precedes the subtractions.
        over = Signal(4)
        for k in range(4):
            room = Signal(acc_bits, name=f"room_{k}")
            m.d.comb += [room.eq(s4["bound"] - adm.old_candidates[k]), over[k].eq(room[-1])]
        ok_quota = ~s4["bad"] & (s4["reserved"] | ~(over & adm.old_from).any())
        ok_buf = s4["reserved"] | (s4["need"] <= free_avail)
        admit = ok_quota & ok_buf
        admitted = Mux(s4["start"], admit, w_admit)
        act = s4["valid"] & admitted & (s4["start"] | s4["last"])
        with m.If(s4["valid"] & s4["start"]):
            m.d.sync += w_admit.eq(admit)
        m.d.comb += [adm.new.eq(adm.old + s4["bytes_if"]), adm.write.eq(act),
                     adm.fresh.eq(s4["fresh"]), adm.init.eq(s4["rel"])]
        # Set a cycle late (off the decision's path; the decision of the last cycle is
        # compared separately above).
        m.d.sync += [seen_set.eq(act), seen_flow.eq(s4["flow"])]
        with m.If(seen_set):
            m.d.sync += seen.bit_select(seen_flow, 1).eq(1)
        # Whether the frame is the first of its flow since reset, for its commit.
        w_fresh = Signal()
        frame_fresh = Mux(s4["start"], s4["fresh"], w_fresh)
        with m.If(s4["valid"] & s4["start"]):
            m.d.sync += w_fresh.eq(s4["fresh"])

        # Free cells: this beat's reservation or give-back, and a cell the reader has returned
        # (see "release" below). Both outcomes are summed before `act` is known, which then
        # only selects. The returned cell (`rel_cells`) and its sum with the beat's are
        # registers, formed a cycle ahead, so that each outcome is one addition to the count.
        rel_cells = Signal()
        rel_cells_ahead = Signal()  # the cell returned in the next cycle
        m.d.sync += rel_cells.eq(rel_cells_ahead)
        with_beat = stage("s4_with_beat", signed(cbits + 3),
                          rel_cells_ahead + s3["cells_if"])
        free_if, free_else = Signal.like(free_avail), Signal.like(free_avail)
        free_res = Signal.like(free_avail)
        m.d.comb += [free_if.eq(free_avail + with_beat), free_else.eq(free_avail + rel_cells),
                     free_res.eq(free_else - res.payload)]
        # A reserved frame's first beat moves cells even when it is dropped (they go back).
        act_cells = act | (s4["valid"] & s4["start"] & s4["reserved"])
        # A reservation is granted in a cycle in which no first or last beat moves cells
        # (`act_cells` implies `s4_edge`), so the count takes one of three values.
        m.d.comb += res.ready.eq(~s4["edge"] & (res.payload <= free_avail))
        grant = res.valid & res.ready
        m.d.sync += free_avail.eq(Mux(act_cells, free_if, Mux(grant, free_res, free_else)))

        s5 = follow(s4, 5, drop=("bound", "bad", "need", "bytes_if", "edge", "reserved"))
        s5["admitted"] = stage("s5_admitted", 1, admitted)
        s5["ok_quota"] = stage("s5_ok_quota", 1, ok_quota)
        s5["ok_buf"] = stage("s5_ok_buf", 1, ok_buf)

        # -- stage 5: allocate cells, write, count, and queue the frame at its end ------------
        w5_cell = Signal(cbits, reset_less=True)  # cell of the frame being written
        w5_first = Signal(cbits, reset_less=True)  # its first cell: the frame's handle
        cell = Signal(cbits)
        first_cell = Signal(cbits)
        store = s5["valid"] & s5["store"] & s5["admitted"]
        new_cell5 = s5["valid"] & s5["new_cell"] & s5["admitted"]
        start5 = s5["valid"] & s5["start"]
        commit = s5["valid"] & s5["last"] & s5["admitted"]
        m.d.comb += [
            cell.eq(Mux(new_cell5, alloc.cell, w5_cell)),
            first_cell.eq(Mux(s5["start"], alloc.cell, w5_first)),
            alloc.alloc.eq(new_cell5),
            *(port.addr.eq(Cat(s5["bic"], cell[:bank_bits])) for port in data_wr),
            *(port.data.eq(s5["data"]) for port in data_wr),
            *(port.en.eq(store & in_bank(k, cell)) for k, port in enumerate(data_wr)),
            link_wr.addr.eq(w5_cell), link_wr.data.eq(alloc.cell),
            link_wr.en.eq(new_cell5 & ~s5["start"]),
            meta_wr.addr.eq(alloc.cell), meta_wr.data.eq(s5["meta"]),
            meta_wr.en.eq(start5 & s5["admitted"]),
        ]
        with m.If(store):
            m.d.sync += w5_cell.eq(cell)
        with m.If(start5):
            m.d.sync += w5_first.eq(alloc.cell)

        # The counters' update of a first beat starts here, with the decision known, on the
        # one entry of the flow's counter pair the frame moves (it writes in stage 7): an
        # admitted frame adds one and its length to (frames, bytes), a dropped one adds one to
        # quota or no-buffer drops. In other cycles the port is free for the host's snapshot.
        # The host's snapshot reads its second entry in `c_read1`, unless a newer request
        # cancels it (see "counter read port" below).
        c_read1 = Signal()
        kind5 = Mux(s5["admitted"], _ADMITTED, _DROPPED)
        m.d.comb += enq.addr.eq(Mux(start5, Cat(kind5, s5["flow"]),
                                    Cat(c_read1 & ~self.c_req, self.c_flow)))
        inc = [Mux(s5["admitted"], 1, ~s5["ok_quota"]),
               Mux(s5["admitted"], s5["len"], s5["ok_quota"] & ~s5["ok_buf"])]
        inc7 = [stage(f"s7_inc{k}", v.shape(), stage(f"s6_inc{k}", v.shape(), v))
                for k, v in enumerate(inc)]
        start7 = stage("s7_start", 1, stage("s6_start", 1, start5))
        m.d.comb += [
            enq.write.eq(start7),
            *(enq.add[k].eq(inc7[k]) for k in range(2)),
            enq.new.eq(enq.sum),
            # One cycle per frame dropped at its first beat (quota or buffer): the core's
            # events and anything else that wants to notice drops as they happen.
            self.o_dropped.eq(start5 & ~s5["admitted"]),
        ]

        # Queue the frame. A queue that is empty, or whose last frame the scheduler dequeues
        # in this cycle, gets it as its new head through an activation; otherwise it is linked
        # behind the tail frame. Both sides decide from the same counts of this cycle. The
        # flow's tail and counts are read in stage 4 and registered, with the commit and the
        # dequeue at the end of stage 4 forwarded.
        f4, cflow = s4["flow"], s5["flow"]
        tail5 = Signal(cbits, reset_less=True)
        # frames committed to the flow before this cycle
        enq5 = Signal(count_bits, reset_less=True)
        deq5 = Signal(count_bits, reset_less=True)  # frames dequeued from it before this cycle
        same = commit & (cflow == f4)
        m.d.comb += [tail_rd.addr.eq(f4), enq_count_rd.addr.eq(f4), sched.q_flow.eq(f4)]
        m.d.sync += [
            tail5.eq(Mux(same, first_cell, tail_rd.data)),
            enq5.eq(Mux(same, enq5 + 1, Mux(frame_fresh, sched.q_deq_count,
                                            enq_count_rd.data))),
            deq5.eq(Mux(sched.sel & (sched.sel_flow == f4), sched.sel_count,
                        sched.q_deq_count)),
        ]
        m.d.comb += [
            enq_count_sched.addr.eq(sched.count_flow),
            sched.enq_count.eq(enq_count_sched.data),
            sched.enq_bump.eq(commit & (cflow == sched.count_flow)),
        ]
        # The scheduler's flow is constant from S1 on, so its match is registered a cycle early.
        sel_match = Signal()
        m.d.sync += sel_match.eq(sched.sel_flow == f4)
        activate = (enq5 == deq5) | (sched.sel_emptying & sel_match)
        m.d.comb += [
            next_wr.addr.eq(tail5), next_wr.data.cell.eq(first_cell),
            next_wr.data.len.eq(s5["stored"]), next_wr.en.eq(commit & ~activate),
            sched.act_valid.eq(commit & activate), sched.act_flow.eq(cflow),
            sched.act_frame.cell.eq(first_cell), sched.act_frame.len.eq(s5["stored"]),
            tail_wr.addr.eq(cflow), tail_wr.data.eq(first_cell), tail_wr.en.eq(commit),
            enq_count_wr.addr.eq(cflow), enq_count_wr.data.eq(enq5 + 1),
            enq_count_wr.en.eq(commit),
        ]

        # -- the one-frame lookahead slot, filled by the scheduler -----------------------------
        slot_valid = Signal()
        slot_flow = Signal(range(n), reset_less=True)
        slot_cell = Signal(cbits, reset_less=True)
        slot_len = Signal(LEN_BITS, reset_less=True)
        m.d.comb += [sched.step_en.eq(~slot_valid),
                     next_rd.addr.eq(sched.nx_addr), next_rd.en.eq(sched.nx_en),
                     sched.nx_data.eq(next_rd.data),
                     meta_rd.addr.eq(sched.sel_frame.cell), meta_rd.en.eq(sched.sel)]

        # -- reader: output register = data memory read port, reloaded 1 beat per cycle -------
        # The frame's progress is kept with its comparisons precomputed (`r_le1`: the next beat
        # is the last, `r_le2`: the one after), so that choosing the next beat is a few LUTs.
        o = self.o_stream
        r_cell = Signal(cbits, reset_less=True)
        # position of the next beat in its cell (0: follow the link)
        r_bic = Signal(lbpc, reset_less=True)
        r_rem = Signal(LEN_BITS, reset_less=True)  # bytes of the current frame not yet loaded
        r_more, r_le1, r_le2 = Signal(), Signal(), Signal()
        slot_le1, slot_le2, slot_le3 = Signal(), Signal(), Signal()
        o_len = Signal(LEN_BITS, reset_less=True)
        o_nbytes = Signal(range(w + 1), reset_less=True)
        o_first, o_last = Signal(), Signal()
        o_bank = Signal()  # the data bank of the beat in the output register

        advance = ~o.valid | o.ready
        take = advance & ~r_more & slot_valid
        load = advance & (r_more | slot_valid)
        rd_cell = Signal(cbits)
        rd_bic = Signal(lbpc)
        rd_rem = Signal(LEN_BITS)
        enter = Signal()
        is_last, le2, le3 = Signal(), Signal(), Signal()
        if bpc >= 2:
            # The link of a cell is read when the reader enters it and kept in a register: it
            # is needed `bpc` beats later, off the block RAM's slow output.
            next_cell = Signal(cbits)
            m.d.sync += next_cell.eq(link_rd.data)
        else:
            next_cell = link_rd.data
        with m.If(take):
            m.d.comb += [rd_cell.eq(slot_cell), rd_bic.eq(0), rd_rem.eq(slot_len), enter.eq(1),
                         is_last.eq(slot_le1), le2.eq(slot_le2), le3.eq(slot_le3)]
        with m.Else():
            m.d.comb += [rd_bic.eq(r_bic), rd_rem.eq(r_rem), enter.eq(r_bic == 0),
                         rd_cell.eq(Mux(r_bic == 0, next_cell, r_cell)),
                         is_last.eq(r_le1), le2.eq(r_le2), le3.eq(r_rem <= 3 * w)]
        m.d.comb += [
            *(port.addr.eq(Cat(rd_bic, rd_cell[:bank_bits])) for port in data_rd),
            *(port.en.eq(load) for port in data_rd),
            link_rd.addr.eq(rd_cell), link_rd.en.eq(load & enter),
            # A cell goes back to the allocator once its last beat is read.
            alloc.free.eq(load & ((rd_bic == bpc - 1) | is_last)),
            alloc.free_cell.eq(rd_cell),
        ]
        with m.If(load):
            m.d.sync += [o.valid.eq(1), o_nbytes.eq(Mux(is_last, rd_rem, w)),
                         o_first.eq(take), o_last.eq(is_last), r_cell.eq(rd_cell),
                         r_bic.eq(rd_bic + 1), r_rem.eq(rd_rem - w),
                         r_more.eq(~is_last), r_le1.eq(le2), r_le2.eq(le3),
                         o_bank.eq(rd_cell[-1])]
        with m.Elif(advance):
            m.d.sync += o.valid.eq(0)
        o_flow = Signal(range(n), reset_less=True)
        o_meta = Signal(self.meta_shape, reset_less=True)
        m.d.comb += [self.o_flow.eq(o_flow), self.o_meta.eq(o_meta)]
        with m.If(take):
            m.d.sync += [o_len.eq(slot_len), o_flow.eq(slot_flow), o_meta.eq(meta_rd.data),
                         slot_valid.eq(0)]
        with m.If(sched.sel):
            sel_len = sched.sel_frame.len
            m.d.sync += [slot_valid.eq(1), slot_flow.eq(sched.sel_flow),
                         slot_cell.eq(sched.sel_frame.cell), slot_len.eq(sel_len),
                         slot_le1.eq(sel_len <= w), slot_le2.eq(sel_len <= 2 * w),
                         slot_le3.eq(sel_len <= 3 * w)]
        o_data = (data_rd[0].data if len(data_rd) == 1
                  else Mux(o_bank, data_rd[1].data, data_rd[0].data))
        m.d.comb += [
            o.payload.nbytes.eq(o_nbytes), o.payload.first.eq(o_first),
            o.payload.last.eq(o_last),
            # Lanes past nbytes are driven 0, as the stream format asks of senders.
            o.payload.data.eq(Cat(*(Mux(o_nbytes > k, o_data[8 * k:8 * k + 8], 0)
                                    for k in range(w)))),
        ]

        # -- release: cells one by one as they are read, bytes once the last beat has left ----
        # A cell counts as free for admission as soon as the reader has returned it to the
        # allocator (its last beat loaded into the output register at edge e): the count
        # includes it from cycle e+3, and a frame admitted then takes its first cell in e+4 at
        # the earliest, when the allocator has it ready (from e+3). So a jumbo frame's cells
        # are reusable while it is still leaving, and the next-but-one frame fits beside the
        # one being written. The released-bytes update starts in the cycle the last beat
        # leaves (r) and reaches its memory at the end of r+3; admission reads the released
        # bytes with the first beat, so first beats accepted at r+4 or later see them.
        # `frames_queued` follows at the end of r+7. The dequeue counter, for the host only,
        # starts a cycle later (r+1), from registers: its port is shared with the host's
        # snapshots.
        rel_now = o.valid & o.ready & o.payload.last
        m.d.comb += rel.addr.eq(self.o_flow)
        rel_valid = [rel_now]
        rel_len = [o_len]
        for k in range(1, 8):
            rel_valid.append(stage(f"rel{k}_valid", 1, rel_valid[-1]))
        for k in range(1, 3):
            rel_len.append(stage(f"rel{k}_len", LEN_BITS, rel_len[-1]))
        rel1_flow = stage("rel1_flow", range(n), self.o_flow)
        deq_start = rel_valid[1]
        m.d.comb += [rel.new.eq(rel.old + rel_len[2]), rel.write.eq(rel_valid[2]),
                     deq.addr.eq(Mux(deq_start, rel1_flow, self.c_flow)),
                     deq.new.eq(deq.old + 1), deq.write.eq(rel_valid[3]),
                     rel_cells_ahead.eq(stage("rel_cell", 1, alloc.free))]
        m.d.sync += self.frames_queued.eq(self.frames_queued + commit - rel_valid[7])

        # -- counter read port ----------------------------------------------------------------
        # A second read port would double every counter memory (a block RAM has one read port
        # beside its write port). The host's snapshot instead reads both counter memories
        # through their update port: the admitted pair and the dequeue counter in a cycle in
        # which neither starts an update and no writer update starts in the next cycle
        # either, the drop pair in that next cycle. Two and three cycles later their `old`
        # outputs hold the counters as of the first cycle (with the writes in flight forwarded:
        # one instant for all five). A request waits while the ports are busy (a few cycles
        # per frame; the host polls for completion), and a newer request cancels one in
        # flight.
        #
        # The snapshot leaves through registers, a cycle later: `old` comes out of the memories'
        # forwarding multiplexers, and the core's register block, which takes the snapshot,
        # is far away on the chip (this was the device core's longest path).
        c_pending, c_read2, c_read3, c_taken = Signal(), Signal(), Signal(), Signal()
        c_want = self.c_req | c_pending
        # A writer update starts in the next cycle iff a first beat is in stage 4 now.
        c_read = c_want & ~start5 & ~(s4["valid"] & s4["start"]) & ~deq_start
        m.d.sync += [c_pending.eq(c_want & ~c_read), c_read1.eq(c_read),
                     c_read2.eq(c_read1 & ~self.c_req), c_read3.eq(c_read2 & ~self.c_req),
                     c_taken.eq(c_read3 & ~self.c_req)]
        # The snapshot's registers have no reset: `c_valid` qualifies them.
        snapshot = {name: Signal(32, name=name, reset_less=True)
                    for name in ("c_enq_frames", "c_enq_bytes", "c_deq_frames", "c_drop_quota",
                                 "c_drop_nobuf")}
        m.d.comb += [getattr(self, name).eq(value) for name, value in snapshot.items()]
        with m.If(c_read2):
            m.d.sync += [snapshot["c_enq_frames"].eq(enq.old[0]),
                         snapshot["c_enq_bytes"].eq(enq.old[1]),
                         snapshot["c_deq_frames"].eq(deq.old)]
        with m.If(c_read3):
            m.d.sync += [snapshot["c_drop_quota"].eq(enq.old[0]),
                         snapshot["c_drop_nobuf"].eq(enq.old[1])]
        m.d.comb += self.c_valid.eq(c_taken & ~self.c_req)
        # Bytes in use (not a CSR counter: for tests and debugging) keep read ports of their
        # own; the released total's port is busy in the very cycle a frame leaves.
        c_adm, c_rel = Signal(acc_bits, reset_less=True), Signal(acc_bits, reset_less=True)
        c_seen = Signal()
        m.d.sync += [c_seen.eq(seen.bit_select(self.c_flow, 1)),
                     c_adm.eq(Mux(c_seen, adm.x_data[0], rel.x_data[1])),
                     c_rel.eq(rel.x_data[1])]
        m.d.comb += [
            adm.x_addr[0].eq(self.c_flow), rel.x_addr[1].eq(self.c_flow),
            self.c_bytes_in_use.eq(c_adm - c_rel),
        ]
        return m
