# DMA write requester: device data into host memory as PCIe Memory Write TLPs (PCI Express Base
# Spec §2.2.7 memory requests, §2.2.5 byte enables, §2.2.4.1 address formats). Streams:
# hdl/pcie/tlp.py (TLP stream), hdl/stream.py (packet stream).
"""DMA writer: a command plus its bytes in, MWr TLPs out, one *done* per command.

A command (`write_command_layout`) names a host byte address (64-bit, any alignment) and a
length of 1 .. ``2**len_bits - 1`` bytes; its bytes follow on ``data`` as one packet
(`partner.hdl.stream`: packed from lane 0, ``first`` on the first beat, ``last`` and a short
``nbytes`` on the last). Commands and data are taken in order, one command at a time.

Splitting: a TLP never extends past a Max_Payload_Size-aligned address, so each carries at most
MPS bytes and none crosses a 4 KiB boundary (MPS <= 4096 divides 4096, §2.2.7). A command at an
unaligned address therefore starts with one short TLP; all later ones are MPS-aligned.

Alignment: a TLP's payload starts with the dword that holds its first byte; First/Last DW Byte
Enables mark the bytes inside the first and last dwords (a one-dword TLP has Last DW BE 0,
§2.2.5). The data is shifted by ``addr % 4`` bytes for the first TLP and by ``addr % (width/8)``
for the others (they start beat-aligned in host memory); both are the same two-beat window
shift, so no cycle is lost at TLP boundaries: TLPs follow each other on ``req`` with no idle
cycle as long as data is offered. Addresses below 4 GiB use the 3-dword header (MWr32), others
the 4-dword one (MWr64), as §2.2.4.1 requires.

Done: after the last beat of a command's last TLP has been accepted on ``req``, ``done`` carries
the command's ``id`` and a `DmaStatus`:

- ``NO_BUS_MASTER`` if Bus Master Enable was 0 when a TLP of the command was formed: that TLP
  is not sent, its bytes are consumed and dropped (so data and commands stay in step);
- ``BAD_COMMAND`` for a zero length (no data is consumed) or when the data packet's ``first`` /
  ``last`` / ``nbytes`` do not match the command's length (the writer still consumes exactly the
  command's number of beats, so a caller's framing error shows on this and possibly the next
  command, and does not hang);
- ``OK`` otherwise.

Memory writes are posted: *done* means the TLPs are in the link's queue (see
`partner.hdl.pcie.request_arbiter` for what order that keeps), not that they reached memory.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from partner.tlp import HEADER_DW0, REQUEST_DW1, TlpKind

from ..stream import PacketStream
from ..wire import layout
from .dma_status import STATUS_BITS, DmaStatus
from .tlp import WIDTHS, EndpointConfig, TlpStream

__all__ = ["DmaWriter", "done_layout", "write_command_layout"]


def write_command_layout(len_bits: int = 16, id_bits: int = 8) -> data.StructLayout:
    return data.StructLayout({"addr": 64, "length": len_bits, "id": id_bits})


def done_layout(id_bits: int = 8) -> data.StructLayout:
    return data.StructLayout({"id": id_bits, "status": STATUS_BITS})


class DmaWriter(wiring.Component):
    """MWr requester on a ``width``-bit TLP stream.

    Parameters
    ----------
    width : int
        TLP stream width (64, 128, 256); the data stream is ``width // 8`` bytes wide.
    len_bits, id_bits : int
        Widths of a command's length and caller-chosen id.
    max_payload : int
        Largest TLP payload the design supports (the link's MPS is used when it is smaller).

    Members
    -------
    cmd : ``In(Signature(write_command_layout))``
    data : ``In(PacketStream(width // 8))``
    done : ``Out(Signature(done_layout))``
    req : ``Out(TlpStream(width))``
    config : ``In(EndpointConfig())``
        Uses ``id``, ``max_payload`` and ``bus_master``.
    """

    def __init__(self, width: int, *, len_bits: int = 16, id_bits: int = 8,
                 max_payload: int = 4096):
        if width not in WIDTHS:
            raise ValueError(f"width must be one of {WIDTHS}, not {width!r}")
        if max_payload not in (128, 256, 512, 1024, 2048, 4096):
            raise ValueError(f"max_payload must be 128 << n up to 4096, not {max_payload!r}")
        if not 1 <= len_bits <= 24 or id_bits < 1:
            raise ValueError("len_bits must be 1 .. 24 and id_bits at least 1")
        self.width, self.len_bits, self.id_bits = width, len_bits, id_bits
        self.max_payload = max_payload
        super().__init__({
            "cmd": In(stream.Signature(write_command_layout(len_bits, id_bits))),
            "data": In(PacketStream(width // 8)),
            "done": Out(stream.Signature(done_layout(id_bits))),
            "req": Out(TlpStream(width)),
            "config": In(EndpointConfig()),
        })

    def elaborate(self, platform):
        m = Module()
        wb = self.width // 8
        lanes = self.width // 32

        desc_layout = data.StructLayout({
            "hdr": 128,
            "beats": range(self.max_payload // 4 // lanes + 2),
            "last_strb": lanes,
            "shift": range(wb),  # byte lanes the data moves up by
            "tail": 1,  # the command's last output beat needs a new input beat
            "first": 1,  # first TLP of its command
            "last": 1,  # last TLP of its command
            "in_beats": range(2 ** self.len_bits // wb + 2),  # input beats of the command
            "last_nbytes": range(wb + 1),  # nbytes of the command's last input beat
            "id": self.id_bits,
            "drop": 1,  # Bus Master Enable was 0: consume, do not send
            "empty": 1,  # a zero-length command: no TLP, no data
        })
        m.submodules.descs = descs = SyncFIFOBuffered(width=desc_layout.size, depth=4)
        m.submodules.dones = dones = SyncFIFOBuffered(
            width=done_layout(self.id_bits).size, depth=4)

        # -- planner: one TLP description per cycle --------------------------------------------
        addr = Signal(64)
        left = Signal(self.len_bits)
        cmd_id = Signal(self.id_bits)
        first = Signal()
        have = Signal()
        shift1 = Signal(range(wb))  # the data shift of every TLP after the first
        in_beats = Signal(range(2 ** self.len_bits // wb + 2))
        last_nbytes = Signal(range(wb + 1))

        cmd = self.cmd
        m.d.comb += cmd.ready.eq(~have)
        with m.If(cmd.valid & cmd.ready):
            length = cmd.payload.length
            m.d.sync += [
                have.eq(1), addr.eq(cmd.payload.addr), left.eq(length),
                cmd_id.eq(cmd.payload.id), first.eq(1),
                shift1.eq(cmd.payload.addr[:(wb - 1).bit_length()]),
                in_beats.eq((length + wb - 1) >> (wb.bit_length() - 1)),
                last_nbytes.eq(((length - 1) & (wb - 1)) + 1),
            ]

        mps = Signal(range(4097))
        code = Mux(self.config.max_payload > 5, 5, self.config.max_payload)
        m.d.comb += mps.eq(Mux((128 << code) > self.max_payload, self.max_payload, 128 << code))
        room = Signal(range(4097))
        m.d.comb += room.eq(mps - (addr[:12] & (mps - 1)))
        n = Signal(range(4097))
        m.d.comb += n.eq(Mux(left < room, left, room))
        off = addr[:2]
        ndw = Signal(range(1026))
        m.d.comb += ndw.eq((off + n + 3) >> 2)
        end_off = Signal(2)  # byte offset of the last byte inside its dword
        m.d.comb += end_off.eq(off + n - 1)
        first_be = Signal(4)
        last_be = Signal(4)
        upto_end = Const(0xF, 4) >> (3 - end_off).as_unsigned()  # bytes 0 .. end_off
        with m.If(ndw == 1):
            # Bytes off .. off + n - 1 of the one dword.
            m.d.comb += first_be.eq(upto_end & (Const(0xF, 4) << off))
        with m.Else():
            m.d.comb += [first_be.eq((Const(0xF, 4) << off)[:4]),
                         last_be.eq(upto_end)]
        high = addr[32:] != 0
        dw0 = data.View(layout(HEADER_DW0), Signal(32))
        dw1 = data.View(layout(REQUEST_DW1), Signal(32))
        m.d.comb += [
            dw0.length.eq(ndw[:10]),
            dw0.kind.eq(Mux(high, TlpKind.MWR64, TlpKind.MWR32)),
            dw1.first_be.eq(first_be), dw1.last_be.eq(last_be),
            dw1.requester_id.eq(self.config.id),
        ]
        hdr = Mux(high, Cat(dw0, dw1, addr[32:64], addr[2:32] << 2),
                  Cat(dw0, dw1, addr[2:32] << 2, Const(0, 32)))
        is_last = n == left
        lane_of_end = Signal(range(wb))  # lane of the TLP's last byte in its last beat
        m.d.comb += lane_of_end.eq(off + n - 1)
        shift = Mux(first, off, shift1)
        beats = (ndw + lanes - 1) >> (lanes.bit_length() - 1)
        last_strb_count = ndw - ((beats - 1) << (lanes.bit_length() - 1))
        last_strb = Const((1 << lanes) - 1, lanes) >> (lanes - last_strb_count).as_unsigned()

        desc_in = data.View(desc_layout, descs.w_data)
        m.d.comb += [
            desc_in.hdr.eq(hdr),
            desc_in.beats.eq(beats),
            desc_in.last_strb.eq(last_strb),
            desc_in.shift.eq(shift),
            desc_in.tail.eq(lane_of_end >= shift),
            desc_in.first.eq(first),
            desc_in.last.eq(is_last | (left == 0)),
            desc_in.in_beats.eq(in_beats),
            desc_in.last_nbytes.eq(last_nbytes),
            desc_in.id.eq(cmd_id),
            desc_in.drop.eq(~self.config.bus_master),
            desc_in.empty.eq(left == 0),
            descs.w_en.eq(have),
        ]
        with m.If(have & descs.w_rdy):
            m.d.sync += [addr.eq(addr + n), left.eq(left - n), first.eq(0)]
            with m.If(is_last | (left == 0)):
                m.d.sync += have.eq(0)

        # -- beat stage: shift the data into TLP beats -----------------------------------------
        desc = data.View(desc_layout, descs.r_data)
        k = Signal.like(desc.beats)  # beat of the TLP being sent
        prev = Signal(self.width)  # the previous input beat
        in_count = Signal.like(in_beats)  # input beats of the command consumed
        status = Signal(STATUS_BITS)  # the command's first failure so far
        req, din = self.req, self.data
        advance = ~req.valid | req.ready
        last_beat = k == desc.beats - 1
        final = last_beat & desc.last
        need = ~final | desc.tail
        # A command's done waits in `pend` until its last beat has left the output register
        # (accepted on `req`, or never loaded because it was dropped), so that anything the
        # caller sends after seeing done is behind the whole write.
        pend = Signal()
        pend_done = Signal(done_layout(self.id_bits))
        push = Signal()
        m.d.comb += [
            push.eq(pend & advance & dones.w_rdy),
            dones.w_en.eq(push), dones.w_data.eq(pend_done),
            dones.r_en.eq(self.done.ready),
            self.done.valid.eq(dones.r_rdy), self.done.payload.eq(dones.r_data),
        ]
        with m.If(push):
            m.d.sync += pend.eq(0)
        room = ~pend | push  # a new done may be set aside

        with m.If(advance):
            m.d.sync += req.valid.eq(0)
        with m.If(descs.r_rdy & desc.empty & room):
            m.d.comb += descs.r_en.eq(1)
            m.d.sync += [pend.eq(1), pend_done.id.eq(desc.id),
                         pend_done.status.eq(DmaStatus.BAD_COMMAND)]
        with m.Elif(descs.r_rdy & ~desc.empty & advance & (din.valid | ~need) & (~final | room)):
            window = Cat(prev, din.payload.data)
            m.d.sync += [
                req.valid.eq(~desc.drop),
                req.payload.hdr.eq(Mux(k == 0, desc.hdr, 0)),
                req.payload.data.eq((window >> ((wb - desc.shift) * 8).as_unsigned())[:self.width]),
                req.payload.strb.eq(Mux(last_beat, desc.last_strb, (1 << lanes) - 1)),
                req.payload.sop.eq(k == 0),
                req.payload.eop.eq(last_beat),
                k.eq(Mux(last_beat, 0, k + 1)),
            ]
            m.d.comb += descs.r_en.eq(last_beat)
            failure = Signal(STATUS_BITS)
            with m.If(desc.drop):
                m.d.comb += failure.eq(DmaStatus.NO_BUS_MASTER)
            with m.If(need):
                m.d.comb += din.ready.eq(1)
                m.d.sync += prev.eq(din.payload.data)
                count = Mux(desc.first & (k == 0), 0, in_count)
                expect_last = count == desc.in_beats - 1
                m.d.sync += in_count.eq(count + 1)
                bad = ((din.payload.first != (count == 0)) | (din.payload.last != expect_last)
                       | (expect_last & (din.payload.nbytes != desc.last_nbytes)))
                with m.If(bad & ~desc.drop):
                    m.d.comb += failure.eq(DmaStatus.BAD_COMMAND)
            current = Mux(desc.first & (k == 0), DmaStatus.OK, status)
            result = Mux(current != DmaStatus.OK, current, failure)
            m.d.sync += status.eq(result)
            with m.If(final):
                m.d.sync += [pend.eq(1), pend_done.id.eq(desc.id), pend_done.status.eq(result)]
        return m
