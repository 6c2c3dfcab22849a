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

The writer has two stages. Stage 1 takes the admission decision from registered state, with
the accounting of the beat in stage 2 forwarded to it (so back-to-back frames of one flow are
charged correctly); stage 2 takes cells from a free-cell allocator (`partner.hdl.cell_buffer`),
writes the beat into its cell of ``cell_bytes`` bytes, chains cells through a link memory,
updates the counters and, at the last beat, queues the frame: only then can the scheduler
(`partner.hdl.scheduler`) select it. The output reads frames cell by cell and returns each cell
to the allocator as soon as it has been read; a frame's bytes and cells count as free for
admission once its last beat has left (`partner.sim.models.flow_queues.FlowQueuesCycleModel`
has the exact timing).

``i_length`` must be the frame's byte count. Should the beats disagree, the structure stays
sound: beats beyond ``ceil(length / width)`` are discarded (the frame is cut to ``length``), a
frame that ends early is kept with the bytes it had (non-last beats count as full), and the
difference is given back to the quota and the buffer when it commits.

Memories (``amaranth.lib.memory.Memory``): cell data, cell links, per-frame metadata, per-frame
"next frame" pointers, quotas, counters, free-cell FIFO. Per-flow queue state (frame count,
head, tail, bytes in use) and the scheduler's per-flow state are registers. See docs/queues.md.
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from partner.formats import FRAME_META

from .cell_buffer import CellAllocator
from .scheduler import Scheduler
from .stream import PacketStream, packet_layout
from .wire import layout

__all__ = ["LEN_BITS", "FlowQueues"]

LEN_BITS = FRAME_META["length"].width  # frame lengths (14 bits)

_ENQ_COUNTERS = data.StructLayout({"frames": 32, "bytes": 32, "drop_quota": 32,
                                   "drop_nobuf": 32})


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
        Buffer size: ``cells`` cells of ``cell_bytes`` bytes (powers of two,
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

    Members
    -------
    i_stream : ``In(PacketStream(width_bytes))``; ``ready`` is always 1.
    i_flow, i_length, i_meta : inputs valid with the first beat.
    o_stream : ``Out(PacketStream(width_bytes))``; whole frames, one beat per cycle.
    o_flow, o_meta : outputs valid while ``o_stream.valid`` (constant over a frame).
    cfg_flow, cfg_quota_bytes, cfg_class, cfg_weight, cfg_en : per-flow configuration write port
        (``cfg_en`` is the write strobe). Quota 0 closes a flow (all its frames are dropped).
    c_flow : ``In(range(flows))``; counter read address.
    c_enq_frames, c_enq_bytes, c_drop_quota, c_drop_nobuf, c_deq_frames : ``Out(32)``
        Counters of flow ``c_flow`` one cycle earlier (wrapping).
    c_bytes_in_use : bytes of flow ``c_flow`` held in the buffer, one cycle later.
    o_dropped : ``Out(1)``; a one-cycle strobe per frame dropped (quota or buffer).
    free_cells : cells not reserved by any frame.
    frames_queued : frames committed and not yet fully sent.
    alloc_error : sticky; the allocator was asked for a cell it did not have (never expected).
    """

    def __init__(self, width_bytes: int, flows: int, cells: int, cell_bytes: int,
                 classes: int = 4, *, meta=None, quantum: int = 256, quota_bits: int = 24):
        _power_of_two("width_bytes", width_bytes)
        _power_of_two("cells", cells, 2)
        _power_of_two("cell_bytes", cell_bytes, width_bytes)
        if flows < 1 or classes < 1:
            raise ValueError("need at least one flow and one class")
        self.width_bytes, self.flows, self.classes = width_bytes, flows, classes
        self.cells, self.cell_bytes, self.quantum = cells, cell_bytes, quantum
        self.meta_shape = layout(FRAME_META) if meta is None else meta
        self.byte_capacity = cells * cell_bytes
        super().__init__({
            "i_stream": In(PacketStream(width_bytes)),
            "i_flow": In(range(flows)),
            "i_length": In(LEN_BITS),
            "i_meta": In(self.meta_shape),
            "o_stream": Out(PacketStream(width_bytes)),
            "o_flow": Out(range(flows)),
            "o_meta": Out(self.meta_shape),
            "cfg_flow": In(range(flows)),
            "cfg_quota_bytes": In(quota_bits),
            "cfg_class": In(range(classes)),
            "cfg_weight": In(8),
            "cfg_en": In(1),
            "c_flow": In(range(flows)),
            "c_enq_frames": Out(32),
            "c_enq_bytes": Out(32),
            "c_drop_quota": Out(32),
            "c_drop_nobuf": Out(32),
            "c_deq_frames": Out(32),
            "c_bytes_in_use": Out(range(self.byte_capacity + 1)),
            "free_cells": Out(range(cells + 1)),
            "frames_queued": Out(range(cells + 1)),
            "alloc_error": Out(1),
            "o_dropped": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        w, n, cells = self.width_bytes, self.flows, self.cells
        bpc = self.cell_bytes // w  # beats per cell
        lbpc, lcb, cbits = exact_log2(bpc), exact_log2(self.cell_bytes), exact_log2(cells)

        def cells_for(nbytes):
            return (nbytes + self.cell_bytes - 1) >> lcb

        m.submodules.alloc = alloc = CellAllocator(cells)
        m.submodules.sched = sched = Scheduler(n, self.classes, self.quantum, LEN_BITS)
        m.d.comb += self.alloc_error.eq(alloc.underflow)

        # -- memories -----------------------------------------------------------------------
        m.submodules.data_mem = data_mem = Memory(shape=8 * w, depth=cells * bpc, init=[])
        data_wr, data_rd = data_mem.write_port(), data_mem.read_port()
        # Next cell of the same frame, written when the writer moves to a new cell.
        m.submodules.link_mem = link_mem = Memory(shape=cbits, depth=cells, init=[])
        link_wr, link_rd = link_mem.write_port(), link_mem.read_port()
        # Indexed by a frame's first cell: the next frame of the same flow, and its length, so
        # that one read gives the scheduler the new head when a frame is dequeued.
        frame_ref = data.StructLayout({"cell": cbits, "len": LEN_BITS})
        m.submodules.next_mem = next_mem = Memory(shape=frame_ref, depth=cells, init=[])
        next_wr, next_rd = next_mem.write_port(), next_mem.read_port()
        m.submodules.meta_mem = meta_mem = Memory(shape=self.meta_shape, depth=cells, init=[])
        meta_wr, meta_rd = meta_mem.write_port(), meta_mem.read_port()
        # In LUT RAM even where block RAM would fit: a block RAM's slow clock-to-output would
        # start the admission check, the longest path.
        m.submodules.quota_mem = quota_mem = Memory(
            shape=len(self.cfg_quota_bytes), depth=n, init=[],
            attrs={"ram_style": "distributed"})
        quota_wr = quota_mem.write_port()
        quota_rd = quota_mem.read_port(transparent_for=(quota_wr,))
        m.submodules.enq_mem = enq_mem = Memory(shape=_ENQ_COUNTERS, depth=n, init=[])
        enq_wr = enq_mem.write_port()
        enq_rd = enq_mem.read_port(transparent_for=(enq_wr,))  # read-modify-write per frame
        enq_host = enq_mem.read_port()
        m.submodules.deq_mem = deq_mem = Memory(shape=32, depth=n, init=[])
        deq_wr = deq_mem.write_port()
        deq_rd = deq_mem.read_port(transparent_for=(deq_wr,))
        deq_host = deq_mem.read_port()

        # -- per-flow queue state -------------------------------------------------------------
        count = Array(Signal(range(cells + 1), name=f"count_{i}") for i in range(n))
        # count != 0 and count == 1, as registers: the scheduler starts from them.
        nonempty = Signal(n)
        single = Signal(n)
        head_cell = Array(Signal(cbits, name=f"head_cell_{i}") for i in range(n))
        head_len = Array(Signal(LEN_BITS, name=f"head_len_{i}") for i in range(n))
        tail_cell = Array(Signal(cbits, name=f"tail_cell_{i}") for i in range(n))
        in_use = Array(Signal(range(self.byte_capacity + 1), name=f"in_use_{i}")
                       for i in range(n))
        free_avail = Signal(range(cells + 1), init=cells)
        m.d.comb += self.free_cells.eq(free_avail)

        # -- configuration --------------------------------------------------------------------
        m.d.comb += [
            quota_wr.addr.eq(self.cfg_flow), quota_wr.data.eq(self.cfg_quota_bytes),
            quota_wr.en.eq(self.cfg_en),
            sched.cfg_flow.eq(self.cfg_flow), sched.cfg_class.eq(self.cfg_class),
            sched.cfg_weight.eq(self.cfg_weight), sched.cfg_en.eq(self.cfg_en),
        ]

        # -- input: register the beat; read its flow's quota meanwhile -----------------------
        i = self.i_stream
        m.d.comb += [i.ready.eq(1), quota_rd.addr.eq(self.i_flow)]
        s1_valid = Signal()
        s1_beat = Signal(packet_layout(w))
        s1_flow = Signal(range(n))
        s1_len = Signal(LEN_BITS)
        s1_meta = Signal(self.meta_shape)
        m.d.sync += s1_valid.eq(i.valid)
        with m.If(i.valid):
            m.d.sync += [s1_beat.eq(i.payload), s1_flow.eq(self.i_flow),
                         s1_len.eq(self.i_length), s1_meta.eq(self.i_meta)]

        # -- writer stage 2 registers (declared first: stage 1 forwards from them) -----------
        s2_valid, s2_start, s2_last, s2_admitted = Signal(), Signal(), Signal(), Signal()
        s2_store, s2_new_cell = Signal(), Signal()
        s2_ok_quota, s2_ok_buf = Signal(), Signal()
        s2_flow = Signal(range(n))
        s2_len = Signal(LEN_BITS)
        s2_stored = Signal(LEN_BITS)
        s2_bic = Signal(lbpc)
        s2_data = Signal(8 * w)
        s2_meta = Signal(self.meta_shape)
        # Accounting of the beat if its frame is admitted, worked out in stage 1 beside the
        # decision so that stage 2 only selects: + length at a first beat, - what a short
        # frame gives back at its last beat; cells likewise, the other way round.
        s2_bytes_if = Signal(signed(LEN_BITS + 1))
        s2_cells_if = Signal(signed(cbits + 2))
        bytes_delta = Signal(signed(LEN_BITS + 1))  # applied at this edge (stage 2)
        cells_delta = Signal(signed(cbits + 2))
        s2_act = s2_valid & s2_admitted & (s2_start | s2_last)
        m.d.comb += [bytes_delta.eq(Mux(s2_act, s2_bytes_if, 0)),
                     cells_delta.eq(Mux(s2_act, s2_cells_if, 0))]

        # -- writer stage 1: admission at the first beat (early drop), framing ---------------
        w_busy = Signal()  # between a first and a last beat
        w_admit = Signal()
        w_flow = Signal(range(n))
        w_len = Signal(LEN_BITS)
        w_bic = Signal(lbpc)  # position of the next beat in its cell (0: needs a new cell)
        # Running remainders instead of sums, so that a beat needs one subtraction each:
        w_rem = Signal(signed(LEN_BITS + 1))  # announced bytes not covered by stored beats
        w_cells = Signal(signed(cbits + 2))  # reserved cells not allocated yet

        start = s1_valid & ~w_busy
        flow = Signal(range(n))
        length = Signal(LEN_BITS)
        m.d.comb += [flow.eq(Mux(start, s1_flow, w_flow)), length.eq(Mux(start, s1_len, w_len))]
        # The beat in stage 2 updates bytes and cells at this edge: forward its change.
        forward = s2_act & (s2_flow == s1_flow)
        charge = Signal(signed(LEN_BITS + 2))
        headroom = Signal(signed(len(self.cfg_quota_bytes) + 1))
        free_now = Signal(signed(cbits + 2))
        m.d.comb += [
            charge.eq(Mux(forward, s1_len + bytes_delta, s1_len)),
            headroom.eq(quota_rd.data - in_use[s1_flow]),
            free_now.eq(free_avail + cells_delta),
        ]
        need = Signal(LEN_BITS)
        m.d.comb += need.eq(cells_for(s1_len))
        ok_quota = (s1_len != 0) & (charge <= headroom)
        ok_buf = need <= free_now
        admit = ok_quota & ok_buf
        admitted = Mux(start, admit, w_admit)

        rem = Signal(signed(LEN_BITS + 1))
        m.d.comb += rem.eq(Mux(start, s1_len, w_rem))
        has_room = s1_valid & (rem > 0)  # beats past the announced length are cut
        store = has_room & admitted
        bic = Signal(lbpc)
        m.d.comb += bic.eq(Mux(start, 0, w_bic))
        new_cell = store & (bic == 0)
        # The same for a beat after the first, from registers only: keeps the admission
        # decision (a first beat's) out of the paths of the beats that follow it.
        w_new_cell = has_room & w_admit & (w_bic == 0)
        nbytes = s1_beat.nbytes
        nb = Mux(nbytes == 0, 1, Mux(nbytes > w, w, nbytes))  # non-last beats count as full
        # At the last beat: bytes announced but not delivered (a short frame) go back.
        give_bytes = Signal(LEN_BITS)
        m.d.comb += give_bytes.eq(Mux(rem > nb, rem - nb, 0))
        last = s1_beat.last

        with m.If(s1_valid):
            m.d.sync += w_busy.eq(~last)
            with m.If(start):
                m.d.sync += [w_flow.eq(s1_flow), w_len.eq(s1_len), w_admit.eq(admit),
                             w_cells.eq(need - 1)]
            with m.Elif(w_new_cell):
                m.d.sync += w_cells.eq(w_cells - 1)
            with m.If(has_room):
                m.d.sync += [w_bic.eq(bic + 1), w_rem.eq(rem - w)]
        m.d.sync += [
            s2_valid.eq(s1_valid), s2_start.eq(start), s2_last.eq(last),
            s2_admitted.eq(admitted), s2_store.eq(store), s2_new_cell.eq(new_cell),
            s2_ok_quota.eq(ok_quota), s2_ok_buf.eq(ok_buf),
            s2_flow.eq(flow), s2_len.eq(length), s2_stored.eq(length - give_bytes),
            s2_bic.eq(bic), s2_data.eq(s1_beat.data), s2_meta.eq(s1_meta),
            # A one-beat frame takes what it delivered and one cell; a longer frame reserves
            # its announced length and cells at its first beat and returns the rest at its
            # last.
            s2_bytes_if.eq(Mux(start, Mux(last, s1_len - give_bytes, s1_len),
                               Mux(last, -give_bytes, 0))),
            s2_cells_if.eq(Mux(start, Mux(last, -1, -need),
                               Mux(last, w_cells - w_new_cell, 0))),
        ]

        # -- writer stage 2: allocate cells, write, count, and queue the frame at its end ----
        w2_cell = Signal(cbits)  # cell of the frame being written
        w2_first = Signal(cbits)  # its first cell: the frame's handle
        cell = Signal(cbits)
        first_cell = Signal(cbits)
        admit2 = s2_valid & s2_start & s2_admitted
        commit = s2_valid & s2_last & s2_admitted
        m.d.comb += [
            cell.eq(Mux(s2_new_cell, alloc.cell, w2_cell)),
            first_cell.eq(Mux(s2_start, alloc.cell, w2_first)),
            alloc.alloc.eq(s2_new_cell),
            data_wr.addr.eq(Cat(s2_bic, cell)), data_wr.data.eq(s2_data),
            data_wr.en.eq(s2_store),
            link_wr.addr.eq(w2_cell), link_wr.data.eq(alloc.cell),
            link_wr.en.eq(s2_new_cell & ~s2_start),
            meta_wr.addr.eq(alloc.cell), meta_wr.data.eq(s2_meta), meta_wr.en.eq(admit2),
        ]
        with m.If(s2_store):
            m.d.sync += w2_cell.eq(cell)
        with m.If(s2_valid & s2_start):
            m.d.sync += w2_first.eq(alloc.cell)

        # Per-flow counters of the input side: a read-modify-write per first beat, read in
        # stage 1 (transparent to stage 2's write of the previous frame) and written in stage 2.
        enq_old = enq_rd.data
        m.d.comb += [
            enq_rd.addr.eq(s1_flow),
            enq_wr.addr.eq(s2_flow), enq_wr.en.eq(s2_valid & s2_start),
            enq_wr.data.frames.eq(enq_old.frames + s2_admitted),
            enq_wr.data.bytes.eq(enq_old.bytes + Mux(s2_admitted, s2_len, 0)),
            enq_wr.data.drop_quota.eq(enq_old.drop_quota + ~s2_ok_quota),
            enq_wr.data.drop_nobuf.eq(enq_old.drop_nobuf + (s2_ok_quota & ~s2_ok_buf)),
            # One cycle per frame dropped at its first beat (quota or buffer): the core's
            # events and anything else that wants to notice drops as they happen.
            self.o_dropped.eq(s2_valid & s2_start & ~s2_admitted),
        ]

        # -- scheduler and queue state ----------------------------------------------------------
        slot_valid = Signal()  # one-frame lookahead: the next frame to output
        slot_flow = Signal(range(n))
        slot_cell = Signal(cbits)
        slot_len = Signal(LEN_BITS)
        pend = Signal()  # head of pend_flow is being read from next_mem
        pend_flow = Signal(range(n))
        sel, sf = sched.sel_valid, sched.sel_flow
        m.d.comb += sched.step_en.eq(~slot_valid)
        for k in range(n):
            m.d.comb += [sched.eligible[k].eq(nonempty[k] & ~(pend & (pend_flow == k))),
                         sched.head_len[k].eq(head_len[k])]
        m.d.comb += sched.single.eq(single)

        m.d.comb += [next_rd.addr.eq(head_cell[sf]), next_rd.en.eq(sel),
                     meta_rd.addr.eq(head_cell[sf]), meta_rd.en.eq(sel)]
        m.d.sync += [pend.eq(sel & (count[sf] >= 2)), pend_flow.eq(sf)]
        with m.If(pend):
            m.d.sync += [head_cell[pend_flow].eq(next_rd.data.cell),
                         head_len[pend_flow].eq(next_rd.data.len)]

        # A frame joining a queue that is empty (or being emptied at this edge) becomes its
        # head directly; otherwise it is linked behind the tail.
        cflow = s2_flow
        joins_empty = ~nonempty.bit_select(cflow, 1) | (
            single.bit_select(cflow, 1) & sel & (sf == cflow))
        m.d.comb += [next_wr.addr.eq(tail_cell[cflow]), next_wr.data.cell.eq(first_cell),
                     next_wr.data.len.eq(s2_stored), next_wr.en.eq(commit & ~joins_empty)]
        with m.If(commit):
            m.d.sync += tail_cell[cflow].eq(first_cell)
            with m.If(joins_empty):
                m.d.sync += [head_cell[cflow].eq(first_cell), head_len[cflow].eq(s2_stored)]

        count_w = count[cflow] + 1 - (sel & (sf == cflow))
        count_s = count[sf] - 1
        for k in range(n):
            with m.If(commit & (cflow == k)):
                m.d.sync += [count[k].eq(count_w), nonempty[k].eq(1),
                             single[k].eq(count_w == 1)]
            with m.Elif(sel & (sf == k)):
                m.d.sync += [count[k].eq(count_s), nonempty[k].eq(count_s != 0),
                             single[k].eq(count_s == 1)]

        # -- reader: output register = data memory read port, reloaded 1 beat per cycle -------
        o = self.o_stream
        r_cell = Signal(cbits)
        r_bic = Signal(lbpc)  # position of the next beat in its cell (0: follow the link)
        r_rem = Signal(LEN_BITS)  # bytes of the current frame not yet loaded
        o_len = Signal(LEN_BITS)
        o_nbytes = Signal(range(w + 1))
        o_first, o_last = Signal(), Signal()

        advance = ~o.valid | o.ready
        take = advance & (r_rem == 0) & slot_valid
        load = advance & ((r_rem != 0) | slot_valid)
        rd_cell = Signal(cbits)
        rd_bic = Signal(lbpc)
        rd_rem = Signal(LEN_BITS)
        enter = Signal()
        with m.If(take):
            m.d.comb += [rd_cell.eq(slot_cell), rd_bic.eq(0), rd_rem.eq(slot_len), enter.eq(1)]
        with m.Else():
            m.d.comb += [rd_bic.eq(r_bic), rd_rem.eq(r_rem), enter.eq(r_bic == 0),
                         rd_cell.eq(Mux(r_bic == 0, link_rd.data, r_cell))]
        is_last = rd_rem <= w
        m.d.comb += [
            data_rd.addr.eq(Cat(rd_bic, rd_cell)), data_rd.en.eq(load),
            link_rd.addr.eq(rd_cell), link_rd.en.eq(load & enter),
            # A cell goes back to the allocator once its last beat is read.
            alloc.free.eq(load & ((rd_bic == bpc - 1) | is_last)),
            alloc.free_cell.eq(rd_cell),
        ]
        with m.If(load):
            m.d.sync += [o.valid.eq(1), o_nbytes.eq(Mux(is_last, rd_rem, w)),
                         o_first.eq(take), o_last.eq(is_last), r_cell.eq(rd_cell),
                         r_bic.eq(rd_bic + 1), r_rem.eq(Mux(is_last, 0, rd_rem - w))]
        with m.Elif(advance):
            m.d.sync += o.valid.eq(0)
        with m.If(take):
            m.d.sync += [o_len.eq(slot_len), self.o_flow.eq(slot_flow),
                         self.o_meta.eq(meta_rd.data), slot_valid.eq(0)]
        with m.If(sel):
            m.d.sync += [slot_valid.eq(1), slot_flow.eq(sf), slot_cell.eq(head_cell[sf]),
                         slot_len.eq(head_len[sf])]
        m.d.comb += [
            o.payload.nbytes.eq(o_nbytes), o.payload.first.eq(o_first),
            o.payload.last.eq(o_last),
            # Lanes past nbytes are driven 0, as the stream format asks of senders.
            o.payload.data.eq(Cat(*(Mux(o_nbytes > k, data_rd.data[8 * k:8 * k + 8], 0)
                                    for k in range(w)))),
        ]

        # -- release: a frame's bytes and cells are free once its last beat has left ---------
        rel_now = o.valid & o.ready & o.payload.last
        rel_valid = Signal()
        rel_flow = Signal(range(n))
        rel_len = Signal(LEN_BITS)
        m.d.sync += [rel_valid.eq(rel_now), rel_flow.eq(self.o_flow), rel_len.eq(o_len)]
        m.d.comb += [deq_rd.addr.eq(self.o_flow), deq_rd.en.eq(rel_now),
                     deq_wr.addr.eq(rel_flow), deq_wr.data.eq(deq_rd.data + 1),
                     deq_wr.en.eq(rel_valid)]

        # -- accounting: stage 2 of the writer and a release may hit the same flow at once ----
        same = rel_valid & (rel_flow == s2_flow)
        w_flow_bytes = in_use[s2_flow] + Mux(same, bytes_delta - rel_len, bytes_delta)
        rel_flow_bytes = in_use[rel_flow] - rel_len
        for k in range(n):
            with m.If(s2_act & (s2_flow == k)):
                m.d.sync += in_use[k].eq(w_flow_bytes)
            with m.Elif(rel_valid & (rel_flow == k)):
                m.d.sync += in_use[k].eq(rel_flow_bytes)
        m.d.sync += [
            free_avail.eq(free_avail + cells_delta + Mux(rel_valid, cells_for(rel_len), 0)),
            self.frames_queued.eq(self.frames_queued + commit - rel_valid),
        ]

        # -- counter read port ----------------------------------------------------------------
        m.d.comb += [
            enq_host.addr.eq(self.c_flow), deq_host.addr.eq(self.c_flow),
            self.c_enq_frames.eq(enq_host.data.frames),
            self.c_enq_bytes.eq(enq_host.data.bytes),
            self.c_drop_quota.eq(enq_host.data.drop_quota),
            self.c_drop_nobuf.eq(enq_host.data.drop_nobuf),
            self.c_deq_frames.eq(deq_host.data),
        ]
        m.d.sync += self.c_bytes_in_use.eq(in_use[self.c_flow])
        return m
