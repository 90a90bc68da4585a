"""strategy-box's handler: a quoted chain in, signal.box (and order.intent) out.

The chain is tests/frames.py's BOX_MIDS: five strikes priced by Black-76 from one forward
(F = 100000), parity-exact on the 0.0005 tick, quoted mid -/+ 0.0005. With Deribit's fees every
structure on it loses about 320 USD per contract; one mispriced quote (the 95000 call offered
0.01 BTC cheap) then opens exactly the structures that buy it. Expected numbers are worked by
hand in the comments. The harness is run_handler (messages in, frames out through the wire
codec) and a FakeClock; timers are called as the runtime calls them.
"""

from __future__ import annotations

import pytest

from hedgepipe import messages as m
from hedgepipe.clock import FakeClock
from hedgepipe.daemons.strategy_box import StrategyBoxConfig, StrategyBoxService
from hedgepipe.runtime import run_handler

from .frames import (BOX_MIDS, BOX_PREFIX, T0, box_books, box_instruments, box_option, future_book,
                     instrument, md, md_book, md_index, md_ticker, md_trade)

S = 1_000_000_000
NAN, INF = float("nan"), float("inf")
FUT = BOX_PREFIX
C90, P90 = box_option(90000, "C"), box_option(90000, "P")
C95, P95 = box_option(95000, "C"), box_option(95000, "P")
C100, P100 = box_option(100000, "C"), box_option(100000, "P")
C105, P105 = box_option(105000, "C"), box_option(105000, "P")
C110, P110 = box_option(110000, "C"), box_option(110000, "P")
FUTURE_BID, FUTURE_ASK = 99997.5, 100002.5
#: The one mispriced quote: the 95000 call quoted 0.01 BTC under its fair 0.0835 / 0.0845, its
#: ask for 2.37 contracts: the thinnest leg, so every size is 2.3 (0.1 lots).
CHEAP_CALL = (0.0735, 5.0, 0.0745, 2.37)
#: With amounts that make the four legs of the 95000-100000 long box all different (intent
#: order): buy C95 2.37, buy P100 3.0 (the default ask amount), sell P95 4.0, sell C100 6.0.
MARKET = {C95: CHEAP_CALL, P95: (0.0335, 4.0, 0.0345, 3.0), C100: (0.0565, 6.0, 0.0575, 3.0)}
#: Every structure that buys the 95000 call: the long boxes with K1 = 95000 (buy C(K1)), the
#: short box with K2 = 95000 (buy C(K2)), the 95000 reversal (buy the call, sell the put).
LBOX = "BTC-27DEC26-95000-100000-LBOX"
REV = "BTC-27DEC26-95000-REV"
CHEAP_CALL_IDS = {LBOX, "BTC-27DEC26-95000-105000-LBOX", "BTC-27DEC26-95000-110000-LBOX",
                  "BTC-27DEC26-90000-95000-SBOX", REV}
#: The 105000 put quoted 0.01 BTC over its fair 0.0865 / 0.0875: sold (at its bid) by the long
#: box with K1 = 105000 (sell P(K1)), the short boxes with K2 = 105000 (sell P(K2)) and the
#: 105000 reversal (sell the put).
RICH_PUT = (0.0965, 3.0, 0.0975, 3.0)
RICH_PUT_IDS = {"BTC-27DEC26-105000-110000-LBOX", "BTC-27DEC26-90000-105000-SBOX",
                "BTC-27DEC26-95000-105000-SBOX", "BTC-27DEC26-100000-105000-SBOX",
                "BTC-27DEC26-105000-REV"}


def service(clock: FakeClock | None = None, **config) -> StrategyBoxService:
    config.setdefault("prime_from_redis", False)   # the stream alone (tests of priming set it)
    return StrategyBoxService(StrategyBoxConfig(**config), clock or FakeClock(T0))


def wire(svc: StrategyBoxService, outs) -> list:
    """What the runtime does to what a handler or timer returns (as run_handler does it)."""
    got = []
    for topic, msg in outs:
        m.topic_bytes(topic)
        msg.src, msg.seq = svc.name, 1
        got.append((topic, m.decode(topic, m.encode(msg))))
    return got


def feed(svc: StrategyBoxService, frames) -> list:
    """Frames to a service run_handler already started (run_handler would start it again)."""
    return wire(svc, [out for topic, msg in frames for out in svc.on_message(topic, msg)])


def timer(svc: StrategyBoxService, name: str) -> list:
    """Run one of the service's timers, found as the runtime finds it."""
    callbacks = {t.name: t.callback for t in svc.timers()}
    return wire(svc, callbacks[name](svc.clock.time_ns()))


def market(svc: StrategyBoxService, over=MARKET, future=(FUTURE_BID, FUTURE_ASK), **instrument_fields) -> list:
    """The chain's instruments, its future's book, then every option's book, via run_handler."""
    frames = box_instruments(**instrument_fields)
    if future:
        frames.append(future_book(*future))
    return run_handler(svc, frames + box_books(over=over))


def book(name: str, bid, bid_amount, ask, ask_amount, t: int = 0, seq: int = 2, **kw) -> tuple:
    bids = [] if bid is None else [(bid, bid_amount)]
    asks = [] if ask is None else [(ask, ask_amount)]
    return md("book", name), md_book(seq, bids, asks, name=name, t=t, **kw)


def ticker(name: str, bid, bid_amount, ask, ask_amount, t: int = 0, seq: int = 1, **kw) -> tuple:
    kw.setdefault("underlying_price", 100000.0)
    return md("ticker", name), md_ticker(seq, bid=bid, ask=ask, name=name, t=t, bid_amount=bid_amount,
                                         ask_amount=ask_amount, **kw)


def signals(outs) -> list[m.BoxSignal]:
    return [msg for topic, msg in outs if topic.startswith("signal.box.")]


def intents(outs) -> list[m.OrderIntent]:
    return [msg for topic, msg in outs if topic.startswith("order.intent.")]


def events(outs) -> list[tuple[str, str, str]]:
    return sorted((s.opp_id, s.event, s.reason) for s in signals(outs))


def opened(outs) -> dict[str, m.BoxSignal]:
    return {s.opp_id: s for s in signals(outs) if s.event == "open"}


def each(ids, event: str, reason: str = "") -> list[tuple[str, str, str]]:
    return sorted((oid, event, reason) for oid in ids)


def counters(svc: StrategyBoxService, **expected) -> dict[str, int]:
    """The counters named in ``expected`` (to compare with it)."""
    return {name: svc.stats[name] for name in expected}


# ---- the arithmetic, through the handler ------------------------------------------------------------

def test_a_cheap_call_opens_exactly_the_structures_that_buy_it():
    svc = service()
    outs = market(svc)
    assert events(outs) == each(CHEAP_CALL_IDS, "open")
    assert len(outs) == 5                                           # signals only: no --trade
    assert all(topic == f"signal.box.deribit.{s.opp_id}" for topic, s in outs)
    expected = dict(quotes=10, evaluations=10, opened=5, updated=0, closed=0, open=5, intents=0,
                    scan_corrections=0, ignored=0)
    assert counters(svc, **expected) == expected


def test_the_fair_chain_opens_nothing_and_the_mispricing_alone_opens():
    svc = service()
    assert market(svc, over={}) == []               # every structure loses the spread and the fees
    outs = feed(svc, [book(C95, *CHEAP_CALL)])
    assert events(outs) == each(CHEAP_CALL_IDS, "open")


def test_the_long_box_legs_hedge_and_edge_as_worked_by_hand():
    box = opened(market(service()))[LBOX]
    assert (box.event, box.structure, box.k1, box.k2, box.venue, box.base) == (
        "open", "long", 95000.0, 100000.0, "deribit", "BTC")
    # Long box: buy C(K1) at its ask, sell C(K2) at its bid, buy P(K2) at its ask, sell P(K1) at
    # its bid, each for the box's size: the thinnest leg (C95 ask, 2.37) rounded down to 2.3.
    assert box.size == pytest.approx(2.3)
    assert {(leg.instrument, leg.side, leg.price, leg.kind) for leg in box.legs} == {
        (C95, "buy", 0.0745, "option"), (C100, "sell", 0.0565, "option"),
        (P100, "buy", 0.0575, "option"), (P95, "sell", 0.0335, "option")}
    assert len(box.legs) == 4 and all(leg.amount == box.size for leg in box.legs)
    # premium 0.0745 - 0.0565 + 0.0575 - 0.0335 = 0.042 BTC; fees 4 x min(0.0003, 0.125 x p)
    # = 0.0012 (every price > 0.0024). b = 0.0432 BTC bought forward at the future's ask:
    # 0.0432 x 100002.5 = 4320.108 USD plus its 0.05 % fee 2.160054 = 4322.268054;
    # edge = (K2 - K1) - 4322.268054 = 5000 - 4322.268054 = 677.731946 USD per contract
    assert box.option_fees == pytest.approx(0.0012)
    assert box.edge_usd == pytest.approx(677.731946, abs=1e-6)
    assert box.total_usd == pytest.approx(1558.7834758, abs=1e-6)        # 677.731946 x 2.3
    assert box.forward == FUTURE_ASK
    assert box.hedge_fee_usd == pytest.approx(4.9681242, abs=1e-6)       # 2.160054 x 2.3
    # the hedge: buy 0.0432 x 2.3 BTC at 100002.5 = 9936.2484 USD = 993.6 10-USD contracts -> 994
    assert box.hedge == m.SignalLeg(instrument=FUT, side="buy", price=FUTURE_ASK, amount=9940.0,
                                    kind="future")
    assert box.hedge_exact is True
    # capital: what the long box pays, 4322.268054 x 2.3 = 9941.2165242; 30 days to expiry:
    # 677.731946 / 4322.268054 x 365 / 30 = 1.9077342
    assert box.capital_usd == pytest.approx(9941.2165242, abs=1e-6)
    assert box.t_years == pytest.approx(30 / 365)
    assert box.annual_rate == pytest.approx(1.9077342, abs=1e-6)
    assert (box.reason, box.group_id) == ("", "")


def test_the_other_boxes_and_the_reversal_as_worked_by_hand():
    sig = opened(market(service()))
    # Per strike, synthetics with fees: long = call ask - put bid + 0.0006, short = - call bid
    # + put ask + 0.0006; C95 ask 0.0745, P95 bid 0.0335: long(95000) = 0.0416.
    #   95000-105000 long: b = 0.0416 + (-0.0365 + 0.0875 + 0.0006) = 0.0932;
    #                      10000 - 0.0932 x 100002.5 x 1.0005 = 10000 - 9324.8931165
    #   95000-110000 long: b = 0.0416 + (-0.0225 + 0.1235 + 0.0006) = 0.1432;
    #                      15000 - 0.1432 x 100002.5 x 1.0005 = 15000 - 14327.518179
    assert sig["BTC-27DEC26-95000-105000-LBOX"].edge_usd == pytest.approx(675.1068835, abs=1e-6)
    assert sig["BTC-27DEC26-95000-110000-LBOX"].edge_usd == pytest.approx(672.481821, abs=1e-6)
    # 90000-95000 short: sell C90 bid, buy P90 ask, buy C95 ask, sell P95 bid:
    #   b = (-0.118 + 0.019 + 0.0006) + 0.0416 = -0.0568: a credit, so BTC is sold forward at
    #   the bid: 0.0568 x 99997.5 x 0.9995 = 5677.018071 received against the 5000 owed
    short = sig["BTC-27DEC26-90000-95000-SBOX"]
    assert short.edge_usd == pytest.approx(677.018071, abs=1e-6)
    assert {(leg.instrument, leg.side, leg.price) for leg in short.legs} == {
        (C90, "sell", 0.118), (P90, "buy", 0.019), (C95, "buy", 0.0745), (P95, "sell", 0.0335)}
    # 0.0568 x 2.3 x 99997.5 / 10 = 1306.37 contracts -> 1306
    assert short.hedge == m.SignalLeg(instrument=FUT, side="sell", price=FUTURE_BID, amount=13060.0,
                                      kind="future")
    assert short.capital_usd == pytest.approx(5000.0 * 2.3)        # what a short box owes at expiry
    # Reversal 95000: long synthetic 0.0416 and the future sold: b = 0.0416 - 1 = -0.9584, sold
    # at the bid: 0.9584 x 99997.5 x 0.9995 = 95789.685198 against the 95000 it pays
    rev = sig[REV]
    assert (rev.structure, rev.k1, rev.k2) == ("reversal", 95000.0, None)
    assert {(leg.instrument, leg.side, leg.price) for leg in rev.legs} == {(C95, "buy", 0.0745),
                                                                          (P95, "sell", 0.0335)}
    assert rev.edge_usd == pytest.approx(789.685198, abs=1e-6)
    # 0.9584 x 2.3 x 99997.5 / 10 = 22042.65 contracts -> 22043
    assert rev.hedge == m.SignalLeg(instrument=FUT, side="sell", price=FUTURE_BID, amount=220430.0,
                                    kind="future")
    assert rev.forward == FUTURE_BID
    # capital: one unit at the forward's mid per contract; 789.685198 / 100000 x 365 / 30
    assert rev.capital_usd == pytest.approx(230000.0)
    assert rev.annual_rate == pytest.approx(0.0960783, abs=1e-6)
    for s in sig.values():
        assert s.total_usd == pytest.approx(s.edge_usd * 2.3) and s.size == pytest.approx(2.3)


@pytest.mark.parametrize("name, quote, better, worse", [
    # the whole 95000 call quote 0.01 lower: its buyers gain, its sellers (at the bid) lose
    (C95, (0.0735, 5.0, 0.0745, 3.0), CHEAP_CALL_IDS,
     {"BTC-27DEC26-90000-95000-LBOX", "BTC-27DEC26-95000-100000-SBOX", "BTC-27DEC26-95000-105000-SBOX",
      "BTC-27DEC26-95000-110000-SBOX", "BTC-27DEC26-95000-CONV"}),
    # the whole 105000 put quote 0.01 higher: its sellers gain, its buyers (at the ask) lose
    (P105, (0.0965, 5.0, 0.0975, 3.0), RICH_PUT_IDS,
     {"BTC-27DEC26-90000-105000-LBOX", "BTC-27DEC26-95000-105000-LBOX", "BTC-27DEC26-100000-105000-LBOX",
      "BTC-27DEC26-105000-110000-SBOX", "BTC-27DEC26-105000-CONV"}),
])
def test_a_mispricing_of_x_moves_the_edge_of_exactly_the_structures_using_it_by_x_times_f(
        name, quote, better, worse):
    # No fees and a gate every structure passes: all 30 (10 pairs x 2 sides, 5 reversals,
    # 5 conversions) are open, and a requote moves exactly the ones with that leg.
    svc = service(option_fee_rate=0.0, future_taker_fee=0.0, min_edge_usd=-1e9, min_total_usd=-1e9)
    before = opened(market(svc, over={}, future=(99999.5, 100000.5)))
    assert len(before) == 30
    outs = feed(svc, [book(name, *quote)])
    assert events(outs) == sorted(each(better, "update") + each(worse, "update"))
    for s in signals(outs):
        moved = s.edge_usd - before[s.opp_id].edge_usd
        sign = 1.0 if s.opp_id in better else -1.0
        # x = 0.01 BTC at the forward the structure's hedge trades: long boxes and conversions
        # buy BTC forward at the ask (100000.5), short boxes and reversals sell at the bid (99999.5)
        forward = 100000.5 if s.structure in ("long", "conversion") else 99999.5
        assert moved == pytest.approx(sign * 0.01 * forward, abs=1e-6)   # 1000.005 / 999.995


def test_the_option_fee_is_capped_at_an_eighth_of_a_cheap_leg():
    # Long box 105000-110000 with C110 bid at 0.0016 (fee min(0.0003, 0.125 x 0.0016) = 0.0002)
    # and P110 offered at 0.0985; no hedge fee, future ask 100000. Premium 0.0375 (C105 ask)
    # - 0.0016 + 0.0985 - 0.0865 (P105 bid) = 0.0479; fees 0.0003 + 0.0002 + 0.0003 + 0.0003
    # = 0.0011; edge = 5000 - 0.049 x 100000 = 100 (the uncapped 0.0012 would make it 90).
    svc = service(future_taker_fee=0.0)
    over = {C110: (0.0016, 3.0, 0.0021, 3.0), P110: (0.0975, 3.0, 0.0985, 3.0)}
    s = opened(market(svc, over=over, future=(99995.0, 100000.0)))["BTC-27DEC26-105000-110000-LBOX"]
    assert {(leg.instrument, leg.price) for leg in s.legs} >= {(C110, 0.0016), (P110, 0.0985)}
    assert s.option_fees == pytest.approx(0.0011)
    assert s.edge_usd == pytest.approx(100.0, abs=1e-6)


def test_a_leg_without_a_quote_keeps_its_structures_shut_until_it_is_quoted():
    # Every structure that buys the cheap call also sells the 95000 put at its bid: no bid, no box.
    svc = service()
    no_put_bid = {**MARKET, P95: (None, None, 0.0345, 3.0)}
    assert market(svc, over=no_put_bid) == []
    assert counters(svc, quotes=10, rejected_bad_price=0) == {"quotes": 10, "rejected_bad_price": 0}
    outs = feed(svc, [book(P95, 0.0335, 4.0, 0.0345, 3.0)])
    assert events(outs) == each(CHEAP_CALL_IDS, "open")


def test_signals_are_read_from_clean_frames_as_from_md_frames():
    # clean.* is the daemon's default input: the etl-filter types extend the md types.
    kinds = {"instrument": m.CleanInstrument, "book": m.CleanBook}
    frames = box_instruments() + [future_book(FUTURE_BID, FUTURE_ASK)] + box_books(over=MARKET)
    clean = [(topic.replace("md.", "clean.", 1), kinds[topic.split(".")[1]](**m.to_builtins(msg)))
             for topic, msg in frames]
    svc = service()
    outs = run_handler(svc, clean)
    assert events(outs) == each(CHEAP_CALL_IDS, "open")
    assert opened(outs)[LBOX].edge_usd == pytest.approx(677.731946, abs=1e-6)
    assert svc.stats["ignored"] == 0


# ---- lifecycle ------------------------------------------------------------------------------------

def test_same_quotes_publish_nothing_an_edge_move_updates_and_the_mispricing_gone_closes():
    svc = service()
    market(svc)
    assert feed(svc, box_books(over=MARKET, seq=2)) == []            # the same quotes again
    assert counters(svc, quotes=20, opened=5, updated=0) == {"quotes": 20, "opened": 5, "updated": 0}
    # P100 offered 0.0005 lower: only the 95000-100000 long box buys it. Its b becomes
    # 0.0745 - 0.0565 + 0.057 - 0.0335 + 0.0012 = 0.0427: 5000 - 0.0427 x 100002.5 x 1.0005
    # = 5000 - 4272.241803375 = 727.758196625 (50 USD more: over update_edge_usd = 1)
    outs = feed(svc, [book(P100, 0.0565, 5.0, 0.057, 3.0)])
    assert events(outs) == [(LBOX, "update", "")]
    update = signals(outs)[0]
    assert update.edge_usd == pytest.approx(727.758196625, abs=1e-6)
    assert {(leg.instrument, leg.price) for leg in update.legs} >= {(P100, 0.057)}
    # The size: 2.37 -> 2.45 makes it 2.4, 4 % of the published 2.3 (under update_size_frac
    # 10 %): nothing. 2.6 is 13 % over the *published* 2.3 (8 % over the unpublished 2.4): update.
    assert feed(svc, [book(C95, 0.0735, 5.0, 0.0745, 2.45)]) == []
    outs = feed(svc, [book(C95, 0.0735, 5.0, 0.0745, 2.6)])
    assert events(outs) == each(CHEAP_CALL_IDS, "update")
    assert all(s.size == pytest.approx(2.6) for s in signals(outs))
    # The call back at its fair quote: every one closes, below the edge gate.
    outs = feed(svc, [book(C95, 0.0835, 5.0, 0.0845, 2.6)])
    assert events(outs) == each(CHEAP_CALL_IDS, "close", "edge")
    closing = {s.opp_id: s for s in signals(outs)}
    assert closing[LBOX].edge_usd == pytest.approx(727.758196625, abs=1e-6)   # as last published
    expected = dict(opened=5, updated=6, closed=5, open=0)
    assert counters(svc, **expected) == expected
    assert svc.opps.open == {}


def test_a_stale_book_on_one_leg_closes_what_uses_it_and_a_fresh_book_reopens_it():
    svc = service()
    market(svc)
    outs = feed(svc, [book(P100, 0.0565, 5.0, 0.0575, 3.0, stale=True)])
    assert events(outs) == [(LBOX, "close", "no_quote")]          # only the box with P100
    assert set(svc.opps.open) == CHEAP_CALL_IDS - {LBOX}
    outs = feed(svc, [book(P100, 0.0565, 5.0, 0.0575, 3.0, seq=3)])
    assert events(outs) == [(LBOX, "open", "")]
    assert counters(svc, opened=6, closed=1, open=5) == {"opened": 6, "closed": 1, "open": 5}


def test_quotes_older_than_max_quote_age_close_on_the_sweep():
    clock = FakeClock(T0)
    svc = service(clock)
    market(svc)
    clock.advance(4.0)
    assert timer(svc, "sweep") == []                  # 4 s old: still within max_quote_age_s = 5
    clock.advance(2.0)
    # 6 s: the future's quote is the first thing found too old
    assert events(timer(svc, "sweep")) == each(CHEAP_CALL_IDS, "close", "stale_forward")
    assert svc.stats["open"] == 0 and svc.opps.open == {}


def test_option_quotes_older_than_max_quote_age_close_as_stale_quotes():
    clock = FakeClock(T0)
    svc = service(clock)
    market(svc)
    clock.advance(6.0)
    assert feed(svc, [future_book(FUTURE_BID, FUTURE_ASK, t=6 * S, seq=2)]) == []   # fresh forward
    assert events(timer(svc, "sweep")) == each(CHEAP_CALL_IDS, "close", "stale_quote")
    assert timer(svc, "sweep") == []                  # closed once


def _quoted_as_booked() -> dict[str, tuple]:
    """Every option's (bid, bid amount, ask, ask amount) as market() books it."""
    return {msg.instrument: (msg.bids[0][0], msg.bids[0][1], msg.asks[0][0], msg.asks[0][1])
            for _, msg in box_books(over=MARKET)}


def test_a_ticker_showing_the_books_prices_keeps_an_unchanged_book_fresh():
    # A book that does not change is not sent again; its ticker is. At 4 s every option's ticker
    # shows the book's best bid and ask: at 6 s the legs are 2 s old, not 6, and nothing closes.
    clock = FakeClock(T0)
    svc = service(clock)
    market(svc)
    clock.advance(4.0)
    tickers = [ticker(name, bid, bid_amt, ask, ask_amt, t=4 * S, seq=2)
               for name, (bid, bid_amt, ask, ask_amt) in _quoted_as_booked().items()]
    assert feed(svc, tickers + [future_book(FUTURE_BID, FUTURE_ASK, t=4 * S, seq=2)]) == []
    assert svc.stats["confirmed"] == 10
    clock.advance(2.0)
    assert timer(svc, "sweep") == []
    assert set(svc.opps.open) == CHEAP_CALL_IDS


def test_a_ticker_with_other_prices_does_not_make_a_book_younger():
    clock = FakeClock(T0)
    svc = service(clock)
    market(svc)
    clock.advance(4.0)
    bid, bid_amt, ask, ask_amt = CHEAP_CALL
    assert feed(svc, [ticker(C95, bid, bid_amt, ask + 0.0005, ask_amt, t=4 * S, seq=2)]) == []
    assert svc.stats["confirmed"] == 0
    clock.advance(2.0)
    assert feed(svc, [future_book(FUTURE_BID, FUTURE_ASK, t=6 * S, seq=2)]) == []
    assert events(timer(svc, "sweep")) == each(CHEAP_CALL_IDS, "close", "stale_quote")


def test_a_ticker_confirming_a_strike_that_aged_out_reopens_its_structures():
    clock = FakeClock(T0)
    svc = service(clock)
    market(svc)
    clock.advance(6.0)
    assert feed(svc, [future_book(FUTURE_BID, FUTURE_ASK, t=6 * S, seq=2)]) == []
    assert events(timer(svc, "sweep")) == each(CHEAP_CALL_IDS, "close", "stale_quote")
    booked = _quoted_as_booked()
    # every leg but the 95000 strike's confirmed first: still nothing (the cheap call is old)
    others = [ticker(name, *q, t=6 * S, seq=2) for name, q in booked.items() if "-95000-" not in name]
    assert feed(svc, others) == []
    # the 95000 put, then call: once both are young again the strike is evaluated and reopens
    assert feed(svc, [ticker(P95, *booked[P95], t=6 * S, seq=2)]) == []
    outs = feed(svc, [ticker(C95, *booked[C95], t=6 * S, seq=2)])
    assert events(outs) == each(CHEAP_CALL_IDS, "open")


def test_near_settlement_nothing_opens():
    svc = service()
    # settlement 30 min away, settle_guard_s = 3600
    assert market(svc, expiry_ns=T0 + 1800 * S) == []
    assert svc.stats["opened"] == 0


def test_open_structures_close_when_settlement_comes_within_the_guard():
    clock = FakeClock(T0)
    svc = service(clock)
    assert events(market(svc, expiry_ns=T0 + 7200 * S)) == each(CHEAP_CALL_IDS, "open")
    clock.advance(5400.0)                   # 30 min to go: the settlement guard comes first
    assert events(timer(svc, "sweep")) == each(CHEAP_CALL_IDS, "close", "settlement")
    # the full scan finds nothing to correct: time alone explained it
    assert timer(svc, "full-scan") == [] and svc.stats["scan_corrections"] == 0


# ---- the full scan --------------------------------------------------------------------------------

def test_the_full_scan_after_a_consistent_stream_corrects_nothing():
    svc = service()
    market(svc)
    feed(svc, [book(P100, 0.0565, 5.0, 0.057, 3.0), book(C90, 0.118, 5.0, 0.119, 3.0, seq=3),
               book(P95, 0.0335, 4.0, 0.0345, 3.0, stale=True), book(P95, 0.0335, 4.0, 0.0345, 3.0, seq=4)])
    assert timer(svc, "full-scan") == []
    assert counters(svc, full_scans=1, scan_corrections=0) == {"full_scans": 1, "scan_corrections": 0}


def test_the_full_scan_reopens_what_the_tracker_lost_and_counts_it():
    svc = service()
    market(svc)
    assert timer(svc, "forwards") == []                # the future's first quote, evaluated
    svc.opps.close(svc.opps.open[LBOX], "lost")        # lost behind the per-update path's back
    outs = timer(svc, "full-scan")
    assert events(outs) == [(LBOX, "open", "")]
    assert signals(outs)[0].edge_usd == pytest.approx(677.731946, abs=1e-6)
    assert svc.stats["scan_corrections"] == 1
    assert LBOX in svc.opps.open
    assert timer(svc, "full-scan") == [] and svc.stats["scan_corrections"] == 1


def test_the_full_scan_closes_what_the_per_update_path_missed_and_counts_it():
    svc = service()
    market(svc)
    assert timer(svc, "forwards") == []                # the future's first quote, evaluated
    # the call requoted fair without the handler seeing it (as if the per-update path missed it)
    expiry = next(iter(svc.market.expiries.values()))
    k = expiry.chain.index_of(95000.0)
    expiry.chain.set_quote(k, 0, 0.0835, 5.0, 0.0845, 2.37, T0)
    outs = timer(svc, "full-scan")
    assert events(outs) == each(CHEAP_CALL_IDS, "close", "edge")
    assert svc.stats["scan_corrections"] == 5


def test_an_option_delisted_closes_its_structures_without_waiting_for_the_full_scan():
    svc = service()
    market(svc)
    assert timer(svc, "forwards") == []                   # the future's first quote, evaluated
    outs = feed(svc, [(md("instrument", C95), instrument(C95, active=False, seq=2))]) + timer(svc, "forwards")
    assert events(outs) == each(CHEAP_CALL_IDS, "close", "no_quote")
    assert timer(svc, "full-scan") == [] and svc.stats["scan_corrections"] == 0


# ---- forwards ------------------------------------------------------------------------------------

def test_a_forward_move_is_evaluated_by_the_forward_timer_not_by_the_future_book():
    svc = service()
    market(svc)
    expiry = next(iter(svc.market.expiries.values()))
    # the future 1000 lower
    assert feed(svc, [future_book(98997.5, 99002.5, seq=2)]) == []
    assert expiry.dirty and svc.stats["quotes"] == 10             # a future is no option quote
    outs = timer(svc, "forwards")
    # Buying forward now costs 99002.5 x 1.0005 = 99052.00125, selling pays 98997.5 x 0.9995
    # = 98948.00125 per BTC.
    #   conversion K (sell C(K) bid, buy P(K) ask, buy 1 forward): b = K/100000 + 0.001 spread
    #   + 0.0006 fees; edge = K - b x 99052.00125:
    #     90000: 90000 - 0.9016 x 99052.00125 = 694.715673;  100000: 789.515548 (b 1.0016)
    #     105000: 836.915486 (b 1.0516);  110000: 884.315423 (b 1.1016)
    #     95000 is sold at the cheap call's bid 0.0735: b = 1 - 0.0735 + 0.0345 + 0.0006 = 0.9616,
    #     edge 95000 - 95248.40 < 0: not opened
    #   the reversal sells forward lower: 0.9584 x 98948.00125 - 95000 = -168.24: closed (edge)
    #   the long boxes buy forward cheaper, by b x 1000.5 (> 1 USD): updated
    #     95000-100000: 5000 - 0.0432 x 99052.00125 = 720.953546
    #   the short box sells forward lower: 0.0568 x 98948.00125 - 5000 = 620.246471: updated
    assert events(outs) == sorted(
        each({f"BTC-27DEC26-{k}-CONV" for k in (90000, 100000, 105000, 110000)}, "open")
        + [(REV, "close", "edge")]
        + each(CHEAP_CALL_IDS - {REV}, "update"))
    sig = {s.opp_id: s for s in signals(outs)}
    assert sig["BTC-27DEC26-90000-CONV"].edge_usd == pytest.approx(694.715673, abs=1e-5)
    assert sig["BTC-27DEC26-110000-CONV"].edge_usd == pytest.approx(884.315423, abs=1e-5)
    assert sig["BTC-27DEC26-110000-CONV"].hedge.side == "buy"
    assert sig[LBOX].edge_usd == pytest.approx(720.953546, abs=1e-5)
    assert sig["BTC-27DEC26-90000-95000-SBOX"].edge_usd == pytest.approx(620.246471, abs=1e-5)
    assert not expiry.dirty and timer(svc, "forwards") == []      # evaluated once


def test_a_small_forward_move_publishes_nothing():
    svc = service()
    market(svc)
    # 0.5 USD: the most any open edge moves is the reversal's 0.9584 x 0.5 x 0.9995 = 0.48 < 1
    assert feed(svc, [future_book(FUTURE_BID + 0.5, FUTURE_ASK + 0.5, seq=2)]) == []
    assert timer(svc, "forwards") == []
    assert svc.stats["updated"] == 0


def test_an_expiry_without_a_future_uses_the_underlying_price_and_hedges_on_the_perpetual():
    svc = service()
    frames = box_instruments(future=False, perpetual=True) + [
        future_book(100010.0, 100015.0, name="BTC-PERPETUAL"),
        # one option's ticker carries the synthetic forward (its bid/ask: quotes come from books)
        ticker(C90, 0.05, 1.0, 0.051, 1.0, underlying_price=100000.0)] + box_books(over=MARKET)
    outs = run_handler(svc, frames)
    # no reversal: parity trades need a listed future
    assert events(outs) == each(CHEAP_CALL_IDS - {REV}, "open")
    box = opened(outs)[LBOX]
    # forward 100000 both ways: 5000 - 0.0432 x 100000 x 1.0005 = 5000 - 4322.16 = 677.84
    assert box.edge_usd == pytest.approx(677.84, abs=1e-6)
    assert box.forward == 100000.0
    # the hedge on the perpetual at its ask: 0.0432 x 2.3 x 100015 / 10 = 993.75 -> 994 contracts
    assert box.hedge == m.SignalLeg(instrument="BTC-PERPETUAL", side="buy", price=100015.0, amount=9940.0,
                                    kind="perpetual")
    assert box.hedge_exact is False                     # the perpetual is not the expiry's forward
    short = opened(outs)["BTC-27DEC26-90000-95000-SBOX"]
    # 0.0568 x 2.3 x 100010 / 10 = 1306.5 -> 1307 contracts sold at the perpetual's bid
    assert short.hedge == m.SignalLeg(instrument="BTC-PERPETUAL", side="sell", price=100010.0,
                                      amount=13070.0, kind="perpetual")


def test_an_expiry_without_a_future_and_no_underlying_price_signals_nothing():
    svc = service()
    frames = box_instruments(future=False, perpetual=True) + [
        future_book(100010.0, 100015.0, name="BTC-PERPETUAL")] + box_books(over=MARKET)
    assert run_handler(svc, frames) == []


@pytest.mark.parametrize("perpetual", [False, True], ids=["no perpetual", "perpetual never quoted"])
def test_an_inverse_expiry_with_nothing_to_hedge_on_signals_nothing(perpetual):
    # DESIGN 6: an inverse box is not risk-free until its BTC leg is hedged.
    svc = service()
    frames = box_instruments(future=False, perpetual=perpetual) + [
        ticker(C90, 0.05, 1.0, 0.051, 1.0, underlying_price=100000.0)] + box_books(over=MARKET)
    assert run_handler(svc, frames) == []


LINEAR = "BTC_USDC-27DEC26"
LINEAR_FIELDS = dict(quote="USDC", settle="USDC", inverse=False, contract_size=0.01, min_amount=0.01,
                     tick_size=5.0)
#: The chain in USD (x 100000), the 95000 call 1000 USD cheap, its ask for 2.37 contracts.
LINEAR_MARKET = {f"{LINEAR}-95000-C": (7350.0, 5.0, 7450.0, 2.37)}


def test_a_linear_usdc_chain_signals_boxes_with_no_hedge():
    svc = service()
    frames = box_instruments(prefix=LINEAR, future=False, **LINEAR_FIELDS) + [
        (md("index", "btc_usd"), md_index(1, 100000.0))] + box_books(prefix=LINEAR, over=LINEAR_MARKET,
                                                                    unit=100000.0)
    outs = run_handler(svc, frames)
    assert events(outs) == each({f"{LINEAR}-95000-100000-LBOX", f"{LINEAR}-95000-105000-LBOX",
                                 f"{LINEAR}-95000-110000-LBOX", f"{LINEAR}-90000-95000-SBOX"}, "open")
    box = opened(outs)[f"{LINEAR}-95000-100000-LBOX"]
    # premium 7450 - 5650 + 5750 - 3350 = 4200 USD; fees 4 x min(0.0003 x 100000 index, 0.125 x p)
    # = 120; the box pays 5000: 5000 - 4320 = 680 USD per BTC of amount (linear amounts are in
    # coin, docs/deribit.md), already in USD
    assert box.edge_usd == pytest.approx(680.0, abs=1e-9)
    assert box.size == pytest.approx(2.37)                         # 0.01 lots: nothing rounded off
    assert box.total_usd == pytest.approx(1611.6, abs=1e-9)
    assert box.option_fees == pytest.approx(120.0)
    assert box.hedge is None and box.hedge_exact is True
    assert {(leg.instrument, leg.side, leg.price) for leg in box.legs} == {
        (f"{LINEAR}-95000-C", "buy", 7450.0), (f"{LINEAR}-100000-C", "sell", 5650.0),
        (f"{LINEAR}-100000-P", "buy", 5750.0), (f"{LINEAR}-95000-P", "sell", 3350.0)}
    # every box with the cheap call: 1000 gained - 4 x 50 half-spreads - 120 fees = 680
    assert {round(s.edge_usd, 9) for s in signals(outs)} == {680.0}


def test_a_linear_chain_is_not_signalled_before_its_fee_base_is_known():
    # The option fee of a USDC option is 0.0003 of the index: until an index arrives it cannot
    # be charged right (0.0003 x 1 USD instead of 30 USD per leg: 1.2 USD per box instead of 120).
    svc = service()
    frames = box_instruments(prefix=LINEAR, future=False, **LINEAR_FIELDS) + box_books(
        prefix=LINEAR, over={f"{LINEAR}-95000-C": (7350.0, 5.0, 7380.0, 2.37)}, unit=100000.0)
    assert run_handler(svc, frames) == []
    # With the index, C95 offered 1070 USD cheap: 1070 - 4 x 50 - 120 = 750 USD per BTC.
    outs = feed(svc, [(md("index", "btc_usd"), md_index(2, 100000.0))]) + timer(svc, "forwards")
    assert {round(s.edge_usd, 9) for s in signals(outs)} == {750.0}


# ---- --trade: order.intent groups ---------------------------------------------------------------

def test_with_trade_an_open_sends_one_intent_group_thinnest_leg_first_hedge_last():
    svc = service(trade=True)
    outs = market(svc)
    sent = intents(outs)
    sigs = opened(outs)
    assert set(sigs) == CHEAP_CALL_IDS
    # The reversal opens first (the stream quotes C95, then P95) and its group takes 2.3 of the
    # 2.37 C95 offered; every box after it also buys C95 at that ask: 0.07 left is under a lot,
    # so their groups are not sent (the displayed amount is never asked for twice).
    assert [i.opp_id for i in sent] == [REV] * 3 and svc.stats["intents"] == 3
    assert svc.stats["intents_cut"] == 4
    group_id = sent[0].group_id
    assert sigs[REV].group_id == group_id and all(sigs[oid].group_id == "" for oid in CHEAP_CALL_IDS - {REV})
    assert [i.leg for i in sent] == [0, 1, 2] and {i.group_size for i in sent} == {3}
    assert all(len(i.intent_id) <= 64 and i.intent_id.startswith(group_id) for i in sent)
    assert len({i.intent_id for i in sent}) == 3
    assert all((i.strategy, i.venue, i.time_in_force) == ("strategy-box", "deribit", "immediate_or_cancel")
               for i in sent)
    # thinnest displayed first: C95 ask 2.37 before P95 bid 4.0; the hedge last, sized for 2.3
    assert [(i.instrument, i.side, i.amount) for i in sent[:2]] == [(C95, "buy", pytest.approx(2.3)),
                                                                  (P95, "sell", pytest.approx(2.3))]
    signal = sigs[REV]
    assert sent[2].instrument == FUT and (sent[2].side, sent[2].price, sent[2].amount) == (
        signal.hedge.side, signal.hedge.price, signal.hedge.amount)
    # the intents of a group go out before the signal that names it
    order = [msg.group_id if isinstance(msg, m.OrderIntent) else f"signal {msg.group_id}" for _, msg in outs]
    assert order.index(f"signal {group_id}") > max(n for n, g in enumerate(order) if g == group_id)


def test_structures_opened_together_share_a_leg_by_total_edge():
    # The future quoted last: all five open in one pass of the forward timer. They all buy C95
    # (2.37 offered): the best total edge gets it, the reversal (789.69 x 2.3), the rest is cut.
    svc = service(trade=True)
    frames = box_instruments() + box_books(over=MARKET)
    assert run_handler(svc, frames) == []                       # no forward yet
    feed(svc, [future_book(FUTURE_BID, FUTURE_ASK)])
    outs = timer(svc, "forwards")
    assert set(opened(outs)) == CHEAP_CALL_IDS
    totals = {s.opp_id: s.total_usd for s in signals(outs)}
    assert max(totals, key=totals.get) == REV
    assert {i.opp_id for i in intents(outs)} == {REV} and svc.stats["intents_cut"] == 4
    # Everything closes (C95 fair again); C95 cheap again at another price, 10 offered. The
    # reversal reopens with size min(C95 ask 10, P95 bid 4) = 4, but its group is 1.7: the
    # P95 bid is the same quote (0.0335) the first group already sold 2.3 into, while the 2.3
    # taken of C95 at the old price does not count against its new quote.
    assert [s.event for s in signals(feed(svc, [book(C95, 0.0835, 5.0, 0.0845, 2.37)]))] == ["close"] * 5
    outs = feed(svc, [book(C95, 0.0735, 5.0, 0.0744, 10.0)])
    assert opened(outs)[REV].size == pytest.approx(4.0)
    rev = [i for i in intents(outs) if i.opp_id == REV]
    assert [(i.instrument, i.amount) for i in rev[:2]] == [(P95, pytest.approx(1.7)), (C95, pytest.approx(1.7))]


def test_updates_and_closes_send_no_intents():
    svc = service(trade=True)
    market(svc)
    outs = feed(svc, [book(P100, 0.0565, 5.0, 0.057, 3.0), book(C95, 0.0835, 5.0, 0.0845, 2.37)])
    assert [s.event for s in signals(outs)].count("close") == 5 and intents(outs) == []
    assert svc.stats["intents"] == 3


def test_intent_ids_of_two_runs_never_collide():
    first = intents(market(service(FakeClock(T0), trade=True)))
    second = intents(market(service(FakeClock(T0 + 1_000_000), trade=True)))    # started 1 ms later
    assert len(first) == len(second) == 3
    assert not {i.intent_id for i in first} & {i.intent_id for i in second}


def test_without_trade_no_intents():
    svc = service()
    outs = market(svc)
    assert intents(outs) == [] and svc.stats["intents"] == 0
    assert all(s.group_id == "" for s in signals(outs))


# ---- where quotes come from -----------------------------------------------------------------------

def both_sources() -> list:
    """The chain quoted twice: tickers with the cheap call, books with the rich put."""
    quotes = {}
    for strike, (c, p) in BOX_MIDS.items():
        quotes[box_option(strike, "C")] = (c - 0.0005, 5.0, c + 0.0005, 3.0)
        quotes[box_option(strike, "P")] = (p - 0.0005, 5.0, p + 0.0005, 3.0)
    quotes[C95] = CHEAP_CALL
    return (box_instruments()
            + [future_book(FUTURE_BID, FUTURE_ASK),
               ticker(FUT, FUTURE_BID, 100000.0, FUTURE_ASK, 100000.0, underlying_price=None)]
            + [ticker(name, *quote) for name, quote in quotes.items()]
            + box_books(over={P105: RICH_PUT}))


@pytest.mark.parametrize("source, expected", [("ticker", CHEAP_CALL_IDS), ("book", RICH_PUT_IDS)])
def test_quotes_come_from_one_source_only(source, expected):
    svc = service(quote_source=source)
    outs = run_handler(svc, both_sources())
    assert events(outs) == each(expected, "open")
    assert svc.stats["quotes"] == 10                          # the other source's 10 are not quotes


# ---- inputs that must not poison the state ------------------------------------------------------

def test_a_book_of_an_unknown_instrument_changes_nothing():
    svc = service()
    market(svc)
    expiry = next(iter(svc.market.expiries.values()))
    strikes = list(expiry.chain.strikes)
    assert feed(svc, [book("BTC-27DEC26-120000-C", 0.0001, 1.0, 0.0002, 1.0),
                      book("BTC-27DEC26-120000-P", -1.0, 1.0, NAN, 1.0)]) == []
    assert list(expiry.chain.strikes) == strikes and "BTC-27DEC26-120000-C" not in svc.market.options
    assert svc.stats["quotes"] == 10 and set(svc.opps.open) == CHEAP_CALL_IDS
    assert timer(svc, "full-scan") == [] and svc.stats["scan_corrections"] == 0


def test_a_frame_stamped_far_ahead_does_not_move_the_clock():
    # A book of an instrument it does not know, stamped a day ahead: were it the clock, every
    # leg would be a day old (all closed on the sweep) and no fresh quote could pass for a day.
    svc = service()
    market(svc)
    assert feed(svc, [book("BTC-27DEC26-120000-C", 0.0001, 1.0, 0.0002, 1.0, t=86_400 * S)]) == []
    assert timer(svc, "sweep") == []
    assert set(svc.opps.open) == CHEAP_CALL_IDS


@pytest.mark.parametrize("currencies, opens", [(["BTC"], False), ([], True), (["ETH"], True)])
def test_only_the_configured_currencies_are_evaluated(currencies, opens):
    svc = service(currencies=currencies)
    eth = "ETH-27DEC26"
    frames = (box_instruments(prefix=eth) + [future_book(FUTURE_BID, FUTURE_ASK, name=eth),
                                             (md("index", "eth_usd"), md_index(1, 100000.0, name="eth_usd"))]
              + box_books(prefix=eth, over={f"{eth}-95000-C": CHEAP_CALL}))
    outs = run_handler(svc, frames)
    assert bool(outs) is opens
    if opens:
        assert f"{eth}-95000-100000-LBOX" in opened(outs)
    else:
        assert svc.market.expiries == {} and svc.market.options == {} and "ETH" not in svc.market.index
        assert svc.stats["quotes"] == 0


BAD_QUOTES = [
    # (why, the 95000 call's bid, bid amount, ask, ask amount, the counter it goes to)
    ("NaN ask", 0.0735, 5.0, NAN, 2.37, "rejected_bad_price"),
    ("zero ask with an amount", 0.0735, 5.0, 0.0, 2.37, "rejected_bad_price"),
    ("negative ask", 0.0735, 5.0, -0.0745, 2.37, "rejected_bad_price"),
    ("infinite ask", 0.0735, 5.0, INF, 2.37, "rejected_bad_price"),
    ("minus infinite ask", 0.0735, 5.0, -INF, 2.37, "rejected_bad_price"),
    ("NaN bid", NAN, 5.0, 0.0745, 2.37, "rejected_bad_price"),
    ("NaN ask amount", 0.0735, 5.0, 0.0745, NAN, "rejected_bad_amount"),
    ("infinite ask amount", 0.0735, 5.0, 0.0745, INF, "rejected_bad_amount"),
    ("negative ask amount", 0.0735, 5.0, 0.0745, -2.37, "rejected_bad_amount"),
    ("zero ask amount", 0.0735, 5.0, 0.0745, 0.0, "rejected_bad_amount"),
    ("crossed: bid over the cheap ask", 0.0835, 5.0, 0.0745, 2.37, "rejected_crossed"),
]


@pytest.mark.parametrize("why, bid, bid_amount, ask, ask_amount, counter", BAD_QUOTES,
                         ids=[q[0] for q in BAD_QUOTES])
def test_a_bad_quote_opens_nothing_and_is_counted(why, bid, bid_amount, ask, ask_amount, counter):
    svc = service()
    outs = market(svc, over={**MARKET, C95: (bid, bid_amount, ask, ask_amount)})
    assert outs == []
    assert svc.stats[counter] == 1
    assert svc.stats["opened"] == 0


@pytest.mark.parametrize("why, bid, bid_amount, ask, ask_amount, counter", BAD_QUOTES,
                         ids=[q[0] for q in BAD_QUOTES])
def test_a_bad_quote_voids_the_good_one_before_it_and_a_good_one_restores_it(
        why, bid, bid_amount, ask, ask_amount, counter):
    svc = service()
    market(svc)
    outs = feed(svc, [book(C95, bid, bid_amount, ask, ask_amount)])
    assert events(outs) == each(CHEAP_CALL_IDS, "close", "no_quote")
    assert svc.stats[counter] == 1
    outs = feed(svc, [book(C95, *CHEAP_CALL, seq=3)])
    assert events(outs) == each(CHEAP_CALL_IDS, "open")


@pytest.mark.parametrize("bid, ask", [(NAN, FUTURE_ASK), (FUTURE_BID, -1.0), (FUTURE_ASK, FUTURE_BID)])
def test_a_bad_future_quote_takes_the_forward_away(bid, ask):
    svc = service()
    market(svc)
    assert feed(svc, [future_book(bid, ask, seq=2)]) == []
    assert events(timer(svc, "forwards")) == each(CHEAP_CALL_IDS, "close", "no_forward")
    assert feed(svc, [future_book(FUTURE_BID, FUTURE_ASK, seq=3)]) == []
    assert events(timer(svc, "forwards")) == each(CHEAP_CALL_IDS, "open")


def test_a_bad_ticker_quote_is_counted_like_a_bad_book():
    svc = service(quote_source="ticker")
    frames = box_instruments() + [ticker(FUT, FUTURE_BID, 1e5, FUTURE_ASK, 1e5, underlying_price=None),
                                  ticker(C95, 0.0735, 5.0, NAN, 2.37)]
    assert run_handler(svc, frames) == []
    assert svc.stats["rejected_bad_price"] == 1


def test_messages_it_does_not_use_are_counted_as_ignored():
    svc = service()
    signal = opened(market(svc))[LBOX]
    intent = m.OrderIntent(intent_id="x-0", group_id="x", group_size=1, leg=0, strategy="other", venue="deribit",
                           instrument=C95, side="buy", amount=1.0, price=0.07)
    trade = md_trade(1, name=C95)
    heartbeat = m.Heartbeat(name="etl-filter", pid=1, state="running", uptime_s=1.0, counters={})
    outs = feed(svc, [(md("trade", C95), trade),
                      ("clean.trade.deribit." + C95, m.CleanTrade(**m.to_builtins(trade))),
                      ("hb.etl-filter", heartbeat),
                      (f"signal.box.deribit.{LBOX}", signal),
                      (f"order.intent.deribit.{C95}", intent)])
    assert outs == []
    assert svc.stats["ignored"] == 5
    assert svc.stats["quotes"] == 10 and set(svc.opps.open) == CHEAP_CALL_IDS
