"""The partner interface: five operations and three buffer operations (paper §3.2, Figure 8).

Every producer or consumer of data — the device, a file, a socket, a pcap file, a code module — is
a `Partner` and offers the same operations:

    open(template, attrs) -> demux key      close(key)
    push(key, attrs, pvec)                  pull(timeout) -> Message | None
    ctl(key, op, *args)                     get / alloc / free  (buffer operations)

plus the batch forms `push_many` and `pull_many`, which are how a Python driver goes fast.

Each partner declares its *mode* (passive: it only answers calls; active: it runs a thread that
calls the other side — a partner may be both) and its *direction* (paper Table 1: data flows in,
out, or both). An operation a partner does not offer raises `UnsupportedOperation` naming the
partner and what it does offer. Demux keys are small integers returned by `open`; they name a
flow on the partner that returned them.

Buffer ownership: a pushed pvec is handed over with its references. A partner that keeps it
(a queue) passes it on; the partner that finally consumes the data (writes it to a file, a socket,
the wire) frees it, which returns pool buffers to their owner. A partner that wants to keep a pvec
it merely looked at takes its own reference with `get` first.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable
from typing import Any, NamedTuple

from .errors import EndOfStream, UnknownKey, UnsupportedOperation, WouldBlock
from .flow import FlowSpec
from .pvec import Pvec

__all__ = ["Direction", "Flow", "Message", "Mode", "Partner"]


class Mode(enum.Flag):
    """Where the thread is (paper §3.3): a passive partner is called, an active one calls."""

    PASSIVE = 1
    ACTIVE = 2


class Direction(enum.Flag):
    """Which way data flows through a partner (paper Table 1): IN takes push, OUT gives pull."""

    IN = 1
    OUT = 2
    BOTH = 3

    def describe(self) -> str:
        return {1: "in", 2: "out", 3: "in/out"}[self.value]


class Message(NamedTuple):
    """One unit of data between partners: the flow's demux key, data attributes, the payload."""

    key: int
    attrs: dict
    pvec: Pvec


class Flow:
    """A flow opened on a partner: its key, its validated spec and its counters."""

    __slots__ = ("bytes", "key", "messages", "spec", "state")

    def __init__(self, key: int, spec: FlowSpec, state: Any = None):
        self.key = key
        self.spec = spec
        self.state = state
        self.messages = 0
        self.bytes = 0

    def count(self, pvec: Pvec) -> None:
        self.messages += 1
        self.bytes += pvec.nbytes

    def __repr__(self):
        return f"Flow({self.key}, {self.spec}, {self.messages} msgs, {self.bytes} bytes)"


class Partner:
    """Base class of every partner.

    Subclasses set `mode` and `direction` and override the operations they offer: `push` and
    `push_many` for IN, `pull` and `pull_many` for OUT, `_open`/`_close` to give a flow its state,
    `ctl_<name>` methods for control operations, and for an active partner `run_source` (a
    thread that pushes into a port) or `run_sink` (a thread that pulls from one).
    """

    mode: Mode = Mode.PASSIVE
    direction: Direction = Direction.BOTH
    #: The template `connect` opens when it is given none.
    default_template: str = "raw"

    def __init__(self, name: str | None = None, *, direction: Direction | None = None, pool=None):
        self.name = name or type(self).__name__
        if direction is not None:
            if direction & ~type(self).direction:
                raise UnsupportedOperation(
                    f"{type(self).__name__} cannot be opened for direction {direction.describe()!r}"
                )
            self.direction = direction
        self.pool = pool
        self.flows: dict[int, Flow] = {}
        self._next_key = 1
        self._lock = threading.Lock()
        # Take away the data operations this instance does not offer, once, so the hot path of the
        # ones it does offer carries no check.
        if not self.direction & Direction.IN:
            self.push = self.push_many = self._refuse_push
        if not self.direction & Direction.OUT:
            self.pull = self.pull_many = self._refuse_pull

    # --- flows -------------------------------------------------------------------------------

    def open(self, template, attrs=None) -> int:
        """Open a flow of a template (``"eth/ipv4/udp"``) and attributes; returns its demux key."""
        spec = FlowSpec.parse(template, attrs)
        with self._lock:
            key = self._next_key
            self._next_key += 1
        flow = Flow(key, spec)
        flow.state = self._open(flow)
        self.flows[key] = flow
        return key

    def close(self, key: int) -> None:
        """Close a flow; its key is unknown afterwards."""
        flow = self.flow(key)
        try:
            self._close(flow)
        finally:
            self.flows.pop(key, None)

    def flow(self, key: int) -> Flow:
        """The open flow of a demux key, or `UnknownKey` saying which keys are open."""
        try:
            return self.flows[key]
        except KeyError:
            raise self._unknown_key(key) from None

    def _unknown_key(self, key) -> UnknownKey:
        known = ", ".join(str(k) for k in list(self.flows)[:8]) or "none"
        return UnknownKey(
            f"demux key {key!r} is not open on partner {self.name!r} (open keys: {known}); "
            "use a key returned by open() and not yet closed"
        )

    def _open(self, flow: Flow) -> Any:
        """Give a new flow its partner-specific state (hook); may raise to refuse the flow."""
        return None

    def _close(self, flow: Flow) -> None:
        """Release a flow's state (hook)."""

    # --- data --------------------------------------------------------------------------------

    def push(self, key: int, attrs: dict, pvec: Pvec) -> None:
        """Hand `pvec` to this partner for flow `key`; `WouldBlock` if it cannot take it now."""
        raise UnsupportedOperation(
            f"partner {self.name!r} ({type(self).__name__}) does not offer push"
        )

    def pull(self, timeout: float | None = 0.0) -> Message | None:
        """Take the next message out of this partner.

        `timeout` 0 polls, None waits for ever, a number waits that long; None is returned when
        nothing came in time. `EndOfStream` is raised when nothing will ever come again, and
        again on every later call.
        """
        raise UnsupportedOperation(
            f"partner {self.name!r} ({type(self).__name__}) does not offer pull"
        )

    def push_many(self, messages: Iterable[Message]) -> int:
        """Push messages in order until one would block; returns how many were taken.

        If a push fails otherwise, the exception carries `taken`, the number of messages taken
        before it, so a caller knows exactly which ones were delivered.
        """
        taken = 0
        push = self.push
        for key, attrs, pvec in messages:
            try:
                push(key, attrs, pvec)
            except WouldBlock:
                break
            except Exception as error:
                error.taken = taken
                raise
            taken += 1
        return taken

    def pull_many(self, max_count: int, timeout: float | None = 0.0) -> list[Message]:
        """Up to `max_count` messages; waits (as `pull` does) only for the first."""
        out = []
        message = self.pull(timeout)
        while message is not None:
            out.append(message)
            if len(out) >= max_count:
                break
            try:
                message = self.pull(0.0)
            except EndOfStream:
                break  # deliver what we have; the next call raises again
        return out

    def _refuse_push(self, *args, **kwargs):
        raise UnsupportedOperation(
            f"partner {self.name!r} is {self.direction.describe()!r}-only: it offers pull, not push"
        )

    def _refuse_pull(self, *args, **kwargs):
        raise UnsupportedOperation(
            f"partner {self.name!r} is {self.direction.describe()!r}-only: it offers push, not pull"
        )

    # --- control -----------------------------------------------------------------------------

    def ctl(self, key: int | None, op: str, *args, **kwargs):
        """Run control operation `op` on flow `key` (None: the partner as a whole).

        Operations are the partner's `ctl_<op>` methods; every partner has `stats`.
        """
        method = getattr(self, f"ctl_{op}", None)
        if method is None:
            raise UnsupportedOperation(
                f"partner {self.name!r} has no control operation {op!r}; "
                f"it offers: {', '.join(self.ctl_operations())}"
            )
        if key is not None:
            self.flow(key)
        return method(key, *args, **kwargs)

    def ctl_operations(self) -> list[str]:
        return sorted(name[4:] for name in dir(self) if name.startswith("ctl_"))

    def ctl_stats(self, key: int | None = None) -> dict:
        """Counters of one flow, or of every open flow."""
        flows = [self.flow(key)] if key is not None else list(self.flows.values())
        return {
            f.key: {"flow": str(f.spec), "messages": f.messages, "bytes": f.bytes} for f in flows
        }

    # --- buffer operations ---------------------------------------------------------------------

    def alloc(self, nbytes: int | None = None) -> Pvec:
        """A pvec of this partner's memory, ready to be filled (from its pool if it has one)."""
        if self.pool is not None:
            return self.pool.alloc(nbytes)
        return Pvec.wrap(bytearray(nbytes or 0), owner=self)

    def get(self, pvec: Pvec) -> Pvec:
        """Keep `pvec` beyond the call that delivered it: one more reference on its buffers."""
        return pvec.get()

    def free(self, pvec: Pvec) -> None:
        """Give `pvec`'s buffers back to their owners."""
        pvec.free()

    # --- active side ---------------------------------------------------------------------------

    def run_source(self, port, stop: threading.Event) -> None:
        """The thread of an active producer: push messages into `port` until `stop` or the end."""
        raise UnsupportedOperation(f"partner {self.name!r} has no active source side")

    def run_sink(self, port, stop: threading.Event) -> None:
        """The thread of an active consumer: pull messages from `port` until `stop` or the end."""
        raise UnsupportedOperation(f"partner {self.name!r} has no active sink side")

    # --- life cycle ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Close every flow and release the partner's resources (files, sockets, devices)."""
        for key in list(self.flows):
            self.close(key)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def __repr__(self):
        mode = "active+passive" if self.mode == Mode.ACTIVE | Mode.PASSIVE else self.mode.name
        return f"<{type(self).__name__} {self.name!r} {mode.lower()} {self.direction.describe()}>"
