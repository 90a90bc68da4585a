"""The lifecycle of each opportunity: open, update when it changed enough, close when gone.

An opportunity is known by its id (venue-independent structure name, e.g.
``BTC-27DEC26-90000-100000-LBOX``). :meth:`Opportunities.reconcile` compares what passes now
within a scope (the structures of one strike, or of one expiry) with what is open in that
scope, and returns the events to publish. Indexes by strike and by expiry keep a scope's
lookup O(open structures in it).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from .chain import ChainKey
from .detail import Structure
from .evaluate import Candidate
from .market import Expiry

OPEN, UPDATE, CLOSE = "open", "update", "close"


@dataclass
class OpenOpportunity:
    opp_id: str
    expiry: Expiry
    #: The structure as last published.
    structure: Structure
    group_id: str = ""


@dataclass(frozen=True)
class Event:
    event: str
    opp: OpenOpportunity
    #: The structure now (for a close: as last published).
    structure: Structure
    reason: str = ""


@dataclass
class Opportunities:
    #: An update is published when the edge per contract moved by more than this (USD)...
    update_edge_usd: float = 1.0
    #: ...or the size by more than this fraction.
    update_size_frac: float = 0.1
    open: dict[str, OpenOpportunity] = field(default_factory=dict)
    _by_strike: dict[tuple[ChainKey, float], set[str]] = field(default_factory=lambda: defaultdict(set))
    _by_chain: dict[ChainKey, set[str]] = field(default_factory=lambda: defaultdict(set))

    def at_strike(self, key: ChainKey, strike: float) -> set[str]:
        return set(self._by_strike.get((key, strike), ()))

    def in_chain(self, key: ChainKey) -> set[str]:
        return set(self._by_chain.get(key, ()))

    def reconcile(self, scope: set[str], passing: dict[str, Candidate],
                  why_not: Callable[[OpenOpportunity], str]) -> list[Event]:
        """Events that bring the open set of ``scope`` in line with ``passing``.

        ``scope`` are the open ids the evaluation covered; a passing id outside it is opened.
        """
        events = []
        for oid in sorted(scope - passing.keys()):
            opp = self.open.get(oid)
            if opp is not None:
                events.append(self.close(opp, why_not(opp)))
        for oid, cand in passing.items():
            opp = self.open.get(oid)
            if opp is None:
                opp = OpenOpportunity(oid, cand.expiry, cand.structure)
                self._index(opp, add=True)
                events.append(Event(OPEN, opp, cand.structure))
            elif self._changed(opp.structure, cand):
                opp.structure = cand.structure
                events.append(Event(UPDATE, opp, cand.structure))
        return events

    def close(self, opp: OpenOpportunity, reason: str) -> Event:
        self._index(opp, add=False)
        return Event(CLOSE, opp, opp.structure, reason)

    def _changed(self, old: Structure, new: Candidate) -> bool:
        if abs(new.edge_usd - old.edge_usd) > self.update_edge_usd:
            return True
        return abs(new.size - old.size) > self.update_size_frac * old.size

    def _index(self, opp: OpenOpportunity, add: bool) -> None:
        key = opp.expiry.chain.key
        strikes = {opp.structure.k1, opp.structure.k2 if opp.structure.k2 is not None else opp.structure.k1}
        if add:
            self.open[opp.opp_id] = opp
            self._by_chain[key].add(opp.opp_id)
            for strike in strikes:
                self._by_strike[(key, strike)].add(opp.opp_id)
            return
        self.open.pop(opp.opp_id, None)
        _discard(self._by_chain, key, opp.opp_id)
        for strike in strikes:
            _discard(self._by_strike, (key, strike), opp.opp_id)


def _discard(index: dict, key, oid: str) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.discard(oid)
        if not ids:
            del index[key]
