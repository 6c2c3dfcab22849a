"""The BAR0 completer and MSI-X behind cocotbext-pcie's root complex (tests/test_pcie_completer.py).

Everything the host does goes through the root complex: enumeration, BAR0 accesses from the
real driver code (`SimPcieBus`, `DeviceControl`) running in a thread, MSI-X messages delivered to
the root complex's MSI region. The adapter checks every TLP the device sends. Environment:
PCIE_WIDTH, PCIE_VECTORS, PCIE_MPS, PCIE_MRRS (bytes), PCIE_BACKPRESSURE (probability of a
valid/ready in a cycle), PCIE_SEED.
"""

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, with_timeout
from cocotbext.pcie.core import RootComplex
from cocotbext.pcie.core.caps import PciCapId
from cocotbext.pcie.core.tlp import CplStatus, Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId
from pcie_top import CORE_CONFIG, FLAGS, TEST_REGISTERS

from partner.device_control import DeviceControl
from partner.pcie.bar import BAR0, MSIX_ENTRY_BYTES
from partner.sim.pcie import PcieAdapter, PcieRuleError
from partner.sim.pcie_bus import PcieAccessError, SimPcieBus

WIDTH = int(os.environ.get("PCIE_WIDTH", "64"))
VECTORS = int(os.environ.get("PCIE_VECTORS", "4"))
MPS = int(os.environ.get("PCIE_MPS", "256"))
MRRS = int(os.environ.get("PCIE_MRRS", "512"))
BACKPRESSURE = float(os.environ.get("PCIE_BACKPRESSURE", "1.0"))
SEED = int(os.environ.get("PCIE_SEED", "1"))
EXTRA_BARS = ((2, 4096, False), (4, 256, True))  # BARs the gateware does not implement

DMA = BAR0.dma.offset
SCRATCH = DMA + TEST_REGISTERS["scratch"].offset
IRQ = DMA + TEST_REGISTERS["irq"].offset
FLAG_REG = DMA + TEST_REGISTERS["flags"].offset
PENDING = DMA + TEST_REGISTERS["pending"].offset
TABLE = BAR0.msix_table.offset
PBA = BAR0.msix_pba.offset
TIMEOUT = 4e-6  # seconds of simulated time for an MSI-X message to arrive


def code(size):
    return (size // 128).bit_length() - 1


async def start(dut, *, seed=SEED, raise_violations=True):
    Clock(dut.clk, 4, unit="ns").start()
    dut.rst.value = 1
    rc = RootComplex()
    rc.max_payload_size = code(MPS)  # the root port's; enumeration gives the device the minimum
    adapter = PcieAdapter(dut, width=WIDTH, clock=dut.clk, msix_vectors=VECTORS, seed=seed,
                          valid_probability=BACKPRESSURE, ready_probability=BACKPRESSURE,
                          max_payload_size=512, extra_bars=EXTRA_BARS,
                          raise_violations=raise_violations)
    adapter.attach(rc)
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    return rc, adapter


def flags(bus):
    return FLAGS.unpack(bus.read32(FLAG_REG))


@cocotb.test()
async def bring_up_and_register_windows(dut):
    rc, adapter = await start(dut)
    rng = random.Random(SEED)

    def driver():
        bus = SimPcieBus(rc, vectors=VECTORS, max_read_request=MRRS)
        assert bus.irq_vectors == VECTORS
        # The device core's own driver binds over PCIe: ident, version and config read back.
        control = DeviceControl(bus)
        assert (control.ports, control.rules, control.tx_flows) == (
            CORE_CONFIG["ports"], CORE_CONFIG["rules"], CORE_CONFIG["tx_flows"])
        control.set_mtu(9000)
        assert control.read("mtu") == 9000
        assert bus.read32(0xFFC) == 0  # past the core's registers: unmapped, reads 0

        model = [0] * 4
        reads = 1 + 3 + 1 + 1  # alloc_irq_vectors' flush read, DeviceControl's, mtu, 0xFFC
        for _ in range(40):
            index = rng.randrange(4)
            if rng.random() < 0.5:
                model[index] = rng.getrandbits(32)
                bus.write32(SCRATCH + 4 * index, model[index])
            else:
                assert bus.read32(SCRATCH + 4 * index) == model[index]
                reads += 1
        raw = b"".join(v.to_bytes(4, "little") for v in model)
        assert bus.read(SCRATCH, 16) == raw  # one 4-dword read
        assert bus.read(SCRATCH + 1, 6) == raw[1:7]  # partial first and last byte enables
        assert bus.read(SCRATCH + 6, 1) == raw[6:7]

        # The MSI-X table holds what alloc_irq_vectors wrote through BAR0.
        for v in range(VECTORS):
            entry = [bus.read32(TABLE + MSIX_ENTRY_BYTES * v + 4 * k) for k in range(4)]
            vector = bus.dev.msi_vectors[v]
            assert entry == [vector.addr & 0xFFFF_FFFF, vector.addr >> 32, vector.data, 0], v

        # A write of part of a dword is ignored and flagged, never merged.
        assert flags(bus) == {"unsupported": 0, "too_long": 0, "partial_write": 0}
        bus.write(SCRATCH + 4, b"\xAA\xBB")
        assert bus.read32(SCRATCH + 4) == model[1]
        assert flags(bus)["partial_write"] == 1
        assert flags(bus)["partial_write"] == 0  # clear on read
        reads += 3 + 4 * VECTORS + 4
        return bus, reads

    bus, reads = await bridge(driver)()
    function = adapter.function
    assert int(dut.config__max_payload.value) == function.pcie_cap.max_payload_size == code(MPS)
    assert int(dut.config__max_read_request.value) == code(MRRS)
    assert int(dut.config__id.value) == int(function.pcie_id) == int(bus.dev.pcie_id)
    assert int(dut.config__bus_master.value) == 1 and int(dut.config__msix_enable.value) == 1
    counts = adapter.checker.counts
    assert counts["completions"] == reads and counts["error_completions"] == 0, (counts, reads)


@cocotb.test()
async def msix_delivery_masking_and_pending_bits(dut):
    rc, adapter = await start(dut, seed=SEED + 1)

    def driver():
        bus = SimPcieBus(rc, vectors=VECTORS)
        for v in range(VECTORS):
            bus.write32(IRQ, 1 << v)
            assert bus.wait_irq(v, TIMEOUT), f"vector {v} did not fire"
            assert not any(bus.irq_fired(u) for u in range(VECTORS))

        # A masked vector pends; unmasking sends it (§6.1.4.5).
        control = TABLE + MSIX_ENTRY_BYTES * 1 + 12
        bus.write32(control, 1)
        bus.write32(IRQ, 0b10)
        assert not bus.wait_irq(1, TIMEOUT / 4)
        assert bus.read32(PBA) == 0b10 and bus.read32(PENDING) == 0b10
        bus.write32(control, 0)
        assert bus.wait_irq(1, TIMEOUT)
        assert bus.read32(PBA) == 0

        # The Function Mask (Message Control bit 14, config space) holds every vector.
        message_control = resume(bus.dev.capability_read_word)(PciCapId.MSIX, 2)
        resume(bus.dev.capability_write_word)(PciCapId.MSIX, 2, message_control | 0x4000)
        everything = (1 << VECTORS) - 1
        bus.write32(IRQ, everything)
        bus.sleep(TIMEOUT / 4)
        assert not any(bus.irq_fired(v) for v in range(VECTORS))
        assert bus.read32(PBA) == everything
        resume(bus.dev.capability_write_word)(PciCapId.MSIX, 2, message_control)
        for v in range(VECTORS):
            assert bus.wait_irq(v, TIMEOUT), f"vector {v} lost under the function mask"
        assert bus.read32(PBA) == 0

    await bridge(driver)()
    assert adapter.checker.counts["msix"] == 2 * VECTORS + 1


@cocotb.test()
async def polling_without_vectors(dut):
    """A driver that asks for no vectors polls: MSI-X stays disabled and no message is sent."""
    rc, adapter = await start(dut, seed=SEED + 2)

    def driver():
        bus = SimPcieBus(rc, vectors=0)
        assert bus.irq_vectors == 0
        try:
            bus.wait_irq(0, TIMEOUT)
        except ValueError as error:
            assert "polling" in str(error)
        else:
            raise AssertionError("wait_irq without vectors must refuse")
        bus.write32(IRQ, 1)
        bus.sleep(TIMEOUT / 4)
        assert bus.read32(PENDING) == 0  # disabled: the event is not even latched
        bus.write32(SCRATCH, 0x600D)
        assert bus.read32(SCRATCH) == 0x600D  # polled register access still works
        assert int(dut.config__bus_master.value) == 1
        bus.close()  # gives up bus mastering, through configuration space

    await bridge(driver)()
    assert adapter.checker.counts["msix"] == 0
    assert int(dut.config__msix_enable.value) == 0
    assert int(dut.config__bus_master.value) == 0 and not adapter.function.bus_master_enable


@cocotb.test()
async def refused_requests_complete_with_ur_or_ca(dut):
    rc, adapter = await start(dut, seed=SEED + 3)

    def driver():
        bus = SimPcieBus(rc, vectors=1)
        dev = bus.dev
        for bar, what in ((2, "memory BAR2"), (4, "I/O BAR4")):
            try:
                resume(dev.bar_window[bar].read_dword)(0, timeout=20_000, timeout_unit="ns")
            except Exception as error:  # cocotbext's "Unsuccessful completion"
                assert "Unsuccessful" in str(error), (what, error)
            else:
                raise AssertionError(f"a read of {what} must fail")
        assert flags(bus) == {"unsupported": 1, "too_long": 0, "partial_write": 0}
        resume(dev.bar_window[2].write_dword)(0, 5)  # posted: dropped, flagged
        assert flags(bus)["unsupported"] == 1

        # A poisoned read of BAR0 (§2.7.2.2).
        request = Tlp()
        request.fmt_type = TlpType.MEM_READ_64 if dev.bar_addr[0] >> 32 else TlpType.MEM_READ
        request.requester_id = PcieId(0, 0, 0)
        request.set_addr_be(dev.bar_addr[0] + SCRATCH, 4)
        request.ep = True
        completions = resume(rc.perform_nonposted_operation)(request, 20_000, "ns")
        assert [c.status for c in completions] == [CplStatus.UR]
        assert flags(bus)["unsupported"] == 1

        # Longer than a completer without splitting supports: Completer Abort.
        try:
            bus.read(DMA, 256)
        except PcieAccessError:
            pass
        else:
            raise AssertionError("a 256-byte read of BAR0 must be refused")
        assert flags(bus) == {"unsupported": 0, "too_long": 1, "partial_write": 0}
        bus.write32(SCRATCH, 0x5AFE)
        assert bus.read32(SCRATCH) == 0x5AFE  # and the completer still works

    await bridge(driver)()
    assert adapter.checker.counts["error_completions"] == 4


# --- the device's own requests: the probe requester against the adapter ------------------------

PROBE = {name: DMA + TEST_REGISTERS[name].offset for name in (
    "probe_address", "probe_length", "probe_go", "probe_count", "probe_sum", "probe_status")}


def probe(bus, address, length, tag, *, completions=None):
    """Have the device read `length` dwords at `address`; (completions, dwords, sum, status)."""
    bus.write32(PROBE["probe_address"], address & 0xFFFF_FFFF)
    bus.write32(PROBE["probe_address"] + 4, address >> 32)
    bus.write32(PROBE["probe_length"], length)
    bus.write32(PROBE["probe_go"], tag)
    for _ in range(200):
        # Status before count: an error completion updates both in one cycle.
        status = bus.read32(PROBE["probe_status"])
        count = bus.read32(PROBE["probe_count"])
        if count & 0xFFFF >= length or status != 0:
            break
    else:
        raise AssertionError(f"probe read of {length} dwords at {address:#x} never completed")
    return count >> 16, count & 0xFFFF, bus.read32(PROBE["probe_sum"]), status


def pieces(address, nbytes, boundary):
    """How many `boundary`-aligned blocks the bytes [address, address + nbytes) touch."""
    return (address + nbytes - 1) // boundary - address // boundary + 1


@cocotb.test()
async def device_reads_host_memory_through_the_adapter(dut):
    """Completions split as the root complex likes (and on every RCB), 32- and 64-bit addresses,
    and UR/CA completions injected in place of the root complex's."""
    rc, adapter = await start(dut, seed=SEED + 4)
    rng = random.Random(SEED + 4)

    def driver():
        bus = SimPcieBus(rc, vectors=1, max_read_request=MRRS)
        low = bus.alloc_dma(4096)
        bus.dma_above_4g = True
        high = bus.alloc_dma(4096)
        assert low.address < 1 << 32 <= high.address
        for buffer in (low, high):
            buffer.view[:] = rng.randbytes(buffer.size)
        tag = 0
        for split in (False, True):
            rc.split_on_all_rcb = split
            for buffer in (low, high):
                for _ in range(6):
                    length = rng.randint(1, MRRS // 4)
                    offset = 4 * rng.randrange((4096 - 4 * length) // 4 + 1)
                    got = probe(bus, buffer.address + offset, length, tag)
                    tag = (tag + 1) % 32
                    data = bytes(buffer.view[offset:offset + 4 * length])
                    total = sum(int.from_bytes(data[i:i + 4], "little")
                                for i in range(0, len(data), 4)) & 0xFFFF_FFFF
                    assert got[1:] == (length, total, 0), (split, length, offset, got)
                    if split:
                        assert got[0] == pieces(buffer.address + offset, 4 * length, 64)
                    else:
                        assert got[0] >= 1
        for status in (CplStatus.UR, CplStatus.CA):
            adapter.inject_completion_errors(status)
            assert probe(bus, low.address, 8, tag) == (1, 0, 0, int(status))
            tag += 1
        # No completion at all: the read never finishes and its tag is free again.
        adapter.inject_completion_errors(None)
        bus.write32(PROBE["probe_length"], 2)
        bus.write32(PROBE["probe_go"], tag)
        bus.sleep(1e-6)
        assert bus.read32(PROBE["probe_count"]) == 0 and bus.read32(PROBE["probe_status"]) == 0
        assert probe(bus, low.address, 1, tag)[1:3] == (1, int.from_bytes(low.view[:4], "little"))
        bus.free_dma(low)
        bus.free_dma(high)

    await bridge(driver)()
    assert adapter.checker.counts["reads"] == 28 and not adapter.checker.device_reads


async def provoke(dut, seed, send, rule):
    """Run `send` (a driver making the device break a rule) and expect the adapter to object."""
    rc, adapter = await start(dut, seed=seed, raise_violations=False)
    await bridge(send)(rc, adapter)
    await with_timeout(adapter.violation.wait(), 2, "us")
    assert isinstance(adapter.error, PcieRuleError) and rule in str(adapter.error), adapter.error


@cocotb.test()
async def a_read_longer_than_mrrs_is_caught(dut):
    def send(rc, adapter):
        bus = SimPcieBus(rc, vectors=1, max_read_request=128)
        buffer = bus.alloc_dma(4096)
        bus.write32(PROBE["probe_address"], buffer.address)
        bus.write32(PROBE["probe_length"], 33)  # 132 bytes > 128
        bus.write32(PROBE["probe_go"], 1)

    await provoke(dut, SEED + 5, send, "exceeds Max_Read_Request_Size 128")


@cocotb.test()
async def a_tag_beyond_the_limit_is_caught(dut):
    def send(rc, adapter):
        bus = SimPcieBus(rc, vectors=1)  # Extended Tags are not offered: tags 0..31
        bus.write32(PROBE["probe_length"], 1)
        bus.write32(PROBE["probe_go"], 32)

    await provoke(dut, SEED + 6, send, "tag 32 outside the 32 tags")


@cocotb.test()
async def a_request_before_bus_master_enable_is_caught(dut):
    def send(rc, adapter):
        resume(rc.enumerate)()
        dev = rc.find_device(adapter.function.pcie_id)
        resume(dev.enable_device)()  # memory decoding, but no set_master()
        bar = dev.bar_window[0]
        resume(bar.write_dword)(PROBE["probe_length"], 1)
        resume(bar.write_dword)(PROBE["probe_go"], 1)

    await provoke(dut, SEED + 7, send, "Bus Master Enable is clear")
