"""The device core's register map, defined once (gateware decoder, host driver, docs/registers.md).

The map is the same for every build: what grows with the build's parameters (ports, rules,
queues, flows) is reached indirectly, and `config` says how much of it there is.

Counters are read indirectly: the host writes `counter_select` (a block, a unit within it and an
index), reads `counter_status` until `done` (normally already at the first read:
`COUNTER_SETTLE_CYCLES` after the write), then up to 16 words of `counter_value`, a snapshot
taken at one instant — the words of one selection are consistent with each other while traffic
runs. A queue's counters are read through their memories' update port between two updates
(a second read port would double every counter memory), so under back-to-back frames a
snapshot can take longer. Flow rules are written the same way: stage the words of a
`flow_rule` in `rule_data`, then write the entry index to `rule_write`; the gateware replaces
the whole entry in one cycle.
"""

import enum

from .formats import ACTION, FLOW_RULE, ActionKind
from .wire import Access, Field, Register, RegisterMap, Struct

__all__ = [
    "CONFIG",
    "COUNTER_NAMES",
    "COUNTER_SELECT",
    "COUNTER_SETTLE_CYCLES",
    "COUNTER_STATUS",
    "IDENT",
    "QUEUE_CONFIG",
    "QUEUE_CONFIG_WRITE",
    "REGISTERS",
    "RULE_WRITE",
    "STATUS",
    "CounterBlock",
    ]

IDENT = 0x50544E52  # "PTNR"
FORMAT_VERSION = 2  # 2: counter snapshots complete when `counter_status.done` says so
# From the `counter_select` write strobe to the first read that finds `done`, idle (measured by
# tests/test_csr.py).
COUNTER_SETTLE_CYCLES = 7
COUNTER_WORDS = 16
RULE_WORDS = (FLOW_RULE.width + 31) // 32
QUOTA_UNIT = 64  # bytes per unit of `queue_config.quota`


class CounterBlock(enum.IntEnum):
    """Which counters `counter_select` picks; `unit` and `index` mean what the table says."""

    PORT = 0  # unit: Ethernet port; index: 0
    RULE = 1  # unit: 0; index: flow-table entry
    RX_QUEUE = 2  # unit: host queue; index: flow
    TX_QUEUE = 3  # unit: Ethernet port; index: TX flow


#: The meaning of each `counter_value` word, per block.
COUNTER_NAMES = {
    CounterBlock.PORT: (
        "rx_frames", "rx_bytes", "rx_fcs_errors", "rx_runts", "rx_giants", "rx_phy_errors",
        "rx_preamble_errors", "rx_malformed", "rx_fifo_overflows", "rx_lookup_backlog_drops",
        "rx_dropped_by_rule", "rx_dropped_bad_action", "tx_frames", "tx_bytes", "tx_underruns",
        "tx_host_dropped",
    ),
    CounterBlock.RULE: ("hits",),
    CounterBlock.RX_QUEUE: (
        "enq_frames", "enq_bytes", "drop_quota", "drop_nobuf", "deq_frames",
    ),
    CounterBlock.TX_QUEUE: (
        "enq_frames", "enq_bytes", "drop_quota", "drop_nobuf", "deq_frames",
    ),
}

CONFIG = Struct(
    "config",
    [
        Field("ports", 4, "Ethernet ports"),
        Field("queues", 5, "host queues (the slow-path queue is one more, after them)"),
        Field("rules", 9, "flow-table entries"),
        Field("tx_flows", 9, "TX flows per port (then one per ingress port for forwarding)"),
        Field("width_bytes", 4, "internal packet stream width in bytes"),
    ],
    "What this build has.",
)

STATUS = Struct(
    "status",
    [
        Field("bad_access", 1, "a write to a read-only register or an unmapped address"),
        Field("bad_rule_index", 1, "`rule_write` named an entry the table does not have"),
        Field("bad_rule", 1, "a staged rule named a queue or port the device does not have"),
        Field("bad_queue_config", 1, "`queue_config_write` named a unit or flow out of range"),
        Field("bad_counter_select", 1, "`counter_select` named something out of range"),
    ],
    "Sticky error flags; reading clears them. Out-of-range writes are ignored, never obeyed.",
)

RULE_WRITE = Struct("rule_write", [Field("index", 9, "flow-table entry to replace")])

QUEUE_CONFIG = Struct(
    "queue_config",
    [
        Field("quota", 16, f"bytes the flow may hold queued, in units of {QUOTA_UNIT} (0: closed)"),
        Field("priority", 3, "strict-priority class, higher first"),
        Field("weight", 8, "deficit round robin weight (1..255) within the class"),
    ],
    "Per-flow queue settings from the flow's attributes (queue_limit, priority, weight).",
)

QUEUE_CONFIG_WRITE = Struct(
    "queue_config_write",
    [
        Field("flow", 9, "flow index (a rule index on RX, a TX flow on TX)"),
        Field("unit", 4, "host queue (RX) or Ethernet port (TX)"),
        Field("tx", 1, "0: an RX host queue, 1: a TX port"),
    ],
    "Writing it applies `queue_config` to one flow of one queue block.",
)

COUNTER_SELECT = Struct(
    "counter_select",
    [
        Field("block", 2, "which counters", CounterBlock),
        Field("unit", 4, "port or queue, per block"),
        Field("index", 9, "entry or flow, per block"),
    ],
)

COUNTER_STATUS = Struct(
    "counter_status",
    [Field("done", 1, "`counter_value` holds the snapshot of the last `counter_select` write")],
)


REGISTERS = RegisterMap(
    "partner_core",
    [
        Register("ident", Access.RO, f'constant {IDENT:#010x} ("PTNR")'),
        Register("version", Access.RO, f"register map version ({FORMAT_VERSION})"),
        Register("config", Access.RO, "build parameters", CONFIG),
        Register("status", Access.RC, "sticky error flags", STATUS),
        Register("mtu", Access.RW, "largest payload accepted (bytes; jumbo up to 9000)",
                 reset=1500),
        Register("default_action", Access.RW, "action for frames no rule matches", ACTION,
                 reset=ACTION.pack(kind=ActionKind.HOST, queue=0, demux_key=0)),
        Register("rule_data", Access.WO, "a staged `flow_rule`, word 0 = bits 31:0 (reads 0)",
                 count=RULE_WORDS),
        Register("rule_write", Access.WO, "install the staged rule at an entry", RULE_WRITE),
        Register("queue_config", Access.RW, "staged per-flow queue settings", QUEUE_CONFIG),
        Register("queue_config_write", Access.WO, "apply `queue_config`",
                 QUEUE_CONFIG_WRITE),
        Register("counter_select", Access.RW, "choose counters to snapshot", COUNTER_SELECT),
        Register("counter_value", Access.RO, "snapshot of the selected counters",
                 count=COUNTER_WORDS),
        Register("lookups", Access.RO, "flow-table lookups"),
        Register("hits", Access.RO, "lookups that matched a rule"),
        Register("misses", Access.RO, "lookups that took the default action"),
        Register("link", Access.RO, "bit p: port p has seen a good frame (RX activity)"),
        Register("counter_status", Access.RO, "whether the counter snapshot is complete",
                 COUNTER_STATUS),
    ],
    "Counters wrap at 2**32; take differences between reads.",
)
