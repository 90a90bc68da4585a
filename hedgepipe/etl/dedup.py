"""Duplicates, with bounded memory.

**Frames seen twice** (two relays deliver the same feed; a journal replayed over a live bus): the
key is the md frame's (``src``, topic, ``seq``). Per (``src``, topic) a :class:`SeqWindow` keeps
the highest ``seq`` seen and a bitmask of which of the ``width`` seqs below it were seen, as in
IPsec's anti-replay window: a frame is new when its seq is above the highest or an unseen one
inside the window (a slower relay's copy arriving late is recognised as long as it is less than
``width`` frames behind). A seq ``width`` or more below the highest cannot be told apart from
a restarted publisher (whose seq starts at 1 again): it is taken as a restart (RESET), the window
starts again from it, and the frame passes.

**Trades seen twice** (the same trade through two paths, with different ``src``): per instrument
:class:`RecentIds` remembers the last ``capacity`` trade ids (first in, first out).
"""

from __future__ import annotations

NEW = 0
DUPLICATE = 1
RESET = 2


class SeqWindow:
    __slots__ = ("high", "seen")

    def __init__(self, seq: int):
        self.high = seq
        self.seen = 1  # bit i: seq high - i was seen

    def observe(self, seq: int, width: int, mask: int) -> int:
        """NEW, DUPLICATE or RESET for ``seq``; ``mask`` is ``(1 << width) - 1``."""
        high = self.high
        if seq > high:
            shift = seq - high
            self.seen = ((self.seen << shift) | 1) & mask if shift < width else 1
            self.high = seq
            return NEW
        back = high - seq
        if back >= width:
            self.high = seq
            self.seen = 1
            return RESET
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
