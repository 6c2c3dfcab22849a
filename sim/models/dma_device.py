# Memory-only model of the PCIe device as the host driver sees it: BAR0 (the core's registers,
# the DMA engine's registers, MSI-X) and the DMA engine walking the rings of docs/dma.md in host
# memory. It is the executable specification the gateware DMA engine is checked against.
"""A `PcieBus` whose device is Python: rings consumed exactly per `partner.pcie.formats`.

- DMA memory is `bytearray`s at made-up bus addresses above 4 GiB (so the `_hi` halves of base
  registers matter); a device access outside live memory fails like an IOMMU fault (a read
  completes with UR; a posted write is lost and counted, PCIe Base Spec §2.2.8.10 gives the
  requester no completion for it).
- The core: flow rules, the default action and queue quotas written through the real register
  map (`partner.regmap.REGISTERS`), so the driver's `DeviceControl` programs it as it programs the
  gateware. `receive` feeds a frame "as if received on port p" (classified by the parser and
  flow-table reference models, or forced to a rule); `transmitted` collects what the host sent.
- Time is the model's own (`now`, seconds): it moves only in `wait_irq` and `sleep`, so
  interrupt moderation timers are exact and tests are repeatable. The model is single-threaded:
  feed frames, then let the driver pull.
- Error injection: `fail_reads` makes chosen DMA reads complete with UR or CA or time out;
  descriptors with zero or oversize lengths or too many chunks need no injection, the driver's
  rings can be written directly.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
from collections import deque

from partner.formats import ACTION, ActionKind
from partner.pcie.bar import BAR0, BAR0_SIZE, MSIX_ENTRY_BYTES
from partner.pcie.bus import DmaBuffer, PcieBus
from partner.pcie.codec import Codec
from partner.pcie.formats import (
    DMA_CONFIG,
    DMA_CONTROL,
    DMA_FORMAT_VERSION,
    DMA_IDENT,
    DMA_REGISTERS,
    DMA_STATUS,
    EVENT_ENTRY,
    INDEX_BITS,
    IRQ_CONFIG,
    MAX_CHUNKS,
    MAX_RING_LOG2,
    RING_ALIGN,
    RING_SIZE,
    RING_STATUS,
    RX_COMPLETION,
    RX_FREE,
    TX_COMPLETION,
    TX_DESCRIPTOR,
    DmaAgent,
    DmaCounter,
    DmaEvent,
    RxStatus,
    TxFlag,
    TxStatus,
)
from partner.regmap import (
    CounterBlock,
)
from partner.tlp import CompletionStatus
from partner.wire import Access

from .core_registers import CoreModel, locate

__all__ = ["DmaDeviceModel", "DmaFault", "SentFrame"]

M = (1 << INDEX_BITS) - 1
_EVENTS_HELD = 64  # events the engine keeps while its ring is off or full
_FREE = Codec(RX_FREE)
_RXC = Codec(RX_COMPLETION)
_TXD = Codec(TX_DESCRIPTOR)
_TXC = Codec(TX_COMPLETION)
_EVT = Codec(EVENT_ENTRY)


class DmaFault(Exception):
    """A DMA read that did not complete successfully; `status` as in the event's `status`."""

    def __init__(self, status: int, address: int):
        super().__init__(f"DMA read at {address:#x} failed with status {status}")
        self.status = status
        self.address = address


@dataclasses.dataclass
class SentFrame:
    port: int
    flow: int
    data: bytes
    demux_key: int = 0


@dataclasses.dataclass
class _Completions:
    """The device's side of one completion ring, with its interrupt moderation."""

    base: int = 0
    log2: int = 0
    tail: int = 0
    head: int = 0
    irq: int = IRQ_CONFIG.pack(frames=1)
    unsignalled: int = 0
    deadline: float | None = None

    def space(self) -> int:
        return (1 << self.log2) - ((self.tail - self.head) & M)


@dataclasses.dataclass
class _Ring:
    """A descriptor ring (RX free or TX) and its completion ring."""

    base: int = 0
    log2: int = 0
    enabled: bool = False
    tail: int = 0
    head: int = 0
    cpl: _Completions = dataclasses.field(default_factory=_Completions)
    errors: int = 0
    last_status: int = 0
    waiting: bool = False


class DmaDeviceModel(PcieBus):
    """The device behind BAR0, with `ports` Ethernet ports, `queues` host queues (+ slow path),
    `rules` flow-table entries, `tx_flows` per port, `tx_rings` TX rings, `vectors` MSI-X
    vectors."""

    def __init__(self, *, ports: int = 2, queues: int = 2, rules: int = 16, tx_flows: int = 8,
                 tx_rings: int = 1, max_chunks: int = MAX_CHUNKS,
                 max_ring_log2: int = MAX_RING_LOG2, vectors: int = 4):
        self.core = CoreModel(ports, queues, rules, tx_flows)
        self.irq_vectors = vectors
        self.config = DMA_CONFIG.pack(rx_rings=queues + 1, tx_rings=tx_rings,
                                      max_chunks=max_chunks, max_ring_log2=max_ring_log2,
                                      vectors=vectors)
        self.max_chunks_built = max_chunks
        self.max_ring_log2 = max_ring_log2
        # DMA memory: sorted bases, regions by base.
        self._bases: list[int] = []
        self._regions: dict[int, bytearray] = {}
        self._next_address = 0x1_0000_0000
        self._faults: list[list] = []  # [lo, hi, status, remaining]
        self.lost_writes = 0
        self.msix = bytearray(BAR0.msix_table.size)
        self.pending = [False] * max(vectors, 1)
        self.irq_count = [0] * max(vectors, 1)
        self.now = 0.0
        self.transmitted: list[SentFrame] = []
        self.forwarded: list[SentFrame] = []
        self.dropped: list[tuple[str, int]] = []  # (reason, length) of frames the core dropped
        self._links: set[int] = set()
        self.waiting: list[deque] = [deque() for _ in range(queues + 1)]
        self._event_queue: deque = deque()
        self._reset_state()

    # --- state ---------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        core = self.core
        self.values = {r.name: [r.reset] * r.count for r in DMA_REGISTERS}
        self.values["ident"] = [DMA_IDENT]
        self.values["version"] = [DMA_FORMAT_VERSION]
        self.values["config"] = [self.config]
        self.values["max_chunks"] = [self.max_chunks_built]
        self.status = 0
        self.rx = [_Ring() for _ in range(core.queues + 1)]
        self.tx = [_Ring() for _ in range(DMA_CONFIG.unpack(self.config)["tx_rings"])]
        self.events = _Ring()
        self.event_lost = 0
        self.counters = [0] * len(self.values["counter"])
        self._event_queue.clear()
        self._post(DmaEvent.RESET_DONE)

    @property
    def control(self) -> dict:
        return DMA_CONTROL.unpack(self.values["control"][0])

    # --- PcieBus: BAR0 -------------------------------------------------------------------------

    def read32(self, offset: int) -> int:
        self._check_offset(offset)
        if offset in BAR0.core:
            return self.core.read(offset - BAR0.core.offset)
        if offset in BAR0.msix_table:
            o = offset - BAR0.msix_table.offset
            return int.from_bytes(self.msix[o:o + 4], "little")
        if offset in BAR0.msix_pba:
            o = (offset - BAR0.msix_pba.offset) * 8
            return sum(1 << i for i in range(32) if o + i < len(self.pending)
                       and self.pending[o + i] and self._masked(o + i))
        reg, index = locate(DMA_REGISTERS, offset - BAR0.dma.offset)
        if reg is None:
            return 0
        if reg.name == "status":
            value, self.status = self.status, 0
            return value
        if reg.name == "counter":
            return self.counters[index] & 0xFFFFFFFF
        live = self._live(reg.name, index)
        if live is not None:
            return live
        if reg.name in ("rx_status", "tx_status"):
            rings = self.rx if reg.name == "rx_status" else self.tx
            ring = rings[index] if index < len(rings) else _Ring()
            value = RING_STATUS.pack(errors=min(ring.errors, 0xFFFF),
                                     last_status=ring.last_status, waiting=int(ring.waiting))
            ring.errors = 0
            return value
        return self.values[reg.name][index]

    def _live(self, name: str, index: int) -> int | None:
        """Read-only indices that the engine moves."""
        rings = {"rx": self.rx, "tx": self.tx}.get(name[:2])
        if name == "event_tail":
            return self.events.cpl.tail
        if rings is None or index >= len(rings):
            return None
        ring = rings[index]
        return {"head": ring.head, "cpl_tail": ring.cpl.tail}.get(name[3:])

    def write32(self, offset: int, value: int) -> None:
        self._check_offset(offset)
        value &= 0xFFFFFFFF
        if offset in BAR0.core:
            self.core.write(offset - BAR0.core.offset, value)
            self._run()
            return
        if offset in BAR0.msix_table:
            o = offset - BAR0.msix_table.offset
            self.msix[o:o + 4] = value.to_bytes(4, "little")
            return
        if offset in BAR0.msix_pba:
            return  # read-only (PCIe Base Spec §7.7.2.10)
        reg, index = locate(DMA_REGISTERS, offset - BAR0.dma.offset)
        if reg is None or reg.access in (Access.RO, Access.RC):
            self.status |= DMA_STATUS.pack(bad_access=1)
            return
        handler = getattr(self, f"_write_{reg.name}", None)
        if handler is None:
            self.values[reg.name][index] = value
        else:
            handler(index, value)
        self._run()

    def _check_offset(self, offset: int) -> None:
        if offset % 4 or not 0 <= offset < BAR0_SIZE:
            raise ValueError(f"BAR0 access at {offset:#x}: must be a dword inside "
                             f"{BAR0_SIZE:#x} bytes")

    # --- register writes with side effects -------------------------------------------------------

    def _write_control(self, index: int, value: int) -> None:
        if DMA_CONTROL.unpack(value)["reset"]:
            # Indices, rings, counters and pending interrupts go; the core keeps its frames.
            self.pending = [False] * len(self.pending)
            self._reset_state()
            value &= ~DMA_CONTROL.pack(reset=1)
        self.values["control"][0] = value

    def _write_max_chunks(self, index: int, value: int) -> None:
        if not 1 <= value <= self.max_chunks_built:
            self.status |= DMA_STATUS.pack(bad_access=1)
            return
        self.values["max_chunks"][0] = value

    def _ring_size(self, ring: _Ring, value: int, base: int, cpl_base: int | None) -> None:
        size = RING_SIZE.unpack(value)
        if size["enable"] and not ring.enabled:
            bad = (size["log2"] > self.max_ring_log2 or base % RING_ALIGN
                   or (cpl_base is not None and (cpl_base % RING_ALIGN
                                                 or size["cpl_log2"] > self.max_ring_log2)))
            if bad:
                self.status |= DMA_STATUS.pack(bad_ring_config=1)
                return
            ring.base, ring.log2, ring.tail, ring.head = base, size["log2"], 0, 0
            ring.cpl = _Completions(cpl_base or 0, size["cpl_log2"], irq=ring.cpl.irq)
        ring.enabled = bool(size["enable"])

    def _base(self, prefix: str, index: int) -> int:
        v = self.values
        return v[f"{prefix}_lo"][index] | v[f"{prefix}_hi"][index] << 32

    def _write_rx_size(self, i, value):
        self.values["rx_size"][i] = value
        if i < len(self.rx):
            self._ring_size(self.rx[i], value, self._base("rx_base", i),
                            self._base("rx_cpl_base", i))

    def _write_tx_size(self, i, value):
        self.values["tx_size"][i] = value
        if i < len(self.tx):
            self._ring_size(self.tx[i], value, self._base("tx_base", i),
                            self._base("tx_cpl_base", i))

    def _write_event_size(self, i, value):
        self.values["event_size"][0] = value
        ring = self.events
        was = ring.enabled
        self._ring_size(ring, value, self._base("event_base", 0), None)
        if ring.enabled and not was:  # the event ring is itself the completion ring
            ring.cpl.base, ring.cpl.log2 = ring.base, ring.log2

    def _doorbell(self, ring: _Ring, name: str, i: int, value: int, producer: bool) -> None:
        value &= M
        self.values[name][i] = value
        if producer:
            ok = ((value - ring.head) & M) <= 1 << ring.log2
            if ok:
                ring.tail = value
        else:
            cpl = ring.cpl
            ok = ((value - cpl.head) & M) <= ((cpl.tail - cpl.head) & M)
            if ok:
                cpl.head = value
        if not ok:
            self.status |= DMA_STATUS.pack(bad_doorbell=1)

    def _write_rx_tail(self, i, value):
        if i < len(self.rx):
            self._doorbell(self.rx[i], "rx_tail", i, value, True)

    def _write_rx_cpl_head(self, i, value):
        if i < len(self.rx):
            self._doorbell(self.rx[i], "rx_cpl_head", i, value, False)

    def _write_tx_tail(self, i, value):
        if i < len(self.tx):
            self._doorbell(self.tx[i], "tx_tail", i, value, True)

    def _write_tx_cpl_head(self, i, value):
        if i < len(self.tx):
            self._doorbell(self.tx[i], "tx_cpl_head", i, value, False)

    def _write_event_head(self, i, value):
        self._doorbell(self.events, "event_head", 0, value, False)

    def _write_rx_irq(self, i, value):
        self.values["rx_irq"][i] = value
        if i < len(self.rx):
            self.rx[i].cpl.irq = value

    def _write_tx_irq(self, i, value):
        self.values["tx_irq"][i] = value
        if i < len(self.tx):
            self.tx[i].cpl.irq = value

    def _write_event_irq(self, i, value):
        self.values["event_irq"][0] = value
        self.events.cpl.irq = value

    # --- DMA memory ------------------------------------------------------------------------------

    def alloc_dma(self, size: int, align: int = 4096) -> DmaBuffer:
        if size <= 0 or align <= 0 or align & (align - 1):
            raise ValueError(f"alloc_dma({size}, align={align}): need a positive size and a "
                             "power-of-two alignment")
        address = -(-self._next_address // align) * align
        self._next_address = address + size + 4096  # a gap: an overrun hits no other buffer
        memory = bytearray(size)
        bisect.insort(self._bases, address)
        self._regions[address] = memory
        return DmaBuffer(address, memoryview(memory))

    def free_dma(self, buffer: DmaBuffer) -> None:
        if self._regions.pop(buffer.address, None) is None:
            raise ValueError(f"{buffer!r} is not live DMA memory of this device")
        self._bases.remove(buffer.address)

    def _region(self, address: int, length: int) -> tuple[bytearray, int] | None:
        i = bisect.bisect_right(self._bases, address) - 1
        if i < 0:
            return None
        base = self._bases[i]
        memory = self._regions[base]
        offset = address - base
        return (memory, offset) if offset + length <= len(memory) else None

    def fail_reads(self, address: int, length: int = 1, *, status: int = CompletionStatus.UR,
                   count: int = 1) -> None:
        """The next `count` DMA reads touching ``[address, address + length)`` fail with
        `status` (a `CompletionStatus`, or `DMA_TIMEOUT` for a read that never completes)."""
        self._faults.append([address, address + length, int(status), count])

    def dma_read(self, address: int, length: int) -> bytes:
        for fault in self._faults:
            if fault[3] > 0 and address < fault[1] and fault[0] < address + length:
                fault[3] -= 1
                raise DmaFault(fault[2], address)
        found = self._region(address, length)
        if found is None:
            raise DmaFault(CompletionStatus.UR, address)
        memory, offset = found
        return bytes(memory[offset:offset + length])

    def dma_write(self, address: int, data) -> None:
        found = self._region(address, len(data))
        if found is None:
            self.lost_writes += 1
            return
        memory, offset = found
        memory[offset:offset + len(data)] = data

    # --- interrupts and time ---------------------------------------------------------------------

    def _masked(self, vector: int) -> bool:
        control = self.msix[vector * MSIX_ENTRY_BYTES + 12]
        return bool(control & 1)  # Vector Control bit 0: masked (PCIe Base Spec §7.7.2.4)

    def _signal(self, cpl: _Completions, now: bool = False) -> None:
        """A completion was written: fire its vector when moderation allows."""
        cfg = IRQ_CONFIG.unpack(cpl.irq)
        cpl.unsignalled += 1
        if now or cpl.unsignalled >= max(cfg["frames"], 1):
            self._fire(cpl)
        elif cfg["usecs"] and cpl.deadline is None:
            cpl.deadline = self.now + cfg["usecs"] * 1e-6

    def _fire(self, cpl: _Completions) -> None:
        cpl.unsignalled = 0
        cpl.deadline = None
        if self.control["polling"] or not self.irq_vectors:
            return
        vector = IRQ_CONFIG.unpack(cpl.irq)["vector"]
        if vector < len(self.pending):
            self.pending[vector] = True
            if not self._masked(vector):
                self.irq_count[vector] += 1

    def _completion_rings(self):
        return [r.cpl for r in itertools.chain(self.rx, self.tx, [self.events])]

    def _advance(self, until: float) -> None:
        """Move time to `until`, firing moderation timers on the way."""
        while True:
            due = [c for c in self._completion_rings() if c.deadline is not None]
            first = min((c.deadline for c in due), default=math.inf)
            if first > until:
                break
            self.now = max(self.now, first)
            for c in due:
                if c.deadline <= self.now:
                    self._fire(c)
        self.now = max(self.now, until)

    def wait_irq(self, vector: int, timeout: float | None = None) -> bool:
        if not 0 <= vector < self.irq_vectors:
            raise ValueError(f"vector {vector}: this function has {self.irq_vectors}")
        end = math.inf if timeout is None else self.now + timeout
        while True:
            if self.pending[vector] and not self._masked(vector):
                self.pending[vector] = False
                return True
            due = [c.deadline for c in self._completion_rings() if c.deadline is not None]
            step = min(due, default=math.inf)
            if step > end:
                if end == math.inf:
                    raise RuntimeError("wait_irq without timeout on an idle model would never "
                                       "return: nothing is left to happen")
                self._advance(end)
                return False
            self._advance(step)

    def sleep(self, seconds: float) -> None:
        """Let `seconds` of model time pass (moderation timers fire)."""
        self._advance(self.now + seconds)

    # --- traffic ---------------------------------------------------------------------------------

    def receive(self, frame: bytes, port: int = 0, *, rule: int | None = None) -> str:
        """A frame arrives on Ethernet `port`: classify it (or take flow-table entry `rule`),
        queue it for the host or forward/drop it. Returns what happened: ``"queued"``,
        ``"forwarded"``, ``"slowpath"`` (queued on the slow-path ring), ``"dropped"``."""
        core = self.core
        if not 0 <= port < core.ports:
            raise ValueError(f"port {port}: the model has {core.ports}")
        frame = bytes(frame)
        if port not in self._links:
            self._links.add(port)
            self._post(DmaEvent.LINK_UP, unit=port)
        core.count(CounterBlock.PORT, port, 0, "rx_frames")
        core.count(CounterBlock.PORT, port, 0, "rx_bytes", len(frame))
        hit, index, action_word, flags = core.classify(frame, port, rule)
        action = ACTION.unpack(action_word)
        kind = action["kind"]
        if kind == ActionKind.DROP:
            core.count(CounterBlock.PORT, port, 0, "rx_dropped_by_rule")
            self.dropped.append(("rule", len(frame)))
            return "dropped"
        if kind == ActionKind.FORWARD:
            self.forwarded.append(SentFrame(action["port"], core.tx_flows + port, frame))
            return "forwarded"
        queue = action["queue"] if kind == ActionKind.HOST else core.queues
        flow = index if hit else core.rules
        quota = core.quota.get((False, queue, flow), 0)
        held = sum(len(f[0]) for f in self.waiting[queue] if f[1]["x_flow"] == flow)
        if held + len(frame) > quota:
            core.count(CounterBlock.RX_QUEUE, queue, flow, "drop_quota")
            self.dropped.append(("quota", len(frame)))
            self._post(DmaEvent.QUEUE_DROP, unit=queue)
            return "dropped"
        core.count(CounterBlock.RX_QUEUE, queue, flow, "enq_frames")
        core.count(CounterBlock.RX_QUEUE, queue, flow, "enq_bytes", len(frame))
        meta = {"queue": queue, "demux_key": action["demux_key"], "flags": flags,
                "in_port": port, "rule": index, "hit": hit, "x_flow": flow}
        self.waiting[queue].append((frame, meta))
        self._run()
        return "queued" if kind == ActionKind.HOST else "slowpath"

    def _run(self) -> None:
        """Do all the work the rings allow (the engine is faster than the host in this model)."""
        if not self.control["enable"]:
            return
        self._flush_events()
        progress = True
        while progress:
            progress = False
            for q, ring in enumerate(self.rx):
                while ring.enabled and self.waiting[q] and self._rx_one(q, ring):
                    progress = True
            for t, ring in enumerate(self.tx):
                while ring.enabled and ring.head != ring.tail and self._tx_one(t, ring):
                    progress = True

    def _chain(self, ring: _Ring, codec: Codec, agent: DmaAgent, unit: int):
        """Read one descriptor chain from `ring.head`: (entries, error status or None), or None
        when the chain runs past the tail (the host has not posted its end yet)."""
        entries, index = [], ring.head
        size = codec.size
        while index != ring.tail:
            address = ring.base + (index & ((1 << ring.log2) - 1)) * size
            try:
                raw = self.dma_read(address, size)
            except DmaFault as fault:
                # Where this chain ends is unknowable now; the host rings the doorbell after
                # whole chains only, so the tail is a chain boundary: give back everything
                # posted, and both sides agree again on where the next pvec starts.
                self._dma_error(fault, agent, unit, index)
                return [None] * ((ring.tail - ring.head) & M), "dma"
            entry = codec.unpack_from(raw)
            entries.append(entry)
            index = (index + 1) & M
            if not entry[codec.fields.index("more")]:
                return entries, None
        return None

    def _dma_error(self, fault: DmaFault, agent: DmaAgent, unit: int, index: int) -> None:
        self.status |= DMA_STATUS.pack(dma_error=1)
        self._count(DmaCounter.DMA_ERRORS)
        self._post(DmaEvent.DMA_ERROR, unit=unit, status=fault.status, index=index,
                   value=int(agent))

    def _next_chain(self, ring: _Ring, codec: Codec, agent: DmaAgent, unit: int):
        """The ring's next whole chain and its read error, or None (the ring then waits): no
        room for a completion, or the chain is not all posted yet."""
        got = self._chain(ring, codec, agent, unit) if ring.cpl.space() > 0 else None
        ring.waiting = got is None
        return got

    def _rx_one(self, q: int, ring: _Ring) -> bool:
        got = self._next_chain(ring, _FREE, DmaAgent.RX_FREE, q)
        if got is None:
            return False
        entries, error = got
        first = ring.head
        # RX_FREE fields: address, length, more.
        status = RxStatus.OK
        if error:
            status = RxStatus.DMA_ERROR
        elif len(entries) > self.values["max_chunks"][0]:
            status = RxStatus.TOO_MANY_CHUNKS
        elif any(e[1] == 0 for e in entries):
            status = RxStatus.ZERO_LENGTH
        ring.head = (ring.head + len(entries)) & M
        frame, meta = self.waiting[q][0]
        used, length = 0, len(frame)
        if status == RxStatus.OK:
            self.waiting[q].popleft()
            offset = 0
            for address, size, _ in entries:
                if offset >= length:
                    break
                piece = frame[offset:offset + size]
                self.dma_write(address, piece)
                offset += len(piece)
                used += 1
            if offset < length:
                status = RxStatus.TRUNCATED
                self._count(DmaCounter.RX_TRUNCATED)
            self._count(DmaCounter.RX_FRAMES)
            self._count(DmaCounter.RX_BYTES, min(offset, length))
            self.core.count(CounterBlock.RX_QUEUE, q, meta["x_flow"], "deq_frames")
        else:
            length = 0
            self._ring_error(ring, status, DmaEvent.RX_DESC_ERROR, q, first, DmaCounter.RX_ERRORS)
        cpl = ring.cpl
        phase = 1 ^ ((cpl.tail >> cpl.log2) & 1)
        entry = bytearray(16)
        # RX_COMPLETION fields, in order: length, desc_index, chunks, chunks_used, status,
        # queue, demux_key, flags, in_port, rule, hit, phase.
        ok = status in (RxStatus.OK, RxStatus.TRUNCATED)
        _RXC.pack_into(entry, 0, length, first, len(entries), used, status, q,
                       meta["demux_key"] if ok else 0, meta["flags"] if ok else 0,
                       meta["in_port"] if ok else 0, meta["rule"] if ok else 0,
                       meta["hit"] if ok else 0, phase)
        self._complete(cpl, entry)
        self._signal(cpl)
        return True

    def _tx_one(self, t: int, ring: _Ring) -> bool:
        got = self._next_chain(ring, _TXD, DmaAgent.TX_DESCRIPTOR, t)
        if got is None:
            return False
        entries, error = got
        first = ring.head
        ring.head = (ring.head + len(entries)) & M
        # TX_DESCRIPTOR fields: address, length, more, port, flow, demux_key, total_length, attrs.
        head = entries[0]
        status = TxStatus.OK
        if error:
            status = TxStatus.DMA_ERROR
        elif len(entries) > self.values["max_chunks"][0]:
            status = TxStatus.TOO_MANY_CHUNKS
        elif head[6] == 0 or any(e[1] == 0 for e in entries):
            status = TxStatus.ZERO_LENGTH
        elif head[6] > self.values["tx_max_length"][0]:
            status = TxStatus.OVERSIZE
        elif head[3] >= self.core.ports:
            status = TxStatus.BAD_PORT
        elif head[4] >= self.core.tx_flows:
            status = TxStatus.BAD_FLOW
        elif sum(e[1] for e in entries) != head[6]:
            status = TxStatus.LENGTH_MISMATCH
        data = b""
        if status == TxStatus.OK:
            try:
                data = b"".join(self.dma_read(e[0], e[1]) for e in entries)
            except DmaFault as fault:
                self._dma_error(fault, DmaAgent.TX_DATA, t, first)
                status = TxStatus.DMA_ERROR
        if status == TxStatus.OK:
            self._count(DmaCounter.TX_FRAMES)
            self._count(DmaCounter.TX_BYTES, len(data))
            self._core_tx(head[3], head[4], data, head[5])
        else:
            self._ring_error(ring, status, DmaEvent.TX_DESC_ERROR, t, first, DmaCounter.TX_ERRORS)
        cpl = ring.cpl
        entry = bytearray(8)
        _TXC.pack_into(entry, 0, first, len(entries), status, 1 ^ ((cpl.tail >> cpl.log2) & 1))
        self._complete(cpl, entry)
        self._signal(cpl, now=not error and bool(head and head[7] & TxFlag.NOTIFY))
        return True

    def _core_tx(self, port: int, flow: int, data: bytes, key: int) -> None:
        """The core's host TX path: a frame waits for room in its port's TX queue block, never
        for its flow's quota (`partner.hdl.host_tx`), so only a closed flow (quota 0) drops it,
        counted as that flow's quota drop."""
        core = self.core
        if core.quota.get((True, port, flow), 0) == 0:
            core.count(CounterBlock.TX_QUEUE, port, flow, "drop_quota")
            self.dropped.append(("tx_quota", len(data)))
            self._post(DmaEvent.TX_DROP, unit=port)
            return
        core.count(CounterBlock.TX_QUEUE, port, flow, "enq_frames")
        core.count(CounterBlock.PORT, port, 0, "tx_frames")
        core.count(CounterBlock.PORT, port, 0, "tx_bytes", len(data))
        self.transmitted.append(SentFrame(port, flow, data, key))

    def _ring_error(self, ring: _Ring, status: int, kind: DmaEvent, unit: int, index: int,
                    counter: DmaCounter) -> None:
        ring.errors += 1
        ring.last_status = int(status)
        self._count(counter)
        if status != RxStatus.DMA_ERROR:  # a DMA error already raised its own event
            self._post(kind, unit=unit, status=int(status), index=index)

    def _complete(self, cpl: _Completions, entry: bytes) -> None:
        address = cpl.base + (cpl.tail & ((1 << cpl.log2) - 1)) * len(entry)
        self.dma_write(address, entry)
        cpl.tail = (cpl.tail + 1) & M

    def _count(self, counter: DmaCounter, n: int = 1) -> None:
        self.counters[counter] += n
        threshold = self.values["counter_threshold"][counter]
        if threshold and self.counters[counter] >= threshold:
            self.values["counter_threshold"][counter] = 0
            self._post(DmaEvent.COUNTER_THRESHOLD, unit=int(counter),
                       value=self.counters[counter] & 0xFFFFFFFF)

    # --- events ----------------------------------------------------------------------------------

    def _post(self, kind: DmaEvent, *, unit: int = 0, count: int = 1, status: int = 0,
              index: int = 0, value: int = 0) -> None:
        """Write an event, or remember it while the ring is off or full (then EVENTS_LOST)."""
        queue = self._event_queue
        if len(queue) >= _EVENTS_HELD:
            self._lose(1)
        else:
            queue.append((int(kind), unit, count, status, index, value))
        self._flush_events()

    def _lose(self, n: int) -> None:
        self.event_lost += n
        self.counters[DmaCounter.EVENTS_LOST] += n

    def _flush_events(self) -> None:
        ring, queue = self.events, self._event_queue
        if not ring.enabled or not self.control["enable"]:
            return  # held (a few) until the host enables the ring: RESET_DONE comes first
        while queue or self.event_lost:
            if ring.cpl.space() <= 0:
                return  # full: held (up to _EVENTS_HELD, then lost and counted) until room comes
            if self.event_lost:
                lost, self.event_lost = self.event_lost, 0
                self._write_event((DmaEvent.EVENTS_LOST, 0, min(lost, 0xFFFFFF), 0, 0, 0))
            else:
                self._write_event(queue.popleft())

    def _write_event(self, fields) -> None:
        cpl = self.events.cpl
        entry = bytearray(16)
        _EVT.pack_into(entry, 0, *fields, 1 ^ ((cpl.tail >> cpl.log2) & 1))
        self._complete(cpl, entry)
        self._signal(cpl)
