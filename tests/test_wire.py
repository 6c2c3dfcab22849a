"""The one definition of each wire format: host packing and gateware layouts agree."""

import enum
import random

import pytest

from partner.formats import ACTION, FLOW_KEY, FLOW_RULE, FRAME_META, ActionKind
from partner.wire import Access, Field, Register, RegisterMap, Struct


def test_pack_unpack_round_trip_on_random_values():
    rng = random.Random(1)
    for struct in (FLOW_KEY, ACTION, FRAME_META, FLOW_RULE):
        for _ in range(50):
            values = {f.name: rng.getrandbits(f.width) for f in struct}
            word = struct.pack(values)
            assert word.bit_length() <= struct.width
            unpacked = struct.unpack(word)
            assert {k: int(v) for k, v in unpacked.items()} == values
            assert struct.from_bytes(struct.to_bytes(values)) == unpacked


def test_first_field_is_least_significant():
    s = Struct("s", [("a", 4), ("b", 8)])
    assert s.pack(a=0xF) == 0xF
    assert s.pack(b=1) == 1 << 4
    assert s.width == 12 and s.nbytes == 2


def test_pack_refuses_values_that_do_not_fit_and_unknown_fields():
    with pytest.raises(ValueError, match=r"action.queue = 0x10 does not fit in 4 bits"):
        ACTION.pack(queue=16)
    with pytest.raises(ValueError, match=r"no field 'qeue'.*queue"):
        ACTION.pack(qeue=1)
    with pytest.raises(ValueError, match="does not fit"):
        ACTION.pack(port=-1)


def test_enum_fields_unpack_to_members_and_keep_unknown_codes():
    class Code(enum.IntEnum):
        A = 0
        B = 1

    s = Struct("s", [Field("code", 2, "", Code)])
    assert s.unpack(1)["code"] is Code.B
    assert s.unpack(3)["code"] == 3
    assert ACTION.unpack(ACTION.pack(kind=ActionKind.DROP))["kind"] is ActionKind.DROP
    with pytest.raises(ValueError, match="do not fit"):
        Struct("t", [Field("code", 1, "", enum.IntEnum("Big", {"X": 2}))])


def test_from_bytes_checks_length():
    with pytest.raises(ValueError, match="is 4 bytes, not 3"):
        ACTION.from_bytes(b"\0\0\0")


def test_register_map_lays_out_registers_and_arrays():
    regs = RegisterMap(
        "demo",
        [
            Register("id", Access.RO, "magic"),
            Register("counters", Access.RO, "four counters", count=4),
            Register("control", Access.RW, "bits", fields=Struct("ctl", [("go", 1)])),
        ],
    )
    assert regs["id"].offset == 0
    assert regs["counters"].address(3) == 4 + 12
    assert regs["control"].offset == 20
    assert regs.size == 24
    with pytest.raises(IndexError, match="4 entries"):
        regs["counters"].address(4)
    with pytest.raises(KeyError, match="no register 'nope'"):
        regs["nope"]
    text = regs.markdown()
    assert "| 0x0014 | `control` | read-write | bits |" in text
    assert "`ctl`: 1 bits." in text
    with pytest.raises(ValueError, match="duplicate"):
        RegisterMap("x", [Register("a", Access.RO, ""), Register("a", Access.RO, "")])


def test_gateware_layouts_have_the_host_offsets():
    from partner.hdl.wire import layout

    for struct in (FLOW_KEY, ACTION, FRAME_META, FLOW_RULE):
        amaranth_layout = layout(struct)
        assert amaranth_layout.size == struct.width
        for name, member in amaranth_layout:
            assert member.offset == struct[name].offset
            assert member.width == struct[name].width
