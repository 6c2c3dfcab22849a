# Merges the device's request sources (DMA reader, DMA writer, MSI-X) onto the one `req_out`
# TLP stream of the transaction layer (hdl/pcie/tlp.py), whole TLPs at a time.
"""Round-robin arbiter of TLP streams.

A source is granted at the first beat (``sop``) of a TLP and keeps the grant until that TLP's
last beat (``eop``) has been accepted; the next grant is decided in the same cycle, so
back-to-back TLPs from backlogged sources leave with no idle cycle between them. Among the
sources with a TLP waiting, the one after the previously granted source (in index order) wins:
every source sends at least one TLP in every ``n`` TLPs.

The arbiter holds no TLP of its own (the output is the granted source's beat, passed through),
so the order it keeps is simply: TLPs leave in the order they were granted, and a TLP whose
first beat is offered after another source's TLP has been fully accepted leaves after it. A
requester that must not let a read pass an earlier write (PCIe ordering, Base Spec §2.4.1: a
read must not pass a posted write only inside the fabric, not inside the device) therefore
waits for the writer's per-command *done*, which fires when the write's last beat was accepted
here, before it issues the read, an MSI-X write, or anything else that depends on the write.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .tlp import TlpStream

__all__ = ["RequestArbiter"]


class RequestArbiter(wiring.Component):
    """Merge ``n`` TLP streams of ``width`` bits onto one.

    Members
    -------
    src : ``In(TlpStream(width)).array(n)``
        The sources; each must keep to the TLP stream rules (sop ... eop).
    out : ``Out(TlpStream(width))``
        The merged stream.
    """

    def __init__(self, width: int, n: int):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"an arbiter needs at least one source, not {n!r}")
        self.width = width
        self.n = n
        super().__init__({
            "src": In(TlpStream(width)).array(n),
            "out": Out(TlpStream(width)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.n
        busy = Signal()  # inside a TLP: the grant is held
        held = Signal(range(n))  # the source of the TLP in progress
        last = Signal(range(n), init=n - 1)  # the most recently granted source

        # Round robin: the first valid source after `last`, wrapping around. The later
        # assignments in a case win, so the list is walked from the lowest priority up.
        pick = Signal(range(n))
        with m.Switch(last):
            for start in range(n):
                with m.Case(start):
                    for k in reversed(range(n)):
                        index = (start + 1 + k) % n
                        with m.If(self.src[index].valid):
                            m.d.comb += pick.eq(index)

        grant = Signal(range(n))
        m.d.comb += grant.eq(Mux(busy, held, pick))

        out = self.out
        with m.Switch(grant):
            for index in range(n):
                with m.Case(index):
                    src = self.src[index]
                    m.d.comb += [
                        out.valid.eq(src.valid),
                        out.payload.eq(src.payload),
                        src.ready.eq(out.ready),
                    ]
        with m.If(out.valid & out.ready):
            m.d.sync += [busy.eq(~out.payload.eop), held.eq(grant)]
            with m.If(~busy):
                m.d.sync += last.eq(grant)
        return m
