"""The whole card end to end (tests/test_card.py): Ethernet in and out through cocotbext-eth's
XGMII peers, the host through cocotbext-pcie's root complex, and the real host driver
(`partner.pcie.PcieDevice` over `partner.sim.pcie_bus.SimPcieBus`) running in a thread.

Nothing is poked from the side: the driver brings the function up through configuration space,
programs the flow table through BAR0, posts rings in root-complex memory and pulls what the DMA
engine wrote there.
"""

import os
import struct

import cocotb
from cocotb.task import bridge
from cocotb.triggers import ClockCycles
from cocotbext.pcie.core.tlp import CplStatus

from partner.pcie.formats import DmaEvent, TxStatus
from partner.pvec import Pvec
from partner.sim.card import CardHarness

SEED = int(os.environ.get("CARD_SEED", "1"))
BACKPRESSURE = float(os.environ.get("CARD_BACKPRESSURE", "1.0"))
LINK = {  # CARD_LINK=MPS/MRRS[/split]: the link settings the run uses
    "max_payload": 512, "max_read_request": None, "split_on_all_rcb": False}
if link := os.environ.get("CARD_LINK"):
    mps, mrrs, *split = link.split("/")
    LINK = {"max_payload": int(mps), "max_read_request": int(mrrs),
            "split_on_all_rcb": split == ["split"]}


def harness(dut):
    return CardHarness(dut, seed=SEED, backpressure=BACKPRESSURE, **LINK)


def udp(dport: int, payload: bytes, sport: int = 1234) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return (bytes.fromhex("020000000002020000000001" "0800") + ip
            + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


@cocotb.test()
async def flows_in_pvecs_out(dut):
    """Two flows opened with templates: each frame comes back by pull with its flow's key and its
    exact bytes; a frame no flow wants is dropped by the device; a multi-chunk pvec goes out."""
    card = harness(dut)
    await card.start()
    dev = await bridge(card.open_driver)(rx_moderation=(1, 0))
    dns = await bridge(dev.open)("eth/ipv4/udp", "dst_port=53")
    ntp = await bridge(dev.open)("eth/ipv4/udp", "dst_port=123")

    frames = [udp(53, b"query %d" % i + bytes(i * 37)) for i in range(6)]
    frames += [udp(123, bytes(range(256)) * 5 + b"t%d" % i) for i in range(3)]
    frames.append(udp(9, b"nobody listens"))
    await card.send(0, frames)
    await ClockCycles(dut.clk, 2000)

    def pull_all(expected):
        got = []
        while len(got) < expected:
            batch = dev.pull_many(64, timeout=200e-6)
            if not batch:
                break
            for message in batch:
                got.append((message.key, message.pvec.tobytes()))
                message.pvec.free()
        return got

    got = await bridge(pull_all)(9)
    # The wire pads short frames to 60 bytes (the XGMII source does as any MAC would).
    want = [(dns, f.ljust(60, b"\0")) for f in frames[:6]] + [(ntp, f) for f in frames[6:9]]
    assert sorted(got) == sorted(want), (len(got), len(want))
    assert await bridge(dev.pull_many)(64, 100e-6) == [], "the unwanted frame was dropped"

    # A pvec of three chunks at odd offsets of device buffers leaves port 1 as one frame.
    frame = udp(5000, bytes((7 * i) & 0xFF for i in range(900)))

    def push_three_chunks():
        pvec = Pvec()
        for piece, offset in ((frame[:13], 3), (frame[13:400], 1), (frame[400:], 5)):
            buffer = dev.alloc(offset + len(piece))
            buffer.chunks[0].view[offset:offset + len(piece)] = piece
            pvec.extend(buffer[offset:offset + len(piece)])
        assert len(pvec.chunks) == 3
        dev.push(ntp, {"port": 1}, pvec)
        return dev.stats["tx_copied"]

    assert await bridge(push_three_chunks)() == 0, "device buffers go out zero copy"
    (out,) = await card.transmitted(1, 1)
    assert out == frame
    await bridge(dev.shutdown)()


def pull_frames(dev, expected, timeout=300e-6):
    """Pull until `expected` frames came or the device went quiet; (key, bytes) pairs."""
    got = []
    while len(got) < expected:
        batch = dev.pull_many(64, timeout=timeout)
        if not batch:
            break
        for message in batch:
            got.append((message.key, message.pvec.tobytes()))
            message.pvec.free()
    return got


def push_frame(dev, key, frame, port):
    pvec = dev.alloc(len(frame))
    pvec.chunks[0].view[:] = frame
    dev.push(key, {"port": port}, pvec)


@cocotb.test()
async def read_errors_end_in_error_completions_and_events(dut):
    """A descriptor read answered with UR, then one with CA: each pvec completes with DMA_ERROR
    and an event, nothing partial reaches the wire, and the next pvec goes out whole."""
    card = harness(dut)
    await card.start()
    dev = await bridge(card.open_driver)(tx_moderation=(1, 0))
    key = await bridge(dev.open)("eth/ipv4/udp", "dst_port=7")
    frames = [udp(7, b"first %d" % i + bytes(100 * i)) for i in range(3)]
    for status, frame in zip((CplStatus.UR, CplStatus.CA), frames, strict=False):
        card.adapter.inject_completion_errors(status, 1)
        await bridge(push_frame)(dev, key, frame, 0)
        await ClockCycles(dut.clk, 3000)
    await bridge(push_frame)(dev, key, frames[2], 0)
    (sent,) = await card.transmitted(0, 1)
    assert sent == frames[2]

    def reap():
        dev.pull_many(1, timeout=100e-6)  # reclaims TX completions
        return dev.stats["tx_errors"], dev.ctl(None, "events")

    errors, events = await bridge(reap)()
    assert sum(errors.values()) == 2, errors
    kinds = [e["kind"] for e in events]
    assert kinds.count(DmaEvent.DMA_ERROR) == 2, events
    assert await card.transmitted(0, 1, cycles=2000) == [], "a failed pvec reached the wire"
    buffers = await bridge(dev.ctl)(None, "buffers")
    assert buffers["elsewhere"] == 0 and buffers["tx_in_flight"] == 0, buffers
    await bridge(dev.shutdown)()


@cocotb.test()
async def reset_in_mid_traffic_accounts_for_every_buffer(dut):
    """The engine is reset while frames arrive: every buffer comes home, and traffic after the
    reset is delivered whole."""
    card = harness(dut)
    await card.start()
    dev = await bridge(card.open_driver)(rx_moderation=(4, 10))
    key = await bridge(dev.open)("eth/ipv4/udp", "dst_port=9000")
    burst = [udp(9000, bytes([i]) * (50 + 29 * i)) for i in range(40)]
    sending = cocotb.start_soon(card.send(0, burst))
    await ClockCycles(dut.clk, 800)
    report = await bridge(dev.ctl)(None, "reset")
    await sending
    await ClockCycles(dut.clk, 2000)
    early = await bridge(pull_frames)(dev, len(burst))
    assert all(k == key for k, _ in early)
    assert all(data in [f.ljust(60, b"\0") for f in burst] for _, data in early)
    buffers = await bridge(dev.ctl)(None, "buffers")
    assert buffers["elsewhere"] == 0, (buffers, report)
    assert buffers["free"] + buffers["rx_posted"] + buffers["tx_in_flight"] == buffers["total"]

    after = [udp(9000, b"after %d" % i + bytes(300)) for i in range(5)]
    await card.send(0, after)
    await ClockCycles(dut.clk, 1000)
    assert await bridge(pull_frames)(dev, 5) == [(key, f) for f in after]
    await bridge(dev.shutdown)()


@cocotb.test()
async def polling_mode_delivers_without_interrupts(dut):
    """In pure polling mode the driver finds every frame by itself and the card sends no MSI-X
    message at all."""
    card = harness(dut)
    await card.start()
    dev = await bridge(card.open_driver)(polling=True)
    key = await bridge(dev.open)("eth/ipv4/udp", "dst_port=4242")
    frames = [udp(4242, b"polled %d" % i + bytes(64 * i)) for i in range(12)]
    await card.send(0, frames)
    await ClockCycles(dut.clk, 1000)
    got = await bridge(pull_frames)(dev, len(frames))
    assert got == [(key, f.ljust(60, b"\0")) for f in frames]
    assert not any(dev.bus.irq_fired(v) for v in range(dev.bus.irq_vectors))
    await bridge(dev.shutdown)()


def fill(pvec, data):
    """Write `data` into the chunks of `pvec`, in order."""
    offset = 0
    for chunk in pvec.chunks:
        chunk.view[:] = data[offset:offset + len(chunk.view)]
        offset += len(chunk.view)
    assert offset == len(data)


@cocotb.test()
async def pushes_of_every_shape_go_out_whole(dut):
    """Pvecs of one to sixteen chunks out of device buffers, zero copy: one-byte chunks, chunks
    straddling a 4 KiB boundary at odd offsets, and a 9000-byte jumbo frame (after raising
    `tx_max_length`); each leaves its port as one frame with exactly its bytes."""
    card = harness(dut)
    await card.start()
    dev = await bridge(card.open_driver)(tx_moderation=(1, 0), buffer_size=8192, buffers=160,
                                         tx_max_length=9018)
    key = await bridge(dev.open)("eth/ipv4/udp", "dst_port=6")
    tiny = udp(6, bytes(range(40)))  # 82 bytes: fifteen 1-byte chunks and the rest
    straddling = udp(6, bytes((3 * i) & 0xFF for i in range(1400)))
    jumbo = udp(6, bytes((11 * i + 5) & 0xFF for i in range(9000 - 42)))

    def push_all():
        pvec = Pvec()
        for _ in range(15):
            pvec.extend(dev.alloc(1))
        pvec.extend(dev.alloc(len(tiny) - 15))
        fill(pvec, tiny)
        dev.push(key, {"port": 0}, pvec)

        pvec, cut = Pvec(), [0, 300, 302, len(straddling)]
        for start, end, offset in zip(cut, cut[1:], (4089, 4095, 4000), strict=False):
            buffer = dev.alloc(offset + end - start)
            assert len(buffer.chunks) == 1
            buffer.chunks[0].view[offset:] = straddling[start:end]
            pvec.extend(buffer[offset:])
        dev.push(key, {"port": 1}, pvec)

        pvec = dev.alloc(len(jumbo))  # two 8192-byte buffers
        fill(pvec, jumbo)
        dev.push(key, {"port": 0}, pvec)
        return dev.stats["tx_copied"]

    assert await bridge(push_all)() == 0, "device buffers go out zero copy"
    assert await card.transmitted(0, 2, cycles=40000) == [tiny, jumbo]
    assert await card.transmitted(1, 1) == [straddling]

    def reap():
        dev.pull_many(1, timeout=100e-6)  # reclaims TX completions
        return dev.stats["tx_frames"], dev.ctl(None, "buffers")

    frames, buffers = await bridge(reap)()
    assert frames == 3 and buffers["tx_in_flight"] == 0 and buffers["elsewhere"] == 0, buffers
    await bridge(dev.shutdown)()


@cocotb.test()
async def bad_tx_descriptors_complete_with_errors_and_events(dut):
    """TX descriptors the driver never writes (it refuses such pvecs itself), posted on its ring
    as they are: a zero length, a total beyond `tx_max_length`, a chain of 17 chunks. Each
    completes with its error and an event, nothing reaches the wire, the ring goes on, and the
    buffers come home."""
    card = harness(dut)
    await card.start()
    dev = await bridge(card.open_driver)(tx_moderation=(1, 0))
    key = await bridge(dev.open)("eth/ipv4/udp", "dst_port=8")
    good = [udp(8, b"good %d" % i + bytes(20 + 50 * i)) for i in range(4)]  # no padding
    cases = [("ZERO_LENGTH", [(0, 0)], 0), ("OVERSIZE", [(0, 2048), (2048, 2048)], 4096),
             ("TOO_MANY_CHUNKS", [(10 * i, 10) for i in range(17)], 170)]

    def post_bad_and_good():
        ring = dev.tx[0]
        flow = dev.flow(key).state.tx_flow
        push_frame(dev, key, good[0], 0)
        for n, (_, pieces, total) in enumerate(cases):
            held = dev.alloc(4096)
            base = dev._pool_bus + held.chunks[0].aggregate.offset
            entries = [(base + at, length, i < len(pieces) - 1, 0, flow, key, total, 0)
                       if i == 0 else (base + at, length, i < len(pieces) - 1, 0, 0, 0, 0, 0)
                       for i, (at, length) in enumerate(pieces)]
            ring.post(entries, [held] + [None] * (len(entries) - 1))
            dev.bus.write32(dev._tx_tail, ring.tail)
            push_frame(dev, key, good[n + 1], 0)

    await bridge(post_bad_and_good)()
    assert await card.transmitted(0, len(good)) == good
    assert await card.transmitted(0, 1, cycles=2000) == [], "a bad pvec reached the wire"

    def reap():
        dev.pull_many(1, timeout=100e-6)  # reclaims TX completions
        return dev.stats["tx_errors"], dev.ctl(None, "events"), dev.ctl(None, "buffers")

    errors, events, buffers = await bridge(reap)()
    assert errors == {name: 1 for name, _, _ in cases}, errors
    assert [(e["kind"], e["status"]) for e in events if e["kind"] == DmaEvent.TX_DESC_ERROR] == [
        (DmaEvent.TX_DESC_ERROR, TxStatus[name]) for name, _, _ in cases], events
    assert buffers["tx_in_flight"] == 0 and buffers["elsewhere"] == 0, buffers
    await bridge(dev.shutdown)()
