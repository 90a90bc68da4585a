"""Black-76 on a forward, and the tick rules of Deribit's price grids. Pure math, no numpy.

Deribit's option greeks are quoted in USD terms with a zero interest rate: delta is
dimensionless, gamma per USD, vega per vol point, theta per day, rho per 1 % rate.
Inverse (BTC-settled) option prices are the USD value divided by the forward.
"""

from __future__ import annotations

import math

YEAR_MS = 365.0 * 86_400_000.0
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / _SQRT2))


def norm_pdf(x: float) -> float:
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


def _d1_d2(forward: float, strike: float, t_years: float, vol: float) -> tuple[float, float]:
    sd = vol * math.sqrt(t_years)
    d1 = (math.log(forward / strike) + 0.5 * sd * sd) / sd
    return d1, d1 - sd


def price_usd(forward: float, strike: float, t_years: float, vol: float, is_call: bool) -> float:
    """Undiscounted Black-76 value in quote currency (USD)."""
    if t_years <= 0.0 or vol <= 0.0:
        return max(forward - strike, 0.0) if is_call else max(strike - forward, 0.0)
    d1, d2 = _d1_d2(forward, strike, t_years, vol)
    if is_call:
        return forward * norm_cdf(d1) - strike * norm_cdf(d2)
    return strike * norm_cdf(-d2) - forward * norm_cdf(-d1)


def price_inverse(forward: float, strike: float, t_years: float, vol: float, is_call: bool) -> float:
    """Value in the base coin (BTC/ETH) per contract, as Deribit quotes inverse options."""
    return price_usd(forward, strike, t_years, vol, is_call) / forward


def greeks(forward: float, strike: float, t_years: float, vol: float, is_call: bool) -> dict:
    if t_years <= 0.0 or vol <= 0.0:
        itm = forward > strike if is_call else forward < strike
        delta = (1.0 if is_call else -1.0) if itm else 0.0
        return {"vega": 0.0, "theta": 0.0, "rho": 0.0, "gamma": 0.0, "delta": delta}
    d1, d2 = _d1_d2(forward, strike, t_years, vol)
    sqrt_t = math.sqrt(t_years)
    pdf = norm_pdf(d1)
    delta = norm_cdf(d1) if is_call else norm_cdf(d1) - 1.0
    rho = (strike * t_years * norm_cdf(d2) if is_call else -strike * t_years * norm_cdf(-d2)) / 100.0
    return {"vega": round(forward * pdf * sqrt_t / 100.0, 5),
            "theta": round(-forward * pdf * vol / (2.0 * sqrt_t) / 365.0, 5),
            "rho": round(rho, 5),
            "gamma": round(pdf / (forward * vol * sqrt_t), 5),
            "delta": round(delta, 5)}


def implied_vol(price_coin: float, forward: float, strike: float, t_years: float,
                is_call: bool) -> float | None:
    """Vol (a fraction) that reproduces an inverse price, by bisection; None when out of range."""
    target = price_coin * forward
    lo, hi = 1e-4, 8.0
    if t_years <= 0.0 or not (price_usd(forward, strike, t_years, lo, is_call) < target
                              < price_usd(forward, strike, t_years, hi, is_call)):
        return None
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if price_usd(forward, strike, t_years, mid, is_call) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def tick_at(price: float, tick_size: float, steps: list[dict]) -> float:
    """The tick that applies at ``price``: ``tick_size`` below the first step's ``above_price``."""
    tick = tick_size
    for step in steps:
        if price >= step["above_price"]:
            tick = step["tick_size"]
    return tick


def round_to_tick(price: float, tick_size: float, steps: list[dict], mode: str = "nearest") -> float:
    """Round onto the instrument's grid: ``down`` for bids, ``up`` for asks, ``nearest`` for marks."""
    tick = tick_at(price, tick_size, steps)
    units = price / tick
    if mode == "down":
        n = math.floor(units + 1e-9)
    elif mode == "up":
        n = math.ceil(units - 1e-9)
    else:
        n = round(units)
    rounded = round(n * tick, 10)
    # crossing a step boundary can land on a price the other grid does not allow
    if tick_at(rounded, tick_size, steps) != tick and mode != "nearest":
        return round_to_tick(rounded, tick_size, steps, mode)
    return rounded


def on_tick(price: float, tick_size: float, steps: list[dict]) -> bool:
    tick = tick_at(price, tick_size, steps)
    return abs(price / tick - round(price / tick)) < 1e-6
