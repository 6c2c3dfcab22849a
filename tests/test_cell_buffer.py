"""CellAllocator (partner.hdl.cell_buffer) against a small model, in amaranth.sim.

The model: cells ``0, 1, ...`` are handed out fresh until each has been used once; a cell
returned at edge *e* joins a FIFO and can be handed out again from cycle *e+3*, oldest first,
before any fresh cell. Every cycle the bench compares ``cell`` and ``available`` with the model
and checks that no cell is handed out twice. Sizes that are not powers of two make the FIFO's
pointers wrap explicitly; the runs are long enough to wrap them many times.
"""

import gc
import random
import warnings
from collections import deque

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from partner.hdl.cell_buffer import CellAllocator

PREFETCH = 3  # a cell returned at edge e can be allocated from cycle e + PREFETCH


class AllocatorModel:
    def __init__(self, cells):
        self.cells = cells
        self.fresh = 0
        self.returned = deque()  # (cycle it can be allocated from, cell)
        self.held = set()

    def ready(self, cycle):
        """The cell ``alloc`` would take in ``cycle``, or None."""
        if self.returned and self.returned[0][0] <= cycle:
            return self.returned[0][1]
        return self.fresh if self.fresh < self.cells else None

    def available(self):
        return self.cells - len(self.held)

    def clock(self, cycle, alloc, free_cell):
        if alloc:
            cell = self.ready(cycle)
            if self.returned and self.returned[0][1] == cell:
                self.returned.popleft()
            else:
                self.fresh += 1
            assert cell not in self.held
            self.held.add(cell)
        if free_cell is not None:
            self.held.remove(free_cell)
            self.returned.append((cycle + PREFETCH, free_cell))


@pytest.mark.parametrize("cells", [2, 3, 4, 5, 8, 288])
def test_random_alloc_free(cells):
    """Random allocations and returns in phases that fill the buffer, drain it, and churn
    one cell at a time; at the end every cell is free and no underflow was flagged."""
    rng = random.Random(cells)
    dut = CellAllocator(cells)
    model = AllocatorModel(cells)
    cycles = max(2000, 12 * cells)
    stats = {"allocs": 0, "frees": 0}

    async def bench(ctx):
        p_alloc, p_free = 0.5, 0.5
        for cycle in range(cycles + 4 * cells):
            if cycle % 97 == 0:
                p_alloc, p_free = rng.choice([(0.9, 0.2), (0.2, 0.9), (0.6, 0.6), (1.0, 1.0)])
            if cycle >= cycles:  # drain
                p_alloc, p_free = 0.0, 1.0
            assert ctx.get(dut.available) == model.available(), f"cycle {cycle}: available"
            expect = model.ready(cycle)
            alloc = expect is not None and rng.random() < p_alloc
            if alloc:
                assert ctx.get(dut.cell) == expect, f"cycle {cycle}: cell"
            free_cell = (rng.choice(sorted(model.held))
                         if model.held and rng.random() < p_free else None)
            ctx.set(dut.alloc, alloc)
            ctx.set(dut.free, free_cell is not None)
            ctx.set(dut.free_cell, free_cell or 0)
            model.clock(cycle, alloc, free_cell)
            stats["allocs"] += alloc
            stats["frees"] += free_cell is not None
            await ctx.tick()
        assert not model.held
        assert ctx.get(dut.available) == cells
        assert ctx.get(dut.underflow) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert stats["frees"] > 3 * cells  # the FIFO's pointers wrapped several times


@pytest.mark.parametrize("cells", [3, 4])
def test_underflow_is_sticky(cells):
    """Asking for a cell when none is there sets ``underflow``, which stays set."""
    dut = CellAllocator(cells)

    async def bench(ctx):
        ctx.set(dut.alloc, 1)
        await ctx.tick().repeat(cells)
        assert ctx.get(dut.available) == 0 and ctx.get(dut.underflow) == 0
        await ctx.tick()
        ctx.set(dut.alloc, 0)
        assert ctx.get(dut.underflow) == 1
        await ctx.tick().repeat(3)
        assert ctx.get(dut.underflow) == 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("cells", [0, 1, 2.5])
def test_rejects_fewer_than_two_cells(cells):
    with warnings.catch_warnings():  # the rejected instance is never elaborated
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="integer >= 2"):
            CellAllocator(cells)
        gc.collect()
