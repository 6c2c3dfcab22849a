"""DmaEngine against the memory-only device model (`partner.sim.models.dma_device`), the
executable form of the ring formats: the same host operations on both, then the same bytes in
every completion ring, the event ring and the RX buffers, the same frames to the core and the
same counters."""

import random

from partner.pcie.bar import BAR0
from partner.pcie.formats import (
    DMA_REGISTERS,
    RING_SIZE,
    RX_FREE,
    TX_DESCRIPTOR,
    DmaCounter,
)
from partner.sim.engine_rig import Rig, Ring
from partner.sim.models.dma_device import DmaDeviceModel
from partner.tlp import CompletionStatus

LOG2 = 6  # no ring wraps here (the other tests wrap): the comparison is of whole rings


class Both:
    """The model and the rig, driven alike."""

    def __init__(self, rig, model):
        self.rig, self.model = rig, model

    def alloc(self, size, offset=0):
        return self.model.alloc_dma(size + offset + 8).address + offset

    def write_memory(self, address, data):
        self.model.dma_write(address, data)
        self.rig.memory.write(address, data)

    async def write(self, ctx, name, value, index=0):
        self.model.write32(BAR0.dma.offset + DMA_REGISTERS[name].address(index), value)
        await self.rig.write(ctx, name, value, index)

    async def ring(self, ctx, kind, index):
        entry = 16 if kind == "rx" else 8
        base, cpl = self.alloc(16 << LOG2), self.alloc(entry << LOG2)
        self.write_memory(cpl, bytes(entry << LOG2))
        for name, value in (("base_lo", base & 0xFFFFFFFF), ("base_hi", base >> 32),
                            ("cpl_base_lo", cpl & 0xFFFFFFFF), ("cpl_base_hi", cpl >> 32)):
            await self.write(ctx, f"{kind}_{name}", value, index)
        await self.write(ctx, f"{kind}_size", RING_SIZE.pack(log2=LOG2, cpl_log2=LOG2,
                                                             enable=1), index)
        ring = Ring(base, LOG2, cpl, LOG2, entry)
        (self.rig.rx if kind == "rx" else self.rig.tx)[index] = ring
        return ring

    async def post(self, ctx, kind, index, entries):
        ring = (self.rig.rx if kind == "rx" else self.rig.tx)[index]
        struct = RX_FREE if kind == "rx" else TX_DESCRIPTOR
        first = ring.tail
        for n, fields in enumerate(entries):
            self.write_memory(ring.base + 16 * ring.tail,
                              struct.to_bytes(fields, more=int(n < len(entries) - 1)))
            ring.tail += 1
        await self.write(ctx, f"{kind}_tail", ring.tail, index)
        return first

    async def settle(self, ctx):
        """Wait until the engine has written as many completions as the model, every ring."""
        model, rig = self.model, self.rig
        want = [("rx_cpl_tail", i, r.cpl.tail) for i, r in enumerate(model.rx)]
        want += [("tx_cpl_tail", i, r.cpl.tail) for i, r in enumerate(model.tx)]
        want.append(("event_tail", 0, model.events.cpl.tail))
        for _ in range(400):
            got = [await rig.read(ctx, name, i) for name, i, _ in want]
            if got == [tail for *_, tail in want]:
                await ctx.tick().repeat(20)
                return
            await ctx.tick().repeat(30)
        raise AssertionError(f"the engine did not keep up with the model: {got} vs {want}")


def test_engine_matches_the_model():
    rng = random.Random(21)
    rig = Rig(seed=21, rate=0.8, mps=256, mrrs=256)
    model = DmaDeviceModel(ports=2, queues=2, tx_rings=1, vectors=4)
    for port in range(2):
        for flow in range(8):
            model.core.quota[(True, port, flow)] = 1 << 20  # the core takes every TX frame
    both = Both(rig, model)
    rx_buffers = []

    async def scenario(ctx, rig):
        await rig.start(ctx)
        model.write32(BAR0.dma.offset + DMA_REGISTERS["control"].address(), 1)
        events = both.alloc(16 << LOG2)
        both.write_memory(events, bytes(16 << LOG2))
        await both.write(ctx, "event_base_lo", events & 0xFFFFFFFF)
        await both.write(ctx, "event_base_hi", events >> 32)
        await both.write(ctx, "event_size", RING_SIZE.pack(log2=LOG2, enable=1))
        for q in range(3):
            await both.ring(ctx, "rx", q)
        await both.ring(ctx, "tx", 0)
        await both.write(ctx, "max_chunks", 4)
        await both.write(ctx, "tx_max_length", 3000)

        for _ in range(36):
            op = rng.random()
            q = rng.randrange(3)
            if op < 0.3:  # a frame from the core
                frame = rng.randbytes(rng.choice([1, 2, 9, 60, 333, 1514, 2500]))
                meta = {"demux_key": rng.getrandbits(16), "in_port": rng.randrange(2),
                        "rule": rng.randrange(16), "hit": rng.randrange(2),
                        "flags": rng.getrandbits(8)}
                model.waiting[q].append((frame, {**meta, "queue": q, "x_flow": 0}))
                rig.frame(q, frame, **meta)
                await both.write(ctx, "rx_irq", 1 << 8, q)  # any write lets the model run
            elif op < 0.6:  # a free pvec; sometimes a zero chunk, too many, a failed read
                chunks = []
                for _ in range(rng.choice([1, 1, 2, 3, 5])):
                    size = rng.choice([0, 1, 7, 64, 500, 1600]) if rng.random() < 0.1 else \
                        rng.choice([1, 7, 64, 500, 1600])
                    address = both.alloc(size, offset=rng.choice([0, 1, 3, 4093]))
                    both.write_memory(address, bytes(size))
                    chunks.append({"address": address, "length": size})
                    rx_buffers.append((address, size))
                # A failed read of a pvec's first descriptor, when it is the ring's head: the
                # engine reads several descriptors at once and the model one by one, so a
                # failure further on would end a different pvec (docs/dma-engine.md).
                if rng.random() < 0.2 and model.rx[q].head == rig.rx[q].tail:
                    ring = rig.rx[q]
                    slot = ring.base + 16 * ring.tail
                    model.fail_reads(slot, 16, status=CompletionStatus.CA)
                    rig.host.fail_reads(slot, 16, CompletionStatus.CA)
                await both.post(ctx, "rx", q, chunks)
            else:  # a TX pvec
                length = rng.choice([1, 17, 64, 700, 1514, 2900])
                data = rng.randbytes(length)
                cuts = sorted(rng.sample(range(1, length), min(length - 1, rng.randrange(4))))
                entries = []
                for a, b in zip([0, *cuts], [*cuts, length], strict=True):
                    address = both.alloc(b - a, offset=rng.choice([0, 1, 2, 4095]))
                    both.write_memory(address, data[a:b])
                    entries.append({"address": address, "length": b - a})
                if rng.random() < 0.15:
                    address = entries[-1]["address"]
                    model.fail_reads(address, 1, status=CompletionStatus.UR)
                    rig.host.fail_reads(address, 1, CompletionStatus.UR)
                entries[0].update(port=rng.choice([0, 1, 1, 0, 2]), flow=rng.randrange(9),
                                  demux_key=rng.getrandbits(16),
                                  total_length=length + (rng.random() < 0.1))
                await both.post(ctx, "tx", 0, entries)
            await both.settle(ctx)

        await ctx.tick().repeat(300)  # the last TX frame on its way to the core
        # Same completion rings and events, byte for byte.
        regions = [(r.cpl_base, r.entry << LOG2) for r in (*rig.rx.values(), *rig.tx.values())]
        regions.append((events, 16 << LOG2))
        for address, size in regions:
            mine = rig.memory.read(address, size)
            theirs = model.dma_read(address, size)
            assert mine == theirs, f"completion ring at {address:#x} differs"
        for address, size in rx_buffers:
            assert rig.memory.read(address, size) == model.dma_read(address, size)
        assert [(f.port, f.flow, f.data) for f in model.transmitted] == [
            (port, flow, data) for port, flow, _, data in rig.sent()]
        for counter in DmaCounter:
            mine = await rig.read(ctx, "counter", counter)
            theirs = model.read32(BAR0.dma.offset + DMA_REGISTERS["counter"].address(counter))
            assert mine == theirs, counter.name
        rx_frames = model.counters[DmaCounter.RX_FRAMES]
        assert rx_frames and model.counters[DmaCounter.TX_ERRORS], "the plan should mix both"
        assert model.counters[DmaCounter.RX_ERRORS] and model.counters[DmaCounter.DMA_ERRORS]

    rig.run(scenario)
