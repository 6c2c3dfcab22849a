"""DmaWriter against the host model (amaranth.sim): data lands in memory, TLPs keep the rules."""

import random

import pytest
from amaranth.sim import Simulator

from partner.hdl.pcie.dma_status import DmaStatus
from partner.hdl.pcie.dma_write import DmaWriter, done_layout, write_command_layout
from partner.hdl.pcie.tlp import tlp_layout
from partner.hdl.stream import packet_layout
from partner.sim.beats import packet_beats
from partner.sim.models.pcie_host import (
    HostMemory,
    PcieHost,
    ProtocolError,
    StreamSink,
    StreamSource,
    pack,
    unpack,
)

CODES = {128: 0, 256: 1, 512: 2, 1024: 3, 2048: 4, 4096: 5}


def packed_beats(width_bytes, payload):
    layout = packet_layout(width_bytes)
    return [pack(layout, **beat) for beat in packet_beats(width_bytes, payload)]


def random_size(rng):
    kind = rng.random()
    if kind < 0.35:
        return rng.randint(1, 64)
    if kind < 0.85:
        return rng.randint(65, 1600)
    return rng.randint(1601, 9216)


def random_commands(rng, count, size=random_size):
    """Non-overlapping (address, length) pairs, some straddling 4 KiB, some above 4 GiB."""
    commands, base = [], rng.choice([0x1000_0000, 0x1_2345_0000])
    for _ in range(count):
        length = size(rng)
        base += rng.randint(0, 300)
        if rng.random() < 0.3:  # end just past a 4 KiB boundary
            base = ((base >> 12) + 1 << 12) - rng.randint(1, min(length, 64))
        commands.append((base, length))
        base += length + 8
    return commands


def run_writer(width, mps, commands, *, seed=1, rates=(0.7, 0.7, 0.7, 0.7), bus_master=True,
               payloads=None, max_cycles=None):
    """Write each (addr, length) with random bytes; returns (host, payloads, done list, cycles)."""
    rng = random.Random(seed)
    dut = DmaWriter(width)
    wb = width // 8
    host = PcieHost(tlp_layout(width), width, HostMemory(seed), rng=random.Random(seed + 1),
                    mps=mps, req_ready=rates[0])
    host.bus_master = bus_master
    cmd_src = StreamSource(dut.cmd, random.Random(seed + 2), rates[1])
    data_src = StreamSource(dut.data, random.Random(seed + 3), rates[2])
    done_sink = StreamSink(dut.done, random.Random(seed + 4), rates[3])
    if payloads is None:
        payloads = [rng.randbytes(length) for _, length in commands]
    for n, ((addr, length), payload) in enumerate(zip(commands, payloads, strict=True)):
        cmd_src.put(pack(write_command_layout(), addr=addr, length=length, id=n & 0xFF))
        if payload:
            data_src.put(*packed_beats(wb, payload))
    limit = max_cycles or 2000 + 6 * sum(length for _, length in commands) // wb
    cycles = []

    async def main(ctx):
        ctx.set(dut.config.id, host.requester_id)
        ctx.set(dut.config.max_payload, CODES[mps])
        ctx.set(dut.config.bus_master, bus_master)
        checked = 0
        for cycle in range(limit):
            # A done means the whole write has left the writer: by the time the done is seen,
            # the host has every byte of that command.
            while checked < len(done_sink.items):
                addr, length = commands[checked]
                if bus_master and length and unpack(done_layout(), done_sink.items[checked])[
                        "status"] == DmaStatus.OK:
                    assert host.memory.read(addr, length) == payloads[checked], (
                        f"command {checked} done before all its data reached the host")
                checked += 1
            if len(done_sink.items) == len(commands):
                cycles.append(cycle)
                return
            await ctx.tick()
        raise AssertionError(f"only {len(done_sink.items)} of {len(commands)} commands done "
                             f"after {limit} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(main)
    for tb in (cmd_src.run, data_src.run, done_sink.run):
        sim.add_testbench(tb, background=True)
    sim.add_testbench(host.testbenches(req=dut.req)[0], background=True)
    sim.run()
    dones = [unpack(done_layout(), raw) for raw in done_sink.items]
    return host, payloads, dones, cycles[0]


@pytest.mark.parametrize("width,mps", [(64, 128), (64, 512), (128, 256), (256, 128),
                                       (256, 256), (256, 512)])
def test_random_writes_land_in_memory(width, mps):
    rng = random.Random(width * 7 + mps)
    commands = random_commands(rng, 14)
    reference = HostMemory(width * 7 + mps)
    host, payloads, dones, _ = run_writer(width, mps, commands, seed=width * 7 + mps)
    assert [d["id"] for d in dones] == list(range(len(commands)))
    assert all(d["status"] == DmaStatus.OK for d in dones)
    for (addr, length), payload in zip(commands, payloads, strict=True):
        assert host.memory.read(addr, length) == payload, f"{length} bytes at {addr:#x}"
        # The bytes around a command are untouched (byte enables honoured).
        assert host.memory.read(addr - 4, 4) == reference.read(addr - 4, 4)
        assert host.memory.read(addr + length, 4) == reference.read(addr + length, 4)
    # Every TLP but the first of a command starts MPS-aligned; count them to prove the split.
    expected = sum(len(range(addr // mps, (addr + length - 1) // mps + 1))
                   for addr, length in commands)
    assert host.stats.writes == expected


def test_every_small_alignment():
    """Every start offset 0..7 and length 1..40 within a dword or two: the byte-enable corners."""
    commands = []
    base = 0x2000
    for offset in range(8):
        for length in range(1, 41, 3):
            commands.append((base + offset, length))
            base += 64
    host, payloads, dones, _ = run_writer(64, 128, commands, seed=5)
    assert all(d["status"] == DmaStatus.OK for d in dones)
    for (addr, length), payload in zip(commands, payloads, strict=True):
        assert host.memory.read(addr, length) == payload


def test_back_to_back_tlps_without_idle_cycles():
    """Without backpressure, aligned 4 KiB writes take one cycle per beat plus a fixed start."""
    commands = [(0x10000 + 4096 * n, 4096) for n in range(4)]
    host, _, dones, cycles = run_writer(256, 256, commands, rates=(1, 1, 1, 1))
    beats = 4 * 4096 // 32
    assert all(d["status"] == DmaStatus.OK for d in dones)
    assert cycles <= beats + 8, f"{cycles} cycles for {beats} beats"
    assert host.stats.writes == 4 * 16


def test_bus_master_off_sends_nothing_and_reports():
    commands = [(0x3000 + 100 * n, 1 + 37 * n) for n in range(5)]
    # The host model raises ProtocolError on any request while Bus Master Enable is 0.
    host, _, dones, _ = run_writer(64, 256, commands, bus_master=False)
    assert [d["status"] for d in dones] == [DmaStatus.NO_BUS_MASTER] * 5
    assert host.stats.writes == 0


def test_zero_length_and_bad_framing_are_reported_not_hung():
    commands = [(0x4000, 0), (0x5000, 20), (0x6000, 16)]
    # The second command's packet ends a beat early: the writer still consumes the command's
    # three beats (so it takes the next packet's first beat), reports the mismatch, and the
    # third command, now out of step, is reported too; nothing hangs.
    beats = (packed_beats(8, bytes(range(16))) + packed_beats(8, bytes(range(100, 116)))
             + packed_beats(8, bytes(range(200, 208))))
    host, _, dones, _ = _run_raw_framing(beats, commands)
    assert [d["status"] for d in dones] == [DmaStatus.BAD_COMMAND] * 3
    assert [d["id"] for d in dones] == [0, 1, 2]
    assert host.stats.writes == 2  # the two non-empty commands were still written


def _run_raw_framing(beats, commands):
    """Like run_writer, but with the data stream given beat by beat."""
    dut = DmaWriter(64)
    host = PcieHost(tlp_layout(64), 64, HostMemory(3), rng=random.Random(3), mps=128)
    cmd_src = StreamSource(dut.cmd, random.Random(4))
    data_src = StreamSource(dut.data, random.Random(5))
    done_sink = StreamSink(dut.done, random.Random(6))
    for n, (addr, length) in enumerate(commands):
        cmd_src.put(pack(write_command_layout(), addr=addr, length=length, id=n))
    data_src.put(*beats)

    async def main(ctx):
        ctx.set(dut.config.id, host.requester_id)
        ctx.set(dut.config.bus_master, 1)
        for _ in range(300):
            await ctx.tick()
            if len(done_sink.items) == len(commands):
                return
        raise AssertionError(f"{len(done_sink.items)} of {len(commands)} done")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(main)
    for tb in (cmd_src.run, data_src.run, done_sink.run):
        sim.add_testbench(tb, background=True)
    sim.add_testbench(host.testbenches(req=dut.req)[0], background=True)
    sim.run()
    return host, None, [unpack(done_layout(), raw) for raw in done_sink.items], None


def test_host_model_catches_a_rule_break():
    """The checks are live: a host with a smaller MPS than the device's setting objects."""
    with pytest.raises(ProtocolError, match="exceeds MPS"):
        host_mps_128_device_512()


def host_mps_128_device_512():
    dut = DmaWriter(64)
    host = PcieHost(tlp_layout(64), 64, rng=random.Random(1), mps=128)
    cmd_src = StreamSource(dut.cmd, random.Random(2))
    data_src = StreamSource(dut.data, random.Random(3))
    cmd_src.put(pack(write_command_layout(), addr=0x8000, length=512, id=0))
    data_src.put(*packed_beats(8, bytes(512)))

    async def main(ctx):
        ctx.set(dut.config.bus_master, 1)
        ctx.set(dut.config.id, host.requester_id)
        ctx.set(dut.config.max_payload, 2)
        ctx.set(dut.done.ready, 1)
        for _ in range(200):
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(main)
    sim.add_testbench(cmd_src.run, background=True)
    sim.add_testbench(data_src.run, background=True)
    sim.add_testbench(host.testbenches(req=dut.req)[0], background=True)
    sim.run()
