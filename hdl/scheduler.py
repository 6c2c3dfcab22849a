# Frame scheduler: strict priority between classes, Deficit Round Robin among the flows of a
# class (M. Shreedhar, G. Varghese, "Efficient Fair Queuing using Deficit Round Robin",
# SIGCOMM 1995), pipelined over four cycles per decision. Reference model:
# partner.sim.models.flow_queues (FlowQueuesModel.step).
"""Strict-priority + DRR scheduler.

The scheduler does not hold frames; its user (`partner.hdl.flow_queues.FlowQueues`) tells it
which flows have a frame at the head of their queue (``eligible``, ``single`` if it is the only
one) and how long each head frame is (``head_len``), and dequeues the head frame of
``sel_flow`` in a cycle with ``sel_valid``.

A *step* decides on the state of the cycle it starts in (*s*):

* the class ``c`` is the highest with an eligible flow (strict priority);
* ``t = turn[c]`` holds the turn of class ``c``. If ``t`` is an eligible member of ``c`` and
  ``head_len[t] <= deficit[t]``, ``t`` sends;
* otherwise the turn passes to ``g``, the next eligible member of ``c`` after ``t`` in
  flow-index order (wrapping around, so possibly ``t`` itself), ``deficit[g]`` grows by the
  quantum ``max(weight[g], 1) * quantum``, and ``g`` sends if its head frame now fits. (``t``
  loses its deficit if it is not an eligible member: it can only have one after a change of
  class.)
* Sending takes the frame's length off the deficit, or clears it if the queue is emptied
  (``single``): an emptied queue keeps no credit.

This is DRR with the active list replaced by a circular scan in flow-index order: same fairness
bounds, no list memory. Each class keeps its own turn, so a class that strict priority
interrupts resumes where it stopped. A step that moves the turn to a flow whose head frame is
longer than its deficit plus quantum selects nothing; with ``weight * quantum`` at least the
largest frame this never happens.

Pipeline (all decisions from registers, so no path crosses the whole decision):

====== ====================================================================================
cycle  work
====== ====================================================================================
s      start (``step_en``, no step in progress, a flow eligible): class, member mask and turn
       of that class are registered, with the ``single`` bits
s+1    does ``t`` fit (per-flow comparisons precomputed in registers); next member ``g``
s+2    decide; update deficits (per-flow adders, precomputed) and the turn
s+3    ``sel_valid``/``sel_flow`` (registered), only if the step selected a frame
====== ====================================================================================

A step that selects nothing lets the next one start at *s+3*. Quanta are copied from the
weights in every cycle except *s+1* and *s+2*, so a step uses the weights of cycle *s*.

Configuration (``cfg_*``, written when ``cfg_en`` is high) is reset-less, like the quota memory
of the queues: a reset clears scheduling state, not what software configured.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

__all__ = ["Scheduler"]


def isolate_lowest(value):
    """One-hot of the least significant set bit of ``value`` (0 if none): ``x & -x``."""
    return (value & -value)[:len(value)]


def one_hot_index(m, one_hot, width):
    """Binary index of a one-hot vector: OR trees, one per index bit."""
    index = Signal(range(width))
    m.d.comb += index.eq(Cat(*(Cat(*(one_hot[i] for i in range(width) if i >> b & 1)).any()
                               for b in range((width - 1).bit_length()))))
    return index


def bits_above(one_hot):
    """Mask of the bits strictly above the set bit of ``one_hot``."""
    return ~(one_hot | (one_hot - 1))[:len(one_hot)]


class Scheduler(wiring.Component):
    """Strict priority over ``classes`` classes, DRR among up to ``flows`` flows of a class.

    Parameters
    ----------
    flows : int
        Number of flows.
    classes : int
        Strict-priority classes; a larger class number wins.
    quantum : int
        Bytes of DRR quantum per unit of weight (a power of two).
    len_bits : int
        Width of frame lengths.

    Members
    -------
    eligible : ``In(flows)``
        Flow *i* has a frame at the head of its queue with length ``head_len[i]``.
    single : ``In(flows)``
        Flow *i* has exactly one frame queued.
    head_len : ``In(ArrayLayout(len_bits, flows))``
    step_en : ``In(1)``
        The user has room for a selection (its lookahead slot is empty).
    sel_valid : ``Out(1)``
        Registered: dequeue the head frame of ``sel_flow`` at this edge (the scheduler has
        already charged it; ``eligible``, ``single`` and ``head_len`` must follow).
    sel_flow : ``Out(range(flows))``
    cfg_flow, cfg_class, cfg_weight, cfg_en : inputs
        Write port of the per-flow class (``range(classes)``) and weight (8 bits).
    """

    def __init__(self, flows: int, classes: int = 4, quantum: int = 256, len_bits: int = 14):
        if flows < 1 or classes < 1:
            raise ValueError("need at least one flow and one class")
        if quantum < 1 or quantum & (quantum - 1):
            raise ValueError(f"quantum must be a power of two, not {quantum!r}")
        self.flows, self.classes, self.quantum, self.len_bits = flows, classes, quantum, len_bits
        # A deficit stays below head_len + quantum; twice the quantum leaves room for a flow
        # that changes class while holding a turn.
        self.deficit_bits = ((1 << len_bits) + 2 * 255 * quantum).bit_length()
        super().__init__({
            "eligible": In(flows),
            "single": In(flows),
            "head_len": In(data.ArrayLayout(len_bits, flows)),
            "step_en": In(1),
            "sel_valid": Out(1),
            "sel_flow": Out(range(flows)),
            "cfg_flow": In(range(flows)),
            "cfg_class": In(range(classes)),
            "cfg_weight": In(8),
            "cfg_en": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        n, nc, dbits = self.flows, self.classes, self.deficit_bits

        # -- configuration: class one-hot per flow, weight and the quantum it gives ----------
        cls = [Signal(nc, name=f"class_{i}", init=1, reset_less=True) for i in range(n)]
        weight = [Signal(8, name=f"weight_{i}", init=1, reset_less=True) for i in range(n)]
        # max(weight, 1): the quantum is this shifted by log2(quantum), a wiring-only multiply.
        units = [Signal(8, name=f"units_{i}", init=1) for i in range(n)]
        lq = exact_log2(self.quantum)
        for i in range(n):
            with m.If(self.cfg_en & (self.cfg_flow == i)):
                m.d.sync += [cls[i].eq(1 << self.cfg_class), weight[i].eq(self.cfg_weight)]

        # -- per-flow state and precomputed comparisons ---------------------------------------
        deficit = [Signal(dbits, name=f"deficit_{i}") for i in range(n)]
        fits = Signal(n)  # head_len <= deficit
        fits_refilled = Signal(n)  # head_len <= deficit + quantum
        minus = []  # deficit - head_len: the deficit after sending
        refilled = []  # deficit + quantum
        refilled_minus = []  # deficit + quantum - head_len
        for i in range(n):
            head_len = self.head_len[i]
            d_minus = Signal(unsigned(dbits + 1), name=f"minus_{i}")
            d_plus = Signal(dbits, name=f"refilled_{i}")
            d_plus_minus = Signal(unsigned(dbits + 1), name=f"refilled_minus_{i}")
            m.d.comb += [d_minus.eq(deficit[i] - head_len),
                         d_plus.eq(deficit[i] + (units[i] << lq)),
                         d_plus_minus.eq(d_plus - head_len)]
            m.d.sync += [fits[i].eq(~d_minus[-1]), fits_refilled[i].eq(~d_plus_minus[-1])]
            minus.append(d_minus[:dbits])
            refilled.append(d_plus)
            refilled_minus.append(d_plus_minus[:dbits])

        # One-hot turn per class, with the mask of the flows above it (for the circular scan;
        # nothing is above the reset turn, flow n-1).
        turn = [Signal(n, name=f"turn_{c}", init=1 << (n - 1)) for c in range(nc)]
        turn_above = [Signal(n, name=f"turn_above_{c}") for c in range(nc)]

        # -- stage 1 (cycle s): class, members, turn -------------------------------------------
        st2, st3 = Signal(), Signal()
        sel_valid = self.sel_valid
        busy = st2 | st3 | sel_valid
        start = self.step_en & ~busy & self.eligible.any()
        members = [Signal(n, name=f"members_{c}") for c in range(nc)]
        any_member = Signal(nc)
        for c in range(nc):
            m.d.comb += [members[c].eq(self.eligible & Cat(cls[i][c] for i in range(n))),
                         any_member[c].eq(members[c].any())]
        is_cur = Signal(nc)  # one-hot: the highest class with members
        m.d.comb += is_cur.eq(Cat(any_member[c] & ~any_member[c + 1:].any() for c in range(nc)))

        mask_r = Signal(n)  # eligible members of the class
        t_r = Signal(n)  # the turn, one-hot
        above_r = Signal(n)  # members above the turn
        single_r = Signal(n)
        cur_r = Signal(nc)
        with m.If(start):
            mask = Signal(n)
            m.d.comb += mask.eq(Cat(*(Cat(members[c][i] & is_cur[c] for c in range(nc)).any()
                                      for i in range(n))))
            m.d.sync += [
                mask_r.eq(mask),
                t_r.eq(Cat(*(Cat(turn[c][i] & is_cur[c] for c in range(nc)).any()
                             for i in range(n)))),
                above_r.eq(mask & Cat(*(Cat(turn_above[c][i] & is_cur[c]
                                            for c in range(nc)).any() for i in range(n)))),
                single_r.eq(self.single),
                cur_r.eq(is_cur),
            ]
        m.d.sync += [st2.eq(start), st3.eq(st2)]

        # -- stage 2 (s+1): does t fit; the next member g --------------------------------------
        t_ok_r, t_fits_r = Signal(), Signal()
        g_r = Signal(n)
        with m.If(st2):
            m.d.sync += [
                t_ok_r.eq((t_r & mask_r).any()),
                t_fits_r.eq((t_r & mask_r & fits).any()),
                g_r.eq(Mux(above_r.any(), isolate_lowest(above_r), isolate_lowest(mask_r))),
            ]

        # -- stage 3 (s+2): decide, charge the deficit, move the turn --------------------------
        g_fits = (g_r & fits_refilled).any()
        sent = Signal(n)  # one-hot flow selected, or 0
        m.d.comb += sent.eq(Mux(t_fits_r, t_r, Mux(g_fits, g_r, 0)))
        with m.If(st3):
            for i in range(n):
                with m.If(t_fits_r & t_r[i]):
                    m.d.sync += deficit[i].eq(Mux(single_r[i], 0, minus[i]))
                with m.Elif(~t_fits_r & g_r[i]):  # g == t only if t is an eligible member
                    m.d.sync += deficit[i].eq(
                        Mux(g_fits, Mux(single_r[i], 0, refilled_minus[i]), refilled[i]))
                with m.Elif(~t_fits_r & t_r[i] & ~t_ok_r):
                    m.d.sync += deficit[i].eq(0)
            with m.If(~t_fits_r):
                for c in range(nc):
                    with m.If(cur_r[c]):
                        m.d.sync += [turn[c].eq(g_r), turn_above[c].eq(bits_above(g_r))]
        m.d.sync += [sel_valid.eq(st3 & sent.any()),
                     self.sel_flow.eq(one_hot_index(m, sent, n))]

        # Quanta follow the weights except while a step uses them.
        with m.If(~st2 & ~st3):
            for i in range(n):
                m.d.sync += units[i].eq(Mux(weight[i] == 0, 1, weight[i]))
        return m
