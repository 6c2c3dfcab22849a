"""The DMA engine's ring formats and registers: sizes, bit positions, codecs, register layout."""

import itertools
import random

import pytest

from partner.formats import MAX_FRAME, EventKind
from partner.pcie.bar import BAR0
from partner.pcie.codec import Codec
from partner.pcie.formats import (
    DMA_REGISTERS,
    EVENT_ENTRY,
    INDEX_BITS,
    MAX_CHUNKS,
    MAX_COUNTERS,
    MAX_RING_LOG2,
    MAX_RX_RINGS,
    MAX_TX_RINGS,
    RING_SIZE,
    RX_COMPLETION,
    RX_FREE,
    TX_COMPLETION,
    TX_DESCRIPTOR,
    DmaCounter,
    DmaEvent,
    RxStatus,
    TxStatus,
)
from partner.wire import Access

ENTRIES = (RX_FREE, RX_COMPLETION, TX_DESCRIPTOR, TX_COMPLETION, EVENT_ENTRY)
COMPLETIONS = (RX_COMPLETION, TX_COMPLETION, EVENT_ENTRY)


@pytest.mark.parametrize("fmt", ENTRIES, ids=lambda s: s.name)
def test_entries_are_power_of_two_bytes_with_every_bit_declared(fmt):
    assert fmt.nbytes in (8, 16)
    assert fmt.width == 8 * fmt.nbytes
    assert sum(f.width for f in fmt) == fmt.width


@pytest.mark.parametrize("fmt", COMPLETIONS, ids=lambda s: s.name)
def test_phase_is_the_top_bit_of_the_last_byte(fmt):
    raw = fmt.to_bytes(phase=1)
    assert raw[-1] == 0x80 and not any(raw[:-1])


def test_free_and_tx_entries_put_the_address_in_the_first_eight_bytes():
    # The gateware reads a chunk's address as the entry's first little-endian qword.
    for fmt in (RX_FREE, TX_DESCRIPTOR):
        raw = fmt.to_bytes(address=0x1122334455667788)
        assert raw[:8] == bytes.fromhex("8877665544332211")


def test_field_widths_hold_what_the_device_can_produce():
    assert 1 << TX_DESCRIPTOR["total_length"].width > MAX_FRAME
    assert 1 << RX_COMPLETION["length"].width > MAX_FRAME
    assert 1 << RX_COMPLETION["chunks_used"].width > MAX_CHUNKS
    assert 1 << RX_COMPLETION["queue"].width >= MAX_RX_RINGS
    assert RX_COMPLETION["desc_index"].width == INDEX_BITS == TX_COMPLETION["desc_index"].width
    # A ring of 2**15 entries keeps "full" and "empty" apart with 16-bit indices.
    assert MAX_RING_LOG2 < INDEX_BITS
    assert (1 << RING_SIZE["log2"].width) - 1 >= MAX_RING_LOG2


def test_events_keep_the_core_kinds_and_add_the_engines():
    for kind in EventKind:
        assert DmaEvent[kind.name] == kind.value
    for name in ("RX_DESC_ERROR", "TX_DESC_ERROR", "DMA_ERROR", "COUNTER_THRESHOLD"):
        assert DmaEvent[name] not in set(EventKind)
    assert max(DmaEvent) < 1 << EVENT_ENTRY["kind"].width


def test_status_codes_name_the_error_cases():
    assert {"ZERO_LENGTH", "TOO_MANY_CHUNKS", "DMA_ERROR", "TRUNCATED"} <= set(RxStatus.__members__)
    assert {"ZERO_LENGTH", "OVERSIZE", "TOO_MANY_CHUNKS", "DMA_ERROR", "BAD_PORT", "BAD_FLOW"} <= \
        set(TxStatus.__members__)
    assert RxStatus.OK == TxStatus.OK == 0


@pytest.mark.parametrize("fmt", ENTRIES, ids=lambda s: s.name)
def test_codec_agrees_with_the_struct_definition(fmt):
    codec = Codec(fmt)
    rng = random.Random(fmt.name)
    buffer = bytearray(3 * fmt.nbytes)
    for _ in range(300):
        values = {n: rng.getrandbits(fmt[n].width) for n in codec.fields}
        raw = fmt.to_bytes(values)
        offset = rng.randrange(3) * fmt.nbytes
        codec.pack_into(buffer, offset, *(values[n] for n in codec.fields))
        assert bytes(buffer[offset:offset + fmt.nbytes]) == raw
        assert codec.unpack_from(raw) == tuple(values[n] for n in codec.fields)
        assert codec.unpack_from(buffer, offset) == tuple(values[n] for n in codec.fields)


def test_codec_subset_and_masking():
    codec = Codec(RX_COMPLETION, ["phase", "length"])
    raw = RX_COMPLETION.to_bytes(phase=1, length=1234, demux_key=7)
    assert codec.unpack_from(raw) == (1, 1234)
    packed = Codec(TX_COMPLETION, ["status", "phase"]).pack(0x1F, 1)  # status is 4 bits
    assert TX_COMPLETION.from_bytes(packed)["status"] == 0xF
    assert TX_COMPLETION.from_bytes(packed)["reserved"] == 0
    with pytest.raises(KeyError):
        Codec(RX_COMPLETION, ["no_such_field"])


def test_dma_registers_fit_their_window_without_overlap():
    assert DMA_REGISTERS.size <= BAR0.dma.size
    spans = sorted((r.offset, r.offset + r.size) for r in DMA_REGISTERS)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    assert DMA_REGISTERS["ident"].offset == 0 and DMA_REGISTERS["version"].offset == 4


def test_every_ring_has_its_registers_and_doorbells():
    for prefix, count in (("rx", MAX_RX_RINGS), ("tx", MAX_TX_RINGS)):
        for suffix in ("base_lo", "base_hi", "cpl_base_lo", "cpl_base_hi", "size", "tail", "head",
                       "cpl_head", "cpl_tail", "irq", "status"):
            assert DMA_REGISTERS[f"{prefix}_{suffix}"].count == count
        assert DMA_REGISTERS[f"{prefix}_tail"].access is Access.RW  # the producer doorbell
        assert DMA_REGISTERS[f"{prefix}_head"].access is Access.RO
    assert DMA_REGISTERS["counter"].count == MAX_COUNTERS >= len(DmaCounter)
    assert DMA_REGISTERS["rx_irq"].reset == DMA_REGISTERS["rx_irq"].fields.pack(frames=1)
    assert DMA_REGISTERS["max_chunks"].reset == MAX_CHUNKS


def test_gateware_layouts_derive_from_the_same_definitions():
    layout = pytest.importorskip("partner.hdl.wire").layout
    for fmt in ENTRIES:
        members = dict(layout(fmt).members)
        assert layout(fmt).size == fmt.width
        assert list(members) == list(fmt.fields)
