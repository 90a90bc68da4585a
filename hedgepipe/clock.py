"""The clock, injected everywhere time is read, so handlers can be tested with a fake one."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]


def expiry_code(expiry_ms: int) -> str:
    """``27DEC26``: the expiry as Deribit writes it in instrument names (day without a leading zero)."""
    day = datetime.fromtimestamp(expiry_ms / 1000, tz=timezone.utc)
    return f"{day.day}{MONTHS[day.month - 1]}{day.year % 100:02d}"


def iso_to_ns(text: str) -> int:
    """ns since the epoch of an ISO 8601 time, UTC unless it names a zone. Raises ValueError."""
    when = datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


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
