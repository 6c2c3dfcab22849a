"""The ``partner`` command line: a table of subcommands, each a small function.

    partner --version
    partner connect SRC DST [--flow TEMPLATE[?attrs]] [--count N] [--timeout S]
    partner demo [--out DIR]

SRC and DST are partner URLs (see `partner.partners.urls`: file:, udp://, tcp://, tcp-listen://,
pcap:, pcapng:). A subcommand is one `Subcommand` entry in `SUBCOMMANDS`: its name, its help,
a function that declares its arguments and one that runs it and returns the exit status; later
subcommands (sim, build, flash, stats, capture) are added the same way. Errors the user can fix
(`PartnerError`, `OSError`) end the program with one line on stderr and status 1, never a
traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import time
from collections.abc import Callable

from . import __version__
from .binding import connect
from .errors import EndOfStream, PartnerError
from .flow import FlowSpec
from .partner import Direction, Message, Partner

__all__ = ["SUBCOMMANDS", "Subcommand", "main"]


@dataclasses.dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class _Metered(Partner):
    """A source seen through a meter: counts what leaves it and ends it after `limit` messages.

    It delegates everything to the source (flows included, so demux keys are the source's) and
    works whichever side drives: a pump or an active sink pulls through it, an active source
    pushes through a metered port.
    """

    def __init__(self, inner: Partner, limit: int | None = None):
        super().__init__(inner.name, direction=Direction.OUT)
        self.mode = inner.mode
        self.default_template = inner.default_template
        self.flows = inner.flows
        self.inner, self.limit = inner, limit
        self.messages = self.bytes = 0

    def open(self, template, attrs=None) -> int:
        return self.inner.open(template, attrs)

    def close(self, key: int) -> None:
        self.inner.close(key)

    def _left(self) -> int | None:
        if self.limit is None:
            return None
        if self.messages >= self.limit:
            raise EndOfStream(f"{self.name}: {self.limit} messages moved, as --count asked")
        return self.limit - self.messages

    def _count(self, message: Message) -> None:
        self.messages += 1
        self.bytes += message.pvec.nbytes

    def pull(self, timeout: float | None = 0.0) -> Message | None:
        self._left()
        message = self.inner.pull(timeout)
        if message is not None:
            self._count(message)
        return message

    def pull_many(self, max_count: int, timeout: float | None = 0.0) -> list[Message]:
        left = self._left()
        messages = self.inner.pull_many(max_count if left is None else min(max_count, left),
                                        timeout)
        for message in messages:
            self._count(message)
        return messages

    def run_source(self, port, stop: threading.Event) -> None:
        self.inner.run_source(_MeteredPort(self, port), stop)

    def shutdown(self) -> None:
        self.inner.shutdown()


class _MeteredPort:
    def __init__(self, meter: _Metered, port):
        self.meter, self.port = meter, port

    def push(self, key, attrs, pvec) -> None:
        nbytes = pvec.nbytes  # before the push: the destination may free the pvec
        self.port.push(key, attrs, pvec)
        self.meter.messages += 1
        self.meter.bytes += nbytes
        self.meter._left()

    def pull(self, timeout=0.0):
        return self.port.pull(timeout)

    @property
    def stopping(self) -> bool:
        return self.port.stopping


# --- connect -------------------------------------------------------------------------------


def _connect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="source partner URL, e.g. file:in.bin")
    parser.add_argument("dst", metavar="DST", help="destination partner URL, e.g. udp://host:9000")
    parser.add_argument("--flow", metavar="TEMPLATE[?attrs]",
                        help="flow to open on both, e.g. 'eth/ipv4/udp?dst_port=53' "
                             "(default: the source's own)")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="stop after S seconds (a UDP source never ends by itself)")


def _connect(args: argparse.Namespace) -> int:
    from .partners.urls import open_partner

    if args.count is not None and args.count <= 0:
        raise PartnerError(f"--count must be positive, not {args.count}")
    if args.flow is not None:
        FlowSpec.parse(args.flow)  # a typo must not cost the sink file its old contents
    source = open_partner(args.src, role="source")
    try:
        sink = open_partner(args.dst, role="sink")
    except BaseException:
        source.shutdown()
        raise
    meter = _Metered(source, args.count)
    started = time.monotonic()
    timed_out = False
    try:
        binding = connect(meter, sink, template=args.flow)
        try:
            binding.wait(args.timeout)
        except TimeoutError:
            timed_out = True
            binding.stop()
        except KeyboardInterrupt:
            binding.stop()
            raise
    finally:
        source.shutdown()
        sink.shutdown()
    elapsed = time.monotonic() - started
    how = f" (stopped by --timeout {args.timeout:g} s)" if timed_out else ""
    print(f"moved {meter.messages} messages, {meter.bytes} bytes from {args.src} to {args.dst} "
          f"in {elapsed:.2f} s{how}")
    return 0


# --- demo ----------------------------------------------------------------------------------


def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", default="build/demo",
                        help="where the demo's files go (default: build/demo)")
    parser.add_argument("--frames", type=int, default=300, metavar="N",
                        help="synthetic frames to send through (default: 300)")


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, frames=args.frames)
    return 0


# --- sim ---------------------------------------------------------------------------------------


def _sim_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="sim_command", metavar="ACTION", required=True)
    replay = actions.add_parser(
        "replay", help="replay a capture through the simulated device core",
        description="Feed a pcap/pcapng file into one port of the simulated device core, "
                    "programmed from a rules file (docs/rules.md); write one pcapng per host "
                    "queue and per output port, and counters.json.")
    replay.add_argument("capture", metavar="CAPTURE", help="pcap or pcapng file to replay")
    replay.add_argument("--rules", required=True, metavar="RULES.json", help="flow rules file")
    replay.add_argument("--port", type=int, default=0, help="ingress port (default 0)")
    replay.add_argument("--out", default="build/replay", metavar="DIR",
                        help="output folder (default build/replay)")
    replay.add_argument("--width", type=int, choices=(1, 8), default=1,
                        help="1: 1G ports (GMII), 8: 10G ports (XGMII)")
    replay.add_argument("--entries", type=int, default=16, help="flow-table entries (16)")
    card = actions.add_parser(
        "card", help="run the main job on the simulated PCIe card",
        description="Open flows with wildcard templates through the host driver, send traffic "
                    "into an Ethernet port, pull each flow's pvecs over PCIe DMA into "
                    "flows.pcapng, push a multi-chunk pvec out of port 1 (port1.pcapng); "
                    "print a per-flow table.")
    card.add_argument("--out", default="build/card", metavar="DIR",
                      help="output folder (default build/card)")
    card.add_argument("--frames", type=int, default=200, help="frames to send (default 200)")
    card.add_argument("--seed", type=int, default=1, help="traffic seed (default 1)")


def _sim(args: argparse.Namespace) -> int:
    try:
        from partner.sim.card_demo import card_demo
        from partner.sim.replay import replay
    except ImportError as error:
        raise PartnerError(f"the simulator needs the 'sim' extra (pip install "
                           f"'partner[sim]'): {error}") from None
    if args.sim_command == "card":
        return _print_card(card_demo(args.out, frames=args.frames, seed=args.seed), args.out)
    counters = replay(args.capture, rules=args.rules, out=args.out, port=args.port,
                      width=args.width, rules_entries=args.entries)
    account = counters["account"]
    print(f"replayed {account['frames_in']} frames into port {args.port}")
    for name, count in account["delivered"].items():
        keys = ", ".join(f"{k}: {v}" for k, v in counters["outputs"][name].items())
        print(f"  {name:10} {count:6} frames  {keys}")
    print(f"  {'forwarded':10} {account['forwarded']:6} frames")
    for cause, count in account["dropped"].items():
        print(f"  {'dropped':10} {count:6} frames  {cause}")
    print(f"outputs and counters.json in {args.out}")
    return 0


def _print_card(results: dict, out: str) -> int:
    print(f"sent {results['frames_sent']} frames into port 0 of the simulated card "
          f"({results['simulated_ns'] / 1000:.1f} us simulated)")
    print(f"  {'flow':6} {'sent':>6} {'pulled':>7} {'dropped':>8} {'bytes':>8} {'chunks':>7}")
    for row in results["flows"]:
        print(f"  {row['flow']:6} {row['expected_frames']:6} {row['frames']:7} "
              f"{row['dropped_early']:8} {row['bytes']:8} {row['chunks']:7}")
    print("  (pulled: pvecs over PCIe DMA; dropped: early drops counted by the flow's queue when "
          "frames arrive faster than the host takes them)")
    pushed = results["pushed"]
    print(f"pushed a pvec of {pushed['chunks']} chunks ({pushed['bytes']} bytes) out of port "
          f"{pushed['port']}: {'on the wire intact' if pushed['on_the_wire'] else 'LOST'}")
    print(f"outputs: {out}/flows.pcapng (one interface per flow), {out}/port1.pcapng, "
          f"{out}/results.json")
    return 0


SUBCOMMANDS: list[Subcommand] = [
    Subcommand("connect", "move data from one partner URL to another", _connect_arguments,
               _connect),
    Subcommand("demo", "run a short host-side data flow through several partners",
               _demo_arguments, _demo),
    Subcommand("sim", "run the simulated device (partner sim replay | card)", _sim_arguments,
               _sim),
]


def build_parser() -> argparse.ArgumentParser:
    from .partners.urls import SCHEMES

    schemes = "\n".join(f"  {s.syntax:24} {s.help}" for s in SCHEMES.values())
    parser = argparse.ArgumentParser(
        prog="partner", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Host tools of the partner network offload device.",
        epilog=f"partner URLs:\n{schemes}")
    parser.add_argument("--version", action="version", version=f"partner {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for sub in SUBCOMMANDS:
        sub.arguments(commands.add_parser(sub.name, help=sub.help, description=sub.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse's own exits included)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help, --version and usage errors: keep main() callable
        return exit.code if isinstance(exit.code, int) else 0 if exit.code is None else 2
    run = next(sub.run for sub in SUBCOMMANDS if sub.name == args.command)
    try:
        return run(args)
    except (PartnerError, OSError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"partner {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"partner {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
