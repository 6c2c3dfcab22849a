# Internal packet stream format: one definition shared by every packet-carrying block (MACs,
# parser, flow queues, DMA), and the register slice used between blocks on any stream. Built on
# Amaranth 0.5 `lib.stream` (valid/ready handshake, payload transferred on a clock edge where
# both are high).
"""Packet stream layout.

A packet is a sequence of *beats*. Each beat carries up to ``width_bytes`` bytes:

``data``   ``8 * width_bytes`` bits. Byte *i* of the beat (the *i*-th byte on the wire) is
           ``data[8*i : 8*i+8]``: lane 0 is the least significant byte. Bytes are packed from
           lane 0; unused lanes of a short last beat are don't-care (senders should drive 0).
``nbytes`` Number of valid bytes in the beat, ``1 .. width_bytes``. Every beat except the last
           of a packet must be full (``nbytes == width_bytes``); only the last beat may be short.
``first``  First beat of a packet.
``last``   Last beat of a packet (a one-beat packet has ``first`` and ``last`` both set).

Why a byte count and not a keep mask: every producer we have (MACs, DMA, parser) emits packets
packed from lane 0 with only the tail beat short, so a mask would encode ``width_bytes`` bits of
which only ``log2(width_bytes + 1)`` carry information (4 bits instead of 8 at 64-bit width,
7 instead of 64 at 512-bit width). The count is narrower in FIFO memories, is directly the value
length counters add, and cannot express holes, which no block here must then handle.
``keep_mask()`` converts for interfaces that need a mask (e.g. AXI-Stream ``tkeep``).

``first`` is redundant with ``last`` of the previous beat; it is carried anyway because it costs
one bit and saves every consumer a state bit to find headers.
"""

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PacketStream", "StreamSlice", "keep_mask", "packet_layout"]


def packet_layout(width_bytes: int) -> data.StructLayout:
    """Payload layout of a packet stream beat ``width_bytes`` bytes wide."""
    if not isinstance(width_bytes, int) or width_bytes < 1:
        raise ValueError(f"width_bytes must be a positive integer, not {width_bytes!r}")
    return data.StructLayout({
        "data":   8 * width_bytes,
        "nbytes": range(width_bytes + 1),
        "first":  1,
        "last":   1,
    })


def PacketStream(width_bytes: int) -> stream.Signature:
    """Stream signature carrying :func:`packet_layout` beats (use ``In(...)``/``Out(...)``)."""
    return stream.Signature(packet_layout(width_bytes))


def keep_mask(nbytes: Value, width_bytes: int) -> Value:
    """Byte-enable mask (bit *i* set for lanes ``< nbytes``) for an ``nbytes`` count."""
    return Cat(*(nbytes > i for i in range(width_bytes)))


class StreamSlice(wiring.Component):
    """Register slice (skid buffer) for any `amaranth.lib.stream` payload.

    ``o.valid``/``o.payload`` and ``i.ready`` all come from flip-flops: nothing combinational
    crosses the slice in either direction, so it cuts the valid -> ready paths between two
    blocks at full throughput. A beat taken while the output is stalled waits in the skid
    register, so the slice passes one beat per cycle and holds at most two. ``busy`` says it
    holds a beat (for a caller that must know everything it sent has left).
    """

    def __init__(self, payload_shape):
        self.payload_shape = payload_shape
        super().__init__({
            "i": In(stream.Signature(payload_shape)),
            "o": Out(stream.Signature(payload_shape)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        # Only the valid bits have a reset: they qualify the payload registers, which are then
        # off the reset net.
        skid = Signal(self.payload_shape, reset_less=True)
        out = Signal(self.payload_shape, reset_less=True)
        skid_valid = Signal()
        i, o = self.i, self.o
        m.d.comb += [i.ready.eq(~skid_valid), self.busy.eq(o.valid | skid_valid),
                     o.payload.eq(out)]
        with m.If(o.ready | ~o.valid):  # the output register takes a new beat (or none)
            with m.If(skid_valid):
                m.d.sync += [out.eq(skid), o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [out.eq(i.payload), o.valid.eq(i.valid)]
        with m.Elif(~skid_valid):  # stalled: park the beat (if any)
            # The skid register loads whenever it is empty, valid or not: its enable is then
            # free of `i.valid`, which comes through the sender's logic.
            m.d.sync += [skid.eq(i.payload), skid_valid.eq(i.valid)]
        return m
