"""`partner sim replay`: a user's capture through the simulated device core.

The frames of a pcap/pcapng file go into one Ethernet port of the device core (the Verilog of
`partner.hdl.core.DeviceCore`, run by Verilator under cocotb), programmed by the host driver from
a rules file (docs/rules.md). The result is one pcapng per host queue (an interface per demux
key), one for the slow path, one per output port, and counters.json with the device's counters
and an account of every frame: delivered, forwarded, or dropped with its cause.

Inputs are checked before the simulator starts, so a wrong path or a bad rule costs a second,
not a model build.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from partner.errors import PartnerError
from partner.partners.pcap import PcapReader
from partner.rules import load_rules

__all__ = ["ReplayError", "account", "replay"]

_DROP_CAUSES = (
    "rx_fcs_errors", "rx_runts", "rx_giants", "rx_phy_errors", "rx_preamble_errors",
    "rx_fifo_overflows", "rx_lookup_backlog_drops", "rx_dropped_by_rule",
    "rx_dropped_bad_action",
)


class ReplayError(PartnerError):
    """A replay that cannot start or did not account for every frame."""


def replay(capture, *, rules, out, port: int = 0, width: int = 1, ports: int = 2,
           queues: int = 2, rules_entries: int = 16, mtu: int = 9000) -> dict:
    """Run the replay; returns the counters written to `out`/counters.json."""
    capture, out = Path(capture), Path(out)
    if not 0 <= port < ports:
        raise ReplayError(f"port {port} out of range: the simulated device has {ports} ports")
    if not capture.is_file():
        raise ReplayError(f"capture {capture} does not exist")
    reader = PcapReader(str(capture))  # a corrupt header fails here, with the offset
    reader.shutdown()
    load_rules(rules, entries=rules_entries, ports=ports, queues=queues)  # RuleError names rules[i]
    out.mkdir(parents=True, exist_ok=True)

    from partner.hdl.core import DeviceCore
    from partner.sim import verilator

    core = DeviceCore(ports=ports, width_bytes=width, rules=rules_entries, queues=queues)
    job = {
        "capture": str(capture.resolve()), "rules": str(Path(rules).resolve()),
        "out": str(out.resolve()), "port": port, "width": width, "ports": ports,
        "queues": queues, "rules_entries": rules_entries, "mtu": mtu,
        "quota": core.cells * core.cell_bytes,
    }
    job_path = out / "job.json"
    job_path.write_text(json.dumps(job, indent=2) + "\n")
    model = verilator.build(core, name=f"core_w{width}")
    model.run(Path(__file__).with_name("replay_tb.py"),
              env={"PARTNER_REPLAY_JOB": os.fspath(job_path.resolve())})
    counters = json.loads((out / "counters.json").read_text())
    counters["account"] = account(counters, queues=queues)
    (out / "counters.json").write_text(json.dumps(counters, indent=2) + "\n")
    if counters["account"]["unaccounted"]:
        raise ReplayError(f"{counters['account']['unaccounted']} frames are unaccounted for; "
                          f"see {out / 'counters.json'}")
    return counters


def account(counters: dict, *, queues: int) -> dict:
    """Where every frame went: delivered per queue, forwarded, dropped by cause."""
    outputs = counters["outputs"]
    delivered = {name: sum(by_key.values()) for name, by_key in outputs.items()
                 if not name.startswith("port")}
    forwarded = sum(sum(by_key.values()) for name, by_key in outputs.items()
                    if name.startswith("port"))
    drops = {cause: sum(int(p[cause]) for p in counters["ports"].values())
             for cause in _DROP_CAUSES}
    queue_drops = sum(int(c["drop_quota"]) + int(c["drop_nobuf"])
                      for per_flow in counters["queues"].values() for c in per_flow.values())
    drops["queue_quota_or_buffer"] = queue_drops
    total = sum(delivered.values()) + forwarded + sum(drops.values())
    return {
        "frames_in": counters["frames_in"],
        "delivered": delivered,
        "forwarded": forwarded,
        "dropped": {k: v for k, v in drops.items() if v},
        "unaccounted": counters["frames_in"] - total,
    }
