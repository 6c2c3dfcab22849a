"""Fast pack/unpack of ring entries, generated from their one definition in `partner.pcie.formats`.

`Struct.pack`/`unpack` (partner.wire) take dicts and check every value: right for registers and
tests, too slow for a driver that handles a ring entry per frame (about 3 µs to decode an RX
completion). A `Codec` compiles a struct, once, into two plain functions over `struct.Struct`
words — the way `collections.namedtuple` builds its class — so an entry costs one `unpack_from`
and a shift and mask per field (about 0.4 µs, measured on the development machine). The
functions are derived from the field list, so they cannot drift from the format;
tests/test_pcie_formats.py checks them against `Struct.pack` on random values.

`pack_into` masks every value to its field's width (a value that is too wide cannot spill into
its neighbours); the driver checks lengths and counts before it packs, with clear errors.
"""

from __future__ import annotations

import struct as _struct
from collections.abc import Callable, Iterable

from ..wire import Struct

__all__ = ["Codec"]


class Codec:
    """`unpack_from(buffer, offset) -> tuple` and `pack_into(buffer, offset, *values)` of `fields`
    (default: every field not named ``reserved``), in that order."""

    def __init__(self, struct: Struct, fields: Iterable[str] | None = None):
        if struct.width % 64:
            raise ValueError(f"{struct.name} is {struct.width} bits, not a multiple of 64")
        self.struct = struct
        self.size = struct.nbytes
        names = tuple(fields) if fields is not None else tuple(
            f.name for f in struct if f.name != "reserved")
        for name in names:
            struct[name]  # a KeyError names an unknown field here, not in generated code
        self.fields = names
        words = self.size // 8
        self._words = _struct.Struct("<" + "Q" * words)
        self.unpack_from: Callable = self._compile_unpack(words)
        self.pack_into: Callable = self._compile_pack(words)

    def _compile_unpack(self, words: int) -> Callable:
        exprs = []
        for name in self.fields:
            f = self.struct[name]
            word, bit = divmod(f.offset, 64)
            expr = f"w{word}" if bit == 0 else f"(w{word} >> {bit})"
            if bit + f.width > 64:  # the field straddles two words
                expr = f"({expr} | (w{word + 1} << {64 - bit}))"
            if bit + f.width != 64:  # a field that ends at bit 63 needs no mask
                expr = f"({expr} & {f.mask:#x})"
            exprs.append(expr)
        names = ", ".join(f"w{i}" for i in range(words))
        source = (f"def unpack_from(buffer, offset=0):\n"
                  f"    {names}, = _unpack(buffer, offset)\n"
                  f"    return ({', '.join(exprs)},)\n")
        return self._define(source, "unpack_from", _unpack=self._words.unpack_from)

    def _compile_pack(self, words: int) -> Callable:
        parts: list[list[str]] = [[] for _ in range(words)]
        args = [f"v{i}" for i in range(len(self.fields))]
        for arg, name in zip(args, self.fields, strict=True):
            f = self.struct[name]
            word, bit = divmod(f.offset, 64)
            parts[word].append(f"(({arg} & {f.mask:#x}) << {bit})")
            if bit + f.width > 64:
                parts[word + 1].append(f"(({arg} & {f.mask:#x}) >> {64 - bit})")
        masked = [" | ".join(p) if p else "0" for p in parts]
        # Bits that spill past bit 63 of a word are cut off by the final mask.
        values = ", ".join(f"({m}) & 0xffffffffffffffff" for m in masked)
        source = (f"def pack_into(buffer, offset, {', '.join(args)}):\n"
                  f"    _pack(buffer, offset, {values})\n")
        return self._define(source, "pack_into", _pack=self._words.pack_into)

    def _define(self, source: str, name: str, **scope) -> Callable:
        namespace = dict(scope)
        exec(compile(source, f"<codec {self.struct.name}.{name}>", "exec"), namespace)
        function = namespace[name]
        function.__doc__ = f"{name} of `{self.struct.name}` fields {', '.join(self.fields)}"
        return function

    def pack(self, *values) -> bytes:
        out = bytearray(self.size)
        self.pack_into(out, 0, *values)
        return bytes(out)

    def __repr__(self):
        return f"Codec({self.struct.name}, {self.size} bytes, fields={self.fields})"
