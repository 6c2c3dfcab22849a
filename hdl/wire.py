# Gateware side of the wire formats of partner.wire / partner.formats: the one definition of each
# format becomes an Amaranth `data.StructLayout` here, so gateware and host cannot disagree.
"""Amaranth layouts derived from `partner.wire.Struct` definitions."""

from amaranth.hdl import unsigned
from amaranth.lib import data

from partner.wire import Struct

__all__ = ["layout"]

_cache: dict[Struct, data.StructLayout] = {}


def layout(struct: Struct) -> data.StructLayout:
    """The `StructLayout` of a wire struct: same field names, widths and bit offsets."""
    cached = _cache.get(struct)
    if cached is None:
        cached = _cache[struct] = data.StructLayout({f.name: unsigned(f.width) for f in struct})
    return cached
