# The whole device as a PCIe card: the device core (partner.hdl.core) behind the PCIe adapter's
# transaction layer — BAR0 completer, MSI-X, DMA engine — on the vendor-neutral TLP streams of
# partner.hdl.pcie.tlp. A board wraps this with its PCIe hard IP and PHYs.
"""PCIe card: the Vera of the partner paper (§2.3) with its host link.

```
            req_in ─► Bar0Completer ─► cpl_out
                        │ core  │ dma    │ msix
 phy_rx[p] ─► DeviceCore.csr    │        │
 phy_tx[p] ◄─ DeviceCore        │        │
              rx[q] ──► DmaEngine.csr    MsixTable
              tx    ◄── DmaEngine ── irq ──► │
              events ─►   │  req ─┐          │ req
                          cpl     RequestArbiter ─► req_out
 cpl_in ──────────────────┘
```

One clock domain, ``sync``: the core's beats are ``width // 8`` bytes, so width 64 pairs with
the XGMII core (`DeviceCore(width_bytes=8)`, 156.25 MHz).

The MSI-X block's memory writes join the engine's requests in one arbiter. The engine strobes
an interrupt only after the completion entry it signals has left on its request stream, and the
arbiter forwards whole TLPs in the order it takes them, so a message never passes the
completions it announces (posted writes from one requester stay in order, PCIe Base Spec §2.4.1).
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from partner.hdl.core import DeviceCore
from partner.hdl.mac.xgmii import XGMIIRxBus, XGMIITxBus

from .completer import Bar0Completer
from .dma_engine import DmaEngine
from .dma_registers import ADDR_WIDTH as DMA_ADDR_WIDTH
from .msix import MsixTable
from .request_arbiter import RequestArbiter
from .tlp import EndpointConfig, TlpStream

__all__ = ["PcieCard"]


class PcieCard(wiring.Component):
    """The device core, its DMA engine and BAR0 behind four TLP streams.

    Parameters: ``ports``, ``rules``, ``queues``, ``tx_flows`` as for `DeviceCore`;
    ``vectors`` MSI-X vectors; ``clk_freq`` the clock, for interrupt moderation timers.
    """

    width = 64

    def __init__(self, *, ports: int = 2, rules: int = 16, queues: int = 2, tx_flows: int = 8,
                 vectors: int = 4, clk_freq: float = 156.25e6, **core_options):
        self.core = DeviceCore(ports=ports, width_bytes=self.width // 8, rules=rules,
                               queues=queues, tx_flows=tx_flows, **core_options)
        self.engine = DmaEngine(self.width, rx_rings=queues + 1, tx_rings=1, ports=ports,
                                tx_flows=tx_flows, vectors=vectors, clk_freq=clk_freq)
        self.ports, self.queues, self.vectors = ports, queues, vectors
        super().__init__({
            "phy_rx": In(XGMIIRxBus()).array(ports),
            "phy_tx": Out(XGMIITxBus()).array(ports),
            "req_in": In(TlpStream(self.width)),
            "cpl_out": Out(TlpStream(self.width)),
            "req_out": Out(TlpStream(self.width)),
            "cpl_in": In(TlpStream(self.width)),
            "config": In(EndpointConfig()),
        })

    def elaborate(self, platform):
        m = Module()
        core, engine = self.core, self.engine
        m.submodules.core = core
        m.submodules.engine = engine
        m.submodules.completer = completer = Bar0Completer(
            self.width, core_addr_width=core.addr_width, dma_addr_width=DMA_ADDR_WIDTH,
            core_read_latency=core.csr.signature.read_latency)
        m.submodules.msix = msix = MsixTable(self.width, self.vectors)
        m.submodules.requests = requests = RequestArbiter(self.width, 2)

        for p in range(self.ports):
            wiring.connect(m, wiring.flipped(self.phy_rx[p]), core.phy_rx[p])
            wiring.connect(m, core.phy_tx[p], wiring.flipped(self.phy_tx[p]))

        # Host requests to BAR0, and their completions.
        wiring.connect(m, wiring.flipped(self.req_in), completer.req_in)
        wiring.connect(m, completer.cpl_out, wiring.flipped(self.cpl_out))
        wiring.connect(m, completer.core, core.csr)
        wiring.connect(m, completer.dma, engine.csr)
        wiring.connect(m, completer.msix, msix.bus)

        # Frames and events between the core and the rings.
        for q in range(self.queues + 1):
            wiring.connect(m, core.rx[q], engine.rx[q])
        wiring.connect(m, engine.tx, core.tx)
        wiring.connect(m, core.events, engine.events)
        m.d.comb += msix.irq.eq(engine.irq)

        # The device's own requests: DMA first in the arbiter's list, then MSI-X.
        wiring.connect(m, engine.req, requests.src[0])
        wiring.connect(m, msix.req, requests.src[1])
        wiring.connect(m, requests.out, wiring.flipped(self.req_out))
        wiring.connect(m, wiring.flipped(self.cpl_in), engine.cpl)

        for block in (completer, msix, engine):
            wiring.connect(m, wiring.flipped(self.config), block.config)
        return m
