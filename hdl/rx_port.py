# Receive front end of one Ethernet port: the MAC's frames into a store-and-forward FIFO, the
# parser watching them, and one flow-table lookup request per frame that the FIFO committed.
"""RX port: frame buffer, parser and lookup requests, kept in step.

The MAC receive stream cannot stall, so everything here takes a beat every cycle. The frame goes
into a `PacketFIFO` two cycles late, so that its last beat enters the FIFO in the very cycle the
parser (`partner.hdl.parser.LATENCY` = 2) presents the frame's key. The key and the frame's length
are held for one cycle and pushed into the lookup queue when the FIFO reports the commit: a frame
the FIFO drops (bad FCS, runt, overflow) never gets a lookup, so the i-th lookup result always
belongs to the i-th committed frame.

That pairing must never slip. The lookup queue is small; if it could not take one more request,
the frame whose last beat arrives is dropped (rolled back by the FIFO) and counted in
`lookup_backlog_drops`, instead of entering without a key.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from partner.formats import FLOW_KEY, FRAME_META
from partner.hdl.mac import RxStream
from partner.hdl.packet_fifo import PacketFIFO
from partner.hdl.parser import LATENCY, Parser, counter_name
from partner.hdl.stream import PacketStream
from partner.hdl.wire import layout
from partner.parser_formats import MalformedCause

__all__ = ["LOOKUP_LAYOUT", "RxPort"]

#: What a port asks the classifier: the frame's key, and its length and port for the metadata.
LOOKUP_LAYOUT = data.StructLayout({
    "key": layout(FLOW_KEY),
    "length": FRAME_META["length"].width,
})

_MALFORMED = tuple(counter_name(cause) for cause in MalformedCause if cause)


class RxPort(wiring.Component):
    """Frame buffer + parser + lookup requests of port `port` (width `width_bytes`).

    Members
    -------
    i_stream, i_drop : the MAC receiver's output (valid-only) and its drop flag
    o_frame : ``Out(PacketStream(width_bytes))``: committed frames, in order
    o_lookup : ``Out(stream.Signature(LOOKUP_LAYOUT))``: one request per committed frame
    malformed, fifo_overflows, lookup_backlog_drops : ``Out(32)`` wrapping counters
    """

    LOOKUP_DEPTH = 8

    def __init__(self, width_bytes: int, port: int, fifo_depth: int):
        self.width_bytes = width_bytes
        self.port = port
        self.fifo_depth = fifo_depth
        super().__init__({
            "i_stream": In(RxStream(width_bytes)),
            "i_drop": In(1),
            "o_frame": Out(PacketStream(width_bytes)),
            "o_lookup": Out(stream.Signature(LOOKUP_LAYOUT)),
            "malformed": Out(32),
            "fifo_overflows": Out(32),
            "lookup_backlog_drops": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.width_bytes
        m.submodules.parser = parser = Parser(w)
        m.submodules.fifo = fifo = PacketFIFO(w, self.fifo_depth)
        m.submodules.lookups = lookups = SyncFIFOBuffered(
            width=LOOKUP_LAYOUT.size, depth=self.LOOKUP_DEPTH)

        # The parser taps the MAC output directly.
        m.d.comb += [
            parser.i_stream.valid.eq(self.i_stream.valid),
            parser.i_stream.payload.eq(self.i_stream.payload),
            parser.in_port.eq(self.port),
        ]

        # The frame reaches the FIFO LATENCY cycles later, level with its key.
        valid, payload, drop = self.i_stream.valid, self.i_stream.payload, self.i_drop
        for stage in range(LATENCY):
            next_valid = Signal(name=f"valid_{stage}")
            next_payload = Signal.like(payload, name=f"payload_{stage}")
            next_drop = Signal(name=f"drop_{stage}")
            m.d.sync += [next_valid.eq(valid), next_payload.eq(payload), next_drop.eq(drop)]
            valid, payload, drop = next_valid, next_payload, next_drop

        # Bytes of the frame so far, for its length.
        length = Signal(FRAME_META["length"].width)
        beat_end = valid & payload.last
        with m.If(valid):
            m.d.sync += length.eq(Mux(payload.last, 0, length + payload.nbytes))
        frame_length = length + payload.nbytes

        # No room for one more lookup: drop the frame rather than let the pairing slip.
        backlog = lookups.level >= self.LOOKUP_DEPTH - 1
        m.d.comb += [
            fifo.i_stream.valid.eq(valid),
            fifo.i_stream.payload.eq(payload),
            fifo.i_drop.eq(drop | backlog),
        ]
        with m.If(beat_end & ~drop & backlog):
            m.d.sync += self.lookup_backlog_drops.eq(self.lookup_backlog_drops + 1)

        pending = Signal(LOOKUP_LAYOUT)
        with m.If(parser.o_key.valid):
            m.d.sync += [pending.key.eq(parser.o_key.payload), pending.length.eq(frame_length)]
        m.d.comb += [
            lookups.w_data.eq(pending),
            lookups.w_en.eq(fifo.o_committed),
            self.o_lookup.valid.eq(lookups.r_rdy),
            self.o_lookup.payload.eq(lookups.r_data),
            lookups.r_en.eq(self.o_lookup.ready),
        ]
        m.d.comb += [
            self.o_frame.valid.eq(fifo.o_stream.valid),
            self.o_frame.payload.eq(fifo.o_stream.payload),
            fifo.o_stream.ready.eq(self.o_frame.ready),
        ]

        malformed = 0
        for name in _MALFORMED:
            malformed = malformed + getattr(parser, name)
        m.d.comb += [
            self.malformed.eq(malformed),
            self.fifo_overflows.eq(fifo.frames_dropped_overflow),
        ]
        return m
