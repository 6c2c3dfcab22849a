# The DMA engine's job sequencer: walks the rings of partner.pcie.formats in host memory (RX free
# ring -> frame data -> RX completion; TX ring -> frame data -> TX completion; events -> event
# ring) through the DMA requesters' command interfaces (partner.hdl.pcie.dma_read / dma_write).
# Behaviour follows partner.sim.models.dma_device, the executable form of the formats.
"""DMA job sequencer.

One job at a time, chosen in ``IDLE``: the completion of a TX pvec the TX pipe has finished,
else an event when the event ring has room (events are rare and small), else the next RX or TX
ring with work in round-robin order. A ring has work
when it is enabled, not ``waiting``, and has a frame from the core (RX) or posted descriptors
(TX). A ring found unable to go on (its completion ring full, or the chain of descriptors not
yet posted to its end) is marked ``waiting`` and skipped until the host rings one of its
doorbells; other rings carry on, so one starved RX queue does not block the others (the frame
stays in the core's per-flow queue, whose quota drops early meanwhile).

A descriptor job:

1. ``CHECK``: the ring's context (bases, sizes, indices) from `DmaRegisters`; room for a
   completion?
2. ``CACHED``, ``FETCH``/``RECV``: the chain's entries, first from the ring's descriptor cache,
   then by reads of up to ``BATCH`` descriptors (16 bytes each, never past the end of the ring
   or the host's tail) until an entry without ``more``; a chain longer than ``max_chunks`` is
   walked to its end, its entries past the limit not kept.
3. ``DECIDE``: the status, in the order of the model (`RxStatus`, `TxStatus`).
4. RX OK: the frame is committed to the `FrameFeed` (hdl/pcie/dma_write_data.py), which moves
   it from the core's stream into its staging FIFO at a beat per cycle, and one write command
   per chunk it reaches is given, the frame's bytes cut to the chunks by the feed's
   `Repacker`; the rest of a frame longer than the pvec is consumed and dropped (TRUNCATED).
   The job does not wait for the data: the next job's commands queue behind it. A ring's next
   frame is decided only once the frame before has left the core's stream (``draining``),
   since its metadata is read from the head of that stream. TX: the pvec becomes a job of the
   `TxPipe` (hdl/pcie/dma_tx_pipe.py) and, if its status is OK, one read command per chunk is
   given; the job ends there and the next may start. The pipe glues each frame's chunks into
   the TX buffer (a store-and-forward `PacketFIFO`), rolls back a frame whose read failed, and
   hands back each pvec's completion record in descriptor order, which a later job
   (``retiring``) writes as steps 5-6. Up to ``TX_JOBS`` pvecs are in flight, all of one TX
   ring (``issue_head`` is where its next pvec starts); a frame is taken only when the TX
   buffer has room for it beside those in flight. Which commands' data and statuses are the
   pipe's is queued as the commands are given (``kinds``), so descriptor reads and TX data
   reads may interleave.
5. ``COMPLETE``: the completion entry (one write command, one MWr) is copied into the
   `WriteData` block and its command given after the data commands of the same writer, so it
   reaches host memory after the data (posted writes from one requester stay in order, PCIe
   Base Spec §2.4.1). `WriteData` delivers the writer's data in the order of its commands.
6. ``FINISH``: indices, counters and the event of an error at once; the interrupt strobe is
   queued with the entry's command number and raised once the writer reports that command
   done, so an interrupt's MSI-X write is granted after the completion's MWr.

The descriptor cache: a read fetches up to ``BATCH`` descriptors, usually more than the chain
needs; the entries past the chain stay in the ring's ``BATCH`` slots of the cache (slot = index
mod ``BATCH``) as a window ``[start, start + count)``, and the next job of the ring takes them
from there if it starts at ``start``, with no read round trip. Posted descriptors belong to the
device until their completion (docs/dma.md), so the copy stays true. The window is dropped
when the ring is stopped, the engine is disabled or reset, or a read of descriptors fails.
A job that leaves its ring's window at most half full, with more descriptors posted past it,
prefetches them into the free slots (``PREFETCH``) and goes on; the answer extends the window
while later jobs run, so the cache does not run dry every ``BATCH`` pvecs (one prefetch at a
time; a job's own read waits for it, as both assemble entries in `EntryReader`).

A read of descriptors that fails (UR, CA, timeout) gives back every descriptor posted
(``chunks = tail - head``) with DMA_ERROR, as the model does: where the chain ends is unknown.
The event's ``index`` is the first descriptor of the failed read.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from partner.formats import ACTION, FRAME_META
from partner.hdl.core import host_rx_layout
from partner.hdl.wire import layout
from partner.pcie.formats import (
    DMA_TIMEOUT,
    INDEX_BITS,
    RX_COMPLETION,
    RX_FREE,
    TX_COMPLETION,
    TX_DESCRIPTOR,
    DmaAgent,
    DmaCounter,
    DmaEvent,
    RxStatus,
    TxFlag,
    TxStatus,
)
from partner.tlp import CompletionStatus

from ..stream import PacketStream
from .dma_entries import EntryReader
from .dma_events import event_record_layout
from .dma_read import read_command_layout, read_status_layout
from .dma_status import DmaStatus
from .dma_tx_pipe import TxPipe
from .dma_write import done_layout, write_command_layout
from .dma_write_data import FrameFeed, WriteData

__all__ = ["BATCH", "DmaSequencer"]

BATCH = 64  # descriptors per read: 1 KiB, eight requests at the smallest MRRS
TX_JOBS = 16  # TX pvecs in flight in the TX pipe
READS_IN_FLIGHT = 64  # read commands given and not yet answered with a status
WRITES_IN_FLIGHT = 16  # write commands given whose data has not yet gone to the writer
STAGING_BYTES = 2048  # RX frames taken from the core ahead of the writer
M = (1 << INDEX_BITS) - 1
_COUNTERS = len(DmaCounter)


def _event_status(status):
    """A requester's `DmaStatus` as the DMA_ERROR event's `status`: a completion status, or
    `DMA_TIMEOUT`. A malformed completion or a refused command counts as a Completer Abort; no
    bus mastering as an Unsupported Request (the request never left)."""
    return Mux(status == DmaStatus.TIMEOUT, DMA_TIMEOUT,
               Mux(status == DmaStatus.UR, CompletionStatus.UR,
                   Mux(status == DmaStatus.NO_BUS_MASTER, CompletionStatus.UR,
                       CompletionStatus.CA)))


class DmaSequencer(wiring.Component):
    """The engine's jobs, over a reader and a writer of ``width``-bit TLP streams.

    ``tx_buffer_bytes`` is the TX buffer the caller attaches (``tx_room`` says how many of its
    beats are free); a pvec longer than it completes with OVERSIZE whatever ``tx_max_length``
    says, so a frame never waits for room that cannot come.
    """

    def __init__(self, width: int, *, rx_rings: int, tx_rings: int, ports: int, tx_flows: int,
                 max_chunks: int, tx_buffer_bytes: int):
        self.width, self.wb = width, width // 8
        if self.wb not in (8, 16, 32):
            raise ValueError(f"width must be 64, 128 or 256, not {width!r}")
        self.rx_rings, self.tx_rings = rx_rings, tx_rings
        self.rings = rx_rings + tx_rings + 1
        self.ports, self.tx_flows, self.max_chunks = ports, tx_flows, max_chunks
        self.tx_buffer_bytes = tx_buffer_bytes
        n = self.rings
        record = event_record_layout()
        super().__init__({
            "rx": In(stream.Signature(host_rx_layout(self.wb))).array(rx_rings),
            "tx": Out(PacketStream(self.wb)),
            "tx_drop": Out(1),  # with the last beat of `tx`: roll the frame back
            "tx_port": Out(3),
            "tx_flow": Out(9),
            "tx_length": Out(14),
            "tx_room": In(range(tx_buffer_bytes // self.wb + 1)),
            "rd_cmd": Out(stream.Signature(read_command_layout())),
            "rd_data": In(PacketStream(self.wb)),
            "rd_status": In(stream.Signature(read_status_layout())),
            "wr_cmd": Out(stream.Signature(write_command_layout())),
            "wr_data": Out(PacketStream(self.wb)),
            "wr_done": In(stream.Signature(done_layout())),
            "events": In(stream.Signature(record)),
            "post": Out(stream.Signature(record)),
            # Registers (`DmaRegisters`).
            "enable": In(1),
            "resetting": In(1),
            "idle": Out(1),
            "max_chunks_reg": In(range(17)),
            "tx_max_length": In(16),
            "ring_enabled": In(n),
            "ring_waiting": In(n),
            "sel": Out(range(n)),
            "base": In(64),
            "cpl_base": In(64),
            "log2": In(4),
            "cpl_log2": In(4),
            "head": In(INDEX_BITS),
            "tail": In(INDEX_BITS),
            "cpl_head": In(INDEX_BITS),
            "cpl_tail": In(INDEX_BITS),
            "stall": In(1),  # the registers are busy with a CSR access: FINISH waits
            "set_head": Out(1),
            "new_head": Out(INDEX_BITS),
            "bump_cpl": Out(1),
            "set_waiting": Out(1),
            "job_start": Out(1),  # LOAD: the registers read the ring's context
            "ring_error": Out(1),
            "error_status": Out(4),
            "dma_error": Out(1),
            "inc": Out(16).array(_COUNTERS),
            "written": Out(n),
            "notify": Out(n),
        })

    def elaborate(self, platform):
        m = Module()
        wb, n = self.wb, self.rings
        R, T, E = self.rx_rings, self.tx_rings, self.rings - 1

        m.submodules.tx_pipe = pipe = TxPipe(wb, rings=n, max_chunks=self.max_chunks,
                                             jobs=TX_JOBS,
                                             buffer_beats=self.tx_buffer_bytes // wb)
        m.submodules.descs = descs = Memory(shape=128, depth=self.max_chunks, init=[])
        desc_wr = descs.write_port()
        desc_rd = descs.read_port(transparent_for=(desc_wr,))
        m.submodules.cache = cache = Memory(shape=128, depth=(R + T) * BATCH, init=[])
        cache_wr = cache.write_port()
        cache_rd = cache.read_port()

        ring = Signal(range(n))
        is_tx = Signal()
        is_event = Signal()
        m.d.comb += self.sel.eq(ring)

        # Context of the job's ring, latched in CHECK.
        base, cpl_base = Signal(64), Signal(64)
        log2, cpl_log2 = Signal(4), Signal(4)
        head, tail, cpl_tail = Signal(INDEX_BITS), Signal(INDEX_BITS), Signal(INDEX_BITS)
        mask = Signal(INDEX_BITS)
        m.d.comb += mask.eq((Const(1, INDEX_BITS + 1) << log2) - 1)

        # The chain.
        idx = Signal(INDEX_BITS)  # next descriptor to fetch
        batch_idx = Signal(INDEX_BITS)
        batch_n = Signal(range(BATCH + 1))
        batch_got = Signal(range(BATCH + 1))
        count = Signal(INDEX_BITS + 1)  # entries of the chain so far
        chain_done = Signal()
        zero = Signal()
        total = Signal(20)  # sum of the kept chunks' lengths
        first_entry = Signal(128)
        fetch_error = Signal()
        dma_status = Signal(3)  # the failed read's `DmaStatus`
        dma_index = Signal(INDEX_BITS)
        dma_agent = Signal(2)

        # The outcome.
        status = Signal(4)
        chunks = Signal(INDEX_BITS)
        used = Signal(5)
        length = Signal(16)  # RX: frame length; TX: total_length
        written_bytes = Signal(16)
        truncated = Signal()
        meta = Signal(layout(FRAME_META))
        event = Signal(event_record_layout())

        # Writer bookkeeping: commands given and not yet done.
        outstanding = Signal(8)
        m.d.comb += self.wr_done.ready.eq(1)
        wr_taken = self.wr_cmd.valid & self.wr_cmd.ready
        done_now = self.wr_done.valid
        m.d.sync += outstanding.eq(outstanding + wr_taken - done_now)
        # The interrupt strobe of a completion waits for the writer's done of its entry, so the
        # MSI-X write follows the entry's MWr on the link (see FINISH); counting commands given
        # and done, the strobe of the n-th command is due once n are done.
        given, finished = Signal(16), Signal(16)
        m.d.sync += [given.eq(given + wr_taken), finished.eq(finished + done_now)]
        strobe_layout = data.StructLayout({"seq": 16, "ring": range(n), "notify": 1})
        m.submodules.strobes = strobes = SyncFIFOBuffered(width=strobe_layout.size, depth=8)
        strobe = data.View(strobe_layout, strobes.r_data)
        due = Signal(16)
        m.d.comb += due.eq(finished - strobe.seq)
        with m.If(strobes.r_rdy & ~due[-1]):
            m.d.comb += [strobes.r_en.eq(1), self.written.bit_select(strobe.ring, 1).eq(1),
                         self.notify.bit_select(strobe.ring, 1).eq(strobe.notify)]
        cpl_seq = Signal(16)  # the completion entry's command number

        # -- descriptor entries from the read data or the cache ----------------------------------
        m.submodules.entries_in = entries_in = EntryReader(wb)
        receiving = Signal()  # a job's own read of descriptors (RECV)
        # The prefetch: a job that leaves its ring's window at most half full reads the next
        # descriptors posted into the free slots, and goes on; they land in the cache while
        # later jobs run, so a ring's window does not run dry every BATCH pvecs. One at a
        # time; a job's own read waits for it (both assemble entries in `entries_in`).
        pf_busy = Signal()  # a prefetch was given (`pf_done`: and answered)
        pf_done = Signal()
        pf_ok = Signal()
        pf_void = Signal()  # its ring was stopped, or the engine disabled or reset, meanwhile
        pf_ring = Signal(range(n))
        pf_start = Signal(INDEX_BITS)
        pf_n = Signal(range(BATCH + 1))
        pf_got = Signal(range(BATCH + 1))
        pf_keep = Signal(range(BATCH + 1))  # entries of the window it extends
        prefetching = Signal()
        m.d.comb += prefetching.eq(pf_busy & ~pf_done)
        from_cache = Signal()
        cache_pending = Signal()  # the cache's read port answers an address given last cycle
        rd = self.rd_data
        entry, entry_valid = Signal(128), Signal()
        m.d.comb += [entry.eq(Mux(from_cache, cache_rd.data, entries_in.entry)),
                     entry_valid.eq(Mux(from_cache, cache_pending, entries_in.valid & receiving))]
        # Whose is the reader's output: each command's kind (TX data for the pipe, or
        # descriptors) is queued when it is given; its data beats and then its status follow
        # in command order, and the status takes the kind off the queue.
        # The next command's first beat may come with the status of the one before: once the
        # head command's last beat has gone, beats wait until its status takes its kind off.
        m.submodules.kinds = kinds = SyncFIFOBuffered(width=1, depth=READS_IN_FLIGHT)
        rd_status_valid = Signal()
        data_done = Signal()
        with m.If(rd.valid & rd.ready & rd.payload.last):
            m.d.sync += data_done.eq(1)
        with m.If(kinds.r_en):
            m.d.sync += data_done.eq(0)
        with m.If(kinds.r_rdy & kinds.r_data[0]):
            m.d.comb += [pipe.rd_data.valid.eq(rd.valid & ~data_done),
                         pipe.rd_data.payload.eq(rd.payload),
                         rd.ready.eq(pipe.rd_data.ready & ~data_done)]
            wiring.connect(m, wiring.flipped(self.rd_status), pipe.rd_status)
        with m.Else():
            m.d.comb += [rd_status_valid.eq(self.rd_status.valid),
                         self.rd_status.ready.eq(1)]
            with m.If(receiving | prefetching):
                m.d.comb += [entries_in.data.valid.eq(rd.valid & ~data_done),
                             entries_in.data.payload.eq(rd.payload),
                             rd.ready.eq(entries_in.data.ready & ~data_done)]

        # The cache's window per descriptor ring: `cache_count` entries from `cache_start`.
        slot_bits = BATCH.bit_length() - 1
        cache_start = Array(Signal(INDEX_BITS, name=f"cache_start_{r}") for r in range(R + T))
        cache_count = Array(Signal(range(BATCH + 1), name=f"cache_count_{r}")
                            for r in range(R + T))
        window_end = Signal(INDEX_BITS)  # the job's entries are in the cache up to here
        cache_hit = Signal()  # the job found its first entry in the cache
        fetched = Signal()  # and read descriptors itself
        disturbed = Signal()  # the ring was stopped or the engine reset during the job
        # Every descriptor read lands in the cache, the chain's own entries too.
        m.d.comb += [
            cache_wr.addr.eq(Mux(receiving, Cat((batch_idx + batch_got)[:slot_bits], ring),
                                 Cat((pf_start + pf_got)[:slot_bits], pf_ring))),
            cache_wr.data.eq(entries_in.entry),
            cache_wr.en.eq((receiving | prefetching) & entries_in.valid),
        ]
        with m.If(prefetching & entries_in.valid):
            m.d.sync += pf_got.eq(pf_got + 1)
        with m.If(prefetching & kinds.r_rdy & ~kinds.r_data[0] & self.rd_status.valid):
            m.d.sync += [pf_done.eq(1), pf_ok.eq(self.rd_status.payload.status == DmaStatus.OK)]
        with m.If(pf_busy & (~self.ring_enabled.bit_select(pf_ring, 1) | self.resetting
                             | ~self.enable)):
            m.d.sync += pf_void.eq(1)

        def keep_window(start):
            """The ring's window becomes [start, end of the job's entries), if it fits the
            cache; the end is where a prefetch that landed during the job left it. Returns
            the window's size (0: none)."""
            end = Mux(cache_hit & ~fetched & (cache_count[ring] != 0),
                      cache_start[ring] + cache_count[ring], window_end)[:INDEX_BITS]
            size = Signal(INDEX_BITS, name="window_size")
            kept = Signal(range(BATCH + 1), name="window_kept")
            m.d.comb += [size.eq(end - start), kept.eq(Mux(size > BATCH, 0, size))]
            m.d.sync += [cache_start[ring].eq(start), cache_count[ring].eq(kept)]
            return kept, end

        # An answered prefetch extends its ring's window (in IDLE, when no job changes a
        # window), if the window still ends where the prefetch began.
        extend = Signal()
        with m.If(extend):
            m.d.sync += [pf_busy.eq(0), pf_done.eq(0)]
            ends_at = (cache_start[pf_ring] + cache_count[pf_ring])[:INDEX_BITS]
            with m.If(pf_ok & ~pf_void & (cache_count[pf_ring] != 0) & (ends_at == pf_start)
                      & (cache_count[pf_ring] + pf_n <= BATCH)):
                m.d.sync += cache_count[pf_ring].eq(cache_count[pf_ring] + pf_n)

        def then_prefetch(start):
            """Keep the window from ``start``; go to PREFETCH if it is at most half full and
            more descriptors are posted past it (the caller's ``m.next`` stands otherwise)."""
            kept, end = keep_window(start)
            with m.If(~pf_busy & ~disturbed & ~fetch_error & (kept != 0) & (kept <= BATCH // 2)
                      & (((tail - end) & M) != 0)):
                m.d.sync += [pf_start.eq(end), pf_keep.eq(kept)]
                m.next = "PREFETCH"

        rx_free = data.View(layout(RX_FREE), entry)
        tx_desc = data.View(layout(TX_DESCRIPTOR), entry)
        entry_len = Mux(is_tx, tx_desc.length, rx_free.length)
        entry_more = Mux(is_tx, tx_desc.more, rx_free.more)
        with m.If(entry_valid & ~chain_done):
            m.d.sync += [count.eq(count + 1), zero.eq(zero | (entry_len == 0))]
            with m.If(count < self.max_chunks):
                m.d.comb += [desc_wr.addr.eq(count), desc_wr.data.eq(entry), desc_wr.en.eq(1)]
                m.d.sync += total.eq(total + entry_len)
            with m.If(count == 0):
                m.d.sync += first_entry.eq(entry)
            with m.If(~entry_more):
                m.d.sync += chain_done.eq(1)
        with m.If(entry_valid):
            m.d.sync += batch_got.eq(batch_got + 1)

        first = data.View(layout(TX_DESCRIPTOR), first_entry)

        # -- write data: RX frames and completion entries (hdl/pcie/dma_write_data.py) ---------
        # A frame committed in DECIDE leaves the core's stream at a beat per cycle through the
        # feed's staging FIFO; the ring's next frame, and its metadata, is then at the head of
        # the stream early, and the next job's commands are given while this frame's data still
        # goes out. The writer's data follows its commands: each one's kind is pushed as it is
        # given; a completion entry is copied into `write_data` in COMPLETE, so the next job may
        # change the registers it came from.
        rx_valid = Cat(s.valid for s in self.rx)
        current = (Array(s.payload for s in self.rx)[ring[:max(1, (R - 1).bit_length())]]
                   if R > 1 else self.rx[0].payload)
        m.submodules.feed = feed = FrameFeed(wb, R, staging_bytes=STAGING_BYTES)
        for q in range(R):
            wiring.connect(m, wiring.flipped(self.rx[q]), feed.rx[q])
        m.submodules.write_data = write_data = WriteData(wb, commands=WRITES_IN_FLIGHT)
        wiring.connect(m, feed.o, write_data.frames)
        wiring.connect(m, write_data.o, wiring.flipped(self.wr_data))
        draining = feed.draining
        repack_cmd = feed.cmd.payload
        tx_error = Signal()
        out_entry = Signal(128)
        entry_bytes = Signal(5)
        m.d.comb += [write_data.entry.payload.entry.eq(out_entry),
                     write_data.entry.payload.nbytes.eq(entry_bytes),
                     write_data.kind.valid.eq(wr_taken)]
        write_kind = write_data.kind.payload.entry  # the command given now writes an entry
        wiring.connect(m, pipe.tx, wiring.flipped(self.tx))
        m.d.comb += [self.tx_drop.eq(pipe.tx_drop), self.tx_port.eq(pipe.tx_port),
                     self.tx_flow.eq(pipe.tx_flow), self.tx_length.eq(pipe.tx_length)]

        # -- job selection ---------------------------------------------------------------------
        cand = Signal(R + T)
        for q in range(R):
            m.d.comb += cand[q].eq(self.ring_enabled[q] & ~self.ring_waiting[q] & self.rx[q].valid
                                   & feed.commit.ready)
        # A TX ring is served only while the TX buffer has room for the longest pvec it may
        # hold: if the core stops taking frames, TX jobs stop, and RX jobs go on.
        limit = Signal(16)
        m.d.comb += limit.eq(Mux(self.tx_max_length < self.tx_buffer_bytes, self.tx_max_length,
                                 self.tx_buffer_bytes))
        # The frames in the TX pipe have their room already: they count as used.
        room_free = Signal(signed(self.tx_room.shape().width + 18))
        m.d.comb += room_free.eq(self.tx_room - pipe.beats_due)
        # Registered: the TX buffer's level is far from the job logic. A cycle late is safe: the
        # room only grows meanwhile (a frame taken in TX_START reaches IDLE cycles later), and
        # TX_ROOM checks the frame's own length again.
        tx_ok = Signal()
        m.d.sync += tx_ok.eq(room_free >= ((limit + wb - 1) >> (wb.bit_length() - 1)))
        # While TX pvecs are in flight, only their ring goes on (`issue_head` follows it).
        pipe_ring = Signal(range(n))
        for t in range(T):
            # A TX ring with no descriptors is found so in FETCH (no read is issued) and waits.
            m.d.comb += cand[R + t].eq(
                self.ring_enabled[R + t] & ~self.ring_waiting[R + t] & tx_ok & pipe.job.ready
                & (pipe.empty | (pipe_ring == R + t)))
        last_pick = Signal(range(R + T), init=R + T - 1)
        pick = Signal(range(R + T))
        with m.Switch(last_pick):
            for start in range(R + T):
                with m.Case(start):
                    for k in reversed(range(R + T)):
                        index = (start + 1 + k) % (R + T)
                        with m.If(cand[index]):
                            m.d.comb += pick.eq(index)
        event_ready = self.events.valid & self.ring_enabled[E] & ~self.ring_waiting[E]

        # Per-chunk command issue (RX writes, TX reads): two streams, each held until taken.
        chunk = Signal(range(self.max_chunks + 1))
        sent_a = Signal()
        sent_b = Signal()
        left = Signal(16)
        piece = Signal(16)
        d_addr = Signal(64)
        d_len = Signal(16)
        d = data.View(layout(RX_FREE), desc_rd.data)
        dt = data.View(layout(TX_DESCRIPTOR), desc_rd.data)
        m.d.comb += [desc_rd.addr.eq(chunk), d_addr.eq(d.address),
                     d_len.eq(Mux(is_tx, dt.length, d.length)),
                     piece.eq(Mux(d_len < left, d_len, left))]
        retiring = Signal()  # the job writes the completion of a TX pvec the pipe finished
        notify_job = Signal()  # TX: the pvec asked for NOTIFY
        issue_head = Signal(INDEX_BITS)  # the pipe's ring: first descriptor after its pvecs
        # Both requesters' commands come from registers, set in the state before they are given.
        cmd_addr = Signal(64)
        cmd_len = Signal(16)
        m.d.comb += [self.rd_cmd.payload.addr.eq(cmd_addr), self.rd_cmd.payload.length.eq(cmd_len),
                     self.wr_cmd.payload.addr.eq(cmd_addr), self.wr_cmd.payload.length.eq(cmd_len)]
        reading = Signal()  # the read command given now is TX data (else descriptors)
        m.d.comb += [kinds.w_data.eq(reading),
                     kinds.w_en.eq(self.rd_cmd.valid & self.rd_cmd.ready),
                     kinds.r_en.eq(self.rd_status.valid & self.rd_status.ready)]

        phase = ~(cpl_tail >> cpl_log2)[0]
        cpl_slot = cpl_tail & ((Const(1, INDEX_BITS + 1) << cpl_log2) - 1)
        rx_cpl = Signal(layout(RX_COMPLETION))
        tx_cpl = Signal(layout(TX_COMPLETION))
        m.d.comb += self.idle.eq(0)

        def prepare_completion():
            """The completion entry's write command, for COMPLETE."""
            m.d.sync += [
                entry_bytes.eq(Mux(is_tx, 8, 16)),
                cmd_addr.eq(cpl_base + Mux(is_tx, cpl_slot << 3, cpl_slot << 4)),
                cmd_len.eq(Mux(is_tx, 8, 16)),
            ]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [
                    self.idle.eq((outstanding == 0) & pipe.empty & (strobes.level == 0)
                                 & ~feed.busy & ~pf_busy),
                    extend.eq(pf_done),
                ]
                m.d.sync += [count.eq(0), chain_done.eq(0), zero.eq(0), total.eq(0),
                             fetch_error.eq(0), truncated.eq(0), tx_error.eq(0),
                             used.eq(0), written_bytes.eq(0), cache_pending.eq(0),
                             disturbed.eq(0), retiring.eq(0), notify_job.eq(0),
                             chunk.eq(0), cache_hit.eq(0), fetched.eq(0)]
                done = pipe.done.payload
                with m.If(pipe.done.valid):
                    # A TX frame of the pipe has left: its completion first, even in a reset.
                    m.d.comb += pipe.done.ready.eq(1)
                    m.d.sync += [
                        ring.eq(done.ring), is_event.eq(0), is_tx.eq(1), retiring.eq(1),
                        head.eq(done.head), chunks.eq(done.chunks), length.eq(done.length),
                        notify_job.eq(done.notify), status.eq(done.status),
                        tx_error.eq(done.dma_failed & (done.agent == DmaAgent.TX_DATA)),
                        fetch_error.eq(done.dma_failed & (done.agent != DmaAgent.TX_DATA)),
                        dma_status.eq(done.dma_status), dma_agent.eq(done.agent),
                        dma_index.eq(done.index),
                    ]
                    m.next = "LOAD"
                with m.Elif(self.enable & ~self.resetting):
                    with m.If(event_ready):
                        m.d.sync += [ring.eq(E), is_event.eq(1), is_tx.eq(0)]
                        m.next = "LOAD"
                    with m.Elif(cand != 0):
                        m.d.sync += [ring.eq(pick), last_pick.eq(pick), is_event.eq(0),
                                     is_tx.eq(pick >= R)]
                        m.next = "LOAD"
            with m.State("LOAD"):  # the base memory answers in the next cycle
                m.d.comb += self.job_start.eq(1)
                m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [base.eq(self.base), cpl_base.eq(self.cpl_base), log2.eq(self.log2),
                             cpl_log2.eq(self.cpl_log2), tail.eq(self.tail),
                             cpl_tail.eq(self.cpl_tail)]
                # A TX ring with pvecs in the pipe goes on after them; their completions are
                # still to be written.
                piped = is_tx & ~pipe.empty
                job_head = Mux(piped, issue_head, self.head)
                with m.If(~retiring):
                    m.d.sync += [head.eq(job_head), idx.eq(job_head)]
                space = ((((self.cpl_tail - self.cpl_head) & M) + Mux(piped, pipe.in_flight, 0))
                         < (Const(1, INDEX_BITS + 1) << self.cpl_log2))
                with m.If(retiring):
                    m.next = "COMPLETE_PREP"
                with m.Elif(~space):
                    m.d.comb += self.set_waiting.eq(1)
                    m.next = "IDLE"
                with m.Elif(is_event):
                    m.d.comb += self.events.ready.eq(1)
                    m.d.sync += event.eq(self.events.payload)
                    m.next = "COMPLETE_PREP"
                with m.Else():
                    hit = (cache_count[ring] != 0) & (cache_start[ring] == job_head)
                    m.d.sync += [window_end.eq(job_head + Mux(hit, cache_count[ring], 0)),
                                 cache_hit.eq(hit)]
                    with m.If(hit):
                        m.next = "CACHED"
                    with m.Else():
                        m.next = "FETCH"
            with m.State("CACHED"):
                # One entry per cycle from the cache until the chain ends or the window does.
                m.d.comb += [from_cache.eq(1), cache_rd.addr.eq(Cat(idx[:slot_bits], ring))]
                ends_now = entry_valid & ~entry_more & ~chain_done
                issue = (idx != window_end) & ~chain_done & ~ends_now
                m.d.sync += cache_pending.eq(issue)
                with m.If(issue):
                    m.d.sync += idx.eq(idx + 1)
                with m.If(chain_done | ends_now):
                    m.next = "DECIDE"
                with m.Elif(~cache_pending & (idx == window_end)):
                    m.next = "FETCH"
            with m.State("FETCH"):
                avail = (tail - idx) & M
                to_end = (mask - (idx & mask)) + 1
                size = Mux(avail < BATCH, avail, BATCH)
                size = Mux(to_end < size, to_end, size)
                m.d.sync += [cmd_addr.eq(base + ((idx & mask) << 4)), cmd_len.eq(size << 4),
                             batch_n.eq(size)]
                with m.If(avail == 0):
                    # The chain's end is not posted yet: nothing is consumed, try again after
                    # the next doorbell (the entries read so far stay in the cache).
                    m.d.comb += self.set_waiting.eq(1)
                    keep_window(head)
                    m.next = "IDLE"
                with m.Elif(~prefetching):
                    m.next = "FETCH_ISSUE"
            with m.State("FETCH_ISSUE"):
                m.d.comb += self.rd_cmd.valid.eq(kinds.w_rdy)
                with m.If(self.rd_cmd.ready):
                    m.d.sync += [batch_idx.eq(idx), batch_got.eq(0), idx.eq(idx + batch_n),
                                 fetched.eq(1)]
                    m.d.comb += entries_in.restart.eq(1)
                    m.next = "RECV"
            with m.State("RECV"):
                m.d.comb += receiving.eq(1)
                with m.If(rd_status_valid):
                    m.d.sync += window_end.eq(batch_idx + batch_got + entries_in.valid)
                    with m.If(self.rd_status.payload.status != DmaStatus.OK):
                        m.d.sync += [fetch_error.eq(1),
                                     dma_status.eq(self.rd_status.payload.status),
                                     dma_index.eq(batch_idx),
                                     dma_agent.eq(Mux(is_tx, DmaAgent.TX_DESCRIPTOR,
                                                      DmaAgent.RX_FREE))]
                        m.next = "DECIDE"
                    with m.Elif(chain_done | (entry_valid & ~entry_more)):
                        m.next = "DECIDE"
                    with m.Else():
                        m.next = "FETCH"
            with m.State("DECIDE"):
                # `chunk` is 0 since IDLE: its descriptor is on the read port already.
                m.d.sync += [sent_a.eq(0), sent_b.eq(0)]
                over = count > self.max_chunks_reg
                with m.If(fetch_error):
                    m.d.sync += [status.eq(Mux(is_tx, TxStatus.DMA_ERROR, RxStatus.DMA_ERROR)),
                                 chunks.eq(tail - head)]
                    with m.If(is_tx):
                        m.next = "TX_PARK"
                    with m.Else():
                        m.next = "COMPLETE_PREP"
                with m.Elif(~is_tx & (draining.bit_select(ring, 1)
                                      | ~rx_valid.bit_select(ring, 1))):
                    # The ring's frame before is still leaving the core's stream: its next frame
                    # (if any) is not yet at the head. Wait for it, or give way to other work,
                    # keeping the chain in the cache for the next try.
                    others = Signal(R + T)
                    m.d.comb += [others.eq(cand), others.bit_select(ring, 1).eq(0)]
                    busy = pipe.done.valid | event_ready | (others != 0)
                    with m.If(~draining.bit_select(ring, 1) | busy):
                        keep_window(head)
                        with m.If(disturbed):
                            m.d.sync += cache_count[ring].eq(0)
                        m.next = "IDLE"
                with m.Elif(~is_tx):
                    m.d.sync += [chunks.eq(count), meta.eq(current.meta),
                                 length.eq(current.meta.length), left.eq(current.meta.length)]
                    with m.If(over):
                        m.d.sync += status.eq(RxStatus.TOO_MANY_CHUNKS)
                        m.next = "COMPLETE_PREP"
                    with m.Elif(zero):
                        m.d.sync += status.eq(RxStatus.ZERO_LENGTH)
                        m.next = "COMPLETE_PREP"
                    with m.Else():
                        # The frame is the job's: the feeder takes it from the core's stream.
                        m.d.comb += [feed.commit.valid.eq(1), feed.commit.payload.eq(ring)]
                        m.d.sync += status.eq(RxStatus.OK)
                        m.next = "RX_LATCH"
                with m.Else():
                    m.d.sync += [chunks.eq(count), length.eq(first.total_length),
                                 left.eq(first.total_length),
                                 notify_job.eq((first.attrs & TxFlag.NOTIFY) != 0)]
                    with m.If(over):
                        m.d.sync += status.eq(TxStatus.TOO_MANY_CHUNKS)
                    with m.Elif(zero | (first.total_length == 0)):
                        m.d.sync += status.eq(TxStatus.ZERO_LENGTH)
                    with m.Elif(first.total_length > limit):
                        m.d.sync += status.eq(TxStatus.OVERSIZE)
                    with m.Elif(first.port >= self.ports):
                        m.d.sync += status.eq(TxStatus.BAD_PORT)
                    with m.Elif(first.flow >= self.tx_flows):
                        m.d.sync += status.eq(TxStatus.BAD_FLOW)
                    with m.Elif(total != first.total_length):
                        m.d.sync += status.eq(TxStatus.LENGTH_MISMATCH)
                    with m.Else():
                        m.d.sync += status.eq(TxStatus.OK)
                    with m.If(~over & ~zero & (first.total_length != 0)
                              & (first.total_length <= limit) & (first.port < self.ports)
                              & (first.flow < self.tx_flows) & (total == first.total_length)):
                        m.next = "TX_ROOM"
                    with m.Else():
                        m.next = "TX_PARK"

            # -- RX: the frame into the pvec's chunks ------------------------------------------
            with m.State("RX_PIECE"):
                m.d.comb += [
                    self.wr_cmd.valid.eq(~sent_a & write_data.kind.ready),
                    feed.cmd.valid.eq(~sent_b),
                    repack_cmd.length.eq(cmd_len),
                ]
                a = sent_a | (self.wr_cmd.ready & write_data.kind.ready)
                b = sent_b | feed.cmd.ready
                m.d.sync += [sent_a.eq(a), sent_b.eq(b)]
                with m.If(a & b):
                    m.d.sync += [sent_a.eq(0), sent_b.eq(0), left.eq(left - cmd_len),
                                 chunk.eq(chunk + 1), used.eq(used + 1),
                                 written_bytes.eq(written_bytes + cmd_len)]
                    with m.If(left == cmd_len):
                        m.next = "COMPLETE_PREP"
                    with m.Elif(chunk + 1 == count):
                        m.d.sync += truncated.eq(1)
                        m.next = "RX_DISCARD"
                    with m.Else():
                        m.next = "RX_NEXT"
            with m.State("RX_NEXT"):  # the descriptor memory reads the next chunk
                m.next = "RX_LATCH"
            with m.State("RX_LATCH"):
                m.d.sync += [cmd_addr.eq(d_addr), cmd_len.eq(piece)]
                m.next = "RX_PIECE"
            with m.State("RX_DISCARD"):
                m.d.comb += [feed.cmd.valid.eq(1), repack_cmd.length.eq(left),
                             repack_cmd.discard.eq(1)]
                with m.If(feed.cmd.ready):
                    m.d.sync += status.eq(RxStatus.TRUNCATED)
                    m.next = "COMPLETE_PREP"

            # -- TX: a job for the TX pipe, then its chunks' reads -----------------------------
            with m.State("TX_ROOM"):
                need = (length + wb - 1) >> (wb.bit_length() - 1)
                with m.If(room_free >= need):
                    m.next = "TX_START"
            with m.State("TX_START"):
                job = pipe.job.payload
                m.d.comb += [
                    pipe.job.valid.eq(1),
                    job.length.eq(length), job.port.eq(first.port), job.flow.eq(first.flow),
                    job.reads.eq(count), job.ring.eq(ring), job.head.eq(head),
                    job.chunks.eq(count), job.notify.eq(notify_job), job.status.eq(TxStatus.OK),
                ]
                with m.If(pipe.job.ready):  # it is: TX jobs start only when the pipe has room
                    m.d.sync += pipe_ring.eq(ring)
                    m.next = "TX_LATCH"  # chunk 0's descriptor is on the read port
            with m.State("TX_PARK"):
                # A pvec that sends nothing (a bad descriptor, a failed descriptor read) still
                # goes through the pipe, so its completion follows those of the pvecs before it.
                job = pipe.job.payload
                m.d.comb += [
                    pipe.job.valid.eq(1),
                    job.ring.eq(ring), job.head.eq(head), job.chunks.eq(chunks),
                    job.notify.eq(notify_job), job.status.eq(status),
                    job.dma_status.eq(dma_status), job.agent.eq(dma_agent),
                    job.index.eq(dma_index),
                ]
                with m.If(pipe.job.ready):
                    m.d.sync += [pipe_ring.eq(ring), issue_head.eq(head + chunks)]
                    m.next = "IDLE"
                    with m.If(~fetch_error):
                        then_prefetch(head + chunks)
                    with m.Else():
                        m.d.sync += cache_count[ring].eq(0)
            with m.State("TX_READ"):
                m.d.comb += [self.rd_cmd.valid.eq(kinds.w_rdy), reading.eq(1)]
                with m.If(self.rd_cmd.ready):
                    m.d.sync += chunk.eq(chunk + 1)
                    with m.If(chunk + 1 == count):
                        # The pipe completes the pvec; the ring's next pvec may start now.
                        m.d.sync += issue_head.eq(head + count)
                        m.next = "IDLE"
                        then_prefetch(head + count)
                    with m.Else():
                        m.next = "TX_NEXT"
            with m.State("TX_NEXT"):  # the descriptor memory reads the next chunk
                m.next = "TX_LATCH"
            with m.State("TX_LATCH"):
                m.d.sync += [cmd_addr.eq(d_addr), cmd_len.eq(d_len)]
                m.next = "TX_READ"

            # -- the completion entry ----------------------------------------------------------
            with m.State("COMPLETE_PREP"):
                prepare_completion()
                m.next = "COMPLETE"
            with m.State("COMPLETE"):
                room = write_data.kind.ready & write_data.entry.ready
                m.d.comb += [self.wr_cmd.valid.eq(room), write_kind.eq(1)]
                with m.If(room & self.wr_cmd.ready):
                    m.d.comb += write_data.entry.valid.eq(1)
                    m.d.sync += cpl_seq.eq(given + 1)
                    m.next = "FINISH"
            # The entry is queued for the writer: indices, counters and events need not wait for
            # its MWr to leave; the interrupt strobe does.
            with m.State("FINISH"), m.If(~self.stall & strobes.w_rdy):
                strobe_in = data.View(strobe_layout, strobes.w_data)
                m.next = "IDLE"
                m.d.comb += [self.bump_cpl.eq(1), strobes.w_en.eq(1),
                             strobe_in.seq.eq(cpl_seq), strobe_in.ring.eq(ring),
                             strobe_in.notify.eq(is_tx & notify_job & ~fetch_error & ~is_event)]
                with m.If(~is_event):
                    ok = Mux(is_tx, status == TxStatus.OK,
                             (status == RxStatus.OK) | (status == RxStatus.TRUNCATED))
                    dma_failed = fetch_error | tx_error
                    m.d.comb += [self.set_head.eq(1), self.new_head.eq(head + chunks)]
                    with m.If(~retiring):  # a retired TX pvec left the cache at its issue
                        then_prefetch(head + chunks)
                    with m.If(fetch_error | disturbed):
                        m.d.sync += cache_count[ring].eq(0)
                    with m.If(~ok):
                        m.d.comb += [self.ring_error.eq(1), self.error_status.eq(status),
                                     self.post.valid.eq(1)]
                        with m.If(dma_failed):
                            m.d.comb += [
                                self.dma_error.eq(1),
                                self.inc[DmaCounter.DMA_ERRORS].eq(1),
                                self.post.payload.kind.eq(DmaEvent.DMA_ERROR),
                                self.post.payload.status.eq(_event_status(dma_status)),
                                self.post.payload.index.eq(Mux(tx_error, head, dma_index)),
                                self.post.payload.value.eq(dma_agent),
                            ]
                        with m.Else():
                            m.d.comb += [
                                self.post.payload.kind.eq(Mux(is_tx, DmaEvent.TX_DESC_ERROR,
                                                              DmaEvent.RX_DESC_ERROR)),
                                self.post.payload.status.eq(status),
                                self.post.payload.index.eq(head),
                            ]
                        m.d.comb += [
                            self.post.payload.unit.eq(Mux(is_tx, ring - R, ring)),
                            self.post.payload.count.eq(1),
                        ]
                        m.d.comb += [self.inc[DmaCounter.TX_ERRORS].eq(is_tx),
                                     self.inc[DmaCounter.RX_ERRORS].eq(~is_tx)]
                    with m.Elif(is_tx):
                        m.d.comb += [self.inc[DmaCounter.TX_FRAMES].eq(1),
                                     self.inc[DmaCounter.TX_BYTES].eq(length)]
                    with m.Else():
                        m.d.comb += [self.inc[DmaCounter.RX_FRAMES].eq(1),
                                     self.inc[DmaCounter.RX_BYTES].eq(written_bytes),
                                     self.inc[DmaCounter.RX_TRUNCATED].eq(truncated)]

            # -- the prefetch ------------------------------------------------------------------
            with m.State("PREFETCH"):
                avail = (tail - pf_start) & M
                to_end = (mask - (pf_start & mask)) + 1
                size = Mux(avail < BATCH - pf_keep, avail, BATCH - pf_keep)
                size = Mux(to_end < size, to_end, size)
                m.d.sync += [cmd_addr.eq(base + ((pf_start & mask) << 4)), cmd_len.eq(size << 4),
                             pf_n.eq(size)]
                m.next = "PREFETCH_ISSUE"
            with m.State("PREFETCH_ISSUE"):
                m.d.comb += self.rd_cmd.valid.eq(kinds.w_rdy)
                with m.If(self.rd_cmd.ready):
                    m.d.comb += entries_in.restart.eq(1)
                    m.d.sync += [pf_busy.eq(1), pf_done.eq(0), pf_void.eq(disturbed),
                                 pf_ring.eq(ring), pf_got.eq(0)]
                    m.next = "IDLE"

        # A stopped ring, a disabled or resetting engine: the windows are forgotten.
        with m.If(~self.ring_enabled.bit_select(ring, 1) | self.resetting | ~self.enable):
            m.d.sync += disturbed.eq(1)
        for r in range(R + T):
            with m.If(~self.ring_enabled[r] | self.resetting | ~self.enable):
                m.d.sync += cache_count[r].eq(0)

        # Completion entries, per the formats (stable from COMPLETE until the writer took them).
        event_entry = Cat(event, Const(0, 128 - event.shape().size - 1), phase)
        m.d.comb += out_entry.eq(Mux(is_event, event_entry,
                                     Mux(is_tx, tx_cpl.as_value(), rx_cpl.as_value())))
        ok_rx = (status == RxStatus.OK) | (status == RxStatus.TRUNCATED)
        m.d.comb += [
            rx_cpl.length.eq(Mux(ok_rx, length, 0)),
            rx_cpl.desc_index.eq(head),
            rx_cpl.chunks.eq(chunks),
            rx_cpl.chunks_used.eq(used),
            rx_cpl.status.eq(status),
            rx_cpl.queue.eq(ring),
            rx_cpl.phase.eq(phase),
            tx_cpl.desc_index.eq(head),
            tx_cpl.chunks.eq(chunks),
            tx_cpl.status.eq(status),
            tx_cpl.phase.eq(phase),
        ]
        with m.If(ok_rx):
            m.d.comb += [
                rx_cpl.demux_key.eq(data.View(layout(ACTION), meta.action).demux_key),
                rx_cpl.flags.eq(meta.flags),
                rx_cpl.in_port.eq(meta.in_port),
                rx_cpl.rule.eq(meta.flow),
                rx_cpl.hit.eq(meta.hit),
            ]
        return m
