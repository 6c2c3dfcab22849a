"""Test top of the BAR0 completer: the completer, the MSI-X table and two register banks.

The core window holds the device core's real register map (`partner.regmap.REGISTERS`, with the
identification registers driven), so the real `DeviceControl` can bind to it over PCIe. The DMA
window holds `TEST_REGISTERS`: scratch words, an ``irq`` register whose write fires MSI-X
vectors, the completer's error flags (clear on read) and the PBA as a register, and a *probe*:
a memory read requester that the host points at its DMA memory, which sums what comes back on
``cpl_in`` — enough to drive the adapter's completion path (splits, error injection, tags).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from partner.hdl.core_csr import CSR_READ_LATENCY
from partner.hdl.csr import RegisterBank
from partner.hdl.pcie.completer import Bar0Completer
from partner.hdl.pcie.msix import MsixTable
from partner.hdl.pcie.tlp import EndpointConfig, TlpStream
from partner.hdl.wire import layout
from partner.regmap import CONFIG, FORMAT_VERSION, IDENT, REGISTERS
from partner.tlp import COMPLETION_DW1, HEADER_DW0, REQUEST_DW1, TlpKind
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
    Register("probe_address", Access.RW, "probe read address, low and high word", count=2),
    Register("probe_length", Access.RW, "probe read length in dwords"),
    Register("probe_go", Access.WO, "send the probe read with this tag"),
    Register("probe_count", Access.RO, "completions (31:16) and payload dwords (15:0) received"),
    Register("probe_sum", Access.RO, "sum of the payload dwords received"),
    Register("probe_status", Access.RO, "status of the last completion"),
])

CORE_CONFIG = {"ports": 2, "queues": 4, "rules": 16, "tx_flows": 8, "width_bytes": 8}


class Bar0Top(wiring.Component):
    def __init__(self, width: int, vectors: int):
        self.width, self.vectors = width, vectors
        self.core_bank = RegisterBank(REGISTERS, read_latency=CSR_READ_LATENCY)  # as the core's
        self.test_bank = RegisterBank(TEST_REGISTERS)
        self.completer = Bar0Completer(width, core_addr_width=self.core_bank.addr_width,
                                       dma_addr_width=self.test_bank.addr_width,
                                       core_read_latency=CSR_READ_LATENCY)
        self.msix = MsixTable(width, vectors)
        super().__init__({
            "req_in": In(TlpStream(width)),
            "cpl_out": Out(TlpStream(width)),
            "req_out": Out(TlpStream(width)),
            "cpl_in": In(TlpStream(width)),
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
        self._probe(m, test, msix)
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

    def _probe(self, m, test, msix):
        """The probe requester, and req_out shared with MSI-X (both send one-beat TLPs)."""
        probe = Signal.like(self.req_out.payload)
        probe_valid = Signal()
        tag = Signal(8)
        dw0 = Signal(layout(HEADER_DW0))
        dw1 = Signal(layout(REQUEST_DW1))
        low, high = test.probe_address[0], test.probe_address[1]
        wide = high != 0
        m.d.comb += [
            dw0.length.eq(test.probe_length),
            dw0.kind.eq(Mux(wide, TlpKind.MRD64, TlpKind.MRD32)),
            dw1.first_be.eq(0xF),
            dw1.last_be.eq(Mux(test.probe_length == 1, 0, 0xF)),
            dw1.tag.eq(tag),
            dw1.requester_id.eq(self.config.id),
            probe.hdr.eq(Cat(dw0, dw1, Mux(wide, high, low), Mux(wide, low, 0))),
            probe.sop.eq(1),
            probe.eop.eq(1),
        ]

        # Arbiter: the grant holds while a beat waits, so a payload never changes under valid.
        grant_msix, last_grant, waiting = Signal(), Signal(), Signal()
        m.d.comb += grant_msix.eq(Mux(waiting, last_grant, msix.req.valid))
        m.d.sync += [last_grant.eq(grant_msix),
                     waiting.eq(self.req_out.valid & ~self.req_out.ready)]
        m.d.comb += [
            self.req_out.valid.eq(Mux(grant_msix, msix.req.valid, probe_valid)),
            self.req_out.payload.eq(Mux(grant_msix, msix.req.payload, probe)),
            msix.req.ready.eq(grant_msix & self.req_out.ready),
        ]
        with m.If(probe_valid & ~grant_msix & self.req_out.ready):
            m.d.sync += probe_valid.eq(0)
        with m.If(test.probe_go_stb):
            m.d.sync += [probe_valid.eq(1), tag.eq(test.probe_go)]

        # Completions: always ready; count them, their dwords, their sum, the last status.
        cpl = self.cpl_in
        beat = cpl.payload
        lanes = self.width // 32
        completions, dwords, total, status = Signal(16), Signal(16), Signal(32), Signal(3)
        m.d.comb += [
            cpl.ready.eq(1),
            test.probe_count.eq(Cat(dwords, completions)),
            test.probe_sum.eq(total),
            test.probe_status.eq(status),
        ]
        with m.If(test.probe_go_stb):
            m.d.sync += [completions.eq(0), dwords.eq(0), total.eq(0), status.eq(0)]
        with m.Elif(cpl.valid):
            m.d.sync += [
                dwords.eq(dwords + sum(beat.strb[i] for i in range(lanes))),
                total.eq(total + sum(Mux(beat.strb[i], beat.data.word_select(i, 32), 0)
                                     for i in range(lanes))),
            ]
            with m.If(beat.sop):
                c_dw1 = data.View(layout(COMPLETION_DW1), beat.hdr[32:64])
                m.d.sync += [completions.eq(completions + 1), status.eq(c_dw1.status)]
