"""The whole card end to end (tests/test_card.py): Ethernet in and out through cocotbext-eth's
XGMII peers, the host through cocotbext-pcie's root complex, and the real host driver
(`partner.pcie.PcieDevice` over `partner.sim.pcie_bus.SimPcieBus`) running in a thread.

Nothing is poked from the side: the driver brings the function up through configuration space,
programs the flow table through BAR0, posts rings in root-complex memory and pulls what the DMA
engine wrote there.
"""

import os
import struct

import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge
from cocotb.triggers import ClockCycles
from cocotbext.eth import XgmiiFrame, XgmiiSink, XgmiiSource
from cocotbext.pcie.core import RootComplex

from partner.pcie import PcieDevice
from partner.pvec import Pvec
from partner.sim.pcie import PcieAdapter
from partner.sim.pcie_bus import SimPcieBus

PORTS = 2
VECTORS = 4
SEED = int(os.environ.get("CARD_SEED", "1"))
BACKPRESSURE = float(os.environ.get("CARD_BACKPRESSURE", "1.0"))


def udp(dport: int, payload: bytes, sport: int = 1234) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return (bytes.fromhex("020000000002020000000001" "0800") + ip
            + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


async def start(dut):
    Clock(dut.clk, 6.4, unit="ns").start()
    dut.rst.value = 1
    rc = RootComplex()
    adapter = PcieAdapter(dut, width=64, clock=dut.clk, msix_vectors=VECTORS, seed=SEED,
                          valid_probability=BACKPRESSURE, ready_probability=BACKPRESSURE)
    adapter.attach(rc)
    sources, sinks = [], []
    for p in range(PORTS):
        source = XgmiiSource(getattr(dut, f"phy_rx__{p}__rxd"), getattr(dut, f"phy_rx__{p}__rxc"),
                             dut.clk, dut.rst)
        source.enable_dic = True
        sources.append(source)
        sinks.append(XgmiiSink(getattr(dut, f"phy_tx__{p}__txd"),
                               getattr(dut, f"phy_tx__{p}__txc"), dut.clk, dut.rst))
    await ClockCycles(dut.clk, 8)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 8)
    return rc, adapter, sources, sinks


def open_driver(rc):
    bus = SimPcieBus(rc, vectors=VECTORS)
    return PcieDevice(bus, rx_log2=5, tx_log2=5, event_log2=5, buffers=256,
                      rx_moderation=(1, 0))


async def send(sources, port, frames):
    for frame in frames:
        await sources[port].send(XgmiiFrame.from_payload(frame))
    await sources[port].wait()


@cocotb.test()
async def flows_in_pvecs_out(dut):
    """Two flows opened with templates: each frame comes back by pull with its flow's key and its
    exact bytes; a frame no flow wants is dropped by the device; a multi-chunk pvec goes out."""
    rc, _adapter, sources, sinks = await start(dut)
    dev = await bridge(open_driver)(rc)
    dns = await bridge(dev.open)("eth/ipv4/udp", "dst_port=53")
    ntp = await bridge(dev.open)("eth/ipv4/udp", "dst_port=123")

    frames = [udp(53, b"query %d" % i + bytes(i * 37)) for i in range(6)]
    frames += [udp(123, bytes(range(256)) * 5 + b"t%d" % i) for i in range(3)]
    frames.append(udp(9, b"nobody listens"))
    await send(sources, 0, frames)
    await ClockCycles(dut.clk, 2000)

    def pull_all(expected):
        got = []
        while len(got) < expected:
            batch = dev.pull_many(64, timeout=200e-6)
            if not batch:
                break
            for message in batch:
                got.append((message.key, message.pvec.tobytes()))
                message.pvec.free()
        return got

    got = await bridge(pull_all)(9)
    # The wire pads short frames to 60 bytes (the XGMII source does as any MAC would).
    want = [(dns, f.ljust(60, b"\0")) for f in frames[:6]] + [(ntp, f) for f in frames[6:9]]
    assert sorted(got) == sorted(want), (len(got), len(want))

    # A pvec of three chunks at odd offsets of device buffers leaves port 1 as one frame.
    frame = udp(5000, bytes((7 * i) & 0xFF for i in range(900)))

    def push_three_chunks():
        pvec = Pvec()
        for piece, offset in ((frame[:13], 3), (frame[13:400], 1), (frame[400:], 5)):
            buffer = dev.alloc(offset + len(piece))
            buffer.chunks[0].view[offset:offset + len(piece)] = piece
            pvec.extend(buffer[offset:offset + len(piece)])
        assert len(pvec.chunks) == 3
        dev.push(ntp, {"port": 1}, pvec)
        return dev.stats["tx_copied"]

    assert await bridge(push_three_chunks)() == 0, "device buffers go out zero copy"
    for _ in range(200):
        await ClockCycles(dut.clk, 100)
        if not sinks[1].empty():
            break
    out = sinks[1].recv_nowait()
    assert out.check_fcs()
    assert bytes(out.get_payload()) == frame
    await bridge(dev.shutdown)()
