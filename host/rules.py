# Flow-table rules: the host's compiler from flow specs (paper section 3.2: flow template + flow
# attributes) to ternary `flow_rule` entries (partner.formats.FLOW_RULE), the table allocator, and
# the JSON rules file (format documented in docs/rules.md). Standard library only.
"""Flow-table rules: compile, validate, allocate, load from a rules file.

A `Rule` is a `FlowSpec` (``eth/ipv4/udp?dst_port=53``) plus an action, a priority and optional
raw ternary terms; `Rule.expand` turns it into the `FLOW_RULE` entries the device's flow table
holds (one entry, or several when a port range is not one aligned block). `RuleTable` hands out
table indices and keeps the default action; `load_rules` reads the JSON rules file. Every error
is a `RuleError` whose message starts with the path of the bad item (``rules[3].attrs.dst_port``).

Semantics of the table (see docs/rules.md): among valid entries whose ``key & mask == value``
the highest priority wins, equal priorities go to the lowest index; no match, or a key with
`KeyFlag.MALFORMED`, takes the default action.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import os
from collections.abc import Mapping
from typing import Any

from .errors import FlowAttributeError, FlowTemplateError, PartnerError
from .flow import ATTRIBUTES, MATCH_FIELDS, FlowSpec
from .formats import (
    ACTION,
    DEMUX_KEY_BITS,
    FLOW_KEY,
    FLOW_RULE,
    MAX_FLOWS,
    MAX_PORTS,
    MAX_QUEUES,
    ActionKind,
    KeyFlag,
)

__all__ = ["Action", "Rule", "RuleError", "RuleTable", "dump_rules", "load_rules", "port_blocks"]

MAX_PRIORITY = (1 << FLOW_RULE["priority"].width) - 1


class RuleError(PartnerError, ValueError):
    """A rule, action or rules file that cannot become flow-table entries.

    `field` is the path of the bad item (``rules[3].attrs.dst_port``, ``default.queue``, or
    ``queue`` for a lone `Rule`); the message starts with it.
    """

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    def within(self, prefix: str) -> RuleError:
        """The same error one level down, e.g. ``queue`` inside ``rules[3]``."""
        return RuleError(f"{prefix}.{self.field}" if self.field else prefix, self.message)


def _suggest(word: object, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _int(field: str, value: object, lo: int, hi: int, what: str = "an integer") -> int:
    """An int lo..hi from an int or a decimal/0x string; a bool is not an int here."""
    n = None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str):
        try:
            n = int(value.strip(), 0)
        except ValueError:
            n = None
    if n is None or not lo <= n <= hi:
        raise RuleError(field, f"got {value!r}, expected {what} {lo}..{hi}")
    return n


def _kind(field: str, value: object) -> ActionKind:
    if isinstance(value, ActionKind):
        return value
    if isinstance(value, str) and value.strip().upper() in ActionKind.__members__:
        return ActionKind[value.strip().upper()]
    names = [k.name.lower() for k in ActionKind]
    raise RuleError(field, f"got {value!r}, expected one of: {', '.join(names)}"
                           f"{_suggest(str(value).lower(), names)}")


# ---------------------------------------------------------------------------------- actions


@dataclasses.dataclass(frozen=True)
class Action:
    """What the device does with a frame (partner.formats.ACTION): deliver it to host `queue`
    tagged with `demux_key` (HOST), send it out of Ethernet `port` (FORWARD), hand it to the
    firmware (SLOWPATH) or drop it. `demux_key` travels with the frame for every kind."""

    kind: ActionKind = ActionKind.HOST
    queue: int = 0
    port: int = 0
    demux_key: int = 0

    def __post_init__(self):
        object.__setattr__(self, "kind", _kind("action", self.kind))
        object.__setattr__(self, "queue", _int("queue", self.queue, 0, MAX_QUEUES - 1, "a queue"))
        object.__setattr__(self, "port", _int("port", self.port, 0, MAX_PORTS - 1, "a port"))
        object.__setattr__(self, "demux_key", _int(
            "demux_key", self.demux_key, 0, (1 << DEMUX_KEY_BITS) - 1, "a 16-bit demux key"))
        # A queue on a FORWARD rule would silently mean nothing: refuse what the kind ignores.
        if self.queue and self.kind != ActionKind.HOST:
            raise RuleError("queue", f"only a 'host' action uses a queue, not "
                                     f"{self.kind.name.lower()!r}")
        if self.port and self.kind != ActionKind.FORWARD:
            raise RuleError("port", f"only a 'forward' action uses a port, not "
                                    f"{self.kind.name.lower()!r}")

    def check(self, *, ports: int, queues: int) -> None:
        """Refuse a queue or port the device does not have."""
        if self.kind == ActionKind.HOST and self.queue >= queues:
            raise RuleError("queue", f"got {self.queue}, but the device has {queues} host "
                                     f"queue{'s' * (queues != 1)} (0..{queues - 1})")
        if self.kind == ActionKind.FORWARD and self.port >= ports:
            raise RuleError("port", f"got {self.port}, but the device has {ports} Ethernet "
                                    f"port{'s' * (ports != 1)} (0..{ports - 1})")

    def fields(self) -> dict[str, int]:
        return {"kind": int(self.kind), "queue": self.queue, "port": self.port,
                "demux_key": self.demux_key}

    def pack(self) -> int:
        return ACTION.pack(self.fields())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.kind.name.lower()}
        if self.kind == ActionKind.HOST:
            out["queue"] = self.queue
        if self.kind == ActionKind.FORWARD:
            out["port"] = self.port
        if self.demux_key:
            out["demux_key"] = self.demux_key
        return out

    @classmethod
    def from_dict(cls, obj: object, *, extra: tuple[str, ...] = ()) -> Action:
        """An action from ``{"action": "host", "queue": 1, "demux_key": 7}``; keys in `extra`
        are skipped (the caller reads them)."""
        if not isinstance(obj, Mapping):
            raise RuleError("", f"got {type(obj).__name__}, expected an object with 'action'")
        known = ("action", "queue", "port", "demux_key")
        for key in obj:
            if key not in known and key not in extra:
                raise RuleError(str(key), "unknown key" + _suggest(key, known + extra) +
                                f"; known: {', '.join(known + extra)}")
        if "action" not in obj:
            raise RuleError("action", "missing (one of: host, forward, slowpath, drop)")
        kind = _kind("action", obj["action"])
        for key, uses in (("queue", ActionKind.HOST), ("port", ActionKind.FORWARD)):
            if key in obj and kind != uses:
                raise RuleError(key, f"only a {uses.name.lower()!r} action uses a {key}, not "
                                     f"{kind.name.lower()!r}")
        if kind == ActionKind.FORWARD and "port" not in obj:
            raise RuleError("port", "missing: a 'forward' action needs the output port")
        return cls(kind, obj.get("queue", 0), obj.get("port", 0), obj.get("demux_key", 0))


# ------------------------------------------------------------------------------ compilation


def port_blocks(lo: int, hi: int, bits: int = 16) -> list[tuple[int, int]]:
    """The fewest aligned (value, mask) blocks covering the inclusive range lo..hi exactly.

    A range of 16-bit ports needs at most 30 blocks (e.g. 1..65534); 1024..65535 needs 6.
    """
    full = (1 << bits) - 1
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << bits
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, full ^ (size - 1)))
        lo += size
    return out


def _flag_names(value: int) -> str:
    return "|".join(f.name for f in KeyFlag if value & f) or "0"


def _parse_term(field: str, name: str, raw: object) -> tuple[int, int]:
    """(value, mask) of one raw match term: an int (all bits), or {"value": v, "mask": m};
    for `flags`, values may be KeyFlag names ("FRAGMENT" or ["IPV4", "L4"])."""
    full = FLOW_KEY[name].mask

    def number(where: str, x: object) -> int:
        is_name = isinstance(x, str) and not x.strip()[:1].isdigit()
        if name == "flags" and (is_name or isinstance(x, list)):
            names = x.split("|") if isinstance(x, str) else x
            total = 0
            for n in names:
                key = str(n).strip().upper()
                if key not in KeyFlag.__members__:
                    raise RuleError(where, f"unknown flag {n!r}{_suggest(key, KeyFlag.__members__)}"
                                           f"; flags: {', '.join(KeyFlag.__members__)}")
                total |= KeyFlag[key]
            return total
        return _int(where, x, 0, full, f"a {FLOW_KEY[name].width}-bit value")

    if isinstance(raw, Mapping):
        unknown = set(raw) - {"value", "mask"}
        if unknown or "value" not in raw:
            raise RuleError(field, f"got {dict(raw)!r}, expected a number or "
                                   "{'value': v, 'mask': m}")
        value = number(f"{field}.value", raw["value"])
        mask = number(f"{field}.mask", raw.get("mask", full))
    else:
        value, mask = number(field, raw), full
    if value & ~mask:
        shown = _flag_names(value & ~mask) if name == "flags" else f"{value & ~mask:#x}"
        raise RuleError(field, f"value {value:#x} has bits outside mask {mask:#x} ({shown}): "
                               "they could never match")
    return value, mask


def _merge(terms: dict[str, tuple[int, int]], field: str, name: str, value: int, mask: int,
           source: str) -> None:
    v0, m0 = terms.get(name, (0, 0))
    if (v0 ^ value) & m0 & mask:
        raise RuleError(field, f"{value:#x}/{mask:#x} contradicts {v0:#x}/{m0:#x} from {source}: "
                               "the rule could never match")
    terms[name] = (v0 | value, m0 | mask)


@dataclasses.dataclass(frozen=True)
class Rule:
    """A flow-table rule: `spec` (template + match attributes) selects frames, the action fields
    say what happens to them, `priority` (0..255, larger wins) orders overlapping rules.

    `match` adds raw ternary terms over `FLOW_KEY` fields that templates cannot express (e.g.
    ``{"flags": (KeyFlag.FRAGMENT, KeyFlag.FRAGMENT)}``), ANDed with the spec. Resource
    attributes of the spec (weight, queue_limit, ...) do not affect the table and are ignored.
    The template must start with ``eth``: the device matches Ethernet frames.
    """

    spec: FlowSpec
    action: ActionKind = ActionKind.HOST
    queue: int = 0
    port: int = 0
    demux_key: int = 0
    priority: int = 0
    match: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    name: str | None = None

    def __post_init__(self):
        try:
            spec = FlowSpec.parse(self.spec)
        except FlowTemplateError as e:
            raise RuleError("flow", str(e)) from None
        except FlowAttributeError as e:
            raise RuleError(f"attrs.{e.field}", _strip(e)) from None
        if spec.template.layers[0] != "eth":
            raise RuleError("flow", f"flow template {str(spec.template)!r} must start with 'eth': "
                                    "the flow table matches Ethernet frames")
        object.__setattr__(self, "spec", spec)
        action = Action(self.action, self.queue, self.port, self.demux_key)  # validates
        object.__setattr__(self, "action", action.kind)
        object.__setattr__(self, "priority",
                           _int("priority", self.priority, 0, MAX_PRIORITY, "a priority"))
        terms: dict[str, tuple[int, int]] = {}
        for name, term in dict(self.match).items():
            if name not in FLOW_KEY.fields:
                raise RuleError(f"match.{name}", "not a flow key field" +
                                _suggest(name, FLOW_KEY.fields) +
                                f"; fields: {', '.join(FLOW_KEY.fields)}")
            if isinstance(term, tuple | list) and len(term) == 2:
                term = {"value": term[0], "mask": term[1]}
            terms[name] = _parse_term(f"match.{name}", name, term)
        object.__setattr__(self, "match", terms)
        self._terms()  # a contradiction between the spec and `match` is an error now, not later

    @property
    def act(self) -> Action:
        return Action(self.action, self.queue, self.port, self.demux_key)

    def check(self, *, ports: int, queues: int) -> None:
        """Refuse what the device cannot do: a queue, output port or in_port it does not have."""
        self.act.check(ports=ports, queues=queues)
        in_port = self.spec.attrs.in_port
        if in_port is not None and in_port >= ports:
            raise RuleError("attrs.in_port", f"got {in_port}, but the device has {ports} "
                                             f"Ethernet port{'s' * (ports != 1)}")
        in_port_term = self.match.get("in_port")
        if in_port_term and in_port_term[0] >= ports:
            raise RuleError("match.in_port", f"got {in_port_term[0]}, but the device has "
                                             f"{ports} Ethernet port{'s' * (ports != 1)}")

    def _terms(self) -> tuple[dict[str, tuple[int, int]], list[tuple[str, list]]]:
        """The fixed (value, mask) terms and, per ranged port field, its aligned blocks."""
        t, a = self.spec.template, self.spec.attrs
        terms: dict[str, tuple[int, int]] = {}

        def put(name, value, mask, field):
            _merge(terms, field, name, value, mask, "the flow spec")

        flags = 0
        tags = sum(layer in ("vlan", "qinq") for layer in t.layers)
        # A template's tags are a minimum: eth/ipv4 also matches tagged frames (the key's
        # ethertype is the one after the tags), eth/vlan/... needs at least one tag.
        flags |= KeyFlag.VLAN if tags >= 1 else 0
        flags |= KeyFlag.QINQ if tags >= 2 else 0
        flags |= {"ipv4": KeyFlag.IPV4, "ipv6": KeyFlag.IPV6}.get(t.l3 or "", 0)
        flags |= KeyFlag.ARP if t.has("arp") else 0
        ranges = []
        for name in ("src_port", "dst_port"):
            want = getattr(a, name)
            if want is None:
                continue
            flags |= KeyFlag.L4  # ports are only valid in a key with L4 set
            if isinstance(want, int):
                put(name, want, 0xFFFF, f"attrs.{name}")
            else:
                ranges.append((name, port_blocks(*want)))
        if flags:
            put("flags", int(flags), int(flags), "flow")
        for name in ("in_port", "vlan", "ethertype", "protocol"):
            if getattr(a, name) is not None:
                put(name, getattr(a, name), FLOW_KEY[name].mask, f"attrs.{name}")
        for name in ("src_mac", "dst_mac"):
            if getattr(a, name) is not None:
                put(name, getattr(a, name), getattr(a, name + "_mask"), f"attrs.{name}")
        for name in ("src_ip", "dst_ip"):
            net = getattr(a, name)
            if net is not None:  # an IPv4 address sits in the low 32 bits of the field
                put(name, int(net.network_address), int(net.netmask), f"attrs.{name}")
        for name, (value, mask) in self.match.items():
            _merge(terms, f"match.{name}", name, value, mask, "the flow spec")
        return terms, ranges

    def expand(self) -> list[dict[str, int]]:
        """The `FLOW_RULE` field dicts of this rule: one entry, or one per combination of the
        aligned blocks of its port ranges (all with the same priority and action; disjoint,
        so their order does not matter)."""
        terms, ranges = self._terms()
        names = [name for name, _ in ranges]
        entries = []
        for blocks in itertools.product(*(b for _, b in ranges)):
            value = FLOW_KEY.pack({n: v for n, (v, _) in terms.items()})
            mask = FLOW_KEY.pack({n: m for n, (_, m) in terms.items()})
            for name, (v, m) in zip(names, blocks, strict=True):
                value |= v << FLOW_KEY[name].offset
                mask |= m << FLOW_KEY[name].offset
            entries.append({"valid": 1, "priority": self.priority, "action": self.act.pack(),
                            "value": value, "mask": mask})
        return entries

    def compile(self) -> dict[str, int]:
        """The one `FLOW_RULE` entry of this rule (``valid``, ``priority``, ``action``, ``value``,
        ``mask`` as ints). A port range that is not one aligned block needs several entries:
        then this raises and `expand` (or a `RuleTable`) is the way."""
        entries = self.expand()
        if len(entries) != 1:
            _, ranges = self._terms()
            name = next(name for name, blocks in ranges if len(blocks) > 1)
            lo, hi = getattr(self.spec.attrs, name)
            raise RuleError(f"attrs.{name}", f"the range {lo}-{hi} is not one aligned block: "
                                             f"the rule needs {len(entries)} flow-table entries; "
                                             "use Rule.expand() or a RuleTable")
        return entries[0]

    def pack(self) -> int:
        """`FLOW_RULE.pack` of `compile()`: the word written into the flow table."""
        return FLOW_RULE.pack(self.compile())

    def pack_all(self) -> list[int]:
        return [FLOW_RULE.pack(e) for e in self.expand()]

    def to_dict(self) -> dict[str, Any]:
        """This rule as a rules-file object (see docs/rules.md); `Rule.from_dict` reads it."""
        out: dict[str, Any] = {"flow": str(self.spec.template)}
        attrs = {k: v for k, v in self.spec.attrs.to_dict(self.spec.template).items()
                 if k in MATCH_FIELDS}
        if attrs:
            out["attrs"] = attrs
        if self.match:
            out["match"] = {k: {"value": v, "mask": m} for k, (v, m) in self.match.items()}
        out.update(self.act.to_dict())
        if self.priority:
            out["priority"] = self.priority
        if self.name is not None:
            out["name"] = self.name
        return out

    @classmethod
    def from_dict(cls, obj: object) -> Rule:
        """A rule from a rules-file object; errors name the field (``attrs.dst_port``)."""
        if not isinstance(obj, Mapping):
            raise RuleError("", f"got {type(obj).__name__}, expected an object with 'flow' "
                                "and 'action'")
        own = ("flow", "attrs", "match", "priority", "name")
        action = Action.from_dict(obj, extra=own)
        if "flow" not in obj and "match" not in obj:
            raise RuleError("flow", "missing: give a flow template such as 'eth/ipv4/udp' "
                                    "(and/or raw 'match' terms)")
        flow = obj.get("flow", "eth")
        if not isinstance(flow, str):
            raise RuleError("flow", f"got {flow!r}, expected a template such as 'eth/ipv4/udp'")
        attrs = obj.get("attrs")
        if isinstance(attrs, Mapping):
            for key in attrs:
                if key not in MATCH_FIELDS:
                    what = ("not a match attribute" if key in ATTRIBUTES else
                            "unknown attribute" + _suggest(key, MATCH_FIELDS))
                    raise RuleError(f"attrs.{key}", f"{what}; the flow table matches: " +
                                    ", ".join(MATCH_FIELDS) +
                                    " (the rule's own 'priority' orders rules)")
        try:
            spec = FlowSpec.parse(flow, attrs)
        except FlowTemplateError as e:
            raise RuleError("flow", str(e)) from None
        except FlowAttributeError as e:
            raise RuleError(f"attrs.{e.field}", _strip(e)) from None
        match = obj.get("match", {})
        if not isinstance(match, Mapping):
            raise RuleError("match", f"got {match!r}, expected an object of flow key fields")
        name = obj.get("name")
        if name is not None and not isinstance(name, str):
            raise RuleError("name", f"got {name!r}, expected a string")
        return cls(spec, action.kind, action.queue, action.port, action.demux_key,
                   obj.get("priority", 0), match, name)


def _strip(e: FlowAttributeError) -> str:
    """The message of a FlowAttributeError without its "flow attribute 'x': " lead."""
    text, lead = str(e), f"flow attribute {e.field!r}: "
    return text[len(lead):] if text.startswith(lead) else text


# ------------------------------------------------------------------------------------ table


class RuleTable:
    """The contents of one device's flow table: which rule holds which entries, and the default
    action. Indices are allocated lowest-free first, so rules added to an empty table in order
    hold increasing indices (earlier rules win priority ties); `image()` is what to write."""

    def __init__(self, entries: int, *, ports: int = MAX_PORTS, queues: int = MAX_QUEUES,
                 default: Action | None = None):
        self.entries = _int("entries", entries, 1, MAX_FLOWS, "a table size")
        self.ports = _int("ports", ports, 1, MAX_PORTS, "a port count")
        self.queues = _int("queues", queues, 1, MAX_QUEUES, "a queue count")
        self._slots: list[int | None] = [None] * self.entries  # rule id per index
        self._rules: dict[int, tuple[Rule, tuple[int, ...], list[int]]] = {}
        self._ids = itertools.count()
        self._default = Action()
        self.default = default if default is not None else Action()

    @property
    def default(self) -> Action:
        """The action of frames no rule matches (and of malformed frames)."""
        return self._default

    @default.setter
    def default(self, action: Action) -> None:
        if not isinstance(action, Action):
            raise RuleError("default", f"got {type(action).__name__}, expected an Action")
        try:
            action.check(ports=self.ports, queues=self.queues)
        except RuleError as e:
            raise e.within("default") from None
        self._default = action

    @property
    def free(self) -> int:
        return self._slots.count(None)

    def __len__(self) -> int:
        return len(self._rules)

    def add(self, rule: Rule, *, where: str = "rule") -> int:
        """Place `rule` (all its entries or none) and return its id for `remove`."""
        try:
            rule.check(ports=self.ports, queues=self.queues)
        except RuleError as e:
            raise e.within(where) from None
        words = rule.pack_all()
        free = [i for i, s in enumerate(self._slots) if s is None]
        if len(words) > len(free):
            what = f"{len(words)} entries" if len(words) > 1 else "an entry"
            shown = f" {rule.name!r}" if rule.name else ""
            raise RuleError(where, f"flow table full: rule{shown} ({rule.spec}) needs {what}, "
                                   f"{len(free)} of {self.entries} free")
        rid = next(self._ids)
        indices = tuple(free[:len(words)])
        for i in indices:
            self._slots[i] = rid
        self._rules[rid] = (rule, indices, words)
        return rid

    def remove(self, rule_id: int) -> tuple[int, ...]:
        """Free a rule's entries; returns the indices, to be written invalid (0) on the device."""
        try:
            _, indices, _ = self._rules.pop(rule_id)
        except KeyError:
            raise RuleError("rule", f"no rule with id {rule_id!r} in the table") from None
        for i in indices:
            self._slots[i] = None
        return indices

    def rules(self) -> dict[int, Rule]:
        return {rid: rule for rid, (rule, _, _) in self._rules.items()}

    def indices(self, rule_id: int) -> tuple[int, ...]:
        return self._rules[rule_id][1]

    def image(self) -> list[int]:
        """The packed `FLOW_RULE` word of every index (0, i.e. invalid, where free)."""
        out = [0] * self.entries
        for _, indices, words in self._rules.values():
            for i, w in zip(indices, words, strict=True):
                out[i] = w
        return out

    def to_dict(self) -> dict[str, Any]:
        """The rules file of this table (rules in index order); `load_rules` reads it back."""
        order = sorted(self._rules.values(), key=lambda r: r[1][0])
        return {"default": self.default.to_dict(), "rules": [r.to_dict() for r, _, _ in order]}


def dump_rules(table: RuleTable, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """`table.to_dict()`, also written to `path` as JSON when given."""
    out = table.to_dict()
    if path is not None:
        with open(path, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    return out


def load_rules(source: str | os.PathLike | Mapping, *, entries: int, ports: int, queues: int
               ) -> RuleTable:
    """A `RuleTable` from a rules file (a path) or its parsed JSON object (see docs/rules.md).

    Rules take indices in file order. Errors are `RuleError`s naming the item:
    ``rules[3].attrs.dst_port: got '70000', expected ...``.
    """
    where = "rules file"
    if isinstance(source, Mapping):
        doc: Any = source
    else:
        where = f"rules file {os.fspath(source)}"
        with open(source) as f:
            text = f.read()
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise RuleError("", f"{where}: line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(doc, Mapping):
        raise RuleError("", f"{where}: got {type(doc).__name__}, expected an object with "
                            "'rules' (and optionally 'default')")
    for key in doc:
        if key not in ("version", "default", "rules"):
            raise RuleError(str(key), f"unknown key in the {where}" +
                            _suggest(key, ("version", "default", "rules")) +
                            "; known: version, default, rules")
    if doc.get("version", 1) != 1:
        raise RuleError("version", f"got {doc['version']!r}; this reader knows version 1")
    default = Action()
    if "default" in doc:
        try:
            default = Action.from_dict(doc["default"])
        except RuleError as e:
            raise e.within("default") from None
    table = RuleTable(entries, ports=ports, queues=queues, default=default)
    rules = doc.get("rules", [])
    if not isinstance(rules, list):
        raise RuleError("rules", f"got {type(rules).__name__}, expected a list of rules")
    for n, obj in enumerate(rules):
        try:
            rule = Rule.from_dict(obj)
        except RuleError as e:
            raise e.within(f"rules[{n}]") from None
        table.add(rule, where=f"rules[{n}]")
    return table

