"""DmaEngine error paths (amaranth.sim): RX and TX statuses, DMA errors and timeouts, the events
and counters they raise, events lost while the event ring is full."""

from partner.formats import EventKind
from partner.pcie.formats import (
    DMA_STATUS,
    DMA_TIMEOUT,
    RING_STATUS,
    DmaAgent,
    DmaCounter,
    DmaEvent,
    RxStatus,
    TxStatus,
)
from partner.sim.engine_rig import Rig
from partner.tlp import CompletionStatus


async def one(ctx, rig, poll, limit=6000):
    (entry,) = await rig.collect(ctx, poll, 1, limit)
    return entry


def test_rx_error_statuses_events_and_counters():
    rig = Rig(seed=7)

    async def scenario(ctx, rig):
        await rig.start(ctx)
        await rig.event_ring(ctx, log2=4)
        await rig.ring(ctx, "rx", 1, log2=4)
        await rig.write(ctx, "max_chunks", 2)
        frame = bytes(range(200))
        rig.frame(1, frame, demux_key=0xBEEF)
        buf = rig.alloc(4096, offset=3)

        # A chain longer than max_chunks: returned unused, the frame waits for the next pvec.
        rig.post("rx", 1, [{"address": buf, "length": 64}] * 3)
        await rig.doorbell(ctx, "rx", 1)
        e = await one(ctx, rig, lambda: rig.poll_rx(1))
        assert (e["status"], e["chunks"], e["chunks_used"], e["length"], e["desc_index"]) == (
            RxStatus.TOO_MANY_CHUNKS, 3, 0, 0, 0)
        assert e["demux_key"] == 0, "an error completion carries no frame metadata"

        # A chunk of length 0.
        rig.post("rx", 1, [{"address": buf, "length": 64}, {"address": buf, "length": 0}])
        await rig.doorbell(ctx, "rx", 1)
        e = await one(ctx, rig, lambda: rig.poll_rx(1))
        assert (e["status"], e["chunks"], e["desc_index"]) == (RxStatus.ZERO_LENGTH, 2, 3)

        # The free descriptor read fails: every posted descriptor is given back.
        ring = rig.rx[1]
        rig.host.fail_reads(ring.base + 16 * 5, 16, CompletionStatus.CA)
        rig.post("rx", 1, [{"address": buf, "length": 64}])
        rig.post("rx", 1, [{"address": buf, "length": 64}, {"address": buf, "length": 9}])
        await rig.doorbell(ctx, "rx", 1)
        e = await one(ctx, rig, lambda: rig.poll_rx(1))
        assert (e["status"], e["chunks"], e["desc_index"]) == (RxStatus.DMA_ERROR, 3, 5)

        # The frame finally lands.
        rig.post("rx", 1, [{"address": buf, "length": 150}, {"address": buf + 1000,
                                                               "length": 150}])
        await rig.doorbell(ctx, "rx", 1)
        e = await one(ctx, rig, lambda: rig.poll_rx(1))
        assert (e["status"], e["chunks"], e["chunks_used"], e["length"], e["demux_key"]) == (
            RxStatus.OK, 2, 2, 200, 0xBEEF)
        assert rig.memory.read(buf, 150) + rig.memory.read(buf + 1000, 50) == frame

        events = await rig.collect(ctx, rig.poll_event, 4, 2000, "events")
        assert [(ev["kind"], ev["unit"], ev["status"], ev["index"], ev["value"])
                for ev in events] == [
            (DmaEvent.RESET_DONE, 0, 0, 0, 0),
            (DmaEvent.RX_DESC_ERROR, 1, RxStatus.TOO_MANY_CHUNKS, 0, 0),
            (DmaEvent.RX_DESC_ERROR, 1, RxStatus.ZERO_LENGTH, 3, 0),
            (DmaEvent.DMA_ERROR, 1, CompletionStatus.CA, 5, DmaAgent.RX_FREE),
        ]
        await ctx.tick().repeat(10)
        assert await rig.read(ctx, "counter", DmaCounter.RX_ERRORS) == 3
        assert await rig.read(ctx, "counter", DmaCounter.DMA_ERRORS) == 1
        assert await rig.read(ctx, "counter", DmaCounter.RX_FRAMES) == 1
        status = RING_STATUS.unpack(await rig.read(ctx, "rx_status", 1))
        assert (status["errors"], status["last_status"]) == (3, RxStatus.DMA_ERROR)
        assert RING_STATUS.unpack(await rig.read(ctx, "rx_status", 1))["errors"] == 0
        assert DMA_STATUS.unpack(await rig.read(ctx, "status"))["dma_error"] == 1
        assert await rig.read(ctx, "status") == 0, "status clears on read"

    rig.run(scenario)


def test_tx_error_statuses_send_nothing():
    rig = Rig(seed=8, read_timeout=400)

    async def scenario(ctx, rig):
        await rig.start(ctx)
        await rig.event_ring(ctx, log2=4)
        await rig.ring(ctx, "tx", 0, log2=5)
        await rig.write(ctx, "max_chunks", 3)
        good = bytes(range(100))
        buf = rig.alloc(8192, offset=4000)  # the 100 bytes straddle 4 KiB
        rig.memory.write(buf, good)

        def pvec(*lengths, **first):
            starts = [sum(lengths[:i]) for i in range(len(lengths))]
            entries = [{"address": buf + s, "length": n} for s, n in zip(starts, lengths,
                                                                         strict=True)]
            entries[0].update({"port": 1, "flow": 2, "total_length": sum(lengths), **first})
            return entries

        cases = [
            (pvec(50, 0, 50), TxStatus.ZERO_LENGTH),
            (pvec(50, 50, total_length=0), TxStatus.ZERO_LENGTH),
            (pvec(1000, 1000), TxStatus.OVERSIZE),  # above tx_max_length (1522)
            (pvec(10, 10, 10, 10), TxStatus.TOO_MANY_CHUNKS),
            (pvec(100, port=2), TxStatus.BAD_PORT),  # the rig's core has 2 ports
            (pvec(100, flow=8), TxStatus.BAD_FLOW),  # and 8 TX flows
            (pvec(60, 30, total_length=100), TxStatus.LENGTH_MISMATCH),
        ]
        index = 0
        for entries, expected in cases:
            rig.post("tx", 0, entries)
            await rig.doorbell(ctx, "tx", 0)
            e = await one(ctx, rig, lambda: rig.poll_tx(0))
            assert (e["status"], e["chunks"], e["desc_index"]) == (expected, len(entries),
                                                                    index), expected
            index += len(entries)

        # A chunk's data read fails after other chunks were read: nothing reaches the core.
        other = rig.alloc(4096, offset=1)
        rig.memory.write(other, good)
        rig.host.fail_reads(other + 40, 1, CompletionStatus.UR)
        entries = pvec(40, 60)
        entries[1]["address"] = other + 40
        rig.post("tx", 0, entries)
        await rig.doorbell(ctx, "tx", 0)
        e = await one(ctx, rig, lambda: rig.poll_tx(0))
        assert (e["status"], e["desc_index"]) == (TxStatus.DMA_ERROR, index)
        data_error_index = index
        index += 2

        # A descriptor read that never completes: the reader's timeout ends it.
        rig.host.fail_reads(rig.tx[0].base + 16 * index, 16, None)
        rig.post("tx", 0, pvec(100))
        await rig.doorbell(ctx, "tx", 0)
        e = await one(ctx, rig, lambda: rig.poll_tx(0))
        assert (e["status"], e["desc_index"], e["chunks"]) == (TxStatus.DMA_ERROR, index, 1)
        timeout_index = index
        index += 1

        # And a good one.
        rig.post("tx", 0, pvec(30, 70))
        await rig.doorbell(ctx, "tx", 0)
        e = await one(ctx, rig, lambda: rig.poll_tx(0))
        assert e["status"] == TxStatus.OK
        await ctx.tick().repeat(40)
        assert rig.sent() == [(1, 2, 100, good)], "only the good pvec reached the core"

        events = await rig.collect(ctx, rig.poll_event, 1 + len(cases) + 2, 2000, "events")
        assert events[0]["kind"] == DmaEvent.RESET_DONE
        assert [(ev["kind"], ev["unit"], ev["status"]) for ev in events[1:1 + len(cases)]] == [
            (DmaEvent.TX_DESC_ERROR, 0, status) for _, status in cases]
        data_error, timeout = events[-2:]
        assert (data_error["kind"], data_error["status"], data_error["index"],
                data_error["value"]) == (DmaEvent.DMA_ERROR, CompletionStatus.UR,
                                         data_error_index, DmaAgent.TX_DATA)
        assert (timeout["kind"], timeout["status"], timeout["index"], timeout["value"]) == (
            DmaEvent.DMA_ERROR, DMA_TIMEOUT, timeout_index, DmaAgent.TX_DESCRIPTOR)
        assert await rig.read(ctx, "counter", DmaCounter.TX_ERRORS) == len(cases) + 2
        assert await rig.read(ctx, "counter", DmaCounter.DMA_ERRORS) == 2
        assert await rig.read(ctx, "counter", DmaCounter.TX_FRAMES) == 1

    rig.run(scenario)


def test_events_lost_while_the_event_ring_is_full():
    """Engine events beyond the ring and the engine's queue are lost and counted; the host
    learns of the loss (EVENTS_LOST) before the events that followed. Core events wait."""
    rig = Rig(seed=9, events=4)
    errors = 12

    async def scenario(ctx, rig):
        await rig.start(ctx)
        await rig.event_ring(ctx, log2=1)  # two entries
        await rig.ring(ctx, "rx", 0, log2=5)
        rig.frame(0, b"x" * 60)
        buf = rig.alloc(4096)
        for _ in range(errors):
            rig.post("rx", 0, [{"address": buf, "length": 0}])
        await rig.doorbell(ctx, "rx", 0)
        await rig.collect(ctx, lambda: rig.poll_rx(0), errors, 20000)
        rig.core_event(EventKind.QUEUE_DROP, 1, count=5)
        await ctx.tick().repeat(50)
        seen, idle = [], 0
        while idle < 3:  # read, free the ring, until nothing more comes
            ev = rig.poll_event()
            if ev is None:
                await rig.write(ctx, "event_head", rig.events.cpl_head)
                await ctx.tick().repeat(40)
                idle += 1
                continue
            idle = 0
            seen.append(ev)
        lost_reported = sum(ev["count"] for ev in seen if ev["kind"] == DmaEvent.EVENTS_LOST)
        kinds = [ev["kind"] for ev in seen]
        assert kinds[0] == DmaEvent.RESET_DONE
        lost = await rig.read(ctx, "counter", DmaCounter.EVENTS_LOST)
        assert lost > 0, "the queue should have overflowed"
        assert lost_reported == lost
        assert kinds.count(DmaEvent.RX_DESC_ERROR) + lost == errors
        assert kinds.index(DmaEvent.EVENTS_LOST) < len(kinds) - kinds[::-1].index(
            DmaEvent.RX_DESC_ERROR), "the loss is reported before the events after it"
        core = [ev for ev in seen if ev["kind"] == EventKind.QUEUE_DROP]
        assert [(ev["unit"], ev["count"]) for ev in core] == [(1, 5)], "core events wait"

    rig.run(scenario)
