"""XGMII MAC (partner.hdl.mac.xgmii) in amaranth.sim against a Python model of the PHY side.

The model places /S/ in lane 0 or 4 after a chosen gap (counting /T/), encodes FCS with zlib,
and on the TX side decodes characters back into frames and checks the gaps against an
independent model of the deficit idle count (IEEE 802.3-2018 §46.3.1.4).
"""

import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from partner.hdl.mac.common import RX_COUNTERS, TX_COUNTERS
from partner.hdl.mac.xgmii import XGMIIMAC, XGMIIRX, XGMIITX

IDLE, START, TERM, ERR = 0x07, 0xFB, 0xFD, 0xFE
PREAMBLE = [(START, 1), *[(0x55, 0)] * 6, (0xD5, 0)]


def fcs(frame: bytes) -> bytes:
    return zlib.crc32(frame).to_bytes(4, "little")


def with_fcs(frame: bytes) -> bytes:
    return frame + fcs(frame)


def vlan_frame(rng, length, tpids=(0x8100,)):
    head = rng.randbytes(12) + b"".join(t.to_bytes(2, "big") + b"\x00\x05" for t in tpids)
    return head + b"\x08\x00" + rng.randbytes(length - len(head) - 2)


# -- PHY side model ------------------------------------------------------------------------------

@dataclass
class Wire:
    """One frame as the PHY presents it: bytes after the SFD (FCS included), where /S/ goes,
    the gap before /S/ in bytes counting the previous /T/, and how it ends."""

    data: bytes
    lane: int | None = None   # 0, 4, or None: the first multiple of 4 the gap allows
    gap: int = 12
    end: int | None = TERM       # control character after the data (None: no end at all)
    preamble: list | None = None  # the 8 (char, ctrl) from /S/ to SFD


def encode(wires, tail=64):
    """(char, ctrl) sequence for ``wires``, starting and ending with idles."""
    chars = [(IDLE, 1)] * 8
    last_end = -100
    for w in wires:
        at = max(len(chars), last_end + w.gap)
        while at % (4 if w.lane is None else 8) != (w.lane or 0):
            at += 1
        chars += [(IDLE, 1)] * (at - len(chars))
        chars += w.preamble or PREAMBLE
        chars += [(b, 0) for b in w.data]
        last_end = len(chars)
        if w.end is not None:
            chars.append((w.end, 1))
    chars += [(IDLE, 1)] * (tail + (-len(chars)) % 8)
    return chars


def beats(chars):
    assert len(chars) % 8 == 0
    return [(sum(b << 8 * n for n, (b, _) in enumerate(chars[k:k + 8])),
             sum(c << n for n, (_, c) in enumerate(chars[k:k + 8])))
            for k in range(0, len(chars), 8)]


def lanes(word, count=8, width=8):
    return [(word >> (width * n)) & ((1 << width) - 1) for n in range(count)]


# -- RX bench ------------------------------------------------------------------------------------

def simulate(top, bench):
    sim = Simulator(top)
    sim.add_clock(6.4e-9)
    sim.add_testbench(bench)
    sim.run()


def run_rx(wires, mtu=1500):
    dut = XGMIIRX()
    frames, result = [], {}

    async def bench(ctx):
        ctx.set(dut.mtu, mtu)
        current = bytearray()
        for d, c in beats(encode(wires)):
            ctx.set(dut.phy.rxd, d)
            ctx.set(dut.phy.rxc, c)
            if ctx.get(dut.o_stream.valid):
                beat = ctx.get(dut.o_stream.payload)
                assert beat.first == (not current), "first flag out of place"
                assert 1 <= beat.nbytes <= 8 and (beat.last or beat.nbytes == 8)
                data = beat.data.to_bytes(8, "little")
                assert not any(data[beat.nbytes:]), "unused lanes must be zero"
                current += data[:beat.nbytes]
                drop = ctx.get(dut.o_drop)
                assert beat.last or not drop
                if beat.last:
                    frames.append((bytes(current), bool(drop)))
                    current.clear()
            await ctx.tick()
        assert not current, "frame left unterminated"
        result.update({name: ctx.get(getattr(dut, name)) for name in RX_COUNTERS})

    simulate(dut, bench)
    return frames, result


def expect_counts(got, **expected):
    want = dict.fromkeys(RX_COUNTERS, 0)
    want.update(expected)
    assert got == want


def test_rx_every_length_lane_and_gap():
    """60..100-byte frames (every /T/ lane) with /S/ in lane 0 and 4 and gaps of 5..12."""
    rng = random.Random(1)
    payloads = [rng.randbytes(n) for n in range(60, 101) for _ in range(2)]
    payloads += [rng.randbytes(n) for n in (1000, 1514, 1511)]
    wires = [Wire(with_fcs(p), lane=(None, 0, 4)[k % 3], gap=5 + k % 8)
             for k, p in enumerate(payloads)]
    frames, got = run_rx(wires)
    assert frames == [(p, False) for p in payloads]
    expect_counts(got, frames_ok=len(payloads), bytes_ok=sum(map(len, payloads)))


@pytest.mark.parametrize("lanes_", [(0, 0), (0, 4), (4, 0), (4, 4)])
def test_rx_minimum_gap_every_end_lane(lanes_):
    """Back to back at the tightest gap the lane pair allows (>= 5 bytes with /T/)."""
    rng = random.Random(sum(lanes_))
    payloads = [rng.randbytes(n) for n in range(60, 76)]
    wires = [Wire(with_fcs(p), lane=lanes_[k % 2], gap=5) for k, p in enumerate(payloads)]
    frames, got = run_rx(wires)
    assert frames == [(p, False) for p in payloads]
    expect_counts(got, frames_ok=len(payloads), bytes_ok=sum(map(len, payloads)))


def test_rx_drop_causes():
    rng = random.Random(3)
    good = rng.randbytes(75)
    bad = bytearray(with_fcs(rng.randbytes(70)))
    bad[-1] ^= 0x80
    bad_preamble = list(PREAMBLE)
    bad_preamble[3] = (0x57, 0)
    control_preamble = list(PREAMBLE)
    control_preamble[5] = (ERR, 1)
    cases = [
        (Wire(with_fcs(good)), (good, False)),
        (Wire(bytes(bad), lane=4), (bytes(bad[:-4]), True)),             # fcs
        (Wire(with_fcs(good[:59])), (good[:59], True)),                  # runt
        (Wire(with_fcs(good[:4]), lane=4), (good[:4], True)),            # runt, one beat
        (Wire(with_fcs(good[:1])), None),                                # runt, nothing held
        (Wire(with_fcs(good), end=ERR), (good, True)),                     # phy: /E/ ends it
        (Wire(with_fcs(good)[:30], end=ERR), (good[:26], True)),           # phy mid-frame
        (Wire(with_fcs(good)[:45], end=IDLE, lane=4), (good[:41], True)),   # phy: bad control
        (Wire(with_fcs(good), preamble=control_preamble), None),        # phy in preamble
        (Wire(with_fcs(good), preamble=bad_preamble, lane=4), None),    # preamble
        (Wire(with_fcs(good)[:40], lane=0, end=None), (good[:36], True)),  # /S/ ends it: phy
        (Wire(with_fcs(good), lane=0, gap=0), (good, False)),
    ]
    frames, got = run_rx([w for w, _ in cases])
    assert frames == [want for _, want in cases if want is not None]
    expect_counts(got, frames_ok=2, bytes_ok=150, fcs_errors=1, runts=3, phy_errors=5,
                  preamble_errors=1)


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_rx_giants_and_vlan_allowance(mtu):
    rng = random.Random(mtu)
    limit = mtu + 14
    cases = [
        (rng.randbytes(limit), True),
        (rng.randbytes(limit + 1), False),
        (rng.randbytes(limit + 9), False),
        (vlan_frame(rng, limit + 4), True),
        (vlan_frame(rng, limit + 5), False),
        (vlan_frame(rng, limit + 8, (0x88A8, 0x8100)), True),
        (vlan_frame(rng, limit + 9, (0x88A8, 0x8100)), False),
        (rng.randbytes(16) + b"\x81\x00" + rng.randbytes(limit - 18 + 1), False),
        (rng.randbytes(64), True),
    ]
    wires = [Wire(with_fcs(f), lane=(0, 4)[k % 2]) for k, (f, _) in enumerate(cases)]
    frames, got = run_rx(wires, mtu=mtu)
    assert len(frames) == len(cases)
    for (sent, ok), (received, drop) in zip(cases, frames, strict=True):
        assert drop == (not ok)
        if ok:
            assert received == sent
        else:
            tags = 4 * (sent[12:14] in (b"\x81\x00", b"\x88\xa8"))
            tags += 4 * (tags and sent[16:18] in (b"\x81\x00", b"\x88\xa8"))
            # Cut at the beat that crosses the limit: at most a beat more than the limit.
            assert received == sent[:len(received)]
            assert limit + tags - 8 < len(received) <= limit + tags + 4
    accepted = [f for f, ok in cases if ok]
    expect_counts(got, frames_ok=len(accepted), bytes_ok=sum(map(len, accepted)),
                  giants=len(cases) - len(accepted))


# -- TX bench ------------------------------------------------------------------------------------

def run_tx(frames, holes=(), tail=8):
    """Send ``frames`` (valid whenever a beat is left); a (frame, beat) in ``holes`` drops valid
    for one cycle when that beat could be taken. Returns (chars, counters)."""
    dut = XGMIITX()
    queue = []
    for k, f in enumerate(frames):
        chunks = [f[n:n + 8] for n in range(0, len(f), 8)]
        queue += [(c, n == len(chunks) - 1, (k, n) in holes) for n, c in enumerate(chunks)]
    chars, result = [], {}

    async def bench(ctx):
        skipped = set()
        idle = 0
        while idle < tail:
            hole = (bool(queue) and queue[0][2] and id(queue[0]) not in skipped
                    and ctx.get(dut.i_stream.ready))  # ready does not depend on valid
            if hole:
                skipped.add(id(queue[0]))
            valid = bool(queue) and not hole
            ctx.set(dut.i_stream.valid, valid)
            if valid:
                chunk, last, _ = queue[0]
                ctx.set(dut.i_stream.payload, {"data": int.from_bytes(chunk, "little"),
                                               "nbytes": len(chunk), "last": last})
            taken = valid and ctx.get(dut.i_stream.ready)
            d, c = ctx.get(dut.phy.txd), ctx.get(dut.phy.txc)
            chars.extend(zip(lanes(d), lanes(c, width=1), strict=True))
            idle = 0 if queue or d != 0x0707070707070707 else idle + 1
            await ctx.tick()
            if taken:
                queue.pop(0)
        result.update({name: ctx.get(getattr(dut, name)) for name in TX_COUNTERS})

    simulate(dut, bench)
    return chars, result


def decode(chars):
    """[(start position, bytes from /S/ up to the first control after it, that control)]."""
    frames, n = [], 0
    while n < len(chars):
        ch, ctl = chars[n]
        if ctl and ch == START:
            assert n % 4 == 0, f"/S/ at position {n}, not in lane 0 or 4"
            end = n + 1
            while not chars[end][1]:
                end += 1
            frames.append((n, bytes(b for b, _ in chars[n + 1:end]), chars[end][0]))
            n = end
        else:
            assert not ctl or ch in (IDLE, TERM, ERR), f"stray control {ch:#x} at {n}"
            n += 1
    return frames


def dic_starts(first_start, lengths):
    """Where /S/ goes for back-to-back frames, by the rule of §46.3.1.4, independently of the
    gateware's formulation: 12 idles (counting /T/) rounded to a lane-0/4 start, deleting up to
    3 idles in all as long as they are paid back later."""
    starts, deficit, at = [first_start], 0, first_start
    for length in lengths[:-1]:
        term = at + 8 + max(length, 60) + 4
        due = term + 12
        if due % 4 and deficit + due % 4 <= 3:
            deficit += due % 4
            due -= due % 4
        elif due % 4:
            deficit -= 4 - due % 4
            due += 4 - due % 4
        assert 0 <= deficit <= 3
        starts.append(due)
        at = due
    return starts


def test_tx_padding_fcs_and_deficit_idle_count():
    rng = random.Random(6)
    frames = [rng.randbytes(n) for n in [*range(1, 101), 1514, 9000, 64, 65, 66, 67]]
    chars, got = run_tx(frames)
    decoded = decode(chars)
    assert len(decoded) == len(frames)
    for (_, data, end), sent in zip(decoded, frames, strict=True):
        assert end == TERM
        assert data[:7] == bytes([0x55] * 6 + [0xD5])
        body = data[7:-4]
        assert body == sent.ljust(60, b"\x00")
        assert data[-4:] == fcs(body)
    starts = [s for s, _, _ in decoded]
    assert starts == dic_starts(starts[0], [len(f) for f in frames])
    assert {s % 8 for s in starts} == {0, 4}
    gaps = [b - (a + 8 + max(len(f), 60) + 4) for a, b, f in zip(starts, starts[1:], frames,
                                                                   strict=False)]
    assert 9 <= min(gaps) < 12 < max(gaps) <= 15
    assert got == {"frames_sent": len(frames), "bytes_sent": sum(max(len(f), 60) for f in frames),
                   "underruns": 0}


@pytest.mark.parametrize("length", [60, 64, 1514])
def test_tx_line_rate(length):
    rng = random.Random(length)
    frames = [rng.randbytes(length) for _ in range(24)]
    chars, _ = run_tx(frames)
    starts = [s for s, _, _ in decode(chars)]
    wire = (starts[-1] - starts[0]) / (len(frames) - 1)
    assert abs(wire - (8 + length + 4 + 12)) * (len(frames) - 1) <= 3  # the deficit's bound


def test_tx_underrun_poisons_and_drops_the_rest():
    rng = random.Random(7)
    frames = [rng.randbytes(80), rng.randbytes(100), rng.randbytes(70), rng.randbytes(61)]
    chars, got = run_tx(frames, holes={(1, 5), (3, 0)})
    decoded = decode(chars)
    assert len(decoded) == 4
    assert decoded[0][2] == TERM and decoded[2][2] == TERM
    _, data, end = decoded[1]
    assert end == ERR and data == bytes([0x55] * 6 + [0xD5]) + frames[1][:40]
    # A hole before the first data beat poisons the frame right after the preamble.
    _, data, end = decoded[3]
    assert end == ERR and data == bytes([0x55] * 6 + [0xD5])
    assert got == {"frames_sent": 2, "bytes_sent": 150, "underruns": 2}


def test_tx_to_rx_loopback():
    rng = random.Random(8)
    frames = [rng.randbytes(n) for n in (1, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 200, 1514,
                                         63, 9000, 61)]
    m = Module()
    m.submodules.tx = tx = XGMIITX()
    m.submodules.rx = rx = XGMIIRX()
    m.d.comb += [rx.phy.rxd.eq(tx.phy.txd), rx.phy.rxc.eq(tx.phy.txc), rx.mtu.eq(9000)]
    received = []

    async def bench(ctx):
        queue = [(f[n:n + 8], n + 8 >= len(f)) for f in frames for n in range(0, len(f), 8)]
        current = bytearray()
        for _ in range(sum(max(len(f), 60) + 24 for f in frames) // 8 + 40):
            ctx.set(tx.i_stream.valid, bool(queue))
            if queue:
                chunk, last = queue[0]
                ctx.set(tx.i_stream.payload, {"data": int.from_bytes(chunk, "little"),
                                              "nbytes": len(chunk), "last": last})
            taken = queue and ctx.get(tx.i_stream.ready)
            if ctx.get(rx.o_stream.valid):
                beat = ctx.get(rx.o_stream.payload)
                current += beat.data.to_bytes(8, "little")[:beat.nbytes]
                if beat.last:
                    received.append((bytes(current), ctx.get(rx.o_drop)))
                    current.clear()
            await ctx.tick()
            if taken:
                queue.pop(0)
        assert ctx.get(rx.frames_ok) == ctx.get(tx.frames_sent) == len(frames)
        assert ctx.get(rx.bytes_ok) == ctx.get(tx.bytes_sent)

    simulate(m, bench)
    assert received == [(f.ljust(60, b"\x00"), 0) for f in frames]


# -- cocotb + Verilator with cocotbext-eth peers ---------------------------------------------------

COCOTB_TESTS = ["loopback", "rx_jumbo", "rx_random", "rx_scapy_traffic", "tx_line_rate_1518",
                "tx_line_rate_64", "tx_scapy_traffic_and_underrun"]


@pytest.mark.cocotb
def test_xgmii_mac_cocotb():
    verilator = pytest.importorskip("partner.sim.verilator")
    model = verilator.build(XGMIIMAC(), name="mac_xgmii")
    result = model.run(Path(__file__).parent / "cocotb" / "mac_xgmii_tb.py", seed=1)
    assert sorted(name.rsplit(".", 1)[1] for name in result.passed) == COCOTB_TESTS
