"""cocotb adapter joining the gateware's TLP streams to cocotbext-pcie's root complex.

`PcieAdapter` is a cocotbext-pcie `Device` with one `PartnerFunction`: an endpoint with BAR0
(16 KiB, 64-bit, the windows of `partner.pcie.bar`) and an MSI-X capability whose table and PBA
live in BAR0, in the gateware. Configuration space is served by cocotbext-pcie, as for its
hard-IP models; the adapter drives the DUT's `EndpointConfig` inputs from it (ID after
enumeration, Max_Payload_Size, Max_Read_Request_Size, Bus Master Enable, MSI-X Enable and
Function Mask).

Data path, named from the device (`partner.hdl.pcie.tlp`):

- memory and I/O requests from the root complex that hit a BAR → ``req_in`` beats (with the BAR);
- completions for the device's requests → ``cpl_in``;
- ``cpl_out`` and ``req_out`` beats → TLPs sent upstream, in the order their last beats left the
  DUT.

The root complex does not check what a device sends, so `TlpChecker` does, and a violation fails
the test with `PcieRuleError` naming the rule and the spec section: beat framing (sop/eop,
packed strobes, length field against the payload), header fields (requester and completer IDs,
reserved DW3 of 3-dword headers, the 32-bit format below 4 GiB), byte enables (§2.2.5),
Max_Payload_Size, Max_Read_Request_Size, 4 KiB crossings (§2.2.7), tag uniqueness and the tag
limit (32, or 256 with Extended Tag Field Enable; §2.2.6.2), Bus Master Enable before any request
(§7.5.1.1), MSI-X writes only while enabled and unmasked, and every completion's status, byte
count, lower address, length and Read Completion Boundary (§2.2.9, §2.3.1.1).

Random backpressure: ``valid_probability`` (gaps between beats the adapter drives) and
``ready_probability`` (ready of the streams it receives), from a seeded `random.Random`; both can
change while the test runs. ``inject_completion_errors`` answers the device's next read requests
with UR or CA completions, or with none, instead of forwarding them, to test the device's error
paths.
"""

from __future__ import annotations

import logging
import random
from collections import deque

import cocotb
from cocotb.queue import Queue
from cocotb.triggers import Event, ReadOnly, RisingEdge
from cocotbext.pcie.core import Device, Endpoint
from cocotbext.pcie.core.caps import MsixCapability
from cocotbext.pcie.core.tlp import CplStatus, Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId

from partner.pcie.bar import BAR0, BAR0_SIZE, MSIX_MAX_VECTORS

from .pcie_rules import (
    PcieRuleError,
    TlpChecker,
    TlpImage,
    beats_from_tlp,
    read_byte_count,
    tlp_from_beats,
    to_cocotb_tlp,
    unpack_beat,
)

__all__ = [
    "DEVICE_ID",
    "VENDOR_ID",
    "PartnerFunction",
    "PcieAdapter",
    "PcieRuleError",
    "TlpChecker",
    "TlpImage",
    "beats_from_tlp",
    "tlp_from_beats",
]

VENDOR_ID = 0x1234  # the simulated function's IDs; SimPcieBus looks the device up by them
DEVICE_ID = 0x5054

# --- the function and the device -------------------------------------------------------------


class PartnerFunction(Endpoint):
    """The endpoint's configuration space: BAR0 and MSI-X as the gateware implements them.

    ``extra_bars`` are (index, size, io) BARs the gateware does *not* implement, to test that
    requests to them are refused.
    """

    def __init__(self, *, msix_vectors: int, max_payload_size: int = 512,
                 extended_tags: bool = False, extra_bars=()):
        super().__init__()
        if not 1 <= msix_vectors <= MSIX_MAX_VECTORS:
            raise ValueError(f"msix_vectors must be 1..{MSIX_MAX_VECTORS}, not {msix_vectors}")
        if max_payload_size not in (128, 256, 512, 1024, 2048, 4096):
            raise ValueError(f"max_payload_size {max_payload_size} is not a PCIe size")
        self.vendor_id = VENDOR_ID
        self.device_id = DEVICE_ID
        self.class_code = 0x020000  # network controller, Ethernet
        self.configure_bar(0, BAR0_SIZE, ext=True)
        for index, size, io in extra_bars:
            if index < 2:
                raise ValueError("BAR0 and BAR1 hold the 64-bit BAR0")
            self.configure_bar(index, size, io=io)
        self.msix_cap = MsixCapability()
        self.msix_cap.msix_table_size = msix_vectors - 1  # the field is N - 1 (§7.7.2)
        self.msix_cap.msix_table_bar_indicator_register = 0
        self.msix_cap.msix_table_offset = BAR0.msix_table.offset
        self.msix_cap.msix_pba_bar_indicator_register = 0
        self.msix_cap.msix_pba_offset = BAR0.msix_pba.offset
        self.register_capability(self.msix_cap)
        self.pcie_cap.max_payload_size_supported = (max_payload_size // 128).bit_length() - 1
        self.pcie_cap.extended_tag_supported = extended_tags


class _Inbound:
    """One stream the adapter drives into the DUT (``req_in``, ``cpl_in``)."""

    def __init__(self, dut, name):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.beats: deque = deque()  # (word, tlp or None on the last beat)
        self.driving = False
        self.valid.value = 0


class _Outbound:
    """One stream the adapter takes from the DUT (``req_out``, ``cpl_out``)."""

    def __init__(self, dut, name):
        self.name = name
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.beats: list = []
        self.ready.value = 0


class PcieAdapter(Device):
    """The DUT's four TLP streams and `EndpointConfig` inputs, as a device on a root complex.

    Streams and config are found on ``dut`` by name (``req_in__valid``, ``config__id``, ...);
    a DUT without ``req_out``/``cpl_in`` (no DMA) is fine. Connect with
    ``rc.make_port().connect(adapter)`` before ``rc.enumerate()``.
    """

    def __init__(self, dut, *, width: int, clock, msix_vectors: int, seed: int = 1,
                 valid_probability: float = 1.0, ready_probability: float = 1.0,
                 max_payload_size: int = 512, extended_tags: bool = False, extra_bars=(),
                 raise_violations: bool = True):
        super().__init__()
        self.log = logging.getLogger("cocotb.pcie.PcieAdapter")
        self.dut = dut
        self.width = width
        self.clock = clock
        self.rng = random.Random(seed)
        self.valid_probability = valid_probability
        self.ready_probability = ready_probability
        self.function = PartnerFunction(msix_vectors=msix_vectors,
                                        max_payload_size=max_payload_size,
                                        extended_tags=extended_tags, extra_bars=extra_bars)
        self.append_function(self.function)
        self.rc = None  # set by `attach`
        self.checker = TlpChecker(self.function, is_msi_address=self._is_msi_address)
        self.inbound = {name: _Inbound(dut, name) for name in ("req_in", "cpl_in")
                        if hasattr(dut, f"{name}__valid")}
        self.outbound = {name: _Outbound(dut, name) for name in ("req_out", "cpl_out")
                         if hasattr(dut, f"{name}__valid")}
        self._config = {name: getattr(dut, f"config__{name}") for name in
                        ("id", "max_payload", "max_read_request", "bus_master", "msix_enable",
                         "msix_mask")}
        self._config_values = None
        self._upstream: Queue = Queue()
        self._injections: deque = deque()
        self.cycle = 0
        #: True: a violation raises in the adapter's task and so fails the running test.
        #: False: it is only recorded (`error`, `violation`), for tests that provoke one.
        self.raise_violations = raise_violations
        self.error: PcieRuleError | None = None
        self.violation = Event()
        self._drive_config()
        cocotb.start_soon(self._run())
        cocotb.start_soon(self._send_upstream())

    def attach(self, rc) -> None:
        """Connect to a root complex (a new root port of ``rc``)."""
        self.rc = rc
        rc.make_port().connect(self)

    def _is_msi_address(self, address: int) -> bool:
        if self.rc is None:
            return False
        region = self.rc.msi_region
        base = region.get_absolute_address(0)
        return base <= address < base + region.size

    def inject_completion_errors(self, status: CplStatus | None, count: int = 1) -> None:
        """Answer the device's next ``count`` memory reads with ``status`` (UR or CA), or with
        nothing at all (``None``: the device's completion timeout must fire).

        A read left unanswered frees its tag at once: the adapter cannot know the device's
        completion timeout, after which the tag may be reused.
        """
        if status not in (CplStatus.UR, CplStatus.CA, None):
            raise ValueError(f"inject UR or CA completions, or None for none, not {status!r}")
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        self._injections.extend([status] * count)

    def check(self) -> None:
        """Raise the first rule violation seen."""
        if self.error is not None:
            raise self.error

    # -- from the root complex --

    async def upstream_recv(self, tlp):
        self.log.debug("from the root complex: %r", tlp)
        f = self.function
        if tlp.fmt_type in (TlpType.CFG_READ_0, TlpType.CFG_WRITE_0):
            # The Device captures the bus number and the function serves its config space.
            await super().upstream_recv(tlp)
            self._drive_config()
            return
        if tlp.is_completion():
            tlp.release_fc()
            if tlp.requester_id != f.pcie_id or "cpl_in" not in self.inbound:
                self.log.warning("completion for someone else, dropped: %r", tlp)
                return
            self._queue("cpl_in", tlp, 0)
            return
        io = tlp.fmt_type in (TlpType.IO_READ, TlpType.IO_WRITE)
        if tlp.fmt_type in (TlpType.MEM_READ, TlpType.MEM_READ_64, TlpType.MEM_WRITE,
                            TlpType.MEM_WRITE_64) or io:
            bar = f.match_bar(tlp.address, io)
            if bar is not None:
                tlp.release_fc()
                self.checker.host_request(tlp)
                self._queue("req_in", tlp, bar[0])
                return
        # Not for a BAR of ours (or a type the stream never carries): the Device's default
        # handling answers UR for non-posted requests.
        await super().upstream_recv(tlp)

    def _queue(self, name: str, tlp, bar: int) -> None:
        beats = beats_from_tlp(tlp, self.width, bar)
        stream = self.inbound[name]
        for n, word in enumerate(beats):
            stream.beats.append((word, tlp if n == len(beats) - 1 else None))

    # -- the per-cycle loop --

    def _drive_config(self) -> None:
        f = self.function
        values = (int(f.pcie_id), f.pcie_cap.max_payload_size, f.pcie_cap.max_read_request_size,
                  int(f.bus_master_enable), int(f.msix_cap.msix_enable),
                  int(f.msix_cap.msix_function_mask))
        if values != self._config_values:
            self._config_values = values
            for signal, value in zip(self._config.values(), values, strict=True):
                signal.value = value

    async def _run(self):
        clock_edge = RisingEdge(self.clock)
        read_only = ReadOnly()
        rng = self.rng
        while True:
            self._drive_config()
            for stream in self.inbound.values():
                if not stream.driving and stream.beats and (
                        self.valid_probability >= 1 or rng.random() < self.valid_probability):
                    stream.payload.value = stream.beats[0][0]
                    stream.valid.value = 1
                    stream.driving = True
            readies = {}
            for name, stream in self.outbound.items():
                ready = self.ready_probability >= 1 or rng.random() < self.ready_probability
                stream.ready.value = int(ready)
                readies[name] = ready
            await read_only
            taken_in = [s for s in self.inbound.values() if s.driving and s.ready.value]
            taken_out = [(name, int(s.payload.value)) for name, s in self.outbound.items()
                         if readies[name] and s.valid.value]
            await clock_edge
            self.cycle += 1
            for stream in taken_in:
                _, tlp = stream.beats.popleft()
                stream.driving = False
                stream.valid.value = 0
                if tlp is not None and stream is self.inbound.get("cpl_in"):
                    self.checker.completion_delivered(tlp)
            for name, word in taken_out:
                self._take(name, word)

    def _take(self, name: str, word: int) -> None:
        stream = self.outbound[name]
        beat = unpack_beat(word, self.width)
        stream.beats.append(beat)
        if not beat["eop"]:
            return
        beats, stream.beats = stream.beats, []
        try:
            image = tlp_from_beats(beats, self.width, name)
            if name == "cpl_out":
                self.checker.device_completion(image)
            else:
                self.checker.device_request(image)
        except PcieRuleError as error:
            self.log.error("%s", error)
            if self.error is None:
                self.error = error
                self.violation.set()
            if self.raise_violations:
                raise
            return  # the offending TLP goes no further
        tlp = to_cocotb_tlp(image)
        if name == "req_out" and tlp.fmt_type in (TlpType.MEM_READ, TlpType.MEM_READ_64) \
                and self._injections:
            status = self._injections.popleft()
            if status is None:
                self.log.info("injected: no completion for tag %d", tlp.tag)
                self.checker.device_reads.pop(tlp.tag, None)
            else:
                self._queue("cpl_in", self._error_completion(tlp, status), 0)
            return
        self._upstream.put_nowait(tlp)

    def _error_completion(self, req: Tlp, status: CplStatus) -> Tlp:
        cpl = Tlp.create_completion_for_tlp(req, PcieId(0, 0, 0), False, status)
        count, first = read_byte_count(req.address, req.length, req.first_be, req.last_be)
        cpl.byte_count = count % 4096
        cpl.lower_address = first & 0x7F
        return cpl

    async def _send_upstream(self):
        while True:
            tlp = await self._upstream.get()
            await self.send(tlp)
