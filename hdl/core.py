# The device core: Ethernet ports, the partner demux, per-flow queues and schedulers, and the
# register block — everything of the device except the host link (PCIe DMA, byte-stream link).
"""Device core (the Vera-style offload device of the partner paper, §2.3 and §4.5).

```
 PHY rx ─ MAC RX ─ RxPort (FIFO + parser) ─┐                 ┌─ FlowQueues RX q ─ host rx[q]
                                           Classifier ─ Dispatcher ─┐   (q = queues: slow path)
 host tx ─ HostTxGate (cells reserved) ─────────────────── FrameSwitch ┤
                                                                   └─ FlowQueues TX p ─ MAC TX ─ PHY
```

Host side, for the host adapters of later work: one stream per host queue (`rx[q]`, the last one
being the slow path for the firmware) whose payload is a beat plus the frame's `FRAME_META` (with
the demux key of the rule that matched: demux propagation), one transmit stream (`tx`) whose first
beat names the port, the TX flow and the frame length, the CSR bus, and an event stream.

The host's frames are never dropped for lack of buffer: `HostTxGate` holds each one back
(`tx.ready` low) until its port's TX flow-queue block has reserved its cells, and the block then
admits it whatever its flow's bytes in use (a closed flow still drops it). Frames forwarded from
port to port into the same block are admitted or dropped at their first beat, as the wire cannot
wait. Only frames with a port or flow out of range, or longer than a block holds, are dropped
(`tx_host_dropped`).

The core runs in one clock domain, `sync` (125 MHz at width 1 for 1G ports, 156.25 MHz at width
8 for 10G ports); board wrappers cross the PHYs' own receive clocks into it.

Register slices (`StreamSlice`, one beat per cycle, every output from a flip-flop) sit on the
frame path between blocks: receive FIFO → dispatcher, result queue → dispatcher, dispatcher →
switch, host gate → switch, switch → each flow-queue block, TX flow queues → MAC. Without them a
frame's handshake ran from the receive FIFO's block RAM through the dispatcher's action decode
and the switch's round robin into the flow-queue block's quota lookup, and the ready back into
the block RAM's enable, in one cycle. The result slice does the same for the classifier's result
queue: its block RAM sits wherever the placer found one free, and its output through the
dispatcher's action decode back into its own read enable was two trips across the chip in one
cycle (the routed worst path at 87.5 MHz). They add three cycles to a frame's way from the wire
to its queue and from the host to the wire.
"""

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from partner.formats import EVENT, FRAME_META, EventKind
from partner.hdl.classifier import Classifier
from partner.hdl.core_csr import CSR_READ_LATENCY, CoreRegisters
from partner.hdl.crossbar import FrameSwitch
from partner.hdl.csr import CSRBus
from partner.hdl.dispatcher import Dispatcher, switch_layout
from partner.hdl.events import EventMerger
from partner.hdl.flow_queues import FlowQueues
from partner.hdl.flow_table import FlowTable
from partner.hdl.host_tx import HostTxGate
from partner.hdl.mac import GMIIRX, GMIITX, XGMIIRX, XGMIITX
from partner.hdl.mac.gmii import GMIIRxBus, GMIITxBus
from partner.hdl.mac.xgmii import XGMIIRxBus, XGMIITxBus
from partner.hdl.rx_port import RxPort
from partner.hdl.stream import StreamSlice, packet_layout
from partner.hdl.wire import layout
from partner.regmap import REGISTERS

__all__ = ["DeviceCore", "host_rx_layout", "host_tx_layout"]


def host_rx_layout(width_bytes: int) -> data.StructLayout:
    """A beat of a host queue and the metadata of its frame (constant over the frame)."""
    return data.StructLayout({"beat": packet_layout(width_bytes), "meta": layout(FRAME_META)})


def host_tx_layout(width_bytes: int) -> data.StructLayout:
    """A beat the host sends; `port`, `flow` and `length` are read with the first beat."""
    return data.StructLayout({
        "beat": packet_layout(width_bytes),
        "port": 3,
        "flow": 9,
        "length": FRAME_META["length"].width,
    })


class DeviceCore(wiring.Component):
    """`ports` Ethernet ports (GMII at width 1, XGMII at width 8), the demux and the queues.

    Parameters: `rules` flow-table entries; `queues` host queues (plus the slow path);
    `tx_flows` host TX flows per port; `rx_fifo_bytes` receive buffer per port; `cells` and
    `cell_bytes` the buffer of each flow-queue block (default 288 cells of 64 bytes: two
    9000-byte frames, one leaving while the next is admitted, need 282); `quantum` the DRR
    bytes per unit of a flow's weight (default 2048: a weight-1 turn covers a 1518-byte frame,
    and a 9000-byte frame waits four wasted steps, not 35 as with 256 bytes, so that back-to-back
    jumbo frames leave soon enough for the next-but-one to find its cells); `ways` flow-table
    entries compared per cycle (default: enough for every port at line rate with minimum-size
    frames).
    """

    def __init__(self, *, ports: int = 2, width_bytes: int = 1, rules: int = 16, queues: int = 2,
                 tx_flows: int = 8, rx_fifo_bytes: int = 16384, cells: int = 288,
                 cell_bytes: int = 64, quantum: int = 2048, ways: int | None = None):
        if width_bytes not in (1, 8):
            raise ValueError(f"width_bytes must be 1 (GMII) or 8 (XGMII), not {width_bytes}")
        if not 2 <= ports <= 8 or not 1 <= queues <= 15 or not 1 <= rules <= 255:
            raise ValueError("need 2..8 ports, 1..15 host queues and 1..255 rules")
        self.ports, self.width_bytes, self.rules = ports, width_bytes, rules
        self.queues, self.tx_flows = queues, tx_flows
        self.rx_fifo_depth = rx_fifo_bytes // width_bytes
        self.cells, self.cell_bytes, self.quantum = cells, cell_bytes, quantum
        # A host frame waiting for cells of a TX block lets forwarded frames take cells freed
        # meanwhile for the wire time of 2 KiB; then they must leave its cells free.
        self.patience = 2048 // width_bytes
        self.ways = ways or self.default_ways(width_bytes=width_bytes, ports=ports, rules=rules)
        self.dests = queues + 1 + ports
        rx_bus, tx_bus = (GMIIRxBus(), GMIITxBus()) if width_bytes == 1 else (
            XGMIIRxBus(), XGMIITxBus())
        self.addr_width = max(1, (REGISTERS.size // 4 - 1).bit_length())
        super().__init__({
            "phy_rx": In(rx_bus).array(ports),
            "phy_tx": Out(tx_bus).array(ports),
            "rx": Out(stream.Signature(host_rx_layout(width_bytes))).array(queues + 1),
            "tx": In(stream.Signature(host_tx_layout(width_bytes))),
            "csr": In(CSRBus(self.addr_width, CSR_READ_LATENCY)),
            "events": Out(stream.Signature(layout(EVENT))),
        })

    @staticmethod
    def default_ways(*, width_bytes: int, ports: int, rules: int) -> int:
        """Flow-table ways for one lookup per minimum frame (84 byte times on the wire) from
        every port."""
        budget = max(1, (84 // width_bytes) // ports - FlowTable.PIPELINE // 4)
        return FlowTable.ways_for(rules, budget)

    def elaborate(self, platform):
        m = Module()
        w, P, Q = self.width_bytes, self.ports, self.queues
        rx_mac_cls, tx_mac_cls = (GMIIRX, GMIITX) if w == 1 else (XGMIIRX, XGMIITX)
        # The receive queue of a port holds this many minimum-size frames at most.
        frames_per_fifo = max(4, 1 << (self.rx_fifo_depth * w // 60).bit_length())

        m.submodules.classifier = classifier = Classifier(P, self.rules, self.ways,
                                                          frames_per_fifo)
        switch_lay = switch_layout(w, self.dests)
        m.submodules.switch = switch = FrameSwitch(switch_lay, P + 1, self.dests)

        rx_macs, tx_macs, rx_ports, dispatchers = [], [], [], []
        for p in range(P):
            rx_mac = m.submodules[f"rx_mac_{p}"] = rx_mac_cls()
            tx_mac = m.submodules[f"tx_mac_{p}"] = tx_mac_cls()
            port = m.submodules[f"rx_port_{p}"] = RxPort(w, p, self.rx_fifo_depth)
            dispatcher = m.submodules[f"dispatch_{p}"] = Dispatcher(
                w, port=p, ports=P, queues=Q, rules=self.rules, tx_flows=self.tx_flows)
            wiring.connect(m, wiring.flipped(self.phy_rx[p]), rx_mac.phy)
            wiring.connect(m, tx_mac.phy, wiring.flipped(self.phy_tx[p]))
            m.d.comb += [
                port.i_stream.valid.eq(rx_mac.o_stream.valid),
                port.i_stream.payload.eq(rx_mac.o_stream.payload),
                port.i_drop.eq(rx_mac.o_drop),
            ]
            wiring.connect(m, port.o_lookup, classifier.i_lookup[p])
            wiring.connect(m, port.o_frame, self._slice(m, f"frame_{p}", dispatcher.i_frame))
            wiring.connect(m, classifier.o_result[p],
                           self._slice(m, f"result_{p}", dispatcher.i_result))
            wiring.connect(m, dispatcher.o, self._slice(m, f"dispatch_{p}", switch.i[p]))
            rx_macs.append(rx_mac)
            tx_macs.append(tx_mac)
            rx_ports.append(port)
            dispatchers.append(dispatcher)

        # The host's transmit stream is the switch's last source, through a gate that holds
        # each frame back until its port's TX block has reserved its cells.
        m.submodules.host_tx = gate = HostTxGate(
            host_tx_layout(w), switch_lay, ports=P, tx_flows=self.tx_flows, dest_base=Q + 1,
            cells=self.cells, cell_bytes=self.cell_bytes)
        wiring.connect(m, wiring.flipped(self.tx), gate.i)
        wiring.connect(m, gate.o, self._slice(m, "host_tx", switch.i[P]))

        rx_queues, tx_queues = [], []
        for d in range(self.dests):
            tx = d > Q
            flows = self.tx_flows + P if tx else self.rules + 1
            block = FlowQueues(w, flows, self.cells, self.cell_bytes, classes=8,
                               quantum=self.quantum, patience=self.patience)
            name = f"tx_queues_{d - Q - 1}" if tx else f"rx_queues_{d}"
            m.submodules[name] = block
            source = m.submodules[f"{name}_slice"] = StreamSlice(switch_lay)
            wiring.connect(m, switch.o[d], source.i)
            source = source.o
            m.d.comb += [
                block.i_stream.valid.eq(source.valid),
                block.i_stream.payload.eq(source.payload.beat),
                block.i_flow.eq(source.payload.flow),
                block.i_length.eq(source.payload.length),
                block.i_meta.eq(source.payload.meta),
                source.ready.eq(block.i_stream.ready),
            ]
            if tx:  # the host's flows come through the gate, which reserved their cells
                m.d.comb += block.i_reserved.eq(source.payload.flow < self.tx_flows)
                wiring.connect(m, gate.reserve[d - Q - 1], block.reserve)
            (tx_queues if tx else rx_queues).append(block)

        for q, block in enumerate(rx_queues):
            host = self.rx[q]
            m.d.comb += [
                host.valid.eq(block.o_stream.valid),
                host.payload.beat.eq(block.o_stream.payload),
                host.payload.meta.eq(block.o_meta),
                block.o_stream.ready.eq(host.ready),
            ]
        for p, block in enumerate(tx_queues):
            wiring.connect(m, block.o_stream, self._slice(m, f"tx_mac_{p}", tx_macs[p].i_stream))

        m.submodules.registers = registers = CoreRegisters(
            ports=P, queues=Q, rules=self.rules, tx_flows=self.tx_flows, width_bytes=w)
        wiring.connect(m, wiring.flipped(self.csr), registers.bus)
        registers.attach(m, classifier=classifier, rx_macs=rx_macs, tx_macs=tx_macs,
                         rx_ports=rx_ports, dispatchers=dispatchers, rx_queues=rx_queues,
                         tx_queues=tx_queues, host_tx_dropped=gate.dropped)

        self._events(m, rx_macs, rx_ports, rx_queues, tx_queues)
        return m

    @staticmethod
    def _slice(m, name, sink):
        """A register slice in front of the stream `sink`; returns its input to drive."""
        cut = m.submodules[f"{name}_slice"] = StreamSlice(sink.payload.shape())
        wiring.connect(m, cut.o, sink)
        return cut.i

    def _events(self, m, rx_macs, rx_ports, rx_queues, tx_queues):
        """Per-unit event sources: a counter that moved since the last cycle raises its event."""
        sources = []

        def moved(counter, name):
            # Each of these counters moves by at most one a cycle (one frame), so its lowest
            # bit changes exactly when it moves: one flip-flop, not a 32-bit copy and compare.
            previous = Signal(name=f"{name}_prev")
            m.d.sync += previous.eq(counter[0])
            return counter[0] != previous

        for p, (mac, port) in enumerate(zip(rx_macs, rx_ports, strict=True)):
            link = Signal(name=f"link_{p}")
            first_good = mac.frames_ok.any() & ~link
            m.d.sync += link.eq(link | mac.frames_ok.any())
            sources.append((EventKind.LINK_UP, p, first_good))
            errors = [getattr(mac, n) for n in ("fcs_errors", "runts", "giants", "phy_errors",
                                                 "preamble_errors")]
            errors += [port.fifo_overflows, port.lookup_backlog_drops]
            error_moved = Const(0)
            for i, counter in enumerate(errors):
                error_moved = error_moved | moved(counter, f"rx_err_{p}_{i}")
            # Registered: the seven compares and their OR are a path of their own, kept
            # away from the merger's pending counts (the event comes a cycle later).
            error_strobe = Signal(name=f"rx_err_{p}")
            m.d.sync += error_strobe.eq(error_moved)
            sources.append((EventKind.RX_ERROR, p, error_strobe))
        for kind, blocks in ((EventKind.QUEUE_DROP, rx_queues), (EventKind.TX_DROP, tx_queues)):
            for unit, block in enumerate(blocks):
                sources.append((kind, unit, block.o_dropped))
        m.submodules.events = events = EventMerger([(kind, unit) for kind, unit, _ in sources])
        for i, (_, _, strobe) in enumerate(sources):
            m.d.comb += events.i_strobe[i].eq(strobe)
        # Sliced: the host's ready would otherwise run into every pending count's clear.
        wiring.connect(m, events.o, self._slice(m, "events", wiring.flipped(self.events)))

