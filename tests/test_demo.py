"""`partner demo`: it runs, and its files hold what it says it moved."""

import io
import re
from collections import Counter

from scapy.all import UDP, Ether, rdpcap

from partner.cli import main
from partner.demo import PORTS, run_demo, synthetic_frames, udp_destination_port
from partner.partners.pcap import PcapReader
from partner.pvec import Pvec

ROW = re.compile(r"^\s+(\d+)\s+(\S+)\s+(\d+)\s+(\d+)$", re.MULTILINE)


def read_interfaces(path):
    """(interface names, Counter of messages and of bytes per interface) of a pcapng file."""
    reader = PcapReader(path)
    reader.open("eth")
    messages, nbytes = Counter(), Counter()
    for message in reader.pull_many(100_000):
        messages[message.attrs["port"]] += 1
        nbytes[message.attrs["port"]] += message.pvec.nbytes
    return [i.name for i in reader.interfaces], messages, nbytes


def test_demo_files_hold_the_counts_it_prints(tmp_path):
    out = io.StringIO()
    result = run_demo(str(tmp_path / "demo"), frames=200, stream=out)
    text = out.getvalue()
    assert result["seconds"] < 5
    assert "byte-exact" in text and "200 datagrams sent" in text
    printed = {spec: (int(iface), int(m), int(b)) for iface, spec, m, b in ROW.findall(text)}
    assert set(printed) == {"eth", *(f"eth/ipv4/udp?dst_port={p}" for p in PORTS)}

    files = result["files"]
    for name in ("input", "copy", "flows"):
        assert (tmp_path / "demo" / f"{name}.pcapng").exists()
        assert str(tmp_path / "demo") in text
    assert (tmp_path / "demo" / "input.pcapng").read_bytes() == \
        (tmp_path / "demo" / "copy.pcapng").read_bytes()

    names, messages, nbytes = read_interfaces(files["flows"])
    for spec, (iface, count, size) in printed.items():
        assert names[iface] == spec  # one interface per flow, named by its spec
        assert (messages[iface], nbytes[iface]) == (count, size), spec
    total = sum(count for _, count, _ in printed.values())
    assert total == result["udp_received"] == sum(messages.values())
    printed_total = re.search(r"total\s+(\d+)\s+(\d+)", text)
    assert int(printed_total[1]) == total and int(printed_total[2]) == sum(nbytes.values())

    # each per-port interface holds only frames to its port: the demux was right
    reader = PcapReader(files["flows"])
    reader.open("eth")
    for message in reader.pull_many(100_000):
        spec = names[message.attrs["port"]]
        port = udp_destination_port(message.pvec)
        assert spec == ("eth" if port is None else f"eth/ipv4/udp?dst_port={port}")


def test_synthetic_frames_are_valid_to_scapy(tmp_path):
    run_demo(str(tmp_path), frames=40, stream=io.StringIO())
    frames = rdpcap(str(tmp_path / "input.pcapng"))
    assert [bytes(f) for f in frames] == synthetic_frames(40)
    udp = [f for f in frames if UDP in f]
    assert len(udp) == 38  # every 20th frame is ARP
    for frame in udp:
        rebuilt = Ether(bytes(frame))
        del rebuilt["IP"].chksum, rebuilt[UDP].chksum  # scapy recomputes both
        assert bytes(Ether(bytes(rebuilt))) == bytes(frame)
        assert frame[UDP].dport == udp_destination_port(Pvec.wrap(bytes(frame)))


def test_partner_demo_command(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--frames", "50"]) == 0
    text = capsys.readouterr().out
    assert "50 datagrams sent" in text and (tmp_path / "d" / "flows.pcapng").exists()
