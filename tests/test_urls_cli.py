"""Partner URLs and the `partner` command line, in-process and as a subprocess."""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import partner
from partner import Direction, UrlError
from partner.cli import SUBCOMMANDS, main
from partner.partners.file import FilePartner
from partner.partners.pcap import PcapReader, PcapWriter
from partner.partners.sockets import TcpPartner, UdpPartner
from partner.partners.urls import SCHEMES, open_partner, parse_url, register_scheme
from partner.pvec import Pvec


@pytest.mark.parametrize(("url", "role", "message"), [
    ("", "source", "empty partner URL"),
    ("data.bin", "source", "has no scheme .*known schemes: file, pcap"),
    ("gopher://x", "source", "unknown scheme 'gopher'.*known schemes: file, pcap, pcapng, tcp"),
    ("file:", "source", "has no path"),
    ("file://server/x", "source", "host 'server' is not supported"),
    ("file:x?chunk=big", "sink", "chunk='big' is not an integer"),
    ("file:x?append=maybe", "sink", "append='maybe' is not a yes/no value"),
    ("file:x?color=red", "sink", "unknown query option 'color'.*append, chunk"),
    ("file:x?chunk", "sink", "malformed query 'chunk'"),
    ("file:x?chunk=1&chunk=2", "sink", "'chunk' given twice"),
    ("udp:127.0.0.1:9", "source", r"expected udp://HOST:PORT \(missing '//'\)"),
    ("udp://127.0.0.1", "source", "missing port in '127.0.0.1'"),
    ("udp://127.0.0.1:99999", "source", "malformed port '99999'"),
    ("udp://127.0.0.1:http", "source", "malformed port 'http'"),
    ("udp://:9000", "sink", "missing host"),
    ("udp://host name:9000", "sink", "malformed host 'host name'"),
    ("udp://127.0.0.1:0", "sink", "port 0 cannot be a destination"),
    ("tcp://127.0.0.1:80/index.html", "source", "unexpected path '/index.html'"),
    ("udp://127.0.0.1:0?dst_port=70000", "source", "flow attribute 'dst_port'"),
    ("udp://127.0.0.1:0?flow=eth/bogus", "source", "unknown layer 'bogus'"),
    ("pcap:x?linktype=ether", "sink", "linktype='ether' is not an integer"),
])
def test_bad_urls_say_what_is_wrong(tmp_path, monkeypatch, url, role, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UrlError, match=message) as info:
        open_partner(url, role=role)
    assert "\n" not in str(info.value)


def test_unknown_role_is_refused():
    with pytest.raises(UrlError, match="role must be one of source, sink"):
        open_partner("file:x", role="both")


def test_each_scheme_makes_its_partner(tmp_path):
    (tmp_path / "in").write_bytes(b"data")
    PcapWriter(tmp_path / "c.pcapng").shutdown()
    made = [
        (open_partner(f"file:{tmp_path}/in"), FilePartner, Direction.OUT),
        (open_partner(f"file://{tmp_path}/out?chunk=4096", role="sink"), FilePartner, Direction.IN),
        (open_partner("udp://127.0.0.1:0"), UdpPartner, Direction.OUT),
        (open_partner("udp://127.0.0.1:9", role="sink"), UdpPartner, Direction.IN),
        (open_partner("tcp-listen://127.0.0.1:0"), TcpPartner, Direction.BOTH),
        (open_partner("tcp://127.0.0.1:0?listen=1", role="sink"), TcpPartner, Direction.BOTH),
        (open_partner(f"pcapng:{tmp_path}/c.pcapng"), PcapReader, Direction.OUT),
        (open_partner(f"pcap:{tmp_path}/c.pcapng"), PcapReader, Direction.OUT),  # by magic
        (open_partner(f"pcap:{tmp_path}/w.pcap?linktype=101", role="sink"), PcapWriter,
         Direction.IN),
    ]
    try:
        for partner_, kind, direction in made:
            assert isinstance(partner_, kind) and partner_.direction == direction, partner_
        assert made[1][0].chunk_size == 4096 and made[8][0].linktype == 101
        assert made[4][0].listener is not None and made[5][0].listener is not None
    finally:
        for partner_, _, _ in made:
            partner_.shutdown()


def test_query_sets_the_default_flow():
    udp = open_partner("udp://127.0.0.1:0?src_port=5000")
    try:
        assert udp.default_template == "udp?src_port=5000"
    finally:
        udp.shutdown()
    udp = open_partner("udp://127.0.0.1:0?flow=ipv4/udp&src_ip=10.0.0.0/8")
    try:
        assert udp.default_template == "ipv4/udp?src_ip=10.0.0.0/8"
    finally:
        udp.shutdown()


def test_schemes_are_a_registry(tmp_path):
    def loopback(url, role):
        return FilePartner(tmp_path / url.rest, "r" if role == "source" else "w")

    register_scheme("test-scheme", loopback, syntax="test-scheme:NAME", help="for this test")
    try:
        sink = open_partner("test-scheme:made", role="sink")
        sink.shutdown()
        assert (tmp_path / "made").exists()
        assert parse_url("test-scheme:made?x=1").query == {"x": "1"}
        with pytest.raises(ValueError, match="registered already"):
            register_scheme("test-scheme", loopback, syntax="", help="")
    finally:
        del SCHEMES["test-scheme"]


# --- the command line ------------------------------------------------------------------------


def test_version_and_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"partner {partner.__version__}"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for sub in SUBCOMMANDS:
        assert sub.name in out
    assert "udp://HOST:PORT" in out and "tcp-listen://HOST:PORT" in out
    assert main([]) == 2  # a subcommand is required: a usage error
    assert "required" in capsys.readouterr().err


def test_connect_copies_a_file_byte_exact(tmp_path, capsys):
    data = os.urandom(300_001)
    (tmp_path / "a").write_bytes(data)
    assert main(["connect", f"file:{tmp_path}/a", f"file:{tmp_path}/b"]) == 0
    assert (tmp_path / "b").read_bytes() == data
    assert "moved 5 messages, 300001 bytes" in capsys.readouterr().out


def test_connect_pcap_to_pcapng_with_count_and_flow(tmp_path, capsys):
    with PcapWriter(tmp_path / "x.pcap", "pcap") as writer:
        key = writer.open("eth")
        for i in range(10):
            writer.push(key, {"timestamp": (i + 1) * 10**9}, Pvec.wrap(bytes([i]) * 64))
    assert main(["connect", f"pcap:{tmp_path}/x.pcap", f"pcapng:{tmp_path}/y.pcapng"]) == 0
    assert main(["connect", f"pcap:{tmp_path}/x.pcap", f"pcapng:{tmp_path}/z.pcapng",
                 "--count", "4", "--flow", "eth?in_port=0"]) == 0
    out = capsys.readouterr().out
    assert "moved 10 messages, 640 bytes" in out and "moved 4 messages, 256 bytes" in out
    for name, count in (("y", 10), ("z", 4)):
        reader = PcapReader(tmp_path / f"{name}.pcapng")
        reader.open("eth")
        messages = reader.pull_many(100)
        assert [m.pvec.tobytes() for m in messages] == [bytes([i]) * 64 for i in range(count)]
        assert [m.attrs["timestamp"] for m in messages] == [(i + 1) * 10**9 for i in range(count)]
    assert [i.name for i in reader.interfaces] == ["eth?in_port=0"]


def test_connect_udp_source_stops_after_count(tmp_path, capsys):
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # free again for the command to bind
    result = []
    command = threading.Thread(target=lambda: result.append(main([
        "connect", f"udp://127.0.0.1:{port}", f"file:{tmp_path}/got", "--count", "3",
        "--timeout", "10"])))
    command.start()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        while command.is_alive():
            sender.sendto(b"datagram!", ("127.0.0.1", port))
            time.sleep(0.01)
    finally:
        sender.close()
        command.join()
    assert result == [0]
    assert (tmp_path / "got").read_bytes() == b"datagram!" * 3
    assert "moved 3 messages, 27 bytes" in capsys.readouterr().out


def test_bad_scheme_and_missing_file_exit_with_one_line(tmp_path, capsys):
    assert main(["connect", "bogus:x", f"file:{tmp_path}/y"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown scheme 'bogus'" in err and "known schemes" in err
    assert main(["connect", f"file:{tmp_path}/missing", f"file:{tmp_path}/y"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"partner connect: error: file partner: no such file '{tmp_path}/missing'"
    (tmp_path / "keep").write_bytes(b"old contents")
    assert main(["connect", f"file:{tmp_path}/y", f"file:{tmp_path}/keep",
                 "--flow", "eth/nonsense"]) == 1
    assert "unknown layer 'nonsense'" in capsys.readouterr().err
    assert (tmp_path / "keep").read_bytes() == b"old contents"  # checked before opening


def _run(*args):
    return subprocess.run([sys.executable, "-m", "partner", *args], capture_output=True,
                          text=True, timeout=60)


def test_python_dash_m_partner(tmp_path):
    assert _run("--version").stdout.strip() == f"partner {partner.__version__}"
    (tmp_path / "a").write_bytes(b"copied by a subprocess")
    done = _run("connect", f"file:{tmp_path}/a", f"file:{tmp_path}/b")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "b").read_bytes() == b"copied by a subprocess"
    failed = _run("connect", "nope://x", f"file:{tmp_path}/c")
    assert failed.returncode == 1
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    assert "unknown scheme 'nope'" in failed.stderr
