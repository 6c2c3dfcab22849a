"""BAR0 of the PCIe device: four 4 KiB windows, fixed here once for gateware, driver and docs.

| offset | window | contents |
|---|---|---|
| 0x0000 | core | the device core's registers (`partner.regmap.REGISTERS`) |
| 0x1000 | dma | the DMA engine's registers (`partner.pcie.formats.DMA_REGISTERS`) |
| 0x2000 | msix_table | MSI-X table, 16 bytes per vector (PCIe Base Spec §7.7.2) |
| 0x3000 | msix_pba | MSI-X pending bit array, one bit per vector |

Reads and writes are 32-bit (a 64-bit access is two dwords); a read of an unmapped offset inside
BAR0 returns 0, a write there is ignored, as for an unmapped register of a window.
"""

from dataclasses import dataclass

__all__ = ["BAR0", "BAR0_SIZE", "MSIX_ENTRY_BYTES", "MSIX_MAX_VECTORS", "Window"]


@dataclass(frozen=True)
class Window:
    name: str
    offset: int
    size: int = 0x1000

    def __contains__(self, offset: int) -> bool:
        return self.offset <= offset < self.offset + self.size


class _Bar0:
    core = Window("core", 0x0000)
    dma = Window("dma", 0x1000)
    msix_table = Window("msix_table", 0x2000)
    msix_pba = Window("msix_pba", 0x3000)
    windows = (core, dma, msix_table, msix_pba)


BAR0 = _Bar0()
BAR0_SIZE = 0x4000
MSIX_ENTRY_BYTES = 16  # message address low, high, data, vector control
MSIX_MAX_VECTORS = BAR0.msix_table.size // MSIX_ENTRY_BYTES  # 256
