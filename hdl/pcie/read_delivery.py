# Delivery stage of the DMA reader (hdl/pcie/dma_read.py): reads completed commands out of the
# reassembly buffer and shifts their bytes down to lane 0 of the packet stream (hdl/stream.py).
"""Reassembly buffer read-out: one row per cycle in, one packet-stream beat per cycle out.

The buffer is ``dwords`` 32-bit dwords in rows of ``width / 32`` (one bank per dword lane; the
banks' synchronous read ports are driven from ``row_addr`` / ``row_en`` and return ``row_data``).
A command (``cmd``: byte position of its first byte in the buffer, with a wrap bit above the
index, and its length) is read row by row as soon as all of its dwords in the row are below
``valid_dw`` (the reader's "retired up to" pointer). Output beat *k* is bytes ``o .. o + width/8``
of rows *k* and *k + 1* together (``o`` = the command's offset in its first row), so the first
row of a command only loads the window, and when the last beat needs no further row it is sent
from the last row alone (a *flush*), in the cycle the next command's first row loads the
window. That costs at most one idle output cycle per command.

``free``: buffer dwords before this one may be given to new requests. It stays one row behind
the next row to read, because a command's first row can be the previous command's last one.
A zero-length command reads nothing; ``zero_done`` pulses when it is passed, once the data of
the commands before it has left.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..stream import PacketStream

__all__ = ["ReadDelivery", "delivery_command_layout"]


def delivery_command_layout(dwords: int, len_bits: int) -> data.StructLayout:
    """A command for the delivery stage: byte position (``dwords`` buffer, plus a wrap bit)."""
    return data.StructLayout({"start": dwords.bit_length() + 2, "length": len_bits})


class ReadDelivery(wiring.Component):
    """Read-out of a ``dwords``-dword reassembly buffer onto a ``width``-bit packet stream;
    queues up to ``commands`` commands."""

    def __init__(self, width: int, dwords: int, len_bits: int, commands: int):
        self.width, self.dwords, self.len_bits, self.commands = width, dwords, len_bits, commands
        lanes = width // 32
        dwb = dwords.bit_length()
        super().__init__({
            "cmd": In(stream.Signature(delivery_command_layout(dwords, len_bits))),
            "valid_dw": In(dwb),
            "free": Out(dwb),
            "row_addr": Out(range(dwords // lanes)),
            "row_en": Out(1),
            "row_data": In(width),
            "data": Out(PacketStream(width // 8)),
            "zero_done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        wb = self.width // 8
        lanes = self.width // 32
        lane_bits = lanes.bit_length() - 1
        wb_bits = wb.bit_length() - 1
        dwb = self.dwords.bit_length()
        out = self.data

        m.submodules.queue = queue = SyncFIFOBuffered(width=self.cmd.payload.shape().size,
                                                      depth=self.commands)
        m.d.comb += [queue.w_data.eq(self.cmd.payload), queue.w_en.eq(self.cmd.valid),
                     self.cmd.ready.eq(queue.w_rdy)]
        cmdq = data.View(self.cmd.payload.shape(), queue.r_data)

        active = Signal()
        row = Signal(dwb - lane_bits)  # next row to read (with wrap bit)
        rows_left = Signal(range(2 ** self.len_bits // wb + 3))
        end_dw = Signal(dwb)  # one past the command's last dword
        o = Signal(range(wb))  # byte offset of the command's first byte in its row
        flush_cmd = Signal()  # the last beat comes from the last row alone
        first_row = Signal()
        last_nbytes = Signal(range(wb + 1))
        single = Signal()  # one output beat

        # Reading a row: all the command's dwords in it must be in the buffer (pointer
        # differences with a wrap bit: the top bit set means "behind"). Only the last row
        # looks at the command's end: a command may be longer than the buffer, and its end
        # more than a buffer ahead would wrap the difference and look "done".
        row_end = Cat(Const(0, lane_bits), row + 1)
        behind_row, behind_end = Signal(dwb), Signal(dwb)
        m.d.comb += [behind_row.eq(self.valid_dw - row_end),
                     behind_end.eq(self.valid_dw - end_dw)]
        row_ready = Mux(rows_left == 1, ~behind_end[-1], ~behind_row[-1])

        # Stage M: the row in the memories' read registers, and what it is for.
        m_valid, m_first, m_last = Signal(), Signal(), Signal()
        m_o, m_flush, m_nbytes, m_single = (Signal.like(o), Signal(), Signal.like(last_nbytes),
                                            Signal())
        prev = Signal(self.width)
        cur = self.row_data
        beat0 = Signal()  # the next beat formed from a row is its command's first
        flush_pending = Signal()
        f_o, f_nbytes, f_first = Signal.like(o), Signal.like(last_nbytes), Signal()

        out_free = ~out.valid | out.ready
        flush_go = flush_pending & out_free
        consume = Signal()
        m.d.comb += consume.eq(m_valid & Mux(m_first, ~flush_pending | flush_go,
                                             out_free & ~flush_pending))
        m_free = ~m_valid | consume
        read = Signal()
        m.d.comb += [read.eq(active & m_free & row_ready),
                     self.row_addr.eq(row[:-1]), self.row_en.eq(m_free),
                     self.free.eq(Cat(Const(0, lane_bits), row - 1))]

        with m.If(m_free):
            m.d.sync += m_valid.eq(read)
        with m.If(read):
            m.d.sync += [
                m_first.eq(first_row), m_last.eq(rows_left == 1), m_o.eq(o),
                m_flush.eq(flush_cmd), m_nbytes.eq(last_nbytes), m_single.eq(single),
                row.eq(row + 1), rows_left.eq(rows_left - 1), first_row.eq(0),
            ]
            with m.If(rows_left == 1):
                m.d.sync += active.eq(0)

        # The next command is taken when the current one has issued all its reads.
        length = cmdq.length
        s_off = cmdq.start[:wb_bits]
        with m.If(queue.r_rdy & (length == 0)):
            idle = ~active & ~m_valid & ~flush_pending & ~out.valid
            m.d.comb += [queue.r_en.eq(idle), self.zero_done.eq(idle)]
        with m.Elif(queue.r_rdy & (~active | read & (rows_left == 1))):
            m.d.comb += queue.r_en.eq(1)
            beats = (length + wb - 1) >> wb_bits
            rows = (s_off + length + wb - 1) >> wb_bits
            m.d.sync += [
                active.eq(1), row.eq(cmdq.start[wb_bits:]), rows_left.eq(rows),
                end_dw.eq((cmdq.start + length + 3) >> 2), o.eq(s_off),
                flush_cmd.eq(rows == beats), first_row.eq(1),
                last_nbytes.eq(((length - 1) & (wb - 1)) + 1), single.eq(beats == 1),
            ]

        # Output: the previous row and this one make a beat; a flush sends the last row alone.
        with m.If(out_free):
            m.d.sync += out.valid.eq(0)
        window = Cat(prev, cur)
        with m.If(consume):
            m.d.sync += [prev.eq(cur), beat0.eq(m_first)]
            with m.If(m_last & m_flush):
                m.d.sync += [flush_pending.eq(1), f_o.eq(m_o), f_nbytes.eq(m_nbytes),
                             f_first.eq(m_single)]
        with m.If(flush_go):
            with m.If(~(consume & m_last & m_flush)):
                m.d.sync += flush_pending.eq(0)
            m.d.sync += [
                out.valid.eq(1),
                out.payload.data.eq((prev >> (f_o * 8))[:self.width]),
                out.payload.nbytes.eq(f_nbytes),
                out.payload.first.eq(f_first), out.payload.last.eq(1),
            ]
        with m.Elif(consume & ~m_first):
            last_beat = m_last & ~m_flush
            m.d.sync += [
                out.valid.eq(1),
                out.payload.data.eq((window >> (m_o * 8))[:self.width]),
                out.payload.nbytes.eq(Mux(last_beat, m_nbytes, wb)),
                out.payload.first.eq(beat0), out.payload.last.eq(last_beat),
            ]
        return m
