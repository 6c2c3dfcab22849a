# The DMA engine's counters (`partner.pcie.formats.DmaCounter`) and their thresholds: the
# `counter` and `counter_threshold` registers of DMA_REGISTERS and the COUNTER_THRESHOLD event.
"""Counters with one-shot thresholds.

``inc[i]`` adds to counter *i* every cycle (0 most of the time); counters are 32 bits and wrap,
as the register map says (the host takes differences). ``threshold[i]`` is written through
``th_stb``/``th_index``/``th_data``. A scanner visits one counter per cycle: when an armed
threshold (non-zero) has been reached it offers a COUNTER_THRESHOLD event on ``event`` (the
counter and its value), and the threshold reads 0 from the cycle the event is taken (one event
per arming, `DMA_REGISTERS.counter_threshold`). The event therefore leaves up to one scan (16
cycles) after the crossing and carries the value at that moment, not at the crossing.

``clear`` (an engine reset) zeroes counters and thresholds.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from partner.pcie.formats import MAX_COUNTERS

__all__ = ["DmaCounters", "threshold_event_layout"]

COUNTER_BITS = 32
INC_BITS = 16


def threshold_event_layout() -> data.StructLayout:
    return data.StructLayout({"counter": range(MAX_COUNTERS), "value": COUNTER_BITS})


class DmaCounters(wiring.Component):
    """``count`` counters (the `DmaCounter` members) behind the `counter` registers."""

    def __init__(self, count: int):
        if not 1 <= count <= MAX_COUNTERS:
            raise ValueError(f"count must be 1..{MAX_COUNTERS}, not {count!r}")
        self.count = count
        super().__init__({
            "inc": In(INC_BITS).array(count),
            "value": Out(COUNTER_BITS).array(count),
            "threshold": Out(COUNTER_BITS).array(count),
            "th_stb": In(1),
            "th_index": In(range(MAX_COUNTERS)),
            "th_data": In(COUNTER_BITS),
            "clear": In(1),
            "event": Out(stream.Signature(threshold_event_layout())),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.count
        scan = Signal(range(n))
        held = Signal()  # the counter at `scan` reached its threshold: its event is on offer
        for i in range(n):
            m.d.sync += self.value[i].eq(self.value[i] + self.inc[i])

        armed = Signal()
        reached = Signal()
        with m.Switch(scan):
            for i in range(n):
                with m.Case(i):
                    m.d.comb += [
                        armed.eq(self.threshold[i] != 0),
                        reached.eq(self.value[i] >= self.threshold[i]),
                        self.event.payload.value.eq(self.value[i]),
                    ]
                    with m.If(self.event.valid & self.event.ready):
                        m.d.sync += self.threshold[i].eq(0)
        m.d.comb += [self.event.payload.counter.eq(scan), self.event.valid.eq(held & armed)]
        step = Signal()
        with m.If(held):
            # Taken, or disarmed by the host meanwhile: go on.
            m.d.comb += step.eq(self.event.ready | ~armed)
        with m.Elif(armed & reached):
            m.d.sync += held.eq(1)
        with m.Else():
            m.d.comb += step.eq(1)
        with m.If(step):
            m.d.sync += [held.eq(0), scan.eq(Mux(scan == n - 1, 0, scan + 1))]

        with m.If(self.th_stb):
            for i in range(n):
                with m.If(self.th_index == i):
                    m.d.sync += self.threshold[i].eq(self.th_data)
        with m.If(self.clear):
            m.d.sync += [held.eq(0), scan.eq(0)]
            for i in range(n):
                m.d.sync += [self.value[i].eq(0), self.threshold[i].eq(0)]
        return m
