# Pieces shared by the GMII and XGMII MACs: the Ethernet FCS (IEEE 802.3-2018 §3.2.9, CRC-32
# from amaranth.lib.crc.catalog), frame size rules (§3.2.7, §4.4.2: 64-byte minimum, 18 bytes of
# header and FCS around the MTU, +4 per IEEE 802.1Q/802.1ad tag), wrapping event counters, and a
# wrapper that puts one RX and one TX block behind a single signature.
"""Building blocks shared by :mod:`.gmii` and :mod:`.xgmii`."""

from functools import cache

from amaranth.hdl import Cat, Const, DomainRenamer, Module, Value
from amaranth.lib import crc, wiring
from amaranth.lib.wiring import Out, flipped

from ..counting import count_events
from ..stream import packet_layout

__all__ = [
    "COUNTER_BITS",
    "ETHERNET_CRC",
    "FCS_BYTES",
    "HEADER_FCS_BYTES",
    "IFG_BYTES",
    "MIN_DATA_BYTES",
    "MIN_FRAME_BYTES",
    "MTU_BITS",
    "PREAMBLE",
    "RX_COUNTERS",
    "SFD",
    "TX_COUNTERS",
    "VLAN_TPIDS",
    "MACPair",
    "RxStream",
    "count_events",
    "crc32_init",
    "crc32_residue",
    "crc32_update",
    "feed_packet_fifo",
    "is_vlan_tpid",
    "rx_counter_members",
    "tx_counter_members",
]

ETHERNET_CRC = crc.catalog.CRC32_ETHERNET  # the same function as zlib.crc32

PREAMBLE = 0x55
SFD = 0xD5
MIN_FRAME_BYTES = 64  # destination MAC .. FCS; shorter frames are runts
FCS_BYTES = 4
MIN_DATA_BYTES = MIN_FRAME_BYTES - FCS_BYTES  # TX pads shorter frames to this
IFG_BYTES = 12  # 96 bit times
HEADER_FCS_BYTES = 18  # 2 addresses + EtherType + FCS around an MTU-sized payload
VLAN_TPIDS = (0x8100, 0x88A8)  # 802.1Q C-tag, 802.1ad S-tag
MTU_BITS = 14  # the `mtu` port: up to 16383, enough for 9000-byte jumbo frames
COUNTER_BITS = 32

# Counter outputs, in the order the docs list them. All wrap modulo 2**32 like PacketFIFO's:
# the host reads differences, which a saturating counter would falsify after its first overflow.
RX_COUNTERS = ("frames_ok", "bytes_ok", "fcs_errors", "runts", "giants", "phy_errors",
               "preamble_errors")
TX_COUNTERS = ("frames_sent", "bytes_sent", "underruns")


def RxStream(width_bytes: int) -> wiring.Signature:
    """The RX output: packet-stream beats with ``valid`` and no ``ready`` at all.

    A MAC cannot stall the wire, so a beat is taken in every cycle ``valid`` is high. Not a
    ``stream.Signature(..., always_ready=True)``: its ``ready`` is a constant, and Amaranth 0.5
    refuses constants as top-level ports, which would stop the MAC from being simulated alone.
    """
    return wiring.Signature({"payload": Out(packet_layout(width_bytes)), "valid": Out(1)})


def rx_counter_members() -> dict:
    return {name: Out(COUNTER_BITS) for name in RX_COUNTERS}


def tx_counter_members() -> dict:
    return {name: Out(COUNTER_BITS) for name in TX_COUNTERS}


def is_vlan_tpid(first_byte: Value, second_byte: Value) -> Value:
    """True when two bytes, in wire order, are a VLAN tag protocol identifier."""
    value = Cat(second_byte, first_byte)  # network order: the first byte is the high one
    return Value.cast(sum((value == tpid) for tpid in VLAN_TPIDS) != 0)


# -- FCS ----------------------------------------------------------------------------------------
#
# The GMII MAC uses amaranth.lib.crc's Processor directly (one byte per cycle). The XGMII MAC needs
# the CRC of 1..8 bytes from a given state in one cycle, which Processor (one fixed width, state
# not loadable) cannot give; crc32_update builds that XOR network from the catalog's algorithm.
# The state is kept *reflected* (bit 0 = first bit on the wire), as Processor's output is: then
# the FCS is ``state ^ xor_output`` sent least significant byte first, and a frame with a good FCS
# leaves ``Parameters.residue()`` in the state.

def _reflect(value: int, width: int) -> int:
    return int(f"{value:0{width}b}"[::-1], 2)


def _raw_algorithm():
    """ETHERNET_CRC without the final XOR: its reflected register is a linear function."""
    a = ETHERNET_CRC
    return crc.Algorithm(crc_width=a.crc_width, polynomial=a.polynomial, initial_crc=0,
                         reflect_input=a.reflect_input, reflect_output=a.reflect_output,
                         xor_output=0)


def crc32_init() -> int:
    """Reflected CRC state before the first byte."""
    return _reflect(ETHERNET_CRC.initial_crc, ETHERNET_CRC.crc_width)


def crc32_residue() -> int:
    """Reflected CRC state after a frame followed by its correct FCS."""
    return ETHERNET_CRC(8).residue()


@cache
def _taps(nbytes: int) -> tuple[int, ...]:
    """For each new state bit, a mask over ``Cat(state, data)`` of the bits it XORs together
    after ``nbytes`` bytes (the CRC without final XOR is linear in state and data)."""
    algo = _raw_algorithm()
    width = algo.crc_width
    columns = []  # one per input bit: its effect on the new state
    for i in range(width):
        algo.initial_crc = _reflect(1 << i, width)
        columns.append(algo(8).compute([0] * nbytes))
    algo.initial_crc = 0
    for j in range(8 * nbytes):
        word = [0] * nbytes
        word[j // 8] = 1 << (j % 8)
        columns.append(algo(8).compute(word))
    return tuple(sum(1 << n for n, column in enumerate(columns) if column >> bit & 1)
                 for bit in range(width))


def crc32_update(state: Value, data: Value, nbytes: int) -> Value:
    """Reflected CRC state after the first ``nbytes`` bytes of ``data`` (lane 0 first)."""
    if nbytes == 0:
        return Value.cast(state)
    data = Value.cast(data).as_unsigned()
    width = 32 + 8 * nbytes
    inputs = Cat(state, data[:8 * nbytes], Const(0, 8 * nbytes))[:width]
    # An AND with a constant mask and an XOR reduction per bit: the same XOR tree after
    # synthesis, and far fewer operations for amaranth.sim than a Cat of single bits.
    return Cat(*((inputs & Const(mask, width)).xor() for mask in _taps(nbytes)))


# -- RX to PacketFIFO -----------------------------------------------------------------------------

def feed_packet_fifo(m: Module, rx, fifo):
    """Wire an RX block's ``o_stream``/``o_drop`` into a :class:`PacketFIFO`'s input.

    The FIFO's ``i_stream.ready`` is always 1, which is the RX contract, but ``connect()`` needs
    equal signatures and the RX output has no ``ready``: so the members are wired by hand.
    """
    m.d.comb += [
        fifo.i_stream.valid.eq(rx.o_stream.valid),
        fifo.i_stream.payload.eq(rx.o_stream.payload),
        fifo.i_drop.eq(rx.o_drop),
    ]


# -- RX + TX behind one signature ----------------------------------------------------------------

class MACPair(wiring.Component):
    """One RX and one TX block as a single component: ``rx_<member>`` and ``tx_<member>``.

    Each member of the blocks' signatures is re-exported with a prefix (``rx_phy``,
    ``rx_o_stream``, ``rx_mtu``, ``rx_frames_ok``, ``tx_i_stream``, ``tx_phy``, ``tx_underruns``,
    ...). ``rx_domain``/``tx_domain`` rename the blocks' ``sync`` domain, because a GMII PHY
    clocks receive data with its own RX_CLK while transmit runs on the MAC's GTX_CLK.
    """

    def __init__(self, rx, tx, *, rx_domain="sync", tx_domain="sync"):
        self._blocks = {"rx": (rx, rx_domain), "tx": (tx, tx_domain)}
        members = {}
        for prefix, (block, _) in self._blocks.items():
            for name, member in block.signature.members.items():
                members[f"{prefix}_{name}"] = member
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for prefix, (block, domain) in self._blocks.items():
            m.submodules[prefix] = block if domain == "sync" else DomainRenamer(domain)(block)
            for name, member in block.signature.members.items():
                outer, inner = getattr(self, f"{prefix}_{name}"), getattr(block, name)
                if member.is_signature:
                    wiring.connect(m, flipped(outer), inner)
                elif member.flow == Out:
                    m.d.comb += outer.eq(inner)
                else:
                    m.d.comb += inner.eq(outer)
        return m

