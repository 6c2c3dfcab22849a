"""cocotb adapter joining the gateware's TLP streams to cocotbext-pcie's root complex.

`PcieAdapter` is a cocotbext-pcie `Device` with one `PartnerFunction`: an endpoint with BAR0
(16 KiB, 64-bit, the windows of `partner.pcie.bar`) and an MSI-X capability whose table and PBA
live in BAR0, in the gateware. Configuration space is served by cocotbext-pcie, as for its
hard-IP models; the adapter drives the DUT's `EndpointConfig` inputs from it (ID after
enumeration, Max_Payload_Size, Max_Read_Request_Size, Bus Master Enable, MSI-X Enable and
Function Mask).

Data path, named from the device (`partner.hdl.pcie.tlp`):

- memory and I/O requests from the root complex that hit a BAR → ``req_in`` beats (with the BAR);
- completions for the device's requests → ``cpl_in``;
- ``cpl_out`` and ``req_out`` beats → TLPs sent upstream, in the order their last beats left the
  DUT.

The root complex does not check what a device sends, so `TlpChecker` does, and a violation fails
the test with `PcieRuleError` naming the rule and the spec section: beat framing (sop/eop,
packed strobes, length field against the payload), header fields (requester and completer IDs,
reserved DW3 of 3-dword headers, the 32-bit format below 4 GiB), byte enables (§2.2.5),
Max_Payload_Size, Max_Read_Request_Size, 4 KiB crossings (§2.2.7), tag uniqueness and the tag
limit (32, or 256 with Extended Tag Field Enable; §2.2.6.2), Bus Master Enable before any request
(§7.5.1.1), MSI-X writes only while enabled and unmasked, and every completion's status, byte
count, lower address, length and Read Completion Boundary (§2.2.9, §2.3.1.1).

Random backpressure: ``valid_probability`` (gaps between beats the adapter drives) and
``ready_probability`` (ready of the streams it receives), from a seeded `random.Random`; both can
change while the test runs. ``inject_completion_errors`` answers the device's next read requests
with UR or CA completions, or with none, instead of forwarding them, to test the device's error
paths.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from dataclasses import dataclass

import cocotb
from cocotb.queue import Queue
from cocotb.triggers import Event, ReadOnly, RisingEdge
from cocotbext.pcie.core import Device, Endpoint
from cocotbext.pcie.core.caps import MsixCapability
from cocotbext.pcie.core.tlp import CplStatus, Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId

from partner.pcie.bar import BAR0, BAR0_SIZE, MSIX_MAX_VECTORS
from partner.tlp import (
    COMPLETION_DW1,
    COMPLETION_DW2,
    HEADER_DW0,
    REQUEST_DW1,
    CompletionStatus,
    TlpKind,
    header_from_bytes,
    header_to_bytes,
)

__all__ = [
    "DEVICE_ID",
    "VENDOR_ID",
    "PartnerFunction",
    "PcieAdapter",
    "PcieRuleError",
    "TlpChecker",
    "TlpImage",
    "beats_from_tlp",
    "tlp_from_beats",
]

VENDOR_ID = 0x1234  # the simulated function's IDs; SimPcieBus looks the device up by them
DEVICE_ID = 0x5054

_REQUESTS = {TlpKind.MRD32, TlpKind.MRD64, TlpKind.MWR32, TlpKind.MWR64}
_READS = {TlpKind.MRD32, TlpKind.MRD64}


class PcieRuleError(AssertionError):
    """The device broke a PCIe rule the root complex model does not check."""


# --- beats <-> TLPs ------------------------------------------------------------------------


@dataclass
class TlpImage:
    """A TLP as it crosses the stream boundary: the 128-bit header and payload dwords."""

    hdr: int
    payload: list[int]
    bar: int = 0

    @property
    def dw0(self) -> dict:
        return HEADER_DW0.unpack(self.hdr & 0xFFFF_FFFF)

    def dword(self, i: int) -> int:
        return (self.hdr >> (32 * i)) & 0xFFFF_FFFF


def beats_from_tlp(tlp: Tlp, width: int, bar: int = 0) -> list[int]:
    """The stream beats (packed `tlp_layout` integers) of a cocotbext-pcie `Tlp`."""
    hdr = header_from_bytes(bytes(tlp.pack_header()))
    data = bytes(tlp.data) if tlp.has_data() else b""
    words = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]
    return pack_beats(TlpImage(hdr, words, bar), width)


def pack_beats(image: TlpImage, width: int) -> list[int]:
    lanes = width // 32
    chunks = [image.payload[i:i + lanes] for i in range(0, len(image.payload), lanes)] or [[]]
    out = []
    for n, chunk in enumerate(chunks):
        word = image.hdr
        word |= sum(d << (32 * i) for i, d in enumerate(chunk)) << 128
        word |= ((1 << len(chunk)) - 1) << (128 + width)
        word |= int(n == 0) << (128 + width + lanes)
        word |= int(n == len(chunks) - 1) << (128 + width + lanes + 1)
        word |= image.bar << (128 + width + lanes + 2)
        out.append(word)
    return out


def unpack_beat(word: int, width: int) -> dict:
    lanes = width // 32
    return {
        "hdr": word & ((1 << 128) - 1),
        "data": (word >> 128) & ((1 << width) - 1),
        "strb": (word >> (128 + width)) & ((1 << lanes) - 1),
        "sop": (word >> (128 + width + lanes)) & 1,
        "eop": (word >> (128 + width + lanes + 1)) & 1,
        "bar": (word >> (128 + width + lanes + 2)) & 7,
    }


def tlp_from_beats(beats: list[dict], width: int, stream: str) -> TlpImage:
    """Check the framing of one TLP's beats (`unpack_beat` dicts) and gather its payload."""
    lanes = width // 32
    full = (1 << lanes) - 1
    first = beats[0]
    if not first["sop"]:
        raise PcieRuleError(f"{stream}: a TLP starts with a beat without sop")
    payload = []
    for n, beat in enumerate(beats):
        if n and beat["sop"]:
            raise PcieRuleError(f"{stream}: sop in beat {n} of a TLP (eop missing before it)")
        strb = beat["strb"]
        if strb & (strb + 1):
            raise PcieRuleError(f"{stream}: strobes {strb:#x} are not packed from dword 0")
        if n < len(beats) - 1 and strb != full:
            raise PcieRuleError(f"{stream}: beat {n} of {len(beats)} is not full "
                                f"(strb {strb:#x}); only the last beat may be partial")
        if beat["bar"] != 0:
            raise PcieRuleError(f"{stream}: bar field {beat['bar']} on an outgoing TLP (must be 0)")
        payload += [(beat["data"] >> (32 * i)) & 0xFFFF_FFFF for i in range(strb.bit_length())]
    image = TlpImage(first["hdr"], payload)
    dw0 = image.dw0
    kind = dw0["kind"]
    has_data = bool(kind & 0x40)
    if kind & 0x20 == 0 and image.dword(3):
        raise PcieRuleError(f"{stream}: DW3 of a 3-dword header is {image.dword(3):#x}, not 0")
    if has_data:
        length = dw0["length"] or 1024
        if length != len(payload):
            raise PcieRuleError(f"{stream}: length field {length} but {len(payload)} payload "
                                f"dwords in {len(beats)} beats (§2.2.2)")
    elif payload or len(beats) != 1:
        raise PcieRuleError(f"{stream}: a TLP without data (kind {kind:#04x}) has "
                            f"{len(payload)} payload dwords in {len(beats)} beats")
    return image


def to_cocotb_tlp(image: TlpImage) -> Tlp:
    four = bool(image.dw0["kind"] & 0x20)
    raw = header_to_bytes(image.hdr, 4 if four else 3)
    raw += b"".join(d.to_bytes(4, "little") for d in image.payload)
    return Tlp.unpack(bytearray(raw))


# --- the rules -----------------------------------------------------------------------------


def _be_bytes(be: int) -> tuple[int, int]:
    """(first enabled byte, last enabled byte) of a dword's byte enables."""
    return (next((i for i in range(4) if be >> i & 1), 0),
            max((i for i in range(4) if be >> i & 1), default=0))


def read_byte_count(address: int, length: int, first_be: int, last_be: int) -> tuple[int, int]:
    """Bytes a memory read asks for and the address of its first byte (§2.3.1.1)."""
    first, _ = _be_bytes(first_be)
    if length == 1:
        count = 1 if first_be == 0 else _be_bytes(first_be)[1] - first + 1
    else:
        count = 4 * length - first - (3 - _be_bytes(last_be)[1])
    return count, address + first


@dataclass
class _Pending:
    """A non-posted request waiting for completions."""

    tag: int
    requester_id: int
    tc: int
    attr: tuple
    is_read: bool
    remaining: int  # bytes
    address: int  # address of the next byte to complete


class TlpChecker:
    """Every rule the root complex does not check, on the TLPs of one function.

    ``function`` is the cocotbext-pcie function whose configuration space holds the device's
    settings (`pcie_id`, `bus_master_enable`, `pcie_cap`, `msix_cap`); ``is_msi_address``
    says whether a write goes to the root complex's MSI/MSI-X doorbell.
    """

    def __init__(self, function, *, is_msi_address=lambda address: False, rcb: int = 64):
        self.function = function
        self.is_msi_address = is_msi_address
        self.rcb = rcb
        self.device_reads: dict[int, _Pending] = {}  # by tag
        self.host_requests: dict[tuple[int, int], _Pending] = {}  # by (requester ID, tag)
        self.counts = {"requests": 0, "reads": 0, "writes": 0, "msix": 0, "completions": 0,
                       "error_completions": 0}

    def fail(self, rule: str, image: TlpImage | None = None) -> None:
        detail = f"\n  header {image.hdr:#034x}, {len(image.payload)} payload dwords" \
            if image is not None else ""
        raise PcieRuleError(f"PCIe rule broken by the device: {rule}{detail}")

    # -- requests the device sends (req_out) --

    def device_request(self, image: TlpImage) -> None:
        f = self.function
        dw0 = image.dw0
        kind = dw0["kind"]
        if kind not in _REQUESTS:
            self.fail(f"req_out carries kind {kind:#04x}; only memory reads and writes are "
                      "expected from this device", image)
        dw1 = REQUEST_DW1.unpack(image.dword(1))
        if dw1["requester_id"] != int(f.pcie_id):
            self.fail(f"requester ID {PcieId.from_int(dw1['requester_id'])} is not the "
                      f"function's {f.pcie_id} (§2.2.6.2)", image)
        if not f.bus_master_enable:
            self.fail("a request while Bus Master Enable is clear (§7.5.1.1)", image)
        if kind & 0x20:
            address = image.dword(2) << 32 | image.dword(3)
            if address >> 32 == 0:
                self.fail(f"64-bit header for address {address:#x} below 4 GiB (§2.2.4.1)",
                          image)
        else:
            address = image.dword(2)
        if address & 3:
            self.fail(f"address bits 1:0 are {address & 3} (reserved / processing hint)", image)
        length = dw0["length"] or 1024
        self._byte_enables(image, address, length, dw1["first_be"], dw1["last_be"])
        if (address & 0xFFF) + 4 * length > 0x1000:
            self.fail(f"a {4 * length}-byte request at {address:#x} crosses a 4 KiB boundary "
                      "(§2.2.7)", image)
        if dw0["ep"] or dw0["td"] or dw0["th"] or dw0["at"]:
            self.fail("EP, TD, TH or AT set on a request", image)
        self.counts["requests"] += 1
        if kind in _READS:
            mrrs = 128 << f.pcie_cap.max_read_request_size
            if 4 * length > mrrs:
                self.fail(f"a {4 * length}-byte read exceeds Max_Read_Request_Size {mrrs} "
                          "(§7.5.3.4)", image)
            tag = dw1["tag"]
            if dw0["t8"] or dw0["t9"]:
                self.fail("10-bit tag bits set; 10-bit tags are not enabled (§2.2.6.2)", image)
            limit = 256 if f.pcie_cap.extended_tag_field_enable else 32
            if tag >= limit:
                self.fail(f"tag {tag} outside the {limit} tags allowed (Extended Tag Field "
                          f"Enable {'set' if limit == 256 else 'clear'}; §2.2.6.2)", image)
            if tag in self.device_reads:
                self.fail(f"tag {tag} reused while a read with it is outstanding (§2.2.6.2)",
                          image)
            count, first = read_byte_count(address, length, dw1["first_be"], dw1["last_be"])
            self.device_reads[tag] = _Pending(tag, dw1["requester_id"], dw0["tc"],
                                              (dw0["attr_lo"], dw0["attr_hi"]), True, count,
                                              first)
            self.counts["reads"] += 1
        else:
            mps = 128 << f.pcie_cap.max_payload_size
            if 4 * length > mps:
                self.fail(f"a {4 * length}-byte write exceeds Max_Payload_Size {mps} "
                          "(§2.2.2)", image)
            self.counts["writes"] += 1
            if self.is_msi_address(address):
                cap = f.msix_cap
                if not cap.msix_enable:
                    self.fail("an MSI-X message while MSI-X is disabled (§6.1.4)", image)
                if cap.msix_function_mask:
                    self.fail("an MSI-X message while the function is masked (§6.1.4.5)",
                              image)
                if length != 1 or dw1["first_be"] != 0xF:
                    self.fail("an MSI-X message is one whole dword", image)
                self.counts["msix"] += 1

    def _byte_enables(self, image, address, length, first_be, last_be):
        # §2.2.5: one-dword requests have Last DW BE 0; longer ones need both BEs non-zero and,
        # unless the request is two dwords in one aligned quadword, contiguous byte enables.
        if length == 1:
            if last_be:
                self.fail(f"Last DW BE {last_be:#x} on a one-dword request (§2.2.5)", image)
            return
        if not first_be or not last_be:
            self.fail(f"First/Last DW BE {first_be:#x}/{last_be:#x} on a {length}-dword "
                      "request: both must be non-zero (§2.2.5)", image)
        if length == 2 and address & 7 == 0:
            return
        if first_be not in (0xF, 0xE, 0xC, 0x8) or last_be not in (0x1, 0x3, 0x7, 0xF):
            self.fail(f"non-contiguous byte enables {first_be:#x}/{last_be:#x} on a "
                      f"{length}-dword request (§2.2.5)", image)

    # -- completions the root complex sends to the device (cpl_in) --

    def completion_delivered(self, tlp: Tlp) -> None:
        """The device took the last beat of `tlp` on ``cpl_in``: free the tag when final."""
        pending = self.device_reads.get(tlp.tag)
        if pending is None:
            return  # not ours to track (the adapter forwards only completions for our ID)
        final = tlp.status != CplStatus.SC or \
            tlp.byte_count <= tlp.length * 4 - (tlp.lower_address & 3)
        if final:
            del self.device_reads[tlp.tag]

    # -- requests from the host (req_in) and the device's completions (cpl_out) --

    def host_request(self, tlp: Tlp) -> None:
        if not tlp.is_nonposted():
            return
        key = (int(tlp.requester_id), tlp.tag)
        is_read = tlp.fmt_type in (TlpType.MEM_READ, TlpType.MEM_READ_64)
        if is_read:
            count, first = read_byte_count(tlp.address, tlp.length, tlp.first_be, tlp.last_be)
        else:
            count, first = 4, 0
        self.host_requests[key] = _Pending(tlp.tag, int(tlp.requester_id), int(tlp.tc),
                                           (int(tlp.attr) & 3, int(tlp.attr) >> 2 & 1),
                                           is_read, count, first)

    def device_completion(self, image: TlpImage) -> None:
        f = self.function
        dw0 = image.dw0
        kind = dw0["kind"]
        if kind not in (TlpKind.CPL, TlpKind.CPLD):
            self.fail(f"cpl_out carries kind {kind:#04x}, not a completion", image)
        dw1 = COMPLETION_DW1.unpack(image.dword(1))
        dw2 = COMPLETION_DW2.unpack(image.dword(2))
        key = (dw2["requester_id"], dw2["tag"] | dw0["t8"] << 8 | dw0["t9"] << 9)
        pending = self.host_requests.get(key)
        if pending is None:
            self.fail(f"a completion for requester {PcieId.from_int(key[0])} tag {key[1]}, "
                      "which has no request outstanding (§2.2.9)", image)
        if dw1["completer_id"] != int(f.pcie_id):
            self.fail(f"completer ID {PcieId.from_int(dw1['completer_id'])} is not the "
                      f"function's {f.pcie_id} (§2.2.9)", image)
        if dw0["tc"] != pending.tc or (dw0["attr_lo"], dw0["attr_hi"]) != pending.attr:
            self.fail("a completion's TC or attributes differ from its request's (§2.2.9)",
                      image)
        if dw1["bcm"]:
            self.fail("BCM set: only PCI-X completers may set it (§2.2.9)", image)
        status = dw1["status"]
        byte_count = dw1["byte_count"] or 4096
        lower = dw2["lower_address"]
        self.counts["completions"] += 1
        if status != CompletionStatus.SC:
            if status not in (CompletionStatus.UR, CompletionStatus.CA):
                self.fail(f"completion status {status} from an endpoint's memory space", image)
            if kind != TlpKind.CPL or dw0["length"]:
                self.fail("an error completion carries data (§2.2.9)", image)
            self._check_count(image, pending, byte_count, lower)
            del self.host_requests[key]
            self.counts["error_completions"] += 1
            return
        if not pending.is_read:
            if kind != TlpKind.CPL:
                self.fail("completion with data for a request without a read", image)
            self._check_count(image, pending, byte_count, lower)
            del self.host_requests[key]
            return
        if kind != TlpKind.CPLD:
            self.fail("a successful memory read completion without data (§2.3.1.1)", image)
        self._check_count(image, pending, byte_count, lower)
        length = dw0["length"] or 1024
        mps = 128 << f.pcie_cap.max_payload_size
        if 4 * length > mps:
            self.fail(f"a {4 * length}-byte completion exceeds Max_Payload_Size {mps} (§2.2.2)",
                      image)
        delivered = 4 * length - (lower & 3)
        if delivered > byte_count + 3:
            self.fail(f"completion carries {delivered} bytes for {byte_count} remaining "
                      "(§2.3.1.1)", image)
        if delivered >= byte_count:
            del self.host_requests[key]
            return
        end = pending.address + delivered
        if end % self.rcb:
            self.fail(f"a partial completion ends at {end:#x}, not on the {self.rcb}-byte Read "
                      "Completion Boundary (§2.3.1.1)", image)
        pending.remaining -= delivered
        pending.address = end

    def _check_count(self, image, pending, byte_count, lower):
        if pending.is_read:
            expect_count, expect_lower = pending.remaining, pending.address & 0x7F
        else:
            expect_count, expect_lower = 4, 0
        if byte_count != expect_count:
            self.fail(f"byte count {byte_count}, expected {expect_count} (§2.3.1.1)", image)
        if lower != expect_lower:
            self.fail(f"lower address {lower:#x}, expected {expect_lower:#x} (§2.3.1.1)", image)


# --- the function and the device -------------------------------------------------------------


class PartnerFunction(Endpoint):
    """The endpoint's configuration space: BAR0 and MSI-X as the gateware implements them.

    ``extra_bars`` are (index, size, io) BARs the gateware does *not* implement, to test that
    requests to them are refused.
    """

    def __init__(self, *, msix_vectors: int, max_payload_size: int = 512,
                 extended_tags: bool = False, extra_bars=()):
        super().__init__()
        if not 1 <= msix_vectors <= MSIX_MAX_VECTORS:
            raise ValueError(f"msix_vectors must be 1..{MSIX_MAX_VECTORS}, not {msix_vectors}")
        if max_payload_size not in (128, 256, 512, 1024, 2048, 4096):
            raise ValueError(f"max_payload_size {max_payload_size} is not a PCIe size")
        self.vendor_id = VENDOR_ID
        self.device_id = DEVICE_ID
        self.class_code = 0x020000  # network controller, Ethernet
        self.configure_bar(0, BAR0_SIZE, ext=True)
        for index, size, io in extra_bars:
            if index < 2:
                raise ValueError("BAR0 and BAR1 hold the 64-bit BAR0")
            self.configure_bar(index, size, io=io)
        self.msix_cap = MsixCapability()
        self.msix_cap.msix_table_size = msix_vectors - 1  # the field is N - 1 (§7.7.2)
        self.msix_cap.msix_table_bar_indicator_register = 0
        self.msix_cap.msix_table_offset = BAR0.msix_table.offset
        self.msix_cap.msix_pba_bar_indicator_register = 0
        self.msix_cap.msix_pba_offset = BAR0.msix_pba.offset
        self.register_capability(self.msix_cap)
        self.pcie_cap.max_payload_size_supported = (max_payload_size // 128).bit_length() - 1
        self.pcie_cap.extended_tag_supported = extended_tags


class _Inbound:
    """One stream the adapter drives into the DUT (``req_in``, ``cpl_in``)."""

    def __init__(self, dut, name):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.beats: deque = deque()  # (word, tlp or None on the last beat)
        self.driving = False
        self.valid.value = 0


class _Outbound:
    """One stream the adapter takes from the DUT (``req_out``, ``cpl_out``)."""

    def __init__(self, dut, name):
        self.name = name
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.beats: list = []
        self.ready.value = 0


class PcieAdapter(Device):
    """The DUT's four TLP streams and `EndpointConfig` inputs, as a device on a root complex.

    Streams and config are found on ``dut`` by name (``req_in__valid``, ``config__id``, ...);
    a DUT without ``req_out``/``cpl_in`` (no DMA) is fine. Connect with
    ``rc.make_port().connect(adapter)`` before ``rc.enumerate()``.
    """

    def __init__(self, dut, *, width: int, clock, msix_vectors: int, seed: int = 1,
                 valid_probability: float = 1.0, ready_probability: float = 1.0,
                 max_payload_size: int = 512, extended_tags: bool = False, extra_bars=(),
                 raise_violations: bool = True):
        super().__init__()
        self.log = logging.getLogger("cocotb.pcie.PcieAdapter")
        self.dut = dut
        self.width = width
        self.clock = clock
        self.rng = random.Random(seed)
        self.valid_probability = valid_probability
        self.ready_probability = ready_probability
        self.function = PartnerFunction(msix_vectors=msix_vectors,
                                        max_payload_size=max_payload_size,
                                        extended_tags=extended_tags, extra_bars=extra_bars)
        self.append_function(self.function)
        self.rc = None  # set by `attach`
        self.checker = TlpChecker(self.function, is_msi_address=self._is_msi_address)
        self.inbound = {name: _Inbound(dut, name) for name in ("req_in", "cpl_in")
                        if hasattr(dut, f"{name}__valid")}
        self.outbound = {name: _Outbound(dut, name) for name in ("req_out", "cpl_out")
                         if hasattr(dut, f"{name}__valid")}
        self._config = {name: getattr(dut, f"config__{name}") for name in
                        ("id", "max_payload", "max_read_request", "bus_master", "msix_enable",
                         "msix_mask")}
        self._config_values = None
        self._upstream: Queue = Queue()
        self._injections: deque = deque()
        self.cycle = 0
        #: True: a violation raises in the adapter's task and so fails the running test.
        #: False: it is only recorded (`error`, `violation`), for tests that provoke one.
        self.raise_violations = raise_violations
        self.error: PcieRuleError | None = None
        self.violation = Event()
        self._drive_config()
        cocotb.start_soon(self._run())
        cocotb.start_soon(self._send_upstream())

    def attach(self, rc) -> None:
        """Connect to a root complex (a new root port of ``rc``)."""
        self.rc = rc
        rc.make_port().connect(self)

    def _is_msi_address(self, address: int) -> bool:
        if self.rc is None:
            return False
        region = self.rc.msi_region
        base = region.get_absolute_address(0)
        return base <= address < base + region.size

    def inject_completion_errors(self, status: CplStatus | None, count: int = 1) -> None:
        """Answer the device's next ``count`` memory reads with ``status`` (UR or CA), or with
        nothing at all (``None``: the device's completion timeout must fire).

        A read left unanswered frees its tag at once: the adapter cannot know the device's
        completion timeout, after which the tag may be reused.
        """
        if status not in (CplStatus.UR, CplStatus.CA, None):
            raise ValueError(f"inject UR or CA completions, or None for none, not {status!r}")
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        self._injections.extend([status] * count)

    def check(self) -> None:
        """Raise the first rule violation seen."""
        if self.error is not None:
            raise self.error

    # -- from the root complex --

    async def upstream_recv(self, tlp):
        self.log.debug("from the root complex: %r", tlp)
        f = self.function
        if tlp.fmt_type in (TlpType.CFG_READ_0, TlpType.CFG_WRITE_0):
            # The Device captures the bus number and the function serves its config space.
            await super().upstream_recv(tlp)
            self._drive_config()
            return
        if tlp.is_completion():
            tlp.release_fc()
            if tlp.requester_id != f.pcie_id or "cpl_in" not in self.inbound:
                self.log.warning("completion for someone else, dropped: %r", tlp)
                return
            self._queue("cpl_in", tlp, 0)
            return
        io = tlp.fmt_type in (TlpType.IO_READ, TlpType.IO_WRITE)
        if tlp.fmt_type in (TlpType.MEM_READ, TlpType.MEM_READ_64, TlpType.MEM_WRITE,
                            TlpType.MEM_WRITE_64) or io:
            bar = f.match_bar(tlp.address, io)
            if bar is not None:
                tlp.release_fc()
                self.checker.host_request(tlp)
                self._queue("req_in", tlp, bar[0])
                return
        # Not for a BAR of ours (or a type the stream never carries): the Device's default
        # handling answers UR for non-posted requests.
        await super().upstream_recv(tlp)

    def _queue(self, name: str, tlp, bar: int) -> None:
        beats = beats_from_tlp(tlp, self.width, bar)
        stream = self.inbound[name]
        for n, word in enumerate(beats):
            stream.beats.append((word, tlp if n == len(beats) - 1 else None))

    # -- the per-cycle loop --

    def _drive_config(self) -> None:
        f = self.function
        values = (int(f.pcie_id), f.pcie_cap.max_payload_size, f.pcie_cap.max_read_request_size,
                  int(f.bus_master_enable), int(f.msix_cap.msix_enable),
                  int(f.msix_cap.msix_function_mask))
        if values != self._config_values:
            self._config_values = values
            for signal, value in zip(self._config.values(), values, strict=True):
                signal.value = value

    async def _run(self):
        clock_edge = RisingEdge(self.clock)
        read_only = ReadOnly()
        rng = self.rng
        while True:
            self._drive_config()
            for stream in self.inbound.values():
                if not stream.driving and stream.beats and (
                        self.valid_probability >= 1 or rng.random() < self.valid_probability):
                    stream.payload.value = stream.beats[0][0]
                    stream.valid.value = 1
                    stream.driving = True
            readies = {}
            for name, stream in self.outbound.items():
                ready = self.ready_probability >= 1 or rng.random() < self.ready_probability
                stream.ready.value = int(ready)
                readies[name] = ready
            await read_only
            taken_in = [s for s in self.inbound.values() if s.driving and s.ready.value]
            taken_out = [(name, int(s.payload.value)) for name, s in self.outbound.items()
                         if readies[name] and s.valid.value]
            await clock_edge
            self.cycle += 1
            for stream in taken_in:
                _, tlp = stream.beats.popleft()
                stream.driving = False
                stream.valid.value = 0
                if tlp is not None and stream is self.inbound.get("cpl_in"):
                    self.checker.completion_delivered(tlp)
            for name, word in taken_out:
                self._take(name, word)

    def _take(self, name: str, word: int) -> None:
        stream = self.outbound[name]
        beat = unpack_beat(word, self.width)
        stream.beats.append(beat)
        if not beat["eop"]:
            return
        beats, stream.beats = stream.beats, []
        try:
            image = tlp_from_beats(beats, self.width, name)
            if name == "cpl_out":
                self.checker.device_completion(image)
            else:
                self.checker.device_request(image)
        except PcieRuleError as error:
            self.log.error("%s", error)
            if self.error is None:
                self.error = error
                self.violation.set()
            if self.raise_violations:
                raise
            return  # the offending TLP goes no further
        tlp = to_cocotb_tlp(image)
        if name == "req_out" and tlp.fmt_type in (TlpType.MEM_READ, TlpType.MEM_READ_64) \
                and self._injections:
            status = self._injections.popleft()
            if status is None:
                self.log.info("injected: no completion for tag %d", tlp.tag)
                self.checker.device_reads.pop(tlp.tag, None)
            else:
                self._queue("cpl_in", self._error_completion(tlp, status), 0)
            return
        self._upstream.put_nowait(tlp)

    def _error_completion(self, req: Tlp, status: CplStatus) -> Tlp:
        cpl = Tlp.create_completion_for_tlp(req, PcieId(0, 0, 0), False, status)
        count, first = read_byte_count(req.address, req.length, req.first_be, req.last_be)
        cpl.byte_count = count % 4096
        cpl.lower_address = first & 0x7F
        return cpl

    async def _send_upstream(self):
        while True:
            tlp = await self._upstream.get()
            await self.send(tlp)
