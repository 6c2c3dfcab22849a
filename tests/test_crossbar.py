"""The frame switch: whole frames, per-source order, round robin, no bubbles (registered
grants)."""

import functools
import random

from amaranth.lib import data
from amaranth.sim import Simulator

from partner.hdl.crossbar import FrameSwitch
from partner.hdl.stream import packet_layout

LAYOUT = data.StructLayout({"beat": packet_layout(1), "dest": 2, "tag": 8})


def frames_for(rng, source, count, dests):
    out = []
    for number in range(count):
        length = rng.randint(1, 6)
        dest = rng.randrange(dests)
        out.append((dest, [(source << 12) | (number << 4) | i for i in range(length)]))
    return out


def run(sources, dests, frames, *, ready_prob=1.0, seed=0, max_cycles=20000):
    dut = FrameSwitch(LAYOUT, sources, dests)
    received = {d: [] for d in range(dests)}
    cycles = {"count": 0}
    rng = random.Random(seed)

    async def source(ctx, s):
        port = dut.i[s]
        for dest, words in frames[s]:
            for i, word in enumerate(words):
                ctx.set(port.valid, 1)
                ctx.set(port.payload, {
                    "beat": {"data": word & 0xFF, "nbytes": 1, "first": i == 0,
                             "last": i == len(words) - 1},
                    "dest": dest,
                    "tag": word >> 8,
                })
                await ctx.tick().until(port.ready)
        ctx.set(port.valid, 0)

    async def sink(ctx, d):
        port = dut.o[d]
        current = []
        while True:
            ready = rng.random() < ready_prob
            ctx.set(port.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
            if valid and ready:
                current.append((payload.tag << 8) | payload.beat.data)
                if payload.beat.last:
                    received[d].append(current)
                    current = []

    async def clock(ctx):
        total = sum(len(w) for f in frames for _, w in f)
        while sum(len(w) for r in received.values() for w in r) < total:
            await ctx.tick()
            cycles["count"] += 1
            assert cycles["count"] < max_cycles, "the switch stopped moving"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for s in range(sources):
        sim.add_testbench(functools.partial(source, s=s), background=True)
    for d in range(dests):
        sim.add_process(functools.partial(sink, d=d))
    sim.add_testbench(clock)
    sim.run()
    return received, cycles["count"]


def test_every_frame_arrives_whole_and_in_source_order():
    rng = random.Random(7)
    sources, dests = 3, 3
    frames = [frames_for(rng, s, 30, dests) for s in range(sources)]
    received, _ = run(sources, dests, frames, ready_prob=0.7, seed=3)
    for d in range(dests):
        for s in range(sources):
            sent = [words for dest, words in frames[s] if dest == d]
            got = [words for words in received[d] if words[0] >> 12 == s]
            assert got == sent  # whole frames, nothing interleaved, order kept


def test_back_to_back_frames_from_one_source_have_no_bubbles():
    frames = [[(0, [i << 4 | k for k in range(4)]) for i in range(50)]]
    _, cycles = run(1, 1, frames)
    assert cycles <= 200 + 3  # one beat per cycle, plus pipeline start


def test_two_sources_share_one_destination_fairly():
    frames = [[(0, [(s << 12) | (i << 4) | k for k in range(3)]) for i in range(20)]
              for s in range(2)]
    received, cycles = run(2, 1, frames)
    order = [words[0] >> 12 for words in received[0]]
    assert order[:10] in ([0, 1] * 5, [1, 0] * 5)  # round robin while both wait
    assert cycles <= 120 + 3  # the destination never idles while a frame waits


def test_one_source_alternating_destinations_has_no_bubbles():
    # The grant of each destination stays parked on the source between its frames.
    frames = [[(i % 2, [i << 4 | k for k in range(1 + i % 3)]) for i in range(60)]]
    beats = sum(len(words) for _, words in frames[0])
    received, cycles = run(1, 2, frames)
    assert [w for w in received[0]] == [w for d, w in frames[0] if d == 0]
    assert cycles <= beats + 3  # only the first frame to each destination waits for a grant


def test_single_beat_frames_do_not_starve_a_waiting_source():
    frames = [[(0, [(s << 12) | (i << 4)]) for i in range(20)] for s in range(2)]
    received, cycles = run(2, 1, frames)
    order = [words[0] >> 12 for words in received[0]]
    assert order[1:39] in ([0, 1] * 19, [1, 0] * 19)  # the grant moves on after every frame
    assert cycles <= 40 + 3
