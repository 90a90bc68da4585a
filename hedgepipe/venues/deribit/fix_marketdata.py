"""Deribit FIX market data: SecurityListRequest(x)/SecurityList(y), MarketDataRequest(V), and books
kept from MarketDataSnapshotFullRefresh(W) and MarketDataIncrementalRefresh(X).

Books come out in the same normalized shape as the WebSocket path: per instrument a list of
(price, amount) per side, bids best (highest) first, asks best (lowest) first.
"""

from __future__ import annotations

import logging
from collections import Counter

import simplefix

from hedgepipe.logs import OncePerKind

log = logging.getLogger("hedgepipe.fix.md")

BID, ASK, TRADE = b"0", b"1", b"2"                 # MDEntryType(269)
NEW, CHANGE, DELETE = b"0", b"1", b"2"             # MDUpdateAction(279)
_KINDS = {b"OPT": "option", b"FUT": "future", b"FXSPOT": "spot", b"PERPETUAL": "perpetual"}


def security_list_request(req_id: str, currency: str | None = None) -> tuple[bytes, list]:
    """All instruments (559=4), optionally of one currency."""
    fields: list = [(320, req_id), (559, 4)]
    if currency:
        fields.append((15, currency))
    return b"x", fields


def market_data_request(req_id: str, symbols: list[str], depth: int = 0,
                        subscribe: bool = True) -> tuple[bytes, list]:
    """Snapshot + incremental updates (263=1, 265=1) of bids, asks and trades."""
    fields: list = [(262, req_id), (263, 1 if subscribe else 2), (264, depth), (265, 1),
                    (267, 3), (269, 0), (269, 1), (269, 2), (146, len(symbols))]
    fields += [(55, s) for s in symbols]
    return b"V", fields


def groups(m: simplefix.FixMessage, count_tag: bytes) -> list[dict[bytes, bytes]]:
    """Split the repeating group after ``count_tag``: an entry starts where its first tag recurs."""
    entries: list[dict[bytes, bytes]] = []
    first = None
    inside = False
    for tag, value in m.pairs:
        if tag == count_tag:
            inside = True
            continue
        if not inside or tag == b"10":
            continue
        if first is None:
            first = tag
        if tag == first:
            entries.append({})
        entries[-1][tag] = value
    return entries


def parse_security_list(m: simplefix.FixMessage) -> list[dict]:
    """SecurityList(y) into instrument dicts with the WebSocket names where they exist."""
    out = []
    for e in groups(m, b"146"):
        name = e.get(b"55", b"").decode()
        if not name:
            continue
        kind = e.get(b"167", b"")
        inst = {"instrument_name": name, "kind": _KINDS.get(kind, kind.decode().lower()),
                "base_currency": e.get(b"15", b"").decode() or None,
                "tick_size": _num(e.get(b"969")), "min_trade_amount": _num(e.get(b"562")),
                "contract_size": _num(e.get(b"231")), "expiry": e.get(b"541", b"").decode() or None}
        if b"202" in e:
            inst["strike"] = _num(e[b"202"])
            inst["option_type"] = {b"0": "put", b"1": "call"}.get(e.get(b"201"))
        out.append(inst)
    return out


def _num(value: bytes | None) -> float | None:
    return float(value) if value else None


class FixBooks:
    """Order books per instrument from W (replace) and X (new/change/delete by price).

    A change or delete of a level that is not in the book means an update was lost: the book is
    marked stale and left out of ``books()`` until a new snapshot (W) arrives.
    """

    def __init__(self) -> None:
        self._books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
        self.stale: set[str] = set()
        self.counters: Counter[str] = Counter()
        self._report = OncePerKind(log)

    def apply(self, m: simplefix.FixMessage) -> tuple[set[str], list[dict]]:
        """Apply a W or X; returns (instruments whose book changed, trades)."""
        mtype = m.get(35)
        symbol = (m.get(55) or b"").decode()
        changed: set[str] = set()
        trades: list[dict] = []
        if mtype == b"W":
            if not symbol:
                self._bad("no_symbol", "W without Symbol ignored")
                return changed, trades
            self._books[symbol] = ({}, {})
            self.stale.discard(symbol)
            changed.add(symbol)
        elif mtype != b"X":
            return changed, trades
        for e in groups(m, b"268"):
            name = (e.get(b"55") or b"").decode() or symbol
            kind, px, size = e.get(b"269"), e.get(b"270"), e.get(b"271")
            try:
                price, amount = float(px), float(size or 0)
            except (TypeError, ValueError):
                self._bad("bad_entry", "MD entry without a numeric price ignored", instrument=name)
                continue
            if kind == TRADE:
                trades.append({"instrument": name, "price": price, "amount": amount,
                               "side": {b"1": "buy", b"2": "sell"}.get(e.get(b"54"))})
                continue
            if kind not in (BID, ASK) or name in self.stale:
                continue
            if name not in self._books:
                self._go_stale(name, "update for a book with no snapshot")
                continue
            side = self._books[name][0 if kind == BID else 1]
            action = NEW if mtype == b"W" else e.get(b"279", NEW)
            if action == DELETE or (action != NEW and amount == 0):
                if side.pop(price, None) is None:
                    self._go_stale(name, "delete of a level that is not in the book", price=price)
                    continue
            elif action == CHANGE and price not in side:
                self._go_stale(name, "change of a level that is not in the book", price=price)
                continue
            else:
                side[price] = amount
            changed.add(name)
        return changed - self.stale, trades

    def book(self, instrument: str) -> dict | None:
        if instrument in self.stale or instrument not in self._books:
            return None
        bids, asks = self._books[instrument]
        return {"instrument": instrument, "bids": sorted(bids.items(), reverse=True),
                "asks": sorted(asks.items())}

    def _go_stale(self, name: str, why: str, **context) -> None:
        self.stale.add(name)
        self._books.pop(name, None)
        self._bad("book_stale", f"book marked stale: {why}", instrument=name, **context)

    def _bad(self, kind: str, message: str, **context) -> None:
        self.counters[kind] += 1
        self._report(kind, message, **context)
