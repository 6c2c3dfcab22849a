"""RxPort: committed frames and lookup requests stay paired, and a frame that arrives while the
request before it still waits is dropped and counted, never let in without its key."""

import pytest
from amaranth.hdl import Const
from amaranth.sim import Simulator
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from partner.formats import FLOW_KEY
from partner.hdl.rx_port import RxPort
from partner.sim.beats import packet_beats

GAP = 12  # idle cycles between frames (the wire's inter-frame gap, in beats at width 1)


def udp(dst_port: int, size: int = 64, ip_length: int | None = None) -> bytes:
    head = Ether() / IP(dst="10.0.0.1", len=ip_length) / UDP(dport=dst_port)
    return bytes(head / bytes(max(0, size - len(head))))


def run_port(width, frames, *, ready_from, mac_drops=()):
    """Feed `frames` (with `GAP` idle cycles between them) into an RxPort whose lookup consumer
    is ready from cycle `ready_from` on, one request every third cycle. Frames whose index is in
    `mac_drops` end with the MAC's drop flag (a bad FCS). Returns the frames and the requests
    that came out, in order, and the port's counters."""
    dut = RxPort(width, port=3, fifo_depth=4096 // width)
    schedule = []
    for index, frame in enumerate(frames):
        for beat in packet_beats(width, frame):
            schedule.append((beat, index in mac_drops and beat["last"]))
        schedule += [None] * GAP
    schedule += [None] * 200
    out_frames, requests, current = [], [], bytearray()
    result = {}

    async def bench(ctx):
        for cycle, item in enumerate(schedule):
            ctx.set(dut.i_stream.valid, item is not None)
            if item is not None:
                ctx.set(dut.i_stream.payload, item[0])
                ctx.set(dut.i_drop, item[1])
            ctx.set(dut.o_frame.ready, 1)
            take = cycle >= ready_from and cycle % 3 == 0
            ctx.set(dut.o_lookup.ready, take)
            if take and ctx.get(dut.o_lookup.valid):
                request = ctx.get(dut.o_lookup.payload)
                key = FLOW_KEY.unpack(Const.cast(request.key).value)
                requests.append((key, request.length))
            if ctx.get(dut.o_frame.valid):
                beat = ctx.get(dut.o_frame.payload)
                current.extend(beat.data.to_bytes(width, "little")[:beat.nbytes])
                if beat.last:
                    out_frames.append(bytes(current))
                    current.clear()
            await ctx.tick()
        result["backlog_drops"] = ctx.get(dut.lookup_backlog_drops)
        result["malformed"] = ctx.get(dut.malformed)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out_frames, requests, result


@pytest.mark.parametrize("width", [1, 8])
def test_requests_pair_with_committed_frames(width):
    # Frames 1 and 6 claim more IPv4 bytes than they have: malformed, still looked up.
    frames = [udp(1000 + n, 64 + 13 * n, 900 if n in (1, 6) else None) for n in range(8)]
    out, requests, counters = run_port(width, frames, ready_from=0, mac_drops={2, 5})
    kept = [f for n, f in enumerate(frames) if n not in (2, 5)]
    assert out == kept
    # A malformed frame's key keeps no L4 fields (and carries the MALFORMED flag).
    assert [(key["dst_port"], key["in_port"], length) for key, length in requests] == \
        [(0 if n in (1, 6) else 1000 + n, 3, len(f))
         for n, f in enumerate(frames) if n not in (2, 5)]
    assert counters == {"backlog_drops": 0, "malformed": 2}


@pytest.mark.parametrize("width", [1, 8])
def test_frame_behind_a_waiting_request_is_dropped_and_counted(width):
    """The consumer is not ready until the fourth frame has arrived: the first frame's request
    waits, the second and third frames are dropped (counted), the fourth gets through, and every
    request still names its own frame."""
    frames = [udp(2000 + n, 64) for n in range(5)]
    fourth_end = sum(-(-len(f) // width) + GAP for f in frames[:3]) + GAP // 2
    out, requests, counters = run_port(width, frames, ready_from=fourth_end)
    assert counters["backlog_drops"] == 2
    assert out == [frames[0], frames[3], frames[4]]
    assert [key["dst_port"] for key, _ in requests] == [2000, 2003, 2004]
    assert all(length == 64 for _, length in requests)
