"""Socket partners: UDP and TCP sockets of the host's network stack (paper §4.6, Table 1).

The paper's socket partner is active and in/out: sockets keep no queue a partner could fill, so
data only moves while a thread sits on the socket. Here each socket partner is both:

* active — `run_source(port, stop)` blocks on the socket (in short waits, to notice `stop`) and
  pushes what arrives into the port; `run_sink(port, stop)` pulls from the port and sends;
* passive — `pull(timeout)` and `push(...)` on a non-blocking socket, waiting with `poll` only as
  long as the caller allows; a send that cannot start now raises `WouldBlock`.

The five operations:

    open   a flow on the socket (the socket itself is made by the constructor: bind/connect or
           listen; a TCP listener accepts its one connection when data first has to move)
    close  closing the last flow half-closes a TCP connection (the peer reads end of stream)
    push   ``sendmsg(pvec.iovecs())``: scatter-gather, no copy; TCP loops over partial sends by
           advancing through the iovecs; UDP sends one datagram per message
    pull   ``recvmsg_into`` pool buffers: one datagram, or what the TCP stream has ready
    ctl    ``stats``

Errors name the peer: a TCP reset or broken pipe mid-flow raises `PeerLost`, a peer that closed
gives `EndOfStream`. Buffers: received pvecs point into the partner's pool and the consumer that
writes them out frees them (see `partner.partners.file`); `push` frees a pvec once it is sent.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

from ..buffers import BufferPool
from ..errors import EndOfStream, PartnerError, PeerLost, WouldBlock
from ..partner import Direction, Message, Mode, Partner
from ..pvec import Pvec
from .file import IOV_MAX, skip_bytes, take_buffers, trim

__all__ = ["MAX_DATAGRAM", "DatagramTooLarge", "TcpPartner", "UdpPartner"]

#: The largest UDP payload over IPv4 (65535 - 8 bytes UDP header - 20 bytes IP header).
MAX_DATAGRAM = 65507
#: How long an active loop blocks before it looks at its stop event again.
POLL_INTERVAL = 0.05
_SEND_FLAGS = getattr(socket, "MSG_NOSIGNAL", 0)  # an error, not SIGPIPE, when the peer is gone
_LOST = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, TimeoutError)


class DatagramTooLarge(PartnerError, ValueError):
    """A message too large for one UDP datagram."""


def _wait(sock: socket.socket, for_write: bool, timeout: float | None) -> bool:
    """Whether `sock` became readable (writable) within `timeout` (None: for ever)."""
    poller = select.poll()
    poller.register(sock, select.POLLOUT if for_write else select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000))))


def _resolve(address, kind: int, what: str):
    """(family, sockaddr) of a (host, port) pair; `PartnerError` naming it if it cannot be.

    An empty host is the wildcard for a local address (bind to every interface).
    """
    flags = socket.AI_PASSIVE if what == "local" else 0
    try:
        host, port = address
        family, _, _, _, sockaddr = socket.getaddrinfo(host or None, port, type=kind,
                                                       flags=flags)[0]
    except (TypeError, ValueError, OSError) as error:
        raise PartnerError(f"cannot resolve {what} address {address!r}: {error}") from None
    return family, sockaddr


class _SocketPartner(Partner):
    """What UDP and TCP partners share: the pool, the active loops and the life cycle."""

    mode = Mode.ACTIVE | Mode.PASSIVE
    direction = Direction.BOTH

    def __init__(self, name, direction, pool, pool_buffers, buffer_size):
        super().__init__(name, direction=direction, pool=pool)
        if self.pool is None and direction & Direction.OUT:
            self.pool = BufferPool(pool_buffers, buffer_size, owner=self, name=self.name)
        self.unpooled = 0
        self.sock: socket.socket | None = None
        self._closed = threading.Event()

    def _socket(self) -> socket.socket:
        if self._closed.is_set() or self.sock is None:
            raise EndOfStream(f"{self.name}: the partner was shut down")
        return self.sock

    def run_source(self, port, stop: threading.Event) -> None:
        """Block on the socket and push each arrival into `port` until `stop` or end of stream."""
        while not stop.is_set():
            message = self.pull(POLL_INTERVAL)
            if message is not None:
                port.push(*message)

    def run_sink(self, port, stop: threading.Event) -> None:
        """Pull from `port` and send, until `stop` or the source's end of stream."""
        while not stop.is_set():
            if not self._ready_to_send(POLL_INTERVAL):
                continue
            message = port.pull(POLL_INTERVAL)
            if message is None:
                continue
            try:
                self._send_waiting(message)
            except BaseException:
                port.undeliverable(message)
                raise

    def _ready_to_send(self, timeout: float) -> bool:
        return True

    def _send_waiting(self, message: Message) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            self._closed.set()
            if self.sock is not None:
                self.sock.close()

    @property
    def local_address(self):
        """The (host, port) the socket is bound to; port 0 in the constructor picks one."""
        return self._socket().getsockname()


class UdpPartner(_SocketPartner):
    """A UDP socket: bound to `local` to receive (out), sending to `remote` (in), or both.

    Received messages carry ``src_addr``; the datagram goes to the first open flow whose spec
    matches it (`src_ip`, `src_port`, `dst_port`), so flows can split traffic by address.
    Datagrams no flow matches are dropped and counted in ``unmatched``. A pushed message may name
    its destination in ``dst_addr`` (to answer a ``src_addr``); otherwise it goes to `remote`.
    """

    default_template = "udp"

    def __init__(self, local=None, remote=None, *, pool=None, pool_buffers: int = 64,
                 buffer_size: int = 65536, rcvbuf: int = 4 << 20, name: str | None = None):
        if local is None and remote is None:
            raise ValueError("a UDP partner needs a local address to receive, a remote one to "
                             "send to, or both")
        direction = (Direction.OUT if local is not None else Direction(0)) | (
            Direction.IN if remote is not None else Direction(0))
        host, port = local if local is not None else remote
        label = f"udp:{host}:{port}" if local is not None else f"udp->{host}:{port}"
        super().__init__(name or label, direction, pool, pool_buffers, buffer_size)
        family, local_addr = _resolve(local, socket.SOCK_DGRAM, "local") if local else (None, None)
        self.remote = None
        if remote is not None:
            remote_family, self.remote = _resolve(remote, socket.SOCK_DGRAM, "remote")
            family = family or remote_family
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.unmatched = 0
        if local_addr is not None:
            # A large receive buffer lets bursts wait in the kernel instead of being dropped
            # while the receiving thread is busy; the kernel caps it at net.core.rmem_max.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            try:
                self.sock.bind(local_addr)
            except OSError as error:
                self.sock.close()
                raise PartnerError(
                    f"cannot bind UDP socket to {local!r}: {error.strerror}") from None
            self._port = self.sock.getsockname()[1]
            if name is None:  # name the port actually bound, not the 0 that asked for any
                self.name = f"udp:{self.sock.getsockname()[0]}:{self._port}"

    def push(self, key: int, attrs: dict, pvec: Pvec) -> None:
        flow = self.flows.get(key) or self.flow(key)
        if pvec.nbytes > MAX_DATAGRAM:
            raise DatagramTooLarge(f"{self.name}: a message of {pvec.nbytes} bytes does not fit "
                                   f"in one UDP datagram (at most {MAX_DATAGRAM} bytes)")
        destination = attrs.get("dst_addr") or self.remote
        if destination is None:
            raise PartnerError(f"{self.name}: no destination: give the partner a remote address "
                               "or the message a 'dst_addr' attribute")
        views = pvec.iovecs() if pvec.count <= IOV_MAX else [pvec.tobytes()]
        try:
            self._socket().sendmsg(views, (), _SEND_FLAGS, destination)
        except BlockingIOError:
            raise WouldBlock(f"{self.name}: socket send buffer is full") from None
        except OSError as error:
            raise PartnerError(f"{self.name}: sending to {destination}: {error}") from error
        flow.count(pvec)
        pvec.free()

    def _send_waiting(self, message: Message) -> None:
        while True:
            try:
                return self.push(*message)
            except WouldBlock:
                _wait(self._socket(), True, POLL_INTERVAL)

    def pull(self, timeout: float | None = 0.0) -> Message | None:
        sock = self._socket()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pvec = take_buffers(self, self.pool.size)
            try:
                nbytes, _, flags, source = sock.recvmsg_into(pvec.iovecs())
            except BlockingIOError:
                pvec.free()
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or not _wait(sock, False, left):
                    return None
                continue
            except OSError as error:
                pvec.free()
                if self._closed.is_set():
                    raise EndOfStream(f"{self.name}: the partner was shut down") from None
                raise PartnerError(f"{self.name}: receive failed: {error}") from error
            if flags & socket.MSG_TRUNC:
                pvec.free()
                raise DatagramTooLarge(f"{self.name}: a datagram from {source} is larger than "
                                       f"the {self.pool.size}-byte receive buffers")
            key = self._demux(source)
            if key is None:
                pvec.free()
                self.unmatched += 1
                continue
            pvec = trim(pvec, nbytes)
            self.flows[key].count(pvec)
            return Message(key, {"src_addr": source}, pvec)

    def _demux(self, source) -> int | None:
        if not self.flows:
            raise PartnerError(f"{self.name}: open a flow before pulling (no flow is open)")
        fields = {"src_ip": source[0], "src_port": source[1], "dst_port": self._port,
                  "protocol": 17}
        for key, flow in self.flows.items():
            if flow.spec.matches(fields):
                return key
        return None

    def ctl_stats(self, key=None) -> dict:
        stats = super().ctl_stats(key)
        stats["udp"] = {"unmatched": self.unmatched, "unpooled": self.unpooled}
        return stats


class TcpPartner(_SocketPartner):
    """One TCP connection: to `address` (client), or the first one accepted there (`listen`).

    A listener binds in the constructor (port 0 picks a free one, see `local_address`) and
    accepts when data first has to move; after `accept_timeout` seconds (None: never) with no
    peer, data operations raise `PeerLost`. The stream is cut into messages as it arrives, at most
    ``chunk_size * recv_chunks`` bytes each, received scattered over `recv_chunks` pool buffers.
    """

    default_template = "tcp"

    def __init__(self, address, *, listen: bool = False, connect_timeout: float = 10.0,
                 accept_timeout: float | None = None, send_timeout: float = 30.0,
                 chunk_size: int = 16384, recv_chunks: int = 4, pool=None,
                 pool_buffers: int = 64, name: str | None = None):
        host, port = address
        role = "tcp-listen" if listen else "tcp"
        super().__init__(name or f"{role}:{host}:{port}", Direction.BOTH, pool, pool_buffers,
                         chunk_size)
        self.read_size = chunk_size * recv_chunks
        self.accept_timeout = accept_timeout
        self._listening_since = time.monotonic()
        self.send_timeout = send_timeout
        self.received = 0
        self.listener = None
        self.peer = f"{host}:{port}"
        self._eof = False
        try:
            if listen:
                self.listener = socket.create_server((host, port), backlog=1)
                self.listener.setblocking(False)
                if name is None:
                    self.name = "tcp-listen:{}:{}".format(*self.listener.getsockname()[:2])
                self.peer = "(not yet accepted)"
            else:
                self.sock = socket.create_connection((host, port), timeout=connect_timeout)
                self.sock.setblocking(False)
        except OSError as error:
            what = "listen on" if listen else "connect to"
            raise PartnerError(f"tcp: cannot {what} {host}:{port}: "
                               f"{error.strerror or error}") from None

    @property
    def local_address(self):
        return (self.listener or self._socket()).getsockname()

    def _connection(self, timeout: float | None) -> socket.socket | None:
        """The connected socket; a listener accepts it, waiting at most `timeout`."""
        if self.sock is not None or self.listener is None:
            return self._socket()
        if self._closed.is_set():
            raise EndOfStream(f"{self.name}: the partner was shut down")
        try:
            sock, peer = self.listener.accept()
        except BlockingIOError:
            if not _wait(self.listener, False, timeout):
                waited = time.monotonic() - self._listening_since
                if self.accept_timeout is not None and waited > self.accept_timeout:
                    raise PeerLost(f"{self.name}: no peer connected within "
                                   f"{self.accept_timeout} s") from None
                return None
            sock, peer = self.listener.accept()
        sock.setblocking(False)
        self.sock, self.peer = sock, f"{peer[0]}:{peer[1]}"
        self.listener.close()  # one connection per partner; more would be more partners
        self.listener = None
        return sock

    def _lost(self, error: OSError) -> PeerLost:
        return PeerLost(f"{self.name}: connection to peer {self.peer} lost mid-flow "
                        f"({error.strerror or type(error).__name__})")

    def pull(self, timeout: float | None = 0.0) -> Message | None:
        if self._eof:
            raise EndOfStream(f"{self.name}: peer {self.peer} closed the connection")
        deadline = None if timeout is None else time.monotonic() + timeout
        sock = self._connection(timeout)
        if sock is None:
            return None
        if not self.flows:
            raise PartnerError(f"{self.name}: open a flow before pulling (no flow is open)")
        pvec = take_buffers(self, self.read_size)
        try:
            while True:
                try:
                    nbytes = sock.recvmsg_into(pvec.iovecs())[0]
                    break
                except BlockingIOError:
                    left = None if deadline is None else deadline - time.monotonic()
                    if (left is not None and left <= 0) or not _wait(sock, False, left):
                        pvec.free()
                        return None
        except _LOST as error:
            pvec.free()
            raise self._lost(error) from error
        except OSError as error:
            pvec.free()
            if self._closed.is_set():
                raise EndOfStream(f"{self.name}: the partner was shut down") from None
            raise PartnerError(f"{self.name}: receive from {self.peer} failed: {error}") from error
        if nbytes == 0:
            pvec.free()
            self._eof = True
            raise EndOfStream(f"{self.name}: peer {self.peer} closed the connection")
        key = next(iter(self.flows))
        pvec = trim(pvec, nbytes)
        message = Message(key, {"offset": self.received}, pvec)
        self.received += nbytes
        self.flows[key].count(pvec)
        return message

    def push(self, key: int, attrs: dict, pvec: Pvec) -> None:
        """Send all of `pvec`; `WouldBlock` only if not one byte could go (nothing consumed)."""
        flow = self.flows.get(key) or self.flow(key)
        sock = self._connection(0.0)
        if sock is None:
            raise WouldBlock(f"{self.name}: no peer has connected yet")
        self._send_all(sock, pvec.iovecs(), may_refuse=True)
        flow.count(pvec)
        pvec.free()

    def _send_all(self, sock, views: list, may_refuse: bool) -> None:
        views = [v for v in views if len(v)]
        sent_any = False
        while views:
            try:
                n = sock.sendmsg(views[:IOV_MAX], (), _SEND_FLAGS)
            except BlockingIOError:
                if may_refuse and not sent_any:
                    raise WouldBlock(f"{self.name}: socket send buffer is full") from None
                # Part of the message is on the wire: the rest must follow, so wait here.
                if not _wait(sock, True, self.send_timeout):
                    raise PeerLost(f"{self.name}: peer {self.peer} has not read for "
                                   f"{self.send_timeout} s; the message is partly sent") from None
                continue
            except _LOST as error:
                raise self._lost(error) from error
            sent_any = True
            views = skip_bytes(views, n)

    def _ready_to_send(self, timeout: float) -> bool:
        # A listener must have its peer before taking messages it could not deliver.
        return self._connection(timeout) is not None

    def _send_waiting(self, message: Message) -> None:
        key, _, pvec = message
        flow = self.flows.get(key) or self.flow(key)
        self._send_all(self._socket(), pvec.iovecs(), may_refuse=False)
        flow.count(pvec)
        pvec.free()

    def _close(self, flow) -> None:
        # The last flow closing is the end of our data: half-close so the peer reads end of
        # stream, while data it still sends can be received.
        if len(self.flows) <= 1 and self.sock is not None and not self._closed.is_set():
            with contextlib.suppress(OSError):  # a peer already gone needs no telling
                self.sock.shutdown(socket.SHUT_WR)

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            if self.listener is not None:
                self.listener.close()
