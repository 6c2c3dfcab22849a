# Frame switch: N source packet streams to M destinations, a whole frame at a time, round robin
# among the sources that want the same destination. Used between the per-port dispatchers (and
# the host's TX stream) and the per-queue / per-port flow queues.
"""Frame-granular crossbar.

Each source offers frames whose first beat names a destination (`dest` field of the payload).
Each destination is owned by one source from the first beat of a frame to its last. Ownership
is a registered grant, a flip-flop per (destination, source): a source's `ready` and a
destination's `valid` are a gate or two from registers and from the source's own first beat,
and its payload select is the grant itself. With the round robin computed in the same cycle
as the `ready` (as before), the path ran from one source's `dest` through the arbitration into
every source's `ready` and the enables of its registers, across the chip: the routed core's
most frequent worst path.

Between frames a destination stays granted to its last owner ("parked"), so that owner's next
frame to it starts at once: one source streaming into a destination loses no cycle. A frame's
first beat moves to a destination only if the destination is granted to its source and the
beat names it. When a frame ends, or a parked owner has nothing for the destination, the
grant moves on, registered, to the first source after the owner whose first beat asks for the
destination (round robin); a waiting source thus gets the destination in the cycle after the
frame before it ends, with no idle cycle, and a source that asked for an idle destination
parked on another waits one cycle.

A source never moves to two destinations: its beats belong to one frame at a time, a frame's
first beat only moves to the destination it names, and the rest only to the destination its
first beat went to (the one that is still `active` for it).

Payload layout: any `data.StructLayout` with a `beat` field in `partner.hdl.stream.packet_layout`
(its `first` and `last` frame the transfer) and a `dest` field; every field is passed through.
"""

from functools import reduce
from operator import or_

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FrameSwitch"]


class FrameSwitch(wiring.Component):
    """`sources` input streams, `dests` output streams of the same payload layout."""

    def __init__(self, payload_layout, sources: int, dests: int):
        if sources < 1 or dests < 1:
            raise ValueError("a frame switch needs at least one source and one destination")
        self.payload_layout = payload_layout
        self.sources = sources
        self.dests = dests
        super().__init__({
            "i": In(stream.Signature(payload_layout)).array(sources),
            "o": Out(stream.Signature(payload_layout)).array(dests),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.sources
        valid = Cat(src.valid for src in self.i)
        # takes[d][s]: source s may move its beat into destination d in this cycle.
        takes = []
        for d in range(self.dests):
            grant = Signal(n, name=f"grant_{d}")  # one-hot (or zero before the first frame)
            active = Signal(name=f"active_{d}")  # a frame's first beat moved, its last has not
            wants = Signal(n, name=f"want_{d}")  # sources whose current first beat names d
            for s, src in enumerate(self.i):
                m.d.comb += wants[s].eq(src.valid & src.payload.beat.first &
                                        (src.payload.dest == d))
            take = Signal(n, name=f"take_{d}")
            m.d.comb += take.eq(grant & Mux(active, valid, wants))

            out = self.o[d]
            m.d.comb += [
                out.valid.eq(take.any()),
                out.payload.eq(reduce(or_, (src.payload.as_value() & grant[s].replicate(
                    len(src.payload.as_value())) for s, src in enumerate(self.i)))),
            ]
            ends = out.valid & out.ready & out.payload.beat.last
            with m.If(out.valid & out.ready):
                m.d.sync += active.eq(~out.payload.beat.last)

            # Round robin: the first source after the owner (cyclically) that asks for d.
            # Sources are few (ports + host), so a priority chain per rotation is small. The
            # last source's order, 0 first, is also the one before any grant (`Default`).
            pick = Signal(n, name=f"pick_{d}")
            with m.Switch(grant):
                for owner in range(n):
                    with (m.Case(1 << owner) if owner < n - 1 else m.Default()):
                        for s in reversed([(owner + 1 + k) % n for k in range(n)]):
                            with m.If(wants[s]):
                                m.d.comb += pick.eq(1 << s)
            # The grant moves when the frame ends, or when it is parked on a source that does
            # not ask for d while another does; with nobody asking it stays parked.
            with m.If((ends | ~active & ~(grant & wants).any()) & wants.any()):
                m.d.sync += grant.eq(pick)
            takes.append(take)

        for s, src in enumerate(self.i):
            m.d.comb += src.ready.eq(reduce(or_, (takes[d][s] & self.o[d].ready
                                                  for d in range(self.dests))))
        return m
