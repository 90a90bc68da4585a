"""From an opportunity's event to frames: its ``signal.box`` and, when traded, its intents.

The hedge is an order on the expiry's future (or the perpetual when the expiry has none) of
``|b| x size x contract size x F`` USD, rounded to the future's contract size (10 USD on BTC):
the rounding is the hedge's only residual (at most half a contract). Intents of one structure
form a group sent in order: the option leg whose displayed amount is thinnest goes first (it
is the one most likely to be gone), the hedge last (futures books are deep, and the hedge
follows what the options filled).
"""

from __future__ import annotations

import math

from .. import messages as m
from .detail import BUY, SELL, Structure
from .market import Quote
from .opportunities import Event, OpenOpportunity

#: Deribit order labels are at most 64 characters.
MAX_LABEL = 64
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _BASE36[r] + out
        if not n:
            return out


def hedge_leg(s: Structure, contract_size: float, quote: Quote | None) -> m.SignalLeg | None:
    """The hedge order of ``s`` for its whole size, or None (linear box, or under one contract)."""
    if quote is None or s.hedge_btc == 0 or s.size <= 0:
        return None
    side = BUY if s.hedge_btc > 0 else SELL
    price = quote.ask if side == BUY else quote.bid
    if not (price > 0 and math.isfinite(price)):
        return None  # the gates refuse an expiry with nothing quoted to hedge on
    contracts = round(abs(s.hedge_btc) * s.size * contract_size * price / quote.contract_size)
    if contracts <= 0:
        return None
    kind = "perpetual" if quote.name.endswith("PERPETUAL") else "future"
    return m.SignalLeg(instrument=quote.name, side=side, price=price,
                       amount=contracts * quote.contract_size, kind=kind)


def signal_of(ev: Event, hedge: Quote | None) -> tuple[str, m.BoxSignal]:
    opp, s = ev.opp, ev.structure
    chain = opp.expiry.chain
    key = chain.key
    leg = hedge_leg(s, chain.contract_size, hedge)
    msg = m.BoxSignal(
        opp_id=opp.opp_id, event=ev.event, reason=ev.reason, venue=key.venue, base=key.base,
        expiry=chain.code, expiry_ns=key.expiry_ns, structure=s.side, k1=s.k1, k2=s.k2,
        legs=[m.SignalLeg(instrument=x.instrument, side=x.side, price=x.price, amount=s.size)
              for x in s.legs],
        hedge=leg, hedge_exact=opp.expiry.future is not None or s.hedge_btc == 0,
        edge_usd=s.edge_usd, size=s.size, total_usd=s.total_usd, capital_usd=s.capital_usd * s.size,
        annual_rate=s.annual_rate, t_years=s.t_years, forward=s.hedge_price or None,
        option_fees=s.option_fees, hedge_fee_usd=s.hedge_fee_usd * s.size, group_id=opp.group_id)
    return m.signal_topic("box", key.venue, opp.opp_id), msg


class IntentBuilder:
    """Makes intent groups with ids unique across restarts: ``bx-<start ms>-<n>-<leg>``."""

    def __init__(self, strategy: str, started_ns: int, time_in_force: str):
        self.strategy = strategy
        self.run_tag = base36(started_ns // 1_000_000)
        self.time_in_force = time_in_force
        self.groups = 0

    def group(self, opp: OpenOpportunity, hedge: Quote | None) -> list[tuple[str, m.OrderIntent]]:
        s = opp.structure
        chain = opp.expiry.chain
        venue = chain.key.venue
        # The thinnest displayed amount first: that leg is the likeliest to be gone.
        orders = [(x.instrument, x.side, x.price, s.size) for x in sorted(s.legs, key=lambda x: x.displayed)]
        leg = hedge_leg(s, chain.contract_size, hedge)
        if leg is not None:
            orders.append((leg.instrument, leg.side, leg.price, leg.amount))
        self.groups += 1
        group_id = f"bx-{self.run_tag}-{base36(self.groups)}"
        out = []
        for n, (instrument, side, price, amount) in enumerate(orders):
            intent_id = f"{group_id}-{n}"
            out.append((m.intent_topic(venue, instrument), m.OrderIntent(
                intent_id=intent_id, group_id=group_id, group_size=len(orders), leg=n,
                strategy=self.strategy, opp_id=opp.opp_id, venue=venue, instrument=instrument,
                side=side, amount=amount, price=price, time_in_force=self.time_in_force)))
        return out
