"""Host driver for the PCIe device: rings, DMA buffers and the partner operations over a bus."""
