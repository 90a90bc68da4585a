"""Deribit market data normalization against the recorded WebSocket session.

Every published ``md.book`` is compared with a book rebuilt independently here (``ReferenceBook``,
a plain dict-and-sort implementation that shares no code with ``OrderBook``). Faults are injected
into the recorded sequence: a skipped change, change ids going backwards or repeated, level
errors, bad channels, out-of-universe and expired instruments, malformed data and JSON.
"""

from __future__ import annotations

import copy
import json

import pytest

from hedgepipe.messages import Book, Index, Ticker, Trade
from hedgepipe.venues.deribit.instruments import parse_get_instruments_body, parse_instrument
from hedgepipe.venues.deribit.marketdata import (
    STAT_NAMES,
    DeribitMarketData,
    FrameDecodeError,
    OrderBook,
    decode_frame,
    price_on_tick,
    round_to_tick,
    subscription_parts,
)

MS = 1_000_000
GAPPY = "BTC-24SEP21-8000-P"  # 30 chained changes in the recording


class ReferenceBook:
    """The book as the Deribit docs describe it, written as plainly as possible."""

    def __init__(self):
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.change_id = None

    def apply(self, data: dict) -> None:
        if data["type"] == "snapshot":
            self.bids = {price: amount for _action, price, amount in data["bids"]}
            self.asks = {price: amount for _action, price, amount in data["asks"]}
        else:
            assert data["prev_change_id"] == self.change_id, "the recording's chain is broken"
            for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
                for action, price, amount in levels:
                    if action == "delete":
                        del side[price]
                    else:
                        side[price] = amount
        self.change_id = data["change_id"]

    def top(self, depth: int):
        bids = sorted(self.bids.items(), key=lambda level: level[0], reverse=True)[:depth]
        asks = sorted(self.asks.items(), key=lambda level: level[0])[:depth]
        return bids, asks


# ---- fixtures: the recording --------------------------------------------------------------------

@pytest.fixture(scope="module")
def recording(shared_data) -> list[tuple[int, str]]:
    """(receive time ns, frame text) of every subscription notification, in order."""
    out = []
    for line in (shared_data / "deribit" / "DERIBIT.ws.1.0").read_text().splitlines():
        ts, sep, body = line.partition(": ")
        if sep and ts.replace(".", "", 1).isdigit() and '"method":"subscription"' in body:
            out.append((int(float(ts) * 1e9), body))
    return out


@pytest.fixture(scope="module")
def universe(shared_data) -> dict:
    out = {}
    for line in (shared_data / "deribit" / "DERIBIT.0").read_text().splitlines():
        if " -> " in line:
            for raw in parse_get_instruments_body(line):
                inst = parse_instrument(raw)
                out[inst.name] = inst
    return out


@pytest.fixture
def notes(recording) -> list[tuple[str, object, int]]:
    """(channel, data, ts_recv) of every notification, freshly decoded (tests may edit them)."""
    out = []
    for ts_recv, body in recording:
        channel, data = subscription_parts(decode_frame(body))
        out.append((channel, data, ts_recv))
    return out


def book_notes(notes, name=None):
    return [n for n in notes if n[0].startswith("book.") and (name is None or n[1]["instrument_name"] == name)]


def feed(md, items):
    """All (topic, msg) and resync names from feeding ``items``."""
    outs, resync = [], []
    for channel, data, ts_recv in items:
        o, r = md.on_notification(channel, data, ts_recv)
        outs += o
        resync += r
    return outs, resync


def problems(md) -> dict[str, int]:
    return {k: v for k, v in md.stats.items() if v}


# ---- the recording as it is ---------------------------------------------------------------------

@pytest.mark.parametrize("depth", [10, 3, 100])
def test_every_book_matches_an_independent_rebuild(notes, universe, depth):
    md = DeribitMarketData(depth=depth, instruments=universe)
    refs: dict[str, ReferenceBook] = {}
    books = snapshots = chained = 0
    for channel, data, ts_recv in notes:
        outs, resync = md.on_notification(channel, data, ts_recv)
        assert resync == []
        if not channel.startswith("book."):
            assert len(outs) == 1 and isinstance(outs[0][1], Ticker)
            continue
        name = data["instrument_name"]
        ref = refs.setdefault(name, ReferenceBook())
        if data["type"] == "change":
            chained += data["prev_change_id"] == ref.change_id
        else:
            snapshots += 1
        ref.apply(data)
        bids, asks = ref.top(depth)
        assert outs == [(f"md.book.deribit.{name}", Book(
            venue="deribit", instrument=name, bids=bids, asks=asks, change_id=data["change_id"],
            stale=False, ts_event=data["timestamp"] * MS, ts_recv=ts_recv))]
        books += 1
    assert (books, snapshots, chained) == (46, 10, 36)
    assert problems(md) == {}
    assert set(md.stats) == set(STAT_NAMES)


def test_recorded_book_prices_are_on_their_instruments_tick(notes, universe):
    checked = 0
    for channel, data, _ in book_notes(notes):
        inst = universe[data["instrument_name"]]
        for _action, price, _amount in data["bids"] + data["asks"]:
            assert price_on_tick(price, inst.tick_size, inst.tick_steps), (inst.name, price)
            checked += 1
    assert checked == 108 + 41


def test_recorded_ticker_normalized_field_by_field(notes, universe):
    channel, data, ts_recv = notes[0]
    assert channel == "ticker.ETH-30JUL21-2800-C.raw"
    outs, resync = DeribitMarketData(instruments=universe).on_notification(channel, data, ts_recv)
    # Values read from the recording's fourth line.
    assert outs == [("md.ticker.deribit.ETH-30JUL21-2800-C", Ticker(
        venue="deribit", instrument="ETH-30JUL21-2800-C", ts_event=1626993723632 * MS, ts_recv=ts_recv,
        bid=0.0015, bid_amount=4714.0, ask=0.0025, ask_amount=873.0, last=0.002,
        mark_price=0.001972, mark_iv=120.74, bid_iv=115.62, ask_iv=125.63,
        underlying_price=2003.61, underlying_index="ETH-30JUL21", index_price=2006.72,
        interest_rate=0.0, open_interest=12685.0,
        delta=0.03127, gamma=0.0002, vega=0.20072, theta=-1.64029, rho=0.01188))]
    assert resync == []


def test_empty_sides_are_none(notes, universe):
    md = DeribitMarketData(instruments=universe)
    # ETH-27AUG21-4000-P is recorded with an empty book: 0.0 prices, amounts and IVs on both sides.
    channel, data, ts = next(n for n in notes if n[0] == "ticker.ETH-27AUG21-4000-P.raw")
    assert (data["best_bid_price"], data["best_bid_amount"], data["bid_iv"]) == (0.0, 0.0, 0.0)
    [(_, tick)] = md.on_notification(channel, data, ts)[0]
    assert (tick.bid, tick.bid_amount, tick.bid_iv, tick.ask, tick.ask_amount, tick.ask_iv) == (None,) * 6
    assert (tick.mark_price, tick.mark_iv, tick.last) == (1.005718, 117.2, 1.0165)
    # ETH-23JUL21-2300-C: no bid, one ask.
    channel, data, ts = next(n for n in notes if n[0] == "ticker.ETH-23JUL21-2300-C.raw")
    [(_, tick)] = md.on_notification(channel, data, ts)[0]
    assert (tick.bid, tick.bid_amount, tick.bid_iv) == (None, None, None)
    assert (tick.ask, tick.ask_amount, tick.ask_iv) == (0.001, 274.0, 227.51)
    # null instead of 0.0, and no last trade.
    nulls = dict(data, best_bid_price=None, best_bid_amount=None, best_ask_price=None,
                 best_ask_amount=None, last_price=None)
    [(_, tick)] = md.on_notification(channel, nulls, ts)[0]
    assert (tick.bid, tick.ask, tick.ask_iv, tick.last) == (None, None, None, None)
    # Its recorded book snapshot is empty on both sides: an empty, fresh md.book.
    channel, data, ts = next(n for n in notes if n[0] == "book.ETH-27AUG21-4000-P.raw")
    [(_, book)] = md.on_notification(channel, data, ts)[0]
    assert (book.bids, book.asks, book.stale) == ([], [], False)
    assert problems(md) == {}


# ---- faults injected into the recording ---------------------------------------------------------

def test_gap_publishes_one_stale_book_and_resyncs_that_instrument_only(notes, universe):
    md = DeribitMarketData(instruments=universe)
    gappy = book_notes(notes, GAPPY)
    skipped = gappy[6]  # the 6th change
    ref = ReferenceBook()
    for _, data, _ in gappy[:6]:
        ref.apply(data)
    before_bids, before_asks = ref.top(10)
    stale_books, others, resyncs = [], [], []
    for item in notes:
        if item[1] is skipped[1]:
            continue
        outs, resync = md.on_notification(*item)
        resyncs += resync
        for topic, msg in outs:
            if isinstance(msg, Book) and msg.instrument == GAPPY and msg.change_id > ref.change_id:
                pytest.fail(f"a book from a broken chain was published: {msg}")
            if isinstance(msg, Book) and msg.stale:
                stale_books.append(msg)
            elif isinstance(msg, Book) and msg.instrument != GAPPY:
                others.append(msg)
    assert resyncs == [GAPPY]
    assert len(stale_books) == 1
    stale = stale_books[0]
    assert (stale.instrument, stale.bids, stale.asks, stale.change_id) == (GAPPY, before_bids, before_asks,
                                                                           ref.change_id)
    assert stale.ts_event == gappy[7][1]["timestamp"] * MS  # the change that showed the gap
    assert len(others) == 46 - len(gappy)  # other instruments unaffected
    assert md.stats["book_gap"] == 1
    assert md.stats["book_stale_ignored"] == len(gappy) - 8  # every change after the gap
    assert md.stats["resync_requested"] == 1
    assert md.books[GAPPY].stale

    # The resubscription's snapshot makes it fresh again; its changes then apply.
    full = ReferenceBook()
    for _, data, _ in gappy:
        full.apply(data)
    snap = {"type": "snapshot", "timestamp": gappy[-1][1]["timestamp"] + 5, "instrument_name": GAPPY,
            "change_id": full.change_id + 10,
            "bids": [["new", p, a] for p, a in full.bids.items()],
            "asks": [["new", p, a] for p, a in full.asks.items()]}
    [(_, fresh)], resync = md.on_notification(f"book.{GAPPY}.raw", snap, 1)
    bids, asks = full.top(10)
    assert (fresh.stale, fresh.bids, fresh.asks, fresh.change_id, resync) == (False, bids, asks,
                                                                             snap["change_id"], [])
    nxt = {"type": "change", "timestamp": snap["timestamp"] + 1, "instrument_name": GAPPY,
           "prev_change_id": snap["change_id"], "change_id": snap["change_id"] + 1,
           "bids": [["new", 0.0001, 7.0]], "asks": []}
    [(_, after)], _ = md.on_notification(f"book.{GAPPY}.raw", nxt, 2)
    assert after.stale is False and after.bids[-1] == (0.0001, 7.0)


def test_change_id_backwards_or_repeated_is_ignored(notes, universe):
    md = DeribitMarketData(instruments=universe)
    gappy = book_notes(notes, GAPPY)
    feed(md, gappy[:5])
    older, last = copy.deepcopy(gappy[3]), copy.deepcopy(gappy[4])
    assert feed(md, [older]) == ([], [])
    assert feed(md, [last]) == ([], [])
    # An older snapshot is ignored too.
    assert feed(md, [copy.deepcopy(gappy[0])]) == ([], [])
    assert (md.stats["book_backwards"], md.stats["book_duplicate"]) == (2, 1)
    # The chain goes on as if nothing happened.
    outs, resync = feed(md, gappy[5:])
    ref = ReferenceBook()
    for _, data, _ in gappy:
        ref.apply(data)
    assert resync == [] and outs[-1][1].change_id == ref.change_id
    assert (outs[-1][1].bids, outs[-1][1].asks) == ref.top(10)
    assert md.stats["book_gap"] == 0 and not md.books[GAPPY].stale


def _next_change(md, name, bids=(), asks=()):
    book = md.books[name]
    return (f"book.{name}.raw", {"type": "change", "timestamp": 1626993760000, "instrument_name": name,
                                 "prev_change_id": book.change_id, "change_id": book.change_id + 1,
                                 "bids": [list(level) for level in bids],
                                 "asks": [list(level) for level in asks]}, 7)


def test_level_errors_are_counted_and_resolved(notes, universe):
    md = DeribitMarketData(instruments=universe)
    name = "BTC-31DEC21-34000-P"
    feed(md, book_notes(notes, name))
    ref = ReferenceBook()
    for _, data, _ in book_notes(notes, name):
        ref.apply(data)
    bids, asks = ref.top(100)
    # A delete of a level that is not there: harmless, counted, book unchanged.
    [(_, book)], resync = feed(md, [_next_change(md, name, bids=[("delete", 0.0105, 0.0)])])
    assert (book.bids, book.asks[:3], resync) == (bids[:10], asks[:3], [])
    assert md.stats["level_missing"] == 1
    # A change of a missing level inserts it (it carries the venue's amount), counted.
    [(_, book)], _ = feed(md, [_next_change(md, name, asks=[("change", 0.9, 1.5)])])
    assert (0.9, 1.5) in md.books[name].asks.items() and md.stats["level_missing"] == 2
    # A new on an existing level is applied as a change, counted.
    best_bid = bids[0][0]
    [(_, book)], _ = feed(md, [_next_change(md, name, bids=[("new", best_bid, 42.0)])])
    assert book.bids[0] == (best_bid, 42.0) and md.stats["level_exists"] == 1
    # An amount of 0 on new/change removes the level, counted.
    [(_, book)], _ = feed(md, [_next_change(md, name, bids=[("change", best_bid, 0.0)])])
    assert book.bids[0] == bids[1] and md.stats["level_zero"] == 1
    assert md.stats["book_gap"] == md.stats["malformed"] == 0 and not book.stale


def test_crossed_book_is_published_and_counted(notes, universe):
    md = DeribitMarketData(instruments=universe)
    name = "BTC-31DEC21-34000-P"
    feed(md, book_notes(notes, name))
    best_ask = md.books[name].top(1)[1][0][0]
    [(_, book)], resync = feed(md, [_next_change(md, name, bids=[("new", best_ask, 1.0)])])
    assert book.bids[0] == (best_ask, 1.0) and not book.stale and resync == []
    assert md.stats["crossed"] == 1


def test_change_before_any_snapshot_asks_for_one_resync(notes, universe):
    md = DeribitMarketData(instruments=universe)
    gappy = book_notes(notes, GAPPY)
    outs, resync = feed(md, gappy[1:6])  # the snapshot is missing
    assert (outs, resync) == ([], [GAPPY])
    assert md.stats["book_stale_ignored"] == 5 and md.stats["resync_requested"] == 1


def test_connection_lost_marks_every_book_stale_once(notes, universe):
    md = DeribitMarketData(instruments=universe)
    feed(md, notes)
    stale = md.connection_lost(99)
    assert sorted(msg.instrument for _, msg in stale) == sorted(md.books) and len(stale) == 10
    assert all(msg.stale and msg.ts_recv == 99 for _, msg in stale)
    assert md.connection_lost(100) == []
    # After reconnecting, changes wait for the new snapshots without asking again.
    gappy = book_notes(notes, GAPPY)
    assert feed(md, [copy.deepcopy(gappy[-1])]) == ([], [])
    snap = dict(copy.deepcopy(gappy[0][1]), change_id=gappy[-1][1]["change_id"] + 1)
    [(_, book)], _ = md.on_notification(f"book.{GAPPY}.raw", snap, 101)
    assert not book.stale


def test_ticker_outside_the_universe_and_unknown_channels(notes, universe):
    md = DeribitMarketData(instruments=universe)
    channel, data, ts = notes[0]
    other = dict(data, instrument_name="BTC-1JAN30-1000-C")
    assert md.on_notification("ticker.BTC-1JAN30-1000-C.raw", other, ts) == ([], [])
    assert md.on_notification("book.BTC-1JAN30-1000-C.raw", other, ts) == ([], [])
    for bad in ["user.orders.BTC.raw", "chart.trades.BTC-PERPETUAL.1", "", "book", ".x",
                "book.BTC-PERPETUAL.none.10.100ms", "deribit_price_index.", None, 17]:
        assert md.on_notification(bad, data, ts) == ([], [])
    assert problems(md) == {"not_in_universe": 2, "unknown_channel": 9}
    # Without a universe every instrument is accepted.
    outs, _ = DeribitMarketData().on_notification("ticker.BTC-1JAN30-1000-C.raw", other, ts)
    assert outs[0][1].instrument == "BTC-1JAN30-1000-C"


def test_expired_instrument_is_dropped(notes, universe):
    md = DeribitMarketData(instruments=universe)
    name = "ETH-23JUL21-2300-C"
    expiry_ms = universe[name].expiry_ns // MS
    feed(md, [n for n in notes if name in n[0]][:2])
    assert name in md.books
    channel, data, ts = next(n for n in notes if n[0] == f"ticker.{name}.raw")
    assert md.on_notification(channel, dict(data, timestamp=expiry_ms), ts) == ([], [])
    channel, data, ts = book_notes(notes, name)[0]
    assert md.on_notification(channel, dict(data, timestamp=expiry_ms + 1), ts) == ([], [])
    assert problems(md) == {"expired": 2} and name not in md.books


BAD_TICKERS = [
    ("not a dict", lambda d: ["x"]),
    ("missing timestamp", lambda d: {k: v for k, v in d.items() if k != "timestamp"}),
    ("float timestamp", lambda d: dict(d, timestamp=1626993723632.5)),
    ("string price", lambda d: dict(d, mark_price="0.002")),
    ("bool amount", lambda d: dict(d, best_bid_amount=True)),
    ("NaN", lambda d: dict(d, mark_iv=float("nan"))),
    ("inf", lambda d: dict(d, best_ask_price=float("inf"))),
    ("greeks not an object", lambda d: dict(d, greeks=[1, 2])),
    ("other instrument_name", lambda d: dict(d, instrument_name="ETH-30JUL21-2900-C")),
    ("underlying_index number", lambda d: dict(d, underlying_index=3)),
]


@pytest.mark.parametrize("why, spoil", BAD_TICKERS, ids=[b[0] for b in BAD_TICKERS])
def test_malformed_ticker_is_counted(notes, universe, why, spoil):
    md = DeribitMarketData(instruments=universe)
    channel, data, ts = notes[0]
    assert md.on_notification(channel, spoil(data), ts) == ([], [])
    assert problems(md) == {"malformed": 1}
    assert md.last_issue[0] == "malformed"
    assert len(md.on_notification(channel, data, ts)[0]) == 1  # the next good one goes through


BAD_CHANGES = [
    ("levels not a list", lambda d: dict(d, asks={"new": 1})),
    ("short level", lambda d: dict(d, asks=[["new", 0.001]])),
    ("bad action", lambda d: dict(d, asks=[["add", 0.001, 1.0]])),
    ("NaN price", lambda d: dict(d, asks=[["new", float("nan"), 1.0]])),
    ("string amount", lambda d: dict(d, asks=[["new", 0.001, "1"]])),
    ("negative amount", lambda d: dict(d, asks=[["new", 0.001, -2.7]])),
    ("missing change_id", lambda d: {k: v for k, v in d.items() if k != "change_id"}),
    ("missing prev_change_id", lambda d: {k: v for k, v in d.items() if k != "prev_change_id"}),
    ("bad type", lambda d: dict(d, type="delta")),
    ("missing timestamp", lambda d: {k: v for k, v in d.items() if k != "timestamp"}),
    ("not a dict", lambda d: None),
]


@pytest.mark.parametrize("why, spoil", BAD_CHANGES, ids=[b[0] for b in BAD_CHANGES])
def test_malformed_book_change_breaks_the_chain_safely(notes, universe, why, spoil):
    md = DeribitMarketData(instruments=universe)
    gappy = book_notes(notes, GAPPY)
    feed(md, gappy[:3])
    good_top = md.books[GAPPY].top(10)
    channel, data, ts = gappy[3]
    outs, resync = md.on_notification(channel, spoil(data), ts)
    # The update is lost: one stale book (the last good levels), a resync, nothing else.
    assert resync == [GAPPY]
    assert [(m.stale, m.bids, m.asks) for _, m in outs] == [(True, *good_top)]
    assert md.stats["malformed"] == 1
    assert feed(md, gappy[4:]) == ([], [])


GARBAGE = [None, True, -1, 2**70, 1e308, float("nan"), "x", [], {}, [1], {"a": [1]}]


def _spoiled(data: dict):
    """``data`` with each field, and each part of a book level, replaced by each wrong value."""
    for key in data:
        for bad in GARBAGE:
            yield dict(data, **{key: bad})
            if key in ("bids", "asks", "greeks"):
                yield dict(data, **{key: [bad]})
                for i in range(3):
                    level = ["new", 0.1, 1.0]
                    level[i] = bad
                    yield dict(data, **{key: [level]})
    yield from GARBAGE


def test_garbage_anywhere_never_raises(notes, universe):
    """Every field of recorded notifications replaced by values of every wrong type: counted, never raised.

    Each spoiled book notification goes to a normalizer that has applied everything before it on
    that channel, so the spoiled one is read in full (not ignored as a duplicate).
    """
    spoiled = malformed = 0
    tickers = [n for n in notes if n[0].startswith("ticker.")][:10]
    for channel, data, ts in tickers + book_notes(notes):
        before = [n for n in book_notes(notes) if n[0] == channel and n[1]["change_id"] < data["change_id"]] \
            if channel.startswith("book.") else []
        for bad in _spoiled(data):
            md = DeribitMarketData(instruments=universe)
            feed(md, before)
            md.on_notification(channel, bad, ts)
            md.on_notification("trades.X.raw", [bad], ts)
            md.on_notification("deribit_price_index.btc_usd", bad, ts)
            spoiled += 1
            malformed += md.stats["malformed"] > 0
    assert spoiled > 5000 and malformed == spoiled  # the trades and index channels see every one


def test_malformed_snapshot_asks_again(notes, universe):
    md = DeribitMarketData(instruments=universe)
    channel, data, ts = book_notes(notes, GAPPY)[0]
    assert md.on_notification(channel, dict(data, bids=[["new", "x", 1]]), ts) == ([], [GAPPY])
    assert md.on_notification(channel, dict(data, bids=[["new", "x", 1]]), ts) == ([], [GAPPY])
    assert md.stats["malformed"] == 2
    assert md.on_notification(channel, data, ts)[0][0][1].stale is False


def test_trades_and_index(shared_data, universe):
    frame = decode_frame((shared_data / "deribit" / "api" / "ws_trades.json").read_bytes())
    channel, data = subscription_parts(frame)
    md = DeribitMarketData(instruments=universe)
    outs, resync = md.on_notification(channel, data, 5)
    assert outs == [
        ("md.trade.deribit.BTC-PERPETUAL", Trade(
            venue="deribit", instrument="BTC-PERPETUAL", trade_id="403691824", price=92294.5, amount=10.0,
            side="sell", index_price=92276.75, iv=None, ts_event=1765531356452 * MS, ts_recv=5)),
        ("md.trade.deribit.BTC-PERPETUAL", Trade(
            venue="deribit", instrument="BTC-PERPETUAL", trade_id="403691825", price=92288.5, amount=750.0,
            side="sell", index_price=92276.75, iv=None, ts_event=1765531356452 * MS, ts_recv=5))]
    # One bad trade in a batch loses only itself.
    bad = [dict(data[0], direction="short"), dict(data[1], iv=55.5)]
    outs, _ = md.on_notification(channel, bad, 6)
    assert [m.trade_id for _, m in outs] == ["403691825"] and outs[0][1].iv == 55.5
    assert md.on_notification(channel, {"not": "a list"}, 7) == ([], [])
    assert md.stats["malformed"] == 2
    index = {"index_name": "btc_usd", "price": 32208.37, "timestamp": 1626993754148}
    assert md.on_notification("deribit_price_index.btc_usd", index, 8) == ([(
        "md.index.deribit.btc_usd",
        Index(venue="deribit", name="btc_usd", price=32208.37, sources=1, ts_event=1626993754148 * MS,
              ts_recv=8))], [])
    assert md.on_notification("deribit_price_index.btc_usd", dict(index, price=None), 9) == ([], [])
    assert md.stats["malformed"] == 3


# ---- frames ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ['{"jsonrpc":"2.0","method":"subscr', b"\xff\xfe", "", "NaN",
                                  "[1, 2]", '"text"', "[" * 100_000])
def test_decode_frame_refuses_malformed_json(text):
    with pytest.raises(FrameDecodeError) as info:
        decode_frame(text)
    assert info.value.kind == "malformed_json" and isinstance(info.value, ValueError)


def test_decode_frame_reads_recorded_frames(recording, shared_data):
    for _, body in recording:
        assert decode_frame(body) == json.loads(body) == decode_frame(body.encode())
    error = decode_frame((shared_data / "deribit" / "api" / "ws_error.json").read_text())
    assert subscription_parts(error) is None and error["error"]["code"] == 10028
    hb = decode_frame((shared_data / "deribit" / "api" / "ws_test_request.json").read_text())
    assert subscription_parts(hb) is None
    assert subscription_parts({"method": "subscription", "params": 3}) == ("", None)


# ---- ticks ------------------------------------------------------------------------------------------

def test_price_on_tick():
    assert price_on_tick(0.0015, 0.0005) and price_on_tick(3 * 0.0005, 0.0005)
    assert price_on_tick(0.1 + 0.2, 0.1) and price_on_tick(32749.5, 0.5)
    assert not price_on_tick(0.00150001, 0.0005) and not price_on_tick(32749.3, 0.5)
    assert price_on_tick(1_000_000.0001, 0.0001) and not price_on_tick(1_000_000.00015, 0.0001)
    assert not price_on_tick(float("nan"), 0.5) and not price_on_tick(float("inf"), 0.5)
    steps = [(0.005, 0.0005)]  # 0.0001 up to 0.005, 0.0005 above
    assert price_on_tick(0.0042, 0.0001, steps) and price_on_tick(0.005, 0.0001, steps)
    assert not price_on_tick(0.0052, 0.0001, steps) and price_on_tick(0.0055, 0.0001, steps)


def test_round_to_tick():
    assert repr(round_to_tick(0.00149, 0.0005)) == "0.0015"
    assert round_to_tick(0.00174, 0.0005, mode="down") == 0.0015
    assert round_to_tick(0.00151, 0.0005, mode="up") == 0.002
    assert round_to_tick(0.0015, 0.0005, mode="up") == 0.0015  # on tick stays
    assert round_to_tick(0.0015, 0.0005, mode="down") == 0.0015
    assert round_to_tick(0.00125, 0.0005) == 0.0015  # half up
    assert round_to_tick(32749.74, 0.5) == 32749.5 and round_to_tick(32749.76, 2.5) == 32750.0
    assert round_to_tick(0.00523, 0.0001, [(0.005, 0.0005)]) == 0.005
    assert round_to_tick(0.00433, 0.0001, [(0.005, 0.0005)]) == 0.0043
    with pytest.raises(ValueError, match="nearest, down or up"):
        round_to_tick(1.0, 0.5, mode="sideways")


def test_order_book_alone():
    stats: dict[str, int] = {}
    book = OrderBook("X", stats)
    assert book.apply({"type": "change", "change_id": 2, "prev_change_id": 1, "bids": [], "asks": []}) == "stale_ignored"
    assert book.apply({"type": "snapshot", "change_id": 5, "bids": [["new", 1.0, 2.0], ["new", 3.0, 1]],
                       "asks": [["new", 4.0, 1.0], ["new", 3.5, 0.5]]}) == "applied"
    assert book.top(1) == ([(3.0, 1)], [(3.5, 0.5)]) and book.top(0) == ([], [])
    assert book.apply({"type": "change", "change_id": 7, "prev_change_id": 6, "bids": [], "asks": []}) == "gap"
    assert book.stale and book.change_id == 5
