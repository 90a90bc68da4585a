"""Which structures pass the gates: per updated strike, per expiry, and why one does not.

Gates (docs/strategy-box.md): edge per contract >= ``min_edge_usd``, total edge >=
``min_total_usd``, annualised return on capital >= ``min_annual_rate``, a size of at least
one lot, every leg quoted within ``max_quote_age``, a forward quoted within the same age, and
no expiry closer to its settlement than ``settle_guard``. A structure is first judged on its
edge alone (cheap, vectorised); only the few that clear it are looked at in detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .chain import CONVERSION, LONG, REVERSAL, SHORT, Pairs
from .detail import YEAR_NS, Structure, describe
from .market import Expiry, Quote

BOX_SIDES = (LONG, SHORT)
PARITY_SIDES = (REVERSAL, CONVERSION)
_TAGS = {LONG: "LBOX", SHORT: "SBOX", REVERSAL: "REV", CONVERSION: "CONV"}
_MAX_IDS = 200_000


@dataclass(frozen=True)
class Gates:
    min_edge_usd: float = 1.0
    min_total_usd: float = 0.0
    min_annual_rate: float = 0.0
    max_quote_age_ns: int = 5 * 10**9
    settle_guard_ns: int = 3600 * 10**9
    #: The hedge's fee rate (a taker order on the future).
    hedge_rate: float = 0.0005
    parity: bool = True


@dataclass(slots=True)
class Candidate:
    """A structure that passes, with what the lifecycle compares; spelled out only on demand
    (an open or an update), since most passing structures are already open and unchanged."""

    opp_id: str
    expiry: Expiry
    side: str
    i: int
    j: int
    edge_usd: float
    size: float
    hedge_rate: float
    now_ns: int
    _structure: Structure | None = None

    @property
    def structure(self) -> Structure:
        if self._structure is None:
            self._structure = describe(self.expiry.chain, self.side, self.i, self.j, self.hedge_rate, self.now_ns)
        return self._structure


def strike_text(strike: float) -> str:
    """A strike as an id segment: no dot (topics split on dots), no exponent."""
    return str(int(strike)) if float(strike).is_integer() else repr(float(strike)).replace(".", "d")


def opp_id(expiry: Expiry, side: str, k1: float, k2: float | None) -> str:
    strikes = strike_text(k1) if k2 is None else f"{strike_text(k1)}-{strike_text(k2)}"
    return f"{expiry.prefix}-{strikes}-{_TAGS[side]}"


class Evaluator:
    def __init__(self, gates: Gates, hedges: Callable[[Expiry], Quote | None] = lambda expiry: None):
        self.gates = gates
        #: What hedges an expiry (Market.hedge_quote): its future, else the perpetual.
        self.hedges = hedges
        #: (prefix, side, k1, k2) -> opportunity id: a busy strike names the same ones each update
        self._ids: dict[tuple, str] = {}

    def chain_problem(self, expiry: Expiry, now_ns: int) -> str | None:
        """Why no structure of this expiry may be signalled now, or None."""
        g, chain = self.gates, expiry.chain
        left = chain.key.expiry_ns - now_ns
        if left <= 0:
            return "expired"
        if left < g.settle_guard_ns:
            return "settlement"
        if chain.inverse:  # the hedge needs the forward and something to trade it on
            return self.forward_problem(expiry, now_ns) or self.hedge_problem(expiry, now_ns)
        if not chain.fee_underlying > 0:  # linear: option fees are a fraction of the index
            return "no_index"
        return None

    def hedge_problem(self, expiry: Expiry, now_ns: int) -> str | None:
        """An expiry with no listed future is hedged on the perpetual: it must be quoted, fresh."""
        if expiry.future is not None:
            return None
        perpetual = self.hedges(expiry)
        if perpetual is None or not (perpetual.bid > 0 and perpetual.ask > perpetual.bid):
            return "no_hedge"
        if perpetual.ts_ns < now_ns - self.gates.max_quote_age_ns:
            return "stale_hedge"
        return None

    def structure_problem(self, expiry: Expiry, side: str, now_ns: int) -> str | None:
        """:meth:`chain_problem`, and for a parity trade its forward's."""
        problem = self.chain_problem(expiry, now_ns)
        if problem is None and side in PARITY_SIDES:
            return self.forward_problem(expiry, now_ns)
        return problem

    def forward_problem(self, expiry: Expiry, now_ns: int) -> str | None:
        chain = expiry.chain
        if not (chain.forward_bid > 0 and chain.forward_ask >= chain.forward_bid):
            return "no_forward"
        if expiry.forward_ns < now_ns - self.gates.max_quote_age_ns:
            return "stale_forward"
        return None

    def _parity_here(self, expiry: Expiry, now_ns: int) -> bool:
        """Conversions and reversals: against a listed future with a fresh quote."""
        return (self.gates.parity and expiry.future is not None
                and self.forward_problem(expiry, now_ns) is None)

    def at_strike(self, expiry: Expiry, k: int, now_ns: int) -> dict[str, Candidate]:
        """Every structure with strike k that passes: O(1) when the bound rules them out (the
        usual case), O(N) vectorised otherwise."""
        if self.chain_problem(expiry, now_ns) is not None:
            return {}
        chain, h, floor, out = expiry.chain, self.gates.hedge_rate, self.gates.min_edge_usd, {}
        if chain.may_pass_with(k, floor):
            for side in BOX_SIDES:
                pos = np.flatnonzero(chain.box_edges_with(side, k, h) >= floor)
                if pos.size:
                    self._gate(expiry, chain.boxes(side, *chain.pairs_with(k, pos), h), now_ns, out)
        # (an inverse chain's forward was checked with the chain)
        if (self.gates.parity and expiry.future is not None
                and (chain.inverse or self.forward_problem(expiry, now_ns) is None)):
            for side in PARITY_SIDES:
                if chain.parity_edge(side, k, h) >= floor:
                    self._gate(expiry, chain.parity(side, h, np.array([k])), now_ns, out)
        return out

    def whole(self, expiry: Expiry, now_ns: int) -> dict[str, Candidate]:
        """Every structure of the expiry that passes: O(N^2) pairs, vectorised."""
        if self.chain_problem(expiry, now_ns) is not None:
            return {}
        chain, h, floor, out = expiry.chain, self.gates.hedge_rate, self.gates.min_edge_usd, {}
        i, j = chain.all_pairs()
        for side in BOX_SIDES:
            pos = np.flatnonzero(chain.box_edges(side, i, j, h) >= floor)
            if pos.size:
                self._gate(expiry, chain.boxes(side, i[pos], j[pos], h), now_ns, out)
        if self._parity_here(expiry, now_ns):
            for side in PARITY_SIDES:
                ev = chain.parity(side, h)
                pos = np.flatnonzero(ev.edge >= floor)
                if pos.size:
                    self._gate(expiry, chain.parity(side, h, pos), now_ns, out)
        return out

    def could_pass(self, expiry: Expiry, now_ns: int) -> bool:
        """False only when no structure of the expiry can reach min_edge: boxes by the O(N)
        bound of :meth:`ExpiryChain.best`, parity trades by their own O(N) edges."""
        chain, h, floor = expiry.chain, self.gates.hedge_rate, self.gates.min_edge_usd
        fresh = now_ns - self.gates.max_quote_age_ns
        for side in BOX_SIDES:
            best = chain.best(side, h, fresh, bound=True)
            if best is not None and best[2] >= floor:
                return True
        if self._parity_here(expiry, now_ns):
            return any(bool(np.any(chain.parity(side, h).edge >= floor)) for side in PARITY_SIDES)
        return False

    def _gate(self, expiry: Expiry, ev: Pairs, now_ns: int, out: dict) -> None:
        """The gates besides the edge (already >= min_edge), on arrays; passing ones to ``out``."""
        g, chain = self.gates, expiry.chain
        ok = ((ev.size >= chain.lot * (1 - 1e-9)) & (ev.edge * ev.size >= g.min_total_usd)
              & (ev.oldest_ns >= now_ns - g.max_quote_age_ns))
        if g.min_annual_rate > 0:
            years = (chain.key.expiry_ns - now_ns) / YEAR_NS
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = ev.edge / ev.capital / years
            ok &= np.isnan(ev.capital) | (rate >= g.min_annual_rate)  # no capital: paid to take
        strikes = chain.strikes
        parity = ev.side in PARITY_SIDES
        ids = self._ids
        for n in np.flatnonzero(ok).tolist():
            i, j = int(ev.i[n]), int(ev.j[n])
            k1, k2 = float(strikes[i]), None if parity else float(strikes[j])
            key = (expiry.prefix, ev.side, k1, k2)
            oid = ids.get(key)
            if oid is None:
                if len(ids) > _MAX_IDS:
                    ids.clear()
                oid = ids[key] = opp_id(expiry, ev.side, k1, k2)
            out[oid] = Candidate(oid, expiry, ev.side, i, j, float(ev.edge[n]), float(ev.size[n]),
                                 g.hedge_rate, now_ns)

    def why_not(self, expiry: Expiry, side: str, k1: float, k2: float | None, now_ns: int) -> str:
        """The first gate this structure fails now (for a close's reason)."""
        problem = self.structure_problem(expiry, side, now_ns)
        if problem is not None:
            return problem
        chain = expiry.chain
        i, j = chain.index_of(k1), chain.index_of(k1 if k2 is None else k2)
        s = describe(chain, side, i, j, self.gates.hedge_rate, now_ns)
        return self._reason(expiry, s, i, j, now_ns) or "gone"

    def _reason(self, expiry: Expiry, s: Structure, i: int, j: int, now_ns: int) -> str | None:
        g, chain = self.gates, expiry.chain
        if s.edge_usd != s.edge_usd:  # NaN: a leg has no quote (or its book is stale)
            return "no_quote"
        if min(chain.oldest_ns[i], chain.oldest_ns[j]) < now_ns - g.max_quote_age_ns:
            return "stale_quote"
        if s.size < chain.lot * (1 - 1e-9):
            return "size"
        if s.edge_usd < g.min_edge_usd or s.total_usd < g.min_total_usd:
            return "edge"
        if g.min_annual_rate > 0 and s.annual_rate is not None and s.annual_rate < g.min_annual_rate:
            return "rate"
        return None

