"""What strategy-box knows of the market: chains by expiry, forwards, perpetuals, the index.

One :class:`Expiry` per (venue, base, settlement currency, expiry) holds the option chain and
where its forward comes from: the expiry's listed future (best bid and ask: a hedge buys at
the ask and sells at the bid) or, when none is listed, the options' ``underlying_price``
(Deribit's synthetic forward; the hedge is then the perpetual, with basis risk). Updates
return what they touched so the caller re-evaluates only that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

from ..etl.universe import definition_problem
from ..messages import Instrument
from .chain import CALL, PUT, ChainKey, ExpiryChain, same_price
from .fees import FeeSchedule

NAN = float("nan")


@dataclass
class Quote:
    """Best bid/ask of a future or perpetual: prices in USD (USDC for linear ones); amounts in
    USD for inverse ones (multiples of ``contract_size``), in coin for linear ones."""

    name: str
    contract_size: float = 10.0
    inverse: bool = True
    bid: float = NAN
    ask: float = NAN
    ts_ns: int = 0
    #: The expiries this future is the forward of.
    expiries: list = field(default_factory=list)


@dataclass
class Expiry:
    chain: ExpiryChain
    #: Instrument names of this chain start with this (``BTC-22MAY20``): opportunity ids too.
    prefix: str
    #: The listed future of this expiry, if any.
    future: str | None = None
    synthetic_forward: float = NAN
    #: When the forward was last set from a fresh quote (ns); 0 = never.
    forward_ns: int = 0
    #: The forward moved since the chain was last evaluated in full.
    dirty: bool = False


class StrikeUpdate(NamedTuple):
    """An option's strike whose quotes changed (made on every update: a tuple is cheapest)."""

    expiry: Expiry
    k: int


def instrument_problem(msg: Instrument) -> str | None:
    """Why strategy-box cannot use a definition, or None (read off md.* nothing validated it)."""
    problem = definition_problem(msg)
    if problem is not None:
        return problem
    if not (0.0 < msg.contract_size < math.inf and 0.0 < msg.min_amount < math.inf):
        return f"contract_size {msg.contract_size!r}, min_amount {msg.min_amount!r}"
    if msg.kind in ("option", "future") and not msg.expiry_ns:
        return f"{msg.kind} without an expiry"
    if msg.kind == "option" and msg.option_type is None:
        return "option without an option_type"
    return None


@dataclass
class Market:
    fees: FeeSchedule = field(default_factory=FeeSchedule)
    expiries: dict[ChainKey, Expiry] = field(default_factory=dict)
    #: option name -> (its expiry, strike, CALL or PUT)
    options: dict[str, tuple[Expiry, float, int]] = field(default_factory=dict)
    #: future or perpetual name -> its quote
    futures: dict[str, Quote] = field(default_factory=dict)
    #: (venue, base, settle, expiry_ns) -> future name; a chain hedges with its own settlement
    #: currency's future (BTC options with BTC-settled futures, USDC options with USDC ones)
    future_of: dict[tuple[str, str, str, int], str] = field(default_factory=dict)
    #: (venue, base, settle) -> the perpetual's name
    perpetual_of: dict[tuple[str, str, str], str] = field(default_factory=dict)
    #: base -> (index price, ts_ns)
    index: dict[str, tuple[float, int]] = field(default_factory=dict)

    # ---- instruments ---------------------------------------------------------------------------
    def on_instrument(self, msg: Instrument) -> StrikeUpdate | None:
        """Register a (valid: :func:`instrument_problem`) option, future or perpetual. A newly
        listed future becomes the forward of its expiries, which are marked for re-evaluation.
        Returns the strike of a known option republished inactive (its quotes are void: what
        used it must close now)."""
        if msg.kind == "option":
            return self._add_option(msg)
        if msg.kind in ("future", "perpetual") and msg.name not in self.futures:
            self.futures[msg.name] = Quote(msg.name, contract_size=msg.contract_size, inverse=msg.inverse)
        if msg.kind == "future":
            self.future_of[(msg.venue, msg.base, msg.settle, msg.expiry_ns)] = msg.name
            for expiry in self._expiries_at(msg.venue, msg.base, msg.settle, msg.expiry_ns):
                if expiry.future != msg.name:
                    expiry.future = msg.name
                    self.futures[msg.name].expiries.append(expiry)
                    self.refresh_forward(expiry)
        elif msg.kind == "perpetual":
            self.perpetual_of.setdefault((msg.venue, msg.base, msg.settle), msg.name)
        return None

    def _add_option(self, msg: Instrument) -> StrikeUpdate | None:
        key = ChainKey(msg.venue, msg.base, msg.settle, msg.expiry_ns)
        known = self.options.get(msg.name)
        expiry = self.expiries.get(key)
        if expiry is None:
            if not msg.active:
                return None  # a retired option of an expiry we do not follow (or dropped)
            chain = ExpiryChain(key, inverse=msg.inverse, lot=msg.min_amount, fees=self.fees)
            future = self.future_of.get((msg.venue, msg.base, msg.settle, msg.expiry_ns))
            expiry = self.expiries[key] = Expiry(chain, prefix=msg.name.rsplit("-", 2)[0], future=future)
            if future is not None:
                self.futures[future].expiries.append(expiry)
            self.refresh_forward(expiry)
        option = CALL if msg.option_type == "call" else PUT
        k = expiry.chain.add(msg.strike, option, msg.name)
        self.options[msg.name] = (expiry, msg.strike, option)
        if not msg.active and known is not None:
            expiry.chain.clear_quote(k, option)
            return StrikeUpdate(expiry, k)
        return None

    def drop(self, expiry: Expiry) -> None:
        """Forget an expiry and its options (it settled)."""
        del self.expiries[expiry.chain.key]
        for name in [n for n, (e, _, _) in self.options.items() if e is expiry]:
            del self.options[name]
        if expiry.future is not None:
            self.futures[expiry.future].expiries.remove(expiry)

    def _expiries_at(self, venue: str, base: str, settle: str, expiry_ns: int) -> list[Expiry]:
        return [self.expiries[key] for key in self.expiries
                if (key.venue, key.base, key.settle, key.expiry_ns) == (venue, base, settle, expiry_ns)]

    # ---- quotes --------------------------------------------------------------------------------
    def on_top(self, name: str, bid: float | None, bid_amount: float | None, ask: float | None,
               ask_amount: float | None, ts_ns: int, stale: bool) -> StrikeUpdate | list[Expiry] | None:
        """A new best bid/ask of ``name`` (``stale``: its book is being rebuilt, quotes void).

        Returns the option's strike to re-evaluate, the expiries whose forward moved, or None
        (a perpetual, or an instrument it does not know).
        """
        option = self.options.get(name)
        if option is not None:
            expiry, strike, side = option
            k = expiry.chain.index_of(strike)
            if stale:
                expiry.chain.clear_quote(k, side)
            else:
                expiry.chain.set_quote(k, side, bid, bid_amount, ask, ask_amount, ts_ns)
            return StrikeUpdate(expiry, k)
        quote = self.futures.get(name)
        if quote is None:
            return None
        _set(quote, None if stale else bid, None if stale else ask, ts_ns)
        for expiry in quote.expiries:
            self.refresh_forward(expiry)
        return quote.expiries

    @staticmethod
    def confirm_future(quote: Quote, bid: float | None, ask: float | None, ts_ns: int) -> None:
        """A future's or perpetual's ticker: when it shows the book's best bid and ask, the book
        is current at its time (a book that does not change sends nothing), and so is the
        forward it gives (options: ExpiryChain.confirm)."""
        if same_price(quote.bid, bid) and same_price(quote.ask, ask) and ts_ns > quote.ts_ns:
            quote.ts_ns = ts_ns
            for expiry in quote.expiries:
                expiry.forward_ns = ts_ns

    def on_underlying(self, name: str, price: float | None, ts_ns: int) -> Expiry | None:
        """An option ticker's underlying_price: the forward of an expiry with no listed future."""
        option = self.options.get(name)
        if option is None or price is None or not 0 < price < math.inf:
            return None
        expiry = option[0]
        if expiry.future is not None:
            return None
        if price != expiry.synthetic_forward or ts_ns > expiry.forward_ns:
            expiry.synthetic_forward = price
            self.refresh_forward(expiry, ts_ns)
            return expiry
        return None

    def on_index(self, base: str, price: float, ts_ns: int) -> list[Expiry]:
        """The index; linear chains charge option fees on it, so they are re-priced."""
        if not 0 < price < math.inf:
            return []
        self.index[base] = (price, ts_ns)
        touched = []
        for key, expiry in self.expiries.items():
            if key.base == base and not expiry.chain.inverse:
                expiry.chain.set_fee_underlying(price)
                expiry.dirty = True
                touched.append(expiry)
        return touched

    def refresh_forward(self, expiry: Expiry, ts_ns: int = 0) -> None:
        chain = expiry.chain
        old = (chain.forward_bid, chain.forward_ask)
        if expiry.future is not None:
            quote = self.futures[expiry.future]
            chain.forward_bid, chain.forward_ask, expiry.forward_ns = quote.bid, quote.ask, quote.ts_ns
        else:
            chain.forward_bid = chain.forward_ask = expiry.synthetic_forward
            expiry.forward_ns = max(expiry.forward_ns, ts_ns)
        if (chain.forward_bid, chain.forward_ask) != old:
            expiry.dirty = True

    def hedge_quote(self, expiry: Expiry) -> Quote | None:
        """What hedges this expiry: its future, else its settlement currency's perpetual."""
        if expiry.future is not None:
            return self.futures[expiry.future]
        key = expiry.chain.key
        name = self.perpetual_of.get((key.venue, key.base, key.settle))
        return None if name is None else self.futures[name]


def quote_problem(bid: float | None, bid_amount: float | None, ask: float | None,
                  ask_amount: float | None) -> str | None:
    """Why a best bid/ask cannot be used, or None. A side with no price and no amount is just
    absent (a ticker's empty side is 0 at 0); anything else must be finite and positive, and
    the bid below the ask: a crossed quote would show arbitrage that is not there."""
    if bid and ask and bid_amount and ask_amount and 0.0 < bid < ask < math.inf \
            and 0.0 < bid_amount < math.inf and 0.0 < ask_amount < math.inf:
        return None  # the usual quote, in one test
    for price, amount in ((bid, bid_amount), (ask, ask_amount)):
        if not price and not amount:
            continue
        if price is None or not math.isfinite(price) or price <= 0:
            return "bad_price"
        if amount is None or not math.isfinite(amount) or amount <= 0:
            return "bad_amount"
    if bid and ask and bid >= ask:
        return "crossed"
    return None


def _set(quote: Quote, bid: float | None, ask: float | None, ts_ns: int) -> None:
    quote.bid = bid if bid is not None and bid > 0 and math.isfinite(bid) else NAN
    quote.ask = ask if ask is not None and ask > 0 and math.isfinite(ask) else NAN
    quote.ts_ns = ts_ns
