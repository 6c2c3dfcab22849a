# DMA read requester: host memory into the device with PCIe Memory Read requests and their
# completions (PCI Express Base Spec §2.2.7 memory requests, §2.2.9 completions, §2.3.1.1
# completion splitting and the Read Completion Boundary, §2.3.2 completion handling,
# §2.8 completion timeout). Streams: hdl/pcie/tlp.py (TLP stream), hdl/stream.py (packets).
"""DMA reader: a command in, its bytes out in command order, a status per command.

Commands (`read_command_layout`): host byte address (64-bit, any alignment), length of
1 .. ``2**len_bits - 1`` bytes, an ``id`` the caller chooses. Each command's bytes leave on
``data`` as one packet (`partner.hdl.stream`: packed from lane 0, first/last), commands in the
order they were given; after a command's last data beat has been accepted, ``status`` carries
its ``id`` and a `DmaStatus`. A failed command still delivers its full length on ``data``
(contents undefined) so that data and status stay in step; only the status tells.

Requests: a command is cut at Max_Read_Request_Size-aligned addresses, so no request exceeds
MRRS or crosses 4 KiB (MRRS <= 4096 divides 4096, §2.2.7); First/Last DW Byte Enables select the
bytes of unaligned starts and ends (§2.2.5); addresses below 4 GiB use MRd32 (§2.2.4.1). Up to
``tags`` requests are outstanding. Tags are given out in order and taken back in order, when a
request's data has been handed to the delivery stage, so a tag is never reused before the last
completion of its previous request.

Reassembly: each request is given, when it is issued, a dword-contiguous region of a circular
buffer of ``buffer_bytes`` in block RAM, so the requests of a command (and consecutive
commands) are contiguous there. The buffer is ``width / 32`` banks of 32-bit memories, one per
dword lane; a completion beat at any dword offset is written in one cycle (each bank gets at
most one dword, at its own row), so completions are taken at one beat per cycle: ``cpl.ready``
is always 1, as a requester must always accept completions (§2.3.2 endpoints advertise infinite
completion credits). Completions may be split at any RCB and interleave between tags in any
order; within a tag they come in address order (§2.3.1.1). Requests retire in order once
complete, and the delivery stage (`partner.hdl.pcie.read_delivery`) reads the buffer a row per
cycle and shifts the bytes to lane 0, so data leaves at one beat per cycle (at most one idle
cycle per command).

Checks on completions (a completion that fails them is discarded, never hung on):

- a tag with no request outstanding: discarded, counted in ``unexpected``;
- Byte Count not the bytes still due, Lower Address not the next byte's, a length that does not
  fit, a payload that does not match the length: discarded, counted in ``malformed``, and the
  request's command ends with ``MALFORMED``; the request still waits for its valid completions
  or the timeout;
- poisoned data (EP set, §2.7.2.2) is taken in, but its command ends with ``POISONED``;
- an Unsupported Request or Completer Abort status ends its request (§2.3.2); the command's
  remaining requests are not issued, the ones outstanding are drained, and the command ends
  with ``UR`` / ``CA``;
- a request whose completions are not all in ``timeout`` cycles after it was issued ends with
  ``TIMEOUT`` (checked for the oldest outstanding request, so a timeout is detected at most
  ``timeout`` cycles after the one before it).

Bus Master Enable 0: requests are not sent; each request that would have been is ended at once
with ``NO_BUS_MASTER``, so the command completes with that status and its (undefined) data.
A zero-length command ends with ``BAD_COMMAND`` and no data beats.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from partner.tlp import (
    COMPLETION_DW1,
    COMPLETION_DW2,
    HEADER_DW0,
    REQUEST_DW1,
    CompletionStatus,
    TlpKind,
)

from ..stream import PacketStream
from ..wire import layout
from .dma_status import STATUS_BITS, DmaStatus
from .read_delivery import ReadDelivery
from .tlp import WIDTHS, EndpointConfig, TlpStream

__all__ = ["DmaReader", "read_command_layout", "read_status_layout"]


def read_command_layout(len_bits: int = 16, id_bits: int = 8) -> data.StructLayout:
    return data.StructLayout({"addr": 64, "length": len_bits, "id": id_bits})


def read_status_layout(id_bits: int = 8) -> data.StructLayout:
    return data.StructLayout({"id": id_bits, "status": STATUS_BITS})


def _pow2(value) -> bool:
    return isinstance(value, int) and value > 0 and value & (value - 1) == 0


class DmaReader(wiring.Component):
    """MRd requester with completion reassembly on a ``width``-bit TLP stream.

    Parameters
    ----------
    width : int
        TLP stream width (64, 128, 256); ``data`` is ``width // 8`` bytes wide.
    tags : int
        Requests outstanding at most (1 .. 256).
    buffer_bytes : int
        Reassembly buffer (a power of two, at least twice ``max_read_request``).
    timeout : int
        Completion timeout in cycles.
    max_read_request : int
        Largest request the design issues (the link's MRRS is used when it is smaller).
    len_bits, id_bits : int
        Widths of a command's length and id.
    commands : int
        Commands accepted and not yet reported (a power of two).

    Members
    -------
    cmd : ``In(Signature(read_command_layout))``
    data : ``Out(PacketStream(width // 8))``
    status : ``Out(Signature(read_status_layout))``
    req : ``Out(TlpStream(width))``
        MRd TLPs.
    cpl : ``In(TlpStream(width))``
        Completions; ``ready`` is always 1.
    config : ``In(EndpointConfig())``
        Uses ``id``, ``max_read_request`` and ``bus_master``.
    unexpected, malformed, timeouts : ``Out(16)``
        Wrapping counters of discarded completions and of timed-out requests.
    """

    def __init__(self, width: int, *, tags: int = 32, buffer_bytes: int = 16384,
                 timeout: int = 1 << 16, max_read_request: int = 4096, len_bits: int = 16,
                 id_bits: int = 8, commands: int = 32):
        if width not in WIDTHS:
            raise ValueError(f"width must be one of {WIDTHS}, not {width!r}")
        if not isinstance(tags, int) or not 1 <= tags <= 256:
            raise ValueError(f"tags must be 1 .. 256 (8-bit tags), not {tags!r}")
        if max_read_request not in (128, 256, 512, 1024, 2048, 4096):
            raise ValueError(f"max_read_request must be 128 << n up to 4096, "
                             f"not {max_read_request!r}")
        if not _pow2(buffer_bytes) or buffer_bytes < 2 * max_read_request:
            raise ValueError(f"buffer_bytes must be a power of two >= 2 * max_read_request "
                             f"({2 * max_read_request}), not {buffer_bytes!r}")
        if not isinstance(timeout, int) or timeout < 1:
            raise ValueError(f"timeout must be a positive number of cycles, not {timeout!r}")
        if not _pow2(commands):
            raise ValueError(f"commands must be a power of two, not {commands!r}")
        if not 1 <= len_bits <= 24 or id_bits < 1:
            raise ValueError("len_bits must be 1 .. 24 and id_bits at least 1")
        self.width, self.tags, self.buffer_bytes = width, tags, buffer_bytes
        self.timeout, self.max_read_request = timeout, max_read_request
        self.len_bits, self.id_bits, self.commands = len_bits, id_bits, commands
        self.dwords = buffer_bytes // 4
        super().__init__({
            "cmd": In(stream.Signature(read_command_layout(len_bits, id_bits))),
            "data": Out(PacketStream(width // 8)),
            "status": Out(stream.Signature(read_status_layout(id_bits))),
            "req": Out(TlpStream(width)),
            "cpl": In(TlpStream(width)),
            "config": In(EndpointConfig()),
            "unexpected": Out(16),
            "malformed": Out(16),
            "timeouts": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.width // 32
        dwb = self.dwords.bit_length()  # dword pointers: buffer index plus a wrap bit
        tags = self.tags
        seq_bits = self.commands.bit_length() + 1
        ts_bits = self.timeout.bit_length() + 1

        # Per-request table, written when a request is issued.
        self.req_layout = data.StructLayout({
            "base": dwb,  # buffer dword of the request's first dword
            "ndw": range(1025),
            "length": range(4097),  # bytes
            "addr_lo": 7,  # address bits 6:0 of the first byte (Lower Address, §2.2.9)
            "last": 1,  # last request of its command
            "seq": seq_bits,  # its command's sequence number
            "id": self.id_bits,
            "issued": ts_bits,  # time stamp for the completion timeout
        })
        m.submodules.table = table = Memory(shape=self.req_layout, depth=tags, init=[])
        m.submodules.received = received = Memory(shape=range(4097), depth=tags, init=[])
        s = _State(m, self, dwb, ts_bits, seq_bits)
        m.submodules.delivery = s.delivery = ReadDelivery(self.width, self.dwords,
                                                          self.len_bits, self.commands)
        s.table_w = table.write_port()
        s.table_cpl = table.read_port(domain="comb")
        s.table_ret = table.read_port(domain="comb")
        s.recv_w = received.write_port()
        s.recv_r = received.read_port(domain="comb")
        s.banks = []
        for lane in range(lanes):
            bank = Memory(shape=32, depth=self.dwords // lanes, init=[])
            m.submodules[f"bank{lane}"] = bank
            s.banks.append((bank.write_port(), bank.read_port(domain="sync")))

        self._issuer(m, s)
        self._completions(m, s)
        self._retire(m, s)
        self._delivery(m, s)
        return m

    # -- issuer ---------------------------------------------------------------------------------

    def _issuer(self, m, s):
        cmd, req, cfg = self.cmd, self.req, self.config
        addr = Signal(64)
        left = Signal(self.len_bits)
        have = Signal()
        cmd_id = Signal(self.id_bits)
        cmd_ok = Signal()  # the command has not been aborted by a UR/CA completion

        # A command is taken when the delivery stage and the status queue have room for it.
        room = ~have & (s.inflight < self.commands)
        dcmd = s.delivery.cmd
        m.d.comb += [cmd.ready.eq(room & dcmd.ready), dcmd.valid.eq(cmd.valid & room)]
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += [addr.eq(cmd.payload.addr), left.eq(cmd.payload.length), have.eq(1),
                         cmd_id.eq(cmd.payload.id), cmd_ok.eq(1), s.seq.eq(s.seq + 1),
                         s.abort_seq_valid.eq(0)]
        with m.Elif(s.abort_seq_valid & (s.abort_seq == s.seq)):
            m.d.sync += cmd_ok.eq(0)
        m.d.comb += [dcmd.payload.start.eq(Cat(cmd.payload.addr[:2], s.alloc)),
                     dcmd.payload.length.eq(cmd.payload.length)]

        # MRRS is configuration: registered, it keeps its decoding off the request's path.
        code = Mux(cfg.max_read_request > 5, 5, cfg.max_read_request)
        mrrs = Signal(range(4097), init=128)
        m.d.sync += mrrs.eq(Mux((128 << code) > self.max_read_request, self.max_read_request,
                                128 << code))
        # The next request is planned a cycle ahead: its size and byte enables are registered
        # from `addr` and `left`, so the MRRS and 4 KiB arithmetic ends at a register and the
        # issue decision starts from one. A request every other cycle is plenty: each asks
        # for up to MRRS bytes.
        room = Signal(range(4097))
        m.d.comb += room.eq(mrrs - (addr[:12] & (mrrs - 1)))
        plan_n = Signal(range(4097))
        m.d.comb += plan_n.eq(Mux(left < room, left, room))
        off = addr[:2]
        end_off = Signal(2)
        m.d.comb += end_off.eq(off + plan_n - 1)
        upto_end = Const(0xF, 4) >> (3 - end_off).as_unsigned()
        plan_ndw = Signal(range(1026))
        m.d.comb += plan_ndw.eq(Mux(left == 0, 0, (off + plan_n + 3) >> 2))
        planned = Signal()  # n, ndw, the byte enables and `last` are those of (addr, left)
        n = Signal(range(4097))
        ndw = Signal(range(1026))
        first_be, last_be = Signal(4), Signal(4)
        last = Signal()
        m.d.sync += [n.eq(plan_n), ndw.eq(plan_ndw), last.eq((plan_n == left) | (left == 0))]
        with m.If(plan_ndw == 1):
            m.d.sync += [first_be.eq(upto_end & (Const(0xF, 4) << off)), last_be.eq(0)]
        with m.Else():
            m.d.sync += [first_be.eq((Const(0xF, 4) << off)[:4]), last_be.eq(upto_end)]

        used = Signal(s.alloc.shape())  # dwords allocated and not yet free
        m.d.comb += used.eq(s.alloc - s.free)
        space = used + ndw <= self.dwords
        tag_free = s.in_use < self.tags
        advance = ~req.valid | req.ready
        issue = have & planned & tag_free & space & advance
        m.d.sync += planned.eq(have & ~issue)  # an issue moves addr and left: plan again
        send = Signal()  # a real MRd goes out (rather than a request ended at once)
        m.d.comb += send.eq(issue & cfg.bus_master & cmd_ok & (left != 0))

        with m.If(advance):
            m.d.sync += req.valid.eq(0)
        high = addr[32:] != 0
        dw0 = data.View(layout(HEADER_DW0), Signal(32))
        dw1 = data.View(layout(REQUEST_DW1), Signal(32))
        m.d.comb += [
            dw0.length.eq(ndw[:10]),
            dw0.kind.eq(Mux(high, TlpKind.MRD64, TlpKind.MRD32)),
            dw1.first_be.eq(first_be), dw1.last_be.eq(last_be),
            dw1.tag.eq(s.next_tag), dw1.requester_id.eq(cfg.id),
        ]
        with m.If(send):
            m.d.sync += [
                req.valid.eq(1),
                req.payload.hdr.eq(Mux(high, Cat(dw0, dw1, addr[32:64], addr[2:32] << 2),
                                       Cat(dw0, dw1, addr[2:32] << 2, Const(0, 32)))),
                req.payload.data.eq(0), req.payload.strb.eq(0),
                req.payload.sop.eq(1), req.payload.eop.eq(1),
            ]
        entry = data.View(self.req_layout, s.table_w.data)
        m.d.comb += [
            s.table_w.addr.eq(s.next_tag),
            s.table_w.en.eq(issue),
            entry.base.eq(s.alloc), entry.ndw.eq(ndw), entry.length.eq(n),
            entry.addr_lo.eq(addr[:7]), entry.last.eq(last), entry.seq.eq(s.seq),
            entry.id.eq(cmd_id), entry.issued.eq(s.now),
            s.issue.eq(issue),
        ]
        with m.If(issue):
            m.d.sync += [
                s.alloc.eq(s.alloc + ndw),
                s.next_tag.eq(Mux(s.next_tag == self.tags - 1, 0, s.next_tag + 1)),
                addr.eq(addr + n), left.eq(left - n),
            ]
            with m.If(last):
                m.d.sync += have.eq(0)
            # A request not sent ends at once, with the reason.
            with m.If(~send):
                m.d.comb += s.issue_done.eq(1)
                m.d.comb += s.issue_status.eq(
                    Mux(left == 0, DmaStatus.BAD_COMMAND,
                        Mux(~cmd_ok, s.abort_status, DmaStatus.NO_BUS_MASTER)))

    # -- completions ----------------------------------------------------------------------------

    def _completions(self, m, s):
        cpl = self.cpl
        lanes = self.width // 32
        lane_bits = lanes.bit_length() - 1
        m.d.comb += cpl.ready.eq(1)
        beat = cpl.payload
        take = cpl.valid
        dw0 = data.View(layout(HEADER_DW0), beat.hdr[0:32])
        dw1 = data.View(layout(COMPLETION_DW1), beat.hdr[32:64])
        dw2 = data.View(layout(COMPLETION_DW2), beat.hdr[64:96])
        tag = dw2.tag
        m.d.comb += [s.table_cpl.addr.eq(tag), s.recv_r.addr.eq(tag)]
        entry = data.View(self.req_layout, s.table_cpl.data)
        known = Signal()
        m.d.comb += known.eq((tag < self.tags) & s.pending.bit_select(tag, 1))
        got = Mux(s.fresh.bit_select(tag, 1), 0, s.recv_r.data)  # bytes received so far
        due = Signal(range(4097))
        m.d.comb += due.eq(entry.length - got)
        byte_count = Mux(dw1.byte_count == 0, 4096, dw1.byte_count)
        length = Mux(dw0.length == 0, 1024, dw0.length)
        la = dw2.lower_address
        bytes_here = Signal(range(4097))  # this completion's bytes if it is not the last
        m.d.comb += bytes_here.eq((length << 2) - la[:2])
        final_sc = byte_count <= bytes_here
        status_ok = dw1.status == CompletionStatus.SC
        fits = Mux(final_sc, length == ((la[:2] + byte_count + 3) >> 2), 1)
        match = ((dw0.kind == TlpKind.CPLD) & (byte_count == due)
                 & (la == (entry.addr_lo + got)[:7]) & fits)
        error = ~status_ok & ((dw0.kind == TlpKind.CPL) | (dw0.kind == TlpKind.CPLD))
        err_code = Signal(STATUS_BITS)
        with m.Switch(dw1.status):
            with m.Case(CompletionStatus.UR):
                m.d.comb += err_code.eq(DmaStatus.UR)
            with m.Case(CompletionStatus.CA):
                m.d.comb += err_code.eq(DmaStatus.CA)
            with m.Default():  # CRS is for configuration requests only; others are reserved
                m.d.comb += err_code.eq(DmaStatus.MALFORMED)

        # Stage 1 registers: the beat to write and where.
        w_valid, w_data, w_strb = Signal(), Signal(self.width), Signal(lanes)
        w_ptr = Signal(s.alloc.shape())  # buffer dword of the beat's dword 0
        w_left = Signal(range(1025))  # payload dwords of the TLP still to come, this beat's in
        w_eop, w_final, w_tag, w_status = Signal(), Signal(), Signal(8), Signal(STATUS_BITS)
        keep = Signal()  # the TLP in progress is being written
        next_ptr = Signal.like(w_ptr)
        left_after = Signal.like(w_left)
        cur_final, cur_tag, cur_status = Signal(), Signal(8), Signal(STATUS_BITS)

        m.d.sync += w_valid.eq(0)
        with m.If(take):
            with m.If(beat.sop):
                m.d.sync += [s.busy.eq(~beat.eop), s.busy_tag.eq(tag)]
                with m.If(~known):
                    m.d.sync += self.unexpected.eq(self.unexpected + 1)
                with m.Elif(error):
                    # §2.3.2: a status other than SC ends the request.
                    m.d.comb += [s.clear_pending.eq(1), s.cpl_tag.eq(tag)]
                    m.d.sync += [keep.eq(1), cur_final.eq(1), cur_tag.eq(tag),
                                 cur_status.eq(err_code)]
                    m.d.comb += [s.abort.eq(1), s.abort_in_seq.eq(entry.seq),
                                 s.abort_in_status.eq(err_code)]
                with m.Elif(~match):
                    m.d.sync += self.malformed.eq(self.malformed + 1)
                    m.d.comb += [s.mark.eq(1), s.mark_status.eq(DmaStatus.MALFORMED),
                                 s.cpl_tag.eq(tag)]
                with m.Else():
                    # Poisoned data (§2.7.2.2) is taken in, so the request completes, but
                    # its command fails.
                    m.d.comb += [s.mark.eq(dw0.ep), s.mark_status.eq(DmaStatus.POISONED)]
                    m.d.comb += [s.cpl_tag.eq(tag), s.recv_w.addr.eq(tag),
                                 s.recv_w.data.eq(got + bytes_here),
                                 s.recv_w.en.eq(~final_sc), s.clear_fresh.eq(1),
                                 s.clear_pending.eq(final_sc)]
                    m.d.sync += [keep.eq(1), cur_final.eq(final_sc), cur_tag.eq(tag),
                                 cur_status.eq(DmaStatus.OK)]
                ptr = entry.base + ((entry.addr_lo[:2] + got) >> 2)
                write = known & (error | match)
                m.d.sync += [
                    w_valid.eq(write), w_ptr.eq(ptr), w_left.eq(Mux(error, 0, length)),
                    w_final.eq(error | final_sc), w_tag.eq(tag),
                    w_status.eq(Mux(error, err_code, DmaStatus.OK)),
                    next_ptr.eq(ptr + lanes),
                    left_after.eq(Mux(error | (length <= lanes), 0, length - lanes)),
                ]
                with m.If(~write):
                    m.d.sync += keep.eq(0)
            with m.Else():
                m.d.sync += [
                    w_valid.eq(keep), w_ptr.eq(next_ptr), w_left.eq(left_after),
                    w_final.eq(cur_final), w_tag.eq(cur_tag), w_status.eq(cur_status),
                    next_ptr.eq(next_ptr + lanes),
                    left_after.eq(Mux(left_after <= lanes, 0, left_after - lanes)),
                ]
                with m.If(beat.eop):
                    m.d.sync += s.busy.eq(0)
            m.d.sync += [w_data.eq(beat.data), w_strb.eq(beat.strb), w_eop.eq(beat.eop)]

        # Stage 1: each bank takes the dword of its lane, at its own row.
        p_lane = w_ptr[:lane_bits]
        p_row = w_ptr[lane_bits:-1]
        allowed = Signal(lanes)  # dword j of the beat is within the TLP's length
        for j in range(lanes):
            m.d.comb += allowed[j].eq(w_left > j)
        for b, (wport, _) in enumerate(s.banks):
            j = Signal(range(lanes), name=f"bank{b}_src")
            m.d.comb += j.eq((b - p_lane)[:lane_bits])
            m.d.comb += [
                wport.addr.eq(p_row + (b < p_lane)),
                wport.data.eq(w_data.word_select(j, 32)),
                wport.en.eq(w_valid & (w_strb & allowed).bit_select(j, 1)),
            ]
        # The payload must be exactly the header's length (§2.2.9): full beats, then the rest.
        full = (1 << lanes) - 1
        bad_length = Mux(w_eop, (w_left > lanes) | (w_strb != allowed),
                         (w_strb != full) | (w_left <= lanes))
        no_payload = w_left == 0  # an error completion: nothing to write
        with m.If(w_valid & Mux(no_payload, w_strb != 0, bad_length)):
            m.d.comb += s.length_error.eq(1)
            m.d.sync += self.malformed.eq(self.malformed + 1)
        with m.If(w_valid & w_eop & w_final):
            m.d.comb += [s.complete_now.eq(1), s.complete_tag.eq(w_tag),
                         s.complete_status.eq(w_status)]
        m.d.comb += s.w_tag.eq(w_tag)

    # -- retirement and timeout -----------------------------------------------------------------

    def _retire(self, m, s):
        tags = self.tags
        entry = data.View(self.req_layout, s.table_ret.data)
        t = s.retire_tag
        m.d.comb += s.table_ret.addr.eq(t)
        occupied = s.in_use != 0
        done = occupied & s.complete.bit_select(t, 1)
        age = Signal(s.now.shape())
        m.d.comb += age.eq(s.now - entry.issued)
        timed_out = (occupied & s.pending.bit_select(t, 1) & (age >= self.timeout)
                     & ~(s.busy & (s.busy_tag == t)))

        cmd_status = Signal(STATUS_BITS)  # first failure among the command's retired requests
        req_status = s.err[t]
        with m.If(done):
            m.d.comb += s.retire.eq(1)
            m.d.sync += [
                s.valid_dw.eq(entry.base + entry.ndw),
                s.retire_tag.eq(Mux(t == tags - 1, 0, t + 1)),
            ]
            result = Mux(cmd_status != DmaStatus.OK, cmd_status, req_status)
            with m.If(entry.last):
                m.d.sync += cmd_status.eq(DmaStatus.OK)
                st = data.View(read_status_layout(self.id_bits), s.statq.w_data)
                m.d.comb += [st.id.eq(entry.id), st.status.eq(result), s.statq.w_en.eq(1)]
            with m.Else():
                m.d.sync += cmd_status.eq(result)
        with m.Elif(timed_out):
            m.d.comb += s.timeout_now.eq(1)
            m.d.sync += self.timeouts.eq(self.timeouts + 1)

        # Flag and status updates from every stage, per tag.
        one = Const(1, tags)
        set_pending = Mux(s.issue & ~s.issue_done, one << s.next_tag, 0)
        set_complete = (Mux(s.issue & s.issue_done, one << s.next_tag, 0)
                        | Mux(s.complete_now, one << s.complete_tag, 0)
                        | Mux(s.timeout_now, one << t, 0))
        clr_pending = (Mux(s.clear_pending, one << s.cpl_tag, 0)
                       | Mux(s.timeout_now, one << t, 0))
        clr_complete = Mux(s.retire, one << t, 0)
        set_fresh = Mux(s.issue, one << s.next_tag, 0)
        clr_fresh = Mux(s.clear_fresh, one << s.cpl_tag, 0)
        m.d.sync += [
            s.pending.eq((s.pending & ~clr_pending[:tags]) | set_pending[:tags]),
            s.complete.eq((s.complete & ~clr_complete[:tags]) | set_complete[:tags]),
            s.fresh.eq((s.fresh & ~clr_fresh[:tags]) | set_fresh[:tags]),
            s.in_use.eq(s.in_use + s.issue - s.retire),
            s.now.eq(s.now + 1),
        ]

        def fail(tag, status):
            with m.If(s.err[tag] == DmaStatus.OK):
                m.d.sync += s.err[tag].eq(status)

        with m.If(s.mark):
            fail(s.cpl_tag, s.mark_status)
        with m.If(s.length_error):
            fail(s.w_tag, DmaStatus.MALFORMED)
        with m.If(s.complete_now):
            fail(s.complete_tag, s.complete_status)
        with m.If(s.timeout_now):
            fail(t, DmaStatus.TIMEOUT)
        with m.If(s.issue):
            m.d.sync += s.err[s.next_tag].eq(Mux(s.issue_done, s.issue_status, DmaStatus.OK))

        # A UR/CA stops the issue of the rest of its command.
        with m.If(s.abort):
            m.d.sync += [s.abort_seq_valid.eq(1), s.abort_seq.eq(s.abort_in_seq),
                         s.abort_status.eq(s.abort_in_status)]

    # -- delivery -------------------------------------------------------------------------------

    def _delivery(self, m, s):
        delivery = s.delivery
        m.d.comb += [
            delivery.valid_dw.eq(s.valid_dw), s.free.eq(delivery.free),
            delivery.row_data.eq(Cat(*(rport.data for _, rport in s.banks))),
            s.zero_done.eq(delivery.zero_done),
        ]
        for _, rport in s.banks:
            m.d.comb += [rport.addr.eq(delivery.row_addr), rport.en.eq(delivery.row_en)]
        wiring.connect(m, delivery=delivery.data, data=wiring.flipped(self.data))

        # Status: each command's status leaves after its last data beat was accepted.
        out = self.data
        delivered = Signal(range(self.commands + 1))
        last_out = out.valid & out.ready & out.payload.last
        pop = self.status.valid & self.status.ready
        m.d.sync += delivered.eq(delivered + (last_out | s.zero_done) - pop)
        m.d.comb += [
            self.status.valid.eq(s.statq.r_rdy & (delivered != 0)),
            self.status.payload.eq(s.statq.r_data),
            s.statq.r_en.eq(pop),
        ]
        m.d.sync += s.inflight.eq(s.inflight + (self.cmd.valid & self.cmd.ready) - pop)


class _State:
    """Signals shared by the reader's stages."""

    def __init__(self, m, reader, dwb, ts_bits, seq_bits):
        tags = reader.tags
        self.alloc = Signal(dwb)  # next free buffer dword (with wrap bit)
        self.free = Signal(dwb)  # buffer dwords before this one may be reused
        self.valid_dw = Signal(dwb)  # buffer dwords before this one hold retired data
        self.next_tag = Signal(range(tags))
        self.retire_tag = Signal(range(tags))
        self.in_use = Signal(range(tags + 1))
        self.pending = Signal(tags)  # issued, completions still expected
        self.complete = Signal(tags)  # all data in (or ended): ready to retire
        self.fresh = Signal(tags)  # nothing received yet (the received table is stale)
        self.err = Array(Signal(STATUS_BITS, name=f"err{i}") for i in range(tags))
        self.now = Signal(ts_bits)
        self.seq = Signal(seq_bits)
        self.inflight = Signal(range(reader.commands + 1))
        self.busy = Signal()  # a completion TLP is in progress
        self.busy_tag = Signal(8)
        # Strobes between stages.
        self.issue, self.issue_done = Signal(), Signal()
        self.issue_status = Signal(STATUS_BITS)
        self.cpl_tag = Signal(8)
        self.clear_pending, self.clear_fresh = Signal(), Signal()
        self.mark, self.mark_status = Signal(), Signal(STATUS_BITS)  # a completion fails a tag
        self.length_error, self.w_tag = Signal(), Signal(8)
        self.complete_now, self.complete_tag = Signal(), Signal(8)
        self.complete_status = Signal(STATUS_BITS)
        self.retire, self.timeout_now, self.zero_done = Signal(), Signal(), Signal()
        self.abort, self.abort_in_seq = Signal(), Signal(seq_bits)
        self.abort_in_status = Signal(STATUS_BITS)
        self.abort_seq_valid, self.abort_seq = Signal(), Signal(seq_bits)
        self.abort_status = Signal(STATUS_BITS)
        # Statuses in command order.
        m.submodules.statq = self.statq = SyncFIFOBuffered(
            width=read_status_layout(reader.id_bits).size, depth=reader.commands)
