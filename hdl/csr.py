# CSR bus and a register bank generated from a `partner.wire.RegisterMap`: the one definition of
# the register map drives the address decoder here, the host driver's accessors and
# docs/registers.md.
"""Control and status registers.

The bus is deliberately small: every host adapter (a PCIe BAR, the byte-stream link, a cocotb
testbench) turns its accesses into 32-bit word reads and writes.

``CSRBus(addr_width)`` — driven by the host adapter (the initiator):

``addr``    word address (byte offset / 4)
``r_stb``   read request; ``r_data`` is valid in the next cycle
``w_stb``   write request of ``w_data`` to ``addr``
``r_data``  read data, one cycle after ``r_stb``

``RegisterBank(regmap)`` implements the map. Per register (arrays have one element per entry):

- ``RO``: an input ``<name>`` the design drives; reads return it.
- ``RW``: an output ``<name>`` holding the last value written (reset value from the map).
- ``WO``: an output ``<name>`` with the written value and a one-cycle strobe ``<name>_stb``.
- ``RC``: an input ``<name>_set`` of sticky bits; reads return the accumulated bits and clear
  them (a bit set in the cycle of the read is kept for the next read, never lost).

Writes to read-only registers and accesses outside the map are ignored and flagged on
``bad_access`` (a one-cycle strobe the design can make sticky in a status register).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from partner.wire import Access, RegisterMap

__all__ = ["CSRBus", "RegisterBank"]


class CSRBus(wiring.Signature):
    """A word-addressed 32-bit register bus, seen from the initiator."""

    def __init__(self, addr_width: int):
        self.addr_width = addr_width
        super().__init__({
            "addr": Out(addr_width),
            "r_stb": Out(1),
            "r_data": In(32),
            "w_stb": Out(1),
            "w_data": Out(32),
        })

    def __eq__(self, other):
        return isinstance(other, CSRBus) and other.addr_width == self.addr_width

    def __hash__(self):
        return hash(("CSRBus", self.addr_width))

    def __repr__(self):
        return f"CSRBus({self.addr_width})"


def _member(shape, count):
    return shape if count == 1 else shape.array(count)


class RegisterBank(wiring.Component):
    """The registers of `regmap` behind a `CSRBus` target port named ``bus``."""

    def __init__(self, regmap: RegisterMap):
        self.regmap = regmap
        self.addr_width = max(1, (regmap.size // 4 - 1).bit_length())
        members = {"bus": In(CSRBus(self.addr_width)), "bad_access": Out(1)}
        for reg in regmap:
            if reg.access is Access.RO:
                members[reg.name] = _member(In(32), reg.count)
            elif reg.access is Access.RW:
                members[reg.name] = _member(Out(32, init=reg.reset), reg.count)
            elif reg.access is Access.WO:
                members[reg.name] = _member(Out(32), reg.count)
                members[f"{reg.name}_stb"] = _member(Out(1), reg.count)
            elif reg.access is Access.RC:
                members[f"{reg.name}_set"] = _member(In(32), reg.count)
        super().__init__(members)

    def _entries(self, reg, suffix=""):
        member = getattr(self, reg.name + suffix)
        return [member] if reg.count == 1 else [member[i] for i in range(reg.count)]

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        r_data = Signal(32)
        m.d.comb += bus.r_data.eq(r_data)
        m.d.sync += r_data.eq(0)

        sticky = {}
        for reg in self.regmap:
            if reg.access is Access.WO:
                for stb in self._entries(reg, "_stb"):
                    m.d.sync += stb.eq(0)
            if reg.access is Access.RC:
                bits = [Signal(32, name=f"{reg.name}_bits_{i}") for i in range(reg.count)]
                sticky[reg.name] = bits
                for bit, source in zip(bits, self._entries(reg, "_set"), strict=True):
                    m.d.sync += bit.eq(bit | source)

        known = Signal()
        writable = Signal()
        with m.Switch(bus.addr):
            for reg in self.regmap:
                for index in range(reg.count):
                    with m.Case(reg.address(index) // 4):
                        m.d.comb += known.eq(1)
                        self._decode(m, reg, index, r_data, sticky, writable)
        m.d.comb += self.bad_access.eq(
            (bus.r_stb & ~known) | (bus.w_stb & ~(known & writable))
        )
        return m

    def _decode(self, m, reg, index, r_data, sticky, writable):
        bus = self.bus
        if reg.access is Access.RO:
            with m.If(bus.r_stb):
                m.d.sync += r_data.eq(self._entries(reg)[index])
        elif reg.access is Access.RW:
            m.d.comb += writable.eq(1)
            value = self._entries(reg)[index]
            with m.If(bus.r_stb):
                m.d.sync += r_data.eq(value)
            with m.If(bus.w_stb):
                m.d.sync += value.eq(bus.w_data)
        elif reg.access is Access.WO:
            m.d.comb += writable.eq(1)
            with m.If(bus.w_stb):
                m.d.sync += [
                    self._entries(reg)[index].eq(bus.w_data),
                    self._entries(reg, "_stb")[index].eq(1),
                ]
        elif reg.access is Access.RC:
            bits = sticky[reg.name][index]
            source = self._entries(reg, "_set")[index]
            with m.If(bus.r_stb):
                m.d.sync += [r_data.eq(bits), bits.eq(source)]

