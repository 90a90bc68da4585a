"""Heartbeats and injected faults, as a client sees them."""

from __future__ import annotations

import time

import pytest
from websockets.exceptions import ConnectionClosed

from hedgepipe.sim.faults import Faults

from ._sim_helpers import client_of, on_channel, running, small_market

TEST_REQUEST = {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}


def is_test_request(msg):
    return msg.get("method") == "heartbeat"


def test_test_requests_arrive_and_an_unanswered_one_closes_the_connection():
    with running(small_market(), min_heartbeat_s=0.05) as sim, client_of(sim) as client:
        assert client.result("public/set_heartbeat", {"interval": 0.1}) == "ok"
        for _ in range(3):  # answered: the connection stays
            assert client.next(is_test_request, timeout=5) == TEST_REQUEST
            assert client.result("public/test")["version"]
        client.next(is_test_request, timeout=5)  # not answered this time
        with pytest.raises(ConnectionClosed):
            client.next(lambda m: False, timeout=5)


def test_with_no_heartbeats_fault_no_test_request_comes_and_the_connection_stays():
    with running(small_market(), min_heartbeat_s=0.05, faults=Faults(no_heartbeats=True)) as sim, \
            client_of(sim) as client:
        client.result("public/set_heartbeat", {"interval": 0.05})
        client.result("public/subscribe", {"channels": ["deribit_price_index.btc_usd"]})
        window_end = time.monotonic() + 0.4  # eight intervals of observation
        seen = []
        while time.monotonic() < window_end:
            seen.append(client.next(timeout=5))
        assert not any(is_test_request(m) for m in seen)
        assert client.result("public/test")


def test_a_skipped_change_id_shows_as_a_broken_chain_then_a_resubscription_heals_it():
    faults = Faults(skip_change="BTC-PERPETUAL", skip_change_after=3)
    with running(small_market(), tick_s=0.005, faults=faults) as sim, client_of(sim) as client:
        channel = "book.BTC-PERPETUAL.raw"
        client.result("public/subscribe", {"channels": [channel]})
        last = client.next(on_channel(channel))["params"]["data"]["change_id"]
        for _ in range(2):
            change = client.next(on_channel(channel))["params"]["data"]
            assert change["prev_change_id"] == last
            last = change["change_id"]
        broken = client.next(on_channel(channel))["params"]["data"]
        assert broken["prev_change_id"] != last
        assert sim.call(lambda: list(faults.skipped)) == [("BTC-PERPETUAL", broken["prev_change_id"])]
        client.result("public/subscribe", {"channels": [channel]})
        snap = client.next(lambda m: on_channel(channel)(m) and m["params"]["data"]["type"] == "snapshot")
        last = snap["params"]["data"]["change_id"]

        def after_snapshot(m):
            # changes sent before the snapshot (kept by the client while it waited for the
            # reply and the snapshot) are older than it: a client drops them, so does the test
            return on_channel(channel)(m) and m["params"]["data"]["change_id"] > snap["params"]["data"]["change_id"]

        for _ in range(5):
            change = client.next(after_snapshot)["params"]["data"]
            assert change["prev_change_id"] == last
            last = change["change_id"]


def test_drop_after_messages_cuts_the_first_connection_only():
    faults = Faults(drop_after_messages=5, drop_connections=1)
    with running(small_market(), faults=faults) as sim:
        with client_of(sim) as client:
            client.result("public/subscribe", {"channels": ["deribit_price_index.btc_usd"]})
            received = 1
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    client.next(timeout=5)
                    received += 1
            assert received == 5 and closed.value.rcvd is None  # no close frame: a cut
        with client_of(sim) as again:
            again.result("public/subscribe", {"channels": ["deribit_price_index.btc_usd"]})
            for _ in range(10):
                again.next(timeout=5)


def test_the_nth_request_is_refused_with_too_many_requests():
    with running(small_market(), faults=Faults(too_many_requests={2})) as sim, client_of(sim) as client:
        assert "result" in client.call("public/test")
        refused = client.call("public/test")
        assert refused["error"] == {"code": 10028, "message": "too_many_requests", "data": None}
        assert "result" in client.call("public/test")


def test_a_stalled_server_answers_nothing_but_keeps_the_socket_open():
    faults = Faults()
    with running(small_market(), faults=faults) as sim, client_of(sim) as client:
        assert client.result("public/test")
        sim.call(setattr, faults, "stall_after_s", 0.0)
        with pytest.raises(TimeoutError):
            client.call("public/test", timeout=0.3)
        sim.call(setattr, faults, "stall_after_s", None)
        assert client.result("public/test")


def test_delayed_messages_still_arrive_in_order():
    with running(small_market(), faults=Faults(delay_ms=20)) as sim, client_of(sim) as client:
        ids = [client.send("public/test") for _ in range(3)]
        assert [client.next(lambda m: "id" in m)["id"] for _ in ids] == ids
