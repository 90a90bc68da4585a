"""A Deribit FIX 4.4 session as a runtime Source: a background thread owns the TCP socket.

The thread does everything that must happen on time whatever the daemon's main loop is doing:
connect, Logon, heartbeats and TestRequests (all in :class:`FixSession`), reconnect with capped
exponential backoff and full jitter. Application messages and connection events go to the
daemon through a queue; the runtime polls :attr:`handle` (one end of a socketpair) like any
other input, so W/X are turned into books on the main thread with no locks in domain code.
"""

from __future__ import annotations

import logging
import random
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from ...threadsource import ThreadSource
from .fix_session import FixConfig, FixSession
from .fix_wire import FileSeqStore, SeqStore

_WRITE_TIMEOUT_S = 10.0

log = logging.getLogger("hedgepipe.deribit.fix")


@dataclass(slots=True)
class FixEvent:
    """``kind``: connected (logged on), disconnected (``reason``; ``rejected`` for a refused
    Logon), app (``msg`` is a simplefix.FixMessage), gap (the venue gap-filled or reset over
    messages we never got: market data was lost)."""

    kind: str
    ts_recv: int
    msg: Any = None
    reason: str = ""
    rejected: bool = False


@dataclass
class FixSourceConfig:
    host: str
    port: int
    session: FixConfig
    seq_store: str = ""           # path of the FileSeqStore; "" keeps the numbers in memory
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    connect_timeout_s: float = 10.0


class FixSource(ThreadSource):
    thread_name = "deribit-fix"

    def __init__(self, config: FixSourceConfig, clock=None):
        super().__init__()
        self.config = config
        self.endpoints = [f"fix://{config.host}:{config.port}"]
        self.connected = False
        self.reconnects = 0
        self._clock = clock
        # Commands go the other way (main thread -> session thread), woken by their own pair.
        self._commands: deque[tuple] = deque()
        self._cmd_lock = threading.Lock()
        self._stop = threading.Event()
        self._cmd_r = self._cmd_w = None
        self._reset_next_logon = False

    # ---- Source (main thread) -------------------------------------------------------------
    def start(self) -> None:
        self._cmd_r, self._cmd_w = socket.socketpair()
        self._cmd_r.setblocking(False)
        self._cmd_w.setblocking(False)
        super().start()

    def wake_thread(self) -> None:
        self._stop.set()
        self._post(("stop",))

    def close(self) -> None:
        super().close()
        for sock in (self._cmd_r, self._cmd_w):
            if sock is not None:
                sock.close()

    # ---- commands (main thread, thread-safe) ------------------------------------------------
    def send(self, msg_type: bytes, fields: list) -> None:
        """An application message, sent if the session is logged on (dropped otherwise: after a
        reconnect the daemon re-issues what it needs on the ``connected`` event)."""
        self._post(("send", msg_type, fields))

    def reconnect(self, reason: str) -> None:
        self._post(("reconnect", reason))

    def _post(self, command: tuple) -> None:
        with self._cmd_lock:
            self._commands.append(command)
        try:
            self._cmd_w.send(b"\0")
        except (BlockingIOError, OSError, AttributeError):
            pass  # a wake-up is pending, or we are not started / closing

    # ---- the thread --------------------------------------------------------------------------
    def run(self) -> None:
        cfg = self.config
        backoff = cfg.backoff_min_s
        while not self._stop.is_set():
            reason, logged_on, rejected = self._session()
            self.connected = False
            self.eof = self._stop.is_set()
            self.emit(FixEvent("disconnected", time.time_ns(), reason=reason, rejected=rejected))
            if self._stop.is_set():
                break
            if logged_on:
                backoff = cfg.backoff_min_s  # a session that worked starts the ladder again
            self.reconnects += 1
            # Capped exponential backoff with full jitter: many clients never retry in step.
            delay = random.uniform(cfg.backoff_min_s, backoff)
            log.warning("FIX disconnected; reconnecting", extra={
                "reason": reason, "in_s": round(delay, 2), "endpoint": self.endpoints[0]})
            backoff = min(backoff * 2, cfg.backoff_max_s)
            if self._stop.wait(delay):
                break
        self.eof = True

    def _session(self) -> tuple[str, bool, bool]:
        """One connection, Logon to close: (reason, whether it logged on, whether refused)."""
        cfg = self.config
        store = FileSeqStore(cfg.seq_store) if cfg.seq_store else SeqStore()
        session_cfg = cfg.session
        if self._reset_next_logon:  # the last session died of a sequence mismatch: start over
            session_cfg = replace(session_cfg, reset_seq_on_logon=True)
            self._reset_next_logon = False
        try:
            store.load()
            sock = socket.create_connection((cfg.host, cfg.port), timeout=cfg.connect_timeout_s)
        except (OSError, ValueError) as exc:
            store.close()
            return f"{type(exc).__name__}: {exc}", False, False
        session = FixSession(session_cfg, store, **({"clock": self._clock} if self._clock else {}))
        try:
            sock.setblocking(False)
            return self._pump(session, sock)
        finally:
            sock.close()
            store.close()
            if session.counters["seq_too_low"]:
                self._reset_next_logon = True

    def _pump(self, session: FixSession, sock: socket.socket) -> tuple[str, bool, bool]:
        session.connect()
        logged_on = False
        while True:
            if not self._flush(session, sock):
                session.connection_lost()
            if session.disconnect_reason is not None:
                return session.disconnect_reason, logged_on, session.counters["logon_rejected"] > 0
            readable, _, _ = select.select([sock, self._cmd_r], [], [], 0.25)
            if self._cmd_r in readable and self._commands_done(session):
                self._flush(session, sock)  # the Logout, when logged on
                return "stopped", logged_on, False
            if sock in readable:
                try:
                    data = sock.recv(1 << 16)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    session.connection_lost()
                elif data:
                    ts_recv = time.time_ns()
                    skips = session.counters["gap_fills"] + session.counters["seq_resets"]
                    app = session.receive(data)
                    if session.state == "active" and not logged_on:
                        logged_on = self.connected = True
                        self.emit(FixEvent("connected", ts_recv))
                    elif session.counters["gap_fills"] + session.counters["seq_resets"] > skips:
                        self.emit(FixEvent("gap", ts_recv))
                    for msg in app:
                        self.emit(FixEvent("app", ts_recv, msg=msg))
            session.tick()

    def _commands_done(self, session: FixSession) -> bool:
        """Run queued commands; True when the session is over (a stop was asked for)."""
        _drain(self._cmd_r)
        with self._cmd_lock:
            commands = list(self._commands)
            self._commands.clear()
        for command in commands:
            if command[0] == "stop":
                if session.state == "active":
                    session.logout("client stopping")
                return True
            if command[0] == "reconnect":
                session.connection_lost()
                session.disconnect_reason = f"reconnect requested: {command[1]}"
            elif command[0] == "send" and session.state == "active":
                session.send(command[1], command[2])
        return False

    @staticmethod
    def _flush(session: FixSession, sock: socket.socket) -> bool:
        out = session.take_outgoing()
        if not out:
            return True
        try:
            # Requests are small: a short blocking write is fine, but bounded, so a venue that
            # stops reading cannot freeze the session (and its heartbeats) for ever.
            sock.settimeout(_WRITE_TIMEOUT_S)
            sock.sendall(out)
            return True
        except OSError:  # socket.timeout included: the connection is treated as dead
            return False
        finally:
            sock.setblocking(False)


def _drain(sock) -> None:
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, OSError):
        pass
