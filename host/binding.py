"""Binding two partners: `connect(src, dst)`, the paper's `pdriverInit` (§3.3).

A binding moves data one way, out of `src` and into `dst`, and owns the one thread that does so.
Whose thread that is follows the paper's modus operandi: if `src` is active, its own thread pushes;
if only `dst` is active, its thread pulls; if both are passive, the binding's pump is the active
side. Two partners that are active and nothing else cannot be bound directly: put a
`QueuePartner` (passive on both sides) between them.

Flows and demux propagation: for each flow spec the binding opens the flow on both partners and
keeps `route[src_key] = dst_key`. A message that leaves `src` with key k enters `dst` with
`route[k]` — one table look-up, so classification done by `src` (a device's flow table, say) is
never redone by `dst`. A `src` that demultiplexes further may hand on a more specific key by
opening it through `Binding.add_flow` first.

Nothing is lost silently. Backpressure (`WouldBlock`) makes the binding wait and retry the same
message. If a partner fails or vanishes, the binding stops, keeps the messages it had taken but
could not deliver in `undelivered`, and `wait()` raises `PeerLost` saying how many.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from .errors import BindError, EndOfStream, PartnerError, PeerLost, UnknownKey, WouldBlock
from .flow import FlowSpec
from .partner import Direction, Message, Mode, Partner

__all__ = ["Binding", "Port", "connect"]

_BACKOFF_MIN = 20e-6
_BACKOFF_MAX = 5e-3


class Stopped(Exception):
    """Raised inside a port when the binding was asked to stop while waiting."""


class Port:
    """What an active partner's thread sees of the other side of a binding.

    `push(key, attrs, pvec)` forwards to the destination under the routed key, waiting while it
    pushes back; `pull(timeout)` takes from the source and re-keys the message.
    """

    __slots__ = ("_binding", "_dst_push", "_route", "_src_pull", "_stop", "messages")

    def __init__(self, binding: Binding):
        self._binding = binding
        self._route = binding.route
        self._dst_push = binding.dst.push
        self._src_pull = binding.src.pull
        self._stop = binding._stop
        self.messages = 0  # delivered through this port

    # The hot path of an active source: one route look-up, one call, one counter. Keep it so;
    # bench/pvec.py holds it to at most twice the cost of a direct method call.
    def push(self, key: int, attrs: dict, pvec) -> None:
        try:
            self._dst_push(self._route[key], attrs, pvec)
        except WouldBlock:
            self._push_slow(self._route[key], attrs, pvec)
        except KeyError:
            if key not in self._route:
                self._binding.undelivered.append(Message(key, attrs, pvec))
                raise UnknownKey(
                    f"{self._binding}: message with demux key {key!r}, which no flow of this "
                    "binding opened"
                ) from None
            self._binding.undelivered.append(Message(self._route[key], attrs, pvec))
            raise  # the destination's own error
        except Exception:
            self._binding.undelivered.append(Message(self._route[key], attrs, pvec))
            raise
        self.messages += 1

    def _push_slow(self, dst_key, attrs, pvec) -> None:
        delay = _BACKOFF_MIN
        while True:
            if self._stop.wait(delay):
                self._binding.undelivered.append(Message(dst_key, attrs, pvec))
                raise Stopped
            try:
                self._dst_push(dst_key, attrs, pvec)
                return
            except WouldBlock:
                delay = min(delay * 2, _BACKOFF_MAX)
            except Exception:
                self._binding.undelivered.append(Message(dst_key, attrs, pvec))
                raise

    def undeliverable(self, message: Message) -> None:
        """An active sink hands back a message it pulled but could not deliver.

        It is kept in `Binding.undelivered` and no longer counted as delivered.
        """
        self._binding.undelivered.append(message)
        self.messages -= 1

    def pull(self, timeout: float | None = 0.0) -> Message | None:
        message = self._src_pull(timeout)
        if message is None:
            return None
        key, attrs, pvec = message
        try:
            dst_key = self._route[key]
        except KeyError:
            self._binding.undelivered.append(message)
            raise UnknownKey(
                f"{self._binding}: message with demux key {key!r}, which no flow of this binding "
                "opened"
            ) from None
        self.messages += 1
        return Message(dst_key, attrs, pvec)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()


class Binding:
    """A one-way binding of `src` to `dst` and the thread that moves the data."""

    def __init__(self, src: Partner, dst: Partner, *, batch: int = 64, close_flows: bool = True):
        if not src.direction & Direction.OUT:
            raise BindError(f"cannot bind: source {src.name!r} is 'in'-only, it offers no pull")
        if not dst.direction & Direction.IN:
            raise BindError(
                f"cannot bind: destination {dst.name!r} is 'out'-only, it offers no push"
            )
        self.src = src
        self.dst = dst
        self.batch = batch
        self.close_flows = close_flows
        self.route: dict[int, int] = {}
        self.undelivered: list[Message] = []
        self.error: BaseException | None = None
        self.finished = False
        self._stop = threading.Event()
        self.port = Port(self)
        self._thread: threading.Thread | None = None
        self._driver = self._choose_driver()

    def __str__(self):
        return f"binding {self.src.name!r} -> {self.dst.name!r}"

    def _choose_driver(self):
        src_active = bool(self.src.mode & Mode.ACTIVE)
        dst_active = bool(self.dst.mode & Mode.ACTIVE)
        src_passive = bool(self.src.mode & Mode.PASSIVE)
        dst_passive = bool(self.dst.mode & Mode.PASSIVE)
        if src_active and dst_passive:
            return self._run_src_thread
        if dst_active and src_passive:
            return self._run_dst_thread
        if src_passive and dst_passive:
            return self._pump
        raise BindError(
            f"cannot bind {self.src.name!r} to {self.dst.name!r}: both are active only, neither "
            "can be called; put a QueuePartner between them"
        )

    # --- flows ---------------------------------------------------------------------------------

    def add_flow(self, template, attrs=None) -> tuple[int, int]:
        """Open one flow on both partners and route it; returns (src_key, dst_key)."""
        spec = FlowSpec.parse(template, attrs)
        src_key = self.src.open(spec.template, spec.attrs)
        try:
            dst_key = self.dst.open(spec.template, spec.attrs)
        except BaseException:
            self.src.close(src_key)
            raise
        self.route[src_key] = dst_key
        return src_key, dst_key

    # --- running -------------------------------------------------------------------------------

    def start(self) -> Binding:
        if self._thread is not None:
            raise BindError(f"{self} is already started")
        if not self.route:
            raise BindError(f"{self} has no flow: add_flow() before start()")
        self._thread = threading.Thread(target=self._main, name=str(self), daemon=True)
        self._thread.start()
        return self

    def run(self) -> Binding:
        """Move data in the calling thread until the source ends; raise what went wrong."""
        if not self.route:
            raise BindError(f"{self} has no flow: add_flow() before run()")
        self._main()
        self._raise_error()
        return self

    def stop(self, timeout: float | None = 5.0) -> Binding:
        """Ask the thread to stop after the message in hand, and wait for it."""
        self._stop.set()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> Binding:
        """Wait until the data flow ends; raise the error that ended it, if any."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"{self} still running after {timeout} s")
        self._raise_error()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _raise_error(self):
        if self.error is None:
            return
        lost = len(self.undelivered)
        lost_bytes = sum(m.pvec.nbytes for m in self.undelivered)
        raise PeerLost(
            f"{self} stopped after {self.messages} messages: {self.error}; "
            f"{lost} message(s) ({lost_bytes} bytes) taken from the source were not delivered "
            "and are kept in Binding.undelivered"
        ) from self.error

    @property
    def messages(self) -> int:
        """Messages delivered to the destination so far."""
        return self.port.messages

    def _account(self, pvec) -> None:
        self.port.messages += 1

    def _main(self) -> None:
        try:
            self._driver()
        except (EndOfStream, Stopped):
            pass
        except (PartnerError, OSError) as error:
            self.error = error
        except BaseException as error:  # a bug in a partner: report it, never die silently
            self.error = error
        finally:
            self.finished = True
            if self.close_flows:
                self._close_flows()

    def _close_flows(self) -> None:
        for src_key, dst_key in list(self.route.items()):
            for partner, key in ((self.src, src_key), (self.dst, dst_key)):
                if key in partner.flows:
                    try:
                        partner.close(key)
                    except (PartnerError, OSError) as error:
                        if self.error is None:
                            self.error = error

    def _run_src_thread(self) -> None:
        self.src.run_source(self.port, self._stop)

    def _run_dst_thread(self) -> None:
        self.dst.run_sink(self.port, self._stop)

    def _pump(self) -> None:
        """Both sides passive: the binding is the active side, in batches."""
        src, dst, route, stop, batch = self.src, self.dst, self.route, self._stop, self.batch
        while not stop.is_set():
            messages = src.pull_many(batch, 0.05)
            if not messages:
                continue
            try:
                routed = [Message(route[k], a, p) for k, a, p in messages]
            except KeyError as error:
                self.undelivered.extend(messages)
                raise UnknownKey(
                    f"{self}: message with demux key {error.args[0]!r}, which no flow of this "
                    "binding opened"
                ) from None
            self._deliver(dst, routed)

    def _deliver(self, dst: Partner, routed: list[Message]) -> None:
        done = 0
        delay = _BACKOFF_MIN
        try:
            while done < len(routed):
                taken = dst.push_many(routed[done:] if done else routed)
                for message in routed[done : done + taken]:
                    self._account(message.pvec)
                done += taken
                if done < len(routed):
                    if self._stop.wait(delay):
                        raise Stopped
                    delay = min(delay * 2, _BACKOFF_MAX)
                else:
                    delay = _BACKOFF_MIN
        except BaseException as error:
            taken = getattr(error, "taken", 0)
            for message in routed[done : done + taken]:
                self._account(message.pvec)
            self.undelivered.extend(routed[done + taken :])
            raise


def connect(
    src: Partner,
    dst: Partner,
    *,
    flows: Iterable | None = None,
    template=None,
    attrs=None,
    start: bool = True,
    batch: int = 64,
) -> Binding:
    """Bind `src` to `dst` and (by default) start moving data.

    `flows` is a list of `(template, attrs)` pairs or `FlowSpec`s to open on both partners; without
    it one flow of `template` (default: the source's `default_template`) and `attrs` is opened.
    """
    binding = Binding(src, dst, batch=batch)
    try:
        if flows is None:
            flows = [(template or src.default_template, attrs)]
        for flow in flows:
            if isinstance(flow, FlowSpec):
                binding.add_flow(flow.template, flow.attrs)
            else:
                binding.add_flow(*flow)
    except BaseException:
        binding._close_flows()
        raise
    if start:
        binding.start()
    return binding
