"""A host-only install (`pip install .`, no extras) imports the whole host API.

It must not need Amaranth, cocotb, numpy or the FPGA tools: the install goes into a fresh virtual
environment without the test environment's packages, from a copy of the sources (so no build
output lands in the working tree).
"""

import pathlib
import shutil
import subprocess
import sys
import venv

ROOT = pathlib.Path(__file__).resolve().parent.parent

CHECK = """
import importlib, pkgutil, sys
import partner
import partner.partners
names = ["partner." + m.name for m in pkgutil.iter_modules(partner.__path__)
         if m.name != "__main__"]
names += ["partner.partners." + m.name for m in pkgutil.iter_modules(partner.partners.__path__)]
for name in names:
    importlib.import_module(name)
heavy = [m for m in ("amaranth", "cocotb", "numpy", "scapy") if m in sys.modules]
assert not heavy, heavy
for missing in ("amaranth", "cocotb"):
    try:
        importlib.import_module(missing)
    except ImportError:
        pass
    else:
        raise AssertionError(missing + " is installed in the host-only environment")
key = partner.QueuePartner().open("eth/ipv4/udp", "dst_port=53")
print("imported", len(names), "modules; version", partner.__version__, "key", key)
"""


def test_host_only_install_imports_without_gateware_dependencies(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("host", "hdl", "sim", "boards"):
        shutil.copytree(
            ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # Exactly what a user types: `pip install .` (pip fetches the build backend itself).
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(source)],
        check=True,
        cwd=tmp_path,
    )
    result = subprocess.run(
        [python, "-c", CHECK], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "imported" in result.stdout
    assert sys.executable != str(python)
