"""Datapath figures in simulated cycles (build/bench/datapath.json).

`line_rate`: for the 1G core (width 1, GMII) and the 10G core (width 8, XGMII), frames of 64 ..
9000 bytes: RX (both ports into host queues, four flows each) and TX (host into port 0, four
flows) rates divided by the wire's ceiling, preamble and gap included. Each must be >= 0.999 with
no drops. Also the flow-table lookup latency and the wire-to-host latency of a frame.

Counts are simulated cycles of the Verilog model (Verilator), exact and repeatable.
"""

import json
import os
import tempfile
from pathlib import Path

SIZES = (64, 128, 256, 512, 1024, 1518, 9000)
RULES = 16  # flow-table entries of the benched core
LIMIT = 0.999


def run() -> dict:
    from partner.hdl.core import DeviceCore
    from partner.hdl.flow_table import FlowTable
    from partner.sim import verilator

    bench = Path(__file__).with_name("datapath_tb.py")
    widths = {}
    for width in (1, 8):
        model = verilator.build(
            lambda width=width: DeviceCore(ports=2, width_bytes=width, rules=RULES, queues=2),
            name=f"core_w{width}")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            model.run(bench, env={
                "PARTNER_BENCH_WIDTH": str(width),
                "PARTNER_BENCH_SIZES": ",".join(map(str, SIZES)),
                "PARTNER_BENCH_OUT": os.fspath(out),
            })
            widths[width] = json.loads(out.read_text())
    # The lookup latency of the benched core's flow table (width 1), without building either.
    ways = DeviceCore.default_ways(width_bytes=1, ports=2, rules=RULES)
    line_rate = {
        f"width_{w}": {
            str(size): {"rx": r["rx"][str(size)]["rate_vs_line"],
                        "tx": r["tx"][str(size)]["rate_vs_line"]}
            for size in SIZES
        }
        for w, r in widths.items()
    }
    worst = min(v for per in line_rate.values() for s in per.values() for v in s.values())
    drops = {f"width_{w}": {s: r["rx"][str(s)]["drops"] for s in SIZES if r["rx"][str(s)]["drops"]}
             for w, r in widths.items()}
    for w, r in widths.items():  # TX frames the host gave and the port did not send
        for size in SIZES:
            tx = r["tx"][str(size)]
            if tx["drops"]:  # counted by cause in the TX queue block
                drops[f"width_{w}"].setdefault(size, {}).update(tx["drops"])
            if tx["sent"] != tx["frames"]:
                drops[f"width_{w}"].setdefault(size, {})["tx_not_sent"] = tx["frames"] - tx["sent"]
    no_drops = not any(drops.values())
    return {
        "unit": "rates are achieved / wire ceiling (preamble, SFD and gap counted); latencies in "
                "core clock cycles",
        "line_rate": line_rate,
        "worst_line_rate": worst,
        "drops": drops,
        "flow_table_lookup_latency_cycles": {"entries": RULES, "ways": ways,
                                             "cycles": FlowTable.latency_for(RULES, ways)},
        "port_in_to_queue_out_latency_cycles": {
            f"width_{w}": {s: r["rx"][str(s)]["latency_cycles"] for s in SIZES}
            for w, r in widths.items()
        },
        "details": widths,
        "checks": {
            "line_rate": (worst, LIMIT, worst >= LIMIT),
            "no_drops": (0 if no_drops else 1, 0, no_drops),
        },
    }
