# Wrapping event counters shared by the blocks (MACs, receive FIFO, RX port, dispatcher).
"""Event counters.

Every counter wraps modulo its width: the host reads differences, which a saturating counter
would falsify after its first overflow.
"""

from amaranth.hdl import Module, Signal, Value

__all__ = ["count_a_cycle_later", "count_events"]


def count_events(m: Module, counter: Value, *events: Value):
    """Add the number of ``events`` (1-bit values) that are high to ``counter``.

    Two frames can finish in the same cycle (one ended, the next rejected at its preamble), so
    counters add rather than assume a single event.
    """
    m.d.sync += counter.eq(counter + sum(Value.cast(e).as_unsigned() for e in events))


def count_a_cycle_later(m: Module, counter: Value, event: Value, *, name: str):
    """Add one to ``counter`` in the cycle after ``event`` (a 1-bit value) is high.

    The event is registered first (a flip-flop named ``name``), so the counter's enable is that
    flip-flop and not whatever logic decides the event: a frame's outcome (a space check, a
    handshake through the frame switch) and a wide increment in one cycle were paths of the
    routed core's worst kind. The count is exact, only a cycle late.
    """
    registered = Signal(name=name)
    m.d.sync += registered.eq(event)
    count_events(m, counter, registered)
