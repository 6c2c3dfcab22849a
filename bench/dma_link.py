"""DMA requester throughput against the PCIe link's payload ceiling (build/bench/dma-link.json).

`efficiency`: for frames of 64, 256, 512, 1500 and 9000 bytes at TLP stream widths 64 and 256,
the steady-state payload rate of

- TX: the DMA reader fetching frames from host memory (MRd, completions reassembled, bytes out
  on the device's packet stream), and
- RX: the DMA writer putting frames into host memory (MWr),

divided by the link's payload ceiling for that frame size.

The link and its ceiling: a link of the stream's width carries ``width / 32`` dwords per cycle
in each direction, and every TLP occupies its payload dwords plus ``HEADER_DW`` = 4 dwords (the
3- or 4-dword header, rounded up to 4 to stand for the data link layer's framing). The host
model (`partner.sim.models.pcie_host`) enforces exactly this on both TLP streams. The best any
requester can do for a frame of ``S`` bytes is ``ceil(S / MPS)`` TLPs of at most MPS bytes, so

    ceiling(S) = S / ((ceil(S / 4) + HEADER_DW * ceil(S / MPS)) / (width / 32))  bytes per cycle

and for reads the host returns completions as large as MPS allows (RCB multiples), so the same
ceiling holds in the completion direction. Frames sit at host addresses 2 bytes past a 16 KiB
chunk start (so each costs a short first TLP); MPS 256, MRRS 512, RCB 64, a 100-150 cycle
completion latency, no backpressure on the device's own streams.

TX rates are the payload over the completion stream's busy period (first to last completion
beat). The reader's completion input is always ready, so the link idles only when the reader
has too few requests outstanding (tags, reassembly buffer, commands in flight): that period is
the steady state. The frames leave on the device's data stream at one beat per cycle, faster
than the link, trailing it by what the reassembly buffer holds at the end (`tx_drain_cycles`).
RX rates run from the first frame's *done* to the last one's (the writer works on one frame at
a time, so that window holds exactly the later frames' TLPs).

Each efficiency for frames of 512 bytes and more must be >= 0.90 (`checks`). Counts are
simulated cycles (amaranth.sim), exact and repeatable.
"""

import math
import random

SIZES = (64, 256, 512, 1500, 9000)
WIDTHS = (64, 256)
HEADER_DW = 4
MPS, MRRS, RCB = 256, 512, 64
LIMIT = 0.90
OFFSET = 2
CHUNK = 16384
BYTES_PER_POINT = 20000
REORDER = 0.5


def ceiling(size: int, width: int) -> float:
    """Link payload bytes per cycle for frames of ``size`` bytes (see the module docstring)."""
    dwords = math.ceil(size / 4) + HEADER_DW * math.ceil(size / MPS)
    return size / (dwords / (width // 32))


def _frames(size):
    count = max(4, BYTES_PER_POINT // size)
    return [(0x1_0000_0000 + CHUNK * n + OFFSET, size) for n in range(count)]


def _simulate(dut, benches, done):
    from amaranth.sim import Simulator

    async def main(ctx):
        for _ in range(10_000_000):
            if done():
                return
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(main)
    for tb in benches:
        sim.add_testbench(tb, background=True)
    sim.run()


def _host(width, seed):
    from partner.hdl.pcie.tlp import tlp_layout
    from partner.sim.models.pcie_host import HostMemory, PcieHost
    return PcieHost(tlp_layout(width), width, HostMemory(seed), rng=random.Random(seed),
                    mps=MPS, mrrs=MRRS, rcb=RCB, delay=(100, 150), header_dw=HEADER_DW,
                    largest_completions=True, reorder=REORDER)


def _configure(ctx, dut, host):
    ctx.set(dut.config.id, host.requester_id)
    ctx.set(dut.config.max_payload, MPS.bit_length() - 8)
    ctx.set(dut.config.max_read_request, MRRS.bit_length() - 8)
    ctx.set(dut.config.bus_master, 1)


def measure_tx(width: int, size: int) -> float:
    """Reader payload bytes per cycle across the link's busy period, and the cycles from the
    last completion to the last frame's end on the data stream."""
    from partner.hdl.pcie.dma_read import DmaReader, read_command_layout
    from partner.hdl.stream import packet_layout
    from partner.sim.models.pcie_host import StreamSink, StreamSource, pack, unpack

    dut = DmaReader(width)
    host = _host(width, size)
    frames = _frames(size)
    cmd = StreamSource(dut.cmd, random.Random(1))
    data = StreamSink(dut.data, random.Random(2))
    status = StreamSink(dut.status, random.Random(3))
    for n, (addr, length) in enumerate(frames):
        cmd.put(pack(read_command_layout(), addr=addr, length=length, id=n & 0xFF))

    async def config(ctx):
        _configure(ctx, dut, host)
        await ctx.tick()

    _simulate(dut, [config, cmd.run, data.run, status.run,
                    *host.testbenches(req=dut.req, cpl=dut.cpl)],
              lambda: len(status.items) == len(frames))
    layout = packet_layout(width // 8)
    ends, packets, current = [], [], b""
    for raw, t in zip(data.items, data.times, strict=True):
        beat = unpack(layout, raw)
        current += beat["data"].to_bytes(width // 8, "little")[:beat["nbytes"]]
        if beat["last"]:
            ends.append(t)
            packets.append(current)
            current = b""
    if packets != [host.memory.read(addr, length) for addr, length in frames]:
        raise AssertionError("the frames read are not the bytes in host memory")
    # The completion stream is always ready, so the link is idle only when the reader has too
    # few requests outstanding; the rate across the link's busy period is the steady state.
    # The frames' delivery trails it by what the reassembly buffer holds (`lag`).
    busy = host.stats.last_completion_cycle - host.stats.first_completion_cycle + 1
    lag = ends[-1] - host.stats.last_completion_cycle
    return size * len(frames) / busy, lag


def measure_rx(width: int, size: int) -> float:
    """Writer payload bytes per cycle, as the host sees the frames' last TLPs arrive."""
    from partner.hdl.pcie.dma_write import DmaWriter, write_command_layout
    from partner.hdl.stream import packet_layout
    from partner.sim.models.pcie_host import StreamSink, StreamSource, pack

    dut = DmaWriter(width)
    host = _host(width, size)
    frames = _frames(size)
    wb = width // 8
    cmd = StreamSource(dut.cmd, random.Random(1))
    data = StreamSource(dut.data, random.Random(2))
    done = StreamSink(dut.done, random.Random(3))
    layout = packet_layout(wb)
    rng = random.Random(size)
    payloads = [rng.randbytes(length) for _, length in frames]
    for n, ((addr, length), payload) in enumerate(zip(frames, payloads, strict=True)):
        cmd.put(pack(write_command_layout(), addr=addr, length=length, id=n & 0xFF))
        chunks = [payload[i:i + wb] for i in range(0, length, wb)]
        data.put(*(pack(layout, data=int.from_bytes(c, "little"), nbytes=len(c), first=k == 0,
                        last=k == len(chunks) - 1) for k, c in enumerate(chunks)))

    async def config(ctx):
        _configure(ctx, dut, host)
        await ctx.tick()

    _simulate(dut, [config, cmd.run, data.run, done.run, *host.testbenches(req=dut.req)],
              lambda: len(done.items) == len(frames))
    for (addr, length), payload in zip(frames, payloads, strict=True):
        if host.memory.read(addr, length) != payload:
            raise AssertionError(f"frame at {addr:#x} not written correctly")
    return size * (len(frames) - 1) / (done.times[-1] - done.times[0])


def sweep(measure_tx, measure_rx):
    """Every width, direction and size: rates, their efficiency and the checks of sizes of 512
    bytes and more. A measure returns bytes per cycle, or (bytes per cycle, extra figure)."""
    efficiency, rates, extra, checks = {}, {}, {}, {}
    for width in WIDTHS:
        key = f"width_{width}"
        for direction, measure in (("tx", measure_tx), ("rx", measure_rx)):
            for size in SIZES:
                rate = measure(width, size)
                if isinstance(rate, tuple):
                    rate, extra.setdefault(key, {})[str(size)] = rate
                eff = rate / ceiling(size, width)
                efficiency.setdefault(key, {}).setdefault(direction, {})[str(size)] = round(eff, 4)
                rates.setdefault(key, {}).setdefault(direction, {})[str(size)] = round(rate, 3)
                if size >= 512:
                    checks[f"{direction}_w{width}_{size}"] = (eff, LIMIT, eff >= LIMIT)
    return efficiency, rates, extra, checks


def run() -> dict:
    efficiency, rates, drain, checks = sweep(measure_tx, measure_rx)
    return {
        "unit": "efficiency = payload bytes per cycle / link payload ceiling (TLP headers of "
                f"{HEADER_DW} dwords counted, MPS {MPS}); rates in payload bytes per cycle",
        "parameters": {"mps": MPS, "mrrs": MRRS, "rcb": RCB, "header_dw": HEADER_DW,
                       "frame_offset": OFFSET, "completion_latency_cycles": [100, 150]},
        "ceiling_bytes_per_cycle": {f"width_{w}": {str(s): round(ceiling(s, w), 3)
                                                   for s in SIZES} for w in WIDTHS},
        "rates": rates,
        "efficiency": efficiency,
        "tx_drain_cycles": drain,
        "checks": checks,
    }


if __name__ == "__main__":
    import json
    print(json.dumps(run(), indent=2))
