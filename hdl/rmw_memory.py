# Per-entry state of the flow queues (counters, byte totals) kept in one block RAM and updated by
# read-modify-write at up to one entry per cycle, with the block RAM's output registered before
# any logic (its clock-to-output delay is most of an ECP5 cycle at 165 MHz). Used by
# partner.hdl.flow_queues; see docs/queues.md, "Resources and timing".
"""Pipelined read-modify-write memory.

An update of entry ``a`` is three cycles long:

====== =======================================================================================
cycle  work
====== =======================================================================================
0      ``addr`` (and ``start``) name the entry; a block RAM is read at the end of the cycle
1      the block RAM's output is registered (LUT RAM: read from the registered address, and
       registered)
2      ``old`` is the entry's current value; the user sets ``new`` and ``write``: the entry
       is that value from the next cycle on (the memory itself is written a cycle later)
====== =======================================================================================

With ``adder``, the memory also adds: ``sum`` (cycle 2) is ``old + add`` (counter by counter
when ``shape`` is an ``ArrayLayout``), each forwarding candidate's sum computed in parallel and
the forwarding select applied after the adders, so that no carry chain follows the select. The
select's flip-flops fan out to every bit of the entry, and placed far from some of them they
were the routed core's worst path, into a 64-bit adder (docs/datapath.md).

Updates may start in every cycle, for any entries. ``old`` is exact even when the previous
updates wrote the same entry: the values of the three writes the memory read missed are
*forwarded* over its stale output. An update whose cycle 2 does not write leaves the entry as
it was.

``ram_style`` is passed to the synthesis tool (``"block"``, ``"distributed"``; every port is
synchronous, so either works). ``fresh``/``init`` (cycle 2) let the user give an entry its
value when the memory's content does not count (an entry not written since reset): ``old`` is
then ``init`` unless a forwarded write hit the entry. Extra read ports (``extra_reads``) read
the memory as it is, one cycle later, unregistered: the user registers them.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["RmwMemory", "registered_write"]


def registered_write(m, memory):
    """A write port of `memory` whose address, data and enable are registered on their way:
    returns a view to drive like the port, the write landing one cycle later. The logic that
    decides a write then ends in flip-flops next to it, and only their fan-out to the memory's
    cells (wherever the placer found block RAM or LUT RAM sites) lies before the write."""
    port = memory.write_port()
    request = Signal(data.StructLayout({
        "addr": len(port.addr), "data": memory.shape, "en": 1}))
    # Address and data need no reset (the enable qualifies them): fewer loads on the reset net.
    addr, value = Signal.like(port.addr, reset_less=True), Signal(memory.shape, reset_less=True)
    m.d.sync += [addr.eq(request.addr), value.eq(request.data), port.en.eq(request.en)]
    m.d.comb += [port.addr.eq(addr), port.data.eq(value)]
    return request


class RmwMemory(wiring.Component):
    """Read-modify-write memory of ``depth`` entries of ``shape``.

    Members
    -------
    addr : ``In(range(depth))``
        Cycle 0: the entry an update starts on.
    old : ``Out(shape)``
        Cycle 2: its current value (forwarded from the previous updates).
    old_candidates, old_from : ``Out`` (with ``candidates``)
        Cycle 2: ``old`` is ``old_candidates[k]`` for the one bit ``k`` set in ``old_from``
        (from registers), for users that compute on all four in parallel rather than on the
        selected value.
    new : ``In(shape)``, write : ``In(1)``
        Cycle 2: store ``new`` into the entry.
    add : ``In(shape)``; sum : ``Out(shape)`` (with ``adder``)
        Cycle 2: ``sum`` is ``old + add``, wrapping.
    fresh : ``In(1)``; init : ``In(shape)``
        Cycle 2: the stored value does not count, ``init`` does (forwarded writes still do).
    x_addr, x_data : extra read ports (``ArrayLayout``\\ s of ``extra_reads``)
        ``x_data[k]`` is entry ``x_addr[k]`` of the previous cycle, as stored in the memory at
        the start of the previous cycle (no forwarding: a write decided in cycle 2 reaches
        the memory at the end of the next cycle).
    """

    def __init__(self, shape, depth: int, *, extra_reads: int = 0,
                 ram_style: str | None = None, candidates: bool = False, adder: bool = False):
        self.shape, self.depth, self.ram_style = shape, depth, ram_style
        self.extra_reads, self.candidates, self.adder = extra_reads, candidates, adder
        ports = {
            "addr": In(range(depth)),
            "old": Out(shape),
            "new": In(shape),
            "write": In(1),
            "fresh": In(1),
            "init": In(shape),
        }
        if candidates:
            ports.update({
                "old_candidates": Out(data.ArrayLayout(shape, 4)),
                "old_from": Out(4),
            })
        if adder:
            ports.update({"add": In(shape), "sum": Out(shape)})
        if extra_reads:
            ports.update({
                "x_addr": In(data.ArrayLayout(range(depth), extra_reads)),
                "x_data": Out(data.ArrayLayout(shape, extra_reads)),
            })
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        attrs = {} if self.ram_style is None else {"ram_style": self.ram_style}
        m.submodules.mem = mem = Memory(shape=self.shape, depth=self.depth, init=[],
                                        attrs=attrs)
        wr = mem.write_port()
        # Addresses and data are qualified by the flags (`write`, `p*_en`, `fwd*`), so only the
        # flags have a reset: fewer loads on the reset net, which reaches every such flip-flop.
        addr1 = Signal.like(self.addr, reset_less=True)
        addr2 = Signal.like(self.addr, reset_less=True)
        rd_data = Signal(self.shape)  # the entry read for the update in cycle 1
        d1 = Signal(self.shape, reset_less=True)  # ... registered
        m.d.sync += [addr1.eq(self.addr), addr2.eq(addr1), d1.eq(rd_data)]
        if self.ram_style == "distributed":
            # LUT RAM reads asynchronously: read in cycle 1 from the registered address, so
            # that the user's address logic ends in a flip-flop next to it, and only that
            # register's fan-out to the cells lies before the read (the read register of a
            # synchronous port would instead put the address logic, the fan-out and the read
            # in one cycle). The read then sees a write stored at the end of cycle 0 that the
            # block RAM's read misses; that write is `p3` in cycle 2 and forwarded anyway.
            rd = mem.read_port(domain="comb")
            m.d.comb += [rd.addr.eq(addr1), rd_data.eq(rd.data)]
        else:
            rd = mem.read_port()
            m.d.comb += [rd.addr.eq(self.addr), rd_data.eq(rd.data)]

        # Writes decided in cycle 2 are stored one cycle later, from registers (`p1`), so that
        # no path runs from the user's decision into the memory. The memory read in cycle 0
        # misses the writes decided in the three cycles before this update's cycle 2 (`p1`,
        # `p2`, `p3`); whether they hit this entry is known ahead (addresses only), so that
        # cycle 2 only selects.
        # `fwd1..3` (write pending and same entry) are flip-flops of their own rather than ANDs
        # of `p*_en` with address compares: `p1_en` also enables every cell of the memory,
        # wherever the placer spreads them (LUT RAM), and from there it was the routed core's
        # worst path into this multiplexer (6.3 ns of wire, across the chip).
        p1_en, p2_en = Signal(), Signal()
        p1_addr = Signal.like(self.addr, reset_less=True)
        p1_data, p2_data, p3_data = (Signal(self.shape, reset_less=True) for _ in range(3))
        fwd1, fwd2, fwd3 = Signal(), Signal(), Signal()
        hit2_0, hit3_0 = Signal(), Signal()
        m.d.sync += [p1_en.eq(self.write), p1_addr.eq(addr2), p1_data.eq(self.new),
                     p2_en.eq(p1_en), p2_data.eq(p1_data), p3_data.eq(p2_data),
                     fwd1.eq(self.write & (addr1 == addr2)),
                     hit2_0.eq(self.addr == addr2), fwd2.eq(p1_en & hit2_0),
                     hit3_0.eq(self.addr == p1_addr), fwd3.eq(p2_en & hit3_0)]
        m.d.comb += [wr.addr.eq(p1_addr), wr.data.eq(p1_data), wr.en.eq(p1_en)]

        stored = Signal(self.shape)
        m.d.comb += stored.eq(Mux(self.fresh, self.init, d1))
        # The value the update reads, from the newest write that hit the entry, else the memory.
        candidates = (p1_data, p2_data, p3_data, stored)

        def newest(values):
            return Mux(fwd1, values[0], Mux(fwd2, values[1], Mux(fwd3, values[2], values[3])))

        m.d.comb += self.old.eq(newest(candidates))
        if self.candidates:
            take = (fwd1, ~fwd1 & fwd2, ~fwd1 & ~fwd2 & fwd3, ~(fwd1 | fwd2 | fwd3))
            m.d.comb += [self.old_from.eq(Cat(*take)),
                         *(self.old_candidates[k].eq(v) for k, v in enumerate(candidates))]
        if self.adder:
            sums = []
            for k, candidate in enumerate(candidates):
                total = Signal(self.shape, name=f"sum_{k}")
                if isinstance(self.shape, data.ArrayLayout):
                    m.d.comb += [total[i].eq(candidate[i] + self.add[i])
                                 for i in range(self.shape.length)]
                else:
                    m.d.comb += total.eq(candidate + self.add)
                sums.append(total)
            m.d.comb += self.sum.eq(newest(sums))

        for k in range(self.extra_reads):
            x = mem.read_port()
            m.d.comb += [x.addr.eq(self.x_addr[k]), self.x_data[k].eq(x.data)]
        return m
