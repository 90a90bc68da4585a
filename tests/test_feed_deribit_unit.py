"""FeedDeribitService's own rules, with events in and frames out (no sockets)."""

from hedgepipe.clock import FakeClock
from hedgepipe.daemons.feed_deribit import FeedDeribitConfig, FeedDeribitService
from hedgepipe.venues.deribit.jsonrpc import Event

NOW_MS = 1_700_000_000_000


def future(name: str, expiry_ms: int) -> dict:
    return {"tick_size": 2.5, "taker_commission": 0.0005, "settlement_period": "month",
            "quote_currency": "USD", "min_trade_amount": 10.0, "maker_commission": 0.0,
            "kind": "future", "is_active": True, "instrument_name": name,
            "expiration_timestamp": expiry_ms, "creation_timestamp": NOW_MS - 86_400_000,
            "contract_size": 10.0, "base_currency": "BTC"}


def answer(svc, event_kind="result", data=None):
    """Answer the oldest request the service is waiting for."""
    rid = min(svc._requests)
    return list(svc.on_source(svc.session, Event(event_kind, NOW_MS * 1_000_000,
                                                 request_id=rid, data=data)))


def listing(svc, instruments):
    svc._refresh(0)
    answer(svc, data=NOW_MS)                               # public/get_time
    answer(svc, data={"index_price": 100_000.0})           # public/get_index_price
    return answer(svc, data=instruments)                   # public/get_instruments


def test_a_listing_publishes_instruments_and_a_delisting_retires_them():
    svc = FeedDeribitService(FeedDeribitConfig(kinds=["future"]), FakeClock(NOW_MS * 1_000_000))
    a, b = future("BTC-29DEC23", NOW_MS + 40 * 86_400_000), future("BTC-29MAR24", NOW_MS + 130 * 86_400_000)
    out = listing(svc, [a, b])
    assert [(t, m.active) for t, m in out] == [("md.instrument.deribit.BTC-29DEC23", True),
                                                ("md.instrument.deribit.BTC-29MAR24", True)]
    assert "book.BTC-29DEC23.100ms" in svc.session._channels
    assert listing(svc, [a, b]) == []                       # unchanged: nothing published again
    out = listing(svc, [b])                                 # BTC-29DEC23 expired or delisted
    assert [(t, m.active) for t, m in out] == [("md.instrument.deribit.BTC-29DEC23", False)]
    assert "book.BTC-29DEC23.100ms" not in svc.session._channels
    assert svc.stats["instruments_retired"] == 1 and svc.stats["instruments"] == 1


def test_an_instrument_past_expiry_on_the_venue_clock_is_not_followed():
    svc = FeedDeribitService(FeedDeribitConfig(kinds=["future"]), FakeClock(NOW_MS * 1_000_000))
    expired = future("BTC-10NOV23", NOW_MS - 86_400_000)
    assert listing(svc, [expired]) == []
    assert svc.stats["instruments_dropped_expired"] == 1


def test_a_venue_error_answer_is_counted_and_forgotten():
    svc = FeedDeribitService(FeedDeribitConfig(), FakeClock(NOW_MS * 1_000_000))
    svc._refresh(0)
    waiting = len(svc._requests)
    assert answer(svc, event_kind="error") == []
    assert len(svc._requests) == waiting - 1 and svc.stats["venue_errors"] == 1
