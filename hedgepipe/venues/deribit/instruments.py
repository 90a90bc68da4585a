"""Deribit instruments: ``public/get_instruments`` items -> :class:`messages.Instrument`, and the
universe filter feed-deribit applies before subscribing. Pure: no I/O.

Two schemas are read. The 2021 one (BTC/ETH in ``DERIBIT.0``) has no ``settlement_currency``,
``counter_currency`` or ``instrument_type``/``future_type``; the newer one (SOL, USDC) has them.
docs/deribit.md lists every rule and unit.
"""

from __future__ import annotations

import dataclasses
import math

import msgspec

from hedgepipe.messages import Instrument

#: Deribit ``kind`` -> our kind. ``future`` becomes ``perpetual`` when settlement_period says so.
_KINDS = {"option": "option", "future": "future", "spot": "spot",
          "future_combo": "combo", "option_combo": "combo"}
_NS_PER_MS = 1_000_000
_NS_PER_MINUTE = 60 * 1_000_000_000
_NS_PER_DAY = 86_400 * 1_000_000_000


class InstrumentError(ValueError):
    """A get_instruments item or body that cannot be read; the message names what and why."""


def _field(raw: dict, key: str, types: tuple[type, ...], name: str):
    value = raw.get(key)
    # bool is an int subclass: a flag where a number belongs is an error, not 0/1.
    if not isinstance(value, types) or isinstance(value, bool):
        raise InstrumentError(f"instrument {name!r}: field {key!r} missing or of the wrong type "
                              f"(got {value!r:.40})")
    if isinstance(value, float) and not math.isfinite(value):
        raise InstrumentError(f"instrument {name!r}: field {key!r} is not finite ({value!r})")
    return value


def _number(raw: dict, key: str, name: str) -> float:
    return float(_field(raw, key, (int, float), name))


def parse_instrument(raw: dict, venue: str = "deribit") -> Instrument:
    """One ``get_instruments`` result item as an :class:`Instrument`. Raises InstrumentError."""
    if not isinstance(raw, dict):
        raise InstrumentError(f"instrument item is not an object: {raw!r:.80}")
    name = raw.get("instrument_name")
    if not isinstance(name, str) or not name:
        raise InstrumentError(f"instrument item without instrument_name: {raw!r:.120}")
    deribit_kind = _field(raw, "kind", (str,), name)
    kind = _KINDS.get(deribit_kind)
    if kind is None:
        raise InstrumentError(f"instrument {name!r}: unknown kind {deribit_kind!r}")
    if kind == "future" and raw.get("settlement_period") == "perpetual":
        kind = "perpetual"
    base = _field(raw, "base_currency", (str,), name)
    quote = _field(raw, "quote_currency", (str,), name)
    settle = raw.get("settlement_currency")
    if settle is None:
        # 2021 schema: BTC/ETH options (priced in the coin) and futures (priced in USD) settle in the coin.
        settle = quote if kind == "spot" else base
    elif not isinstance(settle, str):
        raise InstrumentError(f"instrument {name!r}: settlement_currency {settle!r} is not a string")
    family = raw.get("instrument_type") or raw.get("future_type")  # newer schema: reversed | linear
    if family == "reversed":
        inverse = True
    elif family == "linear":
        inverse = False
    else:
        inverse = kind != "spot" and settle == base
    tick_steps = _tick_steps(raw.get("tick_size_steps"), name)
    expiry_ns = None
    if kind not in ("perpetual", "spot"):
        # Perpetuals carry a placeholder expiry (32503708800000 = 3000-01-01): not an expiry.
        expiry_ns = _field(raw, "expiration_timestamp", (int,), name) * _NS_PER_MS
    strike = option_type = None
    if kind == "option":
        strike = _number(raw, "strike", name)
        option_type = _field(raw, "option_type", (str,), name)
        if option_type not in ("call", "put"):
            raise InstrumentError(f"instrument {name!r}: option_type {option_type!r} is not call|put")
    active = raw.get("is_active", True)
    if not isinstance(active, bool):
        raise InstrumentError(f"instrument {name!r}: is_active {active!r} is not a boolean")
    return Instrument(
        venue=venue, name=name, kind=kind, base=base, quote=quote, settle=settle,
        tick_size=_number(raw, "tick_size", name), min_amount=_number(raw, "min_trade_amount", name),
        contract_size=_number(raw, "contract_size", name), inverse=inverse, tick_steps=tick_steps,
        expiry_ns=expiry_ns, strike=strike, option_type=option_type, active=active)


def _tick_steps(steps, name: str) -> list[tuple[float, float]]:
    """``[{above_price, tick_size}]`` -> ascending ``[(above_price, tick_size)]``."""
    if not steps:
        return []
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise InstrumentError(f"instrument {name!r}: tick_size_steps {steps!r:.80} is not a list of objects")
    return sorted((_number(s, "above_price", name), _number(s, "tick_size", name)) for s in steps)


def parse_get_instruments_body(text: str | bytes) -> list[dict]:
    """The raw items of a ``get_instruments`` JSON-RPC response.

    Takes the response body, or a whole ``DERIBIT.0`` line (``URL -> ts: {json}``). Raises
    InstrumentError for anything else: not JSON, an error response, no ``result`` list.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    body = text.strip()
    if not body.startswith("{"):
        start = body.find(": {")  # DERIBIT.0 line: the body follows the first ': {'
        if " -> " not in body[:max(start, 0)] or start < 0:
            raise InstrumentError(f"not a get_instruments body or DERIBIT.0 line: {body[:80]!r}")
        body = body[start + 2:]
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InstrumentError(f"get_instruments body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InstrumentError("get_instruments body is not a JSON object")
    if "error" in doc:
        raise InstrumentError(f"get_instruments returned an error: {doc['error']!r:.200}")
    result = doc.get("result")
    if not isinstance(result, list):
        raise InstrumentError("get_instruments body has no 'result' list")
    return result


@dataclasses.dataclass
class InstrumentFilter:
    """Which instruments feed-deribit subscribes to.

    ``currencies`` match the base or the settlement currency (``BTC`` keeps BTC inverse and
    BTC_USDC linear instruments; ``USDC`` keeps everything settled in USDC). Expired instruments
    are always dropped; ``min_expiry_minutes`` also drops those about to expire;
    ``max_expiry_days`` (None = no limit) drops far expiries. ``strike_band`` keeps options whose
    strike is within [F/(1+band), F*(1+band)] of the reference price F of their base currency.
    """

    currencies: list[str]
    kinds: list[str] = dataclasses.field(
        default_factory=lambda: ["option", "future", "perpetual"])
    max_expiry_days: float | None = None
    min_expiry_minutes: float = 0.0
    strike_band: float | None = None
    include_inactive: bool = False

    def drop_reason(self, inst: Instrument, now_ns: int,
                    reference_prices: dict[str, float]) -> str | None:
        """Why ``inst`` is left out, or None to keep it."""
        if inst.base not in self.currencies and inst.settle not in self.currencies:
            return "currency"
        if inst.kind not in self.kinds:
            return "kind"
        if not inst.active and not self.include_inactive:
            return "inactive"
        if inst.expiry_ns is not None:
            left_ns = inst.expiry_ns - now_ns
            if left_ns <= 0:
                return "expired"
            if left_ns < self.min_expiry_minutes * _NS_PER_MINUTE:
                return "expiring_soon"
            if self.max_expiry_days is not None and left_ns > self.max_expiry_days * _NS_PER_DAY:
                return "beyond_max_expiry"
        if self.strike_band is not None and inst.kind == "option":
            ref = reference_prices.get(inst.base)
            if not ref or ref <= 0:
                # Without F the band cannot be applied; dropping keeps the universe bounded and
                # the count makes the missing price visible.
                return "no_reference_price"
            k = inst.strike or 0.0
            if not ref / (1.0 + self.strike_band) <= k <= ref * (1.0 + self.strike_band):
                return "strike_band"
        return None

    def select(self, instruments, now_ns: int, reference_prices: dict[str, float] | None = None
               ) -> tuple[list[Instrument], dict[str, int]]:
        """(kept instruments in input order, {drop reason: count})."""
        refs = reference_prices or {}
        kept: list[Instrument] = []
        dropped: dict[str, int] = {}
        for inst in instruments:
            reason = self.drop_reason(inst, now_ns, refs)
            if reason is None:
                kept.append(inst)
            else:
                dropped[reason] = dropped.get(reason, 0) + 1
        return kept, dropped
