"""A Deribit JSON-RPC 2.0 session over WebSocket, run in a background thread.

The thread owns the socket and everything that must happen on time whatever the daemon's
main loop is doing: answering ``test_request`` heartbeats, reconnecting with capped
exponential backoff and jitter, re-authenticating, refreshing the token, resubscribing, and
backing off on 10028 ``too_many_requests``. It hands the daemon decoded events through a
queue; the daemon's runtime polls :attr:`handle` (a socketpair) like any other input, so
normalising market data happens on the main thread with no locks in the domain code.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from ...threadsource import ThreadSource

log = logging.getLogger("hedgepipe.deribit.jsonrpc")

TOO_MANY_REQUESTS = 10028
#: A connection up this long counts as good: the next outage starts from the shortest backoff.
STABLE_S = 30.0
#: Channels per public/subscribe request (Deribit accepts long lists; batches keep each
#: request and its answer small and a 10028 retry cheap).
SUBSCRIBE_BATCH = 100


@dataclass(slots=True)
class Event:
    """What the session reports. ``kind``: connected, disconnected, notification, result, error."""

    kind: str
    ts_recv: int
    channel: str = ""
    data: Any = None
    request_id: int = 0
    method: str = ""
    error: dict = field(default_factory=dict)


@dataclass
class SessionConfig:
    url: str
    heartbeat_s: float = 10.0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    client_id: str = ""
    client_secret: str = ""  # never logged
    connect_timeout_s: float = 10.0


class JsonRpcSession(ThreadSource):
    thread_name = "deribit-ws"

    def __init__(self, config: SessionConfig):
        super().__init__()
        self.config = config
        self.endpoints = [config.url]
        self.connected = False
        self.reconnects = 0
        self._ids = threading.Lock()
        self._channels: set[str] = set()  # what we want subscribed, across reconnects
        self._pending: dict[int, tuple[str, Any]] = {}  # id -> (method, params) in flight
        self._next_id = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commands: asyncio.Queue | None = None
        self._early: list[tuple] = []  # commands posted before the loop exists
        self._refresh_token = ""
        self._refresh_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        # The loop and its queue exist before the thread does, so a command posted at any
        # moment lands in the queue (no hand-over window to lose it in).
        self._loop = asyncio.new_event_loop()
        self._commands = asyncio.Queue()
        for command in self._early:
            self._commands.put_nowait(command)
        self._early.clear()
        super().start()

    def wake_thread(self) -> None:
        self._post(("stop",))

    # ---- commands (main thread, thread-safe) ----------------------------------------------

    def call(self, method: str, params: dict | None = None) -> int:
        """Send a request; its answer arrives as a ``result`` or ``error`` Event with this id."""
        with self._ids:
            request_id = self._next_id
            self._next_id += 1
        self._post(("call", request_id, method, params or {}))
        return request_id

    def subscribe(self, channels: list[str]) -> None:
        self._channels.update(channels)
        self._post(("subscribe", list(channels)))

    def unsubscribe(self, channels: list[str]) -> None:
        self._channels.difference_update(channels)
        self._post(("unsubscribe", list(channels)))

    def resubscribe(self, channels: list[str]) -> None:
        """Unsubscribe and subscribe again: Deribit then sends a fresh book snapshot."""
        self._post(("unsubscribe", list(channels)))
        self._post(("subscribe", list(channels)))

    def reconnect(self, reason: str) -> None:
        self._post(("reconnect", reason))

    def _post(self, command: tuple) -> None:
        loop = self._loop
        if loop is None:
            self._early.append(command)
            return
        try:
            loop.call_soon_threadsafe(self._commands.put_nowait, command)
        except RuntimeError:  # loop closed: we are stopping
            pass

    # ---- the thread -----------------------------------------------------------------------

    def run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        backoff = self.config.backoff_min_s
        while not self.stopping:
            up_since = time.monotonic()
            reason = await self._session()
            if self._refresh_timer is not None:
                self._refresh_timer.cancel()
                self._refresh_timer = None
            # Back to the shortest wait only after a connection that really held: a venue
            # that accepts and drops at once must not be hammered every 0.5 s.
            if self.connected and time.monotonic() - up_since >= STABLE_S:
                backoff = self.config.backoff_min_s
            self.connected = False
            self.emit(Event("disconnected", time.time_ns(), data=reason))
            if self.stopping:
                break
            self.reconnects += 1
            # Capped exponential backoff with full jitter: many clients never retry in step.
            delay = random.uniform(self.config.backoff_min_s, backoff)
            log.warning("disconnected; reconnecting", extra={"reason": reason, "in_s": round(delay, 2),
                                                             "url": self.config.url})
            backoff = min(backoff * 2, self.config.backoff_max_s)
            if await self._wait_for_stop(delay):
                break
        self.eof = self.stopping

    async def _wait_for_stop(self, delay: float) -> bool:
        """Sleep ``delay`` unless a stop command comes first (other commands wait)."""
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            try:
                command = await asyncio.wait_for(self._commands.get(), left)
            except TimeoutError:
                return False
            if command[0] == "stop":
                return True
            if command[0] == "call":  # no connection to send it on: answer now
                self.emit(Event("error", time.time_ns(), request_id=command[1], method=command[2],
                                 error={"code": -1, "message": "not connected"}))
        return False

    async def _session(self) -> str:
        try:
            async with connect(self.config.url, open_timeout=self.config.connect_timeout_s,
                               max_size=None, ping_interval=None) as ws:
                self._ws = ws
                self._pending.clear()  # answers to the last connection's requests never come
                await self._send("public/set_heartbeat", {"interval": self.config.heartbeat_s})
                if self.config.client_id:
                    await self._send("public/auth", {"grant_type": "client_credentials",
                                                     "client_id": self.config.client_id,
                                                     "client_secret": self.config.client_secret})
                wanted = sorted(self._channels)  # once: the main thread may change the set meanwhile
                for start in range(0, len(wanted), SUBSCRIBE_BATCH):
                    await self._send("public/subscribe", {"channels": wanted[start:start + SUBSCRIBE_BATCH]})
                self.connected = True
                self.emit(Event("connected", time.time_ns(), data=self.config.url))
                return await self._pump(ws)
        except (OSError, WebSocketException, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"

    async def _pump(self, ws) -> str:
        reader = asyncio.ensure_future(self._reader(ws))
        while True:
            getter = asyncio.ensure_future(self._commands.get())
            done, _ = await asyncio.wait({reader, getter}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                if getter.done() and not getter.cancelled():
                    self._commands.put_nowait(getter.result())  # taken as the link died: keep it
                else:
                    getter.cancel()
                return reader.result()
            command = getter.result()
            kind = command[0]
            if kind == "stop":
                reader.cancel()
                await ws.close()
                return "stopped"
            if kind == "reconnect":
                reader.cancel()
                await ws.close()
                return f"reconnect requested: {command[1]}"
            if kind == "refresh":
                await self._send("public/auth", {"grant_type": "refresh_token",
                                                 "refresh_token": self._refresh_token})
            elif kind == "call":
                await self._send(command[2], command[3], request_id=command[1])
            elif kind in ("subscribe", "unsubscribe"):
                channels = command[1]
                for start in range(0, len(channels), SUBSCRIBE_BATCH):
                    await self._send(f"public/{kind}", {"channels": channels[start:start + SUBSCRIBE_BATCH]})

    async def _send(self, method: str, params: dict, request_id: int = 0) -> None:
        if not request_id:
            with self._ids:
                request_id = self._next_id
                self._next_id += 1
        self._pending[request_id] = (method, params)
        await self._ws.send(msgspec.json.encode({"jsonrpc": "2.0", "id": request_id,
                                                 "method": method, "params": params}).decode())

    async def _reader(self, ws) -> str:
        # Liveness: with set_heartbeat, Deribit sends something at least every interval.
        silence = 2 * self.config.heartbeat_s + 1
        decode = msgspec.json.decode
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), silence)
            except TimeoutError:
                return f"no message for {silence:.1f}s (heartbeat missed)"
            except WebSocketException as exc:
                return f"{type(exc).__name__}: {exc}"
            ts_recv = time.time_ns()
            try:
                msg = decode(raw)
                if not isinstance(msg, dict):
                    raise ValueError("not a JSON object")
                method = msg.get("method")
                params = msg.get("params") or {}
                if method in ("subscription", "heartbeat") and not isinstance(params, dict):
                    raise ValueError("params is not an object")
                if method == "subscription":
                    self.emit(Event("notification", ts_recv, channel=str(params.get("channel", "")),
                                    data=params.get("data")))
                elif method == "heartbeat":
                    if params.get("type") == "test_request":
                        await self._send("public/test", {})
                else:
                    await self._answer(msg, ts_recv)
            except (msgspec.DecodeError, ValueError, TypeError, AttributeError) as exc:
                # Whatever the venue sends, the session goes on: the frame becomes an event.
                self.emit(Event("error", ts_recv, error={"code": -32700, "message": f"bad frame: {exc}",
                                                         "raw": str(raw)[:200]}))

    async def _answer(self, msg: dict, ts_recv: int) -> None:
        request_id = msg.get("id") or 0
        if not isinstance(request_id, int):
            raise ValueError(f"id {request_id!r} is not an integer")
        method, params = self._pending.pop(request_id, ("", None))
        error = msg.get("error")
        if error is not None and not isinstance(error, dict):
            error = {"code": None, "message": str(error)[:200]}
        if error:
            if error.get("code") == TOO_MANY_REQUESTS and method:
                # Rate limited: back off and send the same request again.
                log.warning("too_many_requests; retrying", extra={"method": method})
                self._loop.call_later(1.0 + random.random(), self._commands.put_nowait,
                                      ("call", request_id, method, params))
                return
            self.emit(Event("error", ts_recv, request_id=request_id, method=method, error=error))
            return
        result = msg.get("result")
        if method == "public/auth" and isinstance(result, dict):
            self._refresh_token = result.get("refresh_token", "")
            try:
                expires = float(result.get("expires_in") or 0)
            except (TypeError, ValueError):
                expires = 0.0
            if self._refresh_timer is not None:
                self._refresh_timer.cancel()
            if expires > 0:  # refresh at 80% of the lifetime, with the token current then
                self._refresh_timer = self._loop.call_later(0.8 * expires, self._commands.put_nowait,
                                                            ("refresh",))
            result = {k: v for k, v in result.items() if "token" not in k}  # never hand tokens on
        if method in ("public/set_heartbeat", "public/test"):
            return
        self.emit(Event("result", ts_recv, request_id=request_id, method=method, data=result))
