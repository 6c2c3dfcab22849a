# The host's transmit stream into the device core's frame switch, with backpressure: a NIC does
# not drop the frames its host gives it for lack of buffer, it stops taking them. Each frame
# waits until its port's TX flow-queue block (partner.hdl.flow_queues, `reserve`) has set its
# cells aside.
"""Host TX gate.

The host's frames come on one stream whose first beat names the port, the TX flow and the
length (`partner.hdl.core.host_tx_layout`). The gate takes a frame's first beat into a register
and judges it:

* a port or flow out of range, or a length the port's TX block could never hold (more than
  its ``cells * cell_bytes`` bytes), drops the frame: its beats are taken and discarded, and
  ``dropped`` counts it (the core's ``tx_host_dropped``);
* otherwise the gate asks that port's block to reserve ``ceil(length / cell_bytes)`` cells
  (``reserve[port]``) and holds the rest of the frame back (``i.ready`` low) until they are
  granted; then the frame goes on to the switch with one beat per cycle, and the block admits
  it for sure (``i_reserved``: see `partner.hdl.flow_queues`).

A reservation is taken from the block's free cells in the cycle it is granted, so frames
forwarded from other ports cannot take them before the host's frame arrives; the block admits
a forwarded frame only if it leaves a waiting reservation's cells free, once that reservation
has waited the block's ``patience``. Between two frames the stream pauses two cycles (the first
beat is registered, then the reservation is asked for from registers).

The host stream is one stream: a frame that waits for its port's cells holds back every frame
behind it, for other ports too (no attempt is made to reorder them). Every input of a decision
and every ``ready`` comes from a flip-flop.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

__all__ = ["HostTxGate"]


class HostTxGate(wiring.Component):
    """Host frames (``i``) into the switch (``o``), each after its cells are reserved.

    ``in_layout`` has ``beat``, ``port``, ``flow`` and ``length``; ``out_layout`` (the
    switch's) has ``beat``, ``dest``, ``flow`` and ``length`` (and anything else, driven 0).
    A frame for port ``p`` goes to destination ``dest_base + p``. ``ports`` TX blocks of
    ``cells`` cells of ``cell_bytes`` bytes; ``tx_flows`` host TX flows per port.
    """

    def __init__(self, in_layout, out_layout, *, ports: int, tx_flows: int, dest_base: int,
                 cells: int, cell_bytes: int):
        self.ports, self.tx_flows, self.dest_base = ports, tx_flows, dest_base
        self.cells, self.cell_bytes = cells, cell_bytes
        super().__init__({
            "i": In(stream.Signature(in_layout)),
            "o": Out(stream.Signature(out_layout)),
            "reserve": Out(stream.Signature(range(cells + 1))).array(ports),
            "dropped": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        lcb = exact_log2(self.cell_bytes)

        held = Signal.like(i.payload)  # the first beat of the frame being judged or sent
        held_valid = Signal()
        granted = Signal()  # its cells are reserved: send it
        want = Signal(self.ports)  # one-hot: the block asked for cells
        need = Signal(range(self.cells + 1))
        body = Signal()  # passing the beats after the first
        discard = Signal()  # discarding the beats after the first of a bad frame

        def forward(payload):
            return [o.payload.beat.eq(payload.beat),
                    o.payload.dest.eq(self.dest_base + payload.port),
                    o.payload.flow.eq(payload.flow), o.payload.length.eq(payload.length)]

        idle = ~held_valid & ~body & ~discard
        with m.If(idle):
            m.d.comb += i.ready.eq(1)
            first = i.payload.beat.first
            with m.If(i.valid & first):
                bad = ((i.payload.port >= self.ports) | (i.payload.flow >= self.tx_flows)
                       | (i.payload.length > self.cells * self.cell_bytes))
                with m.If(bad):
                    m.d.sync += [self.dropped.eq(self.dropped + 1),
                                 discard.eq(~i.payload.beat.last)]
                with m.Else():
                    m.d.sync += [held.eq(i.payload), held_valid.eq(1),
                                 need.eq((i.payload.length + self.cell_bytes - 1) >> lcb)]
                    for p in range(self.ports):
                        m.d.sync += want[p].eq(i.payload.port == p)
            # A beat outside a frame (no first beat before it) is discarded.

        for p, reserve in enumerate(self.reserve):
            m.d.comb += [reserve.valid.eq(want[p]), reserve.payload.eq(need)]
            with m.If(reserve.valid & reserve.ready):
                m.d.sync += [want.eq(0), granted.eq(1)]

        with m.If(granted):
            m.d.comb += [o.valid.eq(1), *forward(held)]
            with m.If(o.ready):
                m.d.sync += [held_valid.eq(0), granted.eq(0), body.eq(~held.beat.last)]
        with m.If(body):
            m.d.comb += [o.valid.eq(i.valid), i.ready.eq(o.ready), *forward(i.payload)]
            with m.If(i.valid & o.ready & i.payload.beat.last):
                m.d.sync += body.eq(0)
        with m.If(discard):
            m.d.comb += i.ready.eq(1)
            with m.If(i.valid & i.payload.beat.last):
                m.d.sync += discard.eq(0)
        return m
