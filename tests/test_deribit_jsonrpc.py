"""The JSON-RPC session against a deliberately misbehaving WebSocket server."""

from __future__ import annotations

import asyncio
import json
import threading

from websockets.asyncio.server import serve

from hedgepipe.venues.deribit.jsonrpc import JsonRpcSession, SessionConfig

from .conftest import wait_until


class BadServer:
    """Answers every request, then sends garbage, an error object and one good notification."""

    def __init__(self):
        self.port = 0
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _handler(self, ws):
        async for raw in ws:
            request = json.loads(raw)
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "ok"}))
            if request["method"] == "public/subscribe":
                await ws.send("{this is not json")
                await ws.send(json.dumps({"jsonrpc": "2.0", "id": 999,
                                          "error": {"code": 11050, "message": "bad_request"}}))
                await ws.send(json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {
                    "channel": "deribit_price_index.btc_usd",
                    "data": {"index_name": "btc_usd", "price": 100.5, "timestamp": 1}}}))

    async def _main(self):
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0) as server:
            self.port = server.sockets[0].getsockname()[1]
            self.ready.set()
            await self.stop.wait()

    def start(self):
        self.thread.start()
        assert self.ready.wait(10)

    def close(self):
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


def test_malformed_json_and_error_objects_become_events_and_the_session_goes_on():
    server = BadServer()
    server.start()
    session = JsonRpcSession(SessionConfig(url=f"ws://127.0.0.1:{server.port}", heartbeat_s=10))
    session.start()
    try:
        session.subscribe(["deribit_price_index.btc_usd"])
        events = []
        wait_until(lambda: events.extend(session.read()) or
                   any(e.kind == "notification" for e in events), what="the good notification")
        kinds = [e.kind for e in events]
        assert kinds[0] == "connected"
        bad = [e for e in events if e.kind == "error"]
        assert bad[0].error["code"] == -32700 and "not json" in bad[0].error["raw"]
        assert bad[1].error["code"] == 11050
        good = next(e for e in events if e.kind == "notification")
        assert good.channel == "deribit_price_index.btc_usd" and good.data["price"] == 100.5
        assert session.connected and session.reconnects == 0     # nothing made it reconnect
    finally:
        session.close()
        server.close()
