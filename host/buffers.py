"""Buffer pools: the buffer operations `get`, `alloc` and `free` of a partner (paper §3.2, Fig. 8).

A pool carves one block of memory into fixed-size buffers, the model a DMA engine's buffer ring
uses: the device is told buffer addresses once, data never moves. The backing memory is anything
writable that exports the buffer protocol — a `bytearray` by default, an `mmap`, a numpy array, or
a DMA region mapped for a device — and each buffer knows its `offset` in it, which is what a
driver turns into a bus address.

Reference counts follow Linux's sk_buff: `alloc` hands out buffers with one reference, `get` adds
one (a partner that keeps a pvec beyond the call that delivered it), `free` drops one and the
buffer returns to the pool at zero. Freeing a buffer more often than it was referenced raises
`DoubleFree` instead of corrupting the free list.
"""

from __future__ import annotations

from .errors import BufferOpError, DoubleFree, PoolExhausted
from .pvec import Chunk, Pvec, byte_view

__all__ = ["Buffer", "BufferPool"]


class Buffer:
    """One fixed-size buffer of a `BufferPool` (the aggregate behind pool chunks)."""

    __slots__ = ("index", "offset", "pool", "refs", "view")

    def __init__(self, pool: BufferPool, index: int, view: memoryview):
        self.pool = pool
        self.index = index
        self.offset = index * pool.size
        self.view = view
        self.refs = 0

    def acquire(self) -> None:
        if self.refs <= 0:
            raise BufferOpError(
                f"buffer {self.index} of pool {self.pool.name!r} is free; "
                "get() needs a buffer that is allocated"
            )
        self.refs += 1

    def release(self) -> None:
        if self.refs <= 0:
            raise DoubleFree(
                f"buffer {self.index} of pool {self.pool.name!r} freed more often than allocated"
            )
        self.refs -= 1
        if self.refs == 0:
            self.pool._free_list.append(self)

    def __repr__(self):
        return f"Buffer({self.pool.name!r}#{self.index}, refs={self.refs})"


class BufferPool:
    """`count` buffers of `size` bytes each over one block of memory.

    `owner` is the partner whose buffer operations this pool implements; it is recorded in every
    chunk the pool hands out, so a pvec always says whose memory it points into.
    """

    def __init__(self, count: int, size: int, *, memory=None, owner=None, name: str | None = None):
        if count <= 0 or size <= 0:
            raise ValueError(f"a buffer pool needs a positive count and size, not {count}x{size}")
        self.count = count
        self.size = size
        self.owner = owner
        self.name = name or (getattr(owner, "name", None) or "pool")
        if memory is None:
            memory = bytearray(count * size)
        self.memory = memory
        view = byte_view(memory)
        if view.readonly:
            raise TypeError("buffer pool memory must be writable")
        if len(view) < count * size:
            raise ValueError(
                f"pool memory of {len(view)} bytes is too small for {count} buffers of {size} bytes"
            )
        self.buffers = [Buffer(self, i, view[i * size : (i + 1) * size]) for i in range(count)]
        # A stack: the most recently freed buffer is reused first while it is still in cache.
        self._free_list = list(reversed(self.buffers))

    @property
    def available(self) -> int:
        """Buffers not in use."""
        return len(self._free_list)

    @property
    def in_use(self) -> int:
        return self.count - len(self._free_list)

    def alloc_buffer(self) -> Buffer:
        """Take one buffer with one reference."""
        try:
            buffer = self._free_list.pop()
        except IndexError:
            raise PoolExhausted(
                f"pool {self.name!r} has all {self.count} buffers of {self.size} bytes in use; "
                "free pvecs you no longer need or make the pool larger"
            ) from None
        buffer.refs = 1
        return buffer

    def alloc(self, nbytes: int | None = None) -> Pvec:
        """A pvec over fresh buffers covering `nbytes` (one whole buffer if None).

        All or nothing: if the pool cannot cover `nbytes`, nothing is taken.
        """
        if nbytes is None:
            nbytes = self.size
        if nbytes < 0:
            raise ValueError(f"cannot allocate {nbytes} bytes")
        needed = max(1, -(-nbytes // self.size))
        if needed > len(self._free_list):
            raise PoolExhausted(
                f"pool {self.name!r} cannot cover {nbytes} bytes: {needed} buffers of {self.size} "
                f"bytes needed, {len(self._free_list)} free"
            )
        chunks = []
        remaining = nbytes
        for _ in range(needed):
            buffer = self.alloc_buffer()
            length = min(remaining, self.size)
            view = buffer.view if length == self.size else buffer.view[:length]
            chunks.append(Chunk(view, self.owner, buffer))
            remaining -= length
        return Pvec(chunks, self.owner)

    def get(self, pvec: Pvec) -> Pvec:
        """Take one more reference on the buffers of `pvec` that belong to this pool."""
        for buffer in self._own(pvec):
            buffer.acquire()
        return pvec

    def free(self, pvec: Pvec) -> None:
        """Drop one reference on the buffers of `pvec`; they return to the pool at zero."""
        for buffer in self._own(pvec):
            buffer.release()

    def _own(self, pvec: Pvec) -> list[Buffer]:
        # Validate every chunk before touching any count: a bad pvec changes nothing.
        seen = set()
        buffers = []
        for chunk in pvec.chunks:
            buffer = chunk.aggregate
            if not isinstance(buffer, Buffer) or buffer.pool is not self:
                raise BufferOpError(
                    f"pool {self.name!r} was asked to handle a chunk it does not own "
                    f"(owner {getattr(chunk.owner, 'name', chunk.owner)!r})"
                )
            if id(buffer) not in seen:
                seen.add(id(buffer))
                buffers.append(buffer)
        return buffers

    def __repr__(self):
        return f"BufferPool({self.name!r}, {self.count}x{self.size}, {self.available} free)"
