"""Deribit market data, normalized: JSON frames in, ``md.*`` messages out. Pure: no I/O.

feed-deribit calls :func:`decode_frame` on every WebSocket text frame, takes ``channel`` and ``data``
of each ``subscription`` notification (:func:`subscription_parts`) and hands them to
:meth:`DeribitMarketData.on_notification`, which returns the messages to publish and the
instruments to resubscribe. Bad input is counted in ``stats`` and never raises.
docs/deribit.md gives the rules, units and the decoder measurements.
"""

from __future__ import annotations

import bisect
import functools
import math
from decimal import Decimal

import msgspec

from hedgepipe import messages
from hedgepipe.messages import Book, Index, Instrument, Ticker, Trade

# ---- JSON frames ------------------------------------------------------------------------------


class FrameDecodeError(ValueError):
    """A WebSocket frame that is not a JSON object. ``kind`` is the counter it goes to."""

    kind = "malformed_json"


_json_decode = msgspec.json.decode  # ~4x stdlib json.loads on the recording (docs/deribit.md §7)


def decode_frame(text: str | bytes) -> dict:
    """One JSON-RPC frame as a dict. Raises FrameDecodeError for anything else."""
    try:
        frame = _json_decode(text)
    except msgspec.DecodeError as exc:
        raise FrameDecodeError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise FrameDecodeError("malformed JSON: nested too deeply") from None
    if frame.__class__ is not dict:
        raise FrameDecodeError(f"JSON frame is a {type(frame).__name__}, not an object")
    return frame


def subscription_parts(frame: dict) -> tuple[object, object] | None:
    """(channel, data) of a ``subscription`` notification; None for any other frame."""
    if frame.get("method") != "subscription":
        return None
    params = frame.get("params")
    if params.__class__ is not dict:
        return ("", None)  # counted as unknown_channel by on_notification
    return params.get("channel"), params.get("data")


# ---- ticks ------------------------------------------------------------------------------------

_TICK_TOLERANCE = 1e-9  # of a tick: float noise is ~1e-16 relative, a real off-tick price >= 1e-4


def tick_for(price: float, tick_size: float, tick_steps=()) -> float:
    """The tick that applies at ``price``: the step of the highest ``above_price`` below it."""
    tick = tick_size
    for above_price, step in tick_steps:  # ascending
        if price > above_price:
            tick = step
        else:
            break
    return tick


def price_on_tick(price: float, tick_size: float, tick_steps=()) -> bool:
    """True when ``price`` is a whole number of ticks (grid anchored at 0), up to float noise."""
    if not math.isfinite(price):
        return False
    tick = tick_for(price, tick_size, tick_steps)
    ticks = round(price / tick)
    return abs(price - ticks * tick) <= _TICK_TOLERANCE * tick + abs(price) * 1e-15


@functools.lru_cache(maxsize=256)
def _decimals(tick: float) -> int:
    return max(0, -Decimal(repr(tick)).as_tuple().exponent)


def round_to_tick(price: float, tick_size: float, tick_steps=(), mode: str = "nearest") -> float:
    """``price`` on the tick grid: ``nearest`` (half up), ``down`` or ``up``.

    The result is the float nearest the decimal value (0.0015, not 0.0015000000000000002).
    """
    tick = tick_for(price, tick_size, tick_steps)
    quotient = price / tick
    if mode == "nearest":
        ticks = math.floor(quotient + 0.5)
    elif mode == "down":
        ticks = math.floor(quotient + _TICK_TOLERANCE)
    elif mode == "up":
        ticks = math.ceil(quotient - _TICK_TOLERANCE)
    else:
        raise ValueError(f"mode {mode!r}: want nearest, down or up")
    return round(ticks * tick, _decimals(tick))


# ---- the order book ---------------------------------------------------------------------------

APPLIED = "applied"
GAP = "gap"                      # prev_change_id is not our change_id: stale until a snapshot
STALE_IGNORED = "stale_ignored"  # a change while stale
BACKWARDS = "backwards"          # change_id below ours
DUPLICATE = "duplicate"          # change_id equal to ours
MALFORMED = "malformed"          # unreadable: the book is stale until a snapshot

_ACTIONS = frozenset(("new", "change", "delete"))


class Malformed(ValueError):
    """Data that does not have the shape Deribit documents; the message says where."""


def _levels(raw) -> list[tuple[str, float, float]]:
    if raw.__class__ is not list:
        raise Malformed(f"levels are not a list: {raw!r:.60}")
    out = []
    for level in raw:
        if level.__class__ not in (list, tuple) or len(level) != 3:
            raise Malformed(f"level is not [action, price, amount]: {level!r:.60}")
        action, price, amount = level
        if action.__class__ is not str or action not in _ACTIONS:  # a list would not even hash
            raise Malformed(f"level action {action!r:.20}")
        # Inline fast path for the usual two finite floats (x - x == 0 is false for NaN/inf).
        if price.__class__ is not float or price - price != 0.0:
            price = _number(price, "price")
        if amount.__class__ is not float or amount - amount != 0.0:
            amount = _number(amount, "amount")
        if amount < 0.0:
            raise Malformed(f"negative amount {amount!r}")
        out.append((action, price, amount))
    return out


def _number(value, what: str) -> float:
    """A finite JSON number as float (bool, str, NaN, inf refused)."""
    cls = value.__class__
    if cls is float:
        if value - value == 0.0:  # false for NaN and +-inf
            return value
    elif cls is int:
        return float(value)
    raise Malformed(f"{what} is not a finite number: {value!r:.30}")


class OrderBook:
    """One instrument's book from Deribit ``snapshot`` + ``change`` notifications.

    Level problems are counted in ``stats`` (shared with the normalizer): ``level_missing`` for a
    ``delete`` or ``change`` of an absent price (a delete is then a no-op; a change inserts the
    level, since it carries the venue's full amount), ``level_exists`` for a ``new`` on a
    present price (applied as a change), ``level_zero`` for new/change with amount 0 (removed).
    """

    __slots__ = ("instrument", "bids", "asks", "_bid_px", "_ask_px", "change_id", "stale", "stats")

    def __init__(self, instrument: str, stats: dict[str, int] | None = None):
        self.instrument = instrument
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._bid_px: list[float] = []  # ascending, like _ask_px; best bid is the last
        self._ask_px: list[float] = []
        self.change_id: int | None = None
        self.stale = True  # until the first snapshot
        self.stats = stats if stats is not None else {}

    def apply(self, data: dict) -> str:
        """Apply one notification's ``data``; returns one of the outcome constants."""
        try:
            return self._apply(data)
        except Malformed:
            self.stale = True
            return MALFORMED

    def _apply(self, data: dict) -> str:
        if data.__class__ is not dict:
            raise Malformed("book data is not an object")
        change_id = data.get("change_id")
        if change_id.__class__ is not int:
            raise Malformed(f"change_id {change_id!r:.30}")
        kind = data.get("type")
        if kind == "change":
            if self.stale:
                return STALE_IGNORED
            if change_id <= self.change_id:
                return DUPLICATE if change_id == self.change_id else BACKWARDS
            prev = data.get("prev_change_id")
            if prev.__class__ is not int:
                raise Malformed(f"prev_change_id {prev!r:.30}")
            if prev != self.change_id:
                self.stale = True
                return GAP
            bids, asks = _levels(data.get("bids")), _levels(data.get("asks"))
            self._change(self.bids, self._bid_px, bids)
            self._change(self.asks, self._ask_px, asks)
        elif kind == "snapshot":
            if not self.stale and change_id <= self.change_id:
                return DUPLICATE if change_id == self.change_id else BACKWARDS
            bids, asks = _levels(data.get("bids")), _levels(data.get("asks"))
            self.bids = {p: a for _, p, a in bids if a > 0.0}
            self.asks = {p: a for _, p, a in asks if a > 0.0}
            self._bid_px = sorted(self.bids)
            self._ask_px = sorted(self.asks)
            self.stale = False
        else:
            raise Malformed(f"book type {kind!r:.20}")
        self.change_id = change_id
        return APPLIED

    def _change(self, side: dict, prices: list, levels) -> None:
        stats = self.stats
        for action, price, amount in levels:
            present = price in side
            if action == "delete" or amount == 0.0:
                if action != "delete":
                    stats["level_zero"] = stats.get("level_zero", 0) + 1
                if present:
                    del side[price]
                    del prices[bisect.bisect_left(prices, price)]
                elif action == "delete":
                    stats["level_missing"] = stats.get("level_missing", 0) + 1
                continue
            if not present:
                if action == "change":
                    stats["level_missing"] = stats.get("level_missing", 0) + 1
                bisect.insort(prices, price)
            elif action == "new":
                stats["level_exists"] = stats.get("level_exists", 0) + 1
            side[price] = amount

    def top(self, depth: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """(bids best first, asks best first), at most ``depth`` levels each."""
        bids, asks = self.bids, self.asks
        return ([(p, bids[p]) for p in self._bid_px[:-depth - 1:-1]] if depth > 0 else [],
                [(p, asks[p]) for p in self._ask_px[:depth]])

    @property
    def crossed(self) -> bool:
        return bool(self._bid_px and self._ask_px and self._bid_px[-1] >= self._ask_px[0])


# ---- the normalizer ---------------------------------------------------------------------------

#: Every counter in DeribitMarketData.stats, all present from the start (heartbeats show zeros).
STAT_NAMES = ("unknown_channel", "not_in_universe", "expired", "malformed", "book_gap",
              "book_backwards", "book_duplicate", "book_stale_ignored", "level_missing",
              "level_exists", "level_zero", "crossed", "resync_requested")
_NS_PER_MS = 1_000_000
_MAX_CACHED_TOPICS = 100_000


def _optional(value, what: str) -> float | None:
    return None if value is None else _number(value, what)


def _event_ns(data: dict) -> int:
    """Deribit ``timestamp`` (integer ms) as ns."""
    ts = data.get("timestamp")
    if ts.__class__ is not int or ts < 0:
        raise Malformed(f"timestamp {ts!r:.30}")
    return ts * _NS_PER_MS


def _instrument_of(rest: str) -> str | None:
    """``{name}.{interval}`` -> name; None when the rest has another shape."""
    cut = rest.rfind(".")
    name = rest[:cut]
    return name if cut > 0 and "." not in name else None


class DeribitMarketData:
    """Deribit notifications -> ``md.book``/``md.ticker``/``md.trade``/``md.index`` messages.

    ``instruments`` (name -> Instrument) is the universe: notifications for other instruments,
    or for an instrument past its expiry (by the notification's own timestamp), are counted and
    dropped. None accepts every instrument. ``books`` holds each instrument's OrderBook.
    """

    def __init__(self, venue: str = "deribit", depth: int = 10,
                 instruments: dict[str, Instrument] | None = None):
        self.venue = venue
        self.depth = depth
        self.instruments = instruments
        self.books: dict[str, OrderBook] = {}
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)
        #: (counter, detail) of the latest problem, for a log line once per kind.
        self.last_issue: tuple[str, str] | None = None
        self._awaiting_snapshot: set[str] = set()  # resync asked for, snapshot not yet applied
        self._topics: dict[tuple[str, str], str] = {}
        self._handlers = {"book": self._on_book, "ticker": self._on_ticker,
                          "trades": self._on_trades, "deribit_price_index": self._on_index}

    # -- entry points --

    def on_notification(self, channel: str, data, ts_recv_ns: int
                        ) -> tuple[list[tuple[str, messages.Envelope]], list[str]]:
        """(messages to publish as (topic, msg), instrument names to resubscribe)."""
        outs: list = []
        resync: list[str] = []
        handler = None
        if channel.__class__ is str:
            dot = channel.find(".")
            handler = self._handlers.get(channel[:dot]) if dot > 0 else None
        if handler is None:
            self._count("unknown_channel", f"channel {channel!r:.80}")
        else:
            handler(channel[dot + 1:], data, ts_recv_ns, outs, resync)
        return outs, resync

    def connection_lost(self, ts_recv_ns: int) -> list[tuple[str, Book]]:
        """Every fresh book goes stale (published once); resubscribing brings new snapshots."""
        outs: list = []
        for name, book in self.books.items():
            if not book.stale:
                book.stale = True
                outs.append(self._book_msg(name, book, ts_recv_ns, ts_recv_ns))
            self._awaiting_snapshot.add(name)
        return outs

    def forget(self, name: str) -> None:
        """Drop an instrument's book (unsubscribed, expired)."""
        self.books.pop(name, None)
        self._awaiting_snapshot.discard(name)

    # -- helpers --

    def _count(self, kind: str, detail: str) -> None:
        self.stats[kind] = self.stats.get(kind, 0) + 1
        self.last_issue = (kind, detail)

    def _topic(self, kind: str, name: str) -> str:
        key = (kind, name)
        topic = self._topics.get(key)
        if topic is None:
            topic = messages.md_topic(kind, self.venue, name)
            if len(self._topics) < _MAX_CACHED_TOPICS:
                self._topics[key] = topic
        return topic

    def _known(self, name: str) -> Instrument | None | bool:
        """False (counted) when outside the universe, else the Instrument (None: no universe)."""
        if self.instruments is None:
            return None
        inst = self.instruments.get(name)
        if inst is None:
            self._count("not_in_universe", name)
            return False
        return inst

    def _expired(self, inst: Instrument | None, ts_event: int) -> bool:
        if inst is not None and inst.expiry_ns is not None and ts_event >= inst.expiry_ns:
            self._count("expired", inst.name)
            return True
        return False

    def _request_resync(self, name: str, resync: list[str]) -> None:
        self._awaiting_snapshot.add(name)
        resync.append(name)
        self.stats["resync_requested"] += 1

    def _book_msg(self, name: str, book: OrderBook, ts_event: int, ts_recv: int) -> tuple[str, Book]:
        bids, asks = book.top(self.depth)
        return self._topic("book", name), Book(
            venue=self.venue, instrument=name, bids=bids, asks=asks,
            change_id=book.change_id or 0, stale=book.stale, ts_event=ts_event, ts_recv=ts_recv)

    # -- channels --

    def _on_book(self, rest: str, data, ts_recv: int, outs: list, resync: list) -> None:
        name = _instrument_of(rest)
        if name is None:  # e.g. grouped books book.{name}.{group}.{depth}.{interval}
            self._count("unknown_channel", f"book.{rest:.80}")
            return
        inst = self._known(name)
        if inst is False:
            return
        book = self.books.get(name)
        try:
            if data.__class__ is not dict:
                raise Malformed("book data is not an object")
            ts_event = _event_ns(data)
            if data.get("instrument_name") != name:
                raise Malformed(f"instrument_name {data.get('instrument_name')!r:.60} on book.{name}")
        except Malformed as exc:
            was_fresh = book is not None and not book.stale
            if book is not None:
                book.stale = True
            self._book_broken(name, book, was_fresh, data, str(exc), ts_recv, ts_recv, outs, resync)
            return
        if self._expired(inst, ts_event):
            self.forget(name)
            return
        if book is None:
            book = self.books[name] = OrderBook(name, self.stats)
        was_fresh = not book.stale
        outcome = book.apply(data)
        if outcome is APPLIED:
            if data["type"] == "snapshot":
                self._awaiting_snapshot.discard(name)
            if book.crossed:
                self._count("crossed", f"{name} change_id {book.change_id}")
            outs.append(self._book_msg(name, book, ts_event, ts_recv))
        elif outcome is GAP:
            self._count("book_gap", f"{name}: prev_change_id {data.get('prev_change_id')} "
                                    f"after change_id {book.change_id}")
            self._book_broken(name, book, was_fresh, data, None, ts_event, ts_recv, outs, resync)
        elif outcome is MALFORMED:
            self._book_broken(name, book, was_fresh, data, f"{name}: unreadable book data",
                              ts_event, ts_recv, outs, resync)
        elif outcome is STALE_IGNORED:
            self.stats["book_stale_ignored"] += 1
            if name not in self._awaiting_snapshot:  # a change before any snapshot
                self._request_resync(name, resync)
        elif outcome is BACKWARDS:
            self._count("book_backwards", f"{name}: change_id {data['change_id']} < {book.change_id}")
        else:
            self._count("book_duplicate", f"{name}: change_id {data['change_id']} again")

    def _book_broken(self, name: str, book: OrderBook | None, was_fresh: bool, data,
                     malformed: str | None, ts_event: int, ts_recv: int, outs: list,
                     resync: list) -> None:
        """A break in the chain: publish the stale book once and resubscribe this instrument."""
        if malformed is not None:
            self._count("malformed", malformed)
        if was_fresh:
            outs.append(self._book_msg(name, book, ts_event, ts_recv))
            self._request_resync(name, resync)
        elif not (data.__class__ is dict and data.get("type") == "change"):
            # While stale, changes are ignored anyway; a broken snapshot is the one we waited for.
            self._request_resync(name, resync)

    def _on_ticker(self, rest: str, data, ts_recv: int, outs: list, resync: list) -> None:
        name = _instrument_of(rest)
        if name is None:
            self._count("unknown_channel", f"ticker.{rest:.80}")
            return
        inst = self._known(name)
        if inst is False:
            return
        try:
            if data.__class__ is not dict:
                raise Malformed("ticker data is not an object")
            ts_event = _event_ns(data)
            get = data.get
            if get("instrument_name") != name:
                raise Malformed(f"instrument_name {get('instrument_name')!r:.60} on ticker.{name}")
            if self._expired(inst, ts_event):
                return
            # An empty side comes as 0.0 (or null) price and amount, and 0.0 IV: all None here.
            bid_amount = _optional(get("best_bid_amount"), "best_bid_amount")
            bid = _optional(get("best_bid_price"), "best_bid_price")
            if bid is None or not bid_amount:
                bid = bid_amount = bid_iv = None
            else:
                bid_iv = _optional(get("bid_iv"), "bid_iv")
            ask_amount = _optional(get("best_ask_amount"), "best_ask_amount")
            ask = _optional(get("best_ask_price"), "best_ask_price")
            if ask is None or not ask_amount:
                ask = ask_amount = ask_iv = None
            else:
                ask_iv = _optional(get("ask_iv"), "ask_iv")
            greeks = get("greeks")
            if greeks is None:  # futures and perpetuals
                delta = gamma = vega = theta = rho = None
            elif greeks.__class__ is dict:
                g = greeks.get
                delta, gamma = _optional(g("delta"), "delta"), _optional(g("gamma"), "gamma")
                vega, theta = _optional(g("vega"), "vega"), _optional(g("theta"), "theta")
                rho = _optional(g("rho"), "rho")
            else:
                raise Malformed(f"greeks {greeks!r:.40}")
            underlying_index = get("underlying_index")
            if underlying_index is not None and underlying_index.__class__ is not str:
                raise Malformed(f"underlying_index {underlying_index!r:.40}")
            msg = Ticker(
                venue=self.venue, instrument=name, ts_event=ts_event, ts_recv=ts_recv,
                bid=bid, bid_amount=bid_amount, ask=ask, ask_amount=ask_amount,
                last=_optional(get("last_price"), "last_price"),
                mark_price=_optional(get("mark_price"), "mark_price"),
                mark_iv=_optional(get("mark_iv"), "mark_iv"), bid_iv=bid_iv, ask_iv=ask_iv,
                underlying_price=_optional(get("underlying_price"), "underlying_price"),
                underlying_index=underlying_index,
                index_price=_optional(get("index_price"), "index_price"),
                interest_rate=_optional(get("interest_rate"), "interest_rate"),
                open_interest=_optional(get("open_interest"), "open_interest"),
                delta=delta, gamma=gamma, vega=vega, theta=theta, rho=rho)
        except Malformed as exc:
            self._count("malformed", f"ticker.{name}: {exc}")
            return
        outs.append((self._topic("ticker", name), msg))

    def _on_trades(self, rest: str, data, ts_recv: int, outs: list, resync: list) -> None:
        # trades.{name}.{interval} and trades.{kind}.{currency}.{interval}: each trade names its
        # instrument, so both read the same way.
        if data.__class__ is not list:
            self._count("malformed", f"trades.{rest:.60}: data is not a list")
            return
        for trade in data:
            try:
                if trade.__class__ is not dict:
                    raise Malformed("trade is not an object")
                name = trade.get("instrument_name")
                if name.__class__ is not str or not name:
                    raise Malformed(f"instrument_name {name!r:.40}")
                ts_event = _event_ns(trade)
                inst = self._known(name)
                if inst is False or self._expired(inst, ts_event):
                    continue
                trade_id = trade.get("trade_id")
                if trade_id.__class__ is int:
                    trade_id = str(trade_id)
                elif trade_id.__class__ is not str:
                    raise Malformed(f"trade_id {trade_id!r:.40}")
                side = trade.get("direction")
                if side != "buy" and side != "sell":
                    raise Malformed(f"direction {side!r:.20}")
                msg = Trade(venue=self.venue, instrument=name, ts_event=ts_event, ts_recv=ts_recv,
                            trade_id=trade_id, price=_number(trade.get("price"), "price"),
                            amount=_number(trade.get("amount"), "amount"), side=side,
                            index_price=_optional(trade.get("index_price"), "index_price"),
                            iv=_optional(trade.get("iv"), "iv"))
            except Malformed as exc:
                self._count("malformed", f"trades.{rest:.60}: {exc}")
                continue
            outs.append((self._topic("trade", name), msg))

    def _on_index(self, rest: str, data, ts_recv: int, outs: list, resync: list) -> None:
        if not rest or "." in rest:
            self._count("unknown_channel", f"deribit_price_index.{rest:.80}")
            return
        try:
            if data.__class__ is not dict:
                raise Malformed("index data is not an object")
            ts_event = _event_ns(data)
            if data.get("index_name") != rest:
                raise Malformed(f"index_name {data.get('index_name')!r:.40}")
            price = _number(data.get("price"), "price")
        except Malformed as exc:
            self._count("malformed", f"deribit_price_index.{rest}: {exc}")
            return
        outs.append((self._topic("index", rest), Index(
            venue=self.venue, name=rest, price=price, ts_event=ts_event, ts_recv=ts_recv)))
