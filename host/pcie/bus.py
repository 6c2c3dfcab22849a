"""What the PCIe host driver needs from below: BAR0 access, DMA memory, interrupts.

The ring and flow logic (`partner.pcie`) is written against `PcieBus` only, so the same driver
runs on every backend: the simulated device (cocotbext-pcie's root complex, `partner.sim.pcie`),
Linux VFIO (a later backend), or a memory-only model of the device for host-side measurements.

All methods are synchronous. A cocotb backend calls into the simulator with
`cocotb.task.resume` and the driver runs in a thread started by `cocotb.task.bridge`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

__all__ = ["DmaBuffer", "PcieBus"]


class DmaBuffer:
    """A piece of host memory the device can reach by DMA.

    `address` is the bus address the device uses, `view` a writable `memoryview` of the same
    bytes for the host (pvecs point into it: zero copy), `size` its length in bytes.
    """

    __slots__ = ("address", "size", "view")

    def __init__(self, address: int, view: memoryview):
        if view.readonly:
            raise ValueError("a DMA buffer's view must be writable")
        self.address = address
        self.view = view.cast("B")
        self.size = len(self.view)

    def __repr__(self):
        return f"DmaBuffer(address={self.address:#x}, size={self.size})"


class PcieBus(ABC):
    """One PCIe function, brought up (enabled, bus master) and ready for the driver.

    `read32`/`write32` make it a `partner.device_control.RegisterBus` for BAR0.
    """

    #: number of MSI-X vectors allocated to this function (0: polling only)
    irq_vectors: int = 0

    @abstractmethod
    def read32(self, offset: int) -> int:
        """Read the 32-bit word at byte `offset` of BAR0."""

    @abstractmethod
    def write32(self, offset: int, value: int) -> None:
        """Write the 32-bit word at byte `offset` of BAR0."""

    @abstractmethod
    def alloc_dma(self, size: int, align: int = 4096) -> DmaBuffer:
        """Host memory for the device, `size` bytes at a multiple of `align`."""

    @abstractmethod
    def free_dma(self, buffer: DmaBuffer) -> None:
        """Give back memory from `alloc_dma`; the device must no longer use it."""

    @abstractmethod
    def wait_irq(self, vector: int, timeout: float | None = None) -> bool:
        """Wait until MSI-X `vector` fires (or has fired since the last wait).

        Returns False on timeout. `timeout` is in seconds of the backend's time (simulated
        time for a simulation backend).
        """

    def sleep(self, seconds: float) -> None:
        """Let `seconds` of the backend's time pass (between polls in polling mode).

        Real hardware sleeps in wall-clock time; a simulation backend advances simulated time.
        """
        time.sleep(seconds)

    def close(self) -> None:  # noqa: B027 - optional: backends without resources keep it
        """Release the function (unmap BARs, free vectors)."""
