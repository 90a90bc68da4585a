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

It must not freeze on a real move, a jump or a trend. A rejected value starts a *pending move*;
each next rejected value continues it when it is consistent with the previous pending value:

- on the same side of the median, and
- not back towards the median by more than the limit ``k * max(MAD, floor)`` (noise), and
- not further from the previous pending value than the limit plus the step that reached it
  (a move keeps its pace, or gathers it gradually; a leap beyond that is a new spike).

A value that is not consistent starts a new pending move; an accepted value ends it. When
``confirm`` values are pending the move is real: the last one is accepted (CONFIRMED) and the
window re-bases on the pending values, so the new level is the median from then on. A confirmed
move stays confirmed while it goes on: a value rejected against the re-based window that is
consistent with the last one is accepted at once (CONFIRMED) and enters the window, whose MAD
then learns the move's pace; the move ends at the first value the window accepts, or one that
is not consistent. So a jump-and-stay and a trend (a mid rising 15% an update: every step
larger than the limit) both cost ``confirm - 1`` rejected values, while a one-off spike (the next
value back near the median), a bounce from side to side, a spike decaying back or an escalation
of ever bigger leaps never confirm. The daemon can also accept a value confirmed elsewhere
(another source of the same index at the same level) with :meth:`SpikeRule.rebase`.

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
    __slots__ = ("values", "ordered", "pending", "last", "up", "step", "moving")

    def __init__(self, size: int):
        self.values: deque[float] = deque(maxlen=size)  # arrival order, for eviction
        self.ordered: list[float] = []                  # the same values, sorted
        self.pending: list[float] = []                  # rejected values of a move not yet confirmed
        self.last: float | None = None                  # the last value accepted
        self.up = False                                 # the pending move's side of the median
        self.step = 0.0                                 # the step that reached pending[-1]
        self.moving = False                             # pending[-1] ends a confirmed move

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
                        return self._pending(w, x, median)
        if w.pending:
            self._accepted_in_move(w, x, min_rel, floor)
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

    def _pending(self, w: SpikeWindow, x: float, median: float) -> int:
        """A rejected value: it continues the pending move or starts a new one (module doc)."""
        pending = w.pending
        limit = self.threshold
        if pending:
            up = w.up
            step = x - pending[-1] if up else pending[-1] - x  # > 0 goes on, < 0 goes back
            if (x > median) is up and -limit <= step <= limit + w.step:
                if step > 0.0:
                    w.step = step
                if w.moving:  # a confirmed move going on: accepted, and the window learns it
                    pending[-1] = x
                    self._push(w, x)
                    return CONFIRMED
                pending.append(x)
                return self._confirm(w) if len(pending) >= self.confirm else SPIKE
            pending.clear()  # not the same move: this one starts a new one
        w.moving = False
        w.up = x > median
        pending.append(x)
        last = w.last if w.last is not None else median
        w.step = x - last if x > last else last - x
        return self._confirm(w) if len(pending) >= self.confirm else SPIKE

    def _accepted_in_move(self, w: SpikeWindow, x: float, min_rel: float, floor: float) -> None:
        """The window accepted ``x`` during a pending move: a move not yet confirmed was a
        spike, and is over; a confirmed one goes on while the values keep its direction and
        the window's median has not caught up with them (``x`` beyond ``k`` floors of it)."""
        pending = w.pending
        if w.moving:
            step = x - pending[-1] if w.up else pending[-1] - x
            median = w.median()
            scale = min_rel * (median if median > 0.0 else -median)
            if step >= 0.0 and abs(x - median) > self.k * (scale if scale > floor else floor):
                pending[-1] = x
                if step > 0.0:
                    w.step = step
                return
        pending.clear()
        w.moving = False

    def _confirm(self, w: SpikeWindow) -> int:
        """``confirm`` values agree: the move is real; the window re-bases on them, and the move
        stays confirmed while it goes on."""
        step = w.step
        self.rebase(w, w.pending)
        w.pending.append(w.last)  # the move's last value, for the next one to go on from
        w.step = step
        w.moving = True
        return CONFIRMED

    def rebase(self, w: SpikeWindow, values: list[float]) -> None:
        """Forget the old level: the window becomes ``values`` (padded with the last one up to
        ``min_samples``, so the rule keeps judging right after a jump); pending cleared."""
        values = list(values)
        values += values[-1:] * (self.min_samples - len(values))
        w.values.clear()
        w.ordered.clear()
        w.pending.clear()
        w.moving = False
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
