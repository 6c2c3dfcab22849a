# The partner demux shared by all ports: one flow table, its lookups taken round robin from the
# ports' lookup queues, and each result returned to the queue of the port that asked.
"""Classifier: the flow table behind a round-robin arbiter with per-port result queues.

Every port's i-th request gets its i-th result, because the flow table answers in request order
and a small tag queue remembers which port each request in flight came from. Results wait in a
per-port queue until the port's dispatcher takes the frame; that queue is deep enough for every
frame the port's receive FIFO can hold, so the flow table never waits for a slow dispatcher
unless the port's FIFO is full anyway.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from partner.formats import ACTION, FLOW_RULE, FRAME_META
from partner.hdl.flow_table import FlowTable, result_layout
from partner.hdl.rx_port import LOOKUP_LAYOUT
from partner.hdl.wire import layout

__all__ = ["RESULT_LAYOUT", "Classifier"]

#: What a port gets back for a frame: the lookup result and what the metadata needs besides.
RESULT_LAYOUT = data.StructLayout({
    "result": result_layout(),
    "flags": FRAME_META["flags"].width,
    "length": FRAME_META["length"].width,
})

_TAG_LAYOUT = data.StructLayout({
    "port": 3,
    "flags": FRAME_META["flags"].width,
    "length": FRAME_META["length"].width,
})


class Classifier(wiring.Component):
    def __init__(self, ports: int, rules: int, ways: int, result_depth: int):
        self.ports = ports
        self.rules = rules
        self.ways = ways
        self.result_depth = result_depth
        super().__init__({
            "i_lookup": In(stream.Signature(LOOKUP_LAYOUT)).array(ports),
            "o_result": Out(stream.Signature(RESULT_LAYOUT)).array(ports),
            "w_index": In(range(rules)),
            "w_rule": In(layout(FLOW_RULE)),
            "w_en": In(1),
            "default_action": In(layout(ACTION)),
            "lookups": Out(32),
            "hits": Out(32),
            "misses": Out(32),
            "c_index": In(range(rules)),
            "c_frames": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.table = table = FlowTable(self.rules, self.ways)
        for name in ("w_index", "w_rule", "w_en", "default_action", "c_index"):
            m.d.comb += getattr(table, name).eq(getattr(self, name))
        for name in ("lookups", "hits", "misses", "c_frames"):
            m.d.comb += getattr(self, name).eq(getattr(table, name))

        # Requests in flight: enough for every key the table holds before answering.
        in_flight = table.fifo_depth + table.latency // max(table.interval, 1) + 2
        m.submodules.tags = tags = SyncFIFOBuffered(width=_TAG_LAYOUT.size, depth=in_flight)

        # Round robin among the ports with a request, one request per transfer.
        last = Signal(range(self.ports))
        chosen = Signal(range(self.ports))
        some = Signal()
        with m.Switch(last):
            for start in range(self.ports):
                with m.Case(start):
                    order = [(start + 1 + k) % self.ports for k in range(self.ports)]
                    for p in reversed(order):
                        with m.If(self.i_lookup[p].valid):
                            m.d.comb += [chosen.eq(p), some.eq(1)]
        request = Signal(LOOKUP_LAYOUT)
        for p in range(self.ports):
            with m.If(chosen == p):
                m.d.comb += request.eq(self.i_lookup[p].payload)
        take = some & table.i_key.ready & tags.w_rdy
        m.d.comb += [
            table.i_key.valid.eq(some & tags.w_rdy),
            table.i_key.payload.eq(request.key),
            tags.w_en.eq(take),
        ]
        tag_in = Signal(_TAG_LAYOUT)
        m.d.comb += [
            tag_in.port.eq(chosen),
            tag_in.flags.eq(request.key.flags),
            tag_in.length.eq(request.length),
            tags.w_data.eq(tag_in),
        ]
        for p in range(self.ports):
            m.d.comb += self.i_lookup[p].ready.eq(take & (chosen == p))
        with m.If(take):
            m.d.sync += last.eq(chosen)

        # Results back to the asking port's queue.
        tag_out = Signal(_TAG_LAYOUT)
        m.d.comb += tag_out.eq(tags.r_data)
        queues = []
        for p in range(self.ports):
            queue = SyncFIFOBuffered(width=RESULT_LAYOUT.size, depth=self.result_depth)
            m.submodules[f"results_{p}"] = queue
            queues.append(queue)
            out = self.o_result[p]
            m.d.comb += [
                out.valid.eq(queue.r_rdy),
                out.payload.eq(queue.r_data),
                queue.r_en.eq(out.ready),
            ]
        entry = Signal(RESULT_LAYOUT)
        m.d.comb += [
            entry.result.eq(table.o_result.payload),
            entry.flags.eq(tag_out.flags),
            entry.length.eq(tag_out.length),
        ]
        room = Signal()
        for p, queue in enumerate(queues):
            with m.If(tag_out.port == p):
                m.d.comb += room.eq(queue.w_rdy)
            m.d.comb += [
                queue.w_data.eq(entry),
                queue.w_en.eq(table.o_result.valid & tags.r_rdy & room & (tag_out.port == p)),
            ]
        m.d.comb += [
            table.o_result.ready.eq(tags.r_rdy & room),
            tags.r_en.eq(table.o_result.valid & room),
        ]
        return m

