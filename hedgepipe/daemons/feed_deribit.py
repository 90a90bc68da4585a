"""feed-deribit: Deribit market data onto the bus as normalized md.* frames.

Domain logic only: which instruments to follow, which channels to subscribe, what to do on
a gap or a silent feed. The WebSocket session (heartbeats, reconnects, auth, rate limits)
is :mod:`hedgepipe.venues.deribit.jsonrpc`; book building and normalisation are
:mod:`hedgepipe.venues.deribit.marketdata`; instruments are
:mod:`hedgepipe.venues.deribit.instruments`.
"""

from __future__ import annotations

import logging
from typing import Literal

import click
import msgspec

from ..cli import daemon_command
from ..clock import SystemClock
from ..config import DaemonConfig
from ..errors import ConfigError
from ..messages import md_topic
from ..runtime import Service, Timer
from ..venues.deribit.instruments import InstrumentError, InstrumentFilter, parse_instrument
from ..venues.deribit.jsonrpc import Event, JsonRpcSession, SessionConfig
from ..venues.deribit.marketdata import DeribitMarketData
from .feed_deribit_fix import FixFeed

log = logging.getLogger("hedgepipe.feed-deribit")

TESTNET_URL = "wss://test.deribit.com/ws/api/v2"


def _list(*items: str):
    return msgspec.field(default_factory=lambda: list(items))


#: How often the instrument snapshot timer looks whether a snapshot is due (the first one
#: goes at most this long after the first listing).
REPUBLISH_CHECK_S = 5.0


class FeedDeribitConfig(DaemonConfig):
    #: JSON-RPC endpoint. The default is the local simulator (`deribit-sim`).
    url: str = "ws://127.0.0.1:8765/ws/api/v2"
    #: Use Deribit's test venue instead of `url`.
    testnet: bool = False
    currencies: list[str] = _list("BTC")
    kinds: list[str] = _list("option", "future", "perpetual")
    #: Follow instruments expiring within this many days (0 = all).
    max_expiry_days: float = 0.0
    #: Drop instruments this close to expiry (settlement is 08:00 UTC).
    min_expiry_minutes: float = 10.0
    #: Keep options with strikes within index x/÷ (1 + band) (0 = all strikes).
    strike_band: float = 0.0
    #: Book levels per side published in md.book.
    depth: int = 10
    interval: Literal["100ms", "raw"] = "100ms"
    #: Per-instrument channels to subscribe: any of book, ticker, trades.
    channels: list[str] = _list("book", "ticker", "trades")
    #: Seconds without any market data before the connection is recycled.
    stale_after_s: float = 5.0
    heartbeat_s: float = 10.0
    refresh_instruments_s: float = 3600.0
    #: Publish every followed instrument again this often (0 = never), so a daemon that
    #: started late (or restarted) learns the universe without waiting for a listing change.
    republish_instruments_s: float = 60.0
    client_id: str = ""
    client_secret: str = ""
    #: ws: JSON-RPC over WebSocket (`url`); fix: Deribit's FIX 4.4 API (`fix_*` keys).
    transport: Literal["ws", "fix"] = "ws"
    fix_host: str = "127.0.0.1"
    fix_port: int = 9881
    fix_sender_comp_id: str = "HEDGEPIPE"
    fix_target_comp_id: str = "DERIBITSERVER"
    fix_heartbeat_s: int = 10
    #: FIX sequence numbers, kept across restarts ("" = <default run dir>/<instance>.fixseq).
    fix_seq_store: str = ""

    secret_fields = frozenset({"client_secret"})


class FeedDeribitService(Service):
    name = "feed-deribit"
    summary = ("Deribit market data (instruments, books, tickers, trades, index) as md.* frames, "
               "from the JSON-RPC WebSocket API (default: the local simulator).")
    Config = FeedDeribitConfig
    cli_options = (
        click.Option(["--url"], default=None, help="JSON-RPC WebSocket URL [config: url]."),
        click.Option(["--testnet"], is_flag=True, default=None,
                     help=f"Connect to Deribit's test venue ({TESTNET_URL})."),
        click.Option(["--transport"], type=click.Choice(["ws", "fix"]), default=None,
                     help="JSON-RPC over WebSocket, or FIX 4.4 [config: transport]."),
    )

    def __init__(self, config: FeedDeribitConfig, clock=SystemClock()):
        super().__init__(config, clock)
        url = TESTNET_URL if config.testnet else config.url
        self.session = JsonRpcSession(SessionConfig(
            url=url, heartbeat_s=config.heartbeat_s, client_id=config.client_id,
            client_secret=config.client_secret))
        self.md = DeribitMarketData(venue="deribit", depth=config.depth, instruments={})
        self.filter = InstrumentFilter(currencies=config.currencies, kinds=config.kinds,
                                       max_expiry_days=config.max_expiry_days or None,
                                       min_expiry_minutes=config.min_expiry_minutes,
                                       strike_band=config.strike_band or None)
        self.index_prices: dict[str, float] = {}
        #: venue clock - our clock (ns): expiry decisions use the venue's time, which is
        #: right under clock skew and when the venue is a replay of another day.
        self.venue_offset_ns = 0
        self._requests: dict[int, str] = {}  # request id -> what it asked for
        self._subscribed: set[str] = set()
        self._followed: dict[str, set[str]] = {}  # currency -> instruments followed
        self._last_data = clock.monotonic()
        self._next_republish = 0.0  # monotonic time the next instrument snapshot is due
        if config.transport == "fix" and config.strike_band:
            # The FIX path has no index price, so a band would drop every option, silently.
            raise ConfigError("[feed-deribit] strike_band needs the index price, which the FIX "
                              "transport does not carry: set strike_band = 0 with transport = fix")
        self.fix = (FixFeed(config, clock, self.filter, self.stats)
                    if config.transport == "fix" else None)

    # ---- the runtime's hooks ---------------------------------------------------------------

    def sources(self):
        if self.fix:
            self.fix.use_run_dir(self.run_dir)
            return [self.fix.source]
        return [self.session]

    def timers(self):
        timers = (self.fix.timers() if self.fix else
                  [Timer(1.0, self._watchdog, "watchdog"),
                   Timer(self.config.refresh_instruments_s, self._refresh, "instruments")])
        if self.config.republish_instruments_s > 0:
            period = min(REPUBLISH_CHECK_S, self.config.republish_instruments_s)
            timers.append(Timer(period, self._republish, "republish"))
        return timers

    def _republish(self, _now_ns: int):
        """Every followed instrument again, freshly stamped (the ZeroMQ guide's Clone pattern:
        a periodic snapshot next to the updates, for subscribers that joined late).

        The first one goes a few seconds after the first listing, not a whole period later:
        daemons started beside the feed (supervisord starts them together) may have connected
        just after the listing went out."""
        instruments = (self.fix.md if self.fix else self.md).instruments
        now = self.clock.monotonic()
        if not instruments or now < self._next_republish:
            return []
        self._next_republish = now + self.config.republish_instruments_s
        self._count("instruments_republished", len(instruments))
        return [(md_topic("instrument", "deribit", name),
                 msgspec.structs.replace(inst, ts_event=0, ts_recv=0))
                for name, inst in sorted(instruments.items())]

    def on_source(self, source, event: Event):
        if self.fix:
            return self.fix.on_event(event)
        if event.kind == "notification":
            self._last_data = self.clock.monotonic()
            outs, resync = self.md.on_notification(event.channel, event.data, event.ts_recv)
            if resync:
                self._count("book_resyncs", len(resync))
                self.session.resubscribe([f"book.{name}.{self.config.interval}" for name in resync])
            return outs
        if event.kind == "connected":
            self._last_data = self.clock.monotonic()
            self._count("connects")
            self._refresh(0)
        elif event.kind == "disconnected":
            self._count("disconnects")
            # Every book must be rebuilt from a new snapshot after a reconnect.
            return self.md.connection_lost(event.ts_recv)
        elif event.kind == "result":
            return self._on_result(event)
        elif event.kind == "error":
            self._requests.pop(event.request_id, None)
            self._count("venue_errors")
            log.warning("venue error", extra={"method": event.method, "code": event.error.get("code"),
                                              "venue_message": event.error.get("message")})
        return ()

    # ---- instruments and subscriptions ----------------------------------------------------

    def _refresh(self, _now_ns: int):
        self._requests[self.session.call("public/get_time")] = "time"
        for currency in self.config.currencies:
            rid = self.session.call("public/get_index_price", {"index_name": f"{currency.lower()}_usd"})
            self._requests[rid] = f"index:{currency}"
        return ()

    def _on_result(self, event: Event):
        what = self._requests.pop(event.request_id, "")
        if event.method == "public/auth":
            self._count("authenticated")  # first logon and every token refresh
            return ()
        if what == "time":
            self.venue_offset_ns = int(event.data) * 1_000_000 - self.clock.time_ns()
            return ()
        if what.startswith("index:"):
            currency = what[len("index:"):]
            self.index_prices[currency] = float(event.data["index_price"])
            rid = self.session.call("public/get_instruments", {"currency": currency, "expired": False})
            self._requests[rid] = f"instruments:{currency}"
            return ()
        if what.startswith("instruments:"):
            return self._on_instruments(what[len("instruments:"):], event.data or [])
        return ()

    def _on_instruments(self, currency: str, listed: list):
        parsed = []
        for raw in listed:
            try:
                parsed.append(parse_instrument(raw))
            except InstrumentError as exc:  # one bad listing must not hide the others
                self._count("instruments_malformed")
                log.warning("instrument not understood", extra={"error": str(exc)})
        venue_now = self.clock.time_ns() + self.venue_offset_ns
        kept, dropped = self.filter.select(parsed, venue_now, self.index_prices)
        for reason, n in dropped.items():
            self._count(f"instruments_dropped_{reason}", n)
        outs = self._retire(currency, {inst.name for inst in kept})
        channels = []
        for inst in kept:
            if self.md.instruments.get(inst.name) != inst:
                outs.append((md_topic("instrument", "deribit", inst.name), inst))
            self.md.instruments[inst.name] = inst
            channels += self._channels_of(inst.name)
        channels.append(f"deribit_price_index.{currency.lower()}_usd")
        new = [c for c in channels if c not in self._subscribed]
        if new:
            self._subscribed.update(new)
            self.session.subscribe(new)
        self.stats["instruments"] = len(self.md.instruments)
        return outs

    def _channels_of(self, name: str) -> list[str]:
        return [f"{ch}.{name}.{self.config.interval}" for ch in self.config.channels]

    def _retire(self, currency: str, listed_now: set[str]) -> list:
        """Instruments of ``currency`` we followed that are gone (expired, delisted, filtered
        out): published once with ``active = False``, unsubscribed, their books dropped."""
        previous = self._followed.get(currency, set())
        self._followed[currency] = listed_now
        outs = []
        for name in sorted(previous - listed_now):
            inst = self.md.instruments.pop(name, None)
            self.md.forget(name)
            gone = self._channels_of(name)
            self._subscribed.difference_update(gone)
            self.session.unsubscribe(gone)
            self._count("instruments_retired")
            if inst is not None:
                retired = msgspec.structs.replace(inst, active=False, ts_event=0, ts_recv=0)
                outs.append((md_topic("instrument", "deribit", name), retired))
        return outs

    # ---- liveness ---------------------------------------------------------------------------

    def _watchdog(self, _now_ns: int):
        # Socket liveness is the session's (heartbeats); this is data liveness: a connection
        # that answers heartbeats but sends no market data is as useless as a dead one.
        silent = self.clock.monotonic() - self._last_data
        if self.session.connected and self._subscribed and silent > self.config.stale_after_s:
            self._count("stale_reconnects")
            log.warning("no market data; reconnecting", extra={"silent_s": round(silent, 1)})
            self._last_data = self.clock.monotonic()
            self.session.reconnect(f"no market data for {silent:.1f}s")
        return ()

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n


main = daemon_command(FeedDeribitService)
