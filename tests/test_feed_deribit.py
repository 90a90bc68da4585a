"""feed-deribit against our Deribit simulator: real WebSocket, real processes, real pipes."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time

import pytest

from hedgepipe import messages as m
from hedgepipe.pipeframe import FrameReader

from .conftest import PYTHON, REPO, VENV_BIN

BOOK = "md.book.deribit."


class Proc:
    """A subprocess whose stdout is a frame stream (feed) or text (simulator)."""

    def __init__(self, args: list[str], extra_env: dict | None = None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEPIPE_")}
        env.update(extra_env or {})
        self.p = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.reader = FrameReader(1 << 22)
        self.text = b""

    def read_chunk(self, deadline: float) -> bytes:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.p.stdout], [], [], left)[0]:
            return b""
        return os.read(self.p.stdout.fileno(), 1 << 16)

    def frames_until(self, done, timeout: float = 20.0) -> list[tuple[str, object]]:
        """Decode frames until ``done(frames)`` is true; fail at the deadline."""
        deadline = time.monotonic() + timeout
        frames: list[tuple[str, object]] = []
        while not done(frames):
            chunk = self.read_chunk(deadline)
            if not chunk:
                raise AssertionError(f"timed out with {len(frames)} frames; stderr: "
                                     f"{self.stderr_tail()}")
            for item in self.reader.feed(chunk):
                topic = item[0].decode()
                frames.append((topic, m.decode(topic, item[1])))
        return frames

    def line_matching(self, pattern: str, timeout: float = 20.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern.encode(), self.text)):
            chunk = self.read_chunk(deadline)
            if not chunk:
                raise AssertionError(f"no {pattern!r} on stdout; stderr: {self.stderr_tail()}")
            self.text += chunk
        return match

    def stderr_tail(self) -> str:
        self.p.terminate()
        try:
            return self.p.communicate(timeout=5)[1].decode()[-2000:]
        except subprocess.TimeoutExpired:
            return "(no stderr)"

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)
        for stream in (self.p.stdout, self.p.stderr):
            stream.close()
        return self.p.returncode


@pytest.fixture
def procs():
    started: list[Proc] = []

    def start(args: list[str], env: dict | None = None) -> Proc:
        proc = Proc(args, env)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


def start_sim(procs, *args: str) -> str:
    sim = procs([str(VENV_BIN / "deribit-sim"), "--port", "0", *args])
    return sim.line_matching(r"listening (ws://\S+)")[1].decode()


def start_feed(procs, short_tmp, url: str, env: dict | None = None, **settings) -> Proc:
    table = {"url": url, "currencies": ["BTC"], "depth": 20, "heartbeat_s": 10.0, **settings}
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())
    config = short_tmp / "feed.toml"
    config.write_text(f'[runtime]\nrun_dir = "{short_tmp}/run"\nheartbeat_interval_s = 0.2\n'
                      f"[feed-deribit]\n{body}\n")
    return procs([str(VENV_BIN / "feed-deribit"), "--config", str(config), "--out", "-"], env)


def last_heartbeat(frames):
    beats = [msg for topic, msg in frames if topic.startswith("hb.")]
    return beats[-1] if beats else None


# ---- the recording, replayed -----------------------------------------------------------------

def recorded_books(path) -> list[tuple[str, list, list]]:
    """Every book in the recording after each notification, rebuilt here independently:
    plain dicts, sorted at the end; no code shared with the feed."""
    books: dict[str, tuple[dict, dict]] = {}
    out = []
    for line in path.read_text().splitlines():
        _, sep, raw = line.partition(": ")
        if not sep or '"subscription"' not in raw:
            continue
        params = json.loads(raw)["params"]
        if not params["channel"].startswith("book."):
            continue
        data = params["data"]
        name = data["instrument_name"]
        if data["type"] == "snapshot":
            books[name] = ({}, {})
        bids, asks = books[name]
        for side, levels in ((bids, data["bids"]), (asks, data["asks"])):
            for action, price, amount in levels:
                if action == "delete" or amount == 0:
                    side.pop(price, None)
                else:
                    side[price] = amount
        out.append((name, sorted(bids.items(), reverse=True), sorted(asks.items())))
    return out


def test_replayed_recording_comes_out_as_the_recorded_books(procs, short_tmp, shared_data):
    recording = shared_data / "deribit" / "DERIBIT.ws.1.0"
    expected = recorded_books(recording)
    assert len(expected) == 46
    url = start_sim(procs, "--replay", str(recording), "--speed", "0")
    feed = start_feed(procs, short_tmp, url, currencies=["BTC", "ETH"], kinds=["option"],
                      interval="raw", depth=50)
    frames = feed.frames_until(lambda f: sum(t.startswith(BOOK) for t, _ in f) >= len(expected))
    books = [(msg.instrument, [tuple(x) for x in msg.bids], [tuple(x) for x in msg.asks])
             for topic, msg in frames if topic.startswith(BOOK)]
    # Per instrument, the same books in the same order (instruments interleave as recorded).
    for name in {n for n, _, _ in expected}:
        assert [b for b in books if b[0] == name] == [e for e in expected if e[0] == name], name
    assert not any(msg.stale for topic, msg in frames if topic.startswith(BOOK))
    tickers = [msg for topic, msg in frames if topic.startswith("md.ticker.")]
    assert tickers and all(t.mark_price is not None for t in tickers)


# ---- faults ----------------------------------------------------------------------------------

def test_a_gap_resyncs_that_instrument_only_within_a_second(procs, short_tmp):
    url = start_sim(procs, "--seed", "1", "--currencies", "BTC", "--tick-ms", "20",
                    "--skip-change", "BTC-PERPETUAL", "--skip-change-after", "3")
    feed = start_feed(procs, short_tmp, url, kinds=["perpetual", "future"], interval="raw")
    perp = BOOK + "BTC-PERPETUAL"

    def resynced(frames):
        books = [msg for topic, msg in frames if topic == perp]
        stale = [i for i, b in enumerate(books) if b.stale]
        return stale and any(not b.stale for b in books[stale[0]:])

    frames = feed.frames_until(resynced)
    books = [msg for topic, msg in frames if topic == perp]
    first_stale = next(i for i, b in enumerate(books) if b.stale)
    fresh = next(b for b in books[first_stale:] if not b.stale)
    assert fresh.ts_recv - books[first_stale].ts_recv < 1_000_000_000   # venue-side stamps
    assert fresh.change_id > books[first_stale - 1].change_id
    # Nothing else went stale: the resync was for that instrument only.
    assert not [msg for topic, msg in frames if topic.startswith(BOOK) and topic != perp and msg.stale]
    hb = last_heartbeat(feed.frames_until(lambda f: last_heartbeat(f) is not None))
    assert hb.counters["book_resyncs"] == 1


def test_a_dropped_connection_is_recovered_and_resubscribed(procs, short_tmp):
    url = start_sim(procs, "--seed", "1", "--currencies", "BTC", "--tick-ms", "20",
                    "--drop-after-messages", "300")
    feed = start_feed(procs, short_tmp, url, kinds=["perpetual", "future"], interval="raw")

    def reconnected_with_data(frames):
        hb = last_heartbeat(frames)
        if hb is None or hb.counters.get("connects", 0) < 2:
            return False
        after = [i for i, (t, _) in enumerate(frames) if t.startswith("hb.")][-1]
        return any(t.startswith(BOOK) and not msg.stale for t, msg in frames[after:])

    frames = feed.frames_until(reconnected_with_data)
    hb = last_heartbeat(frames)
    assert hb.counters["disconnects"] >= 1
    # Books went stale at the disconnect, and fresh ones came from new snapshots.
    assert any(t.startswith(BOOK) and msg.stale for t, msg in frames)


def test_a_stalled_connection_is_recycled(procs, short_tmp):
    url = start_sim(procs, "--seed", "1", "--currencies", "BTC", "--min-heartbeat", "0.1",
                    "--stall-after-s", "1", "--drop-connections", "1")
    feed = start_feed(procs, short_tmp, url, kinds=["perpetual"], heartbeat_s=0.2,
                      stale_after_s=5.0)
    frames = feed.frames_until(lambda f: (hb := last_heartbeat(f)) is not None
                               and hb.counters.get("connects", 0) >= 2)
    assert last_heartbeat(frames).counters["disconnects"] >= 1


def test_too_many_requests_is_retried_and_the_feed_comes_up(procs, short_tmp):
    # The 2nd and 3rd requests of the connection (the index price, the instruments) get 10028.
    url = start_sim(procs, "--seed", "1", "--currencies", "BTC", "--too-many-requests", "2,3")
    feed = start_feed(procs, short_tmp, url, kinds=["perpetual"])
    frames = feed.frames_until(lambda f: any(t.startswith(BOOK) for t, _ in f))
    assert any(t == "md.instrument.deribit.BTC-PERPETUAL" for t, _ in frames)


def test_credentials_log_on_and_the_token_is_refreshed(procs, short_tmp):
    url = start_sim(procs, "--seed", "1", "--currencies", "BTC", "--token-expires-in", "1")
    feed = start_feed(procs, short_tmp, url, kinds=["perpetual"],
                      env={"HEDGEPIPE_FEED_DERIBIT__CLIENT_ID": "sim-client",
                           "HEDGEPIPE_FEED_DERIBIT__CLIENT_SECRET": "sim-secret"})
    # Refreshed at 80 % of a 1 s life: a second authentication within a couple of seconds.
    frames = feed.frames_until(lambda f: (hb := last_heartbeat(f)) is not None
                               and hb.counters.get("authenticated", 0) >= 2)
    assert last_heartbeat(frames).counters.get("venue_errors", 0) == 0
    assert "sim-secret" not in feed.stderr_tail()           # never logged


def test_the_real_chain_flows_through_the_feed(procs, short_tmp, shared_data):
    chain = shared_data / "deribit" / "btc_option_chain_2020-05-21.csv"
    url = start_sim(procs, "--chain", str(chain), "--seed", "1")
    feed = start_feed(procs, short_tmp, url, kinds=["option"])
    frames = feed.frames_until(lambda f: len({t for t, _ in f if t.startswith(BOOK)}) >= 50)
    instruments = {msg.name for t, msg in frames if t.startswith("md.instrument.")}
    assert len(instruments) == 326                          # every option of the chain
    assert all(not msg.stale for t, msg in frames if t.startswith(BOOK))
