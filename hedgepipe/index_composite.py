"""A robust composite price from several sources: the median of the fresh ones, outliers out.

Pure functions of their arguments (no clock, no I/O), so every rule is tested with numbers
worked by hand in tests/test_index_composite.py.

The rules, in order:

1. a source whose last price is older than ``max_age_s`` is *stale* and left out;
2. the median of the fresh prices is the reference;
3. a fresh source further than ``max_distance`` (relative, 0.005 = 0.5%) from the reference
   is an *outlier* and left out;
4. the composite is the median of what is left, and says how many sources it used.

With two sources the reference is their mean, so two sources that disagree by more than
``2 * max_distance`` are both outliers and there is no composite: with two witnesses that
disagree there is no telling which one is wrong, and no price is better than a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True, slots=True)
class SourcePrice:
    price: float
    #: When we received it (wall clock ns): the age rule uses our clock, not the venue's.
    ts_recv: int


@dataclass(frozen=True, slots=True)
class Composite:
    #: None when no source survived the rules.
    price: float | None
    used: tuple[str, ...]
    stale: tuple[str, ...]
    outliers: tuple[str, ...]


def median(values: list[float]) -> float:
    """The middle value; the mean of the two middle values for an even count."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def combine(prices: Mapping[str, SourcePrice], now_ns: int, max_age_s: float,
            max_distance: float) -> Composite:
    """Apply the rules above to the latest price of each source."""
    max_age_ns = int(max_age_s * 1e9)
    fresh = {name: p.price for name, p in prices.items() if now_ns - p.ts_recv <= max_age_ns}
    stale = tuple(sorted(name for name in prices if name not in fresh))
    if not fresh:
        return Composite(None, (), stale, ())
    reference = median(list(fresh.values()))
    kept = {name: price for name, price in fresh.items()
            if abs(price / reference - 1.0) <= max_distance}
    outliers = tuple(sorted(name for name in fresh if name not in kept))
    if not kept:
        return Composite(None, (), stale, outliers)
    return Composite(median(list(kept.values())), tuple(sorted(kept)), stale, outliers)
