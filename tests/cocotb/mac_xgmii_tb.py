"""cocotb bench for the XGMII MAC (XGMIIMAC, run by tests/test_mac_xgmii.py).

The PHY side is cocotbext-eth's XgmiiSource with deficit idle count (into RX) and XgmiiSink (out
of TX); traffic is built with scapy; the rest of the bench is shared with the GMII one
(mac_bench.py).
"""

import random

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.eth import XgmiiFrame, XgmiiSink, XgmiiSource
from mac_bench import (
    PREAMBLE,
    RxMonitor,
    TxDriver,
    counters,
    fcs,
    reset,
    run_good,
    run_rx,
    tx_line_rate,
    udp_frame,
)

from partner.hdl.mac.common import RX_COUNTERS, TX_COUNTERS

WIDTH = 8
PERIOD_NS = 6.4
ERROR, IDLE = 0xFE, 0x07


async def setup(dut, mtu=1500):
    dut.rx_phy__rxd.value = int.from_bytes(bytes([IDLE] * 8), "little")
    dut.rx_phy__rxc.value = 0xFF
    await reset(dut, PERIOD_NS, mtu)


def good(payload):
    return (XgmiiFrame.from_payload(payload, min_len=0), "ok", payload)


def new_sink(dut):
    return XgmiiSink(dut.tx_phy__txd, dut.tx_phy__txc, dut.clk, dut.rst)


# -- tests ---------------------------------------------------------------------------------------

def poisoned(payload, at, char=ERROR):
    """A frame with control character ``char`` in place of payload byte ``at``."""
    frame = XgmiiFrame.from_payload(payload, min_len=0)
    frame.ctrl = [0] * len(frame.data)
    frame.data[8 + at] = char
    frame.ctrl[8 + at] = 1
    return frame


def new_source(dut):
    source = XgmiiSource(dut.rx_phy__rxd, dut.rx_phy__rxc, dut.clk, dut.rst)
    source.enable_dic = True
    return source


@cocotb.test()
async def rx_scapy_traffic(dut):
    """Ether/IP/UDP, IPv6, VLAN and QinQ frames, each drop cause, lane-4 starts, short gaps."""
    await setup(dut)
    source = new_source(dut)
    rng = random.Random(1)
    bad_fcs = udp_frame(rng, 100)
    runt = udp_frame(rng, 50)
    bad_preamble = b"\x55\x55\x55\x00\x55\x55\x55\xd5"
    cases = [
        *(good(udp_frame(rng, n)) for n in (60, 61, 62, 63, 64, 65, 66, 67, 100, 1514)),
        good(udp_frame(rng, 100, v6=True)),
        good(udp_frame(rng, 1514, v6=True)),
        good(udp_frame(rng, 1518, tags=[(0x8100, 5)])),
        good(udp_frame(rng, 1522, tags=[(0x88A8, 5), (0x8100, 6)])),
        (XgmiiFrame.from_payload(g := udp_frame(rng, 1515), min_len=0), "giant", g),
        (XgmiiFrame.from_payload(g := udp_frame(rng, 1519, tags=[(0x8100, 5)]), min_len=0),
         "giant", g),
        (XgmiiFrame.from_payload(g := udp_frame(rng, 1523, tags=[(0x88A8, 5), (0x8100, 6)]),
                                 min_len=0), "giant", g),
        (XgmiiFrame.from_raw_payload(bad_fcs + bytes(b ^ 0xFF for b in fcs(bad_fcs))), "fcs",
         bad_fcs),
        (XgmiiFrame.from_payload(runt, min_len=0), "runt", runt),
        # A control character ends the frame there: /E/, or a misplaced /I/.
        (poisoned(p := udp_frame(rng, 200), 100), "phy", p[:96]),
        (poisoned(p := udp_frame(rng, 200), 150, IDLE), "phy", p[:146]),
        (XgmiiFrame(bad_preamble + (p := udp_frame(rng, 80)) + fcs(p)), "preamble", None),
        good(udp_frame(rng, 90)),
    ]
    await run_rx(dut, WIDTH, source, cases)

    # Every frame in lane 4; then the source's gap target cut to 8, which its deficit idle
    # count turns into gaps of 5..11 bytes counting /T/: 5 is the least 802.3 lets a receiver see.
    for offset, ifg in ((True, 12), (False, 8)):
        source.force_offset_start, source.ifg = offset, ifg
        frames = [udp_frame(rng, n) for n in [*range(60, 76), *rng.choices(range(60, 300), k=20)]]
        await run_good(dut, WIDTH, source, frames,
                       lambda f: XgmiiFrame.from_payload(f, min_len=0))


def random_case(rng):
    """One random frame and what the receiver must make of it; a fifth of them are bad."""
    roll = rng.random()
    v6, tags = rng.random() < 0.3, [(0x8100, 7)] * (rng.random() < 0.3)
    if roll < 0.6:
        return good(udp_frame(rng, rng.randint(70, 600), tags=tags, v6=v6))
    if roll < 0.7:
        p = udp_frame(rng, rng.randint(60, 600))
        return (XgmiiFrame.from_raw_payload(p + bytes(b ^ 1 for b in fcs(p))), "fcs", p)
    if roll < 0.8:
        p = udp_frame(rng, rng.randint(42, 59))
        return (XgmiiFrame.from_payload(p, min_len=0), "runt", p)
    if roll < 0.9:
        p = udp_frame(rng, rng.randint(1515, 1600))
        return (XgmiiFrame.from_payload(p, min_len=0), "giant", p)
    if roll < 0.95:
        p = udp_frame(rng, rng.randint(80, 600))
        at = rng.randrange(64, len(p))
        return (poisoned(p, at, rng.choice([ERROR, IDLE, 0x9C])), "phy", p[:at - 4])
    bad = bytearray(b"\x55" * 7 + b"\xd5")
    bad[rng.randrange(1, 7)] = rng.choice([0x00, 0x54, 0x5D])
    return (XgmiiFrame(bytes(bad) + (p := udp_frame(rng, 80)) + fcs(p)), "preamble", None)


@cocotb.test()
async def rx_random(dut):
    """300 random frames of every kind, gaps of 5..11 bytes: every one delivered or counted."""
    await setup(dut)
    source = new_source(dut)
    source.ifg = 8
    rng = random.Random(5)
    await run_rx(dut, WIDTH, source, [random_case(rng) for _ in range(300)])


@cocotb.test()
async def rx_jumbo(dut):
    """mtu=9000 accepts 9000-byte IP packets; lowered to 1500 between frames, it refuses them."""
    await setup(dut, mtu=9000)
    source = new_source(dut)
    rng = random.Random(2)
    cases = [
        good(udp_frame(rng, 9014)),
        (XgmiiFrame.from_payload(g := udp_frame(rng, 9015), min_len=0), "giant", g),
        (XgmiiFrame.from_payload(g := udp_frame(rng, 9030), min_len=0), "giant", g),
        good(udp_frame(rng, 9018, tags=[(0x8100, 9)])),
        good(udp_frame(rng, 60)),
    ]
    await run_rx(dut, WIDTH, source, cases)
    dut.rx_mtu.value = 1500
    await ClockCycles(dut.clk, 4)
    base = counters(dut, "rx", RX_COUNTERS)
    monitor = RxMonitor(dut, WIDTH)
    await source.send(XgmiiFrame.from_payload(udp_frame(rng, 9014), min_len=0))
    await source.wait()
    await ClockCycles(dut.clk, 40)
    assert len(monitor.frames) == 1 and monitor.frames[0][1]
    assert 1510 < len(monitor.frames[0][0]) <= 1518, "a giant is cut at the limit"
    assert counters(dut, "rx", RX_COUNTERS)["giants"] == base["giants"] + 1


@cocotb.test()
async def tx_scapy_traffic_and_underrun(dut):
    """TX frames arrive at XgmiiSink padded, with a good FCS; an underrun poisons one frame."""
    await setup(dut)
    sink = new_sink(dut)
    rng = random.Random(3)
    frames = [udp_frame(rng, n) for n in (42, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 1514)]
    frames.append(udp_frame(rng, 300, v6=True))
    frames.append(udp_frame(rng, 1518, tags=[(0x8100, 3)]))
    poisoned_frame = len(frames) - 2  # the IPv6 one runs dry after 5 beats
    driver = TxDriver(dut, WIDTH)
    for n, frame in enumerate(frames):
        driver.add(frame, hole_at=5 if n == poisoned_frame else None)
    await driver.run()
    received = [await sink.recv() for _ in frames]
    lanes = set()
    for n, (frame, rx) in enumerate(zip(frames, received, strict=True)):
        assert rx.get_preamble() == PREAMBLE
        lanes.add(rx.start_lane)
        if n == poisoned_frame:
            assert rx.ctrl is not None and rx.ctrl[-1] == 1 and rx.data[-1] == ERROR
            assert not any(rx.ctrl[:-1])
            assert bytes(rx.data[8:-1]) == frame[:40]
        else:
            assert rx.ctrl is None
            assert rx.check_fcs()
            assert rx.get_payload() == frame.ljust(60, b"\x00")
    assert lanes == {0, 4}, "deficit idle count starts frames in both lanes"
    sent = [f for n, f in enumerate(frames) if n != poisoned_frame]
    assert counters(dut, "tx", TX_COUNTERS) == {
        "frames_sent": len(sent), "bytes_sent": sum(max(len(f), 60) for f in sent),
        "underruns": 1}


@cocotb.test()
async def tx_line_rate_64(dut):
    await setup(dut)
    await tx_line_rate(dut, WIDTH, PERIOD_NS, new_sink(dut), 60)


@cocotb.test()
async def tx_line_rate_1518(dut):
    await setup(dut)
    await tx_line_rate(dut, WIDTH, PERIOD_NS, new_sink(dut), 1514)


@cocotb.test()
async def loopback(dut):
    """TX wired to RX cycle by cycle: RX delivers exactly what TX sent, padded."""
    await setup(dut, mtu=9000)

    async def wire():
        while True:
            await RisingEdge(dut.clk)
            dut.rx_phy__rxd.value = dut.tx_phy__txd.value
            dut.rx_phy__rxc.value = dut.tx_phy__txc.value

    cocotb.start_soon(wire())
    rng = random.Random(4)
    frames = [udp_frame(rng, rng.choice([66, 67, 68, 69, 70, 71, 72, 73, 127, 128, 1514]),
                        tags=[(0x8100, 1)] * (n % 3 == 0), v6=n % 2 == 1) for n in range(60)]
    frames += [udp_frame(rng, n) for n in (42, 59, 60, 61, 62, 63, 64, 9014)]
    monitor = RxMonitor(dut, WIDTH)
    driver = TxDriver(dut, WIDTH)
    for frame in frames:
        driver.add(frame)
    await driver.run()
    await ClockCycles(dut.clk, 100)
    assert monitor.frames == [(f.ljust(60, b"\x00"), False) for f in frames]
    tx, rx = counters(dut, "tx", TX_COUNTERS), counters(dut, "rx", RX_COUNTERS)
    assert rx["frames_ok"] == tx["frames_sent"] == len(frames)
    assert rx["bytes_ok"] == tx["bytes_sent"]
