"""Host driver for the PCIe device: rings, DMA buffers and the partner operations over a bus.

`PcieDevice` is the partner; it runs on any `PcieBus` (the simulated root complex, a memory-only
device model, later VFIO).
"""

from .bus import DmaBuffer, PcieBus
from .driver import FrameError, PcieDevice

__all__ = ["DmaBuffer", "FrameError", "PcieBus", "PcieDevice"]
