# The device core's registers (partner.regmap.REGISTERS) wired to its blocks: configuration in,
# counters out, and every out-of-range write refused and flagged in `status`.
"""Register glue of the device core.

Writes that would name a flow-table entry, queue, port or flow the build does not have are not
carried out; they set a sticky bit in `status` instead. Counters are read through
`counter_select`: its write starts a snapshot, all words taken in the same cycle, and
`counter_status.done` says when it is in `counter_value` (`COUNTER_SETTLE_CYCLES` after the write
unless a queue block's counters are busy: they share their memories' update port, see
partner.hdl.flow_queues).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from partner.formats import ACTION, FLOW_RULE, ActionKind
from partner.hdl.csr import CSRBus, RegisterBank
from partner.hdl.wire import layout
from partner.regmap import (
    CONFIG,
    COUNTER_NAMES,
    COUNTER_SELECT,
    COUNTER_STATUS,
    COUNTER_WORDS,
    FORMAT_VERSION,
    IDENT,
    QUEUE_CONFIG,
    QUEUE_CONFIG_WRITE,
    QUOTA_UNIT,
    REGISTERS,
    RULE_WRITE,
    STATUS,
    CounterBlock,
)

__all__ = ["CSR_READ_LATENCY", "CoreRegisters"]

_PORT_SOURCES = {
    "rx_frames": ("rx_mac", "frames_ok"),
    "rx_bytes": ("rx_mac", "bytes_ok"),
    "rx_fcs_errors": ("rx_mac", "fcs_errors"),
    "rx_runts": ("rx_mac", "runts"),
    "rx_giants": ("rx_mac", "giants"),
    "rx_phy_errors": ("rx_mac", "phy_errors"),
    "rx_preamble_errors": ("rx_mac", "preamble_errors"),
    "rx_malformed": ("rx_port", "malformed"),
    "rx_fifo_overflows": ("rx_port", "fifo_overflows"),
    "rx_lookup_backlog_drops": ("rx_port", "lookup_backlog_drops"),
    "rx_dropped_by_rule": ("dispatcher", "dropped_by_rule"),
    "rx_dropped_bad_action": ("dispatcher", "dropped_bad_action"),
    "tx_frames": ("tx_mac", "frames_sent"),
    "tx_bytes": ("tx_mac", "bytes_sent"),
    "tx_underruns": ("tx_mac", "underruns"),
}

# Reads of the core's registers take three cycles: the bank registers each request before it
# decodes it, and chooses a group of 16 words into a register before the group. The address and
# strobes otherwise ran from the host adapter, wherever it is, through the decoder and the read
# multiplexer (11.4 ns, 10.2 of it routing: the routed 16-rule core's worst path); with the
# request registered, the one-level multiplexer from every block's counters and status was the
# worst path again (10.6 ns, 9.6 of it routing).
CSR_READ_LATENCY = 3

_QUEUE_SOURCES = ("c_enq_frames", "c_enq_bytes", "c_drop_quota", "c_drop_nobuf", "c_deq_frames")


class CoreRegisters(wiring.Component):
    """The register bank of the core; `attach` wires it to the core's blocks."""

    def __init__(self, *, ports, queues, rules, tx_flows, width_bytes):
        self.ports, self.queues, self.rules, self.tx_flows = ports, queues, rules, tx_flows
        self.width_bytes = width_bytes
        self.bank = RegisterBank(REGISTERS, read_latency=CSR_READ_LATENCY)
        super().__init__({"bus": In(CSRBus(self.bank.addr_width, CSR_READ_LATENCY))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bank = self.bank
        wiring.connect(m, wiring.flipped(self.bus), self.bank.bus)
        return m

    def attach(self, m, *, classifier, rx_macs, tx_macs, rx_ports, dispatchers, rx_queues,
               tx_queues, host_tx_dropped):
        """Drive the bank's inputs and the blocks' configuration from the parent module `m`."""
        bank, P, Q = self.bank, self.ports, self.queues
        status = Signal(layout(STATUS))
        m.d.comb += [
            bank.ident.eq(IDENT),
            bank.version.eq(FORMAT_VERSION),
            bank.config.eq(CONFIG.pack(ports=P, queues=Q, rules=self.rules,
                                       tx_flows=self.tx_flows, width_bytes=self.width_bytes)),
            bank.status_set.eq(status),
            status.bad_access.eq(bank.bad_access),
            classifier.default_action.eq(bank.default_action[:ACTION.width]),
        ]
        # Registered on the way: the classifier is far from the bank's read multiplexer.
        m.d.sync += [
            bank.lookups.eq(classifier.lookups),
            bank.hits.eq(classifier.hits),
            bank.misses.eq(classifier.misses),
        ]
        for mac in rx_macs:
            m.d.comb += mac.mtu.eq(bank.mtu[:14])

        self._rules(m, classifier, status)
        self._queue_config(m, rx_queues, tx_queues, status)
        blocks = {"rx_mac": rx_macs, "tx_mac": tx_macs, "rx_port": rx_ports,
                  "dispatcher": dispatchers}
        self._counters(m, classifier, blocks, rx_queues, tx_queues, host_tx_dropped, status)

        link = Signal(P)
        for p, mac in enumerate(rx_macs):
            with m.If(mac.frames_ok.any()):
                m.d.sync += link[p].eq(1)
        m.d.comb += bank.link.eq(link)

    def _rules(self, m, classifier, status):
        bank = self.bank
        rule = Signal(layout(FLOW_RULE))
        m.d.comb += rule.eq(Cat(*bank.rule_data)[:FLOW_RULE.width])
        index = bank.rule_write[:RULE_WRITE["index"].width]
        index_ok = index < self.rules
        action = Signal(layout(ACTION))
        m.d.comb += action.eq(rule.action)
        action_ok = ~rule.valid | (
            ((action.kind != ActionKind.HOST) | (action.queue < self.queues))
            & ((action.kind != ActionKind.FORWARD) | (action.port < self.ports))
        )
        stb = bank.rule_write_stb
        m.d.comb += [
            classifier.w_index.eq(index),
            classifier.w_rule.eq(rule),
            classifier.w_en.eq(stb & index_ok & action_ok),
            status.bad_rule_index.eq(stb & ~index_ok),
            status.bad_rule.eq(stb & index_ok & ~action_ok),
        ]

    def _queue_config(self, m, rx_queues, tx_queues, status):
        bank = self.bank
        config = Signal(layout(QUEUE_CONFIG))
        target = Signal(layout(QUEUE_CONFIG_WRITE))
        m.d.comb += [config.eq(bank.queue_config), target.eq(bank.queue_config_write)]
        stb = bank.queue_config_write_stb
        ok = Signal()
        # The write goes to the blocks a cycle after its strobe, from registers of its own:
        # the blocks sit all over the chip, and the target's decode plus the route to their
        # memories' write enables would be one cycle; the registers also keep the values of
        # this write if the host writes `queue_config` again in the very next bus cycle.
        quota_bytes = config.quota * QUOTA_UNIT
        flow, quota = Signal(len(target.flow)), Signal(len(quota_bytes))
        klass, weight = Signal(len(config.priority)), Signal(len(config.weight))
        m.d.sync += [flow.eq(target.flow), quota.eq(quota_bytes),
                     klass.eq(config.priority), weight.eq(config.weight)]
        for tx, blocks in ((0, rx_queues), (1, tx_queues)):
            for unit, block in enumerate(blocks):
                hit = (target.tx == tx) & (target.unit == unit) & (target.flow < block.flows)
                with m.If(hit):
                    m.d.comb += ok.eq(1)
                enable = Signal(name=f"queue_config_{'tx' if tx else 'rx'}{unit}")
                m.d.sync += enable.eq(stb & hit)
                m.d.comb += [
                    block.cfg_flow.eq(flow),
                    block.cfg_quota_bytes.eq(quota),
                    block.cfg_class.eq(klass),
                    block.cfg_weight.eq(weight),
                    block.cfg_en.eq(enable),
                ]
        m.d.comb += status.bad_queue_config.eq(stb & ~ok)

    def _counters(self, m, classifier, blocks, rx_queues, tx_queues, host_tx_dropped, status):
        bank = self.bank
        select = Signal(layout(COUNTER_SELECT))
        m.d.comb += select.eq(bank.counter_select)
        # `written`: the cycle the bank takes the write (the register holds it from the next
        # one), which with read latency 2 or 3 is the cycle after the bus's strobe.
        written = bank.bus.w_stb & (bank.bus.addr == REGISTERS["counter_select"].offset // 4)
        if CSR_READ_LATENCY >= 2:
            written_on_bus, written = written, Signal()
            m.d.sync += written.eq(written_on_bus)
        settled = Signal()  # the register holds the new selection
        ready = Signal()  # the memories' outputs belong to it
        m.d.sync += [settled.eq(written), ready.eq(settled)]

        m.d.comb += classifier.c_index.eq(select.index)
        for block in (*rx_queues, *tx_queues):
            # A queue block reads its counters when their memories' port is free and says so
            # with `c_valid` (four cycles after the request at the earliest, after `ready`).
            m.d.comb += [block.c_flow.eq(select.index), block.c_req.eq(settled)]

        # The selection is decoded once it is in its register, into one pick per source; the
        # snapshot's multiplexer is an AND-OR of those picks, registered (`values`), and the
        # words go into `counter_value` a cycle later. Counters come from every block of the
        # core, spread over the whole chip: decode, multiplexer and the enable of the 512
        # `counter_value` flip-flops in one cycle were the core's longest path (14.5 ns, 13.4
        # of it routing, on the LFE5UM5G-45F).
        sources = []  # (pick, [words], c_valid or None)
        for p in range(self.ports):
            words = []
            for name in COUNTER_NAMES[CounterBlock.PORT]:
                if name == "tx_host_dropped":
                    words.append(host_tx_dropped)
                else:
                    kind, member = _PORT_SOURCES[name]
                    words.append(getattr(blocks[kind][p], member))
            ok = (select.block == CounterBlock.PORT) & (select.unit == p) & (select.index == 0)
            sources.append((ok, words, None))
        sources.append(((select.block == CounterBlock.RULE) & (select.unit == 0)
                        & (select.index < self.rules), [classifier.c_frames], None))
        for block_kind, queue_blocks in ((CounterBlock.RX_QUEUE, rx_queues),
                                         (CounterBlock.TX_QUEUE, tx_queues)):
            for unit, block in enumerate(queue_blocks):
                ok = ((select.block == block_kind) & (select.unit == unit)
                      & (select.index < block.flows))
                sources.append((ok, [getattr(block, member) for member in _QUEUE_SOURCES],
                                block.c_valid))
        picks = Signal(len(sources))
        with m.If(settled):
            m.d.sync += picks.eq(Cat(ok for ok, _, _ in sources))
        valid = picks.any()  # a selection no source takes reads as zeros, and is flagged
        waits = Cat(picks[k] for k, (_, _, c_valid) in enumerate(sources) if c_valid is not None)
        arrived = Cat(picks[k] & c_valid for k, (_, _, c_valid) in enumerate(sources)
                      if c_valid is not None)
        # The snapshot is on the sources' outputs in this cycle: `ready` for the ports and the
        # rule counters (wrapping registers, and the flow table's one-cycle read), a queue
        # block's `c_valid` for its counters (their memories' port may be busy).
        take = Mux(waits.any(), arrived.any(), ready)
        # The snapshot's words have no reset: `done` qualifies them (a reset clears it), and
        # off the reset net they are a thousand flip-flops fewer on it.
        values = [Signal(32, name=f"counter_{i}", reset_less=True) for i in range(COUNTER_WORDS)]
        shown = [Signal(32, name=f"counter_shown_{i}", reset_less=True)
                 for i in range(COUNTER_WORDS)]
        taken = Signal()  # `values` holds the snapshot
        for i, value in enumerate(values):
            word = 0
            for k, (_, words, _) in enumerate(sources):
                if i < len(words):
                    word = word | Mux(picks[k], words[i], 0)
            m.d.sync += value.eq(word)
        # A snapshot of the selection before a write does not count for it.
        m.d.sync += taken.eq(take & ~written)
        # `done`: the snapshot of the last write is in `counter_value` (a write clears it; a
        # queue block's `c_valid` from a request before the write does not come after it).
        done = Signal()
        counter_status = Signal(layout(COUNTER_STATUS))
        with m.If(taken):
            for register, value in zip(shown, values, strict=True):
                m.d.sync += register.eq(value)
        for register, word in zip(bank.counter_value, shown, strict=True):
            m.d.comb += register.eq(word)
        with m.If(written):
            m.d.sync += done.eq(0)
        with m.Elif(taken):
            m.d.sync += done.eq(1)
        m.d.comb += [status.bad_counter_select.eq(ready & ~valid),
                     counter_status.done.eq(done), bank.counter_status.eq(counter_status)]
