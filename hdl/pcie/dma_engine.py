# The PCIe adapter's DMA engine: descriptor rings of pvecs in host memory (partner.pcie.formats,
# docs/dma.md) <-> the device core's host streams (partner.hdl.core: rx[q], tx, events), over the
# DMA requesters (partner.hdl.pcie.dma_read / dma_write) and the vendor-neutral TLP streams
# (partner.hdl.pcie.tlp). Block diagram and TLP sequences: docs/dma-engine.md.
"""DMA engine.

```
 csr ── DmaRegisters ── ring context ──┐        ┌── DmaReader ──┐
          │ counters (DmaCounters)     │        │  (rd cmd/data/status)
          │                     DmaSequencer ───┤               ├── RequestArbiter ── req
 rx[q] ───────────────────────────►  (jobs)     │               │
 events ── EventQueue ─────────────►    │       └── DmaWriter ──┘          cpl ── DmaReader
                                        │ (wr cmd/data/done)
 tx ◄── PacketFIFO (TX buffer) ◄────────┘
 irq ◄── IrqModeration ◄── completions written
```

Members
-------
``rx[q]``: ``In(stream(host_rx_layout(width // 8)))``, ``q < rx_rings``: the core's host queues.
``tx``: ``Out(stream(host_tx_layout(width // 8)))``: frames to the core, whole and checked.
``events``: ``In(stream(layout(EVENT)))``: the core's events.
``csr``: ``In(CSRBus(ADDR_WIDTH))``: DMA_REGISTERS (BAR0 window 0x1000, from the completer).
``req``: ``Out(TlpStream(width))``: MRd and MWr TLPs (merge with MSI-X after this).
``cpl``: ``In(TlpStream(width))``: completions of the reads.
``config``: ``In(EndpointConfig())``.
``irq``: ``Out(vectors)``: one strobe per interrupt, for `MsixTable.irq`.

The core's beats are as wide as the TLP stream's payload (``width // 8`` bytes: width 64 with the
XGMII core, `DeviceCore(width_bytes=8)`).
"""

from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from partner.formats import EVENT, MAX_FLOWS, MAX_FRAME, MAX_PORTS
from partner.hdl.core import host_rx_layout, host_tx_layout
from partner.hdl.csr import CSRBus
from partner.hdl.packet_fifo import PacketFIFO
from partner.hdl.stream import StreamSlice, packet_layout
from partner.hdl.wire import layout
from partner.pcie.formats import MAX_CHUNKS, MAX_RING_LOG2, DmaCounter

from .dma_counters import DmaCounters
from .dma_events import EventQueue
from .dma_moderation import IrqModeration
from .dma_read import DmaReader
from .dma_registers import ADDR_WIDTH, DmaRegisters
from .dma_sequencer import DmaSequencer
from .dma_write import DmaWriter
from .request_arbiter import RequestArbiter
from .tlp import WIDTHS, EndpointConfig, TlpStream, tlp_layout

__all__ = ["ADDR_WIDTH", "DmaEngine"]


class DmaEngine(wiring.Component):
    """Rings in host memory <-> the core's host streams.

    Parameters
    ----------
    width : int
        TLP stream width (64, 128, 256); the core's beats are ``width // 8`` bytes.
    rx_rings, tx_rings : int
        RX rings (= the core's host queues + the slow path) and TX rings.
    ports, tx_flows : int
        The core's Ethernet ports and TX flows per port (TX descriptors naming others complete
        with BAD_PORT / BAD_FLOW).
    vectors : int
        MSI-X vectors (`irq` bits).
    clk_freq : float
        Clock frequency in Hz, for the moderation timers.
    max_chunks, max_ring_log2 : int
        Build limits reported in `config`.
    tx_buffer_bytes : int
        TX store-and-forward buffer (a power of two; the longest TX pvec). Up to twice the
        longest frame is useful: a jumbo frame is read while the one before leaves.
    events : int
        Events the engine holds while the event ring is full.
    read_tags, read_buffer_bytes, read_timeout : int
        `DmaReader` parameters.
    """

    def __init__(self, width: int = 64, *, rx_rings: int = 3, tx_rings: int = 1, ports: int = 2,
                 tx_flows: int = 8, vectors: int = 4, clk_freq: float = 125e6,
                 max_chunks: int = MAX_CHUNKS, max_ring_log2: int = MAX_RING_LOG2,
                 tx_buffer_bytes: int = 32768, events: int = 16, read_tags: int = 32,
                 read_buffer_bytes: int = 8192, read_timeout: int = 1 << 16):
        if width not in WIDTHS:
            raise ValueError(f"width must be one of {WIDTHS}, not {width!r}")
        if not 1 <= ports <= MAX_PORTS or not 1 <= tx_flows <= MAX_FLOWS:
            raise ValueError(f"need 1..{MAX_PORTS} ports and 1..{MAX_FLOWS} TX flows")
        wb = width // 8
        if tx_buffer_bytes & (tx_buffer_bytes - 1) or tx_buffer_bytes < 2 * wb:
            raise ValueError(f"tx_buffer_bytes must be a power of two of at least two beats, "
                             f"not {tx_buffer_bytes!r}")
        self.width, self.wb = width, wb
        self.rx_rings, self.tx_rings = rx_rings, tx_rings
        self.ports, self.tx_flows, self.vectors = ports, tx_flows, vectors
        self.clk_freq = clk_freq
        self.max_chunks, self.max_ring_log2 = max_chunks, max_ring_log2
        self.tx_buffer_bytes = min(tx_buffer_bytes, 2 << MAX_FRAME.bit_length())
        self.event_depth = events
        self.read_tags, self.read_buffer_bytes = read_tags, read_buffer_bytes
        self.read_timeout = read_timeout
        super().__init__({
            "rx": In(stream.Signature(host_rx_layout(wb))).array(rx_rings),
            "tx": Out(stream.Signature(host_tx_layout(wb))),
            "events": In(stream.Signature(layout(EVENT))),
            "csr": In(CSRBus(ADDR_WIDTH)),
            "req": Out(TlpStream(width)),
            "cpl": In(TlpStream(width)),
            "config": In(EndpointConfig()),
            "irq": Out(vectors),
        })

    def elaborate(self, platform):
        m = Module()
        wb = self.wb
        m.submodules.registers = regs = DmaRegisters(
            rx_rings=self.rx_rings, tx_rings=self.tx_rings, max_chunks=self.max_chunks,
            max_ring_log2=self.max_ring_log2, vectors=self.vectors, counters=len(DmaCounter))
        m.submodules.counters = counters = DmaCounters(len(DmaCounter))
        m.submodules.event_queue = queue = EventQueue(self.event_depth)
        m.submodules.moderation = moderation = IrqModeration(regs.rings, self.vectors,
                                                             self.clk_freq)
        m.submodules.sequencer = seq = DmaSequencer(
            self.width, rx_rings=self.rx_rings, tx_rings=self.tx_rings, ports=self.ports,
            tx_flows=self.tx_flows, max_chunks=self.max_chunks,
            tx_buffer_bytes=self.tx_buffer_bytes)
        m.submodules.reader = reader = DmaReader(
            self.width, tags=self.read_tags, buffer_bytes=self.read_buffer_bytes,
            timeout=self.read_timeout)
        m.submodules.writer = writer = DmaWriter(self.width)
        m.submodules.arbiter = arbiter = RequestArbiter(self.width, 2)
        tx_meta = data.StructLayout({"port": 3, "flow": 9, "length": 14})
        depth = self.tx_buffer_bytes // wb
        m.submodules.tx_buffer = tx_buffer = PacketFIFO(wb, depth, meta_layout=tx_meta,
                                                        meta_depth=64)

        # Registers.
        wiring.connect(m, wiring.flipped(self.csr), regs.bus)
        for name in ("sel", "set_head", "new_head", "bump_cpl", "set_waiting", "job_start",
                     "ring_error", "error_status", "dma_error"):
            m.d.comb += getattr(regs, name).eq(getattr(seq, name))
        for name in ("enable", "resetting", "max_chunks_reg", "tx_max_length", "ring_enabled",
                     "ring_waiting", "base", "cpl_base", "log2", "cpl_log2", "head", "tail",
                     "cpl_head", "cpl_tail", "stall"):
            m.d.comb += getattr(seq, name).eq(getattr(regs, name))
        m.d.comb += regs.engine_idle.eq(seq.idle)

        # Counters.
        for i in range(len(DmaCounter)):
            m.d.comb += [regs.counter_value[i].eq(counters.value[i]),
                         regs.counter_threshold[i].eq(counters.threshold[i])]
            lost = queue.lost if i == DmaCounter.EVENTS_LOST else 0
            m.d.comb += counters.inc[i].eq(seq.inc[i] + lost)
        m.d.comb += [counters.th_stb.eq(regs.th_stb), counters.th_index.eq(regs.th_index),
                     counters.th_data.eq(regs.th_data), counters.clear.eq(regs.reset_done)]

        # Events.
        wiring.connect(m, wiring.flipped(self.events), queue.core)
        wiring.connect(m, seq.post, queue.engine)
        wiring.connect(m, counters.event, queue.threshold)
        wiring.connect(m, queue.out, seq.events)
        m.d.comb += queue.clear.eq(regs.reset_done)

        # Interrupts.
        for r in range(regs.rings):
            m.d.comb += moderation.config[r].eq(regs.irq_config[r])
        m.d.comb += [moderation.written.eq(seq.written), moderation.notify.eq(seq.notify),
                     moderation.polling.eq(regs.polling), moderation.clear.eq(regs.reset_done),
                     self.irq.eq(moderation.irq)]

        # The core's streams.
        for q in range(self.rx_rings):
            wiring.connect(m, wiring.flipped(self.rx[q]), seq.rx[q])
        m.d.comb += [
            tx_buffer.i_stream.valid.eq(seq.tx.valid),
            tx_buffer.i_stream.payload.eq(seq.tx.payload),
            seq.tx.ready.eq(tx_buffer.i_stream.ready),
            tx_buffer.i_drop.eq(seq.tx_drop),
            tx_buffer.i_meta.port.eq(seq.tx_port),
            tx_buffer.i_meta.flow.eq(seq.tx_flow),
            tx_buffer.i_meta.length.eq(seq.tx_length),
            seq.tx_room.eq(depth - tx_buffer.level),
            self.tx.valid.eq(tx_buffer.o_stream.valid),
            self.tx.payload.beat.eq(tx_buffer.o_stream.payload),
            self.tx.payload.port.eq(tx_buffer.o_meta.port),
            self.tx.payload.flow.eq(tx_buffer.o_meta.flow),
            self.tx.payload.length.eq(tx_buffer.o_meta.length),
            tx_buffer.o_stream.ready.eq(self.tx.ready),
        ]

        # The requesters and the link.
        wiring.connect(m, seq.rd_cmd, reader.cmd)
        wiring.connect(m, reader.data, seq.rd_data)
        wiring.connect(m, reader.status, seq.rd_status)
        # Register slices cut the combinational paths through the arbiter and the writer's
        # data input. None sits behind the writer: its `done` must mean the TLP was granted on
        # `req` (the completion's MWr before the MSI-X write it announces). Reads may wait in
        # a slice: no write of the engine depends on them.
        m.submodules.wr_data_slice = wr_slice = StreamSlice(packet_layout(wb))
        m.submodules.rd_req_slice = rd_slice = StreamSlice(tlp_layout(self.width))
        wiring.connect(m, seq.wr_cmd, writer.cmd)
        wiring.connect(m, seq.wr_data, wr_slice.i)
        wiring.connect(m, wr_slice.o, writer.data)
        wiring.connect(m, writer.done, seq.wr_done)
        wiring.connect(m, reader.req, rd_slice.i)
        wiring.connect(m, rd_slice.o, arbiter.src[0])
        wiring.connect(m, writer.req, arbiter.src[1])
        wiring.connect(m, arbiter.out, wiring.flipped(self.req))
        wiring.connect(m, wiring.flipped(self.cpl), reader.cpl)
        for block in (reader, writer):
            for name in ("id", "max_payload", "max_read_request", "bus_master", "msix_enable",
                         "msix_mask"):
                m.d.comb += getattr(block.config, name).eq(getattr(self.config, name))
        return m
