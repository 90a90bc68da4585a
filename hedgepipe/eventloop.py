"""Waiting for input: one poller over a process's inputs and a signal wake-up socket.

Used by the daemon runtime and by zmq-tap alike. SIGTERM and SIGINT only set a flag (through
the ``on_signal`` callback) and wake the poll; nothing is interrupted mid-frame, so a process
always finishes the frame it is on and can drain what already arrived.
"""

from __future__ import annotations

import signal
import socket
from typing import Callable

import zmq


class InputLoop:
    def __init__(self, inputs: list, on_signal: Callable[[int], None]):
        self.inputs = list(inputs)
        self._on_signal = on_signal
        self._poller = zmq.Poller()
        self._by_handle: dict = {}
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._signals_installed = False

    def open(self) -> None:
        for inp in self.inputs:
            self._by_handle[inp.handle] = inp
            self._poller.register(inp.handle, zmq.POLLIN)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._poller.register(self._wake_r.fileno(), zmq.POLLIN)
        try:
            signal.set_wakeup_fd(self._wake_w.fileno())
        except ValueError:  # not the main thread (a runtime embedded in a test): wake() still works
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signalled)
        self._signals_installed = True

    def _signalled(self, signum, _frame) -> None:
        self._on_signal(signum)

    @property
    def open_inputs(self) -> int:
        """Inputs not yet ended (sockets never end; a stream ends at EOF)."""
        return len(self._by_handle)

    def poll(self, timeout_ms: int | None) -> list:
        """Inputs with something to read, waiting up to ``timeout_ms`` (None: until something)."""
        ready = []
        for handle, _ in self._poller.poll(timeout_ms):
            inp = self._by_handle.get(handle)
            if inp is not None:
                ready.append(inp)
            else:
                self._drain_wake()
        return ready

    def ended(self, inp) -> None:
        """Stop polling an input that reached EOF."""
        if self._by_handle.pop(inp.handle, None) is not None:
            self._poller.unregister(inp.handle)

    def wake(self) -> None:
        """Make a waiting poll() return (from another thread)."""
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass  # already full: a wake-up is pending anyway

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(64):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self._signals_installed:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._wake_r = self._wake_w = None
