# The data side of the DMA engine's writes (partner.hdl.pcie.dma_write): RX frames from the
# core's host queues cut into the chunks of their pvecs, and completion entries, in the order of
# the write commands the sequencer (partner.hdl.pcie.dma_sequencer) gives.
"""Write data: frames and completion entries for the `DmaWriter`.

`FrameFeed`: a frame the sequencer has taken for a pvec is *committed* (its queue number on
``commit``); the feeder then moves it from that queue's stream into a staging FIFO at a beat
per cycle, whatever the writer's pace, and the `Repacker` cuts it into the packets ``cmd`` asks
for (one per chunk, or a discarded tail). ``draining`` marks the queues whose committed frame
is still in the core's stream: only once it has left is the queue's next frame, and its
metadata, at the head of that stream. Committed frames are fed in the order of their commits.

`WriteData`: each write command's source is pushed on ``kind`` as the command is given
(``entry`` 0: a frame's chunk from ``frames``; 1: a completion entry from ``entry``, queued
there by the sequencer with the command); ``o`` delivers the commands' bytes in that order,
each as one packet, and takes a kind off with the last beat of its packet.
"""

from amaranth.hdl import Array, Cat, Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..core import host_rx_layout
from ..stream import PacketStream, packet_layout
from .dma_entries import EntryWriter, entry_out_layout
from .dma_repack import Repacker, repack_command_layout

__all__ = ["FrameFeed", "WriteData"]


class FrameFeed(wiring.Component):
    def __init__(self, width_bytes: int, queues: int, *, staging_bytes: int = 2048,
                 commands: int = 4):
        if queues < 1:
            raise ValueError(f"queues must be at least 1, not {queues!r}")
        self.width_bytes, self.queues = width_bytes, queues
        self.staging_depth = max(4, staging_bytes // width_bytes)
        self.commands = commands
        super().__init__({
            "rx": In(stream.Signature(host_rx_layout(width_bytes))).array(queues),
            "commit": In(stream.Signature(range(queues))),
            "cmd": In(stream.Signature(repack_command_layout())),
            "o": Out(PacketStream(width_bytes)),
            "draining": Out(queues),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        wb, n = self.width_bytes, self.queues
        bits = max(1, (n - 1).bit_length())
        m.submodules.order = order = SyncFIFOBuffered(width=bits, depth=4)
        m.submodules.staging = staging = SyncFIFOBuffered(width=packet_layout(wb).size,
                                                          depth=self.staging_depth)
        m.submodules.cmds = cmds = SyncFIFOBuffered(width=repack_command_layout().size,
                                                    depth=self.commands)
        m.submodules.repack = repack = Repacker(wb)

        m.d.comb += [order.w_data.eq(self.commit.payload), order.w_en.eq(self.commit.valid),
                     self.commit.ready.eq(order.w_rdy)]
        with m.If(self.commit.valid & self.commit.ready):
            m.d.sync += self.draining.bit_select(self.commit.payload, 1).eq(1)

        valid = Cat(s.valid for s in self.rx)
        beat = Array(s.payload.beat for s in self.rx)[order.r_data] if n > 1 else \
            self.rx[0].payload.beat
        feeding = order.r_rdy & valid.bit_select(order.r_data, 1) & staging.w_rdy
        for q, s in enumerate(self.rx):
            m.d.comb += s.ready.eq(order.r_rdy & (order.r_data == q) & staging.w_rdy)
        m.d.comb += [staging.w_data.eq(beat), staging.w_en.eq(feeding)]
        with m.If(feeding & beat.last):
            m.d.comb += order.r_en.eq(1)
            m.d.sync += self.draining.bit_select(order.r_data, 1).eq(0)

        m.d.comb += [
            repack.i.valid.eq(staging.r_rdy), repack.i.payload.eq(staging.r_data),
            staging.r_en.eq(repack.i.ready),
            cmds.w_data.eq(self.cmd.payload), cmds.w_en.eq(self.cmd.valid),
            self.cmd.ready.eq(cmds.w_rdy),
            repack.cmd.valid.eq(cmds.r_rdy), repack.cmd.payload.eq(cmds.r_data),
            cmds.r_en.eq(repack.cmd.ready),
            self.busy.eq(order.r_rdy | staging.r_rdy | cmds.r_rdy | repack.busy),
        ]
        wiring.connect(m, repack.o, wiring.flipped(self.o))
        return m


class WriteData(wiring.Component):
    def __init__(self, width_bytes: int, *, commands: int = 16, entries: int = 4):
        self.width_bytes, self.commands, self.entries = width_bytes, commands, entries
        super().__init__({
            "kind": In(stream.Signature(data.StructLayout({"entry": 1}))),
            "entry": In(stream.Signature(entry_out_layout())),
            "frames": In(PacketStream(width_bytes)),
            "o": Out(PacketStream(width_bytes)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.kinds = kinds = SyncFIFOBuffered(width=1, depth=self.commands)
        m.submodules.entries = entries = SyncFIFOBuffered(width=entry_out_layout().size,
                                                          depth=self.entries)
        m.submodules.entry_writer = writer = EntryWriter(self.width_bytes)
        o = self.o
        m.d.comb += [
            kinds.w_data.eq(self.kind.payload.entry), kinds.w_en.eq(self.kind.valid),
            self.kind.ready.eq(kinds.w_rdy),
            kinds.r_en.eq(o.valid & o.ready & o.payload.last),
            entries.w_data.eq(self.entry.payload), entries.w_en.eq(self.entry.valid),
            self.entry.ready.eq(entries.w_rdy),
            writer.i.valid.eq(entries.r_rdy), writer.i.payload.eq(entries.r_data),
            entries.r_en.eq(writer.i.ready),
        ]
        with m.If(kinds.r_rdy):
            with m.If(kinds.r_data[0]):
                wiring.connect(m, writer.o, wiring.flipped(o))
            with m.Else():
                wiring.connect(m, wiring.flipped(self.frames), wiring.flipped(o))
        return m
