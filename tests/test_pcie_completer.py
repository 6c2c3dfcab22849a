"""The BAR0 completer and the MSI-X table in amaranth.sim: register peers as Python models,
TLPs built from the one header definition (`partner.tlp`), random backpressure."""

import gc
import importlib.util
import random
import warnings
from pathlib import Path

import pytest
from amaranth.hdl import Module, UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from partner.hdl.csr import CSRBus
from partner.hdl.pcie.completer import MAX_READ_DWORDS, Bar0Completer
from partner.hdl.pcie.msix import MsixTable
from partner.hdl.pcie.tlp import EndpointConfig, TlpStream
from partner.tlp import (
    COMPLETION_DW1,
    COMPLETION_DW2,
    HEADER_DW0,
    REQUEST_DW1,
    CompletionStatus,
    TlpKind,
)

COMPLETER_ID = 0x0300
REQUESTER_ID = 0x0008

# --- TLPs as the stream carries them -------------------------------------------------------


def request(kind, address, length, *, first_be=0xF, last_be=None, tag=5, data=(), ep=0,
            bar=0, tc=0, attr_lo=0):
    """A request TLP: (hdr, payload dwords, bar)."""
    if last_be is None:
        last_be = 0 if length == 1 else 0xF
    dw0 = HEADER_DW0.pack(length=length % 1024, kind=kind, ep=ep, tc=tc, attr_lo=attr_lo)
    dw1 = REQUEST_DW1.pack(first_be=first_be, last_be=last_be, tag=tag,
                           requester_id=REQUESTER_ID)
    if kind & 0x20:  # 4-dword header: address 63:32 in DW2, 31:2 in DW3
        hdr = dw0 | dw1 << 32 | (address >> 32) << 64 | (address & 0xFFFF_FFFC) << 96
    else:
        hdr = dw0 | dw1 << 32 | (address & 0xFFFF_FFFC) << 64
    return hdr, list(data), bar


def beats(tlp, width):
    hdr, payload, bar = tlp
    lanes = width // 32
    chunks = [payload[i:i + lanes] for i in range(0, len(payload), lanes)] or [[]]
    return [{"hdr": hdr, "data": sum(d << (32 * i) for i, d in enumerate(chunk)),
             "strb": (1 << len(chunk)) - 1, "sop": n == 0, "eop": n == len(chunks) - 1,
             "bar": bar} for n, chunk in enumerate(chunks)]


def decode_completion(beat_list, width):
    lanes = width // 32
    hdr = beat_list[0].hdr
    payload = []
    for b in beat_list:
        payload += [(b.data >> (32 * i)) & 0xFFFF_FFFF for i in range(lanes) if b.strb >> i & 1]
    cpl = {**HEADER_DW0.unpack(hdr & 0xFFFF_FFFF),
           **COMPLETION_DW1.unpack(hdr >> 32 & 0xFFFF_FFFF),
           **{f"c_{k}": v for k, v in COMPLETION_DW2.unpack(hdr >> 64 & 0xFFFF_FFFF).items()}}
    cpl["payload"] = payload
    cpl["dw3"] = hdr >> 96
    return cpl


# --- peers ---------------------------------------------------------------------------------


class RegisterPeer:
    """A CSR target model: words of a dict, r_data the bus's read latency after r_stb (0 in
    between); logs every access."""

    def __init__(self, name, bus, seed_value):
        self.name, self.bus, self.seed = name, bus, seed_value
        self.latency = bus.signature.read_latency
        self.words = {}
        self.log = []

    def value(self, addr):
        return self.words.get(addr, (self.seed + addr * 0x01010101) & 0xFFFF_FFFF)

    async def run(self, ctx):
        bus = self.bus
        due = [0] * (self.latency - 1)  # read data still to come, oldest first
        async for _, _, r_stb, w_stb, addr, w_data in ctx.tick().sample(
                bus.r_stb, bus.w_stb, bus.addr, bus.w_data):
            if r_stb:
                self.log.append(("r", addr))
            due.append(self.value(addr) if r_stb else 0)
            ctx.set(bus.r_data, due.pop(0))
            if w_stb:
                self.log.append(("w", addr, w_data))
                self.words[addr] = w_data


class Bench(wiring.Component):
    """The completer with its register ports and flags brought out."""

    def __init__(self, width, core_addr_width=10, core_read_latency=1):
        self.completer = Bar0Completer(width, core_addr_width=core_addr_width,
                                       core_read_latency=core_read_latency)
        super().__init__({
            "req_in": In(TlpStream(width)), "cpl_out": Out(TlpStream(width)),
            "config": In(EndpointConfig()),
            "core": Out(CSRBus(core_addr_width, core_read_latency)), "dma": Out(CSRBus(10)),
            "msix": Out(CSRBus(11)),
            "unsupported": Out(1), "too_long": Out(1), "partial_write": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.completer = c = self.completer
        for name in ("req_in", "config"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(c, name))
        for name in ("cpl_out", "core", "dma", "msix"):
            wiring.connect(m, getattr(c, name), wiring.flipped(getattr(self, name)))
        for name in ("unsupported", "too_long", "partial_write"):
            m.d.comb += getattr(self, name).eq(getattr(c, name))
        return m


class Harness:
    def __init__(self, width, *, seed=1, valid_p=1.0, ready_p=1.0, core_addr_width=10,
                 core_read_latency=1):
        self.width = width
        self.dut = Bench(width, core_addr_width, core_read_latency)
        self.rng = random.Random(seed)
        self.valid_p, self.ready_p = valid_p, ready_p
        self.peers = {name: RegisterPeer(name, getattr(self.dut, name), seed_value)
                      for name, seed_value in (("core", 0x1000_0000), ("dma", 0x2000_0000),
                                               ("msix", 0x3000_0000))}
        self.flags = {"unsupported": 0, "too_long": 0, "partial_write": 0}

    async def send(self, ctx, tlp):
        stream = self.dut.req_in
        for beat in beats(tlp, self.width):
            while self.rng.random() > self.valid_p:
                await ctx.tick()
            ctx.set(stream.payload, beat)
            ctx.set(stream.valid, 1)
            await ctx.tick().until(stream.ready)
            ctx.set(stream.valid, 0)

    async def receive(self, ctx):
        stream = self.dut.cpl_out
        got = []
        while not got or not got[-1].eop:
            ready = self.rng.random() < self.ready_p
            ctx.set(stream.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
            if valid and ready:
                got.append(payload)
        ctx.set(stream.ready, 0)
        return decode_completion(got, self.width)

    async def watch_flags(self, ctx):
        dut = self.dut
        async for _, _, *values in ctx.tick().sample(dut.unsupported, dut.too_long,
                                                     dut.partial_write):
            for name, value in zip(self.flags, values, strict=True):
                self.flags[name] += value

    def run(self, bench, cycles_after=20):
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)
        for peer in self.peers.values():
            sim.add_process(peer.run)
        sim.add_process(self.watch_flags)

        async def main(ctx):
            ctx.set(self.dut.config.id, COMPLETER_ID)
            await bench(ctx)
            await ctx.tick().repeat(cycles_after)

        sim.add_testbench(main)
        sim.run()


def expected_byte_count(length, first_be, last_be):
    def lo(be):
        return next((i for i in range(4) if be >> i & 1), 0)

    def hi(be):
        return max((i for i in range(4) if be >> i & 1), default=0)

    if length == 1:
        return 1 if first_be == 0 else hi(first_be) - lo(first_be) + 1
    return length * 4 - lo(first_be) - (3 - hi(last_be))


def check_completion(cpl, req_tlp, status=CompletionStatus.SC):
    hdr = req_tlp[0]
    dw0, dw1 = HEADER_DW0.unpack(hdr & 0xFFFF_FFFF), REQUEST_DW1.unpack(hdr >> 32 & 0xFFFF_FFFF)
    address = (hdr >> 96 if dw0["kind"] & 0x20 else hdr >> 64) & 0xFFFF_FFFC
    assert cpl["kind"] == (TlpKind.CPLD if status == CompletionStatus.SC else TlpKind.CPL)
    assert cpl["status"] == status
    assert cpl["completer_id"] == COMPLETER_ID
    assert cpl["c_tag"] == dw1["tag"] and cpl["c_requester_id"] == dw1["requester_id"]
    assert cpl["tc"] == dw0["tc"] and cpl["attr_lo"] == dw0["attr_lo"]
    assert cpl["dw3"] == 0
    length = dw0["length"] or 1024
    if dw0["kind"] in (TlpKind.MRD32, TlpKind.MRD64):
        count = expected_byte_count(length, dw1["first_be"], dw1["last_be"])
        first = next((i for i in range(4) if dw1["first_be"] >> i & 1), 0)
        assert cpl["byte_count"] == count % 4096
        assert cpl["c_lower_address"] == (address & 0x7C) | first
    else:
        assert cpl["byte_count"] == 4 and cpl["c_lower_address"] == 0
    if status == CompletionStatus.SC:
        assert cpl["length"] == length == len(cpl["payload"])
    else:
        assert cpl["length"] == 0 and cpl["payload"] == []


# --- completer ------------------------------------------------------------------------------

BAR = 0xFE00_0000


@pytest.mark.parametrize(("width", "core_read_latency"), [(64, 1), (256, 1), (64, 2), (64, 3)])
def test_single_dword_writes_and_reads_reach_each_window(width, core_read_latency):
    h = Harness(width, core_read_latency=core_read_latency)

    async def bench(ctx):
        for window, name in enumerate(("core", "dma", "msix", "msix")):
            offset = window * 0x1000 + 0x24
            await h.send(ctx, request(TlpKind.MWR32, BAR + offset, 1, data=[0xA0 + window]))
            await ctx.tick().repeat(3)
            word = (offset & 0xFFF) // 4 | (1 << 10 if window == 3 else 0)
            assert h.peers[name].log[-1] == ("w", word, 0xA0 + window)
            req = request(TlpKind.MRD32, BAR + offset, 1, tag=window)
            await h.send(ctx, req)
            cpl = await h.receive(ctx)
            check_completion(cpl, req)
            assert cpl["payload"] == [0xA0 + window]
        assert [len(p.log) for p in h.peers.values()] == [2, 2, 4]
        assert h.flags == {"unsupported": 0, "too_long": 0, "partial_write": 0}

    h.run(bench)


@pytest.mark.parametrize("width", [64, 128, 256])
def test_multi_dword_reads_with_byte_enables_and_backpressure(width):
    h = Harness(width, seed=width, ready_p=0.4, valid_p=0.6)
    cases = [(0x10, 2, 0xF, 0xF), (0x0C, 5, 0xE, 0x3), (0x40, 8, 0x8, 0x1), (0x80, 9, 0xC, 0x7),
             (0x100, MAX_READ_DWORDS, 0xF, 0xF), (0x7C, 3, 0x2, 0x8), (0x20, 1, 0x6, 0),
             (0x44, 1, 0x1, 0), (0x48, 1, 0x8, 0)]

    async def bench(ctx):
        for tag, (offset, length, first_be, last_be) in enumerate(cases):
            kind = TlpKind.MRD64 if tag % 2 else TlpKind.MRD32
            address = (0x1_0000_0000 if tag % 2 else 0) + BAR + 0x1000 + offset
            req = request(kind, address, length, first_be=first_be, last_be=last_be, tag=tag,
                          tc=tag % 8, attr_lo=tag % 4)
            await h.send(ctx, req)
            cpl = await h.receive(ctx)
            check_completion(cpl, req)
            words = [offset // 4 + k for k in range(length)]
            assert cpl["payload"] == [h.peers["dma"].value(w) for w in words]
            assert h.peers["dma"].log[-length:] == [("r", w) for w in words]

    h.run(bench)


def test_zero_length_read_has_no_side_effect_and_counts_one_byte():
    h = Harness(64)

    async def bench(ctx):
        req = request(TlpKind.MRD32, BAR + 0x40, 1, first_be=0)
        await h.send(ctx, req)
        cpl = await h.receive(ctx)
        check_completion(cpl, req)
        assert cpl["byte_count"] == 1 and cpl["payload"] == [0]
        assert h.peers["core"].log == []

    h.run(bench)


@pytest.mark.parametrize("width", [64, 256])
def test_multi_beat_write_skips_partial_dwords_and_flags_them(width):
    h = Harness(width, seed=3, valid_p=0.5)

    async def bench(ctx):
        data = [0x100 + k for k in range(11)]
        await h.send(ctx, request(TlpKind.MWR64, 0x1_0000_0000 + BAR + 0x200, 11,
                                  first_be=0x7, last_be=0xF, data=data))
        await ctx.tick().repeat(4)
        writes = [e for e in h.peers["core"].log if e[0] == "w"]
        assert writes == [("w", 0x80 + k, 0x100 + k) for k in range(1, 11)]
        assert h.flags["partial_write"] == 1
        # A zero-length write (no byte enables) writes nothing and is not an error.
        await h.send(ctx, request(TlpKind.MWR32, BAR + 0x10, 1, first_be=0, data=[0xDEAD]))
        await ctx.tick().repeat(4)
        assert len(h.peers["core"].log) == 10 and h.flags["partial_write"] == 1

    h.run(bench)


def test_accesses_crossing_a_window_boundary_are_decoded_per_dword():
    h = Harness(128)

    async def bench(ctx):
        await h.send(ctx, request(TlpKind.MWR32, BAR + 0xFF8, 4, data=[1, 2, 3, 4]))
        await ctx.tick().repeat(6)
        assert h.peers["core"].log == [("w", 1022, 1), ("w", 1023, 2)]
        assert h.peers["dma"].log == [("w", 0, 3), ("w", 1, 4)]
        req = request(TlpKind.MRD32, BAR + 0x1FFC, 2)
        await h.send(ctx, req)
        cpl = await h.receive(ctx)
        check_completion(cpl, req)
        assert cpl["payload"] == [h.peers["dma"].value(1023), h.peers["msix"].value(0)]

    h.run(bench)


def test_narrow_register_port_never_aliases():
    h = Harness(64, core_addr_width=4)  # 16 words = 64 bytes of the core window

    async def bench(ctx):
        await h.send(ctx, request(TlpKind.MWR32, BAR + 0x40, 1, data=[0x55]))  # word 16
        await h.send(ctx, request(TlpKind.MWR32, BAR + 0x3C, 1, data=[0x66]))  # word 15
        req = request(TlpKind.MRD32, BAR + 0x3C, 2)
        await h.send(ctx, req)
        cpl = await h.receive(ctx)
        check_completion(cpl, req)
        assert cpl["payload"] == [0x66, 0]
        assert h.peers["core"].log == [("w", 15, 0x66), ("r", 15)]

    h.run(bench)


@pytest.mark.parametrize("width", [64, 256])
def test_refused_requests_get_ur_or_ca_and_are_flagged(width):
    h = Harness(width, seed=7, ready_p=0.5, valid_p=0.7)

    async def bench(ctx):
        # Non-posted: memory read of BAR2, poisoned read, I/O read and write, locked read,
        # an atomic (FetchAdd, 0x4C), a read longer than supported.
        refused = [
            (request(TlpKind.MRD32, BAR + 0x10, 2, bar=2), CompletionStatus.UR, "unsupported"),
            (request(TlpKind.MRD32, BAR + 0x10, 1, ep=1), CompletionStatus.UR, "unsupported"),
            (request(0x02, 0x1000, 1), CompletionStatus.UR, "unsupported"),
            (request(0x42, 0x1000, 1, data=[7]), CompletionStatus.UR, "unsupported"),
            (request(0x01, BAR, 1), CompletionStatus.UR, "unsupported"),
            (request(0x4C, BAR, 2, data=[1, 2]), CompletionStatus.UR, "unsupported"),
            (request(TlpKind.MRD32, BAR + 0x400, MAX_READ_DWORDS + 1), CompletionStatus.CA,
             "too_long"),
            (request(TlpKind.MRD64, 0x1_0000_0000 + BAR, 1024), CompletionStatus.CA,
             "too_long"),
        ]
        for n, (req, status, flag) in enumerate(refused):
            before = dict(h.flags)
            await h.send(ctx, req)
            cpl = await h.receive(ctx)
            check_completion(cpl, req, status)
            await ctx.tick()
            assert h.flags[flag] == before[flag] + 1, n
        # Posted: dropped without a completion, flagged, no register touched.
        posted = [
            request(TlpKind.MWR32, BAR + 0x10, 1, data=[9], bar=2),
            request(TlpKind.MWR32, BAR + 0x10, 9, data=list(range(9)), ep=1),
            request(0x70, 0, 12, data=list(range(12))),  # message with data, routed to RC
            request(TlpKind.CPLD, 0, 3, data=[1, 2, 3]),  # a completion has no business here
        ]
        before = h.flags["unsupported"]
        for req in posted:
            await h.send(ctx, req)
        await ctx.tick().repeat(4)
        assert h.flags["unsupported"] == before + len(posted)
        assert all(not p.log for p in h.peers.values())
        # ... and the completer still works.
        req = request(TlpKind.MRD32, BAR + 0x8, 1)
        await h.send(ctx, req)
        check_completion(await h.receive(ctx), req)

    h.run(bench)


@pytest.mark.parametrize(("width", "core_read_latency"),
                         [(64, 1), (256, 1), (64, 2), (256, 3)])
def test_random_requests_against_a_model(width, core_read_latency):
    """Random reads and writes, random gaps and backpressure: every register access and
    completion is what a dword-by-dword model says, with the core's registers answering in one,
    two or (the device core's bank) three cycles."""
    rng = random.Random(width + 11)
    h = Harness(width, seed=width, ready_p=0.5, valid_p=0.5,
                core_read_latency=core_read_latency)
    model = {name: {} for name in h.peers}

    def where(word):
        window = word >> 10
        name = ("core", "dma", "msix", "msix")[window]
        return name, (word & 0x3FF) | (1 << 10 if window == 3 else 0)

    async def bench(ctx):
        for tag in range(60):
            length = rng.choice([1, 1, 2, 3, 8, rng.randint(1, MAX_READ_DWORDS)])
            word = rng.randrange(0x1000 - length)
            while (word * 4) // 4096 != (word * 4 + 4 * length - 1) // 4096:  # no 4 KiB cross
                word = rng.randrange(0x1000 - length)
            first_be = 0xF if rng.random() < 0.7 else rng.choice([0x1, 0x3, 0x7, 0xE, 0xC])
            last_be = 0 if length == 1 else (0xF if rng.random() < 0.7
                                             else rng.choice([0x1, 0x3, 0x7]))
            kind = rng.choice([TlpKind.MRD32, TlpKind.MRD64, TlpKind.MWR32, TlpKind.MWR64])
            address = BAR + word * 4 + (0x2_0000_0000 if kind & 0x20 else 0)
            if kind in (TlpKind.MWR32, TlpKind.MWR64):
                data = [rng.getrandbits(32) for _ in range(length)]
                await h.send(ctx, request(kind, address, length, first_be=first_be,
                                          last_be=last_be, data=data, tag=tag % 256))
                for k, value in enumerate(data):
                    be = first_be if k == 0 else (last_be if k == length - 1 else 0xF)
                    if be == 0xF:
                        name, addr = where(word + k)
                        model[name][addr] = value
            else:
                req = request(kind, address, length, first_be=first_be, last_be=last_be,
                              tag=tag % 256)
                await h.send(ctx, req)
                cpl = await h.receive(ctx)
                check_completion(cpl, req)
                expect = []
                for k in range(length):
                    name, addr = where(word + k)
                    expect.append(model[name].get(addr, h.peers[name].value(addr)))
                assert cpl["payload"] == expect
        await ctx.tick().repeat(10)
        for name, peer in h.peers.items():
            assert {a: v for a, v in peer.words.items()} == model[name]

    h.run(bench)


def test_bad_parameters_are_refused():
    with warnings.catch_warnings():
        # The half-built components are never elaborated, which Amaranth warns about at GC.
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="core_addr_width"):
            Bar0Completer(64, core_addr_width=11)
        with pytest.raises(ValueError, match="width"):
            Bar0Completer(96)
        with pytest.raises(ValueError, match="vectors"):
            MsixTable(64, 0)
        with pytest.raises(ValueError, match="vectors"):
            MsixTable(64, 257)
        gc.collect()


# --- MSI-X ----------------------------------------------------------------------------------

TABLE, PBA = 0, 1 << 10  # word addresses on the MSI-X port


class MsixHarness:
    def __init__(self, width=64, vectors=5, seed=1, ready_p=1.0):
        self.width = width
        self.dut = MsixTable(width, vectors)
        self.rng = random.Random(seed)
        self.ready_p = ready_p
        self.messages = []  # (cycle, kind, address, data, requester_id)
        self.cycle = 0

    async def read(self, ctx, word):
        bus = self.dut.bus
        ctx.set(bus.addr, word)
        ctx.set(bus.r_stb, 1)
        await ctx.tick()
        ctx.set(bus.r_stb, 0)
        return ctx.get(bus.r_data)

    async def write(self, ctx, word, value):
        bus = self.dut.bus
        ctx.set(bus.addr, word)
        ctx.set(bus.w_data, value)
        ctx.set(bus.w_stb, 1)
        await ctx.tick()
        ctx.set(bus.w_stb, 0)

    async def program(self, ctx, vector, address, data, masked=False):
        await self.write(ctx, TABLE + 4 * vector + 0, address & 0xFFFF_FFFF)
        await self.write(ctx, TABLE + 4 * vector + 1, address >> 32)
        await self.write(ctx, TABLE + 4 * vector + 2, data)
        await self.write(ctx, TABLE + 4 * vector + 3, int(masked))

    async def fire(self, ctx, vectors):
        ctx.set(self.dut.irq, sum(1 << v for v in vectors))
        await ctx.tick()
        ctx.set(self.dut.irq, 0)

    async def sink(self, ctx):
        req = self.dut.req
        while True:
            ready = self.rng.random() < self.ready_p
            ctx.set(req.ready, ready)
            _, _, valid, beat = await ctx.tick().sample(req.valid, req.payload)
            self.cycle += 1
            if valid and ready:
                dw0 = HEADER_DW0.unpack(beat.hdr & 0xFFFF_FFFF)
                dw1 = REQUEST_DW1.unpack(beat.hdr >> 32 & 0xFFFF_FFFF)
                if dw0["kind"] == TlpKind.MWR64:
                    address = (beat.hdr >> 64 & 0xFFFF_FFFF) << 32 | beat.hdr >> 96
                else:
                    address = beat.hdr >> 64 & 0xFFFF_FFFF
                    assert beat.hdr >> 96 == 0
                assert dw0["length"] == 1 and dw1["first_be"] == 0xF and dw1["last_be"] == 0
                assert beat.strb == 1 and beat.sop and beat.eop
                self.messages.append((dw0["kind"], address, beat.data & 0xFFFF_FFFF,
                                      dw1["requester_id"]))

    def run(self, bench):
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)
        sim.add_process(self.sink)

        async def main(ctx):
            ctx.set(self.dut.config.id, COMPLETER_ID)
            await bench(ctx)

        sim.add_testbench(main)
        sim.run()

    def enable(self, ctx, *, enable=1, mask=0, master=1):
        cfg = self.dut.config
        ctx.set(cfg.msix_enable, enable)
        ctx.set(cfg.msix_mask, mask)
        ctx.set(cfg.bus_master, master)


def test_msix_table_reads_back_and_masks_reset_set():
    h = MsixHarness(vectors=5)

    async def bench(ctx):
        for v in range(5):
            assert await h.read(ctx, TABLE + 4 * v + 3) == 1  # masked out of reset
        await h.program(ctx, 3, 0x1_2345_6789, 0xABCD)
        assert [await h.read(ctx, TABLE + 12 + k) for k in range(4)] == [
            0x2345_6788, 1, 0xABCD, 0]  # address bits 1:0 read 0
        assert await h.read(ctx, TABLE + 4 * 5) == 0  # past the last vector
        await h.write(ctx, TABLE + 4 * 5 + 2, 0x77)
        assert await h.read(ctx, TABLE + 4 * 5 + 2) == 0
        assert await h.read(ctx, TABLE + 4 * 0 + 2) == 0  # vector 5 did not alias onto 0
        await h.write(ctx, PBA, 0xFFFF_FFFF)  # the PBA is read-only
        assert await h.read(ctx, PBA) == 0

    h.run(bench)


def test_msix_masked_vector_pends_and_fires_when_unmasked():
    h = MsixHarness(vectors=5, ready_p=0.3, seed=4)

    async def bench(ctx):
        h.enable(ctx)
        for v in range(5):
            await h.program(ctx, v, 0xFEE0_0000 + 16 * v, 0x40 + v, masked=(v != 2))
        await h.fire(ctx, [1, 2, 4])
        await ctx.tick().repeat(30)
        assert h.messages == [(TlpKind.MWR32, 0xFEE0_0020, 0x42, COMPLETER_ID)]
        assert await h.read(ctx, PBA) == 0b10010
        assert ctx.get(h.dut.pending) == 0b10010
        await h.write(ctx, TABLE + 4 * 4 + 3, 0)  # unmask vector 4
        await ctx.tick().repeat(30)
        assert h.messages[1:] == [(TlpKind.MWR32, 0xFEE0_0040, 0x44, COMPLETER_ID)]
        assert await h.read(ctx, PBA) == 0b00010

    h.run(bench)


def test_msix_function_mask_enable_and_bus_master_gate_messages():
    h = MsixHarness(vectors=3, ready_p=0.5, seed=5)

    async def bench(ctx):
        for v in range(3):
            await h.program(ctx, v, 0x2_0000_0000 + 4 * v, 0x10 + v)
        h.enable(ctx, enable=0)
        await h.fire(ctx, [0])  # MSI-X disabled: dropped, not pending
        await ctx.tick().repeat(10)
        assert h.messages == [] and ctx.get(h.dut.pending) == 0
        h.enable(ctx, mask=1)
        await h.fire(ctx, [0, 1])
        await ctx.tick().repeat(10)
        assert h.messages == [] and ctx.get(h.dut.pending) == 0b011
        h.enable(ctx, master=0)  # unmasked, but no bus mastering: still held
        await ctx.tick().repeat(10)
        assert h.messages == [] and ctx.get(h.dut.pending) == 0b011
        h.enable(ctx)
        await ctx.tick().repeat(30)
        assert h.messages == [(TlpKind.MWR64, 0x2_0000_0000, 0x10, COMPLETER_ID),
                              (TlpKind.MWR64, 0x2_0000_0004, 0x11, COMPLETER_ID)]
        assert ctx.get(h.dut.pending) == 0

    h.run(bench)


@pytest.mark.parametrize("width", [64, 256])
def test_msix_every_event_is_delivered_under_backpressure(width):
    """Events on random vectors, at random times, with a slow sink: each vector fires at least
    once after each of its events and never without one (coalescing is allowed)."""
    rng = random.Random(width)
    h = MsixHarness(width, vectors=8, ready_p=0.2, seed=width)

    async def bench(ctx):
        h.enable(ctx)
        for v in range(8):
            await h.program(ctx, v, 0xFEE0_0000, v)
        events = 0
        for _ in range(40):
            vectors = rng.sample(range(8), rng.randint(1, 3))
            before = len(h.messages)
            await h.fire(ctx, vectors)
            await ctx.tick().repeat(rng.randint(1, 6))
            for _ in range(200):
                fired = [data for _, _, data, _ in h.messages[before:]]
                if set(vectors) <= set(fired):
                    break
                await ctx.tick()
            assert set(vectors) <= set(fired), (vectors, fired)
            events += len(vectors)
        await ctx.tick().repeat(30)
        assert ctx.get(h.dut.pending) == 0
        assert len(h.messages) <= events  # coalesced perhaps, never invented

    h.run(bench)


# --- through the root complex (cocotb + Verilator) -------------------------------------------

BENCH = Path(__file__).parent / "cocotb" / "pcie_completer_tb.py"
BENCH_NAMES = ["bring_up_and_register_windows", "msix_delivery_masking_and_pending_bits",
               "polling_without_vectors", "refused_requests_complete_with_ur_or_ca",
               "device_reads_host_memory_through_the_adapter",
               "a_read_longer_than_mrrs_is_caught", "a_tag_beyond_the_limit_is_caught",
               "a_request_before_bus_master_enable_is_caught"]


def _pcie_top():
    spec = importlib.util.spec_from_file_location("pcie_top", BENCH.parent / "pcie_top.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Bar0Top


@pytest.mark.cocotb
@pytest.mark.parametrize(("width", "mps", "mrrs", "backpressure"), [
    (64, 128, 512, 1.0),
    (64, 256, 128, 0.4),
    (256, 512, 512, 0.3),
])
def test_completer_through_the_root_complex(width, mps, mrrs, backpressure):
    verilator = pytest.importorskip("partner.sim.verilator")
    top = _pcie_top()
    model = verilator.build(lambda: top(width, 4), name=f"pcie_bar0_w{width}")
    result = model.run(BENCH, env={"PCIE_WIDTH": str(width), "PCIE_VECTORS": "4",
                                   "PCIE_MPS": str(mps), "PCIE_MRRS": str(mrrs),
                                   "PCIE_BACKPRESSURE": str(backpressure), "PCIE_SEED": "1"},
                       seed=1)
    assert sorted(name.rsplit(".", 1)[1] for name in result.passed) == sorted(BENCH_NAMES)
