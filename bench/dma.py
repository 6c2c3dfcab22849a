"""The PCIe host adapter's figures (build/bench/dma.json), gathered from their benchmarks.

- `efficiency` (bench/dma_link.py, simulated cycles): DMA read (TX) and write (RX) payload
  throughput divided by the TLP link's payload ceiling, frames of 64 .. 9000 bytes at stream
  widths 64 and 256; limit 0.90 for frames of 512 bytes and more.
- `engine_efficiency` (bench/dma_engine.py, simulated cycles): the same ratio for the whole
  DMA engine, whose descriptor reads and completion entries share the link with the data;
  limit 0.90 for frames of 512 bytes and more.
- `host_batch_speedup` (bench/dma_host.py, wall clock, same run): frames per second of
  `pull_many(256)` over one `pull()` at a time on the memory-only ring model; limit 2.0.
- `wire_to_completion_latency_cycles` and `interrupts_per_second` (bench/dma_card.py, simulated
  cycles of the whole card under cocotbext-pcie's root complex with the real driver): from a
  frame's end on the wire to its RX completion entry leaving the card, and MSI-X messages per
  second during a burst with and without interrupt moderation (no limits).

Each part keeps its own details under its name; their checks are this file's checks.
"""

from . import dma_card, dma_engine, dma_host, dma_link


def run() -> dict:
    link = dma_link.run()
    engine = dma_engine.run()
    host = dma_host.run()
    card = dma_card.run()
    checks = {f"efficiency_{name}": value for name, value in link.get("checks", {}).items()}
    checks.update({f"engine_efficiency_{name}": value
                   for name, value in engine.get("checks", {}).items()})
    checks.update(host["checks"])
    return {
        "efficiency": link["efficiency"],
        "engine_efficiency": engine["efficiency"],
        "host_batch_speedup": host["host_batch_speedup"],
        "wire_to_completion_latency_cycles": card["latency_cycles"],
        "interrupts_per_second": card["interrupts_per_second"],
        "link": {k: v for k, v in link.items() if k != "checks"},
        "engine": {k: v for k, v in engine.items() if k != "checks"},
        "host": {k: v for k, v in host.items() if k != "checks"},
        "checks": checks,
    }
