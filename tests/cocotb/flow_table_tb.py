# cocotb bench of partner.hdl.flow_table.FlowTable (Verilator): many random lookups and rule
# rewrites against the reference model partner.sim.models.flow_table (semantics: docs/rules.md).
"""FlowTable bench: parameters FT_ENTRIES, FT_WAYS, FT_KEYS from the environment."""

import bisect
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from partner.formats import ACTION, FLOW_KEY, FLOW_RULE, ActionKind
from partner.rules import Action, RuleTable
from partner.sim.models.flow_table import (
    key_from_fields,
    lookup,
    random_bases,
    random_entries,
    random_key,
    random_packet,
    random_rule,
    spec_admits,
)

ENTRIES = int(os.environ.get("FT_ENTRIES", "64"))
WAYS = int(os.environ.get("FT_WAYS", "1"))
NKEYS = int(os.environ.get("FT_KEYS", "1500"))
DEPTH = -(-ENTRIES // WAYS)
LATENCY = DEPTH + 7


async def reset(dut):
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    for sig in (dut.i_key__valid, dut.o_result__ready, dut.w_en, dut.w_index, dut.w_rule,
                dut.default_action, dut.c_index, dut.i_key__payload):
        sig.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


async def drive(dut, rng, keys, writes_at, *, ready_p, key_p, start=0):
    """One loop iteration per cycle: inputs after the edge, outputs sampled in ReadOnly; keys
    are offered from cycle `start` on.
    Returns (accepts [(cycle, key)], results [(cycle, raw)], writes [(cycle, index, word)])."""
    accepts, results, writes = [], [], []
    pending = list(keys)
    offering, cycle = False, 0
    while pending or offering or len(results) < len(accepts):
        assert cycle < 100 * LATENCY * (len(keys) + 10), "the flow table stopped answering"
        write = writes_at.get(cycle)
        if write is not None:
            dut.w_index.value, dut.w_rule.value = write
            writes.append((cycle, *write))
        dut.w_en.value = write is not None
        if not offering and pending and cycle >= start and rng.random() < key_p:
            offering = True
            dut.i_key__payload.value = pending[0]
        dut.i_key__valid.value = offering
        ready = rng.random() < ready_p
        dut.o_result__ready.value = ready
        await ReadOnly()
        if offering and dut.i_key__ready.value:
            accepts.append((cycle, pending.pop(0)))
            offering = False
        if ready and dut.o_result__valid.value:
            results.append((cycle, dut.o_result__payload.value.to_unsigned()))
        await RisingEdge(dut.clk)
        cycle += 1
    dut.i_key__valid.value = 0
    dut.w_en.value = 0
    return accepts, results, writes


def views(writes):
    """table(a): entry e as written before cycle a + e // WAYS (a write of cycle t lands in
    cycle t + 1, and the read of e is in cycle a + 1 + e // WAYS: docs/rules.md)."""
    per_entry = {e: ([], []) for e in range(ENTRIES)}
    for t, index, word in writes:
        per_entry[index][0].append(t)
        per_entry[index][1].append(word)

    def table(a):
        out = []
        for e in range(ENTRIES):
            times, words = per_entry[e]
            n = bisect.bisect_left(times, a + e // WAYS)  # writes landed before the read
            out.append(words[n - 1] if n else 0)
        return out
    return table


def decode(raw):
    return raw & 1, (raw >> 1) & 0xFF, raw >> 9


async def per_entry_counters(dut):
    await ClockCycles(dut.clk, 3)
    out = []
    for e in range(ENTRIES):
        dut.c_index.value = e
        await RisingEdge(dut.clk)
        await ReadOnly()
        out.append(dut.c_frames.value.to_unsigned())
        await RisingEdge(dut.clk)
    return out


@cocotb.test()
async def random_entries_with_rewrites(dut):
    """Random ternary entries, keys of their bases, entries rewritten while keys stream."""
    rng = random.Random(int(os.environ.get("FT_SEED", "1")))
    await reset(dut)
    default = rng.getrandbits(ACTION.width)
    dut.default_action.value = default
    bases = random_bases(rng, 6)
    keys = [random_key(rng, bases) for _ in range(NKEYS)]
    writes_at = {e: (e, w) for e, w in enumerate(random_entries(rng, bases, ENTRIES))}
    when = ENTRIES + 10
    while when < NKEYS * DEPTH:
        writes_at[when] = (rng.randrange(ENTRIES), random_entries(rng, bases, 1)[0])
        when += rng.choice([1, 3, DEPTH // 2, DEPTH, 5 * DEPTH, 20 * DEPTH])
    accepts, results, writes = await drive(dut, rng, keys, writes_at, ready_p=0.8, key_p=0.9,
                                           start=ENTRIES // 2)
    table = views(writes)
    assert [k for _, k in accepts] == keys
    want = [lookup(table(a), key, default) for a, key in accepts]
    got = [decode(raw) for _, raw in results]
    bad = [(n, g, tuple(w)) for n, (g, w) in enumerate(zip(got, want, strict=True))
           if g != tuple(w)]
    assert not bad, f"{len(bad)} of {len(got)} lookups differ from the model, first: {bad[:3]}"
    hits = sum(w.hit for w in want)
    assert 0.2 * NKEYS < hits < NKEYS
    assert dut.lookups.value.to_unsigned() == NKEYS
    assert dut.hits.value.to_unsigned() == hits
    assert dut.misses.value.to_unsigned() == NKEYS - hits
    counts = [sum(w.hit and w.index == e for w in want) for e in range(ENTRIES)]
    assert await per_entry_counters(dut) == counts
    assert all(c - a >= LATENCY for (a, _), (c, _) in zip(accepts, results, strict=True))


@cocotb.test()
async def compiled_rules_and_packets(dut):
    """A table of rules compiled from random flow specs, keys parsed from random packets: the
    gateware answers like the model, and like the specs' own meaning (FlowSpec.matches)."""
    rng = random.Random(int(os.environ.get("FT_SEED", "1")) + 1)
    await reset(dut)
    table = RuleTable(ENTRIES, ports=4, queues=4, default=Action(ActionKind.SLOWPATH,
                                                                  demux_key=0xD0))
    rules, ids = [], []
    while table.free > 4:
        rule = random_rule(rng)
        if len(rule.expand()) <= table.free:
            rules.append(rule)
            ids.append(table.add(rule))
    dut.default_action.value = table.default.pack()
    image = table.image()
    packets = [random_packet(rng) for _ in range(NKEYS // 2)]
    for p in packets:
        p["malformed"] = rng.random() < 0.03
    keys = [FLOW_KEY.pack(key_from_fields(p)) for p in packets]
    writes_at = {e: (e, w) for e, w in enumerate(image)}
    _, results, _ = await drive(dut, rng, keys, writes_at, ready_p=0.9, key_p=1.0,
                                start=ENTRIES)
    got = [decode(raw) for _, raw in results]
    assert [tuple(lookup(image, k, table.default)) for k in keys] == got
    hits = 0
    for p, (hit, index, action) in zip(packets, got, strict=True):
        ok = [n for n, r in enumerate(rules)
              if r.spec.matches(p) and spec_admits(r.spec.template, p)]
        if p["malformed"] or not ok:
            assert (hit, action) == (0, table.default.pack())
            continue
        top = max(rules[n].priority for n in ok)
        winner = min(n for n in ok if rules[n].priority == top)
        assert hit and action == rules[winner].act.pack()
        assert index in table.indices(ids[winner])
        hits += 1
    assert hits > len(packets) // 5
    assert FLOW_RULE.unpack(image[0])["valid"]

