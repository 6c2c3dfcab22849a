"""The file partner: vectored reads into its own pool, vectored writes that never lose bytes."""

import os

import pytest

from partner import (
    Direction,
    EndOfStream,
    PartnerError,
    Pvec,
    QueuePartner,
    UnsupportedOperation,
    connect,
)
from partner.partners import file as file_module
from partner.partners.file import FileMissing, FilePartner, skip_bytes, write_iovecs


@pytest.fixture
def data():
    return os.urandom(200_003)  # not a multiple of any chunk size


@pytest.mark.parametrize("chunk_size", [1000, 4096, 65536, 1 << 20])
def test_copy_through_connect_is_byte_exact(tmp_path, data, chunk_size):
    (tmp_path / "in").write_bytes(data)
    with FilePartner(tmp_path / "in", chunk_size=chunk_size) as src, \
            FilePartner(tmp_path / "out", "w") as dst:
        binding = connect(src, dst).wait(10)
        assert src.pool.available == src.pool.count  # the writer freed every pulled buffer
    assert (tmp_path / "out").read_bytes() == data
    assert binding.messages == -(-len(data) // chunk_size)


def test_pull_reads_into_the_partner_pool_with_offsets(tmp_path, data):
    (tmp_path / "in").write_bytes(data)
    with FilePartner(tmp_path / "in", chunk_size=4096) as src:
        key = src.open("raw")
        message = src.pull()
        assert message.key == key and message.attrs == {"offset": 0}
        assert message.pvec == data[:4096]
        assert all(c.aggregate.pool is src.pool and c.owner is src for c in message.pvec.chunks)
        assert src.pool.in_use == 1
        message.pvec.free()  # the consumer's job: the buffer goes back
        assert src.pool.in_use == 0
        second = src.pull()
        assert second.attrs["offset"] == 4096 and second.pvec == data[4096:8192]


def test_pull_many_reads_several_chunks_with_one_preadv(tmp_path, data, monkeypatch):
    (tmp_path / "in").write_bytes(data)
    calls = []
    real = os.preadv

    def counting_preadv(fd, buffers, offset):
        calls.append(len(buffers))
        return real(fd, buffers, offset)

    monkeypatch.setattr(file_module.os, "preadv", counting_preadv)
    with FilePartner(tmp_path / "in", chunk_size=10_000) as src:
        src.open("raw")
        messages = src.pull_many(50)
        assert calls == [50]  # one system call for the whole batch
        assert len(messages) == 21  # 20 full chunks and the 3-byte tail; the rest was EOF
        assert [m.attrs["offset"] for m in messages] == list(range(0, 210_000, 10_000))
        assert b"".join(m.pvec.tobytes() for m in messages) == data
        assert messages[-1].pvec.nbytes == 3
        assert src.pool.in_use == 21  # buffers past the end went straight back
        with pytest.raises(EndOfStream, match="end of file at offset 200003"):
            src.pull_many(50)


def test_empty_file_ends_at_once_and_copies_to_an_empty_file(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    with FilePartner(tmp_path / "empty") as src, FilePartner(tmp_path / "out", "w") as dst:
        key = src.open("raw")
        with pytest.raises(EndOfStream):
            src.pull()
        src.close(key)
        assert connect(src, dst).wait(5).messages == 0
    assert (tmp_path / "out").read_bytes() == b""


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "no" / "such.bin"
    with pytest.raises(FileMissing, match="no such file") as info:
        FilePartner(missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, PartnerError)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        FilePartner(missing, "w")


def test_push_writes_every_chunk_and_survives_short_writes(tmp_path, monkeypatch):
    real = os.pwritev

    def stingy_pwritev(fd, buffers, offset):  # at most 3 bytes per call, like a full disk
        first = bytes(buffers[0][:3])
        return real(fd, [first], offset)

    monkeypatch.setattr(file_module.os, "pwritev", stingy_pwritev)
    pieces = [b"hello ", bytearray(b"vectored "), memoryview(b"world"), b"", b"!" * 50]
    with FilePartner(tmp_path / "out", "w") as dst:
        key = dst.open("raw")
        dst.push(key, {}, Pvec.wrap(*pieces))
        dst.push(key, {}, Pvec.wrap(b"+more"))
        assert dst.ctl(key, "stats")[key]["bytes"] == 75
    assert (tmp_path / "out").read_bytes() == b"".join(bytes(p) for p in pieces) + b"+more"


def test_write_iovecs_handles_more_views_than_iov_max(tmp_path):
    views = [bytes([i % 251]) * 3 for i in range(file_module.IOV_MAX * 2 + 7)]
    fd = os.open(tmp_path / "many", os.O_WRONLY | os.O_CREAT)
    try:
        assert write_iovecs(fd, views, 0) == 3 * len(views)
    finally:
        os.close(fd)
    assert (tmp_path / "many").read_bytes() == b"".join(views)


def test_skip_bytes_slices_without_copying():
    a, b = memoryview(b"abcd"), memoryview(b"efgh")
    rest = skip_bytes([a, b], 5)
    assert [bytes(v) for v in rest] == [b"fgh"]
    assert rest[0].obj is b.obj  # a view of the same buffer, not a copy
    assert skip_bytes([a, b], 8) == []


def test_append_mode_appends(tmp_path):
    (tmp_path / "log").write_bytes(b"first.")
    with FilePartner(tmp_path / "log", "a") as dst:
        dst.push(dst.open("raw"), {}, Pvec.wrap(b"second."))
    assert (tmp_path / "log").read_bytes() == b"first.second."


def test_each_mode_offers_one_direction(tmp_path):
    (tmp_path / "in").write_bytes(b"x")
    with FilePartner(tmp_path / "in") as src, FilePartner(tmp_path / "out", "w") as dst:
        assert src.direction == Direction.OUT and dst.direction == Direction.IN
        with pytest.raises(UnsupportedOperation, match="offers pull, not push"):
            src.push(src.open("raw"), {}, Pvec.wrap(b"x"))
        with pytest.raises(UnsupportedOperation, match="offers push, not pull"):
            dst.pull()
    with pytest.raises(ValueError, match="'r', 'w' or 'a'"):
        FilePartner(tmp_path / "in", "rw")


def test_pull_without_a_flow_says_so(tmp_path):
    (tmp_path / "in").write_bytes(b"x")
    with FilePartner(tmp_path / "in") as src, pytest.raises(PartnerError, match="open a flow"):
        src.pull()


def test_exhausted_pool_falls_back_instead_of_stalling(tmp_path, data):
    (tmp_path / "in").write_bytes(data)
    with FilePartner(tmp_path / "in", chunk_size=1000, pool_buffers=2) as src:
        key = src.open("raw")
        held = [src.pull() for _ in range(3)]  # a consumer that never frees
        assert [m.pvec.tobytes() for m in held] == [data[:1000], data[1000:2000], data[2000:3000]]
        assert held[2].pvec.chunks[0].aggregate is None
        assert src.ctl(None, "stats")["file"]["unpooled"] == 1
        assert src.ctl(key, "seek", 10) == 10
        assert src.pull().pvec == data[10:1010]


def test_file_to_queue_to_file_keeps_order(tmp_path, data):
    (tmp_path / "in").write_bytes(data)
    queue = QueuePartner(max_messages=3)
    with FilePartner(tmp_path / "in", chunk_size=777) as src, \
            FilePartner(tmp_path / "out", "w") as dst:
        first = connect(src, queue)
        second = connect(queue, dst)
        first.wait(10)
        second.wait(10)
    assert (tmp_path / "out").read_bytes() == data

