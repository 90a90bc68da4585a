"""etl-filter as a real process on pipes, and over real recorded Deribit data."""

from __future__ import annotations

import ast
import csv
import os
import subprocess

import pytest

from hedgepipe import messages as m
from hedgepipe.clock import FakeClock
from hedgepipe.daemons.etl_filter import EtlFilterConfig, EtlFilterService
from hedgepipe.messages import md_topic
from hedgepipe.pipeframe import FrameReader, encode_frame
from hedgepipe.runtime import run_handler
from hedgepipe.venues.deribit.instruments import parse_get_instruments_body, parse_instrument
from hedgepipe.venues.deribit.marketdata import DeribitMarketData, decode_frame, subscription_parts

from .conftest import REPO, VENV_BIN
from .frames import OPTION, instrument, md, md_book, md_index, md_ticker, md_trade

BIDS = [(0.05, 10.0), (0.0495, 3.0)]
ASKS = [(0.051, 5.0)]


# ---- the daemon on pipes -----------------------------------------------------------------------

def frame(topic: str, msg) -> bytes:
    return encode_frame(topic.encode(), m.encode(msg))


def test_etl_filter_on_pipes_publishes_clean_frames_and_counts_rejections(short_tmp):
    config = short_tmp / "hedgepipe.toml"
    config.write_text(f'[runtime]\nrun_dir = "{short_tmp}/run"\nheartbeat_interval_s = 0.2\n'
                      '[etl-filter]\nmax_age_s = 5.0\n')
    stream = b"".join([
        frame(md("instrument", OPTION), instrument()),
        frame(md("book", OPTION), md_book(1, BIDS, ASKS)),
        frame(md("book", OPTION), md_book(2, BIDS, [(0.0495, 1.0)])),       # crossed: marker
        frame(md("book", OPTION), md_book(3, BIDS, [(0.0501, 1.0)])),       # off tick
        frame(md("book", OPTION), md_book(3, BIDS, [(0.0501, 1.0)])),       # the same frame again
        frame(md("book", OPTION), md_book(4, BIDS, ASKS)),
        frame(md("ticker", OPTION), md_ticker(1)),
        frame(md("trade", OPTION), md_trade(1, price=float("nan"))),
        frame(md("trade", "BTC-27DEC26-90000-C"), md_trade(1, name="BTC-27DEC26-90000-C")),
        frame(md("index", "btc_usd"), md_index(1, 65000.0)),
        b"\x00garbage\xff",
        frame("clean.book.deribit.X", md_book(1, BIDS, ASKS)),   # not md.: the pipe filter drops it
    ])
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEPIPE_")}
    proc = subprocess.run([str(VENV_BIN / "etl-filter"), "--config", str(config), "--in", "-",
                           "--out", "-"], input=stream, capture_output=True, cwd=REPO, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    reader = FrameReader(1 << 20)
    got = [(t.decode(), m.decode(t.decode(), p)) for t, p in reader.feed(proc.stdout)]
    assert reader.pending == 0
    clean = [(topic, msg) for topic, msg in got if topic.startswith("clean.")]
    assert [(topic.split(".")[1], getattr(msg, "up_seq")) for topic, msg in clean] == [
        ("instrument", 1), ("book", 1), ("book", 2), ("book", 4), ("ticker", 1), ("index", 1)]
    books = [msg for topic, msg in clean if topic.startswith("clean.book.")]
    assert [(b.stale, b.seq, b.src) for b in books] == [
        (False, 1, "etl-filter"), (True, 2, "etl-filter"), (False, 3, "etl-filter")]
    assert books[0].mid == pytest.approx(0.0505)
    hb = [msg for topic, msg in got if topic == "hb.etl-filter"][-1]
    assert hb.state == "draining"
    c = hb.counters
    beats = sum(1 for topic, _ in got if topic == "hb.etl-filter")
    # the last heartbeat counts what went out before it: the clean frames and the other beats
    assert (c["in_msgs"], c["decode_errors"], c["out_msgs"]) == (10, 1, len(clean) + beats - 1)
    assert {k: c[k] for k in ("clean_instruments", "clean_books", "clean_tickers", "clean_trades",
                              "clean_indexes", "rejected_crossed", "rejected_off_tick",
                              "rejected_duplicate", "rejected_bad_value",
                              "rejected_unknown_instrument", "stale_marked", "rejected_spike",
                              "rejected_stale")} == {
        "clean_instruments": 1, "clean_books": 2, "clean_tickers": 1, "clean_trades": 0,
        "clean_indexes": 1, "rejected_crossed": 1, "rejected_off_tick": 1, "rejected_duplicate": 1,
        "rejected_bad_value": 1, "rejected_unknown_instrument": 1, "stale_marked": 1,
        "rejected_spike": 0, "rejected_stale": 0}
    assert c["seq_resets"] == 1                   # the runtime saw the duplicate too
    text = proc.stderr.decode()
    for kind in ("rejected_crossed", "rejected_off_tick", "rejected_duplicate", "decode_error"):
        assert kind in text


@pytest.mark.parametrize("sets, tried_redis", [([], 0), (["--set", "prime_from_redis=true"], 1)])
def test_on_a_pipe_it_does_not_prime_from_redis_unless_told_to(short_tmp, sets, tried_redis):
    # `hedgepipe replay day --out - | etl-filter --in - --out -` must depend on the journal
    # alone, not on what the live Redis holds. Forced, it tries (and finds no Redis here).
    config = short_tmp / "hedgepipe.toml"
    config.write_text(f'[runtime]\nrun_dir = "{short_tmp}/run"\n'
                      f'[etl-filter]\nredis_url = "unix://{short_tmp}/no-redis.sock"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEPIPE_") and k != "REDIS_URL"}
    proc = subprocess.run([str(VENV_BIN / "etl-filter"), "--config", str(config), "--in", "-",
                           "--out", "-", *sets], input=frame(md("instrument", OPTION), instrument()),
                          capture_output=True, cwd=REPO, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    got = [(t.decode(), m.decode(t.decode(), p)) for t, p in FrameReader(1 << 20).feed(proc.stdout)]
    counters = [msg for topic, msg in got if topic == "hb.etl-filter"][-1].counters
    assert counters["prime_unavailable"] == tried_redis and counters["clean_instruments"] == 1
    assert ("not primed from Redis: every input is a pipe" in proc.stderr.decode()) is not bool(sets)


def test_help_names_the_rules():
    out = subprocess.run([str(VENV_BIN / "etl-filter"), "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=30)
    assert out.returncode == 0
    for word in ("md.*", "clean.*", "crossed", "spikes", "duplicates", "microprice"):
        assert word in out.stdout


# ---- real recorded data ----------------------------------------------------------------------------

def stamped(frames, src="feed-deribit"):
    """(topic, msg) pairs with src and a per-topic seq, as feed-deribit's runtime stamps them."""
    seqs: dict[str, int] = {}
    for topic, msg in frames:
        seqs[topic] = msg.seq = seqs.get(topic, 0) + 1
        msg.src = src
    return frames


def recorded_md(shared_data):
    """The recorded WebSocket session through feed-deribit's normalizer: md.instrument for each
    instrument it names (announced at the first receive time), then its md.book and md.ticker."""
    universe = {}
    for line in (shared_data / "deribit" / "DERIBIT.0").read_text().splitlines():
        if " -> " in line and "get_instruments" in line:
            for raw in parse_get_instruments_body(line):
                inst = parse_instrument(raw)
                universe[inst.name] = inst
    normalizer = DeribitMarketData(instruments=universe)
    data = []
    for line in (shared_data / "deribit" / "DERIBIT.ws.1.0").read_text().splitlines():
        ts, sep, body = line.partition(": ")
        if sep and '"method":"subscription"' in body:
            channel, payload = subscription_parts(decode_frame(body))
            outs, _ = normalizer.on_notification(channel, payload, int(float(ts) * 1e9))
            data += outs
    first = data[0][1].ts_recv
    names = sorted({msg.instrument for _, msg in data})
    definitions = [(md_topic("instrument", "deribit", n),
                    m.Instrument(**{**m.to_builtins(universe[n]), "ts_event": first, "ts_recv": first}))
                   for n in names]
    return stamped(definitions + data)


def test_the_recorded_deribit_session_passes_whole(shared_data):
    frames = recorded_md(shared_data)
    svc = EtlFilterService(EtlFilterConfig(), FakeClock())
    outs = run_handler(svc, frames)
    books = [msg for t, msg in outs if t.startswith("clean.book.")]
    tickers = [msg for t, msg in outs if t.startswith("clean.ticker.")]
    assert (len(books), len(tickers), svc.stats["clean_instruments"]) == (46, 89, 10)
    assert not {k: v for k, v in svc.stats.items() if k.startswith("rejected_") and v}
    assert svc.stats["stale_marked"] == 0
    for b in books:
        if b.bids and b.asks:
            assert b.bids[0][0] < b.microprice < b.asks[0][0] and b.spread > 0
    with_iv = [t for t in tickers if t.mid_iv is not None]
    assert with_iv and all(min(t.bid_iv, t.ask_iv) <= t.mid_iv <= max(t.bid_iv, t.ask_iv)
                           for t in with_iv)


def test_the_recorded_session_with_a_moneyness_band_keeps_the_near_strikes(shared_data):
    frames = recorded_md(shared_data)
    # The recording has no index channel; its tickers carry Deribit's index price: use the first
    # of each currency as a reference index, as feed-index would have published it.
    refs = {}
    for topic, msg in frames:
        if topic.startswith("md.ticker.") and msg.index_price:
            refs.setdefault(msg.instrument.split("-")[0], msg.index_price)
    first = frames[0][1].ts_recv
    index = [(md_topic("index", "deribit", f"{c.lower()}_usd"),
              m.Index(venue="deribit", name=f"{c.lower()}_usd", price=p, src="feed-index", seq=1,
                      ts_event=first, ts_recv=first)) for c, p in refs.items()]
    svc = EtlFilterService(EtlFilterConfig(moneyness_min=0.5, moneyness_max=2.0), FakeClock())
    outs = run_handler(svc, index + frames)
    kept = {msg.instrument for t, msg in outs if t.startswith("clean.book.")}
    expected = {msg.name for t, msg in frames if t.startswith("md.instrument.")
                and 0.5 <= msg.strike / refs[msg.base] <= 2.0}
    assert kept == expected and 0 < len(kept) < 10       # BTC at ~32,000: 8000-P, 300000-C out
    out_of_band = sum(1 for t, msg in frames if t.split(".")[1] in ("book", "ticker")
                      and msg.instrument not in expected)
    assert svc.stats["rejected_universe"] == out_of_band
    assert svc.stats["moneyness_unknown"] == 0


def chain_md(shared_data):
    """A real BTC option chain (one get_order_book result per row), in time order, as md frames:
    definitions, then per row the index, the book (up to 20 levels) and the ticker."""
    path = shared_data / "deribit" / "btc_option_chain_2020-05-21.csv"
    with open(path, newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: int(r["timestamp"]))

    def num(text):
        return float(text) if text not in ("", "0.0") else None

    t0 = int(rows[0]["timestamp"]) * 1_000_000
    frames = [(md_topic("instrument", "deribit", r["instrument_name"]), m.Instrument(
        venue="deribit", name=r["instrument_name"], kind="option", base="BTC", quote="USD",
        settle="BTC", tick_size=0.0005, min_amount=0.1, contract_size=1.0, inverse=True,
        expiry_ns=int(r["expiration_timestamp"]) * 1_000_000, strike=float(r["strike"]),
        option_type=r["option_type"], ts_event=t0, ts_recv=t0)) for r in rows]
    for r in rows:
        name, ts = r["instrument_name"], int(r["timestamp"]) * 1_000_000
        times = dict(ts_event=ts, ts_recv=ts + 1_000_000)
        greeks = ast.literal_eval(r["greeks"])
        frames += [
            (md_topic("index", "deribit", "btc_usd"),
             m.Index(venue="deribit", name="btc_usd", price=float(r["index_price"]), **times)),
            (md_topic("book", "deribit", name),
             m.Book(venue="deribit", instrument=name, bids=[tuple(x) for x in ast.literal_eval(r["bids"])],
                    asks=[tuple(x) for x in ast.literal_eval(r["asks"])], change_id=int(r["change_id"]),
                    **times)),
            (md_topic("ticker", "deribit", name), m.Ticker(
                venue="deribit", instrument=name, bid=num(r["best_bid_price"]),
                bid_amount=num(r["best_bid_amount"]) if num(r["best_bid_price"]) else None,
                ask=num(r["best_ask_price"]),
                ask_amount=num(r["best_ask_amount"]) if num(r["best_ask_price"]) else None,
                mark_price=float(r["mark_price"]), mark_iv=float(r["mark_iv"]),
                bid_iv=num(r["bid_iv"]), ask_iv=num(r["ask_iv"]), last=num(r["last_price"]),
                underlying_price=float(r["underlying_price"]), underlying_index=r["underlying_index"],
                index_price=float(r["index_price"]), interest_rate=float(r["interest_rate"]),
                open_interest=float(r["open_interest"]), **greeks, **times)),
        ]
    return rows, stamped(frames)


def test_a_real_option_chain_passes_except_what_the_band_leaves_out(shared_data):
    rows, frames = chain_md(shared_data)
    svc = EtlFilterService(EtlFilterConfig(moneyness_min=0.5, moneyness_max=2.0), FakeClock())
    outs = run_handler(svc, frames)
    in_band = [r for r in rows if 0.5 <= float(r["strike"]) / float(r["index_price"]) <= 2.0]
    assert 200 < len(in_band) < len(rows) == 326
    stats = svc.stats
    assert (stats["clean_instruments"], stats["clean_indexes"]) == (326, 326)
    assert stats["clean_books"] == stats["clean_tickers"] == len(in_band)
    # real books: none crossed, locked, off tick, bad, stale or a spike; only the band rejects
    assert {k: v for k, v in stats.items() if k.startswith("rejected_") and v} == {
        "rejected_universe": 2 * (len(rows) - len(in_band))}
    books = [msg for t, msg in outs if t.startswith("clean.book.")]
    one_sided = [b for b in books if not (b.bids and b.asks)]
    assert one_sided and all(b.mid is None for b in one_sided)       # real chains have empty sides
    assert all(b.spread_bps > 0 for b in books if b.mid is not None)
