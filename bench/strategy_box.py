"""``python -m bench.strategy_box``: strategy-box's re-evaluation cost, per update and per scan.

Everything runs in process on one core, on market data generated here (seeded):

1. **Per update, one 200-strike expiry** (strikes 50,000-149,500 every 500, a listed future at
   100,000 ± 2.5, 30 days, the simulator's smile): option books whose best bid/ask moves
   around the Black-76 fair value with a 1-2 tick spread on Deribit's tick grid (fair value
   always inside the spread, so no box or parity trade can pass: the normal case). A random
   strike, call or put, per update. Measured as

   - the chain-level path: ``ExpiryChain.set_quote`` + ``Evaluator.at_strike``;
   - the handler path: ``StrategyBoxService.on_message(topic, CleanBook)``: market lookup,
     the same evaluation, and the opportunity bookkeeping;
   - the busy case: the same handler with the ATM call quoted ``--mispricing`` BTC below
     fair, so ~200 boxes (every box and the reversal on that strike) are open and most
     updates publish an ``update``.

2. **Per update, the simulator's default BTC chain**: ``SyntheticMarket(seed=1)`` as
   ``deribit-sim`` lists it (6 expiries, 24 strikes, 4 futures and the perpetual), its
   instruments and books turned into clean messages the way the pipeline does
   (``parse_instrument``, ``DeribitMarketData``, etl-filter's ``clean_*`` builders), then
   the book changes of ``--sim-steps`` market steps replayed (with one option ticker per
   future-less expiry per step, as the forward of those expiries comes from tickers).

3. **Scans**: the full O(N^2) scan of the 200-strike expiry (``Evaluator.whole``, and the
   bare ``ExpiryChain.box_edges`` over all pairs, both sides), the O(N) best pair
   (``ExpiryChain.best``, both sides), and the full-universe best-box refresh: ``best`` for
   both sides over every expiry of the simulator's default BTC+ETH market.

Latency is per call (``time.perf_counter_ns`` around each, ~0.1 µs of its own), after a
warm-up, the collector left on as in the daemon. Throughput (``calls/s``) is calls / wall
time of the same timed loop; in the simulator rows, where other messages are interleaved, it
is 1 / the mean of the timed calls. ``out``: messages published (handler rows) or passing
structures returned (chain-level rows). Targets (issue 5): per-update p99 <= 50 µs;
full-universe best-box refresh <= 1 ms. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import random
import sys
import time

import msgspec
import numpy as np

from hedgepipe import messages as m
from hedgepipe.boxes.chain import CALL, LONG, PUT, SHORT
from hedgepipe.clock import SystemClock, expiry_code
from hedgepipe.daemons.strategy_box import StrategyBoxConfig, StrategyBoxService
from hedgepipe.etl.clean import clean_book, clean_index, clean_instrument, clean_ticker
from hedgepipe.etl.derive import top_fields
from hedgepipe.sim import black76
from hedgepipe.sim.synthetic import OPTION_TICK_STEPS, SyntheticMarket, smile
from hedgepipe.venues.deribit.instruments import parse_instrument
from hedgepipe.venues.deribit.marketdata import DeribitMarketData

TARGET_UPDATE_P99_US = 50.0
TARGET_REFRESH_US = 1000.0
MS = 1_000_000
DAY_NS = 86_400 * 10**9
#: Stream start (ms): fixed, so the simulator lists the same expiries on every run.
START_MS = 1_780_000_000_000
T0 = START_MS * MS
#: Stream time between two option updates of the 200-strike expiry: every leg stays well
#: inside the freshness gate (5 s) for the whole run.
STEP_NS = 10_000
FORWARD = 100_000.0
STRIKES = [50_000.0 + 500.0 * i for i in range(200)]
DAYS = 30
OPTION_TICK, OPTION_LOT = 0.0001, 0.1


# ---- the 200-strike expiry -----------------------------------------------------------------------

def _option_instrument(name: str, strike: float, call: bool, expiry_ns: int) -> m.CleanInstrument:
    return m.CleanInstrument(
        venue="deribit", name=name, kind="option", base="BTC", quote="BTC", settle="BTC",
        tick_size=OPTION_TICK, min_amount=OPTION_LOT, contract_size=1.0, inverse=True,
        tick_steps=[(s["above_price"], s["tick_size"]) for s in OPTION_TICK_STEPS],
        expiry_ns=expiry_ns, strike=strike, option_type="call" if call else "put",
        src="etl-filter", ts_event=T0, ts_recv=T0, up_src="feed-deribit")


def _clean_book(name: str, bid, bid_amount, ask, ask_amount, ts: int) -> m.CleanBook:
    bids = [] if bid is None else [(bid, bid_amount)]
    asks = [] if ask is None else [(ask, ask_amount)]
    return m.CleanBook(venue="deribit", instrument=name, bids=bids, asks=asks, ts_event=ts - MS,
                       ts_recv=ts, ts_clean=ts, up_src="feed-deribit",
                       **dict(zip(("mid", "spread", "spread_bps", "microprice"),
                                  top_fields(bid, bid_amount, ask, ask_amount))))


def _tick(price: float) -> float:
    return black76.tick_at(price, OPTION_TICK, OPTION_TICK_STEPS)


def quote_around(fair: float, rnd: random.Random) -> tuple[float | None, float]:
    """(bid, ask) on Deribit's grid with ``fair`` inside, 1 or 2 ticks apart; bid None below a tick."""
    bid = black76.round_to_tick(fair, OPTION_TICK, OPTION_TICK_STEPS, "down")
    ask = black76.round_to_tick(fair, OPTION_TICK, OPTION_TICK_STEPS, "up")
    if ask == bid:
        ask = round(ask + _tick(ask), 10)
    elif rnd.random() < 0.5:  # a second tick, on one side or the other
        if rnd.random() < 0.5:
            bid = round(bid - _tick(bid - 1e-12), 10)
        else:
            ask = round(ask + _tick(ask), 10)
    return (bid if bid >= OPTION_TICK - 1e-12 else None), ask


class Expiry200:
    """The 200-strike expiry: its messages, and a stream of best bid/ask updates."""

    def __init__(self, seed: int, mispricing: float = 0.0):
        self.rnd = random.Random(seed)
        expiry_ms = START_MS + DAYS * 86_400_000
        self.expiry_ns = expiry_ms * MS
        self.code = expiry_code(expiry_ms)
        self.future = f"BTC-{self.code}"
        t = DAYS / 365.0
        self.names = [[f"BTC-{self.code}-{k:.0f}-{cp}" for k in STRIKES] for cp in "CP"]
        self.fair = [[black76.price_inverse(FORWARD, k, t, smile(FORWARD, k, t), option == CALL)
                      for k in STRIKES] for option in (CALL, PUT)]
        self.atm = STRIKES.index(FORWARD)
        if mispricing:  # the ATM call quoted this many BTC below fair, for the whole run
            self.fair[CALL][self.atm] -= mispricing
        self.topics = [[m.md_topic("book", "deribit", n, stage="clean") for n in names]
                       for names in self.names]

    def setup(self) -> list[tuple[str, object]]:
        """Instruments, the future's book, every option's first book (all at T0)."""
        frames = [(m.md_topic("instrument", "deribit", self.future, stage="clean"), m.CleanInstrument(
            venue="deribit", name=self.future, kind="future", base="BTC", quote="USD", settle="BTC",
            tick_size=2.5, min_amount=10.0, contract_size=10.0, inverse=True,
            expiry_ns=self.expiry_ns, src="etl-filter", ts_event=T0, ts_recv=T0))]
        for option in (CALL, PUT):
            for k, strike in enumerate(STRIKES):
                name = self.names[option][k]
                frames.append((m.md_topic("instrument", "deribit", name, stage="clean"),
                               _option_instrument(name, strike, option == CALL, self.expiry_ns)))
        frames.append((m.md_topic("book", "deribit", self.future, stage="clean"),
                       _clean_book(self.future, FORWARD - 2.5, 1e6, FORWARD + 2.5, 1e6, T0)))
        for option in (CALL, PUT):
            for k in range(len(STRIKES)):
                frames.append(self.update(k, option, T0)[1])
        return frames

    def _amount(self) -> float:
        return round(self.rnd.choice((0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0)) * 10 * OPTION_LOT, 4)

    def update(self, k: int, option: int, ts: int):
        """((k, option, bid, bid_amount, ask, ask_amount, ts), (topic, CleanBook))."""
        bid, ask = quote_around(self.fair[option][k], self.rnd)
        if ask <= 0:
            ask = OPTION_TICK
        bid_amount = self._amount() if bid is not None else None
        ask_amount = self._amount()
        name = self.names[option][k]
        return ((k, option, bid, bid_amount, ask, ask_amount, ts),
                (self.topics[option][k], _clean_book(name, bid, bid_amount, ask, ask_amount, ts)))

    def updates(self, count: int, start_ns: int):
        """``count`` updates of a random strike, call or put, STEP_NS apart from ``start_ns``."""
        rnd = self.rnd
        n = len(STRIKES)
        return [self.update(rnd.randrange(n), rnd.randrange(2), start_ns + i * STEP_NS)
                for i in range(count)]


def fresh_service() -> StrategyBoxService:
    svc = StrategyBoxService(StrategyBoxConfig(prime_from_redis=False), SystemClock())
    svc.on_start()
    return svc


def feed(svc: StrategyBoxService, frames) -> int:
    published = 0
    for topic, msg in frames:
        published += len(svc.on_message(topic, msg))
    return published


# ---- timing -------------------------------------------------------------------------------------

class Row(msgspec.Struct):
    label: str
    strikes: str
    samples: list[int]  # ns per call
    wall_s: float
    published: int = 0
    note: str = ""

    def pct(self, q: float) -> float:
        s = self.samples
        return s[min(len(s) - 1, int(len(s) * q))] / 1e3

    @property
    def rate(self) -> float:
        return len(self.samples) / self.wall_s


def time_calls(fn, items) -> tuple[list[int], float, int]:
    """Call ``fn(item)`` for each item: (sorted ns per call, wall s of the loop, outputs)."""
    clock = time.perf_counter_ns
    samples = []
    append = samples.append
    published = 0
    gc.collect()
    start = clock()
    for item in items:
        t = clock()
        out = fn(item)
        append(clock() - t)
        if out:
            published += len(out)
    wall = (clock() - start) / 1e9
    samples.sort()
    return samples, wall, published


def repeat_ns(fn, repeats: int, warmup: int = 20) -> list[int]:
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    out = []
    gc.collect()
    for _ in range(repeats):
        t = clock()
        fn()
        out.append(clock() - t)
    out.sort()
    return out


# ---- 1. the 200-strike expiry --------------------------------------------------------------------

def bench_expiry200(count: int, warmup: int, mispricing: float) -> list[Row]:
    rows = []
    total = warmup + count
    # quiet: the chain-level path, then the handler, on the same updates (fresh state each)
    src = Expiry200(seed=11)
    setup = src.setup()
    stream = src.updates(total, T0 + STEP_NS)
    svc = fresh_service()
    feed(svc, setup)
    expiry = next(iter(svc.market.expiries.values()))
    chain, evaluator = expiry.chain, svc.evaluator

    def chain_level(u):
        k, option, bid, bid_amount, ask, ask_amount, ts = u
        chain.set_quote(k, option, bid, bid_amount, ask, ask_amount, ts)
        return evaluator.at_strike(expiry, k, ts)

    quotes = [u for u, _ in stream]
    for u in quotes[:warmup]:
        chain_level(u)
    samples, wall, passing = time_calls(chain_level, quotes[warmup:])
    rows.append(Row("quiet: set_quote + Evaluator.at_strike", "200", samples, wall, passing))

    svc = fresh_service()
    feed(svc, setup)
    frames = [f for _, f in stream]
    on_message = svc.on_message
    feed(svc, frames[:warmup])
    samples, wall, published = time_calls(lambda f: on_message(*f), frames[warmup:])
    rows.append(Row("quiet: on_message(CleanBook)", "200", samples, wall, published,
                    f"opened {svc.stats['opened']}"))

    # busy: the ATM call mispriced for the whole run
    src = Expiry200(seed=12, mispricing=mispricing)
    setup = src.setup()
    stream = src.updates(total, T0 + STEP_NS)
    svc = fresh_service()
    feed(svc, setup)
    opened = svc.stats["opened"]
    frames = [f for _, f in stream]
    on_message = svc.on_message
    feed(svc, frames[:warmup])
    before = dict(svc.stats)
    samples, wall, published = time_calls(lambda f: on_message(*f), frames[warmup:])
    s = svc.stats
    rows.append(Row(f"busy (ATM call {mispricing:g} BTC cheap): on_message", "200", samples, wall,
                    published, f"open {s['open']} (setup opened {opened}); in the run: "
                    f"{s['updated'] - before['updated']:,} updates, {s['opened'] - before['opened']} "
                    f"opened, {s['closed'] - before['closed']} closed"))
    return rows


def bench_scans(repeats: int) -> tuple[list[Row], StrategyBoxService]:
    src = Expiry200(seed=11)
    svc = fresh_service()
    feed(svc, src.setup())
    expiry = next(iter(svc.market.expiries.values()))
    chain, evaluator = expiry.chain, svc.evaluator
    h = evaluator.gates.hedge_rate
    now = T0 + STEP_NS
    fresh = now - evaluator.gates.max_quote_age_ns
    i, j = chain.all_pairs()
    rows = []
    for label, fn in (
            ("Evaluator.whole (boxes + parity, gates)", lambda: evaluator.whole(expiry, now)),
            ("box_edges over all pairs, long + short",
             lambda: (chain.box_edges(LONG, i, j, h), chain.box_edges(SHORT, i, j, h))),
            ("best pair, long + short (ExpiryChain.best)",
             lambda: (chain.best(LONG, h, fresh), chain.best(SHORT, h, fresh))),
            ("forward moved: could_pass + whole",
             lambda: evaluator.could_pass(expiry, now) and evaluator.whole(expiry, now))):
        rows.append(Row(label, "200", repeat_ns(fn, repeats), 0.0))
    assert not evaluator.whole(expiry, now), "the quiet chain must have nothing passing"
    return rows, svc


# ---- 2. the simulator's chain --------------------------------------------------------------------

class SimStream:
    """The simulator's default market as clean messages: setup, then per step its changes."""

    def __init__(self, currencies: tuple[str, ...], max_strikes: int, seed: int = 1):
        self.now_ms = START_MS
        self.market = SyntheticMarket(seed=seed, currencies=currencies, clock_ms=lambda: self.now_ms,
                                      max_strikes=max_strikes)
        specs = [s for c in currencies for s in self.market.instruments(c)]
        self.instruments = {s["instrument_name"]: parse_instrument(s) for s in specs}
        self.md = DeribitMarketData(instruments=self.instruments)
        futures = {(i.base, i.expiry_ns) for i in self.instruments.values() if i.kind == "future"}
        # one option per future-less expiry: its ticker's underlying_price is that expiry's forward
        self.forward_tickers = {}
        for inst in self.instruments.values():
            if inst.kind == "option" and (inst.base, inst.expiry_ns) not in futures:
                self.forward_tickers.setdefault((inst.base, inst.expiry_ns), inst.name)
        self.seq = 0

    def _clean(self, topic: str, msg, now: int):
        self.seq += 1
        msg.src, msg.seq = "feed-deribit", self.seq
        kind = topic.split(".", 2)[1]
        if kind == "book":
            b, a = (msg.bids[0] if msg.bids else (None, None)), (msg.asks[0] if msg.asks else (None, None))
            clean = clean_book(msg, top_fields(b[0], b[1], a[0], a[1]), now)
        elif kind == "ticker":
            clean = clean_ticker(msg, top_fields(msg.bid, msg.bid_amount, msg.ask, msg.ask_amount), now)
        elif kind == "index":
            clean = clean_index(msg, now)
        else:
            return None
        return "clean." + topic[3:], clean

    def _notify(self, channel: str, data, ts: int) -> list:
        outs, _ = self.md.on_notification(channel, data, ts)
        return [c for c in (self._clean(t, msg, ts) for t, msg in outs) if c is not None]

    def setup(self) -> list[tuple[str, object]]:
        ts = self.now_ms * MS
        frames = []
        for inst in self.instruments.values():
            inst.src, inst.ts_event, inst.ts_recv = "feed-deribit", ts, ts
            frames.append((m.md_topic("instrument", "deribit", inst.name, stage="clean"),
                           clean_instrument(inst, ts)))
        for name, inst in self.instruments.items():
            frames += self._notify(f"book.{name}.raw", self.market.book_snapshot(name), ts)
            if inst.kind == "option":
                frames += self._notify(f"ticker.{name}.100ms", self.market.ticker(name), ts)
        for index in ("btc_usd", "eth_usd"):
            if index[:3].upper() in self.market.currencies:
                frames += self._notify(f"deribit_price_index.{index}", self.market.index_event(index), ts)
        return frames

    def steps(self, count: int) -> list[tuple[str, object]]:
        """The clean messages of ``count`` market steps (index, books, forward tickers)."""
        frames = []
        tick_ms = int(self.market.tick_s * 1000)
        for _ in range(count):
            self.now_ms += tick_ms
            ts = self.now_ms * MS
            for n, (key, data) in enumerate(self.market.step()):
                kind, _, name = key.partition(".")
                if kind == "trades":
                    continue  # strategy-box ignores trades
                channel = f"{key}.raw" if kind == "book" else key
                frames += self._notify(channel, data, ts + n * 1000)
            for name in self.forward_tickers.values():
                frames += self._notify(f"ticker.{name}.100ms", self.market.ticker(name), ts + 900_000)
        return frames


def bench_sim(steps: int, warmup_steps: int, max_strikes: int) -> tuple[list[Row], str]:
    sim = SimStream(("BTC",), max_strikes)
    setup = sim.setup()
    warm = sim.steps(warmup_steps)
    stream = sim.steps(steps)
    kinds: dict[str, int] = {}
    for topic, msg in stream:
        kind = topic.split(".")[1]
        if kind == "book":
            kind = "option book" if sim.instruments[msg.instrument].kind == "option" else "future book"
        kinds[kind] = kinds.get(kind, 0) + 1
    options = [i for i in sim.instruments.values() if i.kind == "option"]
    expiries = len({i.expiry_ns for i in options})
    shape = f"{expiries}x{len(options) // expiries // 2}"
    described = (f"{len(sim.instruments)} instruments ({len(options)} options, {expiries} expiries); "
                 f"{steps:,} steps of {sim.market.tick_s * 1000:.0f} ms: "
                 + ", ".join(f"{v:,} {k}" for k, v in kinds.items()))
    option_topics = frozenset(m.md_topic("book", "deribit", n, stage="clean")
                              for n, i in sim.instruments.items() if i.kind == "option")
    rows = []

    # the handler: every message fed, the option books timed
    svc = fresh_service()
    feed(svc, setup)
    feed(svc, warm)
    on_message = svc.on_message
    clock = time.perf_counter_ns
    samples, other, published = [], [], 0
    gc.collect()
    start = clock()
    for topic, msg in stream:
        t = clock()
        out = on_message(topic, msg)
        dt = clock() - t
        (samples if topic in option_topics else other).append(dt)
        published += len(out)
    wall = (clock() - start) / 1e9
    samples.sort()
    other.sort()
    rows.append(Row("sim BTC: on_message(CleanBook), option books", shape, samples,
                    sum(samples) / 1e9, published, f"{svc.stats['opened']} opened; whole stream "
                    f"{len(stream) / wall:,.0f} msg/s"))
    rows.append(Row("sim BTC: other messages (futures, tickers, index)", shape, other,
                    sum(other) / 1e9))

    # the chain-level path on the same option updates (other messages fed, not timed)
    svc = fresh_service()
    feed(svc, setup)
    feed(svc, warm)
    market, evaluator = svc.market, svc.evaluator
    samples, passing = [], 0
    gc.collect()
    for topic, msg in stream:
        if topic not in option_topics:
            svc.on_message(topic, msg)
            continue
        expiry, strike, option = market.options[msg.instrument]
        bid = msg.bids[0] if msg.bids else (None, None)
        ask = msg.asks[0] if msg.asks else (None, None)
        t = clock()
        k = expiry.chain.index_of(strike)
        expiry.chain.set_quote(k, option, bid[0], bid[1], ask[0], ask[1], msg.ts_recv)
        passing += len(evaluator.at_strike(expiry, k, msg.ts_recv))
        samples.append(clock() - t)
    samples.sort()
    rows.append(Row("sim BTC: index_of + set_quote + at_strike", shape, samples, sum(samples) / 1e9,
                    passing))
    return rows, described


# ---- 3. the full universe -----------------------------------------------------------------------

def bench_universe(repeats: int, max_strikes: int) -> tuple[list[Row], str]:
    sim = SimStream(("BTC", "ETH"), max_strikes)
    svc = fresh_service()
    feed(svc, sim.setup())
    expiries = list(svc.market.expiries.values())
    evaluator = svc.evaluator
    h = evaluator.gates.hedge_rate
    now = sim.now_ms * MS
    fresh = now - evaluator.gates.max_quote_age_ns
    chains = [e.chain for e in expiries]

    def refresh():
        for chain in chains:
            chain.best(LONG, h, fresh)
            chain.best(SHORT, h, fresh)

    def bound_only():
        for expiry in expiries:
            evaluator.could_pass(expiry, now)

    def whole():
        for expiry in expiries:
            evaluator.whole(expiry, now)

    strikes = sum(len(c) for c in chains)
    shape = f"{len(chains)}x{strikes // max(len(chains), 1)}"
    rows = [Row("universe best-box refresh: best long + short, every expiry", shape,
                repeat_ns(refresh, repeats), 0.0),
            Row("universe Evaluator.could_pass, every expiry", shape, repeat_ns(bound_only, repeats), 0.0),
            Row("universe Evaluator.whole, every expiry (full-scan timer)", shape,
                repeat_ns(whole, max(repeats // 10, 20)), 0.0)]
    no_forward = sum(1 for e in expiries if evaluator.chain_problem(e, now) is not None)
    described = (f"{len(chains)} expiries (BTC+ETH), {strikes} strikes, "
                 f"{sum(1 for e in expiries if e.future) } with a listed future"
                 + (f"; {no_forward} with a chain problem (not evaluated)" if no_forward else ""))
    return rows, described


# ---- output -------------------------------------------------------------------------------------

_HEAD = (f"{'':<58} {'strikes':>7} {'calls':>7} {'p50 µs':>8} {'p99 µs':>8} {'p99.9 µs':>9} "
         f"{'max µs':>9} {'calls/s':>9} {'out':>6}")


def _line(r: Row, rate: bool = True) -> str:
    return (f"{r.label:<58} {r.strikes:>7} {len(r.samples):>7,} {r.pct(0.5):>8.1f} {r.pct(0.99):>8.1f} "
            f"{r.pct(0.999):>9.1f} {r.samples[-1] / 1e3:>9.1f} "
            f"{(f'{r.rate:,.0f}' if rate and r.wall_s else '-'):>9} "
            f"{(f'{r.published:,}' if rate and r.wall_s else '-'):>6}")


def _print_rows(title: str, rows: list[Row], rate: bool = True) -> None:
    print(title)
    print(_HEAD)
    for r in rows:
        print(_line(r, rate))
        if r.note:
            print(f"{'':<4}{r.note}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.strategy_box", description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=40_000, help="timed updates per 200-strike case [40000]")
    ap.add_argument("--warmup", type=int, default=2_000, help="untimed updates before each [2000]")
    ap.add_argument("--sim-steps", type=int, default=1_500, help="simulator steps replayed [1500]")
    ap.add_argument("--max-strikes", type=int, default=24, help="strikes per expiry in the simulator "
                    "(deribit-sim's default) [24]")
    ap.add_argument("--repeats", type=int, default=2_000, help="repeats of each scan [2000]")
    ap.add_argument("--mispricing", type=float, default=0.005, help="busy case: BTC the ATM call is "
                    "quoted below fair [0.005]")
    ap.add_argument("--profile", metavar="FILE", help="also cProfile the quiet 200-strike handler run "
                    "into FILE and print its top lines")
    args = ap.parse_args(argv)
    logging.getLogger("hedgepipe").setLevel(logging.CRITICAL)
    started = time.monotonic()
    print(f"# strategy-box bench: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"numpy {np.__version__}, msgspec {msgspec.__version__}; load average "
          f"{os.getloadavg()[0]:.2f}; one core, in process", flush=True)

    rows200 = bench_expiry200(args.count, args.warmup, args.mispricing)
    print()
    _print_rows(f"per update, one 200-strike expiry ({STRIKES[0]:,.0f}-{STRIKES[-1]:,.0f} by 500, "
                f"future {FORWARD:,.0f} ± 2.5, {DAYS} days; 1-2 tick spreads around Black-76):", rows200)

    sim_rows, sim_text = bench_sim(args.sim_steps, 50, args.max_strikes)
    print()
    _print_rows(f"per update, the simulator's default BTC chain ({sim_text}):", sim_rows)

    scan_rows, _ = bench_scans(max(args.repeats // 4, 50))
    uni_rows, uni_text = bench_universe(args.repeats, args.max_strikes)
    print()
    _print_rows("scans, per call:", scan_rows, rate=False)
    print(f"  universe: {uni_text}")
    for r in uni_rows:
        print(_line(r, rate=False))

    quiet = rows200[1]
    refresh = uni_rows[0]
    print()
    print("targets (measured, not asserted):")
    for what, figure, limit in (
            ("per-update p99, 200 strikes, chain level", rows200[0].pct(0.99), TARGET_UPDATE_P99_US),
            ("per-update p99, 200 strikes, handler", quiet.pct(0.99), TARGET_UPDATE_P99_US),
            ("per-update p99, 200 strikes, handler, busy", rows200[2].pct(0.99), TARGET_UPDATE_P99_US),
            ("per-update p99, sim BTC chain, handler", sim_rows[0].pct(0.99), TARGET_UPDATE_P99_US),
            ("full-universe best-box refresh p99", refresh.pct(0.99), TARGET_REFRESH_US)):
        verdict = "met" if figure <= limit else "NOT met"
        print(f"  {what} <= {limit:,.0f} µs: {figure:,.1f} µs — {verdict}")
    print(f"\n{time.monotonic() - started:.0f} s")

    if args.profile:
        import cProfile
        import pstats
        src = Expiry200(seed=11)
        svc = fresh_service()
        feed(svc, src.setup())
        frames = [f for _, f in src.updates(args.count, T0 + STEP_NS)]
        cProfile.runctx("feed(svc, frames)", {"feed": feed}, {"svc": svc, "frames": frames}, args.profile)
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
