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
:mod:`partner.hdl.stream` (it is stored and forwarded like the other fields).

Read side (``o_stream``): valid/ready stream, one beat per cycle while ``o_stream.ready`` is
high. A frame's first beat appears two cycles after its last beat was accepted (one to commit,
one for the synchronous memory read). The output register is prefetched, so a beat leaves the
memory (and ``level``) one beat before it is handed to the consumer.

Status: ``level`` is the number of memory entries in use, including the frame being written.
The three frame counters are 32-bit and wrap (modulo 2**32): the host takes differences between
reads, which saturating counters would make wrong after the first overflow.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .stream import PacketStream, packet_layout

__all__ = ["PacketFIFO"]


class PacketFIFO(wiring.Component):
    """Store-and-forward FIFO of ``depth`` beats, each ``width_bytes`` wide.

    Parameters
    ----------
    width_bytes : int
        Beat width of both streams, in bytes.
    depth : int
        Memory depth in beats; a power of two, at least 2.

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
    """

    def __init__(self, width_bytes: int, depth: int):
        if not isinstance(depth, int) or depth < 2 or depth & (depth - 1):
            raise ValueError(f"depth must be a power of two >= 2, not {depth!r}")
        self.width_bytes = width_bytes
        self.depth = depth
        # Parametric widths: the signature is built here rather than in class annotations.
        super().__init__({
            "i_stream": In(PacketStream(width_bytes)),
            "i_drop": In(1),
            "o_stream": Out(PacketStream(width_bytes)),
            "level": Out(range(depth + 1)),
            "frames_committed": Out(32),
            "frames_dropped_error": Out(32),
            "frames_dropped_overflow": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        abits = self.depth.bit_length() - 1

        m.submodules.mem = mem = Memory(
            shape=packet_layout(self.width_bytes), depth=self.depth, init=[])
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

        # Write side.
        i = self.i_stream
        m.d.comb += i.ready.eq(1)
        store = i.valid & ~overflowed & ~full
        m.d.comb += [
            wr_port.addr.eq(wr_ptr[:abits]),
            wr_port.data.eq(i.payload),
            wr_port.en.eq(store),
        ]
        with m.If(i.valid):
            with m.If(i.payload.last):
                m.d.sync += overflowed.eq(0)
                with m.If(self.i_drop):
                    m.d.sync += [
                        wr_ptr.eq(commit_ptr),
                        self.frames_dropped_error.eq(self.frames_dropped_error + 1),
                    ]
                with m.Elif(~store):
                    m.d.sync += [
                        wr_ptr.eq(commit_ptr),
                        self.frames_dropped_overflow.eq(self.frames_dropped_overflow + 1),
                    ]
                with m.Else():
                    m.d.sync += [
                        wr_ptr.eq(wr_ptr + 1),
                        commit_ptr.eq(wr_ptr + 1),
                        self.frames_committed.eq(self.frames_committed + 1),
                    ]
            with m.Elif(store):
                m.d.sync += wr_ptr.eq(wr_ptr + 1)
            with m.Else():
                # Give the space back at once; the rest of the frame is discarded.
                m.d.sync += [wr_ptr.eq(commit_ptr), overflowed.eq(1)]

        # Read side: the memory's read register is the output register. It is reloaded whenever
        # it is empty or being emptied, which sustains one beat per cycle.
        o = self.o_stream
        advance = ~o.valid | o.ready
        load = advance & (rd_ptr != commit_ptr)
        m.d.comb += [
            rd_port.addr.eq(rd_ptr[:abits]),
            rd_port.en.eq(load),
            o.payload.eq(rd_port.data),
        ]
        with m.If(load):
            m.d.sync += [rd_ptr.eq(rd_ptr + 1), o.valid.eq(1)]
        with m.Elif(advance):
            m.d.sync += o.valid.eq(0)

        return m
