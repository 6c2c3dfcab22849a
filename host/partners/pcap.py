"""Packet capture files as partners: pcap and pcapng, read and written in pure Python.

`PcapReader` is a passive "out" partner over a capture file; `PcapWriter` a passive "in" one.
Both formats, both byte orders, and micro- or nanosecond classic pcap are read; pcapng blocks
SHB, IDB, EPB, SPB (and the obsolete PB) are understood, every other block and option skipped.

    open   reader: a flow; one with an ``in_port`` attribute gets the packets of that interface,
           one without gets the rest. writer (pcapng): a new Interface Description Block named by
           the flow spec, so one file holds one interface per flow and demux keys map to
           interfaces; a classic pcap file has one link type and no interfaces
    close  frees the flow; the writer's `shutdown` closes the file
    push   writes the record header, the pvec's chunks and the padding with one `os.writev`
           (zero copy); `push_many` writes a whole batch with one writev
    pull   the next packet: a pvec viewing the memory-mapped file (zero copy), with data
           attributes ``timestamp`` (ns), ``port`` (interface id), ``orig_len``, ``linktype``
    ctl    ``stats``; writer: ``fsync``

A truncated or corrupt file delivers every good record first, then raises `PcapFormatError`
naming the file and the byte offset of the bad record. Writes go straight to the descriptor with
no user-space buffer, so there is nothing to flush: a closed writer's file is complete.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import threading
import time

from ..errors import EndOfStream, PartnerError
from ..partner import Direction, Message, Mode, Partner
from ..pvec import Pvec
from .file import FileMissing, write_iovecs

__all__ = ["LINKTYPE_ETHERNET", "PcapFormatError", "PcapReader", "PcapWriter"]

LINKTYPE_ETHERNET = 1
_MAGIC_US, _MAGIC_NS = 0xA1B2C3D4, 0xA1B23C4D
_SHB, _IDB, _PB, _SPB, _EPB = 0x0A0D0D0A, 1, 2, 3, 6
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_IF_NAME, _OPT_IF_TSRESOL, _OPT_IF_TSOFFSET = 2, 9, 14
_MAX_RECORD = 1 << 28  # a larger "packet" is a corrupt length field, not a packet
_BATCH = 256  # records per writev in push_many: 3+ iovecs each, well below IOV_MAX


class PcapFormatError(PartnerError, ValueError):
    """A capture file that is truncated, corrupt or not a capture file; names file and offset."""

    def __init__(self, path, offset: int, problem: str):
        super().__init__(f"{path}: {problem} at byte offset {offset}")
        self.path, self.offset = path, offset


class _Interface:
    __slots__ = ("linktype", "name", "snaplen", "tsoffset", "units")

    def __init__(self, linktype, snaplen, units=10**6, tsoffset=0, name=None):
        self.linktype, self.snaplen, self.units = linktype, snaplen, units
        self.tsoffset, self.name = tsoffset, name

    def ns(self, ticks: int) -> int:
        return ticks * 10**9 // self.units + self.tsoffset * 10**9


class PcapReader(Partner):
    """Packets out of a pcap or pcapng file, chosen by its magic number."""

    mode = Mode.PASSIVE
    direction = Direction.OUT

    def __init__(self, path, *, name: str | None = None):
        self.path = os.fspath(path)
        super().__init__(name or f"pcap:{self.path}")
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise FileMissing(2, f"pcap reader: no such file {self.path!r}") from None
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise PcapFormatError(self.path, 0, "empty file, no pcap or pcapng header")
            self._map = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)  # the mapping keeps its own reference to the file
        self._view = memoryview(self._map)
        self.size = size
        self.interfaces: list[_Interface] = []
        self.unmatched = 0
        self._keys: dict[int, int | None] | None = None
        self._pending: BaseException | None = None  # an error found while filling a batch
        magic = self._view[:4].tobytes()
        if magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            self._header(">")
        elif magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            self._header("<")
        elif magic == b"\x0a\x0d\x0d\x0a":
            self.format, self._pos, self._order = "pcapng", 0, "<"
        else:
            raise PcapFormatError(self.path, 0, f"not a pcap or pcapng file (magic {magic.hex()})")
        linktype = self._first_linktype()
        self.default_template = "eth" if linktype == LINKTYPE_ETHERNET else "raw"

    def _header(self, order: str) -> None:
        self.format, self._order = "pcap", order
        if self.size < 24:
            raise PcapFormatError(self.path, self.size, "truncated pcap file header")
        magic, _, _, _, _, snaplen, linktype = struct.unpack_from(order + "IHHiIII", self._map)
        units = 10**9 if magic == _MAGIC_NS else 10**6
        self.interfaces.append(_Interface(linktype & 0xFFFF, snaplen, units))
        self._pos = 24

    def _first_linktype(self) -> int | None:
        if self.format == "pcap":
            return self.interfaces[0].linktype
        saved = (self._pos, self._order)
        try:
            while not self.interfaces and self._pos < self.size:
                self._block()
        except PcapFormatError:
            pass  # reported when the records are pulled, after the good ones
        linktype = self.interfaces[0].linktype if self.interfaces else None
        self._pos, self._order = saved
        self.interfaces.clear()
        return linktype

    # --- parsing -------------------------------------------------------------------------------

    def _bad(self, offset: int, problem: str) -> PcapFormatError:
        return PcapFormatError(self.path, offset, problem)

    def _next(self):
        """(interface, timestamp ns, orig_len, data offset, captured length), None at the end."""
        while self._pos < self.size:
            record = self._record() if self.format == "pcap" else self._block()
            if record is not None:
                return record
        return None

    def _record(self):
        pos, order = self._pos, self._order
        if self.size - pos < 16:
            raise self._bad(pos, f"truncated record header ({self.size - pos} of 16 bytes)")
        seconds, fraction, caplen, orig_len = struct.unpack_from(order + "IIII", self._map, pos)
        if caplen > _MAX_RECORD:
            raise self._bad(pos, f"corrupt record: captured length {caplen}")
        if pos + 16 + caplen > self.size:
            raise self._bad(pos, f"truncated record ({caplen} bytes announced, "
                                 f"{self.size - pos - 16} present)")
        self._pos = pos + 16 + caplen
        iface = self.interfaces[0]
        return 0, seconds * 10**9 + fraction * (10**9 // iface.units), orig_len, pos + 16, caplen

    def _block(self):
        pos = self._pos
        if self.size - pos < 12:
            raise self._bad(pos, f"truncated block header ({self.size - pos} bytes left)")
        if self._view[pos : pos + 4].tobytes() == b"\x0a\x0d\x0d\x0a":
            bom = self._view[pos + 8 : pos + 12].tobytes()
            if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                raise self._bad(pos, f"section header with bad byte-order magic {bom.hex()}")
            self._order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
        order = self._order
        kind, length = struct.unpack_from(order + "II", self._map, pos)
        if length < 12 or length % 4 or length > _MAX_RECORD:
            raise self._bad(pos, f"corrupt block length {length}")
        if pos + length > self.size:
            raise self._bad(pos, f"truncated block ({length} bytes announced, "
                                 f"{self.size - pos} present)")
        if struct.unpack_from(order + "I", self._map, pos + length - 4)[0] != length:
            raise self._bad(pos, "corrupt block: trailing length differs from leading length")
        self._pos = pos + length
        body, end = pos + 8, pos + length - 4
        if kind == _SHB:
            self.interfaces = []  # interface ids restart in every section
        elif kind == _IDB:
            linktype, _, snaplen = struct.unpack_from(order + "HHI", self._map, body)
            self.interfaces.append(self._interface(linktype, snaplen, body + 8, end))
        elif kind in (_EPB, _PB):
            fmt = order + ("IIIII" if kind == _EPB else "HHIIII")
            fields = struct.unpack_from(fmt, self._map, body)
            iface, high, low, caplen, orig_len = fields if kind == _EPB else (
                fields[0], *fields[2:])
            if body + 20 + caplen > end:
                raise self._bad(pos, f"corrupt packet block: {caplen} captured bytes do not fit")
            return iface, self._interface_of(iface, pos).ns(high << 32 | low), orig_len, \
                body + 20, caplen
        elif kind == _SPB:
            orig_len = struct.unpack_from(order + "I", self._map, body)[0]
            snaplen = self._interface_of(0, pos).snaplen or orig_len
            return 0, None, orig_len, body + 4, min(orig_len, snaplen, end - body - 4)
        return None

    def _interface_of(self, iface: int, pos: int) -> _Interface:
        if iface >= len(self.interfaces):
            raise self._bad(pos, f"packet of interface {iface}, but only "
                                 f"{len(self.interfaces)} interface(s) described")
        return self.interfaces[iface]

    def _interface(self, linktype, snaplen, pos, end) -> _Interface:
        iface = _Interface(linktype, snaplen)
        order = self._order
        while pos + 4 <= end:
            code, length = struct.unpack_from(order + "HH", self._map, pos)
            value = self._view[pos + 4 : pos + 4 + length]
            if code == 0:
                break
            if code == _OPT_IF_TSRESOL and length >= 1:
                exponent = value[0] & 0x7F
                iface.units = 2**exponent if value[0] & 0x80 else 10**exponent
            elif code == _OPT_IF_TSOFFSET and length == 8:
                iface.tsoffset = struct.unpack_from(order + "q", value)[0]
            elif code == _OPT_IF_NAME:
                iface.name = value.tobytes().rstrip(b"\0").decode("utf-8", "replace")
            pos += 4 + length + (-length % 4)
        return iface

    # --- pull ----------------------------------------------------------------------------------

    def _open(self, flow):
        self._keys = None  # the interface -> key table is rebuilt at the next pull

    _close = _open

    def _key_for(self, iface: int) -> int | None:
        if self._keys is None:
            self._keys = {}
        if iface not in self._keys:
            wildcard = [k for k, f in self.flows.items() if f.spec.attrs.in_port is None]
            exact = [k for k, f in self.flows.items() if f.spec.attrs.in_port == iface]
            self._keys[iface] = (exact or wildcard or [None])[0]
        return self._keys[iface]

    def pull(self, timeout: float | None = 0.0) -> Message | None:
        if self._pending is not None:
            error, self._pending = self._pending, None
            raise error
        if not self.flows:
            raise PartnerError(f"{self.name}: open a flow before pulling (no flow is open)")
        while True:
            record = self._next()
            if record is None:
                raise EndOfStream(f"{self.name}: end of capture ({self.size} bytes)")
            iface, timestamp, orig_len, offset, caplen = record
            key = self._key_for(iface)
            if key is None:
                self.unmatched += 1
                continue
            pvec = Pvec.wrap(self._view[offset : offset + caplen], owner=self)
            attrs = {"timestamp": timestamp, "port": iface, "orig_len": orig_len,
                     "linktype": self.interfaces[iface].linktype}
            if timestamp is None:  # a simple packet block has no time
                del attrs["timestamp"]
            self.flows[key].count(pvec)
            return Message(key, attrs, pvec)

    def pull_many(self, max_count: int, timeout: float | None = 0.0) -> list[Message]:
        messages = [self.pull(timeout)]
        try:
            while len(messages) < max_count:
                messages.append(self.pull(0.0))
        except (EndOfStream, PcapFormatError) as error:
            self._pending = error  # deliver the good records now, the end or error next time
        return messages

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            try:
                self._view.release()
                self._map.close()
            except BufferError:
                pass  # pulled pvecs still view the file; the mapping goes when they do


class PcapWriter(Partner):
    """Packets into a pcapng (default) or classic pcap file; one pcapng interface per flow."""

    mode = Mode.PASSIVE
    direction = Direction.IN

    def __init__(self, path, format: str = "pcapng", linktype: int = LINKTYPE_ETHERNET, *,
                 snaplen: int = 262144, nanosecond: bool = False,
                 byteorder: str = sys.byteorder, name: str | None = None):
        if format not in ("pcap", "pcapng"):
            raise ValueError(f"capture format must be 'pcap' or 'pcapng', not {format!r}")
        if byteorder not in ("little", "big"):
            raise ValueError(f"byteorder must be 'little' or 'big', not {byteorder!r}")
        self.path = os.fspath(path)
        super().__init__(name or f"{format}:{self.path}")
        self.format, self.linktype, self.snaplen = format, linktype, snaplen
        self._order = "<" if byteorder == "little" else ">"
        self._ns = nanosecond
        self.interfaces = 0
        # Flows may be opened from one thread while another pushes (a demultiplexer opening a
        # flow per port it discovers): one lock keeps each block whole and IDBs before use.
        self._write_lock = threading.Lock()
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except FileNotFoundError:
            raise FileMissing(2, f"pcap writer: no such directory for {self.path!r}") from None
        if format == "pcap":
            magic = _MAGIC_NS if nanosecond else _MAGIC_US
            header = struct.pack(self._order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)
        else:  # a section header of version 1.0, section length unknown (-1), no options
            header = struct.pack(self._order + "IIIHHqI", _SHB, 28, _BYTE_ORDER_MAGIC, 1, 0,
                                 -1, 28)
        write_iovecs(self.fd, [header])

    def _open(self, flow) -> int:
        if self.format == "pcap":
            return 0
        order = self._order
        name = str(flow.spec).encode()
        options = (self._option(_OPT_IF_NAME, name)
                   + self._option(_OPT_IF_TSRESOL, b"\x09")  # timestamps in nanoseconds
                   + struct.pack(order + "HH", 0, 0))
        length = 20 + len(options)
        block = (struct.pack(order + "IIHHI", _IDB, length, self.linktype, 0, self.snaplen)
                 + options + struct.pack(order + "I", length))
        with self._write_lock:
            write_iovecs(self.fd, [block])
            self.interfaces += 1
            return self.interfaces - 1

    def _option(self, code: int, value: bytes) -> bytes:
        return struct.pack(self._order + "HH", code, len(value)) + value + bytes(-len(value) % 4)

    def _record(self, iface: int, attrs: dict, pvec: Pvec) -> list:
        data = pvec if pvec.nbytes <= self.snaplen else pvec[: self.snaplen]
        caplen = data.nbytes
        orig_len = max(int(attrs.get("orig_len") or 0), pvec.nbytes)
        ts = attrs.get("timestamp")
        ts = time.time_ns() if ts is None else int(ts)
        order = self._order
        if self.format == "pcap":
            fraction = ts % 10**9 if self._ns else ts % 10**9 // 1000
            header = struct.pack(order + "IIII", ts // 10**9, fraction, caplen, orig_len)
            return [header, *data.iovecs()]
        length = 32 + caplen + (-caplen % 4)
        header = struct.pack(order + "IIIIIII", _EPB, length, iface, ts >> 32, ts & 0xFFFFFFFF,
                             caplen, orig_len)
        trailer = bytes(-caplen % 4) + struct.pack(order + "I", length)
        return [header, *data.iovecs(), trailer]

    def push(self, key: int, attrs: dict, pvec: Pvec) -> None:
        self.push_many([Message(key, attrs, pvec)])

    def push_many(self, messages) -> int:
        taken = 0
        views: list = []
        done: list = []
        for key, attrs, pvec in messages:
            try:
                flow = self.flows.get(key) or self.flow(key)
                record = self._record(flow.state, attrs, pvec)
            except Exception as error:
                # The records before a bad one still go out, in order, and the caller learns how
                # many were taken (the `taken` convention of Partner.push_many).
                error.taken = taken + self._write(views, done)
                raise
            views.extend(record)
            done.append((flow, pvec))
            if len(done) >= _BATCH:
                taken += self._write(views, done)
        return taken + self._write(views, done)

    def _write(self, views: list, done: list) -> int:
        if not done:
            return 0
        with self._write_lock:
            write_iovecs(self.fd, views)
        count = len(done)
        for flow, pvec in done:
            flow.count(pvec)
            pvec.free()
        views.clear()
        done.clear()
        return count

    def ctl_fsync(self, key=None) -> None:
        os.fsync(self.fd)

    def ctl_stats(self, key=None) -> dict:
        stats = super().ctl_stats(key)
        for k, entry in stats.items():
            entry["interface"] = self.flows[k].state
        return stats

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
