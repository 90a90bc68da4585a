"""Spot prices from ccxt venues, polled in a background thread.

ccxt's synchronous client blocks on HTTP, so a thread owns every request and hands the
daemon :class:`SpotEvent` items through a queue; the runtime polls :attr:`SpotPoller.handle`
(a socketpair) like any other input, as :mod:`hedgepipe.venues.deribit.jsonrpc` does.

Parsing is ccxt's own (``fetch_ticker`` -> the venue's ``parse_ticker``); we only choose a
price from the unified ticker (:func:`ticker_price`). ``replay_dir`` serves each venue's HTTP
answers from recorded files instead of the network (offline demos and tests): ccxt still
builds the request and parses the answer exactly as it would live.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ccxt

from ...threadsource import ThreadSource

log = logging.getLogger("hedgepipe.ccxt.spot")


@dataclass(slots=True)
class SpotEvent:
    """``kind`` "price": ``price`` for ``symbol`` on ``venue``; "error": a failed fetch."""

    kind: str
    venue: str
    symbol: str
    ts_recv: int
    price: float = 0.0
    #: The venue's own timestamp in ns, 0 when it gives none (Kraken's ticker has none).
    ts_event: int = 0
    error: str = ""


def ticker_price(ticker: dict) -> float:
    """The price a unified ccxt ticker stands for: the mid of a sane bid/ask, else the last
    trade. Raises ValueError when it has neither (an empty or broken market)."""
    bid, ask = ticker.get("bid"), ticker.get("ask")
    if _positive(bid) and _positive(ask) and bid <= ask:
        return (bid + ask) / 2
    last = ticker.get("last")
    if _positive(last):
        return float(last)
    raise ValueError(f"no usable price (bid={bid!r}, ask={ask!r}, last={last!r})")


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def make_exchange(venue: str, timeout_s: float, replay_dir: str = ""):
    """A ccxt exchange object (no I/O). With ``replay_dir``, its HTTP is served from
    ``<replay_dir>/<venue>/responses.json`` ({url: answer}) and its markets from
    ``markets.json`` there; a URL with no recorded answer fails like a network error."""
    if venue not in ccxt.exchanges:
        raise ValueError(f"unknown ccxt venue {venue!r}")
    exchange = getattr(ccxt, venue)({"timeout": int(timeout_s * 1000), "enableRateLimit": True})
    if replay_dir:
        exchange.enableRateLimit = False  # no venue to protect: recorded answers are free
        install_replay(exchange, Path(replay_dir) / venue)
    return exchange


def install_replay(exchange, folder: Path) -> None:
    """Replace ``exchange.fetch`` (the one method that does HTTP) with recorded answers."""

    def load_markets(reload=False, params=None):
        if not exchange.markets:
            try:
                markets = json.loads((folder / "markets.json").read_text())
            except OSError as exc:
                raise ccxt.NetworkError(f"replay: no markets recorded ({exc})") from None
            exchange.set_markets(markets)
        return exchange.markets

    def fetch(url, method="GET", headers=None, body=None):
        try:
            answers = json.loads((folder / "responses.json").read_text())
        except OSError as exc:
            raise ccxt.NetworkError(f"replay: no responses recorded ({exc})") from None
        if url not in answers:
            raise ccxt.NetworkError(f"replay: nothing recorded for {method} {url}")
        answer = answers[url]
        # As ccxt's own fetch does after a 200: the venue's error check on the decoded body
        # (Kraken, for one, answers errors with 200 and an "error" list).
        exchange.handle_errors(200, "OK", url, method, {}, json.dumps(answer), answer, headers, body)
        return answer

    exchange.load_markets = load_markets
    exchange.fetch = fetch


class SpotPoller(ThreadSource):
    """Polls ``fetch_ticker`` for every (venue, symbol) every ``interval_s`` seconds."""

    thread_name = "ccxt-spot"

    def __init__(self, exchanges: dict[str, object], symbols: dict[str, list[str]],
                 interval_s: float):
        super().__init__()
        self.exchanges = exchanges
        self.symbols = symbols
        self.interval_s = interval_s
        self.endpoints = [f"ccxt:{venue}" for venue in exchanges]
        self._stop = threading.Event()

    def wake_thread(self) -> None:
        # A request in flight ends at the exchange's timeout at the latest; the thread is a
        # daemon thread, so a slow venue never holds up the process's exit.
        self._stop.set()

    # ---- the thread -------------------------------------------------------------------------

    def run(self) -> None:
        while not self._stop.is_set():
            for venue, exchange in self.exchanges.items():
                for symbol in self.symbols.get(venue, ()):
                    if self._stop.is_set():
                        return
                    self.emit(self.poll_one(venue, exchange, symbol))
            self._stop.wait(self.interval_s)

    @staticmethod
    def poll_one(venue: str, exchange, symbol: str) -> SpotEvent:
        """One ``fetch_ticker``; every failure becomes an "error" event, never an exception."""
        try:
            exchange.load_markets()
            ticker = exchange.fetch_ticker(symbol)
            price = ticker_price(ticker)
        except (ccxt.BaseError, OSError, ValueError, KeyError, TypeError) as exc:
            # ccxt.BaseError covers network, HTTP status and venue errors; the others are
            # an answer ccxt could not parse, which must not end the thread either.
            return SpotEvent("error", venue, symbol, time.time_ns(),
                             error=f"{type(exc).__name__}: {str(exc)[:200]}")
        stamp = ticker.get("timestamp")
        return SpotEvent("price", venue, symbol, time.time_ns(), price=price,
                         ts_event=int(stamp) * 1_000_000 if isinstance(stamp, int) else 0)
