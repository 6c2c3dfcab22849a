"""cocotb harness of the whole card (`partner.hdl.pcie.card.PcieCard`): the host behind
cocotbext-pcie's root complex, each Ethernet port between a cocotbext-eth XGMII source and sink.

The host side is the real driver: `open_driver` (call it through `cocotb.task.bridge`) brings
the function up through configuration space (`partner.sim.pcie_bus.SimPcieBus`) and returns a
`partner.pcie.PcieDevice`. Used by tests/cocotb/card_tb.py and `partner sim card`.
"""

from __future__ import annotations

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotbext.eth import XgmiiFrame, XgmiiSink, XgmiiSource
from cocotbext.pcie.core import RootComplex

from partner.pcie import PcieDevice

from .pcie import PcieAdapter
from .pcie_bus import SimPcieBus

__all__ = ["CLOCK_NS", "CardHarness"]

CLOCK_NS = 6.4  # 156.25 MHz: the XGMII core's clock


class CardHarness:
    """Root complex, PCIe adapter and Ethernet peers around one `PcieCard` DUT."""

    def __init__(self, dut, *, ports: int = 2, vectors: int = 4, seed: int = 1,
                 backpressure: float = 1.0, max_payload: int = 512,
                 max_read_request: int | None = None, split_on_all_rcb: bool = False):
        self.dut, self.ports, self.vectors = dut, ports, vectors
        self.max_read_request = max_read_request
        self.rc = RootComplex()
        # The root port's Max_Payload_Size; enumeration gives the function the smaller of it and
        # what the function offers (512 bytes).
        self.rc.max_payload_size = (max_payload // 128).bit_length() - 1
        self.rc.split_on_all_rcb = split_on_all_rcb
        self.adapter = PcieAdapter(dut, width=64, clock=dut.clk, msix_vectors=vectors, seed=seed,
                                   valid_probability=backpressure,
                                   ready_probability=backpressure)
        self.adapter.attach(self.rc)
        self.sources, self.sinks = [], []
        for p in range(ports):
            source = XgmiiSource(getattr(dut, f"phy_rx__{p}__rxd"),
                                 getattr(dut, f"phy_rx__{p}__rxc"), dut.clk, dut.rst)
            source.enable_dic = True  # average gap 12 bytes: the wire's full rate
            self.sources.append(source)
            self.sinks.append(XgmiiSink(getattr(dut, f"phy_tx__{p}__txd"),
                                        getattr(dut, f"phy_tx__{p}__txc"), dut.clk, dut.rst))

    async def start(self) -> None:
        """Start the clock and reset the card (the host has not enumerated it yet)."""
        dut = self.dut
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        dut.rst.value = 1
        await ClockCycles(dut.clk, 8)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 8)

    def open_driver(self, **options) -> PcieDevice:
        """Bring the function up and bind the host driver (synchronous: run it in a bridge)."""
        bus = SimPcieBus(self.rc, vectors=self.vectors, max_read_request=self.max_read_request)
        options = {"rx_log2": 5, "tx_log2": 5, "event_log2": 5, "buffers": 256, **options}
        return PcieDevice(bus, **options)

    async def send(self, port: int, frames) -> None:
        """Frames (without FCS) onto the wire into `port`, back to back; returns when sent."""
        for frame in frames:
            await self.sources[port].send(XgmiiFrame.from_payload(frame))
        await self.sources[port].wait()

    async def transmitted(self, port: int, count: int, *, cycles: int = 20000) -> list[bytes]:
        """The next `count` frames the card sends out of `port` (FCS checked and stripped)."""
        frames, sink = [], self.sinks[port]
        for _ in range(cycles // 100):
            while not sink.empty() and len(frames) < count:
                frame = sink.recv_nowait()
                if not frame.check_fcs():
                    raise AssertionError(f"port {port} sent a frame with a bad FCS")
                frames.append(bytes(frame.get_payload()))
            if len(frames) == count:
                break
            await ClockCycles(self.dut.clk, 100)
        return frames
