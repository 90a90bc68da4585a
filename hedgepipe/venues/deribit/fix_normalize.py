"""Deribit FIX application messages -> the normalized ``md.*`` messages of the WebSocket path.

SecurityList(y) becomes :class:`messages.Instrument` (through :func:`parse_instrument`, so both
transports apply the same rules); W/X become :class:`messages.Book` from :class:`FixBooks`, and
trade entries become :class:`messages.Trade`. Pure: no I/O.

Stale semantics follow the WebSocket path: when a book breaks (a change or delete of a level that
is not in it, an update before any snapshot), its last levels are published once with
``stale=True`` and the instrument is returned for a new MarketDataRequest snapshot; nothing more
is published for it until the new W arrives.
"""

from __future__ import annotations

import datetime as dt

import simplefix

from hedgepipe import messages
from hedgepipe.messages import Book, Instrument, Trade
from hedgepipe.venues.deribit.fix_marketdata import FixBooks, groups, parse_security_list
from hedgepipe.venues.deribit.instruments import InstrumentError, parse_instrument

_SETTLEMENT_HOUR = 8  # Deribit expiries settle at 08:00 UTC on MaturityDate(541)
_SIDES = {b"1": "buy", b"2": "sell"}


def security_list_instruments(m: simplefix.FixMessage, venue: str = "deribit"
                              ) -> tuple[list[Instrument], list[str]]:
    """(instruments, problems) of a SecurityList; one bad entry does not hide the others."""
    out: list[Instrument] = []
    problems: list[str] = []
    for raw in parse_security_list(m):
        try:
            out.append(parse_instrument(_as_get_instruments(raw), venue))
        except InstrumentError as exc:
            problems.append(str(exc))
    return out, problems


def _as_get_instruments(raw: dict) -> dict:
    """A parse_security_list dict in the shape of a ``public/get_instruments`` item."""
    name = raw["instrument_name"]
    base = raw.get("base_currency") or name.split("-")[0].split("_")[0]
    pair = name.split("-")[0].split("_")
    linear = len(pair) == 2  # BTC_USDC-PERPETUAL: quoted and settled in the second currency
    kind = raw["kind"]
    item = {"instrument_name": name, "kind": "future" if kind == "perpetual" else kind,
            "base_currency": base, "tick_size": raw.get("tick_size"),
            "min_trade_amount": raw.get("min_trade_amount"), "contract_size": raw.get("contract_size")}
    if linear:
        item.update(quote_currency=pair[1], settlement_currency=pair[1], instrument_type="linear")
    else:
        item["quote_currency"] = base if kind == "option" else "USD"
    if kind == "perpetual" or name.endswith("-PERPETUAL"):
        item["settlement_period"] = "perpetual"
    elif raw.get("expiry"):
        try:
            day = dt.datetime.strptime(raw["expiry"], "%Y%m%d").replace(
                hour=_SETTLEMENT_HOUR, tzinfo=dt.timezone.utc)
        except ValueError:
            raise InstrumentError(f"instrument {name!r}: MaturityDate {raw['expiry']!r} is not YYYYMMDD")
        item["expiration_timestamp"] = int(day.timestamp() * 1000)
    if kind == "option":
        item["strike"], item["option_type"] = raw.get("strike"), raw.get("option_type")
    return item


class FixMarketData:
    """W/X -> md.book and md.trade for the instruments in ``instruments`` (None: all)."""

    def __init__(self, venue: str = "deribit", depth: int = 10):
        self.venue = venue
        self.depth = depth
        self.books = FixBooks()
        self.instruments: dict[str, Instrument] = {}
        self.stats: dict[str, int] = {"not_in_universe": 0, "trade_malformed": 0, "resync_requested": 0}
        self._published: dict[str, tuple[list, list]] = {}  # last fresh levels, per instrument
        self._awaiting: set[str] = set()  # snapshot re-requested, W not yet in

    def on_message(self, m: simplefix.FixMessage, ts_recv: int
                   ) -> tuple[list[tuple[str, messages.Envelope]], list[str]]:
        """(messages to publish, instruments whose snapshot must be requested again)."""
        mtype = m.get(35)
        symbol = (m.get(55) or b"").decode()
        if symbol and self.instruments and symbol not in self.instruments:
            self.stats["not_in_universe"] += 1
            return [], []
        stale_before = set(self.books.stale)
        changed, _ = self.books.apply(m)
        if mtype == b"W":
            self._awaiting.discard(symbol)
        outs: list = []
        for name in sorted(changed):
            book = self.books.book(name)
            bids, asks = book["bids"][:self.depth], book["asks"][:self.depth]
            self._published[name] = (bids, asks)
            outs.append((messages.md_topic("book", self.venue, name), Book(
                venue=self.venue, instrument=name, bids=bids, asks=asks, ts_event=ts_recv, ts_recv=ts_recv)))
        resync = []
        for name in sorted(self.books.stale - stale_before):
            self._went_stale(name, self._published.pop(name, ([], [])), ts_recv, outs, resync)
        if mtype == b"X":
            outs += self._trades(m, symbol, ts_recv)
        return outs, resync

    def connection_lost(self, ts_recv: int) -> list[tuple[str, Book]]:
        """Every fresh book goes stale (published once); the new session re-requests snapshots."""
        outs = []
        for name, levels in sorted(self._published.items()):
            self._went_stale(name, levels, ts_recv, outs, None)
        self._published.clear()
        self._awaiting.clear()
        self.books = FixBooks()
        return outs

    def sequence_gap(self, ts_recv: int) -> tuple[list[tuple[str, Book]], list[str]]:
        """Messages were skipped (GapFill/Reset over market data): any book may have missed an
        update, so each fresh one is published stale once and returned for a new snapshot."""
        outs, resync = [], []
        for name, levels in sorted(self._published.items()):
            self.books.stale.add(name)
            self.books.counters["book_stale"] += 1
            self._went_stale(name, levels, ts_recv, outs, resync)
        self._published.clear()
        return outs, resync

    def _went_stale(self, name: str, levels, ts_recv: int, outs: list, resync: list | None) -> None:
        """Publish the book once as stale (its last levels); ask once for a new snapshot
        (``resync`` None: the next session asks for every book anyway)."""
        bids, asks = levels
        outs.append((messages.md_topic("book", self.venue, name), Book(
            venue=self.venue, instrument=name, bids=bids, asks=asks, stale=True,
            ts_event=ts_recv, ts_recv=ts_recv)))
        if resync is not None and name not in self._awaiting:
            self._awaiting.add(name)
            self.stats["resync_requested"] += 1
            resync.append(name)

    def _trades(self, m: simplefix.FixMessage, symbol: str, ts_recv: int) -> list:
        outs = []
        for e in groups(m, b"268"):
            if e.get(b"269") != b"2":
                continue
            name = (e.get(b"55") or b"").decode() or symbol
            trade_id = (e.get(b"100009") or e.get(b"278") or b"").decode()
            side = _SIDES.get(e.get(b"54"))
            stamp = e.get(b"272") or b""
            try:
                price, amount = float(e[b"270"]), float(e[b"271"])
                if not (trade_id and side and name):
                    raise ValueError("no trade id, side or symbol")
            except (KeyError, ValueError):
                self.stats["trade_malformed"] += 1
                continue
            ts_event = int(stamp) * 1_000_000 if stamp.isdigit() else ts_recv
            outs.append((messages.md_topic("trade", self.venue, name), Trade(
                venue=self.venue, instrument=name, trade_id=trade_id, price=price, amount=amount,
                side=side, ts_event=ts_event, ts_recv=ts_recv)))
        return outs
