"""Wire formats, defined once: bit-field structs, enums and register maps in plain Python.

Every format that crosses the boundary between gateware and host — the flow table's match key and
rules, the metadata that travels with a frame, the CSR register map, later the DMA descriptors —
is declared once with the classes here. Three things are derived from each declaration:

- the host's `pack`/`unpack` (this module, standard library only, so a host-only install works);
- the gateware's `amaranth.lib.data.StructLayout` (`partner.hdl.wire.layout`);
- the documentation tables (`markdown()`), written into docs/ by `partner.docs`.

Bit order follows Amaranth's `StructLayout`: the first field sits at bit 0 (least significant)
and each next field above it. A struct packs to an integer; `to_bytes` lays that integer out
little-endian, which is also how a 32-bit CSR or a DMA descriptor word reads on a PCIe host.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Access", "Field", "Register", "RegisterMap", "Struct"]


@dataclass(frozen=True)
class Field:
    """One field of a struct: a name, a width in bits, optionally an `enum.IntEnum` of values."""

    name: str
    width: int
    doc: str = ""
    values: type[enum.IntEnum] | None = None
    offset: int = 0

    def __post_init__(self):
        if self.width <= 0:
            raise ValueError(f"field {self.name!r} needs a positive width")
        if self.values is not None:
            too_wide = [m for m in self.values if not 0 <= m.value < (1 << self.width)]
            if too_wide:
                raise ValueError(f"field {self.name!r}: {too_wide} do not fit in {self.width} bits")

    @property
    def mask(self) -> int:
        return (1 << self.width) - 1


class Struct:
    """A named sequence of bit fields, first field at bit 0."""

    def __init__(self, name: str, fields, doc: str = ""):
        self.name = name
        self.doc = doc
        self.fields: dict[str, Field] = {}
        offset = 0
        for item in fields:
            f = item if isinstance(item, Field) else Field(*item)
            if f.name in self.fields:
                raise ValueError(f"struct {name!r} has two fields named {f.name!r}")
            self.fields[f.name] = Field(f.name, f.width, f.doc, f.values, offset)
            offset += f.width
        self.width = offset

    @property
    def nbytes(self) -> int:
        return (self.width + 7) // 8

    def __iter__(self):
        return iter(self.fields.values())

    def __getitem__(self, name: str) -> Field:
        return self.fields[name]

    def pack(self, values: Mapping | None = None, **kwargs) -> int:
        """The integer of the given field values; missing fields are 0.

        A value that does not fit its field, or an unknown field name, raises `ValueError`
        naming the field: a rule or descriptor is never silently truncated.
        """
        values = {**(values or {}), **kwargs}
        word = 0
        for name, value in values.items():
            f = self.fields.get(name)
            if f is None:
                raise ValueError(
                    f"{self.name} has no field {name!r}; fields: {', '.join(self.fields)}"
                )
            value = int(value)
            if not 0 <= value <= f.mask:
                raise ValueError(
                    f"{self.name}.{name} = {value:#x} does not fit in {f.width} bits"
                )
            word |= value << f.offset
        return word

    def unpack(self, word: int) -> dict:
        """The field values of an integer, enum fields as their enum members when known."""
        out = {}
        for f in self.fields.values():
            value = (word >> f.offset) & f.mask
            if f.values is not None and value in f.values._value2member_map_:
                value = f.values(value)  # an undefined code stays an int: the caller decides
            out[f.name] = value
        return out

    def to_bytes(self, values: Mapping | None = None, **kwargs) -> bytes:
        return self.pack(values, **kwargs).to_bytes(self.nbytes, "little")

    def from_bytes(self, raw: bytes) -> dict:
        if len(raw) != self.nbytes:
            raise ValueError(f"{self.name} is {self.nbytes} bytes, not {len(raw)}")
        return self.unpack(int.from_bytes(raw, "little"))

    def markdown(self) -> str:
        lines = [
            f"`{self.name}`: {self.width} bits. {self.doc}".rstrip(),
            "",
            "| bits | field | meaning |",
            "|---|---|---|",
        ]
        for f in self.fields.values():
            bits = f"{f.offset}" if f.width == 1 else f"{f.offset + f.width - 1}:{f.offset}"
            meaning = f.doc
            if f.values is not None:
                meaning += " (" + ", ".join(f"{m.value} = {m.name}" for m in f.values) + ")"
            lines.append(f"| {bits} | `{f.name}` | {meaning} |")
        return "\n".join(lines)


class Access(enum.Enum):
    """How software may access a register."""

    RO = "read-only"
    RW = "read-write"
    WO = "write-only (strobe)"
    RC = "read-only, clears on read"


@dataclass(frozen=True)
class Register:
    """A 32-bit register (or an array of `count` of them) at a byte offset of the CSR space."""

    name: str
    access: Access
    doc: str
    fields: Struct | None = None
    count: int = 1
    offset: int = 0
    reset: int = 0

    @property
    def size(self) -> int:
        return 4 * self.count

    def address(self, index: int = 0) -> int:
        if not 0 <= index < self.count:
            raise IndexError(f"register {self.name} has {self.count} entries, not index {index}")
        return self.offset + 4 * index


@dataclass
class RegisterMap:
    """32-bit registers laid out one after the other from offset 0 (arrays contiguously)."""

    name: str
    registers: list[Register] = field(default_factory=list)
    doc: str = ""

    def __post_init__(self):
        placed, offset = [], 0
        for reg in self.registers:
            if reg.fields is not None and reg.fields.width > 32:
                raise ValueError(f"register {reg.name} fields are {reg.fields.width} bits wide")
            placed.append(Register(reg.name, reg.access, reg.doc, reg.fields, reg.count, offset,
                                   reg.reset))
            offset += reg.size
        self.registers = placed
        self.by_name = {reg.name: reg for reg in placed}
        if len(self.by_name) != len(placed):
            raise ValueError(f"register map {self.name} has a duplicate register name")
        self.size = offset

    def __getitem__(self, name: str) -> Register:
        try:
            return self.by_name[name]
        except KeyError:
            raise KeyError(f"register map {self.name} has no register {name!r}") from None

    def __iter__(self):
        return iter(self.registers)

    def markdown(self) -> str:
        lines = [
            f"Register map `{self.name}`: {self.size} bytes of 32-bit registers. {self.doc}",
            "",
            "| offset | register | access | meaning |",
            "|---|---|---|---|",
        ]
        for reg in self.registers:
            where = f"{reg.offset:#06x}"
            if reg.count > 1:
                where += f" + 4·i (i < {reg.count})"
            lines.append(f"| {where} | `{reg.name}` | {reg.access.value} | {reg.doc} |")
        structs = [reg.fields for reg in self.registers if reg.fields is not None]
        for struct in dict.fromkeys(structs):
            lines += ["", struct.markdown()]
        return "\n".join(lines)
