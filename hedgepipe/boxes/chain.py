"""One expiry's option chain as arrays, and the edge of every box and parity trade on it.

Every structure here is made of *synthetics* (docs/strategy-box-arithmetic.md has the derivation and a
worked example). Per strike, from the quotes one would actually trade, option fees included:

    syn_long[k]  = Ca + f(Ca) - Pb + f(Pb)    BTC paid to buy the K call and sell the K put
    syn_short[k] = -Cb + f(Cb) + Pa + f(Pa)   BTC paid to sell the K call and buy the K put

    long box  (K_i < K_j) = syn_long[i] + syn_short[j]   pays +(K_j - K_i) USD at expiry
    short box (K_i < K_j) = syn_short[i] + syn_long[j]   pays -(K_j - K_i) USD at expiry
    reversal  at K        = syn_long[k]  and sell 1 forward   pays -K USD
    conversion at K       = syn_short[k] and buy 1 forward    pays +K USD

An inverse option's premium is BTC, so the hedge buys ``b`` = premium (+ the structure's own
forward: -1 reversal, +1 conversion) BTC forward on the expiry's future: at its ask ``Fa``
when buying, its bid ``Fb`` when selling, paying the future fee ``h`` on the notional. With

    hedge_cost(b) = b * Fa * (1 + h)   if b >= 0
                    b * Fb * (1 - h)   if b <  0           (USD at expiry)

the edge per unit of underlying is ``payoff - hedge_cost(b)``. Linear (USDC) options pay
their premium in USD: edge = payoff - premium - hedge_cost(forward leg only).

Amounts are in the options' amount unit, one coin (a Deribit coin option contract is 1 coin;
USDC options trade in coin too), and every edge, capital and size is per that unit, called
"per contract" below.

A box's edge is the sum of one term per strike, so the incremental pass (one strike against
all others) and the full pass (every pair) run the same code on different index arrays, and
the best pair of an expiry has a one-pass prefix-maximum bound (:meth:`ExpiryChain.best`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..clock import expiry_code
from .fees import FeeSchedule

CALL, PUT = 0, 1
LONG, SHORT, REVERSAL, CONVERSION = "long", "short", "reversal", "conversion"
#: Float noise allowed when rounding a size down to the lot step.
_LOT_EPS = 1e-9
_NAN = float("nan")
#: How far the per-update bound may be loosened by a forward that moved since the bound terms
#: were built, before they are rebuilt: this fraction of the forward (50 USD per contract at
#: 100 000; a box costs several times that in spreads and fees, so the bound still rules out).
_BOUND_SLACK = 5e-4


@dataclass(frozen=True)
class ChainKey:
    venue: str
    base: str
    settle: str
    expiry_ns: int


@dataclass
class Pairs:
    """Evaluated structures, as parallel arrays (one entry per structure).

    ``j`` equals ``i`` for parity trades. ``edge``, ``capital`` in USD per contract;
    ``size`` in contracts, rounded down to the lot; ``b`` the BTC bought forward per unit.
    """

    side: str
    i: np.ndarray
    j: np.ndarray
    edge: np.ndarray
    size: np.ndarray
    capital: np.ndarray
    b: np.ndarray
    oldest_ns: np.ndarray


class ExpiryChain:
    """Quotes by strike of one expiry (calls and puts), and the edges over them."""

    def __init__(self, key: ChainKey, *, inverse: bool = True, lot: float = 0.1,
                 fees: FeeSchedule = FeeSchedule()):
        self.key = key
        #: The expiry as in instrument names (``22MAY20``).
        self.code = expiry_code(key.expiry_ns // 1_000_000)
        self.inverse = inverse
        self.lot = lot
        self.fees = fees
        self.strikes = np.empty(0)
        #: strike -> its index (kept with ``strikes``: the per-update path looks it up).
        self._index: dict[float, int] = {}
        self._strike_list: list[float] = []  # the strikes as floats, read one at a time
        #: [CALL|PUT][strike]: [bid, bid amount, ask, ask amount, received ns] as plain floats
        #: (read one at a time on every update); a side without a usable quote is NaN at 0.
        self.quotes: list[list[list]] = [[], []]
        self.names: list[list[str | None]] = [[], []]
        #: Per strike, the BTC paid for each synthetic, option fees included (NaN: no quote).
        self.syn_long = np.empty(0)
        self.syn_short = np.empty(0)
        #: Contracts tradeable in each synthetic: min of its two legs' displayed amounts.
        self.long_amount = np.zeros(0)
        self.short_amount = np.zeros(0)
        #: Per strike, the older of its call's and put's quote times (ns; 0 = never).
        self.oldest_ns = np.zeros(0, dtype=np.int64)
        #: The forward's ask and bid (USD): where the hedge buys and sells BTC forward.
        self.forward_ask = float("nan")
        self.forward_bid = float("nan")
        #: One unit of underlying in the option's price unit: 1 (inverse), or the index (linear:
        #: NaN until one is known, so nothing is priced with a made-up fee).
        self.fee_underlying = 1.0 if inverse else float("nan")
        self._pairs_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        # The bound terms (see ``may_pass_with``), rebuilt lazily after a forward change.
        self._terms = np.empty((4, 0))
        self._maxima = [-np.inf] * 4
        self._c_long = self._c_short = float("nan")
        self._syn_top = [0.0, 0.0]
        self._terms_stale = True

    # ---- the chain's shape -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.strikes)

    def index_of(self, strike: float) -> int | None:
        return self._index.get(strike)

    def add(self, strike: float, option: int, name: str) -> int:
        """Register an instrument (its strike inserted if new); returns the strike's index."""
        k = self._index.get(strike)
        if k is None:
            k = int(np.searchsorted(self.strikes, strike))
            self.strikes = np.insert(self.strikes, k, strike)
            self._strike_list = self.strikes.tolist()
            self._index = {x: n for n, x in enumerate(self._strike_list)}
            for attr, fill in (("syn_long", np.nan), ("syn_short", np.nan), ("long_amount", 0.0),
                               ("short_amount", 0.0), ("oldest_ns", 0)):
                setattr(self, attr, np.insert(getattr(self, attr), k, fill))
            for option_ in (CALL, PUT):
                self.quotes[option_].insert(k, [_NAN, 0.0, _NAN, 0.0, 0])
                self.names[option_].insert(k, None)
            self._pairs_cache = None
            self._terms_stale = True
        self.names[option][k] = name
        return k

    # ---- quotes ------------------------------------------------------------------------------
    def set_quote(self, k: int, option: int, bid: float | None, bid_amount: float | None,
                  ask: float | None, ask_amount: float | None, ts_ns: int) -> None:
        """One instrument's best bid and ask; None, 0 or a missing amount = that side is absent."""
        q = self.quotes[option][k]
        q[0] = bid if bid and bid_amount else _NAN
        q[1] = bid_amount or 0.0
        q[2] = ask if ask and ask_amount else _NAN
        q[3] = ask_amount or 0.0
        q[4] = ts_ns
        self._refresh(k)

    def confirm(self, k: int, option: int, bid: float | None, ask: float | None, ts_ns: int) -> bool:
        """Another source (a ticker) shows the same best bid and ask at ``ts_ns``: the quote is
        still current, so it is younger. False (nothing changed) when the prices differ."""
        q = self.quotes[option][k]
        if not (same_price(q[0], bid) and same_price(q[2], ask)):
            return False
        if ts_ns > q[4]:
            q[4] = ts_ns
            self.oldest_ns[k] = min(self.quotes[CALL][k][4], self.quotes[PUT][k][4])
        return True

    def clear_quote(self, k: int, option: int) -> None:
        """The instrument's book is stale or gone: its quotes no longer count."""
        self.set_quote(k, option, None, None, None, None, self.quotes[option][k][4])

    def set_fee_underlying(self, value: float) -> None:
        """Linear chains: the USD value of one unit, on which the option fee is charged."""
        if not self.inverse and value > 0 and value != self.fee_underlying:
            self.fee_underlying = value
            for k in range(len(self.strikes)):
                self._refresh(k)

    def _refresh(self, k: int) -> None:
        """Recompute strike k's synthetics from its four quotes (NaN propagates)."""
        fees, u = self.fees, self.fee_underlying
        rate, cap = fees.option_rate * u, fees.option_cap
        cb, cb_amount, ca, ca_amount, c_ts = self.quotes[CALL][k]
        pb, pb_amount, pa, pa_amount, p_ts = self.quotes[PUT][k]
        # fee = min(rate, cap * price), written out: this runs on every update
        syn_long = ca + min(rate, cap * ca) - pb + min(rate, cap * pb)
        syn_short = -cb + min(rate, cap * cb) + pa + min(rate, cap * pa)
        self.syn_long[k] = syn_long
        self.syn_short[k] = syn_short
        self.long_amount[k] = min(ca_amount, pb_amount)
        self.short_amount[k] = min(cb_amount, pa_amount)
        self.oldest_ns[k] = min(c_ts, p_ts)
        if not self._terms_stale:
            self._set_terms(k, syn_long, syn_short)

    # ---- the per-strike bound -----------------------------------------------------------------
    # hedge_cost(b) = max(b * Fa (1 + h), b * Fb (1 - h)): each line is below it for any b, so
    # with either price c, edge <= payoff - b * c, which splits into one term per strike:
    #     term_long[k]  = -K_k - c * syn_long[k]     (a synthetic long's share)
    #     term_short[k] =  K_k - c * syn_short[k]    (a synthetic short's share)
    # long box (i < j) <= term_long[i] + term_short[j] with c = Fa (1 + h) (exact when it pays,
    # as long boxes do); short box <= term_short[i] + term_long[j] with c = Fb (1 - h) (exact
    # when credited, as short boxes are). Linear chains: c = 1, exact. A box with strike k is
    # then at most term[k] + the other term's maximum: two additions per side and update, the
    # maxima kept up to date, and a normal market (spreads, fees) is ruled out by it.
    # The terms are kept at the prices c0 of their last rebuild: the forward moves on every
    # future tick, and at c the bound is at most the one at c0 plus |c - c0| x max |b|
    # (max |b| <= max |syn_long| + max |syn_short|). That slack is added until it would pass
    # _BOUND_SLACK of the forward; only then are the terms rebuilt (O(N)) at the new prices.
    def _bound_prices(self) -> tuple[float, float]:
        """c for long boxes, c for short boxes."""
        if not self.inverse:
            return 1.0, 1.0
        h = self.fees.future_taker
        return self.forward_ask * (1.0 + h), self.forward_bid * (1.0 - h)

    def _set_terms(self, k: int, syn_long: float, syn_short: float) -> None:
        # Written out (no loop, no tuples): this runs on every update.
        if abs(syn_long) > self._syn_top[0]:  # (NaN compares False: no quote, no term)
            self._syn_top[0] = abs(syn_long)
        if abs(syn_short) > self._syn_top[1]:
            self._syn_top[1] = abs(syn_short)
        strike, c_long, c_short = self._strike_list[k], self._c_long, self._c_short
        _set_term(self, 0, k, -strike - c_long * syn_long)
        _set_term(self, 1, k, strike - c_long * syn_short)
        _set_term(self, 2, k, -strike - c_short * syn_long)
        _set_term(self, 3, k, strike - c_short * syn_short)

    def _rebuild_terms(self) -> None:
        self._c_long, self._c_short = self._bound_prices()
        self._terms = _term_rows(self.strikes, self.syn_long, self.syn_short, self._c_long, self._c_short)
        self._maxima = [float(row.max()) if len(row) else -np.inf for row in self._terms]
        self._syn_top = [float(np.nanmax(np.abs(syn), initial=0.0)) for syn in (self.syn_long, self.syn_short)]
        self._terms_stale = False

    def _slack(self) -> tuple[float, float]:
        """How much more the bound may be at today's prices than at the terms' (long, short);
        the terms rebuilt first when that would pass _BOUND_SLACK (or a price is unknown)."""
        if self._terms_stale:
            self._rebuild_terms()
            return 0.0, 0.0
        c_long, c_short = self._bound_prices()
        top = self._syn_top[0] + self._syn_top[1]
        slack_long, slack_short = abs(c_long - self._c_long) * top, abs(c_short - self._c_short) * top
        if not slack_long + slack_short <= _BOUND_SLACK * c_short:  # (NaN: a price was or is unknown)
            self._rebuild_terms()
            return 0.0, 0.0
        return slack_long, slack_short

    def may_pass_with(self, k: int, floor: float) -> bool:
        """False only when no box with strike k can have an edge per contract >= ``floor``.

        First against each term's maximum over all strikes (O(1)); when that cannot rule the
        strike out, against the maxima on the right side of k only (O(N), a few reductions):
        the all-strike maxima ignore i < j, which the hedge's spread and fee make matter.
        """
        slack_long, slack_short = self._slack()
        t, mx = self._terms, self._maxima
        floor_long, floor_short = floor - slack_long, floor - slack_short
        if (max(t[0, k] + mx[1], mx[0] + t[1, k]) < floor_long          # long boxes: k as K1, as K2
                and max(t[3, k] + mx[2], mx[3] + t[2, k]) < floor_short):  # short boxes: k as K1, as K2
            return False
        if k + 1 < len(self.strikes):
            above = t[1:3, k + 1:].max(axis=1)       # term_short (long price), term_long (short price)
            if t[0, k] + above[0] >= floor_long or t[3, k] + above[1] >= floor_short:
                return True
        if k > 0:
            below = t[[0, 3], :k].max(axis=1)        # term_long (long price), term_short (short price)
            if below[0] + t[1, k] >= floor_long or below[1] + t[2, k] >= floor_short:
                return True
        return False

    def parity_edge(self, side: str, k: int, h: float) -> float:
        """:meth:`parity`'s edge at one strike, in plain floats (the per-update path)."""
        strike = self._strike_list[k]
        if side == REVERSAL:
            premium, forward_btc, payoff = float(self.syn_long[k]), -1.0, -strike
        else:
            premium, forward_btc, payoff = float(self.syn_short[k]), 1.0, strike
        b = premium + forward_btc if self.inverse else forward_btc
        cost = b * self.forward_ask * (1.0 + h) if b >= 0 else b * self.forward_bid * (1.0 - h)
        edge = payoff - cost if self.inverse else payoff - premium - cost
        return edge

    # ---- edges -------------------------------------------------------------------------------
    def hedge_cost(self, b, h: float):
        """USD at expiry of buying ``b`` BTC forward (selling when negative), fee included.

        ``b * Fb * (1 - h)`` plus, for the part bought, the difference to ``Fa * (1 + h)``:
        one expression for arrays and scalars.
        """
        sell = self.forward_bid * (1.0 - h)
        return b * sell + np.maximum(b, 0.0) * (self.forward_ask * (1.0 + h) - sell)

    def _sides(self, side: str):
        """(synthetic at the lower strike, at the upper strike, payoff sign) of a box side."""
        if side == LONG:
            return self.syn_long, self.syn_short, 1.0
        return self.syn_short, self.syn_long, -1.0

    def _box_edge(self, sign: float, premium, width, h: float):
        """USD per contract at expiry of a box of this premium and strike width."""
        if self.inverse:
            edge = sign * width - self.hedge_cost(premium, h)
        else:
            edge = sign * width - premium
        return edge

    def box_edges(self, side: str, i: np.ndarray, j: np.ndarray, h: float) -> np.ndarray:
        """Edge per contract of the boxes (K_i < K_j) of one side; NaN where a quote is missing."""
        first, second, sign = self._sides(side)
        return self._box_edge(sign, first[i] + second[j], self.strikes[j] - self.strikes[i], h)

    def box_edges_with(self, side: str, k: int, h: float) -> np.ndarray:
        """:meth:`box_edges` of every pair with strike k, in the order of :meth:`pairs_with`.

        Slices instead of index arrays: this is the per-update path.
        """
        first, second, sign = self._sides(side)
        s = self.strikes
        premium = np.concatenate((first[k] + second[k + 1:], first[:k] + second[k]))
        width = np.concatenate((s[k + 1:] - s[k], s[k] - s[:k]))
        return self._box_edge(sign, premium, width, h)

    def boxes(self, side: str, i: np.ndarray, j: np.ndarray, h: float) -> Pairs:
        """Everything about the boxes (K_i < K_j) of one side: edge, size, capital, age."""
        first, second, sign = self._sides(side)
        premium = first[i] + second[j]
        width = self.strikes[j] - self.strikes[i]
        edge = self._box_edge(sign, premium, width, h)
        a1, a2 = (self.long_amount, self.short_amount) if side == LONG else (self.short_amount, self.long_amount)
        if self.inverse:
            b = premium
            paid = self.hedge_cost(b, h)
        else:
            b = np.zeros_like(premium)
            paid = premium
        # The capital a box ties up: what a long box pays now (none: paid to take it),
        # what a short box owes at expiry.
        capital = np.where(paid > 0, paid, np.nan) if side == LONG else width
        return self._pairs(side, i, j, edge, np.minimum(a1[i], a2[j]), capital, b)

    def parity(self, side: str, h: float, k: np.ndarray | None = None) -> Pairs:
        """Reversals (long synthetic, forward sold) or conversions (short synthetic, forward
        bought) at strikes ``k`` (all by default)."""
        k = np.arange(len(self.strikes)) if k is None else k
        if side == REVERSAL:
            premium, forward_btc, payoff, amount = self.syn_long[k], -1.0, -self.strikes[k], self.long_amount[k]
        else:
            premium, forward_btc, payoff, amount = self.syn_short[k], 1.0, self.strikes[k], self.short_amount[k]
        if self.inverse:
            b = premium + forward_btc
            edge = payoff - self.hedge_cost(b, h)
        else:
            b = np.full_like(premium, forward_btc)
            edge = payoff - premium - self.hedge_cost(b, h)
        # The capital: the synthetic's notional, one unit at the forward.
        capital = np.full_like(edge, (self.forward_ask + self.forward_bid) / 2.0)
        return self._pairs(side, k, k, edge, amount, capital, b)

    def _pairs(self, side, i, j, edge, amount, capital, b) -> Pairs:
        """Sizes rounded down to the lot, the older leg's age, as Pairs."""
        size = np.floor(amount / self.lot + _LOT_EPS) * self.lot
        oldest = np.minimum(self.oldest_ns[i], self.oldest_ns[j])
        return Pairs(side, i, j, edge, size, capital, b, oldest)

    # ---- which pairs -------------------------------------------------------------------------
    def pairs_with(self, k: int, pos: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(i, j) of the pairs with strike k, in :meth:`box_edges_with`'s order: first k with each
        higher strike, then each lower strike with k. ``pos``: only those positions."""
        above = len(self.strikes) - k - 1
        if pos is None:
            pos = np.arange(len(self.strikes) - 1)
        return np.where(pos < above, k, pos - above), np.where(pos < above, pos + k + 1, k)

    def all_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.strikes)
        if self._pairs_cache is None or self._pairs_cache[0] != n:
            i, j = np.triu_indices(n, 1)
            self._pairs_cache = (n, i, j)
        return self._pairs_cache[1], self._pairs_cache[2]

    def best(self, side: str, h: float, fresh_after_ns: int = 0,
             bound: bool = False) -> tuple[int, int, float] | None:
        """The best box of this side in O(N), from the per-strike bound terms.

        With one hedge price c the edge bound splits into a term per strike, so the best pair
        is max over j of (term_j + max of term_i, i < j): a prefix-maximum pass. A pass at
        ``Fa (1 + h)`` prices every box that pays exactly, one at ``Fb (1 - h)`` every box that
        is credited; the better exact edge of the two passes' pairs is the best box whenever a
        side's boxes all hedge one way (the normal market). ``bound``: the side's own pass only
        (long at Fa (1 + h), short at Fb (1 - h)), returned as a bound no box of the side
        exceeds. Linear chains: one exact pass. Quotes older than ``fresh_after_ns`` count as
        missing. Returns (i, j, edge per contract) or None when no pair is quoted.
        """
        if len(self.strikes) < 2:
            return None
        rows = self._bound_rows(h)
        # (first strike's row, second strike's row) per pass; the side's own price first
        if side == LONG:
            passes = ((rows[0], rows[1]), (rows[2], rows[3]))
        else:
            passes = ((rows[3], rows[2]), (rows[1], rows[0]))
        if fresh_after_ns:
            old = self.oldest_ns < fresh_after_ns
            if old.any():
                passes = tuple((np.where(old, -np.inf, a), np.where(old, -np.inf, b)) for a, b in passes)
        found = _prefix_best(*passes[0])
        if found is None or bound:
            return found
        if not self.inverse:  # one price: the pass is exact
            return found[0], found[1], self.box_edge_at(side, found[0], found[1], h)
        other = _prefix_best(*passes[1])
        picks = [(found[0], found[1])] + ([(other[0], other[1])] if other is not None else [])
        i, j, edge = max(((i, j, self.box_edge_at(side, i, j, h)) for i, j in picks),
                         key=lambda p: p[2] if p[2] == p[2] else -np.inf)
        return i, j, edge

    def box_edge_at(self, side: str, i: int, j: int, h: float) -> float:
        """:meth:`box_edges` of one pair, in plain floats."""
        first, second, sign = self._sides(side)
        premium = float(first[i]) + float(second[j])
        payoff = sign * (self._strike_list[j] - self._strike_list[i])
        if not self.inverse:
            return payoff - premium
        if premium >= 0:
            return payoff - premium * self.forward_ask * (1.0 + h)
        return payoff - premium * self.forward_bid * (1.0 - h)

    def _bound_rows(self, h: float) -> np.ndarray:
        """The four bound-term rows for hedge fee h (kept up to date for the fee schedule's)."""
        if h == self.fees.future_taker or not self.inverse:
            if self._terms_stale or self._bound_prices() != (self._c_long, self._c_short):
                self._rebuild_terms()  # best() needs the terms at today's prices exactly
            return self._terms
        sell = self.forward_bid * (1.0 - h)
        buy = self.forward_ask * (1.0 + h)
        return _term_rows(self.strikes, self.syn_long, self.syn_short, buy, sell)


def _set_term(chain: ExpiryChain, n: int, k: int, term: float) -> None:
    """Row n of the bound terms at strike k, and that row's maximum kept up to date."""
    if term != term:  # no quote (or no forward): never the maximum
        term = -np.inf
    row = chain._terms[n]
    old = row[k]
    row[k] = term
    top = chain._maxima[n]
    if term >= top:
        chain._maxima[n] = term
    elif old == top:  # the maximum went down: look again
        chain._maxima[n] = float(row.max())


def same_price(held: float, seen: float | None) -> bool:
    """A held price (NaN: none) equals a ticker's (None or 0: none)."""
    return held == seen or (held != held and not seen)


def _term_rows(strikes, syn_long, syn_short, c_long: float, c_short: float) -> np.ndarray:
    """[term_long, term_short at c_long; term_long, term_short at c_short], -inf for no quote."""
    with np.errstate(invalid="ignore"):
        rows = np.array([-strikes - c_long * syn_long, strikes - c_long * syn_short,
                         -strikes - c_short * syn_long, strikes - c_short * syn_short])
    return np.where(np.isnan(rows), -np.inf, rows).reshape(4, len(strikes))


def _prefix_best(first: np.ndarray, second: np.ndarray) -> tuple[int, int, float] | None:
    """argmax over i < j of first[i] + second[j], and its value; None when all are -inf."""
    total = np.maximum.accumulate(first[:-1])
    total += second[1:]
    j = total.argmax()
    value = total[j]
    if not value > -np.inf:  # (NaN too)
        return None
    return int(first[:j + 1].argmax()), int(j) + 1, float(value)
