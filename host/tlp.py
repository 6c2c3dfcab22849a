"""PCIe transaction-layer packet (TLP) header fields, defined once (PCI Express Base Spec §2.2).

The gateware's TLP streams (`partner.hdl.pcie.tlp`), the cocotb adapter that joins them to
cocotbext-pcie's root complex (`partner.sim.pcie`) and docs/dma.md all take the header layout
from here.

On a TLP stream the header travels as four dwords, ``hdr`` = 128 bits: header dword *i* sits at
bits ``32*i+31 .. 32*i`` and keeps the spec's bit numbering inside the dword (bit 31 of DW0 is the
top bit of Fmt, the first bit on the wire). A 3-dword header leaves DW3 zero. So the header bytes
of the spec (byte 0 = Fmt/Type) convert as ``dw[i] = int.from_bytes(raw[4*i:4*i+4], "big")``
(`header_from_bytes` / `header_to_bytes`). Payload dwords are the other way round, as host
memory reads them: byte *j* of a payload dword is bits ``8*j+7 .. 8*j`` (little-endian), byte 0
at the lowest address.
"""

import enum

from .wire import Field, Struct

__all__ = [
    "COMPLETION_DW1",
    "COMPLETION_DW2",
    "HEADER_DW0",
    "REQUEST_DW1",
    "CompletionStatus",
    "Fmt",
    "TlpKind",
    "header_from_bytes",
    "header_to_bytes",
]


class Fmt(enum.IntEnum):
    """DW0 Fmt: header size and whether a payload follows (§2.2.1)."""

    DW3_NO_DATA = 0b000
    DW4_NO_DATA = 0b001
    DW3_DATA = 0b010
    DW4_DATA = 0b011
    PREFIX = 0b100


class TlpKind(enum.IntEnum):
    """DW0 Fmt and Type together (8 bits: Fmt in 7:5, Type in 4:0) of the TLPs the device uses."""

    MRD32 = 0x00  # memory read, 32-bit address
    MRD64 = 0x20  # memory read, 64-bit address
    MWR32 = 0x40  # memory write, 32-bit address
    MWR64 = 0x60  # memory write, 64-bit address
    CPL = 0x0A  # completion without data (errors, or a zero-length read)
    CPLD = 0x4A  # completion with data


class CompletionStatus(enum.IntEnum):
    """Completion status (§2.2.9)."""

    SC = 0b000  # successful completion
    UR = 0b001  # unsupported request
    CRS = 0b010  # configuration request retry status
    CA = 0b100  # completer abort


HEADER_DW0 = Struct("tlp_dw0", [
    Field("length", 10, "payload length in dwords; 0 means 1024"),
    Field("at", 2, "address type (0: untranslated)"),
    Field("attr_lo", 2, "bit 0 no snoop, bit 1 relaxed ordering"),
    Field("ep", 1, "poisoned data"),
    Field("td", 1, "a TLP digest (ECRC) follows"),
    Field("th", 1, "TLP processing hints present"),
    Field("reserved", 1, ""),
    Field("attr_hi", 1, "ID-based ordering"),
    Field("t8", 1, "tag bit 8 (10-bit tags)"),
    Field("tc", 3, "traffic class"),
    Field("t9", 1, "tag bit 9 (10-bit tags)"),
    Field("kind", 8, "Type in bits 4:0, Fmt in bits 7:5", TlpKind),
], "Header dword 0 of every TLP.")

REQUEST_DW1 = Struct("tlp_request_dw1", [
    Field("first_be", 4, "byte enables of the first payload dword"),
    Field("last_be", 4, "byte enables of the last payload dword (0 for a one-dword request)"),
    Field("tag", 8, "tag, unique among the requester's outstanding non-posted requests"),
    Field("requester_id", 16, "bus/device/function of the requester"),
], "Header dword 1 of a memory request. DW2 (and DW3 of a 4-dword header) is the address: "
   "a 3-dword header has address bits 31:2 in DW2 bits 31:2; a 4-dword header has bits 63:32 "
   "in DW2 and bits 31:2 in DW3.")

COMPLETION_DW1 = Struct("tlp_completion_dw1", [
    Field("byte_count", 12, "bytes left to complete the request, this TLP's included (0: 4096)"),
    Field("bcm", 1, "byte count modified (PCI-X only; 0 here)"),
    Field("status", 3, "completion status", CompletionStatus),
    Field("completer_id", 16, "bus/device/function of the completer"),
], "Header dword 1 of a completion.")

COMPLETION_DW2 = Struct("tlp_completion_dw2", [
    Field("lower_address", 7, "address bits 6:0 of the first byte of this completion's payload"),
    Field("reserved", 1, ""),
    Field("tag", 8, "tag of the request"),
    Field("requester_id", 16, "bus/device/function of the requester"),
], "Header dword 2 of a completion.")


def header_from_bytes(raw: bytes) -> int:
    """The 128-bit ``hdr`` of a TLP stream from the spec's header bytes (12 or 16 of them)."""
    if len(raw) not in (12, 16):
        raise ValueError(f"a TLP header is 12 or 16 bytes, not {len(raw)}")
    return sum(int.from_bytes(raw[4 * i:4 * i + 4], "big") << (32 * i)
               for i in range(len(raw) // 4))


def header_to_bytes(hdr: int, dwords: int) -> bytes:
    """The spec's header bytes (``dwords`` = 3 or 4) of a 128-bit ``hdr``."""
    if dwords not in (3, 4):
        raise ValueError(f"a TLP header has 3 or 4 dwords, not {dwords}")
    return b"".join(((hdr >> (32 * i)) & 0xFFFF_FFFF).to_bytes(4, "big") for i in range(dwords))
