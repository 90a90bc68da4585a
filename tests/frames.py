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


# ---- md.* builders for etl-filter tests ------------------------------------------------------
# Times are ns; T0 is the stream's start. Each builder takes the envelope (src, seq, ts_*) as
# keywords too, so a test can say exactly what the filter sees.

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
DAY = 86_400 * 1_000_000_000
OPTION = "BTC-27DEC26-100000-C"
FUTURE = "BTC-27DEC26"


def md(kind: str, name: str, venue: str = "deribit") -> str:
    return m.md_topic(kind, venue, name)


def instrument(name: str = OPTION, seq: int = 1, **kw) -> m.Instrument:
    """A Deribit instrument: an option when the name has a strike, else a future (USD ticks)."""
    parts = name.split("-")
    option = len(parts) == 4
    fields = dict(venue="deribit", name=name, kind="option" if option else "future",
                  base=parts[0], quote="USD", settle=parts[0],
                  tick_size=0.0005 if option else 0.5, min_amount=0.1 if option else 10.0,
                  contract_size=1.0 if option else 10.0, inverse=True,
                  expiry_ns=T0 + 30 * DAY, strike=float(parts[2]) if option else None,
                  option_type=("call" if parts[3] == "C" else "put") if option else None,
                  src="feed-deribit", seq=seq, ts_event=T0, ts_recv=T0)
    fields.update(kw)
    return m.Instrument(**fields)


def md_book(seq: int, bids, asks, name: str = OPTION, t: int = 0, **kw) -> m.Book:
    """A book at T0 + t ns (ts_event = ts_recv - 1 ms)."""
    fields = dict(venue="deribit", instrument=name, bids=bids, asks=asks, change_id=seq,
                  src="feed-deribit", seq=seq, ts_event=T0 + t - MS, ts_recv=T0 + t)
    fields.update(kw)
    return m.Book(**fields)


def md_ticker(seq: int, bid=0.05, ask=0.051, name: str = OPTION, t: int = 0, **kw) -> m.Ticker:
    fields = dict(venue="deribit", instrument=name, bid=bid, bid_amount=10.0, ask=ask,
                  ask_amount=5.0, mark_price=0.0505, mark_iv=60.0, bid_iv=59.0, ask_iv=61.0,
                  underlying_price=65000.0, index_price=64990.0, delta=0.5,
                  src="feed-deribit", seq=seq, ts_event=T0 + t - MS, ts_recv=T0 + t)
    fields.update(kw)
    return m.Ticker(**fields)


def md_trade(seq: int, price: float = 0.05, name: str = OPTION, t: int = 0, **kw) -> m.Trade:
    fields = dict(venue="deribit", instrument=name, trade_id=f"T{seq}", price=price, amount=1.0,
                  side="buy", src="feed-deribit", seq=seq, ts_event=T0 + t - MS, ts_recv=T0 + t)
    fields.update(kw)
    return m.Trade(**fields)


def md_index(seq: int, price: float, source: str = "deribit", name: str = "btc_usd", t: int = 0,
             **kw) -> m.Index:
    fields = dict(venue=source, name=name, price=price, src="feed-index", seq=seq,
                  ts_event=T0 + t - MS, ts_recv=T0 + t)
    fields.update(kw)
    return m.Index(**fields)


# ---- strategy-box: a five-strike BTC chain (tests/test_strategy_box*.py) -------------------------

BOX_PREFIX = "BTC-27DEC26"
#: Strike -> (call mid, put mid) in BTC: Black-76 at F = 100000, vol 0.5, 30/365 years, rounded to
#: the 0.0005 tick. Put-call parity holds exactly on these mids (C - P = 1 - K/F: 0.1, 0.05, 0,
#: -0.05, -0.1), so the chain quoted at its mids against a forward of 100000 has no edge at all.
BOX_MIDS = {90000: (0.1185, 0.0185), 95000: (0.084, 0.034), 100000: (0.057, 0.057),
            105000: (0.037, 0.087), 110000: (0.023, 0.123)}


def box_option(strike: int, cp: str, prefix: str = BOX_PREFIX) -> str:
    return f"{prefix}-{strike}-{cp}"


def box_instruments(prefix: str = BOX_PREFIX, future: bool = True, perpetual: bool = False,
                    **option_fields) -> list:
    """md.instrument frames of a BOX_MIDS chain: the expiry's future (named ``prefix``) when
    ``future``, the perpetual when ``perpetual``, then every call and put. ``option_fields``
    override the options' fields (expiry_ns, or the fields of a linear chain); the future gets
    the same expiry_ns."""
    base = prefix.split("-")[0].split("_")[0]
    frames = []
    if future:
        expiry = {"expiry_ns": option_fields["expiry_ns"]} if "expiry_ns" in option_fields else {}
        frames.append((md("instrument", prefix), instrument(prefix, base=base, settle=base, **expiry)))
    if perpetual:
        name = f"{base}-PERPETUAL"
        frames.append((md("instrument", name), instrument(name, kind="perpetual", base=base, settle=base,
                                                          expiry_ns=None)))
    for strike in BOX_MIDS:
        for cp in "CP":
            name = box_option(strike, cp, prefix)
            frames.append((md("instrument", name), instrument(name, **{"base": base, **option_fields})))
    return frames


def box_books(prefix: str = BOX_PREFIX, over: dict | None = None, half_spread: float = 0.0005,
              bid_amount: float = 5.0, ask_amount: float = 3.0, unit: float = 1.0, t: int = 0,
              seq: int = 1) -> list:
    """md.book frames quoting every option of the chain at its mid -/+ ``half_spread``, prices
    times ``unit`` (100000 for a USD-priced linear chain). ``over``: instrument name ->
    (bid, bid amount, ask, ask amount) used instead for that instrument."""
    over = over or {}
    frames = []
    for strike, mids in BOX_MIDS.items():
        for cp, mid in zip("CP", mids):
            name = box_option(strike, cp, prefix)
            bid, bid_amt, ask, ask_amt = over.get(name, (round((mid - half_spread) * unit, 10), bid_amount,
                                                         round((mid + half_spread) * unit, 10), ask_amount))
            frames.append((md("book", name), md_book(seq, [(bid, bid_amt)], [(ask, ask_amt)], name=name, t=t)))
    return frames


def future_book(bid: float, ask: float, name: str = BOX_PREFIX, t: int = 0, seq: int = 1,
                amount: float = 100_000.0, **kw) -> tuple:
    """An md.book frame of a future or perpetual (USD prices, USD amounts)."""
    return md("book", name), md_book(seq, [(bid, amount)], [(ask, amount)], name=name, t=t, **kw)
