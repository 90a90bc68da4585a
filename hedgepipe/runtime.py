"""The daemon runtime: everything a daemon needs that is not its domain logic.

A daemon is a :class:`Service`: the topics it takes, a handler that returns what it
publishes, timers, and a config type. :class:`Runtime` owns the sockets or pipes, the
clock, signals, heartbeats, counters, metrics and shutdown, so a Service can be tested with
a list of messages in and a list out (see :func:`run_handler`).

Every input problem is counted, logged once per kind, and dropped; the daemon keeps going.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from typing import Callable, ClassVar, Iterable, NamedTuple, Union

import zmq

from . import messages
from .bus import PipeInput, PipeOutput, ZmqInput, open_inputs, open_output
from .clock import SystemClock
from .config import DaemonConfig, RuntimeConfig, ensure_run_dir
from .eventloop import InputLoop
from .seqtrack import WENT_BACK, SeqTracker
from .logs import OncePerKind
from .messages import Envelope, FrameError, Heartbeat, heartbeat_topic

log = logging.getLogger("hedgepipe.runtime")
#: While draining, input that stays quiet this long is taken to be all there was.
_DRAIN_QUIET_MS = 50


class RawFrame(NamedTuple):
    """A frame forwarded byte for byte (envelope untouched)."""

    topic: bytes
    payload: bytes


#: What a handler returns: (topic, message) pairs, or raw frames to forward as they are.
Out = Union[tuple[str, Envelope], RawFrame]


@dataclass
class Timer:
    period_s: float
    callback: Callable[[int], Iterable[Out]]  # called with the wall clock in ns
    name: str = "timer"


class Service:
    """Domain logic of one daemon. Subclass it; keep I/O out of ``__init__``."""

    name: ClassVar[str] = "service"
    summary: ClassVar[str] = ""
    Config: ClassVar[type[DaemonConfig]] = DaemonConfig
    #: False: ``on_message`` gets topic and payload as bytes, undecoded (forwarders, recorders).
    decode_inputs: ClassVar[bool] = True
    #: Extra click options; each one's name is a key of Config (value None = not given).
    cli_options: ClassVar[tuple] = ()
    #: True for daemons that publish their inputs again (bus-relay): tools tapping every
    #: endpoint leave such a daemon out when it has inputs, or they would see each frame twice.
    republishes_inputs: ClassVar[bool] = False

    def __init__(self, config: DaemonConfig, clock=SystemClock()):
        self.config = config
        self.clock = clock
        #: The daemon's own counters; they appear in its heartbeat and metrics.
        self.stats: dict[str, int] = {}
        #: [runtime] run_dir, for state files; set by the runtime before ``sources()``.
        self.run_dir = ""

    def on_start(self) -> Iterable[Out]:
        return ()

    def on_message(self, topic: str, msg) -> Iterable[Out]:
        return ()

    def timers(self) -> list[Timer]:
        return []

    def sources(self) -> list["Source"]:
        """Inputs that are not the bus (a venue connection): polled by the runtime."""
        return []

    def on_source(self, source: "Source", item) -> Iterable[Out]:
        """One item from one of ``sources()``."""
        return ()

    def on_stop(self) -> Iterable[Out]:
        return ()


class Source:
    """A non-bus input a Service owns (a venue connection, a file): anything with a pollable
    ``handle`` (fd or zmq socket) whose ``read()`` returns the items that arrived.

    ``start()`` does the I/O (connect, spawn a thread) and is called by the runtime once its
    sockets are open; ``close()`` at shutdown. ``eof`` becomes True when it will yield no more.
    """

    handle: object = None
    endpoints: list[str] = []
    eof: bool = False

    def start(self) -> None:
        pass

    def read(self) -> list:
        return []

    def close(self) -> None:
        pass


def run_handler(service: Service, frames: Iterable[tuple[str, object]]) -> list[Out]:
    """Feed messages to a Service and collect what it publishes: the test harness.

    Outputs are stamped as the runtime stamps them (``src`` = the service name, ``seq`` per
    topic from 1) and go through the wire codec and back: msgspec does not validate on
    encode, so a wrongly typed field would otherwise only fail in every consumer.
    """
    seqs: dict[str, int] = {}

    def wire(outs: Iterable[Out]) -> list[Out]:
        result: list[Out] = []
        for item in outs:
            if item.__class__ is RawFrame:
                result.append(item)
                continue
            topic, msg = item
            messages.topic_bytes(topic)
            seqs[topic] = msg.seq = seqs.get(topic, 0) + 1
            msg.src = service.name
            result.append((topic, messages.decode(topic, messages.encode(msg))))
        return result

    out = wire(service.on_start())
    for topic, msg in frames:
        out.extend(wire(service.on_message(topic, msg)))
    return out


class Counters:
    """The runtime's counters, as they appear in heartbeats (names are the dict keys)."""

    __slots__ = ("in_msgs", "out_msgs", "decode_errors", "envelope_errors", "unknown_topics",
                 "bad_frames", "oversized", "truncated", "gaps", "seq_resets", "drops",
                 "handler_errors")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


# FrameError / BadFrame kinds -> counter attribute
_ERROR_COUNTER = {"decode_error": "decode_errors", "envelope_error": "envelope_errors",
                  "unknown_topic": "unknown_topics", "bad_frame": "bad_frames",
                  "oversized": "oversized", "truncated": "truncated"}


class LagWindow:
    """Input latency samples over one heartbeat interval (bounded memory)."""

    def __init__(self, size: int = 4096):
        self._buf = [0] * size
        self._n = 0
        self._size = size
        self._max = 0

    def add(self, lag_ns: int) -> None:
        self._buf[self._n % self._size] = lag_ns
        self._n += 1
        if lag_ns > self._max:
            self._max = lag_ns

    def take(self) -> tuple[float, float, float]:
        """(p50, p99, max) in µs, then start a new window.

        The max is exact; p50/p99 are over the last ``size`` samples of the interval.
        """
        n = min(self._n, self._size)
        mx, self._n, self._max = self._max, 0, 0
        if not n:
            return 0.0, 0.0, 0.0
        s = sorted(self._buf[:n])
        return s[n // 2] / 1e3, s[min(n - 1, int(n * 0.99))] / 1e3, mx / 1e3


class Runtime:
    """Runs one Service between its inputs and its output until told to stop."""

    def __init__(self, service: Service, runtime: RuntimeConfig, *, inputs: list[str],
                 output: str, topics: list[str], instance: str, clock=SystemClock(),
                 metrics_port: int = 0, zmq_context: zmq.Context | None = None):
        self.service = service
        self.cfg = runtime
        self.input_endpoints = inputs
        self.output_endpoint = output
        self.topics = topics
        self.src = instance
        self.clock = clock
        self.metrics_port = metrics_port
        self.counters = Counters()
        self.lag = LagWindow()
        self.state = "starting"
        self.started_ns = 0
        self.bound_output = ""  # the real endpoint after bind (tcp port 0 resolved)
        self._ctx = zmq_context
        self._owns_ctx = zmq_context is None
        self._inputs: list = []
        self._output = None
        self._events: InputLoop | None = None
        self._sources: list[Source] = []
        self._stop = False
        self._give_up_at: float | None = None  # set on stop: when drain and writes give up
        self._timers: list[list] = []  # [due, period, callback, name]
        self._out: dict[str, list] = {}  # topic -> [last seq, topic bytes]
        self._seqs = SeqTracker()
        self._report = OncePerKind(logging.getLogger(f"hedgepipe.{service.name}"))
        self._metrics = None
        self.ready = None  # optional callable run once sockets are open (tests, bench)

    # ---- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        ensure_run_dir(self.cfg)
        if self._ctx is None:
            self._ctx = zmq.Context()
        self._output = open_output(self._ctx, self.output_endpoint, self.cfg.sndhwm, self.cfg.linger_ms,
                                   self.cfg.when_subscriber_full)
        self.bound_output = getattr(self._output, "bound", self.output_endpoint)
        self._inputs = open_inputs(self._ctx, self.input_endpoints, self.topics, self.cfg.rcvhwm,
                                   self.cfg.max_frame_bytes)
        for inp in self._inputs:
            for endpoint in inp.missing_ipc_endpoints():
                log.warning("input endpoint has no publisher yet; waiting for it",
                            extra={"endpoint": endpoint})
        self.service.run_dir = self.cfg.run_dir
        self._sources = list(self.service.sources())
        for source in self._sources:
            source.start()
        self._events = InputLoop([*self._inputs, *self._sources], self._on_signal)
        self._events.open()
        now = self.clock.monotonic()
        period = self.cfg.heartbeat_interval_s
        self._timers = [[now + period, period, self._heartbeat, "heartbeat"]]
        for t in self.service.timers():
            self._timers.append([now + t.period_s, t.period_s, t.callback, t.name])
        if self.metrics_port:
            from .metrics import MetricsServer
            self._metrics = MetricsServer(self.metrics_port, self.src, self.snapshot)
            self._metrics.start()
        self.started_ns = self.clock.time_ns()

    def _on_signal(self, signum: int) -> None:
        log.info("signal received: draining and exiting", extra={"signal": signal.Signals(signum).name})
        self._request_stop()

    def stop(self) -> None:
        """Ask the loop to drain and exit (from another thread: a flag and a wake-up)."""
        self._request_stop()
        if self._events is not None:
            self._events.wake()

    def _request_stop(self) -> None:
        if self._give_up_at is None:
            self._give_up_at = self.clock.monotonic() + self.cfg.drain_timeout_s
        self._stop = True

    def _deadline(self) -> float | None:
        """None while running (a pipe write may wait for its reader); the drain deadline after."""
        return self._give_up_at

    def run(self) -> int:
        try:
            self.open()
            self.state = "running"
            self._call("on_start", self.service.on_start)
            if self.ready:
                self.ready(self)
            self._loop()
            self.state = "draining"
            self._drain()
        finally:
            self.close()
        return 0

    def close(self) -> None:
        if self._metrics:
            self._metrics.stop()
        for source in self._sources:
            source.close()
        for inp in self._inputs:
            inp.close()
        if self._output is not None:
            self._output.close()
        if self._events is not None:
            self._events.close()
        if self._owns_ctx and self._ctx is not None:
            self._ctx.term()

    # ---- the loop -----------------------------------------------------------------------

    def _loop(self) -> None:
        events = self._events
        output = self._output
        clock = self.clock
        due = self._next_due()
        while not self._stop:
            now = clock.monotonic()
            if due <= now:
                self._run_timers(now)
                due = self._next_due()
                continue
            if output.pending_bytes:
                self._flush()
            for inp in events.poll(int((due - now) * 1000) + 1):
                if isinstance(inp, Source):
                    self._consume_source(inp)
                else:
                    self._consume(inp)
                if inp.eof:
                    events.ended(inp)
                    self._input_ended()
            if output.broken:
                log.info("output closed by the reader; exiting", extra={"endpoint": "-"})
                self._stop = True

    def _consume_source(self, source: Source) -> None:
        on_source = self.service.on_source
        for item in source.read():
            if item is None:  # a wake-up with nothing to hand on (the source ended)
                continue
            try:
                outs = on_source(source, item)
                if outs:
                    self._emit(outs)
            except Exception as exc:  # a handler bug must not kill the daemon
                self.counters.handler_errors += 1
                self._report(f"on_source:{type(exc).__name__}",
                             f"on_source raised {type(exc).__name__}: {exc}", level=logging.ERROR,
                             source=",".join(source.endpoints), exc_info=True)

    def _next_due(self) -> float:
        return min(t[0] for t in self._timers)

    def _input_ended(self) -> None:
        log.info("input stream ended", extra={"endpoint": "-", "truncated": self.counters.truncated})
        if not self._events.open_inputs:
            # A pipeline stage ends when its upstream does (Unix filter semantics).
            self._stop = True

    def _run_timers(self, now: float) -> None:
        wall = self.clock.time_ns()
        for t in self._timers:
            if t[0] <= now:
                # Next due time from the schedule, not from now, so periods do not drift;
                # after a long stall, skip missed ticks rather than firing a burst.
                t[0] += t[1]
                if t[0] <= now:
                    t[0] = now + t[1]
                self._call(t[3], lambda cb=t[2]: cb(wall))

    def _drain(self) -> None:
        """Process what already arrived, then let the Service finish and say goodbye.

        Input keeps being read until it has been quiet for ``_DRAIN_QUIET_MS`` (frames in
        flight between the I/O thread and us, a pipe being emptied) or the deadline passes.
        """
        self._request_stop()
        deadline = self._give_up_at
        # A venue source never goes quiet: take what it has handed over once, don't wait on it.
        for inp in self._events.poll(0):
            if isinstance(inp, Source):
                self._consume_source(inp)
        while self.clock.monotonic() < deadline and self._events.open_inputs:
            ready = [i for i in self._events.poll(_DRAIN_QUIET_MS) if not isinstance(i, Source)]
            if not ready:
                break
            for inp in ready:
                self._consume(inp)
                if inp.eof:
                    self._events.ended(inp)
            if self._output.pending_bytes:
                self._flush()
        self._call("on_stop", self.service.on_stop)
        self._heartbeat(self.clock.time_ns())
        self._flush()

    def _flush(self) -> None:
        lost = self._output.flush(self._deadline)
        if lost:
            self.counters.out_msgs -= lost
            self.counters.drops += lost
            if self._output.broken:  # `daemon --out - | head`: the reader left, as readers do
                self._report("output_closed", "the reader closed the output; frames not written",
                             level=logging.INFO, frames=lost)
            else:
                self._report("output_lost", "frames not written: the reader did not take them "
                             "before the drain deadline", level=logging.ERROR, frames=lost)

    # ---- per frame ----------------------------------------------------------------------

    def _consume(self, inp) -> None:
        # The hot path: everything per frame is inlined and bound to locals (each saved
        # attribute lookup or call is ~50-100 ns at 60k frames/s); see docs/bench.md.
        c = self.counters
        max_bytes = self.cfg.max_frame_bytes
        decode_inputs = self.service.decode_inputs
        on_message = self.service.on_message
        decode_frame = messages.decode_frame
        observe = self._seqs.observe
        envelope_ids = messages.envelope_ids
        lag = self.lag
        items = inp.read()
        now_ns = self.clock.time_ns()  # one stamp per batch, after it arrived
        for item in items:
            if item.__class__ is not tuple:
                self._bad(item.kind, item.detail, endpoint=",".join(inp.endpoints))
                continue
            topic_b, payload = item
            c.in_msgs += 1
            try:
                if decode_inputs:
                    topic, msg = decode_frame(topic_b, payload, max_bytes)
                    ids = msg
                else:  # forwarders get bytes: no full decode, no re-encode
                    messages.check_size(topic_b, payload, max_bytes)
                    topic, msg = topic_b, payload
                    # ...but the envelope's ids still tell gaps and lag (~1 µs): a forwarder or
                    # recorder is where a dropped frame must show (docs/decisions.md).
                    ids = envelope_ids(payload)
            except FrameError as exc:
                self._bad(exc.kind, exc.detail, topic=exc.topic)
                continue
            if ids is not None and ids.seq:
                missed = observe(ids.src, topic, ids.seq)
                if missed:
                    self._seq_break(ids.src, topic, missed)
                if ids.ts_recv:
                    lag.add(now_ns - ids.ts_recv)
            try:
                outs = on_message(topic, msg)
                if outs:
                    self._emit(outs)
            except Exception as exc:  # a handler bug must not kill the daemon
                c.handler_errors += 1
                self._report(f"handler:{type(exc).__name__}",
                             f"handler raised {type(exc).__name__}: {exc}", level=logging.ERROR,
                             topic=topic, exc_info=True)

    def _seq_break(self, src: str, topic: str, missed: int) -> None:
        if missed == WENT_BACK:
            self.counters.seq_resets += 1
            self._report("seq_reset", "sequence went back (publisher restarted?)", src=src, topic=topic)
        else:
            self.counters.gaps += missed
            self._report("gap", "sequence gap", src=src, topic=topic, missed=missed)

    def _bad(self, kind: str, detail: str, **context) -> None:
        counter = _ERROR_COUNTER.get(kind, "bad_frames")
        setattr(self.counters, counter, getattr(self.counters, counter) + 1)
        self._report(kind, f"dropped frame: {detail}", **context)

    def _call(self, what: str, fn) -> None:
        try:
            outs = fn()
            if outs:
                self._emit(outs)
        except Exception as exc:
            self.counters.handler_errors += 1
            self._report(f"{what}:{type(exc).__name__}", f"{what} raised {type(exc).__name__}: {exc}",
                         level=logging.ERROR, exc_info=True)

    # ---- publishing ---------------------------------------------------------------------

    def _emit(self, outs: Iterable[Out]) -> None:
        send = self._output.send
        c = self.counters
        out = self._out
        src = self.src
        encode = messages.encode
        now_ns = 0
        for item in outs:
            if item.__class__ is RawFrame:
                ok = send(item.topic, item.payload)
            else:
                topic, msg = item
                state = out.get(topic)
                if state is None:
                    state = out[topic] = [0, messages.topic_bytes(topic)]  # checked once per topic
                seq = state[0] = state[0] + 1
                msg.src = src
                msg.seq = seq
                if not msg.ts_recv:
                    now_ns = now_ns or self.clock.time_ns()
                    msg.ts_recv = now_ns
                if not msg.ts_event:
                    msg.ts_event = msg.ts_recv
                ok = send(state[1], encode(msg))
            if ok:
                c.out_msgs += 1
            else:
                c.drops += 1

    def snapshot(self) -> dict[str, int]:
        counters = self.counters.as_dict()
        if self._output is not None:
            counters["subscriptions"] = self._output.subscriptions
        for key, value in self.service.stats.items():
            # A service counter never hides a runtime one, and heartbeats carry ints only.
            counters[f"{self.service.name}.{key}" if key in counters else key] = int(value)
        return counters

    def _heartbeat(self, now_ns: int) -> list[Out]:
        # Subscription messages are read here, not on every wake-up: they only feed the
        # `subscriptions` gauge, and polling the XPUB per frame costs latency (docs/bench.md).
        self._output.pump_subscriptions()
        p50, p99, mx = self.lag.take()
        self._report.summarise()
        hb = Heartbeat(name=self.src, pid=os.getpid(), state=self.state,
                       uptime_s=round((now_ns - self.started_ns) / 1e9, 3),
                       counters=self.snapshot(), lag_p50_us=p50, lag_p99_us=p99, lag_max_us=mx)
        self._emit([(heartbeat_topic(self.src), hb)])
        return []
