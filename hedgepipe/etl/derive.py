"""Derived fields of clean books and tickers, from the best bid and ask.

- ``mid`` = (bid + ask) / 2
- ``spread`` = ask - bid (absolute, in price units: BTC/ETH for options, USD for futures)
- ``spread_bps`` = spread / mid * 10 000
- ``microprice`` = (bid * ask_amount + ask * bid_amount) / (bid_amount + ask_amount): the mid
  weighted towards the side with less size (where the next trade is likelier to move the price)
- ``mid_iv`` = (bid_iv + ask_iv) / 2 when both IVs are present and positive (Deribit reports 0
  for a bid below the price of zero volatility: that is "no IV", not an IV of 0)

Each is None when it cannot be computed (a side is empty, an amount is missing).
"""

from __future__ import annotations

NO_FIELDS = (None, None, None, None)


def top_fields(bid: float | None, bid_amount: float | None, ask: float | None,
               ask_amount: float | None) -> tuple:
    """(mid, spread, spread_bps, microprice) from the best levels; Nones when a side is empty.

    Assumes values already checked: finite, prices and amounts > 0, bid < ask.
    """
    if bid is None or ask is None:
        return NO_FIELDS
    mid = (bid + ask) * 0.5
    spread = ask - bid
    micro = (None if bid_amount is None or ask_amount is None
             else (bid * ask_amount + ask * bid_amount) / (bid_amount + ask_amount))
    return mid, spread, spread / mid * 1e4, micro


def mid_iv(bid_iv: float | None, ask_iv: float | None) -> float | None:
    if bid_iv is None or ask_iv is None or bid_iv <= 0.0 or ask_iv <= 0.0:
        return None
    return (bid_iv + ask_iv) * 0.5
