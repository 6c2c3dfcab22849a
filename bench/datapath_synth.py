"""The 1G device core synthesised, placed and routed for the ECP5 LFE5UM5G-45F, speed 8
(build/bench/datapath-synth.json): Fmax per clock domain (`fmax_mhz`, limit 150 MHz) and LUT,
FF and block-RAM use, with 16 and 64 flow-table entries. The ECPIX-5 board comes with the 45F or
the 85F; a core that does not fit the 45F is also built for the LFE5UM5G-85F.

Uses partner.boards.synth (YoWASP yosys and nextpnr-ecp5 from PyPI, nextpnr's router2: its
router1 does not finish on a core that fills most of the 45F); the component's own cells are
counted apart from the pin-saving harness around it.
"""

from dataclasses import asdict

LIMIT_MHZ = 150.0
ROUTER = "router2"
AVAILABLE = {  # LUT4 sites, flip-flops, DP16KD
    "LFE5UM5G-45F": {"luts": 43848, "ffs": 43848, "bram": 108},
    "LFE5UM5G-85F": {"luts": 83640, "ffs": 83640, "bram": 208},
}


def run() -> dict:
    from partner.boards.synth import SynthError, synthesize
    from partner.hdl.core import DeviceCore

    builds, failed = {}, {}
    for rules, device in ((16, "LFE5UM5G-45F"), (64, "LFE5UM5G-45F"), (64, "LFE5UM5G-85F")):
        name = f"rules_{rules}" + ("" if device == "LFE5UM5G-45F" else "_85f")
        if device != "LFE5UM5G-45F" and f"rules_{rules}" not in failed:
            continue  # the 85F only for a core the 45F cannot hold
        core = DeviceCore(ports=2, width_bytes=1, rules=rules, queues=2)
        try:
            result = asdict(synthesize(core, name=f"core_w1_r{name.removeprefix('rules_')}",
                                       clocks={"sync": LIMIT_MHZ * 1e6}, device=device,
                                       router=ROUTER))
        except SynthError as error:  # e.g. more block RAMs than the chip has: not placed
            failed[name] = {"device": device, "error": _first_error(str(error))}
            continue
        builds[name] = {
            "device": device,
            "fmax_mhz": result["fmax_mhz"],
            "timing_met_at_150_mhz": result["timing_met"],
            "luts": result["luts"], "ffs": result["ffs"], "bram": result["bram"],
            "lutram": result["lutram"],
            "critical_paths": result["critical_paths"],
            "utilization": result["utilization"],
            "seconds": result["seconds"],
        }
    fmax = {name: b["fmax_mhz"]["sync"] for name, b in builds.items()}
    fits = {name: all(b[k] <= AVAILABLE[b["device"]][k] for k in ("luts", "ffs", "bram"))
            for name, b in builds.items()}
    return {
        "device": "LFE5UM5G-45F-8BG381 (and LFE5UM5G-85F-8BG381 for a core the 45F cannot hold)",
        "core": "DeviceCore(ports=2, width_bytes=1, queues=2), GMII, one 'sync' domain",
        "router": ROUTER,
        "fmax_mhz": fmax,
        "available": AVAILABLE,
        "builds": builds,
        "not_placed": failed,
        "checks": {
            **{f"fmax_{n}": (f, LIMIT_MHZ, f >= LIMIT_MHZ) for n, f in fmax.items()
               if builds[n]["device"] == "LFE5UM5G-45F"},
            **{f"fits_{n}": (int(ok), 1, ok) for n, ok in fits.items()},
            **{f"placed_{n}": (0, 1, False) for n in failed},
        },
    }


def _first_error(log: str) -> str:
    """The line of a failed build's log that says why (nextpnr's ``ERROR:``), else its first."""
    lines = log.splitlines()
    return next((line.strip() for line in lines if "ERROR" in line), lines[0] if lines else "")
