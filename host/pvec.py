"""The partner vector (pvec): zero-copy vectors of chunks in other partners' buffers.

A pvec is the paper's Figure 6: an aggregate of chunks, each pointing at data inside some partner's
own buffer ("aggregate internal representation": an sk_buff, an iovec, a frame pool, here a
`bytearray`, an `mmap`, a numpy array, a ctypes buffer or a DMA buffer), together with the partner
that owns the chunk and a reference to that aggregate. Building, slicing and joining pvecs never
copies payload bytes; only `tobytes`, `copy_into` and a copying `to_numpy` do, and only when asked.

Lifetime: a chunk holds a `memoryview` of its buffer, so the buffer stays alive as long as some
pvec refers to it (Python's reference counting does what the paper leaves to the owner). Buffers
that belong to a pool are returned to it explicitly with `free` — the buffer op of the owning
partner — after `get` has taken any extra references, like `skb_get`/`kfree_skb` in Linux.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["Chunk", "Pvec", "byte_view"]


def byte_view(buffer) -> memoryview:
    """A flat, unsigned-byte `memoryview` of any object that exports the buffer protocol.

    Raises `TypeError` for objects without the buffer protocol and for non-contiguous buffers
    (a strided numpy slice, say): a pvec chunk must be one run of memory, and copying it silently
    would break the zero-copy promise.
    """
    view = buffer if isinstance(buffer, memoryview) else memoryview(buffer)
    if view.c_contiguous and view.format == "B" and view.ndim == 1:
        return view
    if not view.c_contiguous:
        raise TypeError(
            f"a pvec chunk must be contiguous memory; this {type(buffer).__name__} is strided "
            "(copy it first, for instance with numpy.ascontiguousarray)"
        )
    return view.cast("B") if view.ndim <= 1 else view.cast("B", (view.nbytes,))


class Chunk:
    """One run of bytes inside a buffer owned by `owner` (a partner, or None for plain memory).

    `aggregate` is the owner's own descriptor of the buffer (a pool `Buffer`, a socket message, a
    DMA descriptor). If it has `acquire()`/`release()` methods, `Pvec.get`/`Pvec.free` call them.
    """

    __slots__ = ("aggregate", "owner", "view")

    def __init__(self, view: memoryview, owner=None, aggregate=None):
        self.view = view
        self.owner = owner
        self.aggregate = aggregate

    def __len__(self):
        return len(self.view)

    def __repr__(self):
        owner = getattr(self.owner, "name", self.owner)
        return f"Chunk({len(self.view)} bytes, owner={owner!r})"


class Pvec:
    """An ordered vector of chunks; `partner` is the partner that manages this pvec."""

    __slots__ = ("_nbytes", "chunks", "partner")

    def __init__(self, chunks: Iterable[Chunk] = (), partner=None):
        self.chunks: list[Chunk] = list(chunks)
        self.partner = partner
        self._nbytes = -1

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def wrap(cls, *buffers, owner=None, aggregate=None) -> Pvec:
        """A pvec of one chunk per buffer, each a view of the buffer (no copy)."""
        # Built by hand: wrapping one buffer is the most common way a pvec is born, and a list
        # comprehension plus __init__'s copy would double its cost.
        pvec = cls.__new__(cls)
        if len(buffers) == 1:
            pvec.chunks = [Chunk(byte_view(buffers[0]), owner, aggregate)]
        else:
            pvec.chunks = [Chunk(byte_view(b), owner, aggregate) for b in buffers]
        pvec.partner = owner
        pvec._nbytes = -1
        return pvec

    @classmethod
    def from_iovecs(
        cls, buffers: Sequence, nbytes: int | None = None, owner=None, aggregates=None
    ) -> Pvec:
        """The pvec of the first `nbytes` bytes of `buffers`, as filled by `recvmsg_into`/`readv`.

        `nbytes` is what the system call returned; None takes the buffers whole. `aggregates`,
        parallel to `buffers`, records the owner's descriptor of each (pool buffers, so that
        `free` returns them).
        """
        chunks = []
        remaining = nbytes
        for index, buffer in enumerate(buffers):
            view = byte_view(buffer)
            if remaining is not None:
                if remaining <= 0:
                    break
                if len(view) > remaining:
                    view = view[:remaining]
                remaining -= len(view)
            aggregate = aggregates[index] if aggregates is not None else None
            chunks.append(Chunk(view, owner, aggregate))
        if remaining:
            raise ValueError(f"{nbytes} bytes do not fit in buffers of {nbytes - remaining} bytes")
        return cls(chunks, owner)

    def append(self, buffer, owner=None, aggregate=None) -> Pvec:
        """Add one chunk at the end (a buffer or a `Chunk`); returns self for chaining."""
        if isinstance(buffer, Chunk):
            self.chunks.append(buffer)
        else:
            self.chunks.append(Chunk(byte_view(buffer), owner, aggregate))
        self._nbytes = -1
        return self

    def extend(self, other: Pvec) -> Pvec:
        """Add the chunks of another pvec at the end (the chunks are shared, not copied)."""
        self.chunks.extend(other.chunks)
        self._nbytes = -1
        return self

    # --- size and access ---------------------------------------------------------------------

    @property
    def nbytes(self) -> int:
        """Total payload bytes over all chunks."""
        if self._nbytes < 0:
            self._nbytes = sum(len(c.view) for c in self.chunks)
        return self._nbytes

    @property
    def count(self) -> int:
        """Number of chunks (the paper's `count`)."""
        return len(self.chunks)

    def __len__(self):
        return self.nbytes

    def __bool__(self):
        return self.nbytes > 0

    def __iter__(self):
        """The chunks' memoryviews, in order."""
        return (c.view for c in self.chunks)

    def __add__(self, other: Pvec) -> Pvec:
        if not isinstance(other, Pvec):
            return NotImplemented
        return Pvec(self.chunks + other.chunks, self.partner)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._slice(index)
        if not isinstance(index, int):
            raise TypeError(f"pvec indices must be integers or slices, not {type(index).__name__}")
        size = self.nbytes
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError(f"pvec index {index} out of range for {size} bytes")
        for chunk in self.chunks:
            if index < len(chunk.view):
                return chunk.view[index]
            index -= len(chunk.view)
        raise AssertionError("unreachable")

    def _slice(self, index: slice) -> Pvec:
        start, stop, step = index.indices(self.nbytes)
        if step != 1:
            raise ValueError("pvec slices must be contiguous (step 1)")
        chunks = []
        offset = 0
        for chunk in self.chunks:
            length = len(chunk.view)
            end = offset + length
            if end > start and offset < stop:
                lo = max(start - offset, 0)
                hi = min(stop - offset, length)
                if lo == 0 and hi == length:
                    chunks.append(chunk)
                else:
                    chunks.append(Chunk(chunk.view[lo:hi], chunk.owner, chunk.aggregate))
            elif offset >= stop:
                break
            offset = end
        return Pvec(chunks, self.partner)

    def split(self, size: int) -> list[Pvec]:
        """Cut into consecutive pvecs of at most `size` bytes each (zero copy)."""
        if size <= 0:
            raise ValueError(f"split size must be positive, not {size}")
        return [self[i : i + size] for i in range(0, self.nbytes, size)]

    # --- conversions -------------------------------------------------------------------------

    def iovecs(self) -> list[memoryview]:
        """The chunk views as a list, ready for `socket.sendmsg`, `os.writev` or `os.pwritev`."""
        return [c.view for c in self.chunks]

    def tobytes(self) -> bytes:
        """Copy the payload into one `bytes` object."""
        if len(self.chunks) == 1:
            return self.chunks[0].view.tobytes()
        return b"".join([c.view for c in self.chunks])

    def copy_into(self, target) -> int:
        """Copy the payload into a writable buffer; returns the number of bytes copied."""
        out = byte_view(target)
        if out.readonly:
            raise TypeError("copy_into needs a writable buffer")
        if len(out) < self.nbytes:
            raise ValueError(f"target of {len(out)} bytes is smaller than the pvec ({self.nbytes})")
        offset = 0
        for chunk in self.chunks:
            n = len(chunk.view)
            out[offset : offset + n] = chunk.view
            offset += n
        return offset

    def to_numpy(self, copy: bool | None = None):
        """A 1-D uint8 numpy array of the payload.

        With one chunk and `copy` not True, the array is a view of the chunk (no copy). A pvec
        of several chunks cannot be one array without copying: `copy=False` then raises, and the
        default copies. `numpy_views` gives one zero-copy array per chunk instead.
        """
        import numpy

        if len(self.chunks) == 1 and not copy:
            return numpy.frombuffer(self.chunks[0].view, dtype=numpy.uint8)
        if copy is False and len(self.chunks) > 1:
            raise ValueError(
                f"a pvec of {len(self.chunks)} chunks is not one contiguous array; "
                "use numpy_views() or allow a copy"
            )
        if not self.chunks:
            return numpy.zeros(0, dtype=numpy.uint8)
        return numpy.concatenate([numpy.frombuffer(c.view, dtype=numpy.uint8) for c in self.chunks])

    def numpy_views(self) -> list:
        """One zero-copy uint8 numpy array per chunk."""
        import numpy

        return [numpy.frombuffer(c.view, dtype=numpy.uint8) for c in self.chunks]

    # --- buffer operations ---------------------------------------------------------------------

    def _aggregates(self):
        seen = set()
        for chunk in self.chunks:
            aggregate = chunk.aggregate
            if (
                aggregate is not None
                and id(aggregate) not in seen
                and hasattr(aggregate, "release")
            ):
                seen.add(id(aggregate))
                yield aggregate

    def get(self) -> Pvec:
        """Take one more reference on every owned buffer of this pvec (the paper's `get`)."""
        for aggregate in self._aggregates():
            aggregate.acquire()
        return self

    def free(self) -> None:
        """Drop one reference on every owned buffer; a buffer at zero goes back to its pool.

        Each buffer is released once even if several chunks point into it.
        """
        for aggregate in self._aggregates():
            aggregate.release()

    # --- comparison and display ---------------------------------------------------------------

    def __eq__(self, other):
        if isinstance(other, Pvec):
            return self.nbytes == other.nbytes and self.tobytes() == other.tobytes()
        if isinstance(other, (bytes, bytearray, memoryview)):
            return self.nbytes == len(other) and self.tobytes() == bytes(other)
        return NotImplemented

    __hash__ = None

    def __repr__(self):
        sizes = ", ".join(str(len(c.view)) for c in self.chunks[:8])
        more = ", ..." if len(self.chunks) > 8 else ""
        return f"Pvec({self.nbytes} bytes in {len(self.chunks)} chunks: [{sizes}{more}])"
