"""The card end to end: the XGMII device core behind the PCIe completer, MSI-X and DMA engine,
driven by the real host driver through cocotbext-pcie's root complex (tests/cocotb/card_tb.py)."""

from pathlib import Path

import pytest

from partner.hdl.pcie.card import PcieCard
from partner.sim import verilator

BENCH = Path(__file__).parent / "cocotb" / "card_tb.py"


@pytest.fixture(scope="module")
def card_model():
    return verilator.build(lambda: PcieCard(ports=2, rules=16, queues=2), name="card")


@pytest.mark.cocotb
def test_flows_in_pvecs_out(card_model):
    card_model.run(BENCH, seed=1)
