"""cocotb bench for the header parser's Verilog (run by tests/test_parser_cocotb.py).

Streams seeded random frames back to back (scapy-built protocol mixes, then byte mutations,
length-field corruption and truncations) and compares every key with the reference model:
one key per frame, a constant latency, the same fields and cause, and consistent counters.
Environment: PARSER_WIDTH (beat bytes), PARSER_FRAMES (frame count), PARSER_SEED.
"""

import os
import random
from collections import Counter

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from partner.formats import FLOW_KEY, KeyFlag
from partner.hdl.parser import LATENCY, counter_name
from partner.hdl.stream import packet_layout
from partner.parser_formats import MalformedCause
from partner.sim.models.parser import parse

WIDTH = int(os.environ.get("PARSER_WIDTH", "8"))
NFRAMES = int(os.environ.get("PARSER_FRAMES", "10000"))
SEED = int(os.environ.get("PARSER_SEED", "1"))
# Beats are packed at the gateware layout's own field offsets.
OFFSET = {name: field.offset for name, field in packet_layout(WIDTH)}
COUNTERS = ["frames_parsed", *(counter_name(c) for c in MalformedCause if c)]


def _mac(rng):
    return ":".join(f"{rng.randrange(256):02x}" for _ in range(6))


def _ip4(rng):
    return ".".join(str(rng.randrange(256)) for _ in range(4))


def _ip6(rng):
    return ":".join(f"{rng.randrange(65536):x}" for _ in range(8))


def random_packet(rng):
    """A scapy frame: random tags, L3 and L4 with random field values."""
    pkt = Ether(dst=_mac(rng), src=_mac(rng))
    tags = rng.choice([0, 0, 0, 1, 1, 2])
    if tags == 2:
        pkt = pkt / rng.choice([Dot1AD, Dot1Q])(vlan=rng.randrange(4096)) / Dot1Q(
            vlan=rng.randrange(4096))
    elif tags == 1:
        pkt = pkt / rng.choice([Dot1AD, Dot1Q])(vlan=rng.randrange(4096), prio=rng.randrange(8))
    l3 = rng.choice(["ip4", "ip4", "ip4", "ip6", "ip6", "arp", "other"])
    if l3 == "arp":
        return pkt / ARP(psrc=_ip4(rng), pdst=_ip4(rng))
    if l3 == "other":
        pkt.lastlayer().type = rng.choice([0x88CC, 0x8847, 0x0842, rng.randrange(1536, 65536)])
        return pkt / Raw(rng.randbytes(rng.randrange(60)))
    l4 = rng.choice(["udp", "udp", "tcp", "tcp", "icmp", "raw"])
    if l3 == "ip4":
        frag = rng.choice([0] * 6 + [1, 185, 8191])
        pkt = pkt / IP(src=_ip4(rng), dst=_ip4(rng), flags=rng.choice([0, 0, 1, 2]), frag=frag,
                       options=rng.randbytes(4 * rng.choice([0, 0, 0, 1, 3, 10])))
    else:
        pkt = pkt / IPv6(src=_ip6(rng), dst=_ip6(rng))
        ext = rng.choice(["none", "none", "frag", "frag", "hbh"])
        if ext == "frag":
            pkt = pkt / IPv6ExtHdrFragment(offset=rng.choice([0, 0, 1, 500]), m=rng.randrange(2))
        elif ext == "hbh":
            pkt = pkt / IPv6ExtHdrHopByHop()
    if l4 == "udp":
        pkt = pkt / UDP(sport=rng.randrange(65536), dport=rng.randrange(65536))
    elif l4 == "tcp":
        pkt = pkt / TCP(sport=rng.randrange(65536), dport=rng.randrange(65536))
    elif l4 == "icmp":
        pkt = pkt / (ICMP() if l3 == "ip4" else ICMPv6EchoRequest())
    elif l3 == "ip4":
        pkt.lastlayer().proto = rng.choice([47, 50, 132])
    else:
        pkt.lastlayer().nh = rng.choice([50, 59, 132])
    return pkt / Raw(rng.randbytes(rng.choice([0, 0, 4, 18, 40])))


# Byte values that steer a parser: tag and EtherType halves, IP versions, next headers.
INTERESTING = [0x00, 0x06, 0x08, 0x11, 0x2C, 0x40, 0x45, 0x4F, 0x60, 0x81, 0x86, 0x88, 0xA8,
               0xDD, 0xFF]


def random_frame(rng):
    """A random frame, then with some probability mutated: bytes, length fields, truncation."""
    pkt = random_packet(rng)
    if rng.random() < 0.05:
        # An IP length that ends inside or just after the L4 header.
        if IP in pkt:
            pkt[IP].len = 20 + len(pkt[IP].options or b"") + rng.randrange(24)
        elif IPv6 in pkt:
            pkt[IPv6].plen = rng.randrange(32)
    frame = bytearray(bytes(pkt))
    roll = rng.random()
    if roll < 0.25:
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(min(len(frame), 90))
            frame[pos] = rng.choice([*INTERESTING, rng.randrange(256)])
    elif roll < 0.35:
        # Length fields of an IPv4 (bytes 2-3) or IPv6 (4-5) header at any tag count.
        base = rng.choice([14, 18, 22]) + rng.choice([2, 4])
        if base + 2 <= len(frame):
            frame[base:base + 2] = rng.randrange(rng.choice([64, 256, 65536])).to_bytes(2, "big")
    if rng.random() < 0.2:
        frame = frame[:rng.randint(1, len(frame))]
    elif rng.random() < 0.1:
        frame += bytes(rng.randrange(30))  # Ethernet padding
    return bytes(frame)


def beats_of(frame):
    chunks = [frame[i:i + WIDTH] for i in range(0, len(frame), WIDTH)]
    return [(int.from_bytes(c, "little") << OFFSET["data"]) | (len(c) << OFFSET["nbytes"])
            | ((n == 0) << OFFSET["first"]) | ((n == len(chunks) - 1) << OFFSET["last"])
            for n, c in enumerate(chunks)]


async def reset(dut):
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.i_stream__valid.value = 0
    dut.o_key__ready.value = 1  # ignored: the parser has no back-pressure
    dut.in_port.value = 0
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def stream(dut, frames, ports, rng, hole_p=0.0):
    """Drive ``frames`` and collect the keys; returns [(cycle, key int, cause)] and the cycles
    of the last beats."""
    schedule = []
    for frame, port in zip(frames, ports, strict=True):
        for beat in beats_of(frame):
            if hole_p and rng.random() < hole_p:
                schedule.append(None)
            schedule.append((beat, port, beat >> OFFSET["last"] & 1))
    schedule += [None] * (LATENCY + 2)
    keys, lasts = [], []
    for cycle, item in enumerate(schedule):
        await RisingEdge(dut.clk)
        if item is None:
            dut.i_stream__valid.value = 0
        else:
            dut.i_stream__valid.value = 1
            dut.i_stream__payload.value = item[0]
            dut.in_port.value = item[1]
            if item[2]:
                lasts.append(cycle)
        await ReadOnly()
        if dut.o_key__valid.value:
            # The key of a last beat driven in cycle c is seen here in cycle c + LATENCY.
            keys.append((cycle, dut.o_key__payload.value.to_unsigned(),
                         dut.o_cause.value.to_unsigned()))
    return keys, lasts


def counters(dut):
    return {name: getattr(dut, name).value.to_unsigned() for name in COUNTERS}


def check(frames, ports, keys, lasts):
    assert len(keys) == len(frames), f"{len(keys)} keys for {len(frames)} frames"
    latencies = {cycle - last for (cycle, _, _), last in zip(keys, lasts, strict=True)}
    assert latencies == {LATENCY}, f"key latencies {sorted(latencies)}"
    causes = Counter()
    for n, (frame, port, (_, bits, cause)) in enumerate(zip(frames, ports, keys, strict=True)):
        expected = parse(frame, in_port=port)
        expected_cause = expected.pop("malformed_cause")
        got = {name: int(value) for name, value in FLOW_KEY.unpack(bits).items()}
        if got != expected or cause != expected_cause:
            diff = {k: (hex(got[k]), hex(expected[k])) for k in got if got[k] != expected[k]}
            raise AssertionError(f"frame {n} ({len(frame)} bytes, {frame[:100].hex()}): "
                                 f"(gateware, model) {diff}, cause {cause} vs {expected_cause}")
        causes[MalformedCause(cause)] += 1
    return causes


@cocotb.test()
async def random_frames_against_model(dut):
    """NFRAMES seeded random/mutated frames, mostly back to back, against the model."""
    await reset(dut)
    rng = random.Random(SEED)
    frames = [random_frame(rng) for _ in range(NFRAMES)]
    ports = [rng.randrange(8) for _ in frames]
    keys, lasts = await stream(dut, frames, ports, rng, hole_p=0.02)
    causes = check(frames, ports, keys, lasts)
    expected = {"frames_parsed": len(frames),
                **{counter_name(c): causes[c] for c in MalformedCause if c}}
    assert counters(dut) == expected
    # The mix must reach every cause and every flag, or this test proves less than it says.
    assert all(causes[c] >= 10 for c in MalformedCause), causes
    flags = Counter(bit for _, b, _ in keys for bit in KeyFlag if FLOW_KEY.unpack(b)["flags"] & bit)
    assert all(flags[f] >= 10 for f in KeyFlag), flags
    dut._log.info("%d frames, causes %s, flags %s", len(frames), dict(causes), dict(flags))


@cocotb.test()
async def tiny_frames_one_key_per_cycle(dut):
    """Frames of 1 to 2 beats back to back: a key every cycle or two, none lost."""
    await reset(dut)
    rng = random.Random(SEED + 1)
    frames = [rng.randbytes(rng.randint(1, 2 * WIDTH)) for _ in range(300)]
    frames = [bytes.fromhex("ffffffffffff0000000000018100") + f if rng.random() < 0.3 else f
              for f in frames]
    ports = [rng.randrange(8) for _ in frames]
    before = counters(dut)
    keys, lasts = await stream(dut, frames, ports, rng)
    check(frames, ports, keys, lasts)
    assert counters(dut)["frames_parsed"] - before["frames_parsed"] == len(frames)


@cocotb.test(skip=WIDTH < 8)
async def giant_frame(dut):
    """A frame that would overflow the 18-bit length counters (they stop at 2**17 bytes) is
    still consistent with an IP total length of 65535."""
    await reset(dut)
    header = bytes(Ether() / IP(src="10.1.2.3", dst="10.4.5.6", len=65535) / UDP(len=65515))
    frames = [header + bytes(270_000 - len(header)), header[:40]]
    keys, lasts = await stream(dut, frames, [1, 2], random.Random(0))
    check(frames, [1, 2], keys, lasts)
