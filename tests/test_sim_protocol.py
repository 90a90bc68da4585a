"""deribit-sim's JSON-RPC surface, through a real websockets client: shapes and error codes."""

from __future__ import annotations

import json

import pytest

from hedgepipe.sim.auth import Auth

from ._sim_helpers import client_of, on_channel, running, small_market
from .conftest import wait_until

#: the fields of a recorded option ticker notification (DERIBIT.ws.1.0)
TICKER_FIELDS = {"underlying_price", "underlying_index", "timestamp", "stats", "state", "settlement_price",
                 "open_interest", "min_price", "max_price", "mark_price", "mark_iv", "last_price",
                 "interest_rate", "instrument_name", "index_price", "greeks", "estimated_delivery_price",
                 "bid_iv", "best_bid_price", "best_bid_amount", "best_ask_price", "best_ask_amount", "ask_iv"}
INSTRUMENT_FIELDS = {"tick_size", "taker_commission", "settlement_period", "quote_currency", "min_trade_amount",
                     "maker_commission", "kind", "is_active", "instrument_name", "expiration_timestamp",
                     "creation_timestamp", "contract_size", "base_currency", "counter_currency",
                     "settlement_currency", "tick_size_steps"}


@pytest.fixture(scope="module")
def sim():
    with running(small_market(), tick_s=0.01, min_heartbeat_s=0.05, auth=Auth(expires_in=0.3)) as server:
        yield server


@pytest.fixture
def client(sim):
    with client_of(sim) as c:
        yield c


def option_name(client, currency="BTC"):
    options = client.result("public/get_instruments", {"currency": currency, "kind": "option"})
    return sorted(options, key=lambda i: i["expiration_timestamp"])[len(options) // 2]["instrument_name"]


def test_get_instruments_lists_futures_perpetual_and_options_with_deribit_fields(client):
    reply = client.call("public/get_instruments", {"currency": "BTC"})
    assert {"usIn", "usOut", "usDiff", "testnet"} <= reply.keys() and reply["jsonrpc"] == "2.0"
    listed = reply["result"]
    by_name = {i["instrument_name"]: i for i in listed}
    perp = by_name["BTC-PERPETUAL"]
    assert (perp["kind"], perp["contract_size"], perp["settlement_period"]) == ("future", 10.0, "perpetual")
    options = [i for i in listed if i["kind"] == "option"]
    assert options and all(INSTRUMENT_FIELDS | {"strike", "option_type"} <= i.keys() for i in options)
    assert all(i["instrument_name"].endswith("-C" if i["option_type"] == "call" else "-P") for i in options)
    assert len({i["expiration_timestamp"] for i in options}) >= 4
    futures = client.result("public/get_instruments", {"currency": "ETH", "kind": "future"})
    assert futures and {i["kind"] for i in futures} == {"future"}
    assert client.result("public/get_instruments", {"currency": "BTC", "expired": True}) == []


def test_index_order_book_and_ticker_answer_in_the_recorded_shapes(client):
    index = client.result("public/get_index_price", {"index_name": "btc_usd"})
    assert set(index) == {"index_price", "estimated_delivery_price"} and index["index_price"] > 0
    name = option_name(client)
    ticker = client.result("public/ticker", {"instrument_name": name})
    assert TICKER_FIELDS <= ticker.keys()
    assert set(ticker["greeks"]) == {"delta", "gamma", "vega", "theta", "rho"}
    book = client.result("public/get_order_book", {"instrument_name": name, "depth": 2})
    assert TICKER_FIELDS | {"bids", "asks", "change_id"} <= book.keys()
    assert len(book["bids"]) <= 2 and len(book["asks"]) <= 2 and book["asks"]
    assert book["best_ask_price"] == book["asks"][0][0]
    perp = client.result("public/ticker", {"instrument_name": "BTC-PERPETUAL"})
    assert {"funding_8h", "current_funding", "best_bid_price", "mark_price"} <= perp.keys()


@pytest.mark.parametrize("method, params, code", [
    ("public/no_such_method", {}, -32601),
    ("public/get_instruments", {}, -32602),
    ("public/get_instruments", {"currency": "XRP"}, -32602),
    ("public/get_instruments", {"currency": "BTC", "kind": "swap"}, -32602),
    ("public/get_index_price", {"index_name": "doge_usd"}, -32602),
    ("public/get_order_book", {"instrument_name": "BTC-1JAN99-1-C"}, -32602),
    ("public/get_order_book", {"instrument_name": "BTC-PERPETUAL", "depth": "5"}, -32602),
    ("public/ticker", {}, -32602),
    ("public/set_heartbeat", {"interval": 0.001}, -32602),
    ("public/subscribe", {"channels": "book.BTC-PERPETUAL.raw"}, -32602),
    ("public/auth", {"grant_type": "client_credentials", "client_id": "sim-client", "client_secret": "x"}, 13004),
    ("public/auth", {"grant_type": "password"}, -32602),
    ("private/get_positions", {"currency": "BTC"}, 13009),
])
def test_bad_requests_get_deribit_error_codes(client, method, params, code):
    reply = client.call(method, params)
    assert reply["error"]["code"] == code and reply["error"]["message"], reply
    assert client.result("public/test")["version"]  # the connection carries on


def test_malformed_json_gets_parse_error_and_the_connection_stays(client):
    client.ws.send('{"jsonrpc": "2.0", "id": 1, "method": ')
    reply = client.next(lambda m: "error" in m)
    assert reply["error"]["code"] == -32700 and reply["id"] is None
    client.ws.send(json.dumps([1, 2]))
    assert client.next(lambda m: "error" in m)["error"]["code"] == -32600
    client.ws.send(json.dumps({"jsonrpc": "2.0", "id": 9, "method": "public/test", "params": [1]}))
    assert client.next(lambda m: m.get("id") == 9)["error"]["code"] == -32602
    assert client.result("public/test") == {"version": "1.2.26"}


def test_subscribe_accepts_only_channels_it_serves_and_unsubscribe_lists_what_it_removed(client):
    wanted = ["book.BTC-PERPETUAL.raw", "ticker.BTC-PERPETUAL.100ms", "deribit_price_index.btc_usd",
              "book.NOPE-PERPETUAL.raw", "quote.BTC-PERPETUAL", "book.BTC-PERPETUAL.5ms"]
    assert client.result("public/subscribe", {"channels": wanted}) == wanted[:3]
    snapshot = client.next(on_channel("book.BTC-PERPETUAL.raw"))["params"]["data"]
    assert snapshot["type"] == "snapshot" and snapshot["bids"][0][0] == "new"
    index = client.next(on_channel("deribit_price_index.btc_usd"))["params"]["data"]
    assert index["index_name"] == "btc_usd" and index["price"] > 0
    ticker = client.next(on_channel("ticker.BTC-PERPETUAL.100ms"))["params"]["data"]
    assert ticker["instrument_name"] == "BTC-PERPETUAL"
    removed = client.result("public/unsubscribe", {"channels": ["book.BTC-PERPETUAL.raw", "book.X.raw"]})
    assert removed == ["book.BTC-PERPETUAL.raw"]
    assert client.result("public/unsubscribe_all") == "ok"


def test_auth_grants_tokens_that_expire_and_refresh(client):
    granted = client.result("public/auth", {"grant_type": "client_credentials",
                                            "client_id": "sim-client", "client_secret": "sim-secret"})
    assert granted["token_type"] == "bearer" and granted["access_token"] and granted["refresh_token"]
    assert client.result("private/get_positions", {"currency": "BTC"}) == []
    # tokens here live 0.3 s: private calls are refused once it has expired
    wait_until(lambda: "error" in client.call("private/get_positions"), timeout=5, what="token expiry")
    assert client.call("private/get_positions")["error"]["code"] == 13009
    renewed = client.result("public/auth", {"grant_type": "refresh_token",
                                            "refresh_token": granted["refresh_token"]})
    assert renewed["access_token"] != granted["access_token"]
    assert client.result("private/get_positions") == []
    reused = client.call("public/auth", {"grant_type": "refresh_token", "refresh_token": granted["refresh_token"]})
    assert reused["error"]["code"] == 13009


def test_path_other_than_the_api_is_refused(sim):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect
    with pytest.raises(InvalidStatus):
        connect(sim.url.replace("/ws/api/v2", "/other"))
