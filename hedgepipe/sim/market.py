"""What the server asks of a market, and Deribit's naming and calendar rules.

Two kinds of market drive the server differently:

- a ``LiveMarket`` (synthetic, chain) is one shared state that the server steps at a fixed
  rate; every step returns events that fan out to the subscribers of their channels, and a
  (re)subscription to a book gets a fresh snapshot of the current state;
- a ``ReplayMarket`` serves each connection its own playback of a recording from the moment
  it subscribes (see ``replay.py``).

Events are ``(key, data)`` where ``key`` is the channel without its interval
(``book.BTC-PERPETUAL``, ``ticker.X``, ``trades.X``, ``deribit_price_index.btc_usd``).
A matching engine can later live in a market: it owns the books the orders would rest in.
"""

from __future__ import annotations

import abc
import datetime as dt
import time

from ..clock import expiry_code

Event = tuple[str, object]
INDEX_NAMES = {"btc_usd": "BTC", "eth_usd": "ETH"}
PERPETUAL_EXPIRY_MS = 32503708800000  # what Deribit lists for perpetuals (year 3000)


class Market(abc.ABC):
    currencies: list[str]

    @abc.abstractmethod
    def instruments(self, currency: str, kind: str | None = None, expired: bool = False) -> list[dict]:
        """``public/get_instruments`` result for one currency (or ``any``)."""

    @abc.abstractmethod
    def instrument(self, name: str) -> dict | None:
        """The instrument dict, or None when not listed."""

    @abc.abstractmethod
    def index_price(self, index_name: str) -> dict | None:
        """``{index_price, estimated_delivery_price}``, or None for an unknown index."""

    @abc.abstractmethod
    def order_book(self, name: str, depth: int | None) -> dict | None:
        """``public/get_order_book`` result, or None for an unknown instrument."""

    @abc.abstractmethod
    def ticker(self, name: str) -> dict | None:
        """``public/ticker`` result (the ticker notification's data), or None."""

    def time_ms(self) -> int:
        """The market's clock (``public/get_time``): a replay runs on the recording's time."""
        return time.time_ns() // 1_000_000

    def has_channel_key(self, key: str) -> bool:
        kind, _, target = key.partition(".")
        if kind == "deribit_price_index":
            return target in INDEX_NAMES and INDEX_NAMES[target] in self.currencies
        return kind in ("book", "ticker", "trades") and self.instrument(target) is not None


class LiveMarket(Market):
    @abc.abstractmethod
    def step(self) -> list[Event]:
        """Advance one tick; return the book changes, trades and index updates it made."""

    @abc.abstractmethod
    def book_snapshot(self, name: str) -> dict:
        """The book notification a new subscriber starts from."""

    @abc.abstractmethod
    def index_event(self, index_name: str) -> dict:
        """The current ``deribit_price_index`` notification data."""


def channel_key(channel: str) -> str | None:
    """``book.X.raw`` -> ``book.X``; None for a channel this simulator does not serve."""
    parts = channel.split(".")
    if len(parts) == 2 and parts[0] == "deribit_price_index":
        return channel
    if len(parts) == 3 and parts[0] in ("book", "ticker", "trades") and parts[2] in ("raw", "100ms"):
        return f"{parts[0]}.{parts[1]}"
    return None


def friday_expiries(now_ms: int, weeklies: int = 2, monthlies: int = 2, quarterlies: int = 2,
                    min_ahead_ms: int = 86_400_000) -> list[tuple[int, str]]:
    """Deribit-style expiries (Fridays 08:00 UTC) after ``now``: the next weeklies, the next
    month-end (last Friday) expiries and the next quarterlies; ``(ms, settlement_period)``."""
    now = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.timezone.utc)
    start = now + dt.timedelta(milliseconds=min_ahead_ms)
    day = start.replace(hour=8, minute=0, second=0, microsecond=0)
    if day < start:
        day += dt.timedelta(days=1)
    day += dt.timedelta(days=(4 - day.weekday()) % 7)
    chosen: dict[int, str] = {}
    weeks = months = quarters = 0
    while quarters < quarterlies and day.year < now.year + 3:
        last_friday = (day + dt.timedelta(days=7)).month != day.month
        ms = int(day.timestamp() * 1000)
        if last_friday and day.month % 3 == 0 and quarters < quarterlies:
            chosen[ms], quarters = "month", quarters + 1
        elif last_friday and months < monthlies:
            chosen[ms], months = "month", months + 1
        elif weeks < weeklies:
            chosen[ms], weeks = "week", weeks + 1
        day += dt.timedelta(days=7)
    return sorted(chosen.items())


def option_name(currency: str, expiry_ms: int, strike: float, is_call: bool) -> str:
    strike_text = f"{strike:.0f}" if float(strike).is_integer() else f"{strike:g}"
    return f"{currency}-{expiry_code(expiry_ms)}-{strike_text}-{'C' if is_call else 'P'}"


def select_instruments(listed: list[dict], currency: str, kind: str | None, expired: bool,
                       now_ms: int) -> list[dict]:
    out = []
    for inst in listed:
        if currency != "any" and inst["base_currency"] != currency:
            continue
        if kind and inst["kind"] != kind:
            continue
        if (inst["expiration_timestamp"] <= now_ms) != expired:
            continue
        out.append(inst)
    return out
