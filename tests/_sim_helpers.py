"""A real websockets client against a real deribit-sim server running in a thread."""

from __future__ import annotations

import contextlib
import json
import time

from websockets.sync.client import connect

from hedgepipe.sim.server import SimServer, SimThread
from hedgepipe.sim.synthetic import SyntheticMarket


class Client:
    """JSON-RPC over one connection; notifications that arrive meanwhile are kept in order."""

    def __init__(self, url: str):
        self._stack = contextlib.ExitStack()  # websockets wants its sync connections in a with block
        self.ws = self._stack.enter_context(connect(url, max_size=2**24, max_queue=None))
        self.pending: list[dict] = []
        self._next_id = 0

    def send(self, method: str, params: dict | None = None) -> int:
        self._next_id += 1
        self.ws.send(json.dumps({"jsonrpc": "2.0", "id": self._next_id, "method": method,
                                 "params": params or {}}))
        return self._next_id

    def call(self, method: str, params: dict | None = None, timeout: float = 5.0) -> dict:
        """The whole reply (``result`` or ``error``)."""
        return self.reply(self.send(method, params), timeout)

    def result(self, method: str, params: dict | None = None) -> object:
        reply = self.call(method, params)
        assert "result" in reply, reply
        return reply["result"]

    def reply(self, request_id, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(deadline)
            if msg.get("id") == request_id and ("result" in msg or "error" in msg):
                return msg
            self.pending.append(msg)

    def _read(self, deadline: float) -> dict:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no message before the deadline")
        return json.loads(self.ws.recv(timeout=remaining))

    def next(self, pred=lambda m: True, timeout: float = 5.0) -> dict:
        """The next message (buffered first) for which ``pred`` holds; others are kept."""
        for i, msg in enumerate(self.pending):
            if pred(msg):
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(deadline)
            if pred(msg):
                return msg
            self.pending.append(msg)

    def close(self) -> None:
        self._stack.close()


def on_channel(channel: str):
    return lambda m: m.get("method") == "subscription" and m["params"]["channel"] == channel


@contextlib.contextmanager
def running(market, **server_options):
    server_options.setdefault("tick_s", 0.01)
    with SimThread(SimServer(market, **server_options)) as sim:
        yield sim


@contextlib.contextmanager
def client_of(sim: SimThread):
    client = Client(sim.url)
    try:
        yield client
    finally:
        client.close()


def small_market(seed: int = 7, **kw) -> SyntheticMarket:
    return SyntheticMarket(seed=seed, currencies=("BTC", "ETH"), max_strikes=6, tick_s=0.01, **kw)
