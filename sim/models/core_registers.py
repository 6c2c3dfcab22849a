# The device core's register space as a Python model: what the host driver's DeviceControl
# programs (partner.regmap.REGISTERS), with the flow table and parser reference models deciding
# what a frame does. Used by the memory-only PCIe device model (dma_device.py).
"""Register-level model of the device core: rules, default action, quotas, counters, status."""

from __future__ import annotations

from partner.formats import ACTION, FLOW_KEY, FLOW_RULE, ActionKind
from partner.regmap import (
    CONFIG,
    COUNTER_NAMES,
    COUNTER_SELECT,
    COUNTER_STATUS,
    FORMAT_VERSION,
    IDENT,
    QUEUE_CONFIG,
    QUEUE_CONFIG_WRITE,
    QUOTA_UNIT,
    REGISTERS,
    RULE_WORDS,
    STATUS,
    CounterBlock,
)
from partner.wire import Access

from .flow_table import lookup
from .parser import parse

__all__ = ["CoreModel", "locate"]


class CoreModel:
    """The device core's registers and the state they program (flow rules, quotas, counters)."""

    def __init__(self, ports: int, queues: int, rules: int, tx_flows: int):
        self.ports, self.queues, self.rules, self.tx_flows = ports, queues, rules, tx_flows
        self.values = {r.name: [r.reset] * r.count for r in REGISTERS}
        self.values["ident"] = [IDENT]
        self.values["version"] = [FORMAT_VERSION]
        self.values["counter_status"] = [COUNTER_STATUS.pack(done=1)]  # snapshots are instant
        self.values["config"] = [CONFIG.pack(ports=ports, queues=queues, rules=rules,
                                             tx_flows=tx_flows, width_bytes=1)]
        self.table = [0] * rules
        self.quota: dict[tuple[bool, int, int], int] = {}  # (tx, unit, flow) -> bytes
        self.counters: dict[tuple[int, int, int], list[int]] = {}
        self.status = 0

    def count(self, block: CounterBlock, unit: int, index: int, name: str, n: int = 1) -> None:
        words = self.counters.setdefault((block, unit, index), [0] * 16)
        words[COUNTER_NAMES[block].index(name)] += n

    def read(self, offset: int) -> int:
        reg, index = locate(REGISTERS, offset)
        if reg is None:
            return 0
        if reg.name == "status":
            value, self.status = self.status, 0
            return value
        return self.values[reg.name][index]

    def write(self, offset: int, value: int) -> None:
        reg, index = locate(REGISTERS, offset)
        if reg is None or reg.access in (Access.RO, Access.RC):
            self.status |= STATUS.pack(bad_access=1)
            return
        self.values[reg.name][index] = value
        if reg.name == "rule_write":
            self._rule_write(value)
        elif reg.name == "queue_config_write":
            self._queue_config_write(value)
        elif reg.name == "counter_select":
            sel = COUNTER_SELECT.unpack(value)
            key = (int(sel["block"]), sel["unit"], sel["index"])
            self.values["counter_value"] = list(self.counters.get(key, [0] * 16))

    def _rule_write(self, value: int) -> None:
        index = value & 0x1FF
        if index >= self.rules:
            self.status |= STATUS.pack(bad_rule_index=1)
            return
        word = sum(w << (32 * i) for i, w in enumerate(self.values["rule_data"][:RULE_WORDS]))
        rule = FLOW_RULE.unpack(word)
        action = ACTION.unpack(rule["action"])
        if rule["valid"] and ((action["kind"] == ActionKind.HOST and action["queue"] >= self.queues)
                              or (action["kind"] == ActionKind.FORWARD
                                  and action["port"] >= self.ports)):
            self.status |= STATUS.pack(bad_rule=1)
            return
        self.table[index] = word

    def _queue_config_write(self, value: int) -> None:
        sel = QUEUE_CONFIG_WRITE.unpack(value)
        tx, unit, flow = bool(sel["tx"]), sel["unit"], sel["flow"]
        units = self.ports if tx else self.queues + 1
        flows = self.tx_flows + self.ports if tx else self.rules + 1
        if unit >= units or flow >= flows:
            self.status |= STATUS.pack(bad_queue_config=1)
            return
        cfg = QUEUE_CONFIG.unpack(self.values["queue_config"][0])
        self.quota[(tx, unit, flow)] = cfg["quota"] * QUOTA_UNIT

    def classify(self, frame: bytes, port: int, rule: int | None) -> tuple[int, int, int, int]:
        """(hit, rule index, packed action, flags) of a frame, as the flow table decides it."""
        fields = parse(frame, port)
        flags = fields["flags"]
        if rule is None:
            key = {name: fields[name] for name in FLOW_KEY.fields}
            hit, index, action = lookup(self.table, key, self.values["default_action"][0])
            return hit, index, action, flags
        if not 0 <= rule < self.rules or not FLOW_RULE.unpack(self.table[rule])["valid"]:
            raise ValueError(f"rule {rule} is not a valid entry of the model's flow table")
        return 1, rule, FLOW_RULE.unpack(self.table[rule])["action"], flags


_LOCATIONS: dict[int, dict[int, tuple]] = {}


def locate(regmap, offset: int):
    """(register, index) at a byte offset of a register map, or (None, 0)."""
    table = _LOCATIONS.get(id(regmap))
    if table is None:
        table = _LOCATIONS[id(regmap)] = {
            reg.offset + 4 * i: (reg, i) for reg in regmap for i in range(reg.count)}
    return table.get(offset, (None, 0))
