"""The DMA engine's formats, defined once: ring entries in host memory and the 0x1000 registers.

The gateware DMA engine builds its layouts from these (`partner.hdl.wire.layout`), the host driver
(`partner.pcie.driver`) and the memory-only device model (`partner.sim.models.dma_device`) pack
and unpack with them, and docs/dma.md is generated from them.

Choices that hold for every format here:

- Little-endian, first field at bit 0 (`partner.wire`): byte *k* of an entry is bits 8k+7..8k.
- Entries are 8 or 16 bytes, a power of two, so the engine finds entry *i* of a ring at
  ``base + (i << log2(entry bytes))`` and never splits an entry across a 4 KiB boundary (ring
  bases are 4 KiB aligned, PCIe Base Spec §2.2.7: a request must not cross one).
- Ring indices are free-running 16-bit counters (`INDEX_BITS`); the slot of index *i* is
  ``i & (size - 1)``. A ring holds at most 2**15 entries, so "full" (``tail - head == size``) and
  "empty" (``tail == head``) never look alike, and ``(i >> log2 size) & 1`` is the lap parity.
- A completion ring entry (RX completion, TX completion, event) carries a `phase` bit in its top
  bit, the last byte the device writes: the device writes ``phase = 1 - lap parity`` (1 on the
  first lap over zeroed memory, 0 on the second, ...), so the host sees a new entry when its phase
  differs from what the slot held on the previous lap, without reading any device register.
  Each entry is written by one memory write TLP.
- The number of rings is a build parameter with fixed maxima here (`MAX_RX_RINGS`,
  `MAX_TX_RINGS`), like `partner.formats.MAX_QUEUES`: register offsets do not move between builds.

A pvec of *n* chunks is *n* consecutive ring entries; every entry but the last has `more` set
(virtio's NEXT flag). The engine walks a chain to its end even when it is too long, so the host's
and the device's idea of where the next pvec starts never part.
"""

from __future__ import annotations

import enum

from ..formats import DEMUX_KEY_BITS, MAX_FLOWS, MAX_FRAME, MAX_PORTS, MAX_QUEUES, EventKind
from ..wire import Access, Field, Register, RegisterMap, Struct
from .bar import BAR0

__all__ = [
    "DMA_CONFIG",
    "DMA_CONTROL",
    "DMA_FORMAT_VERSION",
    "DMA_IDENT",
    "DMA_REGISTERS",
    "DMA_STATUS",
    "DMA_TIMEOUT",
    "ENTRY_BYTES",
    "EVENT_ENTRY",
    "INDEX_BITS",
    "IRQ_CONFIG",
    "MAX_CHUNKS",
    "MAX_COUNTERS",
    "MAX_RING_LOG2",
    "MAX_RX_RINGS",
    "MAX_TX_RINGS",
    "RING_ALIGN",
    "RING_SIZE",
    "RING_STATUS",
    "RX_COMPLETION",
    "RX_FREE",
    "TX_COMPLETION",
    "TX_DESCRIPTOR",
    "DmaAgent",
    "DmaCounter",
    "DmaEvent",
    "RxStatus",
    "TxFlag",
    "TxStatus",
]

DMA_IDENT = 0x50444D41  # "PDMA"
DMA_FORMAT_VERSION = 1

MAX_RX_RINGS = MAX_QUEUES  # one per host queue of the core, the slow-path queue included
MAX_TX_RINGS = 4  # arbitrated round robin, per pvec, into the core's one host TX stream
MAX_CHUNKS = 16  # chunks a pvec may have (the `max_chunks` register may lower it)
MAX_COUNTERS = 16  # `counter` / `counter_threshold` registers
INDEX_BITS = 16
MAX_RING_LOG2 = INDEX_BITS - 1  # 32768 entries
RING_ALIGN = 4096  # ring base addresses are multiples of this
MAX_TX_FLOWS = MAX_FLOWS  # TX flows a descriptor can name per port
_CHUNKS_BITS = INDEX_BITS  # a chain that is too long may be as long as the ring


def _coded(name: str, doc: str, codes, base=enum.IntEnum):
    """An enum whose members carry their meaning (`meanings[name]`), for docs/dma.md."""
    cls = base(name, {n: v for n, v, _ in codes})
    cls.__doc__ = doc
    cls.meanings = {n: text for n, _, text in codes}
    return cls


RxStatus = _coded("RxStatus", "How an RX completion ended. Only OK and TRUNCATED carry data.", [
    ("OK", 0, "the frame is in the pvec, `length` bytes"),
    ("TRUNCATED", 1, "the frame was longer than the pvec (the buffers were too small): its "
                     "first bytes fill the pvec, `length` is the frame's full length"),
    ("ZERO_LENGTH", 2, "a free descriptor of the pvec had length 0: no data, the pvec comes back"),
    ("TOO_MANY_CHUNKS", 3, "the pvec's chain was longer than `max_chunks`: it comes back unused"),
    ("DMA_ERROR", 4, "a free descriptor read failed (UR, CA, timeout): every descriptor posted "
                     "up to the tail comes back unused (where the chain ended is unknown)"),
])

TxStatus = _coded("TxStatus", "How a TX pvec ended. Anything but OK sent nothing (never a "
                              "partial frame).", [
    ("OK", 0, "handed to the core (whose TX queue may still drop it: a TX_DROP event)"),
    ("ZERO_LENGTH", 1, "a chunk of length 0, or `total_length` 0"),
    ("OVERSIZE", 2, "`total_length` above the `tx_max_length` register"),
    ("TOO_MANY_CHUNKS", 3, "a chain longer than `max_chunks`"),
    ("DMA_ERROR", 4, "a descriptor or payload read completed with UR or CA, or timed out (a "
                     "descriptor read error gives back everything posted up to the tail)"),
    ("BAD_PORT", 5, "`port` is not a port of this build"),
    ("BAD_FLOW", 6, "`flow` is not below the core's `tx_flows`"),
    ("LENGTH_MISMATCH", 7, "the chunks do not add up to `total_length`"),
])

TxFlag = _coded("TxFlag", "TX descriptor `attrs` bits (first descriptor of a pvec).", [
    ("NOTIFY", 1 << 0, "signal this pvec's completion at once, bypassing interrupt moderation"),
], enum.IntFlag)

DmaAgent = _coded("DmaAgent", "Which read of the engine failed (`value` of a DMA_ERROR event).", [
    ("RX_FREE", 0, "an RX free descriptor read"),
    ("TX_DESCRIPTOR", 1, "a TX descriptor read"),
    ("TX_DATA", 2, "a TX payload read"),
])

DmaCounter = _coded("DmaCounter", "The engine's counters, `counter[i]` (each can raise "
                                  "COUNTER_THRESHOLD).", [
    ("RX_FRAMES", 0, "RX completions with status OK or TRUNCATED"),
    ("RX_BYTES", 1, "bytes written into RX pvecs"),
    ("TX_FRAMES", 2, "TX pvecs handed to the core"),
    ("TX_BYTES", 3, "their bytes"),
    ("RX_ERRORS", 4, "RX completions with an error status"),
    ("TX_ERRORS", 5, "TX completions with an error status"),
    ("RX_TRUNCATED", 6, "RX completions with status TRUNCATED"),
    ("DMA_ERRORS", 7, "reads that completed with UR or CA, or timed out"),
    ("EVENTS_LOST", 8, "events not written because the event ring was full or off"),
])

# The core's events keep their numbers (partner.formats.EventKind); the engine's own follow from
# 8, leaving room for the core's. What `unit`, `status`, `index` and `value` mean, per kind:
_CORE_EVENT_MEANINGS = {
    "LINK_UP": "unit: the port that received its first good frame",
    "RX_ERROR": "unit: the port that dropped a frame (MAC error, FIFO overflow, lookup backlog)",
    "QUEUE_DROP": "unit: the host queue whose flow queues dropped a frame (quota or buffer)",
    "TX_DROP": "unit: the port whose transmit queues dropped a frame",
}
assert set(_CORE_EVENT_MEANINGS) == {k.name for k in EventKind}, "a core event is undocumented"
DmaEvent = _coded("DmaEvent", "Event ring `kind`: the core's `EventKind` values, then the "
                              "engine's own.", [
    *[(k.name, k.value, _CORE_EVENT_MEANINGS[k.name]) for k in EventKind],
    ("RX_DESC_ERROR", 8, "unit: RX ring; status: RxStatus; index: the pvec's first descriptor"),
    ("TX_DESC_ERROR", 9, "unit: TX ring; status: TxStatus; index: the pvec's first descriptor"),
    ("DMA_ERROR", 10, "unit: ring; status: PCIe completion status (UR 1, CA 4; 7: timeout); "
                      "index: descriptor; value: DmaAgent"),
    ("COUNTER_THRESHOLD", 11, "unit: DmaCounter; value: the counter (low 32 bits)"),
    ("EVENTS_LOST", 12, "count: events dropped while the event ring was full"),
    ("RESET_DONE", 13, "the first event after an engine reset (and after power-up)"),
])
DMA_TIMEOUT = 7  # DMA_ERROR `status` of a read that never completed (not a PCIe completion
# status: those are partner.tlp.CompletionStatus, UR = 1 and CA = 4)


def _phase() -> Field:
    return Field("phase", 1, "1 on the ring's first lap, 0 on the second, ... (top bit: the last "
                             "byte written)")


RX_FREE = Struct(
    "rx_free",
    [
        Field("address", 64, "bus address of the chunk's buffer (any byte alignment)"),
        Field("length", 16, "buffer bytes, 1..65535 (0 is refused: ZERO_LENGTH)"),
        Field("more", 1, "the next entry is the next chunk of the same pvec"),
        Field("reserved", 47, "0"),
    ],
    "RX free ring entry: one chunk of an empty pvec the host posts for a queue. The engine "
    "fills one whole pvec per frame, chunk after chunk, and returns it in one completion.",
)

RX_COMPLETION = Struct(
    "rx_completion",
    [
        Field("length", 16, "frame bytes written; with TRUNCATED the frame's full length"),
        Field("desc_index", INDEX_BITS, "free-ring index of the pvec's first descriptor"),
        Field("chunks", _CHUNKS_BITS, "free descriptors consumed: the whole pvec, used or not"),
        Field("chunks_used", 5, "chunks holding frame data (0 for an error)"),
        Field("status", 4, "how it ended", RxStatus),
        Field("queue", 4, "host queue (= RX ring) of the frame"),
        Field("demux_key", DEMUX_KEY_BITS, "the matching rule's demux key (demux propagation)"),
        Field("flags", 8, "parser findings, `KeyFlag` bits"),
        Field("in_port", 3, "ingress Ethernet port"),
        Field("rule", 8, "flow-table entry that matched (with `hit`)"),
        Field("hit", 1, "1 if a rule matched, 0 if the default action was taken"),
        Field("reserved", 30, "0"),
        _phase(),
    ],
    "RX completion ring entry: one per pvec taken from the free ring, in free-ring order.",
)

TX_DESCRIPTOR = Struct(
    "tx_descriptor",
    [
        Field("address", 64, "bus address of the chunk (any byte alignment)"),
        Field("length", 14, "chunk bytes, 1..16383 (0 is refused: ZERO_LENGTH)"),
        Field("more", 1, "the next entry is the next chunk of the same pvec"),
        Field("port", 3, "first chunk: output Ethernet port"),
        Field("flow", 8, "first chunk: TX flow of the port (its queue and scheduling class)"),
        Field("demux_key", DEMUX_KEY_BITS, "first chunk: the host flow's key (for accounting)"),
        Field("total_length", 14, "first chunk: bytes of the whole pvec; the core needs the "
                                  "length before the first byte, and a mismatch is caught"),
        Field("attrs", 8, "first chunk: `TxFlag` bits"),
    ],
    "TX ring entry: one chunk of a pvec to send. Fields marked 'first chunk' are ignored "
    "on the others. The engine reads a whole chain before the frame enters the core.",
)

TX_COMPLETION = Struct(
    "tx_completion",
    [
        Field("desc_index", INDEX_BITS, "TX ring index of the pvec's first descriptor"),
        Field("chunks", _CHUNKS_BITS, "descriptors consumed (the whole chain)"),
        Field("status", 4, "how it ended", TxStatus),
        Field("reserved", 27, "0"),
        _phase(),
    ],
    "TX completion ring entry: one per pvec, in TX ring order; the host may then reuse the "
    "chunks' buffers.",
)

EVENT_ENTRY = Struct(
    "event_entry",
    [
        Field("kind", 8, "what happened", DmaEvent),
        Field("unit", 8, "port, queue, ring or counter, per kind"),
        Field("count", 24, "occurrences merged into this entry (core events merge while the host "
                           "is slow)"),
        Field("status", 8, "RxStatus, TxStatus or PCIe completion status, per kind"),
        Field("index", INDEX_BITS, "ring index of the descriptor concerned"),
        Field("value", 32, "counter value (COUNTER_THRESHOLD) or DmaAgent (DMA_ERROR)"),
        Field("reserved", 31, "0"),
        _phase(),
    ],
    "Event ring entry: device -> host `ctl`.",
)

ENTRY_BYTES = {s.name: s.nbytes for s in (RX_FREE, RX_COMPLETION, TX_DESCRIPTOR, TX_COMPLETION,
                                          EVENT_ENTRY)}
for _name, _size in ENTRY_BYTES.items():
    assert _size in (8, 16), f"{_name} must be 8 or 16 bytes"
for _s in (RX_FREE, RX_COMPLETION, TX_DESCRIPTOR, TX_COMPLETION, EVENT_ENTRY):
    assert _s.width == 8 * _s.nbytes, f"{_s.name} leaves undeclared bits"
assert 1 << TX_DESCRIPTOR["total_length"].width > MAX_FRAME
assert 1 << TX_DESCRIPTOR["port"].width == MAX_PORTS
assert 1 << RX_COMPLETION["chunks_used"].width > MAX_CHUNKS

# --- registers ------------------------------------------------------------------------------

DMA_CONFIG = Struct(
    "dma_config",
    [
        Field("rx_rings", 5, f"RX rings (= host queues + slow path; at most {MAX_RX_RINGS})"),
        Field("tx_rings", 3, f"TX rings (at most {MAX_TX_RINGS})"),
        Field("max_chunks", 5, f"chunks per pvec the engine can take (at most {MAX_CHUNKS})"),
        Field("max_ring_log2", 4, f"largest ring: 2**n entries (at most {MAX_RING_LOG2})"),
        Field("vectors", 9, "MSI-X vectors of the function"),
    ],
    "What this build's DMA engine has.",
)

DMA_CONTROL = Struct(
    "dma_control",
    [
        Field("enable", 1, "the engine runs; 0 stops it after the TLPs in flight"),
        Field("reset", 1, "write 1: stop, drop every ring's state and indices, clear counters; "
                          "reads 1 until done, then RESET_DONE is the first event"),
        Field("polling", 1, "pure polling: never send an MSI-X message"),
    ],
)

DMA_STATUS = Struct(
    "dma_status",
    [
        Field("bad_ring_config", 1, "a ring enabled with a base not 4 KiB aligned or a size "
                                    "above `max_ring_log2` (the ring stays off)"),
        Field("bad_doorbell", 1, "a producer index more than a ring ahead of the consumer, or "
                                 "a consumer index beyond the producer (ignored)"),
        Field("dma_error", 1, "a read completed with UR or CA, or timed out"),
        Field("bad_access", 1, "a write to a read-only register or an unmapped offset"),
    ],
    "Sticky error flags of the engine; reading clears them.",
)

RING_SIZE = Struct(
    "ring_size",
    [
        Field("log2", 4, "the descriptor ring has 2**log2 entries"),
        Field("cpl_log2", 4, "its completion ring has 2**cpl_log2 entries"),
        Field("enable", 1, "the ring runs; write the bases first. 0 -> 1 zeroes its indices"),
    ],
    "Size and enable of a ring pair (for the event ring: `log2` only).",
)

IRQ_CONFIG = Struct(
    "irq_config",
    [
        Field("vector", 8, "MSI-X vector this ring signals"),
        Field("frames", 12, "signal after this many unsignalled completions (0 acts as 1)"),
        Field("usecs", 12, "or when the oldest unsignalled completion is this old, in "
                           "microseconds (0: no timer)"),
    ],
    "Interrupt moderation of one completion ring. A TxFlag.NOTIFY completion signals at once.",
)

RING_STATUS = Struct(
    "ring_status",
    [
        Field("errors", 16, "error completions written since the last read (saturates)"),
        Field("last_status", 4, "status code of the last error completion"),
        Field("waiting", 1, "RX: a frame waits for a free pvec; TX: a chain waits for its end"),
    ],
    "Per-ring error state; reading clears `errors`.",
)

_RX = MAX_RX_RINGS
_TX = MAX_TX_RINGS


def _ring_registers(prefix: str, count: int, what: str, descriptor: str) -> list[Register]:
    return [
        Register(f"{prefix}_base_lo", Access.RW, f"{what} ring base, bits 31:0", count=count),
        Register(f"{prefix}_base_hi", Access.RW, f"{what} ring base, bits 63:32", count=count),
        Register(f"{prefix}_cpl_base_lo", Access.RW, f"{what} completion ring base, bits 31:0",
                 count=count),
        Register(f"{prefix}_cpl_base_hi", Access.RW, f"{what} completion ring base, bits 63:32",
                 count=count),
        Register(f"{prefix}_size", Access.RW, f"{what} ring sizes and enable", RING_SIZE,
                 count=count),
        Register(f"{prefix}_tail", Access.RW, f"doorbell: index after the last {descriptor} the "
                                              "host posted", count=count),
        Register(f"{prefix}_head", Access.RO, f"index of the next {descriptor} the engine takes",
                 count=count),
        Register(f"{prefix}_cpl_head", Access.RW, "doorbell: index of the next completion the "
                                                  "host will read", count=count),
        Register(f"{prefix}_cpl_tail", Access.RO, "index of the next completion the engine "
                                                  "writes", count=count),
        Register(f"{prefix}_irq", Access.RW, "interrupt vector and moderation", IRQ_CONFIG,
                 count=count, reset=IRQ_CONFIG.pack(frames=1)),
        Register(f"{prefix}_status", Access.RC, "errors of the ring", RING_STATUS, count=count),
    ]


DMA_REGISTERS = RegisterMap(
    "partner_dma",
    [
        Register("ident", Access.RO, f'constant {DMA_IDENT:#010x} ("PDMA")'),
        Register("version", Access.RO, f"format version of rings and registers "
                                       f"({DMA_FORMAT_VERSION})"),
        Register("config", Access.RO, "build parameters", DMA_CONFIG),
        Register("control", Access.RW, "enable, reset, polling", DMA_CONTROL),
        Register("status", Access.RC, "sticky error flags", DMA_STATUS),
        Register("max_chunks", Access.RW, f"longest chain accepted (1..{MAX_CHUNKS})",
                 reset=MAX_CHUNKS),
        Register("tx_max_length", Access.RW, f"longest TX pvec in bytes (..{MAX_FRAME}); "
                                             "longer ones complete with OVERSIZE", reset=1522),
        Register("event_base_lo", Access.RW, "event ring base, bits 31:0"),
        Register("event_base_hi", Access.RW, "event ring base, bits 63:32"),
        Register("event_size", Access.RW, "event ring size (`log2`) and enable", RING_SIZE),
        Register("event_head", Access.RW, "doorbell: index of the next event the host reads"),
        Register("event_tail", Access.RO, "index of the next event the engine writes"),
        Register("event_irq", Access.RW, "event interrupt vector and moderation", IRQ_CONFIG,
                 reset=IRQ_CONFIG.pack(frames=1)),
        *_ring_registers("rx", _RX, "RX free", "free descriptor"),
        *_ring_registers("tx", _TX, "TX", "descriptor"),
        Register("counter", Access.RO, "`DmaCounter` i (wraps at 2**32)", count=MAX_COUNTERS),
        Register("counter_threshold", Access.RW,
                 "raise COUNTER_THRESHOLD once when `counter[i]` reaches this value, then read 0 "
                 "(0: off; write again to re-arm)", count=MAX_COUNTERS),
    ],
    "The DMA engine's window of BAR0 (`partner.pcie.bar.BAR0.dma`); offsets are relative to it. "
    "Indices are 16-bit free-running counters in the low bits of their registers.",
)

assert DMA_REGISTERS.size <= BAR0.dma.size, "the DMA registers outgrew their BAR0 window"
assert len(DmaCounter) <= MAX_COUNTERS
