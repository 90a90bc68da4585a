"""feed-deribit's FIX transport: instruments from SecurityList, books from W/X, trades from X.

The FIX session (Logon, heartbeats, sequence numbers, reconnects) is
:mod:`hedgepipe.venues.deribit.fix_source`; turning W/X into md.* messages is
:mod:`hedgepipe.venues.deribit.fix_normalize`. This is the domain part: which instruments to
request, what to do on a broken book (request that instrument's snapshot again) or a silent feed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace

from ..config import default_run_dir
from ..messages import md_topic
from ..runtime import Timer
from ..venues.deribit.fix_marketdata import market_data_request, security_list_request
from ..venues.deribit.fix_normalize import FixMarketData, security_list_instruments
from ..venues.deribit.fix_session import FixConfig
from ..venues.deribit.fix_source import FixEvent, FixSource, FixSourceConfig

log = logging.getLogger("hedgepipe.feed-deribit")


class FixFeed:
    """The FIX half of FeedDeribitService; ``stats`` is the service's (heartbeat counters)."""

    def __init__(self, config, clock, instrument_filter, stats: dict[str, int]):
        self.config = config
        self.clock = clock
        self.filter = instrument_filter
        self.stats = stats
        # An empty fix_seq_store is resolved under [runtime] run_dir by use_run_dir().
        self.source = FixSource(FixSourceConfig(
            host=config.fix_host, port=config.fix_port, seq_store=config.fix_seq_store,
            session=FixConfig(sender_comp_id=config.fix_sender_comp_id, client_id=config.client_id,
                              client_secret=config.client_secret,
                              target_comp_id=config.fix_target_comp_id,
                              heartbeat_s=config.fix_heartbeat_s)))
        self.md = FixMarketData(venue="deribit", depth=config.depth)
        self._requested: set[str] = set()  # instruments with a live MarketDataRequest
        self._requests = 0
        self._last_data = clock.monotonic()

    def use_run_dir(self, run_dir: str) -> None:
        """Keep FIX sequence numbers in the run directory unless fix_seq_store names a file."""
        if not self.source.config.seq_store:
            name = f"{self.config.instance or 'feed-deribit'}.fixseq"
            self.source.config = replace(self.source.config,
                                         seq_store=os.path.join(run_dir or default_run_dir(), name))

    def timers(self) -> list[Timer]:
        return [Timer(1.0, self._watchdog, "watchdog"),
                Timer(self.config.refresh_instruments_s, self._refresh, "instruments")]

    def on_event(self, event: FixEvent):
        if event.kind == "app":
            return self._on_app(event)
        if event.kind == "gap":
            self._count("fix_sequence_gaps")
            outs, resync = self.md.sequence_gap(event.ts_recv)
            self._resync(resync)
            return outs
        if event.kind == "connected":
            self._last_data = self.clock.monotonic()
            self._count("connects")
            self._requested.clear()
            return self._refresh(0)
        self._count("disconnects")
        if event.rejected:
            # The session logged it at error level with the venue's text; the source retries
            # with backoff (a rotated secret can be fixed without a restart).
            self._count("fix_logon_rejected")
        self._requested.clear()
        return self.md.connection_lost(event.ts_recv)

    def _on_app(self, event: FixEvent):
        m = event.msg
        mtype = m.get(35)
        if mtype in (b"W", b"X"):
            self._last_data = self.clock.monotonic()
            outs, resync = self.md.on_message(m, event.ts_recv)
            self._resync(resync)
            return outs
        if mtype == b"y":
            return self._on_security_list(m)
        if mtype in (b"Y", b"j", b"3"):  # MarketDataRequestReject, BusinessMessageReject
            self._count("venue_rejects")
            log.warning("FIX request rejected", extra={"msg_type": mtype.decode(),
                                                       "text": (m.get(58) or b"").decode(errors="replace")})
        else:
            self._count("fix_unhandled")
        return ()

    def _refresh(self, _now_ns: int):
        if self.source.connected:
            for currency in self.config.currencies:
                self._requests += 1
                self.source.send(*security_list_request(f"sl{self._requests}", currency))
        return ()

    def _on_security_list(self, m):
        listed, problems = security_list_instruments(m)
        for problem in problems:  # one bad listing must not hide the others
            self._count("instruments_malformed")
            log.warning("instrument not understood", extra={"error": problem})
        kept, dropped = self.filter.select(listed, self.clock.time_ns(), {})
        for reason, n in dropped.items():
            self._count(f"instruments_dropped_{reason}", n)
        outs = []
        for inst in kept:
            if self.md.instruments.get(inst.name) != inst:
                outs.append((md_topic("instrument", "deribit", inst.name), inst))
            self.md.instruments[inst.name] = inst
            if inst.name not in self._requested:
                self._request(inst.name)
        self.stats["instruments"] = len(self.md.instruments)
        return outs

    def _resync(self, names: list[str]) -> None:
        if names:
            self._count("book_resyncs", len(names))
            for name in names:
                self._request(name)

    def _request(self, name: str) -> None:
        """Snapshot + updates of one instrument: a re-request replaces the subscription with a
        fresh W, so a broken book is rebuilt without touching the others."""
        self._requests += 1
        self._requested.add(name)
        # Full depth (0): a level below the published top N can move into it.
        self.source.send(*market_data_request(f"md{self._requests}", [name], depth=0))

    def _watchdog(self, _now_ns: int):
        silent = self.clock.monotonic() - self._last_data
        if self.source.connected and self._requested and silent > self.config.stale_after_s:
            self._count("stale_reconnects")
            log.warning("no FIX market data; reconnecting", extra={"silent_s": round(silent, 1)})
            self._last_data = self.clock.monotonic()
            self.source.reconnect(f"no market data for {silent:.1f}s")
        return ()

    def _count(self, key: str, n: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + n
