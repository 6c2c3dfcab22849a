"""The ECP5 synthesis-and-place flow (partner.boards.synth), on a small real block.

Two designs are built with Yosys and nextpnr (YoWASP), 2-9 s each once the WebAssembly cache
(~/.cache/YoWASP) is warm. With a cold cache the first build also compiles Yosys and nextpnr to
machine code: 145 s wall (72 s CPU) measured on a shared 2-core machine. Without the `synth`
extra the tool tests are skipped.
"""

import json
import time

import pytest
from amaranth.hdl import Module, Shape
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from partner.boards import synth
from partner.hdl.packet_fifo import PacketFIFO

WIDTH, DEPTH = 1, 256


def port_bits(component):
    """(input bits, output bits) of a component, from its signature."""
    bits = {True: 0, False: 0}
    for _, member in component.signature.members.flatten():
        if member.is_port:
            bits[member.flow == In] += Shape.cast(member.shape).width
    return bits[True], bits[False]


def xor_tree_flops(bits):
    """Flops of the harness's registered XOR tree (4 inputs per LUT) over ``bits`` outputs."""
    flops = 0
    while True:
        bits = -(-bits // 4)
        flops += bits
        if bits == 1:
            return flops


def have_tools():
    try:
        synth.find_tools()
    except synth.SynthError as e:
        return str(e)
    return None


needs_tools = pytest.mark.skipif(have_tools() is not None,
                                 reason=f"ECP5 toolchain missing: {have_tools()}")


@pytest.fixture(scope="module")
def fifo():
    return PacketFIFO(width_bytes=WIDTH, depth=DEPTH)


@pytest.fixture(scope="module")
def fifo_result(fifo, tmp_path_factory):
    build_dir = tmp_path_factory.mktemp("synth") / "packet_fifo"
    return synth.synthesize(fifo, name="packet_fifo", build_dir=build_dir)


def test_harness_ports_and_pins():
    """Without the tools: every port bit reaches the harness, which needs only four pins."""
    fifo = PacketFIFO(WIDTH, DEPTH)
    harness = synth.Harness(fifo, ["sync"])
    assert (harness.input_bits, harness.output_bits) == port_bits(fifo)
    platform = synth.SynthPlatform({"sync": 125e6})
    platform.keep_module = "t.dut"
    plan = platform.prepare(harness, "t", emit_src=False)
    lpf = plan.files["t.lpf"]
    assert lpf.count("LOCATE COMP") == 4  # clk, din, rst, dout
    assert 'FREQUENCY PORT "clk_sync_0__io" 125000000.0 HZ;' in lpf
    script = plan.files["build_t.sh"]
    assert "--timing-allow-fail" in script and "--report t.report.json" in script
    assert "--router router1" in script  # nextpnr's own default, unless asked otherwise
    assert "setattr -mod -set keep_hierarchy 1 t.dut" in plan.files["t.ys"]


def test_router_is_chosen_by_name():
    platform = synth.SynthPlatform({"sync": 125e6}, router="router2")
    platform.keep_module = "t.dut"
    plan = platform.prepare(synth.Harness(PacketFIFO(WIDTH, DEPTH), ["sync"]), "t",
                            emit_src=False)
    assert "--router router2" in plan.files["build_t.sh"]
    with pytest.raises(ValueError, match="router must be one of"):
        synth.SynthPlatform({"sync": 125e6}, router="router3")


def test_placer_is_chosen_by_name_and_the_default_adds_nothing():
    scripts = {}
    for placer in ("heap", "static"):
        platform = synth.SynthPlatform({"sync": 125e6}, placer=placer)
        platform.keep_module = "t.dut"
        plan = platform.prepare(synth.Harness(PacketFIFO(WIDTH, DEPTH), ["sync"]), "t",
                                emit_src=False)
        scripts[placer] = plan.files["build_t.sh"]
    assert "--placer static" in scripts["static"]
    assert "--placer" not in scripts["heap"]  # nextpnr's default; old cache keys still hold
    with pytest.raises(ValueError, match="placer must be one of"):
        synth.SynthPlatform({"sync": 125e6}, placer="anneal")


def test_port_domains_must_name_a_clock():
    fifo = PacketFIFO(WIDTH, DEPTH)
    with pytest.raises(ValueError, match="not one of"):
        synth.Harness(fifo, ["sync"], port_domains={"level": "rx"})
    fifo._MustUse__silence = True


@needs_tools
def test_packet_fifo_synthesizes(fifo, fifo_result):
    r = fifo_result
    assert not r.cached
    assert r.fmax_mhz["sync"] > 0
    assert r.target_mhz == {"sync": 125.0} and r.router == "router1"
    # Measured 220-239 MHz over nextpnr seeds 1-5: the FIFO must keep up with RGMII's 125 MHz.
    assert r.timing_met == {"sync": True}
    assert r.luts > 0 and r.lut4 > 0 and r.ffs > 0
    # 256 x 11 bits goes to one DP16KD (18 Kbit block RAM), not to LUT RAM.
    assert r.bram == 1 and r.lutram == 0
    assert r.dsp == 0
    # The harness uses one pin per clock plus din, rst and dout.
    assert r.io == 4
    # The component's numbers exclude the harness; together they are what nextpnr placed.
    assert r.harness["bram"] == 0 and r.harness["ffs"] > 0
    assert r.ffs + r.harness["ffs"] == r.utilization["TRELLIS_FF"]["used"]
    # Harness flops: one per input bit, one per LUT of the XOR tree, two per reset synchronizer.
    inputs, outputs = port_bits(fifo)
    assert r.port_bits == {"in": inputs, "out": outputs}
    assert r.harness["ffs"] <= inputs + xor_tree_flops(outputs) + 2
    # The component's own flops: pointers (3 x 9 bits), overflow flag, output valid, counters.
    assert r.ffs >= 3 * 32 + 3 * 9
    assert r.critical_paths["sync"]["delay_ns"] > 0


@needs_tools
def test_same_design_is_not_placed_twice(fifo_result):
    again = synth.synthesize(PacketFIFO(width_bytes=WIDTH, depth=DEPTH), name="packet_fifo",
                             build_dir=fifo_result.build_dir)
    assert again.cached and again.digest == fifo_result.digest
    assert again.fmax_mhz == fifo_result.fmax_mhz


@needs_tools
def test_command_line(fifo_result, capsys):
    # Same design and directory as the fixture: answered from the stored result.
    assert synth.main(["partner.hdl.packet_fifo:PacketFIFO", "--arg", f"width_bytes={WIDTH}",
                       "--arg", f"depth={DEPTH}", "--name", "packet_fifo", "--clock",
                       "sync=125e6", "--build-dir", fifo_result.build_dir]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cached"] is True
    assert out["fmax_mhz"] == fifo_result.fmax_mhz and out["bram"] == 1


class Counter(wiring.Component):
    """A 32-bit counter with enable (about 460 MHz as placed here; 1 GHz is out of reach)."""

    en: In(1)
    count: Out(32)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.en):
            m.d.sync += self.count.eq(self.count + 1)
        return m


@needs_tools
def test_missed_target_is_measured_not_hidden(tmp_path):
    r = synth.synthesize(Counter(), name="counter", clocks={"sync": 1e9},
                         build_dir=tmp_path / "counter")
    assert r.timing_met == {"sync": False}
    assert 0 < r.fmax_mhz["sync"] < 1000
    assert r.carry > 0 and r.ffs == 32


@needs_tools
def test_a_build_that_runs_out_of_time_is_stopped_and_reported(tmp_path):
    build_dir = tmp_path / "counter"
    started = time.monotonic()
    with pytest.raises(synth.SynthError, match=r"did not finish within 0.2 s") as caught:
        synth.synthesize(Counter(), name="counter", build_dir=build_dir, timeout=0.2)
    # Stopped, not waited for (Yosys alone takes longer than that), and nothing is stored that
    # a later call could take for a finished build.
    assert time.monotonic() - started < 30
    assert str(caught.value).startswith("ERROR:")
    assert not (build_dir / synth._RESULT).exists()
    # The same design builds when it is given the time.
    result = synth.synthesize(Counter(), name="counter", build_dir=build_dir)
    assert not result.cached and result.ffs == 32


def test_timeout_must_be_positive(capsys):
    # Refused before anything is built (or even elaborated).
    with pytest.raises(ValueError, match="positive"):
        synth.synthesize(None, name="counter", timeout=0)
    with pytest.raises(SystemExit):
        synth.main(["partner.hdl.packet_fifo:PacketFIFO", "--timeout", "-5"])
    assert "--timeout must be positive" in capsys.readouterr().err
