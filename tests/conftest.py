"""Shared fixtures: real sockets and processes, and the recorded Deribit data beside the repo."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Real recorded data lives beside the checkout (../shared/data), never in the repo.
SHARED_DATA = Path(os.environ.get("HEDGEPIPE_DATA", REPO.parent / "shared" / "data"))
PYTHON = sys.executable
VENV_BIN = Path(PYTHON).parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The recorded data folder. Absent in a user's clone: skip, naming it; CI makes it required."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    message = (f"recorded Deribit data not found at {SHARED_DATA} "
               "(set HEDGEPIPE_DATA to the shared/data folder)")
    if os.environ.get("HEDGEPIPE_REQUIRE_DATA"):
        pytest.fail(message + "; HEDGEPIPE_REQUIRE_DATA is set, so this is a failure")
    pytest.skip(message)


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.005, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def short_tmp(tmp_path_factory):
    """A short directory for ipc sockets (unix socket paths are limited to 107 bytes)."""
    import shutil
    import tempfile
    path = Path(tempfile.mkdtemp(prefix="hp", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server_url():
    """One Redis server for the session: ``REDIS_URL``'s when set (a server for tests: each
    test flushes its database), else an embedded redis-server of our own on a unix socket."""
    import shutil
    import tempfile

    from hedgepipe.store.embedded import EmbeddedRedis
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    path = Path(tempfile.mkdtemp(prefix="hpredis", dir="/tmp"))
    server = EmbeddedRedis(path, save="")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server_url):
    """A real Redis whose database was just flushed: the URL (clients: redis.Redis.from_url)."""
    import redis
    client = redis.Redis.from_url(redis_server_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server_url
