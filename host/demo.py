"""The host-side demo (`partner demo`): one data flow through several kinds of partner.

    synthetic frames --PcapWriter--> input.pcapng --FilePartner copy--> copy.pcapng
    copy.pcapng --PcapReader--> UdpPartner ~~127.0.0.1~~> UdpPartner --> TransformPartner
        (classify by UDP destination port) --> QueuePartner --> PcapWriter flows.pcapng

The frames (Ethernet/IPv4/UDP to a few ports, and some ARP) are built with `struct`. Every hop
is a `connect` binding, and each binding picks its own driver: the file copy and the last two
hops are pumps (both sides passive), the UDP sender is an active sink, the UDP receiver an active
source. The transform is a code module that demultiplexes: the first frame to a new UDP port
opens a flow ``eth/ipv4/udp?dst_port=N`` through the bindings downstream (`Binding.add_flow`),
and hands the frame on under that flow's key, so the writer sees one flow, and writes one pcapng
interface, per port without classifying anything itself (demux propagation). Frames that are
not UDP stay on the catch-all flow ``eth``.
"""

from __future__ import annotations

import os
import struct
import sys
import time

from .binding import connect
from .partner import Message
from .partners.file import FilePartner
from .partners.pcap import PcapReader, PcapWriter
from .partners.queue import QueuePartner, TransformPartner
from .partners.sockets import UdpPartner
from .pvec import Pvec

__all__ = ["run_demo", "synthetic_frames", "udp_destination_port"]

PORTS = (53, 123, 5353, 9000)
_MAC_A, _MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
_IP_A, _IP_B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp_frame(index: int, dst_port: int) -> bytes:
    payload = f"partner demo frame {index} ".encode().ljust(18 + index * 37 % 400, b".")
    src_port = 40000 + index % 100
    udp_length = 8 + len(payload)
    pseudo = _IP_A + _IP_B + struct.pack("!BBH", 0, 17, udp_length)
    udp = struct.pack("!HHHH", src_port, dst_port, udp_length, 0) + payload
    udp = udp[:6] + struct.pack("!H", _checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_length, index & 0xFFFF, 0, 64, 17, 0,
                     _IP_A, _IP_B)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return _MAC_B + _MAC_A + b"\x08\x00" + ip + udp


def _arp_frame() -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, _MAC_A, _IP_A, bytes(6), _IP_B)
    return b"\xff" * 6 + _MAC_A + b"\x08\x06" + arp + bytes(18)  # padded to 60 bytes


def synthetic_frames(count: int) -> list[bytes]:
    """`count` Ethernet frames: UDP to the ports in `PORTS` in turn, every 20th one ARP."""
    return [_arp_frame() if i % 20 == 19 else _udp_frame(i, PORTS[i % len(PORTS)])
            for i in range(count)]


def udp_destination_port(frame: Pvec) -> int | None:
    """The UDP destination port of an Ethernet/IPv4 frame, None for anything else."""
    header = frame[:64].tobytes()  # copies the headers only, not the payload
    if len(header) < 42 or header[12:14] != b"\x08\x00" or header[23] != 17:
        return None
    udp = 14 + (header[14] & 0x0F) * 4
    return struct.unpack_from("!H", header, udp + 2)[0] if len(header) >= udp + 4 else None


class _PortClassifier:
    """The code module's function: re-key each UDP frame to its port's flow, opened on demand."""

    def __init__(self):
        self.transform: TransformPartner | None = None
        self.downstream: list = []  # the bindings a new flow has to be opened through
        self.keys: dict[int, int] = {}  # UDP port -> demux key on the transform
        self.writer_flows: dict[str, object] = {}  # flow spec -> the writer's Flow (counters)

    def __call__(self, message: Message) -> Message:
        port = udp_destination_port(message.pvec)
        if port is None:
            return message  # not UDP: stays on the catch-all flow
        key = self.keys.get(port)
        if key is None:
            key = self.keys[port] = self._open(f"eth/ipv4/udp?dst_port={port}")
        return Message(key, message.attrs, message.pvec)

    def _open(self, spec: str) -> int:
        # Hold the flow open as its producer, then route it through every binding downstream;
        # each opens the same spec on its source (the same key) and on its destination.
        key = self.transform.open(spec)
        for binding in self.downstream:
            _, dst_key = binding.add_flow(spec)
        writer = self.downstream[-1].dst
        self.writer_flows[spec] = writer.flows[dst_key]  # its counters outlive the flow
        return key


def run_demo(out: str = "build/demo", *, frames: int = 300, stream=None) -> dict:
    """Run the demo, print what moved to `stream` (stdout) and return the same figures."""
    stream = stream or sys.stdout
    os.makedirs(out, exist_ok=True)
    paths = {name: os.path.join(out, f"{name}.pcapng") for name in ("input", "copy", "flows")}
    started = time.monotonic()

    # 1. Synthetic frames into a capture file, one timestamp a microsecond apart.
    with PcapWriter(paths["input"]) as writer:
        key = writer.open("eth")
        base = time.time_ns()
        writer.push_many(Message(key, {"timestamp": base + i * 1000}, Pvec.wrap(frame))
                         for i, frame in enumerate(synthetic_frames(frames)))

    # 2. A byte-exact copy through two file partners (pump, 4 KiB chunks).
    with FilePartner(paths["input"], chunk_size=4096) as src, \
            FilePartner(paths["copy"], "w") as dst:
        copy = connect(src, dst).wait(10)
    with open(paths["input"], "rb") as a, open(paths["copy"], "rb") as b:
        copied_exactly = a.read() == b.read()

    # 3. Replay over a UDP loopback hop (one frame per datagram), classify by port, queue, and
    # write one interface per flow.
    classifier = _PortClassifier()
    reader = PcapReader(paths["copy"])
    rx = UdpPartner(local=("127.0.0.1", 0))
    tx = UdpPartner(remote=rx.local_address)
    transform = classifier.transform = TransformPartner(classifier, "classify", max_messages=64)
    queue = QueuePartner("queue", max_messages=64)
    writer = PcapWriter(paths["flows"])
    try:
        # Downstream first, so every hop has its route before data arrives.
        to_writer = connect(queue, writer, template="eth")
        to_queue = connect(transform, queue, template="eth")
        classifier.downstream = [to_queue, to_writer]
        (catch_all,) = to_writer.route.values()  # the writer's key of the "eth" flow
        classifier.writer_flows["eth"] = writer.flows[catch_all]
        received = connect(rx, transform, template="eth")
        sent = connect(reader, tx, template="eth").wait(10)
        deadline = time.monotonic() + 2.0  # UDP has no end of stream: wait for the last frame
        while received.messages < sent.messages and time.monotonic() < deadline:
            time.sleep(0.005)
        received.stop()
        for key in classifier.keys.values():  # the producer's end of each per-port flow
            transform.close(key)
        to_queue.wait(10)
        to_writer.wait(10)
    finally:
        for partner in (reader, rx, tx, writer):
            partner.shutdown()

    # The writer's flow state is the pcapng interface it opened for the flow.
    flows = {spec: (f.state, f.messages, f.bytes) for spec, f in classifier.writer_flows.items()}
    result = {"frames": frames, "copied_exactly": copied_exactly, "copy_messages": copy.messages,
              "udp_sent": sent.messages, "udp_received": received.messages, "flows": flows,
              "files": paths, "seconds": time.monotonic() - started}
    _report(result, stream)
    return result


def _report(result: dict, stream) -> None:
    def say(text=""):
        print(text, file=stream)

    paths = result["files"]
    say(f"partner demo: {result['frames']} synthetic Ethernet frames")
    say(f"  capture written      {paths['input']} ({os.path.getsize(paths['input'])} bytes)")
    exact = "byte-exact" if result["copied_exactly"] else "DIFFERENT"
    say(f"  file copy            {paths['copy']} in {result['copy_messages']} chunks, {exact}")
    lost = result["udp_sent"] - result["udp_received"]
    say(f"  UDP loopback hop     {result['udp_sent']} datagrams sent, {result['udp_received']} "
        f"received" + (f" ({lost} lost: UDP may drop)" if lost else ""))
    say(f"  flows written        {paths['flows']} (one pcapng interface per flow)")
    say()
    say(f"  {'interface':>9}  {'flow':<28} {'messages':>8} {'bytes':>8}")
    for spec, (interface, messages, nbytes) in result["flows"].items():
        say(f"  {interface:>9}  {spec:<28} {messages:>8} {nbytes:>8}")
    total_messages = sum(m for _, m, _ in result["flows"].values())
    total_bytes = sum(b for _, _, b in result["flows"].values())
    say(f"  {'':>9}  {'total':<28} {total_messages:>8} {total_bytes:>8}")
    say(f"done in {result['seconds']:.2f} s")
