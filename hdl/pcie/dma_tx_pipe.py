# TX frames in flight in the DMA engine: the sequencer (hdl/pcie/dma_sequencer.py) gives a job
# per TX pvec and issues its chunks' reads; this carries the reader's data into the TX buffer
# and reports each frame's outcome, so the sequencer can go on to the next pvec meanwhile.
"""TX pipe: several TX pvecs in flight between the DMA reader and the TX buffer.

A *job* is one TX pvec. With ``status`` OK it is a frame: its length, port and flow (the
frame's sideband), how many read commands the sequencer issues for it (one per chunk), and the
fields its completion needs later (ring, first descriptor, chunks, NOTIFY). With any other
``status`` (a bad descriptor, or a descriptor read that failed: ``dma_status``, ``agent``,
``index`` as the DMA_ERROR event gives them) it has no data and no reads; it goes through the
pipe all the same, so every completion of a ring is written in descriptor order. Jobs are taken
in order, up to ``jobs`` at a time, before their reads are issued.

The reader delivers each command's bytes and then its status, in command order (a failed
command still delivers its full length: `partner.hdl.pcie.dma_read`); the sequencer hands the
pipe the data and statuses of the commands it issued for jobs.

- Status side: the statuses of the oldest job are counted; at its last one the job's outcome
  (the first failure, if any) is queued.
- Data side: the pipe's own `Repacker` glues each job's chunks into one frame of its length.
  The frame's last beat is held until its outcome is known and leaves with ``tx_drop`` set if
  a read failed, so the TX buffer rolls the frame back and the core never sees it.
- When the last beat has left, the job's completion record leaves on ``done`` (in job order).

``beats_due``: beats of the jobs taken that have not entered the TX buffer yet; the sequencer
counts them as used when it checks the buffer's room, so a frame taken always fits.
``in_flight``: jobs taken whose record has not left on ``done``; ``empty``: none.
"""

from amaranth.hdl import Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from partner.pcie.formats import INDEX_BITS, DmaAgent, TxStatus

from ..stream import PacketStream
from .dma_read import read_status_layout
from .dma_repack import Repacker
from .dma_status import STATUS_BITS, DmaStatus

__all__ = ["TxPipe", "tx_done_layout", "tx_job_layout"]


def tx_job_layout(rings: int, max_chunks: int) -> data.StructLayout:
    return data.StructLayout({
        "length": 16, "port": 3, "flow": 9, "reads": range(max_chunks + 1),
        "ring": range(max(rings, 2)), "head": INDEX_BITS, "chunks": INDEX_BITS, "notify": 1,
        "status": 4, "dma_status": STATUS_BITS, "agent": 2, "index": INDEX_BITS,
    })


def tx_done_layout(rings: int) -> data.StructLayout:
    return data.StructLayout({
        "length": 16, "ring": range(max(rings, 2)), "head": INDEX_BITS, "chunks": INDEX_BITS,
        "notify": 1, "status": 4, "dma_failed": 1, "dma_status": STATUS_BITS, "agent": 2,
        "index": INDEX_BITS,
    })


class TxPipe(wiring.Component):
    """Up to ``jobs`` TX frames in flight, ``width_bytes`` per beat."""

    def __init__(self, width_bytes: int, *, rings: int, max_chunks: int, jobs: int = 8,
                 buffer_beats: int = 2048):
        self.wb, self.jobs = width_bytes, jobs
        self.rings, self.max_chunks = rings, max_chunks
        super().__init__({
            "job": In(stream.Signature(tx_job_layout(rings, max_chunks))),
            "rd_data": In(PacketStream(width_bytes)),
            "rd_status": In(stream.Signature(read_status_layout())),
            "tx": Out(PacketStream(width_bytes)),
            "tx_drop": Out(1),
            "tx_port": Out(3),
            "tx_flow": Out(9),
            "tx_length": Out(14),
            "beats_due": Out(range(buffer_beats + (1 << 16) + 1)),
            "done": Out(stream.Signature(tx_done_layout(rings))),
            "in_flight": Out(range(jobs + 1)),
            "empty": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        wb, jobs = self.wb, self.jobs
        job_shape = tx_job_layout(self.rings, self.max_chunks)
        done_shape = tx_done_layout(self.rings)
        outcome_shape = data.StructLayout({"error": 1, "status": STATUS_BITS})

        m.submodules.repack = repack = Repacker(wb)
        m.submodules.frames = frames = SyncFIFOBuffered(width=job_shape.size, depth=jobs)
        reads_width = Shape.cast(job_shape["reads"].shape).width
        m.submodules.reads = reads = SyncFIFOBuffered(width=reads_width, depth=jobs)
        m.submodules.outcomes = outcomes = SyncFIFOBuffered(width=outcome_shape.size, depth=jobs)
        m.submodules.records = records = SyncFIFOBuffered(width=done_shape.size, depth=jobs)
        # The frames' lengths for the repacker, apart, so it takes the next as it ends one.
        m.submodules.lengths = lengths = SyncFIFOBuffered(width=16, depth=jobs)

        # Jobs in the pipe, from `job` to `done`: at most `jobs`, so no queue here ever fills.
        in_flight = self.in_flight
        taken = self.job.valid & self.job.ready
        finished = self.done.valid & self.done.ready
        m.d.sync += in_flight.eq(in_flight + taken - finished)
        job = self.job.payload
        m.d.comb += [
            self.job.ready.eq(in_flight < jobs),
            frames.w_en.eq(taken), frames.w_data.eq(job.as_value()),
            reads.w_en.eq(taken), reads.w_data.eq(job.reads),
            lengths.w_en.eq(taken & (job.status == TxStatus.OK)), lengths.w_data.eq(job.length),
        ]

        # -- status side -------------------------------------------------------------------
        no_reads = reads.r_rdy & (reads.r_data == 0)  # a job without data at the head
        status_in = self.rd_status.valid & self.rd_status.ready
        m.d.comb += self.rd_status.ready.eq(~no_reads)
        counted = Signal(range(self.max_chunks + 1))
        failed = Signal()
        first_failure = Signal(STATUS_BITS)
        outcome_in = data.View(outcome_shape, outcomes.w_data)
        this_failed = self.rd_status.payload.status != DmaStatus.OK
        with m.If(no_reads):
            m.d.comb += [reads.r_en.eq(1), outcomes.w_en.eq(1)]
        with m.Elif(status_in):
            with m.If(counted + 1 == reads.r_data):
                m.d.comb += [reads.r_en.eq(1), outcomes.w_en.eq(1),
                             outcome_in.error.eq(failed | this_failed),
                             outcome_in.status.eq(Mux(failed, first_failure,
                                                      self.rd_status.payload.status))]
                m.d.sync += [counted.eq(0), failed.eq(0)]
            with m.Else():
                m.d.sync += counted.eq(counted + 1)
                with m.If(this_failed & ~failed):
                    m.d.sync += [failed.eq(1), first_failure.eq(self.rd_status.payload.status)]

        # -- data side ---------------------------------------------------------------------
        head = data.View(job_shape, frames.r_data)
        has_data = head.status == TxStatus.OK
        m.d.comb += [repack.cmd.valid.eq(lengths.r_rdy),
                     repack.cmd.payload.length.eq(lengths.r_data),
                     lengths.r_en.eq(repack.cmd.ready)]
        wiring.connect(m, wiring.flipped(self.rd_data), repack.i)

        outcome = data.View(outcome_shape, outcomes.r_data)
        hold = repack.o.payload.last & ~outcomes.r_rdy
        m.d.comb += [
            self.tx.valid.eq(repack.o.valid & ~hold),
            self.tx.payload.eq(repack.o.payload),
            repack.o.ready.eq(self.tx.ready & ~hold),
            self.tx_drop.eq(outcome.error),
            self.tx_port.eq(head.port), self.tx_flow.eq(head.flow),
            self.tx_length.eq(head.length),
        ]
        record = data.View(done_shape, records.w_data)
        sent = self.tx.valid & self.tx.ready & self.tx.payload.last
        with m.If(sent | (frames.r_rdy & ~has_data & outcomes.r_rdy)):
            m.d.comb += [frames.r_en.eq(1), outcomes.r_en.eq(1), records.w_en.eq(1)]
        m.d.comb += [
            record.length.eq(head.length), record.ring.eq(head.ring), record.head.eq(head.head),
            record.chunks.eq(head.chunks), record.notify.eq(head.notify),
        ]
        with m.If(has_data):
            m.d.comb += [
                record.status.eq(Mux(outcome.error, TxStatus.DMA_ERROR, TxStatus.OK)),
                record.dma_failed.eq(outcome.error), record.dma_status.eq(outcome.status),
                record.agent.eq(DmaAgent.TX_DATA), record.index.eq(head.head),
            ]
        with m.Else():
            m.d.comb += [
                record.status.eq(head.status),
                record.dma_failed.eq(head.status == TxStatus.DMA_ERROR),
                record.dma_status.eq(head.dma_status), record.agent.eq(head.agent),
                record.index.eq(head.index),
            ]
        m.d.comb += [self.done.valid.eq(records.r_rdy), self.done.payload.eq(records.r_data),
                     records.r_en.eq(self.done.ready)]

        # Beats promised to the TX buffer and not delivered yet.
        beats = (job.length + wb - 1) >> (wb.bit_length() - 1)
        m.d.sync += self.beats_due.eq(self.beats_due + Mux(taken, beats, 0)
                                      - (self.tx.valid & self.tx.ready))
        m.d.comb += self.empty.eq(in_flight == 0)
        return m
