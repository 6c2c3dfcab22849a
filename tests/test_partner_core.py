"""The partner base class, the queue and transform partners, and `connect`."""

import threading
import time

import pytest

from partner import (
    BindError,
    Direction,
    EndOfStream,
    FlowAttributeError,
    FlowTemplateError,
    Message,
    Mode,
    Partner,
    PeerLost,
    Pvec,
    QueuePartner,
    TransformPartner,
    UnknownKey,
    UnsupportedOperation,
    WouldBlock,
    connect,
)


class ListSource(Partner):
    """A passive source of given payloads, on every flow opened in turn."""

    direction = Direction.OUT

    def __init__(self, payloads, name="list"):
        super().__init__(name)
        self.payloads = list(payloads)

    def pull(self, timeout=0.0):
        if not self.payloads:
            raise EndOfStream("list exhausted")
        key = next(iter(self.flows))
        return Message(key, {"n": len(self.payloads)}, Pvec.wrap(self.payloads.pop(0)))


class ListSink(Partner):
    """A passive sink that accepts `room` messages, then pushes back until `drain()`."""

    direction = Direction.IN

    def __init__(self, room=None, fail_after=None, name="sink"):
        super().__init__(name)
        self.received = []
        self.room = room
        self.fail_after = fail_after

    def push(self, key, attrs, pvec):
        self.flow(key)
        if self.fail_after is not None and len(self.received) >= self.fail_after:
            raise PeerLost("sink went away")
        if self.room is not None:
            if self.room == 0:
                raise WouldBlock("full")
            self.room -= 1
        self.received.append((key, pvec.tobytes()))


class ActiveSource(Partner):
    """An active producer: its own thread pushes into the port."""

    mode = Mode.ACTIVE
    direction = Direction.OUT

    def __init__(self, count):
        super().__init__("active-source")
        self.count = count

    def run_source(self, port, stop):
        key = next(iter(self.flows))
        for i in range(self.count):
            if stop.is_set():
                return
            port.push(key, {}, Pvec.wrap(i.to_bytes(4, "little")))


class ActiveSink(Partner):
    mode = Mode.ACTIVE
    direction = Direction.IN

    def __init__(self):
        super().__init__("active-sink")
        self.received = []

    def run_sink(self, port, stop):
        while not stop.is_set():
            message = port.pull(0.05)
            if message is not None:
                self.received.append(message.pvec.tobytes())


def test_open_returns_keys_and_close_forgets_them():
    sink = ListSink()
    a = sink.open("eth/ipv4/udp", {"dst_port": 53})
    b = sink.open("eth/ipv6/tcp", "dst_port=80,priority=3")
    assert a != b
    assert str(sink.flow(a).spec).startswith("eth/ipv4/udp")
    sink.close(a)
    with pytest.raises(UnknownKey, match=f"demux key {a} is not open on partner 'sink'"):
        sink.push(a, {}, Pvec.wrap(b"x"))
    with pytest.raises(UnknownKey):
        sink.close(a)
    with pytest.raises(UnknownKey, match="open keys: " + str(b)):
        sink.ctl(99, "stats")


def test_open_validates_template_and_attributes():
    sink = ListSink()
    with pytest.raises(FlowTemplateError, match="udp"):
        sink.open("eth/udp")
    with pytest.raises(FlowAttributeError, match="dst_port"):
        sink.open("eth/ipv4/udp", {"dst_port": 70000})
    assert not sink.flows


def test_operations_not_offered_raise_clear_errors():
    sink, source = ListSink(), ListSource([])
    with pytest.raises(UnsupportedOperation, match="'in'-only: it offers push, not pull"):
        sink.pull()
    with pytest.raises(UnsupportedOperation, match="'out'-only: it offers pull, not push"):
        source.push(1, {}, Pvec())
    with pytest.raises(UnsupportedOperation, match=r"no control operation 'reset'.*stats"):
        sink.ctl(None, "reset")
    with pytest.raises(UnsupportedOperation, match="no active source"):
        sink.run_source(None, threading.Event())

    class OutOnly(Partner):
        direction = Direction.OUT

    with pytest.raises(UnsupportedOperation, match="cannot be opened for direction 'in'"):
        OutOnly(direction=Direction.IN)


def test_queue_is_bounded_and_pushes_back():
    queue = QueuePartner(max_messages=2, max_bytes=1 << 20)
    key = queue.open("raw")
    queue.push(key, {}, Pvec.wrap(b"a"))
    queue.push(key, {}, Pvec.wrap(b"b"))
    with pytest.raises(WouldBlock):
        queue.push(key, {}, Pvec.wrap(b"c"))
    assert queue.pull().pvec == b"a"
    queue.push(key, {}, Pvec.wrap(b"c"))
    assert [m.pvec.tobytes() for m in queue.pull_many(10)] == [b"b", b"c"]
    assert queue.pull(0.01) is None


def test_queue_byte_limit_admits_one_oversized_message_when_empty():
    queue = QueuePartner(max_bytes=10)
    key = queue.open("raw")
    queue.push(key, {}, Pvec.wrap(bytes(100)))
    with pytest.raises(WouldBlock):
        queue.push(key, {}, Pvec.wrap(b"x"))


def test_queue_shares_key_between_producer_and_consumer_and_ends():
    queue = QueuePartner()
    producer_key = queue.open("eth", None)
    consumer_key = queue.open("eth", None)
    assert producer_key == consumer_key
    queue.push(producer_key, {}, Pvec.wrap(b"x"))
    queue.close(producer_key)  # the producer is done
    assert queue.pull().pvec == b"x"
    with pytest.raises(EndOfStream):
        queue.pull(1.0)


def test_pump_moves_everything_between_two_passive_partners():
    payloads = [bytes([i]) * (i + 1) for i in range(50)]
    source, sink = ListSource(payloads), ListSink()
    binding = connect(source, sink).wait(5)
    assert [data for _, data in sink.received] == payloads
    assert binding.messages == 50
    assert not source.flows and not sink.flows  # the binding closed its flows at the end


def test_backpressure_delays_but_loses_nothing():
    payloads = [bytes([i]) for i in range(20)]
    sink = ListSink(room=3)
    binding = connect(ListSource(payloads), sink)
    time.sleep(0.05)
    assert len(sink.received) == 3 and binding.running
    sink.room = None
    binding.wait(5)
    assert [d for _, d in sink.received] == payloads


def test_peer_lost_reports_undelivered_messages():
    payloads = [bytes([i]) * 10 for i in range(10)]
    sink = ListSink(fail_after=4)
    binding = connect(ListSource(payloads), sink, batch=3)
    with pytest.raises(PeerLost, match=r"after 4 messages: sink went away.*not delivered"):
        binding.wait(5)
    delivered = len(sink.received)
    undelivered = [m.pvec.tobytes() for m in binding.undelivered]
    # Everything taken from the source is either delivered or reported.
    assert delivered == 4
    assert [d for _, d in sink.received] + undelivered == payloads[: delivered + len(undelivered)]
    assert len(undelivered) >= 1


def test_active_source_thread_pushes_through_the_port():
    sink = ListSink()
    connect(ActiveSource(100), sink).wait(5)
    assert [int.from_bytes(d, "little") for _, d in sink.received] == list(range(100))


def test_active_sink_thread_pulls_through_the_port():
    sink = ActiveSink()
    binding = connect(ListSource([b"a", b"b", b"c"]), sink)
    deadline = time.monotonic() + 5
    while len(sink.received) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    binding.stop()
    assert sink.received == [b"a", b"b", b"c"]


def test_two_active_partners_need_a_queue():
    with pytest.raises(BindError, match="QueuePartner"):
        connect(ActiveSource(1), ActiveSink())
    queue = QueuePartner()
    sink = ActiveSink()
    first = connect(ActiveSource(10), queue)
    second = connect(queue, sink)
    first.wait(5)
    deadline = time.monotonic() + 5
    while len(sink.received) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    second.stop()
    assert [int.from_bytes(d, "little") for d in sink.received] == list(range(10))


def test_binding_refuses_wrong_directions():
    with pytest.raises(BindError, match="'in'-only"):
        connect(ListSink(), ListSink())
    with pytest.raises(BindError, match="'out'-only"):
        connect(ListSource([]), ListSource([]))


def test_transform_filters_and_propagates_a_more_specific_key():
    def by_parity(message):
        if message.pvec.nbytes == 0:
            return None
        key = odd_key if message.pvec[0] % 2 else message.key
        return Message(key, message.attrs, message.pvec)

    transform = TransformPartner(by_parity, name="parity")
    odd_key = transform.open("raw", {"name": "odd"})
    connect(ListSource([bytes([i]) for i in range(6)] + [b""]), transform).wait(5)
    transform.close(odd_key)  # nothing more will be handed on under the odd key
    sink = ListSink()
    second = connect(transform, sink, flows=[("raw", None), ("raw", {"name": "odd"})])
    second.wait(5)
    odd_route = second.route[odd_key]
    keys = {data: key for key, data in sink.received}
    assert {keys[bytes([i])] for i in (1, 3, 5)} == {odd_route}
    assert {keys[bytes([i])] for i in (0, 2, 4)} != {odd_route}
    assert sum(transform.filtered.values()) == 1
    assert transform.ctl(None, "stats")["filtered"]


def test_transform_does_not_run_twice_on_a_refused_push():
    calls = []
    transform = TransformPartner(lambda m: calls.append(1) or m.pvec, max_messages=1)
    key = transform.open("raw")
    transform.push(key, {}, Pvec.wrap(b"1"))
    with pytest.raises(WouldBlock):
        transform.push(key, {}, Pvec.wrap(b"2"))
    assert len(calls) == 1


def test_buffer_ops_of_a_partner_use_its_pool():
    from partner import BufferPool

    sink = ListSink()
    sink.pool = BufferPool(2, 64, owner=sink)
    pvec = sink.alloc(100)
    assert pvec.count == 2 and all(c.owner is sink for c in pvec.chunks)
    sink.get(pvec)
    sink.free(pvec)
    assert sink.pool.available == 0
    sink.free(pvec)
    assert sink.pool.available == 2


def test_active_source_into_failing_sink_reports_the_lost_message():
    sink = ListSink(fail_after=3)
    binding = connect(ActiveSource(10), sink)
    with pytest.raises(PeerLost, match=r"after 3 messages: sink went away; 1 message\(s\)"):
        binding.wait(5)
    assert [m.pvec.tobytes() for m in binding.undelivered] == [(3).to_bytes(4, "little")]
