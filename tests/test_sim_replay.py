"""--replay: the recording served back byte for byte, with its change ids, to a real client."""

from __future__ import annotations

import json

import pytest

from hedgepipe.sim.book import apply_levels
from hedgepipe.sim.faults import Faults
from hedgepipe.sim.replay import ReplayMarket

from ._sim_helpers import client_of, on_channel, running


def recorded(shared_data):
    """(the channels the recording subscribed to, its notification frames as text, in order)."""
    lines = (shared_data / "deribit" / "DERIBIT.ws.1.0").read_text().splitlines()
    request = json.loads(next(line for line in lines if "public/subscribe" in line).split(": ", 1)[1])
    frames = [line.split(": ", 1)[1] for line in lines[2:] if '"method":"subscription"' in line]
    return request["params"]["channels"], frames


@pytest.fixture(scope="module")
def market(shared_data):
    return ReplayMarket(shared_data / "deribit" / "DERIBIT.ws.1.0", shared_data / "deribit" / "DERIBIT.0")


def test_subscribing_to_the_recorded_channels_yields_exactly_the_recorded_notifications(shared_data, market):
    channels, frames = recorded(shared_data)
    assert len(frames) == 135
    with running(market, speed=0) as sim, client_of(sim) as client:
        accepted = client.result("public/subscribe", {"channels": channels})
        assert sorted(accepted) == sorted(channels)
        got = [client.ws.recv(timeout=5) for _ in frames]
        assert got == frames
        assert client.result("public/test")  # and nothing else was sent before the answer
        assert client.pending == []


def test_instruments_come_from_the_recorded_get_instruments_bodies(shared_data, market):
    line = (shared_data / "deribit" / "DERIBIT.0").read_text().splitlines()[0]
    body = json.loads(line.split(" -> ", 1)[1].split(": ", 1)[1])
    with running(market, speed=0) as sim, client_of(sim) as client:
        assert client.result("public/get_instruments", {"currency": "BTC"}) == body["result"]
        options = client.result("public/get_instruments", {"currency": "BTC", "kind": "option"})
        assert len(options) == 390
        book = client.result("public/get_order_book", {"instrument_name": "ETH-30JUL21-2800-C"})
        assert book["change_id"] == 13169025645 and book["bids"][0] == [0.0015, 4714.0]
        ticker = client.result("public/ticker", {"instrument_name": "ETH-30JUL21-2800-C"})
        assert ticker["mark_iv"] == 120.74
        index = client.result("public/get_index_price", {"index_name": "eth_usd"})
        assert index["index_price"] == 2006.72


def test_a_book_resubscribed_after_the_recording_went_by_gets_a_snapshot_of_the_rebuilt_book(market):
    name = "BTC-24SEP21-8000-P"
    channel = f"book.{name}.raw"
    with running(market, speed=0) as sim, client_of(sim) as client:
        client.result("public/subscribe", {"channels": [channel]})
        bids, asks, last = {}, {}, None
        expected = sum(1 for r in market.records if r.key == f"book.{name}")
        for _ in range(expected):
            data = client.next(on_channel(channel))["params"]["data"]
            assert last is None or data["prev_change_id"] == last
            apply_levels(bids, data["bids"])
            apply_levels(asks, data["asks"])
            last = data["change_id"]
        client.result("public/subscribe", {"channels": [channel]})
        snap = client.next(on_channel(channel))["params"]["data"]
        assert (snap["type"], snap["change_id"]) == ("snapshot", last)
        assert snap["bids"] == [["new", p, bids[p]] for p in sorted(bids, reverse=True)]
        assert snap["asks"] == [["new", p, asks[p]] for p in sorted(asks)]


def test_a_100ms_subscription_gets_the_raw_recording_under_its_own_channel_name(market):
    with running(market, speed=0) as sim, client_of(sim) as client:
        client.result("public/subscribe", {"channels": ["book.ETH-30JUL21-2800-C.100ms"]})
        msg = client.next(lambda m: m.get("method") == "subscription")
        assert msg["params"]["channel"] == "book.ETH-30JUL21-2800-C.100ms"
        assert msg["params"]["data"]["change_id"] == 13169025645


def test_skipped_change_breaks_the_chain_in_replay_too(market):
    name = "BTC-24SEP21-8000-P"
    channel = f"book.{name}.raw"
    faults = Faults(skip_change=name, skip_change_after=1)
    with running(market, speed=0, faults=faults) as sim, client_of(sim) as client:
        client.result("public/subscribe", {"channels": [channel]})
        snap = client.next(on_channel(channel))["params"]["data"]
        change = client.next(on_channel(channel))["params"]["data"]
        assert change["prev_change_id"] != snap["change_id"]
        assert faults.skipped == [(name, change["prev_change_id"])]


def test_index_notifications_are_derived_from_the_recorded_tickers(market):
    with running(market, speed=0) as sim, client_of(sim) as client:
        client.result("public/subscribe", {"channels": ["deribit_price_index.btc_usd"]})
        data = client.next(on_channel("deribit_price_index.btc_usd"))["params"]["data"]
        assert data["index_name"] == "btc_usd" and data["price"] > 30000


def test_a_channel_subscribed_after_the_playback_went_by_still_gets_its_whole_recording(market):
    """Clients subscribe in batches: a later batch must not miss what an earlier one started."""
    first, later = "book.ETH-30JUL21-2800-C.raw", "book.BTC-24SEP21-8000-P.raw"
    later_texts = [r.text for r in market.records if r.key == "book.BTC-24SEP21-8000-P"]
    with running(market, speed=0) as sim, client_of(sim) as client:
        client.result("public/subscribe", {"channels": [first]})
        for _ in (r for r in market.records if r.key == "book.ETH-30JUL21-2800-C"):
            client.next(on_channel(first))
        client.result("public/subscribe", {"channels": [later]})
        got = [json.dumps(client.next(on_channel(later))) for _ in later_texts]
        assert [json.loads(g) for g in got] == [json.loads(t) for t in later_texts]


def test_get_time_runs_on_the_recordings_clock(market):
    with running(market, speed=0) as sim, client_of(sim) as client:
        now = client.result("public/get_time")
        assert market.now_ms <= now < market.now_ms + 600_000
