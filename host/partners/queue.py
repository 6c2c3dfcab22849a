"""Queue and transform partners: passive on both sides.

`QueuePartner` is the converter the paper's modus operandi needs (§3.3): two partners that are both
active each want to call the other, so neither can be called; a queue between them is called by
both. It bounds what it holds (messages and bytes) and pushes back with `WouldBlock` when full, so
a fast producer slows down instead of losing data.

A queue is one pipe: the producer's binding and the consumer's binding both open the same flow on
it, and opening an equal flow spec twice returns the same demux key, so a message keeps its key
from one side to the other. When every producer has closed a flow and the queue has drained,
`pull` raises `EndOfStream` and the consumer's binding ends cleanly.

`TransformPartner` is the paper's "code module" (Table 1, Scout/Geni): a queue that applies a
Python callable to each message on the way in.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from ..errors import EndOfStream, WouldBlock
from ..partner import Direction, Flow, Message, Mode, Partner
from ..pvec import Pvec

__all__ = ["QueuePartner", "TransformPartner"]


class QueuePartner(Partner):
    """A bounded FIFO of messages; push in on one side, pull out on the other."""

    mode = Mode.PASSIVE
    direction = Direction.BOTH

    def __init__(self, name: str = "queue", *, max_messages: int = 1024, max_bytes: int = 64 << 20):
        super().__init__(name)
        if max_messages <= 0 or max_bytes <= 0:
            raise ValueError("a queue needs room for at least one message and one byte")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self._queue: deque[Message] = deque()
        self._ready = threading.Condition()
        self._opens: dict[int, int] = {}  # key -> open() calls not yet closed
        self._queued: dict[int, int] = {}  # key -> messages of that flow in the queue
        self._ended: set[int] = set()  # keys whose producer has closed them

    def __len__(self):
        return len(self._queue)

    # A producer and a consumer open the same spec: give them the same key. The first close ends
    # the flow for producers; the flow goes away once everybody who opened it has closed it and
    # its last queued message has been pulled.
    def open(self, template, attrs=None) -> int:
        with self._ready:
            candidate = Partner.open(self, template, attrs)
            spec = self.flows[candidate].spec
            for key, flow in self.flows.items():
                if key != candidate and flow.spec == spec:
                    del self.flows[candidate]
                    self._opens[key] += 1
                    return key
            self._opens[candidate] = 1
            self._queued[candidate] = 0
            return candidate

    def close(self, key: int) -> None:
        with self._ready:
            self.flow(key)
            self._opens[key] -= 1
            self._ended.add(key)
            self._forget_if_done(key)
            self._ready.notify_all()

    def _forget_if_done(self, key: int) -> None:
        if self._opens.get(key, 1) <= 0 and not self._queued.get(key):
            del self._opens[key], self._queued[key], self.flows[key]
            self._ended.discard(key)

    def push(self, key: int, attrs: dict, pvec: Pvec) -> None:
        flow = self.flows.get(key)
        if flow is None or key in self._ended:
            raise self._unknown_key(key)
        with self._ready:
            if self._full(pvec.nbytes):
                raise WouldBlock(f"queue {self.name!r} is full")
            self._enqueue(flow, Message(key, attrs, pvec))

    def _full(self, nbytes: int) -> bool:
        # An empty queue takes any one message, however large: never a dead lock.
        return bool(self._queue) and (
            len(self._queue) >= self.max_messages or self.queued_bytes + nbytes > self.max_bytes
        )

    def _enqueue(self, flow: Flow, message: Message) -> None:
        self._queue.append(message)
        self._queued[message.key] += 1
        self.queued_bytes += message.pvec.nbytes
        flow.count(message.pvec)
        self._ready.notify()

    def pull(self, timeout: float | None = 0.0) -> Message | None:
        with self._ready:
            if not self._queue:
                if self._all_ended():
                    raise EndOfStream(f"queue {self.name!r}: every producer has closed")
                if timeout == 0.0:
                    return None
                self._ready.wait_for(lambda: self._queue or self._all_ended(), timeout)
                if not self._queue:
                    if self._all_ended():
                        raise EndOfStream(f"queue {self.name!r}: every producer has closed")
                    return None
            message = self._queue.popleft()
            self.queued_bytes -= message.pvec.nbytes
            self._queued[message.key] -= 1
            if message.key in self._ended:
                self._forget_if_done(message.key)
            return message

    def _all_ended(self) -> bool:
        return bool(self._ended) and all(key in self._ended for key in self.flows)

    def ctl_stats(self, key=None) -> dict:
        stats = super().ctl_stats(key)
        stats["queued"] = {"messages": len(self._queue), "bytes": self.queued_bytes}
        return stats


class TransformPartner(QueuePartner):
    """A code module: `function(message)` runs on each pushed message.

    The function returns a `Message` (which may carry a more specific demux key, one opened on this
    partner: demux propagation), a `Pvec` (same key and attributes), or None to filter the message
    out, which is counted per flow in `filtered`.
    """

    def __init__(self, function: Callable[[Message], Message | Pvec | None], name=None, **kwargs):
        super().__init__(name or getattr(function, "__name__", "transform"), **kwargs)
        self.function = function
        self.filtered: dict[int, int] = {}

    def _open(self, flow: Flow):
        self.filtered.setdefault(flow.key, 0)

    def push(self, key: int, attrs: dict, pvec: Pvec) -> None:
        if key not in self.flows or key in self._ended:
            raise self._unknown_key(key)
        # Refuse before running the function, so a retried push never runs it twice.
        with self._ready:
            if self._full(pvec.nbytes):
                raise WouldBlock(f"transform {self.name!r}: its output queue is full")
        result = self.function(Message(key, attrs, pvec))
        if result is None:
            self.filtered[key] = self.filtered.get(key, 0) + 1
            return
        if isinstance(result, Pvec):
            result = Message(key, attrs, result)
        elif not isinstance(result, Message):
            raise TypeError(
                f"transform {self.name!r} returned {type(result).__name__}; "
                "return a Message, a Pvec or None"
            )
        flow = self.flows.get(result.key)
        if flow is None:
            raise self._unknown_key(result.key)
        with self._ready:
            self._enqueue(flow, result)

    def ctl_stats(self, key=None) -> dict:
        stats = super().ctl_stats(key)
        stats["filtered"] = dict(self.filtered)
        return stats
