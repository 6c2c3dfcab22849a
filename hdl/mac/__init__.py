# Ethernet MACs: 1 Gb/s over GMII (IEEE 802.3-2018 clause 35) and 10 Gb/s over XGMII (clause 46),
# with the MAC frame rules of clauses 3 and 4. See docs/mac.md.
"""Ethernet MACs whose client side is the internal packet stream (:mod:`partner.hdl.stream`).

The GMII MAC moves one byte per cycle (``PacketStream(1)``), the XGMII MAC eight
(``PacketStream(8)``). Receivers stream frames without FCS and without backpressure, with
``o_drop`` on the last beat for :class:`~partner.hdl.packet_fifo.PacketFIFO`; transmitters take
frames without FCS and add preamble, padding, FCS and the inter-packet gap.
"""

from .common import RX_COUNTERS, TX_COUNTERS, MACPair, RxStream, feed_packet_fifo
from .gmii import GMIIMAC, GMIIRX, GMIITX, GMIIRxBus, GMIITxBus
from .xgmii import XGMIIMAC, XGMIIRX, XGMIITX, XGMIIRxBus, XGMIITxBus

__all__ = [
    "GMIIMAC",
    "GMIIRX",
    "GMIITX",
    "RX_COUNTERS",
    "TX_COUNTERS",
    "XGMIIMAC",
    "XGMIIRX",
    "XGMIITX",
    "GMIIRxBus",
    "GMIITxBus",
    "MACPair",
    "RxStream",
    "XGMIIRxBus",
    "XGMIITxBus",
    "feed_packet_fifo",
]
