"""What the benchmark's processes share: a control channel and process hygiene.

Each generator and sink gets one end of a socketpair (``--ctl FD``); JSON lines go both
ways on it (``ready``, ``go``, the results). It is separate from the data path, so the same
protocol works when the data path is a pipe on stdin/stdout.
"""

from __future__ import annotations

import ctypes
import json
import select
import signal
import socket
import sys
import time

_PR_SET_PDEATHSIG = 1
_PR_SET_TIMERSLACK = 29


class Channel:
    """Newline-delimited JSON over one end of a socketpair."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buf = b""
        self.eof = False

    @classmethod
    def from_fd(cls, fd: int) -> "Channel":
        return cls(socket.socket(fileno=fd))

    def send(self, **fields) -> None:
        try:
            self.sock.sendall(json.dumps(fields).encode() + b"\n")
        except OSError:  # the other side is gone; the orchestrator reports that
            self.eof = True

    def recv(self, timeout: float) -> dict | None:
        """The next message, or None if none arrived within ``timeout`` seconds (or EOF)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if self.eof or left < 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                return None
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                continue
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def close(self) -> None:
        self.sock.close()


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: best effort only
        pass


def die_with_parent() -> None:
    """preexec_fn: SIGTERM this child if the orchestrator dies (even by SIGKILL)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def tight_timers() -> None:
    """Sleep wake-ups within ~1 µs instead of the default 50 µs slack (pacing at 10k/s)."""
    _prctl(_PR_SET_TIMERSLACK, 1000)


def quiet_interrupts() -> None:
    """SIGTERM/SIGINT end a helper process with a short exit, not a traceback."""
    def leave(signum, _frame):
        sys.exit(128 + signum)
    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)
