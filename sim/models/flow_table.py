# Reference model of the flow table (partner.hdl.flow_table.FlowTable), written from the
# semantics in docs/rules.md, and the cross-check that ties a compiled rule (partner.rules) to the
# host's meaning of its flow spec (partner.flow.FlowSpec.matches).
"""Flow-table reference model and rule cross-check.

`lookup` is the table's answer for one key. `key_from_fields` builds the `FLOW_KEY` a parser
produces from a packet's header fields (the dicts `FlowSpec.matches` takes, plus ``tags``,
``fragment`` and ``malformed``), so `cross_check` can compare, packet by packet, the ternary
entries a `Rule` compiles to with what its `FlowSpec` means. The `random_*` functions make
stimulus for the tests: bit-level entries and keys, and packets and rules drawn from shared
pools of addresses and ports so that they match often.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from partner.flow import FlowSpec, FlowTemplate
from partner.formats import ACTION, FLOW_KEY, FLOW_RULE, ActionKind, KeyFlag
from partner.rules import Action, Rule

__all__ = [
    "Result", "cross_check", "key_from_fields", "lookup", "random_bases", "random_entries",
    "random_key", "random_packet", "random_rule", "rule_matches", "spec_admits", "ternary_match",
]

_ETHERTYPE_FLAGS = {0x0806: KeyFlag.ARP, 0x0800: KeyFlag.IPV4, 0x86DD: KeyFlag.IPV6}


class Result(NamedTuple):
    """A lookup's answer: `hit` 0/1, `index` of the winning entry (0 on a miss), `action` as a
    packed `ACTION` word."""

    hit: int
    index: int
    action: int


def _word(struct, item: int | Mapping | Action) -> int:
    if isinstance(item, Action):
        return item.pack()
    if isinstance(item, Mapping):
        return struct.pack({k: int(v) if not isinstance(v, Mapping) else ACTION.pack(v)
                            for k, v in item.items()})
    return int(item)


def ternary_match(value: int, mask: int, key: int) -> bool:
    """The match of one entry: the key's bits under `mask` equal `value` (a value bit outside
    the mask can therefore never match)."""
    return key & mask == value


def lookup(rules: Iterable[int | Mapping], key: int | Mapping,
           default_action: int | Mapping | Action) -> Result:
    """The table's answer for `key`: among valid entries that match, the highest priority,
    equal priorities to the lowest index; no match or a MALFORMED key: (0, 0, default).

    `rules` are packed `FLOW_RULE` words or field dicts (index = position); `key` a packed
    `FLOW_KEY` or a field dict; actions packed, dicts of `ACTION` fields, or `Action`s.
    """
    key = _word(FLOW_KEY, key)
    default = _word(ACTION, default_action)
    if FLOW_KEY.unpack(key)["flags"] & KeyFlag.MALFORMED:
        return Result(0, 0, default)
    best = None
    for index, rule in enumerate(rules):
        r = FLOW_RULE.unpack(_word(FLOW_RULE, rule))
        if r["valid"] and ternary_match(r["value"], r["mask"], key) and (
                best is None or r["priority"] > best[1]["priority"]):
            best = (index, r)
    if best is None:
        return Result(0, 0, default)
    return Result(1, best[0], best[1]["action"])


# ---------------------------------------------------------------- packets and the cross-check


def _mac(value: Any) -> int:
    if isinstance(value, bytes | bytearray):
        return int.from_bytes(value, "big")
    if isinstance(value, str):
        return int(value.replace(":", "").replace("-", ""), 16)
    return int(value)


def _ip(value: Any) -> int:
    return int(value) if isinstance(value, int) else int(ipaddress.ip_address(value))


def key_from_fields(fields: Mapping[str, Any]) -> dict[str, int]:
    """The `FLOW_KEY` fields a parser produces for a packet described by `fields`.

    `fields` uses the names of `partner.flow.MATCH_FIELDS` (None or absent: the packet has no
    such header) plus ``tags`` (VLAN tags, default 1 if ``vlan`` is given else 0), ``fragment``
    and ``malformed`` (bools). Absent fields are 0 in the key; L4 is set when ports are present.
    """
    tags = fields.get("tags", 0 if fields.get("vlan") is None else 1)
    ethertype = fields.get("ethertype") or 0
    flags = (KeyFlag.VLAN if tags >= 1 else 0) | (KeyFlag.QINQ if tags >= 2 else 0)
    flags |= _ETHERTYPE_FLAGS.get(ethertype, 0)
    if fields.get("src_port") is not None or fields.get("dst_port") is not None:
        flags |= KeyFlag.L4
    flags |= KeyFlag.FRAGMENT if fields.get("fragment") else 0
    flags |= KeyFlag.MALFORMED if fields.get("malformed") else 0
    get = fields.get
    return {
        "flags": int(flags), "in_port": get("in_port") or 0, "vlan": get("vlan") or 0,
        "ethertype": ethertype,
        "src_mac": _mac(get("src_mac") or 0), "dst_mac": _mac(get("dst_mac") or 0),
        "protocol": get("protocol") or 0,
        "src_ip": _ip(get("src_ip") or 0), "dst_ip": _ip(get("dst_ip") or 0),
        "src_port": get("src_port") or 0, "dst_port": get("dst_port") or 0,
    }


def spec_admits(template: FlowTemplate, fields: Mapping[str, Any]) -> bool:
    """What a template says beyond its attributes: its VLAN layers need that many tags.

    `FlowSpec.matches` checks attributes only, so ``eth/vlan/ipv4`` without a ``vlan`` attribute
    would also take untagged frames there; the flow table requires the tag (KeyFlag.VLAN).
    """
    tags = fields.get("tags", 0 if fields.get("vlan") is None else 1)
    return tags >= sum(layer in ("vlan", "qinq") for layer in template.layers)


def rule_matches(rule: Rule | Iterable[Mapping], key: int | Mapping) -> bool:
    """Whether any entry of the compiled `rule` (a `Rule`, or its `expand()` list, to compile
    once and check many keys) matches `key`: the ternary compare only, the table's MALFORMED
    override is not part of a rule."""
    key = _word(FLOW_KEY, key)
    entries = rule.expand() if isinstance(rule, Rule) else rule
    return any(ternary_match(e["value"], e["mask"], key) for e in entries)


def cross_check(rule: Rule, fields: Mapping[str, Any], entries: list | None = None) -> bool:
    """The rule's verdict on a packet, after asserting that the compiled entries (`entries`, or
    ``rule.expand()``) agree with ``rule.spec.matches(fields)`` and `spec_admits`. A raw `match`
    term is not part of the spec: only rules without one can be checked."""
    if rule.match:
        raise ValueError("cross_check needs a rule without raw 'match' terms")
    entries = rule.expand() if entries is None else entries
    want = rule.spec.matches(fields) and spec_admits(rule.spec.template, fields)
    key = key_from_fields(fields)
    got = rule_matches(entries, key)
    if got != want:
        raise AssertionError(
            f"rule {rule.spec} compiles to entries that {'match' if got else 'miss'} a packet "
            f"its flow spec {'accepts' if want else 'refuses'}: fields {dict(fields)}, key "
            f"{key}, entries {[(hex(e['value']), hex(e['mask'])) for e in entries]}")
    return got


# ---------------------------------------------------------------------------------- stimulus

_MALFORMED = int(KeyFlag.MALFORMED)


def random_bases(rng: random.Random, n: int = 5) -> list[int]:
    """`n` random well-formed keys that `random_entries` and `random_key` start from."""
    return [FLOW_KEY.pack({f.name: rng.getrandbits(f.width) for f in FLOW_KEY}) & ~_MALFORMED
            for _ in range(n)]


def random_entries(rng: random.Random, bases: list[int], n: int) -> list[int]:
    """`n` packed entries cut from base keys: 1-5 fields each, full or random-bit masks, mostly
    priorities 0/1, some duplicates of earlier entries (ties), some invalid, a few with a value
    bit outside the mask (they never match)."""
    rules: list[int] = []
    for _ in range(n):
        if rules and rng.random() < 0.2:
            r = FLOW_RULE.unpack(rng.choice(rules))
            rules.append(FLOW_RULE.pack({**r, "valid": 1,
                                         "action": rng.getrandbits(ACTION.width)}))
            continue
        base = FLOW_KEY.unpack(rng.choice(bases))
        value, mask = {}, {}
        for f in rng.sample(list(FLOW_KEY), rng.randint(1, 5)):
            mask[f.name] = f.mask if rng.random() < 0.5 else rng.getrandbits(f.width)
            value[f.name] = base[f.name] & mask[f.name]
        v, m = FLOW_KEY.pack(value), FLOW_KEY.pack(mask)
        if rng.random() < 0.05:
            v |= 1 << rng.randrange(FLOW_KEY.width)
        rules.append(FLOW_RULE.pack(
            valid=rng.random() < 0.85,
            priority=rng.randrange(2) if rng.random() < 0.85 else rng.randrange(256),
            action=rng.getrandbits(ACTION.width), value=v, mask=m))
    return rules


def random_key(rng: random.Random, bases: list[int], malformed: float = 0.05) -> int:
    """A base key with about one field in ten replaced; MALFORMED with probability
    `malformed`."""
    key = FLOW_KEY.unpack(rng.choice(bases))
    for f in FLOW_KEY:
        if rng.random() < 0.1:
            key[f.name] = rng.getrandbits(f.width)
    key["flags"] = (key["flags"] & ~_MALFORMED) | (_MALFORMED if rng.random() < malformed else 0)
    return FLOW_KEY.pack(key)


_MACS = [0x020000000001, 0x020000000002, 0x02AABB000001, 0x02AABBCC0009, 0xFFFFFFFFFFFF]
_V4 = ["10.0.0.1", "10.1.2.3", "10.1.200.3", "192.168.1.1", "192.168.1.7", "172.16.5.4"]
_V6 = ["2001:db8::1", "2001:db8:1::5", "2001:db9::5", "fe80::1", "fe80::2:1"]
_PORTS = [0, 1, 53, 80, 443, 1000, 1023, 1024, 1050, 5353, 40000, 65535]
_V4_NETS = ["10.0.0.0/8", "10.1.0.0/16", "192.168.1.7", "192.168.1.0/29", "0.0.0.0/0"]
_V6_NETS = ["2001:db8::/32", "fe80::/10", "2001:db8:1::5/128", "2001:db8::/31"]
_MAC_ATTRS = ["02:00:00:00:00:01", "02:aa:bb:00:00:00/24", "02:00:00:00:00:00/8",
              "ff:ff:ff:ff:ff:ff"]
_PORT_ATTRS = [53, 80, 1023, "1000-1100", "1024-65535", "0-1023", "50-60", "1-2", "443-443"]
_TEMPLATES = ["eth", "eth/arp", "eth/ipv4", "eth/ipv4/udp", "eth/ipv4/tcp", "eth/ipv4/icmp",
              "eth/ipv6", "eth/ipv6/udp", "eth/ipv6/tcp", "eth/ipv6/icmpv6", "eth/vlan",
              "eth/vlan/ipv4/udp", "eth/qinq/vlan/ipv6", "eth/vlan/vlan/arp",
              "eth/vlan/ipv6/tcp"]


def random_packet(rng: random.Random, ports: int = 4) -> dict[str, Any]:
    """Header fields of a plausible frame (consistent as a parser would see them): 0-2 tags,
    ARP, IPv4, IPv6 or another EtherType, UDP/TCP/other protocols, fragments without ports."""
    tags = rng.choice([0, 0, 0, 1, 2])
    f: dict[str, Any] = {"in_port": rng.randrange(ports), "src_mac": rng.choice(_MACS),
                         "dst_mac": rng.choice(_MACS), "tags": tags}
    if tags:
        f["vlan"] = rng.choice([0, 5, 100, 4095])
    kind = rng.choice(["arp", "ipv4", "ipv4", "ipv6", "ipv6", "other"])
    if kind == "arp":
        f["ethertype"] = 0x0806
    elif kind == "other":
        f["ethertype"] = rng.choice([0x88CC, 0x88B5, 0x8847])
    else:
        f["ethertype"] = 0x0800 if kind == "ipv4" else 0x86DD
        pool = _V4 if kind == "ipv4" else _V6
        f["src_ip"] = ipaddress.ip_address(rng.choice(pool))
        f["dst_ip"] = ipaddress.ip_address(rng.choice(pool))
        f["protocol"] = rng.choice([17, 17, 6, 6, 47, 1 if kind == "ipv4" else 58])
        fragment = rng.choice([None, None, None, "first", "later"])
        f["fragment"] = fragment is not None
        if f["protocol"] in (6, 17) and fragment != "later":
            for name in ("src_port", "dst_port"):
                f[name] = rng.choice(_PORTS) if rng.random() < 0.8 else rng.randrange(65536)
    return f


def random_rule(rng: random.Random, ports: int = 4, queues: int = 4) -> Rule:
    """A rule over the same pools as `random_packet`: random template, attributes (prefixes,
    MAC prefixes, port ranges), action and a priority 0..3."""
    template = rng.choice(_TEMPLATES)
    layers = template.split("/")
    attrs: dict[str, Any] = {}
    if rng.random() < 0.15:
        attrs["in_port"] = rng.randrange(ports)
    for name in ("src_mac", "dst_mac"):
        if rng.random() < 0.15:
            attrs[name] = rng.choice(_MAC_ATTRS)
    if "vlan" in layers and rng.random() < 0.5:
        attrs["vlan"] = rng.choice([0, 5, 100])
    if template == "eth" and rng.random() < 0.4:
        attrs["ethertype"] = rng.choice([0x0800, 0x86DD, 0x0806, 0x88CC])
    l3 = next((x for x in layers if x in ("ipv4", "ipv6")), None)
    if l3:
        nets = _V4_NETS if l3 == "ipv4" else _V6_NETS
        for name in ("src_ip", "dst_ip"):
            if rng.random() < 0.3:
                attrs[name] = rng.choice(nets)
        if layers[-1] == l3 and rng.random() < 0.3:
            attrs["protocol"] = rng.choice([17, 6, 47])
    if layers[-1] in ("udp", "tcp"):
        for name in ("src_port", "dst_port"):
            if rng.random() < 0.4:
                attrs[name] = rng.choice(_PORT_ATTRS)
    kind = rng.choice(list(ActionKind))
    return Rule(FlowSpec.parse(template, attrs), kind,
                queue=rng.randrange(queues) if kind == ActionKind.HOST else 0,
                port=rng.randrange(ports) if kind == ActionKind.FORWARD else 0,
                demux_key=rng.randrange(1 << 16), priority=rng.randrange(4))
