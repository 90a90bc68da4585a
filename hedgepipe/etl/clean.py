"""The clean messages etl-filter publishes, built from an md message that passed the rules.

Each copies the md fields, ``ts_event`` and ``ts_recv`` unchanged, and adds ``up_src``/``up_seq``
(the md envelope) and ``ts_clean`` (``now``); ``src``/``seq`` are left for the runtime to stamp.
"""

from __future__ import annotations

import msgspec

from hedgepipe.messages import Book, CleanBook, CleanIndex, CleanInstrument, CleanTicker, CleanTrade

from .derive import mid_iv


def clean_book(msg: Book, fields: tuple, now: int) -> CleanBook:
    """``fields``: (mid, spread, spread_bps, microprice) from :func:`derive.top_fields`."""
    mid, spread, spread_bps, micro = fields
    return CleanBook(venue=msg.venue, instrument=msg.instrument, bids=msg.bids, asks=msg.asks,
                     change_id=msg.change_id, ts_event=msg.ts_event, ts_recv=msg.ts_recv,
                     up_src=msg.src, up_seq=msg.seq, ts_clean=now, mid=mid, spread=spread,
                     spread_bps=spread_bps, microprice=micro)


def stale_book(msg: Book, now: int) -> CleanBook:
    """A stale clean book: no levels, no derived fields (docs/etl-filter.md, "Stale books")."""
    return CleanBook(venue=msg.venue, instrument=msg.instrument, bids=[], asks=[],
                     change_id=msg.change_id, stale=True, ts_event=msg.ts_event,
                     ts_recv=msg.ts_recv, up_src=msg.src, up_seq=msg.seq, ts_clean=now)


def clean_ticker(msg, fields: tuple, now: int) -> CleanTicker:
    # 15 keywords, then attributes: msgspec's constructor is ~4x slower past 15 keyword
    # arguments (3.9 µs against 1.0 µs for a ticker: docs/etl-filter.md, "Speed").
    clean = CleanTicker(
        venue=msg.venue, instrument=msg.instrument, bid=msg.bid, bid_amount=msg.bid_amount,
        ask=msg.ask, ask_amount=msg.ask_amount, last=msg.last, mark_price=msg.mark_price,
        mark_iv=msg.mark_iv, bid_iv=msg.bid_iv, ask_iv=msg.ask_iv,
        underlying_price=msg.underlying_price, underlying_index=msg.underlying_index,
        index_price=msg.index_price, interest_rate=msg.interest_rate)
    clean.open_interest = msg.open_interest
    clean.delta, clean.gamma, clean.vega = msg.delta, msg.gamma, msg.vega
    clean.theta, clean.rho = msg.theta, msg.rho
    clean.ts_event, clean.ts_recv = msg.ts_event, msg.ts_recv
    clean.up_src, clean.up_seq, clean.ts_clean = msg.src, msg.seq, now
    clean.mid, clean.spread, clean.spread_bps, clean.microprice = fields
    clean.mid_iv = mid_iv(msg.bid_iv, msg.ask_iv)
    return clean


def clean_trade(msg, now: int) -> CleanTrade:
    return CleanTrade(venue=msg.venue, instrument=msg.instrument, trade_id=msg.trade_id,
                      price=msg.price, amount=msg.amount, side=msg.side,
                      index_price=msg.index_price, iv=msg.iv, ts_event=msg.ts_event,
                      ts_recv=msg.ts_recv, up_src=msg.src, up_seq=msg.seq, ts_clean=now)


def clean_index(msg, now: int) -> CleanIndex:
    return CleanIndex(venue=msg.venue, name=msg.name, price=msg.price, sources=msg.sources,
                      ts_event=msg.ts_event, ts_recv=msg.ts_recv, up_src=msg.src,
                      up_seq=msg.seq, ts_clean=now)


def clean_instrument(msg, now: int) -> CleanInstrument:
    fields = msgspec.structs.asdict(msg)
    fields.update(src="", seq=0, up_src=msg.src, up_seq=msg.seq, ts_clean=now)
    return CleanInstrument(**fields)
