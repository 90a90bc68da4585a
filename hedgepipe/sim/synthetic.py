"""The default market: generated here from a seed, needing no files.

BTC and ETH, each with a perpetual, a dated future for every month/quarter expiry, and options
on Fridays-08:00 expiries (two weeklies, two monthlies, two quarterlies from today) on a strike
grid around each forward, priced with Black-76 on a smile. Instrument fields follow Deribit's
current schema (``counter_currency``, ``settlement_currency``, ``tick_size_steps``); the
contract facts (futures: 10 USD BTC / 1 USD ETH contracts, options: 1 coin) are the recorded
ones in ``DERIBIT.0``.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from .book import Book
from .generated import GeneratedMarket, Quoted
from ..clock import expiry_code
from .market import PERPETUAL_EXPIRY_MS, friday_expiries, option_name

START_SPOT = {"BTC": 100_000.0, "ETH": 3_500.0}
FUTURE_FACTS = {"BTC": {"tick_size": 2.5, "perp_tick": 0.5, "contract_size": 10.0, "min_trade_amount": 10.0},
                "ETH": {"tick_size": 0.25, "perp_tick": 0.05, "contract_size": 1.0, "min_trade_amount": 1.0}}
OPTION_MIN_AMOUNT = {"BTC": 0.1, "ETH": 1.0}
OPTION_TICK_STEPS = [{"above_price": 0.005, "tick_size": 0.0005}]
CARRY = 0.08  # annual basis of dated futures over the index
PERP_PREMIUM = 0.0002


def nice_step(raw: float) -> float:
    """The strike step nearest ``raw`` among 1, 2.5, 5 x 10^n (Deribit-like grids)."""
    power = 10.0 ** math.floor(math.log10(raw))
    return min((m * power for m in (1.0, 2.5, 5.0, 10.0)), key=lambda s: abs(s - raw))


def smile(forward: float, strike: float, t_years: float) -> float:
    atm = 0.5 + 0.15 * math.exp(-12.0 * t_years)
    z = math.log(strike / forward) / (atm * math.sqrt(max(t_years, 1e-4)))
    z = min(max(z, -3.0), 3.0)
    return min(max(atm * (1.0 - 0.06 * z + 0.04 * z * z), 0.2), 2.5)


class SyntheticMarket(GeneratedMarket):
    def __init__(self, seed: int | None = None, currencies: tuple[str, ...] = ("BTC", "ETH"),
                 clock_ms: Callable[[], int] | None = None, tick_s: float = 0.1,
                 max_strikes: int = 24, mispricing: float = 0.0):
        super().__init__(seed, clock_ms or (lambda: time.time_ns() // 1_000_000), tick_s,
                         mispricing=mispricing)
        self.max_strikes = max_strikes
        self._next_id = 100_000
        for currency in currencies:
            if currency not in START_SPOT:
                raise ValueError(f"the synthetic market lists BTC and ETH, not {currency!r}")
            self.currencies.append(currency)
            self.spot[currency] = START_SPOT[currency] * math.exp(self.rng.gauss(0.0, 0.02))
            self._list(currency)

    # ---- model hooks -------------------------------------------------------------------------
    def forward(self, spec: dict) -> float:
        spot = self.spot[spec["base_currency"]]
        if spec["expiration_timestamp"] == PERPETUAL_EXPIRY_MS:
            return spot * (1.0 + PERP_PREMIUM)
        return spot * math.exp(CARRY * self.years_to(spec))

    def underlying_index(self, spec: dict) -> str:
        future = f"{spec['base_currency']}-{expiry_code(spec['expiration_timestamp'])}"
        return future if future in self.quoted else "SYN." + future

    # ---- listing -----------------------------------------------------------------------------
    def _list(self, currency: str) -> None:
        expiries = friday_expiries(self.now_ms)
        self._add_future(currency, PERPETUAL_EXPIRY_MS, "perpetual")
        for expiry, period in expiries:
            if period == "month":
                self._add_future(currency, expiry, period)
        for expiry, period in expiries:
            self._add_options(currency, expiry, period)

    def _base_spec(self, currency: str, name: str, kind: str, expiry: int, period: str) -> dict:
        self._next_id += 1
        return {"instrument_name": name, "instrument_id": self._next_id, "kind": kind,
                "base_currency": currency, "counter_currency": "USD", "is_active": True,
                "price_index": f"{currency.lower()}_usd", "expiration_timestamp": expiry,
                "creation_timestamp": min(expiry, self.now_ms) - 60 * 86_400_000,
                "settlement_period": period, "rfq": False, "block_trade_commission": 0.00015}

    def _add_future(self, currency: str, expiry: int, period: str) -> None:
        facts = FUTURE_FACTS[currency]
        perpetual = period == "perpetual"
        name = f"{currency}-PERPETUAL" if perpetual else f"{currency}-{expiry_code(expiry)}"
        spec = self._base_spec(currency, name, "future", expiry, period)
        spec.update(tick_size=facts["perp_tick"] if perpetual else facts["tick_size"], tick_size_steps=[],
                    contract_size=facts["contract_size"], min_trade_amount=facts["min_trade_amount"],
                    quote_currency="USD", settlement_currency=currency, future_type="reversed",
                    instrument_type="reversed", taker_commission=0.0005, maker_commission=0.0,
                    max_leverage=50, max_liquidation_commission=0.0075)
        q = Quoted(spec, Book(name, self.ids), open_interest=float(self.rng.randrange(10**6, 10**8, 10)))
        tick = spec["tick_size"]
        q.bid_shape = self._shape(q, -tick * self.rng.randint(1, 2), -tick, lambda: self.rng.randint(1, 300) * 100.0)
        q.ask_shape = self._shape(q, tick * self.rng.randint(1, 2), tick, lambda: self.rng.randint(1, 300) * 100.0)
        self._price(q)

    def _add_options(self, currency: str, expiry: int, period: str) -> None:
        t_years = max(expiry - self.now_ms, 0) / (365.0 * 86_400_000)
        forward = self.spot[currency] * math.exp(CARRY * t_years)
        step = nice_step(forward * (0.01 if t_years < 30 / 365 else 0.05))
        atm = round(forward / step) * step
        strikes = sorted({atm + i * step for i in range(-self.max_strikes // 2, self.max_strikes // 2 + 1)
                          if atm + i * step > 0})[: self.max_strikes]
        for strike in strikes:
            for is_call in (True, False):
                name = option_name(currency, expiry, strike, is_call)
                spec = self._base_spec(currency, name, "option", expiry, period)
                spec.update(strike=float(strike), option_type="call" if is_call else "put",
                            tick_size=0.0001, tick_size_steps=OPTION_TICK_STEPS, contract_size=1.0,
                            min_trade_amount=OPTION_MIN_AMOUNT[currency], quote_currency=currency,
                            settlement_currency=currency, instrument_type="reversed",
                            taker_commission=0.0003, maker_commission=0.0003, max_leverage=1)
                q = Quoted(spec, Book(name, self.ids), vol=smile(forward, strike, t_years),
                           open_interest=round(self.rng.uniform(0, 2000), 1))
                fair = self.fair(q)
                half = max(0.0005, 0.02 * fair)
                size = lambda: self.lot_size(q, self.rng.choice((0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 25.0)) * 10 * spec["min_trade_amount"])
                q.bid_shape = self._shape(q, -half, -0.0005, size)
                q.ask_shape = self._shape(q, half, 0.0005, size)
                self._price(q)

    def _shape(self, q: Quoted, first: float, unit: float, size: Callable[[], float]) -> list[list[float]]:
        shape, offset = [], first
        for _ in range(self.rng.randint(3, 6)):
            shape.append([offset, self.lot_size(q, size())])
            offset += unit * self.rng.randint(1, 3)
        return shape

    def _price(self, q: Quoted) -> None:
        self.quoted[q.name] = q
        q.mark = self.fair(q)
        q.book.replace(*self.target_levels(q, q.mark), self.now_ms)
