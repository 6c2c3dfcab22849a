"""Test top of the BAR0 completer: the completer, the MSI-X table and two register banks.

The core window holds the device core's real register map (`partner.regmap.REGISTERS`, with the
identification registers driven), so the real `DeviceControl` can bind to it over PCIe. The DMA
window holds `TEST_REGISTERS`: scratch words, an ``irq`` register whose write fires MSI-X
vectors, the completer's error flags (clear on read) and the PBA as a register.
"""

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from partner.hdl.csr import RegisterBank
from partner.hdl.pcie.completer import Bar0Completer
from partner.hdl.pcie.msix import MsixTable
from partner.hdl.pcie.tlp import EndpointConfig, TlpStream
from partner.regmap import CONFIG, FORMAT_VERSION, IDENT, REGISTERS
from partner.wire import Access, Field, Register, RegisterMap, Struct

FLAGS = Struct("pcie_test_flags", [
    Field("unsupported", 1, "a request was refused with UR, or a posted one dropped"),
    Field("too_long", 1, "a read longer than the completer supports (CA)"),
    Field("partial_write", 1, "a dword write with partial byte enables was ignored"),
])

TEST_REGISTERS = RegisterMap("pcie_test", [
    Register("scratch", Access.RW, "scratch words", count=4),
    Register("irq", Access.WO, "bit v fires MSI-X vector v"),
    Register("flags", Access.RC, "completer error flags", FLAGS),
    Register("pending", Access.RO, "the MSI-X pending bits"),
])

CORE_CONFIG = {"ports": 2, "queues": 4, "rules": 16, "tx_flows": 8, "width_bytes": 8}


class Bar0Top(wiring.Component):
    def __init__(self, width: int, vectors: int):
        self.width, self.vectors = width, vectors
        self.core_bank = RegisterBank(REGISTERS)
        self.test_bank = RegisterBank(TEST_REGISTERS)
        self.completer = Bar0Completer(width, core_addr_width=self.core_bank.addr_width,
                                       dma_addr_width=self.test_bank.addr_width)
        self.msix = MsixTable(width, vectors)
        super().__init__({
            "req_in": In(TlpStream(width)),
            "cpl_out": Out(TlpStream(width)),
            "req_out": Out(TlpStream(width)),
            "config": In(EndpointConfig()),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.completer = c = self.completer
        m.submodules.msix = msix = self.msix
        m.submodules.core_bank = core = self.core_bank
        m.submodules.test_bank = test = self.test_bank
        wiring.connect(m, req_in=wiring.flipped(self.req_in), completer=c.req_in)
        wiring.connect(m, completer=c.cpl_out, cpl_out=wiring.flipped(self.cpl_out))
        wiring.connect(m, msix=msix.req, req_out=wiring.flipped(self.req_out))
        wiring.connect(m, completer=c.core, bank=core.bus)
        wiring.connect(m, completer=c.dma, bank=test.bus)
        wiring.connect(m, completer=c.msix, table=msix.bus)
        wiring.connect(m, link=wiring.flipped(self.config), completer=c.config,
                       msix=msix.config)
        m.d.comb += [
            core.ident.eq(IDENT),
            core.version.eq(FORMAT_VERSION),
            core.config.eq(CONFIG.pack(CORE_CONFIG)),
            msix.irq.eq(test.irq[:self.vectors] & test.irq_stb.replicate(self.vectors)),
            test.flags_set.eq(Cat(c.unsupported, c.too_long, c.partial_write)),
            test.pending.eq(msix.pending),
        ]
        return m
