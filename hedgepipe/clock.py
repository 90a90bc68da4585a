"""The clock, injected everywhere time is read, so handlers can be tested with a fake one."""

from __future__ import annotations

import time


class SystemClock:
    """Wall time for stamps (``time_ns``), monotonic time for timers (``monotonic``)."""

    @staticmethod
    def time_ns() -> int:
        return time.time_ns()

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start_ns: int = 1_700_000_000_000_000_000):
        self._ns = start_ns
        self._mono = 0.0

    def time_ns(self) -> int:
        return self._ns

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._ns += int(seconds * 1e9)
        self._mono += seconds
