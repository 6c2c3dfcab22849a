"""cocotb side of bench/dma_card.py: the whole card under the root complex, real host driver.

Watches the card's outgoing TLP stream (``req_out``, the accepted sop beats) for the memory
writes that land in the RX completion ring (a completion) or at an MSI-X address (an interrupt).

- latency: a frame at a time, idle link; from the end of the frame on the wire (cocotbext-eth's
  ``sim_time_end``) to the completion entry's write leaving the card, in card clock cycles.
- interrupts: a burst of back-to-back frames; MSI-X messages per simulated second while the burst
  lasts, with moderation (32 frames or 50 us) and without (every completion).
"""

import json
import os
import statistics
import struct
from pathlib import Path

import cocotb
from cocotb.task import bridge
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time, get_time_from_sim_steps
from cocotbext.eth import XgmiiFrame

from partner.hdl.pcie.tlp import tlp_layout
from partner.sim.card import CLOCK_NS, CardHarness
from partner.tlp import TlpKind

BEAT = tlp_layout(64)


def udp(dport: int, size: int) -> bytes:
    payload = bytes(size - 42)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return (bytes.fromhex("020000000002020000000001" "0800") + ip
            + struct.pack("!HHHH", 1234, dport, 8 + len(payload), 0) + payload)


def ns(steps: int) -> float:
    return get_time_from_sim_steps(steps, "ns")


class WriteMonitor:
    """Times (ns) of the card's memory writes into given address ranges."""

    def __init__(self, dut):
        self.dut, self.ranges, self.hits = dut, {}, {}
        cocotb.start_soon(self._run())

    def watch(self, name, start, end):
        self.ranges[name] = (start, end)
        self.hits[name] = []

    async def _run(self):
        dut = self.dut
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if not (dut.req_out__valid.value and dut.req_out__ready.value):
                continue
            beat = BEAT.from_bits(int(dut.req_out__payload.value))
            if not beat.sop:
                continue
            hdr = int(beat.hdr)
            kind = (hdr >> 24) & 0xFF
            if kind not in (TlpKind.MWR32, TlpKind.MWR64):
                continue
            if kind == TlpKind.MWR64:
                address = ((hdr >> 64) & 0xFFFF_FFFF) << 32 | ((hdr >> 96) & 0xFFFF_FFFC)
            else:
                address = (hdr >> 64) & 0xFFFF_FFFC
            now = get_sim_time("ns")
            for name, (start, end) in self.ranges.items():
                if start <= address < end:
                    self.hits[name].append(now)


@cocotb.test()
async def dma_card(dut):
    card = CardHarness(dut)
    await card.start()
    monitor = WriteMonitor(dut)
    results = {"latency_cycles": {}, "interrupts_per_second": {}}
    dev = await bridge(card.open_driver)(rx_moderation=(1, 0), rx_log2=7, buffers=512)
    await bridge(dev.open)("eth/ipv4/udp", "dst_port=4000")
    ring = dev.rx[0][1]
    monitor.watch("completion", ring.address, ring.address + ring.size * ring.entry_bytes)
    vector = dev.bus.dev.msi_vectors[dev.vectors["rx"]]
    monitor.watch("interrupt", vector.addr, vector.addr + 4)

    def drain():
        while batch := dev.pull_many(256, timeout=100e-6):
            for message in batch:
                message.pvec.free()

    for moderation in ((1, 0), (32, 50)):
        await bridge(dev.ctl)(None, "moderation", rx=moderation)
        if moderation == (1, 0):
            for size in (64, 1518):
                samples = []
                for _ in range(8):
                    done = len(monitor.hits["completion"])
                    sent = []  # the source reports the frame it put on the wire, with its times
                    frame = XgmiiFrame.from_payload(udp(4000, size - 4), tx_complete=sent.append)
                    await card.sources[0].send(frame)
                    await card.sources[0].wait()
                    frame = sent[0]
                    for _ in range(200):
                        await ClockCycles(dut.clk, 10)
                        if len(monitor.hits["completion"]) > done:
                            break
                    wrote = monitor.hits["completion"][done]
                    samples.append(round((wrote - ns(frame.sim_time_end)) / CLOCK_NS))
                    await bridge(drain)()
                results["latency_cycles"][str(size)] = {
                    "min": min(samples), "median": statistics.median(samples),
                    "max": max(samples)}

        count, size = 256, 256
        monitor.hits["interrupt"].clear()
        frames = []
        puller = cocotb.start_soon(bridge(drain)())
        for _ in range(count):
            await card.sources[0].send(XgmiiFrame.from_payload(udp(4000, size - 4),
                                                               tx_complete=frames.append))
        await card.sources[0].wait()
        await ClockCycles(dut.clk, 2000)
        await puller
        span_ns = ns(frames[-1].sim_time_end) - ns(frames[0].sim_time_start)
        irqs = len(monitor.hits["interrupt"])
        results["interrupts_per_second"]["moderated" if moderation[0] > 1 else "every_frame"] = {
            "frames": count, "frame_bytes": size, "interrupts": irqs,
            "per_second": irqs / (span_ns * 1e-9)}
    await bridge(dev.shutdown)()
    Path(os.environ["PARTNER_BENCH_OUT"]).write_text(json.dumps(results, indent=2))
