# Registers that synthesis must not merge. Yosys's opt_merge folds flip-flops with the same inputs
# into one, whatever attributes their output wires carry; a copy of a register made to drive only
# part of a wide load (the write address of one slice of a LUT RAM) would then drive all of it
# again. On an ECP5 the copy is built of TRELLIS_FF cells (Lattice FPGA Libraries Reference
# Guide, "TRELLIS_FF" as Yosys and nextpnr model the PFU flip-flop) with Yosys's `keep`.
"""Register copies that synthesis keeps apart."""

from amaranth.hdl import ClockSignal, Const, Instance, Module, ResetSignal, Signal, Value

__all__ = ["kept_register"]


def kept_register(m: Module, platform, value, *, name: str, reset_less: bool = True) -> Signal:
    """A register of ``value`` in the ``sync`` domain (its output one cycle later, reset to 0
    unless ``reset_less``) that is not merged with other registers of the same value.

    On an ECP5 platform (``platform.family == "ecp5"``) it is one kept ``TRELLIS_FF`` per bit;
    elsewhere (simulation, other families) a plain register: it behaves the same, and the copies
    only matter to placement.
    """
    value = Value.cast(value)
    q = Signal(len(value), name=name, reset_less=reset_less)
    if getattr(platform, "family", None) != "ecp5":
        m.d.sync += q.eq(value)
        return q
    reset = Const(0) if reset_less else ResetSignal("sync")
    for bit in range(len(value)):
        m.submodules[f"{name}_ff{bit}"] = Instance(
            "TRELLIS_FF",
            a_keep=1,
            p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK", p_LSRMUX="LSR",
            p_REGSET="RESET", p_SRMODE="LSR_OVER_CE",  # LSR_OVER_CE: a synchronous reset
            i_CLK=ClockSignal("sync"), i_LSR=reset, i_CE=Const(1), i_DI=value[bit],
            o_Q=q[bit])
    return q
