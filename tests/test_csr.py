"""The register bank generated from a register map, driven over the CSR bus."""

import pytest
from amaranth.sim import Simulator

from partner.hdl.core import DeviceCore
from partner.hdl.csr import CSRBus, RegisterBank
from partner.regmap import (
    COUNTER_SELECT,
    COUNTER_SETTLE_CYCLES,
    COUNTER_STATUS,
    REGISTERS,
    CounterBlock,
)
from partner.wire import Access, Register, RegisterMap

REGS = RegisterMap(
    "test",
    [
        Register("ident", Access.RO, "constant"),
        Register("scratch", Access.RW, "scratch", reset=0x1234),
        Register("table", Access.RW, "array", count=3),
        Register("command", Access.WO, "strobed"),
        Register("errors", Access.RC, "sticky"),
    ],
)


class Host:
    """The initiator side of the CSR bus, as a host adapter drives it."""

    def __init__(self, ctx, bus):
        self.ctx, self.bus = ctx, bus

    async def read(self, address):
        self.ctx.set(self.bus.addr, address // 4)
        self.ctx.set(self.bus.r_stb, 1)
        await self.ctx.tick()
        self.ctx.set(self.bus.r_stb, 0)
        for _ in range(self.bus.signature.read_latency - 1):
            assert self.ctx.get(self.bus.r_data) == 0  # not yet: 0 until the data is due
            await self.ctx.tick()
        return self.ctx.get(self.bus.r_data)

    async def write(self, address, value):
        self.ctx.set(self.bus.addr, address // 4)
        self.ctx.set(self.bus.w_data, value)
        self.ctx.set(self.bus.w_stb, 1)
        await self.ctx.tick()
        self.ctx.set(self.bus.w_stb, 0)


def run(testbench, read_latency=1):
    dut = RegisterBank(REGS, read_latency=read_latency)
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def main(ctx):
        await testbench(ctx, dut, Host(ctx, dut.bus))

    sim.add_testbench(main)
    sim.run()


def test_read_write_and_reset_values():
    async def bench(ctx, dut, host):
        ctx.set(dut.ident, 0xCAFEF00D)
        assert await host.read(REGS["ident"].offset) == 0xCAFEF00D
        assert await host.read(REGS["scratch"].offset) == 0x1234
        await host.write(REGS["scratch"].offset, 0xDEADBEEF)
        assert ctx.get(dut.scratch) == 0xDEADBEEF
        assert await host.read(REGS["scratch"].offset) == 0xDEADBEEF
        for i in range(3):
            await host.write(REGS["table"].address(i), 100 + i)
        assert [ctx.get(dut.table[i]) for i in range(3)] == [100, 101, 102]
        assert await host.read(REGS["table"].address(2)) == 102

    run(bench)


def test_write_only_register_strobes_once():
    async def bench(ctx, dut, host):
        await host.write(REGS["command"].offset, 7)
        assert ctx.get(dut.command_stb) == 1 and ctx.get(dut.command) == 7
        await ctx.tick()
        assert ctx.get(dut.command_stb) == 0

    run(bench)


def test_clear_on_read_keeps_bits_set_during_the_read():
    async def bench(ctx, dut, host):
        ctx.set(dut.errors_set, 0b01)
        await ctx.tick()
        ctx.set(dut.errors_set, 0b10)  # set in the very cycle of the read
        assert await host.read(REGS["errors"].offset) == 0b01
        ctx.set(dut.errors_set, 0)
        assert await host.read(REGS["errors"].offset) == 0b10
        assert await host.read(REGS["errors"].offset) == 0

    run(bench)


def test_bad_accesses_are_ignored_and_flagged():
    async def bench(ctx, dut, host):
        flagged = []
        ctx.set(dut.bus.addr, REGS.size // 4 + 1)
        ctx.set(dut.bus.w_stb, 1)
        flagged.append(ctx.get(dut.bad_access))
        await ctx.tick()
        ctx.set(dut.bus.w_stb, 0)
        ctx.set(dut.ident, 5)
        ctx.set(dut.bus.addr, REGS["ident"].offset // 4)
        ctx.set(dut.bus.w_stb, 1)  # a write to a read-only register
        flagged.append(ctx.get(dut.bad_access))
        await ctx.tick()
        ctx.set(dut.bus.w_stb, 0)
        flagged.append(ctx.get(dut.bad_access))
        assert flagged == [1, 1, 0]
        assert await host.read(REGS["ident"].offset) == 5
        assert await host.read(REGS["scratch"].offset) == 0x1234

    run(bench)


@pytest.mark.parametrize("latency", [2, 3])
def test_read_latency_two_or_three_decodes_the_registered_request(latency):
    """With ``read_latency`` 2 or 3 (the device core's bank) the request is registered first:
    reads answer one or two cycles later, writes land a cycle later, accesses back to back keep
    their order, clear-on-read and the bad-access flag follow the registered request."""
    async def bench(ctx, dut, host):
        ctx.set(dut.ident, 0xCAFEF00D)
        assert await host.read(REGS["ident"].offset) == 0xCAFEF00D
        await host.write(REGS["scratch"].offset, 0xDEADBEEF)
        assert ctx.get(dut.scratch) == 0x1234  # still in the request register
        assert await host.read(REGS["scratch"].offset) == 0xDEADBEEF  # the very next access
        await host.write(REGS["command"].offset, 7)
        assert ctx.get(dut.command_stb) == 0
        await ctx.tick()
        assert ctx.get(dut.command_stb) == 1 and ctx.get(dut.command) == 7
        ctx.set(dut.errors_set, 0b01)
        await ctx.tick()
        ctx.set(dut.errors_set, 0)
        ctx.set(dut.bus.addr, REGS["errors"].offset // 4)
        ctx.set(dut.bus.r_stb, 1)
        await ctx.tick()
        ctx.set(dut.bus.r_stb, 0)
        ctx.set(dut.errors_set, 0b10)  # set while the read is decoded: kept for the next one
        await ctx.tick()
        ctx.set(dut.errors_set, 0)
        for _ in range(latency - 2):
            assert ctx.get(dut.bus.r_data) == 0
            await ctx.tick()
        assert ctx.get(dut.bus.r_data) == 0b01
        assert await host.read(REGS["errors"].offset) == 0b10
        assert await host.read(REGS["errors"].offset) == 0
        ctx.set(dut.bus.addr, REGS["ident"].offset // 4)
        ctx.set(dut.bus.w_stb, 1)  # a write to a read-only register
        flagged = [ctx.get(dut.bad_access)]
        await ctx.tick()
        ctx.set(dut.bus.w_stb, 0)
        flagged.append(ctx.get(dut.bad_access))
        await ctx.tick()
        flagged.append(ctx.get(dut.bad_access))
        assert flagged == [0, 1, 0]
        assert await host.read(REGS["ident"].offset) == 0xCAFEF00D

    run(bench, read_latency=latency)


def test_read_latency_is_one_two_or_three():
    with pytest.raises(ValueError, match="read_latency must be 1, 2 or 3"):
        CSRBus(8, read_latency=4)


def test_core_counter_snapshot_is_done_after_counter_settle_cycles():
    """`COUNTER_SETTLE_CYCLES` (documented in docs/registers.md) is what the device core takes,
    idle, from the `counter_select` write to a read that finds `counter_status.done`: measured
    per block kind with one read at each distance, through the core's three-cycle CSR bus."""
    dut = DeviceCore(ports=2, width_bytes=1, rules=16, queues=2)
    bus, first_done = dut.csr, {}

    async def access(ctx, name, value=None):
        ctx.set(bus.addr, REGISTERS[name].offset // 4)
        ctx.set(bus.w_data if value is not None else bus.r_stb, 1 if value is None else value)
        ctx.set(bus.w_stb, value is not None)
        await ctx.tick()
        ctx.set(bus.w_stb, 0)
        ctx.set(bus.r_stb, 0)
        for _ in range(bus.signature.read_latency - 1):
            await ctx.tick()
        return ctx.get(bus.r_data)

    async def bench(ctx):
        for block in CounterBlock:
            for distance in range(1, 16):
                await access(ctx, "counter_select", COUNTER_SELECT.pack(block=block, unit=0,
                                                                       index=distance % 2))
                for _ in range(distance - bus.signature.read_latency):
                    await ctx.tick()
                if COUNTER_STATUS.unpack(await access(ctx, "counter_status"))["done"]:
                    first_done[block] = distance
                    break
                for _ in range(20):  # let the snapshot finish before the next write
                    await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(8e-9)
    sim.add_testbench(bench)
    sim.run()
    assert set(first_done) == set(CounterBlock)
    assert max(first_done.values()) == COUNTER_SETTLE_CYCLES


def test_read_latency_three_reads_every_word_of_a_large_map():
    """Latency 3 chooses a word in its group of 16, then the group: with 40 words (three
    groups, the last one partly empty) every word reads its own value, unmapped ones 0."""
    regs = RegisterMap("wide", [Register(f"word{i}", Access.RO, "value") for i in range(40)])
    dut = RegisterBank(regs, read_latency=3)
    values = {i: (0x9E3779B9 * (i + 1)) & 0xFFFFFFFF for i in range(40)}
    seen = {}

    async def bench(ctx):
        host = Host(ctx, dut.bus)
        for i, value in values.items():
            ctx.set(getattr(dut, f"word{i}"), value)
        for i in (*range(40), 40, 47, 63):
            seen[i] = await host.read(4 * i)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == {**values, 40: 0, 47: 0, 63: 0}
