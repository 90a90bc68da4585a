"""etl-filter's clock: one watermark per upstream publisher (``src``), from the stream's stamps.

Why per ``src``: ``ts_recv`` is stamped by the publisher's host when it received the data, so
the ``ts_recv`` of one ``src`` are one clock, and those of two ``src`` (feed-deribit, feed-index
on another host) are two clocks that need not agree. A frame is judged against its own
publisher's clock only.

The watermark (``SourceClock.mark``) follows the publisher's ``ts_recv`` forward. A frame whose
``ts_recv`` is within ``jump_ns`` of the mark agrees with it (and moves it forward when later):
the hot path, inlined by the daemon. A frame further off, ahead or behind, is one frame's word
against the mark's: it joins a *run* of such frames, and the mark moves to the run's newest
``ts_recv`` only once ``confirm`` consecutive frames agree that the clock moved (same side of the
mark, none more than ``jump_ns`` before the run's newest). A frame that agrees with the mark
again ends the run: a run ahead of the mark that ended so was a bad stamp (``outliers`` counts
its frames). A run behind the mark that moves it is a clock that went back (``resets``). A run
ahead that moves it is the clock catching up after a quiet spell (nothing counted); that is also
how the mark is first set, so a bad first stamp cannot set it.

A frame is judged at :meth:`Watermarks.time_of`'s answer: the mark as the frame found it, or
the frame's own ``ts_recv`` when that is later. So a frame behind is judged against the mark
(never passed as fresh because it is far behind), and a frame ahead is judged on its own stamps
without moving the mark for the others: one bad stamp can neither blank the stream nor pass
old data.
"""

from __future__ import annotations


class SourceClock:
    """One publisher's watermark and the run of frames that disagree with it."""

    __slots__ = ("mark", "run", "run_high")

    def __init__(self):
        self.mark = 0       # ns; 0 until ``confirm`` frames agreed on a time
        self.run = 0        # consecutive frames off the mark that agree with each other
        self.run_high = 0   # the newest ts_recv of the run


class Watermarks:
    """The rule of the per-``src`` clocks, and what it counted."""

    def __init__(self, jump_ns: int, confirm: int):
        if jump_ns <= 0 or confirm < 1:
            raise ValueError("watermarks: jump_ns > 0 and confirm >= 1")
        self.jump_ns = jump_ns
        self.confirm = confirm
        #: runs behind the mark that moved it back (a publisher's clock that went back)
        self.resets = 0
        #: frames ahead of the mark that no run confirmed (bad stamps)
        self.outliers = 0

    def end_run(self, clock: SourceClock) -> None:
        """A frame agreed with the mark: the run was not the clock moving."""
        if clock.run_high > clock.mark:
            self.outliers += clock.run
        clock.run = 0

    def time_of(self, clock: SourceClock, ts_recv: int) -> int:
        """A frame's ``ts_recv`` seen by its publisher's clock: the time to judge the frame at
        (the mark, or ``ts_recv`` when later). The daemon inlines the usual case (within
        ``jump_ns`` of the mark, no run); this is the whole rule."""
        mark = clock.mark
        jump = self.jump_ns
        if mark - jump <= ts_recv <= mark + jump:  # agrees with the mark
            if clock.run:
                self.end_run(clock)
            if ts_recv > mark:
                clock.mark = ts_recv
                return ts_recv
            return mark
        if not ts_recv:  # no receipt stamp: judged at the mark, evidence of nothing
            return mark
        ahead = ts_recv > mark
        if clock.run and (clock.run_high > mark) == ahead and ts_recv >= clock.run_high - jump:
            clock.run += 1
            if ts_recv > clock.run_high:
                clock.run_high = ts_recv
        else:
            if clock.run:
                self.end_run(clock)
            clock.run, clock.run_high = 1, ts_recv
        if clock.run >= self.confirm:  # the clock moved: the mark follows, after this frame
            if not ahead:
                self.resets += 1
            clock.mark = clock.run_high
            clock.run = 0
        return ts_recv if ahead else mark
