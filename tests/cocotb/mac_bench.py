"""What the GMII and XGMII MAC benches share: traffic, the RX monitor, the TX driver, checks.

Both MACs have the same internal side (a packet stream of ``width`` bytes, drop flag on the last
beat, the counters of `partner.hdl.mac.common`); only the PHY side and its cocotbext-eth peers
differ, and those stay in mac_gmii_tb.py and mac_xgmii_tb.py.
"""

import random
import struct
import zlib

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotb.utils import get_sim_steps
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from partner.hdl.mac.common import RX_COUNTERS
from partner.hdl.stream import packet_layout

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


# -- bench plumbing ------------------------------------------------------------------------------

async def reset(dut, period_ns, mtu):
    """Start the clock, hold reset for 4 cycles with the inputs idle except the PHY's."""
    Clock(dut.clk, period_ns, unit="ns").start()
    dut.rst.value = 1
    dut.rx_mtu.value = mtu
    dut.tx_i_stream__valid.value = 0
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


def counters(dut, prefix, names):
    return {name: getattr(dut, f"{prefix}_{name}").value.to_unsigned() for name in names}


class RxMonitor:
    """Collects (frame, drop) from the RX output; a beat is taken in every cycle it is valid."""

    def __init__(self, dut, width):
        self.dut, self.width, self.layout = dut, width, packet_layout(width)
        self.frames = []
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        dut, width, current = self.dut, self.width, bytearray()
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if not dut.rx_o_stream__valid.value:
                continue
            beat = self.layout.from_bits(dut.rx_o_stream__payload.value.to_unsigned())
            assert beat.first == (not current), "first flag out of place"
            assert 1 <= beat.nbytes <= width and (beat.last or beat.nbytes == width)
            current += beat.data.to_bytes(width, "little")[:beat.nbytes]
            drop = bool(dut.rx_o_drop.value)
            assert beat.last or not drop, "o_drop outside a last beat"
            if beat.last:
                self.frames.append((bytes(current), drop))
                current = bytearray()


class TxDriver:
    """Feeds frames into the TX stream, valid whenever a beat is left (back to back).

    ``hole_at`` names a beat of a frame where valid drops for one cycle when that beat could be
    taken, which the MAC must treat as an underrun.
    """

    def __init__(self, dut, width):
        self.dut, self.width, self.layout = dut, width, packet_layout(width)
        self.beats = []

    def add(self, frame, hole_at=None):
        width = self.width
        chunks = [frame[n:n + width] for n in range(0, len(frame), width)]
        for n, chunk in enumerate(chunks):
            bits = self.layout.const({
                "data": int.from_bytes(chunk, "little"), "nbytes": len(chunk),
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


async def run_rx(dut, width, source, cases):
    """Send (frame, cause, payload) cases; check output frames, drop flags and counters.

    A giant comes out cut: at the limit on GMII; on XGMII at the beat that crosses it, or whole
    when the frame ends in that beat.
    """
    monitor = RxMonitor(dut, width)
    for frame, _, _ in cases:
        await source.send(frame)
    await source.wait()
    await ClockCycles(dut.clk, 40)
    outputs = [(payload, cause) for _, cause, payload in cases if payload is not None]
    assert len(monitor.frames) == len(outputs), (len(monitor.frames), len(outputs))
    for (got, drop), (payload, cause) in zip(monitor.frames, outputs, strict=True):
        assert drop == (cause != "ok"), cause
        if cause == "giant":
            assert got == payload[:len(got)]
            assert len(got) < len(payload) or width > 1
        else:
            assert got == payload, cause
    ok_bytes = sum(len(p) for _, c, p in cases if c == "ok")
    assert counters(dut, "rx", RX_COUNTERS) == expected_counts([c for _, c, _ in cases], ok_bytes)


async def run_good(dut, width, source, frames, wrap):
    """Send good ``frames`` (each through ``wrap`` into the source's frame type): every one must
    come out undropped and in order, and the counters must grow by exactly them."""
    before = counters(dut, "rx", RX_COUNTERS)
    monitor = RxMonitor(dut, width)
    for frame in frames:
        await source.send(wrap(frame))
    await source.wait()
    await ClockCycles(dut.clk, 40)
    assert monitor.frames == [(f, False) for f in frames]
    after = counters(dut, "rx", RX_COUNTERS)
    assert after["frames_ok"] - before["frames_ok"] == len(frames)
    assert after["bytes_ok"] - before["bytes_ok"] == sum(map(len, frames))


async def tx_line_rate(dut, width, period_ns, sink, size, count=100):
    """Send ``count`` frames of ``size`` bytes back to back; the wire must be busy >= 99.9 %."""
    rng = random.Random(size)
    driver = TxDriver(dut, width)
    for _ in range(count):
        driver.add(udp_frame(rng, size))
    await driver.run()
    received = [await sink.recv() for _ in range(count)]
    assert all(rx.check_fcs() for rx in received)
    step = get_sim_steps(period_ns, "ns") / width  # sim steps per byte time
    span = (received[-1].sim_time_start - received[0].sim_time_start) / step
    nominal = (count - 1) * (8 + max(size, 60) + 4 + 12)  # preamble, frame, FCS, gap
    occupancy = nominal / span
    dut._log.info("TX %d-byte frames: wire occupancy %.5f of line rate", size + 4, occupancy)
    assert occupancy >= 0.999, occupancy
