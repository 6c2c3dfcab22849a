# Device → host events (the partner interface's ctl, run from the device side): many sources
# raise strobes, one stream carries them to the host, merged while the host is slow.
"""Event merger.

Each source (an event kind and the port or queue it concerns) has a pending count. A strobe adds
one; the output takes one source with a pending count per cycle, round robin, as one `EVENT`
whose `count` says how many occurrences it stands for, and resets that count (a strobe in the
same cycle starts the next one). So a flood of drops costs the host one event per source, not one
per frame, and no occurrence is lost: counts saturate only after 2**24 - 1.
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
        last = Signal(range(n))
        chosen = Signal(range(n))
        some = Signal()
        with m.Switch(last):
            for start in range(n):
                with m.Case(start):
                    for i in reversed([(start + 1 + k) % n for k in range(n)]):
                        with m.If(counts[i] != 0):
                            m.d.comb += [chosen.eq(i), some.eq(1)]

        out = self.o
        sending = Signal()
        m.d.comb += sending.eq(~out.valid | out.ready)  # the output register is free
        with m.If(out.valid & out.ready):
            m.d.sync += out.valid.eq(0)
        for i, (kind, unit) in enumerate(self.sources):
            taken = sending & some & (chosen == i)
            bumped = Mux(counts[i] == limit, limit, counts[i] + 1)
            with m.If(taken):
                m.d.sync += [
                    out.valid.eq(1),
                    out.payload.kind.eq(kind),
                    out.payload.unit.eq(unit),
                    out.payload.count.eq(counts[i]),
                    counts[i].eq(self.i_strobe[i]),
                    last.eq(i),
                ]
            with m.Elif(self.i_strobe[i]):
                m.d.sync += counts[i].eq(bumped)
        return m
