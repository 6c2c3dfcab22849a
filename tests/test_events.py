"""The event merger: no occurrence lost, one event per source while the host is slow, round
robin among the sources, an event every two cycles while the host takes them at once."""

import itertools
import random

from amaranth.sim import Simulator

from partner.hdl.events import EventMerger

SOURCES = [(kind, unit) for kind in (1, 2, 3) for unit in range(3)]


def run(strobes, *, ready_prob=1.0, seed=0, drain=200, stall=0):
    """Drive ``strobes`` (one set of source numbers per cycle), then let the merger drain;
    ``o.ready`` is low for the first ``stall`` cycles, then high with ``ready_prob``. Returns
    the events as (source number, count, cycle)."""
    dut = EventMerger(SOURCES)
    events = []
    rng = random.Random(seed)

    async def bench(ctx):
        for cycle in range(len(strobes) + drain):
            now = strobes[cycle] if cycle < len(strobes) else ()
            for i in range(len(SOURCES)):
                ctx.set(dut.i_strobe[i], i in now)
            ready = cycle >= stall and rng.random() < ready_prob
            ctx.set(dut.o.ready, ready)
            await ctx.delay(1e-9)
            if ctx.get(dut.o.valid) and ready:
                payload = ctx.get(dut.o.payload)
                source = SOURCES.index((int(payload.kind), payload.unit))
                events.append((source, payload.count, cycle))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return events


def totals(events):
    out = {}
    for source, count, _ in events:
        assert count >= 1, "an event stands for at least one occurrence"
        out[source] = out.get(source, 0) + count
    return out


def test_every_occurrence_is_counted_once():
    rng = random.Random(1)
    strobes = [{i for i in range(len(SOURCES)) if rng.random() < 0.2} for _ in range(2000)]
    expected = {}
    for now in strobes:
        for i in now:
            expected[i] = expected.get(i, 0) + 1
    for ready_prob in (1.0, 0.3, 0.05):
        assert totals(run(strobes, ready_prob=ready_prob, seed=2, drain=1000)) == expected


def test_a_flood_while_the_host_waits_is_one_event():
    # The first event (the two occurrences before it was sent) waits in the output register
    # while the host takes none; the 98 after it pile up in one pending count and leave as one
    # event when the host is back (it was picked meanwhile: it follows at once).
    events = run([{4}] * 100, stall=150)
    assert [(source, count) for source, count, _ in events] == [(4, 2), (4, 98)]
    assert [cycle for _, _, cycle in events] == [150, 151]


def test_round_robin_and_two_cycles_per_event():
    # Every source raises one occurrence at once: one event each, in source order from the one
    # after source 0 (the last sent, as after reset), two cycles apart; the first is in the
    # output register three cycles after the strobe.
    events = run([set(range(len(SOURCES)))])
    assert [source for source, _, _ in events] == [*range(1, len(SOURCES)), 0]
    assert [count for _, count, _ in events] == [1] * len(SOURCES)
    cycles = [cycle for _, _, cycle in events]
    assert cycles[0] == 3
    assert all(b - a == 2 for a, b in itertools.pairwise(cycles))


def test_a_busy_source_does_not_starve_the_others():
    strobes = [{0} | ({5} if c % 50 == 0 else set()) for c in range(400)]
    events = run(strobes)
    sent = [source for source, _, cycle in events if cycle < 400]
    assert 5 in sent
    assert totals(events) == {0: 400, 5: 8}
