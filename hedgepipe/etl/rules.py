"""Value rules on plain values: finite positive prices and sizes, level order, prices on tick.

Each check returns None when the value is good, else ``(reason, detail)``: ``reason`` is the
rule's short name (one of the constants below; the daemon counts ``rejected_<reason>``) and
``detail`` says what was wrong, for the one log line per kind. Written for the hot path: one
pass over the levels does every check, with no allocation unless something is wrong.
"""

from __future__ import annotations

import math

from hedgepipe.venues.deribit.marketdata import tick_for

BAD_VALUE = "bad_value"
OFF_TICK = "off_tick"

INF = math.inf


def levels_problem(levels, descending: bool, tick: float, steps, tolerance: float | None
                   ) -> tuple[str, str] | None:
    """The first bad level of one book side, or None.

    A level is bad when its price or amount is NaN, infinite, zero or negative, or when the
    side is not strictly ordered best first (bids descending, asks ascending: the best level
    is then the first, which the crossed check and the derived fields rely on). With a
    ``tolerance`` (a fraction of a tick), a price more than that off the tick grid (``tick`` with
    the price-dependent ``steps``, see :func:`tick_for`) is off tick; None skips the tick check.
    """
    if steps or tolerance is None:
        return _levels_problem(levels, descending, tick, steps, tolerance)
    # The usual case (a flat tick, ticks checked), in one tight loop per side: the chained
    # comparisons are False for NaN, so each one refuses NaN, inf, 0, negatives and disorder.
    # On a problem the general loop below finds what it was, for the log line.
    upper = 1.0 - tolerance
    if descending:
        prev = INF
        for price, amount in levels:
            if not (0.0 < price < prev and 0.0 < amount < INF) \
                    or tolerance < (price / tick) % 1.0 < upper:
                return _levels_problem(levels, descending, tick, steps, tolerance)
            prev = price
    else:
        prev = 0.0
        for price, amount in levels:
            if not (prev < price < INF and 0.0 < amount < INF) \
                    or tolerance < (price / tick) % 1.0 < upper:
                return _levels_problem(levels, descending, tick, steps, tolerance)
            prev = price
    return None


def _levels_problem(levels, descending: bool, tick: float, steps, tolerance: float | None
                    ) -> tuple[str, str] | None:
    prev = INF if descending else 0.0
    upper = 1.0 - (tolerance or 0.0)
    for price, amount in levels:
        if not (0.0 < price < INF and 0.0 < amount < INF):
            return BAD_VALUE, f"level ({price!r}, {amount!r})"
        if (price >= prev) if descending else (price <= prev):
            return BAD_VALUE, (f"{'bids' if descending else 'asks'} not strictly "
                               f"{'descending' if descending else 'ascending'} at {price!r}")
        prev = price
        if tolerance is not None:
            # ticks % 1.0 is in [0, 1): near 0 or near 1 is on the grid, up to float noise.
            t = tick_for(price, tick, steps) if steps else tick
            if tolerance < (price / t) % 1.0 < upper:
                return OFF_TICK, f"price {price!r} not on tick {t!r}"
    return None


def price_problem(price: float, what: str, tick: float, steps, tolerance: float | None
                  ) -> tuple[str, str] | None:
    """A single price (a trade's, a ticker's bid or ask): finite and positive, and on tick."""
    if not 0.0 < price < INF:
        return BAD_VALUE, f"{what} {price!r}"
    if tolerance is not None:
        t = tick_for(price, tick, steps) if steps else tick
        if tolerance < (price / t) % 1.0 < 1.0 - tolerance:
            return OFF_TICK, f"{what} {price!r} not on tick {t!r}"
    return None


def positive_problem(value, what: str) -> tuple[str, str] | None:
    """A size or price that must be finite and > 0 when present (None = absent, legitimate)."""
    if value is None or 0.0 < value < INF:
        return None
    return BAD_VALUE, f"{what} {value!r}"


def all_finite(values) -> bool:
    """True when every value that is not None is finite.

    One C-level pass instead of a Python loop: the sum of the values is NaN or infinite when
    one of them is (inf + -inf is NaN; only absurd values could overflow a finite sum to inf,
    and those are refused too). ``filter(None, ...)`` drops the Nones (and zeros: finite).
    """
    total = sum(filter(None, values), 0.0)
    return total - total == 0.0


#: A ticker's floats other than bid/ask and their amounts: finite when present.
TICKER_FLOATS = ("last", "mark_price", "mark_iv", "bid_iv", "ask_iv", "underlying_price",
                 "index_price", "interest_rate", "open_interest", "delta", "gamma", "vega",
                 "theta", "rho")


def ticker_problem(msg, tick: float, steps, tolerance: float | None) -> tuple[str, str] | None:
    """A ticker's bid and ask (positive, finite, on tick) and amounts (positive, finite), each
    when present; every other float finite when present (greeks may be negative)."""
    bid, ask = msg.bid, msg.ask
    problem = ((bid is not None and price_problem(bid, "bid", tick, steps, tolerance))
               or (ask is not None and price_problem(ask, "ask", tick, steps, tolerance))
               or positive_problem(msg.bid_amount, "bid_amount")
               or positive_problem(msg.ask_amount, "ask_amount"))
    if problem:
        return problem
    if all_finite((msg.last, msg.mark_price, msg.mark_iv, msg.bid_iv, msg.ask_iv,
                   msg.underlying_price, msg.index_price, msg.interest_rate, msg.open_interest,
                   msg.delta, msg.gamma, msg.vega, msg.theta, msg.rho)):
        return None
    bad = [f"{f} {getattr(msg, f)!r}" for f in TICKER_FLOATS if not all_finite((getattr(msg, f),))]
    return BAD_VALUE, "not finite: " + ", ".join(bad)


def trade_problem(msg, tick: float, steps, tolerance: float | None) -> tuple[str, str] | None:
    """A trade's price (positive, finite, on tick) and amount (positive, finite); its
    ``index_price`` and ``iv`` finite when present."""
    problem = (price_problem(msg.price, "price", tick, steps, tolerance)
               or positive_problem(msg.amount, "amount"))
    if problem is None and not all_finite((msg.index_price, msg.iv)):
        problem = BAD_VALUE, f"index_price {msg.index_price!r} iv {msg.iv!r} not finite"
    return problem
