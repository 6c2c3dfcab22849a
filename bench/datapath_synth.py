"""The 1G device core synthesised and placed for the ECP5 LFE5UM5G-45F, speed 8
(build/bench/datapath-synth.json): Fmax per clock domain (`fmax_mhz`, limit 150 MHz) and LUT,
FF and block-RAM use, with 16 and 64 flow-table entries.

Uses partner.boards.synth (YoWASP yosys and nextpnr-ecp5 from PyPI); the component's own cells
are counted apart from the pin-saving harness around it.
"""

from dataclasses import asdict

LIMIT_MHZ = 150.0
AVAILABLE = {"luts": 43848, "ffs": 43848, "bram": 108}  # LFE5UM5G-45F


def run() -> dict:
    from partner.boards.synth import SynthError, synthesize
    from partner.hdl.core import DeviceCore

    builds, failed = {}, {}
    for rules in (16, 64):
        core = DeviceCore(ports=2, width_bytes=1, rules=rules, queues=2)
        try:
            result = asdict(synthesize(core, name=f"core_w1_r{rules}",
                                       clocks={"sync": LIMIT_MHZ * 1e6}))
        except SynthError as error:  # e.g. more block RAMs than the chip has: not placed
            failed[f"rules_{rules}"] = str(error).splitlines()[0]
            continue
        builds[f"rules_{rules}"] = {
            "fmax_mhz": result["fmax_mhz"],
            "timing_met_at_150_mhz": result["timing_met"],
            "luts": result["luts"], "ffs": result["ffs"], "bram": result["bram"],
            "lutram": result["lutram"],
            "critical_paths": result["critical_paths"],
            "utilization": result["utilization"],
            "seconds": result["seconds"],
        }
    fmax = {name: b["fmax_mhz"]["sync"] for name, b in builds.items()}
    fits = {name: all(b[k] <= AVAILABLE[k] for k in AVAILABLE) for name, b in builds.items()}
    return {
        "device": "LFE5UM5G-45F-8BG381",
        "core": "DeviceCore(ports=2, width_bytes=1, queues=2), GMII, one 'sync' domain",
        "fmax_mhz": fmax,
        "available": AVAILABLE,
        "builds": builds,
        "not_placed": failed,
        "checks": {
            **{f"fmax_{n}": (f, LIMIT_MHZ, f >= LIMIT_MHZ) for n, f in fmax.items()},
            **{f"fits_{n}": (int(ok), 1, ok) for n, ok in fits.items()},
            **{f"placed_{n}": (0, 1, False) for n in failed},
        },
    }
