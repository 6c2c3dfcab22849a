"""`SimPcieBus`: the host driver's `PcieBus` over cocotbext-pcie's root complex.

The driver is synchronous and runs in a thread started with `cocotb.task.bridge`; every method
here runs its part in the simulator with `cocotb.task.resume` and returns when it is done, in
simulated time. Bring-up goes through the root complex as a kernel's would, with no backdoor:
``rc.enumerate()`` (BARs assigned, Max_Payload_Size and Extended Tags configured),
``rc.find_device`` on the function the enumeration found with our vendor and device IDs,
``enable_device()`` (memory decoding), ``set_master()`` (Bus Master Enable), optionally
``set_readrq()`` (Max_Read_Request_Size) and ``alloc_irq_vectors()`` (MSI-X table programmed
through BAR0, then MSI-X enabled).

DMA memory comes from the root complex's memory pools: ``alloc_dma`` returns a `DmaBuffer`
whose view is a `memoryview` into the very memory the device's reads and writes reach, so pvecs
point straight into it. ``dma_above_4g`` takes it from a pool above 4 GiB instead, so that the
device's 64-bit addressing is exercised.

Interrupts: ``wait_irq(v)`` waits for MSI-X vector *v*'s message at the root complex (or returns
at once if it came since the last wait). A driver that polls instead asks for no vectors and
calls ``sleep`` to let simulated time pass between polls.
"""

from __future__ import annotations

import weakref

from cocotb.task import resume
from cocotb.triggers import First, Timer

from partner.errors import PartnerError
from partner.pcie.bar import BAR0_SIZE
from partner.pcie.bus import DmaBuffer, PcieBus

from .pcie import DEVICE_ID, VENDOR_ID

__all__ = ["PcieAccessError", "SimPcieBus"]

_HIGH_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_HIGH_BASE = 1 << 32
_HIGH_SIZE = 1 << 30


class PcieAccessError(PartnerError):
    """A BAR access failed: the device answered UR/CA, or did not answer in time."""


def _devices(bus):
    yield from bus.devices
    for child in bus.children:
        yield from _devices(child)


def _size_code(size: int, what: str) -> int:
    if size not in (128, 256, 512, 1024, 2048, 4096):
        raise ValueError(f"{what} {size} is not a PCIe size (128 .. 4096, a power of two)")
    return (size // 128).bit_length() - 1


class SimPcieBus(PcieBus):
    """One function of the simulated device, brought up through ``rc``.

    Call only from a thread started with `cocotb.task.bridge`, including the constructor.
    ``timeout_ns`` bounds every BAR read (simulated time), so a device that never completes
    fails the test instead of hanging it.
    """

    def __init__(self, rc, *, vectors: int = 1, max_read_request: int | None = None,
                 enumerate_bus: bool = True, vendor_id: int = VENDOR_ID, device_id: int = DEVICE_ID,
                 dma_above_4g: bool = False, timeout_ns: int = 200_000):
        self.rc = rc
        self.timeout_ns = timeout_ns
        if enumerate_bus:
            resume(rc.enumerate)()
        found = [d for d in _devices(rc.host_bridge.bus)
                 if (d.vendor_id, d.device_id) == (vendor_id, device_id)]
        if len(found) != 1:
            raise PcieAccessError(f"expected one function {vendor_id:04x}:{device_id:04x} on "
                                  f"the bus, found {len(found)}")
        self.dev = rc.find_device(found[0].pcie_id)
        if self.dev.bar_size[0] != BAR0_SIZE or self.dev.bar_window[0] is None:
            raise PcieAccessError(f"BAR0 of {self.dev.pcie_id} is {self.dev.bar_size[0]} bytes, "
                                  f"expected {BAR0_SIZE}")
        self.bar0 = self.dev.bar_window[0]
        resume(self.dev.enable_device)()
        resume(self.dev.set_master)()
        if max_read_request is not None:
            resume(self.dev.set_readrq)(_size_code(max_read_request, "max_read_request"))
        self.irq_vectors = 0
        if vectors:
            count = resume(self.dev.alloc_irq_vectors)(1, vectors)
            if count < 1:
                raise PcieAccessError(f"{self.dev.pcie_id}: MSI-X vectors could not be "
                                      f"allocated ({count})")
            self.irq_vectors = count
        #: take DMA memory from above 4 GiB (64-bit addresses); may change between allocations
        self.dma_above_4g = dma_above_4g
        self._buffers: dict[int, tuple] = {}

    # -- BAR0 --

    def _check(self, offset: int) -> None:
        if not 0 <= offset < BAR0_SIZE or offset % 4:
            raise ValueError(f"BAR0 offset {offset:#x}: dword-aligned offsets below "
                             f"{BAR0_SIZE:#x} only")

    def read32(self, offset: int) -> int:
        self._check(offset)
        return resume(self._read)(offset)

    async def _read(self, offset):
        try:
            return await self.bar0.read_dword(offset, timeout=self.timeout_ns, timeout_unit="ns")
        except Exception as error:  # cocotbext-pcie raises plain Exception for UR/CA/timeout
            raise PcieAccessError(f"BAR0 read at {offset:#x} failed: {error}") from error

    def write32(self, offset: int, value: int) -> None:
        self._check(offset)
        if not 0 <= value <= 0xFFFF_FFFF:
            raise ValueError(f"{value:#x} is not a 32-bit value")
        resume(self.bar0.write_dword)(offset, value)

    def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes of BAR0 in one request (multi-dword and partial reads)."""
        if not 0 <= offset <= offset + length <= BAR0_SIZE:
            raise ValueError(f"{length} bytes at {offset:#x} leave BAR0")
        return resume(self._read_bytes)(offset, length)

    async def _read_bytes(self, offset, length):
        try:
            return await self.bar0.read(offset, length, timeout=self.timeout_ns,
                                        timeout_unit="ns")
        except Exception as error:
            raise PcieAccessError(f"BAR0 read of {length} bytes at {offset:#x} failed: "
                                  f"{error}") from error

    def write(self, offset: int, data: bytes) -> None:
        """Write bytes to BAR0 as the root complex splits them (partial dwords included)."""
        if not 0 <= offset <= offset + len(data) <= BAR0_SIZE:
            raise ValueError(f"{len(data)} bytes at {offset:#x} leave BAR0")
        resume(self.bar0.write)(offset, bytes(data))

    # -- DMA memory --

    def _high_pool(self):
        pool = _HIGH_POOLS.get(self.rc)
        if pool is None:
            pool = self.rc.mem_address_space.create_pool(_HIGH_BASE, _HIGH_SIZE)
            _HIGH_POOLS[self.rc] = pool
        return pool

    def alloc_dma(self, size: int, align: int = 4096) -> DmaBuffer:
        if size <= 0:
            raise ValueError(f"DMA buffer size must be positive, not {size}")
        if align <= 0 or align & (align - 1):
            raise ValueError(f"alignment must be a power of two, not {align}")
        # The pools are buddy allocators: a block is aligned to its own (power-of-two) size.
        block = max(size, align)
        pool = self._high_pool() if self.dma_above_4g else self.rc.mem_pool
        region = pool.alloc_region(1 << (block - 1).bit_length())
        address = region.get_absolute_address(0)
        buffer = DmaBuffer(address, memoryview(region.mem)[:size])
        self._buffers[address] = (region, pool)
        return buffer

    def free_dma(self, buffer: DmaBuffer) -> None:
        entry = self._buffers.pop(buffer.address, None)
        if entry is None:
            raise ValueError(f"{buffer!r} was not allocated here, or was freed already")
        # cocotbext's pools have no release call: drop the region and give its block back.
        region, pool = entry
        pool.regions = [entry for entry in pool.regions if entry[3] is not region]
        pool.allocator.free(buffer.address - pool.get_absolute_address(0))

    # -- interrupts and time --

    def wait_irq(self, vector: int, timeout: float | None = None) -> bool:
        if not 0 <= vector < self.irq_vectors:
            raise ValueError(f"vector {vector}: this function has {self.irq_vectors} MSI-X "
                             "vectors (0: polling only)")
        return resume(self._wait_irq)(vector, timeout)

    async def _wait_irq(self, vector, timeout):
        event = self.dev.msi_vectors[vector].event
        if not event.is_set():
            if timeout is None:
                await event.wait()
            else:
                await First(event.wait(), Timer(max(1, round(timeout * 1e9)), unit="ns"))
        fired = event.is_set()
        event.clear()
        return fired

    def irq_fired(self, vector: int) -> bool:
        """Whether vector *v*'s message came since the last wait (without waiting or clearing)."""
        if not 0 <= vector < self.irq_vectors:
            raise ValueError(f"vector {vector}: this function has {self.irq_vectors} vectors")
        return self.dev.msi_vectors[vector].event.is_set()

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass (a polling driver's pause between polls)."""
        resume(self._sleep)(seconds)

    @staticmethod
    async def _sleep(seconds):
        await Timer(max(1, round(seconds * 1e9)), unit="ns")

    def close(self) -> None:
        if self.irq_vectors:
            resume(self.dev.free_irq_vectors)()
            self.irq_vectors = 0
        resume(self.dev.clear_master)()
