"""UDP and TCP partners on the loopback interface: scatter-gather, backpressure, lost peers."""

import os
import socket
import struct
import time

import pytest

from partner import (
    Direction,
    EndOfStream,
    Message,
    Partner,
    PartnerError,
    PeerLost,
    Pvec,
    QueuePartner,
    WouldBlock,
    connect,
)
from partner.partners.file import FilePartner
from partner.partners.sockets import DatagramTooLarge, TcpPartner, UdpPartner

LOOPBACK = ("127.0.0.1", 0)


@pytest.fixture
def udp_pair():
    rx = UdpPartner(local=LOOPBACK)
    tx = UdpPartner(remote=rx.local_address)
    yield rx, tx
    rx.shutdown()
    tx.shutdown()


def test_udp_round_trip_of_multi_chunk_pvecs(udp_pair):
    rx, tx = udp_pair
    assert rx.direction == Direction.OUT and tx.direction == Direction.IN
    tx_key, rx_key = tx.open("udp"), rx.open("udp")
    payloads = [(b"head", bytearray(b"-middle-"), memoryview(b"tail")), (b"x" * 1500, b"y" * 9000)]
    for chunks in payloads:
        tx.push(tx_key, {}, Pvec.wrap(*chunks))
    for chunks in payloads:
        message = rx.pull(2.0)
        assert message.key == rx_key
        assert message.pvec == b"".join(bytes(c) for c in chunks)  # one datagram, one message
        assert message.attrs["src_addr"][1] == tx.local_address[1]
        assert message.pvec.chunks[0].aggregate.pool is rx.pool
        message.pvec.free()
    assert rx.pull(0.0) is None  # nothing more: a poll returns at once
    assert rx.pool.in_use == 0


def test_udp_refuses_datagrams_too_large_naming_the_size(udp_pair):
    _, tx = udp_pair
    key = tx.open("udp")
    with pytest.raises(DatagramTooLarge, match="70000 bytes"):
        tx.push(key, {}, Pvec.wrap(bytes(40000), bytes(30000)))


def test_udp_active_source_through_connect_into_a_queue(udp_pair):
    rx, tx = udp_pair
    queue = QueuePartner(max_messages=4)
    binding = connect(rx, queue)  # rx is active: its thread receives and pushes
    key = tx.open("udp")
    sent = [os.urandom(100 + i) for i in range(20)]
    received = []
    for payload in sent:
        tx.push(key, {}, Pvec.wrap(payload[:50], payload[50:]))
        message = queue.pull(2.0)
        received.append(message.pvec.tobytes())
        message.pvec.free()
    binding.stop()
    assert received == sent
    assert binding.messages == 20 and rx.pool.in_use == 0


def test_udp_flows_demultiplex_by_source_port(udp_pair):
    rx, tx = udp_pair
    other = UdpPartner(remote=rx.local_address)
    try:
        tx.push(tx.open("udp"), {}, Pvec.wrap(b"first"))  # binds tx to its ephemeral port
        from_tx = rx.open("udp", {"src_port": tx.local_address[1]})
        from_anyone = rx.open("udp")
        other.push(other.open("udp"), {}, Pvec.wrap(b"second"))
        assert rx.pull(2.0)[:2] == (from_tx, {"src_addr": ("127.0.0.1", tx.local_address[1])})
        assert rx.pull(2.0).key == from_anyone
    finally:
        other.shutdown()


def _tcp_pair():
    server = TcpPartner(LOOPBACK, listen=True)
    client = TcpPartner(server.local_address)
    return server, client


class CountingQueue(QueuePartner):
    """A queue that counts how often it pushed back."""

    refused = 0

    def push(self, key, attrs, pvec):
        try:
            super().push(key, attrs, pvec)
        except WouldBlock:
            self.refused += 1
            raise


def test_tcp_stream_round_trip_with_backpressure_and_no_loss(tmp_path):
    data = os.urandom(3 << 20)
    (tmp_path / "in").write_bytes(data)
    server, client = _tcp_pair()
    queue = CountingQueue(max_messages=2, max_bytes=64 << 10)
    src, dst = FilePartner(tmp_path / "in"), FilePartner(tmp_path / "out", "w")
    try:
        receive = connect(server, queue, template="tcp")  # active source
        drain = connect(queue, dst, template="tcp", start=False)  # pump, started later
        send = connect(src, client)  # active sink
        deadline = time.monotonic() + 10
        while queue.refused == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert queue.refused > 0, "the full queue never pushed back"
        drain.start()
        for binding in (send, receive, drain):
            binding.wait(20)
    finally:
        for partner in (server, client, src, dst):
            partner.shutdown()
    assert (tmp_path / "out").read_bytes() == data
    assert server.pool.in_use == 0 and not receive.undelivered


def test_tcp_peer_closing_is_end_of_stream():
    server, client = _tcp_pair()
    try:
        key = client.open("tcp")
        server_key = server.open("tcp")
        client.push(key, {}, Pvec.wrap(b"hello, ", b"server"))
        client.close(key)  # the last flow: half-close, the server reads end of stream
        received = b""
        with pytest.raises(EndOfStream, match="closed the connection"):
            while True:
                message = server.pull(2.0)
                assert message is not None and message.key == server_key
                received += message.pvec.tobytes()
        assert received == b"hello, server"
        with pytest.raises(EndOfStream):  # and it stays ended
            server.pull(0.0)
    finally:
        server.shutdown()
        client.shutdown()


class Endless(Partner):
    """A passive source that never runs dry."""

    direction = Direction.OUT

    def pull(self, timeout=0.0):
        return Message(next(iter(self.flows)), {}, Pvec.wrap(bytes(65536)))


def _reset(conn: socket.socket) -> None:
    """Close so the peer gets a reset, not an orderly end: a process that died."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def test_tcp_peer_vanishing_while_sending_is_peer_lost_with_undelivered():
    listener = socket.create_server(LOOPBACK)
    client = TcpPartner(listener.getsockname())
    conn, _ = listener.accept()
    try:
        binding = connect(Endless(), client)
        got = 0
        while got < 1 << 20:
            got += len(conn.recv(1 << 16))
        _reset(conn)
        with pytest.raises(PeerLost) as info:
            binding.wait(10)
        peer = f"127.0.0.1:{listener.getsockname()[1]}"
        assert f"peer {peer}" in str(info.value)
        assert len(binding.undelivered) == 1 and "1 message(s) (65536 bytes)" in str(info.value)
        assert isinstance(info.value.__cause__, PeerLost)
    finally:
        client.shutdown()
        listener.close()


def test_tcp_peer_vanishing_while_receiving_is_peer_lost():
    server = TcpPartner(LOOPBACK, listen=True)
    conn = socket.create_connection(server.local_address)
    try:
        server.open("tcp")
        conn.sendall(b"partial data")
        time.sleep(0.05)
        _reset(conn)
        with pytest.raises(PeerLost, match=r"peer 127\.0\.0\.1:\d+ lost mid-flow"):
            while server.pull(2.0) is not None:
                pass
    finally:
        server.shutdown()


def test_tcp_listener_without_peer_pushes_back_and_shutdown_closes():
    server = TcpPartner(LOOPBACK, listen=True)
    key = server.open("tcp")
    with pytest.raises(WouldBlock, match="no peer has connected"):
        server.push(key, {}, Pvec.wrap(b"x"))
    assert server.pull(0.01) is None  # nobody connected within the timeout
    listener = server.listener
    server.shutdown()
    assert listener.fileno() == -1
    impatient = TcpPartner(LOOPBACK, listen=True, accept_timeout=0.05)
    try:
        impatient.open("tcp")
        time.sleep(0.06)
        with pytest.raises(PeerLost, match=r"no peer connected within 0\.05 s"):
            impatient.pull(0.01)
    finally:
        impatient.shutdown()


def test_tcp_connect_refused_names_the_address():
    probe = socket.create_server(LOOPBACK)
    address = probe.getsockname()
    probe.close()  # nothing listens there now
    with pytest.raises(PartnerError, match=f"cannot connect to 127.0.0.1:{address[1]}"):
        TcpPartner(address, connect_timeout=2)
