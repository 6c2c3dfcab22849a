# 1000 Mb/s Ethernet MAC for GMII (IEEE 802.3-2018 clause 35: 8-bit TXD/RXD, TX_EN/TX_ER,
# RX_DV/RX_ER at 125 MHz), with the MAC frame rules of clauses 3 and 4 (preamble/SFD, FCS,
# minimum frame size and padding, inter-packet gap of 96 bit times = 12 byte times).
"""GMII receive and transmit MACs, one byte per cycle (internal stream width 1).

:class:`GMIIRX` finds the SFD, strips the FCS, checks it, enforces the size rules and streams
frames out without backpressure; :class:`GMIITX` adds preamble, padding and FCS and keeps the
inter-packet gap. :class:`GMIIMAC` puts both behind one signature. See docs/mac.md.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..stream import PacketStream
from .common import (
    ETHERNET_CRC,
    FCS_BYTES,
    HEADER_FCS_BYTES,
    IFG_BYTES,
    MIN_DATA_BYTES,
    MIN_FRAME_BYTES,
    MTU_BITS,
    PREAMBLE,
    SFD,
    MACPair,
    RxStream,
    count_events,
    is_vlan_tpid,
    rx_counter_members,
    tx_counter_members,
)

__all__ = ["GMIIMAC", "GMIIRX", "GMIITX", "GMIIRxBus", "GMIITxBus"]

# Bytes the receiver holds back: the FCS candidates plus one byte that can still become the last.
_RX_DELAY = FCS_BYTES + 1


def GMIIRxBus() -> wiring.Signature:
    """GMII receive signals, as driven by the PHY (a MAC uses ``In(GMIIRxBus())``)."""
    return wiring.Signature({"rxd": Out(8), "rx_dv": Out(1), "rx_er": Out(1)})


def GMIITxBus() -> wiring.Signature:
    """GMII transmit signals, as driven by the MAC."""
    return wiring.Signature({"txd": Out(8), "tx_en": Out(1), "tx_er": Out(1)})


class GMIIRX(wiring.Component):
    """GMII receiver.

    Members
    -------
    phy : ``In(GMIIRxBus())``
        RXD, RX_DV, RX_ER; registered once on entry.
    o_stream : ``Out(RxStream(1))``
        Frames from the destination MAC up to (not including) the FCS, one byte per beat, no
        backpressure. Seven cycles behind RXD (input register + 5 held bytes + output register).
    o_drop : ``Out(1)``
        With the last beat: the frame is bad and must be dropped (feeds ``PacketFIFO.i_drop``).
    mtu : ``In(14, init=1500)``
        Largest accepted payload; frames longer than ``mtu + 18`` bytes (+4 per VLAN tag) are
        giants. Sampled at each SFD.
    frames_ok, bytes_ok, fcs_errors, runts, giants, phy_errors, preamble_errors : ``Out(32)``
        Wrapping counters; every frame (carrier event that is not idle) counts in exactly one.
    """

    def __init__(self):
        super().__init__({
            "phy": In(GMIIRxBus()),
            "o_stream": Out(RxStream(1)),
            "o_drop": Out(1),
            "mtu": In(MTU_BITS, init=1500),
            **rx_counter_members(),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fcs = fcs = ETHERNET_CRC(8).create()

        rxd, dv, er = Signal(8, name="rxd"), Signal(name="dv"), Signal(name="er")
        m.d.sync += [rxd.eq(self.phy.rxd), dv.eq(self.phy.rx_dv), er.eq(self.phy.rx_er)]
        # The byte's SFD and preamble compares, made on the way into the input register: the
        # state machine's decisions (and `count`'s enable, a routed worst path of the core) then
        # start from two flip-flops, not from an 8-bit compare.
        is_sfd, is_preamble = Signal(name="is_sfd"), Signal(name="is_preamble")
        m.d.sync += [is_sfd.eq(self.phy.rxd == SFD), is_preamble.eq(self.phy.rxd == PREAMBLE)]

        # delay[0] newest; data only (the frame's state qualifies it), so without a reset
        delay = [Signal(8, name=f"delay{n}", reset_less=True) for n in range(_RX_DELAY)]
        count = Signal(15)   # bytes of the frame so far, FCS included; stops at the limit
        limit = Signal(15)   # longest good frame, FCS included
        tagged = Signal()    # an outer VLAN tag was seen (bytes 16-17 may be a second one)
        phy_error = Signal()  # RX_ER seen since the carrier came up
        first = Signal()

        o = self.o_stream
        m.d.sync += [o.valid.eq(0), self.o_drop.eq(0)]

        def emit(*, last, drop=0):
            m.d.sync += [
                o.valid.eq(1),
                o.payload.data.eq(delay[-1]),
                o.payload.nbytes.eq(1),
                o.payload.first.eq(first),
                o.payload.last.eq(last),
                self.o_drop.eq(drop),
                first.eq(0),
            ]

        ev = {name: Signal(name=f"ev_{name}") for name in
              ("ok", "fcs", "runt", "giant", "phy", "preamble")}
        length = Signal(15)  # the length of a good frame, for bytes_ok

        def preamble_byte(error):
            with m.If(is_sfd):
                m.next = "DATA"
                m.d.comb += fcs.start.eq(1)
                m.d.sync += [count.eq(0), first.eq(1), tagged.eq(0),
                             limit.eq(self.mtu + HEADER_FCS_BYTES)]
            with m.Elif(is_preamble):
                m.next = "PREAMBLE"
            with m.Else():
                m.d.comb += [ev["phy"].eq(error), ev["preamble"].eq(~error)]
                m.next = "DISCARD"

        with m.FSM():
            with m.State("IDLE"), m.If(dv):
                m.d.sync += phy_error.eq(er)
                preamble_byte(er)

            with m.State("PREAMBLE"):
                with m.If(~dv):  # carrier ended before an SFD
                    m.d.comb += [ev["phy"].eq(phy_error), ev["preamble"].eq(~phy_error)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += phy_error.eq(phy_error | er)
                    preamble_byte(phy_error | er)

            with m.State("DATA"):
                with m.If(dv):
                    m.d.comb += [fcs.valid.eq(1), fcs.data.eq(rxd)]
                    m.d.sync += [delay[0].eq(rxd), *(delay[n].eq(delay[n - 1])
                                                    for n in range(1, _RX_DELAY))]
                    m.d.sync += [count.eq(count + 1), phy_error.eq(phy_error | er)]
                    # VLAN tags widen the limit: TPID at bytes 12-13, a second one at 16-17.
                    with m.If((count == 13) & is_vlan_tpid(delay[0], rxd)):
                        m.d.sync += [limit.eq(limit + 4), tagged.eq(1)]
                    with m.If((count == 17) & tagged & is_vlan_tpid(delay[0], rxd)):
                        m.d.sync += limit.eq(limit + 4)
                    with m.If(count == limit):
                        # One byte past the limit: end the frame here, flagged, rather than let
                        # it flood the buffer; the rest of the carrier event is discarded.
                        emit(last=1, drop=1)
                        m.d.comb += [ev["phy"].eq(phy_error | er),
                                     ev["giant"].eq(~(phy_error | er))]
                        m.next = "DISCARD"
                    with m.Elif(count >= _RX_DELAY):
                        emit(last=0)
                with m.Else():
                    runt = count < MIN_FRAME_BYTES
                    bad_fcs = ~fcs.match_detected
                    m.d.comb += [
                        ev["phy"].eq(phy_error),
                        ev["runt"].eq(~phy_error & runt),
                        ev["fcs"].eq(~phy_error & ~runt & bad_fcs),
                        ev["ok"].eq(~phy_error & ~runt & ~bad_fcs),
                        length.eq(count - FCS_BYTES),
                    ]
                    with m.If(count >= _RX_DELAY):
                        emit(last=1, drop=~ev["ok"])
                    m.next = "IDLE"

            with m.State("DISCARD"), m.If(~dv):
                m.next = "IDLE"

        # The counters count a cycle later, from registered events: the FCS verdict (the CRC
        # register compared with the residue) and a 32-bit increment in one cycle were the
        # routed core's worst path. (One register vector and the byte count's addend
        # registered: the same logic with a register per event and the length registered
        # crashed the YoWASP Yosys's ABC9 pass on the 16-rule core.)
        events_r = Signal(len(ev))  # last cycle's events, in the order of `ev`
        m.d.sync += events_r.eq(Cat(*ev.values()))
        ev_r = dict(zip(ev, events_r, strict=True))
        bytes_r = Signal.like(length)
        m.d.sync += bytes_r.eq(Mux(ev["ok"], length, 0))
        count_events(m, self.frames_ok, ev_r["ok"])
        m.d.sync += self.bytes_ok.eq(self.bytes_ok + bytes_r)
        count_events(m, self.fcs_errors, ev_r["fcs"])
        count_events(m, self.runts, ev_r["runt"])
        count_events(m, self.giants, ev_r["giant"])
        count_events(m, self.phy_errors, ev_r["phy"])
        count_events(m, self.preamble_errors, ev_r["preamble"])
        return m


class GMIITX(wiring.Component):
    """GMII transmitter.

    Members
    -------
    i_stream : ``In(PacketStream(1))``
        Frames without FCS, one byte per beat; ``first`` is not looked at, ``last`` ends a frame.
        Once the first byte has been taken, one byte must be valid every cycle until ``last``
        (the wire cannot wait): a missing byte is an underrun.
    phy : ``Out(GMIITxBus())``
        TXD, TX_EN, TX_ER, registered.
    frames_sent, bytes_sent, underruns : ``Out(32)``
        Wrapping counters. ``bytes_sent`` counts bytes between SFD and FCS (padding included).

    Per frame the wire carries 7 preamble bytes, the SFD, the data padded to 60 bytes, the FCS and
    then exactly 12 idle cycles before the next preamble if the next frame is already waiting:
    line rate. The first preamble byte is on TXD the cycle after ``i_stream.valid`` rises; the
    first data byte is taken 8 cycles after ``valid`` rose and is on TXD one cycle later.

    Underrun: the byte that is missing is sent with TX_ER (the PHY turns it into an error code,
    the receiver drops the frame), TX_EN falls, ``underruns`` counts, and the rest of the input
    frame is taken and thrown away.
    """

    def __init__(self):
        super().__init__({
            "i_stream": In(PacketStream(1)),
            "phy": Out(GMIITxBus()),
            **tx_counter_members(),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fcs = fcs = ETHERNET_CRC(8).create()

        i, phy = self.i_stream, self.phy
        gap = Signal(range(IFG_BYTES + 1))
        count = Signal(16)   # data + padding bytes sent in this frame
        step = Signal(3)     # byte within the preamble or the FCS

        m.d.sync += [phy.txd.eq(0), phy.tx_en.eq(0), phy.tx_er.eq(0)]
        with m.If(gap != 0):
            m.d.sync += gap.eq(gap - 1)

        def send(byte, error=0):
            m.d.sync += [phy.txd.eq(byte), phy.tx_en.eq(1), phy.tx_er.eq(error)]

        with m.FSM():
            with m.State("IDLE"), m.If((gap == 0) & i.valid):
                send(PREAMBLE)
                m.d.sync += step.eq(1)
                m.next = "PREAMBLE"

            with m.State("PREAMBLE"):
                with m.If(step == 7):
                    send(SFD)
                    m.d.sync += count.eq(0)
                    m.next = "DATA"
                with m.Else():
                    send(PREAMBLE)
                m.d.sync += step.eq(step + 1)

            with m.State("DATA"):
                m.d.comb += i.ready.eq(1)
                with m.If(i.valid):
                    send(i.payload.data)
                    m.d.comb += [fcs.start.eq(count == 0), fcs.valid.eq(1),
                                 fcs.data.eq(i.payload.data)]
                    m.d.sync += count.eq(count + 1)
                    with m.If(i.payload.last):
                        m.d.sync += step.eq(0)
                        m.next = "PAD_OR_FCS"
                with m.Else():
                    send(0, error=1)
                    m.d.sync += gap.eq(IFG_BYTES)
                    count_events(m, self.underruns, 1)
                    m.next = "FLUSH"

            with m.State("PAD_OR_FCS"):
                with m.If(count < MIN_DATA_BYTES):
                    send(0)
                    m.d.comb += [fcs.valid.eq(1), fcs.data.eq(0)]
                    m.d.sync += count.eq(count + 1)
                with m.Else():
                    # The CRC register holds every byte sent so far; it is stable from here on.
                    send(fcs.crc.word_select(step[:2], 8))
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == 3):
                        m.d.sync += gap.eq(IFG_BYTES)
                        count_events(m, self.frames_sent, 1)
                        m.d.sync += self.bytes_sent.eq(self.bytes_sent + count)
                        m.next = "IDLE"

            with m.State("FLUSH"):
                m.d.comb += i.ready.eq(1)
                with m.If(i.valid & i.payload.last):
                    m.next = "IDLE"

        return m


class GMIIMAC(MACPair):
    """:class:`GMIIRX` and :class:`GMIITX` behind one signature (``rx_*`` and ``tx_*``).

    ``rx_domain``/``tx_domain`` name the clock domains of the two halves (GMII: the PHY's RX_CLK
    and the MAC's GTX_CLK); both default to ``sync``.
    """

    def __init__(self, *, rx_domain="sync", tx_domain="sync"):
        super().__init__(GMIIRX(), GMIITX(), rx_domain=rx_domain, tx_domain=tx_domain)

