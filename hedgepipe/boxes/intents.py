"""From an opportunity's event to frames: its ``signal.box`` and, when traded, its intents.

The hedge is an order on the expiry's future (or the perpetual when the expiry has none) of
``|b| x size x F`` USD, rounded to the future's contract size (10 USD on BTC; a linear future
trades ``|b| x size`` coin): the rounding is the hedge's only residual (half a contract). Intents of one structure
form a group sent in order: the option leg whose displayed amount is thinnest goes first (it
is the one most likely to be gone), the hedge last (futures books are deep, and the hedge
follows what the options filled).
"""

from __future__ import annotations

import math
from typing import Callable

from .. import messages as m
from .detail import BUY, SELL, Structure
from .market import Expiry, Quote
from .opportunities import Event, OpenOpportunity

#: Deribit order labels are at most 64 characters.
MAX_LABEL = 64
#: Quotes remembered as partly taken by our groups before the memory starts again.
_MAX_TAKEN = 100_000
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _BASE36[r] + out
        if not n:
            return out


def hedge_leg(s: Structure, quote: Quote | None, size: float | None = None) -> m.SignalLeg | None:
    """The hedge order of ``s`` for ``size`` (default its whole size), or None (nothing to
    hedge, or under one contract). An inverse future or perpetual trades USD notional in
    ``contract_size`` steps, a linear one coin."""
    size = s.size if size is None else size
    if quote is None or s.hedge_btc == 0 or size <= 0:
        return None
    side = BUY if s.hedge_btc > 0 else SELL
    price = quote.ask if side == BUY else quote.bid
    if not (price > 0 and math.isfinite(price)):
        return None  # the gates refuse an expiry with nothing quoted to hedge on
    coin = abs(s.hedge_btc) * size
    contracts = round((coin * price if quote.inverse else coin) / quote.contract_size)
    if contracts <= 0:
        return None
    kind = "perpetual" if quote.name.endswith("PERPETUAL") else "future"
    return m.SignalLeg(instrument=quote.name, side=side, price=price,
                       amount=round(contracts * quote.contract_size, 10), kind=kind)


def signal_of(ev: Event, hedge: Quote | None) -> tuple[str, m.BoxSignal]:
    opp, s = ev.opp, ev.structure
    chain = opp.expiry.chain
    key = chain.key
    leg = hedge_leg(s, hedge)
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
        self.groups_sent = 0
        #: (instrument, side, price) -> amount our groups took at that price
        self._taken: dict[tuple[str, str, float], float] = {}

    def groups(self, opened: list[OpenOpportunity],
               hedge_of: Callable[[Expiry], Quote | None]) -> tuple[list[tuple[str, m.OrderIntent]], int]:
        """Intent groups for opportunities just opened, and how many were not sent.

        Structures often share a leg (every box with a mispriced strike buys it). What the
        groups already sent take of a quote (same instrument, side and price) is not offered
        again, and opportunities opened together share what is left by total edge, best first:
        the groups never ask for more than is shown. A group cut below one lot is not sent.
        """
        out, cut = [], 0
        for opp in sorted(opened, key=lambda o: -o.structure.total_usd):
            s, lot = opp.structure, opp.expiry.chain.lot
            keys = [(x.instrument, x.side, x.price) for x in s.legs]
            shown = [x.displayed - self._taken.get(key, 0.0) for x, key in zip(s.legs, keys)]
            size = math.floor(min([s.size, *shown]) / lot + 1e-9) * lot
            if size < lot * (1 - 1e-9):
                cut += 1
                continue
            if len(self._taken) > _MAX_TAKEN:
                self._taken.clear()  # old prices; a quote seen again is offered afresh
            for key in keys:
                self._taken[key] = self._taken.get(key, 0.0) + size
            group = self.group(opp, hedge_of(opp.expiry), round(size, 10))
            opp.group_id = group[0][1].group_id
            out += group
        return out, cut

    def group(self, opp: OpenOpportunity, hedge: Quote | None, size: float) -> list[tuple[str, m.OrderIntent]]:
        """One structure's intents for ``size`` contracts: legs thinnest first, the hedge last."""
        s = opp.structure
        venue = opp.expiry.chain.key.venue
        # The thinnest displayed amount first: that leg is the likeliest to be gone.
        orders = [(x.instrument, x.side, x.price, size) for x in sorted(s.legs, key=lambda x: x.displayed)]
        leg = hedge_leg(s, hedge, size)
        if leg is not None:
            orders.append((leg.instrument, leg.side, leg.price, leg.amount))
        self.groups_sent += 1
        group_id = f"bx-{self.run_tag}-{base36(self.groups_sent)}"
        out = []
        for n, (instrument, side, price, amount) in enumerate(orders):
            out.append((m.intent_topic(venue, instrument), m.OrderIntent(
                intent_id=f"{group_id}-{n}", group_id=group_id, group_size=len(orders), leg=n,
                strategy=self.strategy, opp_id=opp.opp_id, venue=venue, instrument=instrument,
                side=side, amount=amount, price=price, time_in_force=self.time_in_force)))
        return out
