"""Host TX gate (amaranth.sim): frames wait for their cells, go on whole and in order after the
grant, bad ones are dropped and counted; a stalled reservation of one port holds back the whole
host stream (documented, not a bug)."""

import itertools
import random

from amaranth.lib import data
from amaranth.sim import Simulator

from partner.hdl.core import host_tx_layout
from partner.hdl.host_tx import HostTxGate
from partner.hdl.stream import packet_layout

W, PORTS, TX_FLOWS, DEST_BASE, CELLS, CELL_BYTES = 4, 2, 4, 3, 8, 8
OUT_LAYOUT = data.StructLayout({"beat": packet_layout(W), "dest": range(8), "flow": 9,
                                "length": 14, "meta": 4})


def run_gate(frames, seed, grant_probability=0.3, ready_probability=0.7, cycles=4000):
    """Drive `frames` ((port, flow, payload[, announced length])) cycle by cycle; returns the
    frames out, the grants ((port, cells) in order, with the cycle), the cycle each frame's
    first beat went out, and the drop count."""
    dut = HostTxGate(host_tx_layout(W), OUT_LAYOUT, ports=PORTS, tx_flows=TX_FLOWS,
                     dest_base=DEST_BASE, cells=CELLS, cell_bytes=CELL_BYTES)
    rng = random.Random(seed)
    beats = []
    for port, flow, payload, *length in frames:
        chunks = [payload[i:i + W] for i in range(0, len(payload), W)]
        for n, chunk in enumerate(chunks):
            beats.append({"beat": {"data": int.from_bytes(chunk, "little"), "nbytes": len(chunk),
                                   "first": n == 0, "last": n == len(chunks) - 1},
                          "port": port, "flow": flow,
                          "length": length[0] if length else len(payload)})
    result = {"out": [], "grants": [], "first_out": [], "dropped": 0}

    async def bench(ctx):
        current = None
        for cycle in range(cycles):
            if beats:
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, beats[0])
            else:
                ctx.set(dut.i.valid, 0)
            ready = rng.random() < ready_probability
            ctx.set(dut.o.ready, ready)
            grants = [rng.random() < grant_probability for _ in range(PORTS)]
            for p in range(PORTS):
                ctx.set(dut.reserve[p].ready, grants[p])
            for p in range(PORTS):
                if ctx.get(dut.reserve[p].valid) and grants[p]:
                    result["grants"].append((p, ctx.get(dut.reserve[p].payload), cycle))
            if ctx.get(dut.o.valid) and ready:
                payload = ctx.get(dut.o.payload)
                beat = payload.beat
                chunk = beat.data.to_bytes(W, "little")[:beat.nbytes]
                if beat.first:
                    current = [payload.dest, payload.flow, payload.length, b""]
                    result["first_out"].append(cycle)
                current[3] += chunk
                if beat.last:
                    result["out"].append(tuple(current))
            if beats and ctx.get(dut.i.ready):
                beats.pop(0)
            await ctx.tick()
        result["dropped"] = ctx.get(dut.dropped)
        assert not beats, "the gate stopped taking beats"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return result


def test_frames_wait_for_their_cells_and_bad_ones_are_dropped():
    rng = random.Random(1)
    frames, good = [], []
    for _ in range(60):
        kind = rng.random()
        payload = rng.randbytes(rng.randint(1, CELLS * CELL_BYTES))
        port, flow = rng.randrange(PORTS), rng.randrange(TX_FLOWS)
        if kind < 0.1:
            frames.append((PORTS + 1, flow, payload))  # no such port
        elif kind < 0.2:
            frames.append((port, TX_FLOWS, payload))  # no such flow
        elif kind < 0.25:
            frames.append((port, flow, payload, CELLS * CELL_BYTES + 1))  # can never fit
        else:
            frames.append((port, flow, payload))
            good.append((port, flow, payload))
    result = run_gate(frames, seed=2)
    assert result["out"] == [(DEST_BASE + p, f, len(d), d) for p, f, d in good]
    assert [(p, cells) for p, cells, _ in result["grants"]] == [
        (p, -(-len(d) // CELL_BYTES)) for p, _, d in good]
    # A frame leaves only after its grant.
    for (_, _, granted), out in zip(result["grants"], result["first_out"], strict=True):
        assert out > granted
    assert result["dropped"] == len(frames) - len(good)


def test_two_cycles_between_frames_when_nothing_waits():
    frames = [(k % PORTS, k % TX_FLOWS, bytes([k]) * 8) for k in range(20)]  # two beats each
    result = run_gate(frames, seed=3, grant_probability=1.0, ready_probability=1.0,
                      cycles=100)
    starts = result["first_out"]
    assert len(starts) == 20
    assert all(b - a == 2 + 2 for a, b in itertools.pairwise(starts))
