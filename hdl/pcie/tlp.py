# The vendor-neutral boundary of the PCIe adapter: everything inside speaks these streams; a
# vendor's hard IP (or a soft PHY + data link layer) is a thin wrapper that converts to them.
"""TLP streams and the endpoint's configuration inputs.

A TLP stream beat (`tlp_layout`):

``hdr``   128 bits, valid on the ``sop`` beat: header dword *i* in bits ``32*i+31 .. 32*i`` with
          the spec's bit numbering inside the dword (`partner.tlp`; a 3-dword header leaves DW3
          zero). Decode with ``data.View(layout(HEADER_DW0), hdr[0:32])`` and friends.
``data``  ``width`` bits of payload: payload dword *k* of the beat in bits ``32*k+31 .. 32*k``,
          bytes little-endian inside a dword (byte 0 = lowest address). The payload starts at
          dword 0 of the ``sop`` beat: the header is sideband, so there is no header/payload
          alignment to undo.
``strb``  one bit per payload dword of the beat. Payload dwords are packed from dword 0: every
          beat but the last of a TLP is full, the last may be partial. A TLP without payload is a
          single beat with ``strb == 0`` and ``sop == eop == 1``.
``sop``, ``eop``  first and last beat of a TLP.
``bar``   for requests arriving from the host (`req_in`): which BAR the address hit (0..5); 0
          elsewhere.

Four streams make an endpoint's transaction layer, named from the device's side:

- ``req_in``: requests from the host (BAR reads and writes), in;
- ``cpl_out``: completions of those reads, out;
- ``req_out``: the device's own requests (DMA reads and writes, MSI-X writes), out;
- ``cpl_in``: completions of the device's DMA reads, in.

`EndpointConfig` is what the link partner's configuration space tells the transaction layer
(the hard IP's ``cfg_*`` outputs): the endpoint's own ID, Max_Payload_Size and
Max_Read_Request_Size (encoded as in the Device Control register, PCIe Base Spec §7.5.3.4:
``128 << code`` bytes), Bus Master Enable, and the MSI-X Enable and Function Mask bits.
"""

from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import Out

__all__ = ["WIDTHS", "EndpointConfig", "TlpStream", "size_from_code", "tlp_layout"]

WIDTHS = (64, 128, 256)


def tlp_layout(width: int) -> data.StructLayout:
    """One beat of a TLP stream with ``width`` bits of payload (64, 128 or 256)."""
    if width not in WIDTHS:
        raise ValueError(f"TLP stream width must be one of {WIDTHS}, not {width!r}")
    return data.StructLayout({
        "hdr": 128,
        "data": width,
        "strb": width // 32,
        "sop": 1,
        "eop": 1,
        "bar": 3,
    })


def TlpStream(width: int) -> stream.Signature:
    """Stream signature of `tlp_layout` beats (use with ``In(...)``/``Out(...)``)."""
    return stream.Signature(tlp_layout(width))


class EndpointConfig(wiring.Signature):
    """Configuration-space state the transaction layer needs (outputs of the link's config)."""

    def __init__(self):
        super().__init__({
            "id": Out(16),  # bus (15:8), device (7:3), function (2:0) of this endpoint
            "max_payload": Out(3),  # Max_Payload_Size code: 128 << code bytes
            "max_read_request": Out(3),  # Max_Read_Request_Size code: 128 << code bytes
            "bus_master": Out(1),  # Command register bit 2: DMA allowed
            "msix_enable": Out(1),  # MSI-X Message Control bit 15
            "msix_mask": Out(1),  # MSI-X Message Control bit 14 (Function Mask)
        })


def size_from_code(code: int) -> int:
    """Bytes of a Max_Payload_Size / Max_Read_Request_Size code (0..5 → 128..4096)."""
    if not 0 <= code <= 5:
        raise ValueError(f"size code {code} is reserved (0..5 are defined)")
    return 128 << code
