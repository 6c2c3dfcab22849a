# Reference model of the header parser (partner.hdl.parser.Parser), written from the rules in
# docs/parser.md: Ethernet II (IEEE 802.3-2018 clause 3), 802.1Q/802.1ad tags (IEEE 802.1Q-2018
# clause 9), ARP (RFC 826), IPv4 (RFC 791), IPv6 and its fragment header (RFC 8200), UDP
# (RFC 768), TCP (RFC 9293). Pure Python (struct); it walks headers, not the gateware's beats.
"""Header parser reference model: ``parse(frame, in_port) -> FLOW_KEY field values``.

The rules, in the order they are applied:

1. Every field is read from the frame *as if it were followed by zero bytes*: a field that runs
   past the end of a short frame reads the bytes that are there, then zeros.
2. Ethernet: destination MAC (bytes 0-5), source MAC (6-11), type at 12. Type 0x8100 or 0x88a8
   is a tag (flag VLAN; ``vlan`` = its VID); if the type after it is 0x8100, a second tag
   (flag QINQ). ``ethertype`` is the type after the tags; the L3 header starts after it.
3. The flags ARP, IPV4, IPV6 say what the EtherType is (0x0806, 0x0800, 0x86DD). ``protocol``,
   ``src_ip`` and ``dst_ip`` are read for IPv4/IPv6 frames (from the header layout the EtherType
   names, whatever its version field says) and are 0 otherwise. FRAGMENT: IPv4 MF or offset != 0,
   or an IPv6 next header 44 (whose next header is then the protocol).
4. Checks, outermost first; the first that fails is the frame's one `MalformedCause`.
5. L4 and the ports: only for a frame that is not MALFORMED, is IPv4 or IPv6, carries UDP or TCP
   and is a first fragment (offset 0); else ports are 0.
"""

import struct

from partner.formats import KeyFlag
from partner.parser_formats import MalformedCause

__all__ = ["ETH_ARP", "ETH_IPV4", "ETH_IPV6", "TAG_TYPES", "parse"]

TAG_TYPES = (0x8100, 0x88A8)  # an outer tag; only 0x8100 counts as the inner one
ETH_IPV4, ETH_ARP, ETH_IPV6 = 0x0800, 0x0806, 0x86DD
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_FRAGMENT = 1, 6, 17, 44
L4_HEADER = {IPPROTO_UDP: 8, IPPROTO_TCP: 20}
_PAD = bytes(128)  # more than the deepest byte any rule reads (22 + 60 + 4)


def _u16(buf, offset):
    return struct.unpack_from("!H", buf, offset)[0]


def _address(buf, offset, size):
    return int.from_bytes(buf[offset:offset + size], "big")


def parse(frame: bytes, in_port: int = 0) -> dict:
    """The `FLOW_KEY` field values for ``frame`` (ints) plus ``malformed_cause``."""
    n = len(frame)
    b = bytes(frame) + _PAD
    flags = KeyFlag(0)
    causes = []  # every failed check, in header order; the first one is the cause

    # Ethernet and tags.
    if n < 14:
        causes.append(MalformedCause.TRUNC_L2)
    l3, vlan = 14, 0
    if _u16(b, 12) in TAG_TYPES:
        flags |= KeyFlag.VLAN
        vlan = _u16(b, 14) & 0xFFF
        l3 = 18
        if _u16(b, 16) == 0x8100:
            flags |= KeyFlag.QINQ
            l3 = 22
    if n < l3:
        causes.append(MalformedCause.TRUNC_VLAN)
    ethertype = _u16(b, l3 - 2)

    protocol = src_ip = dst_ip = 0
    l4_ok = False  # UDP/TCP first fragment: the ports are there to read
    l4_room = l4 = 0  # IP payload bytes after the IP headers; where the L4 header starts
    if ethertype == ETH_ARP:
        flags |= KeyFlag.ARP
    elif ethertype == ETH_IPV4:
        flags |= KeyFlag.IPV4
        version, ihl = b[l3] >> 4, b[l3] & 15
        total = _u16(b, l3 + 2)
        fragment = _u16(b, l3 + 6)
        more, offset = fragment & 0x2000, fragment & 0x1FFF
        protocol = b[l3 + 9]
        src_ip, dst_ip = _address(b, l3 + 12, 4), _address(b, l3 + 16, 4)
        if more or offset:
            flags |= KeyFlag.FRAGMENT
        if version != 4 or ihl < 5 or n < l3 + 4 * ihl:
            causes.append(MalformedCause.BAD_L3)
        if total > n - l3 or total < 4 * ihl:
            causes.append(MalformedCause.L3_LENGTH)
        l4_ok = protocol in L4_HEADER and offset == 0
        l4_room, l4 = total - 4 * ihl, l3 + 4 * ihl
    elif ethertype == ETH_IPV6:
        flags |= KeyFlag.IPV6
        version = b[l3] >> 4
        payload = _u16(b, l3 + 4)
        protocol = b[l3 + 6]
        src_ip, dst_ip = _address(b, l3 + 8, 16), _address(b, l3 + 24, 16)
        header, offset = 40, 0
        if protocol == IPPROTO_FRAGMENT:
            flags |= KeyFlag.FRAGMENT
            protocol = b[l3 + 40]
            offset = _u16(b, l3 + 42) >> 3
            header = 48
        if version != 6 or n < l3 + header:
            causes.append(MalformedCause.BAD_L3)
        if payload > n - l3 - 40 or payload < header - 40:
            causes.append(MalformedCause.L3_LENGTH)
        l4_ok = protocol in L4_HEADER and offset == 0
        l4_room, l4 = payload - (header - 40), l3 + header

    if l4_ok and l4_room < L4_HEADER[protocol]:
        causes.append(MalformedCause.TRUNC_L4)
    cause = causes[0] if causes else MalformedCause.NONE

    src_port = dst_port = 0
    if cause:
        flags |= KeyFlag.MALFORMED
    elif l4_ok:
        flags |= KeyFlag.L4
        src_port, dst_port = _u16(b, l4), _u16(b, l4 + 2)

    return {
        "flags": int(flags),
        "in_port": in_port,
        "vlan": vlan,
        "ethertype": ethertype,
        "src_mac": _address(b, 6, 6),
        "dst_mac": _address(b, 0, 6),
        "protocol": protocol,
        "src_ip": src_ip,
        "dst_ip": dst_ip,
        "src_port": src_port,
        "dst_port": dst_port,
        "malformed_cause": cause,
    }
