"""The whole card's DMA figures in simulated cycles: latency from the wire to the RX completion
and MSI-X interrupts per second with and without moderation (see bench/dma_card_tb.py).

Runs the Verilog of `partner.hdl.pcie.card.PcieCard` (XGMII ports, 64-bit TLP streams, 156.25
MHz) under cocotb with cocotbext-pcie's root complex and the real host driver.
"""

import json
import os
import tempfile
from pathlib import Path


def run() -> dict:
    from partner.hdl.pcie.card import PcieCard
    from partner.sim import verilator

    model = verilator.build(lambda: PcieCard(ports=2, rules=16, queues=2), name="card")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        model.run(Path(__file__).with_name("dma_card_tb.py"),
                  env={"PARTNER_BENCH_OUT": os.fspath(out)})
        return json.loads(out.read_text())
