"""The 1G device core synthesised, placed and routed for the ECP5 LFE5UM5G-45F, speed 8
(build/bench/datapath-synth.json): Fmax per clock domain (`fmax_mhz`, limit 150 MHz) and LUT,
FF, block-RAM and LUT-RAM use, with 16 and 64 flow-table entries.

Each rule count is built as the full core (two host queues and the slow path) for the 45F.
When the 45F cannot hold it, the core a 45F board would carry is built instead: one host queue
fewer (every host queue is a flow-queue block of its own, 18 KiB of buffer and a state slot per
rule); and only when that does not fit either, the full core for the ECPIX-5's other chip, the
LFE5UM5G-85F. Builds that were not placed are in `not_placed`, with the tool's reason (or the
time limit, `TIMEOUT_S`, that stopped them).

Uses partner.boards.synth (YoWASP yosys and nextpnr-ecp5 from PyPI, nextpnr's router2: its
router1 does not finish on a core that fills most of the 45F); the component's own cells are
counted apart from the pin-saving harness around it.
"""

from dataclasses import asdict

LIMIT_MHZ = 150.0
ROUTER = "router2"
# A build that has not finished after this long is stopped and counts as not placed: router2
# may iterate without converging on a core that nearly fills the chip. The 16-rule core takes
# about 20 minutes on 2 cores.
TIMEOUT_S = 40 * 60
QUEUES = 2  # host queues of the full core (each also has the slow-path queue)
AVAILABLE = {  # LUT4 sites, flip-flops, DP16KD; TRELLIS_DPR16X4 (one per PFU, six LUT sites)
    "LFE5UM5G-45F": {"luts": 43848, "ffs": 43848, "bram": 108, "lutram": 5481},
    "LFE5UM5G-85F": {"luts": 83640, "ffs": 83640, "bram": 208, "lutram": 10455},
}
# (name suffix, host queues, device), tried in this order until one is placed.
ATTEMPTS = (("", QUEUES, "LFE5UM5G-45F"), ("_q1", 1, "LFE5UM5G-45F"),
            ("_85f", QUEUES, "LFE5UM5G-85F"))


def run() -> dict:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # The rule counts are built side by side, a process each (nextpnr runs on one core): the
    # 64-rule chain alone may take the whole time limit, and more.
    builds, failed = {}, {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        for built, not_placed in pool.map(_build_first_that_places, (16, 64)):
            builds.update(built)
            failed.update(not_placed)
    fmax = {name: b["fmax_mhz"]["sync"] for name, b in builds.items()}
    fits = {name: all(b[k] <= AVAILABLE[b["device"]][k] for k in ("luts", "ffs", "bram",
                                                                    "lutram"))
            for name, b in builds.items()}
    return {
        "device": "LFE5UM5G-45F-8BG381 (LFE5UM5G-85F-8BG381 only for a core no 45F build holds)",
        "core": f"DeviceCore(ports=2, width_bytes=1, queues={QUEUES}), GMII, one 'sync' "
                "domain; '_q1' builds: queues=1",
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


def _build_first_that_places(rules: int) -> tuple[dict, dict]:
    """Try ATTEMPTS in order for `rules`: the first build that places, and the failures."""
    from partner.boards.synth import SynthError, synthesize
    from partner.hdl.core import DeviceCore

    failed = {}
    for suffix, queues, device in ATTEMPTS:
        name = f"rules_{rules}{suffix}"
        core = DeviceCore(ports=2, width_bytes=1, rules=rules, queues=queues)
        try:
            result = asdict(synthesize(core, name=f"core_w1_r{rules}{suffix}",
                                       clocks={"sync": LIMIT_MHZ * 1e6}, device=device,
                                       router=ROUTER, timeout=TIMEOUT_S))
        except SynthError as error:  # e.g. more block RAMs than the chip has: not placed
            failed[name] = {"device": device, "queues": queues,
                            "error": _first_error(str(error))}
            continue
        return {name: {
            "device": device,
            "queues": queues,
            "fmax_mhz": result["fmax_mhz"],
            "timing_met_at_150_mhz": result["timing_met"],
            "luts": result["luts"], "ffs": result["ffs"], "bram": result["bram"],
            "lutram": result["lutram"],
            "critical_paths": result["critical_paths"],
            "utilization": result["utilization"],
            "seconds": result["seconds"],
        }}, failed
    return {}, failed


def _first_error(log: str) -> str:
    """The line of a failed build's log that says why (nextpnr's ``ERROR:``), else its first."""
    lines = log.splitlines()
    return next((line.strip() for line in lines if "ERROR" in line), lines[0] if lines else "")
