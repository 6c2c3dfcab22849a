"""`partner sim replay`: a user's capture through the simulated device core."""

import json
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap, wrpcap

from partner.cli import main
from partner.partners.pcap import PcapReader

RULES = Path(__file__).resolve().parent.parent / "docs" / "examples" / "demo-rules.json"


def capture(path):
    frames = []
    for i in range(6):
        for port in (53, 123, 9000, 7777):
            frames.append(Ether(src="02:00:00:00:00:01") / IP(dst=f"10.0.0.{i}")
                          / UDP(sport=1000 + i, dport=port) / bytes(20 + 30 * i))
    frames.append(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.1"))
    frames.append(Ether() / IPv6() / UDP(dport=53))
    truncated = bytes(Ether() / IP() / UDP(dport=53))[:30]  # an IPv4 header cut short
    frames.append(Ether(truncated))
    wrpcap(str(path), frames)
    return frames


def test_replay_refuses_bad_input_before_simulating(tmp_path, capsys):
    assert main(["sim", "replay", str(tmp_path / "none.pcap"), "--rules", str(RULES)]) == 1
    assert "does not exist" in capsys.readouterr().err
    pcap = tmp_path / "in.pcap"
    capture(pcap)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"flow": "eth/ipv4", "action": "host", "queue": 9}]}))
    assert main(["sim", "replay", str(pcap), "--rules", str(bad)]) == 1
    assert "rules[0].queue" in capsys.readouterr().err
    assert main(["sim", "replay", str(pcap), "--rules", str(RULES), "--port", "5"]) == 1
    assert "port 5 out of range" in capsys.readouterr().err


@pytest.mark.cocotb
def test_replay_writes_one_capture_per_queue_and_port(tmp_path, capsys):
    pcap = tmp_path / "in.pcap"
    sent = capture(pcap)
    out = tmp_path / "out"
    assert main(["sim", "replay", str(pcap), "--rules", str(RULES), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"replayed {len(sent)} frames" in printed

    counters = json.loads((out / "counters.json").read_text())
    account = counters["account"]
    assert account["unaccounted"] == 0
    assert account["delivered"]["queue1"] == 12  # dns and ntp
    assert account["forwarded"] == 6  # port 9000 out of port 1
    assert account["delivered"]["slowpath"] == 1  # arp
    # 7777, IPv6 and the malformed frame take the default action: queue 0
    assert account["delivered"]["queue0"] == 8
    assert counters["outputs"]["queue1"] == {"demux_key=53": 6, "demux_key=123": 6}

    dns = [bytes(p) for p in rdpcap(str(out / "queue1.pcapng")) if UDP in p and p[UDP].dport == 53]
    assert dns == [bytes(f) for f in sent if UDP in f and IP in f and f[UDP].dport == 53]
    forwarded = PcapReader(str(out / "port1.pcapng"))
    forwarded.shutdown()
    assert len(rdpcap(str(out / "port1.pcapng"))) == 6
