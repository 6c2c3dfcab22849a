# The DMA engine's register file: DMA_REGISTERS (partner.pcie.formats, BAR0 window 0x1000) on a
# CSRBus target port, and the rings' state (bases, sizes, indices, errors) the engine works from.
"""DMA engine registers and ring state.

Rings are numbered ``0 .. rx_rings - 1`` (RX free rings), then ``tx_rings`` TX rings, then the
event ring (``rings - 1``); only the rings of the build exist: registers of the others read 0
and ignore writes.

Where the state lives, and why: the ring bases (four 32-bit words a ring, 128 bits) are the bulk
of it and are needed only when a ring is served, so they sit in one memory (LUT RAM), a row per
ring, read by the CSR bus and by the engine through separate read ports. Indices, sizes, enables,
interrupt configuration and error state are flip-flops: the scheduler looks at every ring at
once (enabled, waiting, descriptors posted) and the interrupt moderation at every ring's
configuration. The read multiplexer therefore covers the flip-flop registers only; a base read
comes from the memory, which answers in the next cycle as `CSRBus` requires.

Rules from the register map and `partner.sim.models.dma_device`, its executable form:

- ``*_size`` with ``enable`` 0 -> 1 checks the ring (bases 4 KiB aligned, sizes up to
  ``max_ring_log2``); a bad ring stays off and sets ``status.bad_ring_config``; a good one
  takes its sizes and starts with all four indices 0. ``enable`` 0 stops the ring.
- ``*_tail`` (producer doorbell) is taken when at most one ring ahead of ``*_head``,
  ``*_cpl_head`` / ``event_head`` (consumer doorbells) when not beyond the engine's tail;
  anything else is ignored and sets ``status.bad_doorbell``. Either doorbell clears the ring's
  ``waiting`` bit, so the scheduler looks at the ring again.
- ``max_chunks`` outside 1 .. the build's `max_chunks` is refused (``bad_access``).
- ``control.reset``: reads 1 until done. The engine finishes its job (its TLPs are all handed
  to the link), then every register and ring state returns to its reset value over ``rings``
  cycles (the base memory row by row); ``reset_done`` strobes and RESET_DONE becomes the first
  event.
"""

from amaranth.hdl import Array, Const, Module, Mux, Signal
from amaranth.lib import wiring
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
            "ring_posted": Out(n),  # tail != head
            "ring_space": Out(n),  # the completion ring has room
            "irq_config": Out(layout(IRQ_CONFIG)).array(n),
            # The ring the engine works on.
            "sel": In(range(n)),
            "base": Out(64),  # one cycle after `sel`
            "cpl_base": Out(64),
            "log2": Out(4),
            "cpl_log2": Out(4),
            "head": Out(INDEX_BITS),
            "tail": Out(INDEX_BITS),
            "cpl_tail": Out(INDEX_BITS),
            "set_head": In(1),
            "new_head": In(INDEX_BITS),
            "bump_cpl": In(1),
            "set_waiting": In(1),
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
        n, bus = self.rings, self.bus
        M = (1 << INDEX_BITS) - 1

        enabled = Signal(n)
        waiting = Signal(n)
        log2 = Array(Signal(4, name=f"log2_{r}") for r in range(n))
        cpl_log2 = Array(Signal(4, name=f"cpl_log2_{r}") for r in range(n))
        tail = Array(Signal(INDEX_BITS, name=f"tail_{r}") for r in range(n))
        head = Array(Signal(INDEX_BITS, name=f"head_{r}") for r in range(n))
        cpl_head = Array(Signal(INDEX_BITS, name=f"cpl_head_{r}") for r in range(n))
        cpl_tail = Array(Signal(INDEX_BITS, name=f"cpl_tail_{r}") for r in range(n))
        size_word = Array(Signal(32, name=f"size_{r}") for r in range(n))
        irq = [Signal(32, name=f"irq_{r}", init=_IRQ_RESET) for r in range(n)]
        errors = Array(Signal(16, name=f"errors_{r}") for r in range(n))
        last_status = Array(Signal(_STATUS_BITS, name=f"last_status_{r}") for r in range(n))
        base_ok = Signal(n, init=(1 << n) - 1)  # base_lo bits 11:0 are 0 (bases reset to 0)
        cpl_ok = Signal(n, init=(1 << n) - 1)
        control = Signal(32)
        status = Signal(32)  # sticky, cleared by a read
        status_set = Signal(32)
        resetting = Signal()
        clear_row = Signal(range(n + 1))

        m.d.comb += [
            self.enable.eq(control[0] & ~resetting),
            self.polling.eq(control[DMA_CONTROL["polling"].offset]),
            self.resetting.eq(resetting),
            self.ring_enabled.eq(enabled),
            self.ring_waiting.eq(waiting),
        ]
        for r in range(n):
            m.d.comb += [
                self.ring_posted[r].eq(tail[r] != head[r]),
                self.ring_space[r].eq(((cpl_tail[r] - cpl_head[r]) & M)
                                      < (Const(1, 1 << 4) << cpl_log2[r])),
                self.irq_config[r].as_value().eq(irq[r]),
            ]

        # -- ring bases: one memory row per ring, 4 words (base lo/hi, cpl base lo/hi) --------
        m.submodules.bases = bases = Memory(shape=128, depth=n, init=[])
        wr = bases.write_port(granularity=32)
        rd_bus = bases.read_port()
        rd_engine = bases.read_port()
        m.d.comb += [
            rd_engine.addr.eq(self.sel),
            self.base.eq(rd_engine.data[:64]),
            self.cpl_base.eq(Mux(self.sel_is_event(self.sel), rd_engine.data[:64],
                                 rd_engine.data[64:])),
            self.log2.eq(log2[self.sel]),
            self.cpl_log2.eq(Mux(self.sel_is_event(self.sel), log2[self.sel],
                                 cpl_log2[self.sel])),
            self.head.eq(head[self.sel]),
            self.tail.eq(tail[self.sel]),
            self.cpl_tail.eq(cpl_tail[self.sel]),
        ]

        # -- the address decoder --------------------------------------------------------------
        # Every readable word: its value (flip-flops), or "from the base memory".
        reads = {}  # word address -> value
        base_words = {}  # word address -> (ring, word of the row)
        writes = []  # (word address, handler(m, data))

        def word(name, index=0):
            return DMA_REGISTERS[name].address(index) // 4

        reads[word("ident")] = Const(DMA_IDENT, 32)
        reads[word("version")] = Const(DMA_FORMAT_VERSION, 32)
        reads[word("config")] = Const(DMA_CONFIG.pack(
            rx_rings=self.rx_rings, tx_rings=self.tx_rings, max_chunks=self.max_chunks,
            max_ring_log2=self.max_ring_log2, vectors=self.vectors), 32)
        reads[word("control")] = control | (resetting << DMA_CONTROL["reset"].offset)
        reads[word("max_chunks")] = self.max_chunks_reg
        reads[word("tx_max_length")] = self.tx_max_length

        def on_control(data):
            with m.If(data[DMA_CONTROL["reset"].offset]):
                m.d.sync += resetting.eq(1)
            m.d.sync += control.eq(data & ~Const(DMA_CONTROL.pack(reset=1), 32))

        def on_max_chunks(data):
            with m.If((data >= 1) & (data <= self.max_chunks)):
                m.d.sync += self.max_chunks_reg.eq(data)
            with m.Else():
                m.d.comb += status_set[DMA_STATUS["bad_access"].offset].eq(1)

        writes += [(word("control"), on_control), (word("max_chunks"), on_max_chunks),
                   (word("tx_max_length"), self._setter(m, self.tx_max_length))]

        bad_config = status_set[DMA_STATUS["bad_ring_config"].offset]
        bad_doorbell = status_set[DMA_STATUS["bad_doorbell"].offset]

        def size_writer(r):
            has_cpl = r != self.event_ring

            def handler(data):
                size = layout(RING_SIZE)(data[:RING_SIZE.width])
                m.d.sync += size_word[r].eq(data)
                with m.If(size.enable & ~enabled[r]):
                    bad = (size.log2 > self.max_ring_log2) | ~base_ok[r]
                    if has_cpl:
                        bad |= (size.cpl_log2 > self.max_ring_log2) | ~cpl_ok[r]
                    with m.If(bad):
                        m.d.comb += bad_config.eq(1)
                    with m.Else():
                        m.d.sync += [
                            enabled[r].eq(1), waiting[r].eq(0), log2[r].eq(size.log2),
                            cpl_log2[r].eq(size.cpl_log2 if has_cpl else size.log2),
                            tail[r].eq(0), head[r].eq(0), cpl_head[r].eq(0), cpl_tail[r].eq(0),
                        ]
                with m.Elif(~size.enable):
                    m.d.sync += enabled[r].eq(0)
            return handler

        def producer(r):
            def handler(data):
                value = data[:INDEX_BITS]
                ok = ((value - head[r]) & M) <= (Const(1, INDEX_BITS + 1) << log2[r])
                with m.If(ok):
                    m.d.sync += [tail[r].eq(value), waiting[r].eq(0)]
                with m.Else():
                    m.d.comb += bad_doorbell.eq(1)
            return handler

        def consumer(r):
            def handler(data):
                value = data[:INDEX_BITS]
                ok = ((value - cpl_head[r]) & M) <= ((cpl_tail[r] - cpl_head[r]) & M)
                with m.If(ok):
                    m.d.sync += [cpl_head[r].eq(value), waiting[r].eq(0)]
                with m.Else():
                    m.d.comb += bad_doorbell.eq(1)
            return handler

        rings = [(r, "rx", r) for r in range(self.rx_rings)]
        rings += [(self.rx_rings + t, "tx", t) for t in range(self.tx_rings)]
        for r, prefix, i in rings:
            for lane, name in enumerate(("base_lo", "base_hi", "cpl_base_lo", "cpl_base_hi")):
                base_words[word(f"{prefix}_{name}", i)] = (r, lane)
            reads[word(f"{prefix}_size", i)] = size_word[r]
            reads[word(f"{prefix}_tail", i)] = tail[r]
            reads[word(f"{prefix}_head", i)] = head[r]
            reads[word(f"{prefix}_cpl_head", i)] = cpl_head[r]
            reads[word(f"{prefix}_cpl_tail", i)] = cpl_tail[r]
            reads[word(f"{prefix}_irq", i)] = irq[r]
            reads[word(f"{prefix}_status", i)] = Const(0, 32)  # special: read clears
            writes += [
                (word(f"{prefix}_size", i), size_writer(r)),
                (word(f"{prefix}_tail", i), producer(r)),
                (word(f"{prefix}_cpl_head", i), consumer(r)),
                (word(f"{prefix}_irq", i), self._setter(m, irq[r])),
            ]
        e = self.event_ring
        base_words[word("event_base_lo")] = (e, 0)
        base_words[word("event_base_hi")] = (e, 1)
        reads[word("event_size")] = size_word[e]
        reads[word("event_head")] = cpl_head[e]
        reads[word("event_tail")] = cpl_tail[e]
        reads[word("event_irq")] = irq[e]
        writes += [
            (word("event_size"), size_writer(e)),
            (word("event_head"), consumer(e)),
            (word("event_irq"), self._setter(m, irq[e])),
        ]
        for c in range(self.counters):
            reads[word("counter", c)] = self.counter_value[c]
            reads[word("counter_threshold", c)] = self.counter_threshold[c]

            def on_threshold(data, c=c):
                m.d.comb += [self.th_stb.eq(1), self.th_index.eq(c), self.th_data.eq(data)]
            writes.append((word("counter_threshold", c), on_threshold))
        status_words = {word("status"): None}
        for r, prefix, i in rings:
            status_words[word(f"{prefix}_status", i)] = r

        # Reads: registered, one cycle after r_stb.
        r_value = Signal(32)
        r_from_bases = Signal()
        r_lane = Signal(2)
        m.d.sync += [r_value.eq(0), r_from_bases.eq(0)]
        with m.If(bus.r_stb), m.Switch(bus.addr):
            for address, value in reads.items():
                if address in status_words:
                    continue
                with m.Case(address):
                    m.d.sync += r_value.eq(value)
            for address, (r, lane) in base_words.items():
                with m.Case(address):
                    m.d.sync += [r_from_bases.eq(1), r_lane.eq(lane)]
                    m.d.comb += rd_bus.addr.eq(r)
            with m.Case(word("status")):
                m.d.sync += r_value.eq(status)
            for address, r in status_words.items():
                if r is None:
                    continue
                with m.Case(address):
                    m.d.sync += r_value.eq(_ring_status(errors[r], last_status[r],
                                                        waiting[r]))
        m.d.comb += bus.r_data.eq(Mux(r_from_bases, rd_bus.data.word_select(r_lane, 32),
                                      r_value))

        # Sticky status: a read returns it and clears it, keeping bits set in that cycle.
        read_status = bus.r_stb & (bus.addr == word("status"))
        m.d.sync += status.eq(Mux(read_status, 0, status) | status_set)
        m.d.comb += [
            status_set[DMA_STATUS["dma_error"].offset].eq(self.dma_error),
        ]

        # The engine's updates of the selected ring (first: a doorbell in the same cycle wins).
        sel = self.sel
        with m.If(self.set_head):
            m.d.sync += head[sel].eq(self.new_head)
        with m.If(self.bump_cpl):
            m.d.sync += cpl_tail[sel].eq(cpl_tail[sel] + 1)
        with m.If(self.set_waiting):
            m.d.sync += waiting.bit_select(sel, 1).eq(1)

        # Writes; anything else (read-only words, absent rings, unmapped) is a bad access.
        with m.If(bus.w_stb), m.Switch(bus.addr):
            for address, handler in writes:
                if handler is None:
                    continue
                with m.Case(address):
                    handler(bus.w_data)
            for address, (r, lane) in base_words.items():
                with m.Case(address):
                    m.d.comb += [wr.addr.eq(r), wr.en.eq(1 << lane)]
                    if lane == 0:
                        m.d.sync += base_ok.bit_select(r, 1).eq(bus.w_data[:12] == 0)
                    elif lane == 2:
                        m.d.sync += cpl_ok.bit_select(r, 1).eq(bus.w_data[:12] == 0)
            with m.Default():
                m.d.comb += status_set[DMA_STATUS["bad_access"].offset].eq(1)
        m.d.comb += wr.data.eq(bus.w_data.replicate(4))

        # Ring error bookkeeping (the ring status registers), cleared by their reads.
        for address, r in status_words.items():
            if r is None:
                continue
            read_it = bus.r_stb & (bus.addr == address)
            bump = self.ring_error & (self.sel == r)
            with m.If(read_it):
                m.d.sync += errors[r].eq(bump)
            with m.Elif(bump & (errors[r] != 0xFFFF)):
                m.d.sync += errors[r].eq(errors[r] + 1)
            with m.If(bump):
                m.d.sync += last_status[r].eq(self.error_status)

        # -- reset: wait for the engine, then clear everything, the base memory row by row -----
        m.d.comb += self.reset_done.eq(0)
        with m.If(resetting & self.engine_idle):
            m.d.sync += clear_row.eq(clear_row + 1)
            m.d.comb += [wr.addr.eq(clear_row), wr.en.eq(0xF), wr.data.eq(0)]
            with m.If(clear_row == n - 1):
                m.d.sync += [resetting.eq(0), clear_row.eq(0)]
                m.d.comb += self.reset_done.eq(1)
            with m.If(clear_row == 0):
                m.d.sync += [
                    enabled.eq(0), waiting.eq(0), status.eq(0), base_ok.eq(-1), cpl_ok.eq(-1),
                    self.max_chunks_reg.eq(self.max_chunks),
                    self.tx_max_length.eq(DMA_REGISTERS["tx_max_length"].reset),
                ]
                for r in range(n):
                    m.d.sync += [log2[r].eq(0), cpl_log2[r].eq(0), tail[r].eq(0), head[r].eq(0),
                                 cpl_head[r].eq(0), cpl_tail[r].eq(0), size_word[r].eq(0),
                                 irq[r].eq(_IRQ_RESET), errors[r].eq(0),
                                 last_status[r].eq(0)]
        return m

    def sel_is_event(self, sel):
        return sel == self.event_ring

    @staticmethod
    def _setter(m, target):
        def handler(data):
            m.d.sync += target.eq(data)
        return handler


def _ring_status(errors, last_status, waiting):
    return (errors | (last_status << RING_STATUS["last_status"].offset)
            | (waiting << RING_STATUS["waiting"].offset))
