# MSI-X: the vector table and pending bit array in BAR0, and the memory writes that deliver the
# interrupts. PCI Express Base Spec §6.1.4 (MSI and MSI-X operation), §7.7.2 (MSI-X capability and
# table structure).
"""MSI-X table, pending bits and message writes.

The table (BAR0 0x2000, `partner.pcie.bar`) holds 16 bytes per vector: message address low
(bits 1:0 read 0, messages are dword writes), message address high, message data, and vector
control (bit 0: mask; it resets to 1, masked, §7.7.2). The PBA (BAR0 0x3000) has one read-only
bit per vector. Both are reached from the BAR0 completer over one `CSRBus` port: word address
bit 10 selects the PBA. Entries past ``vectors`` read 0 and ignore writes.

``irq[v]`` is a one-cycle event for vector *v*. While MSI-X is enabled, an event sets the
vector's pending bit; a pending vector whose message may be sent — MSI-X Enable set, Function
Mask clear, its own mask clear, Bus Master Enable set — is sent as a one-dword memory write of
the message data to the message address (32-bit format when the high address is 0, §2.2.4.1)
on ``req``, and its pending bit clears. A masked vector keeps its pending bit and is sent once
unmasked (§6.1.4.5). Events while MSI-X is disabled are dropped: the PBA has no meaning then and
a driver enables MSI-X before it starts the device.

Lowest vector first; one message in flight. The message takes the table entry as read when the
vector was picked: a driver that rewrites an entry masks it first (§6.1.4.2), which this honours.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from partner.hdl.csr import CSRBus
from partner.hdl.wire import layout
from partner.pcie.bar import MSIX_MAX_VECTORS
from partner.tlp import HEADER_DW0, REQUEST_DW1, TlpKind

from .completer import MSIX_ADDR_WIDTH
from .tlp import EndpointConfig, TlpStream

__all__ = ["MsixTable"]


class MsixTable(wiring.Component):
    """``vectors`` MSI-X vectors: table and PBA on ``bus``, events on ``irq``, writes on ``req``.

    ``pending`` is the PBA, for status registers and tests.
    """

    def __init__(self, width: int, vectors: int):
        if not 1 <= vectors <= MSIX_MAX_VECTORS:
            raise ValueError(f"vectors must be 1..{MSIX_MAX_VECTORS} (the table window), "
                             f"not {vectors!r}")
        self.width = width
        self.vectors = vectors
        super().__init__({
            "bus": In(CSRBus(MSIX_ADDR_WIDTH)),
            "irq": In(vectors),
            "config": In(EndpointConfig()),
            "req": Out(TlpStream(width)),
            "pending": Out(vectors),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.vectors
        bus, cfg = self.bus, self.config
        index_width = max(1, (n - 1).bit_length())

        # Address low, address high and data of each vector, 32-bit write lanes.
        m.submodules.entries = entries = Memory(shape=96, depth=n, init=[])
        wr = entries.write_port(granularity=32)
        rd_bus = entries.read_port()
        rd_send = entries.read_port()
        mask = Signal(n, init=(1 << n) - 1)
        pending = Signal(n)
        m.d.comb += self.pending.eq(pending)

        # --- register access -------------------------------------------------------------------
        is_pba = bus.addr[10]
        vector = bus.addr[2:10]
        field = bus.addr[0:2]
        in_table = ~is_pba & (vector < n)
        m.d.comb += [
            rd_bus.addr.eq(vector),
            wr.addr.eq(vector),
            wr.data.eq(Cat(bus.w_data & ~Const(3, 32), bus.w_data, bus.w_data)),
        ]
        with m.If(bus.w_stb & in_table), m.Switch(field):
            for lane in range(3):
                with m.Case(lane):
                    m.d.comb += wr.en.eq(1 << lane)
            with m.Case(3):
                m.d.sync += mask.bit_select(vector[:index_width], 1).eq(bus.w_data[0])

        # Reads: the memory answers in the next cycle, like `CSRBus` r_data; the other values
        # are registered to line up with it.
        r_field = Signal(2)
        r_from_memory = Signal()
        r_value = Signal(32)
        m.d.sync += [r_field.eq(field), r_from_memory.eq(0), r_value.eq(0)]
        with m.If(bus.r_stb):
            with m.If(is_pba):
                words = (n + 31) // 32
                padded = Cat(pending, Const(0, words * 32 - n))
                with m.If(bus.addr[:10] < words):
                    m.d.sync += r_value.eq(padded.word_select(bus.addr[:10], 32))
            with m.Elif(in_table & (field == 3)):
                m.d.sync += r_value.eq(mask.bit_select(vector[:index_width], 1))
            with m.Elif(in_table):
                m.d.sync += r_from_memory.eq(1)
        m.d.comb += bus.r_data.eq(Mux(r_from_memory, rd_bus.data.word_select(r_field, 32),
                                      r_value))

        # --- events and messages ---------------------------------------------------------------
        allowed = cfg.msix_enable & ~cfg.msix_mask & cfg.bus_master
        ready = pending & ~mask
        pick = Signal(index_width)
        for v in reversed(range(n)):  # lowest vector wins
            with m.If(ready[v]):
                m.d.comb += pick.eq(v)
        picked = Signal(n)
        events = Mux(cfg.msix_enable, self.irq, 0)
        m.d.sync += pending.eq((pending & ~picked) | events)

        address_lo = rd_send.data[0:32]
        address_hi = rd_send.data[32:64]
        message = rd_send.data[64:96]
        dw0 = Signal(layout(HEADER_DW0))
        dw1 = Signal(layout(REQUEST_DW1))
        long = address_hi != 0
        m.d.comb += [
            rd_send.addr.eq(pick),
            dw0.length.eq(1),
            dw0.kind.eq(Mux(long, TlpKind.MWR64, TlpKind.MWR32)),
            dw1.first_be.eq(0xF),
            dw1.requester_id.eq(cfg.id),
            self.req.payload.hdr.eq(Cat(dw0, dw1, Mux(long, address_hi, address_lo),
                                        Mux(long, address_lo, 0))),
            self.req.payload.data.eq(message),
            self.req.payload.strb.eq(1),
            self.req.payload.sop.eq(1),
            self.req.payload.eop.eq(1),
        ]
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += rd_send.en.eq(1)
                with m.If(allowed & (ready != 0)):
                    m.d.comb += picked.eq(1 << pick)
                    m.next = "SEND"
            with m.State("SEND"):
                # The entry read when the vector was picked stays put (a read port's enable
                # defaults to 1, so it is cleared explicitly).
                m.d.comb += [rd_send.en.eq(0), self.req.valid.eq(1)]
                with m.If(self.req.ready):
                    m.next = "IDLE"
        return m
