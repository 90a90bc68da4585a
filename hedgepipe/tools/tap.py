"""zmq-tap: show what is on the bus, frame by frame or as rates.

It reads endpoints like any daemon's ``--in`` (one SUB socket for all of them, or ``-`` for a
``[topic, payload]`` stream on stdin) and prints each frame as an aligned text line or one
JSON object per line. A frame it cannot decode is shown as such and counted, never fatal: the
tap is where bad frames become visible. ``--stats`` prints per-prefix tables instead (rates,
totals, sequence gaps, errors, lag) and a final table at exit. docs/zmq-tap.md has examples.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import re
import sys
import time

import click
import msgspec
import zmq

from .. import messages
from ..bus import open_inputs
from ..cli import common_options, guarded
from ..clock import iso_to_ns
from ..config import load_settings
from ..eventloop import InputLoop
from ..seqtrack import WENT_BACK, SeqTracker
from ..errors import ConfigError
from ..logs import setup_logging

log = logging.getLogger("hedgepipe.tap")

# ---- --since ----------------------------------------------------------------------------------

_AGE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_AGE_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


def parse_since(text: str, now_ns: int) -> int:
    """``--since`` as ns since the epoch: ISO-8601 (UTC unless it says otherwise) or an age."""
    age = _AGE.fullmatch(text.strip())
    if age:
        return now_ns - int(float(age[1]) * _AGE_NS[age[2]])
    try:
        return iso_to_ns(text)
    except ValueError:
        raise ValueError(f"{text!r}: want an ISO-8601 time (2026-11-23T05:00:00Z) "
                         f"or an age such as 30s, 5m, 2h, 1d") from None


class SinceType(click.ParamType):
    name = "WHEN"

    def convert(self, value, param, ctx):
        try:
            return parse_since(value, time.time_ns())
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


# ---- rendering --------------------------------------------------------------------------------

_ENVELOPE = frozenset(messages.Envelope.__struct_fields__)
_json = msgspec.json.Encoder(enc_hook=str)  # msgpack ext types and the like: shown as text
_MAX_LINE = 240


def envelope_of(obj) -> tuple[str, int, int, int]:
    """(src, seq, ts_event, ts_recv) of an untyped payload, where it has them."""
    if not isinstance(obj, dict):
        return "", 0, 0, 0
    src = obj.get("src")
    nums = [obj.get(k) for k in ("seq", "ts_event", "ts_recv")]
    return (src if isinstance(src, str) else "",
            *(n if isinstance(n, int) and not isinstance(n, bool) else 0 for n in nums))


def _num(v: float) -> str:
    """Shortest exact form (``:g`` would print 100000.5 as 100000), without a trailing .0."""
    return repr(v).removesuffix(".0")


def _val(v) -> str:
    if isinstance(v, float):
        return _num(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(map(_val, v)) + "]" if len(v) <= 4 else f"[{len(v)} items]"
    if isinstance(v, dict):  # the line is cut at _MAX_LINE anyway: do not format a huge map
        items = [f"{k}:{_val(x)}" for k, x in itertools.islice(v.items(), 8)]
        return "{" + ",".join(items) + (",..." if len(v) > 8 else "") + "}"
    if isinstance(v, (bytes, bytearray)):
        return "0x" + bytes(v[:16]).hex() + ("..." if len(v) > 16 else "")
    return str(v)


def _levels(levels, depth: int = 3) -> str:
    shown = " ".join(f"{_num(p)}x{_num(a)}" for p, a in levels[:depth]) or "-"
    return shown + (f" +{len(levels) - depth}" if len(levels) > depth else "")


def fields_text(msg) -> str:
    """The compact part of a text line: the fields that say what changed."""
    if isinstance(msg, messages.Book):
        text = f"bid {_levels(msg.bids)} | ask {_levels(msg.asks)}"
        return text + (f" cid={msg.change_id}" if msg.change_id else "") + (" STALE" if msg.stale else "")
    if isinstance(msg, messages.Ticker):
        parts = []
        for label, price, amount in (("bid", msg.bid, msg.bid_amount), ("ask", msg.ask, msg.ask_amount)):
            if price is not None:
                parts.append(f"{label} {_num(price)}" + ("" if amount is None else f"x{_num(amount)}"))
        for label, value in (("last", msg.last), ("mark", msg.mark_price), ("iv", msg.mark_iv),
                             ("und", msg.underlying_price), ("delta", msg.delta)):
            if value is not None:
                parts.append(f"{label} {_num(value)}")
        return " ".join(parts)
    if isinstance(msg, messages.Trade):
        return f"{msg.side} {_num(msg.amount)} @ {_num(msg.price)} id={msg.trade_id}"
    if isinstance(msg, messages.Heartbeat):
        counters = " ".join(f"{k}={v}" for k, v in msg.counters.items() if v)
        return (f"{msg.state} up {_num(msg.uptime_s)}s {counters} "
                f"lag p50/max {_num(msg.lag_p50_us)}/{_num(msg.lag_max_us)}us").replace("  ", " ")
    if isinstance(msg, msgspec.Struct):
        items = ((f, getattr(msg, f)) for f in msg.__struct_fields__)
    elif isinstance(msg, dict):
        items = msg.items()
    else:
        return _val(msg)
    return " ".join(f"{k}={_val(v)}" for k, v in items if k not in _ENVELOPE and v is not None)


class TextLines:
    """Aligned text lines; the topic and src#seq columns widen to the longest seen."""

    def __init__(self):
        self._topic_w = 28
        self._src_w = 16
        self._second = (None, "")  # most frames share their second with the one before

    def _clock(self, ts_ns: int) -> str:
        if not ts_ns:
            return "--:--:--.------"
        sec, ns = divmod(ts_ns, 10**9)
        if sec != self._second[0]:
            try:
                self._second = sec, time.strftime("%H:%M:%S", time.gmtime(sec))
            except (OverflowError, OSError, ValueError):  # a nonsense ts_event in an unknown type
                return str(ts_ns)
        return f"{self._second[1]}.{ns // 1000:06d}"

    def frame(self, topic: str, msg, unknown: bool) -> bytes:
        src, seq, ts_event, _ = envelope_of(msg) if unknown else (msg.src, msg.seq, msg.ts_event, 0)
        src_seq = f"{src}#{seq}" if src or seq else "-"
        self._topic_w = max(self._topic_w, min(len(topic), 64))
        self._src_w = max(self._src_w, min(len(src_seq), 32))
        fields = ("[unknown_topic] " if unknown else "") + fields_text(msg)
        line = f"{self._clock(ts_event)} {topic:<{self._topic_w}} {src_seq:<{self._src_w}} {fields}"
        return (line[:_MAX_LINE] + "\n").encode()


def json_frame(topic: str, msg, unknown: bool) -> bytes:
    obj = {"topic": topic, "unknown_topic": True, "msg": msg} if unknown else {"topic": topic, "msg": msg}
    return _json.encode(obj) + b"\n"


def hex_head(payload: bytes, n: int = 32) -> str:
    return payload[:n].hex() + ("..." if len(payload) > n else "")


def error_line(topic: str | None, kind: str, detail: str, hex_: str | None, as_json: bool) -> bytes:
    if as_json:
        return _json.encode({"topic": topic, "error": kind, "detail": detail, "hex": hex_}) + b"\n"
    line = f"!! {kind} {topic or '(stream)'}: {detail}".replace("\n", " ")
    return (line + (f" {hex_}" if hex_ else "") + "\n").encode(errors="replace")


# ---- --stats ----------------------------------------------------------------------------------

class LagSamples:
    """Lag samples in ns: the latest of this interval, and a uniform sample of the whole run."""

    CAP = 512
    __slots__ = ("window", "window_n", "window_max", "sample", "all_n", "all_max")

    def __init__(self):
        self.window: list[int] = []
        self.window_n = 0
        self.window_max: int | None = None
        self.sample: list[int] = []
        self.all_n = 0
        self.all_max: int | None = None

    def add(self, lag: int) -> None:
        if self.window_n < self.CAP:
            self.window.append(lag)
        else:
            self.window[self.window_n % self.CAP] = lag
        self.window_n += 1
        self.all_n += 1
        if len(self.sample) < self.CAP:  # reservoir sampling keeps memory bounded per row
            self.sample.append(lag)
        else:
            j = random.randrange(self.all_n)
            if j < self.CAP:
                self.sample[j] = lag
        if self.window_max is None or lag > self.window_max:
            self.window_max = lag
        if self.all_max is None or lag > self.all_max:
            self.all_max = lag

    @staticmethod
    def _p50_max(samples: list[int], mx: int | None) -> tuple[float | None, float | None]:
        if not samples:
            return None, None
        return round(sorted(samples)[len(samples) // 2] / 1e3, 1), round(mx / 1e3, 1)

    def take_window(self) -> tuple[float | None, float | None]:
        out = self._p50_max(self.window, self.window_max)
        self.window, self.window_n, self.window_max = [], 0, None
        return out

    def overall(self) -> tuple[float | None, float | None]:
        return self._p50_max(self.sample, self.all_max)


class StatsRow:
    __slots__ = ("n", "total", "gaps", "resets", "errors", "lag")

    def __init__(self):
        self.n = self.total = self.gaps = self.resets = self.errors = 0
        self.lag = LagSamples()


class TapStats:
    """Counts per topic prefix (or topic); ``seq`` is tracked per (src, topic) as the runtime does."""

    STREAM = "(stream)"  # the row for problems that have no topic (garbage on a pipe, one-part)

    def __init__(self, by_topic: bool, start: float):
        self.by_topic = by_topic
        self.rows: dict[str, StatsRow] = {}
        self._row_of: dict[str | None, StatsRow] = {}
        self._seqs = SeqTracker()
        self._start = self._last_take = start

    def _row(self, topic: str | None) -> StatsRow:
        row = self._row_of.get(topic)
        if row is None:
            key = (self.STREAM if topic is None else
                   topic if self.by_topic else ".".join(topic.split(".", 2)[:2]))
            row = self._row_of[topic] = self.rows.setdefault(key, StatsRow())
        return row

    def frame(self, topic: str, src: str, seq: int, ts_recv: int, now_ns: int) -> None:
        row = self._row(topic)
        row.n += 1
        row.total += 1
        if seq:
            missed = self._seqs.observe(src, topic, seq)
            if missed > 0:
                row.gaps += missed
            elif missed == WENT_BACK:
                row.resets += 1
        if ts_recv:
            row.lag.add(now_ns - ts_recv)

    def error(self, topic: str | None) -> None:
        self._row(topic).errors += 1

    def take(self, final: bool, now: float) -> dict:
        elapsed = now - (self._start if final else self._last_take)
        self._last_take = now
        rows = {}
        for key in sorted(self.rows):
            row = self.rows[key]
            p50, mx = row.lag.overall() if final else row.lag.take_window()
            n = row.total if final else row.n
            row.n = 0
            rows[key] = {"msgs_per_s": round(n / elapsed, 1) if elapsed > 0 else 0.0,
                         "total": row.total, "gaps": row.gaps, "resets": row.resets,
                         "errors": row.errors, "lag_p50_us": p50, "lag_max_us": mx}
        return {"stats": "final" if final else "interval",
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "elapsed_s": round(elapsed, 3), "by": "topic" if self.by_topic else "prefix",
                "rows": rows}


_COLUMNS = (("msgs/s", "msgs_per_s"), ("total", "total"), ("gaps", "gaps"), ("resets", "resets"),
            ("errors", "errors"), ("lag_p50_us", "lag_p50_us"), ("lag_max_us", "lag_max_us"))


def stats_text(table: dict) -> bytes:
    what = "final stats" if table["stats"] == "final" else "stats"
    cells = [[table["by"], *(c for c, _ in _COLUMNS)]]
    for key, row in table["rows"].items():
        cells.append([key, *("-" if row[k] is None else f"{row[k]:.1f}" if isinstance(row[k], float)
                             else str(row[k]) for _, k in _COLUMNS)])
    widths = [max(7, *(len(r[i]) for r in cells)) for i in range(len(cells[0]))]  # steadier
    lines = [f"-- {what} at {table['time']} over {table['elapsed_s']:.2f}s --"]
    lines += [f"{r[0]:<{widths[0]}}  " + " ".join(f"{c:>{w}}" for c, w in zip(r[1:], widths[1:]))
              for r in cells]
    if not table["rows"]:
        lines.append("(no frames)")
    return ("\n".join(lines) + "\n\n").encode()


# ---- the loop ---------------------------------------------------------------------------------

class Tap:
    """Inputs in, lines or stats tables out, until EOF, --count, a signal or a closed stdout."""

    def __init__(self, endpoints: list[str], topics: list[str], *, as_json: bool, count: int,
                 since_ns: int, stats: TapStats | None, interval_s: float, rcvhwm: int,
                 max_frame_bytes: int):
        self.endpoints = endpoints
        self.topics = topics
        self.as_json = as_json
        self.count = count
        self.since_ns = since_ns
        self.stats = stats
        self.interval_s = interval_s
        self.rcvhwm = rcvhwm
        self.max_frame_bytes = max_frame_bytes
        self.shown = 0  # frames shown (counted, with --stats); undecodable ones are not frames
        self.broken = False  # stdout closed by the reader
        self._stop = False
        self._lines: list[bytes] = []
        self._text = TextLines()

    def run(self) -> int:
        ctx = zmq.Context()
        inputs: list = []
        events = None
        try:
            inputs = open_inputs(ctx, self.endpoints, self.topics, self.rcvhwm, self.max_frame_bytes)
            for inp in inputs:
                for endpoint in inp.missing_ipc_endpoints():
                    log.warning("nothing is listening there yet; waiting for a publisher",
                                extra={"endpoint": endpoint})
            events = InputLoop(inputs, self._on_signal)
            events.open()
            self._loop(events)
        finally:
            if events is not None:
                events.close()
            for inp in inputs:
                inp.close()
            ctx.term()
        if self.stats is not None:
            self._lines.append(self._stats_output(final=True))
            self._flush()
        return 0

    def _on_signal(self, _signum: int) -> None:
        self._stop = True

    def _loop(self, events: InputLoop) -> None:
        next_table = time.monotonic() + self.interval_s
        while not self._stop:
            timeout = None  # no timers without --stats: sleep until a frame or a signal
            if self.stats is not None:
                timeout = max(0, int((next_table - time.monotonic()) * 1000) + 1)
            for inp in events.poll(timeout):
                self._consume(inp.read())
                if inp.eof:
                    events.ended(inp)
                    self._stop = self._stop or not events.open_inputs  # stdin was all we had
                if self._stop:
                    break
            now = time.monotonic()
            if self.stats is not None and not self._stop and now >= next_table:
                # From the schedule, so tables do not drift; after a stall, no burst of them.
                next_table = max(next_table + self.interval_s, now)
                self._lines.append(self._stats_output(final=False))
            self._flush()

    def _consume(self, items: list) -> None:
        now_ns = time.time_ns()
        for item in items:
            if item.__class__ is not tuple:  # bus.BadFrame: a framing problem, no topic
                self._error(item.kind, None, item.detail, None)
                continue
            topic_b, payload = item
            unknown = False
            try:
                topic, msg = messages.decode_frame(topic_b, payload, self.max_frame_bytes)
                src, seq, ts_event, ts_recv = msg.src, msg.seq, msg.ts_event, msg.ts_recv
            except messages.FrameError as exc:
                if exc.kind != "unknown_topic":
                    self._error(exc.kind, exc.topic, exc.detail, payload)
                    continue
                # A type tap does not know (a newer daemon's) is still worth seeing.
                topic = exc.topic
                try:
                    msg = messages.decode_any(payload)
                except messages.FrameError as err:
                    self._error("unknown_topic", topic,
                                f"no message type, and the payload is not msgpack ({err.detail})", payload)
                    continue
                unknown = True
                src, seq, ts_event, ts_recv = envelope_of(msg)
            if self.since_ns and ts_event and ts_event < self.since_ns:
                continue
            if self.stats is not None:
                self.stats.frame(topic, src, seq, ts_recv, now_ns)
            elif not self._show(topic, msg, unknown, payload):
                continue
            self.shown += 1
            if self.count and self.shown >= self.count:
                self._stop = True
                return

    def _show(self, topic: str, msg, unknown: bool, payload: bytes) -> bool:
        try:
            self._lines.append(json_frame(topic, msg, unknown) if self.as_json
                               else self._text.frame(topic, msg, unknown))
            return True
        # What an untyped payload can hold that JSON or the text form cannot: a map with array
        # keys, nesting deeper than the recursion limit.
        except (TypeError, msgspec.EncodeError, RecursionError) as exc:
            self._error("decode_error", topic, f"cannot be shown: {exc}", payload)
            return False

    def _error(self, kind: str, topic: str | None, detail: str, payload: bytes | None) -> None:
        if self.stats is not None:
            self.stats.error(topic)
            return
        if topic and detail.startswith(topic + ": "):
            detail = detail[len(topic) + 2:]
        hex_ = None if payload is None else hex_head(payload)
        self._lines.append(error_line(topic, kind, detail, hex_, self.as_json))

    def _stats_output(self, final: bool) -> bytes:
        table = self.stats.take(final, time.monotonic())
        return _json.encode(table) + b"\n" if self.as_json else stats_text(table)

    def _flush(self) -> None:
        if not self._lines or self.broken:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            # `zmq-tap | head`: the reader has what it wanted. Point stdout at /dev/null so
            # the interpreter's own flush at exit does not complain, and end quietly.
            self.broken = self._stop = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)


# ---- the command ------------------------------------------------------------------------------

@click.command(name="zmq-tap", context_settings={"help_option_names": ["-h", "--help"],
                                                  "show_default": True})
@click.argument("endpoints", nargs=-1, metavar="[ENDPOINT]...")
@click.option("--topic", "topics", multiple=True, metavar="PREFIX",
              help="Only topics starting with PREFIX (repeatable). Default: every topic.")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object per line: {"topic", "msg"} per frame ("unknown_topic": true '
                   'for a type tap does not know), {"topic", "error", "detail", "hex"} per frame '
                   'that does not decode, {"stats", "rows", ...} per --stats table.')
@click.option("--count", type=click.IntRange(min=1), default=None, metavar="N",
              help="Exit after N frames (frames that do not decode are shown, not counted).")
@click.option("--since", "since_ns", type=SinceType(), default=None,
              help="Only frames whose ts_event is at or after WHEN: ISO-8601, UTC unless it says "
                   "otherwise (2026-11-23T05:00:00Z), or an age (30s, 5m, 2h, 1d ago).")
@click.option("--stats", "show_stats", is_flag=True,
              help="Instead of frames, print every --interval a table per topic prefix (first two "
                   "segments): msgs/s, total, sequence gaps and resets (per src and topic), "
                   "errors, lag (now - ts_recv) p50/max in µs; and a final table at exit.")
@click.option("--by-topic", is_flag=True, help="--stats with one row per full topic.")
@click.option("--interval", type=click.FloatRange(min=0.01), default=1.0, metavar="SECONDS",
              help="With --stats: seconds between tables.")
@common_options
@guarded
def main(endpoints, topics, as_json, count, since_ns, show_stats, by_topic, interval, config_path,
         log_level, log_json):
    """Show the frames on hedgepipe bus ENDPOINTs as they arrive.

    An ENDPOINT is a name from the config's [endpoints] table (a daemon's name), ipc://PATH,
    tcp://HOST:PORT, or - for a msgpack [topic, payload] stream on stdin (what `--out -`
    writes). With no ENDPOINT: every endpoint in [endpoints], less bus-relay when it has
    inputs (it would repeat their frames). An ipc endpoint with nothing
    there yet gets a warning and is waited for.

    A text line shows the event time (UTC, from ts_event), topic, src#seq and the main fields.
    A frame that does not decode is shown as a line starting with `!!` and never stops the tap.
    The tap ends at the end of stdin, after --count frames, on SIGINT/SIGTERM (exit 0), or
    quietly when its reader goes away (`| head`).

    \b
    Examples:
      zmq-tap                                   # everything, from every endpoint
      zmq-tap feed-deribit --topic md.book.deribit.BTC-PERPETUAL
      zmq-tap tcp://10.0.0.5:7100 --json | jq -c .msg.bids[0]
      feed-deribit --out - | zmq-tap - --count 10
      zmq-tap --stats --by-topic --topic hb
    """
    setup_logging(log_level, log_json)
    settings = load_settings(None, config_path=config_path)
    names = list(endpoints) or settings.tap_endpoints()
    resolved = list(dict.fromkeys(settings.endpoint_for(n) for n in names))
    if not resolved:
        raise ConfigError("no ENDPOINT given and [endpoints] is empty")
    tap = Tap(resolved, list(topics), as_json=as_json, count=count or 0, since_ns=since_ns or 0,
              stats=TapStats(by_topic, time.monotonic()) if show_stats or by_topic else None,
              interval_s=interval, rcvhwm=settings.runtime.rcvhwm,
              max_frame_bytes=settings.runtime.max_frame_bytes)
    log.debug("tapping", extra={"endpoints": ",".join(resolved), "topics": ",".join(topics) or "*"})
    return tap.run()
