"""--chain: the real 2020-05-21 BTC chain, priced with Black-76 and animated."""

from __future__ import annotations

import pytest

from hedgepipe.sim import black76
from hedgepipe.sim.chain import ChainMarket, load_chain

from ._sim_helpers import client_of, running


@pytest.fixture(scope="module")
def csv_path(shared_data):
    return shared_data / "deribit" / "btc_option_chain_2020-05-21.csv"


@pytest.fixture(scope="module")
def rows(csv_path):
    return load_chain(csv_path)


def at_chain_time(csv_path, **kw) -> ChainMarket:
    """A market whose clock starts at the chain's own time: names and expiries as recorded."""
    rows = load_chain(csv_path)
    return ChainMarket(csv_path, seed=5, start_ms=sorted(r["timestamp"] for r in rows)[len(rows) // 2], **kw)


def test_black76_on_each_rows_own_forward_and_iv_reproduces_deribits_mark(rows):
    assert len(rows) == 326
    for row in rows:
        t_years = (row["expiry"] - row["timestamp"]) / black76.YEAR_MS
        price = black76.price_inverse(row["underlying_price"], row["strike"], t_years, row["mark_iv"] / 100.0,
                                      row["option_type"] == "call")
        assert price == pytest.approx(row["mark_price"], abs=3e-4), row["instrument_name"]


def test_at_start_marks_match_the_csv_and_books_are_the_recorded_books(csv_path, rows):
    market = at_chain_time(csv_path)
    assert market.shift_ms == 0
    assert len(market.instruments("BTC", "option")) == 326
    futures = {i["instrument_name"] for i in market.instruments("BTC", "future")}
    assert futures == {"BTC-PERPETUAL", "BTC-26JUN20", "BTC-25SEP20", "BTC-25DEC20"}
    for row in rows:
        book = market.order_book(row["instrument_name"], None)
        # one forward per expiry while the rows were pulled over 160 s: a small difference
        assert book["mark_price"] == pytest.approx(row["mark_price"], abs=2e-3), row["instrument_name"]
        assert book["mark_iv"] == row["mark_iv"]
        assert book["bids"] == [list(level) for level in row["bids"]]
        assert book["asks"] == [list(level) for level in row["asks"]]
        assert book["underlying_index"] == row["underlying_index"]


def test_animated_books_stay_on_tick_and_uncrossed(csv_path):
    market = at_chain_time(csv_path)
    start = market.index_price("btc_usd")["index_price"]
    for _ in range(100):
        market.step()
    assert market.index_price("btc_usd")["index_price"] != start
    for spec in market.instruments("BTC"):
        book = market.order_book(spec["instrument_name"], None)
        for price, _ in book["bids"] + book["asks"]:
            assert black76.on_tick(price, spec["tick_size"], spec["tick_size_steps"])
        if book["bids"] and book["asks"]:
            assert book["bids"][0][0] < book["asks"][0][0], spec["instrument_name"]


def test_redated_chain_lies_ahead_of_the_clock_and_is_served(csv_path):
    market = ChainMarket(csv_path, seed=5)
    options = market.instruments("BTC", "option")
    assert len(options) == 326 and market.shift_ms > 0
    assert min(o["expiration_timestamp"] for o in options) > market.now_ms
    with running(market) as sim, client_of(sim) as client:
        listed = client.result("public/get_instruments", {"currency": "BTC", "kind": "option"})
        assert len(listed) == 326
        name = listed[0]["instrument_name"]
        assert client.result("public/ticker", {"instrument_name": name})["mark_iv"] > 0


def test_mispricing_moves_one_leg_by_the_stated_size(csv_path, caplog):
    market = at_chain_time(csv_path, mispricing=0.01)
    for _ in range(2000):
        market.step()
        if market._mispriced:
            break
    leg, _ = market._mispriced
    assert abs(leg.offset) == 0.01
    assert any("mispricing injected" in r.getMessage() and leg.name in r.getMessage() for r in caplog.records)
    fair = market.fair(leg)
    book = market.order_book(leg.name, None)
    offset, leg.offset = leg.offset, 0.0
    bids, asks = market.target_levels(leg, fair)  # where it would quote without the fault
    assert book["asks"][0][0] - min(asks) == pytest.approx(offset, abs=0.0005)
    assert book["bids"][0][0] - max(bids) == pytest.approx(offset, abs=0.0005)
