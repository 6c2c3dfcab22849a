# The DMA engine's register file: DMA_REGISTERS (partner.pcie.formats, BAR0 window 0x1000) on a
# CSRBus target port, and the rings' state (bases, sizes, indices, errors) the engine works from.
"""DMA engine registers and ring state.

Rings are numbered ``0 .. rx_rings - 1`` (RX free rings), then ``tx_rings`` TX rings, then the
event ring (``rings - 1``); only the rings of the build exist: registers of the others read 0,
and writing them is a bad access.

Where the state lives, and why: a register per ring and field in flip-flops would need a read
multiplexer over hundreds of words (a 32:1 multiplexer of 32 bits is ~1.7 k LUT4 on ECP5). So
each per-ring field is a small LUT-RAM memory indexed by the ring number — bases (4 words),
sizes, the four indices, interrupt configuration, error state — with asynchronous read ports: one
addressed by the ring a CSR access decodes to (reads, and the doorbell checks that compare with
the engine's indices), one by the ring the engine works on (``sel``). A CSR read multiplexes a
dozen fields, not every word. Flip-flops hold only what must be seen for every ring at once:
``enabled`` and ``waiting`` (the scheduler) and the interrupt configuration (the moderation).

Writes to a memory come from the CSR side (doorbells, configuration, a read that clears errors)
or from the engine (head, completion tail, errors, all in one cycle of its ``FINISH`` state).
The engine waits (``stall``) in a cycle with a CSR write of a ring field or a read of a ring's
status (which clears its errors), so each memory has one writer per cycle.

Rules from the register map and `partner.sim.models.dma_device`, its executable form:

- ``*_size`` with ``enable`` 0 -> 1 checks the ring (bases 4 KiB aligned, sizes up to
  ``max_ring_log2``); a bad ring stays off and sets ``status.bad_ring_config``; a good one
  takes its sizes and starts with all four indices 0. ``enable`` 0 stops the ring.
- ``*_tail`` (producer doorbell) is taken when at most one ring ahead of ``*_head``,
  ``*_cpl_head`` / ``event_head`` (consumer doorbells) when not beyond the engine's tail;
  anything else is ignored and sets ``status.bad_doorbell``. Either doorbell clears the ring's
  ``waiting`` bit, so the scheduler looks at the ring again; the engine's ``set_waiting`` is
  ignored if a doorbell of the ring came after its job read the ring's context
  (``job_start``), so a doorbell racing the engine's look at the ring is never lost.
- ``max_chunks`` outside 1 .. the build's `max_chunks` is refused (``bad_access``).
- ``control.reset``: reads 1 until done. The engine finishes its job (its TLPs are all handed
  to the link), then every register and ring state returns to its reset value over ``rings``
  cycles (the memories row by row); ``reset_done`` strobes and RESET_DONE becomes the first
  event.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from partner.hdl.csr import CSRBus
from partner.hdl.wire import layout
from partner.pcie.formats import (
    DMA_CONFIG,
    DMA_CONTROL,
    DMA_FORMAT_VERSION,
    DMA_IDENT,
    DMA_REGISTERS,
    DMA_STATUS,
    INDEX_BITS,
    IRQ_CONFIG,
    MAX_CHUNKS,
    MAX_COUNTERS,
    MAX_RING_LOG2,
    MAX_RX_RINGS,
    MAX_TX_RINGS,
    RING_SIZE,
    RING_STATUS,
)

__all__ = ["ADDR_WIDTH", "DmaRegisters"]

ADDR_WIDTH = max(1, (DMA_REGISTERS.size // 4 - 1).bit_length())
_IRQ_RESET = IRQ_CONFIG.pack(frames=1)
_STATUS_BITS = RING_STATUS["last_status"].width
M = (1 << INDEX_BITS) - 1

# A ring's sizes: the `*_size` word as written (read back), and the sizes taken at enable.
_SIZES = data.StructLayout({"word": RING_SIZE.width, "log2": 4, "cpl_log2": 4})
_ERRORS = data.StructLayout({"errors": 16, "last_status": _STATUS_BITS})
# Per-ring fields of DMA_REGISTERS by their name after the `rx_` / `tx_` prefix.
_FIELDS = ("base_lo", "base_hi", "cpl_base_lo", "cpl_base_hi", "size", "tail", "head",
           "cpl_head", "cpl_tail", "irq", "status")
_EVENT_FIELDS = {"event_base_lo": "base_lo", "event_base_hi": "base_hi", "event_size": "size",
                 "event_head": "cpl_head", "event_tail": "cpl_tail", "event_irq": "irq"}


def _word(name, index=0):
    return DMA_REGISTERS[name].address(index) // 4


class _RingMemory:
    """One per-ring field: a LUT-RAM memory, a CSR-side and an engine-side asynchronous read
    port, one write port whose users are chosen by priority (later `write` calls win)."""

    def __init__(self, m, name, shape, depth, csr_ring, sel, init=0):
        width = shape.size if isinstance(shape, data.Layout) else shape
        self.memory = Memory(shape=width, depth=depth, init=[init] * depth)
        m.submodules[name] = self.memory
        self.w = self.memory.write_port()
        self.csr = self.memory.read_port(domain="comb")
        self.engine = self.memory.read_port(domain="comb")
        self.m = m
        m.d.comb += [self.csr.addr.eq(csr_ring), self.engine.addr.eq(sel)]

    def write(self, ring, value):
        self.m.d.comb += [self.w.addr.eq(ring), self.w.data.eq(value), self.w.en.eq(1)]


class _Access:
    """The CSR access of the previous cycle."""

    def __init__(self, m, bus):
        self.addr = Signal.like(bus.addr, name="acc_addr")
        self.r_stb = Signal(name="acc_r_stb")
        self.w_stb = Signal(name="acc_w_stb")
        self.w_data = Signal(32, name="acc_w_data")
        m.d.sync += [self.addr.eq(bus.addr), self.r_stb.eq(bus.r_stb), self.w_stb.eq(bus.w_stb),
                     self.w_data.eq(bus.w_data)]


class DmaRegisters(wiring.Component):
    """DMA_REGISTERS on ``bus``; ring state for the engine (``sel`` chooses the ring it reads
    and updates)."""

    def __init__(self, *, rx_rings: int, tx_rings: int, max_chunks: int = MAX_CHUNKS,
                 max_ring_log2: int = MAX_RING_LOG2, vectors: int = 1, counters: int = 9):
        if not 1 <= rx_rings <= MAX_RX_RINGS or not 1 <= tx_rings <= MAX_TX_RINGS:
            raise ValueError(f"need 1..{MAX_RX_RINGS} RX rings and 1..{MAX_TX_RINGS} TX rings")
        if not 1 <= max_chunks <= MAX_CHUNKS or not 1 <= max_ring_log2 <= MAX_RING_LOG2:
            raise ValueError(f"max_chunks must be 1..{MAX_CHUNKS}, max_ring_log2 "
                             f"1..{MAX_RING_LOG2}")
        if not 1 <= counters <= MAX_COUNTERS:
            raise ValueError(f"counters must be 1..{MAX_COUNTERS}")
        self.rx_rings, self.tx_rings = rx_rings, tx_rings
        self.rings = rx_rings + tx_rings + 1
        self.event_ring = self.rings - 1
        self.max_chunks, self.max_ring_log2 = max_chunks, max_ring_log2
        self.vectors, self.counters = vectors, counters
        n = self.rings
        super().__init__({
            "bus": In(CSRBus(ADDR_WIDTH)),
            # Global configuration.
            "enable": Out(1),
            "polling": Out(1),
            "max_chunks_reg": Out(range(MAX_CHUNKS + 1), init=max_chunks),
            "tx_max_length": Out(16, init=DMA_REGISTERS["tx_max_length"].reset),
            # Per ring, for the scheduler and the moderation.
            "ring_enabled": Out(n),
            "ring_waiting": Out(n),
            "irq_config": Out(layout(IRQ_CONFIG)).array(n),
            # The ring the engine works on.
            "sel": In(range(n)),
            "base": Out(64),
            "cpl_base": Out(64),
            "log2": Out(4),
            "cpl_log2": Out(4),
            "head": Out(INDEX_BITS),
            "tail": Out(INDEX_BITS),
            "cpl_head": Out(INDEX_BITS),
            "cpl_tail": Out(INDEX_BITS),
            "stall": Out(1),  # the engine must not update ring state in this cycle
            "set_head": In(1),
            "new_head": In(INDEX_BITS),
            "bump_cpl": In(1),
            "set_waiting": In(1),
            "job_start": In(1),  # the engine reads the context of ring `sel` (for set_waiting)
            "ring_error": In(1),
            "error_status": In(_STATUS_BITS),
            "dma_error": In(1),
            # Counters (`DmaCounters`) behind the `counter` registers.
            "counter_value": In(32).array(counters),
            "counter_threshold": In(32).array(counters),
            "th_stb": Out(1),
            "th_index": Out(range(MAX_COUNTERS)),
            "th_data": Out(32),
            # Reset handshake with the engine.
            "engine_idle": In(1),
            "resetting": Out(1),
            "reset_done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n, bus, E = self.rings, self.bus, self.event_ring
        R = self.rx_rings

        # The access, registered: everything below works from flip-flops, one cycle after the
        # bus (a read's data, from the memories' asynchronous ports, is then on `r_data` in the
        # cycle after `r_stb`, as `CSRBus` requires).
        acc = _Access(m, bus)

        # -- which ring and field a CSR access is about: decoded from the bus, registered with
        # the access ------------------------------------------------------------------------
        field_hit = {f: Signal(name=f"hit_{f}") for f in _FIELDS}
        csr_ring = Signal(range(n))
        for f in _FIELDS:
            m.d.sync += field_hit[f].eq(0)
        for prefix, first, count in (("rx", 0, self.rx_rings), ("tx", R, self.tx_rings)):
            for f in _FIELDS:
                start = _word(f"{prefix}_{f}")
                inside = (bus.addr >= start) & (bus.addr < start + count)
                with m.If(inside):
                    m.d.sync += [field_hit[f].eq(1), csr_ring.eq(bus.addr - start + first)]
        for name, f in _EVENT_FIELDS.items():
            with m.If(bus.addr == _word(name)):
                m.d.sync += [field_hit[f].eq(1), csr_ring.eq(E)]

        # The CSR accesses that write ring memories: the engine's updates wait for them.
        any_ring_field = 0
        for f in _FIELDS:
            any_ring_field = any_ring_field | field_hit[f]
        m.d.comb += self.stall.eq((acc.w_stb & any_ring_field) | (acc.r_stb & field_hit["status"]))

        sel = self.sel
        bases = _RingMemory(m, "bases", 128, n, csr_ring, sel)
        sizes = _RingMemory(m, "sizes", _SIZES, n, csr_ring, sel)
        tail = _RingMemory(m, "tails", INDEX_BITS, n, csr_ring, sel)
        head = _RingMemory(m, "heads", INDEX_BITS, n, csr_ring, sel)
        cpl_head = _RingMemory(m, "cpl_heads", INDEX_BITS, n, csr_ring, sel)
        cpl_tail = _RingMemory(m, "cpl_tails", INDEX_BITS, n, csr_ring, sel)
        irq_mem = _RingMemory(m, "irqs", 32, n, csr_ring, sel, init=_IRQ_RESET)
        errors = _RingMemory(m, "errors", _ERRORS, n, csr_ring, sel)
        memories = (bases, sizes, tail, head, cpl_head, cpl_tail, irq_mem, errors)

        enabled = Signal(n)
        waiting = Signal(n)
        irq = [Signal(32, name=f"irq_{r}", init=_IRQ_RESET) for r in range(n)]
        base_ok = Signal(n, init=(1 << n) - 1)  # base_lo bits 11:0 are 0 (bases reset to 0)
        cpl_ok = Signal(n, init=(1 << n) - 1)
        control = Signal(32)
        status = Signal(32)  # sticky, cleared by a read
        status_set = Signal(32)
        resetting = Signal()
        clear_row = Signal(range(n + 1))

        m.d.comb += [
            self.enable.eq(control[DMA_CONTROL["enable"].offset] & ~resetting),
            self.polling.eq(control[DMA_CONTROL["polling"].offset]),
            self.resetting.eq(resetting),
            self.ring_enabled.eq(enabled),
            self.ring_waiting.eq(waiting),
        ]
        for r in range(n):
            m.d.comb += self.irq_config[r].as_value().eq(irq[r])

        # -- the engine's view of `sel` -------------------------------------------------------
        s = data.View(_SIZES, sizes.engine.data)
        is_event = sel == E
        m.d.comb += [
            self.base.eq(bases.engine.data[:64]),
            self.cpl_base.eq(Mux(is_event, bases.engine.data[:64], bases.engine.data[64:])),
            self.log2.eq(s.log2),
            self.cpl_log2.eq(s.cpl_log2),
            self.head.eq(head.engine.data),
            self.tail.eq(tail.engine.data),
            self.cpl_head.eq(cpl_head.engine.data),
            self.cpl_tail.eq(cpl_tail.engine.data),
        ]
        # Its updates, all in one cycle (never with a CSR access: `stall`). A CSR write of the
        # same memory in the same cycle cannot happen, so the CSR side's writes come after
        # these and would win.
        with m.If(self.set_head):
            head.write(sel, self.new_head)
        with m.If(self.bump_cpl):
            cpl_tail.write(sel, cpl_tail.engine.data + 1)
        with m.If(self.ring_error):
            e = data.View(_ERRORS, errors.engine.data)
            errors.write(sel, Cat(Mux(e.errors == 0xFFFF, e.errors, e.errors + 1)[:16],
                                  self.error_status))
        # A doorbell that comes after the engine read a ring's context wins over the engine's
        # finding, from that older context, that the ring must wait: else the wakeup is lost.
        rung = Signal(n)  # a doorbell of the ring came since its job read the context
        with m.If(self.job_start):
            m.d.sync += rung.bit_select(sel, 1).eq(0)
        with m.If(self.set_waiting & ~rung.bit_select(sel, 1)):
            m.d.sync += waiting.bit_select(sel, 1).eq(1)

        # -- CSR reads: registered, one cycle after r_stb -------------------------------------
        r_value = Signal(32)
        m.d.comb += bus.r_data.eq(r_value)
        cs = data.View(_SIZES, sizes.csr.data)
        ce = data.View(_ERRORS, errors.csr.data)
        ring_values = {
            "base_lo": bases.csr.data.word_select(0, 32),
            "base_hi": bases.csr.data.word_select(1, 32),
            "cpl_base_lo": bases.csr.data.word_select(2, 32),
            "cpl_base_hi": bases.csr.data.word_select(3, 32),
            "size": cs.word,
            "tail": tail.csr.data,
            "head": head.csr.data,
            "cpl_head": cpl_head.csr.data,
            "cpl_tail": cpl_tail.csr.data,
            "irq": irq_mem.csr.data,
            "status": Cat(ce.errors, ce.last_status, waiting.bit_select(csr_ring, 1)),
        }
        with m.If(acc.r_stb):
            for f, value in ring_values.items():
                with m.If(field_hit[f]):
                    m.d.comb += r_value.eq(value)
            with m.Switch(acc.addr):
                globals_ = {
                    "ident": Const(DMA_IDENT, 32),
                    "version": Const(DMA_FORMAT_VERSION, 32),
                    "config": Const(DMA_CONFIG.pack(
                        rx_rings=self.rx_rings, tx_rings=self.tx_rings,
                        max_chunks=self.max_chunks, max_ring_log2=self.max_ring_log2,
                        vectors=min(self.vectors, (1 << DMA_CONFIG["vectors"].width) - 1)), 32),
                    "control": control | (resetting << DMA_CONTROL["reset"].offset),
                    "status": status,
                    "max_chunks": self.max_chunks_reg,
                    "tx_max_length": self.tx_max_length,
                }
                for name, value in globals_.items():
                    with m.Case(_word(name)):
                        m.d.comb += r_value.eq(value)
                for c in range(self.counters):
                    with m.Case(_word("counter", c)):
                        m.d.comb += r_value.eq(self.counter_value[c])
                    with m.Case(_word("counter_threshold", c)):
                        m.d.comb += r_value.eq(self.counter_threshold[c])
            with m.If(field_hit["status"]):  # reading a ring's status clears its errors
                errors.write(csr_ring, Cat(Const(0, 16), ce.last_status))

        # Sticky status: a read returns it and clears it, keeping bits set in that cycle.
        read_status = acc.r_stb & (acc.addr == _word("status"))
        m.d.sync += status.eq(Mux(read_status, 0, status) | status_set)
        m.d.comb += status_set[DMA_STATUS["dma_error"].offset].eq(self.dma_error)
        bad_config = status_set[DMA_STATUS["bad_ring_config"].offset]
        bad_doorbell = status_set[DMA_STATUS["bad_doorbell"].offset]
        bad_access = status_set[DMA_STATUS["bad_access"].offset]

        # -- CSR writes ------------------------------------------------------------------------
        value = acc.w_data
        index = value[:INDEX_BITS]
        r = csr_ring
        with m.If(acc.w_stb):
            with m.If(field_hit["base_lo"] | field_hit["base_hi"] | field_hit["cpl_base_lo"]
                      | field_hit["cpl_base_hi"]):
                lane = Mux(field_hit["base_lo"], 0, Mux(field_hit["base_hi"], 1,
                                                        Mux(field_hit["cpl_base_lo"], 2, 3)))
                old = bases.csr.data
                new = Signal(128)
                m.d.comb += new.eq(old)
                with m.Switch(lane):
                    for k in range(4):
                        with m.Case(k):
                            m.d.comb += new.word_select(k, 32).eq(value)
                bases.write(r, new)
                with m.If(field_hit["base_lo"]):
                    m.d.sync += base_ok.bit_select(r, 1).eq(value[:12] == 0)
                with m.If(field_hit["cpl_base_lo"]):
                    m.d.sync += cpl_ok.bit_select(r, 1).eq(value[:12] == 0)
            with m.Elif(field_hit["size"]):
                size = data.View(layout(RING_SIZE), value[:RING_SIZE.width])
                has_cpl = r != E
                cpl_log2 = Mux(has_cpl, size.cpl_log2, size.log2)
                old = data.View(_SIZES, sizes.csr.data)
                starting = size.enable & ~enabled.bit_select(r, 1)
                bad = ((size.log2 > self.max_ring_log2) | ~base_ok.bit_select(r, 1)
                       | (has_cpl & ((size.cpl_log2 > self.max_ring_log2)
                                     | ~cpl_ok.bit_select(r, 1))))
                with m.If(starting & ~bad):
                    sizes.write(r, Cat(size.as_value(), size.log2, cpl_log2))
                    for memory in (tail, head, cpl_head, cpl_tail):
                        memory.write(r, 0)
                    m.d.sync += [enabled.bit_select(r, 1).eq(1), waiting.bit_select(r, 1).eq(0)]
                with m.Else():
                    sizes.write(r, Cat(size.as_value(), old.log2, old.cpl_log2))
                    with m.If(starting):
                        m.d.comb += bad_config.eq(1)
                    with m.If(~size.enable):
                        m.d.sync += enabled.bit_select(r, 1).eq(0)
            with m.Elif(field_hit["tail"]):
                log2 = data.View(_SIZES, sizes.csr.data).log2
                ok = ((index - head.csr.data) & M) <= (Const(1, INDEX_BITS + 1) << log2)
                with m.If(ok):
                    tail.write(r, index)
                    m.d.sync += [waiting.bit_select(r, 1).eq(0), rung.bit_select(r, 1).eq(1)]
                with m.Else():
                    m.d.comb += bad_doorbell.eq(1)
            with m.Elif(field_hit["cpl_head"]):
                ok = (((index - cpl_head.csr.data) & M)
                      <= ((cpl_tail.csr.data - cpl_head.csr.data) & M))
                with m.If(ok):
                    cpl_head.write(r, index)
                    m.d.sync += [waiting.bit_select(r, 1).eq(0), rung.bit_select(r, 1).eq(1)]
                with m.Else():
                    m.d.comb += bad_doorbell.eq(1)
            with m.Elif(field_hit["irq"]):
                irq_mem.write(r, value)
                for k in range(n):
                    with m.If(r == k):
                        m.d.sync += irq[k].eq(value)
            with m.Else(), m.Switch(acc.addr):
                with m.Case(_word("control")):
                    with m.If(value[DMA_CONTROL["reset"].offset]):
                        m.d.sync += resetting.eq(1)
                    m.d.sync += control.eq(value & ~Const(DMA_CONTROL.pack(reset=1), 32))
                with m.Case(_word("max_chunks")):
                    with m.If((value >= 1) & (value <= self.max_chunks)):
                        m.d.sync += self.max_chunks_reg.eq(value)
                    with m.Else():
                        m.d.comb += bad_access.eq(1)
                with m.Case(_word("tx_max_length")):
                    m.d.sync += self.tx_max_length.eq(value)
                for c in range(self.counters):
                    with m.Case(_word("counter_threshold", c)):
                        m.d.comb += [self.th_stb.eq(1), self.th_index.eq(c),
                                     self.th_data.eq(value)]
                with m.Default():  # read-only, absent rings, unmapped
                    m.d.comb += bad_access.eq(1)

        # -- reset: wait for the engine, then clear everything, the memories row by row --------
        with m.If(resetting & self.engine_idle):
            m.d.sync += clear_row.eq(clear_row + 1)
            for memory in memories:
                memory.write(clear_row, _IRQ_RESET if memory is irq_mem else 0)
            with m.If(clear_row == n - 1):
                m.d.sync += [resetting.eq(0), clear_row.eq(0)]
                m.d.comb += self.reset_done.eq(1)
            with m.If(clear_row == 0):
                m.d.sync += [
                    enabled.eq(0), waiting.eq(0), status.eq(0), base_ok.eq(-1), cpl_ok.eq(-1),
                    self.max_chunks_reg.eq(self.max_chunks),
                    self.tx_max_length.eq(DMA_REGISTERS["tx_max_length"].reset),
                ]
                m.d.sync += [irq[k].eq(_IRQ_RESET) for k in range(n)]
        return m
