"""cocotb bench for the GMII MAC (GMIIMAC, run by tests/test_mac_gmii.py).

The PHY side is cocotbext-eth's GmiiSource (into RX) and GmiiSink (out of TX); traffic is built
with scapy. Stream beats are packed with the gateware's own ``packet_layout``.
"""

import random
import struct
import zlib

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotb.utils import get_sim_steps
from cocotbext.eth import GmiiFrame, GmiiSink, GmiiSource
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from partner.hdl.mac.common import RX_COUNTERS, TX_COUNTERS
from partner.hdl.stream import packet_layout

WIDTH = 1
LAYOUT = packet_layout(WIDTH)
PERIOD_NS = 8
BYTES_PER_CYCLE = 1
PREAMBLE = b"\x55" * 7 + b"\xd5"


# -- traffic -------------------------------------------------------------------------------------

def udp_frame(rng, size, *, tags=(), v6=False):
    """An Ether[/VLAN tags]/IP(v6)/UDP frame of ``size`` bytes without FCS."""
    pkt = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02")
    for tpid, vid in tags:
        pkt = pkt / (Dot1AD(vlan=vid) if tpid == 0x88A8 else Dot1Q(vlan=vid))
    if v6:
        pkt = pkt / IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=4000, dport=4001)
    else:
        pkt = pkt / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=4000, dport=4001)
    pad = size - len(pkt)
    assert pad >= 0, f"{size} bytes is too short for these headers"
    return bytes(pkt / Raw(rng.randbytes(pad)))


def fcs(frame):
    return struct.pack("<L", zlib.crc32(frame))


# -- bench plumbing --------------------------------------------------------------------------------

async def setup(dut, mtu=1500):
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    dut.rst.value = 1
    dut.rx_mtu.value = mtu
    dut.tx_i_stream__valid.value = 0
    dut.rx_phy__rxd.value = 0
    dut.rx_phy__rx_dv.value = 0
    dut.rx_phy__rx_er.value = 0
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


def counters(dut, prefix, names):
    return {name: getattr(dut, f"{prefix}_{name}").value.to_unsigned() for name in names}


class RxMonitor:
    """Collects (frame, drop) from the RX output; a beat is taken in every cycle it is valid."""

    def __init__(self, dut):
        self.dut = dut
        self.frames = []
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        dut, current = self.dut, bytearray()
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if not dut.rx_o_stream__valid.value:
                continue
            beat = LAYOUT.from_bits(dut.rx_o_stream__payload.value.to_unsigned())
            assert beat.first == (not current), "first flag out of place"
            assert 1 <= beat.nbytes <= WIDTH and (beat.last or beat.nbytes == WIDTH)
            current += beat.data.to_bytes(WIDTH, "little")[:beat.nbytes]
            drop = bool(dut.rx_o_drop.value)
            assert beat.last or not drop, "o_drop outside a last beat"
            if beat.last:
                self.frames.append((bytes(current), drop))
                current = bytearray()


class TxDriver:
    """Feeds frames into the TX stream, valid whenever a beat is left (back to back).

    ``holes`` holds (frame index, beat index) pairs: valid drops for one cycle when that beat
    could be taken, which the MAC must treat as an underrun.
    """

    def __init__(self, dut):
        self.dut = dut
        self.beats = []

    def add(self, frame, hole_at=None):
        chunks = [frame[n:n + WIDTH] for n in range(0, len(frame), WIDTH)]
        for n, chunk in enumerate(chunks):
            bits = LAYOUT.const({"data": int.from_bytes(chunk, "little"), "nbytes": len(chunk),
                                 "first": n == 0, "last": n == len(chunks) - 1}).as_bits()
            self.beats.append((bits, n == hole_at))

    async def run(self):
        dut, beats = self.dut, self.beats
        head, holed = 0, False
        while head < len(beats):
            await RisingEdge(dut.clk)
            bits, hole = beats[head]
            skip = hole and not holed and bool(dut.tx_i_stream__ready.value)
            holed = holed or skip
            dut.tx_i_stream__valid.value = 0 if skip else 1
            dut.tx_i_stream__payload.value = bits
            await ReadOnly()
            if not skip and dut.tx_i_stream__ready.value:
                head += 1
                holed = False
        await RisingEdge(dut.clk)
        dut.tx_i_stream__valid.value = 0


def expected_counts(causes, payload_bytes):
    want = dict.fromkeys(RX_COUNTERS, 0)
    names = {"fcs": "fcs_errors", "runt": "runts", "giant": "giants", "phy": "phy_errors",
             "preamble": "preamble_errors", "ok": "frames_ok"}
    for cause in causes:
        want[names[cause]] += 1
    want["bytes_ok"] = payload_bytes
    return want


async def run_rx(dut, source, cases):
    """Send (GmiiFrame, cause, payload) cases; check output frames, drop flags and counters."""
    monitor = RxMonitor(dut)
    for frame, _, _ in cases:
        await source.send(frame)
    await source.wait()
    await ClockCycles(dut.clk, 40)
    outputs = [(payload, cause) for _, cause, payload in cases if payload is not None]
    assert len(monitor.frames) == len(outputs), (len(monitor.frames), len(outputs))
    for (got, drop), (payload, cause) in zip(monitor.frames, outputs, strict=True):
        assert drop == (cause != "ok"), cause
        if cause == "giant":
            assert got == payload[:len(got)] and len(got) < len(payload)
        else:
            assert got == payload, cause
    ok_bytes = sum(len(p) for _, c, p in cases if c == "ok")
    assert counters(dut, "rx", RX_COUNTERS) == expected_counts([c for _, c, _ in cases], ok_bytes)


def good(payload):
    return (GmiiFrame.from_payload(payload, min_len=0), "ok", payload)


# -- tests ---------------------------------------------------------------------------------------

@cocotb.test()
async def rx_scapy_traffic(dut):
    """Ether/IP/UDP, IPv6, VLAN and QinQ frames, each drop cause, then shrunk gaps."""
    await setup(dut)
    source = GmiiSource(dut.rx_phy__rxd, dut.rx_phy__rx_er, dut.rx_phy__rx_dv, dut.clk, dut.rst)
    rng = random.Random(1)
    bad_fcs = udp_frame(rng, 100)
    runt = udp_frame(rng, 50)
    errored = GmiiFrame.from_payload(udp_frame(rng, 200), min_len=0)
    errored.error = [0] * len(errored.data)
    errored.error[100] = 1
    bad_preamble = b"\x55\x55\x55\x00\x55\x55\x55\xd5"
    cases = [
        *(good(udp_frame(rng, n)) for n in (60, 61, 64, 100, 128, 256, 512, 1024, 1514)),
        good(udp_frame(rng, 100, v6=True)),
        good(udp_frame(rng, 1514, v6=True)),
        good(udp_frame(rng, 1518, tags=[(0x8100, 5)])),
        good(udp_frame(rng, 1522, tags=[(0x88A8, 5), (0x8100, 6)])),
        (GmiiFrame.from_payload(g := udp_frame(rng, 1515), min_len=0), "giant", g),
        (GmiiFrame.from_payload(g := udp_frame(rng, 1519, tags=[(0x8100, 5)]), min_len=0),
         "giant", g),
        (GmiiFrame.from_payload(g := udp_frame(rng, 1523, tags=[(0x88A8, 5), (0x8100, 6)]),
                                min_len=0), "giant", g),
        (GmiiFrame.from_raw_payload(bad_fcs + bytes(b ^ 0xFF for b in fcs(bad_fcs))), "fcs",
         bad_fcs),
        (GmiiFrame.from_payload(runt, min_len=0), "runt", runt),
        (errored, "phy", errored.get_payload()),
        (GmiiFrame(bad_preamble + (p := udp_frame(rng, 80)) + fcs(p)), "preamble", None),
        good(udp_frame(rng, 90)),
    ]
    await run_rx(dut, source, cases)

    # Gaps shrunk to a single idle cycle still separate frames.
    source.ifg = 1
    before = counters(dut, "rx", RX_COUNTERS)
    monitor = RxMonitor(dut)
    frames = [udp_frame(rng, rng.randint(60, 300)) for _ in range(20)]
    for frame in frames:
        await source.send(GmiiFrame.from_payload(frame, min_len=0))
    await source.wait()
    await ClockCycles(dut.clk, 40)
    assert monitor.frames == [(f, False) for f in frames]
    after = counters(dut, "rx", RX_COUNTERS)
    assert after["frames_ok"] - before["frames_ok"] == 20
    assert after["bytes_ok"] - before["bytes_ok"] == sum(map(len, frames))


def random_case(rng):
    """One random frame and what the receiver must make of it; a fifth of them are bad."""
    roll = rng.random()
    v6, tags = rng.random() < 0.3, [(0x8100, 7)] * (rng.random() < 0.3)
    if roll < 0.6:
        return good(udp_frame(rng, rng.randint(70, 600), tags=tags, v6=v6))
    if roll < 0.7:
        p = udp_frame(rng, rng.randint(60, 600))
        return (GmiiFrame.from_raw_payload(p + bytes(b ^ 1 for b in fcs(p))), "fcs", p)
    if roll < 0.8:
        p = udp_frame(rng, rng.randint(42, 59))
        return (GmiiFrame.from_payload(p, min_len=0), "runt", p)
    if roll < 0.9:
        p = udp_frame(rng, rng.randint(1515, 1600))
        return (GmiiFrame.from_payload(p, min_len=0), "giant", p)
    if roll < 0.95:
        frame = GmiiFrame.from_payload(p := udp_frame(rng, rng.randint(60, 600)), min_len=0)
        frame.error = [0] * len(frame.data)
        frame.error[rng.randrange(len(frame.data))] = 1
        return (frame, "phy", p)
    bad = bytearray(b"\x55" * 7 + b"\xd5")
    bad[rng.randrange(7)] = rng.choice([0x00, 0x54, 0x5D])
    return (GmiiFrame(bytes(bad) + (p := udp_frame(rng, 80)) + fcs(p)), "preamble", None)


@cocotb.test()
async def rx_random(dut):
    """200 random frames of every kind back to back: every one delivered or counted once."""
    await setup(dut)
    source = GmiiSource(dut.rx_phy__rxd, dut.rx_phy__rx_er, dut.rx_phy__rx_dv, dut.clk, dut.rst)
    rng = random.Random(5)
    await run_rx(dut, source, [random_case(rng) for _ in range(200)])


@cocotb.test()
async def rx_jumbo(dut):
    """mtu=9000 accepts 9000-byte IP packets; lowered to 1500 between frames, it refuses them."""
    await setup(dut, mtu=9000)
    source = GmiiSource(dut.rx_phy__rxd, dut.rx_phy__rx_er, dut.rx_phy__rx_dv, dut.clk, dut.rst)
    rng = random.Random(2)
    cases = [
        good(udp_frame(rng, 9014)),
        (GmiiFrame.from_payload(g := udp_frame(rng, 9015), min_len=0), "giant", g),
        good(udp_frame(rng, 9018, tags=[(0x8100, 9)])),
        good(udp_frame(rng, 60)),
    ]
    await run_rx(dut, source, cases)
    dut.rx_mtu.value = 1500
    await ClockCycles(dut.clk, 4)
    base = counters(dut, "rx", RX_COUNTERS)
    monitor = RxMonitor(dut)
    jumbo = udp_frame(rng, 9014)
    await source.send(GmiiFrame.from_payload(jumbo, min_len=0))
    await source.wait()
    await ClockCycles(dut.clk, 40)
    assert len(monitor.frames) == 1 and monitor.frames[0][1]
    assert len(monitor.frames[0][0]) == 1514, "a giant is cut at the limit"
    assert counters(dut, "rx", RX_COUNTERS)["giants"] == base["giants"] + 1


@cocotb.test()
async def tx_scapy_traffic_and_underrun(dut):
    """TX frames arrive at GmiiSink padded, with a good FCS; an underrun poisons one frame."""
    await setup(dut)
    sink = GmiiSink(dut.tx_phy__txd, dut.tx_phy__tx_er, dut.tx_phy__tx_en, dut.clk, dut.rst)
    rng = random.Random(3)
    frames = [udp_frame(rng, n) for n in (42, 59, 60, 61, 100, 1514)]
    frames.append(udp_frame(rng, 300, v6=True))
    frames.append(udp_frame(rng, 1518, tags=[(0x8100, 3)]))
    driver = TxDriver(dut)
    for n, frame in enumerate(frames):
        driver.add(frame, hole_at=150 if n == 6 else None)  # the IPv6 frame runs dry
    await driver.run()
    received = [await sink.recv() for _ in frames]
    for n, (frame, rx) in enumerate(zip(frames, received, strict=True)):
        assert rx.get_preamble() == PREAMBLE[1:]  # GmiiSink does not store a frame's 1st byte
        if n == 6:
            assert rx.error is not None and rx.error[-1] == 1 and not any(rx.error[:-1])
            assert bytes(rx.data[rx.get_preamble_len():-1]) == frame[:150]
        else:
            assert rx.error is None
            assert rx.check_fcs()
            assert rx.get_payload() == frame.ljust(60, b"\x00")
    sent = [f for n, f in enumerate(frames) if n != 6]
    assert counters(dut, "tx", TX_COUNTERS) == {
        "frames_sent": len(sent), "bytes_sent": sum(max(len(f), 60) for f in sent),
        "underruns": 1}


async def line_rate(dut, size, count=100):
    sink = GmiiSink(dut.tx_phy__txd, dut.tx_phy__tx_er, dut.tx_phy__tx_en, dut.clk, dut.rst)
    rng = random.Random(size)
    driver = TxDriver(dut)
    for _ in range(count):
        driver.add(udp_frame(rng, size))
    await driver.run()
    received = [await sink.recv() for _ in range(count)]
    assert all(rx.check_fcs() for rx in received)
    step = get_sim_steps(PERIOD_NS, "ns") / BYTES_PER_CYCLE  # sim steps per byte time
    span = (received[-1].sim_time_start - received[0].sim_time_start) / step
    nominal = (count - 1) * (8 + max(size, 60) + 4 + 12)
    occupancy = nominal / span
    dut._log.info("TX %d-byte frames: wire occupancy %.5f of line rate", size + 4, occupancy)
    assert occupancy >= 0.999, occupancy


@cocotb.test()
async def tx_line_rate_64(dut):
    await setup(dut)
    await line_rate(dut, 60)


@cocotb.test()
async def tx_line_rate_1518(dut):
    await setup(dut)
    await line_rate(dut, 1514)


@cocotb.test()
async def loopback(dut):
    """TX wired to RX cycle by cycle: RX delivers exactly what TX sent, padded."""
    await setup(dut)

    async def wire():
        while True:
            await RisingEdge(dut.clk)
            dut.rx_phy__rxd.value = dut.tx_phy__txd.value
            dut.rx_phy__rx_dv.value = dut.tx_phy__tx_en.value
            dut.rx_phy__rx_er.value = dut.tx_phy__tx_er.value

    cocotb.start_soon(wire())
    rng = random.Random(4)
    frames = [udp_frame(rng, rng.choice([66, 67, 127, 128, 1514]),
                        tags=[(0x8100, 1)] * (n % 3 == 0), v6=n % 2 == 1) for n in range(30)]
    frames += [udp_frame(rng, n) for n in (42, 59, 60, 61, 64)]
    monitor = RxMonitor(dut)
    driver = TxDriver(dut)
    for frame in frames:
        driver.add(frame)
    await driver.run()
    await ClockCycles(dut.clk, 200)
    assert monitor.frames == [(f.ljust(60, b"\x00"), False) for f in frames]
    tx, rx = counters(dut, "tx", TX_COUNTERS), counters(dut, "rx", RX_COUNTERS)
    assert rx["frames_ok"] == tx["frames_sent"] == len(frames)
    assert rx["bytes_ok"] == tx["bytes_sent"]
