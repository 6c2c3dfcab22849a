"""Header parser (partner.hdl.parser) against its reference model (partner.sim.models.parser).

The model is checked first against hand-worked expectations; the gateware is then run in
amaranth.sim on the same frames (built with scapy), back to back, and compared with the model
field by field, with the latency, the per-frame cause and the counters checked on every run.
"""

import gc
import ipaddress
import random

import pytest
from amaranth.hdl import Const
from amaranth.sim import Simulator
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from partner.formats import FLOW_KEY, KeyFlag
from partner.hdl.parser import LATENCY, Parser, counter_name
from partner.parser_formats import MalformedCause as Cause
from partner.sim.beats import packet_beats
from partner.sim.models.parser import parse

F = KeyFlag
MAC_A, MAC_B = "00:11:22:33:44:55", "66:77:88:99:aa:bb"
IP_A, IP_B = "10.0.0.1", "192.168.1.2"
IP6_A, IP6_B = "2001:db8::1", "fe80::abcd:2"


def eth(**kwargs):
    return Ether(dst=MAC_A, src=MAC_B, **kwargs)


def udp4(**ip):
    return eth() / IP(src=IP_A, dst=IP_B, **ip) / UDP(sport=1234, dport=53)


# -- frames ----------------------------------------------------------------------------------

DIRECTED = {
    "udp4": udp4() / b"payload",
    "dot1q_tcp4": eth() / Dot1Q(vlan=5, prio=3) / IP(src=IP_A, dst=IP_B)
    / TCP(sport=80, dport=8080),
    "qinq_udp4": eth() / Dot1AD(vlan=100) / Dot1Q(vlan=200) / IP(src=IP_A, dst=IP_B)
    / UDP(sport=7, dport=9),
    "dot1q_dot1q_udp4": eth() / Dot1Q(vlan=4095) / Dot1Q(vlan=1) / IP() / UDP(),
    "dot1ad_only": eth() / Dot1AD(vlan=77) / IP() / ICMP(),
    "arp": eth() / ARP(psrc=IP_A, pdst=IP_B),
    "dot1q_arp": eth() / Dot1Q(vlan=9) / ARP(),
    "udp6": eth() / IPv6(src=IP6_A, dst=IP6_B) / UDP(sport=546, dport=547),
    "tcp6_qinq": eth() / Dot1AD(vlan=3) / Dot1Q(vlan=4) / IPv6(src=IP6_A, dst=IP6_B) / TCP(),
    "udp6_frag_first": eth() / IPv6(src=IP6_A, dst=IP6_B) / IPv6ExtHdrFragment(offset=0, m=1)
    / UDP(sport=5000, dport=6000),
    "udp6_frag_later": eth() / IPv6(src=IP6_A, dst=IP6_B) / IPv6ExtHdrFragment(offset=100, nh=17)
    / bytes(16),
    "hop_by_hop6": eth() / IPv6() / IPv6ExtHdrHopByHop() / UDP(),
    "icmp6": eth() / IPv6(src=IP6_A, dst=IP6_B) / ICMPv6EchoRequest(),
    "icmp4": eth() / IP(src=IP_A, dst=IP_B) / ICMP(),
    "ipv4_options_max": eth() / IP(src=IP_A, dst=IP_B, options=b"\x01" * 40)
    / TCP(sport=1, dport=2),
    "ipv4_options_4": eth() / Dot1Q(vlan=2) / IP(options=b"\x01" * 4) / UDP(sport=3, dport=4),
    "frag4_first": udp4(flags="MF", frag=0),
    "frag4_middle": eth() / IP(src=IP_A, dst=IP_B, proto=17, flags="MF", frag=185) / bytes(24),
    "frag4_last": eth() / IP(proto=6, frag=370) / bytes(24),
    "lldp": eth(type=0x88CC) / (b"\x02\x07\x04" + b"\x00" * 40),
    "total_too_big": udp4(len=200),
    "total_below_header": udp4(len=19),
    "total_short_of_udp": udp4(len=24) / bytes(20),
    "total_short_of_tcp": eth() / IP(len=36) / TCP() / bytes(8),
    "ihl_4": udp4(ihl=4),
    "version_5": udp4(version=5),
    "ipv6_version_4": eth(type=0x86DD) / IP() / bytes(40),
    "payload6_too_big": eth() / IPv6(plen=100) / UDP(),
    "frag6_payload_short": eth() / IPv6(plen=4) / IPv6ExtHdrFragment() / UDP(),
    "frag6_cut": (eth() / IPv6(plen=8) / IPv6ExtHdrFragment()).build()[:58],
    "tcp6_short": eth() / IPv6(plen=12) / TCP(),
    "padded_udp4": udp4() / (b"x" + b"\x00" * 17),  # Ethernet padding after the IP packet
}
DIRECTED = {name: bytes(frame) for name, frame in DIRECTED.items()}


def truncations(frame):
    return [frame[:n] for n in range(1, len(frame) + 1)]


UDP4_PLAIN = bytes(udp4())  # 42 bytes: Ethernet 14 + IPv4 20 + UDP 8


# -- the model against hand-worked expectations ---------------------------------------------

def test_model_udp4():
    key = parse(DIRECTED["udp4"], in_port=5)
    assert key == {
        "flags": F.IPV4 | F.L4, "in_port": 5, "vlan": 0, "ethertype": 0x0800,
        "src_mac": 0x66778899AABB, "dst_mac": 0x001122334455, "protocol": 17,
        "src_ip": int(ipaddress.ip_address(IP_A)), "dst_ip": int(ipaddress.ip_address(IP_B)),
        "src_port": 1234, "dst_port": 53, "malformed_cause": Cause.NONE,
    }


def test_model_tags():
    key = parse(DIRECTED["qinq_udp4"])
    assert key["flags"] == F.VLAN | F.QINQ | F.IPV4 | F.L4
    assert (key["vlan"], key["ethertype"], key["src_port"], key["dst_port"]) == (100, 0x0800, 7, 9)
    key = parse(DIRECTED["dot1q_tcp4"])
    assert key["flags"] == F.VLAN | F.IPV4 | F.L4
    assert (key["vlan"], key["protocol"], key["dst_port"]) == (5, 6, 8080)
    key = parse(DIRECTED["dot1ad_only"])
    assert key["flags"] == F.VLAN | F.IPV4 and key["vlan"] == 77 and key["protocol"] == 1


def test_model_ipv6():
    key = parse(DIRECTED["udp6_frag_first"])
    assert key["flags"] == F.IPV6 | F.FRAGMENT | F.L4
    assert key["src_ip"] == int(ipaddress.ip_address(IP6_A))
    assert key["dst_ip"] == int(ipaddress.ip_address(IP6_B))
    assert (key["protocol"], key["src_port"], key["dst_port"]) == (17, 5000, 6000)
    key = parse(DIRECTED["udp6_frag_later"])
    assert key["flags"] == F.IPV6 | F.FRAGMENT and key["protocol"] == 17
    assert key["src_port"] == key["dst_port"] == 0
    assert parse(DIRECTED["hop_by_hop6"])["protocol"] == 0
    assert parse(DIRECTED["icmp6"])["protocol"] == 58


def test_model_ipv4_fragments_and_options():
    assert parse(DIRECTED["frag4_first"])["flags"] == F.IPV4 | F.FRAGMENT | F.L4
    middle = parse(DIRECTED["frag4_middle"])
    assert middle["flags"] == F.IPV4 | F.FRAGMENT and middle["protocol"] == 17
    options = parse(DIRECTED["ipv4_options_max"])
    assert options["flags"] == F.IPV4 | F.L4 and options["dst_port"] == 2


def test_model_arp_and_other_ethertypes():
    arp = parse(DIRECTED["arp"])
    assert arp["flags"] == F.ARP and arp["ethertype"] == 0x0806
    assert arp["src_ip"] == arp["dst_ip"] == arp["protocol"] == 0  # ARP addresses not taken
    lldp = parse(DIRECTED["lldp"])
    assert lldp["flags"] == 0 and lldp["ethertype"] == 0x88CC and lldp["src_ip"] == 0


@pytest.mark.parametrize(("name", "cause"), [
    ("total_too_big", Cause.L3_LENGTH), ("total_below_header", Cause.L3_LENGTH),
    ("total_short_of_udp", Cause.TRUNC_L4), ("total_short_of_tcp", Cause.TRUNC_L4),
    ("ihl_4", Cause.BAD_L3), ("version_5", Cause.BAD_L3), ("ipv6_version_4", Cause.BAD_L3),
    ("payload6_too_big", Cause.L3_LENGTH), ("frag6_payload_short", Cause.L3_LENGTH),
    ("frag6_cut", Cause.BAD_L3), ("tcp6_short", Cause.TRUNC_L4), ("padded_udp4", Cause.NONE),
])
def test_model_malformed(name, cause):
    key = parse(DIRECTED[name])
    assert key["malformed_cause"] == cause
    assert bool(key["flags"] & F.MALFORMED) == (cause != Cause.NONE)
    if cause:
        assert not key["flags"] & F.L4 and key["src_port"] == key["dst_port"] == 0


def test_model_truncated_udp4_causes():
    causes = [parse(frame)["malformed_cause"] for frame in truncations(UDP4_PLAIN)]
    expected = ([Cause.TRUNC_L2] * 13 + [Cause.BAD_L3] * 20 + [Cause.L3_LENGTH] * 8
                + [Cause.NONE])
    assert causes == expected
    qinq = DIRECTED["qinq_udp4"]
    assert [parse(qinq[:n])["malformed_cause"] for n in (13, 14, 17, 18, 21, 22)] == [
        Cause.TRUNC_L2, Cause.TRUNC_VLAN, Cause.TRUNC_VLAN, Cause.TRUNC_VLAN, Cause.TRUNC_VLAN,
        Cause.BAD_L3]


def test_model_reads_missing_bytes_as_zero():
    key = parse(DIRECTED["udp4"][:9])
    assert key["dst_mac"] == 0x001122334455 and key["src_mac"] == 0x667788000000
    assert key["flags"] == F.MALFORMED and key["ethertype"] == 0


# -- simulation helpers ----------------------------------------------------------------------

def run_parser(width, frames, *, ports=None, holes=0.0, seed=0):
    """Stream ``frames`` through a Parser, back to back unless ``holes`` > 0 (probability of an
    idle cycle before each beat). Checks the latency of every key and the counters; returns the
    keys as (FLOW_KEY dict, cause) in order."""
    rng = random.Random(seed)
    ports = ports or [0] * len(frames)
    dut = Parser(width)
    schedule = []
    for frame, port in zip(frames, ports, strict=True):
        for beat in packet_beats(width, frame, junk=rng.choice([0, 0xFF, 0xA5])):
            while rng.random() < holes:
                schedule.append(None)
            schedule.append((beat, port))
    schedule += [None] * (LATENCY + 2)
    keys, last_cycles, key_cycles = [], [], []
    counters = {}

    async def bench(ctx):
        for cycle, item in enumerate(schedule):
            if ctx.get(dut.o_key.valid):
                bits = Const.cast(ctx.get(dut.o_key.payload)).value
                keys.append((FLOW_KEY.unpack(bits), Cause(ctx.get(dut.o_cause))))
                key_cycles.append(cycle)
            ctx.set(dut.i_stream.valid, item is not None)
            if item is not None:
                ctx.set(dut.i_stream.payload, item[0])
                ctx.set(dut.in_port, item[1])
                if item[0]["last"]:
                    last_cycles.append(cycle)
            await ctx.tick()
        await ctx.tick()  # counters lag the key by a cycle
        for name in ["frames_parsed", *(counter_name(c) for c in Cause if c)]:
            counters[name] = ctx.get(getattr(dut, name))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(keys) == len(frames), "one key per frame"
    assert [k - last for k, last in zip(key_cycles, last_cycles, strict=True)] == \
        [LATENCY] * len(frames), "key latency is not constant"
    causes = [cause for _, cause in keys]
    assert counters == {"frames_parsed": len(frames),
                        **{counter_name(c): causes.count(c) for c in Cause if c}}
    return keys


def check_against_model(width, frames, **kwargs):
    rng = random.Random(len(frames))
    ports = [rng.randrange(8) for _ in frames]
    keys = run_parser(width, frames, ports=ports, **kwargs)
    for n, (frame, port, (key, cause)) in enumerate(zip(frames, ports, keys, strict=True)):
        expected = parse(frame, in_port=port)
        expected_cause = expected.pop("malformed_cause")
        got = {name: int(value) for name, value in key.items()}
        diff = {name: (hex(got[name]), hex(expected[name]))
                for name in expected if got[name] != expected[name]}
        assert not diff and cause == expected_cause, (
            f"frame {n} ({len(frame)} bytes {frame.hex()}): (got, model) {diff}, "
            f"cause {cause!r} vs {expected_cause!r}")


# -- gateware tests --------------------------------------------------------------------------

@pytest.mark.parametrize("width", [1, 8])
def test_directed_frames(width):
    check_against_model(width, list(DIRECTED.values()))


@pytest.mark.parametrize("width", [1, 8])
def test_truncated_udp4_every_length(width):
    frames = truncations(UDP4_PLAIN)
    check_against_model(width, frames)
    keys = run_parser(width, frames)
    assert [cause for _, cause in keys] == [parse(f)["malformed_cause"] for f in frames]


@pytest.mark.parametrize("width", [1, 8])
def test_truncated_tagged_and_ipv6(width):
    frames = (truncations(DIRECTED["qinq_udp4"])[:50]
              + truncations(DIRECTED["udp6_frag_first"])[10:])
    check_against_model(width, frames)


@pytest.mark.parametrize("width", [2, 4])
def test_other_widths(width):
    frames = list(DIRECTED.values())[::2] + truncations(DIRECTED["qinq_udp4"])[10:26]
    check_against_model(width, frames)


def test_hand_checked_keys_from_gateware():
    frames = [DIRECTED["qinq_udp4"], DIRECTED["udp6_frag_first"], UDP4_PLAIN[:30]]
    (qinq, _), (frag6, _), (cut, cause) = run_parser(8, frames, ports=[3, 0, 7])
    assert qinq["flags"] == F.VLAN | F.QINQ | F.IPV4 | F.L4
    assert (qinq["vlan"], qinq["in_port"], qinq["src_port"], qinq["dst_port"]) == (100, 3, 7, 9)
    assert qinq["src_ip"] == int(ipaddress.ip_address(IP_A))
    assert frag6["flags"] == F.IPV6 | F.FRAGMENT | F.L4
    assert frag6["dst_ip"] == int(ipaddress.ip_address(IP6_B)) and frag6["dst_port"] == 6000
    assert cut["flags"] == F.IPV4 | F.MALFORMED and cause == Cause.BAD_L3
    assert cut["in_port"] == 7


@pytest.mark.parametrize("width", [1, 4, 8])
def test_idle_cycles_inside_and_between_frames(width):
    frames = list(DIRECTED.values())[:12] + truncations(UDP4_PLAIN)[12:36:3]
    check_against_model(width, frames, holes=0.3, seed=width)


def test_one_byte_frames_back_to_back():
    # A key per cycle: every beat is a whole frame.
    frames = [bytes([n]) for n in range(20)] + [UDP4_PLAIN] + [b"\x00"] * 5
    check_against_model(8, frames)


def random_frames(rng, count):
    """Directed frames with random truncations and byte flips in the headers."""
    pool = list(DIRECTED.values())
    frames = []
    for _ in range(count):
        frame = bytearray(rng.choice(pool))
        for _ in range(rng.choice([0, 0, 1, 2])):
            pos = rng.randrange(min(len(frame), 90))
            frame[pos] = rng.choice([0, 0x08, 0x2C, 0x45, 0x60, 0x81, 0x88, rng.randrange(256)])
        if rng.random() < 0.3:
            frame = frame[:rng.randint(1, len(frame))]
        frames.append(bytes(frame))
    return frames


@pytest.mark.parametrize("width", [2, 4])
def test_random_mutations_other_widths(width):
    check_against_model(width, random_frames(random.Random(width), 60))


def test_interface():
    dut = Parser(4)
    assert isinstance(dut.i_stream.ready, Const) and dut.i_stream.ready.value == 1
    assert isinstance(dut.o_key.ready, Const)
    assert dut.signature.members["o_key"].signature.members["payload"].shape.size == FLOW_KEY.width
    Simulator(dut)  # elaborated: no unused-elaboratable warning


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
@pytest.mark.parametrize("width", [0, 3, 16])
def test_rejects_unsupported_widths(width):
    with pytest.raises(ValueError, match="width_bytes"):
        Parser(width)
    gc.collect()  # the half-built component warns when collected: inside this test's filter
