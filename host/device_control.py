"""Control of the device core through its registers, over any register bus.

This is the part of the host driver that programs the device: flow rules, the default action,
per-flow queue settings, counters and error flags. It is written against `RegisterBus` — two
methods, `read32` and `write32` at byte offsets — so the same code drives the simulated device (a
cocotb testbench's bus), a PCIe BAR (VFIO, cocotbext-pcie) or the byte-stream link. It is
synchronous; a cocotb testbench runs it in a thread with `cocotb.task.bridge` and implements the
bus with `cocotb.task.resume`.
"""

from __future__ import annotations

from typing import Protocol

from .errors import PartnerError
from .formats import ACTION, FLOW_RULE
from .regmap import (
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
    RULE_WRITE,
    STATUS,
    CounterBlock,
)

__all__ = ["DeviceControl", "DeviceError", "RegisterBus"]

COUNTER_POLLS = 1000  # reads of `counter_status` before a counter snapshot is given up


class DeviceError(PartnerError):
    """The device is not there, is not a partner device, or refused a setting."""


class RegisterBus(Protocol):
    def read32(self, offset: int) -> int: ...

    def write32(self, offset: int, value: int) -> None: ...


class DeviceControl:
    """Registers of one device core, by name, with the operations the partner driver needs."""

    def __init__(self, bus: RegisterBus):
        self.bus = bus
        ident = self.read("ident")
        if ident != IDENT:
            raise DeviceError(
                f"no partner device on this bus: ident register reads {ident:#010x}, "
                f"expected {IDENT:#010x}"
            )
        version = self.read("version")
        if version != FORMAT_VERSION:
            raise DeviceError(
                f"device register map version {version}, this driver speaks {FORMAT_VERSION}; "
                "use a driver that matches the bitstream"
            )
        self.config = CONFIG.unpack(self.read("config"))
        self.ports = self.config["ports"]
        self.queues = self.config["queues"]
        self.rules = self.config["rules"]
        self.tx_flows = self.config["tx_flows"]

    # --- raw access ------------------------------------------------------------------------

    def read(self, name: str, index: int = 0) -> int:
        return self.bus.read32(REGISTERS[name].address(index))

    def write(self, name: str, value: int, index: int = 0) -> None:
        self.bus.write32(REGISTERS[name].address(index), value)

    # --- rules -----------------------------------------------------------------------------

    def write_rule(self, index: int, rule_word: int) -> None:
        """Install a packed `flow_rule` at entry `index`; the device swaps it in atomically."""
        if not 0 <= index < self.rules:
            raise DeviceError(f"rule index {index} out of range: the device has {self.rules}")
        if rule_word >> FLOW_RULE.width:
            raise DeviceError(f"a flow rule is {FLOW_RULE.width} bits; this one is wider")
        for word in range(RULE_WORDS):
            self.write("rule_data", (rule_word >> (32 * word)) & 0xFFFFFFFF, word)
        self.write("rule_write", RULE_WRITE.pack(index=index))
        self._check("installing rule", index)

    def load_table(self, table) -> None:
        """Write a whole `partner.rules.RuleTable`: every entry (free ones invalid) and its
        default action."""
        if table.entries > self.rules:
            raise DeviceError(
                f"a table of {table.entries} entries does not fit the device's {self.rules}"
            )
        for index, word in enumerate(table.image()):
            self.write_rule(index, word)
        self.set_default_action(**table.default.fields())

    def clear_rule(self, index: int) -> None:
        self.write_rule(index, FLOW_RULE.pack(valid=0))

    def set_default_action(self, **action) -> None:
        self.write("default_action", ACTION.pack(action))

    def set_mtu(self, mtu: int) -> None:
        if not 46 <= mtu <= 9000:
            raise DeviceError(f"MTU {mtu} out of range 46..9000")
        self.write("mtu", mtu)

    # --- queues ----------------------------------------------------------------------------

    def configure_queue(self, *, tx: bool, unit: int, flow: int, quota_bytes: int,
                        priority: int = 0, weight: int = 1) -> None:
        """Quota, strict-priority class and DRR weight of one flow of one queue block."""
        units = self.ports if tx else self.queues + 1
        flows = self.tx_flows + self.ports if tx else self.rules + 1
        if not 0 <= unit < units:
            raise DeviceError(f"{'port' if tx else 'queue'} {unit} out of range (< {units})")
        if not 0 <= flow < flows:
            raise DeviceError(f"flow {flow} out of range (< {flows})")
        quota = -(-quota_bytes // QUOTA_UNIT)
        try:
            word = QUEUE_CONFIG.pack(quota=quota, priority=priority, weight=weight)
        except ValueError as error:
            raise DeviceError(f"queue settings of flow {flow}: {error}") from None
        self.write("queue_config", word)
        self.write("queue_config_write", QUEUE_CONFIG_WRITE.pack(flow=flow, unit=unit, tx=tx))
        self._check("configuring queue of flow", flow)

    def open_all_queues(self, quota_bytes: int, *, priority: int = 0, weight: int = 1) -> None:
        """Give every RX and TX flow the same settings (flows start closed after reset)."""
        for queue in range(self.queues + 1):
            for flow in range(self.rules + 1):
                self.configure_queue(tx=False, unit=queue, flow=flow, quota_bytes=quota_bytes,
                                     priority=priority, weight=weight)
        for port in range(self.ports):
            for flow in range(self.tx_flows + self.ports):
                self.configure_queue(tx=True, unit=port, flow=flow, quota_bytes=quota_bytes,
                                     priority=priority, weight=weight)

    # --- counters and status -----------------------------------------------------------------

    def counters(self, block: CounterBlock, unit: int = 0, index: int = 0) -> dict[str, int]:
        """One consistent snapshot of a block's counters, by name."""
        self.write("counter_select", COUNTER_SELECT.pack(block=block, unit=unit, index=index))
        # Normally done at the first read; a queue's counters wait for a cycle between two
        # updates of their memories, which back-to-back frames can put off.
        for _ in range(COUNTER_POLLS):
            if COUNTER_STATUS.unpack(self.read("counter_status"))["done"]:
                break
        else:
            raise DeviceError(f"counter snapshot of block {CounterBlock(block).name} unit "
                              f"{unit} index {index} not done after {COUNTER_POLLS} reads")
        names = COUNTER_NAMES[CounterBlock(block)]
        return {name: self.read("counter_value", i) for i, name in enumerate(names)}

    def port_counters(self, port: int) -> dict[str, int]:
        return self.counters(CounterBlock.PORT, unit=port)

    def rule_hits(self, index: int) -> int:
        return self.counters(CounterBlock.RULE, index=index)["hits"]

    def queue_counters(self, *, tx: bool, unit: int, flow: int) -> dict[str, int]:
        return self.counters(CounterBlock.TX_QUEUE if tx else CounterBlock.RX_QUEUE, unit, flow)

    def status(self) -> dict[str, int]:
        """The sticky error flags (reading clears them)."""
        return STATUS.unpack(self.read("status"))

    def _check(self, what: str, index: int) -> None:
        flags = {name: value for name, value in self.status().items() if value}
        if flags:
            raise DeviceError(f"the device refused {what} {index}: {', '.join(flags)}")
