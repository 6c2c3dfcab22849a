"""`PcieDevice`: the device as a partner over PCIe, written against the abstract `PcieBus`.

The five operations map onto the device like this (docs/dma.md has the full story):

- `open(template, attrs)` compiles the flow spec into flow-table entries (`partner.rules`) whose
  action delivers to one host queue tagged with the flow's own demux key, gives the flow a queue
  quota (`queue_limit`, `priority`, `weight`) and a TX flow on every port, all through the core's
  registers (`partner.device_control.DeviceControl` on the BAR0 core window).
- `pull`/`pull_many` read RX completions. A message's pvec points straight into the DMA buffers
  the device wrote (zero copy); its chunks' aggregates are the pool's `Buffer`s, so freeing the
  pvec returns them to the pool, from which the free rings are refilled.
- `push`/`push_many` post TX descriptors. Chunks in this device's buffers (`alloc`) go as they
  are; a pvec with a chunk from anywhere else, or more chunks than the device takes, is copied
  into fresh DMA buffers first (and freed, as consumed). The pvec is freed when its TX
  completion comes back.
- `ctl(None, "events")` drains the event ring; `stats`, `moderation`, `polling`, `reset`,
  `buffers`, `counters`, `threshold` are the other control operations.

Doorbells are rung once per ring per call, so `pull_many(256)` costs two register writes per ring
where 256 `pull()`s cost 512: that and the per-call overhead is the batch speed-up.

Not thread-safe: one thread drives a device (a `Binding` does).
"""

from __future__ import annotations

import ctypes
import dataclasses
import itertools

from ..buffers import Buffer, BufferPool
from ..device_control import DeviceControl, DeviceError
from ..errors import BufferOpError, FlowAttributeError, PartnerError, WouldBlock
from ..formats import MAX_FRAME, ActionKind
from ..partner import Direction, Flow, Message, Mode, Partner
from ..pvec import Chunk, Pvec
from ..rules import Rule, RuleTable
from .bar import BAR0
from .bus import PcieBus
from .codec import Codec
from .formats import (
    DMA_CONFIG,
    DMA_CONTROL,
    DMA_FORMAT_VERSION,
    DMA_IDENT,
    DMA_REGISTERS,
    EVENT_ENTRY,
    IRQ_CONFIG,
    RING_SIZE,
    RX_COMPLETION,
    RX_FREE,
    TX_COMPLETION,
    TX_DESCRIPTOR,
    DmaCounter,
    DmaEvent,
    RxStatus,
    TxFlag,
    TxStatus,
)
from .rings import CompletionRing, DescriptorRing

__all__ = ["FrameError", "PcieDevice"]

_FREE = Codec(RX_FREE)  # address, length, more
_TXD = Codec(TX_DESCRIPTOR)  # address, length, more, port, flow, demux_key, total_length, attrs
_RXC = Codec(RX_COMPLETION, ["phase", "length", "desc_index", "chunks", "chunks_used", "status",
                             "demux_key", "flags", "in_port", "rule", "hit"])
_TXC = Codec(TX_COMPLETION, ["phase", "desc_index", "chunks", "status"])
_EVT = Codec(EVENT_ENTRY, ["phase", "kind", "unit", "count", "status", "index", "value"])
_MAX_CHUNK = (1 << TX_DESCRIPTOR["length"].width) - 1
_RESET_POLLS = 1000


class FrameError(PartnerError, ValueError):
    """A pvec the device cannot send: empty, or longer than its `tx_max_length`."""


class _Window:
    """A `RegisterBus` for one BAR0 window."""

    __slots__ = ("base", "bus")

    def __init__(self, bus: PcieBus, base: int):
        self.bus, self.base = bus, base

    def read32(self, offset: int) -> int:
        return self.bus.read32(self.base + offset)

    def write32(self, offset: int, value: int) -> None:
        self.bus.write32(self.base + offset, value)


@dataclasses.dataclass
class _FlowState:
    rule_id: int
    indices: tuple[int, ...]
    queue: int
    tx_flow: int
    port: int
    tx_frames: int = 0
    tx_bytes: int = 0


def _address_of(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def _copy(source: Pvec, target: Pvec) -> None:
    """Copy the payload of `source` into the chunks of `target` (as long as `source`)."""
    targets = iter(target.chunks)
    out = next(targets).view
    at = 0
    for chunk in source.chunks:
        view, pos = chunk.view, 0
        while pos < len(view):
            if at == len(out):
                out, at = next(targets).view, 0
            n = min(len(view) - pos, len(out) - at)
            out[at:at + n] = view[pos:pos + n]
            at += n
            pos += n


class PcieDevice(Partner):
    """The device behind `bus` as a passive in/out partner.

    Rings: `rx_log2` entries per RX free and completion ring (one per host queue and the slow
    path), `tx_log2` for the TX ring, `event_log2` for events. Buffers: `buffers` DMA buffers of
    `buffer_size` bytes (default: enough to fill every ring twice over); the device gets empty
    pvecs of `rx_chunks` buffers. Interrupts: `rx_moderation`/`tx_moderation` are (frames,
    microseconds) thresholds; `polling` never uses interrupts. `queue_limit` is the RX queue quota
    of a flow that does not give one. `tx_max_length` (bytes, up to `MAX_FRAME`) raises or lowers
    the longest pvec the device sends (its register of that name; 1522 after reset), for jumbo
    frames.
    """

    mode = Mode.PASSIVE
    direction = Direction.BOTH
    default_template = "eth"

    def __init__(self, bus: PcieBus, *, name: str = "pcie", rx_log2: int = 9, tx_log2: int = 9,
                 event_log2: int = 7, buffer_size: int = 2048, buffers: int | None = None,
                 rx_chunks: int = 1, polling: bool = False,
                 rx_moderation: tuple[int, int] = (32, 50),
                 tx_moderation: tuple[int, int] = (64, 200), queue_limit: int = 64 * 1024,
                 poll_interval: float = 50e-6, tx_max_length: int | None = None):
        super().__init__(name)
        if tx_max_length is not None and not 1 <= tx_max_length <= MAX_FRAME:
            raise ValueError(f"tx_max_length {tx_max_length}: the device sends frames of "
                             f"1..{MAX_FRAME} bytes")
        self._tx_max_length = tx_max_length
        self.bus = bus
        self.core = DeviceControl(_Window(bus, BAR0.core.offset))
        self._dma = _Window(bus, BAR0.dma.offset)
        ident, version = self._read("ident"), self._read("version")
        if ident != DMA_IDENT or version != DMA_FORMAT_VERSION:
            raise DeviceError(f"the DMA engine reads ident {ident:#010x} version {version}; this "
                              f"driver speaks {DMA_IDENT:#010x} version {DMA_FORMAT_VERSION}")
        config = DMA_CONFIG.unpack(self._read("config"))
        self.max_chunks = config["max_chunks"]
        queues = self.core.queues + 1  # the slow-path queue is the last ring
        if config["rx_rings"] < queues or config["tx_rings"] < 1:
            raise DeviceError(f"the DMA engine has {config['rx_rings']} RX and "
                              f"{config['tx_rings']} TX rings; the core needs {queues} and 1")
        for what, log2 in (("rx_log2", rx_log2), ("tx_log2", tx_log2),
                           ("event_log2", event_log2)):
            if not 1 <= log2 <= config["max_ring_log2"]:
                raise ValueError(f"{what} = {log2}: this device's rings have 2**1 .. "
                                 f"2**{config['max_ring_log2']} entries")
        if not 64 <= buffer_size <= _MAX_CHUNK:
            raise ValueError(f"buffer_size {buffer_size}: a DMA buffer holds 64..{_MAX_CHUNK} "
                             "bytes (one TX descriptor's length)")
        if not 1 <= rx_chunks <= min(self.max_chunks, 1 << rx_log2):
            raise ValueError(f"rx_chunks {rx_chunks}: the device takes 1..{self.max_chunks} "
                             "chunks per pvec")
        self.rx_chunks = rx_chunks
        self.queue_limit = queue_limit
        self.poll_interval = poll_interval
        self.vectors = self._vectors(bus.irq_vectors)
        self.polling = polling or self.vectors is None
        self.moderation = {"rx": rx_moderation, "tx": tx_moderation, "event": (1, 0)}

        rings = queues * (1 << rx_log2) + (1 << tx_log2)
        count = buffers if buffers is not None else 2 * rings
        if count < queues * rx_chunks:
            raise ValueError(f"{count} buffers cannot give each of {queues} queues one pvec")
        self._pool_memory = bus.alloc_dma(count * buffer_size, 4096)
        self.pool = BufferPool(count, buffer_size, memory=self._pool_memory.view, owner=self,
                               name=name)
        self._pool_base = _address_of(self._pool_memory.view)
        self._pool_bus = self._pool_memory.address

        self.rx = [(DescriptorRing(bus, rx_log2, _FREE, f"rx{q}.free"),
                    CompletionRing(bus, rx_log2, _RXC, f"rx{q}.cpl")) for q in range(queues)]
        self.tx = (DescriptorRing(bus, tx_log2, _TXD, "tx0"),
                   CompletionRing(bus, tx_log2, _TXC, "tx0.cpl"))
        self.event_ring = CompletionRing(bus, event_log2, _EVT, "events")
        offset = BAR0.dma.offset
        self._rx_tail = [offset + DMA_REGISTERS["rx_tail"].address(q) for q in range(queues)]
        self._rx_cpl_head = [offset + DMA_REGISTERS["rx_cpl_head"].address(q)
                             for q in range(queues)]
        self._tx_tail = offset + DMA_REGISTERS["tx_tail"].address(0)
        self._tx_cpl_head = offset + DMA_REGISTERS["tx_cpl_head"].address(0)

        self.table = RuleTable(self.core.rules, ports=self.core.ports, queues=self.core.queues)
        self._tx_flows = list(range(self.core.tx_flows))
        self._queue_cycle = itertools.cycle(range(self.core.queues))
        self._rx_next = 0
        self._backlog: list[Message] = []
        self.stats = {"rx_frames": 0, "rx_bytes": 0, "rx_unknown_key": 0, "rx_truncated": 0,
                      "rx_errors": {}, "rx_starved": 0, "tx_frames": 0, "tx_bytes": 0,
                      "tx_copied": 0, "tx_errors": {}, "tx_aborted": 0, "events": {},
                      "resets": 0}
        self._closed = False
        self.core.set_default_action(kind=ActionKind.DROP)  # no flow, no host delivery
        self._start()

    # --- registers and bring-up ----------------------------------------------------------------

    def _read(self, name: str, index: int = 0) -> int:
        return self._dma.read32(DMA_REGISTERS[name].address(index))

    def _write(self, name: str, value: int, index: int = 0) -> None:
        self._dma.write32(DMA_REGISTERS[name].address(index), value)

    @staticmethod
    def _vectors(available: int) -> dict[str, int] | None:
        if available >= 3:
            return {"event": 0, "rx": 1, "tx": 2}
        if available >= 1:
            return {"event": 0, "rx": 0, "tx": 0}
        return None  # no MSI-X: polling only

    def _irq(self, which: str) -> int:
        frames, usecs = self.moderation[which]
        try:
            return IRQ_CONFIG.pack(vector=(self.vectors or {}).get(which, 0), frames=frames,
                                   usecs=usecs)
        except ValueError as error:
            raise ValueError(f"{which} moderation {(frames, usecs)}: {error}") from None

    def _reset_engine(self) -> None:
        self._write("control", DMA_CONTROL.pack(reset=1))
        for _ in range(_RESET_POLLS):
            if not DMA_CONTROL.unpack(self._read("control"))["reset"]:
                return
        raise DeviceError(f"the DMA engine did not leave reset after {_RESET_POLLS} reads")

    def _program(self, prefix: str, index: int, ring: DescriptorRing | CompletionRing,
                 cpl: CompletionRing | None, irq: int) -> None:
        self._write(f"{prefix}_base_lo", ring.address & 0xFFFFFFFF, index)
        self._write(f"{prefix}_base_hi", ring.address >> 32, index)
        if cpl is not None:
            self._write(f"{prefix}_cpl_base_lo", cpl.address & 0xFFFFFFFF, index)
            self._write(f"{prefix}_cpl_base_hi", cpl.address >> 32, index)
        self._write(f"{prefix}_irq", irq, index)
        size = RING_SIZE.pack(log2=ring.log2, cpl_log2=cpl.log2 if cpl else 0, enable=1)
        self._write(f"{prefix}_size", size, index)

    def _start(self) -> None:
        """Reset the engine, program every ring, enable, fill the free rings."""
        self._reset_engine()
        self._program("event", 0, self.event_ring, None, self._irq("event"))
        for q, (free, cpl) in enumerate(self.rx):
            self._program("rx", q, free, cpl, self._irq("rx"))
        self._program("tx", 0, self.tx[0], self.tx[1], self._irq("tx"))
        if self._tx_max_length is not None:
            self._write("tx_max_length", self._tx_max_length)
        self._write("control", DMA_CONTROL.pack(enable=1, polling=int(self.polling)))
        for q in range(len(self.rx)):
            self._refill(q)

    # --- flows ---------------------------------------------------------------------------------

    def _open(self, flow: Flow) -> _FlowState:
        self._check_open()
        if flow.key >= 1 << RX_COMPLETION["demux_key"].width:
            raise DeviceError(f"demux key {flow.key} does not fit the device's "
                              f"{RX_COMPLETION['demux_key'].width}-bit keys")
        if not self._tx_flows:
            raise DeviceError(f"all {self.core.tx_flows} TX flows of the device are in use; "
                              "close a flow first")
        attrs = flow.spec.attrs
        queue = next(self._queue_cycle)
        # More specific flows win over broader ones they overlap (the table breaks ties by index).
        specificity = sum(getattr(attrs, name) is not None for name in
                          ("in_port", "src_mac", "dst_mac", "ethertype", "vlan", "src_ip",
                           "dst_ip", "protocol", "src_port", "dst_port"))
        rule = Rule(flow.spec, ActionKind.HOST, queue=queue, demux_key=flow.key,
                    priority=specificity)
        rule_id = self.table.add(rule)
        indices = self.table.indices(rule_id)
        quota = attrs.queue_limit or self.queue_limit
        tx_flow = self._tx_flows.pop(0)
        try:
            for index in indices:
                self.core.configure_queue(tx=False, unit=queue, flow=index, quota_bytes=quota,
                                          priority=attrs.priority, weight=attrs.weight)
                self.core.write_rule(index, self.table.image()[index])
            for port in range(self.core.ports):
                self.core.configure_queue(tx=True, unit=port, flow=tx_flow, quota_bytes=quota,
                                          priority=attrs.priority, weight=attrs.weight)
        except Exception:
            self._forget_rule(rule_id, tx_flow)
            raise
        return _FlowState(rule_id, indices, queue, tx_flow, attrs.in_port or 0)

    def _close(self, flow: Flow) -> None:
        state: _FlowState = flow.state
        if not self._closed:
            for index in state.indices:
                self.core.configure_queue(tx=False, unit=state.queue, flow=index, quota_bytes=0)
        self._forget_rule(state.rule_id, state.tx_flow)

    def _forget_rule(self, rule_id: int, tx_flow: int) -> None:
        for index in self.table.remove(rule_id):
            if not self._closed:
                self.core.clear_rule(index)
        if not self._closed:
            for port in range(self.core.ports):
                self.core.configure_queue(tx=True, unit=port, flow=tx_flow, quota_bytes=0)
        self._tx_flows.append(tx_flow)

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceError(f"partner {self.name!r} is shut down")

    # --- receive -------------------------------------------------------------------------------

    def pull(self, timeout: float | None = 0.0) -> Message | None:
        out = self.pull_many(1, timeout)
        return out[0] if out else None

    def pull_many(self, max_count: int, timeout: float | None = 0.0) -> list[Message]:
        if max_count <= 0:
            raise ValueError(f"pull_many needs max_count >= 1, not {max_count}")
        self._check_open()
        out = self._receive(max_count)
        if out or timeout == 0.0:
            return out
        # Wait in the backend's time. Polling: look again every `poll_interval`. Interrupts:
        # sleep until the RX vector fires; a wake-up with nothing new (a shared vector) waits
        # again, so the wait may then last longer than `timeout`.
        if self.polling:
            waited = 0.0
            while timeout is None or waited < timeout:
                step = self.poll_interval if timeout is None else min(self.poll_interval,
                                                                      timeout - waited)
                self._idle(step)
                waited += step
                out = self._receive(max_count)
                if out:
                    return out
            return out
        while True:
            fired = self.bus.wait_irq(self.vectors["rx"], timeout)
            out = self._receive(max_count)
            if out or not fired:
                return out

    def _idle(self, seconds: float) -> None:
        self.bus.sleep(seconds)

    def _receive(self, max_count: int) -> list[Message]:
        out = self._backlog[:max_count]
        del self._backlog[:max_count]
        self._reclaim_tx()
        rings = len(self.rx)
        start = self._rx_next
        for i in range(rings):
            if len(out) >= max_count:
                break
            q = (start + i) % rings
            free, cpl = self.rx[q]
            entries = cpl.poll(max_count - len(out))
            if entries:
                self._deliver(free, entries, out)
                self.bus.write32(self._rx_cpl_head[q], cpl.head)
                self._rx_next = (q + 1) % rings
            if free.space >= self.rx_chunks and (entries or free.posted < free.size // 2):
                self._refill(q)
        return out

    def _deliver(self, free: DescriptorRing, entries, out: list) -> None:
        flows, stats, size, owner = self.flows, self.stats, self.pool.size, self
        take = free.take
        for _, length, index, chunks, used, status, key, flags, in_port, _, _ in entries:
            buffers = take(index, chunks)
            if status > RxStatus.TRUNCATED:
                for buffer in buffers:
                    if buffer is not None:
                        buffer.release()
                errors = stats["rx_errors"]
                errors[RxStatus(status).name] = errors.get(RxStatus(status).name, 0) + 1
                continue
            for buffer in buffers[used:]:
                buffer.release()  # chunks of the pvec the frame did not need
            flow = flows.get(key)
            if flow is None:  # a flow closed with frames in flight
                for buffer in buffers[:used]:
                    buffer.release()
                stats["rx_unknown_key"] += 1
                continue
            captured = min(length, used * size)
            if used == 1:
                buffer = buffers[0]
                view = buffer.view if captured == size else buffer.view[:captured]
                chunks_ = [Chunk(view, owner, buffer)]
            else:
                chunks_, left = [], captured
                for buffer in buffers[:used]:
                    n = min(left, size)
                    chunks_.append(Chunk(buffer.view if n == size else buffer.view[:n], owner,
                                         buffer))
                    left -= n
            attrs = {"port": in_port, "flags": flags, "length": captured}
            if status == RxStatus.TRUNCATED:
                attrs["status"] = int(status)
                attrs["orig_len"] = length
                stats["rx_truncated"] += 1
            flow.messages += 1
            flow.bytes += captured
            stats["rx_frames"] += 1
            stats["rx_bytes"] += captured
            out.append(Message(key, attrs, Pvec(chunks_, owner)))

    def _refill(self, q: int) -> None:
        """Post empty pvecs of `rx_chunks` buffers while the ring and the pool have room."""
        free = self.rx[q][0]
        pool, chunks, size, base = self.pool, self.rx_chunks, self.pool.size, self._pool_bus
        n = min(free.space, pool.available) // chunks
        if n <= 0:
            if pool.available < chunks:
                self.stats["rx_starved"] += 1
            return
        entries, attached = [], []
        alloc = pool.alloc_buffer
        last = chunks - 1
        for _ in range(n):
            for k in range(chunks):
                buffer = alloc()
                entries.append((base + buffer.offset, size, k != last))
                attached.append(buffer)
        self.bus.write32(self._rx_tail[q], free.post(entries, attached))

    # --- transmit ------------------------------------------------------------------------------

    def push(self, key: int, attrs: dict, pvec: Pvec) -> None:
        self._check_open()
        self._reclaim_tx()
        self._post_tx(key, attrs, pvec)
        self.bus.write32(self._tx_tail, self.tx[0].tail)

    def push_many(self, messages) -> int:
        self._check_open()
        self._reclaim_tx()
        taken = 0
        try:
            for key, attrs, pvec in messages:
                try:
                    self._post_tx(key, attrs, pvec)
                except WouldBlock:
                    break
                taken += 1
        except Exception as error:
            error.taken = taken
            raise
        finally:
            if taken:
                self.bus.write32(self._tx_tail, self.tx[0].tail)
        return taken

    def _post_tx(self, key: int, attrs: dict | None, pvec: Pvec) -> None:
        flow = self.flows.get(key)
        if flow is None:
            raise self._unknown_key(key)
        state: _FlowState = flow.state
        port = attrs.get("port", state.port) if attrs else state.port
        if not isinstance(port, int) or not 0 <= port < self.core.ports:
            raise FlowAttributeError("port", f"got {port!r}; the device has ports 0.."
                                             f"{self.core.ports - 1}")
        total = pvec.nbytes
        if total == 0:
            raise FrameError(f"push of an empty pvec on flow {key}: the device sends no empty "
                             "frames")
        limit = self.tx_max_length
        if total > limit:
            raise FrameError(f"push of {total} bytes on flow {key}: the device sends at most "
                             f"{limit} (its tx_max_length register)")
        ring = self.tx[0]
        pieces = self._zero_copy(pvec)
        copy = pieces is None or len(pieces) > self.max_chunks
        needed = -(-total // self.pool.size) if copy else len(pieces)
        if ring.space < needed or (copy and self.pool.available < needed):
            self._reclaim_tx()
            if ring.space < needed:
                raise WouldBlock(f"TX ring of {self.name!r} is full ({ring.size} descriptors)")
            if copy and self.pool.available < needed:
                raise WouldBlock(f"no free DMA buffer in {self.name!r} to copy a foreign pvec")
        held = pvec
        if copy:
            held = self.pool.alloc(total)
            _copy(pvec, held)
            pvec.free()  # consumed: the copy goes out instead
            self.stats["tx_copied"] += 1
            base = self._pool_bus
            pieces = [(base + c.aggregate.offset, len(c.view)) for c in held.chunks]
        flags = int(TxFlag.NOTIFY) if attrs and attrs.get("x_notify") else 0
        last = len(pieces) - 1
        entries = [(address, length, i != last, port, state.tx_flow, key, total, flags)
                   if i == 0 else (address, length, i != last, 0, 0, 0, 0, 0)
                   for i, (address, length) in enumerate(pieces)]
        ring.post(entries, [held] + [None] * last)
        state.tx_frames += 1
        state.tx_bytes += total
        flow.messages += 1
        flow.bytes += total

    def _zero_copy(self, pvec: Pvec) -> list[tuple[int, int]] | None:
        """(bus address, length) of each non-empty chunk, or None if a chunk is not ours."""
        pool, base, bus_base, size = self.pool, self._pool_base, self._pool_bus, self.pool.size
        out = []
        for chunk in pvec.chunks:
            n = len(chunk.view)
            if n == 0:
                continue
            buffer = chunk.aggregate
            if type(buffer) is not Buffer or buffer.pool is not pool or chunk.view.readonly:
                return None
            if buffer.refs <= 0:
                raise BufferOpError(f"push of a chunk in buffer {buffer.index} of {self.name!r}, "
                                    "which was freed: the device would read reused memory")
            offset = _address_of(chunk.view) - base
            if not buffer.offset <= offset <= buffer.offset + size - n:
                return None
            out.append((bus_base + offset, n))
        return out

    @property
    def tx_max_length(self) -> int:
        return self._read("tx_max_length")

    def _reclaim_tx(self) -> None:
        ring, cpl = self.tx
        entries = cpl.poll(ring.size)
        if not entries:
            return
        stats = self.stats
        for _, index, chunks, status in entries:
            for held in ring.take(index, chunks):
                if held is not None:
                    held.free()
                    if status == TxStatus.OK:
                        stats["tx_frames"] += 1
                        stats["tx_bytes"] += held.nbytes
            if status != TxStatus.OK:
                name = TxStatus(status).name if status in TxStatus._value2member_map_ else \
                    str(status)
                stats["tx_errors"][name] = stats["tx_errors"].get(name, 0) + 1
        self.bus.write32(self._tx_cpl_head, cpl.head)

    # --- control -------------------------------------------------------------------------------

    def ctl_events(self, key=None, max_count: int = 256) -> list[dict]:
        """Drain up to `max_count` device events (oldest first) as dicts of `EVENT_ENTRY`."""
        entries = self.event_ring.poll(max_count)
        if entries:
            self._write("event_head", self.event_ring.head)
        events = []
        for _, kind, unit, count, status, index, value in entries:
            kind = DmaEvent(kind) if kind in DmaEvent._value2member_map_ else kind
            name = getattr(kind, "name", str(kind))
            self.stats["events"][name] = self.stats["events"].get(name, 0) + 1
            events.append({"kind": kind, "unit": unit, "count": count, "status": status,
                           "index": index, "value": value})
        return events

    def ctl_wait_events(self, key=None, timeout: float | None = None) -> list[dict]:
        """Events, waiting up to `timeout` (backend seconds) for the first one."""
        events = self.ctl_events()
        if events or timeout == 0.0:
            return events
        if self.polling:
            self._idle(timeout or self.poll_interval)
        else:
            self.bus.wait_irq(self.vectors["event"], timeout)
        return self.ctl_events()

    def ctl_moderation(self, key=None, *, rx: tuple[int, int] | None = None,
                       tx: tuple[int, int] | None = None) -> dict:
        """Set (frames, microseconds) interrupt thresholds; returns the settings in force."""
        for which, value in (("rx", rx), ("tx", tx)):
            if value is None:
                continue
            old = self.moderation[which]
            self.moderation[which] = tuple(value)
            try:
                word = self._irq(which)
            except ValueError:
                self.moderation[which] = old
                raise
            if which == "rx":
                for q in range(len(self.rx)):
                    self._write("rx_irq", word, q)
            else:
                self._write("tx_irq", word)
        return dict(self.moderation)

    def ctl_polling(self, key=None, on: bool = True) -> bool:
        """Pure polling (no MSI-X at all) on or off; off needs MSI-X vectors."""
        if not on and self.vectors is None:
            raise DeviceError(f"partner {self.name!r}: the bus has no MSI-X vectors, only "
                              "polling works")
        self.polling = bool(on)
        control = DMA_CONTROL.unpack(self._read("control"))
        control["polling"] = int(self.polling)
        self._write("control", DMA_CONTROL.pack(control))
        return self.polling

    def ctl_counters(self, key=None) -> dict[str, int]:
        """The DMA engine's counters by name."""
        return {c.name.lower(): self._read("counter", c) for c in DmaCounter}

    def ctl_threshold(self, key=None, counter: str | DmaCounter = "rx_frames",
                      value: int = 0) -> None:
        """Arm a COUNTER_THRESHOLD event for when a DMA counter reaches `value` (0: disarm)."""
        try:
            which = counter if isinstance(counter, DmaCounter) else DmaCounter[counter.upper()]
        except KeyError:
            names = ", ".join(c.name.lower() for c in DmaCounter)
            raise ValueError(f"no DMA counter {counter!r}; counters: {names}") from None
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"threshold {value} is not a 32-bit count")
        self._write("counter_threshold", value, which)

    def ctl_buffers(self, key=None) -> dict[str, int]:
        """Where every DMA buffer is: free in the pool, posted to RX rings, in flight on TX, or
        elsewhere (in pvecs the user holds)."""
        posted = sum(free.posted for free, _ in self.rx)
        in_flight = set()
        for held in self.tx[0].shadow:
            if held is not None:
                in_flight.update(id(c.aggregate) for c in held.chunks
                                 if type(c.aggregate) is Buffer and c.aggregate.pool is self.pool)
        total, free = self.pool.count, self.pool.available
        return {"total": total, "free": free, "rx_posted": posted, "tx_in_flight": len(in_flight),
                "elsewhere": total - free - posted - len(in_flight)}

    def ctl_stats(self, key=None) -> dict:
        stats = super().ctl_stats(key)
        if key is not None:
            state = self.flow(key).state
            stats[key].update(queue=state.queue, tx_flow=state.tx_flow, rules=state.indices,
                              tx_messages=state.tx_frames, tx_bytes=state.tx_bytes)
            return stats
        stats["device"] = {**self.stats, "buffers": self.ctl_buffers(),
                           "counters": self.ctl_counters()}
        return stats

    def ctl_reset(self, key=None) -> dict[str, int]:
        """Reset the DMA engine and bring it back; every buffer is accounted for.

        Completions the device wrote before the reset are honoured (frames already in host
        memory are kept for the next pulls, sent pvecs are freed); everything else it held is
        taken back: RX buffers return to the pool, unsent TX pvecs are freed and counted in
        `tx_aborted`. Flows, rules and quotas (in the core) stay.
        """
        self._check_open()
        kept = self._receive(1 << 30)  # completions already written are real frames
        self._backlog.extend(kept)
        self._reclaim_tx()
        self._reset_engine()
        reclaimed = aborted = 0
        for free, cpl in self.rx:
            for buffer in free.drain():
                buffer.release()
                reclaimed += 1
            free.restart()
            cpl.restart()
        ring, cpl = self.tx
        for held in ring.drain():
            if held is not None:
                held.free()
                aborted += 1
        ring.restart()
        cpl.restart()
        self.event_ring.restart()
        self.stats["tx_aborted"] += aborted
        self.stats["resets"] += 1
        self._start()
        return {"rx_kept": len(kept), "rx_reclaimed": reclaimed, "tx_aborted": aborted}

    # --- life cycle ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Close every flow, stop the engine, take back every posted buffer, free the rings.

        The buffer memory itself is given back only when no pulled pvec still uses it.
        """
        if self._closed:
            return
        super().shutdown()
        self._reclaim_tx()
        self._reset_engine()
        self._closed = True
        for free, _ in self.rx:
            for buffer in free.drain():
                buffer.release()
        for held in self.tx[0].drain():
            if held is not None:
                held.free()
        for ring in [r for pair in self.rx for r in pair] + [*self.tx, self.event_ring]:
            ring.release(self.bus)
        if self.pool.in_use == 0 and self._pool_memory is not None:
            self.bus.free_dma(self._pool_memory)
            self._pool_memory = None
