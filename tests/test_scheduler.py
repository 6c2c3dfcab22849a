"""The strict-priority + DRR Scheduler against the model's scheduler steps, in amaranth.sim.

The bench keeps the queues in the model (`FlowQueuesModel`, frames only, no buffer limits),
drives ``eligible``/``head_len`` from them every cycle and checks that each cycle's selection is
the model's step. On top of the lock-step comparison, the tests check properties that do not
depend on the model: strict priority, DRR's weight ratios and its latency bound.
"""

import itertools
import random
from collections import deque

import pytest
from amaranth.sim import Simulator

from partner.hdl.scheduler import Scheduler
from partner.sim.models.flow_queues import FlowQueuesModel, Frame

MAX_LEN = (1 << 14) - 1


class Bench:
    """Scheduler + model in lock step, the bench playing the user: it keeps the queues as the
    hardware sees them (a frame leaves when ``sel_valid`` dequeues it) and a one-frame slot
    (``step_en`` while empty) that it empties when ``take(cycle)`` says so. The model decides
    when a step starts and must then be shown by ``sel_valid`` three cycles later.
    ``arrive(cycle, model)`` adds frames between cycles."""

    def __init__(self, flows, classes=4, quantum=64):
        self.dut = Scheduler(flows, classes, quantum)
        self.model = FlowQueuesModel(flows, 1 << 20, 1, classes, quantum)
        self.hw_queue = [deque() for _ in range(flows)]
        self.selected = []  # (cycle of sel_valid, frame, cycle the step started)
        self.cycles = 0
        self.slot = None
        self.step = None  # [cycles left, frame, start cycle] of the step in progress

    def add(self, flow, length):
        frame = Frame(flow, length, 0)
        frame.stored_len = length
        self.model.queue[flow].append(frame)
        self.hw_queue[flow].append(frame)
        return frame

    async def configure(self, ctx, flow, cls, weight):
        await self.run(ctx, 1, cfg=lambda cycle: (flow, cls, weight))

    async def run(self, ctx, cycles, arrive=None, take=lambda cycle: True, cfg=lambda c: None):
        """``cfg(cycle)``: None or (flow, class, weight) to write in that cycle."""
        dut, model, hw = self.dut, self.model, self.hw_queue
        for _ in range(cycles):
            write = cfg(self.cycles)
            ctx.set(dut.cfg_en, write is not None)
            if write is not None:
                for port, value in zip((dut.cfg_flow, dut.cfg_class, dut.cfg_weight), write,
                                       strict=True):
                    ctx.set(port, value)
            ctx.set(dut.eligible, sum(1 << f for f, q in enumerate(hw) if q))
            ctx.set(dut.single, sum(1 << f for f, q in enumerate(hw) if len(q) == 1))
            ctx.set(dut.head_len, [q[0].stored_len if q else 0 for q in hw])
            ctx.set(dut.step_en, self.slot is None)
            expected = None
            if self.step is not None:
                self.step[0] -= 1
                if not self.step[0]:
                    expected, started, self.step = self.step[1], self.step[2], None
            elif self.slot is None and any(model.queue):
                frame = model.step()
                self.step = [3 if frame is not None else 2, frame, self.cycles]
            assert ctx.get(dut.sel_valid) == (expected is not None), f"cycle {self.cycles}"
            if expected is not None:
                assert ctx.get(dut.sel_flow) == expected.flow, f"cycle {self.cycles}"
                assert hw[expected.flow].popleft() is expected
                self.selected.append((self.cycles, expected, started))
                self.slot = expected
            elif self.slot is not None and take(self.cycles):
                self.slot = None
            if arrive is not None:
                arrive(self.cycles, model)
            await ctx.tick()
            if write is not None:
                flow, cls, weight = write
                model.configure(flow, cls=cls, weight=weight)
            self.cycles += 1
        ctx.set(dut.cfg_en, 0)


def simulate(bench, testbench):
    sim = Simulator(bench.dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("seed", [1, 2])
def test_random_lock_step(seed):
    """Random classes, weights, lengths, arrivals, slot takes and configuration changes,
    some of them while a step is in progress."""
    rng = random.Random(seed)
    bench = Bench(flows=6, classes=3, quantum=16)

    def arrive(cycle, model):
        if rng.random() < 0.3:
            flow = rng.randrange(6)
            bench.add(flow, rng.choice([1, 2, 15, 16, 17, 40, rng.randint(1, 100)]))

    def cfg(cycle):  # frequent enough to land inside steps
        if rng.random() < 0.08:
            return rng.randrange(6), rng.randrange(3), rng.choice([0, 1, 2, 3, 7])
        return None

    async def testbench(ctx):
        for flow in range(6):
            await bench.configure(ctx, flow, rng.randrange(3), rng.choice([0, 1, 2, 3, 7]))
        for _ in range(6):
            await bench.run(ctx, 250, arrive, take=lambda c: rng.random() < 0.6, cfg=cfg)
        for _ in range(100):  # drain
            if not any(bench.hw_queue):
                break
            await bench.run(ctx, 50)
        assert not any(bench.model.queue) and not any(bench.hw_queue)

    simulate(bench, testbench)
    assert len(bench.selected) > 300


def test_strict_priority():
    """A higher class always goes first; a lower class resumes its DRR turn where it stopped."""
    bench = Bench(flows=4, classes=4, quantum=64)
    arrival = 80

    def arrive(cycle, model):
        if cycle == arrival:  # a class 3 burst while classes 0/1 are being served
            for _ in range(5):
                bench.add(3, 64)

    async def testbench(ctx):
        for flow in range(4):
            await bench.configure(ctx, flow, cls=0 if flow < 2 else flow, weight=1)
        for _ in range(10):
            bench.add(0, 64)
            bench.add(1, 64)
            bench.add(2, 64)
        await bench.run(ctx, 300, arrive)

    simulate(bench, testbench)
    flows = [frame.flow for _, frame, _ in bench.selected]
    assert flows[:10] == [2] * 10  # class 2 first
    # then classes 0/1 alternate (one 64-byte frame per turn) until class 3 arrives...
    before = [frame.flow for _, frame, started in bench.selected[10:] if started <= arrival]
    assert before == [0, 1] * (len(before) // 2) + [0] * (len(before) % 2)
    assert len(before) >= 3
    # ... which takes every step that starts after it arrived until it is empty; then
    # classes 0/1 resume in their DRR order, where they stopped.
    after = [frame.flow for _, frame, started in bench.selected if started > arrival]
    assert after[:5] == [3] * 5
    rest = after[5:]
    assert rest[0] != before[-1]
    assert set(rest) == {0, 1} and all(a != b for a, b in itertools.pairwise(rest))
    assert len(flows) == 35


def service(selected, flows):
    sent = [0] * flows
    for _, frame, _ in selected:
        sent[frame.flow] += frame.stored_len
    return sent


@pytest.mark.parametrize(("weights", "quantum", "cycles"),
                         [((1, 2, 3, 4), 64, 3000), ((1, 1, 5, 255), 16, 12000)])
def test_weight_ratios_long_run(weights, quantum, cycles):
    """Backlogged flows share bytes in proportion to their weights, within DRR's bound: after
    k rounds a flow has sent k quanta, give or take a maximum frame (Shreedhar & Varghese,
    Lemma 2); at any moment flows are at most one round apart."""
    rng = random.Random(7)
    flows, max_len = len(weights), 100
    bench = Bench(flows=flows, classes=1, quantum=quantum)

    def arrive(cycle, model):
        for flow in range(flows):  # keep every flow backlogged
            while len(model.queue[flow]) < 2:
                bench.add(flow, rng.randint(1, max_len))

    async def testbench(ctx):
        for flow, weight in enumerate(weights):
            await bench.configure(ctx, flow, 0, weight)
        arrive(0, bench.model)
        await bench.run(ctx, cycles, arrive)

    simulate(bench, testbench)
    sent = service(bench.selected, flows)
    quanta = [w * quantum for w in weights]
    rounds = [s / q for s, q in zip(sent, quanta, strict=True)]
    for i, j in itertools.combinations(range(flows), 2):
        assert abs(rounds[i] - rounds[j]) < 1 + max_len / quanta[i] + max_len / quanta[j]
    assert min(rounds) > 8  # long enough for the ratios to mean something
    for s, w in zip(sent, weights, strict=True):
        assert abs(s / sent[0] - w / weights[0]) <= 0.15 * w / weights[0]


def test_no_starvation_within_a_class():
    """A flow that becomes backlogged behind another flow's burst is served after at most
    quantum + max frame bytes of the burst (its turn comes within one round)."""
    quantum, max_len = 64, 200
    bench = Bench(flows=3, classes=2, quantum=quantum)
    rng = random.Random(3)
    arrivals = {}

    def arrive(cycle, model):
        if cycle in (7, 30, 77, 140):
            arrivals[cycle] = bench.add(2, rng.randint(1, quantum))

    async def testbench(ctx):
        await bench.configure(ctx, 0, 1, 1)
        await bench.configure(ctx, 2, 1, 1)
        for _ in range(200):
            bench.add(0, rng.randint(1, max_len))  # the burst
        await bench.run(ctx, 400, arrive)

    simulate(bench, testbench)
    assert len(arrivals) == 4
    for cycle, frame in arrivals.items():
        out = next(c for c, f, _ in bench.selected if f is frame)
        burst_bytes = sum(f.stored_len for c, f, _ in bench.selected
                          if cycle < c < out and f.flow == 0)
        assert burst_bytes <= quantum + max_len, (cycle, burst_bytes)


def test_large_frames_accumulate_deficit():
    """A frame longer than the quantum waits for enough turns (each adds a quantum; a step
    that gives the turn to a flow that still cannot send selects nothing); emptying a queue
    clears its deficit."""
    bench = Bench(flows=2, classes=1, quantum=16)

    async def testbench(ctx):
        bench.add(0, 100)  # needs 7 quanta of 16 bytes
        for _ in range(3):
            bench.add(1, 8)
        await bench.run(ctx, 40)

    simulate(bench, testbench)
    assert [f.flow for _, f, _ in bench.selected] == [1, 1, 1, 0]
    # Steps (start cycle: what happens; every step takes 3 cycles; after a selection the slot
    # is taken in the next cycle and the next step starts one cycle later):
    #  0: turn 1 -> 0 (16), nothing   3: turn 0 -> 1 (16), 1 sends 8   8: 1 sends 8 (0)
    # 13: turn 1 -> 0 (32), nothing  16: turn 0 -> 1 (16), 1 sends 8, empty (0)
    # 21: 1 empty, turn -> 0 (48)  24: 0 -> 0 (64)  27: (80)  30: (96)  33: (112), 0 sends
    assert [(c, started) for c, _, started in bench.selected] == [
        (6, 3), (11, 8), (19, 16), (36, 33)]
    assert bench.model.deficit == [0, 0]
