# Frame switch: N source packet streams to M destinations, a whole frame at a time, round robin
# among the sources that want the same destination. Used between the per-port dispatchers (and
# the host's TX stream) and the per-queue / per-port flow queues.
"""Frame-granular crossbar.

Each source offers frames whose first beat names a destination (`dest` field of the payload).
Each destination is owned by one source from the first beat of a frame to its last; when it is
free, the next owner is chosen among the sources whose current first beat asks for it, round robin
starting after the previous owner. The choice is combinational, so a source that sends
back-to-back frames to a free destination loses no cycle between them; a source whose destination
is busy waits (its `ready` is low) until that destination's frame ends.

Payload layout: any `data.StructLayout` with a `beat` field in `partner.hdl.stream.packet_layout`
(its `first` and `last` frame the transfer) and a `dest` field; every field is passed through.
"""

from amaranth.hdl import Module, Signal
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
        # grant[d][s]: source s drives destination d in this cycle.
        grants = []
        for d in range(self.dests):
            busy = Signal(name=f"busy_{d}")
            owner = Signal(range(n), name=f"owner_{d}")
            last_owner = Signal(range(n), name=f"last_owner_{d}")
            wants = [Signal(name=f"want_{d}_{s}") for s in range(n)]
            for s in range(n):
                src = self.i[s]
                asks = src.valid & src.payload.beat.first & (src.payload.dest == d)
                m.d.comb += wants[s].eq(asks)

            chosen = Signal(range(n), name=f"chosen_{d}")
            any_want = Signal(name=f"any_want_{d}")
            # Round robin: the first requester after the previous owner, cyclically. Sources are
            # few (ports + host), so a priority chain per rotation is small.
            with m.Switch(last_owner):
                for start in range(n):
                    with m.Case(start):
                        order = [(start + 1 + k) % n for k in range(n)]
                        for s in reversed(order):
                            with m.If(wants[s]):
                                m.d.comb += [chosen.eq(s), any_want.eq(1)]

            grant = [Signal(name=f"grant_{d}_{s}") for s in range(n)]
            with m.If(busy):
                for s in range(n):
                    m.d.comb += grant[s].eq(owner == s)
            with m.Elif(any_want):
                for s in range(n):
                    m.d.comb += grant[s].eq(chosen == s)

            out = self.o[d]
            for s in range(n):
                with m.If(grant[s]):
                    m.d.comb += [out.valid.eq(self.i[s].valid), out.payload.eq(self.i[s].payload)]

            moving = out.valid & out.ready
            with m.If(moving):
                with m.If(out.payload.beat.last):
                    m.d.sync += busy.eq(0)
                with m.Elif(~busy):
                    m.d.sync += [busy.eq(1), owner.eq(chosen)]
                with m.If(~busy):
                    m.d.sync += last_owner.eq(chosen)
            grants.append(grant)

        for s in range(n):
            src = self.i[s]
            ready_terms = [grants[d][s] & self.o[d].ready for d in range(self.dests)]
            any_ready = ready_terms[0]
            for term in ready_terms[1:]:
                any_ready = any_ready | term
            m.d.comb += src.ready.eq(any_ready)
        return m
