"""DmaEngine (amaranth.sim) in long runs on a link with a realistic read latency: jobs overlap
(RX frames leave through the staging FIFO while the next job is decided, completion entries
queue behind the data), descriptors are prefetched into the cache before it runs dry, and
descriptor reads interleave with TX data reads.
"""

from __future__ import annotations

import itertools
import random

import pytest

from partner.sim.engine_rig import Rig

LATENCY = (100, 150)  # cycles from a read request to its completions


def ring_bytes_read(rig, ring):
    """Bytes of `ring`'s descriptor array the engine has read so far."""
    span = (ring.base, ring.base + (16 << ring.log2))
    return sum(min(end, span[1]) - max(start, span[0])
               for start, end in rig.host.read_log if start < span[1] and span[0] < end)


@pytest.mark.parametrize("width", [64, 256])
def test_rx_run_reads_each_descriptor_once_and_never_waits_for_one(width):
    """200 frames into single-chunk pvecs posted ahead: the first read of descriptors is the
    only one the engine waits for; later ones are prefetched while frames go on, so no gap
    between two completions is as long as a read's round trip."""
    rig = Rig(width=width, rx_rings=1, tx_rings=1, seed=41, mps=256, mrrs=512, delay=LATENCY,
              read_timeout=100_000)
    rng = random.Random(41)
    frames = [rng.randbytes(rng.randint(60, 700)) for _ in range(200)]

    async def scenario(ctx, rig):
        await rig.start(ctx)
        ring = await rig.ring(ctx, "rx", 0, log2=8)
        buffers = [rig.alloc(700, offset=2) for _ in frames]
        for address in buffers:
            rig.post("rx", 0, [{"address": address, "length": 700}])
        await rig.doorbell(ctx, "rx", 0)
        for n, frame in enumerate(frames):
            rig.frame(0, frame, demux_key=n)
        times = []
        for _ in frames:
            (entry,) = await rig.collect(ctx, lambda: rig.poll_rx(0), 1, 20_000)
            assert entry["status"] == 0 and entry["demux_key"] == len(times)
            times.append(rig.cycle)
        for address, frame in zip(buffers, frames, strict=True):
            assert rig.memory.read(address, len(frame)) == frame
        assert ring_bytes_read(rig, ring) == 16 * len(frames), "each descriptor read once"
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert max(gaps) < LATENCY[0], f"the engine waited for descriptors: gap {max(gaps)}"

    rig.run(scenario)


@pytest.mark.parametrize("width", [64, 256])
def test_rx_and_tx_runs_together(width):
    """RX and TX pvecs at once, both rings' descriptors prefetched between TX data reads (whose
    next beat may come with the status of the read before): every byte lands where it should,
    every completion is in order, and each descriptor is read once."""
    rig = Rig(width=width, rx_rings=2, tx_rings=1, seed=42, mps=256, mrrs=512, delay=LATENCY,
              read_timeout=100_000)
    rng = random.Random(42)
    rx_frames = [(rng.randrange(2), rng.randbytes(rng.randint(60, 1500))) for _ in range(80)]
    tx_frames = [rng.randbytes(rng.randint(60, 1500)) for _ in range(80)]

    async def scenario(ctx, rig):
        await rig.start(ctx)
        rx_rings = [await rig.ring(ctx, "rx", q, log2=8) for q in range(2)]
        tx_ring = await rig.ring(ctx, "tx", 0, log2=8)
        buffers = {0: [], 1: []}
        for q, _ in rx_frames:
            address = rig.alloc(1500, offset=rng.randrange(8))
            buffers[q].append(address)
            rig.post("rx", q, [{"address": address, "length": 1500}])
        for frame in tx_frames:
            address = rig.alloc(len(frame), offset=rng.randrange(8))
            rig.memory.write(address, frame)
            rig.post("tx", 0, [{"address": address, "length": len(frame), "port": 0,
                                "flow": 0, "total_length": len(frame)}])
        for q in range(2):
            await rig.doorbell(ctx, "rx", q)
        await rig.doorbell(ctx, "tx", 0)
        for n, (q, frame) in enumerate(rx_frames):
            rig.frame(q, frame, demux_key=n)
        for q in range(2):
            mine = [(n, frame) for n, (p, frame) in enumerate(rx_frames) if p == q]
            got = await rig.collect(ctx, lambda q=q: rig.poll_rx(q), len(mine), 200_000)
            assert [e["demux_key"] for e in got] == [n for n, _ in mine]
            for address, (_, frame) in zip(buffers[q], mine, strict=True):
                assert rig.memory.read(address, len(frame)) == frame
        got = await rig.collect(ctx, lambda: rig.poll_tx(0), len(tx_frames), 200_000)
        assert [(e["desc_index"], e["status"]) for e in got] == [
            (n, 0) for n in range(len(tx_frames))]
        await rig.wait(ctx, lambda: len(rig.sent()) == len(tx_frames), 20_000, "every frame")
        assert [data for *_, data in rig.sent()] == tx_frames
        for ring, count in ((rx_rings[0], len(buffers[0])), (rx_rings[1], len(buffers[1])),
                            (tx_ring, len(tx_frames))):
            assert ring_bytes_read(rig, ring) == 16 * count, "each descriptor read once"

    rig.run(scenario)
