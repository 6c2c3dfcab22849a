# Reference model of partner.hdl.flow_queues.FlowQueues: per-flow queues with byte quotas and
# early drop over a shared cell buffer, and the strict-priority + Deficit Round Robin scheduler
# (M. Shreedhar, G. Varghese, "Efficient Fair Queuing using Deficit Round Robin", SIGCOMM 1995).
"""Reference model of the flow queues (plain Python, no Amaranth).

Two layers:

`FlowQueuesModel` is the algorithm: admission (quota and buffer checks at a frame's first beat),
per-flow FIFO queues, the scheduler as a sequence of *steps*, release of a frame's bytes and
cells, and the per-flow counters. A step is one decision of the gateware's scheduler:

* the class is the highest one with a queued frame (strict priority);
* in that class, the flow holding the turn sends its head frame if the frame fits its deficit;
  otherwise the turn passes to the next backlogged flow of the class in flow-index order
  (cyclically, possibly back to the same flow), whose deficit grows by its quantum, and that
  flow sends its head frame if it now fits. Sending a frame takes its length off the deficit,
  or sets it to 0 if that was the flow's last queued frame. A step may select nothing (the
  new turn's deficit is still below its head frame: a frame longer than the quantum needs
  several turns).

`select()` runs steps until a frame comes out: the exact DRR order for a set of queues that does
not change meanwhile.

`FlowQueuesCycleModel` adds the gateware's pipeline timing, so that a test can compare the
gateware's outputs with the model in every clock cycle, including under arbitrary input timing
and output backpressure. Its docstring lists the latencies; docs/queues.md explains them.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

__all__ = ["FlowQueuesCycleModel", "FlowQueuesModel", "Frame", "Verdict"]

MASK32 = (1 << 32) - 1


class Verdict(enum.Enum):
    ENQUEUED = "enqueued"
    DROP_QUOTA = "drop_quota"  # closed (quota 0), zero length, or bytes in use + length > quota
    DROP_NOBUF = "drop_nobuf"  # the quota allowed it but the shared buffer has too few free cells


@dataclass(eq=False)
class Frame:
    """One admitted frame. ``length`` is what the input announced, ``stored_len`` what was kept
    (they differ only for a frame whose beats disagree with its announced length)."""

    flow: int
    length: int
    meta: int
    seq: int = 0
    beats: list = field(default_factory=list)  # data words of the stored beats
    stored_len: int = 0


@dataclass
class FlowCounters:
    enq_frames: int = 0
    enq_bytes: int = 0
    drop_quota: int = 0
    drop_nobuf: int = 0
    deq_frames: int = 0


class FlowQueuesModel:
    """Queues, quotas, early drop, the SP + DRR scheduler and counters of ``FlowQueues``."""

    def __init__(self, flows, cells, cell_bytes, classes=4, quantum=256):
        self.flows, self.cells, self.cell_bytes = flows, cells, cell_bytes
        self.classes, self.quantum = classes, quantum
        self.quota = [0] * flows  # the quota memory starts zeroed: every flow closed
        self.cls = [0] * flows
        self.weight = [1] * flows
        self.bytes_in_use = [0] * flows
        self.free_cells = cells
        self.frames_queued = 0  # committed and not yet released
        self.queue = [deque() for _ in range(flows)]  # committed, not yet selected
        self.deficit = [0] * flows
        self.turn = [flows - 1] * classes  # so that the first search starts at flow 0
        self.counters = [FlowCounters() for _ in range(flows)]
        self._seq = 0

    # -- configuration and accounting --------------------------------------------------------

    def configure(self, flow, quota=None, cls=None, weight=None):
        if quota is not None:
            self.quota[flow] = quota
        if cls is not None:
            self.cls[flow] = cls
        if weight is not None:
            self.weight[flow] = weight

    def cells_for(self, nbytes):
        return -(-nbytes // self.cell_bytes)

    def quantum_of(self, flow):
        return self.quantum * max(1, self.weight[flow])  # weight 0 counts as 1: never stuck

    def admit(self, flow, length, meta=0):
        """Early drop at the first beat. Returns (verdict, Frame or None); an admitted frame
        reserves ``length`` bytes of its flow's quota and the cells it needs."""
        c = self.counters[flow]
        if length == 0 or self.bytes_in_use[flow] + length > self.quota[flow]:
            c.drop_quota = (c.drop_quota + 1) & MASK32
            return Verdict.DROP_QUOTA, None
        if self.cells_for(length) > self.free_cells:
            c.drop_nobuf = (c.drop_nobuf + 1) & MASK32
            return Verdict.DROP_NOBUF, None
        c.enq_frames = (c.enq_frames + 1) & MASK32
        c.enq_bytes = (c.enq_bytes + length) & MASK32
        self.bytes_in_use[flow] += length
        self.free_cells -= self.cells_for(length)
        self._seq += 1
        return Verdict.ENQUEUED, Frame(flow, length, meta, self._seq)

    def commit(self, frame, stored_len=None):
        """The frame's last beat is written: `settle` and `enqueue`."""
        self.settle(frame, stored_len)
        self.enqueue(frame)

    def settle(self, frame, stored_len=None):
        """The frame's last beat has arrived with ``stored_len`` bytes kept; a frame that kept
        fewer bytes than announced gives the difference (bytes and cells) back."""
        frame.stored_len = frame.length if stored_len is None else stored_len
        assert 1 <= frame.stored_len <= frame.length
        self.bytes_in_use[frame.flow] -= frame.length - frame.stored_len
        self.free_cells += self.cells_for(frame.length) - self.cells_for(frame.stored_len)

    def enqueue(self, frame):
        """The frame joins its flow's queue (the scheduler can select it)."""
        self.queue[frame.flow].append(frame)
        self.frames_queued += 1

    def release(self, frame):
        """The frame's last beat has left: its bytes and cells are free again."""
        self.bytes_in_use[frame.flow] -= frame.stored_len
        self.free_cells += self.cells_for(frame.stored_len)
        self.frames_queued -= 1
        c = self.counters[frame.flow]
        c.deq_frames = (c.deq_frames + 1) & MASK32

    # -- scheduler ---------------------------------------------------------------------------

    def step(self):
        """One scheduler step; returns the selected frame, or None (nothing queued, or the
        turn moved to a flow whose deficit is still below its head frame)."""
        backlogged = [f for f in range(self.flows) if self.queue[f]]
        if not backlogged:
            return None
        c = max(self.cls[f] for f in backlogged)
        members = [f for f in backlogged if self.cls[f] == c]
        t = self.turn[c]
        if t in members and self.queue[t][0].stored_len <= self.deficit[t]:
            return self._send(t)
        if t not in members:
            self.deficit[t] = 0  # an empty flow keeps no credit (only after a class change)
        g = min((f for f in members if f > t), default=min(members))
        self.turn[c] = g
        self.deficit[g] += self.quantum_of(g)
        if self.queue[g][0].stored_len <= self.deficit[g]:
            return self._send(g)
        return None

    def _send(self, flow):
        q = self.queue[flow]
        frame = q.popleft()
        # A flow whose queue this empties loses what is left of its deficit.
        self.deficit[flow] = self.deficit[flow] - frame.stored_len if q else 0
        return frame

    def select(self, max_steps=1 << 20):
        """Steps until a frame is selected (None if nothing is queued)."""
        for _ in range(max_steps):
            if not any(self.queue):
                return None
            frame = self.step()
            if frame is not None:
                return frame
        raise RuntimeError("scheduler made no progress")

    def counter_values(self, flow):
        c = self.counters[flow]
        return {"enq_frames": c.enq_frames, "enq_bytes": c.enq_bytes,
                "drop_quota": c.drop_quota, "drop_nobuf": c.drop_nobuf,
                "deq_frames": c.deq_frames}


class _Dropped:
    """The frame being written was dropped at its first beat."""


class FlowQueuesCycleModel:
    """``FlowQueues`` cycle by cycle, on top of a `FlowQueuesModel`.

    Call `outputs()` to get what the gateware shows during the current cycle, then `clock()`
    with the inputs of that cycle to advance one rising edge. Timing (edge *e* = the edge that
    ends cycle *e*):

    * a beat accepted at edge *e* is decided on during cycle *e+1*: a first beat is admitted
      or dropped with the quota, bytes in use and free cells of cycle *e+1* (including the
      decision of cycle *e*, which the gateware applies at edge *e+1* and forwards);
      ``free_cells`` shows each decision one cycle after it is taken;
    * configuration written at edge *w* is in force from cycle *w+1* (admissions of first beats
      accepted at or after *w*, scheduler steps from *w+1*);
    * a frame whose last beat is accepted at edge *e* joins its queue at edge *e+2* and takes
      part in scheduler steps from cycle *e+3*;
    * a scheduler step starts in a cycle *s* in which the one-frame lookahead slot is empty, no
      step is in progress and some flow has a queued frame; it decides on the queues, classes
      and weights of cycle *s* (later arrivals wait for the next step). A selected frame is in
      the slot from cycle *s+4*; a step that selects nothing lets the next one start at *s+3*;
    * the output register is reloaded whenever it is empty or being emptied: with the next beat
      of the current frame, else with the first beat of the frame in the slot;
    * a frame whose last beat leaves at edge *r* is released at edge *r+1*: first beats accepted
      at *r+1* or later see its bytes and cells free, and ``deq_frames`` counts it.
    """

    def __init__(self, core: FlowQueuesModel, width_bytes: int):
        self.core = core
        self.width = width_bytes
        self.s1 = None  # (beat, flow, length, meta) accepted at the previous edge
        self.writing = None  # Frame being written, _Dropped, or None between frames
        self.w_left = 0  # beats of the frame still to be stored (the rest is truncated)
        self.rel = None  # frame whose last beat left at the previous edge
        self.joining = None  # frame whose last beat was decided on at the previous edge
        self.cells_decided = 0  # change of free cells decided at the last edge, not yet shown
        self.slot = None  # frame selected and waiting to be output
        self.step_left = 0  # cycles until the step in progress is over (0: none)
        self.step_frame = None  # what it selected
        self.out = None  # (beat dict, frame) in the output register
        self.reading = None  # frame being loaded into the output register
        self.next_beat = 0
        self.admitted = []  # (verdict, flow, length) in input order, for tests

    @property
    def free_cells(self):
        """``free_cells`` during the current cycle: the last edge's decision is not in it."""
        return self.core.free_cells - self.cells_decided

    def outputs(self):
        """(valid, beat, flow, meta) shown during the current cycle."""
        if self.out is None:
            return False, None, None, None
        beat, frame = self.out
        return True, beat, frame.flow, frame.meta

    def _beat(self, frame, k):
        w = self.width
        nbytes = min(w, frame.stored_len - k * w)
        return {"data": frame.beats[k] & ((1 << (8 * nbytes)) - 1), "nbytes": nbytes,
                "first": k == 0, "last": (k + 1) * w >= frame.stored_len}

    def clock(self, item=None, ready=False, cfg=None):
        """One rising edge. ``item`` is None or (beat dict, flow, length, meta) of a beat the
        input offers this cycle (always accepted); ``ready`` is the output's ready; ``cfg`` is
        None or a dict(flow=, quota=, cls=, weight=) written this cycle. Returns the frame whose
        last beat left at this edge, if any."""
        core, w = self.core, self.width
        joining, self.joining = self.joining, None
        free_before = core.free_cells
        # Writer: the beat accepted at the previous edge. Admission sees the state before this
        # edge's release; the frame joins its queue one edge later.
        if self.s1 is not None:
            beat, flow, length, meta = self.s1
            if self.writing is None:
                verdict, frame = core.admit(flow, length, meta)
                self.admitted.append((verdict, flow, length))
                self.writing = frame if frame is not None else _Dropped()
                self.w_left = -(-length // w)
            frame = self.writing
            if isinstance(frame, Frame):
                nbytes = min(max(beat["nbytes"], 1), w)  # a beat carries 1..width bytes
                stored = None
                if self.w_left:
                    stored = min(frame.length, len(frame.beats) * w + nbytes)
                    frame.beats.append(beat["data"])
                    self.w_left -= 1
                if beat["last"]:
                    core.settle(frame, frame.length if stored is None else stored)
                    self.joining = frame
            if beat["last"]:
                self.writing = None
        self.cells_decided = core.free_cells - free_before
        if self.rel is not None:
            core.release(self.rel)
            self.rel = None
        # Reader and scheduler both look at the slot as it was before this edge.
        slot_was_empty = self.slot is None
        left = None
        if self.out is not None and ready:
            beat, frame = self.out
            if beat["last"]:
                left = self.rel = frame
        if self.out is None or ready:
            if self.reading is not None and self.next_beat * w < self.reading.stored_len:
                self.out = (self._beat(self.reading, self.next_beat), self.reading)
                self.next_beat += 1
            elif self.slot is not None:
                self.reading, self.slot = self.slot, None
                self.out = (self._beat(self.reading, 0), self.reading)
                self.next_beat = 1
            else:
                self.out, self.reading = None, None
        if self.step_left:
            self.step_left -= 1
            if not self.step_left and self.step_frame is not None:
                self.slot, self.step_frame = self.step_frame, None
        elif slot_was_empty and any(core.queue):
            # Decided now, on this cycle's state; visible three edges later.
            self.step_frame = core.step()
            self.step_left = 3 if self.step_frame is not None else 2
        if joining is not None:
            core.enqueue(joining)
        if cfg is not None:
            core.configure(cfg["flow"], quota=cfg.get("quota"), cls=cfg.get("cls"),
                           weight=cfg.get("weight"))
        self.s1 = item
        return left

    def idle(self):
        """Nothing in flight: no beat in the pipeline, no frame queued, selected or leaving."""
        return (self.s1 is None and self.writing is None and self.rel is None
                and self.joining is None and not self.cells_decided
                and self.slot is None and self.out is None and not any(self.core.queue)
                and not self.step_left)
