"""The spike rule: distance from a rolling median in units of the median absolute deviation.

Per key (an index source and name, an instrument's book mid, an instrument's ticker mid) a
:class:`SpikeWindow` holds the last ``size`` accepted values. A new value ``x`` is a spike when

    |x - median| > k * max(MAD, scale_floor)

with ``median`` the middle of the window (the upper of the two middle values when the count is
even), ``MAD`` the median of ``|v - median|`` over the window and ``scale_floor`` what the caller
says is the least meaningful scale (``min_rel * |median|``, a tick, half the spread). With fewer
than ``min_samples`` values nothing is judged: every value is accepted.

A value equal to the last accepted one is not judged: a repeat is not a spike (a book whose
amounts changed but not its best prices, a ticker republished unchanged: the common case, kept
cheap). It still enters the window, like every accepted value, and clears a pending move.

It must not freeze on a real jump. A rejected value becomes *pending*; the next rejected values
that agree with the first pending one (within the same distance, ``k * max(MAD, floor)``) are
added to it, a value that disagrees starts a new pending move, and an accepted value clears it.
When ``confirm`` values are pending the move is real: the last one is accepted (CONFIRMED) and
the window re-bases on the pending values, so the new level is the median from then on. The
daemon can also accept a value confirmed elsewhere (another source of the same index at the
same level) with :meth:`SpikeRule.rebase`.

Cost: the window is kept sorted (bisect), so the median is one index; the MAD (a sort) is only
computed for a value already beyond ``k * floor`` from the median, which is rare.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque

ACCEPT = 0
SPIKE = 1
CONFIRMED = 2


class SpikeWindow:
    __slots__ = ("values", "ordered", "pending", "last")

    def __init__(self, size: int):
        self.values: deque[float] = deque(maxlen=size)  # arrival order, for eviction
        self.ordered: list[float] = []                  # the same values, sorted
        self.pending: list[float] = []                  # rejected values of a move not yet confirmed
        self.last: float | None = None                  # the last value accepted

    def median(self) -> float | None:
        n = len(self.ordered)
        return self.ordered[n >> 1] if n else None


def _mad(ordered: list[float], median: float) -> float:
    deviations = sorted([v - median if v > median else median - v for v in ordered])
    return deviations[len(deviations) >> 1]


class SpikeRule:
    """The parameters, shared by every window; ``threshold`` is the distance used by the last
    value judged not ACCEPT (for the daemon's cross-source check and its log line)."""

    def __init__(self, size: int, min_samples: int, k: float, confirm: int):
        if size < 1 or min_samples < 1 or confirm < 1 or k <= 0.0:
            raise ValueError("spike rule: size, min_samples, confirm >= 1 and k > 0")
        self.size = size
        self.min_samples = min(min_samples, size)
        self.k = k
        self.confirm = confirm
        self.threshold = 0.0

    def window(self) -> SpikeWindow:
        return SpikeWindow(self.size)

    def judge(self, w: SpikeWindow, x: float, min_rel: float, floor: float = 0.0) -> int:
        """ACCEPT (x joins the window), SPIKE (rejected, pending) or CONFIRMED (accepted: the
        move it ends has been seen ``confirm`` times; the window re-based on it)."""
        ordered = w.ordered
        if x != w.last:
            n = len(ordered)
            if n >= self.min_samples:
                median = ordered[n >> 1]
                dev = x - median if x > median else median - x
                scale = min_rel * (median if median > 0.0 else -median)
                if scale < floor:
                    scale = floor
                if dev > self.k * scale:
                    mad = _mad(ordered, median)
                    if mad > scale:
                        scale = mad
                    if dev > self.k * scale:
                        self.threshold = self.k * scale
                        return self._pending(w, x)
        if w.pending:
            w.pending.clear()
        # _push, inlined (every accepted value's path); a repeat evicting its own value leaves
        # the sorted list as it is
        values = w.values
        if len(values) == self.size:
            old = values[0]
            if old != x:
                del ordered[bisect_left(ordered, old)]
                insort(ordered, x)
        else:
            insort(ordered, x)
        values.append(x)
        w.last = x
        return ACCEPT

    def _push(self, w: SpikeWindow, x: float) -> None:
        values = w.values
        if len(values) == self.size:
            ordered = w.ordered
            del ordered[bisect_left(ordered, values[0])]
        values.append(x)
        insort(w.ordered, x)
        w.last = x

    def _pending(self, w: SpikeWindow, x: float) -> int:
        pending = w.pending
        if pending and abs(x - pending[0]) > self.threshold:
            pending.clear()  # not the same move: this one starts a new one
        pending.append(x)
        if len(pending) >= self.confirm:
            self.rebase(w, pending)
            return CONFIRMED
        return SPIKE

    def rebase(self, w: SpikeWindow, values: list[float]) -> None:
        """Forget the old level: the window becomes ``values`` (padded with the last one up to
        ``min_samples``, so the rule keeps judging right after a jump); pending cleared."""
        values = list(values)
        values += values[-1:] * (self.min_samples - len(values))
        w.values.clear()
        w.ordered.clear()
        w.pending.clear()
        for v in values:
            self._push(w, v)


def confirmed_elsewhere(peers: dict[str, tuple[float, int]], source: str, value: float,
                        ts_event: int, limit: float, max_age_ns: int) -> str | None:
    """Another source whose latest value (``peers``: source -> (value, ts_event)) is within
    ``limit`` of ``value`` and at most ``max_age_ns`` older: the move is real. Its name, or None."""
    for other, (seen, seen_ts) in peers.items():
        if other != source and abs(value - seen) <= limit and ts_event - seen_ts <= max_age_ns:
            return other
    return None
