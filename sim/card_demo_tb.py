"""cocotb side of `partner sim card` (sim/card_demo.py): the main job on the simulated card.

The host driver opens flows with wildcard templates through the root complex; scapy traffic
enters port 0 through cocotbext-eth; every frame the device delivers is pulled as a pvec over
PCIe DMA and written, still in the DMA buffer (zero copy), into its flow's pcapng interface; a
pvec of several chunks is pushed out of port 1, whose wire is captured too. Results go to
``results.json`` for the command to print.
"""

import json
import os
import random
from collections import Counter
from pathlib import Path

import cocotb
from cocotb.task import bridge
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from partner.partners.pcap import PcapWriter
from partner.pvec import Pvec
from partner.regmap import CounterBlock
from partner.sim.card import CardHarness
from partner.sim.card_demo import CARD, HOST, expected_flow, traffic


@cocotb.test()
async def card_demo(dut):
    job = json.loads(Path(os.environ["PARTNER_CARD_JOB"]).read_text())
    out = Path(job["out"])
    rng = random.Random(job["seed"])
    card = CardHarness(dut, seed=job["seed"])
    await card.start()
    # Rings of 256 pvecs per queue: the host keeps up with a burst at line rate.
    dev = await bridge(card.open_driver)(rx_moderation=(8, 20), rx_log2=8, tx_log2=5,
                                         buffers=1024)

    flows, wkeys = {}, {}
    writer = PcapWriter(str(out / "flows.pcapng"))
    for name, template, attrs in job["flows"]:
        key = await bridge(dev.open)(template, attrs)
        flows[key] = name
        wkeys[key] = writer.open(template, attrs)  # the interface is named by the flow spec
    frames = traffic(rng, job["frames"])
    # What each flow should get, decided by scapy from the frames alone.
    expected = Counter(expected_flow(frame) for frame in frames)
    table = {key: {"flow": name, "frames": 0, "bytes": 0, "chunks": 0,
                   "expected_frames": expected[name]} for key, name in flows.items()}

    def pull_until_idle():
        while batch := dev.pull_many(256, timeout=300e-6):
            for message in batch:
                row = table[message.key]
                row["frames"] += 1
                row["bytes"] += len(message.pvec)
                row["chunks"] += len(message.pvec.chunks)
                # Straight from DMA memory into the file; the writer frees the pvec when it is
                # written, and its buffers go back to the device's free ring.
                writer.push(wkeys[message.key], {}, message.pvec)

    # The host pulls while the frames arrive, as an application would.
    puller = cocotb.start_soon(bridge(pull_until_idle)())
    await card.send(0, frames)
    await puller

    # A reply built in pieces, the way a stack would: header and payload in separate device
    # buffers, pushed as one pvec of three chunks out of port 1.
    reply = bytes(Ether(src=CARD, dst=HOST) / IP(src="10.0.0.2", dst="10.0.1.1")
                  / UDP(sport=53, dport=30000) / Raw(b"\x12\x34\x81\x80" + bytes(range(200))))
    dns = next(key for key, name in flows.items() if name == "dns")

    def push_reply():
        pvec = Pvec()
        for start, end in ((0, 14), (14, 42), (42, len(reply))):
            buffer = dev.alloc(end - start)
            buffer.chunks[0].view[:] = reply[start:end]
            pvec.extend(buffer)
        dev.push(dns, {"port": 1}, pvec)
        return len(pvec.chunks)

    chunks = await bridge(push_reply)()
    sent = await card.transmitted(1, 1)
    port1 = PcapWriter(str(out / "port1.pcapng"))
    key = port1.open("eth")
    for frame in sent:
        port1.push(key, {}, Pvec.wrap(frame))
    port1.shutdown()
    writer.shutdown()

    def queue_drops():
        """Per flow, the frames its queue dropped early (quota or buffer): device counters."""
        drops = {}
        for key, name in flows.items():
            state = dev.flow(key).state
            total = 0
            for index in state.indices:
                c = dev.core.counters(CounterBlock.RX_QUEUE, unit=state.queue, index=index)
                total += c["drop_quota"] + c["drop_nobuf"]
            drops[name] = total
        return drops

    drops = await bridge(queue_drops)()
    for row in table.values():
        row["dropped_early"] = drops[row["flow"]]
    counters = await bridge(dev.ctl)(None, "counters")
    await bridge(dev.shutdown)()
    results = {
        "frames_sent": len(frames),
        "flows": list(table.values()),
        "pushed": {"chunks": chunks, "bytes": len(reply), "port": 1,
                   "on_the_wire": sent == [reply]},
        "dma_counters": counters,
        "simulated_ns": int(cocotb.utils.get_sim_time("ns")),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    assert sent == [reply], "the pushed pvec did not leave port 1 intact"
    for row in table.values():  # exact accounting: delivered or dropped early, and counted
        assert row["frames"] + row["dropped_early"] == row["expected_frames"], row
