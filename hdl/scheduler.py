# Strict priority between classes and Deficit Round Robin inside a class, for the flow queues
# (partner.hdl.flow_queues). DRR after M. Shreedhar, G. Varghese, "Efficient Fair Queuing using
# Deficit Round Robin", SIGCOMM 1995: an *active list* of backlogged flows per class and a
# per-flow deficit, so one decision touches one flow. Reference model:
# partner.sim.models.flow_queues (`FlowQueuesModel` for the algorithm, `FlowQueuesCycleModel`
# for the timing). See docs/queues.md.
"""SP + DRR scheduler with per-flow state in memories.

Per flow (LUT RAM, one entry per flow): the deficit, the head frame (first cell and length),
the link to the next flow of its class's active list, the class and the weight, and the count
of frames dequeued. Per class (registers): the active list's head, tail and a non-empty bit.

The queues tell the scheduler about a flow in two ways: a frame committed to an *empty* queue
(or to a queue whose last frame is being dequeued in the same cycle) is an **activation**
(``act_*``: flow, frame), pushed into a FIFO of at most ``flows`` entries (each flow has at
most one pending); other frames only raise the flow's enqueue count (``enq_count`` of
``count_flow``, combinational) and are linked behind the queue's tail in the next-frame memory,
which the scheduler reads (``nx_*``) to find a flow's new head frame.

The scheduler is a small state machine; each cycle it is idle it either

* takes one activation: the flow joins the tail of its class's list with a fresh deficit of one
  quantum (``max(weight, 1) * quantum``) and its head frame (the class is the one of the cycle
  the frame was queued, which the activation carries; the weight is the one of the cycle the
  activation is taken, read then, so that an activation fits one 36-bit block RAM word with
  64 flows); or, if there is none,
* starts a **step**, if the user's one-frame slot is empty (``step_en``) and a list is not
  empty. A step looks at the flow ``f`` at the front of the highest non-empty class:

  ====== ================================================================================
  cycle  work
  ====== ================================================================================
  S0     the class and ``f`` (the front of its list) are registered
  S1     ``f``'s deficit, head frame, link, class, weight and counts are read (LUT RAM) and
         registered
  S2     ``head_len <= deficit``, the candidate deficits and list updates are computed
  S3     if the head frame fits: it is selected (``sel``: dequeued, the user's slot takes it)
         and the next frame's read is started; if that was ``f``'s last frame, ``f`` leaves
         its list (the step ends). Otherwise ``f`` gets one more quantum and goes to the tail
         of its class's list (a *wasted* step: nothing selected; it ends)
  S4     the next-frame memory's output is registered
  S5     ``f``'s new head frame is stored and compared with the deficit left
  S6     if it does not fit, ``f`` goes to the tail of its class's list with one more quantum
         (DRR's end of a turn), otherwise it stays at the front with the deficit left
  ====== ================================================================================

A step uses the class and weight ``f`` had in S1; a class change therefore moves the flow at
its next turn. An emptied flow's deficit is forgotten (the next activation resets it).
Configuration (``cfg_*``) is not cleared by reset; lists and counts are.
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from .rmw_memory import registered_write

__all__ = ["Scheduler", "frame_ref"]


def frame_ref(cell_bits, len_bits):
    """A frame: its first cell and its length."""
    return data.StructLayout({"cell": cell_bits, "len": len_bits})


class Scheduler(wiring.Component):
    """Strict priority over ``classes`` classes, DRR among the ``flows`` flows of a class.

    Parameters
    ----------
    flows, classes : int
    quantum : int
        Bytes of DRR quantum per unit of weight (a power of two).
    cell_bits, len_bits : int
        Widths of a frame's first cell and of its length.
    count_bits : int
        Width of the wrapping frame counts (enough for the frames one flow can hold, plus one).

    Members
    -------
    act_valid, act_flow, act_frame : inputs
        Activation: ``act_flow``'s queue was empty and ``act_frame`` joined it.
    act_class : ``Out``
        The class of ``act_flow`` now (combinational): the activation carries it.
        An activation can be taken by the scheduler from the fourth cycle after ``act_valid``.
    count_flow : ``Out(range(flows))``; enq_count : ``In(count_bits)``
        Frames committed to ``count_flow`` (wrapping), combinational; ``enq_bump``: one more
        is committed at this edge. Only read for flows in a list.
    q_flow : ``In(range(flows))``; q_deq_count : ``Out(count_bits)``
        Frames dequeued from ``q_flow`` (wrapping), combinational from the address (LUT RAM).
        Not cleared by reset: the queues start a flow's committed count from it.
    sel : ``Out(1)``
        A frame is dequeued at this edge: ``sel_flow``, ``sel_frame``.
    sel_emptying : ``Out(1)``
        It was the last frame of its queue by the counts of this cycle.
    sel_count : ``Out(count_bits)``
        The frames dequeued from ``sel_flow`` after this one (from registers).
    nx_addr : ``Out(cell_bits)``; nx_en : ``Out(1)``; nx_data : ``In(frame_ref)``
        Read port of the next-frame memory (synchronous: ``nx_data`` one cycle after ``nx_en``).
    step_en : ``In(1)``
        The user's slot is empty: a step may start.
    busy : ``Out(1)``
        A step or an activation is in progress or pending.
    cfg_flow, cfg_class, cfg_weight, cfg_en : inputs
        Write port of the per-flow class (``range(classes)``) and weight (8 bits).
    """

    def __init__(self, flows: int, classes: int = 4, quantum: int = 256, *, cell_bits: int,
                 len_bits: int = 14, count_bits: int):
        if flows < 1 or classes < 1:
            raise ValueError("need at least one flow and one class")
        if quantum < 1 or quantum & (quantum - 1):
            raise ValueError(f"quantum must be a power of two, not {quantum!r}")
        self.flows, self.classes, self.quantum = flows, classes, quantum
        self.cell_bits, self.len_bits, self.count_bits = cell_bits, len_bits, count_bits
        # A deficit stays below the longest frame plus one quantum (a flow moves to the back
        # as soon as its head frame does not fit, and then gets one quantum).
        self.deficit_bits = ((1 << len_bits) + 255 * quantum).bit_length()
        ref = frame_ref(cell_bits, len_bits)
        super().__init__({
            "act_valid": In(1),
            "act_flow": In(range(flows)),
            "act_frame": In(ref),
            "act_class": Out(range(classes)),
            "count_flow": Out(range(flows)),
            "enq_count": In(count_bits),
            "enq_bump": In(1),
            "q_flow": In(range(flows)),
            "q_deq_count": Out(count_bits),
            "sel": Out(1),
            "sel_flow": Out(range(flows)),
            "sel_frame": Out(ref),
            "sel_emptying": Out(1),
            "sel_count": Out(count_bits),
            "nx_addr": Out(cell_bits),
            "nx_en": Out(1),
            "nx_data": In(ref),
            "step_en": In(1),
            "busy": Out(1),
            "cfg_flow": In(range(flows)),
            "cfg_class": In(range(classes)),
            "cfg_weight": In(8),
            "cfg_en": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        n, nc, dbits = self.flows, self.classes, self.deficit_bits
        ref = frame_ref(self.cell_bits, self.len_bits)
        lq = exact_log2(self.quantum)
        lut = {"ram_style": "distributed"}  # read asynchronously: LUT RAM

        # -- per-flow memories ---------------------------------------------------------------
        conf_layout = data.StructLayout({"cls": range(nc), "weight": 8})
        m.submodules.conf_mem = conf_mem = Memory(shape=conf_layout, depth=n,
                                                  init=[{"cls": 0, "weight": 1}] * n, attrs=lut)
        conf_wr, conf_rd = conf_mem.write_port(), conf_mem.read_port(domain="comb")
        conf_act = conf_mem.read_port(domain="comb")
        conf_take = conf_mem.read_port(domain="comb")  # the weight of an activation taken
        m.d.comb += [conf_wr.addr.eq(self.cfg_flow), conf_wr.data.cls.eq(self.cfg_class),
                     conf_wr.data.weight.eq(self.cfg_weight), conf_wr.en.eq(self.cfg_en)]
        # Writes to the deficit, head and link memories reach them one cycle after the step
        # or activation decides them, from registers: the decision (a multiplexer between the
        # activation and the step) then ends in flip-flops next to it, and only their fan-out
        # to the LUT RAM cells, which the placer puts wherever RAM sites are free, lies before
        # the write. Nothing reads a written entry sooner: S1, the only reader, comes two
        # cycles after any write at the earliest (after an activation, or S3 or S6 of a step).
        m.submodules.deficit_mem = deficit_mem = Memory(shape=dbits, depth=n, init=[],
                                                        attrs=lut)
        deficit_wr, deficit_rd = registered_write(m, deficit_mem), deficit_mem.read_port(
            domain="comb")
        m.submodules.head_mem = head_mem = Memory(shape=ref, depth=n, init=[], attrs=lut)
        head_wr, head_rd = registered_write(m, head_mem), head_mem.read_port(domain="comb")
        m.submodules.link_mem = link_mem = Memory(shape=range(n), depth=n, init=[], attrs=lut)
        link_wr, link_rd = registered_write(m, link_mem), link_mem.read_port(domain="comb")
        m.submodules.deq_mem = deq_mem = Memory(shape=self.count_bits, depth=n, init=[],
                                                attrs=lut)
        deq_wr = deq_mem.write_port()
        deq_rd, deq_q = deq_mem.read_port(domain="comb"), deq_mem.read_port(domain="comb")

        def quantum_of(weight):
            return Mux(weight == 0, 1, weight) << lq

        # -- activation FIFO: a memory, a prefetch stage and an output register ----------------
        abits = ceil_log2(max(n, 2))
        act_layout = data.StructLayout({"flow": range(n), "frame": ref, "cls": range(nc)})
        # Read synchronously: LUT RAM while small, block RAM beyond 32 flows.
        m.submodules.act_mem = act_mem = Memory(
            shape=act_layout, depth=1 << abits, init=[],
            attrs={"ram_style": "distributed" if n <= 32 else "block"})
        act_wr, act_rd = act_mem.write_port(), act_mem.read_port()
        wp, rp = Signal(abits + 1), Signal(abits + 1)
        # The entry is registered before it is written (off the path of the queues' decision).
        push = Signal()
        entry = Signal(act_layout, reset_less=True)
        m.d.comb += [conf_act.addr.eq(self.act_flow),
                     self.act_class.eq(conf_act.data.cls)]
        m.d.sync += [push.eq(self.act_valid), entry.flow.eq(self.act_flow),
                     entry.frame.eq(self.act_frame), entry.cls.eq(conf_act.data.cls)]
        m.d.comb += [act_wr.addr.eq(wp[:abits]), act_wr.en.eq(push), act_wr.data.eq(entry)]
        with m.If(push):
            m.d.sync += wp.eq(wp + 1)
        v1, v2 = Signal(), Signal()
        act = Signal(act_layout, reset_less=True)
        m.d.comb += conf_take.addr.eq(act.flow)
        pop = Signal()
        move = v1 & (~v2 | pop)
        load = (rp != wp) & (~v1 | move)
        m.d.comb += [act_rd.addr.eq(rp[:abits]), act_rd.en.eq(load)]
        with m.If(load):
            m.d.sync += [rp.eq(rp + 1), v1.eq(1)]
        with m.Elif(move):
            m.d.sync += v1.eq(0)
        with m.If(move):
            m.d.sync += [act.eq(act_rd.data), v2.eq(1)]
        with m.Elif(pop):
            m.d.sync += v2.eq(0)

        # -- active lists ----------------------------------------------------------------------
        # Head and tail mean something only while `lnon` says the list is not empty.
        lhead = [Signal(range(n), name=f"list_head_{c}", reset_less=True) for c in range(nc)]
        ltail = [Signal(range(n), name=f"list_tail_{c}", reset_less=True) for c in range(nc)]
        lnon = Signal(nc)  # list c is not empty

        # -- state machine ---------------------------------------------------------------------
        # One flag per cycle of a step: S1 read, S2 compute, S3 decide, S4 to S6 (see above).
        s1, s2, s3, s4, s5, s6 = (Signal(name=f"s{k}") for k in range(1, 7))
        # `idle` (no step flag set) is a register of its own, formed from the flags' next
        # values: `pop` then comes from two flip-flops, and it enables every class's list
        # registers and the memories' writes.
        idle = Signal(init=1)
        m.d.comb += [pop.eq(idle & v2), self.busy.eq(~idle | v1 | v2 | (rp != wp))]
        start = idle & ~v2 & self.step_en & lnon.any()
        m.d.sync += [s1.eq(start), s2.eq(s1), s3.eq(s2)]

        st_c = Signal(nc)  # the class of the step, one-hot
        st_f = Signal(range(n), reset_less=True)
        top = Signal(nc)  # one-hot: the highest non-empty class
        m.d.comb += top.eq(Cat(lnon[c] & ~lnon[c + 1:].any() for c in range(nc)))
        with m.If(start):
            m.d.sync += [st_c.eq(top),
                         st_f.eq(Cat(*(Cat(lhead[c][b] & top[c] for c in range(nc)).any()
                                       for b in range(len(st_f)))))]

        # S1: register f's state as read from the LUT RAMs.
        m.d.comb += [conf_rd.addr.eq(st_f), deficit_rd.addr.eq(st_f),
                     head_rd.addr.eq(st_f), link_rd.addr.eq(st_f), deq_rd.addr.eq(st_f),
                     self.count_flow.eq(st_f)]
        # The step's operands need no reset (the state flags qualify them): fewer loads on the
        # reset net.
        head = Signal(ref, reset_less=True)
        deficit = Signal(dbits, reset_less=True)
        link = Signal(range(n), reset_less=True)
        st_cls = Signal(range(nc), reset_less=True)
        st_weight = Signal(8, reset_less=True)
        deq_now = Signal(self.count_bits, reset_less=True)  # frames dequeued from f
        enq_now = Signal(self.count_bits, reset_less=True)  # frames committed, to the end of S1
        with m.If(s1):
            m.d.sync += [head.eq(head_rd.data), deficit.eq(deficit_rd.data),
                         link.eq(link_rd.data), st_cls.eq(conf_rd.data.cls),
                         st_weight.eq(conf_rd.data.weight),
                         deq_now.eq(deq_rd.data),
                         enq_now.eq(self.enq_count)]
        bump1 = Signal()
        m.d.sync += bump1.eq(self.enq_bump)

        # S2: compare and precompute, so that S3 and S5 only choose. The lists do not change
        # while a step is in progress.
        fits = Signal()
        left = Signal(dbits, reset_less=True)  # deficit after sending the head frame
        refilled = Signal(dbits, reset_less=True)  # deficit plus a quantum
        left_refilled = Signal(dbits, reset_less=True)
        deq_next = Signal(self.count_bits, reset_less=True)
        diff = Signal(dbits + 1)
        st_q = Signal(dbits)
        m.d.comb += [diff.eq(deficit - head.len), st_q.eq(quantum_of(st_weight))]
        single = Signal(nc)
        m.d.comb += single.eq(Cat(lhead[c] == ltail[c] for c in range(nc)))
        single_r = Signal()  # the step's class has only f
        st_cls_1h = Signal(nc)  # f's class, one-hot
        app_tail_r = Signal(range(n), reset_less=True)  # f is linked behind it when its turn ends
        app_linked_r = Signal()  # f's class is not empty after the pop
        # The queue is emptied by the dequeue if it holds one frame in S3, counting the commits
        # up to the end of S2 (`enq_bump` in S1 and S2).
        held = Signal(self.count_bits)
        m.d.comb += held.eq(enq_now + bump1 - deq_now)
        held0_r, held1_r, bump2 = Signal(), Signal(), Signal()
        with m.If(s2):
            m.d.sync += [
                fits.eq(~diff[-1]), left.eq(diff[:dbits]), refilled.eq(deficit + st_q),
                left_refilled.eq(diff[:dbits] + st_q), deq_next.eq(deq_now + 1),
                single_r.eq((single & st_c).any()), st_cls_1h.eq(1 << st_cls),
                app_tail_r.eq(Array(ltail)[st_cls]),
                app_linked_r.eq(lnon.bit_select(st_cls, 1)
                                & ~(st_c.bit_select(st_cls, 1) & (single & st_c).any())),
                held0_r.eq(held == 0), held1_r.eq(held == 1), bump2.eq(self.enq_bump),
            ]

        # S3: decide.
        emptying = Mux(bump2, held0_r, held1_r)
        send = s3 & fits
        m.d.comb += [
            self.sel.eq(send), self.sel_flow.eq(st_f), self.sel_frame.eq(head),
            self.sel_emptying.eq(send & emptying), self.sel_count.eq(deq_next),
            self.nx_addr.eq(head.cell), self.nx_en.eq(send),
            deq_wr.addr.eq(st_f), deq_wr.data.eq(deq_next), deq_wr.en.eq(send),
            deq_q.addr.eq(self.q_flow),
            self.q_deq_count.eq(deq_q.data),
        ]
        m.d.sync += [s4.eq(send & ~emptying), s5.eq(s4), s6.eq(s5),
                     idle.eq(~(start | s1 | s2 | (send & ~emptying) | s4 | s5))]

        # S4: register the next frame; S5: store it, compare; S6: end the turn if it does not
        # fit.
        nx = Signal(ref, reset_less=True)
        with m.If(s4):
            m.d.sync += nx.eq(self.nx_data)
        ends = Signal()
        m.d.sync += ends.eq(s5 & (nx.len > left))
        turn_ends = s6 & ends

        # List updates: pop the front of the step's class, then append a flow to a class.
        # Everything but the final condition is in registers (one-hot classes), so that
        # `turn_ends` only enables.
        rotate = (s3 & ~fits) | turn_ends
        act_cls = Signal(nc)  # one-hot class of the activation in the output register
        with m.If(move):
            m.d.sync += act_cls.eq(1 << act_rd.data.cls)
        m.d.comb += [link_wr.data.eq(Mux(pop, act.flow, st_f)),
                     link_wr.addr.eq(Mux(pop, Array(ltail)[act.cls], app_tail_r)),
                     link_wr.en.eq((pop & (lnon & act_cls).any()) | (rotate & app_linked_r))]
        # Per class, the step's list updates as flags that hold only in the cycle they apply
        # (registered in S2 and S5): each class's head, tail and non-empty bit then take their
        # enables from a flip-flop or two, not from `rotate` and `pop_front`, which fanned out
        # from the step's state to every class (the routed core's failing list-head enables).
        rot3, nfit3, fit3 = Signal(nc), Signal(nc), Signal(nc)
        end6_app, end6_pop = Signal(nc), Signal(nc)
        over = s5 & (nx.len > left)
        m.d.sync += [
            rot3.eq(Mux(s2 & diff[-1], 1 << st_cls, 0)),  # S3, f does not fit: to its tail
            nfit3.eq(Mux(s2 & diff[-1], st_c, 0)),  # ... and off the front of the step's class
            fit3.eq(Mux(s2 & ~diff[-1], st_c, 0)),  # S3, f fits: off the front if emptied
            end6_app.eq(Mux(over, st_cls_1h, 0)),  # S6, the turn ends: to its tail
            end6_pop.eq(Mux(over, st_c, 0)),  # ... and off the front
        ]
        for c in range(nc):
            popped = nfit3[c] | end6_pop[c] | (fit3[c] & emptying)  # pop_front & st_c[c]
            rot_app = rot3[c] | end6_app[c]  # rotate & st_cls_1h[c]
            act_app = pop & act_cls[c]
            with m.If(rot_app):
                m.d.sync += [ltail[c].eq(st_f), lnon[c].eq(1)]
                with m.If(~app_linked_r):
                    m.d.sync += lhead[c].eq(st_f)
                with m.Elif(popped & ~single_r):
                    m.d.sync += lhead[c].eq(link)
            with m.Elif(act_app):
                m.d.sync += [ltail[c].eq(act.flow), lnon[c].eq(1)]
                with m.If(~lnon[c]):
                    m.d.sync += lhead[c].eq(act.flow)
            with m.Elif(popped):
                with m.If(single_r):
                    m.d.sync += lnon[c].eq(0)
                with m.Else():
                    m.d.sync += lhead[c].eq(link)

        # Deficit and head writes: an activation, a wasted step, or the end of a step.
        with m.If(pop):
            m.d.comb += [deficit_wr.addr.eq(act.flow),
                         deficit_wr.data.eq(quantum_of(conf_take.data.weight)),
                         deficit_wr.en.eq(1),
                         head_wr.addr.eq(act.flow), head_wr.data.eq(act.frame),
                         head_wr.en.eq(1)]
        with m.Else():
            m.d.comb += [deficit_wr.addr.eq(st_f), head_wr.addr.eq(st_f),
                         head_wr.data.eq(nx), head_wr.en.eq(s5)]
            with m.If(s3 & ~fits):
                m.d.comb += [deficit_wr.data.eq(refilled), deficit_wr.en.eq(1)]
            with m.If(s6):
                m.d.comb += [deficit_wr.data.eq(Mux(ends, left_refilled, left)),
                             deficit_wr.en.eq(1)]
        return m
