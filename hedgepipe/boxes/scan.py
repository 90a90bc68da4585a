"""``strategy-box --scan-chain CSV``: every box of a recorded chain, priced offline.

The chain file is the format of ``btc_option_chain_2020-05-21.csv`` (one Deribit
``get_order_book`` result per row). The conventions are fixed (docs/strategy-box-arithmetic.md): top of
book only; a missing or zero price means a box using it is not evaluated; an expiry's
forward is the median of its rows' ``underlying_price`` (both for buying and selling it);
only strikes with a call and a put row count; the hedge fee is ``future_taker`` of the
hedge's notional. Time to expiry is measured from the newest row's ``timestamp``.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from typing import IO, Iterator

import numpy as np

from ..errors import DataError, InputMissing
from .chain import CALL, LONG, PUT, SHORT, ChainKey, ExpiryChain
from .detail import describe
from .fees import FeeSchedule

_COLUMNS = ("instrument_name", "option_type", "strike", "expiration_timestamp", "underlying_price",
            "timestamp", "best_bid_price", "best_bid_amount", "best_ask_price", "best_ask_amount")


def _number(row: dict, column: str, line: int, path: str) -> float | None:
    text = (row.get(column) or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path} line {line}: {column} {text!r} is not a number") from None


def load_chains(path: str, *, lot: float = 0.1, fees: FeeSchedule = FeeSchedule()) -> tuple[list[ExpiryChain], int]:
    """The file's expiries as chains (oldest expiry first), and the file's time (ns)."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: not an option chain file (no column {', '.join(missing)})")
            rows = [(reader.line_num, row) for row in reader]  # the line each record ends on
    except OSError as exc:
        raise InputMissing(f"--scan-chain {path}: {exc.strerror or exc}") from None
    by_expiry: dict[int, list[tuple[int, dict]]] = defaultdict(list)
    newest_ms = 0
    for line, row in rows:
        expiry = _number(row, "expiration_timestamp", line, path)
        stamp = _number(row, "timestamp", line, path)
        if expiry is None or row["option_type"] not in ("call", "put"):
            raise DataError(f"{path} line {line}: want an expiration_timestamp and option_type call or put")
        by_expiry[int(expiry)].append((line, row))
        newest_ms = max(newest_ms, int(stamp or 0))
    chains = [_chain(path, expiry_ms, group, lot, fees) for expiry_ms, group in sorted(by_expiry.items())]
    return chains, newest_ms * 1_000_000


def _chain(path: str, expiry_ms: int, rows: list[tuple[int, dict]], lot: float, fees: FeeSchedule) -> ExpiryChain:
    underlying = [u for line, row in rows if (u := _number(row, "underlying_price", line, path))]
    chain = ExpiryChain(ChainKey("deribit", "BTC", "BTC", expiry_ms * 1_000_000), lot=lot, fees=fees)
    chain.forward_ask = chain.forward_bid = statistics.median(underlying) if underlying else float("nan")
    by_strike: dict[float, dict[int, tuple[int, dict]]] = defaultdict(dict)
    for line, row in rows:
        strike = _number(row, "strike", line, path)
        if strike is None or strike <= 0:
            raise DataError(f"{path} line {line}: strike {row.get('strike')!r} is not a positive number")
        option = CALL if row["option_type"] == "call" else PUT
        if option in by_strike[strike]:
            raise DataError(f"{path} line {line}: a second {row['option_type']} row for strike {strike:g} "
                            f"(first on line {by_strike[strike][option][0]})")
        by_strike[strike][option] = (line, row)
    for strike, sides in sorted(by_strike.items()):
        if len(sides) < 2:
            continue  # a strike needs both a call and a put
        for option, (line, row) in sides.items():
            k = chain.add(strike, option, row["instrument_name"])
            chain.set_quote(k, option, _number(row, "best_bid_price", line, path),
                            _number(row, "best_bid_amount", line, path),
                            _number(row, "best_ask_price", line, path),
                            _number(row, "best_ask_amount", line, path), 1)
    return chain


def scan(chains: list[ExpiryChain], now_ns: int, hedge_rate: float, min_edge: float,
         every: bool) -> Iterator[dict]:
    """One dict per evaluated box (``every``) or per box with edge >= min_edge."""
    for chain in chains:
        i, j = chain.all_pairs()
        for side in (LONG, SHORT):
            ev = chain.boxes(side, i, j, hedge_rate)
            keep = ~np.isnan(ev.edge) if every else ev.edge >= min_edge
            for n in np.flatnonzero(keep):
                yield _row(chain, describe(chain, side, int(i[n]), int(j[n]), hedge_rate, now_ns))


def _row(chain: ExpiryChain, s) -> dict:
    return {"expiry": chain.code, "k1": s.k1, "k2": s.k2, "side": s.side, "edge_usd": round(s.edge_usd, 6),
            "size": round(s.size, 6), "forward": round(chain.forward_ask, 6), "premium_btc": round(s.premium, 10),
            "option_fees_btc": round(s.option_fees, 10), "hedge_btc": round(s.hedge_btc, 10),
            "hedge_usd": round(s.hedge_usd, 6), "hedge_fee_usd": round(s.hedge_fee_usd, 6),
            "total_usd": round(s.total_usd, 6),
            "annual_rate": None if s.annual_rate is None else round(s.annual_rate, 6),
            "days": round(s.t_years * 365.0, 4),
            "legs": [[leg.instrument, leg.side, leg.price, leg.displayed] for leg in s.legs]}


def write_scan(path: str, out: IO[str], *, min_edge: float = 0.0, every: bool = False, lot: float = 0.1,
               fees: FeeSchedule = FeeSchedule()) -> int:
    """Print the scan as JSON lines; returns how many lines."""
    chains, now_ns = load_chains(path, lot=lot, fees=fees)
    count = 0
    for row in scan(chains, now_ns, fees.future_taker, min_edge, every):
        out.write(json.dumps(row, separators=(",", ":")) + "\n")
        count += 1
    return count
