# 10 Gb/s Ethernet MAC for XGMII (IEEE 802.3-2018 clause 46: 64-bit TXD/RXD with 8 control
# bits per 156.25 MHz cycle, control characters /I/ 0x07, /S/ 0xFB, /T/ 0xFD, /E/ 0xFE, /S/ only
# in lane 0 or 4), with the deficit idle count of §46.3.1.4 on transmit and the MAC frame rules
# of clauses 3 and 4 (preamble/SFD, FCS, minimum size and padding, 12-byte average IPG).
"""XGMII receive and transmit MACs, eight bytes per cycle (internal stream width 8).

See docs/mac.md for the contracts; the comments here explain the pipeline choices.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from ..stream import PacketStream
from .common import (
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
    crc32_init,
    crc32_residue,
    crc32_update,
    is_vlan_tpid,
    rx_counter_members,
    tx_counter_members,
)

__all__ = ["XGMIIMAC", "XGMIIRX", "XGMIITX", "XGMIIRxBus", "XGMIITxBus"]

IDLE, START, TERMINATE, ERROR = 0x07, 0xFB, 0xFD, 0xFE
PREAMBLE_BEAT = Const(int.from_bytes(bytes([START, *[PREAMBLE] * 6, SFD]), "little"), 64)
IDLE_BEAT = Const(int.from_bytes(bytes([IDLE] * 8), "little"), 64)
ERROR_BEAT = Const(int.from_bytes(bytes([ERROR] * 8), "little"), 64)


def XGMIIRxBus() -> wiring.Signature:
    """XGMII receive signals, as driven by the PHY (a MAC uses ``In(XGMIIRxBus())``)."""
    return wiring.Signature({"rxd": Out(64), "rxc": Out(8)})


def XGMIITxBus() -> wiring.Signature:
    """XGMII transmit signals, as driven by the MAC (idles while in reset)."""
    return wiring.Signature({"txd": Out(64, init=IDLE_BEAT.value), "txc": Out(8, init=0xFF)})


def _lane(word, n):
    return word[8 * n:8 * n + 8]


def _mask_bytes(data, nbytes):
    """``data`` with the lanes at and above ``nbytes`` zeroed."""
    return Cat(*(Mux(nbytes > n, _lane(data, n), 0) for n in range(8)))


class XGMIIRX(wiring.Component):
    """XGMII receiver.

    Members
    -------
    phy : ``In(XGMIIRxBus())``
        RXD/RXC, registered once on entry.
    o_stream : ``Out(RxStream(8))``
        Frames from the destination MAC up to (not including) the FCS, packed from lane 0, no
        backpressure. A beat leaves 4 cycles after it was on RXD (5 for a lane-4 start).
    o_drop : ``Out(1)``
        With the last beat: drop the frame (feeds ``PacketFIFO.i_drop``).
    mtu : ``In(14, init=1500)``
        As :class:`~partner.hdl.mac.gmii.GMIIRX`.
    frames_ok, bytes_ok, fcs_errors, runts, giants, phy_errors, preamble_errors : ``Out(32)``
        Wrapping counters; every /S/ in lane 0 or 4 counts in exactly one of them.

    /S/ is found in lane 0 or lane 4; a lane-4 frame is realigned by half a beat, so everything
    after the aligner sees frames starting in lane 0 with the whole preamble in one beat. A frame
    ends at the first control character after /S/: /T/ ends it normally, anything else (/E/, /I/,
    /S/, ...) ends it as a PHY error. Gaps down to 5 bytes counting /T/ (the least a receiver
    must accept after idle deletion) are handled; a new /S/ ends a frame that has not ended.
    """

    def __init__(self):
        super().__init__({
            "phy": In(XGMIIRxBus()),
            "o_stream": Out(RxStream(8)),
            "o_drop": Out(1),
            "mtu": In(MTU_BITS, init=1500),
            **rx_counter_members(),
        })

    def elaborate(self, platform):
        m = Module()

        # -- input register and lane aligner -------------------------------------------------
        rxd, rxc = Signal(64), Signal(8)
        prev_d, prev_c = Signal(64), Signal(8)
        m.d.sync += [rxd.eq(self.phy.rxd), rxc.eq(self.phy.rxc), prev_d.eq(rxd), prev_c.eq(rxc)]
        start0 = rxc[0] & (_lane(rxd, 0) == START)
        start4 = rxc[4] & (_lane(rxd, 4) == START)
        # Whether the beat being aligned is taken half from the previous raw beat. A lane-0 /S/
        # switches to direct at once: the half beat skipped is inside the gap (>= 5 bytes).
        offset = Signal()
        half = offset & ~start0
        with m.If(start0):
            m.d.sync += offset.eq(0)
        with m.Elif(start4):
            m.d.sync += offset.eq(1)
        d, c = Signal(64), Signal(8)  # aligned beat, registered to keep the aligner off the CRC
        m.d.sync += [
            d.eq(Mux(half, Cat(prev_d[32:], rxd[:32]), rxd)),
            c.eq(Mux(half, Cat(prev_c[4:], rxc[:4]), rxc)),
        ]

        # -- beat classification ---------------------------------------------------------------
        end_lane = Signal(range(9))  # first control lane, 8 when the beat is all data
        m.d.comb += end_lane.eq(8)
        for n in reversed(range(8)):
            with m.If(c[n]):
                m.d.comb += end_lane.eq(n)
        end_char = d.word_select(end_lane[:3], 8)
        start = c[0] & (_lane(d, 0) == START)
        preamble_control = c[1:] != 0
        preamble_ok = d[8:] == PREAMBLE_BEAT.value >> 8

        # -- frame state -----------------------------------------------------------------------
        crc = Signal(32)
        count = Signal(15)   # frame bytes before this beat (FCS included)
        limit = Signal(15)   # longest good frame, FCS included
        tagged = Signal()
        first = Signal()
        held = Signal(64)    # the previous data beat: it may still turn out to be the last one
        held_valid = Signal()

        # A frame's tail leaves the cycle after its /T/ beat, with the registered CRC check:
        # that keeps the variable-length CRC and the residue compare in separate cycles.
        tail = Signal()
        tail_emit = Signal()
        tail_data = Signal(64)
        tail_n = Signal(range(9))
        tail_first = Signal()
        tail_crc = Signal(32)
        tail_length = Signal(15)
        tail_phy = Signal()
        tail_giant = Signal()

        o = self.o_stream
        m.d.sync += [o.valid.eq(0), self.o_drop.eq(0)]

        def emit(data, nbytes, *, first, last, drop=0):
            m.d.sync += [
                o.valid.eq(1),
                o.payload.data.eq(data),
                o.payload.nbytes.eq(nbytes),
                o.payload.first.eq(first),
                o.payload.last.eq(last),
                self.o_drop.eq(drop),
            ]

        ev = {name: Signal(name=f"ev_{name}") for name in
              ("ok", "fcs", "runt", "giant", "giant_cut", "phy", "phy_start", "preamble")}

        tag_here = Signal()
        m.d.comb += tag_here.eq(
            ((count == 8) & is_vlan_tpid(_lane(d, 4), _lane(d, 5)))
            | ((count == 16) & tagged & is_vlan_tpid(_lane(d, 0), _lane(d, 1))))
        limit_now = limit + Mux(tag_here, 4, 0)

        def start_frame():
            """/S/ in lane 0 starts a frame in any state (in DATA it has just ended the frame)."""
            with m.If(start):
                with m.If(preamble_control):
                    m.d.comb += ev["phy_start"].eq(1)
                    m.next = "DISCARD"
                with m.Elif(~preamble_ok):
                    m.d.comb += ev["preamble"].eq(1)
                    m.next = "DISCARD"
                with m.Else():
                    m.d.sync += [crc.eq(crc32_init()), count.eq(0), first.eq(1),
                                 held_valid.eq(0), tagged.eq(0),
                                 limit.eq(self.mtu + HEADER_FCS_BYTES)]
                    m.next = "DATA"

        with m.FSM():
            with m.State("IDLE"):
                start_frame()

            with m.State("DATA"):
                with m.If(end_lane == 8):
                    m.d.sync += [crc.eq(crc32_update(crc, d, 8)), count.eq(count + 8),
                                 limit.eq(limit_now)]
                    with m.If(tag_here):
                        m.d.sync += tagged.eq(1)
                    with m.If(count + 8 > limit_now):
                        # Past the limit: end the frame at the held beat, flagged, rather than
                        # let it flood the buffer (count >= 16 here, so a beat is held).
                        emit(held, 8, first=first, last=1, drop=1)
                        m.d.comb += ev["giant_cut"].eq(1)
                        m.next = "DISCARD"
                    with m.Else():
                        with m.If(held_valid):
                            emit(held, 8, first=first, last=0)
                            m.d.sync += first.eq(0)
                        m.d.sync += [held.eq(d), held_valid.eq(1)]
                with m.Else():
                    # The frame ends in this beat with end_lane data bytes, of which the last
                    # four (possibly straddling into the held beat) are the FCS.
                    spill = end_lane > FCS_BYTES
                    with m.If(held_valid & spill):
                        emit(held, 8, first=first, last=0)
                    length = count + end_lane
                    last_n = Mux(spill, end_lane - FCS_BYTES, end_lane + FCS_BYTES)
                    m.d.sync += [
                        tail.eq(1),
                        tail_emit.eq(held_valid),
                        tail_data.eq(_mask_bytes(Mux(spill, d, held), last_n)),
                        tail_n.eq(last_n),
                        tail_first.eq(first & ~spill),
                        tail_length.eq(length),
                        tail_phy.eq(end_char != TERMINATE),
                        tail_giant.eq(length > limit_now),
                    ]
                    with m.Switch(end_lane):
                        for n in range(8):
                            with m.Case(n):
                                m.d.sync += tail_crc.eq(crc32_update(crc, d, n))
                    m.next = "IDLE"
                start_frame()

            with m.State("DISCARD"):
                with m.If(c != 0):
                    m.next = "IDLE"
                start_frame()

        # -- tail: classify the ended frame and send its last beat -------------------------------
        with m.If(tail):
            m.d.sync += tail.eq(0)
            runt = tail_length < MIN_FRAME_BYTES
            bad_fcs = tail_crc != crc32_residue()
            m.d.comb += [
                ev["phy"].eq(tail_phy),
                ev["giant"].eq(~tail_phy & tail_giant),
                ev["runt"].eq(~tail_phy & ~tail_giant & runt),
                ev["fcs"].eq(~tail_phy & ~tail_giant & ~runt & bad_fcs),
                ev["ok"].eq(~tail_phy & ~tail_giant & ~runt & ~bad_fcs),
            ]
            with m.If(tail_emit):
                emit(tail_data, tail_n, first=tail_first, last=1, drop=~ev["ok"])

        count_events(m, self.frames_ok, ev["ok"])
        m.d.sync += self.bytes_ok.eq(
            self.bytes_ok + Mux(ev["ok"], tail_length - FCS_BYTES, 0))
        count_events(m, self.fcs_errors, ev["fcs"])
        count_events(m, self.runts, ev["runt"])
        count_events(m, self.giants, ev["giant"], ev["giant_cut"])
        count_events(m, self.phy_errors, ev["phy"], ev["phy_start"])
        count_events(m, self.preamble_errors, ev["preamble"])
        return m


class _Beat(enum.Enum, shape=2):
    """What the TX generator hands to the lane assembler."""
    IDLE = 0
    PREAMBLE = 1
    DATA = 2
    ERROR = 3


class XGMIITX(wiring.Component):
    """XGMII transmitter with deficit idle count.

    Members
    -------
    i_stream : ``In(PacketStream(8))``
        Frames without FCS, packed from lane 0; ``first`` is not looked at. Once the first beat
        has been taken, a beat must be valid every cycle until ``last`` (the wire cannot wait).
    phy : ``Out(XGMIITxBus())``
        TXD/TXC, registered. A beat taken at cycle *t* is on TXD at *t* + 2 (lane-0 start) or
        half in *t* + 2 and half in *t* + 3 (lane-4 start).
    frames_sent, bytes_sent, underruns : ``Out(32)``
        Wrapping counters. ``bytes_sent`` counts bytes between SFD and FCS (padding included).

    Each frame is /S/ + 6 preamble bytes + SFD, the data padded to 60 bytes, the FCS and /T/.
    /S/ goes in lane 0 or lane 4: the next start is the idle count of 12 bytes after /T/ (which
    counts as the first of them), rounded to a multiple of 4 down (deleting up to 3 idles) while
    the deficit idle count stays <= 3, else up; so gaps are 9..15 bytes and average 12, and the
    wire is at line rate for any frame size when the next frame is waiting.

    Underrun: a missing beat is replaced by eight /E/ (the frame is poisoned and ends there),
    ``underruns`` counts, and the rest of the input frame is taken and thrown away.
    """

    def __init__(self):
        super().__init__({
            "i_stream": In(PacketStream(8)),
            "phy": Out(XGMIITxBus()),
            **tx_counter_members(),
        })

    def elaborate(self, platform):
        m = Module()
        i = self.i_stream

        # -- stage 1: one generator beat per cycle, in frame-aligned lanes -------------------------
        g_kind = Signal(_Beat)
        g_data = Signal(64)
        g_n = Signal(range(9))  # data bytes in a DATA beat
        g_end = Signal()        # the last DATA beat: FCS and /T/ follow it
        g_shift = Signal()      # the frame goes out shifted to start in lane 4
        crc = Signal(32)        # after the beats handed on so far (includes g_data)
        count = Signal(16)      # data bytes handed on in this frame
        wait = Signal(2)        # idle generator beats still owed before the next /S/
        shift_next = Signal()
        deficit = Signal(2)     # idles deleted and not yet paid back (802.3 §46.3.1.4)

        m.d.sync += [g_kind.eq(_Beat.IDLE), g_end.eq(0)]
        with m.If(wait != 0):
            m.d.sync += wait.eq(wait - 1)

        # The beat generated this cycle: ``beat_n`` of its bytes enter the frame (and the CRC).
        # One CRC network for all cases keeps the 8 widths from being built more than once.
        beat, beat_n = Signal(64), Signal(range(9))
        generate, final = Signal(), Signal()
        crc_next = Signal(32)
        with m.Switch(beat_n):
            for n in range(1, 9):
                with m.Case(n):
                    m.d.comb += crc_next.eq(crc32_update(crc, beat, n))
        with m.If(generate):
            m.d.sync += [g_kind.eq(_Beat.DATA), g_data.eq(beat), g_n.eq(beat_n),
                         crc.eq(crc_next), count.eq(count + beat_n)]
        pad_end = MIN_DATA_BYTES % 8  # a padded frame ends 4 bytes into a beat

        with m.FSM():
            with m.State("IDLE"), m.If(wait == 0):
                with m.If(i.valid):
                    m.d.sync += [g_kind.eq(_Beat.PREAMBLE), g_shift.eq(shift_next),
                                 crc.eq(crc32_init()), count.eq(0)]
                    m.next = "DATA"
                with m.Else():
                    # Nothing to send when the gap was up: the deficit is void, and the
                    # next frame starts in lane 0 as soon as it comes.
                    m.d.sync += [shift_next.eq(0), deficit.eq(0)]

            with m.State("DATA"):
                m.d.comb += i.ready.eq(1)
                with m.If(i.valid):
                    nbytes = i.payload.nbytes
                    m.d.comb += [generate.eq(1),
                                 beat.eq(_mask_bytes(i.payload.data, nbytes))]
                    with m.If(~i.payload.last):
                        m.d.comb += beat_n.eq(8)
                    with m.Elif(count + nbytes >= MIN_DATA_BYTES):
                        m.d.comb += [beat_n.eq(nbytes), final.eq(1)]
                    with m.Elif(count + 8 >= MIN_DATA_BYTES):
                        m.d.comb += [beat_n.eq(pad_end), final.eq(1)]
                    with m.Else():
                        m.d.comb += beat_n.eq(8)
                        m.next = "PAD"
                    with m.If(final):
                        m.next = "IDLE"
                with m.Else():
                    m.d.sync += [g_kind.eq(_Beat.ERROR), wait.eq(2), shift_next.eq(0),
                                 deficit.eq(0)]
                    count_events(m, self.underruns, 1)
                    m.next = "FLUSH"

            with m.State("PAD"):
                m.d.comb += generate.eq(1)
                with m.If(count + 8 >= MIN_DATA_BYTES):
                    m.d.comb += [beat_n.eq(pad_end), final.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += beat_n.eq(8)

            with m.State("FLUSH"):
                m.d.comb += i.ready.eq(1)
                with m.If(i.valid & i.payload.last):
                    m.next = "IDLE"

        # The last data beat: count the frame and schedule the next /S/. /T/ falls
        # ``beat_n + 4`` lanes into this generator beat (4 more when shifted); the next /S/ is due
        # 12 bytes after /T/ (which counts as the first), at a multiple of 4, so the rounding is
        # ``beat_n % 4`` bytes either way.
        with m.If(final):
            m.d.sync += g_end.eq(1)
            count_events(m, self.frames_sent, 1)
            m.d.sync += self.bytes_sent.eq(self.bytes_sent + count + beat_n)
            due = Mux(g_shift, 4, 0) + beat_n + FCS_BYTES + IFG_BYTES  # from this beat's lane 0
            late = beat_n[:2]
            delete = (late != 0) & (deficit + late <= 3)
            insert = (late != 0) & ~delete
            at = Signal(5)
            m.d.comb += at.eq(Mux(delete, due - late, Mux(insert, due + 4 - late, due)))
            m.d.sync += [
                deficit.eq(Mux(delete, deficit + late,
                               Mux(insert, deficit - (4 - late), deficit))),
                wait.eq(at[3:] - 1),  # idle generator beats before the /S/ beat
                shift_next.eq(at[2]),
            ]

        # -- stage 2: lay FCS, /T/ and idles into the lanes --------------------------------------
        # The last data beat is followed by FCS, /T/ and idles, 16 bytes in all; what does not
        # fit into this beat goes out as the next one, when the generator is always idle.
        o_d, o_c = Signal(64), Signal(8)
        spill_d, spill_c, spill = Signal(64), Signal(8), Signal()
        fcs = crc ^ 0xFFFF_FFFF
        trailer_d = Cat(fcs, Const(TERMINATE, 8), Const(int.from_bytes(bytes([IDLE] * 11),
                                                                          "little"), 88))
        trailer_c = Const(0b1111_1111_1111_0000, 16)
        shift = Cat(Const(0, 3), g_n)
        end_d = Signal(128)
        end_c = Signal(16)
        m.d.comb += [
            end_d.eq(Cat(g_data, Const(0, 64)) | (trailer_d << shift)[:128]),
            end_c.eq((trailer_c << g_n)[:16]),
        ]
        m.d.sync += spill.eq(0)
        with m.Switch(g_kind):
            with m.Case(_Beat.IDLE):
                m.d.comb += [o_d.eq(Mux(spill, spill_d, IDLE_BEAT)),
                             o_c.eq(Mux(spill, spill_c, 0xFF))]
            with m.Case(_Beat.PREAMBLE):
                m.d.comb += [o_d.eq(PREAMBLE_BEAT), o_c.eq(0x01)]
            with m.Case(_Beat.DATA):
                with m.If(g_end):
                    m.d.comb += [o_d.eq(end_d[:64]), o_c.eq(end_c[:8])]
                    m.d.sync += [spill.eq(1), spill_d.eq(end_d[64:]), spill_c.eq(end_c[8:])]
                with m.Else():
                    m.d.comb += [o_d.eq(g_data), o_c.eq(0)]
            with m.Case(_Beat.ERROR):
                m.d.comb += [o_d.eq(ERROR_BEAT), o_c.eq(0xFF)]

        # -- stage 3: lane-4 starts go out half a beat late ------------------------------------
        hold_d, hold_c = Signal(32), Signal(4)
        m.d.sync += [hold_d.eq(o_d[32:]), hold_c.eq(o_c[4:])]
        m.d.sync += [
            self.phy.txd.eq(Mux(g_shift, Cat(hold_d, o_d[:32]), o_d)),
            self.phy.txc.eq(Mux(g_shift, Cat(hold_c, o_c[:4]), o_c)),
        ]
        return m


class XGMIIMAC(MACPair):
    """:class:`XGMIIRX` and :class:`XGMIITX` behind one signature (``rx_*`` and ``tx_*``)."""

    def __init__(self, *, rx_domain="sync", tx_domain="sync"):
        super().__init__(XGMIIRX(), XGMIITX(), rx_domain=rx_domain, tx_domain=tx_domain)
