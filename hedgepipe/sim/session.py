"""One client connection: its subscriptions, its outgoing queue, its heartbeat, its faults.

Everything the connection sends (answers and notifications) goes through one queue and one
writer task, so an answer and the notifications it causes leave in the order they were made,
and a slow client cannot hold up the market for the others.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Callable

import msgspec
from websockets.exceptions import ConnectionClosed

if TYPE_CHECKING:
    from .server import SimServer

log = logging.getLogger("hedgepipe.sim")
_encode = msgspec.json.Encoder().encode
TEST_REQUEST = '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}'
MAX_QUEUED = 100_000  # a client this far behind is dropped, as a venue would


def encode(obj: object) -> str:
    return _encode(obj).decode()


def notification(channel: str, data: object) -> str:
    return encode({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}})


class Session:
    def __init__(self, server: "SimServer", ws, number: int):
        self.server = server
        self.ws = ws
        self.number = number
        self.subs: dict[str, set[str]] = {}    # channel key -> the channel names subscribed
        self.token: str | None = None
        self.requests = 0
        self.sent = 0
        self.closed = False
        self.playback = None                   # replay markets: this connection's playback
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._after: list[Callable[[], None]] = []
        self._opened = asyncio.get_running_loop().time()
        self._heartbeat: asyncio.Task | None = None
        self._test_pending = False
        self._drop_claimed: bool | None = None

    # ---- subscriptions --------------------------------------------------------------------------
    def channels(self) -> list[str]:
        return [c for chans in self.subs.values() for c in chans]

    def notify(self, key: str, data: object) -> None:
        for channel in self.subs.get(key, ()):
            self.send_text(notification(channel, data))

    # ---- sending --------------------------------------------------------------------------------
    def send_text(self, text: str) -> None:
        if self.closed:
            return
        self._queue.put_nowait(text)
        if self._queue.qsize() > MAX_QUEUED:
            log.warning("slow client dropped", extra={"session": self.number, "queued": MAX_QUEUED})
            self.abort()

    def send(self, obj: object) -> None:
        self.send_text(encode(obj))

    def after_reply(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the answer to the current request is queued (subscribe -> snapshot)."""
        self._after.append(fn)

    def discard_after_reply(self) -> None:
        self._after.clear()

    def run_after_reply(self) -> None:
        todo, self._after = self._after, []
        for fn in todo:
            fn()

    def stalled(self) -> bool:
        stall = self.server.faults.stall_after_s
        return stall is not None and asyncio.get_running_loop().time() - self._opened >= stall

    def _should_drop(self) -> bool:
        faults = self.server.faults
        due = ((faults.drop_after_messages is not None and self.sent >= faults.drop_after_messages)
               or (faults.drop_after_s is not None
                   and asyncio.get_running_loop().time() - self._opened >= faults.drop_after_s))
        if not due:
            return False
        if self._drop_claimed is None:
            self._drop_claimed = faults.claim_drop()
        return self._drop_claimed

    async def writer(self) -> None:
        faults = self.server.faults
        try:
            while True:
                text = await self._queue.get()
                if faults.delay_ms > 0:
                    await asyncio.sleep(faults.delay_ms / 1000.0)
                if self.stalled():
                    continue
                if self._should_drop():
                    log.warning("fault: connection dropped", extra={"session": self.number, "sent": self.sent})
                    self.abort()
                    return
                await self.ws.send(text)
                self.sent += 1
        except ConnectionClosed:
            return

    def abort(self) -> None:
        """Cut the TCP connection without a close frame, as a network failure would."""
        self.closed = True
        self.ws.transport.abort()

    # ---- heartbeat ------------------------------------------------------------------------------
    def start_heartbeat(self, interval: float) -> None:
        self.stop_heartbeat()
        self._test_pending = False
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(interval))

    def stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    def test_answered(self) -> None:
        self._test_pending = False

    async def _beat(self, interval: float) -> None:
        """Deribit's rule: a test_request not answered with public/test by the next one closes."""
        while not self.closed:
            await asyncio.sleep(interval)
            if self.server.faults.no_heartbeats or self.stalled():
                continue
            if self._test_pending:
                log.info("heartbeat not answered: closing", extra={"session": self.number})
                self.closed = True
                await self.ws.close(1000, "test_request not answered")
                return
            self._test_pending = True
            self.send_text(TEST_REQUEST)

    def close(self) -> None:
        self.closed = True
        self.stop_heartbeat()
        if self.playback is not None:
            self.playback.cancel()
