"""cocotb harness of the device core: clock, reset, Ethernet peers, host queues, register bus.

The peers on the Ethernet side are cocotbext-eth's GMII (1G) or XGMII (10G) sources and sinks;
the host side is modelled beat by beat in one coroutine per direction (one Python wake-up per
cycle for all queues, not one per queue). The registers are driven by the real host driver,
`partner.device_control.DeviceControl`, running synchronously in a thread (`cocotb.task.bridge`)
over a `RegisterBus` whose accesses are coroutines resumed in the simulator
(`cocotb.task.resume`): the code that programs a board is the code that programs the simulation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time
from cocotbext.eth import GmiiFrame, GmiiSink, GmiiSource, XgmiiFrame, XgmiiSink, XgmiiSource

from partner.device_control import DeviceControl
from partner.formats import ACTION, EVENT, FRAME_META
from partner.hdl.core_csr import CSR_READ_LATENCY

__all__ = ["CsrMaster", "DeviceHarness", "HostFrame", "SimRegisterBus"]

CLOCK_NS = {1: 8.0, 8: 6.4}  # 125 MHz for GMII, 156.25 MHz for XGMII


class CsrMaster:
    """Word reads and writes on the core's CSR bus, one at a time, with an idle cycle after;
    read data is taken `CSR_READ_LATENCY` cycles after the strobe."""

    def __init__(self, dut):
        self.dut = dut
        self.lock = cocotb.triggers.Lock()
        dut.csr__r_stb.value = 0
        dut.csr__w_stb.value = 0

    async def read(self, offset: int) -> int:
        dut = self.dut
        async with self.lock:
            dut.csr__addr.value = offset // 4
            dut.csr__r_stb.value = 1
            await RisingEdge(dut.clk)
            dut.csr__r_stb.value = 0
            for _ in range(CSR_READ_LATENCY - 1):
                await RisingEdge(dut.clk)
            await ReadOnly()
            value = int(dut.csr__r_data.value)
            await RisingEdge(dut.clk)
            return value

    async def write(self, offset: int, value: int) -> None:
        dut = self.dut
        async with self.lock:
            dut.csr__addr.value = offset // 4
            dut.csr__w_data.value = value
            dut.csr__w_stb.value = 1
            await RisingEdge(dut.clk)
            dut.csr__w_stb.value = 0
            await RisingEdge(dut.clk)


class SimRegisterBus:
    """The synchronous `RegisterBus` of the host driver, backed by a `CsrMaster`.

    Call it only from a thread started with `cocotb.task.bridge`.
    """

    def __init__(self, csr: CsrMaster):
        self.csr = csr

    def read32(self, offset: int) -> int:
        return resume(self.csr.read)(offset)

    def write32(self, offset: int, value: int) -> None:
        resume(self.csr.write)(offset, value)


@dataclass
class HostFrame:
    """A frame delivered to a host queue, with its metadata decoded."""

    queue: int
    data: bytes
    meta: dict
    action: dict
    cycle: int
    time: int  # simulator steps at delivery of the last beat


@dataclass
class _Queue:
    frames: list = field(default_factory=list)
    beats: bytearray = field(default_factory=bytearray)


class DeviceHarness:
    """Everything around one `DeviceCore` DUT built with `ports`, `width_bytes` and `queues`."""

    def __init__(self, dut, *, ports: int, width_bytes: int, queues: int, seed: int = 1):
        self.dut = dut
        self.ports = ports
        self.width = width_bytes
        self.queues = queues
        self.rng = random.Random(seed)
        self.csr = CsrMaster(dut)
        self.cycle = 0
        self.rx_ready_probability = 1.0
        self.host_queues = [_Queue() for _ in range(queues + 1)]
        self.events = []
        self.sources, self.sinks = [], []
        for p in range(ports):
            if width_bytes == 1:
                self.sources.append(GmiiSource(getattr(dut, f"phy_rx__{p}__rxd"),
                                               getattr(dut, f"phy_rx__{p}__rx_er"),
                                               getattr(dut, f"phy_rx__{p}__rx_dv"),
                                               dut.clk, dut.rst))
                self.sinks.append(GmiiSink(getattr(dut, f"phy_tx__{p}__txd"),
                                           getattr(dut, f"phy_tx__{p}__tx_er"),
                                           getattr(dut, f"phy_tx__{p}__tx_en"),
                                           dut.clk, dut.rst))
            else:
                source = XgmiiSource(getattr(dut, f"phy_rx__{p}__rxd"),
                                     getattr(dut, f"phy_rx__{p}__rxc"), dut.clk, dut.rst)
                source.enable_dic = True  # average gap 12 bytes: the wire's full rate
                self.sources.append(source)
                self.sinks.append(XgmiiSink(getattr(dut, f"phy_tx__{p}__txd"),
                                            getattr(dut, f"phy_tx__{p}__txc"),
                                            dut.clk, dut.rst))
        beat_bits = 8 * width_bytes
        self._beat_bits = beat_bits
        self._nbytes_bits = width_bytes.bit_length()
        self._meta_offset = beat_bits + self._nbytes_bits + 2

    # --- bring-up -------------------------------------------------------------------------------

    async def start(self) -> DeviceControl:
        """Start the clock, reset the core, and return the host driver bound to it."""
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS[self.width], unit="ns").start())
        dut.tx__valid.value = 0
        dut.events__ready.value = 1
        for q in range(self.queues + 1):
            getattr(dut, f"rx__{q}__ready").value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 8)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 4)
        cocotb.start_soon(self._host_side())
        return await bridge(DeviceControl)(SimRegisterBus(self.csr))

    async def control(self, function, *args, **kwargs):
        """Run a synchronous host-driver call (anything using DeviceControl) from a testbench."""
        return await bridge(function)(*args, **kwargs)

    # --- Ethernet side ---------------------------------------------------------------------------

    async def send(self, port: int, frame: bytes):
        """Queue a frame (without FCS) for the wire into `port`; the source adds preamble/FCS.

        Returns the source's frame object, whose `sim_time_*` fields say when it was on the wire.
        """
        cls = GmiiFrame if self.width == 1 else XgmiiFrame
        wire_frame = cls.from_payload(frame)
        await self.sources[port].send(wire_frame)
        return wire_frame

    def transmitted(self, port: int) -> list[bytes]:
        """Frames the core has sent out of `port` so far (FCS checked and stripped)."""
        frames = []
        sink = self.sinks[port]
        while not sink.empty():
            frame = sink.recv_nowait()
            if not frame.check_fcs():
                raise AssertionError(f"port {port} sent a frame with a bad FCS")
            frames.append(bytes(frame.get_payload()))
        return frames

    # --- host side -------------------------------------------------------------------------------

    async def _host_side(self):
        dut = self.dut
        readies = [getattr(dut, f"rx__{q}__ready") for q in range(self.queues + 1)]
        valids = [getattr(dut, f"rx__{q}__valid") for q in range(self.queues + 1)]
        payloads = [getattr(dut, f"rx__{q}__payload") for q in range(self.queues + 1)]
        # Drive in the cycle, sample in its read-only phase (the values the edge will take),
        # then step to the edge.
        while True:
            chosen = [self.rx_ready_probability >= 1 or self.rng.random() <
                      self.rx_ready_probability for _ in readies]
            for ready, value in zip(readies, chosen, strict=True):
                ready.value = int(value)
            await ReadOnly()
            for q, (valid, payload, ready) in enumerate(zip(valids, payloads, chosen,
                                                            strict=True)):
                if ready and valid.value:
                    self._take_beat(q, int(payload.value))
            if dut.events__valid.value:
                self.events.append(EVENT.unpack(int(dut.events__payload.value)))
            await RisingEdge(dut.clk)
            self.cycle += 1

    def _take_beat(self, q: int, word: int) -> None:
        width = self.width
        data = word & ((1 << self._beat_bits) - 1)
        nbytes = (word >> self._beat_bits) & ((1 << self._nbytes_bits) - 1)
        last = (word >> (self._beat_bits + self._nbytes_bits + 1)) & 1
        queue = self.host_queues[q]
        queue.beats += data.to_bytes(width, "little")[:nbytes]
        if last:
            meta = FRAME_META.unpack(word >> self._meta_offset)
            action = ACTION.unpack(meta["action"])
            queue.frames.append(HostFrame(q, bytes(queue.beats), meta, action, self.cycle,
                                          get_sim_time()))
            queue.beats = bytearray()

    def received(self, queue: int) -> list[HostFrame]:
        """Frames delivered to host queue `queue` so far (and forgets them)."""
        frames, self.host_queues[queue].frames = self.host_queues[queue].frames, []
        return frames

    async def host_send(self, frame: bytes, *, port: int, flow: int) -> None:
        """The host pushes a frame (no FCS) for TX flow `flow` out of `port`."""
        dut, width = self.dut, self.width
        beats = [frame[i:i + width] for i in range(0, len(frame), width)]
        base_bits = self._beat_bits + self._nbytes_bits + 2
        for index, chunk in enumerate(beats):
            word = int.from_bytes(chunk.ljust(width, b"\0"), "little")
            word |= len(chunk) << self._beat_bits
            word |= int(index == 0) << (self._beat_bits + self._nbytes_bits)
            word |= int(index == len(beats) - 1) << (self._beat_bits + self._nbytes_bits + 1)
            word |= port << base_bits
            word |= flow << (base_bits + 3)
            word |= len(frame) << (base_bits + 12)
            dut.tx__payload.value = word
            dut.tx__valid.value = 1
            while True:
                await ReadOnly()
                taken = bool(dut.tx__ready.value)
                await RisingEdge(dut.clk)
                if taken:
                    break
        dut.tx__valid.value = 0

    async def idle(self, cycles: int) -> None:
        await ClockCycles(self.dut.clk, cycles)
