"""cocotb bench for the FlowQueues Verilog (run by tests/test_flow_queues.py).

The design's parameters come from the environment (FQ_WIDTH, FQ_FLOWS, FQ_CELLS, FQ_CELL_BYTES,
FQ_CLASSES, FQ_QUANTUM; metadata is FQ_META_BITS wide). Every cycle the outputs are compared
with `FlowQueuesCycleModel`, as in the amaranth.sim tests, but over runs far too long for
amaranth.sim.
"""

import itertools
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from partner.hdl.stream import packet_layout
from partner.sim.models.flow_queues import (
    FlowQueuesCycleModel,
    FlowQueuesModel,
    Verdict,
    by_flow,
    expected_by_flow,
)

P = {name: int(os.environ[f"FQ_{name.upper()}"])
     for name in ("width", "flows", "cells", "cell_bytes", "classes", "quantum", "meta_bits")}
LAYOUT = packet_layout(P["width"])


def u(port):
    """A port's value as an unsigned int (1-bit ports read as `Logic`, wider as `LogicArray`)."""
    return int(port.value)


def beats_of(payload):
    w = P["width"]
    chunks = [payload[i:i + w] for i in range(0, len(payload), w)]
    return [{"data": int.from_bytes(c, "little"), "nbytes": len(c), "first": n == 0,
             "last": n == len(chunks) - 1} for n, c in enumerate(chunks)]


def input_cycles(frames, gap=lambda: 0):
    for flow, payload, meta, *announced in frames:
        length = announced[0] if announced else len(payload)
        for beat in beats_of(payload):
            yield from [None] * gap()
            yield (beat, flow, length, meta)


class Bench:
    def __init__(self, dut):
        self.dut = dut
        self.model = FlowQueuesCycleModel(
            FlowQueuesModel(P["flows"], P["cells"], P["cell_bytes"], P["classes"], P["quantum"]),
            P["width"])
        self.out = []  # (flow, bytes, meta) per frame that left
        self.cycles = 0

    async def start(self):
        dut = self.dut
        Clock(dut.clk, 10, unit="ns").start()
        dut.rst.value = 1
        for port in (dut.i_stream__valid, dut.o_stream__ready, dut.cfg_en, dut.c_flow,
                     dut.c_req):
            port.value = 0
        for _ in range(2):
            await RisingEdge(dut.clk)
        dut.rst.value = 0

    async def step(self, item, ready, cfg=None):
        """Drive one cycle's inputs, compare the outputs with the model, advance both."""
        dut, model = self.dut, self.model
        await RisingEdge(dut.clk)
        dut.i_stream__valid.value = item is not None
        if item is not None:
            beat, flow, length, meta = item
            dut.i_stream__payload.value = LAYOUT.const(beat).as_bits()
            dut.i_flow.value = flow
            dut.i_length.value = length
            dut.i_meta.value = meta
        dut.o_stream__ready.value = ready
        dut.cfg_en.value = cfg is not None
        if cfg is not None:
            dut.cfg_flow.value = cfg["flow"]
            dut.cfg_quota_bytes.value = cfg["quota"]
            dut.cfg_class.value = cfg["cls"]
            dut.cfg_weight.value = cfg["weight"]
        await ReadOnly()
        assert u(dut.i_stream__ready) == 1
        valid, beat, flow, meta = model.outputs()
        assert u(dut.o_stream__valid) == valid, f"cycle {self.cycles}: valid"
        if valid:
            assert u(dut.o_stream__payload) == LAYOUT.const(beat).as_bits(), \
                f"cycle {self.cycles}: beat"
            assert u(dut.o_flow) == flow, f"cycle {self.cycles}: flow"
            assert u(dut.o_meta) == meta, f"cycle {self.cycles}: meta"
        assert u(dut.free_cells) == model.free_cells, \
            f"cycle {self.cycles}: free cells"
        assert u(dut.frames_queued) == model.core.frames_queued
        left = model.clock(item, ready, cfg)
        if left is not None:
            data = b"".join(b.to_bytes(P["width"], "little") for b in left.beats)
            self.out.append((left.flow, data[:left.stored_len], left.meta))
        self.cycles += 1

    async def traffic(self, cycles, ready=lambda: True, cfg=lambda: None, drain=True):
        for item in cycles:
            await self.step(item, ready(), cfg())
        while drain and not self.model.idle():
            await self.step(None, True)

    async def configure(self, flow, quota, cls=0, weight=1):
        await self.step(None, False, {"flow": flow, "quota": quota, "cls": cls,
                                      "weight": weight})

    async def check_drained(self):
        dut, core = self.dut, self.model.core
        assert self.model.idle()
        for _ in range(3):
            await self.step(None, True)
        assert u(dut.free_cells) == P["cells"]
        assert u(dut.alloc_error) == 0
        for flow in range(P["flows"]):
            await RisingEdge(dut.clk)
            dut.c_flow.value = flow
            dut.c_req.value = 1  # a snapshot through the counters' shared port
            await RisingEdge(dut.clk)
            dut.c_req.value = 0
            for _ in range(8):
                await ReadOnly()
                if u(dut.c_valid):
                    break
                await RisingEdge(dut.clk)
            else:
                raise AssertionError(f"flow {flow}: no counter snapshot")
            got = {name: u(getattr(dut, f"c_{name}"))
                   for name in core.counter_values(flow)}
            assert got == core.counter_values(flow), f"flow {flow} counters"
            await RisingEdge(dut.clk)  # bytes in use: two cycles after the address
            await ReadOnly()
            assert u(dut.c_bytes_in_use) == 0
        self.cycles += 4 * P["flows"]


@cocotb.test()
async def random_long_run(dut):
    """Thousands of random frames: every class, weight and quota kind, configuration changes
    while frames are queued, announced lengths that disagree with the beats, random input gaps
    and output backpressure phases."""
    bench = Bench(dut)
    await bench.start()
    rng = random.Random(int(os.environ.get("FQ_SEED", "1")))
    flows, capacity = P["flows"], P["cells"] * P["cell_bytes"]
    max_frame = min(capacity + 64, 1600)

    def random_cfg(flow=None):
        flow = rng.randrange(flows) if flow is None else flow
        # Quotas above the buffer let flows fill it: frames are dropped for the buffer often
        # enough even though cells are free again as soon as they are read.
        quota = rng.choice([0, capacity // 8, capacity // 4, capacity // 2, capacity,
                            2 * capacity])
        return {"flow": flow, "quota": quota, "cls": rng.randrange(P["classes"]),
                "weight": rng.choice([0, 1, 2, 3, 8, 255])}

    for flow in range(flows):
        cfg = random_cfg(flow)
        await bench.configure(flow, cfg["quota"] or capacity // 4, cfg["cls"], cfg["weight"])
    frames = []
    for _ in range(int(os.environ.get("FQ_FRAMES", "3000"))):
        roll = rng.random()
        length = (rng.randint(1, 64) if roll < 0.6 else rng.randint(60, 300) if roll < 0.9
                  else rng.randint(300, max_frame))
        frame = (rng.randrange(flows), rng.randbytes(length), rng.randrange(1 << P["meta_bits"]))
        if rng.random() < 0.02:
            frame += (max(0, length + rng.choice([-50, -1, 1, 9, 100])),)
        frames.append(frame)
    phase = {"p": 1.0, "n": 0}

    def ready():
        phase["n"] += 1
        if phase["n"] % 200 == 0:
            phase["p"] = rng.choice([1.0, 1.0, 0.9, 0.5, 0.1, 0.0])
        return rng.random() < phase["p"]

    await bench.traffic(input_cycles(frames, gap=lambda: rng.choice([0] * 8 + [1, 5])),
                        ready=ready, cfg=lambda: random_cfg() if rng.random() < 0.001 else None)
    assert by_flow(bench.out) == expected_by_flow(frames, bench.model.admitted)
    verdicts = [v for v, _, _ in bench.model.admitted]
    assert all(verdicts.count(v) > 20 for v in Verdict), {v: verdicts.count(v) for v in Verdict}
    await bench.check_drained()
    dut._log.info("random_long_run: %d frames, %d cycles, verdicts %s", len(frames),
                  bench.cycles, {v.name: verdicts.count(v) for v in Verdict})


@cocotb.test()
async def exhaustive_sequences(dut):
    """Every sequence of up to FQ_MAX_SEQ frames over {flow 0, 1} x {1, 3, 5 bytes}, each with
    the output stalled during the input, always ready and ready every other cycle (the
    amaranth.sim test covers up to 3 frames; this one goes further). Expects 2 flows, a few
    cells of 2 bytes (4, or 3 or 5: not a power of two), one class, quantum 2."""
    bench = Bench(dut)
    await bench.start()
    rng = random.Random(5)
    await bench.configure(0, quota=6, weight=1)
    await bench.configure(1, quota=P["cells"] * P["cell_bytes"], weight=2)
    alphabet = [(flow, length) for flow in range(2) for length in (1, 3, 5)]
    runs = 0
    for n in range(1, int(os.environ.get("FQ_MAX_SEQ", "4")) + 1):
        for seq in itertools.product(alphabet, repeat=n):
            frames = [(f, rng.randbytes(length), rng.randrange(256)) for f, length in seq]
            for mode in range(3):
                tick = itertools.count()
                ready = [lambda: False, lambda: True, lambda t=tick: next(t) % 2 == 0][mode]
                start, out = len(bench.model.admitted), len(bench.out)
                await bench.traffic(input_cycles(frames), ready=ready)
                assert by_flow(bench.out[out:]) == expected_by_flow(
                    frames, bench.model.admitted[start:])
                # (the DUT shows the same one cycle later: step() compares every cycle)
                assert bench.model.core.free_cells == P["cells"]
                runs += 1
    await bench.check_drained()
    dut._log.info("exhaustive_sequences: %d runs, %d cycles", runs, bench.cycles)
