"""The PCIe host driver against the memory-only device model: flows, zero copy, rings, batches,
interrupts, errors and reset (docs/dma.md)."""

import struct

import pytest

from partner import BufferOpError, Pvec, UnknownKey
from partner.device_control import DeviceError
from partner.errors import FlowAttributeError
from partner.formats import ACTION, FLOW_RULE, MAX_FRAME, ActionKind
from partner.pcie.bar import BAR0
from partner.pcie.codec import Codec
from partner.pcie.driver import FrameError, PcieDevice
from partner.pcie.formats import (
    DMA_CONTROL,
    DMA_REGISTERS,
    RX_FREE,
    TX_DESCRIPTOR,
    DmaAgent,
    DmaCounter,
    DmaEvent,
    RxStatus,
    TxStatus,
)
from partner.rules import RuleError
from partner.sim.models.dma_device import DmaDeviceModel
from partner.tlp import CompletionStatus

FREE = Codec(RX_FREE)
TXD = Codec(TX_DESCRIPTOR)


def udp(dport: int, payload: bytes = b"x" * 20, sport: int = 1234) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return (bytes.fromhex("02000000000202000000000108 00".replace(" ", "")) + ip +
            struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def device(**kwargs):
    model_args = {k: kwargs.pop(k) for k in ("ports", "queues", "vectors", "max_chunks")
                  if k in kwargs}
    model = DmaDeviceModel(**model_args)
    kwargs.setdefault("rx_log2", 4)
    kwargs.setdefault("tx_log2", 4)
    return model, PcieDevice(model, **kwargs)


def drain(dev):
    return [e for e in dev.ctl(None, "events") if e["kind"] not in (DmaEvent.RESET_DONE,
                                                                       DmaEvent.LINK_UP)]


def dma_write(model, name, value, index=0):
    model.write32(BAR0.dma.offset + DMA_REGISTERS[name].address(index), value)


# --- flows -------------------------------------------------------------------------------------


def test_open_programs_the_flow_table_and_queues_and_close_undoes_it():
    model, dev = device()
    key = dev.open("eth/ipv4/udp", "dst_port=53,queue_limit=4096,priority=3")
    state = dev.flow(key).state
    rule = FLOW_RULE.unpack(model.core.table[state.indices[0]])
    action = ACTION.unpack(rule["action"])
    assert rule["valid"] and action["kind"] == ActionKind.HOST
    assert action["demux_key"] == key and action["queue"] == state.queue
    assert model.core.quota[(False, state.queue, state.indices[0])] == 4096
    assert all(model.core.quota[(True, p, state.tx_flow)] == 4096 for p in range(2))
    dev.close(key)
    assert not FLOW_RULE.unpack(model.core.table[state.indices[0]])["valid"]
    assert model.core.quota[(False, state.queue, state.indices[0])] == 0
    assert model.core.quota[(True, 0, state.tx_flow)] == 0


def test_frames_arrive_with_their_flows_demux_key_and_attributes():
    model, dev = device()
    dns = dev.open("eth/ipv4/udp", "dst_port=53")
    web = dev.open("eth/ipv4/udp", "dst_port=80")
    assert dev.flow(dns).state.queue != dev.flow(web).state.queue  # two queues, two RX rings
    frames = [(udp(53, b"a" * 30), 0), (udp(80, b"b" * 40), 1), (udp(99), 0), (udp(53), 1)]
    results = [model.receive(f, p) for f, p in frames]
    assert results == ["queued", "queued", "dropped", "queued"]  # no flow: the default drops
    got = dev.pull_many(10)
    by_key = {}
    for m in got:
        by_key.setdefault(m.key, []).append(m)
    assert [m.pvec.tobytes() for m in by_key[dns]] == [frames[0][0], frames[3][0]]
    assert [m.attrs["port"] for m in by_key[dns]] == [0, 1]
    assert by_key[web][0].pvec == frames[1][0]
    assert by_key[web][0].attrs["length"] == len(frames[1][0])
    assert by_key[web][0].attrs["flags"] & 0x48 == 0x48  # IPV4 | L4 from the parser
    assert dev.ctl_stats(dns)[dns]["messages"] == 2


def test_a_specific_flow_wins_over_a_broad_one_opened_first():
    model, dev = device()
    broad = dev.open("eth/ipv4")
    narrow = dev.open("eth/ipv4/udp", "dst_port=53")
    model.receive(udp(53))
    assert [m.key for m in dev.pull_many(4)] == [narrow]
    model.receive(udp(54))
    assert [m.key for m in dev.pull_many(4)] == [broad]


# --- zero copy ----------------------------------------------------------------------------------


def test_a_pulled_pvec_is_the_dma_buffer_the_device_wrote():
    model, dev = device()
    key = dev.open("eth")
    frame = udp(7, b"z" * 100)
    model.receive(frame)
    (msg,) = dev.pull_many(4)
    (chunk,) = msg.pvec.chunks
    assert chunk.owner is dev and chunk.view.obj is dev._pool_memory.view.obj
    # The device's memory at the chunk's bus address is the pvec's memory: a write shows.
    address = dev._pool_memory.address + chunk.aggregate.offset
    assert model.dma_read(address, len(frame)) == frame
    chunk.view[0:4] = b"ZERO"
    assert model.dma_read(address, 4) == b"ZERO"
    assert msg.key == key


def test_pvecs_of_several_chunks_and_unused_chunks_return_to_the_pool():
    model, dev = device(rx_chunks=4, buffer_size=256, buffers=200)
    dev.open("eth")
    big, small = udp(1, b"q" * 800), udp(2, b"s" * 10)
    model.receive(big)
    model.receive(small)
    first, second = dev.pull_many(4)
    assert [len(c) for c in first.pvec.chunks] == [256, 256, 256, len(big) - 768]
    assert first.pvec == big and second.pvec == small and second.pvec.count == 1
    held = first.pvec.count + second.pvec.count
    buffers = dev.ctl_buffers()
    assert buffers["elsewhere"] == held  # the 3 spare chunks of the small frame went back
    first.pvec.free()
    second.pvec.free()
    assert dev.ctl_buffers()["elsewhere"] == 0


def test_a_frame_longer_than_the_pvec_is_truncated_and_says_so():
    model, dev = device(buffer_size=128)
    dev.open("eth")
    frame = udp(1, b"t" * 200)
    model.receive(frame)
    (msg,) = dev.pull_many(2)
    assert msg.pvec == frame[:128]
    assert msg.attrs["status"] == RxStatus.TRUNCATED and msg.attrs["orig_len"] == len(frame)
    assert dev.ctl_counters()["rx_truncated"] == 1


def test_push_of_device_buffers_is_zero_copy_and_foreign_ones_are_copied():
    model, dev = device()
    key = dev.open("eth")
    own = dev.alloc(300)
    own.chunks[0].view[:] = bytes(range(256)) + bytes(44)
    dev.push(key, {"port": 1}, own[10:290])  # a slice: the address must follow the offset
    assert dev.stats["tx_copied"] == 0
    foreign = Pvec.wrap(b"hello ", bytearray(b"world"))
    dev.push(key, {}, foreign)
    assert dev.stats["tx_copied"] == 1
    many = Pvec()
    for i in range(20):  # more chunks than the device takes: linearised into one copy
        part = dev.alloc(10)
        part.chunks[0].view[:] = bytes([i]) * 10
        many.extend(part)
    dev.push(key, {}, many)
    assert dev.stats["tx_copied"] == 2
    sent = model.transmitted
    assert sent[0].port == 1 and sent[0].data == (bytes(range(256)) + bytes(44))[10:290]
    assert sent[1].port == 0 and sent[1].data == b"hello world"
    assert sent[2].data == b"".join(bytes([i]) * 10 for i in range(20))
    assert all(f.demux_key == key and f.flow == dev.flow(key).state.tx_flow for f in sent)
    dev.pull_many(1)  # reclaims TX completions
    assert dev.ctl_buffers()["elsewhere"] == 0 and dev.ctl_buffers()["tx_in_flight"] == 0


# --- rings --------------------------------------------------------------------------------------


def test_rings_wrap_many_times_in_order():
    model, dev = device(rx_log2=2, tx_log2=2, buffers=64)
    key = dev.open("eth")
    for i in range(50):
        frame = udp(i, bytes([i]) * (i + 1))
        model.receive(frame)
        (msg,) = dev.pull_many(4)
        assert msg.pvec == frame
        msg.pvec.free()
        out = dev.alloc(i + 1)
        out.chunks[0].view[:] = bytes([i]) * (i + 1)
        dev.push(key, {}, out)
    assert [f.data for f in model.transmitted] == [bytes([i]) * (i + 1) for i in range(50)]
    assert dev.rx[0][1].head == 50 and dev.tx[0].tail == 50  # 12 laps of a 4-entry ring


def test_batches_stop_at_backpressure_and_lose_nothing():
    model, dev = device(tx_log2=3, buffers=256)
    key = dev.open("eth")
    dma_write(model, "control", DMA_CONTROL.pack(enable=0))  # the engine stalls
    messages = []
    for i in range(20):
        p = dev.alloc(64)
        p.chunks[0].view[:] = bytes([i]) * 64
        messages.append((key, {}, p))
    taken = dev.push_many(messages)
    assert taken == 8  # the TX ring is full; nothing was consumed beyond it
    dma_write(model, "control", DMA_CONTROL.pack(enable=1))
    while taken < 20:
        taken += dev.push_many(messages[taken:])
    assert [f.data[0] for f in model.transmitted] == list(range(20))


def test_pull_many_rings_each_doorbell_once_per_batch():
    model, dev = device(rx_log2=6)
    dev.open("eth")
    writes = []
    real = model.write32
    model.write32 = lambda offset, value: (writes.append(offset), real(offset, value))[1]
    for i in range(32):
        model.receive(udp(i))
    writes.clear()
    assert len(dev.pull_many(64)) == 32
    batch = len(writes)
    for i in range(32):
        model.receive(udp(i))
    writes.clear()
    assert sum(len(dev.pull_many(1)) for _ in range(32)) == 32
    assert batch == 2 and len(writes) == 64  # completion head + free tail, per call


# --- interrupts and polling -----------------------------------------------------------------------


def test_frame_count_moderation_holds_the_interrupt_until_the_threshold():
    model, dev = device(rx_moderation=(4, 0))
    dev.open("eth")
    vector = dev.vectors["rx"]
    for i in range(3):
        model.receive(udp(i))
    assert model.irq_count[vector] == 0 and not model.wait_irq(vector, 1e-3)
    model.receive(udp(3))
    assert model.irq_count[vector] == 1 and model.wait_irq(vector, 0)


def test_time_moderation_fires_after_its_delay_and_pull_times_out_without_frames():
    model, dev = device(rx_moderation=(100, 50))
    dev.open("eth")
    vector = dev.vectors["rx"]
    assert dev.pull(timeout=2e-3) is None and model.now == pytest.approx(2e-3)
    model.receive(udp(1))
    start = model.now
    assert model.irq_count[vector] == 0
    assert model.wait_irq(vector, 1.0)  # woken by the 50 µs timer, not the 1 s timeout
    assert model.now - start == pytest.approx(50e-6)
    assert dev.pull(timeout=0).pvec == udp(1)


def test_notify_bypasses_tx_moderation():
    model, dev = device(tx_moderation=(1000, 0))
    key = dev.open("eth")
    vector = dev.vectors["tx"]
    dev.push(key, {}, Pvec.wrap(b"quiet frame"))
    assert model.irq_count[vector] == 0
    dev.push(key, {"x_notify": True}, Pvec.wrap(b"loud frame"))
    assert model.irq_count[vector] == 1


def test_polling_mode_never_interrupts_and_pull_waits_by_looking():
    model, dev = device(polling=True, rx_moderation=(1, 0), poll_interval=10e-6)
    dev.open("eth")
    model.receive(udp(1))
    assert dev.pull(timeout=1e-3) is not None
    assert sum(model.irq_count) == 0
    assert dev.pull(timeout=1e-4) is None and model.now == pytest.approx(1e-4)
    dev.ctl(None, "polling", False)
    model.receive(udp(2))
    assert model.irq_count[dev.vectors["rx"]] == 1


def test_a_bus_without_msix_is_polling_only():
    _model, dev = device(vectors=0)
    assert dev.polling
    with pytest.raises(DeviceError, match="only polling"):
        dev.ctl(None, "polling", False)


# --- events -------------------------------------------------------------------------------------


def test_events_link_queue_drop_and_counter_threshold():
    model, dev = device(rx_log2=2)
    dev.open("eth", "queue_limit=128")
    dev.ctl(None, "threshold", "rx_frames", 3)
    for i in range(8):
        model.receive(udp(i), 1)
    events = dev.ctl(None, "events")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == DmaEvent.RESET_DONE
    assert {"kind": DmaEvent.LINK_UP, "unit": 1} in [
        {"kind": e["kind"], "unit": e["unit"]} for e in events]
    threshold = next(e for e in events if e["kind"] == DmaEvent.COUNTER_THRESHOLD)
    assert threshold["unit"] == DmaCounter.RX_FRAMES and threshold["value"] == 3
    assert DmaEvent.QUEUE_DROP in kinds  # 4 in the ring, 2 queued in the core, then drops
    assert kinds.count(DmaEvent.COUNTER_THRESHOLD) == 1  # the threshold disarmed itself


def test_a_full_event_ring_reports_what_it_lost():
    model, dev = device(event_log2=1)
    dev.open("eth", "queue_limit=64")
    dma_write(model, "control", DMA_CONTROL.pack(enable=0))
    for i in range(80):
        model.receive(udp(i))  # no RX progress: drops, one QUEUE_DROP event each
    dma_write(model, "control", DMA_CONTROL.pack(enable=1))
    seen = []
    for _ in range(60):
        seen += dev.ctl(None, "events")
    lost = [e for e in seen if e["kind"] == DmaEvent.EVENTS_LOST]
    assert lost and lost[0]["count"] > 0
    assert dev.ctl_counters()["events_lost"] == sum(e["count"] for e in lost)


# --- error injection ---------------------------------------------------------------------------


def test_bad_free_descriptors_give_error_completions_events_and_no_hang():
    model, dev = device(rx_log2=4, max_chunks=4)
    dev.open("eth")
    free = dev.rx[0][0]
    # Spoil posted descriptors the device has not read yet: a zero length, then a chain of 6.
    slot = free.head & free.mask
    address = FREE.unpack_from(free.view, slot * 16)[0]
    FREE.pack_into(free.view, slot * 16, address, 0, 0)
    for k in range(1, 7):
        s = (free.head + k) & free.mask
        FREE.pack_into(free.view, s * 16, FREE.unpack_from(free.view, s * 16)[0], 2048, k < 6)
    model.receive(udp(1))
    (msg,) = dev.pull_many(4)
    assert msg.pvec == udp(1)
    assert dev.stats["rx_errors"] == {"ZERO_LENGTH": 1, "TOO_MANY_CHUNKS": 1}
    events = drain(dev)
    assert [(e["kind"], e["status"]) for e in events] == [
        (DmaEvent.RX_DESC_ERROR, RxStatus.ZERO_LENGTH),
        (DmaEvent.RX_DESC_ERROR, RxStatus.TOO_MANY_CHUNKS)]
    assert events[1]["index"] == 1
    msg.pvec.free()
    assert dev.ctl_buffers()["elsewhere"] == 0


def test_a_failed_free_descriptor_read_returns_every_posted_buffer():
    model, dev = device()
    dev.open("eth")
    free = dev.rx[0][0]
    model.fail_reads(free.address, 16, status=CompletionStatus.CA)
    model.receive(udp(5))
    # The error completion gives every buffer back; the refill it prompts takes the frame,
    # whose completion the next look finds.
    (msg,) = dev.pull_many(4) + dev.pull_many(4)
    assert msg.pvec == udp(5)
    assert dev.stats["rx_errors"] == {"DMA_ERROR": 1}
    (event,) = drain(dev)
    assert event["kind"] == DmaEvent.DMA_ERROR and event["status"] == CompletionStatus.CA
    assert event["value"] == DmaAgent.RX_FREE
    msg.pvec.free()
    assert dev.ctl_buffers()["elsewhere"] == 0


@pytest.mark.parametrize("case, status", [
    ("zero_length", TxStatus.ZERO_LENGTH),
    ("oversize", TxStatus.OVERSIZE),
    ("too_many_chunks", TxStatus.TOO_MANY_CHUNKS),
    ("bad_port", TxStatus.BAD_PORT),
    ("bad_flow", TxStatus.BAD_FLOW),
    ("length_mismatch", TxStatus.LENGTH_MISMATCH),
    ("data_read_ur", TxStatus.DMA_ERROR),
])
def test_bad_tx_descriptors_complete_with_an_error_and_an_event(case, status):
    model, dev = device(tx_log2=5)
    key = dev.open("eth")
    flow = dev.flow(key).state.tx_flow
    ring = dev.tx[0]
    held = dev.alloc(2048 * 2)
    addresses = [dev._pool_memory.address + c.aggregate.offset for c in held.chunks]
    chunks = [(addresses[0], 100)]
    port, total = 0, 100
    if case == "zero_length":
        chunks, total = [(addresses[0], 0)], 0
    elif case == "oversize":
        chunks, total = [(addresses[0], 2048), (addresses[1], 2048)], 4096
    elif case == "too_many_chunks":
        chunks, total = [(addresses[0] + 10 * i, 10) for i in range(17)], 170
    elif case == "bad_port":
        port = 5
    elif case == "bad_flow":
        flow = 200
    elif case == "length_mismatch":
        total = 99
    elif case == "data_read_ur":
        model.fail_reads(addresses[0], 100)
    entries = [(a, n, i < len(chunks) - 1, port, flow, key, total, 0) if i == 0 else
               (a, n, i < len(chunks) - 1, 0, 0, 0, 0, 0) for i, (a, n) in enumerate(chunks)]
    ring.post(entries, [held] + [None] * (len(entries) - 1))
    model.write32(dev._tx_tail, ring.tail)
    assert model.transmitted == []
    dev.pull_many(1)  # reclaims the completion
    assert dev.stats["tx_errors"] == {status.name: 1}
    events = drain(dev)
    kind = DmaEvent.DMA_ERROR if status == TxStatus.DMA_ERROR else DmaEvent.TX_DESC_ERROR
    assert events[0]["kind"] == kind and events[0]["index"] == 0
    if kind == DmaEvent.TX_DESC_ERROR:
        assert events[0]["status"] == status
    else:
        assert events[0]["value"] == DmaAgent.TX_DATA
    dev.push(key, {}, Pvec.wrap(b"after the error"))  # the ring still works
    assert model.transmitted[-1].data == b"after the error"
    dev.pull_many(1)
    assert dev.ctl_buffers()["elsewhere"] == 0  # the bad pvec's buffers came back


# --- reset ----------------------------------------------------------------------------------------


def test_reset_in_mid_traffic_accounts_for_every_buffer():
    model, dev = device(rx_log2=3, tx_log2=3, buffers=80)
    key = dev.open("eth")
    for i in range(5):
        model.receive(udp(i))
    kept = dev.pull_many(2)  # the user holds two frames
    dma_write(model, "control", DMA_CONTROL.pack(enable=0))  # the engine stops mid-traffic
    pending = []
    for i in range(4):
        p = dev.alloc(64)
        p.chunks[0].view[:] = bytes([i]) * 64
        pending.append(p)
        dev.push(key, {}, p)
    before = dev.ctl_buffers()
    assert before["tx_in_flight"] == 4 and before["elsewhere"] == 2
    report = dev.ctl(None, "reset")
    assert report == {"rx_kept": 3, "rx_reclaimed": 3 * 8, "tx_aborted": 4}  # 3 full rings
    after = dev.ctl_buffers()
    assert after["tx_in_flight"] == 0 and after["elsewhere"] == 2 + 3  # + the kept frames
    assert after["free"] + after["rx_posted"] + after["elsewhere"] == after["total"]
    backlog = dev.pull_many(8)
    assert [m.pvec.tobytes() for m in kept + backlog] == [udp(i) for i in range(5)]
    assert DmaEvent.RESET_DONE in [e["kind"] for e in dev.ctl(None, "events")]
    model.receive(udp(9))  # traffic runs again, both ways
    (msg,) = dev.pull_many(4)
    assert msg.pvec == udp(9)
    dev.push(key, {}, Pvec.wrap(b"again"))
    assert model.transmitted[-1].data == b"again"
    for m in kept + backlog + [msg]:
        m.pvec.free()
    dev.shutdown()
    assert dev.ctl_buffers() == {"total": 80, "free": 80, "rx_posted": 0, "tx_in_flight": 0,
                                 "elsewhere": 0}


# --- misuse -------------------------------------------------------------------------------------


def test_misuse_gets_clear_errors():
    _model, dev = device()
    key = dev.open("eth")
    with pytest.raises(UnknownKey, match="not open"):
        dev.push(key + 5, {}, Pvec.wrap(b"x"))
    with pytest.raises(FrameError, match="empty"):
        dev.push(key, {}, Pvec())
    with pytest.raises(FrameError, match="at most 1522"):
        dev.push(key, {}, Pvec.wrap(bytes(3000)))
    with pytest.raises(FlowAttributeError, match="port"):
        dev.push(key, {"port": 2}, Pvec.wrap(b"x"))
    with pytest.raises(ValueError, match="max_count"):
        dev.pull_many(0)
    with pytest.raises(RuleError, match="must start with 'eth'"):
        dev.open("raw")
    with pytest.raises(ValueError, match="rx moderation"):
        dev.ctl(None, "moderation", rx=(1 << 12, 0))
    with pytest.raises(ValueError, match="no DMA counter"):
        dev.ctl(None, "threshold", "frames", 1)
    p = dev.alloc(10)
    p.free()
    with pytest.raises(BufferOpError):
        p.free()
    with pytest.raises(BufferOpError, match="freed"):
        dev.push(key, {}, p)
    with pytest.raises(ValueError, match="buffer_size"):
        PcieDevice(DmaDeviceModel(), buffer_size=20000)
    dev.shutdown()
    with pytest.raises(DeviceError, match="shut down"):
        dev.pull_many(1)


def test_a_device_that_is_not_ours_is_refused():
    model = DmaDeviceModel()
    model.values["ident"] = [0x12345678]
    with pytest.raises(DeviceError, match="ident 0x12345678"):
        PcieDevice(model)


def test_jumbo_pushes_after_raising_tx_max_length():
    frame = bytes((5 * i) & 0xFF for i in range(9000))
    _model, dev = device()
    key = dev.open("eth")
    with pytest.raises(FrameError, match="tx_max_length"):
        dev.push(key, {}, Pvec.wrap(frame))
    for bad in (0, MAX_FRAME + 1):
        with pytest.raises(ValueError, match="tx_max_length"):
            device(tx_max_length=bad)

    model, dev = device(tx_max_length=9018)
    key = dev.open("eth")
    assert dev.tx_max_length == 9018
    pvec = dev.alloc(len(frame))  # five 2048-byte buffers
    assert len(pvec.chunks) == 5
    offset = 0
    for chunk in pvec.chunks:
        chunk.view[:] = frame[offset:offset + len(chunk.view)]
        offset += len(chunk.view)
    dev.push(key, {"port": 1}, pvec)
    assert dev.stats["tx_copied"] == 0
    assert (model.transmitted[-1].port, model.transmitted[-1].data) == (1, frame)
    dev.ctl(None, "reset")  # the setting survives an engine reset
    assert dev.tx_max_length == 9018
