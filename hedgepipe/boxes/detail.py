"""One structure spelled out: its legs, fees, hedge and edge (for signals and --scan-chain).

The edge comes from :class:`~hedgepipe.boxes.chain.ExpiryChain` itself (one formula); this
module only lists what makes it up, so a reader can redo the sum by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .chain import CALL, CONVERSION, LONG, PUT, REVERSAL, SHORT, ExpiryChain

YEAR_NS = 365 * 86_400 * 10**9
BUY, SELL = "buy", "sell"
#: The option legs of a synthetic: long = buy the call, sell the put; short = the opposite.
_SYNTHETIC = {True: ((CALL, BUY), (PUT, SELL)), False: ((CALL, SELL), (PUT, BUY))}
#: Per side: (synthetic at the first strike is long?, at the second?) (None: no second strike).
_SHAPE = {LONG: (True, False), SHORT: (False, True), REVERSAL: (True, None), CONVERSION: (False, None)}


@dataclass(frozen=True)
class Leg:
    instrument: str
    side: str
    price: float
    #: The quote's displayed amount (contracts).
    displayed: float
    #: Option fee per contract at this price (price unit).
    fee: float


@dataclass(frozen=True)
class Structure:
    side: str
    k1: float
    k2: float | None
    legs: tuple[Leg, ...]
    #: Option premium per contract, + paid / - received, before fees (option price unit).
    premium: float
    option_fees: float
    #: BTC bought forward per contract to lock the USD result (negative: sold); 0 for linear boxes.
    hedge_btc: float
    #: The forward price the hedge trades at (ask when buying, bid when selling).
    hedge_price: float
    #: The hedge's USD notional and its fee, per contract.
    hedge_usd: float
    hedge_fee_usd: float
    #: USD at expiry per contract, after option fees and the hedge fee.
    edge_usd: float
    size: float
    capital_usd: float
    #: edge / capital, annualised on the time to expiry; None when the capital is not positive.
    #: (capital_usd is 0 for a long box that pays to take.)
    annual_rate: float | None
    t_years: float

    @property
    def total_usd(self) -> float:
        return self.edge_usd * self.size


def describe(chain: ExpiryChain, side: str, i: int, j: int, hedge_rate: float, now_ns: int) -> Structure:
    """The structure ``side`` on strikes i (< j) of ``chain``; j is ignored for parity trades."""
    first, second = _SHAPE[side]
    idx_i = np.array([i])
    if second is None:
        ev = chain.parity(side, hedge_rate, idx_i)
    else:
        ev = chain.boxes(side, idx_i, np.array([j]), hedge_rate)
    legs = _legs(chain, i, first) + (() if second is None else _legs(chain, j, second))
    sign = {BUY: 1.0, SELL: -1.0}
    premium = sum(sign[leg.side] * leg.price for leg in legs)
    fees = sum(leg.fee for leg in legs)
    b = float(ev.b[0])
    size = float(ev.size[0])
    hedge_price = chain.forward_ask if b >= 0 else chain.forward_bid
    if not math.isfinite(hedge_price):
        hedge_price = 0.0  # a linear box with no forward known: it needs none
    hedge_usd = abs(b) * hedge_price if b else 0.0
    edge = float(ev.edge[0])
    capital = float(ev.capital[0])
    if not math.isfinite(capital):
        capital = 0.0  # a long box paid to take: no capital used
    t_years = (chain.key.expiry_ns - now_ns) / YEAR_NS
    rate = edge / capital / t_years if capital > 0 and t_years > 0 else None
    return Structure(side=side, k1=float(chain.strikes[i]),
                     k2=None if second is None else float(chain.strikes[j]), legs=legs,
                     premium=premium, option_fees=fees, hedge_btc=b, hedge_price=hedge_price,
                     hedge_usd=hedge_usd, hedge_fee_usd=hedge_usd * hedge_rate, edge_usd=edge, size=size,
                     capital_usd=capital, annual_rate=rate if rate is not None and math.isfinite(rate) else None,
                     t_years=t_years)


def _legs(chain: ExpiryChain, k: int, synthetic_long: bool) -> tuple[Leg, ...]:
    legs = []
    for option, side in _SYNTHETIC[synthetic_long]:
        bid, bid_amount, ask, ask_amount, _ = chain.quotes[option][k]
        price, shown = (ask, ask_amount) if side == BUY else (bid, bid_amount)
        price = float(price)
        legs.append(Leg(instrument=chain.names[option][k] or "", side=side, price=price,
                        displayed=float(shown), fee=chain.fees.option_fee(price, chain.fee_underlying)))
    return tuple(legs)
