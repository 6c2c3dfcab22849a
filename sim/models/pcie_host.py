# The host side of a PCIe link, as the device's DMA requesters see it: a root complex with host
# memory that serves memory reads with split completions and accepts memory writes, and that
# checks every request against the rules of PCI Express Base Spec §2.2 and §2.3.
"""Host model for `amaranth.sim` testbenches of the DMA requesters.

Plain Python: it drives and samples the streams through the testbench context it is given and
does not import Amaranth or cocotbext-pcie (the real root complex is used by the cocotb benches).

`PcieHost` consumes the device's ``req_out`` TLP stream and produces its ``cpl_in`` stream:

- memory writes (MWr) go to `HostMemory`, honouring the byte enables;
- memory reads (MRd) are served with completions split at the read completion boundary (RCB,
  64 or 128 bytes, §2.3.1.1), several RCB blocks per completion unless ``split_on_all_rcb`` (a
  random number of them, or as many as MPS allows with ``largest_completions``), in
  address order within a request but out of order between tags, after a random delay (each
  completion goes to a random due request with probability ``reorder``, else to the oldest);
- ``ur_rate`` / ``ca_rate`` end a request with an Unsupported Request / Completer Abort
  completion (after some successful ones, at random); ``drop_rate`` never answers a request
  (the requester's completion timeout must fire); ``malformed_rate`` sends, now and then, an
  extra completion with a wrong Byte Count (the requester must discard it); ``timeout`` is the
  requester's completion timeout, after which the tag of an unanswered request may be reused;
  ``poison_rate`` sets the EP bit (poisoned data, §2.7.2.2) of some completions;
- every request is checked, and a violation raises `ProtocolError` from the testbench: payload
  within Max_Payload_Size, reads within Max_Read_Request_Size, no 4 KiB crossing (§2.2.7), a
  tag not outstanding and below the device's limit (§2.2.6.2), byte enable rules (§2.2.5),
  32-bit address format below 4 GiB (§2.2.4.1), payload dwords equal to the header's length,
  no request while Bus Master Enable is 0 (§7.5.1.1).

``header_dw`` (optional) models the link's cost of headers: every TLP then occupies its header
dwords plus its payload dwords of a link that carries ``width / 32`` dwords per cycle, in both
directions; without it the streams run at one beat per cycle (subject to the random gaps).

Stream helpers for tests: `StreamSource`, `StreamSink` (random valid / ready), `pack`/`unpack`
of struct-layout payloads by field name, `tlp_beats` to build TLP stream beats.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from partner.tlp import (
    COMPLETION_DW1,
    COMPLETION_DW2,
    HEADER_DW0,
    REQUEST_DW1,
    CompletionStatus,
    TlpKind,
)

__all__ = [
    "HostMemory",
    "PcieHost",
    "ProtocolError",
    "StreamSink",
    "StreamSource",
    "pack",
    "tlp_beats",
    "unpack",
]


class ProtocolError(AssertionError):
    """The device broke a rule of the PCIe transaction layer."""


# -- payload packing ------------------------------------------------------------------------

def pack(layout, **fields) -> int:
    """The raw integer of a `StructLayout` payload from field values (missing fields are 0)."""
    word = 0
    for name, value in fields.items():
        f = layout[name]
        word |= (int(value) & ((1 << f.width) - 1)) << f.offset
    return word


def unpack(layout, word: int) -> dict:
    """Field values (ints) of a raw `StructLayout` payload."""
    return {name: (word >> f.offset) & ((1 << f.width) - 1) for name, f in layout}


def tlp_beats(layout, width: int, hdr: int, payload: bytes = b"") -> list[int]:
    """Raw TLP stream beats (`partner.hdl.pcie.tlp.tlp_layout`) of one TLP; ``payload`` is a
    whole number of dwords."""
    if len(payload) % 4:
        raise ValueError("a TLP payload is whole dwords")
    wb = width // 8
    chunks = [payload[i:i + wb] for i in range(0, len(payload), wb)] or [b""]
    return [pack(layout, hdr=hdr if n == 0 else 0, data=int.from_bytes(chunk, "little"),
                 strb=(1 << (len(chunk) // 4)) - 1, sop=n == 0, eop=n == len(chunks) - 1)
            for n, chunk in enumerate(chunks)]


# -- generic stream drivers -----------------------------------------------------------------

class StreamSource:
    """Offers queued raw payloads on ``stream``, each cycle with probability ``rate``."""

    def __init__(self, stream, rng: random.Random, rate: float = 1.0):
        self.stream, self.rng, self.rate = stream, rng, rate
        self.queue: deque[int] = deque()

    def put(self, *payloads: int):
        self.queue.extend(payloads)

    async def run(self, ctx):
        s = self.stream
        payload = s.payload.as_value()
        while True:
            offer = bool(self.queue) and self.rng.random() < self.rate
            ctx.set(s.valid, offer)
            if offer:
                ctx.set(payload, self.queue[0])
            _, _, ready = await ctx.tick().sample(s.ready)
            if offer and ready:
                self.queue.popleft()


class StreamSink:
    """Accepts beats of ``stream``, ready each cycle with probability ``rate``; keeps them in
    ``items`` (raw payloads) and counts cycles in ``cycle``."""

    def __init__(self, stream, rng: random.Random, rate: float = 1.0):
        self.stream, self.rng, self.rate = stream, rng, rate
        self.items: list[int] = []
        self.times: list[int] = []
        self.cycle = 0

    async def run(self, ctx):
        s = self.stream
        payload = s.payload.as_value()
        while True:
            ready = self.rng.random() < self.rate
            ctx.set(s.ready, ready)
            _, _, valid, value = await ctx.tick().sample(s.valid, payload)
            self.cycle += 1
            if valid and ready:
                self.items.append(value)
                self.times.append(self.cycle)


# -- host memory ----------------------------------------------------------------------------

class HostMemory:
    """Sparse byte-addressed host memory; unwritten bytes read as a fixed pseudo-random
    pattern (so a test can tell read data from a stale buffer)."""

    PAGE = 4096

    def __init__(self, seed: int = 1):
        self.seed = seed
        self.pages: dict[int, bytearray] = {}

    def _page(self, number: int) -> bytearray:
        page = self.pages.get(number)
        if page is None:
            page = bytearray(random.Random(self.seed * 1_000_003 + number).randbytes(self.PAGE))
            self.pages[number] = page
        return page

    def read(self, addr: int, length: int) -> bytes:
        out = bytearray()
        while length > 0:
            page, offset = divmod(addr, self.PAGE)
            n = min(length, self.PAGE - offset)
            out += self._page(page)[offset:offset + n]
            addr, length = addr + n, length - n
        return bytes(out)

    def write(self, addr: int, data: bytes):
        pos = 0
        while pos < len(data):
            page, offset = divmod(addr + pos, self.PAGE)
            n = min(len(data) - pos, self.PAGE - offset)
            self._page(page)[offset:offset + n] = data[pos:pos + n]
            pos += n


# -- the host -------------------------------------------------------------------------------

def _byte_range(addr_dw: int, length_dw: int, first_be: int, last_be: int) -> tuple[int, int]:
    """Bytes [start, end) that a request's byte enables select."""
    lo = (first_be & -first_be).bit_length() - 1
    if length_dw == 1:
        hi = first_be.bit_length()
        return 4 * addr_dw + lo, 4 * addr_dw + hi
    return 4 * addr_dw + lo, 4 * (addr_dw + length_dw - 1) + last_be.bit_length()


def _contiguous(be: int) -> bool:
    low = be & -be
    return be != 0 and (be + low) & be == 0


@dataclass
class _Read:
    tag: int
    start: int  # first byte
    end: int  # one past the last byte
    due: int  # cycle from which the next completion may go
    error: CompletionStatus | None = None
    error_at: int = 0  # send the error status instead of the completion starting here
    sent: int = 0  # bytes completed so far
    dropped: bool = False
    issued: int = 0


@dataclass
class _Stats:
    reads: int = 0
    writes: int = 0
    completions: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    errors_sent: int = 0
    malformed_sent: int = 0
    dropped: int = 0
    poisoned_sent: int = 0
    first_completion_cycle: int | None = None
    last_completion_cycle: int | None = None
    write_log: list = field(default_factory=list)


class PcieHost:
    """Root complex + host memory model for one endpoint (see the module docstring)."""

    def __init__(self, layout, width: int, memory: HostMemory | None = None, *,
                 rng: random.Random | None = None, mps: int = 256, mrrs: int = 512,
                 rcb: int = 64, split_on_all_rcb: bool = False, tags: int = 256,
                 requester_id: int = 0x0100, completer_id: int = 0x0000,
                 delay: tuple[int, int] = (20, 60), req_ready: float = 1.0,
                 cpl_valid: float = 1.0, ur_rate: float = 0.0, ca_rate: float = 0.0,
                 drop_rate: float = 0.0, malformed_rate: float = 0.0,
                 timeout: int | None = None, header_dw: int | None = None,
                 largest_completions: bool = False, reorder: float = 1.0,
                 poison_rate: float = 0.0):
        if rcb not in (64, 128):
            raise ValueError(f"the read completion boundary is 64 or 128 bytes, not {rcb}")
        for name, size in (("mps", mps), ("mrrs", mrrs)):
            if size not in (128, 256, 512, 1024, 2048, 4096):
                raise ValueError(f"{name} must be 128 << code (128 .. 4096), not {size}")
        self.layout, self.width = layout, width
        self.memory = memory if memory is not None else HostMemory()
        self.rng = rng or random.Random(0)
        self.mps, self.mrrs, self.rcb = mps, mrrs, rcb
        self.split_on_all_rcb = split_on_all_rcb
        self.tags = tags
        self.requester_id, self.completer_id = requester_id, completer_id
        self.delay = delay
        self.req_ready, self.cpl_valid = req_ready, cpl_valid
        self.ur_rate, self.ca_rate, self.drop_rate = ur_rate, ca_rate, drop_rate
        self.malformed_rate = malformed_rate
        self.timeout = timeout
        self.largest_completions = largest_completions
        self.reorder = reorder
        self.poison_rate = poison_rate
        self.header_dw = header_dw
        self.bus_master = True
        self.cycle = 0
        self.outstanding: dict[int, _Read] = {}
        self.max_outstanding = 0
        self.stats = _Stats()
        self.injected: deque[list[int]] = deque()  # raw completions to send first
        self._offered = None  # cycle the TLP being received was first offered

    def testbenches(self, req=None, cpl=None) -> list:
        """Async testbench functions serving ``req`` (the device's ``req_out``) and driving
        ``cpl`` (its ``cpl_in``); add them with ``background=True``."""
        benches = []
        if req is not None:
            async def serve_requests(ctx):
                await self.requests(ctx, req)
            benches.append(serve_requests)
        if cpl is not None:
            async def send_completions(ctx):
                await self.completions(ctx, cpl)
            benches.append(send_completions)
        return benches

    # -- requests (device → host) ------------------------------------------------------------

    async def requests(self, ctx, stream):
        """Consume ``req_out``: run as a background testbench."""
        payload = stream.payload.as_value()
        lanes = self.width // 32
        credit = 0
        beats: list[dict] = []
        while True:
            if self.header_dw is not None:
                credit = min(credit + lanes, lanes + self.header_dw)
            ready = self.rng.random() < self.req_ready and credit >= 0
            ctx.set(stream.ready, ready)
            _, _, valid, raw = await ctx.tick().sample(stream.valid, payload)
            self.cycle += 1
            if valid and not beats and self._offered is None:
                self._offered = self.cycle  # the requester had this TLP ready from here on
            if not (valid and ready):
                continue
            beat = unpack(self.layout, raw)
            if self.header_dw is not None:
                credit -= bin(beat["strb"]).count("1") + (self.header_dw if beat["sop"] else 0)
            if beat["sop"] != (not beats):
                raise ProtocolError(f"TLP framing: sop={beat['sop']} after {len(beats)} beats")
            beats.append(beat)
            if beat["eop"]:
                self._request(beats)
                beats = []
                self._offered = None

    def _request(self, beats):
        hdr = beats[0]["hdr"]
        dw0 = HEADER_DW0.unpack(hdr & 0xFFFF_FFFF)
        dw1 = REQUEST_DW1.unpack((hdr >> 32) & 0xFFFF_FFFF)
        kind = dw0["kind"]
        if not self.bus_master:
            raise ProtocolError(f"{kind!r} request while Bus Master Enable is 0")
        if kind in (TlpKind.MRD32, TlpKind.MWR32):
            addr = (hdr >> 64) & 0xFFFF_FFFC
        elif kind in (TlpKind.MRD64, TlpKind.MWR64):
            addr = (((hdr >> 64) & 0xFFFF_FFFF) << 32) | ((hdr >> 96) & 0xFFFF_FFFC)
            if addr < 1 << 32:
                raise ProtocolError(f"64-bit address format for {addr:#x} below 4 GiB "
                                    "(§2.2.4.1: requesters must use the 32-bit format)")
        else:
            raise ProtocolError(f"unexpected request kind {kind!r}")
        if hdr >> (64 if kind in (TlpKind.MRD32, TlpKind.MWR32) else 96) >> 32:
            raise ProtocolError("reserved header bits set")
        length = dw0["length"] or 1024
        first_be, last_be = dw1["first_be"], dw1["last_be"]
        if dw1["requester_id"] != self.requester_id:
            raise ProtocolError(f"requester ID {dw1['requester_id']:#06x}, "
                                f"expected {self.requester_id:#06x}")
        # §2.2.5: one-dword requests have Last DW BE 0; longer ones contiguous, non-zero BEs.
        if length == 1:
            if last_be != 0 or first_be == 0 or not _contiguous(first_be):
                raise ProtocolError(f"1-DW request with first_be={first_be:#x} "
                                    f"last_be={last_be:#x}")
        else:
            if not (_contiguous(first_be) and first_be & 8 and _contiguous(last_be)
                    and last_be & 1):
                raise ProtocolError(f"{length}-DW request with non-contiguous byte enables "
                                    f"first_be={first_be:#x} last_be={last_be:#x}")
        start, end = _byte_range(addr >> 2, length, first_be, last_be)
        # §2.2.7: a request must not cross a 4 KiB boundary.
        if (addr >> 12) != ((addr + 4 * length - 1) >> 12):
            raise ProtocolError(f"request at {addr:#x} of {length} DW crosses 4 KiB")
        strobed = sum(bin(b["strb"]).count("1") for b in beats)
        if kind in (TlpKind.MRD32, TlpKind.MRD64):
            if strobed:
                raise ProtocolError("memory read with a payload")
            if 4 * length > self.mrrs:
                raise ProtocolError(f"read of {4 * length} bytes exceeds MRRS {self.mrrs}")
            tag = dw1["tag"]
            if tag >= self.tags:
                raise ProtocolError(f"tag {tag} outside the device's {self.tags} tags")
            old = self.outstanding.get(tag)
            if old is not None:
                # A request that is never answered may be given up after the requester's
                # completion timeout (§2.8); reusing its tag earlier is an error.
                if not (old.dropped and self.timeout is not None
                        and self.cycle - old.issued >= self.timeout):
                    raise ProtocolError(f"tag {tag} reused before its last completion")
                del self.outstanding[tag]
            self._start_read(tag, start, end)
        else:
            if 4 * length > self.mps:
                raise ProtocolError(f"write of {4 * length} bytes exceeds MPS {self.mps}")
            if strobed != length:
                raise ProtocolError(f"write header says {length} DW, payload has {strobed}")
            for b in beats[:-1]:
                if b["strb"] != (1 << (self.width // 32)) - 1:
                    raise ProtocolError("a write's payload beat other than the last is partial")
            wb = self.width // 8
            payload = b"".join(b["data"].to_bytes(wb, "little")[:4 * bin(b["strb"]).count("1")]
                               for b in beats)
            data = payload[start - addr:end - addr]
            self.memory.write(start, data)
            self.stats.writes += 1
            self.stats.write_bytes += len(data)
            self.stats.write_log.append((start, data))

    def _start_read(self, tag, start, end):
        due = self.cycle + self.rng.randint(*self.delay)
        read = _Read(tag, start, end, due, issued=self._offered)
        roll = self.rng.random()
        if roll < self.drop_rate:
            read.dropped = True
            self.stats.dropped += 1
        elif roll < self.drop_rate + self.ur_rate + self.ca_rate:
            read.error = (CompletionStatus.UR if roll < self.drop_rate + self.ur_rate
                          else CompletionStatus.CA)
            # The error may come after some successful completions (at an RCB boundary).
            blocks = (end - (start & ~(self.rcb - 1)) + self.rcb - 1) // self.rcb
            cut = self.rng.randrange(blocks)
            read.error_at = start if cut == 0 else (start & ~(self.rcb - 1)) + cut * self.rcb
        self.outstanding[tag] = read
        self.max_outstanding = max(self.max_outstanding, len(self.outstanding))
        self.stats.reads += 1

    # -- completions (host → device) ---------------------------------------------------------

    def inject(self, hdr: int, payload: bytes = b""):
        """Send a raw completion (e.g. a malformed one) before any other."""
        self.injected.append(tlp_beats(self.layout, self.width, hdr, payload))

    def completion_header(self, *, tag, status, byte_count, lower_address, length_dw,
                          with_data=True, poisoned=False) -> int:
        kind = TlpKind.CPLD if with_data else TlpKind.CPL
        dw0 = HEADER_DW0.pack(length=length_dw & 0x3FF, kind=kind, ep=poisoned)
        dw1 = COMPLETION_DW1.pack(byte_count=byte_count & 0xFFF, status=status,
                                  completer_id=self.completer_id)
        dw2 = COMPLETION_DW2.pack(lower_address=lower_address & 0x7F, tag=tag,
                                  requester_id=self.requester_id)
        return dw0 | dw1 << 32 | dw2 << 64

    def _next_completion(self) -> list[int] | None:
        if self.injected:
            return self.injected.popleft()
        due = [r for r in self.outstanding.values() if r.due <= self.cycle and not r.dropped]
        if not due:
            return None
        if self.rng.random() < self.reorder:
            read = self.rng.choice(due)
        else:  # the oldest request first, as a memory controller mostly answers
            read = min(due, key=lambda r: r.issued)
        addr = read.start + read.sent
        remaining = read.end - addr
        if read.error is not None and addr >= read.error_at:
            del self.outstanding[read.tag]
            self.stats.errors_sent += 1
            return tlp_beats(self.layout, self.width, self.completion_header(
                tag=read.tag, status=read.error, byte_count=remaining, lower_address=addr,
                length_dw=0, with_data=False))
        # A completion ends at an RCB boundary or at the end of the request (§2.3.1.1), and
        # carries at most MPS bytes.
        boundary = (addr // self.rcb + 1) * self.rcb
        if not self.split_on_all_rcb:
            limit = min(read.end, (addr & ~3) + self.mps)
            choices = [b for b in range(boundary, limit + 1, self.rcb)] or [boundary]
            boundary = choices[-1] if self.largest_completions else self.rng.choice(choices)
        stop = min(read.end, boundary)
        if read.error is not None and read.error_at > addr:
            stop = min(stop, read.error_at)
        first_dw, end_dw = addr & ~3, (stop + 3) & ~3
        data = bytearray(self.rng.randbytes(end_dw - first_dw))  # bytes outside: garbage
        data[addr - first_dw:stop - first_dw] = self.memory.read(addr, stop - addr)
        if self.rng.random() < self.malformed_rate:
            # An extra completion whose Byte Count is wrong: the requester must discard it.
            self.stats.malformed_sent += 1
            hdr = self.completion_header(tag=read.tag, status=CompletionStatus.SC,
                                         byte_count=remaining + 4, lower_address=addr,
                                         length_dw=(end_dw - first_dw) // 4)
            return tlp_beats(self.layout, self.width, hdr, bytes(data))
        poisoned = self.rng.random() < self.poison_rate
        self.stats.poisoned_sent += poisoned
        hdr = self.completion_header(tag=read.tag, status=CompletionStatus.SC,
                                     byte_count=remaining, lower_address=addr,
                                     length_dw=(end_dw - first_dw) // 4, poisoned=poisoned)
        read.sent += stop - addr
        read.due = self.cycle + self.rng.randint(0, 3)
        if read.sent == read.end - read.start:
            del self.outstanding[read.tag]
        self.stats.completions += 1
        self.stats.read_bytes += stop - addr
        return tlp_beats(self.layout, self.width, hdr, bytes(data))

    async def completions(self, ctx, stream):
        """Produce ``cpl_in``: run as a background testbench."""
        payload = stream.payload.as_value()
        lanes = self.width // 32
        credit = 0
        beats: deque[int] = deque()
        while True:
            if self.header_dw is not None:
                credit = min(credit + lanes, lanes + self.header_dw)
            if not beats:
                beats.extend(self._next_completion() or ())
            offer = bool(beats) and credit >= 0 and self.rng.random() < self.cpl_valid
            ctx.set(stream.valid, offer)
            if offer:
                ctx.set(payload, beats[0])
            _, _, ready = await ctx.tick().sample(stream.ready)
            if offer and ready:
                beat = unpack(self.layout, beats.popleft())
                if self.stats.first_completion_cycle is None:
                    self.stats.first_completion_cycle = self.cycle
                self.stats.last_completion_cycle = self.cycle
                if self.header_dw is not None:
                    credit -= bin(beat["strb"]).count("1") + (self.header_dw if beat["sop"] else 0)
