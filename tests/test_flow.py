"""Tests of partner.flow: flow templates, flow attributes, flow specs and data attributes."""

import ast
import dataclasses
import ipaddress
import pathlib
import sys

import pytest

from partner.errors import FlowAttributeError, FlowTemplateError, PartnerError
from partner.flow import (
    ATTRIBUTES,
    MATCH_FIELDS,
    DataAttributes,
    FlowAttributes,
    FlowSpec,
    FlowTemplate,
    validate_data_attributes,
)

# ---------------------------------------------------------------- templates


@pytest.mark.parametrize(
    ("text", "layers"),
    [
        ("raw", ("raw",)),
        ("eth", ("eth",)),
        ("eth/arp", ("eth", "arp")),
        ("eth/ipv4/udp", ("eth", "ipv4", "udp")),
        ("eth/ipv4/tcp", ("eth", "ipv4", "tcp")),
        ("eth/ipv4/icmp", ("eth", "ipv4", "icmp")),
        ("eth/ipv6/icmpv6", ("eth", "ipv6", "icmpv6")),
        ("eth/vlan/ipv6/udp", ("eth", "vlan", "ipv6", "udp")),
        ("eth/vlan/vlan/ipv4", ("eth", "vlan", "vlan", "ipv4")),
        ("eth/qinq/vlan/arp", ("eth", "qinq", "vlan", "arp")),
        ("ipv4/udp", ("ipv4", "udp")),
        ("ipv6", ("ipv6",)),
        ("udp", ("udp",)),
        ("tcp", ("tcp",)),
        (" ETH / IPv4/UDP ", ("eth", "ipv4", "udp")),
    ],
)
def test_template_parses(text, layers):
    t = FlowTemplate.parse(text)
    assert t.layers == layers
    assert str(t) == "/".join(layers)
    assert FlowTemplate.parse(str(t)) == t


def test_template_inputs_and_identity():
    t = FlowTemplate.parse("eth/ipv4/udp")
    assert FlowTemplate.parse(t) is t
    assert FlowTemplate.parse(["eth", "ipv4", "udp"]) == t
    assert FlowTemplate.parse(("eth", "ipv4", "udp")) == t
    assert FlowTemplate(("eth", "ipv4", "udp")) == t
    assert FlowTemplate(["eth", "ipv4", "udp"]).layers == t.layers  # a list becomes a tuple
    assert hash(t) == hash(FlowTemplate.parse("eth/ipv4/udp"))
    assert len({t, FlowTemplate.parse("eth/ipv4/udp"), FlowTemplate.parse("udp")}) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.layers = ("raw",)


@pytest.mark.parametrize(
    ("text", "l3", "l4"),
    [
        ("eth/ipv4/udp", "ipv4", "udp"),
        ("eth/vlan/ipv6/tcp", "ipv6", "tcp"),
        ("eth/ipv4/icmp", "ipv4", "icmp"),
        ("eth/ipv6/icmpv6", "ipv6", "icmpv6"),
        ("eth/arp", None, None),
        ("raw", None, None),
        ("udp", None, "udp"),
        ("ipv6", "ipv6", None),
    ],
)
def test_template_properties(text, l3, l4):
    t = FlowTemplate.parse(text)
    assert (t.l3, t.l4) == (l3, l4)
    assert all(t.has(layer) for layer in t.layers)
    assert not t.has("nonesuch")


@pytest.mark.parametrize(
    ("template", "needles"),
    [
        ("", ["empty"]),
        ("   ", ["empty"]),
        ([], ["empty"]),
        ("eth//udp", ["'eth//udp'", "position 2", "empty"]),
        ("/eth", ["position 1", "empty"]),
        ("eth/ipv4/", ["position 3", "empty"]),
        (["eth", 4], ["position 2", "4"]),
        (42, ["int"]),
        ("eth/ipv5", ["'ipv5'", "position 2", "did you mean", "unknown"]),
        ("eht/ipv4", ["'eht'", "position 1", "did you mean 'eth'"]),
        ("eth/upd", ["'upd'", "did you mean 'udp'"]),
        ("eth/foo", ["'foo'", "known layers: raw, eth"]),
        ("eth/udp", ["'eth/udp'", "'udp'", "position 2", "cannot follow 'eth'",
                     "expected one of: vlan, qinq, arp, ipv4, ipv6"]),
        ("eth/ipv4/icmpv6", ["'icmpv6'", "position 3", "cannot follow 'ipv4'", "udp, tcp, icmp"]),
        ("eth/ipv6/icmp", ["'icmp'", "cannot follow 'ipv6'", "icmpv6"]),
        ("icmp", ["'icmp'", "position 1", "cannot start"]),
        ("vlan/ipv4", ["'vlan'", "cannot start"]),
        ("arp", ["'arp'", "cannot start"]),
        ("raw/eth", ["'eth'", "position 2", "nothing may follow 'raw'"]),
        ("eth/raw", ["'raw'", "position 2", "cannot follow 'eth'"]),
        ("eth/ipv4/udp/tcp", ["'tcp'", "position 4", "nothing may follow 'udp'"]),
        ("udp/ipv4", ["'ipv4'", "nothing may follow 'udp'"]),
        ("eth/arp/ipv4", ["'ipv4'", "nothing may follow 'arp'"]),
        ("eth/ipv4/ipv4", ["'ipv4'", "position 3", "cannot follow 'ipv4'"]),
        ("eth/vlan/vlan/vlan", ["'vlan'", "position 4", "at most two"]),
        ("eth/qinq/vlan/vlan", ["'vlan'", "position 4", "at most two"]),
        ("eth/vlan/qinq", ["'qinq'", "position 3", "cannot follow 'vlan'"]),
        ("eth/qinq/ipv4", ["'ipv4'", "cannot follow 'qinq'", "expected one of: vlan"]),
        ("eth/qinq", ["'qinq'", "followed by 'vlan'"]),
    ],
)
def test_template_errors(template, needles):
    with pytest.raises(FlowTemplateError) as info:
        FlowTemplate.parse(template)
    message = str(info.value)
    for needle in needles:
        assert needle in message, (needle, message)
    assert isinstance(info.value, PartnerError | ValueError)


def test_template_error_message_example():
    with pytest.raises(FlowTemplateError, match=r"^flow template 'eth/udp': 'udp' at position 2 "
                       r"cannot follow 'eth' \(expected one of: vlan, qinq, arp, ipv4, ipv6\)$"):
        FlowTemplate.parse("eth/udp")


def test_template_constructor_validates():
    with pytest.raises(FlowTemplateError, match="cannot follow 'eth'"):
        FlowTemplate(("eth", "udp"))


# ---------------------------------------------------------------- attributes: good values


def test_attributes_none_and_empty_are_all_wild():
    for attrs in (None, {}, "", " , "):
        a = FlowAttributes.parse("raw", attrs)
        assert a == FlowAttributes()
        assert (a.priority, a.weight) == (0, 1)
        assert a.to_dict() == {}


def test_attributes_from_string():
    a = FlowAttributes.parse("eth/ipv4/udp", "dst_port=53,src_ip=10.0.0.0/8,priority=3")
    assert a.dst_port == 53
    assert a.src_ip == ipaddress.ip_network("10.0.0.0/8")
    assert a.priority == 3
    assert a.protocol == 17  # implied from the template
    assert a.ethertype == 0x0800  # implied from the template


def test_attributes_native_and_string_agree():
    text = FlowAttributes.parse(
        "eth/vlan/ipv6/tcp",
        "in_port=2, src_mac=aa:bb:cc:dd:ee:ff, dst_mac=AA-BB-CC-00-00-00/24, vlan=100,"
        "src_ip=2001:db8::/32, dst_ip=2001:db8::1, src_port=1000-2000, dst_port=0x50,"
        "weight=10, queue_limit=1MiB, queue_frames=64, name=web",
    )
    native = FlowAttributes.parse(
        ["eth", "vlan", "ipv6", "tcp"],
        {
            "in_port": 2, "src_mac": 0xAABBCCDDEEFF, "dst_mac": "aa:bb:cc:00:00:00/24",
            "vlan": 100, "src_ip": ipaddress.IPv6Network("2001:db8::/32"),
            "dst_ip": ipaddress.IPv6Address("2001:db8::1"), "src_port": (1000, 2000),
            "dst_port": 80, "weight": 10, "queue_limit": 2**20, "queue_frames": 64,
            "name": "web", "protocol": "tcp", "ethertype": 0x86DD,
        },
    )
    assert text == native
    assert text.src_mac == 0xAABBCCDDEEFF and text.src_mac_mask == 0xFFFFFFFFFFFF
    assert text.dst_mac == 0xAABBCC000000 and text.dst_mac_mask == 0xFFFFFF000000
    assert text.dst_ip == ipaddress.ip_network("2001:db8::1/128")
    assert text.src_port == (1000, 2000)
    assert text.protocol == 6 and text.ethertype == 0x86DD
    assert hash(text) == hash(native)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", 1), ("64k", 64_000), ("64K", 64_000), ("2M", 2_000_000), ("1G", 10**9),
     ("64KiB", 65536), ("64 KiB", 65536), ("2MiB", 2 * 2**20), ("1GiB", 2**30), ("1500B", 1500),
     (9000, 9000)],
)
def test_queue_limit_suffixes(value, expected):
    assert FlowAttributes.parse("raw", {"queue_limit": value}).queue_limit == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("53", 53), (53, 53), ("1000-2000", (1000, 2000)), ((10, 20), (10, 20)), ([10, 20], (10, 20)),
     ("7-7", 7), ("0", 0), ("65535", 65535), ("*", None), (None, None)],
)
def test_ports(value, expected):
    assert FlowAttributes.parse("udp", {"dst_port": value}).dst_port == expected


def test_wildcards():
    a = FlowAttributes.parse(
        "eth/vlan/ipv4/udp",
        "in_port=*,src_mac=*,dst_mac=00:00:00:00:00:00/0,vlan=*,src_ip=*,dst_ip=0.0.0.0/0,src_port=*",
    )
    assert a.in_port is a.src_mac is a.src_mac_mask is a.dst_mac is a.vlan is a.src_ip is None
    assert a.dst_ip == ipaddress.ip_network("0.0.0.0/0")  # /0 matches every IPv4 address
    assert a.protocol == 17  # '*' on nothing removes what the template implies


@pytest.mark.parametrize(
    ("template", "attrs", "field", "expected"),
    [
        ("eth/ipv4", "protocol=47", "protocol", 47),
        ("eth/ipv4", "protocol=udp", "protocol", 17),
        ("eth/ipv6", "protocol=ICMPv6", "protocol", 58),
        ("eth", "ethertype=0x88b5", "ethertype", 0x88B5),
        ("eth", "ethertype=ipv6", "ethertype", 0x86DD),
        ("eth/arp", None, "ethertype", 0x0806),
        ("eth/vlan/ipv6", None, "ethertype", 0x86DD),
        ("ipv4/udp", None, "ethertype", None),  # no link layer: no ethertype to match
        ("udp", None, "protocol", 17),
        ("eth/ipv4/tcp", "protocol=6", "protocol", 6),
        ("eth/ipv4/tcp", "ethertype=2048", "ethertype", 0x0800),
        ("raw", "in_port=3", "in_port", 3),
        ("eth/ipv4", {"src_ip": 167772160}, "src_ip", ipaddress.ip_network("10.0.0.0/32")),
        ("eth/ipv6", {"src_ip": 1}, "src_ip", ipaddress.ip_network("::1/128")),
        ("eth/ipv4", "src_ip=10.1.2.3", "src_ip", ipaddress.ip_network("10.1.2.3/32")),
        ("eth", "src_mac=aa:bb:cc:dd:ee:ff/48", "src_mac", 0xAABBCCDDEEFF),
        ("eth", {"src_mac": bytes.fromhex("aabbccddeeff")}, "src_mac", 0xAABBCCDDEEFF),
        ("raw", "name= my flow ", "name", "my flow"),
        ("raw", "priority=7", "priority", 7),
        ("raw", "weight=255", "weight", 255),
    ],
)
def test_attribute_values(template, attrs, field, expected):
    assert getattr(FlowAttributes.parse(template, attrs), field) == expected


# ---------------------------------------------------------------- attributes: errors


@pytest.mark.parametrize(
    ("template", "attrs", "field", "needles"),
    [
        ("eth/ipv4/udp", "dst_prot=53", "dst_prot", ["unknown", "did you mean 'dst_port'"]),
        ("eth/ipv4/udp", {"prio": 1}, "prio", ["unknown", "'priority'"]),
        ("eth/ipv4/udp", {"xyzzy": 1}, "xyzzy", ["unknown", "known: in_port"]),
        ("eth/ipv4/udp", "dst_port", "dst_port", ["name=value"]),
        ("eth/ipv4/udp", [("dst_port", 1), ("dst_port", 2)], "dst_port", ["twice"]),
        ("eth/ipv4/udp", 3.5, "attrs", ["float", "mapping"]),
        ("eth/ipv4/udp", "dst_port=70000", "dst_port", ["'70000'", "0..65535"]),
        ("eth/ipv4/udp", "dst_port=-1", "dst_port", ["'-1'", "0..65535"]),
        ("eth/ipv4/udp", "dst_port=http", "dst_port", ["'http'", "0..65535"]),
        ("eth/ipv4/udp", "dst_port=2000-1000", "dst_port", ["'2000-1000'", "lo <= hi"]),
        ("eth/ipv4/udp", "dst_port=1-2-3", "dst_port", ["'1-2-3'"]),
        ("eth/ipv4/udp", {"dst_port": True}, "dst_port", ["True"]),
        ("eth/ipv4/udp", {"dst_port": 5.0}, "dst_port", ["5.0"]),
        ("eth/ipv4/udp", {"src_port": (1, 2, 3)}, "src_port", ["(1, 2, 3)"]),
        ("eth/ipv4/udp", "src_ip=167772160", "src_ip", ["'167772160'"]),
        ("eth/ipv4/udp", "src_ip=10.0.0.1/8", "src_ip", ["'10.0.0.1/8'", "host bits set"]),
        ("eth/ipv4/udp", "src_ip=10.0.0.0/33", "src_ip", ["'10.0.0.0/33'", "10.0.0.0/8"]),
        ("eth/ipv4/udp", "dst_ip=10.0.0", "dst_ip", ["'10.0.0'"]),
        ("eth/ipv4/udp", {"dst_ip": 1.5}, "dst_ip", ["1.5"]),
        ("eth/ipv4/udp", {"dst_ip": 2**40}, "dst_ip", [str(2**40)]),
        ("eth/ipv4/udp", "src_ip=2001:db8::/32", "src_ip", ["'2001:db8::/32'", "'ipv6'"]),
        ("eth/ipv6/udp", "dst_ip=10.0.0.0/8", "dst_ip", ["'10.0.0.0/8'", "'ipv4'"]),
        ("eth/arp", "src_ip=10.0.0.1", "src_ip", ["'10.0.0.1/32'", "'ipv4'", "'eth/arp'"]),
        ("udp", "src_ip=10.0.0.1", "src_ip", ["'ipv4'", "'udp'"]),
        ("eth/ipv4", "dst_port=53", "dst_port", ["53", "'udp' or 'tcp'", "'eth/ipv4'"]),
        ("eth/ipv4/icmp", "src_port=1", "src_port", ["'udp' or 'tcp'"]),
        ("eth/ipv4/udp", "vlan=5", "vlan", ["5", "'vlan' layer"]),
        ("eth/vlan/ipv4", "vlan=4096", "vlan", ["'4096'", "0..4095"]),
        ("eth/vlan/ipv4", "vlan=-1", "vlan", ["'-1'", "0..4095"]),
        ("eth/ipv4/udp", "protocol=tcp", "protocol", ["6", "udp (17)", "'eth/ipv4/udp'"]),
        ("udp", "protocol=6", "protocol", ["6", "udp (17)"]),
        ("eth/ipv4", "protocol=256", "protocol", ["'256'", "0..0xff", "tcp"]),
        ("eth/ipv4", "protocol=sctpx", "protocol", ["'sctpx'"]),
        ("eth/ipv4", "protocol=icmpv6", "protocol", ["58", "ipv4"]),
        ("eth/ipv6", "protocol=icmp", "protocol", ["1", "ipv6"]),
        ("eth", "protocol=6", "protocol", ["6", "'ipv4', 'ipv6'"]),
        ("eth/ipv4/udp", "ethertype=0x86dd", "ethertype", ["0x86dd", "ipv4 (0x0800)"]),
        ("eth/arp", "ethertype=ipv4", "ethertype", ["0x0800", "arp (0x0806)"]),
        ("eth", "ethertype=0x10000", "ethertype", ["'0x10000'", "0..0xffff"]),
        ("ipv4/udp", "ethertype=0x0800", "ethertype", ["2048", "'eth'"]),
        ("ipv4/udp", "src_mac=aa:bb:cc:dd:ee:ff", "src_mac", ["'aa:bb:cc:dd:ee:ff'", "'eth'"]),
        ("eth", "src_mac=aa:bb:cc:dd:ee", "src_mac", ["'aa:bb:cc:dd:ee'", "aa:bb:cc:dd:ee:ff"]),
        ("eth", "src_mac=aa:bb-cc:dd:ee:ff", "src_mac", ["'aa:bb-cc:dd:ee:ff'"]),
        ("eth", "src_mac=gg:bb:cc:dd:ee:ff", "src_mac", ["'gg:bb:cc:dd:ee:ff'"]),
        ("eth", "dst_mac=aa:bb:cc:dd:ee:ff/24", "dst_mac", ["/24", "'aa:bb:cc:00:00:00/24'"]),
        ("eth", "dst_mac=aa:bb:cc:00:00:00/49", "dst_mac", ["/49"]),
        ("eth", {"dst_mac": 1 << 48}, "dst_mac", [str(1 << 48)]),
        ("raw", "in_port=-1", "in_port", ["'-1'", ">= 0"]),
        ("raw", "priority=8", "priority", ["'8'", "0..7"]),
        ("raw", "priority=*", "priority", ["'*'", "0..7"]),
        ("raw", "weight=0", "weight", ["'0'", "1..255"]),
        ("raw", "weight=256", "weight", ["'256'", "1..255"]),
        ("raw", "queue_limit=0", "queue_limit", ["'0'", "> 0", "KiB"]),
        ("raw", "queue_limit=64kb", "queue_limit", ["'64kb'", "KiB"]),
        ("raw", "queue_limit=-5", "queue_limit", ["'-5'"]),
        ("raw", "queue_limit=1.5M", "queue_limit", ["'1.5M'"]),
        ("raw", "queue_frames=0", "queue_frames", ["'0'", ">= 1"]),
        ("raw", "name=", "name", ["''", "non-empty"]),
        ("raw", {"name": 5}, "name", ["5", "string"]),
    ],
)
def test_attribute_errors(template, attrs, field, needles):
    with pytest.raises(FlowAttributeError) as info:
        FlowAttributes.parse(template, attrs)
    assert info.value.field == field
    message = str(info.value)
    assert message.startswith(f"flow attribute {field!r}: ")
    for needle in needles:
        assert needle in message, (needle, message)


def test_attribute_error_bad_template_is_template_error():
    with pytest.raises(FlowTemplateError):
        FlowAttributes.parse("eth/udp", "dst_port=53")


# ---------------------------------------------------------------- round trips


ROUND_TRIPS = [
    ("raw", None),
    ("raw", "queue_limit=64KiB,queue_frames=10,priority=7,weight=3,name=log"),
    ("eth/ipv4/udp", "dst_port=53,src_ip=10.0.0.0/8,priority=3"),
    ("eth/qinq/vlan/ipv6/tcp",
     "in_port=1,src_mac=02:00:00:00:00:01,dst_mac=02:00:00:00:00:00/8,vlan=4095,"
     "src_ip=2001:db8::/48,dst_ip=::1,src_port=1024-65535,dst_port=443"),
    ("eth", "ethertype=0x88b5,src_mac=aa:bb:cc:dd:ee:ff"),
    ("eth/ipv4", "protocol=47,dst_ip=192.168.0.0/16"),
    ("udp", "dst_port=5353"),
    ("eth/arp", "src_mac=aa:bb:cc:00:00:00/24"),
]


@pytest.mark.parametrize(("template", "attrs"), ROUND_TRIPS)
def test_to_dict_round_trips(template, attrs):
    a = FlowAttributes.parse(template, attrs)
    assert FlowAttributes.parse(template, a.to_dict()) == a
    assert FlowAttributes.parse(template, a.to_dict(template)) == a
    assert FlowAttributes.parse(template, a) == a
    assert all(isinstance(v, int | str) for v in a.to_dict().values())


@pytest.mark.parametrize(("template", "attrs"), ROUND_TRIPS)
def test_spec_text_round_trips(template, attrs):
    spec = FlowSpec.parse(template, attrs)
    text = str(spec)
    assert FlowSpec.parse(text) == spec
    path, _, query = text.partition("?")
    assert FlowSpec.from_url_query(path, query) == spec
    assert str(FlowSpec.parse(text)) == text


def test_to_dict_canonical():
    a = FlowAttributes.parse(
        "eth/ipv4/udp",
        {"priority": "3", "src_ip": "10.0.0.0/8", "dst_port": "53", "weight": 1,
         "src_mac": "AA-BB-CC-DD-EE-FF", "src_port": "100-200"},
    )
    assert a.to_dict() == {
        "src_mac": "aa:bb:cc:dd:ee:ff", "ethertype": 0x0800, "src_ip": "10.0.0.0/8",
        "protocol": 17, "src_port": "100-200", "dst_port": 53, "priority": 3,
    }
    assert list(a.to_dict("eth/ipv4/udp")) == ["src_mac", "src_ip", "src_port", "dst_port",
                                               "priority"]


def test_spec_str_canonical():
    spec = FlowSpec.parse("eth/ipv4/udp", "src_ip=10.0.0.0/8,dst_port=53")
    assert str(spec) == "eth/ipv4/udp?src_ip=10.0.0.0/8&dst_port=53"
    assert str(FlowSpec.parse("ETH/IPv4/UDP")) == "eth/ipv4/udp"
    assert str(FlowSpec.parse("eth/ipv4/udp", "protocol=udp")) == "eth/ipv4/udp"


def test_spec_url_query():
    spec = FlowSpec.from_url_query("eth/ipv4/udp", "dst_port=53&priority=2")
    assert spec.attrs.dst_port == 53 and spec.attrs.priority == 2
    assert FlowSpec.from_url_query("eth/ipv4/udp", "?dst_port=53") == FlowSpec.parse(
        "eth/ipv4/udp", "dst_port=53")
    assert FlowSpec.from_url_query("raw", "") == FlowSpec.parse("raw")
    named = FlowSpec.parse("raw", {"name": "a b&c=d,e"})
    assert "a%20b%26c%3Dd%2Ce" in str(named)
    assert FlowSpec.parse(str(named)) == named
    assert FlowSpec.from_url_query("raw", "name=a+b").attrs.name == "a b"
    with pytest.raises(FlowAttributeError) as info:
        FlowSpec.from_url_query("eth/ipv4/udp", "dst_port=53&priority")
    assert info.value.field == "priority"
    with pytest.raises(FlowAttributeError, match="twice"):
        FlowSpec.from_url_query("eth/ipv4/udp", "dst_port=53&dst_port=54")


def test_spec_parse_forms():
    spec = FlowSpec.parse("eth/ipv4/udp", {"dst_port": 53})
    assert FlowSpec.parse(spec) is spec
    assert FlowSpec.parse("eth/ipv4/udp?dst_port=53") == spec
    assert FlowSpec.parse(FlowTemplate.parse("eth/ipv4/udp"), "dst_port=53") == spec
    assert spec.template == FlowTemplate.parse("eth/ipv4/udp")
    assert {spec: 1}[FlowSpec.parse("eth/ipv4/udp", "dst_port=53")] == 1
    with pytest.raises(FlowTemplateError, match="both"):
        FlowSpec.parse("eth/ipv4/udp?dst_port=53", {"priority": 1})


# ---------------------------------------------------------------- matches


def packet(**fields):
    base = {
        "in_port": 0, "src_mac": 0x020000000001, "dst_mac": 0x020000000002, "ethertype": 0x0800,
        "vlan": None, "src_ip": ipaddress.ip_address("10.1.2.3"),
        "dst_ip": ipaddress.ip_address("192.168.1.1"), "protocol": 17, "src_port": 40000,
        "dst_port": 53,
    }
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("template", "attrs", "fields", "expected"),
    [
        ("eth/ipv4/udp", None, {}, True),
        ("eth/ipv4/udp", "dst_port=53", {}, True),
        ("eth/ipv4/udp", "dst_port=54", {}, False),
        ("eth/ipv4/udp", "dst_port=50-60", {}, True),
        ("eth/ipv4/udp", "dst_port=54-60", {}, False),
        ("eth/ipv4/udp", "src_port=40000-65535", {}, True),
        ("eth/ipv4/udp", "src_ip=10.0.0.0/8", {}, True),
        ("eth/ipv4/udp", "src_ip=10.1.2.3", {}, True),
        ("eth/ipv4/udp", "src_ip=10.1.2.4", {}, False),
        ("eth/ipv4/udp", "src_ip=11.0.0.0/8", {}, False),
        ("eth/ipv4/udp", "src_ip=0.0.0.0/0", {}, True),
        ("eth/ipv4/udp", "src_ip=10.0.0.0/8", {"src_ip": 0x0A000001}, True),
        ("eth/ipv4/udp", "src_ip=10.0.0.0/8", {"src_ip": "10.9.9.9"}, True),
        ("eth/ipv4/udp", "src_ip=10.0.0.0/8", {"src_ip": ipaddress.ip_address("::1")}, False),
        ("eth/ipv4/udp", "src_ip=10.0.0.0/8", {"src_ip": "garbage"}, False),
        ("eth/ipv4/udp", "src_ip=10.0.0.0/8", {"src_ip": None}, False),
        ("eth/ipv4/udp", "dst_ip=192.168.0.0/16,dst_port=53", {}, True),
        ("eth/ipv4/udp", "dst_ip=192.168.0.0/16,dst_port=54", {}, False),
        ("eth/ipv4/udp", None, {"protocol": 6}, False),  # implied protocol is matched
        ("eth/ipv4/udp", None, {"ethertype": 0x86DD}, False),  # implied ethertype too
        ("eth/ipv4/udp", "src_mac=02:00:00:00:00:01", {}, True),
        ("eth/ipv4/udp", "src_mac=02:00:00:00:00:01", {"src_mac": "02:00:00:00:00:01"}, True),
        ("eth/ipv4/udp", "src_mac=02:00:00:00:00:01", {"src_mac": "02:00:00:00:00:03"}, False),
        ("eth/ipv4/udp", "src_mac=02:00:00:00:00:00/24", {"src_mac": 0x0200009999FF}, True),
        ("eth/ipv4/udp", "src_mac=02:00:00:00:00:00/24", {"src_mac": 0x0300009999FF}, False),
        ("eth/ipv4/udp", "dst_mac=02:00:00:00:00:00/8", {}, True),
        ("eth/ipv4/udp", "dst_mac=*", {"dst_mac": None}, True),
        ("eth/ipv4/udp", "src_mac=02:00:00:00:00:01", {"src_mac": "bad"}, False),
        ("eth/ipv4/udp", "in_port=1", {}, False),
        ("eth/ipv4/udp", "in_port=0", {}, True),
        ("eth/ipv4/udp", "in_port=0", {"in_port": "0"}, True),
        ("eth/vlan/ipv4/udp", "vlan=10", {"vlan": 10}, True),
        ("eth/vlan/ipv4/udp", "vlan=10", {"vlan": 11}, False),
        ("eth/vlan/ipv4/udp", "vlan=10", {}, False),  # untagged frame
        ("eth/ipv4/udp", "priority=7,queue_limit=1M,name=x", {}, True),  # resources never match
    ],
)
def test_matches_v4(template, attrs, fields, expected):
    assert FlowSpec.parse(template, attrs).matches(packet(**fields)) is expected


V6 = {
    "ethertype": 0x86DD, "protocol": 6, "src_ip": ipaddress.ip_address("2001:db8::5"),
    "dst_ip": ipaddress.ip_address("fe80::1"), "dst_port": 443,
}


@pytest.mark.parametrize(
    ("attrs", "fields", "expected"),
    [
        (None, {}, True),
        ("src_ip=2001:db8::/32", {}, True),
        ("src_ip=2001:db8::/32", {"src_ip": "2001:db9::1"}, False),
        ("src_ip=2001:db8::5", {}, True),
        ("src_ip=::/0", {}, True),
        ("src_ip=2001:db8::/32", {"src_ip": 0x20010DB8 << 96}, True),
        ("src_ip=2001:db8::/32", {"src_ip": ipaddress.ip_address("10.0.0.1")}, False),
        ("dst_ip=fe80::/10,dst_port=443", {}, True),
        ("dst_ip=fe80::/10,dst_port=80-442", {}, False),
        (None, {"protocol": 17}, False),
    ],
)
def test_matches_v6(attrs, fields, expected):
    spec = FlowSpec.parse("eth/ipv6/tcp", attrs)
    assert spec.matches(packet(**{**V6, **fields})) is expected


def test_matches_missing_fields_fail_only_non_wild():
    assert FlowSpec.parse("raw").matches({})
    assert not FlowSpec.parse("udp").matches({})  # protocol 17 is implied
    assert FlowSpec.parse("udp").matches({"protocol": 17})
    assert FlowSpec.parse("udp", "dst_port=53").matches({"protocol": 17, "dst_port": 53})


def test_match_fields_are_attributes():
    assert set(MATCH_FIELDS) <= set(ATTRIBUTES)
    assert set(packet()) == set(MATCH_FIELDS)


# ---------------------------------------------------------------- data attributes


def test_data_attributes_valid():
    attrs = {"timestamp": 1_700_000_000_123_456_789, "port": 1, "length": 1500, "flags": 0x3,
             "vlan": 10, "status": -5, "x_seq": object()}
    out = validate_data_attributes(attrs)
    assert out == attrs and out is not attrs
    assert type(out) is dict and DataAttributes is not None
    assert validate_data_attributes(None) == {}
    assert validate_data_attributes({"timestamp": 1.5})["timestamp"] == 1.5
    assert validate_data_attributes({"timestamp": "12"})["timestamp"] == 12
    assert validate_data_attributes({"length": "64", "port": "0x2"}) == {"length": 64, "port": 2}


@pytest.mark.parametrize(
    ("attrs", "field", "needles"),
    [
        ({"timestamp": -1}, "timestamp", ["-1", "nanoseconds"]),
        ({"timestamp": float("nan")}, "timestamp", ["nan"]),
        ({"timestamp": "soon"}, "timestamp", ["'soon'"]),
        ({"timestamp": True}, "timestamp", ["True"]),
        ({"port": -1}, "port", ["-1", ">= 0"]),
        ({"length": "long"}, "length", ["'long'"]),
        ({"flags": 1.5}, "flags", ["1.5"]),
        ({"vlan": 4096}, "vlan", ["4096", "0..4095"]),
        ({"status": "ok"}, "status", ["'ok'", "integer"]),
        ({"lenght": 3}, "lenght", ["unknown", "did you mean 'length'", "x_"]),
        ({"dst_port": 3}, "dst_port", ["unknown data attribute"]),
        ({"X_caps": 3}, "X_caps", ["unknown"]),
    ],
)
def test_data_attribute_errors(attrs, field, needles):
    with pytest.raises(FlowAttributeError) as info:
        validate_data_attributes(attrs)
    assert info.value.field == field
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_standard_library_only():
    """The host package must import on a bare install: only stdlib and relative imports."""
    import partner.flow as flow

    tree = ast.parse(pathlib.Path(flow.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in sys.stdlib_module_names, name


def test_attributes_from_pairs():
    a = FlowAttributes.parse("udp", [("dst_port", "53"), ["priority", 2]])
    assert (a.dst_port, a.priority) == (53, 2)
    with pytest.raises(FlowAttributeError, match=r"\(name, value\) pairs") as info:
        FlowAttributes.parse("udp", ["dst_port"])
    assert info.value.field == "attrs"
