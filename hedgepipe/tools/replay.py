"""hedgepipe replay: journal records back onto the bus, byte for byte, with their timing.

Frames go out exactly as recorded (topic and payload: the original ``src``/``seq``/stamps
travel, so gap detection and determinism hold downstream), merged across files by record
time, at the original pace scaled by ``--speed`` or as fast as the output takes them. Every
file's header is checked before anything is sent. docs/replay-and-stats.md.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import click
import zmq

from ..bus import STDIO, open_output
from ..cli import guarded
from ..clock import SystemClock
from ..errors import UpstreamError
from ..journal import Problem, Record
from .journal_input import (RecordFilter, filter_options, format_problem, iso, merged_records,
                            resolve_journals, span_text)

#: Pipe output: write when this much is pending (and always before waiting for a record's time).
FLUSH_BYTES = 256 * 1024
#: Socket output: frames queued per subscriber; beyond, the XPUB refuses and replay waits.
SNDHWM = 100_000
#: How long closing a socket may take to hand queued frames to subscribers.
LINGER_MS = 10_000
#: Longest single sleep: a stop request or a subscription is noticed at least this often.
SLEEP_SLICE_S = 0.2
#: Wait after the socket's queue is full before trying the frame again.
FULL_RETRY_S = 0.001
#: After a stop request, how long a blocked pipe write may still take to end on a frame boundary.
STOP_GRACE_S = 1.0


class Pacer:
    """When each record is due on the monotonic clock: its original spacing divided by speed.

    Deadlines are absolute (origin + elapsed record time / speed), so time spent sending or
    oversleeping never accumulates into drift. A record stamped earlier than the one before it
    (the writer's clock went back) is due at once, and the schedule continues from it: the
    jump back is neither waited for (no negative sleep) nor turned into a burst.
    """

    def __init__(self, speed: float, monotonic: Callable[[], float]):
        if speed <= 0:
            raise ValueError(f"speed {speed}: want > 0")
        self.speed = speed
        self._monotonic = monotonic
        self._origin: tuple[float, int] | None = None  # (monotonic, record time) of the first
        self._shift = 0  # ns added to stamps after the clock went back
        self._last = 0  # the latest shifted stamp

    def due(self, ts_ns: int) -> float:
        if self._origin is None:
            self._origin = (self._monotonic(), ts_ns)
            self._last = ts_ns
        stamp = ts_ns + self._shift
        if stamp < self._last:
            self._shift += self._last - stamp
            stamp = self._last
        self._last = stamp
        start, first = self._origin
        return start + (stamp - first) / 1e9 / self.speed


class StopRequest:
    """Set by SIGINT/SIGTERM: replay ends on a frame boundary. A second signal ends it now."""

    def __init__(self) -> None:
        self.signum = 0

    def __bool__(self) -> bool:
        return self.signum != 0

    def handler(self, signum, frame) -> None:
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum


class PipeSender:
    """``--out -``: frames batched into few writes; a slow reader slows replay down."""

    def __init__(self, output, stop: StopRequest, monotonic: Callable[[], float]):
        self.output = output
        self.stop = stop
        self.monotonic = monotonic
        self.lost = 0  # handed over, not written: the reader closed the pipe
        self._give_up_at: float | None = None

    @property
    def broken(self) -> bool:
        return self.output.broken

    def send(self, topic: bytes, payload: bytes) -> None:
        if not self.output.send(topic, payload):
            self.lost += 1  # the pipe broke before this frame
        elif self.output.pending_bytes >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        self.lost += self.output.flush(self._deadline)

    def idle(self) -> None:
        pass

    def _deadline(self) -> float | None:
        """None (wait for the reader) until a stop is requested, then a short grace."""
        if self.stop and self._give_up_at is None:
            self._give_up_at = self.monotonic() + STOP_GRACE_S
        return self._give_up_at


class SocketSender:
    """``--out ipc://|tcp://``: a full subscriber queue makes replay wait, never drop."""

    def __init__(self, output, stop: StopRequest, sleep: Callable[[float], None]):
        self.output = output
        self.stop = stop
        self.sleep = sleep
        self.lost = 0  # frames not queued because a stop came while the queue was full
        self.full_waits = 0
        self.broken = False

    def send(self, topic: bytes, payload: bytes) -> None:
        while not self.output.send(topic, payload):
            if self.stop:
                self.lost += 1
                return
            self.full_waits += 1
            self.output.pump_subscriptions()
            self.sleep(FULL_RETRY_S)

    def flush(self) -> None:
        pass  # zmq writes from its own I/O thread

    def idle(self) -> None:
        self.output.pump_subscriptions()


@dataclass
class FileCount:
    path: str
    read: int = 0
    sent: int = 0


@dataclass
class ReplayResult:
    files: list[FileCount]
    problems: list[Problem] = field(default_factory=list)
    sent: int = 0
    lost: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    stopped: str = ""  # why replay ended early, if it did


def replay_records(items: Iterable[tuple[int, Record]], keep: Callable[[Record], bool], sender,
                   pacer: Pacer | None, monotonic: Callable[[], float],
                   sleep: Callable[[float], None], stop: StopRequest, result: ReplayResult) -> None:
    """Send what ``keep`` accepts, each at its time from ``pacer`` (None: at once)."""
    counts = result.files
    for index, record in items:
        counts[index].read += 1
        if not keep(record):
            continue
        if pacer is not None:
            due = pacer.due(record.ts_ns)
            if due > monotonic():
                sender.flush()  # what is already due goes out before waiting
                while not stop and not sender.broken and (left := due - monotonic()) > 0:
                    sleep(min(left, SLEEP_SLICE_S))
                    sender.idle()
        if stop or sender.broken:
            break
        sender.send(record.topic, record.payload)
        counts[index].sent += 1
        result.sent += 1
        ts = record.ts_ns
        result.first_ts = ts if result.first_ts is None else min(result.first_ts, ts)
        result.last_ts = ts if result.last_ts is None else max(result.last_ts, ts)
    sender.flush()
    result.lost = sender.lost
    if sender.broken:
        result.stopped = "the reader closed the pipe"
    elif stop:
        result.stopped = f"stopped by {signal.Signals(stop.signum).name}"


def wait_for_subscribers(output, wanted: int, timeout_s: float, monotonic: Callable[[], float],
                         stop: StopRequest) -> None:
    """Until ``wanted`` subscriptions arrived on the XPUB, or UpstreamError at the timeout."""
    deadline = monotonic() + timeout_s
    while True:
        output.pump_subscriptions()
        if output.subscriptions >= wanted or stop:
            return
        if monotonic() >= deadline:
            raise UpstreamError(f"{output.subscriptions} of {wanted} subscribers connected to "
                                f"{output.bound} within {timeout_s:g} s; nothing was sent "
                                f"(--wait-subscribers 0 sends anyway)")
        output.sock.poll(int(min(SLEEP_SLICE_S, max(0.0, deadline - monotonic())) * 1000) + 1)


def summary_lines(result: ReplayResult) -> list[str]:
    total_read = sum(f.read for f in result.files)
    lines = [f"{result.sent - result.lost} frames sent of {total_read} read from "
             f"{len(result.files)} files; {len(result.problems)} problems"]
    if result.first_ts is not None:
        lines[0] += (f"; record time {iso(result.first_ts)} .. {iso(result.last_ts)} "
                     f"({span_text((result.last_ts - result.first_ts) / 1e9)})")
    width = max(len(f.path) for f in result.files)
    lines += [f"  {f.path.ljust(width)}  {f.sent:>10} sent  {f.read:>10} read" for f in result.files]
    if result.stopped:
        lost = f"; {result.lost} frames not delivered" if result.lost else ""
        lines.append(f"ended early: {result.stopped}{lost}")
    return lines


def _say(text: str) -> None:
    click.echo(f"replay: {text}", err=True)


@click.command(context_settings={"show_default": True})
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True), metavar="FILE...")
@click.option("--out", "endpoint", required=True, metavar="ENDPOINT",
              help="Publish on ENDPOINT (ipc://PATH or tcp://HOST:PORT, bound), or - for a "
                   "[topic, payload] stream on stdout.")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Play the original timing this many times faster [default: 1.0].")
@click.option("--as-fast-as-possible", "afap", is_flag=True,
              help="Send without waiting (as fast as the output takes frames).")
@filter_options
@click.option("--wait-subscribers", type=click.IntRange(min=0), default=None, metavar="N",
              help="On a socket, send nothing until N subscriptions arrived (a subscriber with "
                   "two topic prefixes counts twice) [default: 1; ignored for -].")
@click.option("--wait-timeout", type=click.FloatRange(min=0), default=10.0, metavar="SECONDS",
              help="Give up (exit 69, nothing sent) if the subscribers are not there by then.")
def replay(paths, endpoint, speed, afap, record_filter, wait_subscribers, wait_timeout):
    """Republish journal files (or every journal under directories) on ENDPOINT.

    Frames go out byte for byte as recorded, merged across files by record time, with the
    original spacing (divided by --speed) or as fast as possible. Torn tails and corrupt
    records are reported on stderr (file and offset) and the intact records are sent. A file
    that is not a journal: exit 65 before anything is sent. A summary goes to stderr at the
    end. A reader closing the pipe ends replay with exit 0; Ctrl-C or SIGTERM ends it on a
    frame boundary (exit 130 or 143). See docs/replay-and-stats.md.
    """
    if speed is not None and afap:
        raise click.UsageError("--speed and --as-fast-as-possible exclude each other")
    if endpoint == STDIO and os.isatty(1):
        raise click.UsageError("--out - writes binary frames: pipe stdout into a daemon "
                               "(... --in -) or zmq-tap -")
    _run(list(paths), endpoint, None if afap else (speed or 1.0), record_filter,
         1 if wait_subscribers is None else wait_subscribers, wait_timeout)


@guarded
def _run(paths: list[str], endpoint: str, speed: float | None, record_filter: RecordFilter,
         wait_subscribers: int, wait_timeout: float) -> int:
    journals = resolve_journals(paths)  # every header checked: nothing is sent on a bad file
    result = ReplayResult([FileCount(str(p)) for p in journals.files], list(journals.skipped))
    for problem in journals.skipped:
        _say(format_problem(problem))
    clock = SystemClock()
    stop = StopRequest()
    previous = {s: signal.signal(s, stop.handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_problem(problem: Problem) -> None:
        result.problems.append(problem)
        _say(format_problem(problem))

    ctx = zmq.Context()
    output = None
    try:
        output = open_output(ctx, endpoint, SNDHWM, LINGER_MS, when_full="refuse")
        if endpoint == STDIO:
            sender = PipeSender(output, stop, clock.monotonic)
        else:
            output.sock.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, not only new topics
            if wait_subscribers:
                _say(f"waiting for {wait_subscribers} subscribers on {output.bound}")
                wait_for_subscribers(output, wait_subscribers, wait_timeout, clock.monotonic, stop)
            sender = SocketSender(output, stop, time.sleep)
        pacer = None if speed is None else Pacer(speed, clock.monotonic)
        items = merged_records(journals.files, on_problem)
        replay_records(items, record_filter, sender, pacer, clock.monotonic, time.sleep, stop, result)
    finally:
        if output is not None:
            if stop and output.sock is not None:
                output.sock.setsockopt(zmq.LINGER, 0)  # stopping: do not wait for slow readers
            output.close()
        ctx.term()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for line in summary_lines(result):
        _say(line)
    return 128 + stop.signum if stop else 0

