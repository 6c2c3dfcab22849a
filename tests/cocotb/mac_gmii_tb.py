"""cocotb bench for the GMII MAC (GMIIMAC, run by tests/test_mac_gmii.py).

The PHY side is cocotbext-eth's GmiiSource (into RX) and GmiiSink (out of TX); traffic is built
with scapy; the rest of the bench is shared with the XGMII one (mac_bench.py).
"""

import random

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.eth import GmiiFrame, GmiiSink, GmiiSource
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

WIDTH = 1
PERIOD_NS = 8


async def setup(dut, mtu=1500):
    dut.rx_phy__rxd.value = 0
    dut.rx_phy__rx_dv.value = 0
    dut.rx_phy__rx_er.value = 0
    await reset(dut, PERIOD_NS, mtu)


def good(payload):
    return (GmiiFrame.from_payload(payload, min_len=0), "ok", payload)


def new_sink(dut):
    return GmiiSink(dut.tx_phy__txd, dut.tx_phy__tx_er, dut.tx_phy__tx_en, dut.clk, dut.rst)


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
    await run_rx(dut, WIDTH, source, cases)

    # Gaps shrunk to a single idle cycle still separate frames.
    source.ifg = 1
    frames = [udp_frame(rng, rng.randint(60, 300)) for _ in range(20)]
    await run_good(dut, WIDTH, source, frames, lambda f: GmiiFrame.from_payload(f, min_len=0))


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
    await run_rx(dut, WIDTH, source, [random_case(rng) for _ in range(200)])


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
    await run_rx(dut, WIDTH, source, cases)
    dut.rx_mtu.value = 1500
    await ClockCycles(dut.clk, 4)
    base = counters(dut, "rx", RX_COUNTERS)
    monitor = RxMonitor(dut, WIDTH)
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
    sink = new_sink(dut)
    rng = random.Random(3)
    frames = [udp_frame(rng, n) for n in (42, 59, 60, 61, 100, 1514)]
    frames.append(udp_frame(rng, 300, v6=True))
    frames.append(udp_frame(rng, 1518, tags=[(0x8100, 3)]))
    driver = TxDriver(dut, WIDTH)
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
    monitor = RxMonitor(dut, WIDTH)
    driver = TxDriver(dut, WIDTH)
    for frame in frames:
        driver.add(frame)
    await driver.run()
    await ClockCycles(dut.clk, 200)
    assert monitor.frames == [(f.ljust(60, b"\x00"), False) for f in frames]
    tx, rx = counters(dut, "tx", TX_COUNTERS), counters(dut, "rx", RX_COUNTERS)
    assert rx["frames_ok"] == tx["frames_sent"] == len(frames)
    assert rx["bytes_ok"] == tx["bytes_sent"]
