"""``--chain CSV``: a real option chain (one ``get_order_book`` result per row) brought to life.

At start every option is priced with Black-76 on its expiry's forward (the rows' median
``underlying_price``) with its own ``mark_iv``, and its recorded book is kept as a shape: each
level's distance from that price and its size. Then the index walks (seeded) and each expiry's
forward keeps its recorded basis to the index, so the options re-price and their books move
with them, spreads and sizes as recorded. Futures (the real ``underlying_index`` futures of the
chain) and a perpetual are quoted around the forward.

The chain is re-dated by the fewest whole weeks that put its first expiry ahead of the
simulator's clock (still Fridays 08:00 UTC, same weekly spacing); a market built at the
chain's own time (``start_ms``) keeps the recorded names and times.
"""

from __future__ import annotations

import ast
import csv
import logging
import statistics
import time
from pathlib import Path
from typing import Callable

from ..clock import expiry_code
from ..errors import ConfigError
from .book import Book
from .generated import GeneratedMarket, Quoted
from .market import PERPETUAL_EXPIRY_MS, option_name

log = logging.getLogger("hedgepipe.sim")
WEEK_MS = 7 * 86_400_000


def load_chain(path: str | Path) -> list[dict]:
    """Rows of the chain CSV with numbers and the literal dict/list columns parsed."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ConfigError(f"--chain {path}: {exc.strerror or exc}") from exc
    out = []
    for number, row in enumerate(rows, start=2):
        try:
            out.append({"instrument_name": row["instrument_name"], "option_type": row["option_type"],
                        "strike": float(row["strike"]), "expiry": int(row["expiration_timestamp"]),
                        "timestamp": int(row["timestamp"]), "mark_iv": float(row["mark_iv"]),
                        "mark_price": float(row["mark_price"]), "index_price": float(row["index_price"]),
                        "underlying_price": float(row["underlying_price"]),
                        "underlying_index": row["underlying_index"],
                        "open_interest": float(row["open_interest"] or 0.0),
                        "bids": ast.literal_eval(row["bids"]), "asks": ast.literal_eval(row["asks"])})
        except (KeyError, ValueError, SyntaxError) as exc:
            raise ConfigError(f"--chain {path} line {number}: {exc!r}") from exc
    if not out:
        raise ConfigError(f"--chain {path}: no rows")
    return out


class ChainMarket(GeneratedMarket):
    def __init__(self, path: str | Path, seed: int | None = None, clock_ms: Callable[[], int] | None = None,
                 tick_s: float = 0.1, mispricing: float = 0.0, start_ms: int | None = None):
        rows = load_chain(path)
        self.chain_time_ms = int(statistics.median(r["timestamp"] for r in rows))
        if start_ms is not None:
            offset = start_ms - (time.time_ns() // 1_000_000)
            clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000 + offset)
        super().__init__(seed, clock_ms or (lambda: time.time_ns() // 1_000_000), tick_s,
                         mispricing=mispricing)
        # the fewest whole weeks that put the first expiry ahead of the clock
        lag = self.now_ms - min(r["expiry"] for r in rows)
        self.shift_ms = (lag // WEEK_MS + 1) * WEEK_MS if lag >= 0 else 0
        self.currencies = ["BTC"]
        self.spot["BTC"] = statistics.median(r["index_price"] for r in rows)
        self.basis: dict[int, float] = {}     # shifted expiry -> forward / index, as recorded
        self.futures: dict[int, str] = {}     # shifted expiry -> future name (real ones only)
        self._next_id = 200_000
        self._list(rows)
        log.info("chain loaded", extra={"options": len(rows), "expiries": len(self.basis),
                                         "shift_days": self.shift_ms // 86_400_000})

    def forward(self, spec: dict) -> float:
        if spec["expiration_timestamp"] == PERPETUAL_EXPIRY_MS:
            return self.spot["BTC"] * 1.0002
        return self.spot["BTC"] * self.basis[spec["expiration_timestamp"]]

    def underlying_index(self, spec: dict) -> str:
        expiry = spec["expiration_timestamp"]
        return self.futures.get(expiry) or f"SYN.BTC-{expiry_code(expiry)}"

    def _list(self, rows: list[dict]) -> None:
        by_expiry: dict[int, list[dict]] = {}
        for row in rows:
            by_expiry.setdefault(row["expiry"] + self.shift_ms, []).append(row)
        self._add_future(PERPETUAL_EXPIRY_MS, "perpetual")
        for expiry, group in sorted(by_expiry.items()):
            self.basis[expiry] = statistics.median(r["underlying_price"] for r in group) / self.spot["BTC"]
            if not group[0]["underlying_index"].startswith("SYN."):
                self.futures[expiry] = f"BTC-{expiry_code(expiry)}"
                self._add_future(expiry, "month")
        for expiry, group in sorted(by_expiry.items()):
            for row in group:
                self._add_option(row, expiry)

    def _spec(self, name: str, kind: str, expiry: int, period: str) -> dict:
        self._next_id += 1
        return {"instrument_name": name, "instrument_id": self._next_id, "kind": kind,
                "base_currency": "BTC", "counter_currency": "USD", "settlement_currency": "BTC",
                "is_active": True, "price_index": "btc_usd", "expiration_timestamp": expiry,
                "creation_timestamp": min(expiry, self.now_ms) - 60 * 86_400_000,
                "settlement_period": period, "rfq": False, "tick_size_steps": [],
                "instrument_type": "reversed", "block_trade_commission": 0.00015}

    def _add_future(self, expiry: int, period: str) -> None:
        name = "BTC-PERPETUAL" if period == "perpetual" else f"BTC-{expiry_code(expiry)}"
        spec = self._spec(name, "future", expiry, period)
        spec.update(tick_size=0.5, contract_size=10.0, min_trade_amount=10.0, quote_currency="USD",
                    future_type="reversed", taker_commission=0.0005, maker_commission=0.0, max_leverage=50)
        q = Quoted(spec, Book(name, self.ids), open_interest=float(self.rng.randrange(10**6, 10**8, 10)))
        q.bid_shape = [[-0.5 * (1 + 2 * i), self.rng.randint(1, 300) * 100.0] for i in range(6)]
        q.ask_shape = [[0.5 * (1 + 2 * i), self.rng.randint(1, 300) * 100.0] for i in range(6)]
        self._price(q)

    def _add_option(self, row: dict, expiry: int) -> None:
        is_call = row["option_type"] == "call"
        name = option_name("BTC", expiry, row["strike"], is_call)
        spec = self._spec(name, "option", expiry, "week" if expiry not in self.futures else "month")
        spec.update(strike=row["strike"], option_type=row["option_type"], tick_size=0.0005,
                    contract_size=1.0, min_trade_amount=0.1, quote_currency="BTC",
                    taker_commission=0.0003, maker_commission=0.0003, max_leverage=1)
        q = Quoted(spec, Book(name, self.ids), vol=row["mark_iv"] / 100.0,
                   open_interest=row["open_interest"])
        fair = self.fair(q)
        # shapes are anchored on the model's price at start, so the first books are the recorded ones
        q.bid_shape = [[price - fair, amount] for price, amount in row["bids"]]
        q.ask_shape = [[price - fair, amount] for price, amount in row["asks"]]
        self._price(q)

    def _price(self, q: Quoted) -> None:
        self.quoted[q.name] = q
        q.mark = self.fair(q)
        q.book.replace(*self.target_levels(q, q.mark), self.now_ms)
