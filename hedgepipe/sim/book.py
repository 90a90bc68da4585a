"""One instrument's order book as Deribit publishes it: a snapshot, then diffs by change id.

The market decides what the levels should be; ``Book.replace`` works out the ``new`` /
``change`` / ``delete`` actions that take a subscriber from the old levels to the new ones,
and moves the change id on only when something changed.
"""

from __future__ import annotations


class ChangeIds:
    """Change ids for a whole market: increasing, shared by all books, so one instrument's ids
    have gaps like Deribit's and only ``prev_change_id`` tells a subscriber it missed one."""

    def __init__(self, start: int = 10_000_000_000):
        self._last = start

    def next(self) -> int:
        self._last += 1
        return self._last


class Book:
    def __init__(self, instrument_name: str, ids: ChangeIds):
        self.instrument_name = instrument_name
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.change_id = ids.next()
        self._ids = ids

    def levels(self, side: str, depth: int | None = None) -> list[list[float]]:
        """Best first, as ``[[price, amount], ...]`` (the ``get_order_book`` form)."""
        book = self.bids if side == "bids" else self.asks
        prices = sorted(book, reverse=side == "bids")[:depth]
        return [[p, book[p]] for p in prices]

    def best(self, side: str) -> tuple[float | None, float]:
        top = self.levels(side, 1)
        return (top[0][0], top[0][1]) if top else (None, 0.0)

    def snapshot(self, timestamp: int) -> dict:
        return {"type": "snapshot", "timestamp": timestamp, "instrument_name": self.instrument_name,
                "change_id": self.change_id,
                "bids": [["new", p, a] for p, a in self.levels("bids")],
                "asks": [["new", p, a] for p, a in self.levels("asks")]}

    def replace(self, bids: dict[float, float], asks: dict[float, float], timestamp: int) -> dict | None:
        """Move to these levels; return the ``change`` message, or None when nothing changed."""
        bid_actions = _diff(self.bids, bids, reverse=True)
        ask_actions = _diff(self.asks, asks, reverse=False)
        if not bid_actions and not ask_actions:
            return None
        self.bids, self.asks = dict(bids), dict(asks)
        prev, self.change_id = self.change_id, self._ids.next()
        return {"type": "change", "timestamp": timestamp, "prev_change_id": prev,
                "instrument_name": self.instrument_name, "change_id": self.change_id,
                "bids": bid_actions, "asks": ask_actions}


def _diff(old: dict[float, float], new: dict[float, float], reverse: bool) -> list[list]:
    actions = []
    for price in sorted(old.keys() | new.keys(), reverse=reverse):
        if price not in new:
            actions.append(["delete", price, 0.0])
        elif price not in old:
            actions.append(["new", price, new[price]])
        elif old[price] != new[price]:
            actions.append(["change", price, new[price]])
    return actions


def apply_levels(book: dict[float, float], actions: list[list]) -> None:
    """Apply ``[action, price, amount]`` levels to a price -> amount dict (a client's view)."""
    for action, price, amount in actions:
        if action == "delete":
            book.pop(price, None)
        else:
            book[price] = amount

