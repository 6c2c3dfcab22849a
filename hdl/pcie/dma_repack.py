# Byte re-cutter of the DMA engine: a byte stream in, packets of commanded lengths out. It cuts an
# RX frame into the pieces that fill a pvec's chunks (any byte length each), and glues a TX pvec's
# chunks (any byte length each) into one frame. Stream format: partner.hdl.stream.
"""Repacker: packets of commanded lengths from a byte stream.

``i`` is read as a plain byte stream: the ``nbytes`` bytes of each beat (from lane 0) follow the
bytes of the beat before, whatever ``first``/``last`` say, and any beat may be short (the chunks
of a TX pvec arrive as packets of any length back to back).

Each command on ``cmd`` is a ``length`` (at least 1) of bytes taken from that stream, in order:
emitted on ``o`` as one packet (bytes packed from lane 0, every beat full but the last) or, with
``discard``, consumed silently (the tail of a truncated RX frame).

The repacker pulls from ``i`` only the bytes that commands already accepted will use, give or
take the rest of the beat that holds the last of them: it never reads into a frame no command
asked for (an RX frame that found no usable pvec stays queued in the core). The caller keeps the
commands and the input consistent: the commands of one input frame add up to its length.

Throughput: one output beat per cycle, including across the beats of the input (a two-beat
window: ``buffer`` holds up to ``2 * width_bytes`` bytes), with no idle cycle between
commands: the next one is taken with the last beat of the one before.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..stream import PacketStream, keep_mask

__all__ = ["Repacker", "repack_command_layout"]


def repack_command_layout(len_bits: int = 16) -> data.StructLayout:
    return data.StructLayout({"length": len_bits, "discard": 1})


class Repacker(wiring.Component):
    """Cut the byte stream ``i`` into the packets ``cmd`` asks for, ``width_bytes`` per beat."""

    def __init__(self, width_bytes: int, len_bits: int = 16):
        if width_bytes < 1 or width_bytes & (width_bytes - 1):
            raise ValueError(f"width_bytes must be a power of two, not {width_bytes!r}")
        if not 1 <= len_bits <= 24:
            raise ValueError(f"len_bits must be 1..24, not {len_bits!r}")
        self.width_bytes, self.len_bits = width_bytes, len_bits
        super().__init__({
            "cmd": In(stream.Signature(repack_command_layout(len_bits))),
            "i": In(PacketStream(width_bytes)),
            "o": Out(PacketStream(width_bytes)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        wb = self.width_bytes
        buffer = Signal(16 * wb)
        count = Signal(range(2 * wb + 1))  # bytes held in `buffer`, from lane 0
        left = Signal(self.len_bits)  # bytes of the current command not yet emitted
        take = Signal(range(wb + 1))  # bytes of the next output beat: min(left, wb), kept
        discard = Signal()
        first = Signal()
        # Bytes commanded but not yet pulled from `i`. A command offered on `cmd` counts from
        # the cycle it is offered (`offered`), so its bytes are pulled while the current command
        # ends; until it is taken, `credit` goes negative by what was pulled for it.
        credit = Signal(range(-(2 ** (self.len_bits + 1)), 2 ** (self.len_bits + 1)))
        offered = Signal.like(credit)
        m.d.comb += offered.eq(credit + Mux(self.cmd.valid, self.cmd.payload.length, 0))

        def at_most_a_beat(value):
            return Mux(value < wb, value, wb)

        active = left != 0
        can_out = active & (count >= take)
        fire = Signal()
        m.d.comb += [
            self.o.valid.eq(can_out & ~discard),
            self.o.payload.data.eq(buffer[:8 * wb]),
            self.o.payload.nbytes.eq(take),
            self.o.payload.first.eq(first),
            self.o.payload.last.eq(left == take),
            fire.eq(can_out & (discard | self.o.ready)),
            self.busy.eq(active),
        ]
        # Both outcomes of this cycle (a beat out or not) are prepared from registers alone;
        # `fire`, which depends on the consumer's ready, only chooses between them.
        count_fired = Signal(range(2 * wb + 1))
        m.d.comb += count_fired.eq(count - take)
        pull = Signal()
        m.d.comb += [
            pull.eq((offered > 0) & Mux(fire, count_fired <= wb, count <= wb)),
            self.i.ready.eq(pull),
        ]
        got = self.i.valid & pull
        incoming = self.i.payload.data & _byte_mask(self.i.payload.nbytes, wb)
        kept = buffer | (incoming << (count * 8))
        shifted = (buffer >> (take * 8)) | (incoming << (count_fired * 8))
        m.d.sync += [
            buffer.eq(Mux(fire, Mux(got, shifted, buffer >> (take * 8)),
                          Mux(got, kept, buffer))),
            count.eq(Mux(fire, count_fired, count) + Mux(got, self.i.payload.nbytes, 0)),
        ]

        added = Mux(self.cmd.valid & self.cmd.ready, self.cmd.payload.length, 0)
        m.d.sync += credit.eq(credit + added - Mux(got, self.i.payload.nbytes, 0))
        # The next command is taken with the last beat of the current one: no idle cycle.
        m.d.comb += self.cmd.ready.eq(~active | (fire & (left == take)))
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [left.eq(self.cmd.payload.length), discard.eq(self.cmd.payload.discard),
                         first.eq(1), take.eq(at_most_a_beat(self.cmd.payload.length))]
        with m.Elif(fire):
            rest = left - take
            m.d.sync += [left.eq(rest), first.eq(0), take.eq(at_most_a_beat(rest))]
        return m


def _byte_mask(nbytes, wb):
    """All-ones bytes for lanes below ``nbytes`` (the don't-care lanes of a short beat -> 0)."""
    keep = keep_mask(nbytes, wb)
    return Cat(*(keep[lane].replicate(8) for lane in range(wb)))
