"""The device's wire formats: flow key, flow rule, action and frame metadata (defined once).

The gateware builds its layouts from these (`partner.hdl.wire.layout`), the host driver packs and
unpacks with them, and docs/registers.md is generated from them. Change a format here and all
three follow.

Sizes are fixed by the format, not by one device's parameters: a device with 2 ports still uses
the 3-bit `in_port` field, so rules and metadata mean the same on every build.
"""

import enum

from .wire import Field, Struct

__all__ = [
    "ACTION",
    "EVENT",
    "FLOW_KEY",
    "FLOW_RULE",
    "FRAME_META",
    "MAX_FLOWS",
    "MAX_PORTS",
    "MAX_QUEUES",
    "ActionKind",
    "EventKind",
    "KeyFlag",
]

MAX_PORTS = 8  # Ethernet ports a format can name
MAX_QUEUES = 16  # host queues
MAX_FLOWS = 256  # flow-table entries a format can name
DEMUX_KEY_BITS = 16
MAX_FRAME = 16383  # longest frame a length field can carry (jumbo 9000 + headroom)


class ActionKind(enum.IntEnum):
    """What the device does with a frame whose flow-table lookup chose this action."""

    HOST = 0  # deliver to host queue `queue`, tagged with `demux_key`
    FORWARD = 1  # send out of Ethernet port `port`: the device-to-device path, no host involved
    SLOWPATH = 2  # hand to the on-chip processor (firmware)
    DROP = 3  # count and discard


class KeyFlag(enum.IntFlag):
    """What the parser found; carried in `FLOW_KEY.flags` and matchable like any field."""

    VLAN = 1 << 0  # at least one 802.1Q/802.1ad tag
    QINQ = 1 << 1  # two tags
    ARP = 1 << 2
    IPV4 = 1 << 3
    IPV6 = 1 << 4
    FRAGMENT = 1 << 5  # IPv4 MF or fragment offset, or an IPv6 fragment header
    L4 = 1 << 6  # src_port/dst_port are valid (first fragment of UDP or TCP)
    MALFORMED = 1 << 7  # truncated or inconsistent headers: always takes the default action


FLOW_KEY = Struct(
    "flow_key",
    [
        Field("flags", 8, "parser findings, `KeyFlag` bits"),
        Field("in_port", 3, "ingress Ethernet port"),
        Field("vlan", 12, "VLAN ID of the outermost tag (0 when untagged)"),
        Field("ethertype", 16, "EtherType after any VLAN tags"),
        Field("src_mac", 48, "source MAC address, first byte on the wire most significant"),
        Field("dst_mac", 48, "destination MAC address, first byte on the wire most significant"),
        Field("protocol", 8, "IPv4 protocol or IPv6 next header (after an IPv6 fragment header; "
              "other extension headers are reported as the protocol)"),
        Field("src_ip", 128, "IPv6 source address; an IPv4 address in the low 32 bits"),
        Field("dst_ip", 128, "IPv6 destination address; an IPv4 address in the low 32 bits"),
        Field("src_port", 16, "UDP/TCP source port (valid when flag L4)"),
        Field("dst_port", 16, "UDP/TCP destination port (valid when flag L4)"),
    ],
    "The parsed header fields a flow rule matches (value and mask of this layout).",
)

ACTION = Struct(
    "action",
    [
        Field("kind", 2, "what to do", ActionKind),
        Field("queue", 4, "host queue (HOST)"),
        Field("port", 3, "output Ethernet port (FORWARD)"),
        Field("demux_key", DEMUX_KEY_BITS, "key handed on with the frame (demux propagation)"),
    ],
    "The action of a flow rule, and the default action for frames no rule matches.",
)

FRAME_META = Struct(
    "frame_meta",
    [
        Field("length", 14, "frame length in bytes, FCS stripped"),
        Field("in_port", 3, "ingress Ethernet port"),
        Field("flow", 8, "index of the flow-table entry that matched"),
        Field("hit", 1, "1 if a rule matched, 0 if the default action was taken"),
        Field("flags", 8, "parser findings, `KeyFlag` bits"),
        Field("action", ACTION.width, "the action taken (an `action` struct)"),
    ],
    "Sideband that travels with every frame from the flow table to a queue and to the host.",
)

FLOW_RULE = Struct(
    "flow_rule",
    [
        Field("valid", 1, "the entry takes part in lookups"),
        Field("priority", 8, "larger wins; among equal priorities the lower entry index wins"),
        Field("action", ACTION.width, "what to do with a matching frame (an `action` struct)"),
        Field("value", FLOW_KEY.width, "`flow_key` bits the frame must have where `mask` is 1"),
        Field("mask", FLOW_KEY.width, "`flow_key` bits that take part in the match"),
    ],
    "One flow-table entry: a ternary match over the flow key, a priority and an action.",
)


class EventKind(enum.IntEnum):
    """Device → host `ctl` events (paper §3.2: ctl runs both ways)."""

    LINK_UP = 0  # unit: port that received its first good frame
    RX_ERROR = 1  # unit: port that dropped a frame (MAC error, FIFO overflow, lookup backlog)
    QUEUE_DROP = 2  # unit: host queue whose flow queues dropped a frame (quota or buffer)
    TX_DROP = 3  # unit: port whose transmit queues dropped a frame


EVENT = Struct(
    "event",
    [
        Field("kind", 4, "what happened", EventKind),
        Field("unit", 4, "the port or queue it happened to"),
        Field("count", 24, "occurrences merged into this event since the previous one"),
    ],
    "One device event; events of the same kind and unit are merged while the host is slow.",
)
