"""DmaReader against the host model (amaranth.sim): split, out-of-order completions reassembled in
command order; errors, timeouts and Bus Master Enable 0 reported, never hung on."""

import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from partner.hdl.pcie.dma_read import DmaReader, read_command_layout, read_status_layout
from partner.hdl.pcie.dma_status import DmaStatus
from partner.hdl.pcie.tlp import tlp_layout
from partner.hdl.stream import packet_layout
from partner.sim.models.pcie_host import (
    HostMemory,
    PcieHost,
    StreamSink,
    StreamSource,
    pack,
    unpack,
)
from partner.tlp import CompletionStatus

CODES = {128: 0, 256: 1, 512: 2, 1024: 3, 2048: 4, 4096: 5}


def random_size(rng):
    kind = rng.random()
    if kind < 0.35:
        return rng.randint(1, 64)
    if kind < 0.85:
        return rng.randint(65, 1600)
    return rng.randint(1601, 9216)


def random_commands(rng, count):
    commands, base = [], rng.choice([0x2000_0000, 0x3_0000_0000])
    for _ in range(count):
        length = random_size(rng)
        base += rng.randint(0, 300)
        if rng.random() < 0.3:  # straddle a 4 KiB boundary
            base = ((base >> 12) + 1 << 12) - rng.randint(1, min(length, 64))
        commands.append((base, length))
        base += length
    return commands


class Harness:
    """A DmaReader with the host model on its TLP streams and random stream partners."""

    def __init__(self, width, *, seed=1, mps=256, mrrs=512, rcb=64, split_on_all_rcb=False,
                 rates=(0.7, 0.7, 0.7, 0.7, 0.7), tags=32, timeout=1 << 16,
                 buffer_bytes=16384, **host):
        self.dut = dut = DmaReader(width, tags=tags, timeout=timeout, buffer_bytes=buffer_bytes)
        self.width, self.mps, self.mrrs = width, mps, mrrs
        self.host = PcieHost(tlp_layout(width), width, HostMemory(seed),
                             rng=random.Random(seed + 1), mps=mps, mrrs=mrrs, rcb=rcb,
                             split_on_all_rcb=split_on_all_rcb, tags=tags, timeout=timeout,
                             req_ready=rates[0], cpl_valid=rates[1], **host)
        self.cmd = StreamSource(dut.cmd, random.Random(seed + 2), rates[2])
        self.data = StreamSink(dut.data, random.Random(seed + 3), rates[3])
        self.status = StreamSink(dut.status, random.Random(seed + 4), rates[4])
        self.bus_master = True
        self.cycles = None

    def run(self, commands, max_cycles=None):
        dut, host = self.dut, self.host
        wb = self.width // 8
        for n, (addr, length) in enumerate(commands):
            self.cmd.put(pack(read_command_layout(), addr=addr, length=length, id=n & 0xFF))
        limit = max_cycles or 3000 + 8 * sum(length for _, length in commands) // wb
        host.bus_master = self.bus_master

        async def main(ctx):
            ctx.set(dut.config.id, host.requester_id)
            ctx.set(dut.config.max_read_request, CODES[self.mrrs])
            ctx.set(dut.config.max_payload, CODES[self.mps])
            ctx.set(dut.config.bus_master, self.bus_master)
            for cycle in range(limit):
                if len(self.status.items) == len(commands):
                    self.cycles = cycle
                    self.counters = {name: ctx.get(getattr(dut, name))
                                     for name in ("unexpected", "malformed", "timeouts")}
                    return
                await ctx.tick()
            raise AssertionError(f"{len(self.status.items)} of {len(commands)} statuses after "
                                 f"{limit} cycles")

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(main)
        for tb in [self.cmd.run, self.data.run, self.status.run,
                   *host.testbenches(req=dut.req, cpl=dut.cpl)]:
            sim.add_testbench(tb, background=True)
        sim.run()
        return self.packets(), [unpack(read_status_layout(), raw) for raw in self.status.items]

    def packets(self):
        """The data stream cut into packets (bytes), checking the framing on the way."""
        layout = packet_layout(self.width // 8)
        packets, current = [], None
        for raw in self.data.items:
            beat = unpack(layout, raw)
            assert beat["first"] == (current is None), "first flag out of place"
            if current is None:
                current = b""
            if not beat["last"]:
                assert beat["nbytes"] == self.width // 8, "a short beat before the last"
            current += beat["data"].to_bytes(self.width // 8, "little")[:beat["nbytes"]]
            if beat["last"]:
                packets.append(current)
                current = None
        assert current is None, "the last packet has no last beat"
        return packets


@pytest.mark.parametrize("width,mps,mrrs,rcb,split", [
    (64, 128, 128, 64, True),
    (64, 256, 512, 128, False),
    (128, 512, 512, 64, True),
    (256, 128, 512, 64, True),
    (256, 512, 128, 128, False),
    (256, 256, 512, 64, False),
])
def test_random_reads_in_order(width, mps, mrrs, rcb, split):
    seed = width + mps + mrrs + rcb
    h = Harness(width, seed=seed, mps=mps, mrrs=mrrs, rcb=rcb, split_on_all_rcb=split)
    commands = random_commands(random.Random(seed), 12)
    packets, statuses = h.run(commands)
    assert [s["id"] for s in statuses] == list(range(len(commands)))
    assert all(s["status"] == DmaStatus.OK for s in statuses)
    assert len(packets) == len(commands)
    for (addr, length), packet in zip(commands, packets, strict=True):
        assert packet == h.host.memory.read(addr, length), f"{length} bytes at {addr:#x}"
    # Splitting at MRRS-aligned addresses: the request count is exact.
    assert h.host.stats.reads == sum(len(range(a // mrrs, (a + n - 1) // mrrs + 1))
                                     for a, n in commands)
    assert h.host.max_outstanding > 1  # several tags were in flight


def test_every_small_alignment():
    commands = [(0x9000 + 64 * (8 * o + k) + o, n) for o in range(8)
                for k, n in enumerate((1, 2, 3, 4, 5, 7, 8, 9))]
    h = Harness(64, seed=3, rates=(1, 1, 1, 1, 1))
    packets, statuses = h.run(commands)
    assert all(s["status"] == DmaStatus.OK for s in statuses)
    for (addr, length), packet in zip(commands, packets, strict=True):
        assert packet == h.host.memory.read(addr, length)


@pytest.mark.parametrize("width", [64, 256])
def test_commands_longer_than_the_reassembly_buffer(width):
    """A jumbo frame in one command is read through an 8 KiB buffer that holds part of it at a
    time: each row is delivered only once its own dwords have arrived."""
    h = Harness(width, seed=9, buffer_bytes=8192, rates=(1, 1, 1, 1, 1), delay=(100, 150),
                largest_completions=True, reorder=0.5)
    commands = [(0x4_0000 + 2, 9000), (0x8_0000 + 5, 20000), (0xC_0000, 8193)]
    packets, statuses = h.run(commands)
    assert all(s["status"] == DmaStatus.OK for s in statuses)
    for (addr, length), packet in zip(commands, packets, strict=True):
        assert packet == h.host.memory.read(addr, length), f"{length} bytes at {addr:#x}"


def test_tag_limit_respected():
    h = Harness(64, seed=4, tags=4, mrrs=128, delay=(60, 80))
    commands = [(0x10000, 4096)]
    packets, statuses = h.run(commands)
    assert statuses[0]["status"] == DmaStatus.OK
    assert packets[0] == h.host.memory.read(0x10000, 4096)
    assert h.host.max_outstanding == 4  # the model raises if a fifth tag is used


def test_ur_and_ca_end_commands_with_errors_and_nothing_hangs():
    h = Harness(128, seed=7, ur_rate=0.1, ca_rate=0.1, split_on_all_rcb=True)
    commands = random_commands(random.Random(7), 16)
    packets, statuses = h.run(commands)
    assert [s["id"] for s in statuses] == list(range(len(commands)))
    codes = {s["status"] for s in statuses}
    assert DmaStatus.UR in codes and DmaStatus.CA in codes
    assert codes <= {DmaStatus.OK, DmaStatus.UR, DmaStatus.CA}
    assert len(packets) == len(commands)
    for (addr, length), packet, st in zip(commands, packets, statuses, strict=True):
        assert len(packet) == length  # a failed command still delivers its length
        if st["status"] == DmaStatus.OK:
            assert packet == h.host.memory.read(addr, length)


def test_timeout_ends_a_command():
    # Few tags, so that a request's completions come well within the timeout unless dropped.
    h = Harness(64, seed=8, drop_rate=0.2, timeout=1000, tags=4, rates=(1, 1, 0.7, 0.7, 0.7))
    commands = [(0x40000 + 8192 * n, 700) for n in range(8)]
    packets, statuses = h.run(commands)
    codes = [s["status"] for s in statuses]
    assert DmaStatus.TIMEOUT in codes and DmaStatus.OK in codes
    assert set(codes) <= {DmaStatus.OK, DmaStatus.TIMEOUT}
    assert h.counters["timeouts"] == h.host.stats.dropped >= codes.count(DmaStatus.TIMEOUT)
    for (addr, length), packet, code in zip(commands, packets, codes, strict=True):
        if code == DmaStatus.OK:
            assert packet == h.host.memory.read(addr, length)


def test_poisoned_completions_fail_their_command():
    h = Harness(64, seed=13, poison_rate=0.04)
    commands = random_commands(random.Random(13), 10)
    packets, statuses = h.run(commands)
    codes = [s["status"] for s in statuses]
    assert DmaStatus.POISONED in codes and DmaStatus.OK in codes
    assert set(codes) <= {DmaStatus.OK, DmaStatus.POISONED}
    for (addr, length), packet, code in zip(commands, packets, codes, strict=True):
        if code == DmaStatus.OK:
            assert packet == h.host.memory.read(addr, length)


def test_full_rate_delivery():
    """Aligned reads without backpressure: the data stream carries one beat per cycle once the
    completions flow, and each status follows its last data beat."""
    h = Harness(256, seed=14, rates=(1, 1, 1, 1, 1), delay=(30, 30), reorder=0.0)
    commands = [(0x100000 + 512 * n, 512) for n in range(24)]
    packets, statuses = h.run(commands)
    assert all(s["status"] == DmaStatus.OK for s in statuses)
    assert packets == [h.host.memory.read(a, n) for a, n in commands]
    times = h.data.times
    busy = times[-1] - times[len(times) // 4]
    assert busy <= 1.1 * (len(times) - 1 - len(times) // 4), "gaps in the data stream"
    last_beats = [t for raw, t in zip(h.data.items, times, strict=True)
                  if unpack(packet_layout(32), raw)["last"]]
    assert all(st > lt for st, lt in zip(h.status.times, last_beats, strict=True))


def test_bus_master_off_sends_nothing():
    h = Harness(64, seed=9)
    h.bus_master = False  # the host model raises on any request
    commands = [(0x5000, 100), (0x6000, 5000), (0x7000, 1)]
    packets, statuses = h.run(commands)
    assert [s["status"] for s in statuses] == [DmaStatus.NO_BUS_MASTER] * 3
    assert [len(p) for p in packets] == [100, 5000, 1]
    assert h.host.stats.reads == 0


def test_zero_length_is_a_bad_command():
    h = Harness(64, seed=10)
    packets, statuses = h.run([(0x5000, 16), (0x5100, 0), (0x5200, 8)])
    assert [s["status"] for s in statuses] == [DmaStatus.OK, DmaStatus.BAD_COMMAND, DmaStatus.OK]
    assert [len(p) for p in packets] == [16, 8]


def test_unexpected_completion_is_counted_and_changes_nothing():
    h = Harness(64, seed=11, rates=(1, 1, 1, 1, 1))
    host = h.host
    # Only tags 0 and 1 are used by two small reads; tag 30 is unknown.
    host.inject(host.completion_header(tag=30, status=CompletionStatus.SC, byte_count=4,
                                       lower_address=0, length_dw=1), b"\x00" * 4)
    packets, statuses = h.run([(0x8000, 64), (0x8100, 64)])
    assert [s["status"] for s in statuses] == [DmaStatus.OK, DmaStatus.OK]
    assert packets == [host.memory.read(0x8000, 64), host.memory.read(0x8100, 64)]
    assert h.counters == {"unexpected": 1, "malformed": 0, "timeouts": 0}


def test_malformed_completions_fail_their_command_only():
    h = Harness(256, seed=12, malformed_rate=0.05, split_on_all_rcb=True)
    commands = random_commands(random.Random(12), 10)
    packets, statuses = h.run(commands)
    codes = [s["status"] for s in statuses]
    assert DmaStatus.MALFORMED in codes and DmaStatus.OK in codes
    assert h.counters["malformed"] == h.host.stats.malformed_sent
    for (addr, length), packet, code in zip(commands, packets, codes, strict=True):
        assert len(packet) == length
        if code == DmaStatus.OK:
            assert packet == h.host.memory.read(addr, length)


def test_bad_parameters():
    with warnings.catch_warnings():  # the rejected instances are never elaborated
        warnings.simplefilter("ignore", UnusedElaboratable)
        for kwargs, match in [({"buffer_bytes": 4096, "max_read_request": 4096}, "buffer_bytes"),
                              ({"tags": 300}, "tags"), ({"timeout": 0}, "timeout")]:
            with pytest.raises(ValueError, match=match):
                DmaReader(64, **kwargs)
        gc.collect()
