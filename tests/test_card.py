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
@pytest.mark.parametrize(("link", "backpressure"), [
    ("512/512", 1.0),
    ("128/128/split", 0.6),  # smallest MPS and MRRS, completions split at every RCB
    ("256/512", 0.6),
])
def test_card(card_model, link, backpressure):
    """All card benches under one link setting; with backpressure < 1 every PCIe stream stalls
    at random (valid and ready high in that share of cycles)."""
    card_model.run(BENCH, seed=1, env={"CARD_LINK": link,
                                       "CARD_BACKPRESSURE": str(backpressure)})


@pytest.mark.cocotb
def test_card_demo_delivers_each_flow_what_scapy_says_it_should(card_model, tmp_path):
    """`partner sim card` end to end: per flow, the frames pulled over DMA plus those its queue
    dropped early are exactly those scapy assigns to the flow's template, and flows.pcapng holds
    the pulled ones on one interface each."""
    from collections import Counter

    from partner.errors import EndOfStream
    from partner.partners.pcap import PcapReader
    from partner.sim.card_demo import DEMO_FLOWS, card_demo, expected_flow

    results = card_demo(tmp_path, frames=80, seed=3)
    rows = {row["flow"]: row for row in results["flows"]}
    assert set(rows) == {name for name, _, _ in DEMO_FLOWS}
    assert all(row["frames"] + row["dropped_early"] == row["expected_frames"] > 0
               for row in rows.values()), rows
    assert all(row["frames"] > 0 for row in rows.values()), rows
    assert results["pushed"] == {"chunks": 3, "bytes": results["pushed"]["bytes"], "port": 1,
                                 "on_the_wire": True}

    reader = PcapReader(str(tmp_path / "flows.pcapng"))
    reader.open("eth")
    by_interface = Counter()
    try:
        while True:
            message = reader.pull()
            by_interface[message.attrs["port"]] += 1
            assert expected_flow(message.pvec.tobytes()) == DEMO_FLOWS[message.attrs["port"]][0]
    except EndOfStream:
        pass
    reader.shutdown()
    assert [by_interface[i] for i in range(len(DEMO_FLOWS))] == [
        rows[name]["frames"] for name, _, _ in DEMO_FLOWS]
