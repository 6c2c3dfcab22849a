import ctypes
import mmap
import os
import socket

import numpy
import pytest

from partner import BufferOpError, BufferPool, DoubleFree, PoolExhausted, Pvec


def test_wrap_references_every_buffer_kind_without_copy():
    raw = bytearray(b"abcd")
    array = numpy.arange(8, dtype=numpy.uint16)
    ctype = (ctypes.c_uint8 * 4)(1, 2, 3, 4)
    region = mmap.mmap(-1, 16)
    pvec = Pvec.wrap(raw, b"xy", memoryview(b"z"), array, ctype, region)
    assert pvec.count == 6
    assert pvec.nbytes == 4 + 2 + 1 + 16 + 4 + 16
    raw[0] = ord("A")
    array[0] = 0xFFFF
    ctype[0] = 9
    region[0] = 7
    data = pvec.tobytes()
    assert data[:4] == b"Abcd"
    assert data[7:9] == b"\xff\xff"
    assert data[23] == 9
    assert data[27] == 7
    del pvec
    region.close()  # no view left: the mmap can close


def test_chunk_keeps_owner_buffer_alive():
    region = mmap.mmap(-1, 64)
    pvec = Pvec.wrap(region)
    with pytest.raises(BufferError):
        region.close()  # a pvec chunk still points into it
    del pvec
    region.close()


def test_strided_buffer_is_refused_not_copied():
    strided = numpy.arange(16, dtype=numpy.uint8)[::2]
    with pytest.raises(TypeError, match="contiguous"):
        Pvec.wrap(strided)


def test_slicing_is_zero_copy_and_exact():
    parts = [bytearray(os.urandom(n)) for n in (5, 1, 0, 7, 3)]
    pvec = Pvec.wrap(*parts)
    whole = b"".join(parts)
    for start in range(len(whole) + 1):
        for stop in range(start, len(whole) + 1):
            assert pvec[start:stop].tobytes() == whole[start:stop]
    middle = pvec[2:9]
    parts[0][3] ^= 0xFF
    assert middle.tobytes()[1] == parts[0][3]  # still a view of the original buffer
    assert pvec[-1] == whole[-1]
    with pytest.raises(IndexError):
        pvec[len(whole)]
    with pytest.raises(ValueError, match="step"):
        pvec[::2]


def test_concatenation_shares_chunks():
    a, b = Pvec.wrap(b"head"), Pvec.wrap(b"body", b"tail")
    joined = a + b
    assert joined == b"headbodytail"
    assert joined.count == 3
    assert joined.chunks[0] is a.chunks[0]
    assert a.extend(b) == b"headbodytail"


def test_split_covers_payload():
    pvec = Pvec.wrap(bytes(range(100)), bytes(range(50)))
    pieces = pvec.split(32)
    assert [p.nbytes for p in pieces] == [32, 32, 32, 32, 22]
    assert b"".join(p.tobytes() for p in pieces) == pvec.tobytes()


def test_iovecs_go_through_sendmsg_and_come_back_with_recvmsg_into():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with left, right:
        pvec = Pvec.wrap(b"one-", bytearray(b"two-"), numpy.frombuffer(b"three", numpy.uint8))
        left.sendmsg(pvec.iovecs())
        buffers = [bytearray(4) for _ in range(4)]
        nbytes, _, _, _ = right.recvmsg_into(buffers)
        received = Pvec.from_iovecs(buffers, nbytes)
        assert received == b"one-two-three"
        assert received.count == 4
        assert received.chunks[0].view.obj is buffers[0]


def test_from_iovecs_rejects_more_bytes_than_buffers():
    with pytest.raises(ValueError, match="do not fit"):
        Pvec.from_iovecs([bytearray(4)], 10)


def test_writev_readv_round_trip(tmp_path):
    path = tmp_path / "data"
    pvec = Pvec.wrap(b"a" * 10, b"b" * 20, b"c" * 5)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        assert os.writev(fd, pvec.iovecs()) == 35
        buffers = [bytearray(16), bytearray(16), bytearray(16)]
        n = os.preadv(fd, buffers, 0)
        assert Pvec.from_iovecs(buffers, n) == pvec
    finally:
        os.close(fd)


def test_numpy_single_chunk_is_a_view_and_multi_chunk_needs_copy():
    data = bytearray(range(10))
    array = Pvec.wrap(data).to_numpy()
    data[0] = 99
    assert array[0] == 99
    two = Pvec.wrap(b"ab", b"cd")
    assert two.to_numpy().tobytes() == b"abcd"
    with pytest.raises(ValueError, match="numpy_views"):
        two.to_numpy(copy=False)
    assert [v.tobytes() for v in two.numpy_views()] == [b"ab", b"cd"]
    copied = Pvec.wrap(data).to_numpy(copy=True)
    data[1] = 77
    assert copied[1] == 1


def test_copy_into_checks_size():
    pvec = Pvec.wrap(b"12", b"345")
    target = bytearray(5)
    assert pvec.copy_into(target) == 5
    assert target == b"12345"
    with pytest.raises(ValueError, match="smaller"):
        pvec.copy_into(bytearray(4))
    with pytest.raises(TypeError, match="writable"):
        pvec.copy_into(b"12345")


def test_pool_alloc_get_free_reference_counts():
    pool = BufferPool(4, 256, name="rx")
    pvec = pool.alloc(600)
    assert pvec.count == 3 and pvec.nbytes == 600
    assert pool.available == 1
    assert all(c.owner is None and c.aggregate.pool is pool for c in pvec.chunks)
    pool.get(pvec)  # a second holder
    pvec.free()
    assert pool.available == 1  # still referenced once
    pool.free(pvec)
    assert pool.available == 4
    with pytest.raises(DoubleFree, match="freed more often"):
        pvec.free()


def test_pool_alloc_is_all_or_nothing():
    pool = BufferPool(2, 100)
    with pytest.raises(PoolExhausted, match="3 buffers"):
        pool.alloc(250)
    assert pool.available == 2
    held = pool.alloc(200)
    with pytest.raises(PoolExhausted, match="all 2 buffers"):
        pool.alloc_buffer()
    held.free()
    assert pool.available == 2


def test_free_of_sliced_pvec_releases_each_buffer_once():
    pool = BufferPool(2, 64)
    pvec = pool.alloc(128)
    pieces = pvec[10:20] + pvec[30:40] + pvec[70:80]  # two chunks in buffer 0, one in buffer 1
    pieces.free()
    assert pool.available == 2


def test_pool_refuses_foreign_chunks_and_changes_nothing():
    pool, other = BufferPool(2, 64, name="a"), BufferPool(2, 64, name="b")
    mixed = pool.alloc(64) + other.alloc(64)
    with pytest.raises(BufferOpError, match="does not own"):
        pool.free(mixed)
    assert pool.available == 1 and other.available == 1
    mixed.free()  # a pvec frees each chunk through its own pool
    assert pool.available == 2 and other.available == 2


def test_pool_over_external_memory_reports_offsets():
    memory = numpy.zeros(4 * 128, dtype=numpy.uint8)
    pool = BufferPool(4, 128, memory=memory)
    pvec = pool.alloc(128)
    pvec.chunks[0].view[:3] = b"\x01\x02\x03"
    offset = pvec.chunks[0].aggregate.offset
    assert memory[offset : offset + 3].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="too small"):
        BufferPool(8, 128, memory=memory)
    with pytest.raises(TypeError, match="writable"):
        BufferPool(1, 4, memory=b"1234")


def test_from_iovecs_keeps_aggregates_so_free_returns_pool_buffers():
    pool = BufferPool(3, 8)
    buffers = [pool.alloc_buffer() for _ in range(3)]
    pvec = Pvec.from_iovecs([b.view for b in buffers], 12, aggregates=buffers)
    assert pvec.count == 2  # the third buffer received nothing
    pvec.free()
    assert pool.available == 2  # the two used buffers are back; the third is still held
    buffers[2].release()
    assert pool.available == 3
