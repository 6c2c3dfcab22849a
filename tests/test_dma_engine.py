"""DmaEngine (amaranth.sim) against the host model: RX frames into pvecs, rings, completions.

The rig here (`Rig`) is the engine, the host model (`partner.sim.models.pcie_host`) as host
memory, a small ring driver written per `partner.pcie.formats`, and stream peers for the core's
side; the other tests/test_dma_engine_*.py files import it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from amaranth.sim import Simulator

from partner.formats import ACTION, EVENT, FRAME_META, ActionKind
from partner.hdl.core import host_rx_layout, host_tx_layout
from partner.hdl.pcie.dma_engine import DmaEngine
from partner.hdl.pcie.tlp import tlp_layout
from partner.hdl.stream import packet_layout
from partner.pcie.formats import (
    DMA_REGISTERS,
    EVENT_ENTRY,
    IRQ_CONFIG,
    RING_SIZE,
    RX_COMPLETION,
    RX_FREE,
    TX_COMPLETION,
    TX_DESCRIPTOR,
    DmaCounter,
)
from partner.sim.models.pcie_host import HostMemory, PcieHost, StreamSink, StreamSource, pack
from partner.tlp import CompletionStatus

M = 0xFFFF
CODES = {128: 0, 256: 1, 512: 2, 1024: 3, 2048: 4, 4096: 5}


class FaultyHost(PcieHost):
    """The host model, plus reads of chosen address ranges that complete with an error."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.faults = []  # [lo, hi, status, remaining]

    def fail_reads(self, address, length=1, status=CompletionStatus.UR, count=1):
        self.faults.append([address, address + length, status, count])

    def _start_read(self, tag, start, end):
        super()._start_read(tag, start, end)
        for fault in self.faults:
            if fault[3] > 0 and start < fault[1] and fault[0] < end:
                fault[3] -= 1
                read = self.outstanding[tag]
                read.dropped = fault[2] is None  # None: never answered (a timeout)
                read.error, read.error_at = fault[2], start
                return


@dataclass
class Ring:
    """The host's side of one descriptor ring and its completion ring."""

    base: int
    log2: int
    cpl_base: int
    cpl_log2: int
    entry: int  # completion entry bytes
    tail: int = 0  # next descriptor the host posts
    cpl_head: int = 0  # next completion the host reads
    posted: list = field(default_factory=list)  # (first index, chunks) per pvec


class Rig:
    """One engine and its peers; ``run(scenario)`` runs an async scenario(ctx, rig)."""

    def __init__(self, *, width=64, rx_rings=3, tx_rings=1, seed=1, mps=128, mrrs=128,
                 rcb=64, split_on_all_rcb=False, rate=1.0, delay=(4, 16), vectors=4,
                 clk_freq=20e6, tx_buffer_bytes=16384, events=16, read_timeout=3000,
                 ur_rate=0.0, ca_rate=0.0):
        self.dut = DmaEngine(width, rx_rings=rx_rings, tx_rings=tx_rings, ports=2, tx_flows=8,
                             vectors=vectors, clk_freq=clk_freq, tx_buffer_bytes=tx_buffer_bytes,
                             events=events, read_timeout=read_timeout)
        self.width, self.wb = width, width // 8
        self.rng = random.Random(seed)
        self.memory = HostMemory(seed)
        self.host = FaultyHost(tlp_layout(width), width, self.memory, rng=random.Random(seed + 1),
                             mps=mps, mrrs=mrrs, rcb=rcb, split_on_all_rcb=split_on_all_rcb,
                             delay=delay, req_ready=rate, cpl_valid=rate, ur_rate=ur_rate,
                             ca_rate=ca_rate)
        self.rx_src = [StreamSource(self.dut.rx[q], random.Random(seed + 10 + q), rate)
                       for q in range(rx_rings)]
        self.tx_sink = StreamSink(self.dut.tx, random.Random(seed + 3), rate)
        self.ev_src = StreamSource(self.dut.events, random.Random(seed + 4), rate)
        self.irqs = [0] * vectors
        self.rx = {}
        self.tx = {}
        self.events = None
        self.cycle = 0
        self.rx_rings, self.tx_rings = rx_rings, tx_rings
        self._next = 0x1_0000_0000 if seed % 2 else 0x2000_0000

    # -- memory --------------------------------------------------------------------------------

    def alloc(self, size, align=4096, offset=0):
        """A fresh region of host memory at `offset` past an `align` boundary."""
        address = -(-self._next // align) * align + offset
        self._next = address + size + 4096
        return address

    # -- registers -----------------------------------------------------------------------------

    async def write(self, ctx, name, value, index=0):
        bus = self.dut.csr
        ctx.set(bus.addr, DMA_REGISTERS[name].address(index) // 4)
        ctx.set(bus.w_data, value)
        ctx.set(bus.w_stb, 1)
        await ctx.tick()
        ctx.set(bus.w_stb, 0)

    async def read(self, ctx, name, index=0):
        bus = self.dut.csr
        ctx.set(bus.addr, DMA_REGISTERS[name].address(index) // 4)
        ctx.set(bus.r_stb, 1)
        await ctx.tick()
        ctx.set(bus.r_stb, 0)
        return ctx.get(bus.r_data)

    async def start(self, ctx, *, mps=None, mrrs=None, polling=False):
        cfg = self.dut.config
        ctx.set(cfg.id, self.host.requester_id)
        ctx.set(cfg.max_payload, CODES[mps or self.host.mps])
        ctx.set(cfg.max_read_request, CODES[mrrs or self.host.mrrs])
        ctx.set(cfg.bus_master, 1)
        await self.write(ctx, "control", 1 | (4 if polling else 0))

    async def ring(self, ctx, kind, index, log2=4, cpl_log2=None, irq=None):
        """Set up and enable RX free ring / TX ring `index` (kind "rx" / "tx")."""
        cpl_log2 = log2 if cpl_log2 is None else cpl_log2
        entry = 16 if kind == "rx" else 8
        ring = Ring(self.alloc(16 << log2), log2, self.alloc(entry << cpl_log2), cpl_log2, entry)
        self.memory.write(ring.cpl_base, bytes(entry << cpl_log2))
        for name, value in (("base_lo", ring.base & 0xFFFFFFFF), ("base_hi", ring.base >> 32),
                            ("cpl_base_lo", ring.cpl_base & 0xFFFFFFFF),
                            ("cpl_base_hi", ring.cpl_base >> 32)):
            await self.write(ctx, f"{kind}_{name}", value, index)
        if irq is not None:
            await self.write(ctx, f"{kind}_irq", IRQ_CONFIG.pack(**irq), index)
        await self.write(ctx, f"{kind}_size",
                         RING_SIZE.pack(log2=log2, cpl_log2=cpl_log2, enable=1), index)
        (self.rx if kind == "rx" else self.tx)[index] = ring
        return ring

    async def event_ring(self, ctx, log2=4, irq=None):
        ring = Ring(self.alloc(16 << log2), log2, 0, log2, 16)
        ring.cpl_base = ring.base
        self.memory.write(ring.base, bytes(16 << log2))
        await self.write(ctx, "event_base_lo", ring.base & 0xFFFFFFFF)
        await self.write(ctx, "event_base_hi", ring.base >> 32)
        if irq is not None:
            await self.write(ctx, "event_irq", IRQ_CONFIG.pack(**irq))
        await self.write(ctx, "event_size", RING_SIZE.pack(log2=log2, enable=1))
        self.events = ring
        return ring

    # -- the host's ring driver ----------------------------------------------------------------

    def post(self, kind, index, entries):
        """Write a pvec's entries (dicts of the descriptor's fields; `more` is filled in)."""
        ring = (self.rx if kind == "rx" else self.tx)[index]
        struct = RX_FREE if kind == "rx" else TX_DESCRIPTOR
        ring.posted.append((ring.tail, len(entries)))
        for n, fields in enumerate(entries):
            slot = ring.tail & ((1 << ring.log2) - 1)
            self.memory.write(ring.base + 16 * slot,
                              struct.to_bytes(fields, more=int(n < len(entries) - 1)))
            ring.tail = (ring.tail + 1) & M

    async def doorbell(self, ctx, kind, index):
        ring = (self.rx if kind == "rx" else self.tx)[index]
        await self.write(ctx, f"{kind}_tail", ring.tail, index)

    def poll(self, ring, struct):
        """The next completion of `ring` if the engine wrote it (phase bit), else None."""
        slot = ring.cpl_head & ((1 << ring.cpl_log2) - 1)
        raw = self.memory.read(ring.cpl_base + ring.entry * slot, ring.entry)
        entry = struct.from_bytes(raw)
        if entry["phase"] != 1 ^ ((ring.cpl_head >> ring.cpl_log2) & 1):
            return None
        ring.cpl_head = (ring.cpl_head + 1) & M
        return entry

    def poll_rx(self, q):
        return self.poll(self.rx[q], RX_COMPLETION)

    def poll_tx(self, t):
        return self.poll(self.tx[t], TX_COMPLETION)

    def poll_event(self):
        return self.poll(self.events, EVENT_ENTRY)

    async def wait(self, ctx, predicate, limit, what="condition"):
        for _ in range(limit):
            if predicate():
                return
            await ctx.tick()
        raise AssertionError(f"timed out after {limit} cycles waiting for {what}")

    async def collect(self, ctx, poll, count, limit, what="completions"):
        got = []

        def more():
            while len(got) < count:
                entry = poll()
                if entry is None:
                    return False
                got.append(entry)
            return True
        await self.wait(ctx, more, limit, f"{count} {what} (got {len(got)})")
        return got

    # -- the core's side -----------------------------------------------------------------------

    def frame(self, q, payload, *, demux_key=0, in_port=0, rule=0, hit=1, flags=0):
        """Queue a frame on the core's host queue `q`, as the core's flow queues send it."""
        wb = self.wb
        meta = FRAME_META.pack(length=len(payload), in_port=in_port, flow=rule, hit=hit,
                               flags=flags, action=ACTION.pack(kind=ActionKind.HOST, queue=q,
                                                               demux_key=demux_key))
        beats = [payload[i:i + wb] for i in range(0, len(payload), wb)]
        lay = host_rx_layout(wb)
        for n, chunk in enumerate(beats):
            beat = pack(packet_layout(wb), data=int.from_bytes(chunk, "little"),
                        nbytes=len(chunk), first=n == 0, last=n == len(beats) - 1)
            self.rx_src[q].put(pack(lay, beat=beat, meta=meta))

    def core_event(self, kind, unit, count=1):
        self.ev_src.put(EVENT.pack(kind=kind, unit=unit, count=count))

    def sent(self):
        """Frames the engine handed to the core: (port, flow, length, bytes)."""
        lay = host_tx_layout(self.wb)
        beat_lay = packet_layout(self.wb)
        frames, current = [], None
        for raw in self.tx_sink.items:
            word = {name: (raw >> f.offset) & ((1 << f.width) - 1) for name, f in lay}
            beat = {name: (word["beat"] >> f.offset) & ((1 << f.width) - 1)
                    for name, f in beat_lay}
            piece = beat["data"].to_bytes(self.wb, "little")[:beat["nbytes"]]
            if beat["first"]:
                current = [word["port"], word["flow"], word["length"], b""]
            current[3] += piece
            if beat["last"]:
                frames.append(tuple(current))
        return frames

    # -- running -------------------------------------------------------------------------------

    def run(self, scenario):
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)
        for bench in self.host.testbenches(req=self.dut.req, cpl=self.dut.cpl):
            sim.add_testbench(bench, background=True)
        for source in (*self.rx_src, self.ev_src):
            sim.add_process(source.run)
        sim.add_process(self.tx_sink.run)

        async def irq_monitor(ctx):
            while True:
                _, _, irq = await ctx.tick().sample(self.dut.irq)
                self.cycle += 1
                for v in range(len(self.irqs)):
                    if irq >> v & 1:
                        self.irqs[v] += 1

        sim.add_process(irq_monitor)

        async def main(ctx):
            await scenario(ctx, self)

        sim.add_testbench(main)
        sim.run()


# -- RX ------------------------------------------------------------------------------------------

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


@pytest.mark.parametrize("seed,rate,mps,mrrs", [(1, 1.0, 128, 128), (2, 0.6, 256, 512)])
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


@pytest.mark.parametrize("seed,rate,mps,mrrs", [(5, 1.0, 128, 128), (6, 0.6, 256, 512)])
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
