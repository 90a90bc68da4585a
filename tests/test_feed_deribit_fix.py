"""feed-deribit --transport fix against deribit-sim's FIX acceptor: real TCP, real processes.

Books are checked against an independent rebuild: a WebSocket client of the same simulator
(the same market object) rebuilds BTC-PERPETUAL from snapshot + changes with plain dicts, and
every book the FIX feed publishes must be one of those states, in order.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time

from hedgepipe.pipeframe import FrameReader
from hedgepipe.sim.fix_server import FixServer
from hedgepipe.venues.deribit.fix_driver import FixConnection
from hedgepipe.venues.deribit.fix_marketdata import parse_security_list, security_list_request
from hedgepipe.venues.deribit.fix_normalize import FixMarketData
from hedgepipe.venues.deribit.fix_session import FixConfig, FixSession
from hedgepipe.venues.deribit.fix_wire import SeqStore

from ._sim_helpers import Client, running, small_market
from .conftest import REPO, VENV_BIN
from .test_feed_deribit import BOOK, Proc, last_heartbeat, procs  # noqa: F401  (fixture)
from .test_fix_marketdata import NAME, incremental, snapshot

PERP = "BTC-PERPETUAL"
SIM_ARGS = ("--seed", "1", "--currencies", "BTC", "--tick-ms", "20")


class FeedProc(Proc):
    """Proc with the feed's secret in its environment (the only place a secret may be)."""

    def __init__(self, args: list[str], secret: str):
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEPIPE_")}
        env["HEDGEPIPE_FEED_DERIBIT__CLIENT_SECRET"] = secret
        self.p = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.reader = FrameReader(1 << 22)
        self.text = b""


def start_sim_fix(procs) -> tuple[str, int]:
    sim = procs([str(VENV_BIN / "deribit-sim"), "--port", "0", "--fix-port", "0", *SIM_ARGS])
    url = sim.line_matching(r"listening (ws://\S+)")[1].decode()
    port = int(sim.line_matching(r"fix listening tcp://127\.0\.0\.1:(\d+)")[1])
    return url, port


def start_fix_feed(started: list, short_tmp, port: int, secret: str = "sim-secret") -> FeedProc:
    table = {"fix_port": port, "client_id": "sim-client", "currencies": ["BTC"],
             "kinds": ["perpetual"], "depth": 50, "fix_heartbeat_s": 5,
             "fix_seq_store": f"{short_tmp}/run/feed.fixseq"}
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())
    config = short_tmp / "feed.toml"
    config.write_text(f'[runtime]\nrun_dir = "{short_tmp}/run"\nheartbeat_interval_s = 0.2\n'
                      f"[feed-deribit]\n{body}\n")
    feed = FeedProc([str(VENV_BIN / "feed-deribit"), "--config", str(config), "--transport", "fix",
                     "--out", "-"], secret)
    started.append(feed)
    return feed


class Rebuild:
    """BTC-PERPETUAL over WebSocket, rebuilt here with plain dicts: one state per notification."""

    def __init__(self, url: str):
        self.client = Client(url)
        self.client.result("public/subscribe", {"channels": [f"book.{PERP}.raw"]})
        self.states: list[tuple[list, list]] = []
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}

    def more(self, timeout: float) -> None:
        msg = self.client.next(lambda m: m.get("method") == "subscription", timeout=timeout)
        data = msg["params"]["data"]
        if data["type"] == "snapshot":
            self.bids, self.asks = {}, {}
        for side, levels in ((self.bids, data["bids"]), (self.asks, data["asks"])):
            for action, price, amount in levels:
                if action == "delete" or amount == 0:
                    side.pop(price, None)
                else:
                    side[price] = amount
        self.states.append((sorted(self.bids.items(), reverse=True)[:50], sorted(self.asks.items())[:50]))

    def index_of(self, state, start: int, deadline: float) -> int:
        """The first rebuilt state equal to ``state`` at or after ``start``, reading as needed."""
        i = start
        while True:
            while i < len(self.states):
                if self.states[i] == state:
                    return i
                i += 1
            self.more(deadline - time.monotonic())


def test_fix_feed_publishes_instruments_and_the_venues_books(procs, short_tmp):
    url, port = start_sim_fix(procs)
    rebuild = Rebuild(url)  # subscribed before the feed: every feed state comes after its start
    started: list = []
    try:
        feed = start_fix_feed(started, short_tmp, port)
        frames = feed.frames_until(lambda f: sum(t == BOOK + PERP for t, _ in f) >= 40)
        listed = {i["instrument_name"]: i for i in rebuild.client.result(
            "public/get_instruments", {"currency": "BTC", "kind": "future"})}
        instruments = {msg.name: msg for t, msg in frames if t.startswith("md.instrument.")}
        assert set(instruments) == {PERP}
        inst, venue = instruments[PERP], listed[PERP]
        assert (inst.kind, inst.base, inst.tick_size, inst.min_amount, inst.contract_size, inst.expiry_ns) == \
            ("perpetual", "BTC", venue["tick_size"], venue["min_trade_amount"], venue["contract_size"], None)
        books = [msg for t, msg in frames if t == BOOK + PERP]
        assert not any(b.stale for b in books)
        deadline = time.monotonic() + 20
        at = 0
        for book in books:  # each FIX book is a venue state, and they come in the venue's order
            at = rebuild.index_of(([tuple(x) for x in book.bids], [tuple(x) for x in book.asks]), at, deadline)
        hb = last_heartbeat(feed.frames_until(lambda f: last_heartbeat(f) is not None))
        assert hb.counters["connects"] == 1 and hb.counters.get("book_resyncs", 0) == 0
    finally:
        rebuild.client.close()
        for proc in started:
            proc.stop()


def test_a_rejected_fix_logon_is_counted_logged_and_retried(procs, short_tmp):
    _, port = start_sim_fix(procs)
    started: list = []
    try:
        feed = start_fix_feed(started, short_tmp, port, secret="not-the-secret")
        frames = feed.frames_until(lambda f: (hb := last_heartbeat(f)) is not None
                                   and hb.counters.get("fix_logon_rejected", 0) >= 2)
        hb = last_heartbeat(frames)
        assert hb.counters["disconnects"] >= 2 and hb.counters.get("connects", 0) == 0
        assert not any(t.startswith("md.") for t, _ in frames)
        assert feed.p.poll() is None  # still running, still retrying
        feed.p.terminate()
        _, stderr = feed.p.communicate(timeout=10)
        assert feed.p.returncode == 0
        assert stderr.count(b"rejected the FIX Logon: invalid_credentials") >= 2
        assert b"not-the-secret" not in stderr  # the secret is never logged
    finally:
        for proc in started:
            if proc.p.poll() is None:
                proc.stop()


def test_a_book_that_breaks_is_published_stale_once_and_re_requested():
    md = FixMarketData(depth=10)
    outs, resync = md.on_message(snapshot(), 1)
    assert [(b.stale, b.bids) for _, b in outs] == [(False, [(0.105, 1.5), (0.1, 2.0)])] and resync == []
    outs, resync = md.on_message(incremental([(2, 1, 0.5, 0)], seq=3), 2)  # delete of a missing level
    assert [(b.stale, b.bids) for _, b in outs] == [(True, [(0.105, 1.5), (0.1, 2.0)])] and resync == [NAME]
    outs, resync = md.on_message(incremental([(0, 0, 0.09, 1.0)], seq=4), 3)
    assert outs == [] and resync == []  # nothing from a broken chain, and one request is enough
    outs, resync = md.on_message(snapshot(bids=((0.095, 1.0),), asks=(), seq=5), 4)
    assert [(b.stale, b.bids, b.asks) for _, b in outs] == [(False, [(0.095, 1.0)], [])]
    assert md.stats["resync_requested"] == 1


def test_a_sequence_gap_makes_every_book_stale_once_and_re_requests_each():
    md = FixMarketData(depth=10)
    md.on_message(snapshot(), 1)
    md.on_message(snapshot(name="BTC-PERPETUAL", bids=((50000.0, 10.0),), asks=(), seq=3), 2)
    outs, resync = md.sequence_gap(3)
    assert sorted((b.instrument, b.stale) for _, b in outs) == sorted([("BTC-PERPETUAL", True), (NAME, True)])
    assert sorted(resync) == sorted(["BTC-PERPETUAL", NAME])
    assert md.sequence_gap(4) == ([], [])  # already stale and re-requested
    assert md.on_message(incremental([(0, 0, 0.09, 1.0)], seq=5), 5) == ([], [])
    outs, _ = md.on_message(snapshot(seq=6), 6)
    assert [(b.instrument, b.stale) for _, b in outs] == [(NAME, False)]


def test_the_simulator_fix_session_answers_test_requests_lists_and_logs_out():
    with running(small_market()) as sim:
        fix = FixServer(sim.server)
        port = asyncio.run_coroutine_threadsafe(fix.start("127.0.0.1", 0), sim.loop).result(10)
        session = FixSession(FixConfig(sender_comp_id="T1", client_id="sim-client", client_secret="sim-secret",
                                       heartbeat_s=1), SeqStore())
        conn = FixConnection(session, socket.create_connection(("127.0.0.1", port), timeout=5))
        conn.start()

        def until(pred, timeout=10.0):
            deadline = time.monotonic() + timeout
            got = []
            while not pred(got):
                assert time.monotonic() < deadline, session.counters
                got += conn.poll(0.05)
            return got

        until(lambda _: session.state == "active")
        session.test_request()
        until(lambda _: session.counters["test_request_answered"] == 1)
        session.send(*security_list_request("sl1", "ETH"))
        lists = until(lambda got: any(m.get(35) == b"y" for m in got))
        names = {i["instrument_name"] for m in lists if m.get(35) == b"y" for i in parse_security_list(m)}
        assert "ETH-PERPETUAL" in names and all(n.startswith("ETH") for n in names)
        session.logout()
        until(lambda _: session.disconnect_reason is not None)
        assert session.disconnect_reason == "logout confirmed"
        assert session.counters["seq_too_low"] == session.counters["rejects"] == 0
        asyncio.run_coroutine_threadsafe(fix.close(), sim.loop).result(10)
