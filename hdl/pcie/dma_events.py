# The DMA engine's event queue: the device core's events (partner.formats.EVENT) and the engine's
# own (partner.pcie.formats.DmaEvent) on their way to the event ring (EVENT_ENTRY), with the
# EVENTS_LOST accounting of the format.
"""Event queue of the DMA engine.

Three sources, one FIFO of ``depth`` event records, taken by the engine when the event ring has
room:

- ``engine``: the engine's own events (descriptor and DMA errors). Always accepted: when the
  FIFO is full the event is lost and counted (``lost`` strobe, the EVENTS_LOST counter), because
  an engine that waited for the host to read events could not go on receiving.
- ``threshold``: COUNTER_THRESHOLD events of `partner.hdl.pcie.dma_counters`, the same way,
  when no engine event comes in that cycle.
- ``core``: the device core's events, only taken when the FIFO has room and no other source
  writes: while the host is slow they wait and merge in the core's `EventMerger` (its ``count``
  grows), so they are never lost.

On ``out`` a pending RESET_DONE (after ``clear``, and after power-up) goes first, then
EVENTS_LOST with the number lost since the last one, then the FIFO in order: the host learns of
a loss before the events that followed it.
"""

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from partner.formats import EVENT
from partner.hdl.wire import layout
from partner.pcie.formats import EVENT_ENTRY, DmaEvent

from .dma_counters import threshold_event_layout

__all__ = ["EventQueue", "event_record_layout"]


def event_record_layout() -> data.StructLayout:
    """An event as the engine writes it: EVENT_ENTRY without its phase and reserved bits."""
    return data.StructLayout({name: EVENT_ENTRY[name].width
                              for name in ("kind", "unit", "count", "status", "index", "value")})


class EventQueue(wiring.Component):
    def __init__(self, depth: int = 16):
        if depth < 2:
            raise ValueError(f"depth must be at least 2, not {depth!r}")
        self.depth = depth
        record = event_record_layout()
        super().__init__({
            "core": In(stream.Signature(layout(EVENT))),
            "engine": In(stream.Signature(record)),
            "threshold": In(stream.Signature(threshold_event_layout())),
            "out": Out(stream.Signature(record)),
            "lost": Out(1),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        record = event_record_layout()
        fifo = SyncFIFOBuffered(width=record.size, depth=self.depth)
        m.submodules.fifo = ResetInserter(self.clear)(fifo)
        count_max = (1 << EVENT_ENTRY["count"].width) - 1

        w = data.View(record, fifo.w_data)
        th = self.threshold.payload
        core = self.core.payload
        m.d.comb += [self.engine.ready.eq(1)]
        with m.If(self.engine.valid):
            m.d.comb += [w.eq(self.engine.payload), fifo.w_en.eq(1),
                         self.lost.eq(~fifo.w_rdy)]
        with m.Elif(self.threshold.valid):
            m.d.comb += [
                self.threshold.ready.eq(1),
                w.kind.eq(DmaEvent.COUNTER_THRESHOLD), w.unit.eq(th.counter), w.count.eq(1),
                w.value.eq(th.value), fifo.w_en.eq(1), self.lost.eq(~fifo.w_rdy),
            ]
        with m.Elif(self.core.valid & fifo.w_rdy):
            m.d.comb += [
                self.core.ready.eq(1),
                w.kind.eq(core.kind), w.unit.eq(core.unit), w.count.eq(core.count),
                fifo.w_en.eq(1),
            ]

        reset_event = Signal(init=1)  # RESET_DONE is owed (power-up counts as a reset)
        lost = Signal(EVENT_ENTRY["count"].width)
        o = self.out.payload
        with m.If(reset_event):
            m.d.comb += [self.out.valid.eq(1), o.kind.eq(DmaEvent.RESET_DONE), o.count.eq(1)]
            with m.If(self.out.ready):
                m.d.sync += reset_event.eq(0)
        with m.Elif(lost != 0):
            m.d.comb += [self.out.valid.eq(1), o.kind.eq(DmaEvent.EVENTS_LOST), o.count.eq(lost)]
        with m.Else():
            m.d.comb += [self.out.valid.eq(fifo.r_rdy), o.eq(fifo.r_data),
                         fifo.r_en.eq(self.out.ready)]
        taken_lost = (~reset_event) & (lost != 0) & self.out.ready
        with m.If(taken_lost):
            m.d.sync += lost.eq(self.lost)
        with m.Elif(self.lost & (lost != count_max)):
            m.d.sync += lost.eq(lost + 1)
        with m.If(self.clear):
            m.d.sync += [reset_event.eq(1), lost.eq(0)]
        return m
