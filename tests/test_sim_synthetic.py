"""The default synthetic market: consistent books over the wire, prices on tick, determinism."""

from __future__ import annotations

from hedgepipe.sim import black76
from hedgepipe.sim.book import apply_levels
from hedgepipe.sim.synthetic import SyntheticMarket

from ._sim_helpers import client_of, on_channel, running, small_market

START_MS = 1_790_000_000_000  # a fixed "now" so two markets list the same expiries


def fixed_clock():
    now = [START_MS]

    def clock():
        now[0] += 10
        return now[0]
    return clock


def rebuild(client, channel: str, changes: int) -> tuple[dict, dict, int]:
    """Follow a book channel from its snapshot through ``changes`` changes, checking the chain."""
    snap = client.next(on_channel(channel))["params"]["data"]
    assert snap["type"] == "snapshot"
    bids, asks, last = {}, {}, snap["change_id"]
    apply_levels(bids, snap["bids"])
    apply_levels(asks, snap["asks"])
    for _ in range(changes):
        change = client.next(on_channel(channel))["params"]["data"]
        assert change["type"] == "change" and change["prev_change_id"] == last, (change, last)
        apply_levels(bids, change["bids"])
        apply_levels(asks, change["asks"])
        last = change["change_id"]
    return bids, asks, last


def test_snapshot_plus_changes_rebuild_exactly_what_get_order_book_returns():
    with running(small_market(), tick_s=0.005) as sim, client_of(sim) as client:
        channel = "book.BTC-PERPETUAL.raw"
        client.result("public/subscribe", {"channels": [channel]})
        bids, asks, last = rebuild(client, channel, 25)
        # the answer is queued behind every change made before it: drain those, then compare
        request = client.send("public/get_order_book", {"instrument_name": "BTC-PERPETUAL", "depth": 1000})
        reply = client.reply(request)["result"]
        for msg in client.pending:
            if msg.get("method") == "subscription" and msg["params"]["channel"] == channel:
                change = msg["params"]["data"]
                assert change["prev_change_id"] == last
                apply_levels(bids, change["bids"])
                apply_levels(asks, change["asks"])
                last = change["change_id"]
        assert reply["change_id"] == last
        assert reply["bids"] == [[p, bids[p]] for p in sorted(bids, reverse=True)]
        assert reply["asks"] == [[p, asks[p]] for p in sorted(asks)]


def test_resubscribing_a_book_starts_from_a_fresh_snapshot_at_the_current_change_id():
    with running(small_market(), tick_s=0.005) as sim, client_of(sim) as client:
        channel = "book.ETH-PERPETUAL.100ms"
        client.result("public/subscribe", {"channels": [channel]})
        _, _, last = rebuild(client, channel, 5)
        client.result("public/subscribe", {"channels": [channel]})
        again = client.next(lambda m: on_channel(channel)(m) and m["params"]["data"]["type"] == "snapshot")
        assert again["params"]["data"]["change_id"] >= last


def test_option_books_are_on_tick_uncrossed_and_priced_near_black76():
    market = small_market()
    for _ in range(20):
        market.step()
    options = market.instruments("any", "option")
    assert len(options) > 50
    for spec in options:
        book = market.order_book(spec["instrument_name"], None)
        steps = spec["tick_size_steps"]
        for price, amount in book["bids"] + book["asks"]:
            assert black76.on_tick(price, spec["tick_size"], steps), (spec["instrument_name"], price)
            assert amount >= spec["min_trade_amount"]
        if book["bids"] and book["asks"]:
            assert book["bids"][0][0] < book["asks"][0][0]
        assert book["asks"], spec["instrument_name"]
        assert book["bids"] == sorted(book["bids"], reverse=True) and book["asks"] == sorted(book["asks"])
        assert 0 < book["mark_iv"] < 250
        assert book["best_ask_price"] >= book["mark_price"] - 1e-9 or book["mark_price"] < 0.0001


def test_futures_sit_around_their_forward_with_the_perpetual_near_the_index():
    market = small_market()
    spot = market.index_price("btc_usd")["index_price"]
    perp = market.order_book("BTC-PERPETUAL", 1)
    assert perp["bids"][0][0] < perp["asks"][0][0]
    assert abs(perp["mark_price"] / spot - 1) < 0.001
    dated = [i for i in market.instruments("BTC", "future") if i["settlement_period"] != "perpetual"]
    marks = [market.ticker(i["instrument_name"])["mark_price"] for i in
             sorted(dated, key=lambda i: i["expiration_timestamp"])]
    assert marks == sorted(marks) and marks[0] > spot  # contango: later expiries dearer


def test_the_same_seed_makes_the_same_market_and_another_seed_does_not():
    def run(seed):
        market = SyntheticMarket(seed=seed, clock_ms=fixed_clock(), max_strikes=6)
        listed = [i["instrument_name"] for i in market.instruments("any")]
        return listed, [market.step() for _ in range(30)]
    first, second, other = run(11), run(11), run(12)
    assert first == second
    assert first[1] != other[1]  # prices (and so the strike grid) differ


def test_steps_publish_index_trades_and_book_changes():
    market = small_market()
    keys = [key for _ in range(50) for key, _ in market.step()]
    assert any(k.startswith("trades.") for k in keys) and any(k.startswith("book.") for k in keys)
    assert "deribit_price_index.btc_usd" in keys and "deribit_price_index.eth_usd" in keys
    trades = [data for _ in range(50) for key, data in market.step() if key.startswith("trades.")]
    trade = trades[0][0]
    assert {"trade_seq", "trade_id", "timestamp", "price", "amount", "direction", "instrument_name",
            "index_price", "mark_price", "tick_direction"} <= trade.keys()


def test_expiries_are_fridays_at_0800_utc():
    import datetime as dt
    market = SyntheticMarket(seed=1, clock_ms=fixed_clock(), max_strikes=4)
    for spec in market.instruments("any", "option"):
        when = dt.datetime.fromtimestamp(spec["expiration_timestamp"] / 1000, tz=dt.timezone.utc)
        assert (when.weekday(), when.hour, when.minute) == (4, 8, 0)
        assert spec["expiration_timestamp"] > START_MS
