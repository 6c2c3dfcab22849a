"""GMII MAC (partner.hdl.mac.gmii) in amaranth.sim against a Python model of the PHY side.

Frames are encoded and decoded here with zlib.crc32, independently of the gateware's CRC.
"""

import itertools
import random
import zlib
from pathlib import Path

import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from partner.hdl.mac.common import RX_COUNTERS, TX_COUNTERS, feed_packet_fifo
from partner.hdl.mac.gmii import GMIIMAC, GMIIRX, GMIITX
from partner.hdl.packet_fifo import PacketFIFO

PREAMBLE = b"\x55" * 7 + b"\xd5"
IDLE = (0, 0, 0)


def fcs(frame: bytes) -> bytes:
    return zlib.crc32(frame).to_bytes(4, "little")


def with_fcs(frame: bytes) -> bytes:
    return frame + fcs(frame)


def vlan_frame(rng, length, tpids=(0x8100,)):
    """A frame of ``length`` bytes (no FCS) carrying VLAN tags with the given TPIDs."""
    head = rng.randbytes(12) + b"".join(t.to_bytes(2, "big") + b"\x00\x05" for t in tpids)
    return head + b"\x08\x00" + rng.randbytes(length - len(head) - 2)


# -- PHY side model ------------------------------------------------------------------------------

def gmii_cycles(wire: bytes, errors=(), gap=12, preamble=PREAMBLE):
    """(rxd, rx_dv, rx_er) per cycle for one frame: preamble, ``wire`` bytes, then ``gap`` idles.
    ``errors`` are indexes into preamble + wire where RX_ER is raised."""
    data = preamble + wire
    return [(b, 1, int(n in errors)) for n, b in enumerate(data)] + [IDLE] * gap


def decode_tx(cycles):
    """Split (txd, tx_en, tx_er) cycles into bursts: [(start_cycle, bytes, error_flags)]."""
    bursts, current = [], None
    for n, (d, en, er) in enumerate(cycles):
        if en:
            if current is None:
                current = (n, bytearray(), [])
                bursts.append(current)
            current[1].append(d)
            current[2].append(er)
        else:
            assert not er, f"cycle {n}: tx_er without tx_en"
            current = None
    return [(start, bytes(data), errs) for start, data, errs in bursts]


# -- benches -------------------------------------------------------------------------------------

def simulate(top, bench):
    sim = Simulator(top)
    sim.add_clock(8e-9)
    sim.add_testbench(bench)
    sim.run()


def counters(ctx, dut, names):
    return {name: ctx.get(getattr(dut, name)) for name in names}


def run_rx(cycles, mtu=1500, tail=16):
    """Drive RX with ``cycles``; return ([(frame bytes, drop)], counters)."""
    dut = GMIIRX()
    frames, result = [], {}

    async def bench(ctx):
        ctx.set(dut.mtu, mtu)
        current = bytearray()
        for rxd, dv, er in [*cycles, *[IDLE] * tail]:
            ctx.set(dut.phy.rxd, rxd)
            ctx.set(dut.phy.rx_dv, dv)
            ctx.set(dut.phy.rx_er, er)
            if ctx.get(dut.o_stream.valid):
                beat = ctx.get(dut.o_stream.payload)
                assert beat.nbytes == 1
                assert beat.first == (not current), "first flag out of place"
                current.append(beat.data)
                drop = ctx.get(dut.o_drop)
                assert beat.last or not drop, "o_drop outside a last beat"
                if beat.last:
                    frames.append((bytes(current), bool(drop)))
                    current.clear()
            await ctx.tick()
        assert not current, "frame left unterminated"
        result.update(counters(ctx, dut, RX_COUNTERS))

    simulate(dut, bench)
    return frames, result


def expect_counts(got, **expected):
    want = dict.fromkeys(RX_COUNTERS, 0)
    want.update(expected)
    assert got == want


def test_rx_every_length_back_to_back():
    rng = random.Random(1)
    payloads = [rng.randbytes(n) for n in [*range(60, 101), 1000, 1514]]
    cycles = [c for p in payloads for c in gmii_cycles(with_fcs(p))]
    frames, got = run_rx(cycles)
    assert frames == [(p, False) for p in payloads]
    expect_counts(got, frames_ok=len(payloads), bytes_ok=sum(map(len, payloads)))


def test_rx_shrunk_gap_and_preamble():
    """Receivers must cope with a shrunk gap and a shortened preamble (even none at all)."""
    rng = random.Random(2)
    payloads = [rng.randbytes(rng.randint(60, 80)) for _ in range(6)]
    preambles = [PREAMBLE, b"\x55\xd5", b"\xd5", PREAMBLE, b"\x55" * 12 + b"\xd5", PREAMBLE]
    cycles = [c for p, pre in zip(payloads, preambles, strict=True)
              for c in gmii_cycles(with_fcs(p), gap=1, preamble=pre)]
    frames, got = run_rx(cycles)
    assert frames == [(p, False) for p in payloads]
    expect_counts(got, frames_ok=6, bytes_ok=sum(map(len, payloads)))


def test_rx_drop_causes():
    rng = random.Random(3)
    good = rng.randbytes(70)
    bad = bytearray(with_fcs(rng.randbytes(70)))
    bad[-2] ^= 0x10
    runt = rng.randbytes(59)  # 63 bytes with FCS
    cases = [
        (gmii_cycles(with_fcs(good)), (good, False)),
        (gmii_cycles(bytes(bad)), (bytes(bad[:-4]), True)),                         # fcs
        (gmii_cycles(with_fcs(runt)), (runt, True)),                                # runt
        (gmii_cycles(with_fcs(good[:2])), (good[:2], True)),                        # runt
        (gmii_cycles(b"\x01\x02\x03"), None),  # runt too short to emit anything
        (gmii_cycles(b""), None),                      # runt: SFD then nothing
        (gmii_cycles(with_fcs(good), errors={40}), (good, True)),                   # phy
        (gmii_cycles(with_fcs(good), errors={3}), (good, True)),        # phy, in preamble
        (gmii_cycles(with_fcs(good), preamble=b"\x55\x55\x54\x55\xd5"), None),  # preamble
        (gmii_cycles(b"", preamble=b"\x55\x55\x55"), None),      # preamble: no SFD at all
        (gmii_cycles(with_fcs(good)), (good, False)),
    ]
    frames, got = run_rx([c for cycles, _ in cases for c in cycles])
    assert frames == [want for _, want in cases if want is not None]
    expect_counts(got, frames_ok=2, bytes_ok=140, fcs_errors=1, runts=4, phy_errors=2,
                  preamble_errors=2)


@pytest.mark.parametrize("mtu", [1500, 9000])
def test_rx_giants_and_vlan_allowance(mtu):
    rng = random.Random(mtu)
    limit = mtu + 14  # longest untagged frame without FCS
    cases = [  # (frame without FCS, accepted)
        (rng.randbytes(limit), True),
        (rng.randbytes(limit + 1), False),
        (vlan_frame(rng, limit + 4), True),
        (vlan_frame(rng, limit + 5), False),
        (vlan_frame(rng, limit + 8, (0x88A8, 0x8100)), True),
        (vlan_frame(rng, limit + 9, (0x88A8, 0x8100)), False),
        # A second tag only counts behind a first one.
        (rng.randbytes(16) + b"\x81\x00" + rng.randbytes(limit - 18 + 1), False),
        (rng.randbytes(60), True),
    ]
    if mtu > 1500:
        cases = cases[:4] + cases[-1:]  # jumbo frames cost 9 k cycles each here; cocotb does more
    cycles = [c for frame, _ in cases for c in gmii_cycles(with_fcs(frame))]
    frames, got = run_rx(cycles, mtu=mtu)
    assert len(frames) == len(cases)
    for (sent, ok), (received, drop) in zip(cases, frames, strict=True):
        assert drop == (not ok)
        if ok:
            assert received == sent
        else:
            # Cut short at the limit: no more than a longest good frame reaches a buffer.
            tags = 4 * (sent[12:14] in (b"\x81\x00", b"\x88\xa8"))
            tags += 4 * (tags and sent[16:18] in (b"\x81\x00", b"\x88\xa8"))
            assert received == sent[:limit + tags]
    accepted = [f for f, ok in cases if ok]
    expect_counts(got, frames_ok=len(accepted), bytes_ok=sum(map(len, accepted)),
                  giants=len(cases) - len(accepted))


def test_rx_feeds_packet_fifo():
    rng = random.Random(5)
    good = [rng.randbytes(rng.randint(60, 90)) for _ in range(4)]
    bad = bytearray(with_fcs(rng.randbytes(80)))
    bad[10] ^= 1
    cycles = [*gmii_cycles(with_fcs(good[0])), *gmii_cycles(bytes(bad)),
              *gmii_cycles(with_fcs(good[1])), *gmii_cycles(with_fcs(rng.randbytes(30))),
              *gmii_cycles(with_fcs(good[2])), *gmii_cycles(with_fcs(good[3]))]
    m = Module()
    m.submodules.rx = rx = GMIIRX()
    m.submodules.fifo = fifo = PacketFIFO(1, 512)
    feed_packet_fifo(m, rx, fifo)
    out = []

    async def bench(ctx):
        ctx.set(fifo.o_stream.ready, 1)
        current = bytearray()
        for rxd, dv, er in [*cycles, *[IDLE] * 120]:
            ctx.set(rx.phy.rxd, rxd)
            ctx.set(rx.phy.rx_dv, dv)
            ctx.set(rx.phy.rx_er, er)
            if ctx.get(fifo.o_stream.valid):
                beat = ctx.get(fifo.o_stream.payload)
                current.append(beat.data)
                if beat.last:
                    out.append(bytes(current))
                    current.clear()
            await ctx.tick()
        assert ctx.get(fifo.frames_dropped_error) == ctx.get(rx.fcs_errors) + ctx.get(rx.runts)
        assert ctx.get(fifo.frames_committed) == ctx.get(rx.frames_ok) == 4

    simulate(m, bench)
    assert out == good


# -- TX ------------------------------------------------------------------------------------------

def run_tx(frames, holes=(), tail=40):
    """Send ``frames`` with i_stream valid whenever a byte is left; ``holes`` are (frame, byte)
    positions before which valid drops for one cycle. Returns (cycles, counters)."""
    dut = GMIITX()
    beats = [(b, n == len(f) - 1, (k, n) in holes) for k, f in enumerate(frames)
             for n, b in enumerate(f)]
    wire, result = [], {}

    async def bench(ctx):
        queue, skipped = list(beats), set()
        idle = 0
        while idle < tail:
            hole = bool(queue) and queue[0][2] and id(queue[0]) not in skipped
            valid = bool(queue) and not hole
            if hole:
                skipped.add(id(queue[0]))
            ctx.set(dut.i_stream.valid, valid)
            if valid:
                ctx.set(dut.i_stream.payload, {"data": queue[0][0], "nbytes": 1,
                                               "first": 0, "last": queue[0][1]})
            taken = valid and ctx.get(dut.i_stream.ready)
            wire.append((ctx.get(dut.phy.txd), ctx.get(dut.phy.tx_en), ctx.get(dut.phy.tx_er)))
            idle = 0 if (queue or wire[-1][1]) else idle + 1
            await ctx.tick()
            if taken:
                queue.pop(0)
        result.update(counters(ctx, dut, TX_COUNTERS))

    simulate(dut, bench)
    return wire, result


def check_frame(data: bytes, sent: bytes):
    assert data[:8] == PREAMBLE
    body = data[8:-4]
    assert body == sent.ljust(60, b"\x00")
    assert data[-4:] == fcs(body)


def test_tx_padding_fcs_and_gap_at_line_rate():
    rng = random.Random(6)
    frames = [rng.randbytes(n) for n in [*range(1, 101), 1514]]
    wire, got = run_tx(frames)
    bursts = decode_tx(wire)
    assert len(bursts) == len(frames)
    for (_, data, errs), sent in zip(bursts, frames, strict=True):
        assert not any(errs)
        check_frame(data, sent)
    # Exactly 12 idle cycles between back-to-back frames, so the wire is fully used.
    for (start, data, _), (next_start, _, _) in itertools.pairwise(bursts):
        assert next_start - (start + len(data)) == 12
    span = bursts[-1][0] + len(bursts[-1][1]) + 12 - bursts[0][0]
    assert span == sum(8 + max(len(f), 60) + 4 + 12 for f in frames)
    assert got == {"frames_sent": len(frames), "bytes_sent": sum(max(len(f), 60) for f in frames),
                   "underruns": 0}


def test_tx_underrun_poisons_and_drops_the_rest():
    rng = random.Random(7)
    frames = [rng.randbytes(80), rng.randbytes(90), rng.randbytes(70)]
    wire, got = run_tx(frames, holes={(1, 30)})
    bursts = decode_tx(wire)
    assert len(bursts) == 3
    check_frame(bursts[0][1], frames[0])
    check_frame(bursts[2][1], frames[2])
    _, data, errs = bursts[1]
    # Preamble and 30 good bytes, then the error byte ends the frame.
    assert data[:38] == PREAMBLE + frames[1][:30]
    assert len(data) == 39 and errs == [0] * 38 + [1]
    assert bursts[2][0] - (bursts[1][0] + len(data)) >= 12
    assert got == {"frames_sent": 2, "bytes_sent": 150, "underruns": 1}


def test_tx_to_rx_loopback():
    rng = random.Random(8)
    frames = [rng.randbytes(n) for n in (1, 59, 60, 61, 64, 200, 1514, 63)]
    m = Module()
    m.submodules.tx = tx = GMIITX()
    m.submodules.rx = rx = GMIIRX()
    m.d.comb += [rx.phy.rxd.eq(tx.phy.txd), rx.phy.rx_dv.eq(tx.phy.tx_en),
                 rx.phy.rx_er.eq(tx.phy.tx_er)]
    received = []

    async def bench(ctx):
        queue = [(b, n == len(f) - 1) for f in frames for n, b in enumerate(f)]
        current = bytearray()
        for _ in range(sum(8 + max(len(f), 60) + 16 for f in frames) + 40):
            ctx.set(tx.i_stream.valid, bool(queue))
            if queue:
                ctx.set(tx.i_stream.payload,
                        {"data": queue[0][0], "nbytes": 1, "last": queue[0][1]})
            taken = queue and ctx.get(tx.i_stream.ready)
            if ctx.get(rx.o_stream.valid):
                beat = ctx.get(rx.o_stream.payload)
                current.append(beat.data)
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


def test_mac_pair_renames_domains():
    """GMIIMAC re-exports both halves and clocks them from the domains it is given."""
    frame = bytes(range(70))
    m = Module()
    m.domains.rx, m.domains.tx = ClockDomain("rx"), ClockDomain("tx")
    m.submodules.mac = mac = GMIIMAC(rx_domain="rx", tx_domain="tx")
    m.d.comb += [mac.rx_phy.rxd.eq(mac.tx_phy.txd), mac.rx_phy.rx_dv.eq(mac.tx_phy.tx_en),
                 mac.rx_phy.rx_er.eq(mac.tx_phy.tx_er)]
    received = bytearray()

    async def sender(ctx):
        for n, byte in enumerate(frame):
            ctx.set(mac.tx_i_stream.valid, 1)
            ctx.set(mac.tx_i_stream.payload, {"data": byte, "nbytes": 1,
                                              "last": n == len(frame) - 1})
            await ctx.tick("tx").until(mac.tx_i_stream.ready)
        ctx.set(mac.tx_i_stream.valid, 0)

    async def receiver(ctx):
        while True:
            _, _, valid, beat = await ctx.tick("rx").sample(mac.rx_o_stream.valid,
                                                            mac.rx_o_stream.payload)
            if valid:
                received.append(beat.data)
                if beat.last:
                    break
        assert ctx.get(mac.rx_frames_ok) == 1

    sim = Simulator(m)
    sim.add_clock(8e-9, domain="tx")
    sim.add_clock(8e-9, domain="rx", phase=3e-9)  # another clock of the same rate
    sim.add_testbench(sender)
    sim.add_testbench(receiver)
    sim.run()
    assert received == frame


# -- cocotb + Verilator with cocotbext-eth peers ---------------------------------------------------

COCOTB_TESTS = ["loopback", "rx_jumbo", "rx_random", "rx_scapy_traffic", "tx_line_rate_1518",
                "tx_line_rate_64", "tx_scapy_traffic_and_underrun"]


@pytest.mark.cocotb
def test_gmii_mac_cocotb():
    verilator = pytest.importorskip("partner.sim.verilator")
    model = verilator.build(GMIIMAC(), name="mac_gmii")
    result = model.run(Path(__file__).parent / "cocotb" / "mac_gmii_tb.py", seed=1)
    assert sorted(name.rsplit(".", 1)[1] for name in result.passed) == COCOTB_TESTS
