"""The cocotb adapter's rule checks, without a simulator: each rule the root complex does not
check is broken once on purpose and must be reported with its name."""

from types import SimpleNamespace

import pytest

pytest.importorskip("cocotbext.pcie")

from cocotbext.pcie.core.tlp import CplStatus, Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId

from partner.sim.pcie_rules import (
    PcieRuleError,
    TlpChecker,
    TlpImage,
    beats_from_tlp,
    pack_beats,
    tlp_from_beats,
    to_cocotb_tlp,
    unpack_beat,
)
from partner.tlp import (
    COMPLETION_DW1,
    COMPLETION_DW2,
    HEADER_DW0,
    REQUEST_DW1,
    CompletionStatus,
    TlpKind,
)

ID = PcieId(1, 0, 0)
HOST = PcieId(0, 0, 0)
MSI = 0x8000_0000


def function(**overrides):
    f = SimpleNamespace(
        pcie_id=ID, bus_master_enable=True,
        pcie_cap=SimpleNamespace(max_payload_size=0, max_read_request_size=2,
                                 extended_tag_field_enable=False),
        msix_cap=SimpleNamespace(msix_enable=True, msix_function_mask=False))
    for key, value in overrides.items():
        obj, _, name = key.rpartition("__")
        setattr(getattr(f, obj) if obj else f, name, value)
    return f


def checker(**overrides):
    return TlpChecker(function(**overrides), is_msi_address=lambda a: MSI <= a < MSI + 16)


def req(kind, address, length, *, first_be=0xF, last_be=None, tag=0, requester=ID, data=None,
        **dw0):
    if last_be is None:
        last_be = 0 if length == 1 else 0xF
    hdr = HEADER_DW0.pack(length=length % 1024, kind=kind, **dw0)
    hdr |= REQUEST_DW1.pack(first_be=first_be, last_be=last_be, tag=tag,
                            requester_id=int(requester)) << 32
    if kind & 0x20:
        hdr |= (address >> 32) << 64 | (address & 0xFFFF_FFFF) << 96
    else:
        hdr |= address << 64
    payload = [0] * length if kind & 0x40 and data is None else (data or [])
    return TlpImage(hdr, payload)


def cpl(tag, byte_count, lower_address, length=0, status=CompletionStatus.SC, completer=ID,
        requester=HOST, **dw0):
    kind = TlpKind.CPLD if length else TlpKind.CPL
    hdr = HEADER_DW0.pack(length=length, kind=kind, **dw0)
    hdr |= COMPLETION_DW1.pack(byte_count=byte_count % 4096, status=status,
                               completer_id=int(completer)) << 32
    hdr |= COMPLETION_DW2.pack(lower_address=lower_address, tag=tag,
                               requester_id=int(requester)) << 64
    return TlpImage(hdr, [0] * length)


def host_read(address, length, tag=3, first_be=0xF, last_be=None):
    t = Tlp()
    t.fmt_type = TlpType.MEM_READ
    t.requester_id = HOST
    t.tag = tag
    t.address = address
    t.length = length
    t.first_be = first_be
    t.last_be = (0 if length == 1 else 0xF) if last_be is None else last_be
    return t


def broken(check, *args, match):
    with pytest.raises(PcieRuleError, match=match):
        check(*args)


# --- requests the device sends ---------------------------------------------------------------

def test_legal_requests_pass_and_are_counted():
    c = checker()
    c.device_request(req(TlpKind.MWR32, 0x1000, 32))  # 128 bytes = MPS
    c.device_request(req(TlpKind.MWR64, 0x1_0000_0FF0, 4))  # ends exactly at 4 KiB
    c.device_request(req(TlpKind.MRD32, 0x2000, 128, tag=31))  # 512 bytes = MRRS
    c.device_request(req(TlpKind.MWR32, 0x3008, 2, first_be=0x1, last_be=0x8))  # one QW
    c.device_request(req(TlpKind.MWR32, MSI, 1))
    assert c.counts["requests"] == 5 and c.counts["reads"] == 1 and c.counts["msix"] == 1


def test_payload_read_size_and_4k_limits():
    c = checker()
    broken(c.device_request, req(TlpKind.MWR32, 0x1000, 33), match="Max_Payload_Size 128")
    broken(c.device_request, req(TlpKind.MRD32, 0x1000, 129), match="Max_Read_Request_Size 512")
    broken(c.device_request, req(TlpKind.MRD32, 0x1F00, 128), match="crosses a 4 KiB")
    broken(c.device_request, req(TlpKind.MWR32, 0x0FFC, 2), match="crosses a 4 KiB")
    c = checker(pcie_cap__max_payload_size=2)
    c.device_request(req(TlpKind.MWR32, 0x1000, 128))  # 512 bytes with MPS 512


def test_header_fields_and_bus_master():
    broken(checker(bus_master_enable=False).device_request, req(TlpKind.MWR32, 0x1000, 1),
           match="Bus Master Enable")
    broken(checker().device_request, req(TlpKind.MWR32, 0x1000, 1, requester=PcieId(2, 0, 0)),
           match="requester ID")
    broken(checker().device_request, req(TlpKind.MWR64, 0x1000, 1), match="below 4 GiB")
    broken(checker().device_request, req(TlpKind.MWR32, 0x1000, 1, ep=1), match="EP, TD")
    broken(checker().device_request, req(TlpKind.CPLD, 0x1000, 1), match="only memory")


def test_byte_enable_rules():
    c = checker()
    broken(c.device_request, req(TlpKind.MWR32, 0x1000, 1, last_be=0xF), match="Last DW BE")
    broken(c.device_request, req(TlpKind.MWR32, 0x1000, 2, first_be=0), match="non-zero")
    broken(c.device_request, req(TlpKind.MWR32, 0x1000, 3, first_be=0x5), match="contiguous")
    broken(c.device_request, req(TlpKind.MWR32, 0x1004, 2, first_be=0x1), match="contiguous")
    c.device_request(req(TlpKind.MWR32, 0x1008, 2, first_be=0x5, last_be=0xA))  # one QW


def test_tags_limit_and_uniqueness():
    c = checker()
    broken(c.device_request, req(TlpKind.MRD32, 0x1000, 1, tag=32), match="32 tags")
    c.device_request(req(TlpKind.MRD32, 0x1000, 16, tag=7))
    broken(c.device_request, req(TlpKind.MRD32, 0x2000, 1, tag=7), match="reused")
    # A partial completion keeps the tag busy, the final one frees it.
    first = host_completion(tag=7, byte_count=64, lower_address=0x00, length=8)
    c.completion_delivered(first)
    broken(c.device_request, req(TlpKind.MRD32, 0x2000, 1, tag=7), match="reused")
    c.completion_delivered(host_completion(tag=7, byte_count=32, lower_address=0x40, length=8))
    c.device_request(req(TlpKind.MRD32, 0x2000, 1, tag=7))
    c = checker(pcie_cap__extended_tag_field_enable=True)
    c.device_request(req(TlpKind.MRD32, 0x1000, 1, tag=200))
    broken(c.device_request, req(TlpKind.MRD32, 0x1000, 1, tag=201, t8=1), match="10-bit")


def host_completion(tag, byte_count, lower_address, length, status=CplStatus.SC):
    t = Tlp()
    t.fmt_type = TlpType.CPL_DATA if length else TlpType.CPL
    t.tag, t.byte_count, t.lower_address, t.status = tag, byte_count, lower_address, status
    t.set_data(bytes(4 * length))
    return t


def test_msix_messages_only_when_enabled_and_unmasked():
    broken(checker(msix_cap__msix_enable=False).device_request, req(TlpKind.MWR32, MSI, 1),
           match="MSI-X is disabled")
    broken(checker(msix_cap__msix_function_mask=True).device_request,
           req(TlpKind.MWR32, MSI, 1), match="function is masked")
    broken(checker().device_request, req(TlpKind.MWR32, MSI, 1, first_be=0x3),
           match="one whole dword")


# --- completions the device sends ------------------------------------------------------------

def test_completion_byte_count_lower_address_and_ids():
    c = checker()
    c.host_request(host_read(0xC000_0104, 2, tag=3, first_be=0xE, last_be=0x3))
    broken(c.device_completion, cpl(3, 8, 0x05, 2), match="byte count 8, expected 5")
    broken(c.device_completion, cpl(3, 5, 0x04, 2), match="lower address 0x4, expected 0x5")
    broken(c.device_completion, cpl(3, 5, 0x05, 2, completer=PcieId(3, 0, 0)),
           match="completer ID")
    broken(c.device_completion, cpl(3, 5, 0x05, 2, tc=1), match="TC or attributes")
    broken(c.device_completion, cpl(4, 5, 0x05, 2), match="no request outstanding")
    c.device_completion(cpl(3, 5, 0x05, 2))
    broken(c.device_completion, cpl(3, 5, 0x05, 2), match="no request outstanding")


def test_split_completions_follow_the_read_completion_boundary():
    c = checker(pcie_cap__max_payload_size=2)
    c.host_request(host_read(0xC000_0030, 64, tag=1))  # 256 bytes from 0x30
    broken(c.device_completion, cpl(1, 256, 0x30, 8), match="Read Completion Boundary")
    c.device_completion(cpl(1, 256, 0x30, 4))  # 16 bytes up to 0x40
    broken(c.device_completion, cpl(1, 256, 0x40, 60), match="byte count 256, expected 240")
    c.device_completion(cpl(1, 240, 0x40, 60))
    assert not c.host_requests
    c = checker()  # MPS 128
    c.host_request(host_read(0xC000_0000, 64, tag=2))
    broken(c.device_completion, cpl(2, 256, 0x00, 64), match="exceeds Max_Payload_Size 128")


def test_error_completions():
    c = checker()
    c.host_request(host_read(0xC000_0010, 1, tag=5))
    broken(c.device_completion, cpl(5, 4, 0x10, 1, status=CompletionStatus.UR),
           match="error completion carries data")
    broken(c.device_completion, cpl(5, 4, 0x00, status=CompletionStatus.UR),
           match="lower address")
    c.device_completion(cpl(5, 4, 0x10, status=CompletionStatus.UR))
    io = Tlp()
    io.fmt_type = TlpType.IO_READ
    io.requester_id, io.tag, io.address, io.length, io.first_be = HOST, 6, 0x100, 1, 0x3
    c.host_request(io)
    broken(c.device_completion, cpl(6, 2, 0x00, status=CompletionStatus.UR), match="byte count")
    c.device_completion(cpl(6, 4, 0x00, status=CompletionStatus.CA))
    assert c.counts["error_completions"] == 2


# --- framing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [64, 128, 256])
def test_beats_round_trip_a_cocotbext_tlp(width):
    t = Tlp()
    t.fmt_type = TlpType.MEM_WRITE_64
    t.requester_id, t.tag = HOST, 9
    t.set_addr_be_data(0x1_2345_6780, bytes(range(44)))
    beats = [unpack_beat(w, width) for w in beats_from_tlp(t, width, bar=0)]
    assert len(beats) == -(-11 // (width // 32))
    image = tlp_from_beats(beats, width, "test")
    assert image.payload[0] == 0x03020100 and len(image.payload) == 11
    assert to_cocotb_tlp(image) == t


def test_framing_violations():
    width = 64
    good = [unpack_beat(w, width) for w in pack_beats(req(TlpKind.MWR32, 0x1000, 5), width)]
    tlp_from_beats(good, width, "req_out")

    def mutate(index, **fields):
        beats = [dict(b) for b in good]
        beats[index].update(fields)
        return beats

    broken(tlp_from_beats, mutate(0, sop=0), width, "req_out", match="without sop")
    broken(tlp_from_beats, mutate(1, sop=1), width, "req_out", match="sop in beat 1")
    broken(tlp_from_beats, mutate(2, strb=0b10), width, "req_out", match="not packed")
    broken(tlp_from_beats, mutate(1, strb=0b01), width, "req_out", match="not full")
    broken(tlp_from_beats, mutate(2, strb=0b11), width, "req_out", match="length field 5")
    broken(tlp_from_beats, mutate(0, bar=2), width, "req_out", match="bar field")
    read = pack_beats(req(TlpKind.MRD32, 0x1000, 5), width)
    bad_read = [dict(unpack_beat(read[0], width), strb=1)]
    broken(tlp_from_beats, bad_read, width, "req_out", match="without data")
    dw3 = [dict(unpack_beat(read[0], width), hdr=unpack_beat(read[0], width)["hdr"] | 1 << 100)]
    broken(tlp_from_beats, dw3, width, "req_out", match="DW3 of a 3-dword header")
