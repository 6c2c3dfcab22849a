"""PCIe host adapter: TLP streams, BAR0 completer, DMA requesters, MSI-X, DMA engine."""
