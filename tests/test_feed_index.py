"""feed-index: ccxt's real parsers on recorded venue answers, the service's rules with a fake
clock, the polling thread, and the daemon end to end against the Deribit simulator."""

from __future__ import annotations

import json
import shutil

import pytest

from hedgepipe.clock import FakeClock
from hedgepipe.daemons.feed_index import FeedIndexConfig, FeedIndexService, index_name
from hedgepipe.errors import ConfigError
from hedgepipe.messages import Index
from hedgepipe.runtime import run_handler
from hedgepipe.venues.ccxt.spot import SpotEvent, SpotPoller, make_exchange, ticker_price
from hedgepipe.venues.deribit.jsonrpc import Event

from .conftest import REPO, VENV_BIN, wait_until
from .test_feed_deribit import last_heartbeat, procs, start_sim  # noqa: F401 (fixture)

RECORDED = REPO / "tests" / "data" / "ccxt"


# ---- ccxt's parsers on recorded answers (no network) -----------------------------------------

@pytest.mark.parametrize("venue, symbol, price, ts_event", [
    # Kraken: mid of b[0] 37011.6 and a[0] 37012.4; its ticker has no timestamp
    ("kraken", "BTC/USD", 37012.0, 0),
    ("kraken", "ETH/USD", (2051.21 + 2051.43) / 2, 0),
    # Bitstamp: mid of bid 37006 and ask 37010; timestamp in seconds
    ("bitstamp", "BTC/USD", 37008.0, 1_700_650_800 * 10**9),
    ("bitstamp", "ETH/USD", 2051.0, 1_700_650_800 * 10**9),
])
def test_recorded_tickers_through_ccxt(venue, symbol, price, ts_event):
    event = SpotPoller.poll_one(venue, make_exchange(venue, 5, str(RECORDED)), symbol)
    assert (event.kind, event.venue, event.symbol, event.error) == ("price", venue, symbol, "")
    assert event.price == pytest.approx(price, rel=1e-12)
    assert event.ts_event == ts_event


def test_ccxt_unified_ticker_fields_from_kraken():
    exchange = make_exchange("kraken", 5, str(RECORDED))
    exchange.load_markets()
    ticker = exchange.fetch_ticker("BTC/USD")
    assert (ticker["symbol"], ticker["bid"], ticker["ask"], ticker["last"]) == (
        "BTC/USD", 37011.6, 37012.4, 37011.9)


def test_failures_become_error_events(tmp_path):
    # no recording at all (like no network), an unrecorded URL, and an answer ccxt rejects
    assert SpotPoller.poll_one("gemini", make_exchange("gemini", 5, str(tmp_path)), "BTC/USD").kind == "error"
    event = SpotPoller.poll_one("kraken", make_exchange("kraken", 5, str(RECORDED)), "LTC/USD")
    assert event.kind == "error" and "BadSymbol" in event.error
    folder = tmp_path / "kraken"
    shutil.copytree(RECORDED / "kraken", folder)
    url = "https://api.kraken.com/0/public/Ticker?pair=XXBTZUSD"
    (folder / "responses.json").write_text(json.dumps({url: {"error": ["EGeneral:Internal error"]}}))
    event = SpotPoller.poll_one("kraken", make_exchange("kraken", 5, str(tmp_path)), "BTC/USD")
    # ccxt maps Kraken's EGeneral:Internal error (sent with HTTP 200) to ExchangeNotAvailable
    assert event.kind == "error" and event.error.startswith("ExchangeNotAvailable")


def test_ticker_price_rules():
    assert ticker_price({"bid": 10.0, "ask": 12.0, "last": 99.0}) == 11.0
    assert ticker_price({"bid": 12.0, "ask": 10.0, "last": 11.5}) == 11.5  # crossed: last
    assert ticker_price({"bid": None, "ask": None, "last": 7.0}) == 7.0
    with pytest.raises(ValueError):
        ticker_price({"bid": None, "ask": 0.0, "last": float("nan")})


def test_index_names():
    assert index_name("BTC/USD") == "btc_usd"
    assert index_name("ETH/USDT") == "eth_usd"
    assert index_name("BTC/EUR") is None                  # never priced into a USD index


# ---- the service's rules, with a fake clock ----------------------------------------------------

def make_service(clock, **settings) -> FeedIndexService:
    config = FeedIndexConfig(**{"replay_dir": str(RECORDED), "max_age_s": 30.0, **settings})
    service = FeedIndexService(config, clock)
    run_handler(service, [])
    return service


def spot(clock, venue, price, symbol="BTC/USD"):
    return SpotEvent("price", venue, symbol, clock.time_ns(), price=price)


def deribit(clock, price, name="btc_usd"):
    return Event("notification", clock.time_ns(), channel=f"deribit_price_index.{name}",
                 data={"index_name": name, "price": price, "timestamp": clock.time_ns() // 10**6})


def composites(outs):
    return [(msg.name, msg.price, msg.sources) for topic, msg in outs
            if topic.startswith("md.index.composite.")]


def test_service_publishes_each_source_and_the_composite():
    clock = FakeClock()
    service = make_service(clock, venues=["kraken", "bitstamp"])
    outs = list(service.on_source(service.session, deribit(clock, 100.0)))
    assert [(t, m.venue, m.price, m.sources) for t, m in outs] == [
        ("md.index.deribit.btc_usd", "deribit", 100.0, 1),
        ("md.index.composite.btc_usd", "composite", 100.0, 1)]
    assert all(isinstance(m, Index) for _, m in outs)
    assert composites(service.on_source(service.spot, spot(clock, "kraken", 100.4))) == [
        ("btc_usd", 100.2, 2)]
    assert composites(service.on_source(service.spot, spot(clock, "bitstamp", 100.1))) == [
        ("btc_usd", 100.1, 3)]
    # ETH is its own composite
    assert composites(service.on_source(service.spot, spot(clock, "kraken", 2000.0, "ETH/USD"))) == [
        ("eth_usd", 2000.0, 1)]


def test_service_drops_stale_and_outliers_and_counts_fetch_errors():
    clock = FakeClock()
    service = make_service(clock, venues=["kraken", "bitstamp"])
    service.on_source(service.spot, spot(clock, "kraken", 100.0))
    clock.advance(31)  # kraken is now stale
    service.on_source(service.spot, spot(clock, "bitstamp", 101.0))
    assert composites(service.on_source(service.session, deribit(clock, 101.2))) == [
        ("btc_usd", 101.1, 2)]
    assert service.stats["stale_drops"] == 2
    # 105 vs median(101.0, 101.2, 105) = 101.2: 3.8% away, out; median(101.0, 101.2) = 101.1
    assert composites(service.on_source(service.spot, spot(clock, "kraken", 105.0))) == [
        ("btc_usd", 101.1, 2)]
    assert service.stats["outlier_drops"] == 1
    error = SpotEvent("error", "bitstamp", "BTC/USD", clock.time_ns(), error="NetworkError: offline")
    assert list(service.on_source(service.spot, error)) == []
    assert list(service.on_source(service.spot, error)) == []
    assert service.stats["fetch_errors_bitstamp"] == 2


def test_malformed_deribit_index_is_counted():
    clock = FakeClock()
    service = make_service(clock)
    bad = Event("notification", clock.time_ns(), channel="deribit_price_index.btc_usd",
                data={"index_name": "btc_usd", "price": "x", "timestamp": 1})
    assert list(service.on_source(service.session, bad)) == []
    assert service.stats["deribit_malformed"] == 1


@pytest.mark.parametrize("settings, words", [
    ({"venues": ["no-such-venue"]}, "unknown ccxt venue"),
    ({"venues": ["kraken"], "symbols": {"kraken": ["LTC/USD"]}}, "not in currencies"),
    ({"symbols": {"kraken": ["BTC/USD"]}}, "not in venues"),
])
def test_bad_venue_config_is_a_config_error(settings, words):
    with pytest.raises(ConfigError, match=words):
        FeedIndexService(FeedIndexConfig(**settings), FakeClock())


# ---- the polling thread -------------------------------------------------------------------------

def test_poller_thread_hands_over_prices_and_errors(tmp_path):
    exchanges = {"kraken": make_exchange("kraken", 5, str(RECORDED)),
                 "gemini": make_exchange("gemini", 5, str(tmp_path))}
    poller = SpotPoller(exchanges, {"kraken": ["BTC/USD"], "gemini": ["BTC/USD"]}, interval_s=0.01)
    poller.start()
    seen: list[SpotEvent] = []
    try:
        wait_until(lambda: seen.extend(poller.read()) or {e.venue for e in seen} == {"kraken", "gemini"},
                   what="events from both venues")
    finally:
        poller.close()
    assert {(e.venue, e.kind) for e in seen} == {("kraken", "price"), ("gemini", "error")}


# ---- end to end: deribit-sim + feed-index ------------------------------------------------------

def start_index(procs, short_tmp, url, venues):  # noqa: F811
    config = short_tmp / "index.toml"
    config.write_text(f'[runtime]\nrun_dir = "{short_tmp}/run"\nheartbeat_interval_s = 0.2\n'
                      f'[feed-index]\nurl = "{url}"\nvenues = {json.dumps(venues)}\n'
                      f'replay_dir = "{RECORDED}"\npoll_interval_s = 0.2\n'
                      # the simulator's index is not near the recorded prices: accept any distance
                      "max_distance = 10.0\n")
    return procs([str(VENV_BIN / "feed-index"), "--config", str(config), "--out", "-"])


def composite_sources(frames):
    return {msg.sources for topic, msg in frames if topic == "md.index.composite.btc_usd"}


def test_end_to_end_with_a_recorded_venue(procs, short_tmp):  # noqa: F811
    url = start_sim(procs, "--seed", "1")
    feed = start_index(procs, short_tmp, url, ["kraken"])
    frames = feed.frames_until(lambda fs: 2 in composite_sources(fs))
    topics = {topic for topic, _ in frames}
    assert {"md.index.deribit.btc_usd", "md.index.kraken.btc_usd"} <= topics
    assert composite_sources(frames) <= {1, 2}


def test_end_to_end_with_a_venue_that_fails(procs, short_tmp):  # noqa: F811
    url = start_sim(procs, "--seed", "1")
    feed = start_index(procs, short_tmp, url, ["gemini"])  # nothing recorded: every fetch fails

    def done(frames):
        hb = last_heartbeat(frames)
        return (hb is not None and hb.counters.get("fetch_errors_gemini", 0) >= 2
                and 1 in composite_sources(frames))

    frames = feed.frames_until(done)
    assert composite_sources(frames) == {1}
    assert not any(topic.startswith("md.index.gemini.") for topic, _ in frames)
    assert feed.stop() == 0
    assert feed.p.returncode == 0


def test_a_symbol_not_quoted_in_usd_is_refused_at_start():
    import pytest

    from hedgepipe.daemons.feed_index import FeedIndexConfig, FeedIndexService
    from hedgepipe.errors import ConfigError

    with pytest.raises(ConfigError, match="BTC/EUR"):
        FeedIndexService(FeedIndexConfig(venues=["kraken"], symbols={"kraken": ["BTC/EUR"]}))
