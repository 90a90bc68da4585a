"""The thin socket driver around ``FixSession``: read, feed, tick, write, close when told to."""

from __future__ import annotations

import select
import socket

import simplefix

from hedgepipe.venues.deribit.fix_session import FixSession


class FixConnection:
    """Owns one connected socket for one session; ``poll`` does one round of I/O and timers."""

    def __init__(self, session: FixSession, sock: socket.socket):
        self.session = session
        self.sock: socket.socket | None = sock

    def start(self) -> None:
        self.sock.setblocking(False)
        self.session.connect()
        self._flush()

    def poll(self, timeout: float, timers: bool = True) -> list[simplefix.FixMessage]:
        """Wait up to ``timeout`` for input; returns the application messages that arrived.

        ``timers=False`` leaves heartbeats and TestRequests out, which lets a test make the
        counterparty's own silence detection fire.
        """
        if self.sock is None:
            return []
        app: list[simplefix.FixMessage] = []
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if readable:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self.session.connection_lost()
            elif data:
                app = self.session.receive(data)
        if timers:
            self.session.tick()
        self._flush()
        return app

    def _flush(self) -> None:
        out = self.session.take_outgoing()
        if out and self.sock is not None:
            try:
                self.sock.setblocking(True)  # admin traffic is small: a short blocking write is fine
                self.sock.sendall(out)
                self.sock.setblocking(False)
            except OSError:
                self.session.connection_lost()
        if self.session.disconnect_reason is not None:
            self.close()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
