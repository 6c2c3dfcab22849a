"""RequestArbiter in amaranth.sim: whole TLPs, per-source order, round robin, no bubbles."""

import gc
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from partner.hdl.pcie.request_arbiter import RequestArbiter
from partner.hdl.pcie.tlp import tlp_layout
from partner.sim.models.pcie_host import StreamSink, StreamSource, tlp_beats, unpack


def make_tlps(rng, width, source, count):
    """TLPs whose header names the source and a sequence number; 0..9 payload dwords."""
    tlps = []
    for seq in range(count):
        payload = rng.randbytes(4 * rng.randint(0, 9))
        tlps.append((source << 16 | seq, payload))
    return tlps


def run(width, n, count, rates, seed=1):
    rng = random.Random(seed)
    layout = tlp_layout(width)
    dut = RequestArbiter(width, n)
    sources = [StreamSource(dut.src[i], random.Random(seed + 10 + i), rates[0]) for i in range(n)]
    sent = []
    for i, src in enumerate(sources):
        tlps = make_tlps(rng, width, i, count)
        sent.append(tlps)
        for hdr, payload in tlps:
            src.put(*tlp_beats(layout, width, hdr, payload))
    sink = StreamSink(dut.out, random.Random(seed + 99), rates[1])
    total = sum(len(tlp_beats(layout, width, h, p)) for tlps in sent for h, p in tlps)

    async def main(ctx):
        for _ in range(20 * total + 100):
            await ctx.tick()
            if len(sink.items) == total:
                return
        raise AssertionError(f"{len(sink.items)} of {total} beats after the time limit")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(main)
    for tb in [s.run for s in sources] + [sink.run]:
        sim.add_testbench(tb, background=True)
    sim.run()

    # Reassemble: a TLP's beats must be contiguous (sop ... eop with nothing in between).
    received, beats = [], []
    for raw in sink.items:
        beat = unpack(layout, raw)
        assert beat["sop"] == (not beats), "beats of two TLPs interleaved"
        beats.append(beat)
        if beat["eop"]:
            wb = width // 8
            payload = b"".join(b["data"].to_bytes(wb, "little")[:4 * bin(b["strb"]).count("1")]
                               for b in beats)
            received.append((beats[0]["hdr"], payload))
            beats = []
    return sent, received, sink.times


@pytest.mark.parametrize("width", [64, 256])
def test_random_traffic_whole_tlps_in_source_order(width):
    sent, received, _ = run(width, 3, 25, rates=(0.5, 0.6), seed=width)
    for i, tlps in enumerate(sent):
        assert [t for t in received if t[0] >> 16 == i] == tlps


def test_backlogged_sources_round_robin_without_idle_cycles():
    _, received, times = run(64, 3, 12, rates=(1.0, 1.0))
    order = [hdr >> 16 for hdr, _ in received]
    assert order == [0, 1, 2] * 12
    # One beat every cycle from the first to the last: no idle cycle between TLPs.
    assert times[-1] - times[0] == len(times) - 1


def test_single_source_passes_through():
    sent, received, times = run(128, 1, 10, rates=(1.0, 1.0))
    assert received == sent[0]
    assert times[-1] - times[0] == len(times) - 1


def test_needs_a_source():
    with warnings.catch_warnings():  # the rejected instance is never elaborated
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match="at least one source"):
            RequestArbiter(64, 0)
        gc.collect()
