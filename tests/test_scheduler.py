"""The strict-priority + DRR scheduler (partner.hdl.scheduler), in amaranth.sim.

The scheduler's interface is the flow queues' own (activations, frame counts, next-frame
reads), so it is tested in place: every gateware bench here runs `FlowQueues` against
`FlowQueuesCycleModel` in every cycle (the helpers of test_flow_queues), and then checks
properties that do not depend on the model: strict priority and resumption, DRR's weight
ratios and latency bound, frames longer than a quantum, class changes. Long DRR runs use the
model's algorithm alone (`FlowQueuesModel.step`), which the gateware follows step by step.
"""

import itertools
import random

import pytest
from test_flow_queues import Run, Traffic, build, check_drained, configure, run_traffic, simulate

from partner.sim.models.flow_queues import FlowQueuesCycleModel, FlowQueuesModel, Frame

STALLED = staticmethod(lambda: False)


def frames_of(flow, lengths, meta0=0):
    return [(flow, bytes([meta0 + k & 0xFF]) * length, meta0 + k & 0xFF)
            for k, length in enumerate(lengths)]


def test_strict_priority_and_resumption():
    """A higher class always goes first; a lower class resumes its DRR order where it
    stopped when a higher class interrupts it."""
    width = 4
    dut, core = build(width, flows=4, cells=128, cell_bytes=16, classes=4, quantum=64)
    model = FlowQueuesCycleModel(core, width)

    async def bench(ctx):
        for flow in range(4):
            await configure(ctx, dut, model, flow, quota=4096, cls=0 if flow < 2 else flow)
        # Classes 0 (flows 0 and 1, one 64-byte frame per turn each) and 2 (flow 2) queued
        # with the output stalled; a class 3 burst arrives while class 0 is being served.
        preload = frames_of(2, [64] * 8, 200) + [
            f for k in range(8) for f in frames_of(0, [64], k) + frames_of(1, [64], 100 + k)]
        await run_traffic(ctx, dut, model, Traffic(preload).cycles(width), ready=STALLED,
                          drain=False)
        run = Run()
        burst_at = 200
        cycles = [None] * burst_at + list(Traffic(frames_of(3, [64] * 4, 50)).cycles(width))
        await run_traffic(ctx, dut, model, cycles, run=run)
        flows = [f for f, _, _ in run.frames]
        assert flows[:8] == [2] * 8
        # Class 3 came while 0 and 1 alternated; it went out (at most one frame of class 0
        # was selected ahead of it) and then 0 and 1 went on alternating where they stopped.
        first3 = flows.index(3)
        assert flows[first3:first3 + 4] == [3] * 4
        low = [f for f in flows if f < 2]
        assert all(a != b for a, b in itertools.pairwise(low)), low
        arrived = burst_at + 16 + 5 + 4  # last beat accepted, queued, activation ready
        before = sum(1 for c in run.first_out if c < arrived)
        assert first3 <= before + 1, (first3, before)
        assert len(flows) == 8 * 3 + 4
        await check_drained(ctx, dut, model)

    simulate(dut, bench)


def service(sent_frames, flows):
    sent = [0] * flows
    for frame in sent_frames:
        sent[frame.flow] += frame.stored_len
    return sent


@pytest.mark.parametrize(("weights", "quantum", "frames"),
                         [((1, 2, 3, 4), 64, 4000), ((1, 1, 5, 255), 16, 20000)])
def test_weight_ratios_long_run(weights, quantum, frames):
    """Backlogged flows share bytes in proportion to their weights, within DRR's bound: after
    k rounds a flow has sent k quanta, give or take a maximum frame (Shreedhar & Varghese,
    Lemma 2); at any moment flows are at most one round apart. The model's algorithm, which
    the gateware follows (test_weight_ratios_gateware)."""
    rng = random.Random(7)
    flows, max_len = len(weights), 100
    core = FlowQueuesModel(flows, 1 << 20, 1, 1, quantum)
    for flow, weight in enumerate(weights):
        core.configure(flow, cls=0, weight=weight)

    def refill():
        for flow in range(flows):  # keep every flow backlogged
            while len(core.queue[flow]) < 2:
                frame = Frame(flow, rng.randint(1, max_len), 0)
                frame.stored_len = frame.length
                if core.enqueue(frame):
                    core.activate(flow)

    sent_frames = []
    refill()
    while len(sent_frames) < frames:
        frame = core.step()
        if frame is not None:
            sent_frames.append(frame)
        refill()
    sent = service(sent_frames, flows)
    quanta = [w * quantum for w in weights]
    rounds = [s / q for s, q in zip(sent, quanta, strict=True)]
    for i, j in itertools.combinations(range(flows), 2):
        assert abs(rounds[i] - rounds[j]) < 1 + max_len / quanta[i] + max_len / quanta[j]
    assert min(rounds) > 8  # long enough for the ratios to mean something
    for s, w in zip(sent, weights, strict=True):
        assert abs(s / sent[0] - w / weights[0]) <= 0.15 * w / weights[0]


def test_weight_ratios_gateware():
    """The same on the gateware, shorter: three backlogged flows of weights 1, 2, 3 (64-byte
    quantum, frames of 1..100 bytes) share the output in proportion, within DRR's bound."""
    width, weights, max_len, quantum = 8, (1, 2, 3), 100, 64
    dut, core = build(width, flows=3, cells=2048, cell_bytes=16, classes=1, quantum=quantum)
    model = FlowQueuesCycleModel(core, width)
    rng = random.Random(3)
    frames = [(k % 3, rng.randbytes(rng.randint(1, max_len)), k & 0xFF) for k in range(360)]

    async def bench(ctx):
        for flow, weight in enumerate(weights):
            await configure(ctx, dut, model, flow, quota=1 << 16, weight=weight)
        await run_traffic(ctx, dut, model, Traffic(frames).cycles(width), ready=STALLED,
                          drain=False)
        run = await run_traffic(ctx, dut, model, [])
        assert len(run.frames) == len(frames)  # all admitted
        # While all three are backlogged: 120 frames each were queued, flow 2 (weight 3) is
        # done after about 240 frames out.
        sent = [0, 0, 0]
        for flow, payload, _ in run.frames[:180]:
            sent[flow] += len(payload)
        rounds = [s / (w * quantum) for s, w in zip(sent, weights, strict=True)]
        for i, j in itertools.combinations(range(3), 2):
            bound = 1 + max_len / (weights[i] * quantum) + max_len / (weights[j] * quantum)
            assert abs(rounds[i] - rounds[j]) < bound, rounds
        assert min(rounds) > 10
        await check_drained(ctx, dut, model)

    simulate(dut, bench)


def test_large_frames_accumulate_deficit():
    """A frame longer than the quantum waits for enough turns: each wasted step gives its
    flow one more quantum and moves it to the back of the list; the other flow's turns go on
    meanwhile. The exact DRR sequence, from the model's algorithm, is what the gateware does
    (compared in every cycle)."""
    width, quantum = 4, 16
    dut, core = build(width, flows=2, cells=64, cell_bytes=16, classes=1, quantum=quantum)
    model = FlowQueuesCycleModel(core, width)
    frames = frames_of(0, [100]) + frames_of(1, [8, 8, 8], 10)

    # The algorithm alone: flow 0 is activated first, then flow 1.
    alone = FlowQueuesModel(2, 64, 16, 1, quantum)
    for flow, payload, _ in frames:
        frame = Frame(flow, len(payload), 0)
        frame.stored_len = frame.length
        if alone.enqueue(frame):
            alone.activate(flow)
    steps = []
    while any(alone.queue):
        frame = alone.step()
        steps.append(None if frame is None else frame.flow)
    # Both start with 16: 0 lacks 84 bytes (wasted, 32); 1 sends two frames and its turn
    # ends (its next frame does not fit the 0 left; 16 again); 0 (wasted, 48); 1 sends its
    # last frame and leaves the list; 0 alone: wasted at 48, 64, 80, 96; at 112 it sends.
    assert steps == [None, 1, 1, None, 1, None, None, None, None, 0]

    async def bench(ctx):
        for flow in range(2):
            await configure(ctx, dut, model, flow, quota=4096)
        await run_traffic(ctx, dut, model, Traffic(frames).cycles(width), ready=STALLED,
                          drain=False)
        run = await run_traffic(ctx, dut, model, [])
        # The first frame of flow 1 is not yet queued when flow 0's first step runs, so the
        # gateware's order is the algorithm's.
        assert [f for f, _, _ in run.frames] == [1, 1, 1, 0]
        assert core.deficit[1] == 0 or not core.queue[1]
        await check_drained(ctx, dut, model)

    simulate(dut, bench)


def test_class_change_takes_effect_at_the_next_turn():
    """A backlogged flow moved to a higher class keeps its place until its turn ends, then
    goes ahead of the class it left."""
    width, quantum = 4, 64
    dut, core = build(width, flows=3, cells=128, cell_bytes=16, classes=2, quantum=quantum)
    model = FlowQueuesCycleModel(core, width)
    frames = [f for k in range(6) for f in frames_of(0, [64], k) + frames_of(1, [64], 20 + k)
              + frames_of(2, [64], 40 + k)]

    async def bench(ctx):
        for flow in range(3):
            await configure(ctx, dut, model, flow, quota=4096)
        await run_traffic(ctx, dut, model, Traffic(frames).cycles(width), ready=STALLED,
                          drain=False)
        await configure(ctx, dut, model, 2, quota=4096, cls=1)
        run = await run_traffic(ctx, dut, model, [])
        flows = [f for f, _, _ in run.frames]
        first = flows.index(2)
        # Round robin until flow 2's first turn; from its next turn on it has the output.
        assert flows[:first] == [0, 1][:first] or all(f < 2 for f in flows[:first])
        assert flows[first:first + 6] == [2] * 6, flows
        assert set(flows[first + 6:]) <= {0, 1}
        await check_drained(ctx, dut, model)

    simulate(dut, bench)
