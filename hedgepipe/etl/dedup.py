"""Duplicates, with bounded memory.

**Frames seen twice** (two relays deliver the same feed; a journal replayed over a live bus): the
key is the md frame's (``src``, topic, ``seq``), and a copy carries the original's stamps
(``ts_recv`` included). Per (``src``, topic) a :class:`SeqWindow` keeps the highest ``seq`` seen,
a bitmask of which of the ``width`` seqs below it were seen, as in IPsec's anti-replay window,
and the newest ``ts_recv`` seen since the publisher (re)started:

- a seq above the highest is NEW (the window slides);
- a seq at or below the highest whose ``ts_recv`` is newer than every frame seen from this
  publisher on this topic is no copy (a copy of a frame published before the highest carries
  that frame's older ``ts_recv``): the publisher restarted and its seq started again (RESET;
  the window starts again from it, the frame passes);
- otherwise, inside the window: NEW if unseen (a slower relay's copy of a frame we missed, or
  a frame overtaken on the way), DUPLICATE if seen;
- otherwise, ``width`` or more below the highest and not newer: BEHIND, an old copy (a relay
  lagging more than ``width`` frames); rejected with the duplicates, since whether it was seen
  can no longer be told and a frame that old was superseded long ago.

Limit: a publisher that restarts with its clock *behind* the ``ts_recv`` of its last frame
before the restart (a restart on another host whose clock is behind by more than the restart
took) cannot be told from a replay of its old frames: its frames up to the old highest seq are
refused (DUPLICATE or BEHIND) until its seq passes the old highest.

**Trades seen twice** (the same trade through two paths, with different ``src``): per instrument
:class:`RecentIds` remembers the last ``capacity`` trade ids (first in, first out).
"""

from __future__ import annotations

NEW = 0
DUPLICATE = 1
RESET = 2
BEHIND = 3


class SeqWindow:
    __slots__ = ("high", "seen", "recv")

    def __init__(self, seq: int, ts_recv: int):
        self.high = seq
        self.seen = 1  # bit i: seq high - i was seen
        self.recv = ts_recv  # the newest ts_recv seen since the publisher (re)started

    def observe(self, seq: int, ts_recv: int, width: int, mask: int) -> int:
        """NEW, DUPLICATE, RESET or BEHIND for the frame (``seq``, ``ts_recv``); ``mask`` is
        ``(1 << width) - 1``."""
        high = self.high
        if seq > high:
            shift = seq - high
            self.seen = ((self.seen << shift) | 1) & mask if shift < width else 1
            self.high = seq
            if ts_recv > self.recv:
                self.recv = ts_recv
            return NEW
        if ts_recv > self.recv:
            self.high = seq
            self.seen = 1
            self.recv = ts_recv
            return RESET
        back = high - seq
        if back >= width:
            return BEHIND
        bit = 1 << back
        if self.seen & bit:
            return DUPLICATE
        self.seen |= bit
        return NEW


class RecentIds:
    __slots__ = ("ids", "capacity")

    def __init__(self, capacity: int):
        self.ids: dict[str, None] = {}  # insertion-ordered: the oldest first
        self.capacity = capacity

    def seen(self, key: str) -> bool:
        """True when ``key`` is among the last ``capacity`` keys added (then not added again)."""
        ids = self.ids
        if key in ids:
            return True
        ids[key] = None
        if len(ids) > self.capacity:
            del ids[next(iter(ids))]
        return False
