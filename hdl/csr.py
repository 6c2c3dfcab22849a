# CSR bus and a register bank generated from a `partner.wire.RegisterMap`: the one definition of
# the register map drives the address decoder here, the host driver's accessors and
# docs/registers.md.
"""Control and status registers.

The bus is deliberately small: every host adapter (a PCIe BAR, the byte-stream link, a cocotb
testbench) turns its accesses into 32-bit word reads and writes.

``CSRBus(addr_width, read_latency=1)`` — driven by the host adapter (the initiator):

``addr``    word address (byte offset / 4)
``r_stb``   read request; ``r_data`` is valid ``read_latency`` cycles later
``w_stb``   write request of ``w_data`` to ``addr``
``r_data``  read data, ``read_latency`` (1, 2 or 3) cycles after ``r_stb``

An initiator makes one access at a time and waits for a read's data before the next access.
A target with ``read_latency`` 2 or 3 registers the request before it decodes it: the address
then comes from flip-flops next to its decoder rather than from wherever the initiator is. With
3 the read multiplexer is two levels with registers between them: each group of 16 words is
chosen first, next to the group's registers, and the group a cycle later.

``RegisterBank(regmap, read_latency=1)`` implements the map. Per register (arrays have one
element per entry):

- ``RO``: an input ``<name>`` the design drives; reads return it.
- ``RW``: an output ``<name>`` holding the last value written (reset value from the map).
- ``WO``: an output ``<name>`` with the written value and a one-cycle strobe ``<name>_stb``.
- ``RC``: an input ``<name>_set`` of sticky bits; reads return the accumulated bits and clear
  them (a bit set in the cycle of the read is kept for the next read, never lost).

Writes to read-only registers and accesses outside the map are ignored and flagged on
``bad_access`` (a one-cycle strobe the design can make sticky in a status register).
"""

from amaranth.hdl import Array, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from partner.wire import Access, RegisterMap

__all__ = ["CSRBus", "RegisterBank"]


class CSRBus(wiring.Signature):
    """A word-addressed 32-bit register bus, seen from the initiator."""

    def __init__(self, addr_width: int, read_latency: int = 1):
        if read_latency not in (1, 2, 3):
            raise ValueError(f"read_latency must be 1, 2 or 3, not {read_latency!r}")
        self.addr_width, self.read_latency = addr_width, read_latency
        super().__init__({
            "addr": Out(addr_width),
            "r_stb": Out(1),
            "r_data": In(32),
            "w_stb": Out(1),
            "w_data": Out(32),
        })

    def __eq__(self, other):
        return (isinstance(other, CSRBus) and other.addr_width == self.addr_width
                and other.read_latency == self.read_latency)

    def __hash__(self):
        return hash(("CSRBus", self.addr_width, self.read_latency))

    def __repr__(self):
        return f"CSRBus({self.addr_width}, read_latency={self.read_latency})"


_GROUP_BITS = 4  # read latency 3: words per first-level group, log2


def _member(shape, count):
    return shape if count == 1 else shape.array(count)


class RegisterBank(wiring.Component):
    """The registers of `regmap` behind a `CSRBus` target port named ``bus``."""

    def __init__(self, regmap: RegisterMap, *, read_latency: int = 1):
        self.regmap = regmap
        self.addr_width = max(1, (regmap.size // 4 - 1).bit_length())
        members = {"bus": In(CSRBus(self.addr_width, read_latency)), "bad_access": Out(1)}
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
        # The request as decoded: the bus itself, or (read latency 2, 3) the bus a cycle ago.
        # Writes then land a cycle later too, so accesses keep their order.
        latency = bus.signature.read_latency
        if latency >= 2:
            req = wiring.Signature({"addr": Out(self.addr_width), "r_stb": Out(1),
                                    "w_stb": Out(1), "w_data": Out(32)}).create()
            # Only the strobes have a reset (they qualify address and data).
            addr = Signal(self.addr_width, reset_less=True)
            w_data = Signal(32, reset_less=True)
            m.d.sync += [addr.eq(bus.addr), req.r_stb.eq(bus.r_stb),
                         req.w_stb.eq(bus.w_stb), w_data.eq(bus.w_data)]
            m.d.comb += [req.addr.eq(addr), req.w_data.eq(w_data)]
        else:
            req = bus

        # One table of what each word address reads, is written into, and whether it exists;
        # the read is one multiplexer over the readable words only (write-only and unmapped
        # words read 0), and each writable word decodes its own address.
        readable, known, writable = {}, [], []
        for reg in self.regmap:
            entries = self._entries(reg, "_set" if reg.access is Access.RC else "")
            for index, entry in enumerate(entries):
                addr = reg.address(index) // 4
                known.append(addr)
                hit = req.addr == addr
                if reg.access is Access.RO:
                    readable[addr] = entry
                elif reg.access is Access.RW:
                    readable[addr] = entry
                    writable.append(addr)
                    with m.If(req.w_stb & hit):
                        m.d.sync += entry.eq(req.w_data)
                elif reg.access is Access.WO:
                    writable.append(addr)
                    stb = self._entries(reg, "_stb")[index]
                    m.d.sync += stb.eq(req.w_stb & hit)
                    # Write-only words are not cleared by reset (nor are the flow table's
                    # rules): the host writes them before the strobe that uses them. That takes
                    # them off the reset net, 28 words for the staged flow rule alone.
                    held = Signal(32, name=f"{reg.name}_held_{index}", reset_less=True)
                    with m.If(req.w_stb & hit):
                        m.d.sync += held.eq(req.w_data)
                    m.d.comb += entry.eq(held)
                elif reg.access is Access.RC:
                    # Sticky bits: a read returns them and clears them, except the bits set in
                    # that same cycle, which are kept for the next read.
                    bits = Signal(32, name=f"{reg.name}_bits_{index}")
                    readable[addr] = bits
                    with m.If(req.r_stb & hit):
                        m.d.sync += bits.eq(entry)
                    with m.Else():
                        m.d.sync += bits.eq(bits | entry)

        zero = Const(0, 32)
        if latency == 3:
            # Two levels: the words of each group of 16 that has readable ones are chosen
            # into a register, the group a cycle later. The registers (RC bits) are read in
            # the same cycle as with one level; only the answer takes a cycle more.
            low = min(_GROUP_BITS, self.addr_width)
            picked = []
            for group in range(1 << (self.addr_width - low)):
                base = group << low
                members = [readable.get(base + k, zero) for k in range(1 << low)]
                if all(word is zero for word in members):
                    picked.append(zero)
                    continue
                word = Signal(32, name=f"group_{group}", reset_less=True)
                m.d.sync += word.eq(Array(members)[req.addr[:low]])
                picked.append(word)
            high = Signal(self.addr_width - low, reset_less=True)
            r_stb = Signal()
            m.d.sync += [high.eq(req.addr[low:]), r_stb.eq(req.r_stb),
                         r_data.eq(Mux(r_stb, Array(picked)[high], 0))]
        else:
            words = Array(readable.get(addr, zero) for addr in range(1 << self.addr_width))
            m.d.sync += r_data.eq(Mux(req.r_stb, words[req.addr], 0))

        def member_of(addresses):
            table = sum(1 << a for a in addresses)
            return Const(table, 1 << self.addr_width).bit_select(req.addr, 1)

        m.d.comb += self.bad_access.eq(
            (req.r_stb & ~member_of(known)) | (req.w_stb & ~member_of(writable))
        )
        return m
