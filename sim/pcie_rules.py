"""What the gateware's TLP streams carry, as TLPs, and the PCIe rules a device must keep.

`tlp_from_beats` / `beats_from_tlp` convert between beats of `partner.hdl.pcie.tlp` streams and
TLPs; `TlpChecker` checks every TLP a device sends against the rules the cocotbext-pcie root
complex does not check, and raises (or records) `PcieRuleError` naming the rule and the PCIe Base
Spec section. `partner.sim.pcie.PcieAdapter` runs every TLP through it; tests/test_pcie_rules.py
breaks each rule once without a simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from cocotbext.pcie.core.tlp import CplStatus, Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId

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
    "PcieRuleError",
    "TlpChecker",
    "TlpImage",
    "beats_from_tlp",
    "pack_beats",
    "read_byte_count",
    "tlp_from_beats",
    "to_cocotb_tlp",
    "unpack_beat",
]

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
