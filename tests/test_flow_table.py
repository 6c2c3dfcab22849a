"""FlowTable (partner.hdl.flow_table) against the reference model, in amaranth.sim.

One testbench drives the table cycle by cycle (keys, rule writes, consumer readiness) and records
the cycle of every write, accepted key and result; the expected answer of each lookup comes from
the reference model (partner.sim.models.flow_table) on the table *as that lookup reads it*: entry
e as written before cycle a + 1 + e // ways, a being the cycle the key was accepted.
"""

import gc
import itertools
import pathlib
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable, Value
from amaranth.sim import Simulator

from partner.formats import ACTION, FLOW_KEY, FLOW_RULE, KeyFlag
from partner.hdl.core import DeviceCore
from partner.hdl.flow_table import FlowTable, result_layout
from partner.sim.models.flow_table import (
    Result,
    lookup,
    random_bases,
    random_entries,
    random_key,
)

RES = result_layout()
MALFORMED = int(KeyFlag.MALFORMED)


def decode(raw: int) -> Result:
    return Result(*((raw >> RES[n].offset) & ((1 << RES[n].width) - 1)
                    for n in ("hit", "index", "action")))


def simulate(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


# -- the cycle-by-cycle driver -----------------------------------------------------------------

class Run:
    """What happened in one drive: writes, accepted keys and results, each with its cycle."""

    def __init__(self):
        self.writes = []   # (cycle, index, word)
        self.accepts = []  # (cycle, key)
        self.results = []  # (cycle, raw)
        self.cycles = 0


async def drive(ctx, dut, program, *, rng=None, ready_p=1.0, key_p=1.0, writes_at=None,
                queued=0, max_cycles=200_000):
    """Run `program` (steps ("write", index, word), ("key", key), ("drain",)) in order, plus
    `writes_at` {cycle: (index, word)} concurrently, until every result is back (`queued`:
    results of keys accepted before this drive, delivered first)."""
    rng = rng or random.Random(0)
    writes_at = writes_at or {}
    run = Run()
    steps = iter(program)
    step = next(steps, None)
    offering = False
    key_payload = Value.cast(dut.i_key.payload)
    res_payload = Value.cast(dut.o_result.payload)
    cycle = 0
    def outstanding():
        return len(run.accepts) + queued - len(run.results)

    while step is not None or outstanding():
        assert cycle < max_cycles, "the flow table stopped answering"
        while step is not None and step[0] == "drain" and not outstanding():
            step = next(steps, None)
        write = None
        if step is not None and step[0] == "write":
            write = step[1:]
            assert cycle not in writes_at
        elif cycle in writes_at:
            write = writes_at[cycle]
        if write is not None:
            ctx.set(dut.w_index, write[0])
            ctx.set(Value.cast(dut.w_rule), write[1])
            run.writes.append((cycle, *write))
        ctx.set(dut.w_en, write is not None)
        if step is not None and step[0] == "key" and not offering and rng.random() < key_p:
            offering = True
            ctx.set(key_payload, step[1])
        ctx.set(dut.i_key.valid, offering)
        ready = rng.random() < ready_p
        ctx.set(dut.o_result.ready, ready)
        _, _, k_ready, o_valid, raw = await ctx.tick().sample(
            dut.i_key.ready, dut.o_result.valid, res_payload)
        if offering and k_ready:
            run.accepts.append((cycle, step[1]))
            offering = False
            step = next(steps, None)
        elif step is not None and step[0] == "write":
            step = next(steps, None)
        if o_valid and ready:
            run.results.append((cycle, raw))
        cycle += 1
    ctx.set(dut.i_key.valid, 0)
    ctx.set(dut.w_en, 0)
    run.cycles = cycle
    return run


def table_seen(run, a, entries, ways):
    """The table a lookup accepted in cycle `a` reads: entry e as of cycle a + 1 + e // ways,
    a write of cycle t landing in the memory in cycle t + 1."""
    table = [0] * entries
    for e in range(entries):
        for t, index, word in run.writes:
            if index == e and t + 1 < a + 1 + e // ways:
                table[e] = word
    return table


def expected_results(run, entries, ways, default):
    return [lookup(table_seen(run, a, entries, ways), key, default) for a, key in run.accepts]


async def read_counters(ctx, dut):
    """Every per-entry hit counter through the c_index/c_frames port (one cycle latency),
    after the last increment has landed (written 3 cycles after its result was produced)."""
    await ctx.tick().repeat(3)
    out = []
    for e in range(dut.entries):
        ctx.set(dut.c_index, e)
        await ctx.tick()
        out.append(ctx.get(dut.c_frames))
    return out


# -- tests -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("entries", "ways", "nkeys", "ready_p"),
                         [(4, 1, 300, 0.6), (4, 2, 300, 0.5), (4, 4, 300, 0.9),
                          (16, 1, 120, 0.8), (16, 2, 200, 0.7), (16, 3, 160, 1.0)])
def test_random_against_model(entries, ways, nkeys, ready_p):
    rng = random.Random(entries * 10 + ways)
    dut = FlowTable(entries, ways)
    bases = random_bases(rng, 2 if entries <= 4 else 3)
    rules = random_entries(rng, bases, entries)
    keys = [random_key(rng, bases) for _ in range(nkeys)]
    default = rng.getrandbits(ACTION.width)
    program = [("write", e, w) for e, w in enumerate(rules)] + [("key", k) for k in keys]

    async def tb(ctx):
        ctx.set(Value.cast(dut.default_action), default)
        run = await drive(ctx, dut, program, rng=rng, ready_p=ready_p, key_p=0.8)
        got = [decode(raw) for _, raw in run.results]
        want = expected_results(run, entries, ways, default)
        assert [k for _, k in run.accepts] == keys
        for n, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"lookup {n}: got {g}, model {w}"
        hits = sum(w.hit for w in want)
        assert 0.2 * nkeys < hits < nkeys  # the rules and keys exercise both outcomes
        assert ctx.get(dut.lookups) == nkeys
        assert ctx.get(dut.hits) == hits
        assert ctx.get(dut.misses) == nkeys - hits
        per_entry = [sum(1 for w in want if w.hit and w.index == e) for e in range(entries)]
        assert await read_counters(ctx, dut) == per_entry
        # Ties happened: some lookups had several matching entries at the winning priority.
        tied = 0
        for _, key in run.accepts:
            if key & MALFORMED:
                continue
            prios = [r["priority"] for r in map(FLOW_RULE.unpack, rules)
                     if r["valid"] and key & r["mask"] == r["value"]]
            tied += len(prios) > 1 and prios.count(max(prios)) > 1
        assert tied > 0

    simulate(dut, tb)


@pytest.mark.parametrize(("entries", "ways"), [(4, 1), (4, 4), (16, 2), (5, 2), (8, 3)])
def test_latency_and_throughput(entries, ways):
    """Back-to-back keys with an always-ready consumer: one key every `depth` cycles, each
    result exactly `latency` cycles after its key was accepted."""
    dut = FlowTable(entries, ways)
    keys = list(range(40))

    async def tb(ctx):
        run = await drive(ctx, dut, [("key", k) for k in keys])
        starts = [a for a, _ in run.accepts]
        assert [b - a for a, b in itertools.pairwise(starts)] == [dut.depth] * (len(keys) - 1)
        assert [c - a for (a, _), (c, _) in zip(run.accepts, run.results, strict=True)] == [
            dut.latency] * len(keys)
        assert dut.latency == -(-entries // ways) + FlowTable.PIPELINE
        assert dut.interval == dut.depth

    simulate(dut, tb)


def test_stalled_consumer_keeps_order_and_blocks_keys():
    """A consumer that stops: the table takes only as many keys as its FIFO can answer, then
    delivers everything in order once the consumer returns."""
    dut = FlowTable(4, 4)
    rng = random.Random(3)
    bases = random_bases(rng, 2)
    rules = random_entries(rng, bases, 4)
    keys = [random_key(rng, bases) for _ in range(30)]

    async def tb(ctx):
        for e, w in enumerate(rules):
            ctx.set(dut.w_index, e)
            ctx.set(Value.cast(dut.w_rule), w)
            ctx.set(dut.w_en, 1)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        ctx.set(Value.cast(dut.i_key.payload), keys[0])
        ctx.set(dut.i_key.valid, 1)
        ctx.set(dut.o_result.ready, 0)
        accepted = 0
        for _ in range(60):
            _, _, ready = await ctx.tick().sample(dut.i_key.ready)
            if ready:
                accepted += 1
                ctx.set(Value.cast(dut.i_key.payload), keys[accepted])
        assert accepted == dut.fifo_depth
        assert ctx.get(dut.o_result.valid)
        ctx.set(dut.i_key.valid, 0)
        run = await drive(ctx, dut, [("key", k) for k in keys[accepted:]],
                          rng=random.Random(4), ready_p=0.5, queued=accepted)
        got = [decode(raw) for _, raw in run.results]
        # The first results were waiting in the FIFO: drain() saw them first.
        want = [lookup(rules, k, 0) for k in keys]
        assert got == want

    simulate(dut, tb)


@pytest.mark.parametrize(("entries", "ways"), [(16, 1), (16, 2)])
def test_writes_during_streaming_lookups(entries, ways):
    """Rules change while keys stream without a gap. Each entry is seen whole, old or new as the
    documented rule says; a lookup in flight at a lone write answers like the table before or
    the table after it, and both happen."""
    rng = random.Random(100 + ways)
    dut = FlowTable(entries, ways)
    bases = random_bases(rng, 3)
    first = random_entries(rng, bases, entries)
    keys = [random_key(rng, bases) for _ in range(260)]
    # Writes go to the entries most keys match, toggling between a top-priority rule with a
    # fresh action and an invalid entry, so that old and new tables answer differently.
    hot = sorted(range(entries), key=lambda e: -sum(
        k & FLOW_RULE.unpack(first[e])["mask"] == FLOW_RULE.unpack(first[e])["value"]
        for k in keys))[:3]
    start = entries + 2
    writes_at, when = {}, start + 5
    while when < start + len(keys) * dut.depth:
        e = rng.choice(hot)
        r = FLOW_RULE.unpack(first[e])
        r.update(valid=rng.random() < 0.7, priority=255, action=rng.getrandbits(ACTION.width))
        writes_at[when] = (e, FLOW_RULE.pack(r))
        when += rng.choice([1, 2, dut.depth + 1, 2 * dut.depth, 3 * dut.depth])
    program = [("write", e, w) for e, w in enumerate(first)]
    program += [("key", k) for k in keys]

    async def tb(ctx):
        run = await drive(ctx, dut, program, rng=rng, writes_at=writes_at)
        got = [decode(raw) for _, raw in run.results]
        want = expected_results(run, entries, ways, 0)
        assert got == want
        # Lone writes (no other write within a scan of them): old table or new table.
        lone = [t for t, _, _ in run.writes[entries:]
                if all(abs(t - u) > dut.depth for u, _, _ in run.writes if u != t)]
        old_new = {"old": 0, "new": 0}
        for (a, key), g in zip(run.accepts, got, strict=True):
            for t in lone:
                # the scan of this key is running when the write lands (cycle t + 1)
                if a <= t + 1 < a + dut.depth:
                    before = lookup(table_at(run, t), key, 0)
                    after = lookup(table_at(run, t + 1), key, 0)
                    assert g in (before, after)
                    if before != after:
                        old_new["old" if g == before else "new"] += 1
        assert old_new["old"] and old_new["new"], old_new

    def table_at(run, cycle):
        """The table after every write of a cycle < `cycle`."""
        table = [0] * entries
        for t, index, word in run.writes:
            if t < cycle:
                table[index] = word
        return table

    simulate(dut, tb)


def test_write_timing_is_exact():
    """A directed check of the documented rule at one entry: a write in the cycle the lookup
    reads that entry is not seen, one cycle earlier is."""
    entries, ways = 8, 2
    dut = FlowTable(entries, ways)
    e = 5  # read in cycle a + 1 + 5 // 2 = a + 3
    old = FLOW_RULE.pack(valid=1, priority=1, action=111, value=0, mask=0)
    new = FLOW_RULE.pack(valid=1, priority=1, action=222, value=0, mask=0)
    outcomes = {}

    async def tb(ctx):
        for offset in range(0, 6):
            program = [("write", e, old), ("key", 0)]
            # key accepted in the cycle after the write step: a = 1 relative to the start
            run = await drive(ctx, dut, program, writes_at={1 + offset: (e, new)})
            (a, _), = run.accepts
            assert a == 1
            outcomes[offset] = decode(run.results[0][1]).action
            await ctx.tick().repeat(entries)  # let the late write land before the next round

    simulate(dut, tb)
    # read in cycle a + 3 = 4: writes in cycles 1..2 (offset 0..1) have landed by then (a write
    # lands in the memory a cycle after its own), from 3 on not
    assert outcomes == {0: 222, 1: 222, 2: 111, 3: 111, 4: 111, 5: 111}


@pytest.mark.parametrize("ways", [1, 2])
def test_malformed_takes_default(ways):
    dut = FlowTable(4, ways)
    default = ACTION.pack(kind=2, demux_key=0xBEEF)
    anything = FLOW_RULE.pack(valid=1, priority=255, action=ACTION.pack(kind=1, port=3),
                              value=0, mask=0)
    # A rule asking for the MALFORMED flag itself must not catch malformed keys either.
    wants_malformed = FLOW_RULE.pack(valid=1, priority=255, action=ACTION.pack(kind=3),
                                     value=FLOW_KEY.pack(flags=MALFORMED),
                                     mask=FLOW_KEY.pack(flags=MALFORMED))
    key = FLOW_KEY.pack(flags=int(KeyFlag.IPV4), ethertype=0x0800, dst_port=53)
    program = [("write", 1, anything), ("write", 0, wants_malformed),
               ("key", key | MALFORMED), ("key", key), ("key", MALFORMED)]

    async def tb(ctx):
        ctx.set(Value.cast(dut.default_action), default)
        run = await drive(ctx, dut, program)
        got = [decode(raw) for _, raw in run.results]
        assert got == [Result(0, 0, default), Result(1, 1, ACTION.pack(kind=1, port=3)),
                       Result(0, 0, default)]
        assert (ctx.get(dut.lookups), ctx.get(dut.hits), ctx.get(dut.misses)) == (3, 1, 2)
        assert await read_counters(ctx, dut) == [0, 1, 0, 0]

    simulate(dut, tb)


@pytest.mark.parametrize("ways", [1, 2, 4])
def test_exhaustive_priority_and_ties(ways):
    """4 entries, entry i matches keys with dst_port bit i: every match subset (16 keys) under
    every table of states {invalid, priority 0, 1, 2} per entry (256 tables)."""
    entries = 4
    dut = FlowTable(entries, ways)
    states = [None, 0, 1, 2]

    def rule(i, state):
        if state is None:  # invalid, but it would match: valid must gate it
            return FLOW_RULE.pack(valid=0, priority=3, action=100 + i,
                                  value=FLOW_KEY.pack(dst_port=1 << i),
                                  mask=FLOW_KEY.pack(dst_port=1 << i))
        return FLOW_RULE.pack(valid=1, priority=state, action=100 + i,
                              value=FLOW_KEY.pack(dst_port=1 << i),
                              mask=FLOW_KEY.pack(dst_port=1 << i))

    tables = list(itertools.product(states, repeat=entries))
    program, expect = [], []
    for table in tables:
        program += [("write", i, rule(i, s)) for i, s in enumerate(table)]
        for subset in range(16):
            program.append(("key", FLOW_KEY.pack(dst_port=subset)))
            # Written from the rule itself, not from the model: highest priority, then index.
            live = [(s, i) for i, s in enumerate(table) if s is not None and subset >> i & 1]
            if live:
                top = max(s for s, _ in live)
                winner = min(i for s, i in live if s == top)
                expect.append(Result(1, winner, 100 + winner))
            else:
                expect.append(Result(0, 0, 7))
        program.append(("drain",))

    async def tb(ctx):
        ctx.set(Value.cast(dut.default_action), 7)
        run = await drive(ctx, dut, program)
        got = [decode(raw) for _, raw in run.results]
        assert got == expect
        assert got == expected_results(run, entries, ways, 7)  # the model agrees

    simulate(dut, tb)


def test_counter_port_latency():
    dut = FlowTable(4, 1)
    hit_all = FLOW_RULE.pack(valid=1, priority=1, action=9, value=0, mask=0)
    program = [("write", 2, hit_all)] + [("key", 0)] * 3

    async def tb(ctx):
        await drive(ctx, dut, program)
        await ctx.tick().repeat(3)  # the last increment lands
        ctx.set(dut.c_index, 2)
        assert ctx.get(dut.c_frames) == 0  # not yet: the port is registered
        await ctx.tick()
        assert ctx.get(dut.c_frames) == 3
        ctx.set(dut.c_index, 1)
        assert ctx.get(dut.c_frames) == 3
        await ctx.tick()
        assert ctx.get(dut.c_frames) == 0

    simulate(dut, tb)


def test_ways_for_and_parameters():
    assert FlowTable.ways_for(16, 10) == 2  # 10G, 8-byte core: 10 cycles per 64-byte frame
    assert FlowTable.ways_for(64, 84) == 1  # 1G, 1-byte core: 84 cycles per frame
    assert FlowTable.ways_for(64, 10) == 7
    assert FlowTable.ways_for(256, 1) == 256
    with warnings.catch_warnings():  # instances made only to read their parameters
        warnings.simplefilter("ignore", UnusedElaboratable)
        for entries, cycles in [(16, 10), (64, 84), (64, 10), (100, 7)]:
            assert FlowTable(entries, FlowTable.ways_for(entries, cycles)).interval <= cycles
        t = FlowTable(16, 2)
        assert (t.depth, t.interval, t.latency) == (8, 8, 15)
        assert FlowTable.latency_for(16, 2) == 15 and FlowTable.latency_for(64, 2) == 39
        # The device core's default: one lookup per minimum frame from each port.
        for width, rules, ways in [(1, 16, 1), (1, 64, 2), (8, 16, 4), (8, 64, 16)]:
            assert DeviceCore.default_ways(width_bytes=width, ports=2, rules=rules) == ways
            assert DeviceCore(ports=2, width_bytes=width, rules=rules).ways == ways
        assert t.o_result.payload.shape() == RES
        with pytest.raises(ValueError, match="entries"):
            FlowTable(257)
        with pytest.raises(ValueError, match="ways"):
            FlowTable(4, 5)
        with pytest.raises(ValueError, match="cycles_per_lookup"):
            FlowTable.ways_for(4, 0)
        del t
        gc.collect()


# -- Verilator: the 1G configuration, many lookups ---------------------------------------------

@pytest.mark.cocotb
def test_cocotb_64_entries():
    """tests/cocotb/flow_table_tb.py on a Verilator model of FlowTable(64, 1): random entries
    rewritten while thousands of keys stream, and a table compiled from random flow specs."""
    verilator = pytest.importorskip("partner.sim.verilator")
    model = verilator.build(FlowTable(64, 1), name="flow_table_64")
    result = model.run(pathlib.Path(__file__).parent / "cocotb" / "flow_table_tb.py",
                       env={"FT_ENTRIES": "64", "FT_WAYS": "1", "FT_KEYS": "3000"}, seed=1)
    assert sorted(name.rsplit(".", 1)[1] for name in result.passed) == [
        "compiled_rules_and_packets", "random_entries_with_rewrites"]
