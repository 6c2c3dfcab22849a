"""Host ring processing of the PCIe driver: batch against one-at-a-time (docs/dma.md).

Figures, all wall-clock on the memory-only device model (`partner.sim.models.dma_device`), so
they measure the host driver's Python work and the model's register handling (which stands in for
MMIO), not a PCIe link:

- `rx_pull_fps` / `rx_pull_many_fps`: frames per second of taking 256 received 64-byte frames
  with 256 `pull()` calls, or with one `pull_many(256)`, each pvec freed after it is taken (so
  its buffer goes back to the free ring). `host_batch_speedup` is their ratio (limit 2.0).
- `tx_push_fps` / `tx_push_many_fps` and `tx_batch_speedup`: the same for 256 zero-copy pushes
  of device buffers (informative, no limit). The model's engine runs inside the TX doorbell
  write, so these figures include its per-frame work and understate the host's batch saving.

Only the host calls are timed: the model is fed the frames between timed sections. Each figure
is the best of `ROUNDS` rounds, and the two ways alternate, so background load on a shared
machine inflates both alike; the ratio comes from the same run.
"""

import time

from partner.pcie.driver import PcieDevice
from partner.sim.models.dma_device import DmaDeviceModel

BATCH = 256
ROUNDS = 30
FRAME = bytes.fromhex("020000000002020000000001") + b"\x88\xb5" + bytes(50)  # 64 bytes


def _setup():
    model = DmaDeviceModel(ports=2, queues=1)
    dev = PcieDevice(model, rx_log2=10, tx_log2=10, buffers=4096, rx_moderation=(64, 0))
    key = dev.open("eth")
    rule = dev.flow(key).state.indices[0]
    return model, dev, key, rule


def _rx_round(model, dev, rule, batch: bool) -> float:
    for _ in range(BATCH):
        model.receive(FRAME, 0, rule=rule)
    start = time.perf_counter()
    if batch:
        got = dev.pull_many(BATCH)
        for message in got:
            message.pvec.free()
        n = len(got)
    else:
        n = 0
        pull = dev.pull
        while True:
            message = pull()
            if message is None:
                break
            message.pvec.free()
            n += 1
    elapsed = time.perf_counter() - start
    if n != BATCH:
        raise RuntimeError(f"expected {BATCH} frames, the driver gave {n}")
    return elapsed


def _tx_round(model, dev, key, batch: bool) -> float:
    pvecs = [dev.alloc(len(FRAME)) for _ in range(BATCH)]
    for p in pvecs:
        p.chunks[0].view[:] = FRAME
    attrs = {}
    start = time.perf_counter()
    if batch:
        n = dev.push_many([(key, attrs, p) for p in pvecs])
    else:
        push = dev.push
        for p in pvecs:
            push(key, attrs, p)
        n = len(pvecs)
    dev.pull_many(1)  # reclaim the TX completions, as the next call of either way would
    elapsed = time.perf_counter() - start
    if n != BATCH or len(model.transmitted) < BATCH:
        raise RuntimeError(f"expected {BATCH} frames sent, got {n}")
    model.transmitted.clear()
    return elapsed


def run() -> dict:
    model, dev, key, rule = _setup()
    best = {"pull": float("inf"), "pull_many": float("inf"), "push": float("inf"),
            "push_many": float("inf")}
    for _ in range(ROUNDS):
        best["pull"] = min(best["pull"], _rx_round(model, dev, rule, batch=False))
        best["pull_many"] = min(best["pull_many"], _rx_round(model, dev, rule, batch=True))
        best["push"] = min(best["push"], _tx_round(model, dev, key, batch=False))
        best["push_many"] = min(best["push_many"], _tx_round(model, dev, key, batch=True))
    buffers = dev.ctl_buffers()
    dev.shutdown()
    fps = {name: BATCH / seconds for name, seconds in best.items()}
    speedup = fps["pull_many"] / fps["pull"]
    return {
        "batch": BATCH,
        "rounds": ROUNDS,
        "frame_bytes": len(FRAME),
        "rx_pull_fps": fps["pull"],
        "rx_pull_many_fps": fps["pull_many"],
        "tx_push_fps": fps["push"],
        "tx_push_many_fps": fps["push_many"],
        "host_batch_speedup": speedup,
        "tx_batch_speedup": fps["push_many"] / fps["push"],
        "buffers_elsewhere_at_end": buffers["elsewhere"],
        "checks": {"host_batch_speedup": (speedup, 2.0, speedup >= 2.0)},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
