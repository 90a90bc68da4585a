"""The pieces around store-writer: URL resolution and redaction, load_state, the RESP connection,
and the embedded redis-server (stale sockets, orphans, path limits)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest
import redis

from hedgepipe.clock import FakeClock
from hedgepipe.errors import ConfigError, UpstreamError
from hedgepipe.state import load_state, redact_url, resolve_url
from hedgepipe.store.embedded import EmbeddedRedis, _answers, embedded_url
from hedgepipe.store.redis_state import topic_kind
from hedgepipe.store.resp import RespConnection, RespError, pack

from . import store_frames as f
from .conftest import wait_until


def test_the_url_is_redis_url_then_the_configured_one_then_the_embedded_socket():
    assert resolve_url("/run", "redis://cfg:6379/1", {"REDIS_URL": "redis://env:6379/2"}) == \
        ("redis://env:6379/2", False)
    assert resolve_url("/run", "redis://cfg:6379/1", {}) == ("redis://cfg:6379/1", False)
    assert resolve_url("/run", "", {}) == ("unix:///run/redis.sock", True)
    assert resolve_url("/run", "", {"REDIS_URL": ""}) == ("unix:///run/redis.sock", True)


@pytest.mark.parametrize("url", ["redis://:pw@h:6379/0", "redis://user:pw@h/0", "unix:///r.sock?password=pw"])
def test_a_password_is_taken_only_from_redis_url(url):
    with pytest.raises(ConfigError, match="password: give it only in the environment, as REDIS_URL"):
        resolve_url("/run", url, {})
    assert resolve_url("/run", "", {"REDIS_URL": url}) == (url, False)


def test_a_url_that_is_not_redis_is_a_config_error_without_its_password():
    with pytest.raises(ConfigError, match="is not a Redis URL") as err:
        resolve_url("/run", "http://u:hunter2@h/", {})
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("url,shown", [
    ("redis://u:pw@h:1/0", "redis://u:***@h:1/0"),
    ("redis://:pw@h", "redis://:***@h"),
    ("unix:///x/r.sock?db=2&password=pw", "unix:///x/r.sock?db=2&password=***"),
    ("redis://h:1/0", "redis://h:1/0"),
    ("unix:///x/r.sock", "unix:///x/r.sock"),
])
def test_redact_url_hides_every_password(url, shown):
    assert redact_url(url) == shown


def test_topic_kinds_are_the_first_two_segments_or_hb():
    assert topic_kind(b"clean.book.deribit.BTC-27DEC26-100000-C") == b"clean.book"
    assert topic_kind(b"hb.feed-deribit") == b"hb"
    assert topic_kind(b"position.deribit.BTC-PERPETUAL") == b"position.deribit"
    assert topic_kind(b"solo") == b"solo"
    assert topic_kind(b"risk.state") == b"risk.state"


def test_load_state_unreachable_is_an_upstream_error_with_the_password_hidden(short_tmp, monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"unix://{short_tmp}/none.sock?password=hunter2")
    with pytest.raises(UpstreamError, match="unreachable") as err:
        load_state(["md.book"])
    assert "hunter2" not in str(err.value) and "password=***" in str(err.value)


def test_load_state_finds_the_embedded_server_under_run_dir(short_tmp, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    server = EmbeddedRedis(short_tmp, save="")
    server.start()
    try:
        topic, payload = f.index(7)
        redis.Redis.from_url(server.url).hset(b"hp:last:md.index", topic, payload)
        state = load_state(["md.index", "md.book"], run_dir=str(short_tmp))
        assert list(state) == [topic.decode()] and state[topic.decode()].price == 60_007.0
    finally:
        server.stop()


# ---- the RESP connection -------------------------------------------------------------------------

@pytest.fixture
def private_server(short_tmp):
    """A server of this test's own (its settings may be changed)."""
    server = EmbeddedRedis(short_tmp / "own", save="")
    server.start()
    yield server
    server.stop()


def test_resp_connection_authenticates_selects_the_db_and_names_itself(private_server):
    admin = redis.Redis.from_url(private_server.url)
    admin.config_set("requirepass", "s3cret")
    conn = RespConnection(f"{private_server.url}?db=3&password=s3cret", 1.0, "store-writer-test")
    conn.connect()
    conn.send(pack("SET", "k", "v") + pack("HSET", "k", "f", "v") + pack("XADD", "s", "*", "a", "b"))
    errors = conn.read_replies(3)
    assert [(i, text.split()[0]) for i, text in errors] == [(1, "WRONGTYPE")]
    authed = redis.Redis.from_url(f"{private_server.url}?db=3&password=s3cret")
    assert authed.get("k") == b"v" and authed.xlen("s") == 1
    ours = [c for c in authed.client_list() if c["name"] == "store-writer-test"]
    assert len(ours) == 1 and ours[0]["db"] == "3"
    conn.close()
    bad = RespConnection(f"{private_server.url}?password=wrong", 1.0)
    with pytest.raises(RespError, match="handshake refused: WRONGPASS"):
        bad.connect()


def test_resp_connection_reads_replies_split_across_reads(private_server):
    conn = RespConnection(private_server.url, 1.0)
    conn.connect()
    big = b"x" * 300_000  # a reply larger than one recv
    conn.send(pack("SET", "big", big) + pack("GET", "big") + pack("GET", "missing") + pack("INCR", "n"))
    assert conn.read_replies(4) == []
    conn.close()


def test_resp_connection_to_nothing_fails_fast_and_clearly(short_tmp):
    conn = RespConnection(f"unix://{short_tmp}/absent.sock", 0.2)
    with pytest.raises(RespError, match="connect:"):
        conn.connect()
    with pytest.raises(RespError, match="not connected"):
        conn.send(pack("PING"))


# ---- the embedded server -----------------------------------------------------------------------

def test_a_stale_socket_file_is_removed_and_the_server_starts(short_tmp):
    path = short_tmp / "redis.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))  # a socket file nobody listens on, as a crash leaves it
    dead.close()
    server = EmbeddedRedis(short_tmp, save="")
    server.start()
    try:
        assert redis.Redis.from_url(server.url).ping()
    finally:
        server.stop()
    assert not path.exists()


def test_a_server_already_on_the_socket_is_shut_down_saved_and_replaced(short_tmp):
    # What a SIGKILLed store-writer leaves: its redis-server, running on, and no lock holder.
    orphan_proc = subprocess.Popen(EmbeddedRedis(short_tmp, save="3600 1").command(),
                                   stdout=subprocess.DEVNULL, start_new_session=True)
    fresh = EmbeddedRedis(short_tmp, save="")
    try:
        wait_until(lambda: _answers(fresh.socket), 10, what="the orphan answering")
        redis.Redis.from_url(fresh.url).hset(b"hp:last:md.index", b"md.index.x", b"kept")
        fresh.start()  # the lock is free: what answers is an orphan
        assert orphan_proc.wait(10) == 0  # SHUTDOWN SAVE: a clean exit
        assert fresh.pid != orphan_proc.pid
        assert redis.Redis.from_url(fresh.url).hget(b"hp:last:md.index", b"md.index.x") == b"kept"
    finally:
        fresh.stop()
        if orphan_proc.poll() is None:  # the test failed before the orphan went: never leave it
            orphan_proc.kill()
            orphan_proc.wait()


def test_a_second_owner_of_the_run_dir_is_refused_and_the_first_server_untouched(short_tmp):
    first = EmbeddedRedis(short_tmp, save="")
    second = EmbeddedRedis(short_tmp, save="")
    first.start()
    try:
        redis.Redis.from_url(first.url).set(b"k", b"v")
        with pytest.raises(UpstreamError, match=f"belongs to a running store-writer \\(pid {os.getpid()}, "
                           f"holding {short_tmp}/redis.lock\\): give this one its own run_dir") as err:
            second.start()
        assert err.value.exit_code == 69 and second.process is None
        assert first.process.poll() is None and redis.Redis.from_url(first.url).get(b"k") == b"v"
        assert (short_tmp / "redis.lock").read_text() == f"{os.getpid()}\n"
    finally:
        second.stop()  # (a no-op unless the test failed with it started)
        first.stop()
    second.start()  # released at stop: the run_dir is free again
    second.stop()


def test_a_socket_path_over_107_bytes_is_refused_before_anything_starts(tmp_path):
    deep = tmp_path / ("x" * 100)
    server = EmbeddedRedis(deep)
    with pytest.raises(ConfigError, match="limited to 107: set \\[runtime\\] run_dir to a shorter directory"):
        server.start()
    assert not deep.exists() and server.process is None
    assert embedded_url(deep).endswith("/redis.sock")


def test_a_binary_that_cannot_run_is_an_upstream_error(short_tmp):
    with pytest.raises(UpstreamError, match="cannot run"):
        EmbeddedRedis(short_tmp, executable=str(short_tmp / "no-such-redis-server")).start()
    fake = short_tmp / "fake-redis"
    fake.write_text("#!/bin/sh\necho 'bad config' >&2\nexit 1\n")
    os.chmod(fake, 0o755)
    with pytest.raises(UpstreamError, match="exited with code 1 at start: bad config"):
        EmbeddedRedis(short_tmp, executable=str(fake)).start()


def test_a_server_that_exits_is_restarted_without_waiting_and_at_most_once_per_backoff(short_tmp):
    clock = FakeClock()
    reports = []
    server = EmbeddedRedis(short_tmp, save="", backoff_min_s=0.05, backoff_max_s=0.1,
                           monotonic=clock.monotonic, report=lambda kind, message, **ctx: reports.append(kind))
    server.start()
    try:
        assert server.ready() and server.restarts == 0
        exits = short_tmp / "exits-at-once"
        exits.write_text("#!/bin/sh\nexit 3\n")
        os.chmod(exits, 0o755)
        server.executable = str(exits)  # the restarts fail until the real binary is back
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait()
        assert server.ready() is False and server.restarts == 1  # started, not waited for
        wait_until(lambda: server.process.poll() is not None, what="the failing restart exiting")
        assert server.ready() is False and server.restarts == 1  # within the backoff (50 ms)
        for step, restarts in ((0.05, 2), (0.05, 2), (0.05, 3), (0.1, 4)):  # 50 ms, then 100 ms (max)
            clock.advance(step)
            wait_until(lambda: server.process.poll() is not None, what="the failing restart exiting")
            server.ready()
            assert server.restarts == restarts
        server.executable = None
        wait_until(lambda: server.process.poll() is not None, what="the failing restart exiting")
        clock.advance(0.1)
        assert server.ready() is False and server.restarts == 5  # the real server, coming up
        wait_until(server.ready, 10, what="the restarted server answering")
        assert redis.Redis.from_url(server.url).ping()
        assert reports == ["embedded_exited"] * 5 + ["embedded_restarted"]
    finally:
        server.stop()
    assert not (short_tmp / "redis.sock").exists()
