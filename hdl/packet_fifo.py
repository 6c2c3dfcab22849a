# Store-and-forward packet FIFO with frame rollback: the receive buffer behind a MAC.
# Frames that end with `i_drop` (e.g. bad FCS) or do not fit are rolled back and never reach
# the output; only complete frames are ever presented. Stream format: partner.hdl.stream.
"""Store-and-forward packet FIFO.

Write side (``i_stream``, ``i_drop``): ``i_stream.ready`` is always 1 because the usual
producer, a MAC, cannot stall mid-frame. Beats are written speculatively after the last
committed frame. On the last beat:

* ``i_drop`` high: the frame is rolled back (``frames_dropped_error``);
* otherwise, if any beat of the frame found the memory full: the frame is rolled back
  (``frames_dropped_overflow``). Once a frame overflows, its remaining beats are discarded,
  so a frame longer than ``depth`` beats is always dropped;
* otherwise the frame is committed (``frames_committed``) and becomes visible to the reader.

``i_drop`` is only looked at on the last beat; a dropped frame that also overflowed counts as an
error drop (it would have been lost anyway; overflow counts frames lost to lack of space).
The writer does not interpret ``first``: the producer must keep to the framing rules of
:mod:`partner.hdl.stream`. It is not stored either: the reader sets ``first`` on the beat after
a ``last`` (and on the very first beat), which is the same under those rules since rolled-back
frames never reach the reader; at width 1 ``nbytes`` is not stored (it is always 1).

Read side (``o_stream``): valid/ready stream, one beat per cycle while ``o_stream.ready`` is
high. A frame's first beat appears two cycles after its last beat was accepted (one to commit,
one for the synchronous memory read). The output register is prefetched, so a beat leaves the
memory (and ``level``) one beat before it is handed to the consumer. ``o_committed`` is high
for one cycle after each commit (the cycle in which ``frames_committed`` has counted it).

Per-frame metadata (``meta_layout`` given): ``i_meta`` is sampled with the last beat and stored
in a separate memory of ``meta_depth`` entries when, and only when, the frame commits (this is
where a parser or flow-table result that is ready by the end of the frame travels with it).
``o_meta`` shows the metadata of the frame on ``o_stream``, stable from its first beat to its
last. A frame whose last beat finds all ``meta_depth`` entries in use (by frames committed and
not yet fully read) is dropped as an overflow; the default ``meta_depth = depth`` never does,
since every frame takes at least one beat of the data memory.

Status: ``level`` is the number of memory entries in use, including the frame being written.
The three frame counters are 32-bit and wrap (modulo 2**32): the host takes differences between
reads, which saturating counters would make wrong after the first overflow.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .counting import count_a_cycle_later
from .stream import PacketStream

__all__ = ["PacketFIFO"]


class PacketFIFO(wiring.Component):
    """Store-and-forward FIFO of ``depth`` beats, each ``width_bytes`` wide.

    Parameters
    ----------
    width_bytes : int
        Beat width of both streams, in bytes.
    depth : int
        Memory depth in beats; a power of two, at least 2.
    meta_layout : shape or None
        Shape of the per-frame metadata; None for no metadata ports.
    meta_depth : int
        Frames the metadata memory holds (a power of two; default ``depth``).

    Members
    -------
    i_stream : ``In(PacketStream(width_bytes))``
        Frames in; ``ready`` is always 1.
    i_drop : ``In(1)``
        Qualifies the last beat of ``i_stream``: roll the frame back.
    o_stream : ``Out(PacketStream(width_bytes))``
        Committed frames out.
    level : ``Out(range(depth + 1))``
        Memory entries in use.
    frames_committed, frames_dropped_error, frames_dropped_overflow : ``Out(32)``
        Wrapping frame counters.
    o_committed : ``Out(1)``
        One-cycle strobe after each commit.
    i_meta, o_meta : ``In(meta_layout)``, ``Out(meta_layout)``
        Only with ``meta_layout``: metadata in with the last beat, out with the whole frame.
    """

    def __init__(self, width_bytes: int, depth: int, meta_layout=None, meta_depth=None):
        if not isinstance(depth, int) or depth < 2 or depth & (depth - 1):
            raise ValueError(f"depth must be a power of two >= 2, not {depth!r}")
        meta_depth = depth if meta_depth is None else meta_depth
        if not isinstance(meta_depth, int) or meta_depth < 1 or meta_depth & (meta_depth - 1):
            raise ValueError(f"meta_depth must be a power of two >= 1, not {meta_depth!r}")
        self.width_bytes = width_bytes
        self.depth = depth
        self.meta_layout = meta_layout
        self.meta_depth = meta_depth
        # Parametric widths: the signature is built here rather than in class annotations.
        members = {
            "i_stream": In(PacketStream(width_bytes)),
            "i_drop": In(1),
            "o_stream": Out(PacketStream(width_bytes)),
            "level": Out(range(depth + 1)),
            "frames_committed": Out(32),
            "frames_dropped_error": Out(32),
            "frames_dropped_overflow": Out(32),
            "o_committed": Out(1),
        }
        if meta_layout is not None:
            members["i_meta"] = In(meta_layout)
            members["o_meta"] = Out(meta_layout)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        abits = self.depth.bit_length() - 1

        # Stored per beat: the data, `last`, and `nbytes` only where it can differ from the
        # width (the framing rules of partner.hdl.stream: every beat but a last one is full, and
        # a beat holds 1..width bytes, so at width 1 it is always 1). `first` is not stored: it
        # is `last` of the beat before, and rolled-back frames never reach the reader. At width
        # 1 that is 9 bits a beat, not 11: a 16 KiB receive FIFO takes 8 block RAMs, not 10.
        w = self.width_bytes
        stored = {"data": 8 * w, "last": 1}
        if w > 1:
            stored["nbytes"] = range(w + 1)
        stored = data.StructLayout(stored)
        m.submodules.mem = mem = Memory(shape=stored, depth=self.depth, init=[])
        wr_port = mem.write_port()
        rd_port = mem.read_port(domain="sync")  # not transparent: never reads a slot being written

        # Pointers carry one wrap bit more than the address so that full and empty differ.
        wr_ptr = Signal(abits + 1)      # next slot of the frame being written
        commit_ptr = Signal(abits + 1)  # end of the last committed frame
        rd_ptr = Signal(abits + 1)      # next slot to read into the output register
        overflowed = Signal()           # the frame being written has lost a beat

        used = Signal(abits + 1)
        m.d.comb += used.eq(wr_ptr - rd_ptr)
        full = used == self.depth
        m.d.comb += self.level.eq(used)

        o = self.o_stream
        commit = Signal()  # the frame on i_stream commits at this edge
        m.d.sync += self.o_committed.eq(commit)
        with m.If(self.o_committed):
            m.d.sync += self.frames_committed.eq(self.frames_committed + 1)
        meta_full = 0
        if self.meta_layout is not None:
            leaves = o.valid & o.ready & o.payload.last  # the output frame is done
            meta_full = self._metadata(m, commit, leaves)

        # Write side.
        i = self.i_stream
        m.d.comb += i.ready.eq(1)
        store = i.valid & ~overflowed & ~full
        m.d.comb += [
            wr_port.addr.eq(wr_ptr[:abits]),
            wr_port.data.data.eq(i.payload.data),
            wr_port.data.last.eq(i.payload.last),
            wr_port.en.eq(store),
        ]
        if w > 1:
            m.d.comb += wr_port.data.nbytes.eq(i.payload.nbytes)
        # The counters count a cycle after the frame's end: their enables are then a flip-flop
        # each, not the end of the space check.
        ended_error, ended_overflow = Signal(), Signal()
        with m.If(i.valid):
            with m.If(i.payload.last):
                m.d.sync += overflowed.eq(0)
                with m.If(self.i_drop):
                    m.d.sync += wr_ptr.eq(commit_ptr)
                    m.d.comb += ended_error.eq(1)
                with m.Elif(~store | meta_full):
                    m.d.sync += wr_ptr.eq(commit_ptr)
                    m.d.comb += ended_overflow.eq(1)
                with m.Else():
                    m.d.comb += commit.eq(1)
                    m.d.sync += [wr_ptr.eq(wr_ptr + 1), commit_ptr.eq(wr_ptr + 1)]
            with m.Elif(store):
                m.d.sync += wr_ptr.eq(wr_ptr + 1)
            with m.Else():
                # Give the space back at once; the rest of the frame is discarded.
                m.d.sync += [wr_ptr.eq(commit_ptr), overflowed.eq(1)]

        count_a_cycle_later(m, self.frames_dropped_error, ended_error, name="counted_error")
        count_a_cycle_later(m, self.frames_dropped_overflow, ended_overflow,
                            name="counted_overflow")

        # Read side: the memory's read register is the output register. It is reloaded whenever
        # it is empty or being emptied, which sustains one beat per cycle.
        at_start = Signal(init=1)  # the beat on (or next on) the output starts a frame
        advance = ~o.valid | o.ready
        load = advance & (rd_ptr != commit_ptr)
        m.d.comb += [
            rd_port.addr.eq(rd_ptr[:abits]),
            rd_port.en.eq(load),
            o.payload.data.eq(rd_port.data.data),
            o.payload.last.eq(rd_port.data.last),
            o.payload.nbytes.eq(rd_port.data.nbytes if w > 1 else 1),
            o.payload.first.eq(at_start),
        ]
        with m.If(o.valid & o.ready):
            m.d.sync += at_start.eq(o.payload.last)
        with m.If(load):
            m.d.sync += [rd_ptr.eq(rd_ptr + 1), o.valid.eq(1)]
        with m.Elif(advance):
            m.d.sync += o.valid.eq(0)

        return m

    def _metadata(self, m, commit, leaves):
        """Metadata FIFO, written on ``commit``, advanced when the output frame ``leaves``;
        returns its 'full' condition for the write side."""
        bits = self.meta_depth.bit_length() - 1
        m.submodules.meta_mem = mem = Memory(shape=self.meta_layout, depth=self.meta_depth,
                                             init=[])
        wr_port = mem.write_port()
        rd_port = mem.read_port(domain="sync")
        wr_ptr = Signal(bits + 1)  # next entry to write (= frames committed)
        rd_ptr = Signal(bits + 1)  # entry of the frame on (or next on) the output
        used = Signal(bits + 1)  # truncated: the difference of wrapping pointers
        m.d.comb += used.eq(wr_ptr - rd_ptr)
        full = used == self.meta_depth
        m.d.comb += [wr_port.addr.eq(wr_ptr[:bits]), wr_port.data.eq(self.i_meta),
                     wr_port.en.eq(commit)]
        with m.If(commit):
            m.d.sync += wr_ptr.eq(wr_ptr + 1)
        # Read every cycle at the entry the output needs from the next cycle on: the frame's
        # metadata is then in the read register together with its first beat, and stays
        # there (its entry cannot be overwritten) until the frame's last beat has left.
        next_rd = Signal(bits + 1)
        m.d.comb += [next_rd.eq(rd_ptr + leaves), rd_port.addr.eq(next_rd[:bits]),
                     self.o_meta.eq(rd_port.data)]
        m.d.sync += rd_ptr.eq(next_rd)
        return full
