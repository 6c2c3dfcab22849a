"""cocotb side of `partner sim replay`: one job, described by the JSON file named in
PARTNER_REPLAY_JOB (written by `partner.sim.replay`).

The host driver loads the rules and opens every queue, the capture's frames go into one Ethernet
port back to back, and when the device has been quiet long enough every host queue and every
output port is written as a pcapng file (one interface per demux key or flow), with the device's
counters in counters.json.
"""

import json
import os
from pathlib import Path

import cocotb

from partner import EndOfStream, Pvec
from partner.partners.pcap import PcapReader, PcapWriter
from partner.regmap import CounterBlock
from partner.rules import load_rules
from partner.sim.device import DeviceHarness

QUIET_CYCLES = 2000


def _frames(capture: str):
    reader = PcapReader(capture)
    key = reader.open(reader.default_template)
    frames = []
    try:
        while True:
            message = reader.pull()
            if message is None:
                break
            frames.append(message.pvec.tobytes())
    except EndOfStream:
        pass
    finally:
        reader.close(key)
        reader.shutdown()
    return frames


@cocotb.test()
async def replay(dut):
    job = json.loads(Path(os.environ["PARTNER_REPLAY_JOB"]).read_text())
    out = Path(job["out"])
    harness = DeviceHarness(dut, ports=job["ports"], width_bytes=job["width"],
                            queues=job["queues"])
    control = await harness.start()
    table = load_rules(job["rules"], entries=job["rules_entries"], ports=job["ports"],
                       queues=job["queues"])
    await harness.control(control.set_mtu, job["mtu"])
    await harness.control(control.open_all_queues, job["quota"])
    await harness.control(control.load_table, table)

    frames = _frames(job["capture"])
    for frame in frames:
        await harness.send(job["port"], frame)

    # Quiet: the source has sent everything and nothing new came out for a while.
    seen = -1
    while True:
        await harness.idle(QUIET_CYCLES)
        delivered = sum(len(q.frames) for q in harness.host_queues)
        sent_out = sum(sink.count() for sink in harness.sinks)
        now = (delivered, sent_out, len(harness.events))
        if harness.sources[job["port"]].empty() and now == seen:
            break
        seen = now

    outputs = {}
    for q in range(job["queues"] + 1):
        frames_q = harness.received(q)
        name = "slowpath" if q == job["queues"] else f"queue{q}"
        outputs[name] = _write(out / f"{name}.pcapng", frames_q,
                               key=lambda f: f"demux_key={f.action['demux_key']}")
    for p in range(job["ports"]):
        frames_p = harness.transmitted(p)
        outputs[f"port{p}"] = _write(out / f"port{p}.pcapng",
                                     [(None, f) for f in frames_p], key=None)

    counters = {
        "frames_in": len(frames),
        "ports": {p: await harness.control(control.port_counters, p)
                  for p in range(job["ports"])},
        "rules": {i: await harness.control(control.rule_hits, i)
                  for i in range(job["rules_entries"])},
        "queues": {
            q: {f: await harness.control(control.counters, CounterBlock.RX_QUEUE, q, f)
                for f in range(job["rules_entries"] + 1)}
            for q in range(job["queues"] + 1)
        },
        "lookups": await harness.control(control.read, "lookups"),
        "status": await harness.control(control.status),
        "events": [{k: int(v) for k, v in e.items()} for e in harness.events],
        "outputs": outputs,
    }
    (out / "counters.json").write_text(json.dumps(counters, indent=2, default=int) + "\n")


def _write(path, frames, key):
    """Write frames to a pcapng file, one interface per `key(frame)`; returns counts per key."""
    writer = PcapWriter(str(path))
    keys, counts = {}, {}
    try:
        for item in frames:
            if isinstance(item, tuple):
                _, data = item
                name = "all"
            else:
                data = item.data
                name = key(item)
            if name not in keys:
                keys[name] = writer.open("eth", {"name": name})
                counts[name] = 0
            writer.push(keys[name], {}, Pvec.wrap(data))
            counts[name] += 1
    finally:
        writer.shutdown()
    return counts
