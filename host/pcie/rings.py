"""Rings in DMA memory: the host's side of the descriptor and completion rings of docs/dma.md.

A `DescriptorRing` is produced by the host (RX free ring, TX ring): it writes entries at `tail`
and tells the device with a doorbell; the device consumes them in order and the host learns how
far from the completions, which name the first index of each pvec and how many entries it took.
A `CompletionRing` is produced by the device (RX and TX completions, events): the host reads
entries at `head` while their phase bit says they are new, then writes `head` back as a doorbell
so the device may reuse the slots.

Indices are 16-bit free-running counters (`partner.pcie.formats.INDEX_BITS`); the slot is
``index & mask``. Nothing here touches registers: the driver decides when to ring doorbells, so a
batch of 256 frames costs one doorbell per ring, not 256.
"""

from __future__ import annotations

from ..errors import PartnerError
from .bus import DmaBuffer, PcieBus
from .codec import Codec
from .formats import INDEX_BITS, MAX_RING_LOG2, RING_ALIGN

__all__ = ["CompletionRing", "DescriptorRing", "Ring", "RingError"]

INDEX_MASK = (1 << INDEX_BITS) - 1


class RingError(PartnerError):
    """The device broke the ring protocol (a completion for an index that is not next)."""


class Ring:
    """2**log2 entries of one format in one 4 KiB-aligned DMA buffer, zeroed."""

    def __init__(self, bus: PcieBus, log2: int, codec: Codec, name: str):
        if not 0 <= log2 <= MAX_RING_LOG2:
            raise ValueError(f"ring {name}: 2**{log2} entries; the format allows 2**0 .. "
                             f"2**{MAX_RING_LOG2}")
        self.name = name
        self.log2 = log2
        self.size = 1 << log2
        self.mask = self.size - 1
        self.codec = codec
        self.entry_bytes = codec.size
        self.memory: DmaBuffer | None = bus.alloc_dma(self.size * self.entry_bytes, RING_ALIGN)
        if self.memory.address % RING_ALIGN:
            raise ValueError(f"ring {name}: the bus gave an address {self.memory.address:#x} "
                             f"that is not {RING_ALIGN}-byte aligned")
        self.view = self.memory.view
        self.view[:] = bytes(len(self.view))
        self.address = self.memory.address

    def release(self, bus: PcieBus) -> None:
        if self.memory is not None:
            bus.free_dma(self.memory)
            self.memory = None

    def __repr__(self):
        return f"{type(self).__name__}({self.name}, {self.size} x {self.entry_bytes} bytes)"


class DescriptorRing(Ring):
    """Host-produced ring. `shadow[slot]` keeps what the host attached to each entry it posted
    (a buffer, a pvec) until the device hands the entry back."""

    def __init__(self, bus: PcieBus, log2: int, codec: Codec, name: str):
        super().__init__(bus, log2, codec, name)
        self.tail = 0  # next index the host writes
        self.head = 0  # next index the device gives back (by completion)
        self.shadow: list = [None] * self.size

    @property
    def posted(self) -> int:
        """Entries the device owns."""
        return (self.tail - self.head) & INDEX_MASK

    @property
    def space(self) -> int:
        return self.size - self.posted

    def post(self, entries, attached) -> int:
        """Write `entries` (tuples of the codec's fields) from `tail`, attaching `attached[i]` to
        each; returns the new tail (the doorbell value). The caller checks `space` first."""
        pack = self.codec.pack_into
        view, shadow, mask, size = self.view, self.shadow, self.mask, self.entry_bytes
        tail = self.tail
        if len(entries) > self.size - ((tail - self.head) & INDEX_MASK):
            raise RingError(f"ring {self.name}: {len(entries)} entries do not fit in "
                            f"{self.space} free slots")
        for entry, thing in zip(entries, attached, strict=True):
            slot = tail & mask
            pack(view, slot * size, *entry)
            shadow[slot] = thing
            tail = (tail + 1) & INDEX_MASK
        self.tail = tail
        return tail

    def take(self, index: int, count: int) -> list:
        """The device completed `count` entries from `index`: return what was attached to them
        and free their slots. Completions come in ring order; anything else is a device bug."""
        if index != self.head:
            raise RingError(f"ring {self.name}: the device completed index {index}, but the next "
                            f"one it holds is {self.head}")
        if not 0 < count <= self.posted:
            raise RingError(f"ring {self.name}: the device completed {count} entries from "
                            f"{index}, but holds {self.posted}")
        shadow, mask = self.shadow, self.mask
        out = []
        for i in range(index, index + count):
            slot = i & mask
            out.append(shadow[slot])
            shadow[slot] = None
        self.head = (index + count) & INDEX_MASK
        return out

    def drain(self) -> list:
        """Everything still posted (after a device reset: the device forgot it)."""
        return self.take(self.head, self.posted) if self.posted else []

    def restart(self) -> None:
        """Both indices back to 0, memory zeroed: what the device assumes after a reset."""
        if self.posted:
            raise RingError(f"ring {self.name}: drain the {self.posted} posted entries first")
        self.head = self.tail = 0
        self.view[:] = bytes(len(self.view))


class CompletionRing(Ring):
    """Device-produced ring with a phase bit in the top bit of each entry's last byte."""

    def __init__(self, bus: PcieBus, log2: int, codec: Codec, name: str):
        if codec.fields[0] != "phase":
            raise ValueError("a completion ring's codec must decode 'phase' first")
        super().__init__(bus, log2, codec, name)
        self.head = 0

    def poll(self, max_count: int) -> list[tuple]:
        """Up to `max_count` new entries from `head` (decoded, phase first); advances `head`.

        The phase the device writes on lap L is ``1 - (L & 1)``; the slot still holds the
        previous lap's phase until the device overwrites it.
        """
        view, unpack, mask, size, log2 = (self.view, self.codec.unpack_from, self.mask,
                                          self.entry_bytes, self.log2)
        head = self.head
        last = size - 1
        out = []
        while len(out) < max_count:
            offset = (head & mask) * size
            if (view[offset + last] >> 7) == (head >> log2) & 1:
                break  # still the previous lap's entry
            out.append(unpack(view, offset))
            head = (head + 1) & INDEX_MASK
        self.head = head
        return out

    def restart(self) -> None:
        self.head = 0
        self.view[:] = bytes(len(self.view))
