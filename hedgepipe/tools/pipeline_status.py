"""What `hedgepipe status` shows: supervisord's view of each program joined with the last
heartbeat the program published on the bus.

:func:`collect_heartbeats` listens; :func:`build_rows`, :func:`render_table` and
:func:`rows_as_json` are pure, so the rendering is tested without processes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import zmq

from .. import messages
from ..bus import ZmqInput
from ..messages import FrameError, Heartbeat

#: Heartbeat counters that count input or handler errors (each one a dropped frame).
ERROR_COUNTERS = ("decode_errors", "envelope_errors", "unknown_topics", "bad_frames",
                  "oversized", "truncated", "handler_errors")
HEADERS = ("NAME", "STATE", "PID", "UPTIME", "HB-AGE", "IN", "OUT", "DROPS", "GAPS", "ERRORS", "LAG-p99")
#: Columns aligned left; the others are numbers, aligned right.
_LEFT = {"NAME", "STATE"}
#: Shown as STATE for a daemon heard on the bus that supervisord does not run.
UNSUPERVISED = "-"


@dataclass(frozen=True)
class ProgramStatus:
    name: str
    state: str  # supervisord's statename, or UNSUPERVISED
    pid: int | None
    uptime_s: float | None
    heartbeat: Heartbeat | None
    hb_age_s: float | None
    #: A hedgepipe daemon, which heartbeats on the bus; False for helpers such as deribit-sim.
    on_bus: bool = True

    @property
    def supervised(self) -> bool:
        return self.state != UNSUPERVISED

    @property
    def healthy(self) -> bool:
        return self.state == "RUNNING" and (self.heartbeat is not None or not self.on_bus)

    @property
    def errors(self) -> int | None:
        if self.heartbeat is None:
            return None
        return sum(self.heartbeat.counters.get(k, 0) for k in ERROR_COUNTERS)


def collect_heartbeats(endpoints: list[str], window_s: float, expect: set[str],
                       ctx: zmq.Context | None = None) -> tuple[dict[str, Heartbeat], int]:
    """Listen to ``hb.`` on every endpoint for up to ``window_s``, or until every name in
    ``expect`` was heard. Returns the newest heartbeat per name and how many frames were
    unreadable (counted, not fatal: status must work while something publishes garbage).
    """
    ctx = ctx or zmq.Context.instance()
    urls = sorted({e for e in endpoints if "://" in e})
    heard: dict[str, Heartbeat] = {}
    bad = 0
    inp = ZmqInput(ctx, urls, [messages.heartbeat_topic("")], rcvhwm=10_000)
    try:
        poller = zmq.Poller()
        poller.register(inp.sock, zmq.POLLIN)
        deadline = time.monotonic() + window_s
        # With nothing expected, listen the whole window (for daemons run by hand).
        while not (expect and expect <= heard.keys()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not poller.poll(int(left * 1000) + 1):
                continue
            for item in inp.read():
                if not isinstance(item, tuple):
                    bad += 1
                    continue
                try:
                    hb = messages.decode(item[0].decode(), item[1])
                except (FrameError, UnicodeDecodeError):
                    bad += 1
                    continue
                if not isinstance(hb, Heartbeat):
                    bad += 1
                    continue
                if hb.name not in heard or hb.ts_event >= heard[hb.name].ts_event:
                    heard[hb.name] = hb
    finally:
        inp.close()
    return heard, bad


def build_rows(processes: list[dict], heartbeats: dict[str, Heartbeat], now_ns: int,
               bus_daemons: set[str] | None = None) -> list[ProgramStatus]:
    """One row per supervisord process (``getAllProcessInfo`` dicts), then one per daemon
    heard on the bus that supervisord does not run. Programs not in ``bus_daemons`` (when
    given) are not expected to heartbeat."""
    rows = []
    for proc in sorted(processes, key=lambda p: p["name"]):
        running = proc["statename"] == "RUNNING"
        hb = heartbeats.get(proc["name"])
        rows.append(ProgramStatus(
            name=proc["name"], state=proc["statename"], pid=proc["pid"] or None,
            uptime_s=float(proc["now"] - proc["start"]) if running else None,
            heartbeat=hb, hb_age_s=_age(hb, now_ns),
            on_bus=bus_daemons is None or proc["name"] in bus_daemons))
    supervised = {p["name"] for p in processes}
    for name in sorted(set(heartbeats) - supervised):
        hb = heartbeats[name]
        rows.append(ProgramStatus(name=name, state=UNSUPERVISED, pid=hb.pid, uptime_s=hb.uptime_s,
                                  heartbeat=hb, hb_age_s=_age(hb, now_ns)))
    return rows


def _age(hb: Heartbeat | None, now_ns: int) -> float | None:
    return None if hb is None else max(0.0, (now_ns - hb.ts_event) / 1e9)


def all_healthy(rows: list[ProgramStatus]) -> bool:
    return all(r.healthy for r in rows if r.supervised)


def format_duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    text = f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days}d {text}" if days else text


def format_micros(us: float) -> str:
    if us < 1000:
        return f"{us:.0f}us"
    if us < 1_000_000:
        return f"{us / 1000:.1f}ms"
    return f"{us / 1e6:.2f}s"


def _cells(row: ProgramStatus) -> tuple[str, ...]:
    hb = row.heartbeat
    c = hb.counters if hb else {}
    dash = "-"
    return (row.name, row.state, str(row.pid) if row.pid else dash,
            format_duration(row.uptime_s) if row.uptime_s is not None else dash,
            f"{row.hb_age_s:.1f}s" if row.hb_age_s is not None else dash,
            *(str(c.get(k, 0)) if hb else dash for k in ("in_msgs", "out_msgs", "drops", "gaps")),
            str(row.errors) if hb else dash,
            format_micros(hb.lag_p99_us) if hb else dash)


def render_table(rows: list[ProgramStatus]) -> str:
    table = [HEADERS, *(_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    lines = []
    for line in table:
        cells = [cell.ljust(w) if HEADERS[i] in _LEFT else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(line, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def rows_as_json(rows: list[ProgramStatus]) -> dict:
    programs = []
    for r in rows:
        hb = r.heartbeat
        programs.append({
            "name": r.name, "state": r.state, "supervised": r.supervised, "pid": r.pid,
            "uptime_s": r.uptime_s, "healthy": r.healthy, "errors": r.errors,
            "heartbeat": None if hb is None else {
                "age_s": r.hb_age_s, "pid": hb.pid, "state": hb.state, "uptime_s": hb.uptime_s,
                "counters": hb.counters, "lag_p50_us": hb.lag_p50_us, "lag_p99_us": hb.lag_p99_us,
                "lag_max_us": hb.lag_max_us, "src": hb.src, "seq": hb.seq, "ts_event": hb.ts_event},
        })
    return {"healthy": all_healthy(rows), "programs": programs}
