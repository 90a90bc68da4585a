"""store-writer as a real process on a pipe, against real redis-servers that die mid-stream.

"Done when": Redis killed mid-stream (SIGKILL of a server this test started, then a fresh
empty server on the same socket) or the connection cut (CLIENT KILL: the only way to break a
``REDIS_URL`` server we did not start) while frames keep coming; afterwards the journal has
every frame, Redis the latest value of every topic, and the heartbeat counters the outage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import pytest
import redis

from hedgepipe import messages as m
from hedgepipe.errors import EX_CANTCREAT
from hedgepipe.journal import journal_files, read_journal
from hedgepipe.pipeframe import FrameReader, encode_frame
from hedgepipe.state import load_state
from hedgepipe.store.embedded import EmbeddedRedis, socket_path

from . import store_frames as f
from .conftest import REPO, VENV_BIN, wait_until


class StoreWriterProcess:
    """``store-writer --in - --out -``: frames written to its stdin, heartbeats read from its stdout."""

    def __init__(self, tmp, *sets: str, keep_redis_url: bool = True, run_dir=None):
        tmp.mkdir(parents=True, exist_ok=True)
        self.config = tmp / "hedgepipe.toml"
        self.config.write_text(f'[runtime]\nrun_dir = "{run_dir or tmp / "run"}"\nheartbeat_interval_s = 0.1\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEDGEPIPE_")}
        if not keep_redis_url:
            env.pop("REDIS_URL", None)
        args = [a for s in (f"journal_dir={tmp}/journal", "backoff_max_s=0.2", *sets) for a in ("--set", s)]
        self.proc = subprocess.Popen([str(VENV_BIN / "store-writer"), "--config", str(self.config),
                                      "--in", "-", "--out", "-", *args], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.heartbeats: list[m.Heartbeat] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        reader = FrameReader(1 << 20)
        while chunk := os.read(self.proc.stdout.fileno(), 1 << 16):
            for topic, payload in reader.feed(chunk):
                if topic.startswith(b"hb."):
                    self.heartbeats.append(m.decode(topic.decode(), payload))

    def feed(self, frames) -> None:
        self.proc.stdin.write(b"".join(encode_frame(t, p) for t, p in frames))
        self.proc.stdin.flush()

    def counters(self) -> dict:
        return self.heartbeats[-1].counters if self.heartbeats else {}

    def wait_counters(self, what: str, predicate, timeout: float = 15.0) -> dict:
        return wait_until(lambda: self.heartbeats and predicate(self.counters()) and self.counters(),
                          timeout, what=what)

    def finish(self, timeout: float = 30.0) -> tuple[int, str]:
        self.proc.stdin.close()
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code, self.proc.stderr.read().decode()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)


def kill_embedded_redis(run_dir) -> None:
    """SIGKILL the redis-server named by ``run_dir``'s pidfile, if it still runs there."""
    try:
        pid = int((run_dir / "redis.pid").read_text())
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
    except (OSError, ValueError):
        return
    if b"redis-server" in cmdline and str(run_dir).encode() in cmdline:
        os.kill(pid, signal.SIGKILL)


def stored_state(url: str) -> dict[bytes, bytes]:
    r = redis.Redis.from_url(url)
    try:
        out = {}
        for key in r.keys(b"hp:last:*"):
            out.update(r.hgetall(key))
        return out
    finally:
        r.close()


def stream_entries(url: str) -> set[tuple[bytes, bytes]]:
    r = redis.Redis.from_url(url)
    try:
        return {(e[b"t"], e[b"p"]) for key in r.keys(b"hp:stream:*") for _id, e in r.xrange(key)}
    finally:
        r.close()


def journaled(root) -> list[tuple[bytes, bytes]]:
    return sorted((rec.topic, rec.payload) for path in journal_files([root]) for rec in read_journal(path))


def has_value(url: str, frame) -> bool:
    return stored_state(url).get(frame[0]) == frame[1]


def test_redis_killed_mid_stream_and_restarted_empty_loses_nothing(short_tmp):
    server = EmbeddedRedis(short_tmp / "redis", save="")  # a restart comes back empty
    server.start()
    sw = StoreWriterProcess(short_tmp, f"redis_url={server.url}", keep_redis_url=False)
    frames = f.mix(3000)
    a, b, c = frames[:1000], frames[1000:2000], frames[2000:]
    try:
        sw.feed(a)
        wait_until(lambda: has_value(server.url, a[-1]), 15, what="the first part in Redis")
        os.kill(server.pid, signal.SIGKILL)
        server.stop()
        sw.feed(b)  # Redis is gone: these wait in memory (the journal takes them at once)
        sw.wait_counters("the outage seen", lambda c: c["redis_up"] == 0 and c["journal_records"] == 2000)
        server.start()
        sw.wait_counters("the reconnect", lambda c: c["redis_up"] == 1 and c["redis_reconnects"] >= 1)
        sw.feed(c)
        code, err = sw.finish()
        assert code == 0, err
        assert journaled(short_tmp / "journal") == sorted(frames)
        assert stored_state(server.url) == f.last_per_topic(frames)
        assert stream_entries(server.url) >= set(b + c)  # every entry since the crash
        final = sw.counters()
        assert final["redis_reconnects"] >= 1 and final["redis_errors"] >= 1
        assert final["stream_backlog_dropped"] == 0 and final["backlog"] == 0
        assert final["journal_records"] == 3000 and final["in_msgs"] == 3000
        assert "Redis unreachable" in err and "Redis is back" in err
    finally:
        if sw.proc.poll() is None:
            sw.kill()
        server.stop()


def test_connection_cut_by_the_server_mid_stream_loses_nothing(short_tmp, redis_url):
    """Against REDIS_URL's server when set (else the session's embedded one): CLIENT KILL."""
    sw = StoreWriterProcess(short_tmp, f"redis_url={redis_url}")
    frames = f.mix(2000)
    r = redis.Redis.from_url(redis_url)
    try:
        sw.feed(frames[:1000])
        wait_until(lambda: has_value(redis_url, frames[999]), 15, what="the first part in Redis")
        name = f"store-writer-{sw.proc.pid}"
        ours = [c for c in r.client_list() if c.get("name") == name]
        assert len(ours) == 1, r.client_list()
        assert r.client_kill_filter(_id=ours[0]["id"]) == 1
        sw.feed(frames[1000:])
        sw.wait_counters("the reconnect", lambda c: c["redis_reconnects"] >= 1 and c["backlog"] == 0)
        code, err = sw.finish()
        assert code == 0, err
        assert journaled(short_tmp / "journal") == sorted(frames)
        assert stored_state(redis_url) == f.last_per_topic(frames)
        assert stream_entries(redis_url) == set(frames)  # the server kept its memory: all there
        assert sw.counters()["redis_errors"] >= 1
    finally:
        r.close()
        if sw.proc.poll() is None:
            sw.kill()


def test_embedded_redis_orphaned_by_a_sigkill_is_stopped_saved_and_replaced(short_tmp):
    run_dir = short_tmp / "run"
    first = StoreWriterProcess(short_tmp, keep_redis_url=False)
    frames = f.mix(300)
    try:
        first.feed(frames)
        first.wait_counters("frames in Redis", lambda c: c["keys"] == len(f.last_per_topic(frames))
                            and c["backlog"] == 0 and c["redis_writes"] > 0)
        orphan_pid = int((run_dir / "redis.pid").read_text())
        first.kill()  # SIGKILL: no on_stop; its redis-server runs on, in its own session
        url = f"unix://{socket_path(run_dir)}"
        assert redis.Redis.from_url(url).ping()
        second = StoreWriterProcess(short_tmp, keep_redis_url=False)
        second.wait_counters("the second store-writer running", lambda c: c["redis_up"] == 1)
        new_pid = int((run_dir / "redis.pid").read_text())
        assert new_pid != orphan_pid
        wait_until(lambda: not os.path.exists(f"/proc/{orphan_pid}/cmdline")
                   or b"redis-server" not in open(f"/proc/{orphan_pid}/cmdline", "rb").read(),
                   10, what="the orphan gone")
        # The orphan saved on SHUTDOWN and the new server loaded it: state before any new frame.
        state = load_state(["md.book", "md.index", "hb"], run_dir=str(run_dir), url=url)
        last = f.last_per_topic(frames)
        assert {t.encode() for t in state} == {t for t in last if t.split(b".")[:2] in
                                               ([b"md", b"book"], [b"md", b"index"]) or t.startswith(b"hb.")}
        code, err = second.finish()
        assert code == 0, err
        assert "stopping it (SHUTDOWN SAVE)" in err
        assert not os.path.exists(socket_path(run_dir))  # stopped with store-writer
        assert (run_dir / "redis.rdb").exists()
    finally:
        for sw in (first, locals().get("second")):
            if sw is not None and sw.proc.poll() is None:
                sw.kill()
        kill_embedded_redis(run_dir)  # a test that failed midway must not leave a server running


def embedded_pid(run_dir) -> int:
    return int((run_dir / "redis.pid").read_text())


def test_embedded_redis_that_dies_is_restarted_and_the_live_state_rebuilt(short_tmp):
    """SIGKILL of the embedded server of a running store-writer: started again, every latest
    value written back (it comes back empty: no snapshots), whether frames flow or not."""
    run_dir = short_tmp / "run"
    url = f"unix://{socket_path(run_dir)}"
    sw = StoreWriterProcess(short_tmp, "embedded_save=", keep_redis_url=False)
    frames = f.mix(2000)
    a, b = frames[:1000], frames[1000:]
    try:
        sw.feed(a)
        sw.wait_counters("the first part in Redis", lambda c: c["keys"] == len(f.last_per_topic(a))
                         and c["backlog"] == 0 and c["redis_writes"] > 0)
        first_pid = embedded_pid(run_dir)
        os.kill(first_pid, signal.SIGKILL)  # no frame follows: found by store-writer itself
        sw.wait_counters("the restart and the rebuild", lambda c: c["embedded_restarts"] == 1
                         and c["redis_reconnects"] == 1 and c["redis_up"] == 1 and c["redis_rebuilds"] == 2)
        assert embedded_pid(run_dir) != first_pid
        wait_until(lambda: stored_state(url) == f.last_per_topic(a), 15, what="every latest value back")
        sw.feed(b)
        sw.wait_counters("the rest written", lambda c: c["journal_records"] == 2000 and c["backlog"] == 0
                         and c["in_msgs"] == 2000)
        code, err = sw.finish()
        assert code == 0, err
        final = sw.counters()
        assert final["embedded_restarts"] == 1 and final["redis_errors"] >= 1
        assert final["stream_backlog_dropped"] == 0 and final["journal_refused"] == 0
        assert journaled(short_tmp / "journal") == sorted(frames)
        assert "embedded Redis exited (code -9); starting it again" in err
        assert "embedded Redis is answering again" in err
        assert not os.path.exists(socket_path(run_dir))  # the restarted one stopped with store-writer
    finally:
        if sw.proc.poll() is None:
            sw.kill()
        kill_embedded_redis(run_dir)


def test_a_second_store_writer_on_the_same_run_dir_is_refused_and_the_live_redis_untouched(short_tmp):
    """The replay example of docs/store-writer.md run beside `make run`, without its own run_dir."""
    run_dir = short_tmp / "run"
    url = f"unix://{socket_path(run_dir)}"
    live = StoreWriterProcess(short_tmp / "live", keep_redis_url=False, run_dir=run_dir)
    frames = f.mix(400)
    try:
        live.feed(frames[:200])
        live.wait_counters("the live one storing", lambda c: c["backlog"] == 0 and c["in_msgs"] == 200
                           and c["redis_writes"] > 0)
        live_redis = embedded_pid(run_dir)
        replay = StoreWriterProcess(short_tmp / "replay", keep_redis_url=False, run_dir=run_dir)
        replay.feed(frames[:5])
        code, err = replay.finish()
        assert code == 69, err
        assert (f"belongs to a running store-writer (pid {live.proc.pid}, holding {run_dir}/redis.lock): "
                "give this one its own run_dir") in err
        assert "SHUTDOWN" not in err
        live.feed(frames[200:])
        live.wait_counters("the live one storing on", lambda c: c["backlog"] == 0 and c["in_msgs"] == 400)
        assert embedded_pid(run_dir) == live_redis and redis.Redis.from_url(url).ping()
        assert stored_state(url) == f.last_per_topic(frames)
        code, err = live.finish()
        assert code == 0, err
        assert live.counters()["redis_errors"] == 0 and live.counters()["embedded_restarts"] == 0
    finally:
        for sw in (live, locals().get("replay")):
            if sw is not None and sw.proc.poll() is None:
                sw.kill()
        kill_embedded_redis(run_dir)


def test_journal_dir_not_writable_exits_73_with_a_clear_message(short_tmp):
    (short_tmp / "file").write_text("")
    sw = StoreWriterProcess(short_tmp, f"journal_dir={short_tmp}/file/journal", keep_redis_url=False)
    code, err = sw.finish()
    assert code == EX_CANTCREAT
    assert f"journal directory {short_tmp}/file/journal is not writable" in err


def test_embedded_socket_path_too_long_exits_78_naming_the_limit(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    sw = StoreWriterProcess(deep, keep_redis_url=False)
    code, err = sw.finish()
    assert code == 78
    assert "limited to 107" in err and "redis.sock" in err


@pytest.mark.parametrize("bad", ["book_levels=0", "fsync=sometimes", "compress_level=10"])
def test_bad_config_values_exit_78(short_tmp, bad):
    sw = StoreWriterProcess(short_tmp, bad, keep_redis_url=False)
    code, err = sw.finish()
    assert code == 78, err
    assert bad.split("=")[0] in err
