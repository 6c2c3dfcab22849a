"""`partner sim card`: the main job on the simulated card (docs/dma.md, docs/pcie.md).

Builds (once; it is cached under build/sim) the Verilog of `partner.hdl.pcie.card.PcieCard`,
runs sim/card_demo_tb.py on it under cocotb, and returns what it measured: per flow, the frames,
bytes and chunks pulled over PCIe DMA; the pushed pvec; the DMA engine's counters. Outputs in
`out`: flows.pcapng (one interface per flow), port1.pcapng (what the card sent), results.json.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

__all__ = ["CARD", "DEMO_FLOWS", "HOST", "card_demo", "expected_flow", "traffic"]

HOST, CARD = "02:00:00:00:00:01", "02:00:00:00:00:02"


def traffic(rng: random.Random, count: int) -> list[bytes]:
    """A mix a server's NIC might see: DNS, NTP, web, IPv6 pings, ARP and stray UDP."""
    def ip4(src):
        return Ether(src=HOST, dst=CARD) / IP(src=src, dst="10.0.0.2")

    kinds = [
        lambda i: ip4(f"10.0.1.{i % 200 + 1}") / UDP(sport=30000 + i, dport=53)
        / Raw(b"\x12\x34\x01\x00\x00\x01" + rng.randbytes(rng.randint(10, 60))),
        lambda i: ip4("10.0.2.7") / UDP(sport=123, dport=123) / Raw(rng.randbytes(48)),
        lambda i: ip4(f"10.0.3.{i % 50 + 1}") / TCP(sport=40000 + i, dport=80, flags="PA")
        / Raw(b"GET /" + rng.randbytes(rng.randint(0, 1400))),
        lambda i: Ether(src=HOST, dst=CARD) / IPv6(src="fd00::1", dst="fd00::2")
        / ICMPv6EchoRequest(id=7, seq=i, data=rng.randbytes(rng.randint(0, 200))),
        lambda i: Ether(src=HOST, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.0.0.1",
                                                                pdst="10.0.0.2"),
        lambda i: ip4("10.0.4.4") / UDP(sport=5000, dport=9999) / Raw(b"nobody"),
        lambda i: ip4("10.0.5.5") / ICMP() / Raw(rng.randbytes(56)),
    ]
    weights = [30, 10, 25, 15, 5, 10, 5]
    return [bytes(rng.choices(kinds, weights)[0](i)) for i in range(count)]


def expected_flow(frame: bytes) -> str | None:
    """The demo flow a frame belongs to, decided by scapy independently of the device."""
    pkt = Ether(frame)
    if IPv6 in pkt:
        return "ipv6"
    if IP in pkt and UDP in pkt and pkt[UDP].dport in (53, 123):
        return {53: "dns", 123: "ntp"}[pkt[UDP].dport]
    if IP in pkt and TCP in pkt and pkt[TCP].dport == 80:
        return "web"
    return None

# (name, template, attributes): wildcard templates, as an application would open them.
DEMO_FLOWS = [
    ("dns", "eth/ipv4/udp", "dst_port=53"),
    ("ntp", "eth/ipv4/udp", "dst_port=123"),
    ("web", "eth/ipv4/tcp", "dst_port=80"),
    ("ipv6", "eth/ipv6", ""),
]


def card_demo(out, *, frames: int = 200, seed: int = 1) -> dict:
    from partner.hdl.pcie.card import PcieCard
    from partner.sim import verilator

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    job = {"out": str(out.resolve()), "frames": frames, "seed": seed, "flows": DEMO_FLOWS}
    job_path = out / "job.json"
    job_path.write_text(json.dumps(job, indent=2) + "\n")
    model = verilator.build(lambda: PcieCard(ports=2, rules=16, queues=2), name="card")
    model.run(Path(__file__).with_name("card_demo_tb.py"),
              env={"PARTNER_CARD_JOB": os.fspath(job_path.resolve())})
    return json.loads((out / "results.json").read_text())
