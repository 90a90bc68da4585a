"""The instrument universe: which instruments (and indexes) etl-filter lets through.

Static parts, judged when an instrument is announced (``md.instrument``): its currency (base or
settlement currency in ``currencies``) and its kind (in ``kinds``); an empty list allows all.
Dynamic parts, judged on every book, ticker and trade, at the stream's time (its publisher's
watermark, :mod:`.watermark`): the expiry window (days to expiry in [``min_expiry_days``,
``max_expiry_days``], 0 = no limit; past expiry is always outside) and, for options, the
moneyness band (strike / reference price of the base in [``moneyness_min``, ``moneyness_max``],
0 = that side open). The reference is the latest accepted ``*_usd`` index of the base: the
``composite`` source once one was seen, any source before that. Without a reference the band
cannot be judged: the message passes and the daemon counts ``moneyness_unknown``.

Instrument definitions (``md.instrument``) are judged on the static parts only (and refused
once expired), because the dynamic parts move: an instrument outside the expiry window or the
band today may be inside tomorrow, and its data is useless downstream without its definition.
"""

from __future__ import annotations

import math

from hedgepipe.messages import Instrument

NS_PER_DAY = 86_400 * 1_000_000_000
NEVER = 1 << 62          # a time after every expiry (perpetuals, spot)
COMPOSITE = "composite"  # feed-index's combined source


class InstrumentState:
    """What the rules need of one instrument. Filled in place on each announcement
    (:meth:`Universe.judge`), so the daemon's per-topic caches can hold on to it."""

    __slots__ = ("inst", "static_reason", "valid_from", "valid_until", "tick", "steps", "strike",
                 "base")

    def __init__(self):
        self.inst: Instrument | None = None
        #: Why the instrument is outside the universe for good (currency, kind, inactive), or None.
        self.static_reason: str | None = None
        #: Stream times (ns) between which it is inside the expiry window: [from, until).
        self.valid_from = 0
        self.valid_until = NEVER
        self.tick = 0.0
        self.steps: tuple = ()
        self.strike: float | None = None
        self.base = ""


def definition_problem(inst: Instrument) -> str | None:
    """Why an instrument definition is unusable (the tick rule and the band need these), or None."""
    if not 0.0 < inst.tick_size < math.inf:
        return f"tick_size {inst.tick_size!r}"
    last = 0.0
    for above, tick in inst.tick_steps:
        if not (0.0 <= above < math.inf and 0.0 < tick < math.inf) or above < last:
            return f"tick_steps {inst.tick_steps!r:.80}"
        last = above
    if inst.kind == "option" and not (inst.strike is not None and 0.0 < inst.strike < math.inf):
        return f"option strike {inst.strike!r}"
    return None


def index_base(name: str) -> str:
    """``btc_usd`` -> ``BTC``."""
    return name.partition("_")[0].upper()


class Universe:
    def __init__(self, currencies, kinds, min_expiry_days: float, max_expiry_days: float,
                 moneyness_min: float, moneyness_max: float):
        self.currencies = frozenset(c.upper() for c in currencies)
        self.kinds = frozenset(kinds)
        self.min_ns = int(min_expiry_days * NS_PER_DAY)
        self.max_ns = int(max_expiry_days * NS_PER_DAY)
        self.band = moneyness_min > 0.0 or moneyness_max > 0.0
        self.moneyness_min = moneyness_min
        self.moneyness_max = moneyness_max or math.inf
        #: base currency -> reference price (see the module doc); composite_seen: bases whose
        #: reference is the composite (other sources no longer move it).
        self.references: dict[str, float] = {}
        self.composite_seen: set[str] = set()

    def currency_allowed(self, currency: str) -> bool:
        return not self.currencies or currency.upper() in self.currencies

    def judge(self, inst: Instrument, st: InstrumentState | None = None) -> InstrumentState:
        """``st`` (or a new state) filled from an instrument definition (assumed checked by
        :func:`definition_problem`)."""
        st = st or InstrumentState()
        reason = None
        if self.currencies and inst.base.upper() not in self.currencies \
                and inst.settle.upper() not in self.currencies:
            reason = f"currency {inst.base}/{inst.settle} not in {sorted(self.currencies)}"
        elif self.kinds and inst.kind not in self.kinds:
            reason = f"kind {inst.kind} not in {sorted(self.kinds)}"
        elif not inst.active:
            reason = "inactive (retired)"
        st.inst = inst
        st.static_reason = reason
        if inst.expiry_ns is None:
            st.valid_from, st.valid_until = 0, NEVER
        else:
            st.valid_until = inst.expiry_ns - self.min_ns
            st.valid_from = inst.expiry_ns - self.max_ns if self.max_ns else 0
        st.tick = inst.tick_size
        st.steps = tuple(tuple(step) for step in inst.tick_steps)
        st.strike = inst.strike if inst.kind == "option" else None
        st.base = inst.base
        return st

    def outside(self, st: InstrumentState, now: int) -> str | None:
        """Why data of this instrument is outside the universe at stream time ``now``, or None.
        (The moneyness band needs the latest reference: the daemon checks it, on its hot path,
        against ``references``, ``moneyness_min`` and ``moneyness_max``.)"""
        if st.static_reason is not None:
            return st.static_reason
        if now < st.valid_from:
            return "beyond max_expiry_days"
        if now >= st.valid_until:
            return "expired" if now >= (st.inst.expiry_ns or NEVER) else "within min_expiry_days"
        return None

    def note_index(self, source: str, name: str, price: float) -> None:
        """An accepted index price: it may be the new reference of its base (``*_usd`` only:
        strikes are in USD)."""
        if not name.endswith("_usd"):
            return
        base = index_base(name)
        if source == COMPOSITE:
            self.composite_seen.add(base)
        elif base in self.composite_seen:
            return
        self.references[base] = price
