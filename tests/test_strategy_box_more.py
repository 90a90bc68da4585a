"""strategy-box, continued: priming from Redis, definitions it refuses, instruments it does not
know, which perpetual or future hedges which chain, futures kept fresh by tickers, the full scan
after an unevaluated forward move, and the per-strike path against the whole-chain evaluation on
a random 60-strike stream (with its bounds asked at the sharpest floor).

Also: the instruments_primed count, and re-evaluation when a forward or hedge is young again at
unchanged prices.

The market is tests/test_strategy_box.py's (the five-strike BOX_MIDS chain, the 95000 call 0.01
BTC cheap, which opens exactly CHEAP_CALL_IDS); its helpers drive the handler as the runtime does.
"""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
import redis

from hedgepipe import messages as m
from hedgepipe.boxes.chain import CALL, PUT, ChainKey, ExpiryChain
from hedgepipe.boxes.evaluate import Evaluator
from hedgepipe.boxes.fees import FeeSchedule
from hedgepipe.clock import FakeClock
from hedgepipe.runtime import run_handler
from hedgepipe.store.redis_state import hash_key

from .frames import (BOX_PREFIX, DAY, MS, T0, box_books, box_instruments, box_option,
                     future_book, instrument, md, md_book, md_index)
from .test_strategy_box import (C90, C95, CHEAP_CALL_IDS, FUT, FUTURE_ASK, FUTURE_BID, LBOX, LINEAR,
                                LINEAR_FIELDS, LINEAR_MARKET, MARKET, REV, S, _quoted_as_booked,
                                book, each, events, feed, market, opened, service, signals, ticker, timer)

NAN = float("nan")


# ---- 1. priming from Redis --------------------------------------------------------------------------

RETIRED = "BTC-27DEC26-120000-C"


def clean_topic(name: str) -> str:
    return f"clean.instrument.deribit.{name}"


def store_instruments(url: str) -> int:
    """Write the chain's definitions as store-writer keeps them: field = topic, value = the
    clean.instrument payload as received (hash ``hp:last:clean.instrument``). Also a retired
    option, which must not be learned. Returns how many active definitions were stored."""
    fields = {}
    for topic, msg in box_instruments():                       # the future and the ten options
        clean = m.CleanInstrument(**m.to_builtins(msg))
        clean.src, clean.seq = "etl-filter", 1
        fields[clean_topic(msg.name)] = m.encode(clean)
    retired = m.CleanInstrument(**m.to_builtins(instrument(RETIRED, active=False)))
    fields[clean_topic(RETIRED)] = m.encode(retired)
    client = redis.Redis.from_url(url)
    try:
        client.hset(hash_key(b"clean.instrument"), mapping=fields)
    finally:
        client.close()
    return len(fields) - 1


def books_only() -> list:
    """The market without a single definition: the future's book, then every option's book."""
    return [future_book(FUTURE_BID, FUTURE_ASK)] + box_books(over=MARKET)


@pytest.mark.parametrize("prime, inputs", [(True, ["-"]), ("auto", ["etl-filter"]),
                                           ("auto", ["-", "etl-filter"])])
def test_primed_from_redis_books_alone_open_the_structures(redis_url, prime, inputs):
    assert store_instruments(redis_url) == 11
    svc = service(prime_from_redis=prime, inputs=inputs, redis_url=redis_url)
    outs = run_handler(svc, books_only())
    assert events(outs) == each(CHEAP_CALL_IDS, "open")
    assert opened(outs)[LBOX].edge_usd == pytest.approx(677.731946, abs=1e-6)   # as with the frames
    assert svc.stats["instruments_primed"] == 11 and svc.stats["prime_unavailable"] == 0
    assert svc.stats["unknown_instrument"] == 0
    # the retired option was not learned: its book is an unknown instrument's
    assert RETIRED not in svc.market.options
    assert feed(svc, [book(RETIRED, 0.0001, 1.0, 0.0002, 1.0)]) == []
    assert svc.stats["unknown_instrument"] == 1


def test_priming_publishes_nothing(redis_url):
    store_instruments(redis_url)
    svc = service(prime_from_redis=True, redis_url=redis_url)
    assert run_handler(svc, []) == []
    assert svc.stats["instruments_primed"] == 11
    assert len(svc.market.options) == 10 and set(svc.market.futures) == {FUT}


def test_an_unreachable_redis_is_counted_and_the_daemon_learns_from_the_stream(short_tmp, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)      # it would win over the configured URL
    svc = service(prime_from_redis=True, redis_url=f"unix://{short_tmp}/no-such.sock")
    outs = run_handler(svc, books_only())
    assert outs == []                                   # nothing known: every book is unknown
    assert svc.stats["prime_unavailable"] == 1 and svc.stats["instruments_primed"] == 0
    assert svc.stats["unknown_instrument"] == 11
    outs = feed(svc, box_instruments() + [future_book(FUTURE_BID, FUTURE_ASK, seq=2)]
                + box_books(over=MARKET, seq=2))
    assert events(outs) == each(CHEAP_CALL_IDS, "open")


def test_reading_only_pipes_with_auto_does_not_touch_redis(redis_url, short_tmp, monkeypatch):
    # A Redis holding the instruments: not read (nothing primed, the books are unknown).
    store_instruments(redis_url)
    piped = service(prime_from_redis="auto", inputs=["-"], redis_url=redis_url)
    assert run_handler(piped, books_only()) == []
    assert piped.stats["instruments_primed"] == 0 and piped.stats["prime_unavailable"] == 0
    assert piped.stats["unknown_instrument"] == 11 and piped.market.options == {}
    # No Redis at all: not even tried (an attempt would count prime_unavailable).
    monkeypatch.delenv("REDIS_URL", raising=False)
    nowhere = service(prime_from_redis="auto", inputs=["-"], redis_url=f"unix://{short_tmp}/no-such.sock")
    run_handler(nowhere, [])
    assert nowhere.stats["prime_unavailable"] == 0


def test_instruments_primed_counts_the_instruments_learned(redis_url):
    # Store-writer keeps both kinds when both are on the bus: the chain's 11 definitions under
    # clean.instrument and again under md.instrument; also an ETH option (currencies = BTC) and
    # a BTC option with a NaN strike (refused). 11 instruments are learned, as etl-filter counts
    # its instruments_primed (definitions taken).
    store_instruments(redis_url)
    raw = {topic: m.encode(msg) for topic, msg in box_instruments()}
    eth = instrument("ETH-27DEC26-3000-C")
    nan_strike = instrument("BTC-27DEC26-125000-C", strike=NAN)
    clean = {clean_topic(x.name): m.encode(m.CleanInstrument(**m.to_builtins(x))) for x in (eth, nan_strike)}
    client = redis.Redis.from_url(redis_url)
    try:
        client.hset(hash_key(b"md.instrument"), mapping=raw)
        client.hset(hash_key(b"clean.instrument"), mapping=clean)
    finally:
        client.close()
    svc = service(prime_from_redis=True, redis_url=redis_url, currencies=["BTC"])
    assert run_handler(svc, []) == []
    assert len(svc.market.options) == 10 and set(svc.market.futures) == {FUT}
    assert svc.stats["rejected_instrument"] == 1
    assert svc.stats["instruments_primed"] == 11


# ---- 2. instruments it does not know ---------------------------------------------------------------

@pytest.mark.parametrize("source", ["book", "ticker"])
def test_quotes_of_an_instrument_never_defined_are_counted_and_change_nothing(source):
    svc = service(quote_source=source)
    frames = box_instruments() + [future_book(FUTURE_BID, FUTURE_ASK)]
    if source == "ticker":
        frames.append(ticker(FUT, FUTURE_BID, 1e5, FUTURE_ASK, 1e5, underlying_price=None))
    quote = book if source == "book" else ticker
    frames += [quote(name, *q) for name, q in _quoted_as_booked().items()]
    assert events(run_handler(svc, frames)) == each(CHEAP_CALL_IDS, "open")
    options, futures = set(svc.market.options), set(svc.market.futures)
    strikes = list(next(iter(svc.market.expiries.values())).chain.strikes)
    quotes = svc.stats["quotes"]
    # an option of an undefined strike (its ask a bad price: not judged either), an undefined
    # future and an undefined option of another expiry
    outs = feed(svc, [quote("BTC-27DEC26-120000-C", 0.0001, 1.0, -1.0, 1.0, seq=5),
                      quote("BTC-26MAR27", 99000.0, 1e5, 99010.0, 1e5, seq=5),
                      quote("BTC-26MAR27-95000-C", 0.07, 1.0, 0.08, 1.0, seq=5)])
    assert outs == []
    assert svc.stats["unknown_instrument"] == 3
    assert svc.stats["rejected_bad_price"] == 0 and svc.stats["quotes"] == quotes
    assert set(svc.market.options) == options and set(svc.market.futures) == futures
    assert len(svc.market.expiries) == 1
    assert list(next(iter(svc.market.expiries.values())).chain.strikes) == strikes
    assert set(svc.opps.open) == CHEAP_CALL_IDS
    assert timer(svc, "full-scan") == [] and svc.stats["scan_corrections"] == 0


# ---- 3. definitions it refuses ----------------------------------------------------------------------

REFUSED = [
    # (why, instrument name, fields that make its definition unusable)
    ("option NaN strike", C95, dict(strike=NAN)),
    ("option zero strike", C95, dict(strike=0.0)),
    ("option no strike", C95, dict(strike=None)),
    ("option NaN min_amount", C95, dict(min_amount=NAN)),
    ("option zero min_amount", C95, dict(min_amount=0.0)),
    ("option zero contract_size", C95, dict(contract_size=0.0)),
    ("option NaN contract_size", C95, dict(contract_size=NAN)),
    ("option no expiry_ns", C95, dict(expiry_ns=None)),
    ("option no option_type", C95, dict(option_type=None)),
    ("option zero tick_size", C95, dict(tick_size=0.0)),
    ("option NaN tick_size", C95, dict(tick_size=NAN)),
    ("future no expiry_ns", FUT, dict(expiry_ns=None)),
    ("future zero contract_size", FUT, dict(contract_size=0.0)),
    ("perpetual zero min_amount", "BTC-PERPETUAL", dict(kind="perpetual", expiry_ns=None, min_amount=0.0)),
]


@pytest.mark.parametrize("why, name, fields", REFUSED, ids=[r[0] for r in REFUSED])
def test_an_unusable_definition_is_refused_and_counted_and_a_good_one_after_it_works(why, name, fields):
    svc = service()
    assert feed(svc, [(md("instrument", name), instrument(name, **fields))]) == []
    assert svc.stats["rejected_instrument"] == 1
    assert (svc.market.options, svc.market.expiries, svc.market.futures) == ({}, {}, {})
    assert (svc.market.future_of, svc.market.perpetual_of) == ({}, {})
    # its book is then an unknown instrument's
    assert feed(svc, [book(name, 0.0735, 5.0, 0.0745, 2.37)]) == []
    assert svc.stats["unknown_instrument"] == 1 and svc.stats["quotes"] == 0
    # the good definitions, quoted: the cheap call opens its structures as ever
    outs = feed(svc, box_instruments() + [future_book(FUTURE_BID, FUTURE_ASK, seq=3)]
                + box_books(over=MARKET, seq=3))
    assert events(outs) == each(CHEAP_CALL_IDS, "open")
    assert svc.stats["rejected_instrument"] == 1


# ---- 4. which perpetual or future hedges which chain ----------------------------------------------

USDC_PERPETUAL = "BTC_USDC-PERPETUAL"
USDC_FUTURE = "BTC_USDC-27DEC26"
#: Deribit's linear BTC instruments: USDC-settled, amounts in coin, 0.001 BTC a contract.
LINEAR_HEDGE_FIELDS = dict(base="BTC", quote="USDC", settle="USDC", inverse=False, contract_size=0.001,
                           min_amount=0.001, tick_size=2.5)


def usdc_perpetual() -> tuple:
    return (md("instrument", USDC_PERPETUAL),
            instrument(USDC_PERPETUAL, kind="perpetual", expiry_ns=None, **LINEAR_HEDGE_FIELDS))


@pytest.mark.parametrize("usdc_first", [True, False], ids=["USDC perpetual listed first", "listed last"])
def test_a_linear_perpetual_does_not_hedge_an_inverse_chain(usdc_first):
    # The USDC perpetual is listed and quoted (at prices of its own) before or after
    # BTC-PERPETUAL: the inverse chain, with no listed future, hedges on the BTC-settled one.
    svc = service()
    usdc = [usdc_perpetual(), future_book(100100.0, 100105.0, name=USDC_PERPETUAL, amount=50.0)]
    chain = box_instruments(future=False, perpetual=True)
    frames = ((usdc + chain) if usdc_first else (chain + usdc)) + [
        future_book(100010.0, 100015.0, name="BTC-PERPETUAL"),
        ticker(C90, 0.05, 1.0, 0.051, 1.0, underlying_price=100000.0)] + box_books(over=MARKET)
    outs = run_handler(svc, frames)
    assert events(outs) == each(CHEAP_CALL_IDS - {REV}, "open")      # no listed future: no parity
    box = opened(outs)[LBOX]
    # forward 100000 (the underlying price): 5000 - 0.0432 x 100000 x 1.0005 = 677.84; the hedge
    # buys 0.0432 x 2.3 BTC at BTC-PERPETUAL's ask, in USD: 0.09936 x 100015 = 9937.49 USD =
    # 993.7 contracts of 10 USD -> 994 = 9940 USD
    assert box.edge_usd == pytest.approx(677.84, abs=1e-6)
    assert box.hedge == m.SignalLeg(instrument="BTC-PERPETUAL", side="buy", price=100015.0, amount=9940.0,
                                    kind="perpetual")
    assert {s.hedge.instrument for s in signals(outs)} == {"BTC-PERPETUAL"}


def linear_market(with_future: bool) -> list:
    """The linear chain in USD (tests/test_strategy_box.py's: the 95000 call 1000 USD cheap, its
    ask for 2.37), the USDC perpetual, the inverse BTC-27DEC26 future (BTC-settled: not this
    chain's) and, ``with_future``, the USDC future of the same expiry, listed after the options."""
    frames = ([usdc_perpetual(), (md("instrument", FUT), instrument(FUT))]
              + box_instruments(prefix=LINEAR, future=False, **LINEAR_FIELDS))
    if with_future:
        frames.append((md("instrument", USDC_FUTURE), instrument(USDC_FUTURE, **LINEAR_HEDGE_FIELDS)))
        frames.append(future_book(FUTURE_BID, FUTURE_ASK, name=USDC_FUTURE, amount=50.0))
    frames += [future_book(100100.0, 100105.0, name=USDC_PERPETUAL, amount=50.0),
               future_book(99000.0, 99005.0, name=FUT),
               (md("index", "btc_usd"), md_index(1, 100000.0)),
               # an option ticker's underlying price: the chain's forward when no future is listed
               ticker(f"{LINEAR}-90000-C", 1.0, 1.0, 2.0, 1.0, underlying_price=100000.0)]
    return frames + box_books(prefix=LINEAR, over=LINEAR_MARKET, unit=100000.0)


LINEAR_BOXES = {f"{LINEAR}-95000-100000-LBOX", f"{LINEAR}-95000-105000-LBOX", f"{LINEAR}-95000-110000-LBOX",
                f"{LINEAR}-90000-95000-SBOX"}


def test_a_linear_chain_with_its_usdc_future_hedges_a_reversal_in_coin_on_that_future():
    svc = service()
    outs = run_handler(svc, linear_market(with_future=True)) + timer(svc, "forwards")
    rev_id = f"{LINEAR}-95000-REV"
    assert events(outs) == each(LINEAR_BOXES | {rev_id}, "open")
    rev = opened(outs)[rev_id]
    # Option fees: min(0.0003 x 100000 index, 0.125 x price) = 30 USD a leg. Long synthetic at
    # 95000: buy the call at 7450 + 30, sell the put at 3350 - 30: 4160 USD. The reversal sells
    # 1 BTC forward at the USDC future's bid with its fee: 99997.5 x 0.9995 = 99947.50125;
    # edge = -95000 - 4160 + 99947.50125 = 787.50125 USD per BTC.
    assert rev.edge_usd == pytest.approx(787.50125, abs=1e-6)
    assert rev.size == pytest.approx(2.37)                  # min(call ask 2.37, put bid 5): 0.01 lots
    # The hedge: sell 1 x 2.37 BTC, in coin: 2370 contracts of 0.001 BTC, not the inverse
    # BTC-27DEC26 (other settlement) nor the perpetual.
    assert rev.hedge == m.SignalLeg(instrument=USDC_FUTURE, side="sell", price=FUTURE_BID, amount=2.37,
                                    kind="future")
    assert rev.hedge_exact is True and rev.forward == FUTURE_BID
    # the boxes need no hedge: premium in USD, payoff in USD
    assert all(opened(outs)[oid].hedge is None for oid in LINEAR_BOXES)
    assert {round(opened(outs)[oid].edge_usd, 9) for oid in LINEAR_BOXES} == {680.0}


def test_a_linear_chain_without_a_usdc_future_has_no_parity_trades_even_with_a_perpetual():
    # Parity trades need the expiry's listed future (boxes/evaluate.py: Evaluator._parity_here);
    # a forward from the underlying price, the USDC perpetual and the BTC-settled future of the
    # same expiry do not stand in for it.
    svc = service()
    outs = run_handler(svc, linear_market(with_future=False)) + timer(svc, "forwards")
    assert events(outs) == each(LINEAR_BOXES, "open")
    assert all(s.hedge is None for s in signals(outs))
    expiry = next(iter(svc.market.expiries.values()))
    assert expiry.future is None
    assert expiry.chain.forward_bid == expiry.chain.forward_ask == 100000.0    # a forward it has


# ---- 5. futures kept fresh by their tickers -------------------------------------------------------

@pytest.mark.parametrize("future_ticker, closes", [
    ((FUTURE_BID, FUTURE_ASK), False),                 # the book's prices: the book is current
    ((FUTURE_BID, FUTURE_ASK + 0.5), True),            # other prices: the book proves nothing
    ((FUTURE_BID - 0.5, FUTURE_ASK), True),
])
def test_a_future_ticker_showing_its_books_prices_keeps_the_forward_fresh(future_ticker, closes):
    clock = FakeClock(T0)
    svc = service(clock)
    market(svc)
    clock.advance(4.0)
    # at 4 s: every option's ticker shows its book (the options stay fresh); the future's book
    # is not sent again, only its ticker
    option_tickers = [ticker(name, *q, t=4 * S, seq=2) for name, q in _quoted_as_booked().items()]
    bid, ask = future_ticker
    future = ticker(FUT, bid, 1e5, ask, 1e5, t=4 * S, seq=2, underlying_price=None)
    assert feed(svc, option_tickers + [future]) == []
    clock.advance(2.0)                                   # 6 s after the future's book
    outs = timer(svc, "sweep")
    if closes:
        assert events(outs) == each(CHEAP_CALL_IDS, "close", "stale_forward")
        assert svc.opps.open == {}
    else:
        assert outs == [] and set(svc.opps.open) == CHEAP_CALL_IDS


@pytest.mark.parametrize("refresh", ["future ticker", "future book", "perpetual book"])
def test_a_forward_or_hedge_fresh_again_reopens_without_waiting_for_the_full_scan(refresh):
    # At 6 s the forward (or, with no listed future, the perpetual hedge) is 6 s old: the sweep
    # closes what used it. Then it shows the same prices at 6 s: young again, so what it kept
    # shut passes again, and the forward timer should find it, not the full scan 5 s later.
    clock = FakeClock(T0)
    svc = service(clock)
    perpetual = refresh == "perpetual book"
    if perpetual:
        frames = box_instruments(future=False, perpetual=True) + [
            future_book(100010.0, 100015.0, name="BTC-PERPETUAL"),
            ticker(C90, 0.05, 1.0, 0.051, 1.0, underlying_price=100000.0)] + box_books(over=MARKET)
        expected, reason = CHEAP_CALL_IDS - {REV}, "stale_hedge"
    else:
        frames = box_instruments() + [future_book(FUTURE_BID, FUTURE_ASK)] + box_books(over=MARKET)
        expected, reason = CHEAP_CALL_IDS, "stale_forward"
    assert events(run_handler(svc, frames)) == each(expected, "open")
    timer(svc, "forwards")
    clock.advance(6.0)
    # every option's ticker shows its book at 6 s (and the underlying price, the synthetic forward)
    outs = feed(svc, [ticker(name, *q, t=6 * S, seq=2) for name, q in _quoted_as_booked().items()])
    assert events(outs + timer(svc, "sweep")) == each(expected, "close", reason)
    if refresh == "future ticker":
        fresh = ticker(FUT, FUTURE_BID, 1e5, FUTURE_ASK, 1e5, t=6 * S, seq=3, underlying_price=None)
    elif refresh == "future book":
        fresh = future_book(FUTURE_BID, FUTURE_ASK, t=6 * S, seq=3)
    else:
        fresh = future_book(100010.0, 100015.0, name="BTC-PERPETUAL", t=6 * S, seq=3)
    feed(svc, [fresh])
    assert events(timer(svc, "forwards")) == each(expected, "open")
    assert timer(svc, "full-scan") == [] and svc.stats["scan_corrections"] == 0


# ---- 6. the full scan right after a forward move --------------------------------------------------

def test_a_forward_move_first_seen_by_the_full_scan_publishes_its_updates_and_corrects_nothing():
    svc = service()
    market(svc)
    assert timer(svc, "forwards") == []                  # the future's first quote, evaluated
    assert feed(svc, [future_book(98997.5, 99002.5, seq=2)]) == []   # the future 1000 lower
    outs = timer(svc, "full-scan")                       # before the forward timer got to it
    # As tests/test_strategy_box.py works it out for the forward timer: buying forward costs
    # 99002.5 x 1.0005 = 99052.00125, selling pays 98997.5 x 0.9995 = 98948.00125 per BTC.
    # Conversions 90000, 100000, 105000, 110000 open (90000: 90000 - 0.9016 x 99052.00125 =
    # 694.715673); the reversal closes (0.9584 x 98948.00125 - 95000 = -168.24); the boxes move
    # by over 1 USD (95000-100000: 5000 - 0.0432 x 99052.00125 = 720.953546).
    assert events(outs) == sorted(
        each({f"{BOX_PREFIX}-{k}-CONV" for k in (90000, 100000, 105000, 110000)}, "open")
        + [(REV, "close", "edge")] + each(CHEAP_CALL_IDS - {REV}, "update"))
    sig = {s.opp_id: s for s in signals(outs)}
    assert sig[f"{BOX_PREFIX}-90000-CONV"].edge_usd == pytest.approx(694.715673, abs=1e-5)
    assert sig[LBOX].edge_usd == pytest.approx(720.953546, abs=1e-5)
    assert svc.stats["scan_corrections"] == 0            # the forward moved: nothing was missed
    assert timer(svc, "forwards") == []                  # and the forward timer has nothing left
    assert timer(svc, "full-scan") == [] and svc.stats["scan_corrections"] == 0


def test_a_missed_strike_is_still_a_correction_on_a_scan_without_a_forward_move():
    # The other half of the rule: with no forward move pending, what the full scan changes is
    # counted (the cheap call's fair requote slipped past the per-update path).
    svc = service()
    market(svc)
    assert timer(svc, "forwards") == []
    expiry = next(iter(svc.market.expiries.values()))
    expiry.chain.set_quote(expiry.chain.index_of(95000.0), 0, 0.0835, 5.0, 0.0845, 2.37, T0)
    assert events(timer(svc, "full-scan")) == each(CHEAP_CALL_IDS, "close", "edge")
    assert svc.stats["scan_corrections"] == 5


# ---- 7. the per-strike path against the whole chain on a random stream ----------------------------
#
# What the per-update path keeps open (Evaluator.at_strike per requoted strike, the forward timer's
# whole-chain pass after a forward move) must be what Evaluator.whole finds on the same state, after
# every frame. The stream: a 60-strike chain (ten of its strikes listed mid-stream: below, inside,
# above), requotes around the fair mids, now and then a 0.01 BTC mispricing, an empty side, a stale
# or crossed book, a forward move, or the whole chain requoted fair (quiet again: what opens next
# has only the per-strike bound to get past).

WIDE = "BTC-27DEC26"
WIDE_STRIKES = list(range(70000, 130000, 1000))          # 60 strikes
LATE_STRIKES = [70000, 71000, 85000, 97000, 98000, 101000, 102000, 115000, 128000, 129000]
TICK = 0.0005


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _fair_mids() -> dict[int, tuple[float, float]]:
    """Call and put mids in BTC on the tick: Black-76 at F = 100000, vol 0.5, 30 days; the put
    from parity (C - P = 1 - K/F); both floored at one tick (deep out of the money)."""
    f, vol, t = 100000.0, 0.5, 30 / 365
    mids = {}
    for k in WIDE_STRIKES:
        d1 = (math.log(f / k) + vol * vol * t / 2) / (vol * math.sqrt(t))
        call = (f * _norm_cdf(d1) - k * _norm_cdf(d1 - vol * math.sqrt(t))) / f
        call = max(round(call / TICK) * TICK, TICK)
        put = max(round((call - (1 - k / f)) / TICK) * TICK, TICK)
        mids[k] = (call, put)
    return mids


def _book_at(name: str, bid: float | None, ask: float | None, amounts: tuple, seq: int, t: int,
             stale: bool = False) -> tuple:
    bids = [] if bid is None or bid <= 0 else [(round(bid, 6), amounts[0])]
    asks = [] if ask is None or ask <= 0 else [(round(ask, 6), amounts[1])]
    return md("book", name), md_book(seq, bids, asks, name=name, t=t, stale=stale)


def _random_book(rng: random.Random, name: str, fair: float, seq: int, t: int) -> tuple:
    """A book around the fair mid: a tick of noise; now and then a 0.01 BTC mispricing (opens
    boxes against ~320 USD of spreads and fees), an empty side, a stale book or a crossed one
    (refused and voided)."""
    roll = rng.random()
    mid = fair + TICK * rng.randint(-1, 1)
    if roll < 0.015:
        mid += rng.choice((-0.01, 0.01))
    half = TICK * rng.choice((1, 1, 2))
    bid, ask = mid - half, mid + half
    amounts = (rng.choice((0.05, 0.3, 1.0, 2.37, 5.0)), rng.choice((0.05, 0.3, 1.0, 2.37, 5.0)))
    if 0.02 <= roll < 0.04:
        bid = None
    elif 0.04 <= roll < 0.06:
        ask = None
    elif 0.07 <= roll < 0.08:
        bid, ask = ask, bid                              # crossed
    return _book_at(name, bid, ask, amounts, seq, t, stale=0.06 <= roll < 0.07)


def _listing(strike: int) -> list:
    return [(md("instrument", name), instrument(name)) for name in
            (box_option(strike, "C", WIDE), box_option(strike, "P", WIDE))]


def _wide_stream(seed: int, check, steps: int = 2000):
    """Run the random stream on a fresh service, calling ``check(svc, expiry, where)`` after every
    frame (a future's book: before and after the forward timer). Returns the service, the
    expiry and what the stream did: steps after which the open set was empty ("quiet"), option
    books that opened or closed something ("at_strike"), forward timers that did ("forward")."""
    rng = random.Random(seed)
    clock = FakeClock(T0)
    svc = service(clock)
    mids = _fair_mids()
    listed = [k for k in WIDE_STRIKES if k not in LATE_STRIKES]
    late = LATE_STRIKES[:]
    rng.shuffle(late)
    frames = [(md("instrument", WIDE), instrument(WIDE))] + [f for k in listed for f in _listing(k)]
    frames += [future_book(FUTURE_BID, FUTURE_ASK)]
    frames += [_random_book(rng, box_option(k, cp, WIDE), mids[k][n], 1, 0)
               for k in listed for n, cp in enumerate("CP")]
    run_handler(svc, frames)
    timer(svc, "forwards")
    expiry = next(iter(svc.market.expiries.values()))
    seen = {"quiet": 0, "at_strike": 0, "forward": 0}

    def changes() -> int:
        return svc.stats["opened"] + svc.stats["closed"]

    def future_then_timer(bid: float, ask: float, seq: int, t: int, where: str) -> None:
        feed(svc, [future_book(bid, ask, seq=seq, t=t)])
        check(svc, expiry, f"{where}, future {bid}/{ask} before the forward timer")
        before = changes()
        timer(svc, "forwards")
        seen["forward"] += changes() > before

    check(svc, expiry, "start")
    seq = 1
    for step in range(steps):
        seq += 1
        t = step * MS                                    # 2 s in all: every quote stays young
        clock.advance(0.001)
        roll = rng.random()
        if late and step % (steps // 11) == steps // 11 - 1:
            strike = late.pop()                          # a strike listed mid-stream (ten in all)
            feed(svc, _listing(strike))
            listed.append(strike)
        elif roll < 0.035:
            # the future moves; evaluated by the forward timer, as the runtime runs it
            mid = 100000.0 + rng.randint(-20, 20) * 2.5 * rng.choice((1, 1, 20))   # up to 50, or 1000
            future_then_timer(mid - 2.5, mid + 2.5, seq, t, f"step {step}")
        elif roll < 0.05:
            # the future and the whole chain requoted at their fair prices, one book at a time:
            # quiet again
            future_then_timer(FUTURE_BID, FUTURE_ASK, seq, t, f"step {step}")
            check(svc, expiry, f"step {step}, fair future")
            for k in listed:
                for n, cp in enumerate("CP"):
                    fair = mids[k][n]
                    feed(svc, [_book_at(box_option(k, cp, WIDE), fair - TICK, fair + TICK, (5.0, 5.0), seq, t)])
                    check(svc, expiry, f"step {step}, fair {k}{cp}")
        else:
            k = rng.choice(listed)
            n = rng.randrange(2)
            before = changes()
            feed(svc, [_random_book(rng, box_option(k, "CP"[n], WIDE), mids[k][n], seq, t)])
            seen["at_strike"] += changes() > before
        check(svc, expiry, f"step {step}")
        seen["quiet"] += not svc.opps.open
    assert len(expiry.chain) == 60 and not late
    return svc, expiry, seen


@pytest.mark.parametrize("seed", [1, 2])
def test_the_per_strike_path_keeps_the_open_set_equal_to_the_whole_chain_evaluation(seed):
    def open_is_whole(svc, expiry, where: str) -> None:
        if expiry.dirty:
            return  # a forward move the forward timer has not evaluated yet: by design
        assert set(svc.opps.open) == set(svc.evaluator.whole(expiry, svc.now_ns())), where

    svc, expiry, seen = _wide_stream(seed, open_is_whole)
    # The stream really opened and closed structures on both paths, and was often quiet.
    assert seen["at_strike"] > 100 and seen["forward"] > 10 and seen["quiet"] > 100, seen
    assert svc.stats["rejected_crossed"] > 0
    timer(svc, "full-scan")
    assert svc.stats["scan_corrections"] == 0


#: How far under the best edge the floor is put: float noise, far under any real slack of the bound.
_FLOOR_EPS = 1e-6


@pytest.mark.parametrize("seed", [1])
def test_the_bounds_never_rule_out_a_structure_that_reaches_the_floor(seed):
    # The bounds only decide what is skipped, so the open set above can miss a bound that is
    # too tight unless an edge lands in the sliver it gets wrong. Here each is asked at the
    # sharpest floor: the exact best edge with strike k (ExpiryChain.may_pass_with, with the
    # terms kept at the forward of their last build and the slack for its moves since), the
    # exact best box of the chain (Evaluator.could_pass); and the per-update parity edge must be
    # the vectorised one.
    asked = {"checks": 0, "may_pass_with": 0, "could_pass": 0, "slack": 0}

    def bounds_hold(svc, expiry, where: str) -> None:
        chain, h, now = expiry.chain, svc.evaluator.gates.hedge_rate, svc.now_ns()
        if not (chain.forward_bid > 0 and len(chain) > 1):
            return
        slack_used = chain._bound_prices() != (chain._c_long, chain._c_short) and not chain._terms_stale
        asked["checks"] += 1
        for k in range(asked["checks"] % 4, len(chain), 4):     # a quarter of the strikes each time
            edges = np.concatenate([chain.box_edges_with(side, k, h) for side in ("long", "short")])
            if not np.isnan(edges).all():
                best = float(np.nanmax(edges))
                assert chain.may_pass_with(k, best - _FLOOR_EPS), f"{where}: strike {chain.strikes[k]}"
                asked["may_pass_with"] += 1
                asked["slack"] += slack_used
            for side in ("reversal", "conversion"):
                exact = float(chain.parity(side, h, np.array([k])).edge[0])
                assert chain.parity_edge(side, k, h) == pytest.approx(exact, abs=1e-6, nan_ok=True), where
        i, j = chain.all_pairs()
        fresh = chain.oldest_ns[i].clip(max=chain.oldest_ns[j]) >= now - svc.evaluator.gates.max_quote_age_ns
        edges = np.concatenate([chain.box_edges(side, i, j, h)[fresh] for side in ("long", "short")])
        if edges.size and not np.isnan(edges).all():
            floor = float(np.nanmax(edges)) - _FLOOR_EPS
            gates = dataclasses.replace(svc.evaluator.gates, min_edge_usd=floor, parity=False)
            assert Evaluator(gates, svc.market.hedge_quote).could_pass(expiry, now), where
            asked["could_pass"] += 1

    _wide_stream(seed, bounds_hold, steps=400)
    assert asked["may_pass_with"] > 5000 and asked["could_pass"] > 300 and asked["slack"] > 100, asked


@pytest.mark.parametrize("deep, quotes, k, best_edge", [
    # 60000 call 0.400 / 0.401, put bid 0.0005 (no ask): syn_long = 0.401 + 0.0003 - 0.0005 +
    # 0.0000625 (the put's fee capped at 0.125 x 0.0005) = 0.4008625 BTC, syn_short unknown.
    # Best box with it: long 60000-100000, b = 0.4008625 + syn_short(100000) 0.0016 = 0.4024625,
    # bought at 99982.5 x 1.0005 = 100032.49125: 40000 - 40259.3265097 (was 8.0532746 worse at
    # the terms' forward 100052.50125). Slack 20.01 x (0.4008625 + 0.0116) = 8.2534 >= 8.0533.
    (60000.0, {CALL: (0.400, 5.0, 0.401, 5.0), PUT: (0.0005, 5.0, None, None)}, 0, -259.3265097),
    # 140000 put 0.400 / 0.401, call bid 0.0005 (no ask): syn_short = 0.4008625, syn_long unknown.
    # Best box with it: long 101000-140000, b = syn_long(101000) -0.0084 + 0.4008625 = 0.3924625:
    # 39000 - 0.3924625 x 100032.49125 = -259.0015972 (7.8531746 better than at the terms'
    # forward). Slack 20.01 x (0.0084 + 0.4008625) = 8.1893 >= 7.8532.
    (140000.0, {CALL: (0.0005, 5.0, None, None), PUT: (0.400, 5.0, 0.401, 5.0)}, 2, -259.0015972),
], ids=["deep call strike", "deep put strike"])
def test_a_synthetic_quoted_after_the_terms_were_built_widens_the_slack_of_a_forward_move(
        deep, quotes, k, best_edge):
    # The terms are built while only 100000 and 101000 are quoted (|synthetics| <= 0.0116 BTC:
    # syn_long 0.0016 and -0.0084, syn_short 0.0016 and 0.0116); then a deep strike is quoted (a
    # synthetic of 0.4 BTC) and the forward drops by 20 USD, too little to rebuild the terms
    # (slack 40 x 0.41 = 16.5 USD < 0.05 % of the forward, 49.96). The slack must count the new
    # synthetic: with the old ones only (20.01 x 0.02 = 0.40 USD) the bound of the best box with
    # the deep strike falls about 7.5 USD short of its edge.
    chain = ExpiryChain(ChainKey("deribit", "BTC", "BTC", T0 + 30 * DAY), fees=FeeSchedule())
    for strike in sorted((deep, 100000.0, 101000.0)):
        for option, cp in ((CALL, "C"), (PUT, "P")):
            chain.add(strike, option, f"BTC-27DEC26-{int(strike)}-{cp}")
    at = {strike: chain.index_of(strike) for strike in (100000.0, 101000.0)}
    chain.forward_bid, chain.forward_ask = FUTURE_BID, FUTURE_ASK
    chain.set_quote(at[100000.0], CALL, 0.056, 5.0, 0.057, 5.0, T0)
    chain.set_quote(at[100000.0], PUT, 0.056, 5.0, 0.057, 5.0, T0)
    chain.set_quote(at[101000.0], CALL, 0.052, 5.0, 0.053, 5.0, T0)
    chain.set_quote(at[101000.0], PUT, 0.062, 5.0, 0.063, 5.0, T0)
    chain.may_pass_with(at[100000.0], 0.0)               # the terms built at this forward
    for option, quote in quotes.items():
        chain.set_quote(k, option, *quote, T0)
    chain.forward_bid, chain.forward_ask = FUTURE_BID - 20.0, FUTURE_ASK - 20.0
    edges = [chain.box_edges_with(side, k, 0.0005) for side in ("long", "short")]
    best = float(np.nanmax(np.concatenate(edges)))
    assert best == pytest.approx(best_edge, abs=1e-6)
    assert chain.may_pass_with(k, best - _FLOOR_EPS)
