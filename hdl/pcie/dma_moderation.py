# Interrupt moderation of the DMA engine's completion rings: IRQ_CONFIG of partner.pcie.formats
# (frames and microseconds per ring, the MSI-X vector it signals), TxFlag.NOTIFY and the
# `polling` control bit. Its output is one `irq` strobe per vector for the MSI-X block
# (partner.hdl.pcie.msix), which keeps the pending bits.
"""Per-ring interrupt moderation.

A completion written to ring *r* (``written[r]``) adds one to its unsignalled count. The ring
signals — a one-cycle strobe on ``irq[vector]``, its count back to 0, its timer stopped — when

- the write asked for it (``notify[r]``: a TX pvec with `TxFlag.NOTIFY`), or
- the count reaches ``frames`` (0 acts as 1), or
- ``usecs`` is not 0 and that many microseconds have passed since the oldest unsignalled
  completion. Time is counted in ticks of one microsecond (``clk_freq`` cycles) shared by all
  rings, so a timer fires between ``usecs - 1`` and ``usecs`` microseconds after it started
  (the model, `partner.sim.models.dma_device`, fires at exactly ``usecs``).

With ``polling`` set nothing is signalled (counts still clear, as in the model). A vector number
at or above ``vectors`` is never signalled. ``clear`` (engine reset) stops every timer.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from partner.hdl.wire import layout
from partner.pcie.formats import IRQ_CONFIG

__all__ = ["IrqModeration"]


class IrqModeration(wiring.Component):
    def __init__(self, rings: int, vectors: int, clk_freq: float):
        if rings < 1 or vectors < 1:
            raise ValueError("need at least one ring and one vector")
        self.tick_cycles = round(clk_freq / 1e6)
        if self.tick_cycles < 1:
            raise ValueError(f"clk_freq {clk_freq!r} Hz is below 1 MHz: no microsecond tick")
        self.rings, self.vectors = rings, vectors
        super().__init__({
            "config": In(layout(IRQ_CONFIG)).array(rings),
            "written": In(rings),
            "notify": In(rings),
            "polling": In(1),
            "clear": In(1),
            "irq": Out(vectors),
        })

    def elaborate(self, platform):
        m = Module()
        frames_bits = IRQ_CONFIG["frames"].width
        usecs_bits = IRQ_CONFIG["usecs"].width

        prescale = Signal(range(self.tick_cycles))
        tick = Signal()
        m.d.comb += tick.eq(prescale == self.tick_cycles - 1)
        m.d.sync += prescale.eq(Mux(tick, 0, prescale + 1))

        # The strobes, registered: one cycle later, and off the engine's timing paths.
        written, notify = Signal(self.rings), Signal(self.rings)
        m.d.sync += [written.eq(self.written), notify.eq(self.notify)]

        fires = []
        for r in range(self.rings):
            cfg = self.config[r]
            count = Signal(frames_bits, name=f"unsignalled_{r}")
            age = Signal(usecs_bits, name=f"age_{r}")
            timing = Signal(name=f"timing_{r}")
            fire = Signal(name=f"fire_{r}")
            after = count + written[r]
            by_count = written[r] & (after >= Mux(cfg.frames == 0, 1, cfg.frames))
            by_time = timing & tick & (age + 1 >= cfg.usecs)
            m.d.comb += fire.eq(notify[r] | by_count | by_time)
            with m.If(fire | self.clear):
                m.d.sync += [count.eq(0), timing.eq(0), age.eq(0)]
            with m.Else():
                with m.If(written[r] & (count != (1 << frames_bits) - 1)):
                    m.d.sync += count.eq(after)
                with m.If(written[r] & ~timing & (cfg.usecs != 0)):
                    m.d.sync += [timing.eq(1), age.eq(0)]
                with m.Elif(timing & tick):
                    m.d.sync += age.eq(age + 1)
            fires.append((fire, cfg.vector))

        for v in range(self.vectors):
            hit = 0
            for fire, vector in fires:
                hit = hit | (fire & (vector == v))
            m.d.comb += self.irq[v].eq(hit & ~self.polling & ~self.clear)
        return m
