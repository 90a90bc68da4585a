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


def test_followed_instruments_are_republished_freshly_stamped_for_late_subscribers():
    clock = FakeClock(NOW_MS * 1_000_000)
    svc = FeedDeribitService(FeedDeribitConfig(kinds=["future"], republish_instruments_s=60), clock)
    assert [t.period_s for t in svc.timers() if t.name == "republish"] == [5.0]
    assert svc._republish(0) == []                           # nothing listed yet
    a, b = future("BTC-29DEC23", NOW_MS + 40 * 86_400_000), future("BTC-29MAR24", NOW_MS + 130 * 86_400_000)
    first = listing(svc, [a, b])
    first[0][1].ts_recv = first[0][1].ts_event = 123  # as the runtime stamps what it published
    again = svc._republish(0)                                # the first one: at the next check
    assert [t for t, _ in again] == [t for t, _ in first]
    assert all(m.ts_recv == 0 and m.ts_event == 0 and m.active for _, m in again)  # stamped anew
    assert svc.stats["instruments_republished"] == 2
    clock.advance(59.0)
    assert svc._republish(0) == []                           # then once per period
    clock.advance(1.0)
    listing(svc, [b])                                        # retired: no longer republished
    assert [t for t, _ in svc._republish(0)] == ["md.instrument.deribit.BTC-29MAR24"]
    off = FeedDeribitService(FeedDeribitConfig(republish_instruments_s=0), FakeClock(0))
    assert "republish" not in [t.name for t in off.timers()]
