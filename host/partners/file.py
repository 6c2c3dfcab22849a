"""File partner: a file in the filesystem as a passive partner (paper §4.3, Table 1).

The paper's filesystem partner is passive and in/out; here one instance is one direction: mode
``"r"`` gives data out (pull), ``"w"`` and ``"a"`` take data in (push). Its aggregate internal
representation is the iovec, so both directions are vectored system calls:

    open   the descriptor is opened by the constructor (the paper's filp_open), so a missing file
           is reported where its path is given; `open()` of a flow only creates channel state
    close  frees the channel state; `shutdown()` closes the descriptor (filp_close)
    push   `os.pwritev` of the pvec's chunks at the write offset, looping over short writes
    pull   `os.preadv` of the next chunk into a buffer of the partner's own pool; `pull_many`
           reads up to 64 chunks with one preadv
    ctl    ``seek`` (read offset), ``fsync``, ``stats``

Buffers: pulled pvecs point into this partner's `BufferPool` (no copy after the read). The
consumer that finally writes the data out frees them (`pvec.free()`), which returns the buffers
to the pool; a partner that only passes a pvec on (a queue) hands its reference on with it. If
consumers hold on to every buffer, reads fall back to fresh memory (counted as ``unpooled`` in
``stats``) rather than stall: a reader must never dead-lock a pipeline. Symmetrically, `push`
frees a pvec once its bytes are in the file.

A file is one stream: a reader delivers it under the demux key of the first flow still open; a
writer appends every flow's data to the file in the order pushed.
"""

from __future__ import annotations

import errno
import os

from ..buffers import BufferPool
from ..errors import EndOfStream, PartnerError, PoolExhausted
from ..partner import Direction, Message, Mode, Partner
from ..pvec import Pvec

__all__ = ["FileMissing", "FilePartner", "skip_bytes", "take_buffers", "write_iovecs"]

try:
    IOV_MAX = os.sysconf("SC_IOV_MAX")
except (AttributeError, ValueError, OSError):  # not every platform names it
    IOV_MAX = 1024
if IOV_MAX <= 0:
    IOV_MAX = 1024

#: Chunks one `pull_many` reads with a single preadv; more would only hold more pool buffers.
MAX_CHUNKS_PER_READ = 64


class FileMissing(PartnerError, FileNotFoundError):
    """The file to read, or the directory of the file to write, does not exist."""

    def __str__(self):  # OSError's default "[Errno 2] ..." would bury the sentence
        return str(self.strerror)


def skip_bytes(views: list, n: int) -> list:
    """The iovec list `views` without its first `n` bytes: whole views dropped, the first kept
    one sliced (a memoryview slice: no copy). How every vectored writer resumes a short write."""
    i = 0
    while i < len(views) and n >= len(views[i]):
        n -= len(views[i])
        i += 1
    rest = views[i:]
    if n:
        rest[0] = rest[0][n:]
    return rest


def write_iovecs(fd: int, views, offset: int | None = None) -> int:
    """Write every byte of `views` with `os.pwritev` at `offset` (or `os.writev` at the file
    position), looping over short writes and over the system's iovec limit; returns the count."""
    views = [v for v in views if len(v)]
    total = 0
    while views:
        batch = views[:IOV_MAX]
        n = os.writev(fd, batch) if offset is None else os.pwritev(fd, batch, offset + total)
        if n <= 0:  # no progress and no error: never spin
            raise OSError(errno.EIO, f"vectored write to descriptor {fd} made no progress")
        total += n
        views = skip_bytes(views, n)
    return total


def take_buffers(partner: Partner, nbytes: int) -> Pvec:
    """A pvec of `nbytes` from `partner.pool`, or fresh memory when the pool is exhausted.

    Counted in ``partner.unpooled``; see the module docstring for why this does not block.
    """
    try:
        return partner.pool.alloc(nbytes)
    except PoolExhausted:
        partner.unpooled = getattr(partner, "unpooled", 0) + 1
        return Pvec.wrap(bytearray(nbytes), owner=partner)


def trim(pvec: Pvec, nbytes: int) -> Pvec:
    """The first `nbytes` of a freshly allocated `pvec`; buffers past them go back to the pool."""
    kept = pvec[:nbytes]
    kept_ids = {id(c.aggregate) for c in kept.chunks}
    for chunk in pvec.chunks:
        aggregate = chunk.aggregate
        if id(aggregate) not in kept_ids and hasattr(aggregate, "release"):
            kept_ids.add(id(aggregate))  # release each dropped buffer once
            aggregate.release()
    return kept


class FilePartner(Partner):
    """A file read chunk by chunk (``mode="r"``) or written (``"w"`` truncates, ``"a"`` appends)."""

    mode = Mode.PASSIVE
    direction = Direction.BOTH
    default_template = "raw"

    def __init__(
        self,
        path,
        mode: str = "r",
        chunk_size: int = 65536,
        pool: BufferPool | None = None,
        *,
        pool_buffers: int = 64,
        name: str | None = None,
    ):
        if mode not in ("r", "w", "a"):
            raise ValueError(f"file partner mode must be 'r', 'w' or 'a', not {mode!r}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        self.path = os.fspath(path)
        direction = Direction.OUT if mode == "r" else Direction.IN
        super().__init__(name or f"file:{self.path}", direction=direction, pool=pool)
        self.file_mode = mode
        self.chunk_size = chunk_size
        self.unpooled = 0
        self.fd = -1
        flags = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC}.get(
            mode, os.O_WRONLY | os.O_CREAT
        )
        try:
            self.fd = os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            what = "no such file" if mode == "r" else "no such directory for file"
            error = FileMissing(errno.ENOENT, f"file partner: {what} {self.path!r}")
            error.filename = self.path
            raise error from None
        # Appending uses pwritev at the end offset rather than O_APPEND: on Linux, pwritev on an
        # O_APPEND descriptor ignores the offset, which would make `offset` lie.
        self.offset = os.fstat(self.fd).st_size if mode == "a" else 0
        if self.pool is None and mode == "r":
            self.pool = BufferPool(pool_buffers, chunk_size, owner=self, name=self.name)

    # --- out: reading ----------------------------------------------------------------------

    def _stream_key(self) -> int:
        for key in self.flows:
            return key
        raise PartnerError(f"{self.name}: open a flow before pulling (no flow is open)")

    def pull(self, timeout: float | None = 0.0) -> Message | None:
        """The next chunk; a file never makes anyone wait, so `timeout` does not matter."""
        messages = self._read(1)
        return messages[0]

    def pull_many(self, max_count: int, timeout: float | None = 0.0) -> list[Message]:
        return self._read(max(1, min(max_count, MAX_CHUNKS_PER_READ)))

    def _read(self, count: int) -> list[Message]:
        key = self._stream_key()
        size = self.chunk_size
        pvecs = [take_buffers(self, size) for _ in range(count)]
        views = [view for pvec in pvecs for view in pvec.iovecs()]
        try:
            n = os.preadv(self.fd, views, self.offset)
        except BaseException:
            for pvec in pvecs:
                pvec.free()
            raise
        messages = []
        flow = self.flows[key]
        for pvec in pvecs:
            length = min(n, size)
            n -= length
            if length == 0:
                pvec.free()
                continue
            pvec = trim(pvec, length)
            messages.append(Message(key, {"offset": self.offset}, pvec))
            flow.count(pvec)
            self.offset += length
        if not messages:
            raise EndOfStream(f"{self.name}: end of file at offset {self.offset}")
        return messages

    # --- in: writing -------------------------------------------------------------------------

    def push(self, key: int, attrs: dict, pvec: Pvec) -> None:
        flow = self.flows.get(key) or self.flow(key)
        try:
            written = write_iovecs(self.fd, pvec.iovecs(), self.offset)
        except OSError as error:
            raise PartnerError(
                f"{self.name}: writing {pvec.nbytes} bytes at offset {self.offset} failed: "
                f"{error.strerror or error}"
            ) from error
        self.offset += written
        flow.count(pvec)
        pvec.free()

    # --- control -----------------------------------------------------------------------------

    def ctl_seek(self, key, offset: int) -> int:
        """Move the read or write offset; returns it."""
        if offset < 0:
            raise ValueError(f"{self.name}: cannot seek to negative offset {offset}")
        self.offset = offset
        return offset

    def ctl_fsync(self, key=None) -> None:
        """Force written data to stable storage."""
        os.fsync(self.fd)

    def ctl_stats(self, key=None) -> dict:
        stats = super().ctl_stats(key)
        stats["file"] = {"path": self.path, "offset": self.offset, "unpooled": self.unpooled}
        return stats

    # --- life cycle --------------------------------------------------------------------------

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
