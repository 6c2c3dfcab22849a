"""Kept register copies (partner.hdl.kept): one cycle of delay in simulation, and on an ECP5 copies
that Yosys does not merge, where plain registers of the same value are merged into one."""

import json
import subprocess

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from partner.boards import synth
from partner.hdl.kept import kept_register

WIDTH = 5


class TwoCopies(wiring.Component):
    """Two registers of the same input (and a flag's), each driving an output of its own."""

    value: In(WIDTH)
    flag: In(1)
    first: Out(WIDTH)
    second: Out(WIDTH)
    flag_copy: Out(1)

    def __init__(self, *, kept: bool):
        self.kept = kept
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        if self.kept:
            first = kept_register(m, platform, self.value, name="first_copy")
            second = kept_register(m, platform, self.value, name="second_copy")
            flag = kept_register(m, platform, self.flag, name="flag_copy", reset_less=False)
        else:
            first, second, flag = Signal(WIDTH), Signal(WIDTH), Signal()
            m.d.sync += [first.eq(self.value), second.eq(self.value), flag.eq(self.flag)]
        m.d.comb += [self.first.eq(first), self.second.eq(second), self.flag_copy.eq(flag)]
        return m


def test_a_kept_register_delays_by_one_cycle():
    dut = TwoCopies(kept=True)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    seen = []

    async def bench(ctx):
        assert ctx.get(dut.flag_copy) == 0  # from reset
        for value, flag in ((3, 1), (17, 0), (30, 1), (0, 1), (9, 0)):
            ctx.set(dut.value, value)
            ctx.set(dut.flag, flag)
            await ctx.tick()
            seen.append((ctx.get(dut.first), ctx.get(dut.second), ctx.get(dut.flag_copy)))

    sim.add_testbench(bench)
    sim.run()
    assert seen == [(3, 3, 1), (17, 17, 0), (30, 30, 1), (0, 0, 1), (9, 9, 0)]


def _flip_flops_after_synthesis(component, tmp_path) -> int:
    try:
        tools = synth.find_tools()
    except synth.SynthError as error:
        pytest.skip(f"ECP5 toolchain missing: {error}")
    platform = synth.SynthPlatform({"sync": 125e6})
    (tmp_path / "top.il").write_text(rtlil.convert(component, name="top", platform=platform))
    subprocess.run([tools["YOSYS"], "-q", "-p",
                    "read_rtlil top.il; synth_ecp5 -top top; tee -q -o stat.json stat -json"],
                   cwd=tmp_path, check=True, capture_output=True)
    stat = json.loads((tmp_path / "stat.json").read_text())
    return stat["modules"]["\\top"]["num_cells_by_type"].get("TRELLIS_FF", 0)


def test_yosys_merges_plain_copies(tmp_path):
    # Why the kept copies exist: the same value registered twice is one register after Yosys.
    assert _flip_flops_after_synthesis(TwoCopies(kept=False), tmp_path) == WIDTH + 1


def test_yosys_keeps_kept_copies_apart(tmp_path):
    assert _flip_flops_after_synthesis(TwoCopies(kept=True), tmp_path) == 2 * WIDTH + 1
