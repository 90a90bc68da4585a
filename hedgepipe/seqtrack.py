"""Sequence tracking per (src, topic): the one place gaps and resets are decided.

The envelope's ``seq`` counts per (src, topic) from 1 (docs/decisions.md), so any subscriber,
whatever its prefix filter, sees a contiguous run per topic from each source.
"""

from __future__ import annotations

IN_ORDER = 0
WENT_BACK = -1


class SeqTracker:
    def __init__(self) -> None:
        self._last: dict[str, dict[str, int]] = {}

    def observe(self, src: str, topic: str, seq: int) -> int:
        """``IN_ORDER`` (or the first seen), the number of frames missed, or ``WENT_BACK``.

        Going back means the publisher restarted (it counts from 1 again) or a replay; it is
        not a gap, and tracking continues from the new value.
        """
        seqs = self._last.get(src)
        if seqs is None:
            seqs = self._last[src] = {}
        last = seqs.get(topic)
        seqs[topic] = seq
        if last is None or seq == last + 1:
            return IN_ORDER
        return seq - last - 1 if seq > last else WENT_BACK
