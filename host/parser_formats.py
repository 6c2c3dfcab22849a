"""The header parser's malformed-frame causes (defined once for gateware, model, counters and docs).

The parser (`partner.hdl.parser`) tags every frame whose headers are truncated or inconsistent
with `KeyFlag.MALFORMED` and exactly one cause from this enum: the first problem found walking
the headers from the outside in (so a frame cut in its IPv4 header is `BAD_L3`, never also
`L3_LENGTH`). The gateware presents the cause next to each key and keeps one wrapping counter
per cause; the reference model (`partner.sim.models.parser`) returns it as ``malformed_cause``.

Standard library only: the host package must import on a bare install.
"""

import enum

__all__ = ["MalformedCause"]


class MalformedCause(enum.IntEnum):
    """Why a frame is MALFORMED (`NONE` for a well-formed frame); 3 bits on the wire."""

    NONE = 0
    TRUNC_L2 = 1  # shorter than the 14-byte Ethernet header
    TRUNC_VLAN = 2  # ends inside an 802.1Q/802.1ad tag or the EtherType after it
    BAD_L3 = 3  # IP header: wrong version, IPv4 IHL < 5, or header (incl. IPv6 fragment) cut
    L3_LENGTH = 4  # IP length field claims more bytes than the frame holds, or less than a header
    TRUNC_L4 = 5  # UDP (8 bytes) or TCP (20 bytes) header does not fit in the IP payload
