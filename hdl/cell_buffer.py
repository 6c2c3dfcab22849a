# Free-cell allocator of the flow queues' shared cell buffer: a FIFO of freed cell numbers in an
# `amaranth.lib.memory.Memory`, plus a counter of cells never used since reset. Used by
# partner.hdl.flow_queues (see docs/queues.md, "Buffer manager").
"""Free-cell allocator.

Cells are handed out one per cycle at most (``alloc``) and returned one per cycle at most
(``free``). Returned cells go through a FIFO whose head is prefetched through the read port's
register into an output register, so a returned cell can be allocated again from the third
cycle after its return.

Why a FIFO and a fresh-cell counter instead of a free *list* threaded through the link memory:
a linked free list needs a read and a write of the link memory for every allocation and every
release, on top of the queue traversal's own link accesses; the FIFO is a separate small memory
(``cells`` entries of ``ceil(log2(cells))`` bits) with exactly one write and one read port. The
counter hands out cells ``0, 1, ...`` until all have been used once, so the FIFO memory needs no
initialisation and a reset (which forgets every queued frame) simply makes all cells fresh.

The allocator does no accounting of its own: the user reserves cells before allocating them
(`FlowQueues` admits a frame only if enough cells are free) and must not allocate a cell that is
not there. ``underflow`` is a sticky error flag for a design or test that breaks that rule.

``cells`` is any number from 2 up: the FIFO's pointers wrap at ``cells`` explicitly and carry a
lap bit each (equal pointers with equal laps: empty), so the memory is exactly ``cells`` deep.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["CellAllocator"]


class CellAllocator(wiring.Component):
    """Hands out and takes back cell numbers ``0 .. cells-1``.

    Members
    -------
    alloc : ``In(1)``
        Take ``cell`` at this edge.
    cell : ``Out(range(cells))``
        The cell ``alloc`` takes (combinational).
    free : ``In(1)``
        Give ``free_cell`` back at this edge.
    free_cell : ``In(range(cells))``
    available : ``Out(range(cells + 1))``
        Cells that can be allocated now or are on their way through the FIFO.
    underflow : ``Out(1)``
        Sticky: ``alloc`` was high while no cell was ready.
    """

    def __init__(self, cells: int):
        if not isinstance(cells, int) or cells < 2:
            raise ValueError(f"cells must be an integer >= 2, not {cells!r}")
        self.cells = cells
        super().__init__({
            "alloc": In(1),
            "cell": Out(range(cells)),
            "free": In(1),
            "free_cell": In(range(cells)),
            "available": Out(range(cells + 1)),
            "underflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cells = self.cells
        bits = ceil_log2(cells)

        m.submodules.fifo = fifo = Memory(shape=bits, depth=cells, init=[])
        wr = fifo.write_port()
        rd = fifo.read_port(domain="sync")

        fresh = Signal(range(cells + 1))  # cells 0 .. fresh-1 have been handed out before
        # FIFO pointers: an index that wraps at `cells` and a lap bit that flips when it does.
        wr_ptr, rd_ptr = Signal(range(cells)), Signal(range(cells))
        wr_lap, rd_lap = Signal(), Signal()

        def advance(ptr, lap):
            end = ptr == cells - 1  # the wrap is a compare with a constant
            return [ptr.eq(Mux(end, 0, ptr + 1)), lap.eq(lap ^ end)]

        # Two prefetch stages: the memory's read register (`v1`) and an output register (`v2`),
        # so that `cell` comes from flip-flops, not from a block RAM's slow output.
        v1, v2 = Signal(), Signal()
        head = Signal(bits)

        m.d.comb += self.cell.eq(Mux(v2, head, fresh[:bits]))
        pop = self.alloc & v2
        with m.If(self.alloc & ~v2):
            with m.If(fresh == cells):
                m.d.sync += self.underflow.eq(1)
            with m.Else():
                m.d.sync += fresh.eq(fresh + 1)

        m.d.comb += [wr.addr.eq(wr_ptr), wr.data.eq(self.free_cell), wr.en.eq(self.free)]
        with m.If(self.free):
            m.d.sync += advance(wr_ptr, wr_lap)

        move = v1 & (~v2 | pop)
        filled = (rd_ptr != wr_ptr) | (rd_lap != wr_lap)
        load = filled & (~v1 | move)
        m.d.comb += [rd.addr.eq(rd_ptr), rd.en.eq(load)]
        with m.If(load):
            m.d.sync += [*advance(rd_ptr, rd_lap), v1.eq(1)]
        with m.Elif(move):
            m.d.sync += v1.eq(0)
        with m.If(move):
            m.d.sync += [head.eq(rd.data), v2.eq(1)]
        with m.Elif(pop):
            m.d.sync += v2.eq(0)

        # Entries in the FIFO memory: the index difference, plus `cells` a lap apart.
        used = Signal(range(cells + 1))
        m.d.comb += [used.eq(Mux(wr_lap == rd_lap, wr_ptr - rd_ptr, cells + wr_ptr - rd_ptr)),
                     self.available.eq(cells - fresh + used + v1 + v2)]
        return m
