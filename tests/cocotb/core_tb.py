"""System tests of the device core: real MAC peers, scapy traffic, the real host driver.

Run by tests/test_core.py through partner.sim.verilator; the DUT is DeviceCore(ports=2,
width_bytes=WIDTH, rules=16, queues=2). Every frame sent is accounted for: delivered to a host
queue, sent out of a port, or counted as dropped with its cause.
"""

import os

import cocotb
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from partner.formats import ActionKind
from partner.regmap import CounterBlock
from partner.rules import Action, Rule, RuleTable
from partner.sim.device import DeviceHarness

WIDTH = int(os.environ.get("PARTNER_CORE_WIDTH", "1"))
PORTS, QUEUES, RULES = 2, 2, 16
SLOWPATH = QUEUES
DROPPER = "02:00:00:00:00:66"


def frame(packet) -> bytes:
    return bytes(packet)


def udp(dport, *, src="10.0.0.1", dst="10.0.0.2", payload=b"x" * 40, vlan=None):
    packet = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    if vlan is not None:
        packet = packet / Dot1Q(vlan=vlan)
    return frame(packet / IP(src=src, dst=dst) / UDP(sport=1234, dport=dport) / payload)


def rules_table() -> RuleTable:
    table = RuleTable(RULES, ports=PORTS, queues=QUEUES,
                      default=Action(ActionKind.HOST, queue=0, demux_key=0))
    table.add(Rule("eth/ipv4/udp?dst_port=53", ActionKind.HOST, queue=1, demux_key=53,
                   priority=10))
    table.add(Rule("eth/ipv6", ActionKind.FORWARD, port=1))
    table.add(Rule("eth/arp", ActionKind.SLOWPATH))
    table.add(Rule(f"eth?src_mac={DROPPER}", ActionKind.DROP, priority=20))
    return table


async def bring_up(dut):
    harness = DeviceHarness(dut, ports=PORTS, width_bytes=WIDTH, queues=QUEUES)
    control = await harness.start()
    await harness.control(control.open_all_queues, 64 * 1024)
    await harness.control(control.load_table, rules_table())
    return harness, control


async def wait_for(harness, condition, limit=200_000, step=500):
    for _ in range(limit // step):
        if condition():
            return
        await harness.idle(step)
    raise AssertionError("timed out waiting for the device")


@cocotb.test()
async def demux_delivers_forwards_and_drops(dut):
    harness, control = await bring_up(dut)
    assert control.config["ports"] == PORTS and control.config["rules"] == RULES

    dns = udp(53)
    web = udp(80)
    tagged_dns = udp(53, vlan=7)
    v6 = frame(Ether(src="02:00:00:00:00:01") / IPv6(src="fe80::1", dst="fe80::2")
               / TCP(dport=22))
    arp = frame(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.9"))
    dropped = frame(Ether(src=DROPPER) / IP() / UDP(dport=53))
    jumbo_ok = udp(9, payload=bytes(1400))
    for packet in (dns, web, tagged_dns, v6, arp, dropped, jumbo_ok):
        await harness.send(0, packet)

    def delivered():
        return (len(harness.host_queues[1].frames) >= 2 and len(harness.host_queues[0].frames) >= 2
                and len(harness.host_queues[SLOWPATH].frames) >= 1)

    await wait_for(harness, delivered)
    await harness.idle(2000)

    dns_frames = harness.received(1)
    assert [len(f.data) for f in dns_frames] == [len(dns), len(tagged_dns)]
    assert [f.data for f in dns_frames] == [dns, tagged_dns]
    for f in dns_frames:
        assert f.action["demux_key"] == 53 and f.meta["hit"] == 1
        assert f.meta["in_port"] == 0 and f.meta["length"] == len(f.data)
    defaults = harness.received(0)
    assert [f.data[:len(web)] for f in defaults[:1]] == [web]
    assert defaults[1].data[:len(jumbo_ok)] == jumbo_ok
    assert all(f.meta["hit"] == 0 for f in defaults)
    slow = harness.received(SLOWPATH)
    assert [f.data[:len(arp)] for f in slow] == [arp]

    await wait_for(harness, lambda: not harness.sinks[1].empty())
    out = harness.transmitted(1)
    assert [f[:len(v6)] for f in out] == [v6]

    counters = await harness.control(control.port_counters, 0)
    assert counters["rx_frames"] == 7
    assert counters["rx_dropped_by_rule"] == 1
    hits = await harness.control(control.rule_hits, 0)
    assert hits == 2  # the two DNS frames


@cocotb.test()
async def bad_frames_are_counted_not_delivered(dut):
    harness, control = await bring_up(dut)
    good = udp(80)
    corrupt = bytearray(udp(80, payload=b"y" * 40))
    from cocotbext.eth import GmiiFrame, XgmiiFrame

    cls = GmiiFrame if WIDTH == 1 else XgmiiFrame
    bad_fcs = cls.from_payload(bytes(corrupt))
    bad_fcs.data[-1] ^= 0xFF  # break the FCS
    await harness.sources[0].send(bad_fcs)
    runt = cls.from_payload(good[:20], min_len=0)  # 24 bytes with FCS
    await harness.sources[0].send(runt)
    await harness.send(0, good)
    await wait_for(harness, lambda: len(harness.host_queues[0].frames) >= 1)
    await harness.idle(500)
    assert [f.data[:len(good)] for f in harness.received(0)] == [good]
    counters = await harness.control(control.port_counters, 0)
    assert counters["rx_fcs_errors"] == 1
    assert counters["rx_runts"] == 1
    assert counters["rx_frames"] == 1
    kinds = {(e["kind"], e["unit"]) for e in harness.events}
    assert (1, 0) in kinds  # RX_ERROR on port 0
    assert (0, 0) in kinds  # LINK_UP on port 0


@cocotb.test()
async def host_transmit_and_refused_settings(dut):
    harness, control = await bring_up(dut)
    payload = udp(5000, payload=bytes(range(200)))
    await harness.host_send(payload, port=0, flow=3)
    await harness.host_send(payload, port=1, flow=0)
    await harness.host_send(payload, port=7, flow=0)  # no such port: dropped and counted
    await wait_for(harness, lambda: not harness.sinks[0].empty() and not harness.sinks[1].empty())
    assert [f[:len(payload)] for f in harness.transmitted(0)] == [payload]
    assert [f[:len(payload)] for f in harness.transmitted(1)] == [payload]
    counters = await harness.control(control.port_counters, 0)
    assert counters["tx_frames"] == 1
    assert counters["tx_host_dropped"] == 1
    queue = await harness.control(control.queue_counters, tx=True, unit=0, flow=3)
    assert queue["enq_frames"] == 1 and queue["deq_frames"] == 1

    from partner.device_control import DeviceError

    def bad_rule():
        control.write_rule(RULES, 0)  # one past the table

    try:
        await harness.control(bad_rule)
    except DeviceError as error:
        assert "out of range" in str(error)
    else:
        raise AssertionError("an out-of-range rule index was accepted")

    def raw_bad_index():
        control.write("rule_write", RULES + 3)
        return control.status()

    status = await harness.control(raw_bad_index)
    assert status["bad_rule_index"] == 1  # the gateware flags what the driver would refuse

    def raw_bad_counter():
        control.write("counter_select", (7 << 6) | (int(CounterBlock.PORT)))
        control.read("counter_select")
        return control.status()

    status = await harness.control(raw_bad_counter)
    assert status["bad_counter_select"] == 1
