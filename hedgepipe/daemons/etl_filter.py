"""etl-filter: ``md.*`` in, ``clean.*`` out: only data that passed every rule, with derived fields.

Each rule (instrument universe, bad values, crossed/locked, off tick, stale, spikes, duplicates)
has its own ``rejected_<rule>`` counter and is logged once per kind. A book refused for its
content publishes a stale marker once, so downstream stops trusting the previous clean book.
The rules themselves are pure code in :mod:`hedgepipe.etl`; docs/etl-filter.md describes each,
its config keys and the design decisions (the stream's watermark as the clock, the stale marker).
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

import msgspec

from ..cli import daemon_command
from ..clock import SystemClock
from ..config import DaemonConfig
from ..errors import ConfigError, HedgepipeError
from ..etl.clean import (clean_book, clean_index, clean_instrument, clean_ticker, clean_trade,
                         stale_book)
from ..etl.dedup import DUPLICATE, RESET
from ..etl.derive import NO_FIELDS, top_fields
from ..etl.rules import levels_problem, positive_problem, ticker_problem, trade_problem
from ..etl.spike import CONFIRMED, SPIKE, SpikeRule, confirmed_elsewhere
from ..etl.topics import Registry, TopicState
from ..etl.universe import NEVER, InstrumentState, Universe, definition_problem
from ..logs import OncePerKind
from ..messages import Instrument
from ..runtime import Service
from ..state import load_state
from ..venues.deribit.marketdata import tick_for

log = logging.getLogger("hedgepipe.etl-filter")

NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]
AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]


def _list(*items: str):
    return msgspec.field(default_factory=lambda: list(items))


class EtlFilterConfig(DaemonConfig):
    inputs: list[str] = _list("feed-deribit", "feed-index")
    topics: list[str] = _list("md.")
    #: Base or settlement currencies kept (instruments and indexes); [] = all.
    currencies: list[str] = _list("BTC", "ETH")
    #: Instrument kinds kept; [] = all.
    kinds: list[Literal["option", "future", "perpetual", "spot", "combo"]] = _list(
        "option", "future", "perpetual")
    #: Days to expiry kept: [min, max] at the stream's time; 0 = no limit (expired: always out).
    min_expiry_days: NonNegative = 0.0
    max_expiry_days: NonNegative = 0.0
    #: Options kept: strike / reference index price in [min, max]; 0 = that side open.
    moneyness_min: NonNegative = 0.0
    moneyness_max: NonNegative = 0.0
    check_ticks: bool = True
    #: How far off the tick grid a price may be, as a fraction of a tick (float noise).
    tick_tolerance: Annotated[float, msgspec.Meta(ge=0.0, lt=0.5)] = 1e-6
    reject_locked: bool = True
    #: Reject data whose ts_event is older than this behind the stream's watermark; 0 = off.
    max_age_s: NonNegative = 5.0
    #: Spike rule: reject |x - median| > k * max(MAD, floor); spike_k = 0 turns it off.
    spike_k: NonNegative = 5.0
    spike_window: AtLeastOne = 20
    spike_min_samples: AtLeastOne = 5
    #: The floor is at least this fraction of the median (index prices; book/ticker mids).
    spike_min_rel_index: NonNegative = 0.001
    spike_min_rel_mid: NonNegative = 0.02
    #: A move is real once this many consecutive values agree on it.
    spike_confirm_ticks: AtLeastOne = 3
    #: ...or, for an index, once another source of that index saw the level this recently.
    spike_source_max_age_s: NonNegative = 5.0
    #: Duplicate (src, topic, seq) detection window per (src, topic), in frames.
    dedup_window: Annotated[int, msgspec.Meta(ge=1, le=65_536)] = 1024
    #: Trade ids remembered per instrument.
    trade_id_memory: AtLeastOne = 4096
    #: Topics (and instruments) with state kept; beyond it the oldest is forgotten.
    max_topics: AtLeastOne = 200_000
    #: On start, learn the instruments store-writer holds in Redis (a restart does not wait
    #: for the feed's next republish). Redis: REDIS_URL, else this, else store-writer's
    #: embedded server under run_dir (hedgepipe.state).
    prime_from_redis: bool = True
    redis_url: str = ""


STAT_NAMES = (
    "clean_instruments", "clean_books", "clean_tickers", "clean_trades", "clean_indexes",
    "rejected_universe", "rejected_bad_value", "rejected_crossed", "rejected_locked",
    "rejected_off_tick", "rejected_stale", "rejected_spike", "rejected_duplicate",
    "rejected_unknown_instrument", "rejected_topic_mismatch", "stale_passed", "stale_marked",
    "moneyness_unknown", "spike_confirmed", "spike_cross_source", "upstream_resets",
    "watermark_resets", "ignored_topics", "instruments_primed", "prime_unavailable",
    "topics_evicted")
#: A ts_recv this far behind the watermark is a clock that jumped back, not old data.
WATERMARK_RESET_NS = 60 * 1_000_000_000


class EtlFilterService(Service):
    name = "etl-filter"
    summary = ("Filter md.* into clean.*: instrument universe, bad values, crossed/locked books, "
               "off-tick prices, stale data, spikes and duplicates are rejected and counted; clean "
               "books and tickers carry mid, spread, microprice and mid IV.")
    Config = EtlFilterConfig

    def __init__(self, config: EtlFilterConfig, clock=SystemClock()):
        super().__init__(config, clock)
        if config.moneyness_min and config.moneyness_max and config.moneyness_min > config.moneyness_max:
            raise ConfigError(f"[etl-filter] moneyness_min {config.moneyness_min} > moneyness_max "
                              f"{config.moneyness_max}")
        if config.spike_min_samples > config.spike_window:
            raise ConfigError(f"[etl-filter] spike_min_samples {config.spike_min_samples} > "
                              f"spike_window {config.spike_window}")
        self.universe = Universe(config.currencies, config.kinds, config.min_expiry_days,
                                 config.max_expiry_days, config.moneyness_min, config.moneyness_max)
        self.spikes = (SpikeRule(config.spike_window, config.spike_min_samples, config.spike_k,
                                 config.spike_confirm_ticks) if config.spike_k > 0 else None)
        self.tolerance = config.tick_tolerance if config.check_ticks else None
        self.max_age_ns = int(config.max_age_s * 1e9)
        self.source_age_ns = int(config.spike_source_max_age_s * 1e9)
        self.dedup_width = config.dedup_window
        self.dedup_mask = (1 << config.dedup_window) - 1
        #: The stream's clock: the highest ts_recv seen (docs/etl-filter.md, rule 5).
        self.watermark = 0
        self.stats = dict.fromkeys(STAT_NAMES, 0)
        self.once = OncePerKind(log)
        self.registry = Registry(self.universe, self.spikes, config.trade_id_memory,
                                 config.max_topics)
        self._topics = self.registry.topics
        self._handlers = {"book": self._book, "ticker": self._ticker, "trade": self._trade,
                          "index": self._index, "instrument": self._instrument}

    # ---- entry points ---------------------------------------------------------------------

    def on_start(self):
        if not self.config.prime_from_redis:
            return ()
        try:
            state = load_state(["md.instrument"], run_dir=self.run_dir, url=self.config.redis_url,
                               timeout_s=1.0)
        except HedgepipeError as exc:  # no store yet (first start): the stream teaches us
            self.stats["prime_unavailable"] += 1
            log.info("no stored instruments; learning them from the stream", extra={"reason": str(exc)})
            return ()
        taken = self.prime_instruments([msg for msg in state.values()
                                        if isinstance(msg, Instrument) and msg.active])
        log.info("instruments primed from Redis", extra={"instruments": taken})
        return ()

    def prime_instruments(self, instruments: list[Instrument]) -> int:
        """Know these instruments before their md.instrument frames come (a late start: the
        definitions from Redis). Nothing is published: downstream has them already. Returns
        how many were taken; a definition the rules cannot use is counted and logged."""
        taken = 0
        for inst in instruments:
            problem = definition_problem(inst)
            if problem is not None:
                self._count_reject("bad_value", f"primed instrument {inst.name}: {problem}")
                continue
            self.registry.register(inst)
            taken += 1
        self.stats["instruments_primed"] += taken
        self.stats["topics_evicted"] = self.registry.evicted
        return taken

    def on_message(self, topic: str, msg):
        st = self._topics.get(topic)
        if st is None:
            st = self._new_topic(topic)
        if st.handle is None:
            self.stats["ignored_topics"] += 1
            self.once("ignored_topic", "topic not taken by etl-filter (want md.<kind>.<venue>."
                      "<name>, kind one of book, ticker, trade, index, instrument)", topic=topic)
            return ()
        ts = msg.ts_recv
        if ts > self.watermark:
            self.watermark = ts
        elif ts and self.watermark - ts > WATERMARK_RESET_NS:
            self._watermark_reset(ts, topic)
        seen = st.observe(msg.src, msg.seq, self.dedup_width, self.dedup_mask)
        if seen:
            if seen == DUPLICATE:
                return self._reject(st, msg, "duplicate", f"{msg.src} seq {msg.seq} seen before")
            if seen == RESET:
                self.stats["upstream_resets"] += 1
        return st.handle(st, msg)

    # ---- per kind -------------------------------------------------------------------------

    def _book(self, st: TopicState, msg):
        ist = st.inst or self.registry.link(st)
        why = self._data_problem(st, ist, msg.venue, msg.instrument)
        if why is not None:
            return self._reject(st, msg, *why)
        if msg.stale:  # the feed lost the book: say so downstream, levels dropped (untrusted)
            st.marked = True
            self.stats["stale_passed"] += 1
            return ((st.out, stale_book(msg, self.clock.time_ns())),)
        if self.max_age_ns and self.watermark - msg.ts_event > self.max_age_ns:
            return self._reject_book(st, msg, "stale", self._age(msg))
        bids, asks = msg.bids, msg.asks
        tol = self.tolerance
        # A side equal to the last clean book's (checked with the same definition) is good: most
        # updates change one side only, and comparing lists is C, checking levels is not.
        same_def = st.checked_with is ist.inst
        problem = None
        if not (same_def and bids == st.last_bids):
            problem = levels_problem(bids, True, ist.tick, ist.steps, tol)
        if problem is None and not (same_def and asks == st.last_asks):
            problem = levels_problem(asks, False, ist.tick, ist.steps, tol)
        if problem is not None:
            return self._reject_book(st, msg, *problem)
        fields = NO_FIELDS
        if bids and asks:
            bid, bid_amount = bids[0]
            ask, ask_amount = asks[0]
            if bid >= ask and (bid > ask or self.config.reject_locked):
                return self._reject_book(st, msg, "crossed" if bid > ask else "locked",
                                         f"best bid {bid!r} / best ask {ask!r}")
            fields = top_fields(bid, bid_amount, ask, ask_amount)
            if self.spikes is not None and self._mid_spike(st, ist, fields):
                return self._reject_book(st, msg, "spike", self._spike_detail(st, fields[0]))
        st.marked = False
        st.last_bids, st.last_asks, st.checked_with = bids, asks, ist.inst
        self.stats["clean_books"] += 1
        return ((st.out, clean_book(msg, fields, self.clock.time_ns())),)

    def _instrument_data_problem(self, st: TopicState, ist, msg):
        """Why a ticker or trade is refused before its own values are looked at (universe,
        unknown instrument, topic mismatch, stale), as ``(rule, detail)``; None to go on."""
        why = self._data_problem(st, ist, msg.venue, msg.instrument)
        if why is not None:
            return why
        if self.max_age_ns and self.watermark - msg.ts_event > self.max_age_ns:
            return "stale", self._age(msg)
        return None

    def _ticker(self, st: TopicState, msg):
        ist = st.inst or self.registry.link(st)
        why = self._instrument_data_problem(st, ist, msg)
        if why is not None:
            return self._reject(st, msg, *why)
        problem = ticker_problem(msg, ist.tick, ist.steps, self.tolerance)
        if problem is not None:
            return self._reject(st, msg, *problem)
        bid, ask = msg.bid, msg.ask
        fields = NO_FIELDS
        if bid is not None and ask is not None:
            if bid >= ask and (bid > ask or self.config.reject_locked):
                return self._reject(st, msg, "crossed" if bid > ask else "locked",
                                    f"bid {bid!r} / ask {ask!r}")
            fields = top_fields(bid, msg.bid_amount, ask, msg.ask_amount)
            if self.spikes is not None and self._mid_spike(st, ist, fields):
                return self._reject(st, msg, "spike", self._spike_detail(st, fields[0]))
        self.stats["clean_tickers"] += 1
        return ((st.out, clean_ticker(msg, fields, self.clock.time_ns())),)

    def _trade(self, st: TopicState, msg):
        ist = st.inst or self.registry.link(st)
        why = self._instrument_data_problem(st, ist, msg)
        if why is not None:
            return self._reject(st, msg, *why)
        problem = trade_problem(msg, ist.tick, ist.steps, self.tolerance)
        if problem is not None:
            return self._reject(st, msg, *problem)
        if st.trade_ids.seen(msg.trade_id):
            return self._reject(st, msg, "duplicate", f"trade_id {msg.trade_id} seen before")
        self.stats["clean_trades"] += 1
        return ((st.out, clean_trade(msg, self.clock.time_ns())),)

    def _index(self, st: TopicState, msg):
        if msg.venue != st.venue or msg.name != st.name:
            return self._reject(st, msg, "topic_mismatch", f"payload {msg.venue}/{msg.name}")
        if not st.allowed:
            return self._reject(st, msg, "universe", f"index {msg.name}: currency not in "
                                f"{sorted(self.universe.currencies)}")
        if self.max_age_ns and self.watermark - msg.ts_event > self.max_age_ns:
            return self._reject(st, msg, "stale", self._age(msg))
        problem = positive_problem(msg.price, "price")
        if problem is not None:
            return self._reject(st, msg, *problem)
        price = msg.price
        if self.spikes is not None and self._index_spike(st, msg):
            return self._reject(st, msg, "spike", self._spike_detail(st, price))
        self.universe.note_index(msg.venue, msg.name, price)
        self.stats["clean_indexes"] += 1
        return ((st.out, clean_index(msg, self.clock.time_ns())),)

    def _instrument(self, st: TopicState, msg: Instrument):
        if msg.venue != st.venue or msg.name != st.name:
            return self._reject(st, msg, "topic_mismatch", f"payload {msg.venue}/{msg.name}")
        problem = definition_problem(msg)
        if problem is not None:
            return self._reject(st, msg, "bad_value", problem)
        ist = self.registry.register(msg)
        self.stats["topics_evicted"] = self.registry.evicted
        # A retirement always passes, so downstream learns of it whatever the universe says.
        if msg.active:
            if ist.static_reason is not None:
                return self._reject(st, msg, "universe", ist.static_reason)
            if self.watermark >= (msg.expiry_ns or NEVER):
                return self._reject(st, msg, "universe", "expired")
        self.stats["clean_instruments"] += 1
        return ((st.out, clean_instrument(msg, self.clock.time_ns())),)

    # ---- rules shared by the kinds ----------------------------------------------------------

    def _data_problem(self, st: TopicState, ist: InstrumentState | None, venue: str,
                      name: str) -> tuple[str, str] | None:
        """Rules 2-4 of a book, ticker or trade: unknown instrument, topic/payload mismatch,
        outside the universe (the moneyness band inline: it is on every option's path)."""
        if ist is None:
            return "unknown_instrument", f"no md.instrument for {st.venue}/{st.name} yet"
        if name != st.name or venue != st.venue:
            return "topic_mismatch", f"payload {venue}/{name}"
        universe = self.universe
        wm = self.watermark
        if ist.static_reason is not None or not ist.valid_from <= wm < ist.valid_until:
            return "universe", universe.outside(ist, wm)
        if ist.strike is None or not universe.band:
            return None
        ref = universe.references.get(ist.base)
        if not ref:
            self.stats["moneyness_unknown"] += 1
            return None
        moneyness = ist.strike / ref
        if universe.moneyness_min <= moneyness <= universe.moneyness_max:
            return None
        return "universe", (f"moneyness {moneyness:.4f} outside [{universe.moneyness_min}, "
                            f"{universe.moneyness_max}] (reference {ref})")

    def _mid_spike(self, st: TopicState, ist: InstrumentState, fields: tuple) -> bool:
        mid, spread = fields[0], fields[1]
        # A mid's noise is at least a tick and half its spread: a requote inside the spread
        # is not a spike, however thin the book.
        floor = spread * 0.5
        tick = tick_for(mid, ist.tick, ist.steps) if ist.steps else ist.tick
        verdict = self.spikes.judge(st.window, mid, self.config.spike_min_rel_mid,
                                    tick if tick > floor else floor)
        if verdict == CONFIRMED:
            self._confirmed("spike_confirmed", st, mid)
        return verdict == SPIKE

    def _index_spike(self, st: TopicState, msg) -> bool:
        price = msg.price
        verdict = self.spikes.judge(st.window, price, self.config.spike_min_rel_index)
        st.peers[msg.venue] = (price, msg.ts_event)
        if verdict == CONFIRMED:
            self._confirmed("spike_confirmed", st, price)
        elif verdict == SPIKE:
            source = confirmed_elsewhere(st.peers, msg.venue, price, msg.ts_event,
                                         self.spikes.threshold, self.source_age_ns)
            if source is None:
                return True
            self.spikes.rebase(st.window, [price])
            self._confirmed("spike_cross_source", st, price, confirmed_by=source)
        return False

    def _confirmed(self, counter: str, st: TopicState, value: float, **context) -> None:
        self.stats[counter] += 1
        self.once(counter, "a move rejected as a spike was confirmed: accepted, window re-based",
                  level=logging.INFO, topic=st.out, value=value, **context)

    def _spike_detail(self, st: TopicState, value: float) -> str:
        return (f"{value!r} vs median {st.window.median()!r} (limit {self.spikes.threshold:.6g}, "
                f"{len(st.window.pending)} of {self.spikes.confirm} to confirm a move)")

    # ---- rejections and the stale marker ------------------------------------------------------

    def _reject(self, st: TopicState, msg, reason: str, detail: str):
        self._count_reject(reason, detail, topic="md." + st.out[6:], up_src=msg.src, up_seq=msg.seq)
        return ()

    def _count_reject(self, reason: str, detail: str, **context) -> None:
        self.stats["rejected_" + reason] += 1
        self.once("rejected_" + reason, f"rejected ({reason}): {detail}", **context)

    def _reject_book(self, st: TopicState, msg, reason: str, detail: str):
        """A book refused for its content: the previous clean book is no longer the venue's
        book, so a stale marker goes out (once until the next good book)."""
        self._reject(st, msg, reason, detail)
        if st.marked:
            return ()
        st.marked = True
        self.stats["stale_marked"] += 1
        return ((st.out, stale_book(msg, self.clock.time_ns())),)

    def _age(self, msg) -> str:
        return (f"ts_event {(self.watermark - msg.ts_event) / 1e9:.3f} s behind the watermark "
                f"(max_age_s {self.config.max_age_s})")

    # ---- state --------------------------------------------------------------------------------

    def _new_topic(self, topic: str) -> TopicState:
        st = self.registry.topic(topic)
        st.handle = self._handlers.get(st.kind)
        self.stats["topics_evicted"] = self.registry.evicted
        return st

    def _watermark_reset(self, ts: int, topic: str) -> None:
        self.stats["watermark_resets"] += 1
        self.once("watermark_reset", "ts_recv went back by more than 60 s: taken as a clock "
                  "that jumped back; the watermark restarts from it", topic=topic,
                  back_s=round((self.watermark - ts) / 1e9, 3))
        self.watermark = ts


main = daemon_command(EtlFilterService)
