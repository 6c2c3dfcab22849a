"""The header parser's Verilog under cocotb + Verilator: 10,000 random and mutated frames per
width against the reference model (tests/cocotb/parser_tb.py). PARSER_FRAMES and PARSER_SEED
in the environment change the count and the seed."""

import os
from pathlib import Path

import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from partner.formats import FLOW_KEY
from partner.hdl.parser import Parser
from partner.hdl.stream import PacketStream
from partner.hdl.wire import layout

verilator = pytest.importorskip("partner.sim.verilator")

pytestmark = pytest.mark.cocotb

BENCH = Path(__file__).parent / "cocotb" / "parser_tb.py"
ENV = {"PARSER_FRAMES": os.environ.get("PARSER_FRAMES", "10000"),
       "PARSER_SEED": os.environ.get("PARSER_SEED", "1")}


class ParserTop(wiring.Component):
    """The Parser with plain streams: Amaranth 0.5 cannot convert a top-level component whose
    signature has constant members (its always-ready streams; amaranth-lang/amaranth#1574).
    ``i_stream.ready`` is driven 1 and ``o_key.ready`` is ignored, as inside the Parser."""

    def __init__(self, width_bytes):
        self.parser = Parser(width_bytes)
        members = dict(self.parser.signature.members)
        members["i_stream"] = In(PacketStream(width_bytes))
        members["o_key"] = Out(stream.Signature(layout(FLOW_KEY)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.parser = parser = self.parser
        m.d.comb += [
            parser.i_stream.valid.eq(self.i_stream.valid),
            parser.i_stream.payload.eq(self.i_stream.payload),
            self.i_stream.ready.eq(1),
            self.o_key.valid.eq(parser.o_key.valid),
            self.o_key.payload.eq(parser.o_key.payload),
        ]
        for name, member in self.signature.members.items():
            if name not in ("i_stream", "o_key"):
                outer, inner = getattr(self, name), getattr(parser, name)
                m.d.comb += inner.eq(outer) if member.flow == In else outer.eq(inner)
        return m


@pytest.mark.parametrize("width", [8, 1])
def test_parser_random_frames(width):
    model = verilator.build(lambda: ParserTop(width), name=f"parser_w{width}")
    result = model.run(BENCH, env={**ENV, "PARSER_WIDTH": str(width)}, seed=1)
    names = sorted(name.rsplit(".", 1)[1] for name in result.passed)
    expected = ["random_frames_against_model", "tiny_frames_one_key_per_cycle"]
    assert names == sorted([*expected, "giant_frame"] if width == 8 else expected)
