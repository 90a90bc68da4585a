"""Statistics of journal records in one pass and bounded memory (``hedgepipe stats``). Pure.

Per instrument: message counts by kind, first/last record time, the largest time gap,
sequence gaps per (src, topic), spreads from books and tickers. Per index series: count,
first/last price, realized volatility over several sampling intervals. Memory grows with the
number of instruments and topics, never with the number of records: percentiles come from a
log-bucket sketch (:class:`QuantileSketch`), volatility from running sums.
docs/replay-and-stats.md defines every figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .. import messages
from ..journal import Problem, Record
from ..seqtrack import WENT_BACK, SeqTracker
from .journal_input import iso, problem_as_dict

#: Calendar seconds in a year: crypto trades every day, all day.
SECONDS_PER_YEAR = 365.25 * 86_400
#: Realized volatility: (name, sampling interval in seconds).
VOL_WINDOWS = (("1m", 60), ("5m", 300), ("1h", 3600))
#: Fewer returns than this on a grid and the volatility is n/a, not a number.
MIN_RETURNS = 10
#: Median and p95 are exact while a series has at most EXACT_VALUES distinct values, and
#: within SKETCH_RELATIVE_ERROR of the exact nearest-rank value after that.
EXACT_VALUES = 256
SKETCH_RELATIVE_ERROR = 0.005
INSTRUMENT_KINDS = ("book", "ticker", "trade", "instrument")
_MAX_CACHED_TOPICS = 200_000


class QuantileSketch:
    """Nearest-rank percentiles: exact for few distinct values, else within a relative error.

    Up to :data:`EXACT_VALUES` distinct values (spreads on a tick grid rarely have more) are
    counted exactly, rounded to 12 significant digits (float noise such as 0.0955 - 0.055 =
    0.04050000000000001 is not a distinct spread). Past that, every value goes to a log
    bucket k = ceil(log_g |x|), g = (1 + a) / (1 - a), reported as 2 g^k / (g + 1): within a
    relative error a of every value in the bucket (DDSketch, Masson et al., VLDB 2019).
    Negatives (crossed books) mirror the positives; zeros (locked books) are exact. Memory:
    log(max/min) / log(g) buckets, about 460 per factor of 10 of range at a = 0.5 %.
    """

    def __init__(self, relative_error: float = SKETCH_RELATIVE_ERROR):
        self.gamma = (1 + relative_error) / (1 - relative_error)
        self._log_gamma = math.log(self.gamma)
        self.exact: dict[float, int] | None = {}
        self._last_raw = self._last_key = math.nan
        self.positive: dict[int, int] = {}
        self.negative: dict[int, int] = {}
        self.zeros = 0
        self.count = 0

    def add(self, x: float) -> None:
        self.count += 1
        if self.exact is None:
            self._to_bucket(x, 1)
            return
        if x != self._last_raw:  # spreads repeat: format once per new value
            self._last_raw, self._last_key = x, float(f"{x:.12g}")
        key = self._last_key
        self.exact[key] = self.exact.get(key, 0) + 1
        if len(self.exact) > EXACT_VALUES:
            for value, n in self.exact.items():
                self._to_bucket(value, n)
            self.exact = None

    def _to_bucket(self, x: float, n: int) -> None:
        if x > 0:
            k = math.ceil(math.log(x) / self._log_gamma)
            self.positive[k] = self.positive.get(k, 0) + n
        elif x < 0:
            k = math.ceil(math.log(-x) / self._log_gamma)
            self.negative[k] = self.negative.get(k, 0) + n
        else:
            self.zeros += n

    def _value(self, k: int) -> float:
        return 2 * self.gamma ** k / (self.gamma + 1)

    def percentile(self, percent: int) -> float | None:
        """The nearest-rank value: the smallest with at least ``percent`` % of values <= it."""
        if not self.count:
            return None
        rank = max(1, -(-percent * self.count // 100))  # ceil without float rounding
        seen = 0
        if self.exact is not None:
            for value in sorted(self.exact):
                seen += self.exact[value]
                if seen >= rank:
                    return value
        for k in sorted(self.negative, reverse=True):  # the most negative first
            seen += self.negative[k]
            if seen >= rank:
                return -self._value(k)
        seen += self.zeros
        if seen >= rank:
            return 0.0
        for k in sorted(self.positive):
            seen += self.positive[k]
            if seen >= rank:
                return self._value(k)
        raise AssertionError("rank beyond count")  # unreachable: the counts add up to count


class SpreadStats:
    """Spreads where both sides exist: absolute (ask - bid) and in bps of the mid."""

    def __init__(self) -> None:
        self.n = 0
        self._sum = 0.0
        self._sum_bps = 0.0
        self._abs = QuantileSketch()
        self._bps = QuantileSketch()

    def add(self, bid, ask) -> None:
        if bid is None or ask is None or not (bid > 0 and ask > 0) or math.isinf(bid + ask):
            return  # a missing side (or NaN, which fails > 0): no spread to speak of
        spread = ask - bid
        bps = spread / ((ask + bid) / 2) * 1e4
        self.n += 1
        self._sum += spread
        self._sum_bps += bps
        self._abs.add(spread)
        self._bps.add(bps)

    def as_dict(self) -> dict | None:
        if not self.n:
            return None
        return {"n": self.n, "mean": self._sum / self.n, "median": self._abs.percentile(50),
                "p95": self._abs.percentile(95), "mean_bps": self._sum_bps / self.n,
                "median_bps": self._bps.percentile(50), "p95_bps": self._bps.percentile(95)}


class RealizedVol:
    """Annualised realized volatility of log returns on a regular grid of ``step_s`` seconds.

    Grid points are t0 + k * step (t0: the first observation); the price at a grid point is
    the last one observed at or before it (previous-tick sampling: a grid point without a new
    price gives a zero return). vol = sqrt(mean(r^2)) * sqrt(SECONDS_PER_YEAR / step), with no
    mean subtracted; n/a under MIN_RETURNS returns.
    """

    def __init__(self, step_s: int):
        self.step_s = step_s
        self.step_ns = step_s * 10**9
        self.next_grid: int | None = None
        self.last_price = 0.0
        self.sampled = 0.0  # the price at the latest grid point sampled
        self.sum_sq = 0.0
        self.returns = 0
        self.last_ts = 0

    def observe(self, ts_ns: int, price: float) -> None:
        if self.next_grid is None:
            self.next_grid = ts_ns + self.step_ns
            self.sampled = self.last_price = price
            self.last_ts = ts_ns
            return
        self._sample_through(ts_ns - 1)  # grid points before this observation
        self.last_price = price
        self.last_ts = max(self.last_ts, ts_ns)

    def _sample_through(self, limit_ns: int) -> None:
        if self.next_grid is None or self.next_grid > limit_ns:
            return
        points = (limit_ns - self.next_grid) // self.step_ns + 1
        r = math.log(self.last_price / self.sampled)  # the first point; the others repeat it
        self.sum_sq += r * r
        self.returns += points
        self.sampled = self.last_price
        self.next_grid += points * self.step_ns

    def as_dict(self) -> dict:
        self._sample_through(self.last_ts)  # grid points up to the last observation
        vol = None
        if self.returns >= MIN_RETURNS:
            vol = math.sqrt(self.sum_sq / self.returns) * math.sqrt(SECONDS_PER_YEAR / self.step_s)
        return {"interval_s": self.step_s, "returns": self.returns, "vol": vol}


def _json_number(x: float | None) -> float | str | None:
    """A price as read, JSON-safe: NaN and infinities (bad input) become "nan", "inf"."""
    return x if x is None or math.isfinite(x) else str(x)


@dataclass
class SeqCount:
    gaps: int = 0  # times a seq skipped ahead
    missed: int = 0  # sequence numbers skipped in all
    resets: int = 0  # times a seq went back (a publisher restarted, or frames journaled twice)

    def add(self, verdict: int) -> None:
        if verdict == WENT_BACK:
            self.resets += 1
        elif verdict > 0:
            self.gaps += 1
            self.missed += verdict

    def as_dict(self) -> dict:
        return {"gaps": self.gaps, "missed": self.missed, "resets": self.resets}


@dataclass
class TimeSpan:
    first: int | None = None
    last: int | None = None
    previous: int | None = None  # the record before, in journal order
    max_gap: int = 0
    max_gap_at: int | None = None

    def add(self, ts: int) -> None:
        if self.first is None:
            self.first = self.last = ts
        else:
            self.first = min(self.first, ts)
            self.last = max(self.last, ts)
            if ts - self.previous > self.max_gap:  # (a clock that went back: no gap)
                self.max_gap = ts - self.previous
                self.max_gap_at = self.previous
        self.previous = ts

    def as_dict(self) -> dict:
        if self.first is None:
            return {"first": None, "first_ns": None, "last": None, "last_ns": None, "span_s": None}
        return {"first": iso(self.first), "first_ns": self.first, "last": iso(self.last),
                "last_ns": self.last, "span_s": (self.last - self.first) / 1e9}


@dataclass
class InstrumentStats:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INSTRUMENT_KINDS, 0))
    time: TimeSpan = field(default_factory=TimeSpan)
    seq: SeqCount = field(default_factory=SeqCount)
    stale_books: int = 0
    spreads: dict[str, SpreadStats] = field(default_factory=lambda: {"book": SpreadStats(),
                                                                      "ticker": SpreadStats()})

    def as_dict(self) -> dict:
        t = self.time
        return {"counts": self.counts, "messages": sum(self.counts.values()), **t.as_dict(),
                "max_time_gap_s": t.max_gap / 1e9,
                "max_time_gap_at": None if t.max_gap_at is None else iso(t.max_gap_at),
                "sequence": self.seq.as_dict(), "stale_books": self.stale_books,
                "spread": {source: s.as_dict() for source, s in self.spreads.items()}}


@dataclass
class IndexStats:
    count: int = 0
    first_price: float | None = None
    last_price: float | None = None
    bad_prices: int = 0  # zero, negative or not finite: left out of the volatility
    time: TimeSpan = field(default_factory=TimeSpan)
    seq: SeqCount = field(default_factory=SeqCount)
    vols: list[RealizedVol] = field(default_factory=lambda: [RealizedVol(s) for _, s in VOL_WINDOWS])

    def add(self, ts: int, price: float) -> None:
        self.count += 1
        self.time.add(ts)
        if self.first_price is None:
            self.first_price = price
        self.last_price = price
        if price > 0 and math.isfinite(price):
            for vol in self.vols:
                vol.observe(ts, price)
        else:
            self.bad_prices += 1

    def as_dict(self) -> dict:
        return {"count": self.count, "first_price": _json_number(self.first_price),
                "last_price": _json_number(self.last_price),
                **self.time.as_dict(), "sequence": self.seq.as_dict(), "bad_prices": self.bad_prices,
                "realized_vol": {name: v.as_dict() for (name, _), v in zip(VOL_WINDOWS, self.vols)}}


class StatsCollector:
    """Feed records with :meth:`add` (and problems with :meth:`add_problem`); :meth:`document`."""

    def __init__(self) -> None:
        self.records = 0
        self.time = TimeSpan()
        self.kinds: dict[str, int] = {}
        self.unknown_topics = 0
        self.decode_errors: dict[str, int] = {}
        self.seq = SeqCount()
        self.instruments: dict[tuple[str, str, str], InstrumentStats] = {}
        self.indexes: dict[tuple[str, str, str], IndexStats] = {}
        self.problems: list[Problem] = []
        self._tracker = SeqTracker()
        self._topics: dict[bytes, tuple[str, str, str]] = {}  # topic -> (text, kind, stage)

    def add_problem(self, problem: Problem) -> None:
        self.problems.append(problem)

    def add(self, record: Record) -> None:
        self.records += 1
        ts = record.ts_ns
        self.time.add(ts)
        names = self._topics.get(record.topic)
        if names is None:
            topic = record.topic.decode("utf-8", "replace")
            names = (topic, messages.topic_kind(topic), topic.split(".", 1)[0])
            if len(self._topics) < _MAX_CACHED_TOPICS:
                self._topics[record.topic] = names
        topic, kind, stage = names
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        try:
            msg = messages.decode(topic, record.payload)
        except messages.FrameError as exc:
            if exc.kind == "unknown_topic":
                self.unknown_topics += 1  # counted under its kind above: a newer daemon's type
            else:
                self.decode_errors[kind] = self.decode_errors.get(kind, 0) + 1
            return
        verdict = self._tracker.observe(msg.src, topic, msg.seq)
        self.seq.add(verdict)
        # isinstance: clean.* types extend the md ones (CleanBook is a Book, ...)
        if isinstance(msg, messages.Index):
            series = self.indexes.get((stage, msg.venue, msg.name))
            if series is None:
                series = self.indexes[(stage, msg.venue, msg.name)] = IndexStats()
            series.add(ts, msg.price)
            series.seq.add(verdict)
            return
        if not isinstance(msg, (messages.Book, messages.Ticker, messages.Trade, messages.Instrument)):
            return  # heartbeats: counted by kind and sequence only
        name = msg.name if isinstance(msg, messages.Instrument) else msg.instrument
        inst = self.instruments.get((stage, msg.venue, name))
        if inst is None:
            inst = self.instruments[(stage, msg.venue, name)] = InstrumentStats()
        inst.time.add(ts)
        inst.seq.add(verdict)
        if isinstance(msg, messages.Book):
            inst.counts["book"] += 1
            if msg.stale:
                inst.stale_books += 1  # a book being rebuilt: its prices are not a market
            elif msg.bids and msg.asks:
                inst.spreads["book"].add(msg.bids[0][0], msg.asks[0][0])
        elif isinstance(msg, messages.Ticker):
            inst.counts["ticker"] += 1
            inst.spreads["ticker"].add(msg.bid, msg.ask)
        elif isinstance(msg, messages.Trade):
            inst.counts["trade"] += 1
        else:
            inst.counts["instrument"] += 1

    def document(self, files: list[dict], record_filter: dict) -> dict:
        """Everything, as one JSON-able dict (the table is drawn from it)."""
        return {
            "files": files,
            "filter": record_filter,
            "records": self.records,
            **self.time.as_dict(),
            "kinds": dict(sorted(self.kinds.items())),
            "unknown_topics": self.unknown_topics,
            "decode_errors": dict(sorted(self.decode_errors.items())),
            "sequence": self.seq.as_dict(),
            "instruments": [{"stage": s, "venue": v, "instrument": i, **st.as_dict()}
                            for (s, v, i), st in sorted(self.instruments.items())],
            "indexes": [{"stage": s, "source": src, "name": n, **st.as_dict()}
                        for (s, src, n), st in sorted(self.indexes.items())],
            "problems": [problem_as_dict(p) for p in self.problems],
        }
