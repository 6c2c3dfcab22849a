"""Flow templates, flow attributes and data attributes: what `Partner.open(template, attrs)` takes.

The partner interface (paper, section 3.2) opens a flow with a *flow template* (``flw_templ``: "the
protocol modules that constitute the intended flow", here ``eth/ipv4/udp``) and *flow attributes*
(``flw_attr``: addresses and ports that may be wild-carded, resource reservations, priority).
Messages pushed and pulled carry *data attributes* (``data_attr``), the in-band counterpart drawn
from the same set. This module parses and validates all three so that a mistake is reported at
``open``, naming the bad layer or field, instead of becoming a flow-table entry that silently never
matches. `FlowSpec.matches` is the software reference for the device's flow table.

Standard library only: the host package must import on a bare install.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias
from urllib.parse import quote, unquote_plus

from .errors import FlowAttributeError, FlowTemplateError

__all__ = [
    "ATTRIBUTES", "DATA_ATTRIBUTES", "FOLLOWS", "LAYERS", "MATCH_FIELDS", "DataAttributes",
    "FlowAttributes", "FlowSpec", "FlowTemplate", "validate_data_attributes",
]

#: Which layer may follow which (``None``: what a template may start with). Starting above the
#: link layer (``ipv4/udp``, ``udp``) describes a host socket; ``raw`` is a protocol-less byte
#: stream such as a file and stands alone; ``qinq`` is an 802.1ad outer tag, an 802.1Q ``vlan``
#: tag must follow it, and a frame carries at most two tags.
FOLLOWS: dict[str | None, tuple[str, ...]] = {
    None: ("raw", "eth", "ipv4", "ipv6", "udp", "tcp"),
    "raw": (),
    "eth": ("vlan", "qinq", "arp", "ipv4", "ipv6"),
    "qinq": ("vlan",),
    "vlan": ("vlan", "arp", "ipv4", "ipv6"),
    "arp": (),
    "ipv4": ("udp", "tcp", "icmp"),
    "ipv6": ("udp", "tcp", "icmpv6"),
    "udp": (), "tcp": (), "icmp": (), "icmpv6": (),
}
LAYERS: tuple[str, ...] = tuple(layer for layer in FOLLOWS if layer)
_MAX_TAGS = 2
_PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}
_ETHERTYPES = {"ipv4": 0x0800, "arp": 0x0806, "ipv6": 0x86DD}
_MAC_ALL = (1 << 48) - 1
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_ADDRESS = {4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}


def _suggest(word: object, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word).lower(), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclasses.dataclass(frozen=True, slots=True)
class FlowTemplate:
    """The protocol layers of a flow, outermost first, e.g. ``eth/ipv4/udp`` (paper 3.2).

    Every instance is valid: the constructor checks the order against `FOLLOWS`. Build one with
    `FlowTemplate.parse`, which also accepts names in any case and with blanks around them.
    """

    layers: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        text = "/".join(map(str, self.layers))
        if not self.layers:
            raise FlowTemplateError("flow template is empty (expected e.g. 'eth/ipv4/udp')")
        prev, tags = None, 0
        for pos, layer in enumerate(self.layers, 1):
            if layer not in LAYERS:
                raise FlowTemplateError(
                    f"flow template {text!r}: unknown layer {layer!r} at position {pos}"
                    f"{_suggest(layer, LAYERS)}; known layers: {', '.join(LAYERS)}")
            allowed = tuple(x for x in FOLLOWS[prev] if tags < _MAX_TAGS or x != "vlan")
            if layer not in allowed:
                where = "start a template" if prev is None else f"follow {prev!r}"
                expected = f"expected one of: {', '.join(allowed)}" if allowed else (
                    f"nothing may follow {prev!r}")
                limit = "; at most two VLAN tags" if tags == _MAX_TAGS and layer == "vlan" else ""
                raise FlowTemplateError(
                    f"flow template {text!r}: {layer!r} at position {pos} cannot {where} "
                    f"({expected}{limit})")
            prev, tags = layer, tags + (layer in ("vlan", "qinq"))
        if prev == "qinq":
            raise FlowTemplateError(f"flow template {text!r}: 'qinq' at position "
                                    f"{len(self.layers)} must be followed by 'vlan'")

    @classmethod
    def parse(cls, template: FlowTemplate | str | Iterable[str]) -> FlowTemplate:
        """A template from ``"eth/ipv4/udp"``, a sequence of layer names, or a FlowTemplate."""
        if isinstance(template, FlowTemplate):
            return template
        if isinstance(template, str):
            parts: list[Any] = template.split("/") if template.strip() else []
        elif isinstance(template, Iterable):
            parts = list(template)
        else:
            raise FlowTemplateError(f"flow template: got {type(template).__name__}, expected a "
                                    "string such as 'eth/ipv4/udp' or a sequence of layer names")
        layers = tuple(p.strip().lower() if isinstance(p, str) else "" for p in parts)
        if "" in layers:
            pos = layers.index("")
            raise FlowTemplateError(f"flow template {'/'.join(map(str, parts)).strip()!r}: empty "
                                    f"or non-string layer {parts[pos]!r} at position {pos + 1} "
                                    "(expected a layer name)")
        return cls(layers)

    def __str__(self) -> str:
        return "/".join(self.layers)

    def has(self, layer: str) -> bool:
        """Whether the template contains `layer`."""
        return layer in self.layers

    @property
    def l3(self) -> str | None:
        """``'ipv4'``, ``'ipv6'`` or None (``arp`` is not an IP layer; see `has`)."""
        return next((x for x in self.layers if x in ("ipv4", "ipv6")), None)

    @property
    def l4(self) -> str | None:
        """``'udp'``, ``'tcp'``, ``'icmp'``, ``'icmpv6'`` or None."""
        return next((x for x in self.layers if x in _PROTOCOLS), None)


# ---- attribute value parsers: each takes (field, value, template) and returns the typed value


def _bad(field: str, value: object, expected: str) -> FlowAttributeError:
    return FlowAttributeError(field, f"got {value!r}, expected {expected}")


def _to_int(value: object) -> int | None:
    """An int from an int or a decimal/0x/0o/0b string; None otherwise (a bool is no int here)."""
    if not isinstance(value, str):
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    text = value.strip()
    try:
        return int(text, 0) if text[1:2].lower() in ("x", "o", "b") else int(text)
    except ValueError:
        return None


def _ranged(lo: int | None, hi: int | None, expected: str | None = None):
    if expected is None:
        expected = (f"an integer {lo}..{hi}" if hi is not None else
                    f"an integer >= {lo}" if lo is not None else "an integer")

    def parse(field, value, _template=None):
        n = _to_int(value)
        if n is None or (lo is not None and n < lo) or (hi is not None and n > hi):
            raise _bad(field, value, expected)
        return n
    return parse


def _named(names: Mapping[str, int], hi: int, what: str):
    number = _ranged(0, hi, f"{what} 0..{hi:#x} or one of: {', '.join(names)}")

    def parse(field, value, _template=None):
        if isinstance(value, str) and value.strip().lower() in names:
            return names[value.strip().lower()]
        return number(field, value)
    return parse


_MAC_RE = re.compile(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}", re.IGNORECASE)


def _mac_str(mac: int, mask: int) -> str:
    text = ":".join(f"{b:02x}" for b in mac.to_bytes(6, "big"))
    return text if mask == _MAC_ALL else f"{text}/{mask.bit_count()}"


def _mac(field, value, _template=None) -> tuple[int, int] | tuple[None, None]:
    """(address, mask) from ``aa:bb:cc:dd:ee:ff``, a prefix ``aa:bb:cc:00:00:00/24``, an int or
    6 bytes; a /0 prefix is a wildcard. Bits beyond the prefix are refused, like ipaddress."""
    expected = "a MAC 'aa:bb:cc:dd:ee:ff', a prefix 'aa:bb:cc:00:00:00/24', or '*'"
    if isinstance(value, bytes | bytearray) and len(value) == 6:
        return int.from_bytes(value, "big"), _MAC_ALL
    if not isinstance(value, str):
        n = _to_int(value)
        if n is None or not 0 <= n <= _MAC_ALL:
            raise _bad(field, value, expected)
        return n, _MAC_ALL
    text, slash, plen = value.strip().partition("/")
    if not _MAC_RE.fullmatch(text) or (slash and not (plen.isdigit() and int(plen) <= 48)):
        raise _bad(field, value, expected)
    mac = int(re.sub("[:-]", "", text), 16)
    mask = _MAC_ALL ^ (_MAC_ALL >> int(plen)) if slash else _MAC_ALL
    if mac & ~mask:
        raise _bad(field, value, f"no bits set beyond the /{plen} prefix, e.g. "
                                 f"{_mac_str(mac & mask, mask)!r}")
    return (mac, mask) if mask else (None, None)


def _net(field, value, template=None) -> _Network:
    """An IP network; a bare address is a /32 or /128, an int takes the template's family."""
    expected = "an address or network such as '10.0.0.0/8' or '2001:db8::/32'"
    if isinstance(value, _Network):
        return value
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            six = template is not None and template.l3 == "ipv6"
            return ipaddress.IPv6Network(value) if six else ipaddress.IPv4Network(value)
        if isinstance(value, str | ipaddress.IPv4Address | ipaddress.IPv6Address):
            return ipaddress.ip_network(value.strip() if isinstance(value, str) else value)
    except ValueError as e:
        raise _bad(field, value, f"{expected} ({e})") from None
    raise _bad(field, value, expected)


def _port(field, value, _template=None) -> int | tuple[int, int]:
    """A port, or an inclusive range ``'lo-hi'``/``(lo, hi)``; a one-port range is that port."""
    if isinstance(value, str) and "-" in value:
        parts: Any = value.split("-", 1)
    else:
        parts = value if isinstance(value, tuple | list) else [value]
    nums = [_to_int(p) for p in parts]
    if (len(nums) not in (1, 2) or any(n is None or not 0 <= n <= 65535 for n in nums)
            or nums[0] > nums[-1]):
        raise _bad(field, value, "a port 0..65535, a range 'lo-hi' with lo <= hi, or '*'")
    return nums[0] if nums[0] == nums[-1] else (nums[0], nums[-1])


_UNITS = {"": 1, "B": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9,
          "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_SIZE_RE = re.compile(r"(\d+)\s*(" + "|".join(_UNITS) + r")")


def _size(field, value, _template=None) -> int:
    """A byte count > 0; strings may carry a suffix k/K, M, G (powers of 10) or KiB, MiB, GiB."""
    if isinstance(value, str):
        m = _SIZE_RE.fullmatch(value.strip())
        n = int(m[1]) * _UNITS[m[2]] if m else None
    else:
        n = _to_int(value)
    if n is None or n <= 0:
        raise _bad(field, value, "a byte count > 0, optionally with a suffix k, M, G, KiB, MiB "
                                 "or GiB, e.g. '64KiB'")
    return n


def _label(field, value, _template=None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(field, value, "a non-empty string label")
    return value.strip()


_PARSERS = {
    "in_port": _ranged(0, None), "src_mac": _mac, "dst_mac": _mac,
    "ethertype": _named(_ETHERTYPES, 0xFFFF, "an EtherType"), "vlan": _ranged(0, 4095),
    "src_ip": _net, "dst_ip": _net, "protocol": _named(_PROTOCOLS, 0xFF, "an IP protocol"),
    "src_port": _port, "dst_port": _port, "priority": _ranged(0, 7), "weight": _ranged(1, 255),
    "queue_limit": _size, "queue_frames": _ranged(1, None), "name": _label,
}
#: Every attribute name `FlowAttributes.parse` accepts, in canonical order.
ATTRIBUTES: tuple[str, ...] = tuple(_PARSERS)
#: The attributes that select packets (header fields); the rest reserve resources or label.
MATCH_FIELDS: tuple[str, ...] = ATTRIBUTES[:10]


def _implied(template: FlowTemplate) -> dict[str, int]:
    """The ethertype and protocol a template fixes (ethertype only when it has an eth layer)."""
    implied = {"protocol": _PROTOCOLS[template.l4]} if template.l4 else {}
    net = template.l3 or ("arp" if template.has("arp") else None)
    if net and template.has("eth"):
        implied["ethertype"] = _ETHERTYPES[net]
    return implied


def _items(attrs: object) -> list[tuple[Any, Any]]:
    if attrs is None:
        return []
    if isinstance(attrs, FlowAttributes):
        return list(attrs.to_dict().items())
    if isinstance(attrs, Mapping):
        return list(attrs.items())
    if isinstance(attrs, str):
        pairs = []
        for item in filter(None, (s.strip() for s in attrs.split(","))):
            key, eq, value = item.partition("=")
            if not eq:
                raise FlowAttributeError(key.strip(), f"got {item!r}, expected name=value")
            pairs.append((key.strip(), value.strip()))
        return pairs
    if isinstance(attrs, Iterable):
        pairs = [tuple(p) if isinstance(p, tuple | list) else (p,) for p in attrs]
        if bad := next((p for p in pairs if len(p) != 2), None):
            raise FlowAttributeError("attrs", f"got {bad!r}, expected (name, value) pairs")
        return pairs
    raise FlowAttributeError("attrs", f"got {type(attrs).__name__}, expected None, a mapping or "
                                      "a string 'name=value,...'")


@dataclasses.dataclass(frozen=True, slots=True)
class FlowAttributes:
    """Validated, typed flow attributes (``flw_attr``, paper 3.2); None is a wildcard.

    Build with `parse`, which checks every value and its agreement with the template. Match
    fields: `in_port` (ingress Ethernet port), `src_mac`/`dst_mac` as 48-bit ints with their
    `*_mask` (a prefix mask), `ethertype` (after any VLAN tags), `vlan` (the outermost tag's VID),
    `src_ip`/`dst_ip` (ipaddress networks), `protocol` (IP protocol number), `src_port`/`dst_port`
    (an int, or an inclusive ``(lo, hi)`` range). Resources: `priority` (0..7, 7 highest),
    `weight` (DRR weight 1..255), `queue_limit` (bytes), `queue_frames`; `name` is a label.
    """

    in_port: int | None = None
    src_mac: int | None = None
    src_mac_mask: int | None = None
    dst_mac: int | None = None
    dst_mac_mask: int | None = None
    ethertype: int | None = None
    vlan: int | None = None
    src_ip: _Network | None = None
    dst_ip: _Network | None = None
    protocol: int | None = None
    src_port: int | tuple[int, int] | None = None
    dst_port: int | tuple[int, int] | None = None
    priority: int = 0
    weight: int = 1
    queue_limit: int | None = None
    queue_frames: int | None = None
    name: str | None = None

    @classmethod
    def parse(cls, template: FlowTemplate | str | Iterable[str], attrs: object = None
              ) -> FlowAttributes:
        """Validate `attrs` (None, a mapping, ``"dst_port=53,src_ip=10.0.0.0/8"``, name/value
        pairs, or a FlowAttributes) for `template`. Values may be strings or native types; ``*``
        or None leaves a match field wild. `protocol` and `ethertype` default to the template's."""
        t = FlowTemplate.parse(template)
        values: dict[str, Any] = {}
        seen = set()
        for key, value in _items(attrs):
            if key not in _PARSERS:
                raise FlowAttributeError(key, f"unknown attribute{_suggest(key, ATTRIBUTES)}; "
                                              f"known: {', '.join(ATTRIBUTES)}")
            if key in seen:
                raise FlowAttributeError(key, f"given twice (again as {value!r})")
            seen.add(key)
            wild = value is None or (isinstance(value, str) and value.strip() == "*")
            if not (wild and key in MATCH_FIELDS) and value is not None:
                parsed = _PARSERS[key](key, value, t)
                if parsed != (None, None):  # a /0 MAC prefix is a wildcard
                    values[key] = parsed
        _cross_check(t, values)
        for key in ("src_mac", "dst_mac"):
            if key in values:
                values[key], values[key + "_mask"] = values[key]
        return cls(**values)

    def to_dict(self, template: FlowTemplate | str | None = None) -> dict[str, Any]:
        """Canonical attributes: wildcards and defaults omitted, addresses as strings, port
        ranges as ``'lo-hi'``; with a `template`, also what it implies. Round-trips via parse."""
        implied = _implied(FlowTemplate.parse(template)) if template is not None else {}
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if (value is None or f.name.endswith("_mask") or value == f.default
                    or implied.get(f.name) == value):
                continue
            if f.name in ("src_mac", "dst_mac"):
                value = _mac_str(value, getattr(self, f.name + "_mask"))
            elif isinstance(value, _Network):
                value = str(value)
            elif isinstance(value, tuple):
                value = f"{value[0]}-{value[1]}"
            out[f.name] = value
        return out

    def matches(self, fields: Mapping[str, Any]) -> bool:
        """Whether a packet's header `fields` (names as `MATCH_FIELDS`) satisfy every non-wild
        attribute: prefix match for IPs, mask for MACs, inclusive port ranges. A field the packet
        lacks fails a non-wild attribute."""
        for key in MATCH_FIELDS:
            want, got = getattr(self, key), fields.get(key)
            if want is None:
                continue
            try:  # a missing (None) or malformed packet field raises TypeError or ValueError
                if key in ("src_mac", "dst_mac"):
                    ok = _mac(key, got)[0] & getattr(self, key + "_mask") == want
                elif key in ("src_ip", "dst_ip"):
                    addr = (_ADDRESS[want.version](got) if isinstance(got, int) else
                            ipaddress.ip_address(got))
                    ok = addr.version == want.version and addr in want
                else:
                    lo, hi = want if isinstance(want, tuple) else (want, want)
                    ok = lo <= _to_int(got) <= hi
            except (TypeError, ValueError):
                return False
            if not ok:
                return False
        return True


def _cross_check(t: FlowTemplate, values: dict[str, Any]) -> None:
    """Check the attributes against the template's layers (paper 3.2: the template chooses the
    protocol modules, attributes parametrise them) and fill in the implied ethertype/protocol."""
    def need(key: str, ok: bool, what: str) -> None:
        if key in values and not ok:
            value = values[key]
            shown = (_mac_str(*value) if key.endswith("_mac") else
                     str(value) if isinstance(value, _Network) else value)
            raise FlowAttributeError(key, f"{shown!r} needs {what} in the flow template {str(t)!r}")
    for key in ("src_mac", "dst_mac", "ethertype"):
        need(key, t.has("eth"), "an 'eth' layer")
    need("vlan", t.has("vlan"), "a 'vlan' layer")
    for key in ("src_ip", "dst_ip"):
        if key in values:
            family = f"ipv{values[key].version}"
            need(key, t.has(family), f"an {family!r} layer")
    for key in ("src_port", "dst_port"):
        need(key, t.l4 in ("udp", "tcp"), "a 'udp' or 'tcp' layer")
    need("protocol", bool(t.l3 or t.l4), "an 'ipv4', 'ipv6', 'udp' or 'tcp' layer")
    wrong = {"ipv4": _PROTOCOLS["icmpv6"], "ipv6": _PROTOCOLS["icmp"]}.get(t.l3 or "")
    if wrong is not None and values.get("protocol") == wrong:
        raise FlowAttributeError("protocol", f"got {wrong}, which {t.l3} does not carry (flow "
                                             f"template {str(t)!r})")
    for key, implied in _implied(t).items():
        got = values.setdefault(key, implied)
        if got != implied:
            fmt = "{:#06x}" if key == "ethertype" else "{}"
            layer = t.l4 if key == "protocol" else (t.l3 or "arp")
            raise FlowAttributeError(key, f"got {fmt.format(got)}, but the flow template "
                                          f"{str(t)!r} carries {layer} ({fmt.format(implied)})")


@dataclasses.dataclass(frozen=True, slots=True)
class FlowSpec:
    """A flow template with its attributes: everything ``open`` needs (paper 3.2), with the
    canonical text form ``eth/ipv4/udp?dst_port=53&src_ip=10.0.0.0/8`` usable in URLs."""

    template: FlowTemplate
    attrs: FlowAttributes

    @classmethod
    def parse(cls, template: FlowSpec | FlowTemplate | str | Iterable[str], attrs: object = None
              ) -> FlowSpec:
        """A spec from a template and attributes, or from one ``template?query`` string."""
        if isinstance(template, FlowSpec) and attrs is None:
            return template
        if isinstance(template, str) and "?" in template:
            if attrs is not None:
                raise FlowTemplateError(f"flow template {template!r}: attributes given both in "
                                        "the '?query' and as an argument")
            path, _, query = template.partition("?")
            return cls.from_url_query(path, query)
        t = FlowTemplate.parse(template)
        return cls(t, FlowAttributes.parse(t, attrs))

    @classmethod
    def from_url_query(cls, template: FlowTemplate | str | Iterable[str], query: str) -> FlowSpec:
        """A spec from a URL query ``dst_port=53&priority=2`` (percent-decoded; no repeats)."""
        pairs = []
        for item in filter(None, query.lstrip("?").split("&")):
            key, eq, value = item.partition("=")
            if not eq:
                raise FlowAttributeError(unquote_plus(key), f"got {item!r}, expected name=value")
            pairs.append((unquote_plus(key), unquote_plus(value)))
        return cls.parse(template, pairs)

    def __str__(self) -> str:
        query = "&".join(f"{k}={quote(str(v), safe='/:*-.')}"
                         for k, v in self.attrs.to_dict(self.template).items())
        return f"{self.template}?{query}" if query else str(self.template)

    def matches(self, fields: Mapping[str, Any]) -> bool:
        """See `FlowAttributes.matches`: the software reference for the device's flow table."""
        return self.attrs.matches(fields)


#: Data attributes (``data_attr``, paper 3.2) travel with every message, so they are a plain dict:
#: no per-message object to build. `validate_data_attributes` checks one when that is wanted.
DataAttributes: TypeAlias = dict[str, Any]


def _timestamp(field, value, _template=None) -> int | float:
    n = _to_int(value)
    if n is None and isinstance(value, float | str):
        with contextlib.suppress(ValueError):
            n = float(value)
    if n is None or not math.isfinite(n) or n < 0:
        raise _bad(field, value, "a time in nanoseconds (int or float >= 0)")
    return n


_DATA_PARSERS = {
    "timestamp": _timestamp, "port": _ranged(0, None), "length": _ranged(0, None),
    "flags": _ranged(0, None), "vlan": _ranged(0, 4095), "status": _ranged(None, None),
    "offset": _ranged(0, None), "orig_len": _ranged(0, None), "linktype": _ranged(0, None),
    "src_addr": lambda key, value: value, "dst_addr": lambda key, value: value,
}
#: The known data attribute names; keys starting with ``x_`` are user extensions, passed through.
DATA_ATTRIBUTES: tuple[str, ...] = tuple(_DATA_PARSERS)


def validate_data_attributes(attrs: Mapping[str, Any] | None) -> DataAttributes:
    """A new dict with the known keys checked and coerced to numbers (`timestamp` ns, `port`,
    `length`, `flags`, `vlan`, `status`) and ``x_*`` keys passed through unchanged."""
    out: DataAttributes = {}
    for key, value in (attrs or {}).items():
        if isinstance(key, str) and key.startswith("x_"):
            out[key] = value
        elif key in _DATA_PARSERS:
            out[key] = _DATA_PARSERS[key](key, value)
        else:
            raise FlowAttributeError(key, f"unknown data attribute{_suggest(key, DATA_ATTRIBUTES)}"
                                          f"; known: {', '.join(DATA_ATTRIBUTES)}, or 'x_*' for "
                                          "user extensions")
    return out
