"""The benchmark's message: a realistic ``md.book`` of a Deribit option, 10 levels a side.

``change_id`` carries the benchmark's own sequence: 1..N for measured messages, and two
markers the sink acts on. Hops pass it through untouched, like any other field.
"""

from __future__ import annotations

from hedgepipe import messages
from hedgepipe.messages import Book

#: change_id of a frame sent while the chain is still connecting (the sink discards it).
WARMUP = 0
#: change_id of the frame that ends a run.
END = -1
TOPIC_PREFIX = "md.book."
SRC = "bench-gen"

# A slice of a real BTC chain: one expiry, calls and puts around the forward.
_EXPIRY = "27DEC26"
_STRIKES = (80_000, 90_000, 100_000, 110_000, 120_000, 140_000, 160_000, 200_000)


def instrument_names() -> list[str]:
    return [f"BTC-{_EXPIRY}-{k}-{cp}" for k in _STRIKES for cp in ("C", "P")]


def _levels(mid: float, side: int, seed: int) -> list[tuple[float, float]]:
    """Ten levels on the 0.0005 BTC option tick, amounts in contracts (0.1 lots)."""
    tick = 0.0005
    out = []
    for i in range(10):
        price = round(mid + side * tick * (i + 1), 4)
        amount = round(0.1 * (1 + (seed * 7 + i * 13) % 250), 1)
        out.append((price, amount))
    return out


def make_books() -> list[tuple[bytes, Book]]:
    """One (topic bytes, Book) per instrument; the generator restamps and re-encodes them."""
    books = []
    for n, name in enumerate(instrument_names()):
        mid = 0.0125 + 0.0005 * (n % 40) * 3
        book = Book(venue="deribit", instrument=name, bids=_levels(mid, -1, n),
                    asks=_levels(mid, +1, n), change_id=WARMUP, src=SRC)
        books.append(((TOPIC_PREFIX + "deribit." + name).encode(), book))
    return books


def encoded_size() -> int:
    topic, book = make_books()[0]
    book.seq, book.ts_event, book.ts_recv = 1, 1_700_000_000_000_000_000, 1_700_000_000_000_000_000
    book.change_id = 1_000_000
    return len(messages.encode(book))
