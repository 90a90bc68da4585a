"""The pieces around store-writer: URL resolution and redaction, load_state, the RESP connection,
and the embedded redis-server (stale sockets, orphans, path limits)."""

from __future__ import annotations

import os
import socket

import pytest
import redis

from hedgepipe.errors import ConfigError, UpstreamError
from hedgepipe.state import load_state, redact_url, resolve_url
from hedgepipe.store.embedded import EmbeddedRedis, embedded_url
from hedgepipe.store.redis_state import topic_kind
from hedgepipe.store.resp import RespConnection, RespError, pack

from . import store_frames as f


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
    orphan = EmbeddedRedis(short_tmp, save="3600 1")
    orphan.start()
    redis.Redis.from_url(orphan.url).hset(b"hp:last:md.index", b"md.index.x", b"kept")
    orphan_proc = orphan.process
    fresh = EmbeddedRedis(short_tmp, save="")
    fresh.start()  # as a restarted store-writer finds a server its SIGKILLed predecessor left
    try:
        assert orphan_proc.wait(10) == 0  # SHUTDOWN SAVE: a clean exit
        assert fresh.pid != orphan_proc.pid
        assert redis.Redis.from_url(fresh.url).hget(b"hp:last:md.index", b"md.index.x") == b"kept"
    finally:
        fresh.stop()
        orphan.stop()  # when the test failed before the orphan went: never leave a server behind


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
