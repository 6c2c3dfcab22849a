# A register slice (skid buffer) for any `amaranth.lib.stream`: it cuts the combinational
# valid -> ready paths between two blocks of the DMA engine at full throughput.
"""Stream register slice.

``o.valid``/``o.payload`` and ``i.ready`` all come from flip-flops: nothing combinational crosses
the slice in either direction. A beat taken while the output is stalled waits in the skid
register, so the slice passes one beat per cycle and holds at most two. ``busy`` says it holds
a beat (for a caller that must know everything it sent has left).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamSlice"]


class StreamSlice(wiring.Component):
    def __init__(self, payload_shape):
        self.payload_shape = payload_shape
        super().__init__({
            "i": In(stream.Signature(payload_shape)),
            "o": Out(stream.Signature(payload_shape)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        skid = Signal(self.payload_shape)
        skid_valid = Signal()
        i, o = self.i, self.o
        m.d.comb += [i.ready.eq(~skid_valid), self.busy.eq(o.valid | skid_valid)]
        with m.If(o.ready | ~o.valid):  # the output register takes a new beat (or none)
            with m.If(skid_valid):
                m.d.sync += [o.payload.eq(skid), o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [o.payload.eq(i.payload), o.valid.eq(i.valid)]
        with m.Elif(i.valid & ~skid_valid):  # stalled: park the beat
            m.d.sync += [skid.eq(i.payload), skid_valid.eq(1)]
        return m
