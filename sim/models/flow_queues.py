# Reference model of partner.hdl.flow_queues.FlowQueues: per-flow queues with byte quotas and
# early drop over a shared cell buffer, and the strict-priority + Deficit Round Robin scheduler
# (M. Shreedhar, G. Varghese, "Efficient Fair Queuing using Deficit Round Robin", SIGCOMM 1995).
"""Reference model of the flow queues (plain Python, no Amaranth).

Two layers:

`FlowQueuesModel` is the algorithm: admission (quota and buffer checks at a frame's first beat),
per-flow FIFO queues, release of a frame's bytes and cells, the per-flow counters, and DRR with
an *active list* of backlogged flows per class:

* a flow whose queue was empty joins the tail of its class's list with a deficit of one quantum
  (``max(weight, 1) * quantum``) when its frame is queued (`activate`);
* the scheduler serves the front flow of the highest class with a non-empty list: if the head
  frame fits the deficit it is sent and the deficit shrinks by its length; a flow whose queue is
  then empty leaves the list; a flow whose next frame does not fit what is left goes to the tail
  of its class's list with one more quantum (the end of its turn);
* a front flow whose head frame does not fit at all (a frame longer than the quantum) goes to
  the tail with one more quantum and nothing is sent (a *wasted* step).

A source that must not lose frames reserves a frame's cells first (`reserve`) and then offers
it as *reserved*: it is admitted whatever its flow's bytes in use, unless its flow is closed.

`FlowQueuesCycleModel` adds the gateware's pipeline timing, so that a test can compare the
gateware's outputs with the model in every clock cycle, including under arbitrary input timing
and output backpressure. Its docstring lists the latencies; docs/queues.md explains them.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

__all__ = ["FlowQueuesCycleModel", "FlowQueuesModel", "Frame", "Verdict", "by_flow",
           "expected_by_flow"]

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
        self.lists = [deque() for _ in range(classes)]  # active lists, front first
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

    def reserve(self, cells):
        """Take ``cells`` free cells for a reserved frame to come. Returns False (and takes
        nothing) if fewer are free."""
        if cells > self.free_cells:
            return False
        self.free_cells -= cells
        return True

    def admit(self, flow, length, meta=0, quota=None, reserved=False, leave=0):
        """Early drop at the first beat, against ``quota`` (default: the flow's quota now).
        Returns (verdict, Frame or None); an admitted frame reserves ``length`` bytes of its
        flow's quota and the cells it needs, and leaves ``leave`` more cells free (those of a
        reservation waiting). A ``reserved`` frame's cells were taken by `reserve`: it is
        admitted unless its flow is closed or its length is 0 (then its cells go back)."""
        c = self.counters[flow]
        quota = self.quota[flow] if quota is None else quota
        if reserved:
            if length == 0 or quota == 0:
                c.drop_quota = (c.drop_quota + 1) & MASK32
                self.free_cells += self.cells_for(length)
                return Verdict.DROP_QUOTA, None
        else:
            if length == 0 or self.bytes_in_use[flow] + length > quota:
                c.drop_quota = (c.drop_quota + 1) & MASK32
                return Verdict.DROP_QUOTA, None
            if self.cells_for(length) + leave > self.free_cells:
                c.drop_nobuf = (c.drop_nobuf + 1) & MASK32
                return Verdict.DROP_NOBUF, None
            self.free_cells -= self.cells_for(length)
        c.enq_frames = (c.enq_frames + 1) & MASK32
        c.enq_bytes = (c.enq_bytes + length) & MASK32
        self.bytes_in_use[flow] += length
        self._seq += 1
        return Verdict.ENQUEUED, Frame(flow, length, meta, self._seq)

    def settle(self, frame, stored_len=None):
        """The frame's last beat has arrived with ``stored_len`` bytes kept; a frame that kept
        fewer bytes than announced gives the difference (bytes and cells) back."""
        frame.stored_len = frame.length if stored_len is None else stored_len
        assert 1 <= frame.stored_len <= frame.length
        self.bytes_in_use[frame.flow] -= frame.length - frame.stored_len
        self.free_cells += self.cells_for(frame.length) - self.cells_for(frame.stored_len)

    def enqueue(self, frame):
        """The frame joins its flow's queue. Returns True if the queue was empty: the flow
        must then be activated (`activate`)."""
        q = self.queue[frame.flow]
        q.append(frame)
        self.frames_queued += 1
        return len(q) == 1

    def release_cell(self):
        """One cell of a frame has been read out: it is free again (a frame's cells are
        released one by one as they leave, `cells_for(stored_len)` in all)."""
        self.free_cells += 1

    def release(self, frame, cells=True):
        """The frame's last beat has left: its bytes are free again, and its cells unless
        ``cells`` is false (they were released one by one with `release_cell`)."""
        self.bytes_in_use[frame.flow] -= frame.stored_len
        if cells:
            self.free_cells += self.cells_for(frame.stored_len)
        self.frames_queued -= 1
        c = self.counters[frame.flow]
        c.deq_frames = (c.deq_frames + 1) & MASK32

    # -- scheduler ---------------------------------------------------------------------------

    def activate(self, flow, cls=None, quantum=None):
        """The flow's queue got its first frame: it joins its class's list with one quantum
        (``cls``, ``quantum``: the flow's when the frame was queued; default: now)."""
        self.lists[self.cls[flow] if cls is None else cls].append(flow)
        self.deficit[flow] = self.quantum_of(flow) if quantum is None else quantum

    def front(self):
        """(class, flow) the next step looks at: the front of the highest non-empty list."""
        for c in reversed(range(self.classes)):
            if self.lists[c]:
                return c, self.lists[c][0]
        return None

    def end_turn(self, c, flow, deficit, cls=None):
        """The front flow of list ``c`` goes to the tail of its class's list (``cls``: the class
        it had when the step read it) with ``deficit``."""
        assert self.lists[c].popleft() == flow
        self.lists[self.cls[flow] if cls is None else cls].append(flow)
        self.deficit[flow] = deficit

    def dequeue(self, c, flow):
        """Send the head frame of the front flow; it leaves list ``c`` if its queue is empty.
        Returns the frame."""
        frame = self.queue[flow].popleft()
        if not self.queue[flow]:
            assert self.lists[c].popleft() == flow
        return frame

    def step(self):
        """One scheduler step of the algorithm (no timing): returns the frame sent, or None (a
        wasted step, or nothing backlogged)."""
        front = self.front()
        if front is None:
            return None
        c, f = front
        head = self.queue[f][0]
        if head.stored_len > self.deficit[f]:
            self.end_turn(c, f, self.deficit[f] + self.quantum_of(f))
            return None
        left = self.deficit[f] - head.stored_len
        frame = self.dequeue(c, f)
        if self.queue[f]:
            if self.queue[f][0].stored_len > left:
                self.end_turn(c, f, left + self.quantum_of(f))
            else:
                self.deficit[f] = left
        return frame

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

    * a beat accepted at edge *e* is decided on in cycle *e+4*: a first beat is admitted or
      dropped with the quota of edge *e* (configuration written at *e* or later does not count),
      and the bytes in use and free cells as they are after edge *e+3*, leaving free the cells
      of a reservation requested in cycle *e+3* that had by then waited ``patience`` cycles;
      ``free_cells`` shows the decision from cycle *e+5*;
    * a reservation requested in cycle *t* is granted at edge *t* if no first or last beat is
      decided on in cycle *t* and the cells are free in cycle *t* (`reserve_ready`);
      ``free_cells`` shows it from cycle *t+1*;
    * a frame whose last beat is accepted at edge *c* is queued at edge *c+5*. If its flow's
      queue was empty (or its last frame was dequeued at that same edge) the flow is
      *activated* with the class it has in cycle *c+5*: the activation FIFO can hand it to the
      scheduler from cycle *c+9*, one activation per idle scheduler cycle, in order, and the
      flow's fresh deficit is the quantum of the weight it has in the cycle the activation is
      taken (before that cycle's configuration write); otherwise the frame only joins the queue;
    * in a cycle *t* in which it is idle, the scheduler takes an activation if one is ready
      (the flow joins its class's list), else starts a step if the one-frame lookahead slot is
      empty and a list is not: S0 = *t* picks the front flow, S1 = *t+1* reads its deficit,
      head frame, class and weight, S3 = *t+3* sends the head frame into the slot (in it from
      *t+4*; a wasted step ends here, and so does a step that emptied the queue), S6 = *t+6*
      ends the flow's turn if its next frame does not fit; idle again at *t+7*;
    * the output register is reloaded whenever it is empty or being emptied: with the next beat
      of the current frame, else with the first beat of the frame in the slot;
    * a cell whose last beat (or the frame's last beat) is loaded into the output register at
      edge *e* is free again at edge *e+2*: first beats decided on in cycle *e+3* or later
      (accepted at *e-1* or later) see it, and ``free_cells`` shows it from cycle *e+3*;
    * a frame whose last beat leaves at edge *r* is released at edge *r+7*: first beats
      accepted at *r+4* or later see its bytes free; ``frames_queued`` changes from cycle
      *r+8*.
    """

    DECIDE = 4  # a beat accepted at edge e is decided on in cycle e + DECIDE
    RELEASE = 7  # a frame whose last beat left at edge r is released at edge r + RELEASE
    CELL_FREE = 2  # a cell read out at edge e is free again at edge e + CELL_FREE
    ACT_READY = 4  # an activation pushed at edge c can be taken from cycle c + ACT_READY

    def __init__(self, core: FlowQueuesModel, width_bytes: int, patience: int = 0):
        self.core = core
        self.patience = patience
        self.waited = 0  # cycles the reservation requested now has waited
        self.width = width_bytes
        self.cycle = 0
        self.pipe = deque([None] * self.DECIDE)  # beats accepted at the last DECIDE edges
        self.writing = None  # Frame being written, _Dropped, or None between frames
        self.w_left = 0  # beats of the frame still to be stored (the rest is truncated)
        self.joining = None  # frame whose last beat was decided on at the previous edge
        self.releases = deque()  # (edge, frame)
        self.cell_frees = deque()  # edges at which one cell each is free again
        self.acts = deque()  # (ready cycle, flow, frame) of the activation FIFO
        self.last_pop = -1
        self.sched = None  # the step in progress: dict, or None when idle
        self.slot = None  # frame selected and waiting to be output
        self.out = None  # (beat dict, frame) in the output register
        self.reading = None  # frame being loaded into the output register
        self.next_beat = 0
        self.admitted = []  # (verdict, flow, length) in input order, for tests
        self.requested = 0  # cells of the reservation requested in the last cycle (0: none)
        self.granted = False  # a reservation was granted at the last edge

    @property
    def free_cells(self):
        """``free_cells`` during the current cycle."""
        return self.core.free_cells

    def outputs(self):
        """(valid, beat, flow, meta) shown during the current cycle."""
        if self.out is None:
            return False, None, None, None
        beat, frame = self.out
        return True, beat, frame.flow, frame.meta

    def reserve_ready(self, cells):
        """``reserve.ready`` during the current cycle for a request of ``cells``."""
        decided = self.pipe[0]
        edge = decided is not None and (self.writing is None or decided[0]["last"])
        return not edge and cells <= self.core.free_cells

    def _beat(self, frame, k):
        w = self.width
        nbytes = min(w, frame.stored_len - k * w)
        return {"data": frame.beats[k] & ((1 << (8 * nbytes)) - 1), "nbytes": nbytes,
                "first": k == 0, "last": (k + 1) * w >= frame.stored_len}

    def _scheduler(self):
        """The scheduler's cycle. Returns the frame selected at this edge, if any."""
        core, st, t = self.core, self.sched, self.cycle
        if st is None:
            if self.acts and self.acts[0][0] <= t:
                _, flow, frame, cls = self.acts.popleft()
                assert core.queue[flow] and core.queue[flow][0] is frame
                core.activate(flow, cls)  # the weight is read as the activation is taken
                self.last_pop = t
                if self.acts:  # the FIFO hands out one entry per cycle
                    self.acts[0] = (max(self.acts[0][0], t + 1), *self.acts[0][1:])
            elif self.slot is None and core.front() is not None:
                c, f = core.front()
                self.sched = {"state": 1, "c": c, "f": f}
            return None
        f, c = st["f"], st["c"]
        state = st["state"]
        st["state"] += 1
        if state == 1:  # S1: the flow's state is read
            st.update(head=core.queue[f][0], deficit=core.deficit[f], cls=core.cls[f],
                      q=core.quantum_of(f))
            return None
        if state == 3:  # S3: decide
            head, deficit = st["head"], st["deficit"]
            if head.stored_len > deficit:  # wasted step
                core.end_turn(c, f, deficit + st["q"], st["cls"])
                self.sched = None
                return None
            frame = core.dequeue(c, f)
            assert frame is head
            st["left"] = deficit - head.stored_len
            if not core.queue[f]:  # emptied: the flow has left its list
                self.sched = None
            return frame
        if state == 6:  # S6: the turn ends if the next frame does not fit
            nxt = core.queue[f][0]  # committed before the step's dequeue
            if nxt.stored_len > st["left"]:
                core.end_turn(c, f, st["left"] + st["q"], st["cls"])
            else:
                core.deficit[f] = st["left"]
            self.sched = None
        return None

    def clock(self, item=None, ready=False, cfg=None, reserve=None):
        """One rising edge. ``item`` is None or (beat dict, flow, length, meta[, reserved]) of
        a beat the input offers this cycle (always accepted); ``ready`` is the output's ready;
        ``cfg`` is None or a dict(flow=, quota=, cls=, weight=) written this cycle; ``reserve``
        is None or the cells requested on ``reserve`` this cycle (`granted` says whether they
        were taken at this edge). Returns the frame whose last beat left at this edge, if
        any."""
        core, w = self.core, self.width
        self.granted = reserve is not None and self.reserve_ready(reserve)
        if self.granted:
            assert core.reserve(reserve)
        urgent = reserve is not None and self.waited == self.patience
        leave, self.requested = self.requested, (reserve if urgent else 0)
        if reserve is not None and not self.granted:
            self.waited = min(self.waited + 1, self.patience)
        else:
            self.waited = 0
        selected = self._scheduler()
        # Writer: the beat accepted DECIDE edges ago is decided on; the frame whose last beat
        # was decided on at the previous edge is queued.
        joining, self.joining = self.joining, None
        decided = self.pipe.popleft()
        if decided is not None:
            beat, flow, length, meta, reserved, quota = decided
            if self.writing is None:
                verdict, frame = core.admit(flow, length, meta, quota, reserved, leave)
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
        if joining is not None and core.enqueue(joining):
            ready_at = max(self.cycle + self.ACT_READY, self.last_pop + 1)
            flow = joining.flow
            self.acts.append((ready_at, flow, joining, core.cls[flow]))
        while self.releases and self.releases[0][0] == self.cycle:
            core.release(self.releases.popleft()[1], cells=False)
        while self.cell_frees and self.cell_frees[0] == self.cycle:
            self.cell_frees.popleft()
            core.release_cell()
        # Reader: the slot as it was before this edge.
        left = None
        if self.out is not None and ready:
            beat, frame = self.out
            if beat["last"]:
                left = frame
                self.releases.append((self.cycle + self.RELEASE, frame))
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
            # A cell goes back once its last beat (or the frame's) is loaded.
            if self.out is not None and (self.next_beat % (core.cell_bytes // w) == 0
                                         or self.out[0]["last"]):
                self.cell_frees.append(self.cycle + self.CELL_FREE)
        if selected is not None:
            self.slot = selected
        # The quota a first beat is checked against is read at the edge it is accepted,
        # before this edge's configuration write.
        if item is not None:
            item = (*item[:4], bool(item[4]) if len(item) > 4 else False, core.quota[item[1]])
        self.pipe.append(item)
        if cfg is not None:
            core.configure(cfg["flow"], quota=cfg.get("quota"), cls=cfg.get("cls"),
                           weight=cfg.get("weight"))
        self.cycle += 1
        return left

    def idle(self):
        """Nothing in flight: no beat in the pipeline, no frame queued, selected or leaving."""
        return (all(p is None for p in self.pipe) and self.writing is None
                and self.joining is None and not self.releases and not self.cell_frees
                and not self.acts
                and self.sched is None and self.slot is None and self.out is None
                and not any(self.core.queue))


def expected_by_flow(frames, verdicts):
    """Admitted frames per flow, in input order: what each flow's output must be.

    `frames` are (flow, payload, meta[, announced length]); `verdicts` the model's, in order.
    """
    out = {}
    for (flow, payload, meta, *rest), (verdict, _, _) in zip(frames, verdicts, strict=True):
        if verdict is Verdict.ENQUEUED:
            length = rest[0] if rest else len(payload)
            out.setdefault(flow, []).append((flow, payload[:length], meta))
    return out


def by_flow(frames):
    """Frames (flow first) grouped by flow, in order."""
    out = {}
    for frame in frames:
        out.setdefault(frame[0], []).append(frame)
    return out
