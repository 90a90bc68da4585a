"""Builders of valid and invalid frames for tests."""

from __future__ import annotations

import msgspec

from hedgepipe import messages as m

TOPIC = "md.book.deribit.BTC-27DEC26-100000-C"


def book(seq: int, src: str = "gen", instrument: str = "BTC-27DEC26-100000-C", **kw) -> m.Book:
    fields = dict(venue="deribit", instrument=instrument, bids=[(0.05, 1.0), (0.0495, 2.0)],
                  asks=[(0.0505, 1.5)], change_id=1000 + seq, src=src, seq=seq,
                  ts_event=1_700_000_000_000_000_000 + seq, ts_recv=1_700_000_000_000_000_100 + seq)
    fields.update(kw)
    return m.Book(**fields)


def book_payload(seq: int, **kw) -> bytes:
    return m.encode(book(seq, **kw))


def raw_map(**fields) -> bytes:
    """A payload built field by field, to make shapes msgspec would refuse to encode."""
    return msgspec.msgpack.encode(fields)


def valid_book_fields(seq: int = 1) -> dict:
    return msgspec.structs.asdict(book(seq))
