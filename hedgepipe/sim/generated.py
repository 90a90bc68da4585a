"""The moving parts shared by the generated markets (synthetic and chain).

Each listed instrument is ``Quoted``: its instrument dict, its book, a fair value model
(Black-76 on its expiry's forward with its own vol for options; the forward itself for
futures) and a level shape: price offsets from the fair value with sizes. A step moves the
index (a seeded log random walk), re-prices everything, and lets the books follow; a few
sizes are amended and a few trades print so subscribers see every kind of change.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from typing import Callable

from . import black76
from .book import Book, ChangeIds
from .market import INDEX_NAMES, PERPETUAL_EXPIRY_MS, Event, LiveMarket, select_instruments

log = logging.getLogger("hedgepipe.sim")
YEAR_S = 365.0 * 86400.0
OPTION_REPRICE_EVERY = 5


@dataclass
class Quoted:
    spec: dict
    book: Book
    vol: float = 0.0                   # options: own implied vol (fraction)
    bid_shape: list[list[float]] = field(default_factory=list)  # [offset from fair, size]
    ask_shape: list[list[float]] = field(default_factory=list)
    offset: float = 0.0                # injected mispricing, in price units
    mark: float = 0.0
    last_price: float | None = None
    volume: float = 0.0
    open_interest: float = 0.0
    trade_seq: int = 0

    @property
    def name(self) -> str:
        return self.spec["instrument_name"]

    @property
    def is_option(self) -> bool:
        return self.spec["kind"] == "option"


class GeneratedMarket(LiveMarket):
    def __init__(self, seed: int | None, clock_ms: Callable[[], int], tick_s: float,
                 index_vol: float = 0.6, mispricing: float = 0.0):
        self.rng = random.Random(seed)
        self.clock_ms = clock_ms
        self.tick_s = tick_s
        self.index_vol = index_vol
        self.mispricing = mispricing
        self.ids = ChangeIds()
        self.quoted: dict[str, Quoted] = {}
        self.spot: dict[str, float] = {}
        self.currencies: list[str] = []
        self.now_ms = clock_ms()
        self._mispriced: tuple[Quoted, int] | None = None  # (leg, steps left)
        self._trade_ids = 0
        self._steps = 0

    # ---- model hooks (subclasses) -----------------------------------------------------------
    def forward(self, spec: dict) -> float:
        """The forward of this instrument's expiry (the perpetual trades around the index)."""
        raise NotImplementedError

    def underlying_index(self, spec: dict) -> str:
        raise NotImplementedError

    # ---- pricing ------------------------------------------------------------------------------
    def years_to(self, spec: dict) -> float:
        return max(spec["expiration_timestamp"] - self.now_ms, 0) / black76.YEAR_MS

    def fair(self, q: Quoted) -> float:
        spec = q.spec
        if not q.is_option:
            return self.forward(spec)
        return black76.price_inverse(self.forward(spec), spec["strike"], self.years_to(spec), q.vol,
                                     spec["option_type"] == "call")

    def target_levels(self, q: Quoted, fair: float) -> tuple[dict, dict]:
        spec = q.spec
        tick, steps = spec["tick_size"], spec.get("tick_size_steps") or []
        floor = black76.tick_at(0.0, tick, steps) if q.is_option else tick
        bids: dict[float, float] = {}
        asks: dict[float, float] = {}
        for offset, size in q.ask_shape:
            price = max(black76.round_to_tick(fair + q.offset + offset, tick, steps, "up"), floor)
            asks[price] = round(asks.get(price, 0.0) + size, 4)
        best_ask = min(asks) if asks else math.inf
        for offset, size in q.bid_shape:
            price = black76.round_to_tick(fair + q.offset + offset, tick, steps, "down")
            if floor <= price < best_ask:
                bids[price] = round(bids.get(price, 0.0) + size, 4)
        return bids, asks

    # ---- the step ------------------------------------------------------------------------------
    def step(self) -> list[Event]:
        self.now_ms = self.clock_ms()
        rng = self.rng
        shock = self.index_vol * math.sqrt(self.tick_s / YEAR_S)
        for currency in self.currencies:
            self.spot[currency] *= math.exp(shock * rng.gauss(0.0, 1.0) - 0.5 * shock * shock)
        self._amend_sizes()
        self._maybe_mispricing()
        events: list[Event] = [(f"deribit_price_index.{i}", self.index_event(i))
                               for i, c in INDEX_NAMES.items() if c in self.currencies]
        self._steps += 1
        for i, q in enumerate(self.quoted.values()):
            # futures follow every tick; options a fifth of the chain per tick (cheaper, and
            # their ticks are coarse enough that most re-pricings would change nothing)
            if q.spec["expiration_timestamp"] <= self.now_ms or (
                    q.is_option and (i + self._steps) % OPTION_REPRICE_EVERY):
                continue
            q.mark = self.fair(q)
            change = q.book.replace(*self.target_levels(q, q.mark), self.now_ms)
            if change is not None:
                events.append((f"book.{q.name}", change))
        events.extend(self._trades())
        return events

    def _amend_sizes(self) -> None:
        names = list(self.quoted)
        for _ in range(max(1, len(names) // 50)):
            q = self.quoted[self.rng.choice(names)]
            shape = self.rng.choice((q.bid_shape, q.ask_shape))
            if shape:
                level = self.rng.randrange(len(shape))
                shape[level][1] = self.lot_size(q, self.rng.uniform(0.5, 2.0) * shape[level][1])

    def lot_size(self, q: Quoted, amount: float) -> float:
        lot = q.spec["min_trade_amount"]
        return round(max(lot, round(amount / lot) * lot), 4)

    def _trades(self) -> list[Event]:
        events = []
        for _ in range(max(1, len(self.quoted) // 200)):
            q = self.quoted[self.rng.choice(list(self.quoted))]
            direction = self.rng.choice(("buy", "sell"))
            price, amount = q.book.best("asks" if direction == "buy" else "bids")
            if price is None:
                continue
            amount = self.lot_size(q, min(amount, amount * self.rng.uniform(0.05, 0.5)))
            events.append((f"trades.{q.name}", [self._trade(q, direction, price, amount)]))
        return events

    def _trade(self, q: Quoted, direction: str, price: float, amount: float) -> dict:
        self._trade_ids += 1
        q.trade_seq += 1
        q.last_price, q.volume = price, round(q.volume + amount, 4)
        trade = {"trade_seq": q.trade_seq, "trade_id": str(self._trade_ids), "timestamp": self.now_ms,
                 "tick_direction": 0 if direction == "buy" else 2, "price": price,
                 "mark_price": round(q.mark, 8), "instrument_name": q.name,
                 "index_price": round(self.spot[q.spec["base_currency"]], 2),
                 "direction": direction, "amount": amount,
                 "contracts": round(amount / q.spec["contract_size"], 4)}
        if q.is_option:
            trade["iv"] = round(q.vol * 100.0, 2)
        return trade

    def _maybe_mispricing(self) -> None:
        if self._mispriced is not None:
            leg, left = self._mispriced
            if left > 1:
                self._mispriced = (leg, left - 1)
                return
            leg.offset, self._mispriced = 0.0, None
            log.info("mispricing removed", extra={"instrument": leg.name})
        if self.mispricing <= 0 or self.rng.random() > 0.01:
            return
        # legs worth enough that the whole shift shows (not clipped at the minimum price)
        legs = [q for q in self.quoted.values() if q.is_option and self.years_to(q.spec) > 2 / 365
                and q.book.bids and q.book.asks and q.mark > 3 * self.mispricing]
        if not legs:
            return
        leg = self.rng.choice(legs)
        sign = self.rng.choice((-1.0, 1.0))
        leg.offset = sign * self.mispricing
        self._mispriced = (leg, 100)
        log.warning("mispricing injected: %s quoted %s BTC %s fair", leg.name, self.mispricing,
                    "below" if sign < 0 else "above",
                    extra={"instrument": leg.name, "size": self.mispricing, "steps": 100})

    # ---- the Market interface ------------------------------------------------------------------
    def time_ms(self) -> int:
        return self.clock_ms()

    def instruments(self, currency: str, kind: str | None = None, expired: bool = False) -> list[dict]:
        return select_instruments([q.spec for q in self.quoted.values()], currency, kind, expired,
                                  self.now_ms)

    def instrument(self, name: str) -> dict | None:
        q = self.quoted.get(name)
        return q.spec if q else None

    def index_price(self, index_name: str) -> dict | None:
        currency = INDEX_NAMES.get(index_name)
        if currency not in self.spot:
            return None
        price = round(self.spot[currency], 2)
        return {"index_price": price, "estimated_delivery_price": price}

    def index_event(self, index_name: str) -> dict:
        return {"timestamp": self.now_ms, "price": round(self.spot[INDEX_NAMES[index_name]], 2),
                "index_name": index_name}

    def book_snapshot(self, name: str) -> dict:
        return self.quoted[name].book.snapshot(self.now_ms)

    def ticker(self, name: str) -> dict | None:
        q = self.quoted.get(name)
        return None if q is None else self._ticker(q)

    def order_book(self, name: str, depth: int | None) -> dict | None:
        q = self.quoted.get(name)
        if q is None:
            return None
        return {**self._ticker(q), "change_id": q.book.change_id,
                "bids": q.book.levels("bids", depth), "asks": q.book.levels("asks", depth)}

    def _ticker(self, q: Quoted) -> dict:
        spec, spot = q.spec, round(self.spot[q.spec["base_currency"]], 2)
        (bid, bid_amount), (ask, ask_amount) = q.book.best("bids"), q.book.best("asks")
        mark = q.mark or self.fair(q)
        out = {"timestamp": self.now_ms, "state": "open", "instrument_name": q.name,
               "stats": {"volume": q.volume, "price_change": None, "low": None, "high": None},
               "settlement_price": round(mark, 8), "open_interest": q.open_interest,
               "min_price": round(max(mark * 0.9, 0.0001 if q.is_option else 0.0), 4),
               "max_price": round(mark * 1.1 + (0.01 if q.is_option else 0.0), 4),
               "mark_price": round(mark, 8), "last_price": q.last_price, "index_price": spot,
               "estimated_delivery_price": spot, "best_bid_price": bid or 0.0,
               "best_bid_amount": bid_amount, "best_ask_price": ask or 0.0,
               "best_ask_amount": ask_amount}
        if q.is_option:
            forward, t = self.forward(spec), self.years_to(spec)
            is_call = spec["option_type"] == "call"
            out.update(underlying_price=round(forward, 2), underlying_index=self.underlying_index(spec),
                       mark_iv=round(q.vol * 100.0, 2), interest_rate=0.0,
                       greeks=black76.greeks(forward, spec["strike"], t, q.vol, is_call),
                       bid_iv=_iv(bid, forward, spec["strike"], t, is_call),
                       ask_iv=_iv(ask, forward, spec["strike"], t, is_call))
        elif spec["expiration_timestamp"] == PERPETUAL_EXPIRY_MS:
            out.update(current_funding=0.0, funding_8h=round((mark / spot - 1.0) / 3.0, 8),
                       interest_value=0.0)
        return out


def _iv(price: float | None, forward: float, strike: float, t: float, is_call: bool) -> float:
    if not price:
        return 0.0
    vol = black76.implied_vol(price, forward, strike, t, is_call)
    return round(vol * 100.0, 2) if vol is not None else 0.0
