"""SecurityList, MarketDataRequest and books from W/X, with Deribit's tag layout."""

from __future__ import annotations

import simplefix

from hedgepipe.venues.deribit.fix_marketdata import (FixBooks, market_data_request, parse_security_list,
                                                      security_list_request)
from tests.test_fix_session import counterparty, logged_on, sent

NAME = "BTC-25DEC20-9000-C"


def parse(raw: bytes) -> simplefix.FixMessage:
    parser = simplefix.FixParser()
    parser.append_buffer(raw)
    return parser.get_message()


def snapshot(name=NAME, bids=((0.1, 2.0), (0.105, 1.5)), asks=((0.11, 3.0),), seq=2):
    entries = [(268, len(bids) + len(asks))]
    for kind, levels in ((0, bids), (1, asks)):
        for price, amount in levels:
            entries += [(269, kind), (270, price), (271, amount)]
    return parse(counterparty(seq, "W", [(55, name), (262, "md1")] + entries))


def incremental(updates, name=NAME, seq=3):
    fields = [(55, name), (268, len(updates))]
    for action, kind, price, amount in updates:
        fields += [(279, action), (269, kind), (270, price), (271, amount)]
    return parse(counterparty(seq, "X", fields))


def test_requests_go_out_through_the_session():
    session, _ = logged_on()
    session.send(*security_list_request("sl1", "BTC"))
    session.send(*market_data_request("md1", [NAME, "BTC-PERPETUAL"], depth=10))
    sl, md = sent(session)
    assert (sl.get(35), sl.get(320), sl.get(559), sl.get(15)) == (b"x", b"sl1", b"4", b"BTC")
    assert (md.get(35), md.get(263), md.get(265), md.get(264)) == (b"V", b"1", b"1", b"10")
    assert [v for t, v in md.pairs if t == b"55"] == [NAME.encode(), b"BTC-PERPETUAL"]
    assert [v for t, v in md.pairs if t == b"269"] == [b"0", b"1", b"2"]


def test_security_list_parses_instruments():
    m = parse(counterparty(2, "y", [
        (320, "sl1"), (146, 2),
        (55, NAME), (167, "OPT"), (201, 1), (202, 9000), (15, "BTC"), (541, "20201225"),
        (969, 0.0005), (562, 0.1), (231, 1),
        (55, "BTC-PERPETUAL"), (167, "FUT"), (15, "BTC"), (969, 0.5), (562, 10)]))
    option, perp = parse_security_list(m)
    assert option == {"instrument_name": NAME, "kind": "option", "base_currency": "BTC",
                      "tick_size": 0.0005, "min_trade_amount": 0.1, "contract_size": 1.0, "expiry": "20201225",
                      "strike": 9000.0, "option_type": "call"}
    assert perp["instrument_name"] == "BTC-PERPETUAL" and perp["kind"] == "future" and perp["tick_size"] == 0.5


def test_snapshot_then_new_change_delete():
    books = FixBooks()
    changed, _ = books.apply(snapshot())
    assert changed == {NAME}
    assert books.book(NAME) == {"instrument": NAME, "bids": [(0.105, 1.5), (0.1, 2.0)], "asks": [(0.11, 3.0)]}
    changed, trades = books.apply(incremental([(0, 1, 0.115, 4.0), (1, 0, 0.1, 7.0), (2, 0, 0.105, 0),
                                               (0, 2, 0.11, 0.3)]))
    assert changed == {NAME}
    assert books.book(NAME) == {"instrument": NAME, "bids": [(0.1, 7.0)], "asks": [(0.11, 3.0), (0.115, 4.0)]}
    assert trades == [{"instrument": NAME, "price": 0.11, "amount": 0.3, "side": None}]


def test_delete_of_a_missing_level_marks_the_book_stale_until_a_new_snapshot():
    books = FixBooks()
    books.apply(snapshot())
    changed, _ = books.apply(incremental([(2, 1, 0.5, 0)]))
    assert changed == set() and books.book(NAME) is None and books.counters["book_stale"] == 1
    books.apply(incremental([(0, 0, 0.09, 1.0)]))
    assert books.book(NAME) is None  # nothing is published from a broken chain
    books.apply(snapshot(bids=((0.095, 1.0),), asks=()))
    assert books.book(NAME) == {"instrument": NAME, "bids": [(0.095, 1.0)], "asks": []}


def test_update_without_snapshot_and_bad_price_are_counted():
    books = FixBooks()
    books.apply(incremental([(0, 0, 0.1, 1.0)], name="BTC-PERPETUAL"))
    assert books.counters["book_stale"] == 1 and books.book("BTC-PERPETUAL") is None
    books.apply(snapshot())
    m = parse(counterparty(4, "X", [(55, NAME), (268, 1), (279, 0), (269, 0), (270, "abc"), (271, 1)]))
    assert books.apply(m) == (set(), []) and books.counters["bad_entry"] == 1
