"""Helpers for the journal reading, replay and stats tests: journals of real encoded frames,
built by hand or from the recorded Deribit session, and ways to run the tools."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hedgepipe import messages as m
from hedgepipe.journal import JournalWriter
from hedgepipe.pipeframe import FrameReader
from hedgepipe.venues.deribit.instruments import parse_get_instruments_body, parse_instrument
from hedgepipe.venues.deribit.marketdata import DeribitMarketData, decode_frame, subscription_parts

from .conftest import VENV_BIN

HEDGEPIPE = str(VENV_BIN / "hedgepipe")
#: 2026-11-23T05:00:00Z in ns.
T0 = 1_795_410_000 * 10**9
SEC = 10**9
OPTION = "BTC-27DEC26-100000-C"


def frame(msg: m.Envelope, kind: str, name: str, venue: str = "deribit", stage: str = "md"
          ) -> tuple[bytes, bytes]:
    return m.md_topic(kind, venue, name, stage).encode(), m.encode(msg)


def book(seq: int, bids, asks, instrument: str = OPTION, src: str = "feed-deribit", ts: int = T0,
         stale: bool = False) -> tuple[bytes, bytes]:
    msg = m.Book(venue="deribit", instrument=instrument, bids=bids, asks=asks, change_id=seq,
                 stale=stale, src=src, seq=seq, ts_event=ts, ts_recv=ts)
    return frame(msg, "book", instrument)


def ticker(seq: int, bid, ask, instrument: str = OPTION, src: str = "feed-deribit", ts: int = T0
           ) -> tuple[bytes, bytes]:
    msg = m.Ticker(venue="deribit", instrument=instrument, bid=bid, ask=ask, src=src, seq=seq,
                   ts_event=ts, ts_recv=ts)
    return frame(msg, "ticker", instrument)


def trade(seq: int, price: float, instrument: str = OPTION, src: str = "feed-deribit", ts: int = T0
          ) -> tuple[bytes, bytes]:
    msg = m.Trade(venue="deribit", instrument=instrument, trade_id=f"t{seq}", price=price,
                  amount=1.0, side="buy", src=src, seq=seq, ts_event=ts, ts_recv=ts)
    return frame(msg, "trade", instrument)


def index(seq: int, price: float, name: str = "btc_usd", source: str = "deribit",
          src: str = "feed-index", ts: int = T0) -> tuple[bytes, bytes]:
    msg = m.Index(venue=source, name=name, price=price, src=src, seq=seq, ts_event=ts, ts_recv=ts)
    return frame(msg, "index", name, venue=source)


def write_journal(root: Path, records: list[tuple[int, bytes, bytes]], **writer) -> list[Path]:
    """Journal ``(ts_ns, topic, payload)`` records with the real writer; its closed files."""
    journal = JournalWriter(root, fsync="never", **writer)
    journal.open()
    for ts, topic, payload in records:
        journal.append(topic, payload, ts)
    journal.close()
    return sorted(root.rglob("*.hpj.gz"))


def md_records(n: int, start: int = T0, step_ns: int = SEC // 10) -> list[tuple[int, bytes, bytes]]:
    """``n`` records cycling through book, ticker, trade and index frames, ``step_ns`` apart."""
    out = []
    for i in range(n):
        ts = start + i * step_ns
        seq = i // 4 + 1
        topic, payload = (book(seq, [(0.05, 1.0)], [(0.051, 2.0)], ts=ts),
                          ticker(seq, 0.05, 0.052, ts=ts),
                          trade(seq, 0.0505, ts=ts),
                          index(seq, 100_000.0 + i, ts=ts))[i % 4]
        out.append((ts, topic, payload))
    return out


def recorded_md(shared_data: Path) -> list[tuple[int, bytes, bytes]]:
    """The recorded Deribit session as feed-deribit publishes it, journaled: md.instrument for
    each instrument it names (from the recorded get_instruments bodies, at the first receive
    time), then its md.book and md.ticker frames, src/seq stamped per topic, at their receive
    times."""
    universe = {}
    for line in (shared_data / "deribit" / "DERIBIT.0").read_text().splitlines():
        if " -> " in line and "get_instruments" in line:
            for raw in parse_get_instruments_body(line):
                inst = parse_instrument(raw)
                universe[inst.name] = inst
    md = DeribitMarketData(instruments=universe)
    data = []
    for line in (shared_data / "deribit" / "DERIBIT.ws.1.0").read_text().splitlines()[2:]:
        stamp, sep, text = line.partition(": ")
        if sep and '"method":"subscription"' in text:
            channel, payload = subscription_parts(decode_frame(text))
            ts = int(float(stamp) * 1e6) * 1000
            data += [(ts, topic, msg) for topic, msg in md.on_notification(channel, payload, ts)[0]]
    first = data[0][0]
    names = sorted({msg.instrument for _, _, msg in data})
    definitions = [(first, m.md_topic("instrument", "deribit", n),
                    m.Instrument(**{**m.to_builtins(universe[n]), "ts_event": first, "ts_recv": first}))
                   for n in names]
    seqs: dict[str, int] = {}
    out = []
    for ts, topic, msg in definitions + data:
        seqs[topic] = seqs.get(topic, 0) + 1
        msg.src, msg.seq = "feed-deribit", seqs[topic]
        out.append((ts, topic.encode(), m.encode(msg)))
    return out


def frames_of(data: bytes) -> list[tuple[bytes, bytes]]:
    reader = FrameReader(1 << 24)
    out = reader.feed(data)
    assert reader.pending == 0, "the stream ends inside a frame"
    assert all(isinstance(f, tuple) for f in out), out
    return out


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HEDGEPIPE_")}


def run_tool(args: list[str], cwd: Path, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([HEDGEPIPE, *args], capture_output=True, cwd=cwd, env=clean_env(),
                          timeout=timeout, **kw)
