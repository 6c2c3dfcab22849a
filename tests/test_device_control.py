"""DeviceControl's counter snapshots: the driver polls `counter_status.done` before it reads
`counter_value` (a queue block's counters are read between two updates of their memories, so
a snapshot can take longer than `COUNTER_SETTLE_CYCLES`), and gives up with an error."""

import pytest

from partner.device_control import COUNTER_POLLS, DeviceControl, DeviceError
from partner.regmap import COUNTER_STATUS, REGISTERS, CounterBlock
from partner.sim.models.core_registers import CoreModel, locate


class SlowSnapshots:
    """A register bus over the core's register model whose snapshots take `polls` reads of
    `counter_status` to complete."""

    def __init__(self, polls):
        self.model = CoreModel(ports=2, queues=2, rules=16, tx_flows=8)
        self.polls, self.left, self.status_reads = polls, 0, 0

    def read32(self, offset):
        reg, _ = locate(REGISTERS, offset)
        if reg is not None and reg.name == "counter_status":
            self.status_reads += 1
            self.left -= 1
            return COUNTER_STATUS.pack(done=int(self.left <= 0))
        return self.model.read(offset)

    def write32(self, offset, value):
        reg, _ = locate(REGISTERS, offset)
        if reg is not None and reg.name == "counter_select":
            self.left = self.polls
        self.model.write(offset, value)


@pytest.mark.parametrize("polls", [1, 5])
def test_counters_wait_for_the_snapshot(polls):
    bus = SlowSnapshots(polls)
    bus.model.count(CounterBlock.RX_QUEUE, 1, 3, "enq_frames", 7)
    control = DeviceControl(bus)
    assert control.queue_counters(tx=False, unit=1, flow=3)["enq_frames"] == 7
    assert bus.status_reads == polls


def test_a_snapshot_that_never_completes_is_an_error():
    bus = SlowSnapshots(COUNTER_POLLS + 1)
    control = DeviceControl(bus)
    with pytest.raises(DeviceError, match="not done after"):
        control.port_counters(0)
