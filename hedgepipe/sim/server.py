"""The WebSocket server: JSON-RPC dispatch, subscriptions fan-out, and the market's clock.

``SimServer(market).start(host, port)`` inside a running event loop; ``SimThread`` runs one
in a background thread for tests and for embedding. The path is ``/ws/api/v2`` as on Deribit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import msgspec
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from .auth import Auth
from .errors import INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, TOO_MANY_REQUESTS, RpcError
from .faults import Faults
from .market import LiveMarket, Market, channel_key
from .methods import METHODS, check_access
from .replay import Playback, ReplayMarket
from .session import Session, notification

log = logging.getLogger("hedgepipe.sim")
PATH = "/ws/api/v2"
_decode = msgspec.json.Decoder().decode


class SimServer:
    def __init__(self, market: Market, *, faults: Faults | None = None, auth: Auth | None = None,
                 min_heartbeat_s: float = 10.0, tick_s: float = 0.1, speed: float = 1.0):
        self.market = market
        self.faults = faults or Faults()
        self.auth = auth or Auth()
        self.min_heartbeat_s = min_heartbeat_s
        self.tick_s = tick_s
        self.speed = speed
        self.sessions: set[Session] = set()
        self.subscribers: dict[str, set[Session]] = {}
        self.port: int | None = None
        self._server = None
        self._pump: asyncio.Task | None = None
        self._numbers = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await serve(self._connection, host, port, process_request=self._check_path,
                                   max_size=2**22)
        self.port = self._server.sockets[0].getsockname()[1]
        if isinstance(self.market, LiveMarket):
            self._pump = asyncio.get_running_loop().create_task(self._run_market())
        return self.port

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @staticmethod
    def _check_path(connection, request):
        if request.path.split("?")[0] != PATH:
            return connection.respond(404, f"the API is at {PATH}\n")
        return None

    # ---- a connection -----------------------------------------------------------------------
    async def _connection(self, ws) -> None:
        self._numbers += 1
        session = Session(self, ws, self._numbers)
        self.sessions.add(session)
        writer = asyncio.get_running_loop().create_task(session.writer())
        log.info("client connected", extra={"session": session.number, "peer": str(ws.remote_address)})
        try:
            async for message in ws:
                self.handle(session, message)
        except ConnectionClosed:
            pass
        finally:
            session.close()
            writer.cancel()
            self.sessions.discard(session)
            for subs in self.subscribers.values():
                subs.discard(session)
            log.info("client gone", extra={"session": session.number, "requests": session.requests,
                                           "sent": session.sent})

    def handle(self, session: Session, message: str | bytes) -> None:
        us_in = time.time_ns() // 1000
        if session.stalled():
            return
        request_id = None
        try:
            try:
                request = _decode(message)
            except msgspec.DecodeError:
                raise RpcError(PARSE_ERROR, "Parse error") from None
            if not isinstance(request, dict) or not isinstance(request.get("method"), str):
                raise RpcError(INVALID_REQUEST, "Invalid Request")
            request_id = request.get("id")
            params = request.get("params", {})
            if not isinstance(params, dict):
                raise RpcError(INVALID_PARAMS, "Invalid params", {"param": "params", "reason": "not an object"})
            session.requests += 1
            if session.requests in self.faults.too_many_requests:
                raise RpcError(TOO_MANY_REQUESTS, "too_many_requests")
            handler = METHODS.get(request["method"])
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, "Method not found")
            check_access(session, request["method"], params)
            reply = {"jsonrpc": "2.0", "id": request_id, "result": handler(session, params)}
        except RpcError as exc:
            session.discard_after_reply()
            reply = {"jsonrpc": "2.0", "id": request_id, "error": exc.as_dict()}
        except Exception as exc:  # a bug in a handler must not take the simulator down
            log.error("handler failed: %s", exc, exc_info=True)
            session.discard_after_reply()
            reply = {"jsonrpc": "2.0", "id": request_id, "error": {"code": 11094, "message": "internal_server_error"}}
        us_out = time.time_ns() // 1000
        reply.update(usIn=us_in, usOut=us_out, usDiff=us_out - us_in, testnet=False)
        session.send(reply)
        session.run_after_reply()

    # ---- subscriptions --------------------------------------------------------------------------
    def subscribe(self, session: Session, channels: list[str]) -> None:
        """Register, then send what a new subscriber starts from (a fresh book snapshot ...)."""
        for channel in channels:
            key = channel_key(channel)
            session.subs.setdefault(key, set()).add(channel)
            self.subscribers.setdefault(key, set()).add(session)
            if isinstance(self.market, LiveMarket):
                self._initial(session, key, channel)
        if isinstance(self.market, ReplayMarket):
            if session.playback is None:
                session.playback = Playback(self.market, session, self.speed, self.faults)
            session.playback.subscribed(channels)

    def _initial(self, session: Session, key: str, channel: str) -> None:
        kind, _, target = key.partition(".")
        if kind == "book":
            session.send_text(notification(channel, self.market.book_snapshot(target)))
        elif kind == "ticker":
            session.send_text(notification(channel, self.market.ticker(target)))
        elif kind == "deribit_price_index":
            session.send_text(notification(channel, self.market.index_event(target)))

    def unsubscribe(self, session: Session, channels: list[str]) -> list[str]:
        removed = []
        for channel in channels:
            key = channel_key(channel)
            subscribed = session.subs.get(key, set())
            if channel in subscribed:
                subscribed.discard(channel)
                removed.append(channel)
                if not subscribed:
                    del session.subs[key]
                    self.subscribers.get(key, set()).discard(session)
        return removed

    # ---- the live market's clock -----------------------------------------------------------------
    async def _run_market(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.tick_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            try:
                self._step()
            except Exception as exc:  # keep the market running; a bug shows in the log
                log.error("market step failed: %s", exc, exc_info=True)

    def _step(self) -> None:
        for key, data in self.market.step():
            subs = self.subscribers.get(key)
            # a skip counts only changes somebody is subscribed to, or nobody would see the gap
            if subs and not (key.startswith("book.") and self.faults.skip_this_change(data)):
                self._fanout(key, data, subs)
        for key, subs in list(self.subscribers.items()):
            if subs and key.startswith("ticker."):
                self._fanout(key, self.market.ticker(key[7:]), subs)

    def _fanout(self, key: str, data: object, subs: set[Session]) -> None:
        texts: dict[str, str] = {}
        for session in list(subs):
            for channel in session.subs.get(key, ()):
                text = texts.get(channel) or texts.setdefault(channel, notification(channel, data))
                session.send_text(text)


class SimThread:
    """A SimServer on its own event loop in a daemon thread (tests, embedding)."""

    def __init__(self, server: SimServer, host: str = "127.0.0.1", port: int = 0):
        self.server, self.host, self.port = server, host, port
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="deribit-sim", daemon=True)

    def __enter__(self) -> "SimThread":
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.server.start(self.host, self.port), self.loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{PATH}"

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the server's loop (to change faults or read state safely)."""
        async def run():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)
