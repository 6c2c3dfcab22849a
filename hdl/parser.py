# Header parser: the front half of the on-chip partner demux. Ethernet II (IEEE 802.3-2018
# clause 3), 802.1Q/802.1ad tags (IEEE 802.1Q-2018 clause 9), ARP (RFC 826), IPv4 (RFC 791),
# IPv6 and its fragment header (RFC 8200), UDP (RFC 768), TCP (RFC 9293). The rules it follows,
# field by field, are in docs/parser.md; partner.sim.models.parser is their reference model.
"""Header parser: one `FLOW_KEY` per frame, a fixed 2 cycles after the frame's last beat.

The parser taps a packet stream that cannot be stalled (a MAC's receive output) and captures,
per lane and at offsets known in advance, only the header bytes a key needs. No barrel shifter:

* Every header after Ethernet's 14 bytes is a multiple of 4 bytes long, so every L3 and L4 header
  starts at a byte position that is 2 modulo 4. At the supported widths (1, 2, 4, 8 bytes) a field
  byte therefore sits in a lane fixed at elaboration time (at width 8, in one of two lanes).
* The L3 header starts at byte 14, 18 or 22 (no, one or two tags). Each L3 byte has three
  candidate positions, one per tag count; the tag count is known when the byte arrives (at widths
  4 and 8 possibly only from the type field's lanes of the same beat, combinationally).
* The L4 header starts at a position computed from the IHL (or the IPv6 fragment header) a few
  beats before it arrives, held in a register.

Bytes a frame does not have read as zero (capture registers are cleared as a frame starts), so
every field of the key is a function of the frame alone, also for truncated frames.

At the end of a frame the capture registers hold its headers for exactly one cycle (the next
frame's first beat may arrive then); that cycle computes the key and its checks into the output
register. Hence the latency L = 2: a last beat transferred at clock edge *t* gives ``o_key.valid``
during the cycle between edges *t+1* and *t+2*, one key per cycle at most, any frame length,
frames back to back.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from partner.formats import FLOW_KEY, KeyFlag
from partner.parser_formats import MalformedCause

from .stream import packet_layout
from .wire import layout

__all__ = ["LATENCY", "Parser"]

LATENCY = 2  # cycles from the edge that takes a frame's last beat to the one that takes its key

_TAGS = (0x8100, 0x88A8)  # outer tag types; only 0x8100 is taken as an inner tag
_ETH_IPV4, _ETH_ARP, _ETH_IPV6 = 0x0800, 0x0806, 0x86DD
_TCP, _UDP, _FRAG6 = 6, 17, 44
_L3_STARTS = (14, 18, 22)  # no tag, one tag, two tags
# IPv4 bytes 0, 2-3, 6-7, 9, 12-19; IPv6 bytes 0, 4-6, 8-39 and its fragment header's 40, 42-43.
_L3_BYTES = (0, *range(2, 41), 42, 43)
_RAW_BYTES = (*range(18), 20, 21)  # MACs, type, outer TCI, inner type, type after two tags
_MAX_POS = 96  # beyond the deepest byte read: 22 + 60 (IPv4 with options) + 4 (ports)
_LEN_BITS = 18  # frame length counter; it stops at 2**17, past any IP length field
_COUNTERS = [c for c in MalformedCause if c != MalformedCause.NONE]


def counter_name(cause: MalformedCause) -> str:
    """The name of the counter port of a malformed cause, e.g. ``malformed_trunc_l2``."""
    return f"malformed_{cause.name.lower()}"


def _be(byte_list):
    """Bytes in wire order as one integer value, the first byte most significant."""
    return Cat(*reversed(byte_list))


class Parser(wiring.Component):
    """Ethernet/VLAN/ARP/IPv4/IPv6/UDP/TCP header parser for ``width_bytes``-wide packet streams.

    Parameters
    ----------
    width_bytes : int
        Beat width of the observed stream: 1, 2, 4 or 8.

    Members
    -------
    i_stream : ``In(stream.Signature(packet_layout(width_bytes), always_ready=True))``
        The observed stream, a tap: a beat counts in every cycle ``valid`` is high, and the
        parser never holds ``ready`` low (it is the constant 1). Drive ``valid`` and ``payload``
        from the transfers of the stream being observed.
    in_port : ``In(3)``
        Ingress port; sampled with each frame's first beat.
    o_key : ``Out(stream.Signature(layout(FLOW_KEY), always_ready=True))``
        One key per frame, ``valid`` for one cycle, `LATENCY` cycles after the last beat. There
        is no back-pressure: the consumer must take it in that cycle.
    o_cause : ``Out(MalformedCause)``
        The frame's `MalformedCause` (``NONE`` unless ``MALFORMED``), valid with ``o_key``.
    frames_parsed, malformed_<cause> : ``Out(32)``
        Wrapping counters of keys emitted and of malformed frames per cause; a frame is counted
        the cycle after its key.
    """

    def __init__(self, width_bytes: int):
        if width_bytes not in (1, 2, 4, 8):
            # At 16 bytes the L4 header could pass in the beat right after the IHL, before the
            # L4 offset computed from it is registered.
            raise ValueError(f"width_bytes must be 1, 2, 4 or 8, not {width_bytes!r}")
        self.width_bytes = width_bytes
        members = {
            "i_stream": In(stream.Signature(packet_layout(width_bytes), always_ready=True)),
            "in_port": In(3),
            "o_key": Out(stream.Signature(layout(FLOW_KEY), always_ready=True)),
            "o_cause": Out(MalformedCause),
            "frames_parsed": Out(32),
        }
        members.update({counter_name(c): Out(32) for c in _COUNTERS})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        width = self.width_bytes
        beat_of = lambda pos: pos // width  # noqa: E731
        lane_of = lambda pos: pos % width  # noqa: E731

        beat_in = self.i_stream.payload
        valid = self.i_stream.valid
        start = valid & beat_in.first  # a new frame: forget the previous one's bytes
        lanes = [beat_in.data[8 * n:8 * n + 8] for n in range(width)]

        # Beat index within the frame, stopping past the deepest byte we capture.
        last_beat = _MAX_POS // width
        # Only the counters and `valid`s have a reset: the other registers are cleared as a
        # frame starts or read only once written, and leaving the FFs' set/reset input free for
        # that clearing and for the key's zeroing saves a LUT per bit on ECP5.
        beat_reg = Signal(range(last_beat + 1), reset_less=True)
        # `beat_reg` one-hot as well, decoded on its way into the register: every capture
        # enable at a fixed position is then one LUT (`valid`, `first`, one bit), not a 7-bit
        # compare ahead of the byte multiplexers and the facts.
        beat_1h = Signal(last_beat + 1, init=1, reset_less=True)
        beat = Mux(beat_in.first, 0, beat_reg)
        beat_next = Mux(beat == last_beat, last_beat, beat + 1)
        with m.If(valid):
            m.d.sync += [beat_reg.eq(beat_next),
                         beat_1h.eq(Cat(beat_next == n for n in range(last_beat + 1)))]

        def at_beat(n):
            if isinstance(n, int):
                return valid & Mux(beat_in.first, n == 0, beat_1h[n])
            return valid & (beat == n)

        def capture(name, hits):
            """A byte register loaded from the lane of the ``(condition, lane)`` that holds, if
            the lane carries a byte, and cleared when a frame starts without it (so bytes a
            frame lacks read as 0 whatever a short beat's unused lanes carry). Returns the
            register and its next value."""
            reg = Signal(8, name=name, reset_less=True)
            nxt = Signal(8, name=f"{name}_next")
            loads = [(cond & (beat_in.nbytes > lane), lanes[lane]) for cond, lane in hits]
            load = Cat(cond for cond, _ in loads).any()
            data = loads[0][1]
            for cond, lane_data in loads[1:]:
                data = Mux(cond, lane_data, data)
            # Clearing takes priority over loading so that it maps onto the FFs' reset input.
            with m.If(start & ~load):
                m.d.sync += reg.eq(0)
            with m.Elif(load):
                m.d.sync += reg.eq(data)
            m.d.comb += nxt.eq(Mux(load, data, Mux(start, 0, reg)))
            return reg, nxt

        def fact(name, value):
            """A registered function of next values: final once the bytes it reads are in."""
            reg = Signal(name=name, reset_less=True)
            m.d.sync += reg.eq(value)
            return reg

        # -- Ethernet header and tags: fixed positions -----------------------------------------
        raw, raw_next = {}, {}
        for pos in _RAW_BYTES:
            raw[pos], raw_next[pos] = capture(f"b{pos}", [(at_beat(beat_of(pos)), lane_of(pos))])

        def type_at(pos, regs):
            return _be([regs[pos], regs[pos + 1]])

        type0_next, type1_next = type_at(12, raw_next), type_at(16, raw_next)
        tag0_next = (type0_next == _TAGS[0]) | (type0_next == _TAGS[1])
        tag1_next = tag0_next & (type1_next == 0x8100)
        tag0, tag1 = fact("tag0", tag0_next), fact("tag1", tag1_next)
        # The EtherType: after no, one or two tags.
        ethertype_is = {}
        for name, code in (("ipv4", _ETH_IPV4), ("ipv6", _ETH_IPV6), ("arp", _ETH_ARP)):
            after = [type_at(pos, raw_next) == code for pos in (12, 16, 20)]
            ethertype_is[name] = fact(name, Mux(tag1_next, after[2],
                                                Mux(tag0_next, after[1], after[0])))
        is_v4, is_v6, is_arp = ethertype_is["ipv4"], ethertype_is["ipv6"], ethertype_is["arp"]

        def known_at(pos, last_byte, value_next, value_reg):
            # Byte `last_byte` completes `value`; use the lanes only if it arrives in pos's beat.
            return value_next if beat_of(last_byte) == beat_of(pos) else value_reg

        def l3_start_is(start_pos, pos):
            """Whether the L3 header starts at ``start_pos``, as known when ``pos`` arrives."""
            if start_pos == 14:
                return ~known_at(pos, 13, tag0_next, tag0)
            t1 = known_at(pos, 17, tag1_next, tag1)
            return known_at(pos, 13, tag0_next, tag0) & ~t1 if start_pos == 18 else t1

        # -- L3 header: three candidate positions per byte --------------------------------------
        l3, l3_next = {}, {}
        for k in _L3_BYTES:
            hits = [(at_beat(beat_of(s + k)) & l3_start_is(s, s + k), lane_of(s + k))
                    for s in _L3_STARTS]
            l3[k], l3_next[k] = capture(f"l3_{k}", hits)

        # Facts the key stage needs, registered here to keep its logic shallow. Those of L3 byte
        # 0 lag a cycle (they are computed from the registers) because at width 4 and 8 that
        # byte may come with the lanes that decide the tag count. A frame whose last beat holds
        # it is too short for an IP header, and the lagging facts then still see the cleared
        # byte: version 0, which fails the version checks as such a frame must.
        version, ihl = l3[0][4:], l3[0][:4]
        v4_ok = fact("v4_ok", (version == 4) & (ihl >= 5))
        v6_ok = fact("v6_ok", version == 6)
        # Header ends in 4-byte words, for the checks `total < 4 * (ihl + n)`.
        udp_end4 = Signal(5, reset_less=True)
        tcp_end4 = Signal(5, reset_less=True)
        m.d.sync += [udp_end4.eq(ihl + 2), tcp_end4.eq(ihl + 5)]
        frag4 = _be([l3_next[6], l3_next[7]])
        more4 = fact("more4", frag4[13])
        first4 = fact("first4", frag4[:13] == 0)
        frag6 = fact("frag6", l3_next[6] == _FRAG6)
        first6 = fact("first6", _be([l3_next[42], l3_next[43]])[3:] == 0)
        protos = {}
        for name, k in (("v4", 9), ("v6", 6), ("frag6", 40)):
            protos[name] = (fact(f"{name}_tcp", l3_next[k] == _TCP),
                            fact(f"{name}_udp", l3_next[k] == _UDP))

        # -- Lengths -----------------------------------------------------------------------------
        # `length` counts the frame's bytes. `after_l2` and `after_ip6` count those after the
        # Ethernet header (with its tags) and after a fixed IPv6 header, so that the checks below
        # compare them with the IP length fields instead of subtracting. They start as if there
        # were no tags and are set right on the first beat after the tag count is known (from
        # registers, not from the lanes that decide it); a frame that ends sooner is at most 24
        # bytes long, so they stay below 20 and 0 and the IP checks fail as they must.
        sync_beat = beat_of(17) + 1
        sync_pos = sync_beat * width
        nbytes = beat_in.nbytes
        length = Signal(_LEN_BITS, reset_less=True)
        after_l2 = Signal(signed(_LEN_BITS + 1), reset_less=True)
        after_ip6 = Signal(signed(_LEN_BITS + 1), reset_less=True)
        at_sync = beat == sync_beat
        l2_size = Mux(tag1, 22, Mux(tag0, 18, 14))
        held = ~beat_in.first & length[-1]  # past 2**17 bytes: stop, every check already passes
        with m.If(valid & ~held):
            m.d.sync += [
                length.eq(Mux(beat_in.first, 0, length) + nbytes),
                after_l2.eq(Mux(beat_in.first, -14,
                                Mux(at_sync, sync_pos - l2_size, after_l2)) + nbytes),
                after_ip6.eq(Mux(beat_in.first, -54,
                                 Mux(at_sync, sync_pos - 40 - l2_size, after_ip6)) + nbytes),
            ]

        # -- L4 header: a position computed from registered L3 fields ---------------------------
        # Positions are 4 * word + 2; the L3 header starts at word 3, 4 or 5.
        l3_word = 3 + tag0 + tag1
        l4_word = Signal(5, reset_less=True)
        m.d.sync += l4_word.eq(l3_word + Mux(is_v6, Mux(frag6, 12, 10), l3[0][:4]))
        ports = []
        for j in range(4):
            low = (2 + j) % 4
            pos = Cat(Const(low, 2), l4_word + (2 + j) // 4)  # 4 * word + low
            shift = (width - 1).bit_length()
            fixed = min(width, 4)
            hits = [(at_beat(pos[shift:]) & (pos[:shift] == lane), lane)
                    for lane in range(width) if lane % fixed == low % fixed]
            ports.append(capture(f"l4_{j}", hits)[0])

        # -- Key stage: the cycle after the last beat ---------------------------------------------
        frame_end = Signal()
        port = Signal(3, reset_less=True)
        m.d.sync += frame_end.eq(valid & beat_in.last)
        with m.If(start):
            m.d.sync += port.eq(self.in_port)

        ihl4 = Cat(Const(0, 2), l3[0][:4])  # IPv4 header length in bytes
        total = _be([l3[2], l3[3]])
        payload6 = _be([l3[4], l3[5]])
        v6_tcp = Mux(frag6, protos["frag6"][0], protos["v6"][0])
        v6_udp = Mux(frag6, protos["frag6"][1], protos["v6"][1])
        tcp = (is_v4 & protos["v4"][0]) | (is_v6 & v6_tcp)
        udp = (is_v4 & protos["v4"][1]) | (is_v6 & v6_udp)
        first_fragment = (is_v4 & first4) | (is_v6 & (~frag6 | first6))
        # Both L4 header sizes are checked in parallel and the protocol picks one.
        short4 = Mux(tcp, total[2:] < tcp_end4, total[2:] < udp_end4)
        short6 = Mux(tcp, payload6 < Mux(frag6, 28, 20), payload6 < Mux(frag6, 16, 8))
        frag6_size = Mux(frag6, 8, 0)

        checks = {
            MalformedCause.TRUNC_L2: length < 14,
            MalformedCause.TRUNC_VLAN: (tag0 & (length < 18)) | (tag1 & (length < 22)),
            MalformedCause.BAD_L3:
                (is_v4 & (~v4_ok | (after_l2 < ihl4)))
                | (is_v6 & (~v6_ok | (after_ip6 < frag6_size))),
            MalformedCause.L3_LENGTH:
                (is_v4 & ((total > after_l2) | (total < ihl4)))
                | (is_v6 & ((payload6 > after_ip6) | (payload6 < frag6_size))),
            MalformedCause.TRUNC_L4:
                (tcp | udp) & first_fragment & ((is_v4 & short4) | (is_v6 & short6)),
        }
        cause = Signal(MalformedCause)
        for code, failed in reversed(checks.items()):  # the outermost failure wins
            with m.If(failed):
                m.d.comb += cause.eq(code)
        malformed = Cat(*checks.values()).any()
        l4 = (tcp | udp) & first_fragment & ~malformed

        # Fields of layers the EtherType does not name are 0, so a rule on e.g. src_ip cannot
        # match an ARP frame's payload; the checks only gate the flags and the ports.
        fragment = (is_v4 & (more4 | ~first4)) | (is_v6 & frag6)
        found = {KeyFlag.VLAN: tag0, KeyFlag.QINQ: tag1, KeyFlag.ARP: is_arp,
                 KeyFlag.IPV4: is_v4, KeyFlag.IPV6: is_v6, KeyFlag.FRAGMENT: fragment,
                 KeyFlag.L4: l4, KeyFlag.MALFORMED: malformed}
        flags = Cat(*(found[KeyFlag(1 << bit)] for bit in range(len(found))))
        protocol = Mux(is_v4, l3[9], Mux(is_v6, Mux(frag6, l3[40], l3[6]), 0))
        v6_src, v6_dst = _be([l3[k] for k in range(8, 24)]), _be([l3[k] for k in range(24, 40)])
        v4_src, v4_dst = _be([l3[k] for k in range(12, 16)]), _be([l3[k] for k in range(16, 20)])
        # The key register has no reset (valid qualifies it), which frees the FFs' reset input
        # for the zeroing of fields.
        key = Signal(layout(FLOW_KEY), reset_less=True)
        key_cause = Signal(MalformedCause, reset_less=True)
        # The L4 ports are registered as captured and zeroed after the register when the key
        # has no L4 flag: `l4` depends on every malformed check, and gating 32 port bits with it
        # before the register was the parser's longest path (fan-out, 6.7 ns on an ECP5-8).
        raw_ports = Signal(32, reset_less=True)
        has_l4 = key.flags[(KeyFlag.L4).bit_length() - 1]
        m.d.comb += [
            self.o_key.payload.eq(key),
            self.o_key.payload.src_port.eq(Mux(has_l4, raw_ports[16:], 0)),
            self.o_key.payload.dst_port.eq(Mux(has_l4, raw_ports[:16], 0)),
            self.o_cause.eq(key_cause),
        ]
        m.d.sync += self.o_key.valid.eq(frame_end)
        with m.If(frame_end):
            m.d.sync += [
                key.flags.eq(flags),
                key.in_port.eq(port),
                key.vlan.eq(Mux(tag0, _be([raw[14], raw[15]])[:12], 0)),
                key.ethertype.eq(Mux(tag0, Mux(tag1, type_at(20, raw), type_at(16, raw)),
                                     type_at(12, raw))),
                key.src_mac.eq(_be([raw[p] for p in range(6, 12)])),
                key.dst_mac.eq(_be([raw[p] for p in range(6)])),
                key.protocol.eq(protocol),
                key.src_ip.eq(Mux(is_v6, v6_src, Mux(is_v4, v4_src, 0))),
                key.dst_ip.eq(Mux(is_v6, v6_dst, Mux(is_v4, v4_dst, 0))),
                raw_ports.eq(Cat(_be(ports[2:]), _be(ports[:2]))),
                key_cause.eq(cause),
            ]

        # -- Counters: from the registered key, off the key stage's critical path ---------------
        with m.If(self.o_key.valid):
            m.d.sync += self.frames_parsed.eq(self.frames_parsed + 1)
            for code in _COUNTERS:
                counter = getattr(self, counter_name(code))
                with m.If(self.o_cause == code):
                    m.d.sync += counter.eq(counter + 1)

        return m
