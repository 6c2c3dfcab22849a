# Device → host events (the partner interface's ctl, run from the device side): many sources
# raise strobes, one stream carries them to the host, merged while the host is slow.
"""Event merger.

Each source (an event kind and the port or queue it concerns) has a pending count. A strobe adds
one; the output takes one source with a pending count, round robin, as one `EVENT` whose `count`
says how many occurrences it stands for, and resets that count (a strobe in the same cycle starts
the next one). So a flood of drops costs the host one event per source, not one per frame, and no
occurrence is lost: counts saturate only after 2**24 - 1.

Timing: the round robin picks a source in one cycle, from a registered "count is not zero" bit
per source, and the output register takes the picked source's count in a later cycle, from the
registered pick: no path runs from a 24-bit count through the arbiter into another count. So
while the host takes every event at once, one enters the output register every two cycles (the
first two cycles after the strobe that makes a count non-zero); a pick made while the output
waits follows in the cycle the output is taken.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from partner.formats import EVENT
from partner.hdl.wire import layout

__all__ = ["EventMerger"]


class EventMerger(wiring.Component):
    def __init__(self, sources):
        self.sources = list(sources)  # [(EventKind, unit), ...]
        if not self.sources:
            raise ValueError("an event merger needs at least one source")
        super().__init__({
            "i_strobe": In(1).array(len(self.sources)),
            "o": Out(stream.Signature(layout(EVENT))),
        })

    def elaborate(self, platform):
        m = Module()
        n = len(self.sources)
        limit = (1 << EVENT["count"].width) - 1
        counts = [Signal(EVENT["count"].width, name=f"pending_{i}") for i in range(n)]
        nonzero = Signal(n)  # nonzero[i] == (counts[i] != 0), kept as a register
        last = Signal(range(n))

        # Pick: the first source with a pending count after the last one sent, cyclically.
        chosen = Signal(range(n))
        some = Signal()
        with m.Switch(last):
            for start in range(n):
                with m.Case(start):
                    for i in reversed([(start + 1 + k) % n for k in range(n)]):
                        with m.If(nonzero[i]):
                            m.d.comb += [chosen.eq(i), some.eq(1)]
        pick = Signal(range(n))
        pick_1h = Signal(n)  # `pick`, one-hot: each count's "taken" is then one LUT
        picked = Signal()  # `pick` names a source with a pending count, to be sent
        out = self.o
        send = Signal()
        m.d.comb += send.eq(picked & (~out.valid | out.ready))  # the output register is free
        with m.If(~picked):
            m.d.sync += [pick.eq(chosen), pick_1h.eq(1 << chosen), picked.eq(some)]
        with m.Elif(send):
            m.d.sync += picked.eq(0)

        with m.If(out.valid & out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(send):
            m.d.sync += [out.valid.eq(1), last.eq(pick)]
            with m.Switch(pick):
                for i, (kind, unit) in enumerate(self.sources):
                    with m.Case(i):
                        m.d.sync += [out.payload.kind.eq(kind), out.payload.unit.eq(unit),
                                     out.payload.count.eq(counts[i])]
        for i in range(n):
            taken = send & pick_1h[i]
            bumped = Mux(counts[i] == limit, limit, counts[i] + 1)
            with m.If(taken):
                m.d.sync += [counts[i].eq(self.i_strobe[i]), nonzero[i].eq(self.i_strobe[i])]
            with m.Elif(self.i_strobe[i]):
                m.d.sync += [counts[i].eq(bumped), nonzero[i].eq(1)]
        return m
