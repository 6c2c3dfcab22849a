"""partner.rules: compiling flow specs to flow-table entries, validation, the rule table and the
JSON rules file; and the agreement of compiled rules with FlowSpec.matches on random packets."""

import ipaddress
import json
import pathlib
import random
import re

import pytest

from partner.errors import PartnerError
from partner.flow import FlowSpec
from partner.formats import ACTION, FLOW_KEY, FLOW_RULE, ActionKind, KeyFlag
from partner.rules import Action, Rule, RuleError, RuleTable, dump_rules, load_rules, port_blocks
from partner.sim.models.flow_table import (
    Result,
    cross_check,
    key_from_fields,
    lookup,
    random_packet,
    random_rule,
    rule_matches,
    spec_admits,
)

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "rules.md"


def fields_of(word):
    return FLOW_KEY.unpack(word)


def only(mapping):
    """The non-zero fields of an unpacked key."""
    return {k: v for k, v in mapping.items() if v}


# -- compile -----------------------------------------------------------------------------------

def test_compile_udp_port():
    rule = Rule("eth/ipv4/udp?dst_port=53", "host", queue=1, demux_key=53, priority=10)
    entry = rule.compile()
    assert entry["valid"] == 1 and entry["priority"] == 10
    assert ACTION.unpack(entry["action"]) == {"kind": ActionKind.HOST, "queue": 1, "port": 0,
                                              "demux_key": 53}
    assert only(fields_of(entry["mask"])) == {
        "flags": KeyFlag.IPV4 | KeyFlag.L4, "ethertype": 0xFFFF, "protocol": 0xFF,
        "dst_port": 0xFFFF}
    assert only(fields_of(entry["value"])) == {
        "flags": KeyFlag.IPV4 | KeyFlag.L4, "ethertype": 0x0800, "protocol": 17, "dst_port": 53}
    assert rule.pack() == FLOW_RULE.pack(entry) == rule.pack_all()[0]


@pytest.mark.parametrize(("flow", "flags"), [
    ("eth", 0),
    ("eth/arp", KeyFlag.ARP),
    ("eth/ipv4", KeyFlag.IPV4),
    ("eth/ipv6/icmpv6", KeyFlag.IPV6),
    ("eth/vlan", KeyFlag.VLAN),
    ("eth/vlan/ipv6/udp", KeyFlag.VLAN | KeyFlag.IPV6),
    ("eth/vlan/vlan/ipv4", KeyFlag.VLAN | KeyFlag.QINQ | KeyFlag.IPV4),
    ("eth/qinq/vlan/arp", KeyFlag.VLAN | KeyFlag.QINQ | KeyFlag.ARP),
])
def test_template_flags(flow, flags):
    entry = Rule(flow).compile()
    assert fields_of(entry["mask"])["flags"] == flags == fields_of(entry["value"])["flags"]


def test_compile_prefixes_and_macs():
    rule = Rule(FlowSpec.parse("eth/ipv4", {"src_ip": "10.1.0.0/16", "dst_ip": "192.168.1.7",
                                            "dst_mac": "02:aa:bb:00:00:00/24", "in_port": 2,
                                            "src_mac": "02:00:00:00:00:09"}))
    e = rule.compile()
    mask, value = fields_of(e["mask"]), fields_of(e["value"])
    assert (mask["src_ip"], value["src_ip"]) == (0xFFFF0000, 0x0A010000)  # low 32 bits only
    assert (mask["dst_ip"], value["dst_ip"]) == (0xFFFFFFFF, 0xC0A80107)
    assert (mask["dst_mac"], value["dst_mac"]) == (0xFFFFFF000000, 0x02AABB000000)
    assert (mask["src_mac"], value["src_mac"]) == ((1 << 48) - 1, 0x020000000009)
    assert (mask["in_port"], value["in_port"]) == (7, 2)
    v6 = Rule("eth/ipv6?dst_ip=2001:db8::/32").compile()
    assert fields_of(v6["mask"])["dst_ip"] == ((1 << 32) - 1) << 96
    assert fields_of(v6["value"])["dst_ip"] == 0x20010DB8 << 96


def test_vlan_attribute_and_raw_terms():
    e = Rule("eth/vlan/ipv4?vlan=100", match={"flags": ("FRAGMENT", "FRAGMENT")}).compile()
    assert fields_of(e["value"])["vlan"] == 100 and fields_of(e["mask"])["vlan"] == 0xFFF
    assert fields_of(e["value"])["flags"] == KeyFlag.VLAN | KeyFlag.IPV4 | KeyFlag.FRAGMENT
    # A raw term that agrees with the template is merged, not refused.
    e2 = Rule("eth/ipv4", match={"ethertype": 0x0800, "src_ip": (0x0A000000, 0xFF000000)})
    assert fields_of(e2.compile()["mask"])["src_ip"] == 0xFF000000


def test_port_blocks_exact_and_minimal():
    assert port_blocks(53, 53) == [(53, 0xFFFF)]
    assert port_blocks(0, 65535) == [(0, 0)]
    assert port_blocks(1024, 65535) == [(1024, 0xFC00), (2048, 0xF800), (4096, 0xF000),
                                        (8192, 0xE000), (16384, 0xC000), (32768, 0x8000)]
    assert len(port_blocks(1, 65534)) == 30
    bits = 6  # every range of a 6-bit field, checked port by port
    for lo in range(64):
        for hi in range(lo, 64):
            blocks = port_blocks(lo, hi, bits)
            covered = [p for p in range(64) if any(p & m == v for v, m in blocks)]
            assert covered == list(range(lo, hi + 1))
            assert all(v & ~m & 63 == 0 for v, m in blocks)
            assert len(blocks) <= 2 * bits - 2


def test_port_range_expands():
    rule = Rule("eth/ipv6/tcp?dst_port=1024-65535&src_port=80-81", "forward", port=1)
    entries = rule.expand()
    assert len(entries) == 6 and len({e["mask"] for e in entries}) == 6
    assert all(e["priority"] == rule.priority and e["action"] == rule.act.pack()
               for e in entries)
    with pytest.raises(RuleError, match=r"^attrs\.dst_port: the range 1024-65535 is not one "
                                        r"aligned block: the rule needs 6 flow-table entries"):
        rule.compile()
    assert len(rule.pack_all()) == 6


# -- validation --------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "field", "text"), [
    ({"spec": "ipv4/udp"}, "flow", "must start with 'eth'"),
    ({"spec": "eth/ipv5"}, "flow", "unknown layer"),
    ({"spec": "eth/ipv4?dst_port=53"}, "attrs.dst_port", "udp"),
    ({"spec": "eth", "priority": 256}, "priority", "0..255"),
    ({"spec": "eth", "priority": -1}, "priority", "0..255"),
    ({"spec": "eth", "demux_key": 1 << 16}, "demux_key", "16-bit"),
    ({"spec": "eth", "queue": 16}, "queue", "0..15"),
    ({"spec": "eth", "action": "forward", "port": 8}, "port", "0..7"),
    ({"spec": "eth", "action": "drop", "queue": 2}, "queue", "only a 'host' action"),
    ({"spec": "eth", "action": "host", "port": 2}, "port", "only a 'forward' action"),
    ({"spec": "eth", "action": "bounce"}, "action", "host, forward, slowpath, drop"),
    ({"spec": "eth", "match": {"flags": (0x21, 0x20)}}, "match.flags", "bits outside mask"),
    ({"spec": "eth", "match": {"dst_port": (0x100, 0xFF)}}, "match.dst_port",
     "bits outside mask"),
    ({"spec": "eth", "match": {"dport": 1}}, "match.dport", "did you mean 'dst_port'"),
    ({"spec": "eth/ipv4", "match": {"ethertype": 0x86DD}}, "match.ethertype", "contradicts"),
    ({"spec": "eth", "match": {"flags": ("FRAG", "FRAG")}}, "match.flags.value",
     "unknown flag"),
])
def test_rule_errors_name_the_field(kwargs, field, text):
    with pytest.raises(RuleError) as info:
        Rule(**kwargs)
    assert isinstance(info.value, PartnerError) and isinstance(info.value, ValueError)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ") and text in str(info.value)


def test_device_limits():
    table = RuleTable(8, ports=2, queues=4)
    with pytest.raises(RuleError, match=r"^rule\.queue: got 4, but the device has 4 host queues"):
        table.add(Rule("eth", queue=4))
    with pytest.raises(RuleError, match=r"^rule\.port: got 2, but the device has 2 Ethernet"):
        table.add(Rule("eth", "forward", port=2))
    with pytest.raises(RuleError, match=r"^rule\.attrs\.in_port: got 3"):
        table.add(Rule("eth?in_port=3"))
    with pytest.raises(RuleError, match=r"^default\.queue: got 5"):
        table.default = Action(queue=5)
    assert len(table) == 0 and table.free == 8


def test_table_allocates_frees_and_refuses_when_full():
    table = RuleTable(4, ports=2, queues=4, default=Action(ActionKind.DROP, demux_key=9))
    a = table.add(Rule("eth/arp", "slowpath"))
    b = table.add(Rule("eth/ipv4/udp?dst_port=0-1", "host", queue=3))  # one block: 1 entry
    c = table.add(Rule("eth/ipv4/tcp?dst_port=1-2", "host", queue=2))  # 2 entries
    assert [table.indices(r) for r in (a, b, c)] == [(0,), (1,), (2, 3)]
    assert table.free == 0
    with pytest.raises(RuleError) as info:
        table.add(Rule("eth/ipv6", name="v6"), where="rules[3]")
    assert str(info.value).startswith("rules[3]: flow table full: rule 'v6'")
    assert "needs an entry, 0 of 4 free" in str(info.value)
    assert table.remove(b) == (1,)
    image = table.image()
    assert image[1] == 0 and FLOW_RULE.unpack(image[0])["valid"] == 1
    with pytest.raises(RuleError, match="needs 2 entries, 1 of 4 free"):
        table.add(Rule("eth/ipv4/tcp?dst_port=1-2"))
    d = table.add(Rule("eth/ipv6"))
    assert table.indices(d) == (1,)  # the lowest free index
    with pytest.raises(RuleError, match="no rule with id"):
        table.remove(b)
    assert table.default == Action(ActionKind.DROP, demux_key=9)  # kept through it all


# -- the rules file ----------------------------------------------------------------------------

EXAMPLE = {
    "default": {"action": "host", "queue": 0, "demux_key": 0},
    "rules": [
        {"flow": "eth/ipv4/udp", "attrs": {"dst_port": 53}, "action": "host", "queue": 1,
         "demux_key": 53, "priority": 10},
        {"flow": "eth/ipv6", "action": "forward", "port": 1},
        {"flow": "eth/arp", "action": "slowpath"},
        {"flow": "eth", "attrs": {"src_mac": "02:00:00:00:00:66"}, "action": "drop"},
    ],
}


def test_load_example_and_round_trip(tmp_path):
    table = load_rules(EXAMPLE, entries=16, ports=2, queues=4)
    assert len(table) == 4 and table.free == 12
    assert table.default == Action(ActionKind.HOST)
    dns = FLOW_RULE.unpack(table.image()[0])
    assert dns["priority"] == 10
    assert ACTION.unpack(dns["action"])["demux_key"] == 53
    path = tmp_path / "rules.json"
    assert dump_rules(table, path) == table.to_dict()
    again = load_rules(path, entries=16, ports=2, queues=4)
    assert again.image() == table.image() and again.default == table.default
    assert again.to_dict() == table.to_dict()


def test_docs_examples_load():
    """Every complete rules file in docs/rules.md (a json block with "rules") is valid."""
    blocks = re.findall(r"```json\n(.*?)```", DOCS.read_text(), re.S)
    files = [json.loads(b) for b in blocks if '"rules"' in b]
    assert len(files) >= 2
    for doc in files:
        load_rules(doc, entries=64, ports=2, queues=8)


def with_rule(n, rule):
    rules = [{"flow": "eth", "action": "drop"} for _ in range(n)]
    return {"rules": [*rules, rule]}


@pytest.mark.parametrize(("doc", "path", "text"), [
    (with_rule(3, {"flow": "eth/ipv4/udp", "attrs": {"dst_port": 70000}, "action": "host"}),
     "rules[3].attrs.dst_port", "a port 0..65535"),
    (with_rule(1, {"flow": "eth/ipv4/udp", "attrs": {"dst_prt": 53}, "action": "host"}),
     "rules[1].attrs.dst_prt", "did you mean 'dst_port'"),
    (with_rule(0, {"flow": "eth/ipv4", "attrs": {"weight": 3}, "action": "drop"}),
     "rules[0].attrs.weight", "not a match attribute"),
    (with_rule(2, {"flow": "eth/ipv4/tcp", "attrs": "dst_port=80", "action": "host",
                   "queue": 8}), "rules[2].queue", "the device has 8 host queues"),
    (with_rule(0, {"flow": "eth", "action": "forward"}), "rules[0].port", "needs the output"),
    (with_rule(0, {"flow": "eth", "action": "forward", "port": 2}), "rules[0].port",
     "the device has 2 Ethernet ports"),
    (with_rule(1, {"flow": "eth", "action": "host", "demux_key": 65536}), "rules[1].demux_key",
     "16-bit"),
    (with_rule(0, {"flow": "eth", "action": "host", "priority": 300}), "rules[0].priority",
     "0..255"),
    (with_rule(0, {"flow": "eth"}), "rules[0].action", "missing"),
    (with_rule(0, {"action": "drop"}), "rules[0].flow", "missing"),
    (with_rule(0, {"flow": "eth/vlan/ip", "action": "drop"}), "rules[0].flow", "unknown layer"),
    (with_rule(0, {"flow": "udp", "action": "drop"}), "rules[0].flow", "start with 'eth'"),
    (with_rule(1, {"flow": "eth", "action": "drop", "prio": 3}), "rules[1].prio",
     "did you mean 'priority'"),
    (with_rule(0, {"flow": "eth", "action": "drop", "match": {"flags": {"value": 3,
                                                                       "mask": 1}}}),
     "rules[0].match.flags", "bits outside mask"),
    (with_rule(0, {"flow": "eth", "action": "drop", "match": {"vlan": 5000}}),
     "rules[0].match.vlan", "12-bit"),
    (with_rule(0, {"flow": "eth?in_port=2", "action": "drop"}), "rules[0].attrs.in_port",
     "the device has 2 Ethernet ports"),
    (with_rule(0, "eth/ipv4"), "rules[0]", "expected an object"),
    (with_rule(8, {"flow": "eth", "action": "drop"}), "rules[8]", "flow table full"),
    (with_rule(7, {"flow": "eth/ipv4/udp", "attrs": {"dst_port": "1-2"}, "action": "drop"}),
     "rules[7]", "needs 2 entries, 1 of 8 free"),
    ({"default": {"action": "host", "queue": 9}, "rules": []}, "default.queue", "9"),
    ({"default": {"action": "drop", "port": 1}, "rules": []}, "default.port",
     "only a 'forward' action"),
    ({"rule": []}, "rule", "did you mean 'rules'"),
    ({"rules": {}}, "rules", "expected a list"),
    ({"version": 2, "rules": []}, "version", "version 1"),
])
def test_rules_file_errors_name_index_and_field(doc, path, text):
    with pytest.raises(RuleError) as info:
        load_rules(doc, entries=8, ports=2, queues=8)
    assert info.value.field == path
    assert str(info.value).startswith(f"{path}: ")
    assert text in str(info.value)


def test_rules_file_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"rules": [\n  {"flow": "eth", "action": "drop",}\n]}\n')
    with pytest.raises(RuleError, match=r"bad\.json: line 2 column \d+"):
        load_rules(path, entries=4, ports=1, queues=1)
    with pytest.raises(FileNotFoundError):
        load_rules(tmp_path / "missing.json", entries=4, ports=1, queues=1)


# -- the reference model -----------------------------------------------------------------------

def test_model_lookup_forms_and_rules():
    a1, a2 = ACTION.pack(kind=1, port=2), ACTION.pack(kind=0, queue=3)
    rules = [
        {"valid": 1, "priority": 5, "action": a1, "value": 0, "mask": 0},
        FLOW_RULE.pack(valid=1, priority=5, action=a2, value=0, mask=0),  # tie: index 0 wins
        {"valid": 0, "priority": 9, "action": a2, "value": 0, "mask": 0},  # invalid
        {"valid": 1, "priority": 6, "action": {"kind": 3}, "value": FLOW_KEY.pack(vlan=3),
         "mask": FLOW_KEY.pack(vlan=0xFFF)},
    ]
    default = Action(ActionKind.SLOWPATH, demux_key=4)
    assert lookup(rules, {"vlan": 1}, default) == Result(1, 0, a1)
    assert lookup(rules, FLOW_KEY.pack(vlan=3), default) == Result(1, 3, ACTION.pack(kind=3))
    assert lookup(rules, {"vlan": 3, "flags": KeyFlag.MALFORMED}, default) == Result(
        0, 0, default.pack())
    assert lookup([], {}, {"kind": 2}) == Result(0, 0, ACTION.pack(kind=2))
    # A value bit outside the mask never matches.
    stray = {"valid": 1, "priority": 1, "action": a1, "value": 1, "mask": 0}
    assert lookup([stray], 1, 0).hit == 0


# -- compiled rules agree with FlowSpec.matches on random packets ------------------------------

def test_compiled_rules_agree_with_flowspec_matches():
    rng = random.Random(2024)
    rules = [random_rule(rng) for _ in range(60)]
    compiled = [r.expand() for r in rules]
    packets = [random_packet(rng) for _ in range(2500)]
    matched = 0
    for fields in packets:
        for rule, entries in zip(rules, compiled, strict=True):
            matched += cross_check(rule, fields, entries)
    # Not vacuous: a fair share of (rule, packet) pairs match, ranges and prefixes included.
    assert 0.02 < matched / (len(rules) * len(packets)) < 0.6
    ranged = [n for n, r in enumerate(rules) if len(compiled[n]) > 1]
    assert ranged and any(cross_check(rules[n], f, compiled[n]) for n in ranged
                          for f in packets)


def test_vlan_layer_needs_a_tag_flowspec_does_not():
    """The one place where the table is stricter than FlowSpec.matches: a template's VLAN layers
    need tags even without a `vlan` attribute (see spec_admits and docs/rules.md)."""
    rule = Rule("eth/vlan/ipv4")
    untagged = {"ethertype": 0x0800, "src_ip": ipaddress.ip_address("10.0.0.1")}
    assert rule.spec.matches(untagged) and not spec_admits(rule.spec.template, untagged)
    assert not rule_matches(rule, key_from_fields(untagged))
    assert rule_matches(rule, key_from_fields({**untagged, "vlan": 7}))
    assert not cross_check(rule, untagged)


def test_whole_table_agrees_with_specs():
    """A table of random rules: the model's lookup of each packet's key gives the action of the
    highest-priority rule whose spec accepts the packet, the earliest rule on a tie."""
    rng = random.Random(7)
    rules = [random_rule(rng) for _ in range(40)]
    table = RuleTable(256, ports=4, queues=4, default=Action(ActionKind.DROP, demux_key=1))
    ids = [table.add(r) for r in rules]
    image = table.image()
    hits = 0
    for _ in range(2000):
        fields = random_packet(rng)
        fields["malformed"] = rng.random() < 0.03
        got = lookup(image, key_from_fields(fields), table.default)
        ok = [n for n, r in enumerate(rules) if r.spec.matches(fields)
              and spec_admits(r.spec.template, fields)]
        if fields["malformed"] or not ok:
            assert got == Result(0, 0, table.default.pack())
            continue
        top = max(rules[n].priority for n in ok)
        winner = min(n for n in ok if rules[n].priority == top)
        assert got.hit == 1 and got.action == rules[winner].act.pack()
        assert got.index in table.indices(ids[winner])
        hits += 1
    assert hits > 500


def test_random_tables_round_trip_through_the_file_format():
    rng = random.Random(11)
    for _ in range(20):
        table = RuleTable(128, ports=4, queues=4, default=Action(ActionKind.FORWARD, port=3))
        for _ in range(rng.randrange(1, 15)):
            table.add(random_rule(rng))
        doc = json.loads(json.dumps(table.to_dict()))
        again = load_rules(doc, entries=128, ports=4, queues=4)
        assert again.image() == table.image() and again.default == table.default
