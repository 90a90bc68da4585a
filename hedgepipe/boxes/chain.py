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

    def __init__(self, key: ChainKey, *, inverse: bool = True, contract_size: float = 1.0,
                 lot: float = 0.1, fees: FeeSchedule = FeeSchedule()):
        self.key = key
        #: The expiry as in instrument names (``22MAY20``).
        self.code = expiry_code(key.expiry_ns // 1_000_000)
        self.inverse = inverse
        self.contract_size = contract_size
        self.lot = lot
        self.fees = fees
        self.strikes = np.empty(0)
        #: [CALL|PUT, strike]: best bid/ask price and amount; NaN = no usable quote.
        self.bid = np.empty((2, 0))
        self.ask = np.empty((2, 0))
        self.bid_amount = np.zeros((2, 0))
        self.ask_amount = np.zeros((2, 0))
        #: [CALL|PUT, strike]: when the quote was received (ns); 0 = never.
        self.ts = np.zeros((2, 0), dtype=np.int64)
        self.names: list[list[str | None]] = [[], []]
        self.syn_long = np.empty(0)
        self.syn_short = np.empty(0)
        #: Contracts tradeable in each synthetic: min of its two legs' displayed amounts.
        self.long_amount = np.zeros(0)
        self.short_amount = np.zeros(0)
        #: Per strike, the older of its call's and put's quote times.
        self.oldest_ns = np.zeros(0, dtype=np.int64)
        #: The forward's ask and bid (USD): where the hedge buys and sells BTC forward.
        self.forward_ask = float("nan")
        self.forward_bid = float("nan")
        #: One unit of underlying in the option's price unit: 1 (inverse), or the index (linear:
        #: NaN until one is known, so nothing is priced with a made-up fee).
        self.fee_underlying = 1.0 if inverse else float("nan")
        self._pairs_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    # ---- the chain's shape -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.strikes)

    def index_of(self, strike: float) -> int | None:
        k = int(np.searchsorted(self.strikes, strike))
        return k if k < len(self.strikes) and self.strikes[k] == strike else None

    def add(self, strike: float, option: int, name: str) -> int:
        """Register an instrument (its strike inserted if new); returns the strike's index."""
        k = self.index_of(strike)
        if k is None:
            k = int(np.searchsorted(self.strikes, strike))
            self.strikes = np.insert(self.strikes, k, strike)
            for attr, fill in (("bid", np.nan), ("ask", np.nan), ("bid_amount", 0.0), ("ask_amount", 0.0),
                               ("ts", 0)):
                setattr(self, attr, np.insert(getattr(self, attr), k, fill, axis=1))
            for attr, fill in (("syn_long", np.nan), ("syn_short", np.nan), ("long_amount", 0.0),
                               ("short_amount", 0.0), ("oldest_ns", 0)):
                setattr(self, attr, np.insert(getattr(self, attr), k, fill))
            self.names[CALL].insert(k, None)
            self.names[PUT].insert(k, None)
            self._pairs_cache = None
        self.names[option][k] = name
        return k

    # ---- quotes ------------------------------------------------------------------------------
    def set_quote(self, k: int, option: int, bid: float | None, bid_amount: float | None,
                  ask: float | None, ask_amount: float | None, ts_ns: int) -> None:
        """One instrument's best bid and ask; None, 0 or a missing amount = that side is absent."""
        self.bid[option, k] = bid if bid and bid_amount else np.nan
        self.ask[option, k] = ask if ask and ask_amount else np.nan
        self.bid_amount[option, k] = bid_amount or 0.0
        self.ask_amount[option, k] = ask_amount or 0.0
        self.ts[option, k] = ts_ns
        self._refresh(k)

    def confirm(self, k: int, option: int, bid: float | None, ask: float | None, ts_ns: int) -> bool:
        """Another source (a ticker) shows the same best bid and ask at ``ts_ns``: the quote is
        still current, so it is younger. False (nothing changed) when the prices differ."""
        for held, seen in ((self.bid[option, k], bid), (self.ask[option, k], ask)):
            if not (held == seen or (held != held and not seen)):  # equal, or both absent
                return False
        if ts_ns > self.ts[option, k]:
            self.ts[option, k] = ts_ns
            self.oldest_ns[k] = min(self.ts[CALL, k], self.ts[PUT, k])
        return True

    def clear_quote(self, k: int, option: int) -> None:
        """The instrument's book is stale or gone: its quotes no longer count."""
        self.set_quote(k, option, None, None, None, None, int(self.ts[option, k]))

    def set_fee_underlying(self, value: float) -> None:
        """Linear chains: the USD value of one unit, on which the option fee is charged."""
        if not self.inverse and value > 0 and value != self.fee_underlying:
            self.fee_underlying = value
            for k in range(len(self.strikes)):
                self._refresh(k)

    def _refresh(self, k: int) -> None:
        """Recompute strike k's synthetics from its four quotes (NaN propagates)."""
        fee = self.fees.option_fee
        u = self.fee_underlying
        ca, cb = self.ask[CALL, k], self.bid[CALL, k]
        pa, pb = self.ask[PUT, k], self.bid[PUT, k]
        self.syn_long[k] = ca + fee(ca, u) - pb + fee(pb, u)
        self.syn_short[k] = -cb + fee(cb, u) + pa + fee(pa, u)
        self.long_amount[k] = min(self.ask_amount[CALL, k], self.bid_amount[PUT, k])
        self.short_amount[k] = min(self.bid_amount[CALL, k], self.ask_amount[PUT, k])
        self.oldest_ns[k] = min(self.ts[CALL, k], self.ts[PUT, k])

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
        return edge * self.contract_size

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
        return self._pairs(side, k, k, edge * self.contract_size, amount, capital, b)

    def _pairs(self, side, i, j, edge, amount, capital, b) -> Pairs:
        """``edge`` already per contract; capital per unit."""
        size = np.floor(amount / self.lot + _LOT_EPS) * self.lot
        oldest = np.minimum(self.oldest_ns[i], self.oldest_ns[j])
        return Pairs(side, i, j, edge, size, capital * self.contract_size, b, oldest)

    # ---- which pairs -------------------------------------------------------------------------
    def pairs_with(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(i, j) of every pair that has strike k as one of its two strikes: first k with each
        higher strike, then each lower strike with k."""
        n = len(self.strikes)
        i = np.concatenate((np.full(n - k - 1, k), np.arange(k)))
        j = np.concatenate((np.arange(k + 1, n), np.full(k, k)))
        return i, j

    def pair_at(self, k: int, pos: int) -> tuple[int, int]:
        """The pair at position ``pos`` of :meth:`pairs_with` (k)."""
        above = len(self.strikes) - k - 1
        return (k, k + 1 + pos) if pos < above else (pos - above, k)

    def all_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.strikes)
        if self._pairs_cache is None or self._pairs_cache[0] != n:
            i, j = np.triu_indices(n, 1)
            self._pairs_cache = (n, i, j)
        return self._pairs_cache[1], self._pairs_cache[2]

    def best(self, side: str, h: float, fresh_after_ns: int = 0,
             bound: bool = False) -> tuple[int, int, float] | None:
        """The best box of this side in O(N): one prefix-maximum pass per hedge price.

        The edge is ``payoff - hedge_cost(b)``, and ``hedge_cost(b)`` is ``b * c`` with
        ``c = Fa (1 + h)`` when b >= 0 (premium paid: BTC bought forward) and ``Fb (1 - h)``
        when b < 0. With one c the edge splits into one term per strike, so the best pair is
        max over j of (term_j + max of term_i, i < j). ``Fb (1 - h)`` gives an upper bound of
        every box (``bound``: returned as is; no box of the side has more); the exact best is
        the better of the two passes' pairs, exact whenever the side's boxes all pay or are all
        paid (the normal case). Linear chains: c = 1, exact. None: no quoted pair.
        """
        if len(self.strikes) < 2:
            return None
        if not self.inverse:
            return self._best_pass(side, 1.0, fresh_after_ns)
        low = self._best_pass(side, self.forward_bid * (1.0 - h), fresh_after_ns)
        if low is None or bound:
            return low
        high = self._best_pass(side, self.forward_ask * (1.0 + h), fresh_after_ns)
        picks = {(p[0], p[1]) for p in (low, high) if p is not None}
        i = np.array([p[0] for p in picks])
        j = np.array([p[1] for p in picks])
        edges = self.box_edges(side, i, j, h)
        n = int(np.nanargmax(edges)) if not np.all(np.isnan(edges)) else 0
        return int(i[n]), int(j[n]), float(edges[n])

    def _best_pass(self, side: str, c: float, fresh_after_ns: int) -> tuple[int, int, float] | None:
        """Best (i, j) of ``payoff - premium * c`` and that value per contract."""
        first, second, sign = self._sides(side)
        term_i = -sign * self.strikes - c * first
        term_j = sign * self.strikes - c * second
        usable = self.oldest_ns >= fresh_after_ns
        term_i = np.where(usable & ~np.isnan(term_i), term_i, -np.inf)
        term_j = np.where(usable & ~np.isnan(term_j), term_j, -np.inf)
        total = np.maximum.accumulate(term_i[:-1]) + term_j[1:]
        j = int(np.argmax(total)) + 1
        if not np.isfinite(total[j - 1]):
            return None
        i = int(np.argmax(term_i[:j]))
        return i, j, float(total[j - 1]) * self.contract_size
