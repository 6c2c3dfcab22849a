"""DmaEngine (amaranth.sim) against the host model: RX frames into pvecs, rings, completions.

The rig (`partner.sim.engine_rig.Rig`) is the engine, the host model as host memory, a ring
driver and stream peers for the core's side.
"""

from __future__ import annotations

import random

import pytest

from partner.pcie.formats import RING_SIZE, DmaCounter, TxStatus
from partner.sim.engine_rig import Rig
from partner.tlp import CompletionStatus

M = 0xFFFF


def rx_expect(q, ring_index, pvec, frame, meta):
    """The completion the model writes for `frame` into a pvec of chunk lengths `pvec`."""
    left, used = len(frame), 0
    for size in pvec:
        if left <= 0:
            break
        left -= size
        used += 1
    return {"length": len(frame), "desc_index": ring_index, "chunks": len(pvec),
            "chunks_used": used, "status": 1 if left > 0 else 0, "queue": q, **meta}


def test_rx_single_chunk_frames():
    rig = Rig(seed=3)
    frames = [bytes(range(n % 256)) * 1 + b"\x5a" * (n // 256) for n in (1, 7, 8, 9, 64, 301)]
    buffers = []

    async def scenario(ctx, rig):
        await rig.start(ctx)
        await rig.ring(ctx, "rx", 0, log2=3)
        for n in range(len(frames)):
            address = rig.alloc(2048, offset=(n * 3) % 8 + 1)
            buffers.append(address)
            rig.post("rx", 0, [{"address": address, "length": 2048}])
        await rig.doorbell(ctx, "rx", 0)
        for n, frame in enumerate(frames):
            rig.frame(0, frame, demux_key=0x100 + n, rule=n, in_port=n % 2, flags=n)
        got = await rig.collect(ctx, lambda: rig.poll_rx(0), len(frames), 20000)
        for n, (entry, frame) in enumerate(zip(got, frames, strict=True)):
            assert entry["status"] == 0
            assert entry["length"] == len(frame)
            assert entry["desc_index"] == n and entry["chunks"] == 1
            assert entry["chunks_used"] == 1
            assert entry["demux_key"] == 0x100 + n and entry["rule"] == n
            assert entry["in_port"] == n % 2 and entry["flags"] == n and entry["hit"] == 1
            assert rig.memory.read(buffers[n], len(frame)) == frame
        await ctx.tick().repeat(10)  # indices move once the writer reports the entry sent
        assert await rig.read(ctx, "rx_head", 0) == len(frames)
        assert await rig.read(ctx, "rx_cpl_tail", 0) == len(frames)
        assert await rig.read(ctx, "counter", 0) == len(frames)  # RX_FRAMES
        assert await rig.read(ctx, "counter", 1) == sum(map(len, frames))  # RX_BYTES

    rig.run(scenario)


def random_pvec(rng, max_chunks=6):
    """Chunk lengths of a pvec: mostly small chunks, so frames spread over several."""
    return [rng.choice([1, 2, 3, 13, 60, 64, 100, 333, 1500, 4000])
            for _ in range(rng.randint(1, max_chunks))]


def random_frame_length(rng):
    kind = rng.random()
    if kind < 0.4:
        return rng.randint(1, 80)
    if kind < 0.9:
        return rng.randint(81, 1600)
    return rng.randint(1601, 9216)


async def rx_traffic(ctx, rig, rng, frames_per_queue, queues, log2=3, cycles=60_000):
    """Frames on every queue into random pvecs (odd addresses, some straddling 4 KiB), the host
    posting as the ring has room and reading completions; checks every byte and field."""
    for q in queues:
        await rig.ring(ctx, "rx", q, log2=log2)
    plan = {q: [] for q in queues}  # (frame, meta, pvec addresses and lengths)
    for q in queues:
        for _ in range(frames_per_queue):
            frame = rng.randbytes(random_frame_length(rng))
            meta = {"demux_key": rng.getrandbits(16), "in_port": rng.randrange(2),
                    "rule": rng.randrange(256), "hit": rng.randrange(2),
                    "flags": rng.getrandbits(8)}
            chunks = []
            for size in random_pvec(rng):
                offset = rng.choice([0, 1, 3, 5, 4093, 4095])
                chunks.append((rig.alloc(size + 8192, offset=offset), size))
            plan[q].append((frame, meta, chunks))
            rig.frame(q, frame, **meta)
    posted = {q: 0 for q in queues}
    done = {q: 0 for q in queues}
    index = {q: 0 for q in queues}
    for _ in range(cycles // 50):
        for q in queues:
            ring = rig.rx[q]
            rang = False
            while posted[q] < frames_per_queue:
                chunks = plan[q][posted[q]][2]
                if ((ring.tail - index[q]) & M) + len(chunks) > 1 << log2:
                    break
                rig.post("rx", q, [{"address": a, "length": n} for a, n in chunks])
                posted[q] += 1
                rang = True
            if rang:
                await rig.doorbell(ctx, "rx", q)
            entry = rig.poll_rx(q)
            while entry is not None:
                frame, meta, chunks = plan[q][done[q]]
                expect = rx_expect(q, index[q], [n for _, n in chunks], frame, meta)
                assert {k: entry[k] for k in expect} == expect, f"queue {q} frame {done[q]}"
                data, left = b"", len(frame)
                for address, size in chunks:
                    data += rig.memory.read(address, min(size, left))
                    left -= min(size, left)
                    if left == 0:
                        break
                assert data == frame[:len(data)] and len(data) == min(
                    len(frame), sum(n for _, n in chunks)), f"queue {q} frame {done[q]} data"
                index[q] = (index[q] + len(chunks)) & M
                done[q] += 1
                entry = rig.poll_rx(q)
            await rig.write(ctx, "rx_cpl_head", rig.rx[q].cpl_head, q)
        if all(done[q] == frames_per_queue for q in queues):
            return plan
        await ctx.tick().repeat(50)
    raise AssertionError(f"RX traffic did not finish: {done} of {frames_per_queue}")


@pytest.mark.parametrize("seed,rate,mps,mrrs", [
    (1, 1.0, 128, 128), (2, 0.6, 256, 512), (3, 0.25, 128, 128)])
def test_rx_random_pvecs_wrap_and_truncation(seed, rate, mps, mrrs):
    """Several queues at once, chunks at odd addresses, small rings that wrap many times (phase
    bits), frames from 1 byte to 9 KiB, truncated ones, random backpressure everywhere."""
    rig = Rig(seed=seed, rate=rate, mps=mps, mrrs=mrrs, split_on_all_rcb=seed == 2)
    rng = random.Random(seed)

    async def scenario(ctx, rig):
        await rig.start(ctx)
        plan = await rx_traffic(ctx, rig, rng, 5, queues=(0, 2), log2=3)
        frames = [p for q in plan.values() for p in q]
        truncated = sum(len(f) > sum(n for _, n in c) for f, _, c in frames)
        assert truncated, "the random plan should truncate some frames"
        await ctx.tick().repeat(20)
        assert await rig.read(ctx, "counter", DmaCounter.RX_FRAMES) == len(frames)
        assert await rig.read(ctx, "counter", DmaCounter.RX_TRUNCATED) == truncated
        written = sum(min(len(f), sum(n for _, n in c)) for f, _, c in frames)
        assert await rig.read(ctx, "counter", DmaCounter.RX_BYTES) == written

    rig.run(scenario)


# -- TX ------------------------------------------------------------------------------------------

def tx_pvec(rig, rng, length, chunks, straddle=True):
    """Host buffers holding `length` random bytes over `chunks` chunks at odd addresses (some
    straddling 4 KiB); returns (frame, descriptor field dicts without the first's extras)."""
    frame = rng.randbytes(length)
    cuts = sorted(rng.sample(range(1, length), chunks - 1)) if chunks > 1 else []
    pieces = [frame[a:b] for a, b in zip([0, *cuts], [*cuts, length], strict=True)]
    entries = []
    for piece in pieces:
        offset = 4096 - rng.randint(1, len(piece)) if straddle and rng.random() < 0.5 else \
            rng.choice([0, 1, 2, 3, 7])
        address = rig.alloc(len(piece) + 8192, offset=offset % 4096)
        rig.memory.write(address, piece)
        entries.append({"address": address, "length": len(piece)})
    return frame, entries


async def tx_traffic(ctx, rig, rng, count, t=0, log2=3, cycles=60_000, notify=False):
    """`count` TX pvecs through ring `t`, posted as the ring has room; checks the frames the
    core received and the completions."""
    plan = []
    for n in range(count):
        length = random_frame_length(rng)
        chunks = rng.randint(1, min(length, 6))
        frame, entries = tx_pvec(rig, rng, length, chunks)
        entries[0].update(port=n % 2, flow=rng.randrange(8), demux_key=rng.getrandbits(16),
                          total_length=length, attrs=int(notify))
        plan.append((frame, entries))
    posted = done = index = 0
    for _ in range(cycles // 50):
        ring = rig.tx[t]
        rang = False
        while posted < count and ((ring.tail - index) & M) + len(plan[posted][1]) <= 1 << log2:
            rig.post("tx", t, plan[posted][1])
            posted += 1
            rang = True
        if rang:
            await rig.doorbell(ctx, "tx", t)
        entry = rig.poll_tx(t)
        while entry is not None:
            frame, entries = plan[done]
            assert entry["status"] == 0, f"TX pvec {done}: {entry}"
            assert entry["desc_index"] == index and entry["chunks"] == len(entries)
            index = (index + len(entries)) & M
            done += 1
            entry = rig.poll_tx(t)
        await rig.write(ctx, "tx_cpl_head", ring.cpl_head, t)
        if done == count and len(rig.sent()) >= count:
            break
        await ctx.tick().repeat(50)
    else:
        raise AssertionError(f"TX traffic did not finish: {done} of {count}")
    sent = rig.sent()
    assert len(sent) == count
    for (port, flow, length, data), (frame, entries) in zip(sent, plan, strict=True):
        assert (port, flow, length) == (entries[0]["port"], entries[0]["flow"], len(frame))
        assert data == frame
    return plan


@pytest.mark.parametrize("seed,rate,mps,mrrs", [
    (5, 1.0, 128, 128), (6, 0.6, 256, 512), (7, 0.25, 128, 128)])
def test_tx_random_pvecs(seed, rate, mps, mrrs):
    """TX pvecs of 1..6 chunks (unaligned, straddling 4 KiB), frames of 1 byte to 9 KiB, a ring
    that wraps, backpressure on every stream, reads completed in pieces."""
    rig = Rig(seed=seed, rate=rate, mps=mps, mrrs=mrrs, split_on_all_rcb=seed == 6)
    rng = random.Random(seed)

    async def scenario(ctx, rig):
        await rig.start(ctx)
        await rig.ring(ctx, "tx", 0, log2=3)
        await rig.write(ctx, "tx_max_length", 9216)
        plan = await tx_traffic(ctx, rig, rng, 6)
        await ctx.tick().repeat(10)
        assert await rig.read(ctx, "counter", DmaCounter.TX_FRAMES) == len(plan)
        assert await rig.read(ctx, "counter", DmaCounter.TX_BYTES) == sum(
            len(f) for f, _ in plan)

    rig.run(scenario)


def test_descriptor_cache_reads_each_descriptor_once_and_forgets_a_stopped_ring():
    rig = Rig(seed=21)

    def ring_bytes_read(ring, since=0):
        span = (ring.base, ring.base + (16 << ring.log2))
        return sum(min(end, span[1]) - max(start, span[0])
                   for start, end in rig.host.read_log[since:]
                   if start < span[1] and span[0] < end)

    async def scenario(ctx, rig):
        await rig.start(ctx)
        ring = await rig.ring(ctx, "rx", 0, log2=5)
        # A chain whose end is not posted yet: its first two entries are read and kept.
        stale = rig.alloc(4096)
        untouched = rig.memory.read(stale, 192)
        rig.post("rx", 0, [{"address": stale + 64 * n, "length": 64} for n in range(3)])
        await rig.write(ctx, "rx_tail", 2, 0)
        frame = bytes(range(100))
        rig.frame(0, frame, demux_key=7)
        await rig.wait(ctx, lambda: ring_bytes_read(ring) == 32, 2000, "the chain's first read")
        await ctx.tick().repeat(200)
        assert rig.poll_rx(0) is None, "the chain's end is not posted: nothing completes"
        # The host stops and restarts the ring (indices back to 0) with other descriptors: the
        # engine must read them, not use what it kept of the old chain at the same index.
        await rig.write(ctx, "rx_size", RING_SIZE.pack(log2=5, cpl_log2=5, enable=0), 0)
        await rig.write(ctx, "rx_size", RING_SIZE.pack(log2=5, cpl_log2=5, enable=1), 0)
        ring.tail = ring.cpl_head = 0
        fresh = rig.alloc(4096, offset=3)
        rig.post("rx", 0, [{"address": fresh, "length": 2048}])
        await rig.doorbell(ctx, "rx", 0)
        (entry,) = await rig.collect(ctx, lambda: rig.poll_rx(0), 1, 5000)
        assert (entry["status"], entry["chunks"], entry["length"]) == (0, 1, len(frame))
        assert rig.memory.read(fresh, len(frame)) == frame
        assert rig.memory.read(stale, 192) == untouched, "nothing lands in the old chain"

        # Twelve pvecs posted at once: one read brings all of them; each is read exactly once.
        since = len(rig.host.read_log)
        buffers = [rig.alloc(256, offset=n) for n in range(12)]
        for address in buffers:
            rig.post("rx", 0, [{"address": address, "length": 256}])
        await rig.doorbell(ctx, "rx", 0)
        frames = [bytes([n]) * (50 + n) for n in range(12)]
        for n, f in enumerate(frames):
            rig.frame(0, f, demux_key=n)
        got = await rig.collect(ctx, lambda: rig.poll_rx(0), len(frames), 20000)
        assert [e["demux_key"] for e in got] == list(range(12))
        for address, f in zip(buffers, frames, strict=True):
            assert rig.memory.read(address, len(f)) == f
        assert ring_bytes_read(ring, since) == 12 * 16, "every descriptor read exactly once"

    rig.run(scenario)


def test_tx_pvecs_overlap_and_complete_in_order():
    """TX pvecs go out several at a time (their reads overlap on the link), and their
    completions come back in descriptor order even when a bad descriptor and a failed data
    read sit between good pvecs in flight."""
    rig = Rig(seed=32, mps=256, mrrs=512, delay=(100, 150))
    frames = [bytes([n]) * 500 for n in range(24)]
    bad_descriptor, bad_read = 9, 15

    async def scenario(ctx, rig):
        await rig.start(ctx)
        await rig.ring(ctx, "tx", 0, log2=5)
        for n, frame in enumerate(frames):
            address = rig.alloc(len(frame), offset=n)
            rig.memory.write(address, frame)
            length = 0 if n == bad_descriptor else len(frame)
            if n == bad_read:
                rig.host.fail_reads(address, 1, CompletionStatus.CA)
            rig.post("tx", 0, [{"address": address, "length": length, "port": n % 2,
                                "flow": 1, "total_length": length}])
        await rig.doorbell(ctx, "tx", 0)
        got = await rig.collect(ctx, lambda: rig.poll_tx(0), len(frames), 30000)
        assert [e["desc_index"] for e in got] == list(range(len(frames)))
        assert [e["status"] for e in got] == [
            TxStatus.ZERO_LENGTH if n == bad_descriptor else
            TxStatus.DMA_ERROR if n == bad_read else TxStatus.OK for n in range(len(frames))]
        good = [n for n in range(len(frames)) if n not in (bad_descriptor, bad_read)]
        await rig.wait(ctx, lambda: len(rig.sent()) >= len(good), 2000, "the TX buffer's output")
        await ctx.tick().repeat(200)
        assert [(port, data) for port, _, _, data in rig.sent()] == [
            (n % 2, frames[n]) for n in good]
        assert rig.host.max_outstanding >= 6, "one pvec's reads at a time"

    rig.run(scenario)
