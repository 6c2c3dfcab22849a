"""The whole DMA engine's throughput against the PCIe link's payload ceiling.

`bench/dma_link.py` measures the data movers alone; this measures `DmaEngine` with its rings:
every frame also costs its descriptor reads and its completion entry, on the same link. For
frames of 64 .. 9000 bytes at stream widths 64 and 256:

- RX: single-chunk free descriptors posted ahead, frames offered by the core at one beat per
  cycle; the rate runs from the first frame's completion entry landing in host memory to the
  last one's.
- TX: single-chunk TX descriptors posted ahead; the rate runs from the first frame's last beat
  leaving the engine to the last one's.

The link, its ceiling and the host's latency are those of `bench/dma_link.py` (`ceiling`): MPS
256, MRRS 512, 4 header dwords per TLP, completions 100-150 cycles after the request, data 2
bytes past a 4 KiB boundary. Counts are simulated cycles (amaranth.sim), exact and repeatable.
"""

from .dma_link import HEADER_DW, MPS, MRRS, OFFSET, sweep

BYTES_PER_POINT = 48000
LOG2 = 10  # ring entries: more than any point posts


def _rig(width):
    from partner.sim.engine_rig import Rig

    return Rig(width=width, rx_rings=1, tx_rings=1, seed=1, mps=MPS, mrrs=MRRS,
               delay=(100, 150), read_timeout=100_000,
               host_options={"header_dw": HEADER_DW, "largest_completions": True,
                             "reorder": 0.5})


def _count(size):
    count = max(32, BYTES_PER_POINT // size)
    if count >= 1 << LOG2:
        raise ValueError(f"{count} frames do not fit a ring of {1 << LOG2} entries")
    return count


def measure_rx(width: int, size: int) -> float:
    """Payload bytes per cycle between the first and the last completion entry."""
    rig = _rig(width)
    count = _count(size)
    times = []

    async def scenario(ctx, rig):
        await rig.start(ctx)
        await rig.ring(ctx, "rx", 0, log2=LOG2)
        buffers = [rig.alloc(size, offset=OFFSET) for _ in range(count)]
        for address in buffers:
            rig.post("rx", 0, [{"address": address, "length": size}])
        await rig.doorbell(ctx, "rx", 0)
        frames = [bytes([n & 0xFF]) * size for n in range(count)]
        for frame in frames:
            rig.frame(0, frame)
        for _ in range(count):
            entry = None
            while entry is None:
                await ctx.tick()
                entry = rig.poll_rx(0)
            if entry["status"] != 0 or entry["length"] != size:
                raise AssertionError(f"frame {len(times)}: completion {entry}")
            times.append(rig.cycle)
        for address, frame in zip(buffers, frames, strict=True):
            if rig.memory.read(address, size) != frame:
                raise AssertionError(f"frame at {address:#x} not written correctly")

    rig.run(scenario)
    return size * (count - 1) / (times[-1] - times[0])


def measure_tx(width: int, size: int) -> float:
    """Payload bytes per cycle between the first and the last frame leaving the engine."""
    rig = _rig(width)
    count = _count(size)
    frames = [bytes([n & 0xFF, 0x5A]) * (size // 2) + b"\xa5" * (size % 2) for n in range(count)]

    async def scenario(ctx, rig):
        await rig.start(ctx)
        await rig.write(ctx, "tx_max_length", max(size, 1514))
        await rig.ring(ctx, "tx", 0, log2=LOG2)
        for frame in frames:
            address = rig.alloc(size, offset=OFFSET)
            rig.memory.write(address, frame)
            rig.post("tx", 0, [{"address": address, "length": size, "port": 0, "flow": 0,
                                "total_length": size}])
        await rig.doorbell(ctx, "tx", 0)
        beats = count * -(-size // rig.wb)
        await rig.wait(ctx, lambda: len(rig.tx_sink.items) == beats, count * size + 100_000,
                       "every frame sent")

    rig.run(scenario)
    sent = rig.sent()
    if [data for *_, data in sent] != frames:
        raise AssertionError("the frames sent are not the frames posted")
    ends = _frame_ends(rig)
    return size * (count - 1) / (ends[-1] - ends[0])


def _frame_ends(rig):
    """Cycles at which the TX sink took each frame's last beat."""
    from partner.hdl.core import host_tx_layout
    from partner.hdl.stream import packet_layout

    lay, beat_lay = host_tx_layout(rig.wb), packet_layout(rig.wb)
    beat_offset = lay["beat"].offset
    last = beat_lay["last"].offset
    return [t for raw, t in zip(rig.tx_sink.items, rig.tx_sink.times, strict=True)
            if (raw >> (beat_offset + last)) & 1]


def run() -> dict:
    efficiency, rates, _, checks = sweep(measure_tx, measure_rx)
    return {
        "unit": "efficiency = payload bytes per cycle / link payload ceiling of bench/dma_link.py "
                "(descriptor reads and completion entries share the link); rates in payload "
                "bytes per cycle",
        "parameters": {"mps": MPS, "mrrs": MRRS, "header_dw": HEADER_DW, "frame_offset": OFFSET,
                       "completion_latency_cycles": [100, 150], "descriptor_chunks": 1},
        "rates": rates,
        "efficiency": efficiency,
        "checks": checks,
    }


if __name__ == "__main__":
    import json
    print(json.dumps(run(), indent=2))
