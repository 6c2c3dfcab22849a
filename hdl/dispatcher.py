# Dispatcher of one port: pairs each committed frame with its flow-table result and sends it where
# the action says — a host queue (with its demux key), the slow path, another port's transmit
# queues (the device-to-device path) — or drops it.
"""Per-port dispatcher.

Combinational but for its drop counters: the result at the head of the port's result queue stays
there until the frame's last beat has gone, so the destination, the flow index and the metadata
are constant over the frame, and consecutive frames follow each other with no idle cycle.

Destinations (the frame switch's `dest`): `0 .. queues-1` the host queues, `queues` the slow path,
`queues + 1 + p` the transmit queues of port `p`. A `DROP` action, or an action naming a queue
or port this build does not have (the register block refuses such rules, but the default action
could still be stale), consumes the frame here and counts it.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from partner.formats import FRAME_META, ActionKind
from partner.hdl.classifier import RESULT_LAYOUT
from partner.hdl.counting import count_a_cycle_later
from partner.hdl.stream import PacketStream, packet_layout
from partner.hdl.wire import layout

__all__ = ["Dispatcher", "switch_layout"]


def switch_layout(width_bytes: int, dests: int) -> data.StructLayout:
    """A beat on its way through the frame switch, with what the flow queues need."""
    return data.StructLayout({
        "beat": packet_layout(width_bytes),
        "dest": range(dests),
        "flow": 9,
        "length": FRAME_META["length"].width,
        "meta": layout(FRAME_META),
    })


class Dispatcher(wiring.Component):
    def __init__(self, width_bytes: int, *, port: int, ports: int, queues: int, rules: int,
                 tx_flows: int):
        self.width_bytes = width_bytes
        self.port = port
        self.ports = ports
        self.queues = queues
        self.rules = rules
        self.tx_flows = tx_flows
        self.dests = queues + 1 + ports
        super().__init__({
            "i_frame": In(PacketStream(width_bytes)),
            "i_result": In(stream.Signature(RESULT_LAYOUT)),
            "o": Out(stream.Signature(switch_layout(width_bytes, self.dests))),
            "dropped_by_rule": Out(32),
            "dropped_bad_action": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        frame, result, out = self.i_frame, self.i_result, self.o
        action = result.payload.result.action
        hit = result.payload.result.hit

        dest = Signal(range(self.dests))
        flow = Signal(9)
        bad = Signal()
        drop_rule = Signal()
        with m.Switch(action.kind):
            with m.Case(ActionKind.HOST):
                m.d.comb += [dest.eq(action.queue), bad.eq(action.queue >= self.queues)]
            with m.Case(ActionKind.SLOWPATH):
                m.d.comb += dest.eq(self.queues)
            with m.Case(ActionKind.FORWARD):
                m.d.comb += [
                    dest.eq(self.queues + 1 + action.port),
                    bad.eq(action.port >= self.ports),
                ]
            with m.Case(ActionKind.DROP):
                m.d.comb += drop_rule.eq(1)
        # RX flows are rule indices, misses share one more; forwarded frames share one TX flow
        # per ingress port, after the host's TX flows.
        with m.If(action.kind == ActionKind.FORWARD):
            m.d.comb += flow.eq(self.tx_flows + self.port)
        with m.Elif(hit):
            m.d.comb += flow.eq(result.payload.result.index)
        with m.Else():
            m.d.comb += flow.eq(self.rules)

        discard = drop_rule | bad
        m.d.comb += [
            out.valid.eq(frame.valid & result.valid & ~discard),
            out.payload.beat.eq(frame.payload),
            out.payload.dest.eq(dest),
            out.payload.flow.eq(flow),
            out.payload.length.eq(result.payload.length),
            out.payload.meta.length.eq(result.payload.length),
            out.payload.meta.in_port.eq(self.port),
            out.payload.meta.flow.eq(result.payload.result.index),
            out.payload.meta.hit.eq(hit),
            out.payload.meta.flags.eq(result.payload.flags),
            out.payload.meta.action.eq(action),
            frame.ready.eq(result.valid & (discard | out.ready)),
            result.ready.eq(frame.valid & frame.ready & frame.payload.last),
        ]
        # Drops are counted a cycle later, from registers: the counters' enables are then
        # one flip-flop each, not the handshake through the frame switch's ready.
        frame_ends = frame.valid & frame.ready & frame.payload.last
        count_a_cycle_later(m, self.dropped_by_rule, frame_ends & drop_rule,
                            name="ended_by_rule")
        count_a_cycle_later(m, self.dropped_bad_action, frame_ends & bad, name="ended_bad")
        return m
