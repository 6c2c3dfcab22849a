# The partner demux (paper section 3.2: the device classifies frames into flows and hands on a
# demux key): a ternary flow table over partner.formats.FLOW_KEY with FLOW_RULE entries held in
# block RAM and scanned `ways` entries per cycle. Semantics and timing: docs/rules.md.
"""Flow table: ternary match, priority, default action, counters.

A lookup scans every entry: among valid entries whose ``key & mask == value`` the one with the
highest ``priority`` wins, equal priorities go to the lowest index. No match, or a key with
`KeyFlag.MALFORMED`, gives ``hit = 0``, ``index = 0`` and ``default_action``.

Storage: ``ways`` memories of ``depth = ceil(entries / ways)`` words of the whole 896-bit
`FLOW_RULE`; entry *e* lives in way ``e % ways`` at address ``e // ways``. One lookup reads one
address of every way per cycle, so the table answers one key every ``depth`` cycles. Each way is
built of 128-column slices whose read addresses come from copies of one counter, so that no
address net spans the whole table.

Pipeline of one lookup accepted in cycle *a* (each step registered at the end of its cycle)::

    a+1+j  address j presented to every way's memory
    a+2+j  memory data out, registered (keeps the slow memory output away from the compare)
    a+3+j  (key & mask) ^ value over 431 bits, OR-reduced in 16-bit groups
    a+4+j  match = valid & no group differs & not MALFORMED
    a+5+j  best of the ways at address j (ties: lower way = lower index)
    a+6+j  running best of the scan (only a strictly higher priority replaces it)
    a+6+D  result (default action muxed in) written into the output FIFO
    a+7+D  o_result.valid

Latency: ``o_result.valid`` rises ``depth + 7`` cycles after the cycle in which the key was
accepted (`FlowTable.latency`). Throughput: one key every ``depth`` cycles
(`FlowTable.interval`) while the consumer keeps up; ``i_key.ready`` drops only while a scan is
running or when the result FIFO could not take the result of a new lookup, so the pipeline never
stalls and ``o_result.ready`` fans out to the FIFO only.

Rule writes (``w_en`` for one cycle) replace all 896 bits of an entry at one clock edge, one
cycle after the write's own (the write is registered first). A lookup accepted in cycle *a*
reads entry *e* in cycle ``a + 1 + e // ways``; a write in cycle *t* is seen by that read iff
``t + 1 < a + 1 + e // ways`` (the read port is not transparent: a read in the cycle the entry
is written returns the old entry). A lookup therefore sees each entry whole, old or
new, and which one follows from the cycle numbers; with several writes during one scan it may
see some new and some old entries.

Counters: ``lookups``, ``hits``, ``misses`` count results as they enter the FIFO (32-bit,
wrapping). Per-entry hit counters live in a memory, incremented three cycles after the result is
produced; ``c_frames`` shows the counter of ``c_index`` one cycle later. Neither rules nor
per-entry counters are cleared by reset.
"""

import itertools

from amaranth.hdl import Cat, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from partner.formats import ACTION, FLOW_KEY, FLOW_RULE, FRAME_META, MAX_FLOWS, KeyFlag

from .wire import layout

__all__ = ["FlowTable", "result_layout"]

_GROUP = 16  # key bits per first-level mismatch group: 3 inputs per bit, ~3 LUT levels
_SLICE_BITS = 128  # rule columns per read address register: 32 LUT RAM cells per address bit


def result_layout() -> data.StructLayout:
    """One lookup result: `hit`, the entry `index` (as wide as `FRAME_META.flow`), `action`."""
    return data.StructLayout({
        "hit": FRAME_META["hit"].width,
        "index": FRAME_META["flow"].width,
        "action": layout(ACTION),
    })


class FlowTable(wiring.Component):
    """Ternary flow table of ``entries`` rules, ``ways`` compared per cycle.

    Parameters
    ----------
    entries : int
        Table size, 1 .. 256 (`FRAME_META.flow` names an entry in 8 bits).
    ways : int
        Entries compared per cycle (parallel memories); see `ways_for`.

    Members
    -------
    i_key : ``In(stream.Signature(layout(FLOW_KEY)))``
        Keys to look up.
    o_result : ``Out(stream.Signature(result_layout()))``
        One result per key, in key order.
    w_index, w_rule, w_en : ``In(range(entries))``, ``In(layout(FLOW_RULE))``, ``In(1)``
        Replace entry ``w_index`` with ``w_rule`` when ``w_en`` is high (one cycle, whole entry;
        the entry is replaced at the second clock edge, the write being registered first).
    default_action : ``In(layout(ACTION))``
        Action of misses; read when the result is produced (cycle a + depth + 6).
    lookups, hits, misses : ``Out(32)``
        Wrapping counters.
    c_index, c_frames : ``In(range(entries))``, ``Out(32)``
        Per-entry hit counter read port, one cycle latency.
    """

    PIPELINE = 7  # cycles from the last scan read to o_result.valid

    def __init__(self, entries: int = 16, ways: int = 1):
        if not isinstance(entries, int) or not 1 <= entries <= MAX_FLOWS:
            raise ValueError(f"entries must be an integer 1..{MAX_FLOWS}, not {entries!r}")
        if not isinstance(ways, int) or not 1 <= ways <= entries:
            raise ValueError(f"ways must be an integer 1..entries ({entries}), not {ways!r}")
        self.entries = entries
        self.ways = ways
        self.depth = -(-entries // ways)
        #: cycles from the cycle a key is accepted to the cycle its result is valid
        self.latency = self.latency_for(entries, ways)
        #: cycles between accepted keys at full rate
        self.interval = self.depth
        # Lookups in flight at full rate, plus one: the FIFO never makes the scan wait.
        self.fifo_depth = 2 + self.PIPELINE // self.depth
        super().__init__({
            "i_key": In(stream.Signature(layout(FLOW_KEY))),
            "o_result": Out(stream.Signature(result_layout())),
            "w_index": In(range(entries)),
            "w_rule": In(layout(FLOW_RULE)),
            "w_en": In(1),
            "default_action": In(layout(ACTION)),
            "lookups": Out(32),
            "hits": Out(32),
            "misses": Out(32),
            "c_index": In(range(entries)),
            "c_frames": Out(32),
        })

    @classmethod
    def latency_for(cls, entries: int, ways: int) -> int:
        """Cycles from the cycle a key is accepted to the cycle its result is valid."""
        return -(-entries // ways) + cls.PIPELINE

    @staticmethod
    def ways_for(entries: int, cycles_per_lookup: int) -> int:
        """The fewest ways that scan `entries` in at most `cycles_per_lookup` cycles (e.g. 84 at
        1G with a 1-byte core, 10 at 10G with an 8-byte core: one lookup per 64-byte frame)."""
        if cycles_per_lookup < 1:
            raise ValueError(f"cycles_per_lookup must be >= 1, not {cycles_per_lookup!r}")
        return -(-entries // cycles_per_lookup)

    def elaborate(self, platform):
        m = Module()
        W, D = self.ways, self.depth
        key_l = layout(FLOW_KEY)
        index_w = FRAME_META["flow"].width

        # ---- rule memories and the write port ----------------------------------------------
        ways = []
        w_way = Signal(range(max(W, 2)))
        w_addr = Signal(range(max(D, 2)))
        if W & (W - 1) == 0:
            shift = W.bit_length() - 1
            m.d.comb += [w_way.eq(self.w_index & (W - 1)), w_addr.eq(self.w_index >> shift)]
        else:
            with m.Switch(self.w_index):
                for e in range(self.entries):
                    with m.Case(e):
                        m.d.comb += [w_way.eq(e % W), w_addr.eq(e // W)]
        # The write is registered on its way: the rule's 443 bits fan out to every LUT RAM
        # cell of every way, wherever the placer put them (with 64 rules this was the routed
        # core's worst path, from the register block across the chip). A write still replaces
        # a whole entry in one cycle, one cycle later.
        r_rule = Signal(layout(FLOW_RULE), reset_less=True)
        r_addr = Signal.like(w_addr, reset_less=True)
        r_en = Signal(W)
        m.d.sync += [r_rule.eq(self.w_rule), r_addr.eq(w_addr),
                     r_en.eq(Cat(self.w_en & (w_way == k) for k in range(W)))]
        # Each way is stored as slices of `_SLICE_BITS` columns, each slice with a read address
        # register of its own (below): one address register driving all 224 LUT RAM cells of
        # an 896-bit entry was a net across the whole table, and the read behind it was the
        # routed core's most common failing path (480 endpoints at 150 MHz).
        rule_bits = layout(FLOW_RULE).size
        slices = [(lo, min(lo + _SLICE_BITS, rule_bits)) for lo in range(0, rule_bits, _SLICE_BITS)]
        read_ports = []  # per way: the slices' read ports, lowest columns first
        for k in range(W):
            ports = []
            for j, (lo, hi) in enumerate(slices):
                mem = Memory(shape=hi - lo, depth=D, init=[])
                m.submodules[f"rules{k}_{j}"] = mem
                wp = mem.write_port()
                rp = mem.read_port(domain="sync")  # not transparent: a write lands after the edge
                m.d.comb += [wp.addr.eq(r_addr), wp.data.eq(r_rule.as_value()[lo:hi]),
                             wp.en.eq(r_en[k])]
                ports.append(rp)
            read_ports.append(ports)

        # ---- result FIFO and credits ------------------------------------------------------
        res_w = result_layout().size
        m.submodules.fifo = fifo = SyncFIFO(width=res_w, depth=self.fifo_depth)
        pending = Signal(range(self.fifo_depth + 1))  # lookups accepted and not yet delivered
        o = self.o_result
        m.d.comb += [o.valid.eq(fifo.r_rdy), o.payload.eq(fifo.r_data), fifo.r_en.eq(o.ready)]

        # ---- scan control -------------------------------------------------------------------
        busy = Signal()
        addr = Signal(range(max(D, 2)))
        scan_key = Signal(key_l, reset_less=True)
        last_step = busy & (addr == D - 1)
        i = self.i_key
        m.d.comb += i.ready.eq((~busy | last_step) & (pending < self.fifo_depth))
        accept = i.valid & i.ready
        # The 431 key flip-flops load whenever a key could be taken, valid or not: their enable
        # then comes from registers only, not from the producer's valid (a slow, wide net).
        with m.If(i.ready):
            m.d.sync += scan_key.eq(i.payload)
        with m.If(accept):
            m.d.sync += busy.eq(1)
        with m.Elif(last_step):
            m.d.sync += busy.eq(0)
        # The address is 0 whenever no scan runs, so a scan's start needs no clearing: the
        # counters' clear then depends on registers only, not on the producer's valid.
        scan_clear = ~busy | last_step
        with m.If(scan_clear):
            m.d.sync += addr.eq(0)
        with m.Else():
            m.d.sync += addr.eq(addr + 1)
        m.d.sync += pending.eq(pending + accept - (o.valid & o.ready))

        tag_l = data.StructLayout({"valid": 1, "first": 1, "last": 1, "addr": range(max(D, 2))})
        tag0 = Signal(tag_l)
        m.d.comb += [tag0.valid.eq(busy), tag0.first.eq(addr == 0),
                     tag0.last.eq(addr == D - 1), tag0.addr.eq(addr)]
        # One copy of `addr` per slice, each counting on its own flip-flops (so that synthesis
        # keeps them apart) and driving only its slice's cells in every way.
        for j in range(len(slices)):
            copy = Signal.like(addr, name=f"addr_{j}")
            with m.If(scan_clear):
                m.d.sync += copy.eq(0)
            with m.Else():
                m.d.sync += copy.eq(copy + 1)
            for ports in read_ports:
                m.d.comb += [ports[j].addr.eq(copy), ports[j].en.eq(1)]
        for ports in read_ports:
            word = Signal(layout(FLOW_RULE))
            m.d.comb += word.eq(Cat(rp.data for rp in ports))
            ways.append(word)

        # Only the tags' `valid`, `done` and the counters need a reset: keys, rules and
        # candidates are qualified by a tag. Without one, the table's 3 400 pipeline flip-flops
        # are off the reset net, which reaches every flip-flop that has one.
        def stage(prev, name, reset_less=True):
            shape = prev.shape() if isinstance(prev, data.View) else Value.cast(prev).shape()
            nxt = Signal(shape, name=name, reset_less=reset_less)
            m.d.sync += nxt.eq(prev)
            return nxt

        # a+1+j -> a+2+j: the memory's register; the tag and key follow.
        tag1, key1 = stage(tag0, "tag1", reset_less=False), stage(scan_key, "key1")
        # a+2+j -> a+3+j: register the memory output, away from the compare.
        tag2, key2 = stage(tag1, "tag2", reset_less=False), stage(key1, "key2")
        rule2 = [stage(word, f"rule2_{k}") for k, word in enumerate(ways)]

        # a+3+j: (key & mask) ^ value per bit, OR-reduced per group.
        tag3 = stage(tag2, "tag3", reset_less=False)
        malformed3 = Signal(reset_less=True)
        m.d.sync += malformed3.eq(key2.flags[KeyFlag.MALFORMED.bit_length() - 1])
        kv = Value.cast(key2)
        width = len(kv)
        groups = range(0, width, _GROUP)
        cand3 = []
        for k, r in enumerate(rule2):
            diff = (kv & Value.cast(r.mask)) ^ Value.cast(r.value)
            miss = Signal(len(groups), name=f"miss3_{k}", reset_less=True)
            m.d.sync += miss.eq(Cat(diff[g:g + _GROUP].any() for g in groups))
            meta = Signal(data.StructLayout({"valid": 1, "priority": 8, "action": layout(ACTION)}),
                          name=f"meta3_{k}", reset_less=True)
            m.d.sync += [meta.valid.eq(r.valid), meta.priority.eq(r.priority),
                         meta.action.eq(r.action)]
            cand3.append((miss, meta))

        # a+4+j: the match bit of every way.
        cand_l = data.StructLayout({"match": 1, "priority": 8, "index": index_w,
                                    "action": layout(ACTION)})
        tag4 = stage(tag3, "tag4", reset_less=False)
        cand4 = []
        for k, (miss, meta) in enumerate(cand3):
            c = Signal(cand_l, name=f"cand4_{k}", reset_less=True)
            m.d.sync += [c.match.eq(meta.valid & ~miss.any() & ~malformed3),
                         c.priority.eq(meta.priority), c.action.eq(meta.action),
                         c.index.eq(tag3.addr * W + k)]
            cand4.append(c)

        # a+5+j: best of the ways, a tree that keeps the lower index on the left.
        def better(a, b):
            take = b.match & (~a.match | (b.priority > a.priority))
            out = Signal(cand_l)
            m.d.comb += out.eq(Mux(take, b, a))
            return out

        level = cand4
        while len(level) > 1:
            level = [better(level[n], level[n + 1]) if n + 1 < len(level) else level[n]
                     for n in range(0, len(level), 2)]
        tag5, cand5 = stage(tag4, "tag5", reset_less=False), stage(level[0], "cand5")

        # a+6+j: running best; a strictly higher priority replaces (earlier index wins ties).
        best = Signal(cand_l, reset_less=True)
        done = Signal()
        with m.If(tag5.valid & (tag5.first | (cand5.match & (
                ~best.match | (cand5.priority > best.priority))))):
            m.d.sync += best.eq(cand5)
        m.d.sync += done.eq(tag5.valid & tag5.last)

        # a+7+D-1: the result into the FIFO, counters.
        result = Signal(result_layout())
        m.d.comb += [
            result.hit.eq(best.match),
            result.index.eq(Mux(best.match, best.index, 0)),
            result.action.eq(Mux(best.match, best.action, self.default_action)),
            fifo.w_data.eq(result),
            fifo.w_en.eq(done),
        ]
        with m.If(done):
            m.d.sync += self.lookups.eq(self.lookups + 1)
            with m.If(best.match):
                m.d.sync += self.hits.eq(self.hits + 1)
            with m.Else():
                m.d.sync += self.misses.eq(self.misses + 1)

        # ---- per-entry hit counters: read (A), register (B), forward and +1 (C), write (D) ----
        # ECP5 block RAM has a 4 ns clock-to-out: its output goes straight into a register.
        # The read in A misses the writes of the three increments ahead of it; C takes their
        # values instead (newest first), selected by compares made a cycle earlier in B.
        m.submodules.counters = cmem = Memory(shape=32, depth=self.entries, init=[])
        cwp = cmem.write_port()
        crp = cmem.read_port(domain="sync")
        hrp = cmem.read_port(domain="sync")
        idx_shape = range(max(self.entries, 2))
        # Indices and values have no reset: the valid flags qualify them.
        b_valid, b_idx = Signal(), Signal(idx_shape, reset_less=True)
        c_valid = Signal()
        c_idx, c_raw = Signal(idx_shape, reset_less=True), Signal(32, reset_less=True)
        fwd = Signal(3)  # the op in D, E, F during C has this one's index
        ahead = [(Signal(name=f"{n}_valid"), Signal(idx_shape, name=f"{n}_idx", reset_less=True),
                  Signal(32, name=f"{n}_new", reset_less=True)) for n in "def"]
        (d_valid, d_idx, d_new), (e_valid, e_idx, _), _ = ahead
        m.d.comb += [crp.addr.eq(best.index), crp.en.eq(1)]
        m.d.sync += [b_valid.eq(done & best.match), b_idx.eq(best.index)]
        m.d.sync += [c_valid.eq(b_valid), c_idx.eq(b_idx), c_raw.eq(crp.data),
                     fwd.eq(Cat(c_valid & (c_idx == b_idx), d_valid & (d_idx == b_idx),
                                e_valid & (e_idx == b_idx)))]
        value = c_raw
        for n in reversed(range(3)):
            value = Mux(fwd[n], ahead[n][2], value)
        m.d.sync += [d_valid.eq(c_valid), d_idx.eq(c_idx), d_new.eq(value + 1)]
        for (v0, i0, n0), (v1, i1, n1) in itertools.pairwise(ahead):
            m.d.sync += [v1.eq(v0), i1.eq(i0), n1.eq(n0)]
        m.d.comb += [cwp.addr.eq(d_idx), cwp.data.eq(d_new), cwp.en.eq(d_valid)]
        m.d.comb += [hrp.addr.eq(self.c_index), hrp.en.eq(1), self.c_frames.eq(hrp.data)]
        return m
