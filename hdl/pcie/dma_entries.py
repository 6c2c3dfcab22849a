# Ring entries of partner.pcie.formats (16-byte descriptors, 8- and 16-byte completions) to and
# from the DMA requesters' packet streams (partner.hdl.stream), at any of the TLP widths.
"""Ring entries <-> packet stream beats.

`EntryReader`: the data of a descriptor read (a packet of whole 16-byte entries, bytes from lane
0) as one 128-bit entry at a time: two beats an entry at width 64, one at 128, two entries a beat
at 256 (the second taken a cycle later; a last beat of 16 bytes holds one). ``restart`` (before
a read's first beat) forgets a half-assembled entry.

`EntryWriter`: a stream of completion or event entries (``nbytes`` = 8 or 16 bytes of
``entry``), each as one packet on ``o``; an entry is taken from ``i`` with its packet's last beat.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..stream import PacketStream

__all__ = ["ENTRY_BITS", "EntryReader", "EntryWriter", "entry_out_layout"]

ENTRY_BITS = 128


def entry_out_layout() -> data.StructLayout:
    """An entry for `EntryWriter`: ``nbytes`` (8 or 16) bytes of ``entry``, from byte 0."""
    return data.StructLayout({"entry": ENTRY_BITS, "nbytes": range(17)})


def _check(width_bytes):
    if width_bytes not in (8, 16, 32):
        raise ValueError(f"width_bytes must be 8, 16 or 32, not {width_bytes!r}")


class EntryReader(wiring.Component):
    def __init__(self, width_bytes: int):
        _check(width_bytes)
        self.width_bytes = width_bytes
        super().__init__({
            "data": In(PacketStream(width_bytes)),
            "restart": In(1),
            "entry": Out(ENTRY_BITS),
            "valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        wb, d = self.width_bytes, self.data
        half = Signal()  # 64: the low half is in `lo`; 256: the beat's low entry was taken
        lo = Signal(64)
        if wb == 8:
            m.d.comb += [d.ready.eq(1), self.entry.eq(Cat(lo, d.payload.data)),
                         self.valid.eq(d.valid & half)]
            with m.If(d.valid):
                m.d.sync += [lo.eq(d.payload.data), half.eq(~half)]
        elif wb == 16:
            m.d.comb += [d.ready.eq(1), self.entry.eq(d.payload.data), self.valid.eq(d.valid)]
        else:
            m.d.comb += [
                self.entry.eq(Mux(half, d.payload.data[ENTRY_BITS:],
                                  d.payload.data[:ENTRY_BITS])),
                self.valid.eq(d.valid),
                d.ready.eq(half | (d.payload.nbytes <= 16)),
            ]
            with m.If(d.valid):
                m.d.sync += half.eq(~half & (d.payload.nbytes > 16))
        with m.If(self.restart):
            m.d.sync += half.eq(0)
        return m


class EntryWriter(wiring.Component):
    def __init__(self, width_bytes: int):
        _check(width_bytes)
        self.width_bytes = width_bytes
        super().__init__({
            "i": In(stream.Signature(entry_out_layout())),
            "o": Out(PacketStream(width_bytes)),
        })

    def elaborate(self, platform):
        m = Module()
        wb, i, o = self.width_bytes, self.i, self.o
        beat = Signal()
        last = Mux(i.payload.nbytes <= wb, 0, 1)  # 16 bytes at width 64: two beats
        m.d.comb += [
            o.valid.eq(i.valid),
            o.payload.data.eq((i.payload.entry >> (beat * 64))[:8 * wb]),
            o.payload.nbytes.eq(Mux(i.payload.nbytes < wb, i.payload.nbytes, wb)),
            o.payload.first.eq(beat == 0),
            o.payload.last.eq(beat == last),
            i.ready.eq(o.ready & (beat == last)),
        ]
        with m.If(o.valid & o.ready):
            m.d.sync += beat.eq(beat != last)
        return m
