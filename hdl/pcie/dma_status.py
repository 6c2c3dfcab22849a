# Outcome codes of the DMA requesters' commands (hdl/pcie/dma_read.py, dma_write.py). Completion
# status values follow PCI Express Base Spec §2.2.9; the others are this device's own.
"""Status of a DMA read or write command, as the requesters report it per command.

Plain Python (no Amaranth) so that host code and docs can name the same values; the gateware
uses it as a shaped enum of `STATUS_BITS` bits.
"""

import enum

__all__ = ["STATUS_BITS", "DmaStatus"]

STATUS_BITS = 3


class DmaStatus(enum.IntEnum):
    """Per-command result; when several requests of one command fail, the first failure (in
    address order) is reported."""

    OK = 0
    UR = 1  # a completion with Unsupported Request status (§2.2.9)
    CA = 2  # a completion with Completer Abort status (§2.2.9)
    MALFORMED = 3  # a completion did not match its request (byte count, address, length)
    TIMEOUT = 4  # a request's completions did not all arrive within the timeout
    NO_BUS_MASTER = 5  # Bus Master Enable was 0: the request was not sent
    BAD_COMMAND = 6  # zero length, or (writer) a data packet that did not match the length
    POISONED = 7  # a completion carried poisoned data (EP set, §2.7.2.2)
