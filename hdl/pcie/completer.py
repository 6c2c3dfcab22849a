# BAR0 completer of the endpoint: memory reads and writes from the host, turned into register
# accesses. PCI Express Base Spec §2.2 (TLP formats), §2.2.5 (byte enables), §2.2.9 and §2.3.1.1
# (completion fields), §2.3.1 (request handling rules: Unsupported Request, Completer Abort).
"""The BAR0 completer: ``req_in`` → register buses, read data → ``cpl_out``.

BAR0 (`partner.pcie.bar.BAR0`) is four 4 KiB windows. The completer decodes each dword of a
request by window and turns it into a word access on a `CSRBus` initiator port:

- ``core`` (0x0000) and ``dma`` (0x1000): the device core's and the DMA engine's registers;
- ``msix`` (0x2000 table, 0x3000 PBA): one port for both MSI-X windows, word address
  ``window_bit << 10 | word`` (bit 10 set for the PBA), see `partner.hdl.pcie.msix`.

The ``core`` port's read latency is ``core_read_latency`` (the device core's register bank takes
three cycles); the others answer in one. A port narrower than a window (``core_addr_width`` /
``dma_addr_width`` < 10) sees only the first
``4 << addr_width`` bytes of it; a dword beyond is unmapped: reads return 0, writes are ignored,
as `partner.pcie.bar` says for every unmapped offset. So a small register bank never aliases.

Decisions, with the reasons:

- **Writes**: one word write per dword whose byte enables are all set. A dword with *partial*
  byte enables is not written and raises ``partial_write``: a read-modify-write would re-read
  clear-on-read and strobe registers, and a register bus without byte strobes cannot do better.
  The driver writes whole dwords only (`PcieBus.write32`). A dword with no byte enables (e.g. a
  zero-length write, §2.2.5) is skipped silently.
- **Reads**: 1 to `MAX_READ_DWORDS` dwords, returned in one CplD. 32 dwords = 128 bytes, the
  smallest Max_Payload_Size, so a completion never needs splitting at the Read Completion
  Boundary. A dword with no byte enables is not read (no side effect, returns 0); any other byte
  enables read the whole dword (§2.2.5 lets a completer return all bytes). A longer read gets a
  Completer Abort completion (§2.3.1: the request violates the completer's programming model) and
  raises ``too_long``.
- **Unsupported requests** — anything but a memory read or write to BAR0, or a poisoned request
  (§2.7.2.2) — raise ``unsupported``. A non-posted one (memory read of another BAR, locked read,
  I/O, configuration, atomics) is answered with an Unsupported Request completion; a posted one
  (memory write elsewhere, a message) is dropped, as §2.3.1 requires. A completion arriving here
  is dropped too.
- Error completions of memory reads carry the byte count and lower address of the whole request;
  those of other requests byte count 4 and lower address 0 (§2.2.9).

One request is handled at a time, one register access per cycle for writes and two per dword for
reads, so a read of *n* dwords takes about ``2n + 2`` cycles plus ``cpl_out`` backpressure. The
completer holds ``cpl_out`` valid until accepted and never drops a beat, whatever the
backpressure.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from partner.hdl.csr import CSRBus
from partner.hdl.wire import layout
from partner.pcie.bar import BAR0
from partner.tlp import (
    COMPLETION_DW1,
    COMPLETION_DW2,
    HEADER_DW0,
    REQUEST_DW1,
    CompletionStatus,
    TlpKind,
)

from .tlp import EndpointConfig, TlpStream

__all__ = ["MAX_READ_DWORDS", "MSIX_ADDR_WIDTH", "WINDOW_ADDR_WIDTH", "Bar0Completer",
           "byte_count", "first_byte_offset"]

MAX_READ_DWORDS = 32
WINDOW_ADDR_WIDTH = 10  # words in a 4 KiB window
MSIX_ADDR_WIDTH = WINDOW_ADDR_WIDTH + 1  # table and PBA windows behind one port

_WINDOW = {w.name: w.offset // BAR0.core.size for w in BAR0.windows}


def first_byte_offset(first_be):
    """Byte offset of the first enabled byte in a dword (0 when none is), §2.3.1.1."""
    return Mux(first_be[0] | (first_be == 0), 0,
               Mux(first_be[1], 1, Mux(first_be[2], 2, 3)))


def _last_byte_index(be):
    """Index of the highest enabled byte of a dword (0 when none is)."""
    return Mux(be[3], 3, Mux(be[2], 2, Mux(be[1], 1, 0)))


def byte_count(length, first_be, last_be):
    """Bytes a memory read of ``length`` dwords asks for, from its byte enables (§2.3.1.1).

    ``length`` is the 10-bit field (0 means 1024). A zero-length read (one dword, no byte
    enables) counts 1.
    """
    dwords = Mux(length == 0, 1024, length)
    first = first_byte_offset(first_be)
    single = Mux(first_be == 0, 1, _last_byte_index(first_be) - first + 1)
    multi = dwords * 4 - first - (3 - _last_byte_index(last_be))
    return Mux(dwords == 1, single, multi)[:13]


class Bar0Completer(wiring.Component):
    """Memory reads and writes to BAR0, from ``req_in``, completed on ``cpl_out``.

    ``unsupported``, ``too_long`` and ``partial_write`` are one-cycle strobes per refused
    request or ignored dword, for sticky status bits or counters.
    """

    def __init__(self, width: int, *, core_addr_width: int = WINDOW_ADDR_WIDTH,
                 dma_addr_width: int = WINDOW_ADDR_WIDTH, core_read_latency: int = 1):
        for name, value in (("core_addr_width", core_addr_width),
                            ("dma_addr_width", dma_addr_width)):
            if not 1 <= value <= WINDOW_ADDR_WIDTH:
                raise ValueError(f"{name} must be 1..{WINDOW_ADDR_WIDTH} (a 4 KiB window), "
                                 f"not {value!r}")
        self.width = width
        super().__init__({
            "req_in": In(TlpStream(width)),
            "cpl_out": Out(TlpStream(width)),
            "config": In(EndpointConfig()),
            "core": Out(CSRBus(core_addr_width, core_read_latency)),
            "dma": Out(CSRBus(dma_addr_width)),
            "msix": Out(CSRBus(MSIX_ADDR_WIDTH)),
            "unsupported": Out(1),
            "too_long": Out(1),
            "partial_write": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.width // 32
        req, cpl = self.req_in, self.cpl_out
        beat = req.payload

        # Header of the request being handled (latched on its sop beat).
        dw0 = Signal(layout(HEADER_DW0))
        dw1 = Signal(layout(REQUEST_DW1))
        offset = Signal(12)  # word offset of the first dword in BAR0
        status = Signal(3)
        is_read = Signal()
        # The request beat being worked through, and where we are in it.
        data_buf = Signal(self.width)
        strb_buf = Signal(lanes)
        eop_buf = Signal()
        dw = Signal(10)  # dword index within the TLP
        lane = Signal(range(lanes))
        # Read data collected for the next completion beat.
        out_data = Signal(self.width)
        out_sop = Signal()
        rd_window = Signal(2)
        core_waits = self.core.signature.read_latency - 1  # cycles in READ_WAIT
        waited = Signal(range(max(core_waits, 1)))
        rd_enable = Signal()

        len_m1 = Signal(10)
        m.d.comb += len_m1.eq(dw0.length - 1)  # 10 bits: 0 (= 1024 dwords) gives 1023

        # --- decode of an incoming header beat -------------------------------------------------
        in_dw0 = data.View(layout(HEADER_DW0), beat.hdr[0:32])
        in_dw1 = data.View(layout(REQUEST_DW1), beat.hdr[32:64])
        in_kind = in_dw0.kind
        in_four_dw = in_kind[5]
        in_address = Mux(in_four_dw, beat.hdr[96:128], beat.hdr[64:96])
        in_type = in_kind[0:5]
        in_has_data = in_kind[6]
        in_mrd = (in_kind == TlpKind.MRD32) | (in_kind == TlpKind.MRD64)
        in_mwr = (in_kind == TlpKind.MWR32) | (in_kind == TlpKind.MWR64)
        in_ours = (beat.bar == 0) & ~in_dw0.ep & ~in_kind[7]
        in_message = in_type[3:5] == 0b10
        in_completion = in_type[1:5] == 0b0101  # 0x0A, 0x0B
        in_posted = (in_mwr | in_message | in_completion | in_kind[7]
                     | ((in_type == 0) & in_has_data))
        in_long = (in_dw0.length > MAX_READ_DWORDS) | (in_dw0.length == 0)

        # --- the dword at `dw`: its address, window and byte enables -------------------------
        word = Signal(12)
        m.d.comb += word.eq(offset + dw)
        window = word[10:12]
        be = Signal(4)
        m.d.comb += be.eq(Mux(dw == 0, dw1.first_be,
                              Mux(dw == len_m1, dw1.last_be, 0xF)))
        ports = {"core": self.core, "dma": self.dma, "msix": self.msix}
        mapped = Signal()
        with m.Switch(window):
            for name in ("core", "dma"):
                with m.Case(_WINDOW[name]):
                    m.d.comb += mapped.eq(word[ports[name].signature.addr_width:10] == 0
                                          if ports[name].signature.addr_width < 10 else 1)
            with m.Default():
                m.d.comb += mapped.eq(1)
        lane_data = data_buf.word_select(lane, 32)
        for name, port in ports.items():
            m.d.comb += port.w_data.eq(lane_data)
            if name == "msix":
                m.d.comb += port.addr.eq(Cat(word[:10], window == _WINDOW["msix_pba"]))
            else:
                m.d.comb += port.addr.eq(word[:port.signature.addr_width])

        def strobe(kind):
            """Drive the ``r_stb``/``w_stb`` of the port the current dword falls in."""
            for name, port in ports.items():
                if name == "msix":
                    hits = (window == _WINDOW["msix_table"]) | (window == _WINDOW["msix_pba"])
                else:
                    hits = window == _WINDOW[name]
                m.d.comb += getattr(port, kind).eq(hits & mapped)

        last_lane = (lane == lanes - 1) | ~strb_buf.bit_select(lane + 1, 1) if lanes > 1 \
            else Const(1)

        # --- completion header -----------------------------------------------------------------
        c_dw0 = Signal(layout(HEADER_DW0))
        c_dw1 = Signal(layout(COMPLETION_DW1))
        c_dw2 = Signal(layout(COMPLETION_DW2))
        ok = status == CompletionStatus.SC
        m.d.comb += [
            c_dw0.length.eq(Mux(ok, dw0.length, 0)),
            c_dw0.attr_lo.eq(dw0.attr_lo),  # completions keep the request's attributes and TC
            c_dw0.attr_hi.eq(dw0.attr_hi),
            c_dw0.tc.eq(dw0.tc),
            c_dw0.t8.eq(dw0.t8),
            c_dw0.t9.eq(dw0.t9),
            c_dw0.kind.eq(Mux(ok, TlpKind.CPLD, TlpKind.CPL)),
            c_dw1.byte_count.eq(Mux(is_read, byte_count(dw0.length, dw1.first_be, dw1.last_be),
                                    4)),
            c_dw1.status.eq(status),
            c_dw1.completer_id.eq(self.config.id),
            c_dw2.lower_address.eq(Mux(is_read, Cat(first_byte_offset(dw1.first_be)[:2],
                                                    offset[:5]), 0)),
            c_dw2.tag.eq(dw1.tag),
            c_dw2.requester_id.eq(dw1.requester_id),
            cpl.payload.hdr.eq(Cat(c_dw0, c_dw1, c_dw2, Const(0, 32))),
        ]

        def take_beat():
            m.d.sync += [data_buf.eq(beat.data), strb_buf.eq(beat.strb), eop_buf.eq(beat.eop),
                         lane.eq(0)]

        def refuse(code, flag):
            """Answer a non-posted request with an error completion, after its last beat."""
            m.d.sync += status.eq(code)
            m.d.comb += getattr(self, flag).eq(1)
            with m.If(beat.eop):
                m.next = "ERROR"
            with m.Else():
                m.next = "DRAIN_THEN_ERROR"

        with m.FSM():
            with m.State("HEADER"):
                m.d.comb += req.ready.eq(1)
                with m.If(req.valid & beat.sop):
                    take_beat()
                    m.d.sync += [
                        dw0.eq(in_dw0), dw1.eq(in_dw1), offset.eq(in_address[2:14]),
                        dw.eq(0), status.eq(CompletionStatus.SC), is_read.eq(in_mrd),
                        out_sop.eq(1),
                    ]
                    with m.If(in_ours & in_mwr):
                        m.next = "WRITE"
                    with m.Elif(in_ours & in_mrd & ~in_long):
                        m.next = "READ"
                    with m.Elif(in_ours & in_mrd):
                        refuse(CompletionStatus.CA, "too_long")
                    with m.Elif(in_posted):
                        m.d.comb += self.unsupported.eq(1)
                        with m.If(~beat.eop):
                            m.next = "DRAIN"
                    with m.Else():
                        # is_read stays set for a poisoned or other-BAR memory read: its UR
                        # completion carries the read's byte count and lower address.
                        refuse(CompletionStatus.UR, "unsupported")
                # A beat without sop here is the tail of a TLP already refused: dropped.

            with m.State("WRITE"):
                with m.If(be == 0xF):
                    strobe("w_stb")
                with m.Elif(be != 0):
                    m.d.comb += self.partial_write.eq(1)
                m.d.sync += [dw.eq(dw + 1), lane.eq(lane + 1)]
                with m.If(dw == len_m1):
                    m.next = "HEADER"
                    with m.If(~eop_buf):
                        m.next = "DRAIN"  # more dwords than the length field: malformed
                with m.Elif(last_lane):
                    with m.If(eop_buf):
                        m.next = "HEADER"  # fewer dwords than the length field: malformed
                    with m.Else():
                        m.next = "WRITE_BEAT"

            with m.State("WRITE_BEAT"):
                m.d.comb += req.ready.eq(1)
                with m.If(req.valid):
                    take_beat()
                    m.next = "WRITE"

            with m.State("READ"):
                m.d.sync += [rd_window.eq(window), rd_enable.eq((be != 0) & mapped)]
                with m.If(be != 0):
                    strobe("r_stb")
                if core_waits:
                    m.d.sync += waited.eq(0)
                    with m.If(window == _WINDOW["core"]):
                        m.next = "READ_WAIT"
                    with m.Else():
                        m.next = "READ_DATA"
                else:
                    m.next = "READ_DATA"

            with m.State("READ_WAIT"):  # the core's registers answer `core_waits` cycles later
                m.d.sync += waited.eq(waited + 1)
                with m.If(waited == core_waits - 1):
                    m.next = "READ_DATA"

            with m.State("READ_DATA"):
                read_data = Signal(32)
                with m.Switch(rd_window):
                    for name in ("core", "dma"):
                        with m.Case(_WINDOW[name]):
                            m.d.comb += read_data.eq(ports[name].r_data)
                    with m.Default():
                        m.d.comb += read_data.eq(self.msix.r_data)
                m.d.sync += [
                    out_data.word_select(lane, 32).eq(Mux(rd_enable, read_data, 0)),
                    dw.eq(dw + 1), lane.eq(lane + 1),
                ]
                with m.If((dw == len_m1) | (lane == lanes - 1)):
                    m.next = "COMPLETE"
                with m.Else():
                    m.next = "READ"

            with m.State("COMPLETE"):
                # `lane` wrapped to 0 after a full beat; `dw` counts the dwords read so far.
                filled = Mux(lane == 0, lanes, lane)
                m.d.comb += [
                    cpl.valid.eq(1),
                    cpl.payload.data.eq(out_data),
                    cpl.payload.strb.eq((Const(1, lanes + 1) << filled) - 1),
                    cpl.payload.sop.eq(out_sop),
                    cpl.payload.eop.eq(dw == dw0.length),
                ]
                with m.If(cpl.ready):
                    m.d.sync += [out_sop.eq(0), out_data.eq(0), lane.eq(0)]
                    with m.If(dw == dw0.length):
                        m.next = "HEADER"
                    with m.Else():
                        m.next = "READ"

            with m.State("DRAIN"):
                m.d.comb += req.ready.eq(1)
                with m.If(req.valid & beat.eop):
                    m.next = "HEADER"

            with m.State("DRAIN_THEN_ERROR"):
                m.d.comb += req.ready.eq(1)
                with m.If(req.valid & beat.eop):
                    m.next = "ERROR"

            with m.State("ERROR"):
                m.d.comb += [cpl.valid.eq(1), cpl.payload.sop.eq(1), cpl.payload.eop.eq(1)]
                with m.If(cpl.ready):
                    m.next = "HEADER"
        return m
