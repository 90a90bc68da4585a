"""feed-index: a robust index price per currency from several venues, as md.index frames.

Sources: Deribit's own index (the ``deribit_price_index.{ccy}_usd`` WebSocket channel, through
:mod:`hedgepipe.venues.deribit.jsonrpc`, default the local simulator) and spot tickers of any
venues ccxt supports (:mod:`hedgepipe.venues.ccxt.spot`, polled in a thread). Each source's
price is published as ``md.index.<source>.<name>`` so the composite can be audited; the
composite (:mod:`hedgepipe.index_composite`: median of fresh sources, outliers dropped) as
``md.index.composite.<name>`` with ``sources`` = how many it used. A venue that cannot be
reached is counted and logged once, and the composite goes on with the sources that work.
"""

from __future__ import annotations

import logging

import click
import msgspec

from ..cli import daemon_command
from ..clock import SystemClock
from ..config import DaemonConfig
from ..errors import ConfigError
from ..index_composite import SourcePrice, combine
from ..logs import OncePerKind
from ..messages import Index, md_topic
from ..runtime import Service
from ..venues.ccxt.spot import SpotEvent, SpotPoller, make_exchange
from ..venues.deribit.jsonrpc import Event, JsonRpcSession, SessionConfig
from ..venues.deribit.marketdata import DeribitMarketData

log = logging.getLogger("hedgepipe.feed-index")

COMPOSITE = "composite"


class FeedIndexConfig(DaemonConfig):
    #: Deribit JSON-RPC endpoint for its index channel. The default is the local simulator.
    url: str = "ws://127.0.0.1:8765/ws/api/v2"
    #: Use Deribit's index as a source.
    deribit: bool = True
    currencies: list[str] = msgspec.field(default_factory=lambda: ["BTC", "ETH"])
    #: ccxt exchange ids (ccxt.exchanges), e.g. ["kraken", "coinbase", "bitstamp"].
    venues: list[str] = msgspec.field(default_factory=list)
    #: Per-venue ccxt symbols, e.g. {binance = ["BTC/USDT"]}; default "<CCY>/USD" per currency.
    symbols: dict[str, list[str]] = msgspec.field(default_factory=dict)
    poll_interval_s: float = 5.0
    fetch_timeout_s: float = 10.0
    #: A source whose last price is older than this is left out of the composite.
    max_age_s: float = 30.0
    #: A source further than this from the median (relative: 0.005 = 0.5%) is left out.
    max_distance: float = 0.005
    heartbeat_s: float = 10.0
    #: Serve ccxt venues from recorded answers in <replay_dir>/<venue>/ (offline demos, tests).
    replay_dir: str = ""


#: Quotes that count as USD (stablecoins at par; documented in docs/feed-index.md).
USD_QUOTES = frozenset({"USD", "USDT", "USDC"})


def index_name(symbol: str) -> str | None:
    """``BTC/USD`` (or ``BTC/USDT``) -> ``btc_usd``; None for any other quote (``BTC/EUR``):
    a price in another currency must never enter a USD index."""
    base, _, quote = symbol.partition("/")
    return f"{base.lower()}_usd" if quote.upper() in USD_QUOTES else None


class FeedIndexService(Service):
    name = "feed-index"
    summary = ("Index prices: Deribit's index and ccxt venues' spot prices, each as md.index, and "
               "their robust composite (median of fresh sources, outliers dropped).")
    Config = FeedIndexConfig
    cli_options = (
        click.Option(["--url"], default=None, help="Deribit JSON-RPC WebSocket URL [config: url]."),
    )

    def __init__(self, config: FeedIndexConfig, clock=SystemClock()):
        super().__init__(config, clock)
        self.names = [f"{c.lower()}_usd" for c in config.currencies]
        self.symbols: dict[str, list[str]] = {}
        for venue in config.venues:
            symbols = config.symbols.get(venue) or [f"{c.upper()}/USD" for c in config.currencies]
            unknown = [s for s in symbols if index_name(s) not in self.names]
            if unknown:
                raise ConfigError(f"[feed-index] symbols for {venue}: {unknown} are not in currencies "
                                  f"{config.currencies} with a quote in {'/'.join(sorted(USD_QUOTES))}")
            self.symbols[venue] = symbols
        extra = sorted(set(config.symbols) - set(config.venues))
        if extra:
            raise ConfigError(f"[feed-index] symbols given for venues not in venues: {extra}")
        try:
            exchanges = {venue: make_exchange(venue, config.fetch_timeout_s, config.replay_dir)
                         for venue in config.venues}
        except ValueError as exc:
            raise ConfigError(f"[feed-index] venues: {exc}") from None
        self.spot = SpotPoller(exchanges, self.symbols, config.poll_interval_s) if exchanges else None
        self.session = (JsonRpcSession(SessionConfig(url=config.url, heartbeat_s=config.heartbeat_s))
                        if config.deribit else None)
        self.deribit_md = DeribitMarketData(venue="deribit", depth=1, instruments={})
        #: index name -> source -> its latest price.
        self.prices: dict[str, dict[str, SourcePrice]] = {name: {} for name in self.names}
        self.once = OncePerKind(log)
        self._subscribed = False

    # ---- the runtime's hooks ---------------------------------------------------------------

    def sources(self):
        return [s for s in (self.session, self.spot) if s is not None]

    def on_source(self, source, item):
        if item.__class__ is SpotEvent:
            return self._on_spot(item)
        return self._on_deribit(item)

    # ---- ccxt venues ------------------------------------------------------------------------

    def _on_spot(self, event: SpotEvent):
        if event.kind == "error":
            self._count(f"fetch_errors_{event.venue}")
            self.once(f"fetch_error:{event.venue}", "ccxt fetch failed; venue left out until it answers",
                      venue=event.venue, symbol=event.symbol, error=event.error)
            return ()
        self._count(f"prices_{event.venue}")
        return self._on_price(event.venue, index_name(event.symbol), event.price,
                              event.ts_event or event.ts_recv, event.ts_recv)

    # ---- Deribit ------------------------------------------------------------------------------

    def _on_deribit(self, event: Event):
        if event.kind == "connected":
            self._count("deribit_connects")
            if not self._subscribed:  # after a reconnect the session resubscribes by itself
                self._subscribed = True
                self.session.subscribe([f"deribit_price_index.{name}" for name in self.names])
        elif event.kind == "disconnected":
            self._count("deribit_disconnects")
            self.once("deribit_disconnected", "Deribit index connection lost",
                      reason=str(event.data)[:200])
        elif event.kind == "error":
            self._count("deribit_errors")
            self.once("deribit_error", "Deribit error", error=str(event.error)[:200])
        elif event.kind == "notification":
            outs, _ = self.deribit_md.on_notification(event.channel, event.data, event.ts_recv)
            if not outs:
                self._count("deribit_malformed")
                issue = self.deribit_md.last_issue
                self.once("deribit_malformed", "Deribit notification not used",
                          channel=event.channel[:80], issue=str(issue)[:200])
            result = []
            for _topic, msg in outs:
                if msg.__class__ is Index and msg.name in self.prices:
                    result += self._on_price("deribit", msg.name, msg.price, msg.ts_event, msg.ts_recv)
            return result
        return ()

    # ---- the composite --------------------------------------------------------------------------

    def _on_price(self, source: str, name: str, price: float, ts_event: int, ts_recv: int):
        self.prices[name][source] = SourcePrice(price, ts_recv)
        outs = [(md_topic("index", source, name),
                 Index(venue=source, name=name, price=price, sources=1,
                       ts_event=ts_event, ts_recv=ts_recv))]
        now = self.clock.time_ns()
        composite = combine(self.prices[name], now, self.config.max_age_s, self.config.max_distance)
        if composite.stale:
            self._count("stale_drops", len(composite.stale))
        if composite.outliers:
            self._count("outlier_drops", len(composite.outliers))
            self.once(f"outlier:{name}", "source too far from the median; left out",
                      index=name, outliers=list(composite.outliers))
        if composite.price is None:
            self._count("no_composite")
            return outs
        outs.append((md_topic("index", COMPOSITE, name),
                     Index(venue=COMPOSITE, name=name, price=composite.price,
                           sources=len(composite.used), ts_event=now, ts_recv=ts_recv)))
        return outs

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n


main = daemon_command(FeedIndexService)
