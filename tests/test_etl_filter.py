"""etl-filter's handler, rule by rule: md.* in, clean.* out, every rejection counted."""

from __future__ import annotations

import logging
import math

import pytest

from hedgepipe import messages as m
from hedgepipe.clock import FakeClock
from hedgepipe.config import load_settings
from hedgepipe.daemons.etl_filter import STAT_NAMES, EtlFilterConfig, EtlFilterService
from hedgepipe.errors import ConfigError
from hedgepipe.runtime import run_handler

from .frames import (DAY, FUTURE, MS, OPTION, T0, instrument, md, md_book, md_index, md_ticker,
                     md_trade)

S = 1_000_000_000
NAN, INF = float("nan"), float("inf")
BIDS = [(0.05, 10.0), (0.0495, 3.0)]
ASKS = [(0.051, 5.0), (0.0515, 2.0)]


def service(**config) -> EtlFilterService:
    config.setdefault("prime_from_redis", False)  # pure handler tests: no Redis (see the priming tests)
    return EtlFilterService(EtlFilterConfig(**config), FakeClock(T0 + 7 * S))


def run(svc: EtlFilterService, frames) -> list:
    return run_handler(svc, frames)


def announced(*names: str, **kw) -> list:
    return [(md("instrument", n), instrument(n, **kw)) for n in (names or (OPTION,))]


def book_frame(seq: int, bids=BIDS, asks=ASKS, name: str = OPTION, **kw):
    return md("book", name), md_book(seq, bids, asks, name=name, **kw)


def rejected(svc: EtlFilterService) -> dict[str, int]:
    return {k: v for k, v in svc.stats.items() if k.startswith("rejected_") and v}


def of_kind(outs, kind: str) -> list:
    return [msg for topic, msg in outs if topic.startswith(f"clean.{kind}.")]


# ---- the envelope and the types -----------------------------------------------------------------

def test_a_good_book_passes_with_its_times_the_upstream_stamps_and_our_own():
    svc = service()
    outs = run(svc, [*announced(), book_frame(7, t=2 * MS)])
    topic, book = outs[-1]
    assert topic == "clean.book.deribit." + OPTION
    assert type(book) is m.CleanBook
    assert (book.bids, book.asks, book.change_id, book.stale) == (BIDS, ASKS, 7, False)
    assert (book.ts_event, book.ts_recv) == (T0 + MS, T0 + 2 * MS)      # the md frame's, unchanged
    assert (book.up_src, book.up_seq) == ("feed-deribit", 7)            # the md envelope, for audit
    assert book.ts_clean == T0 + 7 * S                                   # our clock
    assert (book.src, book.seq) == ("etl-filter", 1)                     # ours: gaps stay detectable
    assert svc.stats["clean_books"] == 1 and not rejected(svc)


def test_every_kind_has_its_clean_type_and_topic():
    svc = service()
    outs = run(svc, [*announced(), book_frame(1), (md("ticker", OPTION), md_ticker(1)),
                     (md("trade", OPTION), md_trade(1)), (md("index", "btc_usd"), md_index(1, 65000.0))])
    assert [(t.split(".")[1], type(msg)) for t, msg in outs] == [
        ("instrument", m.CleanInstrument), ("book", m.CleanBook), ("ticker", m.CleanTicker),
        ("trade", m.CleanTrade), ("index", m.CleanIndex)]
    inst = outs[0][1]
    md_fields = m.to_builtins(instrument())
    del md_fields["src"], md_fields["seq"]
    assert {k: getattr(inst, k) for k in md_fields} == md_fields      # every md field copied
    assert (inst.up_src, inst.up_seq, inst.src) == ("feed-deribit", 1, "etl-filter")
    assert {k: svc.stats[k] for k in ("clean_instruments", "clean_books", "clean_tickers",
                                      "clean_trades", "clean_indexes")} == dict.fromkeys(
        ("clean_instruments", "clean_books", "clean_tickers", "clean_trades", "clean_indexes"), 1)


def test_every_md_field_is_copied_to_the_clean_message():
    full_ticker = md_ticker(1, last=0.0505, interest_rate=0.01, open_interest=12.0,
                            underlying_index="BTC-27DEC26", gamma=1e-5, vega=20.0, theta=-30.0,
                            rho=1.5)
    samples = [*announced(), book_frame(1), (md("ticker", OPTION), full_ticker),
               (md("trade", OPTION), md_trade(1, index_price=65000.0, iv=61.0)),
               (md("index", "btc_usd"), md_index(1, 65000.0, sources=3))]
    outs = run(service(), samples)
    assert len(outs) == len(samples)
    for (_, md_msg), (_, clean) in zip(samples, outs):
        fields = {f: getattr(md_msg, f) for f in md_msg.__struct_fields__ if f not in ("src", "seq")}
        assert None not in fields.values() or md_msg is not full_ticker
        assert {f: getattr(clean, f) for f in fields} == fields


def test_every_counter_is_in_the_stats_from_the_start():
    assert set(service().stats) == set(STAT_NAMES)
    assert all(v == 0 for v in service().stats.values())


# ---- derived fields, worked by hand ---------------------------------------------------------------

def test_book_derived_fields():
    svc = service()
    outs = run(svc, [*announced(), book_frame(1, bids=[(0.05, 10.0)], asks=[(0.051, 5.0)])])
    book = outs[-1][1]
    assert book.mid == pytest.approx(0.0505)                       # (0.05 + 0.051) / 2
    assert book.spread == pytest.approx(0.001)                     # 0.051 - 0.05
    assert book.spread_bps == pytest.approx(198.01980198)          # 0.001 / 0.0505 * 1e4
    # (bid * ask_amount + ask * bid_amount) / (bid_amount + ask_amount)
    # = (0.05 * 5 + 0.051 * 10) / 15 = 0.76 / 15: nearer the ask, where the size is thinner
    assert book.microprice == pytest.approx(0.0506666667)


def test_ticker_derived_fields_and_mid_iv():
    svc = service()
    outs = run(svc, [*announced(),
                     (md("ticker", OPTION), md_ticker(1, bid=0.05, ask=0.052, bid_amount=1.0,
                                                      ask_amount=3.0, bid_iv=58.0, ask_iv=63.0))])
    t = outs[-1][1]
    assert (t.mid, t.spread) == (pytest.approx(0.051), pytest.approx(0.002))
    assert t.spread_bps == pytest.approx(392.15686)                # 0.002 / 0.051 * 1e4
    assert t.microprice == pytest.approx(0.0505)                   # (0.05*3 + 0.052*1) / 4
    assert t.mid_iv == pytest.approx(60.5)                         # (58 + 63) / 2
    assert (t.bid, t.ask_amount, t.mark_iv, t.delta) == (0.05, 3.0, 60.0, 0.5)  # copied


def test_derived_fields_are_none_when_a_side_or_an_iv_is_missing():
    svc = service()
    outs = run(svc, [*announced(),
                     book_frame(1, bids=[], asks=ASKS),
                     (md("ticker", OPTION), md_ticker(1, bid=None, bid_amount=None, bid_iv=None)),
                     (md("ticker", OPTION), md_ticker(2, bid_iv=0.0)),   # Deribit: below intrinsic
                     (md("ticker", OPTION), md_ticker(3, bid_amount=None))])
    book, one_sided, no_iv, no_amount = (msg for _, msg in outs[1:])
    assert (book.mid, book.spread, book.spread_bps, book.microprice) == (None,) * 4
    assert (one_sided.mid, one_sided.microprice, one_sided.mid_iv) == (None, None, None)
    assert no_iv.mid is not None and no_iv.mid_iv is None
    assert no_amount.mid == pytest.approx(0.0505) and no_amount.microprice is None
    assert not rejected(svc)


# ---- the universe -----------------------------------------------------------------------------

def test_instruments_outside_the_currencies_or_kinds_are_rejected_with_their_data():
    svc = service(currencies=["BTC"], kinds=["option"])
    eth = "ETH-27DEC26-4000-C"
    outs = run(svc, [*announced(eth, FUTURE), book_frame(1, name=eth), book_frame(1, name=FUTURE,
               bids=[(65000.0, 10.0)], asks=[(65000.5, 10.0)])])
    assert outs == []
    assert rejected(svc) == {"rejected_universe": 4}   # two definitions, two books (not "unknown")


def test_a_retirement_always_passes_and_the_data_after_it_is_rejected():
    svc = service(currencies=["BTC"])
    eth = "ETH-27DEC26-4000-C"
    outs = run(svc, [*announced(), (md("instrument", eth), instrument(eth, seq=1)),
                     (md("instrument", eth), instrument(eth, seq=2, active=False)),
                     (md("instrument", OPTION), instrument(seq=2, active=False)),
                     book_frame(1)])
    kept = [(msg.name, msg.active) for msg in of_kind(outs, "instrument")]
    assert kept == [(OPTION, True), (eth, False), (OPTION, False)]
    assert rejected(svc) == {"rejected_universe": 2}   # the ETH listing, the retired one's book


def test_expiry_window_is_judged_at_the_streams_time():
    # The option expires at T0 + 30 days. max 20 days: too far at T0, inside from T0 + 10 days.
    svc = service(max_expiry_days=20.0, min_expiry_days=1.0, max_age_s=0.0)
    outs = run(svc, [*announced(), book_frame(1),
                     book_frame(2, t=11 * DAY),
                     book_frame(3, t=29 * DAY + 1),            # less than a day left
                     book_frame(4, t=31 * DAY)])               # expired
    # book 2 passed, so leaving the window publishes a stale marker (once)
    assert [(b.up_seq, b.stale) for b in of_kind(outs, "book")] == [(2, False), (3, True)]
    assert len(of_kind(outs, "instrument")) == 1              # definitions: static parts only
    assert rejected(svc) == {"rejected_universe": 3}


def test_an_expired_definition_is_not_forwarded():
    svc = service(max_age_s=0.0)
    outs = run(svc, [(md("index", "btc_usd"), md_index(1, 65000.0, t=40 * DAY)),
                     *announced(ts_recv=T0 + 40 * DAY)])
    assert of_kind(outs, "instrument") == [] and rejected(svc) == {"rejected_universe": 1}


def test_moneyness_band_uses_the_latest_index_of_the_base_composite_first():
    far, near = "BTC-27DEC26-150000-C", "BTC-27DEC26-100000-P"
    svc = service(moneyness_min=0.8, moneyness_max=1.25, spike_k=0.0)
    outs = run(svc, [*announced(far, near),
                     book_frame(1, name=far),                              # no reference yet: passes
                     (md("index", "btc_usd"), md_index(1, 100000.0)),
                     book_frame(2, name=far), book_frame(2, name=near),    # 1.5 out, 1.0 in
                     (md("index", "btc_usd", "composite"), md_index(1, 130000.0, source="composite")),
                     book_frame(3, name=far),                              # 150/130 = 1.15: in
                     (md("index", "btc_usd"), md_index(2, 100000.0)),      # composite still rules
                     book_frame(4, name=far)])
    assert [(b.instrument, b.up_seq, b.stale) for b in of_kind(outs, "book")] == [
        (far, 1, False), (far, 2, True), (near, 2, False), (far, 3, False), (far, 4, False)]
    assert svc.stats["moneyness_unknown"] == 1
    assert rejected(svc) == {"rejected_universe": 1}


def composite_index(seq: int, price: float, t: int):
    return md("index", "btc_usd", "composite"), md_index(seq, price, source="composite", t=t)


def test_an_option_that_leaves_the_band_publishes_one_stale_marker():
    # The review's case: BTC falls 100k -> 75k, so the 100000 call (moneyness 1.33) leaves
    # [0.8, 1.2]. Its last clean book must not stay live downstream.
    far = "BTC-27DEC26-150000-C"                       # never in the band: nothing to distrust
    svc = service(moneyness_min=0.8, moneyness_max=1.2)
    outs = run(svc, [*announced(OPTION, far), composite_index(1, 100000.0, 0), book_frame(1, t=MS),
                     book_frame(1, name=far, t=MS),
                     composite_index(2, 75000.0, 2 * MS), book_frame(2, t=3 * MS),
                     book_frame(3, t=4 * MS), book_frame(2, name=far, t=4 * MS),
                     composite_index(3, 100000.0, 5 * MS), book_frame(4, t=6 * MS)])   # back in
    assert [(b.instrument, b.up_seq, b.stale) for b in of_kind(outs, "book")] == [
        (OPTION, 1, False), (OPTION, 2, True), (OPTION, 4, False)]
    marker = of_kind(outs, "book")[1]
    assert (marker.bids, marker.asks, marker.mid, marker.change_id) == ([], [], None, 2)
    assert svc.stats["stale_marked"] == 1 and rejected(svc) == {"rejected_universe": 4}


def test_a_retired_instrument_with_clean_books_publishes_one_stale_marker():
    svc = service()
    outs = run(svc, [*announced(), book_frame(1),
                     (md("instrument", OPTION), instrument(seq=2, active=False)),
                     book_frame(2), book_frame(3)])
    assert [(b.up_seq, b.stale) for b in of_kind(outs, "book")] == [(1, False), (2, True)]
    assert rejected(svc) == {"rejected_universe": 2}


def test_unknown_instruments_are_rejected_until_announced():
    svc = service()
    outs = run(svc, [book_frame(1), (md("ticker", OPTION), md_ticker(1)),
                     (md("trade", OPTION), md_trade(1)), *announced(), book_frame(2)])
    assert [b.up_seq for b in of_kind(outs, "book")] == [2]
    assert rejected(svc) == {"rejected_unknown_instrument": 3}


def test_prime_instruments_knows_them_before_their_frames_and_publishes_nothing():
    svc = service()
    bad = instrument("BTC-27DEC26-90000-C", tick_size=0.0)
    assert svc.prime_instruments([instrument(), bad]) == 1
    outs = run(svc, [book_frame(1), book_frame(1, name="BTC-27DEC26-90000-C")])
    assert [t for t, _ in outs] == ["clean.book.deribit." + OPTION]
    assert svc.stats["instruments_primed"] == 1
    assert rejected(svc) == {"rejected_bad_value": 1, "rejected_unknown_instrument": 1}


def test_on_start_primes_the_instruments_store_writer_keeps_in_redis(redis_url):
    import redis
    client = redis.Redis.from_url(redis_url)
    retired = instrument("BTC-27DEC26-90000-C", active=False, src="feed-deribit", seq=2)
    client.hset("hp:last:md.instrument", mapping={
        md("instrument", OPTION): m.encode(instrument(src="feed-deribit", seq=1)),
        md("instrument", retired.name): m.encode(retired)})
    client.close()
    svc = service(prime_from_redis=True, redis_url=redis_url)
    outs = run(svc, [book_frame(1), book_frame(1, name=retired.name)])
    assert [t for t, _ in outs] == ["clean.book.deribit." + OPTION]  # nothing published for priming
    assert svc.stats["instruments_primed"] == 1                       # the retired one is not taken
    assert rejected(svc) == {"rejected_unknown_instrument": 1}


def test_reading_only_pipes_does_not_prime_from_redis_unless_forced(redis_url, caplog):
    # `hedgepipe replay day --out - | etl-filter --in - --out -` must not depend on what the live
    # Redis holds today: with every input "-", "auto" (the default) does not prime.
    import redis
    client = redis.Redis.from_url(redis_url)
    client.hset("hp:last:md.instrument",
                mapping={md("instrument", OPTION): m.encode(instrument(src="feed-deribit", seq=1))})
    client.close()
    assert EtlFilterConfig().prime_from_redis == "auto"
    piped = service(prime_from_redis="auto", inputs=["-"], redis_url=redis_url)
    with caplog.at_level(logging.INFO, logger="hedgepipe.etl-filter"):
        outs = run(piped, [book_frame(1)])
    assert outs == [] and rejected(piped) == {"rejected_unknown_instrument": 1}
    assert piped.stats["instruments_primed"] == piped.stats["prime_unavailable"] == 0
    assert "not primed from Redis: every input is a pipe" in caplog.text
    forced = service(prime_from_redis=True, inputs=["-"], redis_url=redis_url)
    assert len(run(forced, [book_frame(1)])) == 1 and forced.stats["instruments_primed"] == 1
    on_the_bus = service(prime_from_redis="auto", inputs=["-", "feed-index"], redis_url=redis_url)
    assert len(run(on_the_bus, [book_frame(1)])) == 1 and on_the_bus.stats["instruments_primed"] == 1


def test_on_start_without_a_reachable_redis_counts_it_and_learns_from_the_stream(short_tmp, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)  # it would win over the configured URL
    svc = service(prime_from_redis=True, redis_url=f"unix://{short_tmp}/no-such.sock")
    outs = run(svc, [*announced(), book_frame(1)])
    assert svc.stats["prime_unavailable"] == 1 and svc.stats["instruments_primed"] == 0
    assert len(of_kind(outs, "book")) == 1


def test_an_index_of_another_currency_is_outside_the_universe():
    svc = service(currencies=["BTC"])
    outs = run(svc, [(md("index", "eth_usd"), md_index(1, 3000.0, name="eth_usd"))])
    assert outs == [] and rejected(svc) == {"rejected_universe": 1}


def test_a_payload_for_another_instrument_than_its_topic_is_rejected():
    svc = service()
    outs = run(svc, [*announced(OPTION, FUTURE),
                     (md("book", OPTION), md_book(1, BIDS, ASKS, name=FUTURE)),
                     (md("index", "btc_usd"), md_index(1, 3000.0, name="eth_usd"))])
    assert of_kind(outs, "book") == [] and of_kind(outs, "index") == []
    assert rejected(svc) == {"rejected_topic_mismatch": 2}


# ---- bad values ------------------------------------------------------------------------------------

@pytest.mark.parametrize("bids, asks", [
    ([(NAN, 1.0)], ASKS), ([(0.05, INF)], ASKS), (BIDS, [(0.051, 0.0)]), (BIDS, [(-0.051, 1.0)]),
    ([(0.0495, 1.0), (0.05, 1.0)], ASKS),            # bids not best first
    (BIDS, [(0.051, 1.0), (0.051, 2.0)]),            # the same price twice
])
def test_bad_book_levels_are_rejected(bids, asks):
    svc = service()
    outs = run(svc, [*announced(), book_frame(1, bids=bids, asks=asks)])
    assert of_kind(outs, "book")[-1].stale                 # only the stale marker went out
    assert rejected(svc) == {"rejected_bad_value": 1}


@pytest.mark.parametrize("fields", [
    dict(bid=NAN), dict(ask=-0.05), dict(bid_amount=0.0), dict(ask_amount=INF),
    dict(mark_iv=NAN), dict(delta=-INF), dict(index_price=NAN),
])
def test_bad_ticker_values_are_rejected(fields):
    svc = service()
    outs = run(svc, [*announced(), (md("ticker", OPTION), md_ticker(1, **fields))])
    assert of_kind(outs, "ticker") == [] and rejected(svc) == {"rejected_bad_value": 1}


@pytest.mark.parametrize("fields", [dict(price=0.0), dict(price=NAN), dict(amount=-1.0),
                                    dict(index_price=INF), dict(iv=NAN)])
def test_bad_trade_values_are_rejected(fields):
    svc = service()
    outs = run(svc, [*announced(), (md("trade", OPTION), md_trade(1, **fields))])
    assert of_kind(outs, "trade") == [] and rejected(svc) == {"rejected_bad_value": 1}


@pytest.mark.parametrize("price", [NAN, INF, 0.0, -65000.0])
def test_bad_index_prices_are_rejected(price):
    svc = service()
    assert run(svc, [(md("index", "btc_usd"), md_index(1, price))]) == []
    assert rejected(svc) == {"rejected_bad_value": 1}


@pytest.mark.parametrize("fields", [dict(tick_size=0.0), dict(tick_size=NAN),
                                    dict(tick_steps=[(0.005, -0.0005)]), dict(strike=None)])
def test_an_unusable_instrument_definition_is_rejected(fields):
    svc = service()
    outs = run(svc, [(md("instrument", OPTION), instrument(**fields)), book_frame(1)])
    assert outs == []
    assert rejected(svc) == {"rejected_bad_value": 1, "rejected_unknown_instrument": 1}


# ---- crossed and locked -------------------------------------------------------------------------

@pytest.mark.parametrize("best_ask, counter", [(0.0495, "rejected_crossed"), (0.05, "rejected_locked")])
def test_crossed_and_locked_books_and_tickers_are_rejected(best_ask, counter):
    svc = service()
    run(svc, [*announced(), book_frame(1, asks=[(best_ask, 1.0)]),
              (md("ticker", OPTION), md_ticker(1, bid=0.05, ask=best_ask))])
    assert rejected(svc) == {counter: 2}


def test_locked_passes_when_reject_locked_is_off():
    svc = service(reject_locked=False)
    outs = run(svc, [*announced(), book_frame(1, asks=[(0.05, 1.0)])])
    assert of_kind(outs, "book")[0].spread == 0.0 and not rejected(svc)


# ---- ticks -----------------------------------------------------------------------------------------

def test_prices_off_the_tick_are_rejected_in_books_trades_and_tickers():
    svc = service()
    run(svc, [*announced(), book_frame(1, asks=[(0.051, 1.0), (0.05125, 1.0)]),
              book_frame(2, bids=[(0.0503, 1.0)]),
              (md("trade", OPTION), md_trade(1, price=0.05001)),
              (md("ticker", OPTION), md_ticker(1, bid=0.0502)),
              (md("ticker", OPTION), md_ticker(2, ask=0.0512))])
    assert rejected(svc) == {"rejected_off_tick": 5}


def test_float_noise_is_on_the_tick():
    assert 0.0705 / 0.0005 != 141.0  # 140.99999999999997: the case the tolerance exists for
    svc = service()
    outs = run(svc, [*announced(), book_frame(1, bids=[(0.0705, 1.0)], asks=[(0.071, 1.0)]),
                     book_frame(2, bids=[(0.3, 1.0)], asks=[(0.3005, 1.0)])])
    assert len(of_kind(outs, "book")) == 2 and not rejected(svc)


def test_price_dependent_tick_steps():
    # Deribit options: 0.0001 up to 0.005, 0.0005 above
    svc = service(spike_k=0.0)
    run(svc, [(md("instrument", OPTION), instrument(tick_size=0.0001, tick_steps=[(0.005, 0.0005)])),
              book_frame(1, bids=[(0.0043, 1.0)], asks=[(0.0044, 1.0)]),      # 0.0001 steps: on
              book_frame(2, bids=[(0.0061, 1.0)], asks=[(0.0065, 1.0)])])     # 0.0061: off
    assert svc.stats["clean_books"] == 1 and rejected(svc) == {"rejected_off_tick": 1}


def test_a_new_tick_size_rechecks_a_side_that_was_already_clean():
    svc = service(spike_k=0.0)
    book = dict(bids=[(0.0503, 1.0)], asks=[(0.051, 1.0)])
    run(svc, [(md("instrument", OPTION), instrument(tick_size=0.0001)), book_frame(1, **book),
              book_frame(2, bids=book["bids"], asks=[(0.0511, 1.0)]),    # bids unchanged: fine
              (md("instrument", OPTION), instrument(seq=2, tick_size=0.0005)),
              book_frame(3, **book)])                                      # 0.0503 is off now
    assert svc.stats["clean_books"] == 2 and rejected(svc) == {"rejected_off_tick": 1}


def test_tick_check_can_be_turned_off():
    svc = service(check_ticks=False)
    run(svc, [*announced(), (md("trade", OPTION), md_trade(1, price=0.05001))])
    assert svc.stats["clean_trades"] == 1 and not rejected(svc)


# ---- stale data: the stream's watermark is the clock ------------------------------------------

def watermark_at(t: int, first_seq: int = 2) -> list:
    """feed-deribit republishing a definition 5 times (watermark_confirm_frames), received at
    T0 + t: its watermark is then T0 + t."""
    return [(md("instrument", OPTION), instrument(seq=first_seq + i, ts_recv=T0 + t))
            for i in range(5)]


def test_data_older_than_max_age_behind_its_publishers_watermark_is_rejected():
    svc = service(max_age_s=5.0)
    outs = run(svc, [*announced(), *watermark_at(10 * S),
                     book_frame(1, t=10 * S, ts_event=T0 + 5 * S),       # exactly 5 s: kept
                     book_frame(2, t=9 * S, ts_event=T0 + 5 * S - 1),    # 5 s + 1 ns: stale
                     # received 8 s before the mark; its venue stamp later than that: stale too
                     book_frame(3, t=2 * S, ts_event=T0 + 9 * S),
                     (md("trade", OPTION), md_trade(1, t=10 * S, ts_event=T0)),   # venue delay
                     (md("ticker", OPTION), md_ticker(1, t=10 * S, ts_event=T0))])
    assert svc.registry.clocks["feed-deribit"].mark == T0 + 10 * S
    assert [b.up_seq for b in of_kind(outs, "book") if not b.stale] == [1]
    assert rejected(svc) == {"rejected_stale": 4}


def test_venue_to_feed_delay_is_stale_even_before_there_is_a_watermark():
    svc = service(max_age_s=5.0)
    outs = run(svc, [*announced(), book_frame(1, ts_event=T0 - 6 * S),
                     (md("index", "btc_usd"), md_index(1, 65000.0, ts_event=T0 - 6 * S))])
    assert of_kind(outs, "index") == [] and [b.stale for b in of_kind(outs, "book")] == [True]
    assert rejected(svc) == {"rejected_stale": 2}


def test_a_frame_far_behind_its_publishers_watermark_is_stale_and_resets_nothing():
    # The review's case: 100 s of live books, then one delivered 10 s late and one 2 min late.
    # The 2-minute-old book used to reset the watermark to itself and replace the last good one.
    svc = service()
    live = [book_frame(i, t=i * S) for i in range(1, 101)]
    ten_s_late = book_frame(101, t=90 * S, bids=[(0.049, 1.0)])
    two_min_late = book_frame(102, t=-20 * S, bids=[(0.048, 1.0)])
    outs = run(svc, [*announced(), *live, ten_s_late, two_min_late])
    assert [(b.up_seq, b.stale) for b in of_kind(outs, "book")][-2:] == [(100, False), (101, True)]
    assert rejected(svc) == {"rejected_stale": 2}
    assert svc.stats["watermark_resets"] == 0
    assert svc.registry.clocks["feed-deribit"].mark == T0 + 100 * S


def test_one_frame_of_another_publisher_stamped_ahead_blanks_nothing():
    # The review's case: one index frame 30 s ahead used to push the one watermark forward, and
    # every book after it was stale (rejected_stale 48).
    svc = service()
    fast = (md("index", "btc_usd", "bitstamp"),
            md_index(1, 65000.0, source="bitstamp", ts_recv=T0 + 30 * S, ts_event=T0 + 30 * S))
    books = [book_frame(i, t=i * 100 * MS) for i in range(2, 50)]
    outs = run(svc, [*announced(), book_frame(1), fast, *books])
    assert [b.stale for b in of_kind(outs, "book")] == [False] * 49
    assert len(of_kind(outs, "index")) == 1 and not rejected(svc)


def test_one_frame_of_the_same_publisher_stamped_ahead_is_judged_alone_and_counted():
    svc = service()
    books = [book_frame(i, t=i * 100 * MS) for i in range(1, 30)]
    skewed = (md("ticker", OPTION), md_ticker(1, t=30 * S))    # its own stamps are consistent
    outs = run(svc, [*announced(), *books[:10], skewed, *books[10:]])
    assert [b.stale for b in of_kind(outs, "book")] == [False] * 29
    assert len(of_kind(outs, "ticker")) == 1 and not rejected(svc)
    assert svc.stats["watermark_outliers"] == 1 and svc.stats["watermark_resets"] == 0
    assert svc.registry.clocks["feed-deribit"].mark == T0 + 2900 * MS


def test_each_publisher_is_judged_by_its_own_clock():
    # feed-index's host runs 30 s ahead of feed-deribit's: both pass; a frame late against its
    # own publisher's clock is stale.
    svc = service()
    indexes = [(md("index", "btc_usd"), md_index(i, 65000.0, t=30 * S + i * 100 * MS))
               for i in range(1, 12)]
    books = [book_frame(i, t=i * 100 * MS) for i in range(1, 12)]
    late_index = (md("index", "btc_usd"), md_index(12, 65000.0, t=20 * S))
    outs = run(svc, [*announced(), *(f for pair in zip(indexes, books) for f in pair), late_index,
                     book_frame(12, t=1100 * MS)])
    assert len(of_kind(outs, "index")) == 11
    assert [b.stale for b in of_kind(outs, "book")] == [False] * 12
    assert rejected(svc) == {"rejected_stale": 1}
    assert {src: c.mark for src, c in svc.registry.clocks.items()} == {
        "feed-deribit": T0 + 1100 * MS, "feed-index": T0 + 31100 * MS}


def test_frames_after_a_quiet_spell_pass_and_the_watermark_catches_up():
    svc = service()
    before = [book_frame(i, t=i * 100 * MS) for i in range(1, 10)]
    after = [book_frame(i, t=120 * S + i * 100 * MS) for i in range(10, 20)]   # 2 minutes later
    outs = run(svc, [*announced(), *before, *after, book_frame(20, t=110 * S)])  # 10 s late
    assert [b.stale for b in of_kind(outs, "book")] == [False] * 19 + [True]
    assert svc.stats["watermark_resets"] == svc.stats["watermark_outliers"] == 0


def test_staleness_does_not_read_the_wall_clock_so_a_replay_of_an_old_day_passes():
    yesterday = -DAY
    svc = service(max_age_s=5.0)  # its clock says T0 + 7 s: a day after the data
    outs = run(svc, [*announced(ts_recv=T0 + yesterday, expiry_ns=T0 + 30 * DAY),
                     book_frame(1, t=yesterday + S)])
    assert len(of_kind(outs, "book")) == 1 and not rejected(svc)


def test_max_age_zero_turns_staleness_off():
    svc = service(max_age_s=0.0)
    run(svc, [*announced(), (md("index", "btc_usd"), md_index(1, 65000.0, t=10 * S)),
              book_frame(1, ts_event=T0 - 3600 * S)])
    assert svc.stats["clean_books"] == 1 and not rejected(svc)


def test_a_publishers_clock_set_back_resets_its_watermark_after_confirm_frames(caplog):
    svc = service(max_age_s=5.0)      # watermark_confirm_frames 5
    hour = 3600 * S
    ahead = [book_frame(i, t=hour + i * MS) for i in range(1, 6)]
    back = [book_frame(i, t=i * MS) for i in range(6, 13)]   # the feed host's clock set back 1 h
    with caplog.at_level(logging.WARNING, logger="hedgepipe.etl-filter"):
        outs = run(svc, [*announced(ts_recv=T0 + hour), *ahead, *back])
    # the first 5 frames back are an hour behind the watermark: stale (one marker), and they
    # agree: the watermark restarts from them, and the next frames pass
    assert [(b.up_seq, b.stale) for b in of_kind(outs, "book")] == [
        (1, False), (2, False), (3, False), (4, False), (5, False), (6, True), (11, False),
        (12, False)]
    assert svc.stats["watermark_resets"] == 1 and rejected(svc) == {"rejected_stale": 5}
    assert svc.registry.clocks["feed-deribit"].mark == T0 + 12 * MS
    assert [r.src for r in caplog.records if getattr(r, "kind", "") == "watermark_reset"] == [
        "feed-deribit"]


# ---- spikes -------------------------------------------------------------------------------------

def index_frames(prices, source="deribit", first_seq=1, start_ms=0):
    return [(md("index", "btc_usd", source),
             md_index(first_seq + i, p, source=source, t=(start_ms + i) * MS))
            for i, p in enumerate(prices)]


def calm(n=20, level=65000.0):
    return [level + (i % 5 - 2) * 5.0 for i in range(n)]  # +-10 USD around the level


def accepted_prices(outs):
    return [msg.price for msg in of_kind(outs, "index")]


def test_an_isolated_index_spike_is_rejected_and_the_next_prices_pass():
    svc = service()
    outs = run(svc, index_frames([*calm(), 69000.0, 65005.0, 64995.0]))
    assert accepted_prices(outs)[-2:] == [65005.0, 64995.0] and 69000.0 not in accepted_prices(outs)
    assert rejected(svc) == {"rejected_spike": 1}
    assert svc.stats["spike_confirmed"] == 0


def test_a_real_jump_passes_once_confirmed_by_consecutive_ticks():
    svc = service(spike_confirm_ticks=3)
    outs = run(svc, index_frames([*calm(), 70000.0, 70010.0, 69990.0, 70005.0, 70020.0]))
    assert accepted_prices(outs)[20:] == [69990.0, 70005.0, 70020.0]  # the 3rd confirms, then normal
    assert rejected(svc) == {"rejected_spike": 2}
    assert svc.stats["spike_confirmed"] == 1


def test_disagreeing_spikes_do_not_confirm_each_other():
    svc = service(spike_confirm_ticks=2)
    outs = run(svc, index_frames([*calm(), 70000.0, 60000.0, 70000.0, 65000.0]))
    assert accepted_prices(outs)[20:] == [65000.0]
    assert rejected(svc) == {"rejected_spike": 3}


def test_a_jump_seen_by_a_second_source_passes_at_once():
    svc = service(spike_confirm_ticks=3)
    outs = run(svc, [*index_frames(calm()), *index_frames(calm(), "composite"),
                     *index_frames([70000.0], first_seq=21, start_ms=20),            # alone: spike
                     *index_frames([70010.0], "composite", first_seq=21, start_ms=21),  # agrees: passes
                     *index_frames([70005.0], first_seq=22, start_ms=22)])          # and so does it
    assert [(msg.venue, msg.price) for msg in of_kind(outs, "index")][40:] == [
        ("composite", 70010.0), ("deribit", 70005.0)]
    assert rejected(svc) == {"rejected_spike": 1}
    assert svc.stats["spike_cross_source"] == 2


def test_a_second_source_stuck_at_an_old_level_confirms_nothing():
    svc = service(spike_source_max_age_s=1.0)
    outs = run(svc, [*index_frames([70000.0] * 5, "composite"),                       # long ago
                     *index_frames(calm(), first_seq=1, start_ms=5000),
                     *index_frames([70000.0], first_seq=21, start_ms=5020)])
    assert accepted_prices(outs)[-1] != 70000.0
    assert rejected(svc) == {"rejected_spike": 1}


def test_the_window_does_not_freeze_on_a_steady_drift():
    svc = service()
    drift = [65000.0 * 1.0005 ** i for i in range(300)]  # +16% in 300 ticks, 0.05% each
    outs = run(svc, index_frames(drift))
    assert len(accepted_prices(outs)) == 300 and not rejected(svc)


def test_after_a_confirmed_jump_the_old_level_is_the_spike():
    svc = service(spike_confirm_ticks=2)
    outs = run(svc, index_frames([*calm(), 70000.0, 70000.0, 70000.0, 65000.0, 70000.0]))
    assert accepted_prices(outs)[20:] == [70000.0, 70000.0, 70000.0]
    assert rejected(svc) == {"rejected_spike": 2}


def mid_book(seq: int, mid_ticks: int, **kw):
    tick = 0.0005
    return book_frame(seq, bids=[(round((mid_ticks - 1) * tick, 4), 1.0)],
                      asks=[(round((mid_ticks + 1) * tick, 4), 1.0)], **kw)


def test_a_spike_in_a_book_mid_is_rejected_marks_the_book_stale_and_a_real_move_passes():
    svc = service(spike_confirm_ticks=2)
    steady = [mid_book(i + 1, 100 + i % 2) for i in range(10)]
    outs = run(svc, [*announced(), *steady, mid_book(11, 300), mid_book(12, 101),
                     mid_book(13, 300), mid_book(14, 300), mid_book(15, 301)])
    books = of_kind(outs, "book")[10:]
    assert [(b.up_seq, b.stale) for b in books] == [
        (11, True), (12, False), (13, True), (14, False), (15, False)]
    assert rejected(svc) == {"rejected_spike": 2} and svc.stats["spike_confirmed"] == 1
    assert svc.stats["stale_marked"] == 2


def test_a_book_mid_trending_faster_than_the_limit_is_followed_after_two_refusals():
    # The review's case: a mid rising 15% an update, each step beyond the spike limit (here 10%
    # of 0.1: k 5 * the 2% floor), was refused and marked stale at every update until three
    # equal values came: the desk was blind through the move.
    svc = service(spike_confirm_ticks=3)

    def book_at(seq: int, mid: float):
        mid = round(mid / 0.0005) * 0.0005     # on tick, a spread of two ticks
        return book_frame(seq, bids=[(round(mid - 0.0005, 4), 1.0)],
                          asks=[(round(mid + 0.0005, 4), 1.0)])

    steady = [book_at(i, 0.1) for i in range(1, 21)]
    trend = [book_at(20 + i, 0.1 * 1.15 ** i) for i in range(1, 11)]      # 0.115 ... 0.4045
    outs = run(svc, [*announced(), *steady, *trend])
    books = of_kind(outs, "book")[20:]
    assert [b.stale for b in books] == [True] + [False] * 8   # one marker for the two refused
    assert [b.up_seq for b in books[1:]] == list(range(23, 31))
    assert books[-1].mid == pytest.approx(0.4045)
    assert rejected(svc) == {"rejected_spike": 2} and svc.stats["spike_confirmed"] >= 1


def test_a_ticker_mid_spike_is_rejected_and_publishes_no_marker():
    svc = service()
    steady = [(md("ticker", OPTION), md_ticker(i + 1, bid=0.05, ask=0.051)) for i in range(10)]
    outs = run(svc, [*announced(), *steady, (md("ticker", OPTION), md_ticker(11, bid=0.15, ask=0.151))])
    assert len(of_kind(outs, "ticker")) == 10 and of_kind(outs, "book") == []
    assert rejected(svc) == {"rejected_spike": 1}


def test_a_move_within_the_spread_is_not_a_spike():
    # A thin book: bid 0.001, ask 0.05. The ask moving to 0.02 moves the mid by 40%, but by
    # less than the spread itself: a requote, not a spike.
    svc = service()
    wide = [book_frame(i + 1, bids=[(0.001, 1.0)], asks=[(0.05, 1.0)]) for i in range(10)]
    run(svc, [*announced(), *wide, book_frame(11, bids=[(0.001, 1.0)], asks=[(0.02, 1.0)])])
    assert svc.stats["clean_books"] == 11 and not rejected(svc)


def test_spike_k_zero_turns_the_rule_off():
    svc = service(spike_k=0.0)
    outs = run(svc, index_frames([*calm(), 99000.0]))
    assert accepted_prices(outs)[-1] == 99000.0 and not rejected(svc)


# ---- duplicates -------------------------------------------------------------------------------------

def test_the_same_upstream_frame_twice_is_rejected():
    svc = service()
    first, again = book_frame(1), book_frame(1)
    late = book_frame(2)
    outs = run(svc, [*announced(), first, book_frame(3), again, late, book_frame(3),
                     book_frame(3, src="feed-deribit-b")])   # another publisher: not a duplicate
    assert [(b.up_src, b.up_seq) for b in of_kind(outs, "book")] == [
        ("feed-deribit", 1), ("feed-deribit", 3), ("feed-deribit", 2), ("feed-deribit-b", 3)]
    assert rejected(svc) == {"rejected_duplicate": 2}


def test_a_publisher_restart_far_below_the_window_is_taken_as_a_reset():
    svc = service(dedup_window=8)
    frames = [book_frame(i) for i in range(1, 21)]
    outs = run(svc, [*announced(), *frames, book_frame(1, t=MS)])   # received after the others
    assert len(of_kind(outs, "book")) == 21
    assert svc.stats["upstream_resets"] == 1 and not rejected(svc)


def test_a_restarted_publisher_whose_old_seqs_are_inside_the_window_is_a_reset():
    # The review's case: 20 books, feed-deribit restarts (seq from 1 again), 20 books. The old
    # high (20) is below dedup_window (1024), so its frames were all taken as duplicates.
    svc = service()
    before = [book_frame(i, t=i * MS) for i in range(1, 21)]
    after = [book_frame(i, t=(100 + i) * MS) for i in range(1, 21)]
    outs = run(svc, [*announced(), *before, *after, after[4]])   # and one copy of a new frame
    assert len(of_kind(outs, "book")) == 40
    assert svc.stats["upstream_resets"] == 1 and rejected(svc) == {"rejected_duplicate": 1}


def test_a_restarted_feeds_instrument_republish_and_retirement_pass():
    svc = service()
    republished = [(md("instrument", OPTION), instrument(seq=i, ts_recv=T0 + i * 60 * S))
                   for i in range(1, 4)]                                 # every 60 s
    restarted = [(md("instrument", OPTION), instrument(seq=1, ts_recv=T0 + 200 * S)),
                 (md("instrument", OPTION), instrument(seq=2, ts_recv=T0 + 201 * S, active=False))]
    outs = run(svc, [*republished, *restarted])
    assert [i.active for i in of_kind(outs, "instrument")] == [True, True, True, True, False]
    assert svc.stats["upstream_resets"] == 1 and not rejected(svc)


def test_copies_from_a_relay_lagging_more_than_the_window_are_refused_not_passed_as_resets():
    svc = service(dedup_window=8)
    live = [book_frame(i, t=i * MS) for i in range(1, 41)]
    # a second path delivering the same frames 10 behind (each copy as stamped by the feed)
    frames = [f for i in range(40) for f in ([live[i]] + ([live[i - 10]] if i >= 10 else []))]
    outs = run(svc, [*announced(), *frames])
    assert [b.up_seq for b in of_kind(outs, "book")] == list(range(1, 41))
    assert rejected(svc) == {"rejected_duplicate": 30} and svc.stats["upstream_resets"] == 0


def test_the_same_trade_id_twice_is_rejected_within_memory():
    svc = service(trade_id_memory=2)
    trades = [(md("trade", OPTION), md_trade(seq, trade_id=tid))
              for seq, tid in enumerate(["A", "B", "A", "C", "D", "A"], start=1)]
    outs = run(svc, [*announced(), *trades])
    assert [t.trade_id for t in of_kind(outs, "trade")] == ["A", "B", "C", "D", "A"]  # A forgotten
    assert rejected(svc) == {"rejected_duplicate": 1}


def test_a_duplicate_leaves_the_spike_window_untouched():
    svc = service(spike_confirm_ticks=2)
    spike = index_frames([*calm(), 70000.0])
    outs = run(svc, [*spike, spike[-1]])     # the spike again, same seq: not a confirmation
    assert rejected(svc) == {"rejected_spike": 1, "rejected_duplicate": 1}
    assert 70000.0 not in accepted_prices(outs)


# ---- stale books: passed through, and marked when a book is refused ---------------------------

def test_a_book_the_feed_marks_stale_passes_as_a_stale_clean_book_without_levels():
    svc = service()
    outs = run(svc, [*announced(), book_frame(1), book_frame(2, stale=True), book_frame(3)])
    books = of_kind(outs, "book")
    assert [(b.up_seq, b.stale, b.bids, b.mid) for b in books] == [
        (1, False, BIDS, pytest.approx(0.0505)), (2, True, [], None), (3, False, BIDS, pytest.approx(0.0505))]
    assert svc.stats["stale_passed"] == 1 and svc.stats["stale_marked"] == 0


def test_even_a_stale_book_with_garbage_levels_passes_stale():
    svc = service()
    outs = run(svc, [*announced(), book_frame(1, stale=True, bids=[(NAN, -1.0)], asks=[])])
    assert of_kind(outs, "book")[0].stale and not rejected(svc)


def test_a_refused_book_publishes_one_stale_marker_until_the_next_good_book():
    svc = service()
    crossed = dict(asks=[(0.0495, 1.0)])
    outs = run(svc, [*announced(), book_frame(1), book_frame(2, **crossed), book_frame(3, **crossed),
                     book_frame(4, asks=[(0.05012, 1.0)]), book_frame(5), book_frame(6, **crossed)])
    books = of_kind(outs, "book")
    assert [(b.up_seq, b.stale) for b in books] == [(1, False), (2, True), (5, False), (6, True)]
    marker = books[1]
    assert (marker.bids, marker.asks, marker.change_id, marker.mid) == ([], [], 2, None)
    assert (marker.up_src, marker.ts_recv) == ("feed-deribit", T0)
    assert svc.stats["stale_marked"] == 2
    assert rejected(svc) == {"rejected_crossed": 3, "rejected_off_tick": 1}


def test_a_book_refused_as_stale_marks_it_but_a_duplicate_or_unknown_does_not():
    svc = service(max_age_s=5.0)
    outs = run(svc, [book_frame(1), *announced(), book_frame(2), book_frame(2),
                     book_frame(3, ts_event=T0 - 6 * S)])
    assert [(b.up_seq, b.stale) for b in of_kind(outs, "book")] == [(2, False), (3, True)]
    assert rejected(svc) == {"rejected_unknown_instrument": 1, "rejected_duplicate": 1,
                             "rejected_stale": 1}


# ---- topics it does not take, memory, config, logs ----------------------------------------------

def test_topics_other_than_md_are_counted_and_ignored():
    svc = service()
    hb = m.Heartbeat(name="x", pid=1, state="running", uptime_s=1.0, counters={}, src="x", seq=1)
    outs = run(svc, [("hb.feed-deribit", hb), ("clean.book.deribit." + OPTION, md_book(1, BIDS, ASKS))])
    assert outs == [] and svc.stats["ignored_topics"] == 2
    assert svc.registry.clocks == {}   # another daemon's heartbeat is not the stream's time


def test_state_is_bounded_by_max_topics():
    svc = service(max_topics=3)
    names = [f"BTC-27DEC26-{k}-C" for k in (90000, 95000, 100000, 105000)]
    run(svc, [(md("index", "btc_usd"), md_index(1, 100000.0))] + [f for n in names for f in announced(n)])
    assert len(svc._topics) == 3 and svc.stats["topics_evicted"] >= 2


@pytest.mark.parametrize("table, message", [
    ({"moneyness_min": 1.2, "moneyness_max": 0.8}, "moneyness_min"),
    ({"spike_window": 4, "spike_min_samples": 5}, "spike_min_samples"),
    ({"kinds": ["option", "swap"]}, "kinds"),
    ({"tick_tolerance": 0.5}, "tick_tolerance"),
    ({"dedup_window": 0}, "dedup_window"),
    ({"prime_from_redis": "maybe"}, "prime_from_redis"),
    ({"watermark_jump_s": 0.0}, "watermark_jump_s"),
    ({"watermark_confirm_frames": 0}, "watermark_confirm_frames"),
])
def test_bad_config_is_a_clear_error(tmp_path, table, message):
    path = tmp_path / "h.toml"
    lines = [f"{k} = {v!r}".replace("'", '"') for k, v in table.items()]
    path.write_text("[etl-filter]\n" + "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=message):
        settings = load_settings("etl-filter", EtlFilterConfig, config_path=str(path), environ={},
                                 known=["etl-filter"])
        EtlFilterService(settings.daemon)


def test_defaults_read_feeds_md_topics(tmp_path):
    (tmp_path / "empty.toml").write_text("")
    cfg = load_settings("etl-filter", EtlFilterConfig, config_path=str(tmp_path / "empty.toml"),
                        environ={}, known=["etl-filter"]).daemon
    assert (cfg.inputs, cfg.topics) == (["feed-deribit", "feed-index"], ["md."])


def test_each_rejection_kind_is_logged_once_with_context(caplog):
    svc = service()
    crossed = dict(asks=[(0.0495, 1.0)])
    with caplog.at_level(logging.WARNING, logger="hedgepipe.etl-filter"):
        run(svc, [*announced(), *(book_frame(i, **crossed) for i in range(1, 5)),
                  (md("trade", OPTION), md_trade(1, price=NAN))])
    lines = [r for r in caplog.records if r.name == "hedgepipe.etl-filter"]
    assert [r.kind for r in lines] == ["rejected_crossed", "rejected_bad_value"]
    assert lines[0].topic == md("book", OPTION) and lines[0].up_seq == 1
    assert "0.0495" in lines[0].getMessage()
    assert svc.stats["rejected_crossed"] == 4


# ---- determinism ---------------------------------------------------------------------------------

def mixed_stream():
    """Good and bad frames of every kind, in one order."""
    frames = [*announced(OPTION, FUTURE, "BTC-27DEC26-150000-P", "ETH-27DEC26-4000-C")]
    for i in range(1, 200):
        t = i * 10 * MS
        ticks = 100 + (i // 7) % 5 + (200 if i in (50, 51, 52) else 0)   # a jump, confirmed
        frames.append(mid_book(i, ticks, t=t, **({"stale": True} if i == 90 else {})))
        frames.append((md("ticker", FUTURE), md_ticker(i, bid=65000.0 + i % 3, ask=65001.0 + i % 3,
                                                       name=FUTURE, t=t, bid_iv=None, ask_iv=None)))
        if i % 10 == 0:
            frames.append((md("trade", OPTION), md_trade(i, price=0.05 if i % 20 else NAN, t=t)))
        if i % 3 == 0:
            frames.append((md("index", "btc_usd"), md_index(i, 65000.0 + (i % 4) * 3 +
                                                            (900 if i == 99 else 0), t=t)))
        if i % 25 == 0:
            frames.append(book_frame(i, name="BTC-27DEC26-150000-P", t=t))
            frames.append(book_frame(1, t=t))  # a duplicate
    return frames


def test_the_same_input_through_fresh_services_gives_identical_output():
    first, second = service(moneyness_min=0.5, moneyness_max=2.0), service(moneyness_min=0.5,
                                                                           moneyness_max=2.0)
    out1 = run(first, mixed_stream())
    out2 = run(second, mixed_stream())
    assert [(t, m.encode(msg)) for t, msg in out1] == [(t, m.encode(msg)) for t, msg in out2]
    assert first.stats == second.stats
    s = first.stats
    # the stream exercised the rules it was built for
    assert s["rejected_spike"] and s["spike_confirmed"] and s["stale_passed"] == 1
    assert s["rejected_duplicate"] and s["rejected_bad_value"] and s["rejected_universe"]
    assert s["clean_books"] > 150 and s["clean_tickers"] == 199


def test_nan_never_reaches_clean_output():
    outs = run(service(), mixed_stream())
    for _, msg in outs:
        for value in m.to_builtins(msg).values():
            assert not (isinstance(value, float) and math.isnan(value))
