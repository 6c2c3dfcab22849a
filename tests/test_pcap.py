"""pcap and pcapng partners: round trips, both byte orders, scapy agreement, damaged files."""

import struct

import pytest
from scapy.all import Ether, PcapNgWriter, rdpcap, wrpcap

from partner import EndOfStream, Message, Pvec, connect
from partner.partners.pcap import PcapFormatError, PcapReader, PcapWriter

T0 = 1_700_000_000_123_456_789  # ns


def packets(count=8):
    return [bytes([i]) * (60 + 7 * i) for i in range(count)]


def read_all(path, *flows):
    """Every message of a capture file, through flows opened as given (default: one "eth")."""
    reader = PcapReader(path)
    for template, attrs in flows or [("eth", None)]:
        reader.open(template, attrs)
    out = []
    try:
        while True:
            out.append(reader.pull())
    except EndOfStream:
        pass
    return reader, out


def write(path, frames, fmt="pcapng", **options):
    with PcapWriter(path, fmt, **options) as writer:
        key = writer.open("eth")
        for i, frame in enumerate(frames):
            # two chunks per packet: the writer gathers them with writev
            writer.push(key, {"timestamp": T0 + i * 1001}, Pvec.wrap(frame[:20], frame[20:]))


@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.parametrize(("fmt", "nanosecond"), [("pcapng", False), ("pcap", False),
                                                 ("pcap", True)])
def test_round_trip(tmp_path, fmt, nanosecond, byteorder):
    path = tmp_path / f"x.{fmt}"
    write(path, packets(), fmt, nanosecond=nanosecond, byteorder=byteorder)
    reader, messages = read_all(path)
    assert reader.format == fmt
    assert [m.pvec.tobytes() for m in messages] == packets()
    exact = fmt == "pcapng" or nanosecond
    expected = [T0 + i * 1001 if exact else (T0 + i * 1001) // 1000 * 1000 for i in range(8)]
    assert [m.attrs["timestamp"] for m in messages] == expected
    assert all(m.attrs["port"] == 0 and m.attrs["linktype"] == 1 for m in messages)
    assert [m.attrs["orig_len"] for m in messages] == [len(p) for p in packets()]


def test_pulled_packets_view_the_mapped_file(tmp_path):
    write(tmp_path / "x.pcapng", packets(2))
    reader, messages = read_all(tmp_path / "x.pcapng")
    assert messages[0].pvec.chunks[0].owner is reader
    assert messages[0].pvec.chunks[0].view.obj is reader._map  # zero copy: no bytes object
    reader.shutdown()
    assert messages[1].pvec == packets(2)[1]  # still valid after shutdown


@pytest.mark.parametrize("fmt", ["pcapng", "pcap"])
def test_scapy_reads_what_we_write(tmp_path, fmt):
    path = tmp_path / f"x.{fmt}"
    write(path, packets(), fmt, nanosecond=True)
    theirs = rdpcap(str(path))
    assert [bytes(p) for p in theirs] == packets()
    assert [int(p.time * 10**9) for p in theirs] == [T0 + i * 1001 for i in range(8)]


def test_we_read_what_scapy_writes(tmp_path):
    frames = [Ether(dst="02:00:00:00:00:02") / (bytes([i]) * (50 + i)) for i in range(6)]
    for i, frame in enumerate(frames):
        frame.time = 1_600_000_000 + i / 4
    wrpcap(str(tmp_path / "s.pcap"), frames)
    writer = PcapNgWriter(str(tmp_path / "s.pcapng"))
    for frame in frames:
        writer.write(frame)
    writer.close()
    for name in ("s.pcap", "s.pcapng"):
        _, messages = read_all(tmp_path / name)
        assert [m.pvec.tobytes() for m in messages] == [bytes(f) for f in frames], name
        assert [m.attrs["timestamp"] for m in messages] == [
            1_600_000_000 * 10**9 + i * 250_000_000 for i in range(6)], name


def test_one_interface_per_flow_and_demux_back_by_in_port(tmp_path):
    path = tmp_path / "flows.pcapng"
    specs = ["eth", "eth/ipv4/udp?dst_port=53", "eth/ipv4/tcp?dst_port=80"]
    with PcapWriter(path) as writer:
        keys = [writer.open(spec) for spec in specs]
        assert [writer.flows[k].state for k in keys] == [0, 1, 2]
        for i in range(9):
            writer.push(keys[i % 3], {"timestamp": T0 + i}, Pvec.wrap(packets(9)[i]))
    reader, messages = read_all(path, ("eth", {"in_port": 2}), ("eth", None))
    assert [i.name for i in reader.interfaces] == specs  # the IDB names are the flow specs
    assert [m.attrs["port"] for m in messages] == [0, 1, 2] * 3
    in_port_2, rest = 1, 2
    assert [m.key for m in messages] == [rest, rest, in_port_2] * 3
    assert [getattr(p, "sniffed_on", None) for p in rdpcap(str(path))[:3]] == specs


@pytest.mark.parametrize("fmt", ["pcapng", "pcap"])
def test_truncated_file_delivers_good_records_then_names_the_offset(tmp_path, fmt):
    path = tmp_path / f"x.{fmt}"
    write(path, packets(5), fmt)
    whole = path.read_bytes()
    path.write_bytes(whole[:-30])  # cut inside the last record
    last_record = len(whole) - (32 + 88 if fmt == "pcapng" else 16 + 88)
    reader = PcapReader(path)
    reader.open("eth")
    good = reader.pull_many(100)
    assert [m.pvec.tobytes() for m in good] == packets(4)
    with pytest.raises(PcapFormatError, match=f"byte offset {last_record}") as info:
        reader.pull()
    assert str(path) in str(info.value) and "truncated" in str(info.value)
    assert info.value.offset == last_record


def test_not_a_capture_and_empty_files_are_refused(tmp_path):
    (tmp_path / "text").write_bytes(b"hello, world, this is no capture")
    with pytest.raises(PcapFormatError, match=r"not a pcap or pcapng file.*byte offset 0"):
        PcapReader(tmp_path / "text")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(PcapFormatError, match="empty file"):
        PcapReader(tmp_path / "empty")
    (tmp_path / "short").write_bytes(struct.pack("<I", 0xA1B2C3D4) + bytes(8))
    with pytest.raises(PcapFormatError, match="truncated pcap file header"):
        PcapReader(tmp_path / "short")


# --- hand-built pcapng: the blocks and options other writers produce ---------------------------


def block(order, kind, body):
    body += bytes(-len(body) % 4)
    return struct.pack(order + "II", kind, len(body) + 12) + body + struct.pack(order + "I",
                                                                                len(body) + 12)


def option(order, code, value):
    return struct.pack(order + "HH", code, len(value)) + value + bytes(-len(value) % 4)


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_blocks_options_and_resolutions(tmp_path, order):
    shb = block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
                + option(order, 3, b"test os") + option(order, 0, b""))
    # interface 0: microseconds by default, a comment to skip; interface 1: 2^-10 s units
    idb0 = block(order, 1, struct.pack(order + "HHI", 1, 0, 0)
                 + option(order, 1, b"comment") + option(order, 0, b""))
    idb1 = block(order, 1, struct.pack(order + "HHI", 1, 0, 96)
                 + option(order, 9, b"\x8a") + option(order, 14, struct.pack(order + "q", 5))
                 + option(order, 0, b""))
    frame = bytes(range(100))
    epb = block(order, 6, struct.pack(order + "IIIII", 1, 0, 3 * 1024, 100, 150) + frame
                + option(order, 2, struct.pack(order + "I", 1)) + option(order, 0, b""))
    spb = block(order, 3, struct.pack(order + "I", 60) + frame[:60])
    pb = block(order, 2, struct.pack(order + "HHIIII", 0, 0, 0, 2_000_000, 100, 100) + frame)
    nrb = block(order, 4, bytes(4))  # a name resolution block: skipped
    (tmp_path / "x.pcapng").write_bytes(shb + idb0 + nrb + idb1 + epb + spb + pb)
    reader, messages = read_all(tmp_path / "x.pcapng")
    assert [m.attrs.get("timestamp") for m in messages] == [
        3 * 10**9 + 5 * 10**9, None, 2 * 10**9]  # 3072 ticks of 2^-10 s, +5 s offset; SPB none
    assert [m.attrs["port"] for m in messages] == [1, 0, 0]
    assert [m.pvec.tobytes() for m in messages] == [frame, frame[:60], frame]
    assert messages[0].attrs["orig_len"] == 150
    assert [(i.units, i.tsoffset) for i in reader.interfaces] == [(10**6, 0), (1024, 5)]


def test_pcapng_corrupt_block_length_is_named(tmp_path):
    write(tmp_path / "x.pcapng", packets(3))
    data = bytearray((tmp_path / "x.pcapng").read_bytes())
    # the third EPB's trailing length: SHB 28 + IDB + two EPBs before it
    idb_length = struct.unpack_from("<I", data, 28 + 4)[0]
    third = 28 + idb_length + (32 + 60) + (32 + 68)
    struct.pack_into("<I", data, third + 4, 13)  # not a multiple of 4
    (tmp_path / "x.pcapng").write_bytes(bytes(data))
    reader = PcapReader(tmp_path / "x.pcapng")
    reader.open("eth")
    assert len(reader.pull_many(10)) == 2
    with pytest.raises(PcapFormatError, match=f"corrupt block length 13 at byte offset {third}"):
        reader.pull()


def test_writer_truncates_to_snaplen_and_keeps_orig_len(tmp_path):
    with PcapWriter(tmp_path / "x.pcapng", snaplen=64) as writer:
        key = writer.open("eth")
        taken = writer.push_many([Message(key, {"timestamp": T0}, Pvec.wrap(bytes(100))),
                                  Message(key, {"orig_len": 1500}, Pvec.wrap(bytes(10)))])
        assert taken == 2
    _, messages = read_all(tmp_path / "x.pcapng")
    assert [(m.pvec.nbytes, m.attrs["orig_len"]) for m in messages] == [(64, 100), (10, 1500)]


def test_connect_copies_pcap_to_pcapng(tmp_path):
    write(tmp_path / "in.pcap", packets(), "pcap", nanosecond=True)
    with PcapReader(tmp_path / "in.pcap") as src, PcapWriter(tmp_path / "out.pcapng") as dst:
        assert src.default_template == "eth"
        assert connect(src, dst).wait(5).messages == 8
    _, messages = read_all(tmp_path / "out.pcapng")
    assert [m.pvec.tobytes() for m in messages] == packets()
    assert [m.attrs["timestamp"] for m in messages] == [T0 + i * 1001 for i in range(8)]
