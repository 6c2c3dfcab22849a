"""DmaEngine control (amaranth.sim): interrupt moderation, NOTIFY, polling, counter thresholds,
register checks, engine reset, and the wider TLP streams."""

import random

import pytest
from test_dma_engine import rx_traffic, tx_traffic

from partner.pcie.formats import (
    DMA_CONFIG,
    DMA_CONTROL,
    DMA_FORMAT_VERSION,
    DMA_IDENT,
    DMA_STATUS,
    RING_SIZE,
    RX_COMPLETION,
    TX_COMPLETION,
    DmaCounter,
    DmaEvent,
    TxFlag,
)
from partner.sim.engine_rig import Rig


def test_moderation_by_count_timer_notify_and_polling():
    rig = Rig(seed=11, clk_freq=20e6)  # 20 cycles per microsecond

    async def scenario(ctx, rig):
        await rig.start(ctx)
        await rig.event_ring(ctx, irq={"vector": 0, "frames": 1})
        await rig.ring(ctx, "rx", 0, log2=4, irq={"vector": 1, "frames": 4})
        await rig.ring(ctx, "rx", 2, log2=4, irq={"vector": 2, "frames": 100, "usecs": 3})
        await rig.ring(ctx, "tx", 0, log2=4, irq={"vector": 3, "frames": 100})
        await rig.wait(ctx, lambda: rig.irqs[0] == 1, 500, "the RESET_DONE event's interrupt")
        buf = rig.alloc(4096, offset=1)

        # Every 4th completion of RX ring 0 signals vector 1.
        for n in range(8):
            rig.post("rx", 0, [{"address": buf, "length": 128}])
            if n < 7:
                rig.frame(0, b"f" * 100)
        await rig.doorbell(ctx, "rx", 0)
        await rig.collect(ctx, lambda: rig.poll_rx(0), 7, 5000)
        await ctx.tick().repeat(20)
        assert rig.irqs[1] == 1, "7 completions: one interrupt"
        rig.frame(0, b"f" * 100)
        await rig.collect(ctx, lambda: rig.poll_rx(0), 1, 5000)
        await ctx.tick().repeat(20)
        assert rig.irqs[1] == 2

        # RX ring 2: one completion, signalled by the 3 us timer.
        rig.post("rx", 2, [{"address": buf, "length": 128}])
        await rig.doorbell(ctx, "rx", 2)
        rig.frame(2, b"g" * 100)
        await rig.collect(ctx, lambda: rig.poll_rx(2), 1, 5000)
        start = rig.cycle
        await rig.wait(ctx, lambda: rig.irqs[2] == 1, 200, "the moderation timer")
        assert 2 * 20 - 10 <= rig.cycle - start <= 3 * 20 + 10, rig.cycle - start

        # TX ring 0: NOTIFY signals at once, the other pvec waits for its 100 frames.
        data = rig.alloc(4096)
        for attrs in (TxFlag.NOTIFY, 0, TxFlag.NOTIFY):
            rig.post("tx", 0, [{"address": data, "length": 60, "port": 0, "flow": 0,
                                "total_length": 60, "attrs": attrs}])
        await rig.doorbell(ctx, "tx", 0)
        await rig.collect(ctx, lambda: rig.poll_tx(0), 3, 5000)
        await ctx.tick().repeat(20)
        assert rig.irqs[3] == 2

        # Polling: no interrupt at all.
        await rig.write(ctx, "control", DMA_CONTROL.pack(enable=1, polling=1))
        for _ in range(4):
            rig.post("rx", 0, [{"address": buf, "length": 128}])
            rig.frame(0, b"h" * 10)
        await rig.doorbell(ctx, "rx", 0)
        await rig.collect(ctx, lambda: rig.poll_rx(0), 4, 5000)
        await ctx.tick().repeat(100)
        assert rig.irqs == [1, 2, 1, 2]

    rig.run(scenario)


def test_registers_refuse_bad_values():
    rig = Rig(seed=12)

    async def scenario(ctx, rig):
        await rig.start(ctx)
        assert await rig.read(ctx, "ident") == DMA_IDENT
        assert await rig.read(ctx, "version") == DMA_FORMAT_VERSION
        assert DMA_CONFIG.unpack(await rig.read(ctx, "config")) == {
            "rx_rings": 3, "tx_rings": 1, "max_chunks": 16, "max_ring_log2": 15, "vectors": 4}

        async def status():
            return DMA_STATUS.unpack(await rig.read(ctx, "status"))

        # A ring base that is not 4 KiB aligned: the ring stays off.
        await rig.write(ctx, "rx_base_lo", 0x1234, 1)
        await rig.write(ctx, "rx_size", RING_SIZE.pack(log2=3, cpl_log2=3, enable=1), 1)
        assert (await status())["bad_ring_config"] == 1
        assert await rig.read(ctx, "rx_base_lo", 1) == 0x1234
        # A completion ring base that is not aligned.
        await rig.write(ctx, "rx_cpl_base_lo", 0x800, 0)
        await rig.write(ctx, "rx_size", RING_SIZE.pack(log2=3, cpl_log2=3, enable=1), 0)
        assert (await status())["bad_ring_config"] == 1
        assert await status() == {k: 0 for k in DMA_STATUS.fields}, "read clears"

        await rig.ring(ctx, "rx", 0, log2=4)
        await rig.write(ctx, "rx_tail", 17, 0)  # more than a ring ahead
        assert (await status())["bad_doorbell"] == 1
        assert await rig.read(ctx, "rx_tail", 0) == 0
        await rig.write(ctx, "rx_cpl_head", 1, 0)  # beyond the engine's tail
        assert (await status())["bad_doorbell"] == 1
        await rig.write(ctx, "rx_tail", 16, 0)  # exactly a ring: fine
        assert await rig.read(ctx, "rx_tail", 0) == 16
        assert (await status())["bad_doorbell"] == 0

        await rig.write(ctx, "ident", 5)
        assert (await status())["bad_access"] == 1
        await rig.write(ctx, "max_chunks", 0)
        assert (await status())["bad_access"] == 1
        assert await rig.read(ctx, "max_chunks") == 16
        await rig.write(ctx, "rx_base_lo", 0x1000, 3)  # RX ring 3 is not in this build
        assert (await status())["bad_access"] == 1
        assert await rig.read(ctx, "rx_base_lo", 3) == 0

    rig.run(scenario)


def test_counter_threshold_event():
    rig = Rig(seed=13)

    async def scenario(ctx, rig):
        await rig.start(ctx)
        await rig.event_ring(ctx)
        await rig.ring(ctx, "rx", 0)
        await rig.write(ctx, "counter_threshold", 2, DmaCounter.RX_FRAMES)
        buf = rig.alloc(4096)
        for _ in range(3):
            rig.post("rx", 0, [{"address": buf, "length": 100}])
            rig.frame(0, b"c" * 20)
        await rig.doorbell(ctx, "rx", 0)
        await rig.collect(ctx, lambda: rig.poll_rx(0), 3, 5000)
        reset, crossed = await rig.collect(ctx, rig.poll_event, 2, 500, "events")
        assert reset["kind"] == DmaEvent.RESET_DONE
        assert (crossed["kind"], crossed["unit"]) == (DmaEvent.COUNTER_THRESHOLD,
                                                      DmaCounter.RX_FRAMES)
        assert 2 <= crossed["value"] <= 3
        assert await rig.read(ctx, "counter_threshold", DmaCounter.RX_FRAMES) == 0, "one-shot"
        await ctx.tick().repeat(100)
        assert rig.poll_event() is None

    rig.run(scenario)


def test_reset_waits_for_the_job_then_clears_everything():
    rig = Rig(seed=14)

    async def scenario(ctx, rig):
        await rig.start(ctx)
        await rig.ring(ctx, "rx", 0, log2=4)
        buf = rig.alloc(16384, offset=5)
        for n in range(3):
            rig.post("rx", 0, [{"address": buf + 3000 * n, "length": 3000}])
            rig.frame(0, bytes([n]) * 2500)
        await rig.doorbell(ctx, "rx", 0)
        await rig.collect(ctx, lambda: rig.poll_rx(0), 1, 5000)
        # Reset in the middle of the second frame: its TLPs still go out whole.
        await ctx.tick().repeat(60)
        await rig.write(ctx, "control", DMA_CONTROL.pack(enable=1, reset=1))
        for _ in range(2000):
            if not DMA_CONTROL.unpack(await rig.read(ctx, "control"))["reset"]:
                break
        else:
            raise AssertionError("the reset never finished")
        writes = rig.host.stats.writes
        assert await rig.read(ctx, "rx_head", 0) == 0
        assert await rig.read(ctx, "rx_size", 0) == 0
        assert await rig.read(ctx, "rx_base_lo", 0) == 0
        assert await rig.read(ctx, "counter", DmaCounter.RX_FRAMES) == 0
        assert DMA_CONTROL.unpack(await rig.read(ctx, "control"))["enable"] == 1
        await ctx.tick().repeat(300)
        assert rig.host.stats.writes == writes, "nothing is written after the reset"

        # The host starts again: RESET_DONE is the first event; the frames still queued land.
        await rig.event_ring(ctx)
        ring = await rig.ring(ctx, "rx", 0, log2=4)
        assert ring.tail == 0
        (event,) = await rig.collect(ctx, rig.poll_event, 1, 500, "events")
        assert event["kind"] == DmaEvent.RESET_DONE
        for n in range(3):
            rig.post("rx", 0, [{"address": buf + 3000 * n, "length": 3000}])
        await rig.doorbell(ctx, "rx", 0)
        done = await rig.collect(ctx, lambda: rig.poll_rx(0), 1, 5000)
        assert done[0]["status"] == 0 and done[0]["desc_index"] == 0

    rig.run(scenario)


@pytest.mark.parametrize("width", [256])
def test_wide_streams(width):
    """The same rings at 32 bytes per beat: two descriptors per beat, short beats of 16."""
    rig = Rig(seed=width, width=width, mps=256, mrrs=512, rate=0.8)
    rng = random.Random(width)

    async def scenario(ctx, rig):
        await rig.start(ctx)
        await rig.ring(ctx, "tx", 0, log2=3)
        await rig.write(ctx, "tx_max_length", 9216)
        await rx_traffic(ctx, rig, rng, 4, queues=(1,), log2=3)
        await tx_traffic(ctx, rig, rng, 4)

    rig.run(scenario)


def test_no_head_of_line_blocking():
    """A queue without free pvecs, and a core that takes no TX frame, hold up no RX queue."""
    rig = Rig(seed=15, tx_buffer_bytes=4096)

    async def scenario(ctx, rig):
        rig.tx_sink.rate = 0.0  # the core's TX path is stuck
        await rig.start(ctx)
        await rig.ring(ctx, "rx", 0)
        await rig.ring(ctx, "rx", 1)
        await rig.ring(ctx, "tx", 0)
        await rig.write(ctx, "tx_max_length", 1000)
        data = rig.alloc(8192)
        for _ in range(6):  # more than the 4 KiB TX buffer holds
            rig.post("tx", 0, [{"address": data, "length": 1000, "port": 0, "flow": 0,
                                "total_length": 1000}])
        await rig.doorbell(ctx, "tx", 0)
        await rig.collect(ctx, lambda: rig.poll_tx(0), 3, 10000)
        for n in range(4):
            rig.frame(0, b"stuck" * 10)  # queue 0: no pvec posted
            rig.frame(1, bytes([n]) * 100)
        buf = rig.alloc(4096)
        for n in range(4):
            rig.post("rx", 1, [{"address": buf + 128 * n, "length": 128}])
        await rig.doorbell(ctx, "rx", 1)
        got = await rig.collect(ctx, lambda: rig.poll_rx(1), 4, 5000)
        assert [e["status"] for e in got] == [0] * 4
        assert rig.memory.read(buf + 3 * 128, 100) == bytes([3]) * 100
        await rig.collect(ctx, lambda: rig.poll_tx(0), 1, 5000)  # 4 x 1000 bytes fit
        await ctx.tick().repeat(200)
        assert rig.poll_tx(0) is None, "the TX ring waits for room in the buffer"
        assert rig.sent() == []
        rig.tx_sink.rate = 1.0
        await rig.collect(ctx, lambda: rig.poll_tx(0), 2, 10000)
        await rig.wait(ctx, lambda: len(rig.sent()) == 6, 2000, "every frame to the core")

    rig.run(scenario)


def test_disabled_engine_starts_no_job():
    rig = Rig(seed=16)

    async def scenario(ctx, rig):
        await rig.start(ctx)
        await rig.write(ctx, "control", 0)  # enable 0
        await rig.ring(ctx, "rx", 0)
        buf = rig.alloc(4096)
        rig.post("rx", 0, [{"address": buf, "length": 100}])
        await rig.doorbell(ctx, "rx", 0)
        rig.frame(0, b"d" * 50)
        await ctx.tick().repeat(300)
        assert rig.poll_rx(0) is None and rig.host.stats.reads == 0
        await rig.write(ctx, "control", DMA_CONTROL.pack(enable=1))
        (entry,) = await rig.collect(ctx, lambda: rig.poll_rx(0), 1, 2000)
        assert entry["status"] == 0 and rig.memory.read(buf, 50) == b"d" * 50

    rig.run(scenario)


def test_an_interrupt_never_comes_before_its_completion_entry():
    """Moderation of one frame: when an interrupt is raised, the completions it signals are
    already in host memory (the MSI-X write follows the entry's MWr), for RX frames and for
    TX pvecs with NOTIFY, under backpressure."""
    rig = Rig(seed=18, mps=128, rate=0.7, delay=(20, 50))
    seen = {1: [], 2: []}

    def visible(ring, struct):
        """Completions in host memory past the host's head (which the test does not move)."""
        count = 0
        while count < 1 << ring.cpl_log2:
            index = ring.cpl_head + count
            slot = index & ((1 << ring.cpl_log2) - 1)
            raw = rig.memory.read(ring.cpl_base + ring.entry * slot, ring.entry)
            if struct.from_bytes(raw)["phase"] != 1 ^ ((index >> ring.cpl_log2) & 1):
                break
            count += 1
        return count

    def on_irq(vector):
        if vector == 1:
            seen[1].append(visible(rig.rx[0], RX_COMPLETION))
        elif vector == 2:
            seen[2].append(visible(rig.tx[0], TX_COMPLETION))

    async def scenario(ctx, rig):
        await rig.start(ctx)
        await rig.ring(ctx, "rx", 0, log2=5, irq={"vector": 1, "frames": 1})
        await rig.ring(ctx, "tx", 0, log2=5, irq={"vector": 2, "frames": 100})
        rig.on_irq = on_irq
        data = rig.alloc(4096)
        for n in range(12):
            rig.post("rx", 0, [{"address": rig.alloc(2048), "length": 2048}])
            rig.frame(0, bytes([n]) * (60 + 97 * n))
            rig.post("tx", 0, [{"address": data, "length": 60 + 50 * n, "port": 0, "flow": 0,
                                "total_length": 60 + 50 * n, "attrs": TxFlag.NOTIFY}])
        await rig.doorbell(ctx, "rx", 0)
        await rig.doorbell(ctx, "tx", 0)
        await rig.wait(ctx, lambda: visible(rig.rx[0], RX_COMPLETION) == 12
                       and visible(rig.tx[0], TX_COMPLETION) == 12, 20000, "every completion")
        await ctx.tick().repeat(50)

    rig.run(scenario)
    for vector in (1, 2):
        assert seen[vector], f"vector {vector} never fired"
        assert all(count >= n for n, count in enumerate(seen[vector], 1)), (vector, seen[vector])
