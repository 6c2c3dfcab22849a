"""pvec conversion costs and the cost of a partner call (paper §6, Tables 3 and 4).

Figures:
- `conversions`: ns per conversion of 1200 bytes split into 1..4 chunks, pvec <-> iovec list,
  bytes and numpy, with and without copy (Tables 3 and 4 measure the same conversions for
  sk_buffs, iovecs and Scout messages).
- `sweep`: 64 B .. 1 MiB in four chunks: the zero-copy conversion (to an iovec list) stays flat,
  the copying one (to bytes) grows with the payload. `zero_copy_vs_copy_at_1MiB` is their ratio
  at 1 MiB (limit 0.02).
- `partner_push_vs_direct_call`: a push through a bound partner pair (an active source's port
  into a passive sink) divided by a direct method call doing the same work, measured in the
  same run (limit 2.0; the paper: the overhead is "effectively an indirect function call").

Every time is the best of several repeats of a timeit loop, so background load inflates the
figures less than a mean would; ratios come from the same run.
"""

import threading
import timeit

import numpy

from partner import Binding, Direction, Mode, Partner, Pvec

REPEAT = 5


def per_call_ns(statement, *, target_seconds=0.02) -> float:
    timer = timeit.Timer(statement)
    number, elapsed = timer.autorange()
    number = max(1, int(number * target_seconds / max(elapsed, 1e-9)))
    return min(timer.repeat(REPEAT, number)) / number * 1e9


def conversions() -> dict:
    table = {}
    for count in (1, 2, 3, 4):
        size = 1200 // count
        buffers = [bytearray(size) for _ in range(count)]
        pvec = Pvec.wrap(*buffers)
        iovecs = pvec.iovecs()
        payload = bytes(1200)
        array = numpy.zeros(1200, dtype=numpy.uint8)
        arrays = [numpy.zeros(size, dtype=numpy.uint8) for _ in range(count)]
        table[f"{count}x{size}"] = {
            "pvec_to_iovecs": per_call_ns(pvec.iovecs),
            "iovecs_to_pvec": per_call_ns(lambda iovecs=iovecs: Pvec.from_iovecs(iovecs)),
            "pvec_to_bytes_copy": per_call_ns(pvec.tobytes),
            "bytes_to_pvec": per_call_ns(lambda payload=payload: Pvec.wrap(payload)),
            "bytes_to_pvec_copy": per_call_ns(
                lambda payload=payload: Pvec.wrap(bytearray(payload))
            ),
            "pvec_to_numpy": per_call_ns(pvec.numpy_views),
            "pvec_to_numpy_copy": per_call_ns(lambda pvec=pvec: pvec.to_numpy(copy=True)),
            "numpy_to_pvec": per_call_ns(lambda arrays=arrays: Pvec.wrap(*arrays)),
            "numpy_to_pvec_copy": per_call_ns(lambda array=array: Pvec.wrap(array.copy())),
        }
    return table


def sweep() -> dict:
    rows = {}
    size = 64
    while size <= 1 << 20:
        pvec = Pvec.wrap(*(bytearray(size // 4) for _ in range(4)))
        rows[str(size)] = {
            "zero_copy_ns": per_call_ns(pvec.iovecs),
            "copy_ns": per_call_ns(pvec.tobytes),
        }
        size *= 4
    return rows


class CountingSink(Partner):
    """A passive sink whose work is what a queue does: keep the pvec, count its bytes."""

    mode = Mode.PASSIVE
    direction = Direction.IN

    def __init__(self):
        super().__init__("sink")
        self.items = []
        self.received = 0

    def push(self, key, attrs, pvec):
        self.items.append(pvec)
        self.received += pvec.nbytes
        if len(self.items) > 4096:
            self.items.clear()

    def consume(self, pvec):
        self.items.append(pvec)
        self.received += pvec.nbytes
        if len(self.items) > 4096:
            self.items.clear()


class IdleSource(Partner):
    mode = Mode.ACTIVE
    direction = Direction.OUT

    def run_source(self, port, stop: threading.Event) -> None:
        stop.wait()


def push_overhead() -> dict:
    sink = CountingSink()
    binding = Binding(IdleSource("source"), sink)
    src_key, _ = binding.add_flow("raw")
    port = binding.port
    pvec = Pvec.wrap(bytearray(1200))
    attrs = {}
    direct = per_call_ns(lambda: sink.consume(pvec))
    bound = per_call_ns(lambda: port.push(src_key, attrs, pvec))
    empty = per_call_ns(lambda: None)
    return {"direct_call_ns": direct, "bound_push_ns": bound, "empty_lambda_ns": empty}


def run() -> dict:
    table = conversions()
    rows = sweep()
    push = push_overhead()
    at_1mib = rows[str(1 << 20)]
    zero_copy_ratio = at_1mib["zero_copy_ns"] / at_1mib["copy_ns"]
    # The lambda that calls each subject is the same shape in both cases; take its cost out so
    # the ratio compares the calls themselves.
    push_ratio = (push["bound_push_ns"] - push["empty_lambda_ns"]) / (
        push["direct_call_ns"] - push["empty_lambda_ns"]
    )
    return {
        "unit": "ns per conversion (best of repeats); ratios are dimensionless",
        "conversions_1200_bytes": table,
        "sweep_4_chunks": rows,
        "push": push,
        "zero_copy_vs_copy_at_1MiB": zero_copy_ratio,
        "partner_push_vs_direct_call": push_ratio,
        "checks": {
            "zero_copy_vs_copy_at_1MiB": (zero_copy_ratio, 0.02, zero_copy_ratio <= 0.02),
            "partner_push_vs_direct_call": (push_ratio, 2.0, push_ratio <= 2.0),
        },
    }
