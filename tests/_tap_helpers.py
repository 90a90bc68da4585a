"""Helpers for tests/test_tap.py: frames to feed zmq-tap, and ways to run and watch it."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import zmq

from hedgepipe import messages as m
from hedgepipe.pipeframe import encode_frame

TAP = str(Path(sys.executable).parent / "zmq-tap")
#: 2026-11-23T05:00:00Z in ns: a fixed event time, so lines and filters are predictable.
T0 = 1_795_410_000 * 10**9
BOOK_TOPIC = "md.book.deribit.BTC-27DEC26-100000-C"
TICKER_TOPIC = "md.ticker.deribit.BTC-PERPETUAL"


def book(seq: int, src: str = "feed-deribit", ts: int = T0, topic: str = BOOK_TOPIC) -> tuple[str, bytes]:
    msg = m.Book(src=src, seq=seq, ts_event=ts, ts_recv=ts, venue="deribit",
                 instrument=topic.rsplit(".", 1)[-1], change_id=1000 + seq,
                 bids=[(0.0125, 10.0), (0.012, 3.5)], asks=[(0.013, 7.0)])
    return topic, m.encode(msg)


def ticker(seq: int, src: str = "feed-deribit", ts: int = T0) -> tuple[str, bytes]:
    msg = m.Ticker(src=src, seq=seq, ts_event=ts, ts_recv=ts, venue="deribit",
                   instrument="BTC-PERPETUAL", bid=100000.5, bid_amount=2500.0, ask=100001.0,
                   mark_price=100000.75)
    return TICKER_TOPIC, m.encode(msg)


def heartbeat(seq: int, name: str = "feed-deribit", ts: int = T0) -> tuple[str, bytes]:
    msg = m.Heartbeat(src=name, seq=seq, ts_event=ts, ts_recv=ts, name=name, pid=4242,
                      state="running", uptime_s=12.5, counters={"in_msgs": 7, "gaps": 0})
    return m.heartbeat_topic(name), m.encode(msg)


def untyped(topic: str, obj) -> tuple[str, bytes]:
    """A frame of a type hedgepipe.messages does not declare (a newer daemon's)."""
    return topic, msgspec.msgpack.encode(obj)


def pipe(*frames: tuple[str, bytes] | bytes) -> bytes:
    """A ``[topic, payload]`` stream; a bytes item goes in raw (garbage, truncated tails)."""
    return b"".join(f if isinstance(f, bytes) else encode_frame(f[0].encode(), f[1]) for f in frames)


def tap_env(**extra: str) -> dict[str, str]:
    """The environment without any HEDGEPIPE_* setting of the caller's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEPIPE_")}
    env.update(extra)
    return env


def run_tap(args: list[str], stdin: bytes = b"", cwd: Path | None = None,
            env: dict[str, str] | None = None, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run([TAP, *args], input=stdin, capture_output=True, cwd=cwd,
                          env=env or tap_env(), timeout=timeout)


def start_tap(args: list[str], cwd: Path | None = None, **popen) -> subprocess.Popen:
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([TAP, *args], cwd=cwd, env=tap_env(), bufsize=0, **popen)


def json_lines(out: bytes) -> list[dict]:
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def read_until(stream, needle: str, timeout: float = 5.0) -> str:
    """Read a subprocess pipe until ``needle`` shows up; what was read, or AssertionError."""
    got = b""
    deadline = time.monotonic() + timeout
    while needle.encode() not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not seen within {timeout}s; got {got.decode(errors='replace')!r}"
        ready, _, _ = select.select([stream], [], [], left)
        if ready:
            chunk = os.read(stream.fileno(), 65536)
            assert chunk, f"stream ended before {needle!r}; got {got.decode(errors='replace')!r}"
            got += chunk
    return got.decode(errors="replace")


class Publisher:
    """A bound XPUB, like a daemon's output, that can tell when a subscriber has joined.

    Waiting for the subscription message is how the tests beat the slow-joiner problem:
    libzmq hands it to the XPUB only once the subscriber's connection is up and its filter
    applied, so every frame sent after it reaches that subscriber. No sleeps, no resends.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str):
        self.sock = ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        # Pass on every subscription, even one another subscriber already made: a second tap
        # on the same publisher must be seen joining too.
        self.sock.setsockopt(zmq.XPUB_VERBOSE, 1)
        self.sock.bind(endpoint)
        self.endpoint = self.sock.getsockopt(zmq.LAST_ENDPOINT).decode()

    def wait_subscribed(self, prefix: str = "", timeout: float = 5.0) -> None:
        want = b"\x01" + prefix.encode()
        deadline = time.monotonic() + timeout
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            assert left_ms > 0, f"no subscription to {prefix!r} on {self.endpoint} within {timeout}s"
            if self.sock.poll(left_ms) and self.sock.recv() == want:
                return

    def send(self, topic: str, payload: bytes) -> None:
        self.sock.send_multipart([topic.encode(), payload])

    def send_one_part(self, data: bytes) -> None:
        self.sock.send(data)

    def close(self) -> None:
        self.sock.close(0)
