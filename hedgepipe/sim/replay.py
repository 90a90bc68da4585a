"""``--replay FILE``: serve a recorded Deribit WebSocket session as it was.

The recording (``DERIBIT.ws.1.0`` format: ``<unix ts>: <raw frame>`` per line, the first lines
naming the URL and the client's requests) gives the notifications; ``DERIBIT.0`` (``URL -> ts:
<get_instruments body>`` per line) gives the instruments. Each connection gets its own playback
from the moment it first subscribes: the recorded notifications of its channels, byte for byte,
in recorded order, spaced as recorded divided by ``speed`` (0 = no waiting); a channel subscribed
later first gets what it missed, so each channel always sees its whole recording. The books are
rebuilt along the way, so a book (re)subscribed after its recorded snapshot went by starts
from a fresh snapshot of the book as it stands at that point, with the recorded change ids.
``deribit_price_index`` notifications, absent from the recordings, are derived from the
tickers' ``index_price``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import msgspec

from ..errors import ConfigError
from .book import apply_levels
from .faults import Faults
from .market import Market, channel_key, select_instruments
from .session import notification

log = logging.getLogger("hedgepipe.sim")


@dataclass
class Recorded:
    offset_s: float     # seconds since the first notification
    channel: str
    key: str
    text: str           # the frame as received from Deribit
    data: dict | list


def load_recording(path: str | Path) -> list[Recorded]:
    records: list[Recorded] = []
    last_index: dict[str, float] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"--replay {path}: {exc.strerror or exc}") from exc
    for number, line in enumerate(lines, start=1):
        stamp, sep, frame = line.partition(": ")
        if not sep or " " in stamp:           # the URL and request lines, blank lines
            continue
        try:
            ts, msg = float(stamp), msgspec.json.decode(frame)
        except (ValueError, msgspec.DecodeError) as exc:
            raise ConfigError(f"--replay {path} line {number}: {exc}") from exc
        if not isinstance(msg, dict) or msg.get("method") != "subscription":
            continue
        params = msg["params"]
        key = channel_key(params["channel"])
        if key is None:
            continue
        records.append(Recorded(ts, params["channel"], key, frame, params["data"]))
        index = _derived_index(params["data"], last_index, ts) if key.startswith("ticker.") else None
        if index is not None:
            records.append(index)
    if not records:
        raise ConfigError(f"--replay {path}: no subscription notifications in it")
    start = records[0].offset_s
    for rec in records:
        rec.offset_s -= start
    return records


def _derived_index(ticker: dict, last: dict[str, float], offset: float) -> Recorded | None:
    name = ticker.get("instrument_name", "")
    index_name = name.split("-")[0].lower() + "_usd"
    price = ticker.get("index_price")
    if price is None or last.get(index_name) == price:
        return None
    last[index_name] = price
    channel = f"deribit_price_index.{index_name}"
    data = {"timestamp": ticker["timestamp"], "price": price, "index_name": index_name}
    return Recorded(offset, channel, channel, notification(channel, data), data)


def load_instruments(path: str | Path) -> dict[str, list[dict]]:
    """``get_instruments`` results by the ``currency`` they were asked for."""
    by_currency: dict[str, list[dict]] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"--instruments {path}: {exc.strerror or exc}") from exc
    for number, line in enumerate(lines, start=1):
        url, sep, rest = line.partition(" -> ")
        if not sep:
            continue                          # the trailing configuration line
        try:
            body = msgspec.json.decode(rest.partition(": ")[2])
            currency = parse_qs(urlsplit(url).query)["currency"][0]
            by_currency.setdefault(currency, []).extend(body["result"])
        except (msgspec.DecodeError, KeyError, IndexError, TypeError) as exc:
            raise ConfigError(f"--instruments {path} line {number}: {exc!r}") from exc
    return by_currency


class ReplayMarket(Market):
    def __init__(self, recording: str | Path, instruments: str | Path | None = None):
        self.records = load_recording(recording)
        self.listed = load_instruments(instruments) if instruments else {}
        self.by_name = {i["instrument_name"]: i for group in self.listed.values() for i in group}
        self.first: dict[str, dict] = {}      # key -> first recorded data (tickers, snapshots)
        for rec in self.records:
            self.first.setdefault(rec.key, rec.data)
        self.names = {rec.key.split(".", 1)[1] for rec in self.records if not rec.key.startswith("deribit")}
        self.currencies = sorted(set(self.listed) | {n.split("-")[0] for n in self.names})
        stamps = [rec.data["timestamp"] for rec in self.records if isinstance(rec.data, dict)]
        self.now_ms = min(stamps) if stamps else 0
        self._loaded = time.monotonic()
        log.info("recording loaded", extra={"notifications": len(self.records), "instruments": len(self.by_name)})

    def time_ms(self) -> int:
        """The recording's time, moving on from its start as the server runs."""
        return self.now_ms + int((time.monotonic() - self._loaded) * 1000)

    def instruments(self, currency: str, kind: str | None = None, expired: bool = False) -> list[dict]:
        listed = [i for group in self.listed.values() for i in group] if currency == "any" \
            else self.listed.get(currency, [])
        return select_instruments(listed, "any", kind, expired, self.now_ms)

    def instrument(self, name: str) -> dict | None:
        if name in self.by_name:
            return self.by_name[name]
        return {"instrument_name": name} if name in self.names else None

    def index_price(self, index_name: str) -> dict | None:
        first = self.first.get(f"deribit_price_index.{index_name}")
        return None if first is None else {"index_price": first["price"], "estimated_delivery_price": first["price"]}

    def ticker(self, name: str) -> dict | None:
        return self.first.get(f"ticker.{name}")

    def order_book(self, name: str, depth: int | None) -> dict | None:
        """The book as the recording starts (its first snapshot) with the first ticker's fields."""
        snapshot, ticker = self.first.get(f"book.{name}"), self.first.get(f"ticker.{name}")
        if snapshot is None and ticker is None:
            return None
        out = dict(ticker or {"instrument_name": name})
        if snapshot is not None:
            out.update(timestamp=snapshot["timestamp"], change_id=snapshot["change_id"],
                       bids=[[p, a] for _, p, a in snapshot["bids"]][:depth],
                       asks=[[p, a] for _, p, a in snapshot["asks"]][:depth])
        return out


class Playback:
    """One connection's walk through the recording."""

    def __init__(self, market: ReplayMarket, session, speed: float, faults: Faults):
        self.market, self.session, self.speed, self.faults = market, session, speed, faults
        self.books: dict[str, tuple[dict, dict, int, int]] = {}  # name -> (bids, asks, change_id, ts)
        self.seen: set[str] = set()         # channels this connection has subscribed to
        self.position = 0                   # records played so far
        self._task: asyncio.Task | None = None

    def subscribed(self, channels: list[str]) -> None:
        """A channel new to this connection first catches up on what the playback already
        passed (clients subscribe in batches; at --speed 0 the first batch would otherwise see
        the whole recording go by before the next one arrives); a book channel subscribed
        again gets a fresh snapshot of the book as rebuilt so far."""
        for channel in channels:
            key = channel_key(channel)
            if channel not in self.seen:
                self.seen.add(channel)
                for rec in self.market.records[:self.position]:
                    if rec.key == key:
                        self._send(rec, channel)
                continue
            name = key.partition(".")[2]
            if key.startswith("book.") and name in self.books:
                self.session.send_text(notification(channel, _snapshot(name, *self.books[name])))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _send(self, rec: Recorded, channel: str) -> None:
        if rec.key.startswith("book.") and self.faults.skip_this_change(rec.data):
            return
        self.session.send_text(rec.text if channel == rec.channel else
                               rec.text.replace(f'"channel":"{rec.channel}"', f'"channel":"{channel}"', 1))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for number, rec in enumerate(self.market.records):
            if self.speed > 0:
                await asyncio.sleep(max(0.0, start + rec.offset_s / self.speed - loop.time()))
            elif number % 64 == 0:
                await asyncio.sleep(0)        # let requests in between
            self._rebuild(rec)
            self.position = number + 1
            for channel in list(self.session.subs.get(rec.key, ())):
                self._send(rec, channel)
        log.info("recording finished", extra={"session": self.session.number})

    def _rebuild(self, rec: Recorded) -> None:
        if not rec.key.startswith("book."):
            return
        data = rec.data
        name = data["instrument_name"]
        if data["type"] == "snapshot":
            bids, asks = {}, {}
        else:
            bids, asks, _, _ = self.books.get(name, ({}, {}, 0, 0))
        apply_levels(bids, data["bids"])
        apply_levels(asks, data["asks"])
        self.books[name] = (bids, asks, data["change_id"], data["timestamp"])

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


def _snapshot(name: str, bids: dict, asks: dict, change_id: int, timestamp: int) -> dict:
    return {"type": "snapshot", "timestamp": timestamp, "instrument_name": name, "change_id": change_id,
            "bids": [["new", p, bids[p]] for p in sorted(bids, reverse=True)],
            "asks": [["new", p, asks[p]] for p in sorted(asks)]}

