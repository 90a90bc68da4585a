"""etl-filter: ``md.*`` in, ``clean.*`` out: only data that passed every rule, with derived fields.

Each rule (instrument universe, bad values, crossed/locked, off tick, stale, spikes, duplicates)
has its own ``rejected_<rule>`` counter and is logged once per kind. A book refused for its
content publishes a stale marker once, so downstream stops trusting the previous clean book.
The rules themselves are pure code in :mod:`hedgepipe.etl`; docs/etl-filter.md describes each,
its config keys and the design decisions (each publisher's watermark as the clock, the stale
marker).
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

import msgspec

from ..cli import daemon_command
from ..clock import SystemClock
from ..config import DaemonConfig
from ..errors import ConfigError
from ..etl.clean import (clean_book, clean_index, clean_instrument, clean_ticker, clean_trade,
                         stale_book)
from ..etl.dedup import DUPLICATE, RESET
from ..etl.derive import NO_FIELDS, top_fields
from ..etl.rules import levels_problem, positive_problem, ticker_problem, trade_problem
from ..etl.spike import CONFIRMED, SPIKE, SpikeRule, confirmed_elsewhere
from ..etl.topics import Registry, TopicState
from ..etl.universe import NEVER, InstrumentState, Universe, definition_problem
from ..etl.watermark import SourceClock, Watermarks
from ..logs import OncePerKind
from ..messages import Instrument
from ..runtime import Service
from ..state import priming_wanted, stored_instruments
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
    #: Reject data older than this behind its publisher's watermark (rule 5); 0 = off.
    max_age_s: NonNegative = 5.0
    #: A ts_recv further than this from its src's watermark moves it only once
    #: watermark_confirm_frames consecutive frames agree the clock moved.
    watermark_jump_s: Annotated[float, msgspec.Meta(gt=0.0)] = 1.0
    watermark_confirm_frames: AtLeastOne = 5
    #: Spike rule: reject |x - median| > k * max(MAD, floor); spike_k = 0 turns it off.
    spike_k: NonNegative = 5.0
    spike_window: AtLeastOne = 20
    spike_min_samples: AtLeastOne = 5
    #: The floor is at least this fraction of the median (index prices; book/ticker mids).
    spike_min_rel_index: NonNegative = 0.001
    spike_min_rel_mid: NonNegative = 0.02
    #: A move (a jump, a trend) is real once this many consecutive values are consistent with it.
    spike_confirm_ticks: AtLeastOne = 3
    #: ...or, for an index, once another source of that index saw the level this recently.
    spike_source_max_age_s: NonNegative = 5.0
    #: Duplicate (src, topic, seq) detection window per (src, topic), in frames.
    dedup_window: Annotated[int, msgspec.Meta(ge=1, le=65_536)] = 1024
    #: Trade ids remembered per instrument.
    trade_id_memory: AtLeastOne = 4096
    #: Topics (and instruments, src clocks) with state kept; beyond it the oldest is forgotten.
    max_topics: AtLeastOne = 200_000
    #: On start, learn the instruments store-writer holds in Redis (a restart does not wait
    #: for the feed's next republish). Redis: REDIS_URL, else this, else store-writer's
    #: embedded server under run_dir (hedgepipe.state). "auto": unless every input is "-" (a
    #: pipe: a replay or a debugging session, whose output must depend on the stream alone).
    prime_from_redis: Literal["auto"] | bool = "auto"
    redis_url: str = ""


STAT_NAMES = (
    "clean_instruments", "clean_books", "clean_tickers", "clean_trades", "clean_indexes",
    "rejected_universe", "rejected_bad_value", "rejected_crossed", "rejected_locked",
    "rejected_off_tick", "rejected_stale", "rejected_spike", "rejected_duplicate",
    "rejected_unknown_instrument", "rejected_topic_mismatch", "stale_passed", "stale_marked",
    "moneyness_unknown", "spike_confirmed", "spike_cross_source", "upstream_resets",
    "watermark_resets", "watermark_outliers", "ignored_topics", "instruments_primed",
    "prime_unavailable", "topics_evicted")


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
        #: The clock: one watermark per upstream src (docs/etl-filter.md, rule 5).
        self.jump_ns = int(config.watermark_jump_s * 1e9)
        self.watermarks = Watermarks(self.jump_ns, config.watermark_confirm_frames)
        self.stats = dict.fromkeys(STAT_NAMES, 0)
        self.once = OncePerKind(log)
        self.registry = Registry(self.universe, self.spikes, config.trade_id_memory,
                                 config.max_topics)
        self._topics = self.registry.topics
        self._clocks = self.registry.clocks
        self._handlers = {"book": self._book, "ticker": self._ticker, "trade": self._trade,
                          "index": self._index, "instrument": self._instrument}

    # ---- entry points ---------------------------------------------------------------------

    def on_start(self):
        cfg = self.config
        if not priming_wanted(cfg.prime_from_redis, cfg.inputs, log):
            return ()
        instruments = stored_instruments(["md.instrument"], run_dir=self.run_dir, url=cfg.redis_url, log_to=log)
        if instruments is None:
            self.stats["prime_unavailable"] += 1
            return ()
        taken = self.prime_instruments(instruments)
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
        src, ts = msg.src, msg.ts_recv
        window = st.seqs.get(src)  # TopicState.observe, one call less on the hot path
        seen = (window.observe(msg.seq, ts, self.dedup_width, self.dedup_mask) if window is not None
                else st.observe(src, msg.seq, ts, self.dedup_width, self.dedup_mask))
        if seen:  # before the clock: a copy is not news of the time
            if seen != RESET:
                return self._reject(st, msg, "duplicate", (
                    f"{src} seq {msg.seq} seen before" if seen == DUPLICATE else
                    f"{src} seq {msg.seq} is dedup_window or more below the highest seq and "
                    f"received no later: an old copy"))
            self.stats["upstream_resets"] += 1
        # The frame's time: its src's watermark, or its own ts_recv when later. The usual case
        # (within watermark_jump_s of the mark, no run of frames off it) inline; Watermarks.time_of
        # is the whole rule.
        clock = self._clocks.get(src) or self._new_clock(src)
        mark = clock.mark
        if ts > mark:
            if ts - mark <= self.jump_ns and not clock.run:
                clock.mark = ts
                return st.handle(st, msg, ts)
        elif mark - ts <= self.jump_ns and not clock.run:
            return st.handle(st, msg, mark)
        return st.handle(st, msg, self._time_of(clock, src, ts, topic))

    # ---- per kind -------------------------------------------------------------------------

    def _book(self, st: TopicState, msg, now: int):
        ist = st.inst or self.registry.link(st)
        why = self._data_problem(st, ist, msg.venue, msg.instrument, now)
        if why is not None:
            if why[0] == "universe" and st.last_bids is not None:
                # It had clean books and has left the universe (the band or the expiry window
                # moved, it was retired): downstream must stop trusting the last one.
                return self._reject_book(st, msg, *why)
            return self._reject(st, msg, *why)
        if msg.stale:  # the feed lost the book: say so downstream, levels dropped (untrusted)
            st.marked = True
            self.stats["stale_passed"] += 1
            return ((st.out, stale_book(msg, self.clock.time_ns())),)
        ts_event, ts_recv = msg.ts_event, msg.ts_recv
        if self.max_age_ns and now - (ts_event if ts_event < ts_recv else ts_recv) > self.max_age_ns:
            return self._reject_book(st, msg, "stale", self._age(msg, now))
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

    def _instrument_data_problem(self, st: TopicState, ist, msg, now: int):
        """Why a ticker or trade is refused before its own values are looked at (universe,
        unknown instrument, topic mismatch, stale), as ``(rule, detail)``; None to go on."""
        why = self._data_problem(st, ist, msg.venue, msg.instrument, now)
        if why is not None:
            return why
        ts_event, ts_recv = msg.ts_event, msg.ts_recv
        if self.max_age_ns and now - (ts_event if ts_event < ts_recv else ts_recv) > self.max_age_ns:
            return "stale", self._age(msg, now)
        return None

    def _ticker(self, st: TopicState, msg, now: int):
        ist = st.inst or self.registry.link(st)
        why = self._instrument_data_problem(st, ist, msg, now)
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

    def _trade(self, st: TopicState, msg, now: int):
        ist = st.inst or self.registry.link(st)
        why = self._instrument_data_problem(st, ist, msg, now)
        if why is not None:
            return self._reject(st, msg, *why)
        problem = trade_problem(msg, ist.tick, ist.steps, self.tolerance)
        if problem is not None:
            return self._reject(st, msg, *problem)
        if st.trade_ids.seen(msg.trade_id):
            return self._reject(st, msg, "duplicate", f"trade_id {msg.trade_id} seen before")
        self.stats["clean_trades"] += 1
        return ((st.out, clean_trade(msg, self.clock.time_ns())),)

    def _index(self, st: TopicState, msg, now: int):
        if msg.venue != st.venue or msg.name != st.name:
            return self._reject(st, msg, "topic_mismatch", f"payload {msg.venue}/{msg.name}")
        if not st.allowed:
            return self._reject(st, msg, "universe", f"index {msg.name}: currency not in "
                                f"{sorted(self.universe.currencies)}")
        ts_event, ts_recv = msg.ts_event, msg.ts_recv
        if self.max_age_ns and now - (ts_event if ts_event < ts_recv else ts_recv) > self.max_age_ns:
            return self._reject(st, msg, "stale", self._age(msg, now))
        problem = positive_problem(msg.price, "price")
        if problem is not None:
            return self._reject(st, msg, *problem)
        price = msg.price
        if self.spikes is not None and self._index_spike(st, msg):
            return self._reject(st, msg, "spike", self._spike_detail(st, price))
        self.universe.note_index(msg.venue, msg.name, price)
        self.stats["clean_indexes"] += 1
        return ((st.out, clean_index(msg, self.clock.time_ns())),)

    def _instrument(self, st: TopicState, msg: Instrument, now: int):
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
            if now >= (msg.expiry_ns or NEVER):
                return self._reject(st, msg, "universe", "expired")
        self.stats["clean_instruments"] += 1
        return ((st.out, clean_instrument(msg, self.clock.time_ns())),)

    # ---- rules shared by the kinds ----------------------------------------------------------

    def _data_problem(self, st: TopicState, ist: InstrumentState | None, venue: str,
                      name: str, now: int) -> tuple[str, str] | None:
        """Rules 2-4 of a book, ticker or trade: unknown instrument, topic/payload mismatch,
        outside the universe at stream time ``now`` (the moneyness band inline: it is on every
        option's path)."""
        if ist is None:
            return "unknown_instrument", f"no md.instrument for {st.venue}/{st.name} yet"
        if name != st.name or venue != st.venue:
            return "topic_mismatch", f"payload {venue}/{name}"
        universe = self.universe
        if ist.static_reason is not None or not ist.valid_from <= now < ist.valid_until:
            return "universe", universe.outside(ist, now)
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

    def _age(self, msg, now: int) -> str:
        return (f"ts_event {(now - msg.ts_event) / 1e9:.3f} s, ts_recv {(now - msg.ts_recv) / 1e9:.3f} s "
                f"behind {msg.src}'s watermark (max_age_s {self.config.max_age_s})")

    # ---- state --------------------------------------------------------------------------------

    def _new_topic(self, topic: str) -> TopicState:
        st = self.registry.topic(topic)
        st.handle = self._handlers.get(st.kind)
        self.stats["topics_evicted"] = self.registry.evicted
        return st

    def _new_clock(self, src: str) -> SourceClock:
        clock = self.registry.clock(src)
        self.stats["topics_evicted"] = self.registry.evicted
        return clock

    def _time_of(self, clock: SourceClock, src: str, ts: int, topic: str) -> int:
        """A frame off its src's watermark, or during a run of such frames: the time to judge it
        at (hedgepipe.etl.watermark); a bad stamp or a clock set back counted and logged."""
        marks = self.watermarks
        mark, resets, outliers = clock.mark, marks.resets, marks.outliers
        now = marks.time_of(clock, ts)
        if marks.outliers != outliers:
            self.stats["watermark_outliers"] = marks.outliers
            self.once("watermark_outlier", f"{src}: ts_recv more than watermark_jump_s ahead of its "
                      "watermark, not confirmed by the frames after it (a bad stamp): judged on "
                      "its own stamps, the watermark held", src=src, topic=topic)
        if marks.resets != resets:
            self.stats["watermark_resets"] = marks.resets
            self.once("watermark_reset", f"{src}'s ts_recv went back: "
                      f"{self.config.watermark_confirm_frames} frames in a row agree, so its "
                      "clock was set back; the watermark restarts from them", topic=topic,
                      src=src, back_s=round((mark - clock.mark) / 1e9, 3))
        return now


main = daemon_command(EtlFilterService)
