"""The composite rules with numbers worked by hand."""

from __future__ import annotations

import pytest

from hedgepipe.index_composite import Composite, SourcePrice, combine, median

NOW = 1_000_000_000_000_000_000
S = 1_000_000_000  # ns per second


def at(price: float, age_s: float = 0.0) -> SourcePrice:
    return SourcePrice(price, NOW - int(age_s * S))


def test_median_odd_and_even():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5  # (2 + 3) / 2
    with pytest.raises(ValueError):
        median([])


def test_three_agreeing_sources_give_their_median():
    prices = {"deribit": at(100.0), "kraken": at(100.2), "bitstamp": at(99.9)}
    # sorted 99.9, 100.0, 100.2 -> 100.0; every one within 0.5% of it
    assert combine(prices, NOW, 30, 0.005) == Composite(
        100.0, ("bitstamp", "deribit", "kraken"), (), ())


def test_an_outlier_is_dropped():
    prices = {"deribit": at(100.0), "kraken": at(100.4), "bitstamp": at(99.8), "bad": at(101.0)}
    # reference = median(99.8, 100.0, 100.4, 101.0) = 100.2; bad is 0.798% away (> 0.5%),
    # the others 0.4%, 0.2%, 0.2%; the composite is median(99.8, 100.0, 100.4) = 100.0
    result = combine(prices, NOW, 30, 0.005)
    assert result == Composite(100.0, ("bitstamp", "deribit", "kraken"), (), ("bad",))


def test_a_stale_source_is_dropped():
    prices = {"deribit": at(100.0, age_s=1), "kraken": at(102.0, age_s=31), "bitstamp": at(100.4)}
    # kraken is 31 s old with max age 30: out; median(100.0, 100.4) = 100.2, both within 0.2%
    result = combine(prices, NOW, 30, 0.005)
    assert result == Composite(100.2, ("bitstamp", "deribit"), ("kraken",), ())


def test_age_exactly_at_the_limit_is_still_fresh():
    assert combine({"a": at(50.0, age_s=30)}, NOW, 30, 0.005).used == ("a",)


def test_one_source_only():
    assert combine({"deribit": at(37000.0)}, NOW, 30, 0.005) == Composite(37000.0, ("deribit",), (), ())


def test_no_sources_or_all_stale():
    assert combine({}, NOW, 30, 0.005) == Composite(None, (), (), ())
    assert combine({"a": at(1.0, age_s=60)}, NOW, 30, 0.005) == Composite(None, (), ("a",), ())


def test_two_sources_that_disagree_give_no_price():
    # reference = 101.0; each is 0.99% away (> 0.5%): no telling which is wrong
    result = combine({"a": at(100.0), "b": at(102.0)}, NOW, 30, 0.005)
    assert result == Composite(None, (), (), ("a", "b"))
