"""cocotb side of the datapath benchmark (bench/datapath.py): line rate in simulated cycles.

RX: both ports receive back-to-back frames at line rate (cocotbext-eth sources, preamble and
minimum gap on the wire), spread over four flows per port, each port's flows delivered to its own
host queue whose consumer is always ready. TX: the host pushes frames for four TX flows of port 0
as fast as the device takes them (no window: the core holds them back while it has no room).
Rates are measured between the first and the last frame, in cycles of the core clock, against
the wire's ceiling of `size + 20` byte times per frame (preamble, SFD and gap included; `size`
counts the FCS). The results go to the JSON file named in PARTNER_BENCH_OUT.
"""

import inspect
import json
import os

import cocotb
from cocotb.utils import get_sim_steps, get_sim_time
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from partner.formats import ActionKind
from partner.hdl.core import DeviceCore
from partner.rules import Rule, RuleTable
from partner.sim.device import CLOCK_NS, DeviceHarness

WIDTH = int(os.environ["PARTNER_BENCH_WIDTH"])
SIZES = [int(s) for s in os.environ["PARTNER_BENCH_SIZES"].split(",")]
BYTES_PER_SIZE = int(os.environ.get("PARTNER_BENCH_BYTES", "40000"))
PORTS, QUEUES, FLOWS_PER_PORT = 2, 2, 4
_CORE = inspect.signature(DeviceCore).parameters
RULES, TX_FLOWS = 16, _CORE["tx_flows"].default
QUEUE_DROPS = ("drop_quota", "drop_nobuf")  # per-flow counters of the flow-queue blocks


def udp_frame(size: int, port: int, flow: int, seq: int) -> bytes:
    """A frame of `size` bytes on the wire counting the FCS (so size - 4 bytes here)."""
    head = Ether(src=f"02:00:00:00:00:{port + 1:02x}") / IP(dst="10.0.0.1") / UDP(
        sport=seq & 0xFFFF, dport=1000 + port * 16 + flow)
    return bytes(head / bytes(size - 4 - len(head)))


def line_cycles(size: int) -> float:
    return (size + 20) / WIDTH


@cocotb.test()
async def line_rate(dut):
    harness = DeviceHarness(dut, ports=PORTS, width_bytes=WIDTH, queues=QUEUES)
    control = await harness.start()
    await harness.control(control.set_mtu, 9000)
    await harness.control(control.open_all_queues, 1 << 21)
    table = RuleTable(16, ports=PORTS, queues=QUEUES)
    for port in range(PORTS):
        for flow in range(FLOWS_PER_PORT):
            table.add(Rule(f"eth/ipv4/udp?dst_port={1000 + port * 16 + flow}", ActionKind.HOST,
                           queue=port, demux_key=port * 16 + flow))
    await harness.control(control.load_table, table)

    results = {"width_bytes": WIDTH, "clock_ns": CLOCK_NS[WIDTH], "rx": {}, "tx": {}}
    for size in SIZES:
        count = max(8, BYTES_PER_SIZE // size)
        results["rx"][size] = await _rx(harness, control, size, count)
        results["tx"][size] = await _tx(harness, control, size, count)
    with open(os.environ["PARTNER_BENCH_OUT"], "w") as f:
        json.dump(results, f, indent=2)


async def _queue_drops(harness, control, tx):
    """Drops by cause of every flow of the RX queue blocks (host queues and the slow path) or
    of the TX blocks, summed over each block's flows: {"rx_queue0_drop_nobuf": n, ...}."""
    units, flows = (PORTS, TX_FLOWS + PORTS) if tx else (QUEUES + 1, RULES + 1)
    totals = {}
    for unit in range(units):
        for flow in range(flows):
            counters = await harness.control(control.queue_counters, tx=tx, unit=unit, flow=flow)
            for cause in QUEUE_DROPS:
                key = f"{'tx' if tx else 'rx'}_queue{unit}_{cause}"
                totals[key] = totals.get(key, 0) + counters[cause]
    return totals


def _moved(before, after):
    return {name: (after[name] - before[name]) & 0xFFFFFFFF for name in after
            if after[name] != before[name]}


async def _rx(harness, control, size, count):
    before = [await harness.control(control.port_counters, p) for p in range(PORTS)]
    queues_before = await _queue_drops(harness, control, tx=False)
    started = get_sim_time()  # the sources start sending at once, back to back
    for seq in range(count):
        for port in range(PORTS):
            await harness.send(port, udp_frame(size, port, seq % FLOWS_PER_PORT, seq))
    for _ in range(count * int(line_cycles(size)) // 100 + 200):
        if all(len(harness.host_queues[q].frames) >= count for q in range(PORTS)):
            break
        await harness.idle(200)
    rates, latencies, delivered = {}, [], {}
    for port in range(PORTS):
        frames = harness.received(port)
        delivered[port] = len(frames)
        assert all(len(f.data) == size - 4 for f in frames)
        # Frames that did not arrive are in `drops` (counted by cause) and fail the check; the
        # rate is that of the frames that did.
        span = frames[-1].cycle - frames[0].cycle if len(frames) > 1 else 0
        rates[port] = (len(frames) - 1) * line_cycles(size) / span if span else 0.0
        period = get_sim_steps(CLOCK_NS[WIDTH], "ns")
        # Port in (the frame's last byte on the wire; frame k starts k wire periods after the
        # sources started) to queue out (its last beat delivered to the host queue).
        latencies += [(f.time - started) / period - (k * (size + 20) + 8 + size) / WIDTH
                      for k, f in enumerate(frames)]
    after = [await harness.control(control.port_counters, p) for p in range(PORTS)]
    # Every counter that drops frames on the way in: the ports' (MAC, receive FIFO, lookup,
    # dispatcher) and the flow-queue blocks' per-flow ones (quota, no buffer).
    drops = {
        f"port{p}_{name}": n for p in range(PORTS)
        for name, n in _moved(before[p], after[p]).items()
        if name.startswith("rx_") and name not in ("rx_frames", "rx_bytes")
    }
    drops.update(_moved(queues_before, await _queue_drops(harness, control, tx=False)))
    latencies.sort()
    # Never silent: frames missing that no counter accounts for are reported as such.
    unaccounted = sum(count - n for n in delivered.values()) - sum(drops.values())
    if unaccounted > 0:
        drops["unaccounted"] = unaccounted
    return {"frames_per_port": count, "delivered": delivered,
            "rate_vs_line": min(rates.values()), "per_port": rates, "drops": drops,
            "latency_cycles": {"min": latencies[0], "median": latencies[len(latencies) // 2],
                               "max": latencies[-1]}}


async def _tx(harness, control, size, count):
    sink = harness.sinks[0]
    queues_before = await _queue_drops(harness, control, tx=True)
    # The host just pushes: the core holds its frames back (tx.ready low) while the port's TX
    # queue block has no cells for them, and never drops one for lack of buffer.
    for seq in range(count):
        await harness.host_send(udp_frame(size, 0, seq % FLOWS_PER_PORT, seq), port=0,
                                flow=seq % FLOWS_PER_PORT)
    for _ in range(count * int(line_cycles(size)) // 100 + 200):
        if sink.count() >= count:
            break
        await harness.idle(200)
    frames = [sink.recv_nowait() for _ in range(sink.count())]
    period = get_sim_steps(CLOCK_NS[WIDTH], "ns")
    span = (frames[-1].sim_time_start - frames[0].sim_time_start) / period if frames else 0
    drops = _moved(queues_before, await _queue_drops(harness, control, tx=True))
    return {"frames": count, "sent": len(frames), "drops": drops,
            "rate_vs_line": (len(frames) - 1) * line_cycles(size) / span if span else 0.0,
            "fcs_ok": all(f.check_fcs() for f in frames)}
