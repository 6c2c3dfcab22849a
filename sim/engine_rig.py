"""The DMA engine in `amaranth.sim` with its peers: the host model
(`partner.sim.models.pcie_host`) as root complex and host memory, a small ring driver written per
`partner.pcie.formats`, and stream peers for the core's side.

`Rig` is shared by the engine tests (tests/test_dma_engine*.py) and the engine's throughput
bench (bench/dma_engine.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

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
)
from partner.sim.models.pcie_host import HostMemory, PcieHost, StreamSink, StreamSource, pack
from partner.tlp import CompletionStatus

__all__ = ["CODES", "FaultyHost", "Rig", "Ring"]

M = 0xFFFF
CODES = {128: 0, 256: 1, 512: 2, 1024: 3, 2048: 4, 4096: 5}


class FaultyHost(PcieHost):
    """The host model, plus reads of chosen address ranges that complete with an error, and a
    log of the read requests."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.faults = []  # [lo, hi, status, remaining]
        self.read_log = []  # (start, end) of every read request, in order

    def fail_reads(self, address, length=1, status=CompletionStatus.UR, count=1):
        self.faults.append([address, address + length, status, count])

    def _start_read(self, tag, start, end):
        self.read_log.append((start, end))
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
                 clk_freq=20e6, tx_buffer_bytes=32768, events=16, read_timeout=3000,
                 ur_rate=0.0, ca_rate=0.0, host_options=None):
        self.dut = DmaEngine(width, rx_rings=rx_rings, tx_rings=tx_rings, ports=2, tx_flows=8,
                             vectors=vectors, clk_freq=clk_freq, tx_buffer_bytes=tx_buffer_bytes,
                             events=events, read_timeout=read_timeout)
        self.width, self.wb = width, width // 8
        self.rng = random.Random(seed)
        self.memory = HostMemory(seed)
        self.host = FaultyHost(tlp_layout(width), width, self.memory, rng=random.Random(seed + 1),
                             mps=mps, mrrs=mrrs, rcb=rcb, split_on_all_rcb=split_on_all_rcb,
                             delay=delay, req_ready=rate, cpl_valid=rate, ur_rate=ur_rate,
                             ca_rate=ca_rate, **(host_options or {}))
        self.rx_src = [StreamSource(self.dut.rx[q], random.Random(seed + 10 + q), rate)
                       for q in range(rx_rings)]
        self.tx_sink = StreamSink(self.dut.tx, random.Random(seed + 3), rate)
        self.ev_src = StreamSource(self.dut.events, random.Random(seed + 4), rate)
        self.irqs = [0] * vectors
        self.on_irq = None  # called with the vector of each interrupt, as it is raised
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
                        if self.on_irq is not None:
                            self.on_irq(v)

        sim.add_process(irq_monitor)

        async def main(ctx):
            await scenario(ctx, self)

        sim.add_testbench(main)
        sim.run()


# -- RX ------------------------------------------------------------------------------------------
