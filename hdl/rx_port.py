# Receive front end of one Ethernet port: the MAC's frames into a store-and-forward FIFO, the
# parser watching them, and one flow-table lookup request per frame that the FIFO committed.
"""RX port: frame buffer, parser and lookup requests, kept in step.

The MAC receive stream cannot stall, so everything here takes a beat every cycle. The frame goes
into a `PacketFIFO` two cycles late, so that its last beat enters the FIFO in the very cycle the
parser (`partner.hdl.parser.LATENCY` = 2) presents the frame's key. The key and the frame's length
go into the one lookup register then, and become a request when the FIFO reports the commit: a
frame the FIFO drops (bad FCS, runt, overflow) never gets a lookup, so the i-th lookup result
always belongs to the i-th committed frame.

That pairing must never slip. If the request of the frame before is still waiting when a frame's
last beat arrives, that frame is dropped (rolled back by the FIFO) and counted in
`lookup_backlog_drops`, instead of entering without a key. One register is enough: the core
sizes the flow table (`DeviceCore.ways`) so that it serves every port once per minimum-size frame
time, so a request waits at most for the other ports' lookups, never for the next frame. The
register replaces a queue of eight 442-bit requests, which took 111 of the ECP5's
distributed-RAM cells per port (of 1 370 on an LFE5UM5G-45F) and another 442 flip-flops.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from partner.formats import FLOW_KEY, FRAME_META
from partner.hdl.counting import count_a_cycle_later
from partner.hdl.mac import RxStream
from partner.hdl.packet_fifo import PacketFIFO
from partner.hdl.parser import LATENCY, Parser
from partner.hdl.stream import PacketStream
from partner.hdl.wire import layout
from partner.parser_formats import MalformedCause

__all__ = ["LOOKUP_LAYOUT", "RxPort"]

#: What a port asks the classifier: the frame's key, and its length and port for the metadata.
LOOKUP_LAYOUT = data.StructLayout({
    "key": layout(FLOW_KEY),
    "length": FRAME_META["length"].width,
})


class RxPort(wiring.Component):
    """Frame buffer + parser + lookup requests of port `port` (width `width_bytes`).

    Members
    -------
    i_stream, i_drop : the MAC receiver's output (valid-only) and its drop flag
    o_frame : ``Out(PacketStream(width_bytes))``: committed frames, in order
    o_lookup : ``Out(stream.Signature(LOOKUP_LAYOUT))``: one request per committed frame
    malformed, fifo_overflows, lookup_backlog_drops : ``Out(32)`` wrapping counters
    """

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
            next_payload = Signal.like(payload, name=f"payload_{stage}", reset_less=True)
            next_drop = Signal(name=f"drop_{stage}")
            m.d.sync += [next_valid.eq(valid), next_payload.eq(payload), next_drop.eq(drop)]
            valid, payload, drop = next_valid, next_payload, next_drop

        # Bytes of the frame so far, for its length.
        length = Signal(FRAME_META["length"].width)
        beat_end = valid & payload.last
        with m.If(valid):
            m.d.sync += length.eq(Mux(payload.last, 0, length + payload.nbytes))
        frame_length = length + payload.nbytes

        # The request before still waits: drop the frame rather than let the pairing slip.
        # The request has no reset (`waiting` qualifies it): 442 loads fewer on the reset net.
        request, waiting = Signal(LOOKUP_LAYOUT, reset_less=True), Signal()
        backlog = waiting
        m.d.comb += [
            fifo.i_stream.valid.eq(valid),
            fifo.i_stream.payload.eq(payload),
            fifo.i_drop.eq(drop | backlog),
        ]
        count_a_cycle_later(m, self.lookup_backlog_drops, beat_end & ~drop & backlog,
                            name="backlog_drop")

        # The key comes with the frame's last beat; the request is made when the FIFO commits
        # that frame. A frame that is not committed leaves the register to the next one.
        with m.If(parser.o_key.valid & ~waiting):
            m.d.sync += [request.key.eq(parser.o_key.payload), request.length.eq(frame_length)]
        with m.If(fifo.o_committed):
            m.d.sync += waiting.eq(1)
        with m.Elif(self.o_lookup.ready):
            m.d.sync += waiting.eq(0)
        m.d.comb += [
            self.o_lookup.valid.eq(waiting),
            self.o_lookup.payload.eq(request),
        ]
        m.d.comb += [
            self.o_frame.valid.eq(fifo.o_stream.valid),
            self.o_frame.payload.eq(fifo.o_stream.payload),
            fifo.o_stream.ready.eq(self.o_frame.ready),
        ]

        # Keys the parser marked malformed, whatever the cause: one counter, where the sum of
        # the parser's per-cause counters was a five-input 32-bit adder on the way to the
        # registers' snapshot.
        with m.If(parser.o_key.valid & (parser.o_cause != MalformedCause.NONE)):
            m.d.sync += self.malformed.eq(self.malformed + 1)
        m.d.comb += [
            self.fifo_overflows.eq(fifo.frames_dropped_overflow),
        ]
        return m
