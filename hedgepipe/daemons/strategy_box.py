"""strategy-box: every box spread and parity trade of every expiry, priced for inverse options.

``clean.*`` (or ``md.*``) in; ``signal.box`` out (open / update / close of each opportunity)
and, with ``--trade``, one ``order.intent`` group per opened opportunity. The arithmetic is
:mod:`hedgepipe.boxes.chain` (docs/strategy-box-arithmetic.md); the market state, gates and
lifecycle are the other modules of :mod:`hedgepipe.boxes`; docs/strategy-box.md describes the
daemon. ``--scan-chain CSV`` prices a recorded chain offline and exits.

Work per frame is bounded: an option quote asks a per-strike bound (O(1)) and only when that
cannot rule its strike out re-evaluates the pairs of the strike (O(N)); a moved forward marks
its expiry, re-evaluated at most every ``forward_eval_ms`` and skipped when the O(N) bound says
nothing can pass; a full scan every ``full_scan_s`` cross-checks.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Literal

import click
import msgspec

from .. import messages as m
from ..boxes.evaluate import Evaluator, Gates
from ..boxes.fees import FeeSchedule, Rate
from ..boxes.intents import IntentBuilder, signal_of
from ..boxes.market import Market, StrikeUpdate, instrument_problem, quote_problem
from ..boxes.opportunities import CLOSE, OPEN, UPDATE, Event, Opportunities
from ..boxes.scan import write_scan
from ..cli import daemon_command, guarded
from ..clock import SystemClock
from ..config import DaemonConfig
from ..etl.universe import index_base
from ..etl.watermark import SourceClock, Watermarks
from ..logs import OncePerKind, setup_logging
from ..runtime import Service, Timer
from ..state import priming_wanted, stored_instruments

log = logging.getLogger("hedgepipe.strategy-box")

Positive = Annotated[float, msgspec.Meta(gt=0.0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]
#: Close reasons that time alone explains: the full scan finding them is no correction.
_TIME_REASONS = frozenset({"stale_quote", "stale_forward", "stale_hedge", "settlement", "expired", "rate"})
#: A publisher's clock moves past a stamp this far off only when this many frames agree.
_CLOCK_JUMP_NS = 1_000_000_000
_CLOCK_CONFIRM = 5


def _list(*items: str):
    return msgspec.field(default_factory=lambda: list(items))


class StrategyBoxConfig(DaemonConfig):
    inputs: list[str] = _list("etl-filter")
    topics: list[str] = _list("clean.")
    #: Base currencies whose chains are evaluated; [] = all.
    currencies: list[str] = _list("BTC", "ETH")
    #: Where option quotes come from: best levels of books, or tickers' best bid/ask.
    quote_source: Literal["book", "ticker"] = "book"
    #: Gates: edge per contract (USD at expiry, after fees), total edge, annualised return.
    min_edge_usd: float = 1.0
    min_total_usd: float = 0.0
    min_annual_rate: NonNegative = 0.0
    #: Every leg (and the forward) quoted within this many seconds.
    max_quote_age_s: Positive = 5.0
    #: No signal on an expiry closer than this to its settlement (08:00 UTC).
    settle_guard_s: NonNegative = 3600.0
    #: Also conversions and reversals against the expiry's listed future.
    parity: bool = True
    #: An open opportunity is published again when its edge per contract moved by more than
    #: this (USD) or its size by more than this fraction.
    update_edge_usd: NonNegative = 1.0
    update_size_frac: NonNegative = 0.1
    full_scan_s: Positive = 5.0
    #: How often open opportunities are checked for aged legs and near settlement.
    sweep_ms: Annotated[int, msgspec.Meta(ge=10)] = 250
    #: An expiry whose forward moved is re-evaluated at most this often.
    forward_eval_ms: Annotated[int, msgspec.Meta(ge=1)] = 100
    #: Publish order.intent groups for opened opportunities (for risk-gate).
    trade: bool = False
    time_in_force: Literal["immediate_or_cancel", "fill_or_kill", "good_til_cancelled"] = "immediate_or_cancel"
    #: On start, learn the instruments store-writer holds in Redis (a restart does not wait for
    #: the feed's next republish): true, false, or "auto" = unless every input is "-".
    prime_from_redis: Literal["auto"] | bool = "auto"
    #: Redis for priming: REDIS_URL, else this, else store-writer's embedded server.
    redis_url: str = ""
    #: Fee schedule (Deribit's published one by default).
    option_fee_rate: Rate = 0.0003
    option_fee_cap: Rate = 0.125
    future_taker_fee: Rate = 0.0005


class StrategyBoxService(Service):
    name = "strategy-box"
    summary = ("Find box spreads, conversions and reversals worth trading on every expiry, priced "
               "in USD after fees with the future hedge that makes an inverse box risk-free; "
               "publish signal.box (and order.intent with --trade). --scan-chain prices a chain file.")
    Config = StrategyBoxConfig
    cli_options = (
        click.Option(["--trade"], is_flag=True, default=None,
                     help="Also publish order.intent groups for risk-gate [config: trade]."),
        click.Option(["--min-edge", "min_edge_usd"], type=float, default=None, metavar="USD",
                     help="Least edge per contract, USD after fees [config: min_edge_usd; "
                          "with --scan-chain: default 0]."),
    )

    def __init__(self, config: StrategyBoxConfig, clock=SystemClock()):
        super().__init__(config, clock)
        fees = FeeSchedule(option_rate=config.option_fee_rate, option_cap=config.option_fee_cap,
                           future_taker=config.future_taker_fee)
        self.market = Market(fees=fees)
        self.evaluator = Evaluator(Gates(
            min_edge_usd=config.min_edge_usd, min_total_usd=config.min_total_usd,
            min_annual_rate=config.min_annual_rate, max_quote_age_ns=int(config.max_quote_age_s * 1e9),
            settle_guard_ns=int(config.settle_guard_s * 1e9), hedge_rate=fees.future_taker,
            parity=config.parity), hedges=self.market.hedge_quote)
        self.opps = Opportunities(config.update_edge_usd, config.update_size_frac)
        self.intents: IntentBuilder | None = None
        self.once = OncePerKind(log)
        self._bases = frozenset(config.currencies)
        # The clock legs age against: each publisher's watermark of its ts_recv stamps (one
        # bad stamp cannot move it: hedgepipe.etl.watermark), the newest of them, moved on by
        # the monotonic clock while the stream is quiet.
        self._watermarks = Watermarks(_CLOCK_JUMP_NS, _CLOCK_CONFIRM)
        self._clocks: dict[str, SourceClock] = {}
        self._stream_ns = 0
        self._stream_mono = 0.0
        self.stats = {"quotes": 0, "evaluations": 0, "full_scans": 0, "scan_skipped": 0,
                      "opened": 0, "updated": 0, "closed": 0, "scan_corrections": 0,
                      "intents": 0, "ignored": 0, "open": 0, "expiries_dropped": 0,
                      "confirmed": 0, "rejected_bad_price": 0, "rejected_bad_amount": 0, "rejected_crossed": 0,
                      "rejected_instrument": 0, "unknown_instrument": 0, "instruments_primed": 0, "prime_unavailable": 0,
                      "intents_cut": 0}
        self._handlers = {}
        for kind, fn in (("instrument", self._instrument), ("book", self._book),
                         ("ticker", self._ticker), ("index", self._index)):
            for stage in ("md", "clean"):
                self._handlers[m.TOPIC_TYPES[f"{stage}.{kind}"]] = fn

    # ---- the clock: the stream's own time, moved on by the monotonic clock when it is quiet ----
    def now_ns(self) -> int:
        if not self._stream_ns:
            return self.clock.time_ns()
        return self._stream_ns + int((self.clock.monotonic() - self._stream_mono) * 1e9)

    def _received(self, msg) -> int:
        """When ``msg`` counts as received: its ts_recv, but never later than now."""
        ts = msg.ts_recv
        clock = self._clocks.get(msg.src)
        if clock is None:
            clock = self._clocks[msg.src] = SourceClock()
        before = clock.mark
        if before - _CLOCK_JUMP_NS <= ts <= before and not clock.run:
            return ts  # the usual case, inline: at or just behind the mark (Watermarks.time_of)
        self._watermarks.time_of(clock, ts)
        if clock.mark != before:
            newest = max(c.mark for c in self._clocks.values())
            if newest != self._stream_ns:
                self._stream_ns, self._stream_mono = newest, self.clock.monotonic()
        # A stamp ahead of the clock counts as received now: it must not keep a quote fresh.
        return ts if ts <= self._stream_ns else min(ts, self.now_ns())

    # ---- inputs --------------------------------------------------------------------------------
    def on_start(self):
        self.intents = IntentBuilder(self.name, self.clock.time_ns(), self.config.time_in_force)
        cfg = self.config
        if not priming_wanted(cfg.prime_from_redis, cfg.inputs, log):
            return ()
        stored = stored_instruments(["clean.instrument", "md.instrument"], run_dir=self.run_dir,
                                    url=cfg.redis_url, log_to=log)
        if stored is None:
            self.stats["prime_unavailable"] += 1
            return ()
        definitions: dict[tuple[str, str], m.Instrument] = {}
        for msg in stored:  # the clean.* copy first, the md.* one only where there is none
            definitions.setdefault((msg.venue, msg.name), msg)
        for msg in definitions.values():
            if (not self._bases or msg.base in self._bases) and instrument_problem(msg) is None:
                self.stats["instruments_primed"] += 1
            self._instrument(msg)
        log.info("instruments primed from Redis", extra={"instruments": self.stats["instruments_primed"]})
        return ()

    def on_message(self, topic, msg):
        handler = self._handlers.get(type(msg))
        if handler is None:
            self.stats["ignored"] += 1
            return ()
        return handler(msg)

    def _instrument(self, msg: m.Instrument):
        if self._bases and msg.base not in self._bases:
            return ()
        problem = instrument_problem(msg)
        if problem is not None:
            self.stats["rejected_instrument"] += 1
            self.once("rejected_instrument", f"{msg.name}: definition not usable ({problem}); left out")
            return ()
        delisted = self.market.on_instrument(msg)
        return () if delisted is None else self._evaluate_strike(delisted)

    def _book(self, msg: m.Book):
        if self.config.quote_source != "book":
            return ()
        bid = msg.bids[0] if msg.bids else (None, None)
        ask = msg.asks[0] if msg.asks else (None, None)
        return self._top(msg.instrument, bid[0], bid[1], ask[0], ask[1], self._received(msg), msg.stale)

    def _ticker(self, msg: m.Ticker):
        received = self._received(msg)
        if msg.underlying_price is not None:
            option = self.market.options.get(msg.instrument)
            before = option[0].forward_ns if option is not None else 0
            expiry = self.market.on_underlying(msg.instrument, msg.underlying_price, received)
            if expiry is not None and self._fresh_again(before, expiry.forward_ns):
                expiry.dirty = True  # a synthetic forward young again (maybe at the same price)
        if self.config.quote_source != "ticker":
            return self._confirm(msg, received)
        return self._top(msg.instrument, msg.bid, msg.bid_amount, msg.ask, msg.ask_amount, received, False)

    def _confirm(self, msg: m.Ticker, received: int):
        """A ticker agreeing with a book makes its quote younger (a future's too); an option
        strike that was too old to trade and is young again is evaluated (others need not be:
        only age moved)."""
        option = self.market.options.get(msg.instrument)
        if option is None:
            quote = self.market.futures.get(msg.instrument)
            if quote is not None:
                before = quote.ts_ns
                self.market.confirm_future(quote, msg.bid, msg.ask, received)
                self._young_again(quote, before)
            return ()
        expiry, strike, side = option
        chain = expiry.chain
        k = chain.index_of(strike)
        before = int(chain.oldest_ns[k])
        if not chain.confirm(k, side, msg.bid, msg.ask, received):
            return ()
        self.stats["confirmed"] += 1
        if self._fresh_again(before, int(chain.oldest_ns[k])):
            return self._evaluate_strike(StrikeUpdate(expiry, k))
        return ()

    def _index(self, msg: m.Index):
        base = index_base(msg.name)
        received = self._received(msg)
        if not self._bases or base in self._bases:
            self.market.on_index(base, msg.price, received)
        return ()

    def _top(self, name, bid, bid_amount, ask, ask_amount, ts_ns, stale):
        quote = self.market.futures.get(name)
        if quote is None and name not in self.market.options:
            # Not (yet) defined, another currency, or a definition refused: counted, since a
            # daemon that knows no instrument is blind (priming from Redis prevents it).
            self.stats["unknown_instrument"] += 1
            return ()
        problem = None if stale else quote_problem(bid, bid_amount, ask, ask_amount)
        if problem is not None:
            # Counted, logged once, and the instrument's quotes voided: the last good ones
            # are no longer known to be current.
            self.stats[f"rejected_{problem}"] += 1
            self.once(problem, f"{name}: unusable quote ({problem}: bid {bid} x {bid_amount}, "
                      f"ask {ask} x {ask_amount}); its quotes are void until a good one")
            stale = True
        before = quote.ts_ns if quote is not None else 0
        touched = self.market.on_top(name, bid, bid_amount, ask, ask_amount, ts_ns, stale)
        if not isinstance(touched, StrikeUpdate):
            self._young_again(quote, before)
            return ()  # a forward moved: its expiries are dirty, evaluated by the timer
        self.stats["quotes"] += 1
        return self._evaluate_strike(touched)

    def _fresh_again(self, before_ns: int, after_ns: int) -> bool:
        """A quote time that was too old to trade on and is not any more."""
        fresh_after = self.now_ns() - self.evaluator.gates.max_quote_age_ns
        return before_ns < fresh_after <= after_ns

    def _young_again(self, quote, before_ns: int) -> None:
        """A future or perpetual quote too old to trade on and young again (same prices: no
        forward move marked it): the expiries it is the forward or hedge of are re-evaluated."""
        if quote is None:
            return
        if self._fresh_again(before_ns, quote.ts_ns):
            for expiry in self.market.expiries.values():
                if expiry.future == quote.name or self.market.hedge_quote(expiry) is quote:
                    expiry.dirty = True

    def _evaluate_strike(self, update: StrikeUpdate):
        self.stats["evaluations"] += 1
        expiry, k, now = update.expiry, update.k, self.now_ns()
        passing = self.evaluator.at_strike(expiry, k, now)
        scope = self.opps.at_strike(expiry.chain.key, float(expiry.chain.strikes[k])) if self.opps.open else set()
        if not passing and not scope:
            return ()
        return self._publish(self.opps.reconcile(scope, passing, lambda o: self._why_not(o, now)))

    # ---- timers --------------------------------------------------------------------------------
    def timers(self):
        cfg = self.config
        return [Timer(cfg.forward_eval_ms / 1000, self._on_forward_timer, "forwards"),
                Timer(cfg.sweep_ms / 1000, self._on_sweep, "sweep"),
                Timer(cfg.full_scan_s, self._on_full_scan, "full-scan")]

    def _on_forward_timer(self, _wall_ns):
        now, outs = self.now_ns(), []
        for expiry in list(self.market.expiries.values()):
            if expiry.dirty:
                outs += self._publish(self._reconcile_whole(expiry, now))
        return outs

    def _on_sweep(self, _wall_ns):
        """Close what time alone ended: a leg or forward aged out, settlement near."""
        now, events = self.now_ns(), []
        max_age = self.evaluator.gates.max_quote_age_ns
        for opp in list(self.opps.open.values()):
            chain, s = opp.expiry.chain, opp.structure
            reason = self.evaluator.structure_problem(opp.expiry, s.side, now)
            i, j = chain.index_of(s.k1), chain.index_of(s.k2 if s.k2 is not None else s.k1)
            if reason is None and min(chain.oldest_ns[i], chain.oldest_ns[j]) < now - max_age:
                reason = "stale_quote"
            if reason is not None:
                events.append(self.opps.close(opp, reason))
        return self._publish(events)

    def _on_full_scan(self, _wall_ns):
        now, outs = self.now_ns(), []
        for expiry in list(self.market.expiries.values()):
            if expiry.chain.key.expiry_ns < now and not self.opps.in_chain(expiry.chain.key):
                self.market.drop(expiry)  # settled: nothing left to evaluate
                self.stats["expiries_dropped"] += 1
                continue
            moved = expiry.dirty  # a forward move the forward timer had not got to yet
            events = self._reconcile_whole(expiry, now)
            fixes = [] if moved else [e for e in events if e.event != CLOSE or e.reason not in _TIME_REASONS]
            if fixes:
                self.stats["scan_corrections"] += len(fixes)
                self.once("scan_correction", f"full scan of {expiry.prefix} corrected {len(fixes)} "
                          f"opportunities the per-update path missed (first: {fixes[0].opp.opp_id} "
                          f"{fixes[0].event})", level=logging.WARNING)
            outs += self._publish(events)
        self.stats["full_scans"] += 1
        return outs

    def _reconcile_whole(self, expiry, now) -> list[Event]:
        expiry.dirty = False
        scope = self.opps.in_chain(expiry.chain.key)
        if not scope and not self.evaluator.could_pass(expiry, now):
            self.stats["scan_skipped"] += 1
            return []
        passing = self.evaluator.whole(expiry, now)
        return self.opps.reconcile(scope, passing, lambda o: self._why_not(o, now))

    def _why_not(self, opp, now) -> str:
        s = opp.structure
        return self.evaluator.why_not(opp.expiry, s.side, s.k1, s.k2, now)

    # ---- output --------------------------------------------------------------------------------
    def _publish(self, events: list[Event]):
        outs = []
        if self.config.trade:
            opened = [ev.opp for ev in events if ev.event == OPEN]
            if opened:
                sent, cut = self.intents.groups(opened, self.market.hedge_quote)
                self.stats["intents"] += len(sent)
                self.stats["intents_cut"] += cut
                outs += sent
        for ev in events:
            self.stats[{OPEN: "opened", UPDATE: "updated", CLOSE: "closed"}[ev.event]] += 1
            outs.append(signal_of(ev, self.market.hedge_quote(ev.opp.expiry)))
        self.stats["open"] = len(self.opps.open)
        return outs


def _command() -> click.Command:
    """The daemon's command plus the offline mode, which runs instead of the daemon."""
    command = daemon_command(StrategyBoxService)
    run_daemon = command.callback

    @guarded
    def scan_chain_only(path, min_edge, every):
        write_scan(path, sys.stdout, min_edge=0.0 if min_edge is None else min_edge, every=every)

    def callback(scan_chain, every, **options):
        if scan_chain is None:
            if every:
                raise click.UsageError("--all goes with --scan-chain")
            return run_daemon(**options)
        setup_logging(options["log_level"], options["log_json"])
        return scan_chain_only(scan_chain, options.get("min_edge_usd"), every)

    command.callback = callback
    command.params[:0] = [
        click.Option(["--scan-chain", "scan_chain"], metavar="CSV", default=None,
                     help="Price every box of a chain file (Deribit get_order_book rows), print "
                          "JSON lines and exit (docs/strategy-box-arithmetic.md)."),
        click.Option(["--all", "every"], is_flag=True, default=False,
                     help="With --scan-chain: print every evaluated box, not only edge >= --min-edge."),
    ]
    return command


main = _command()
