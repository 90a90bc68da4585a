"""Every message type on the bus, declared once.

A frame is ``(topic, payload)``: the topic is dot-separated, most general first
(``md.book.deribit.BTC-27DEC26-100000-C``) so SUB prefix filters work; the payload is a
msgpack map of one of the Structs below. The first two topic segments (``md.book``) name the
type, except heartbeats whose first segment (``hb``) does. ``docs/frames.md`` documents
every field.

Decoding validates: a missing or extra field, or a value of the wrong type, raises
:class:`FrameError` (see :func:`decode`), which the runtime counts and logs once per kind.
"""

from __future__ import annotations

from typing import Literal

import msgspec

SCHEMA_VERSION = 1

#: A book level: (price, amount). Option prices are in the base coin (BTC/ETH), future and
#: perpetual prices in USD; amounts in the instrument's own unit (contracts or USD).
Level = tuple[float, float]


class Envelope(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields every payload carries.

    ``src`` and ``seq`` are stamped by the publishing runtime. ``seq`` counts per
    (``src``, topic) starting at 1, so a subscriber with any prefix filter can still detect
    gaps (docs/decisions.md). ``ts_event`` is venue time and ``ts_recv`` local receive time,
    both integer nanoseconds since the Unix epoch.
    """

    v: int = SCHEMA_VERSION
    src: str = ""
    seq: int = 0
    ts_event: int = 0
    ts_recv: int = 0


class Instrument(Envelope):
    venue: str
    name: str
    kind: Literal["option", "future", "perpetual", "spot", "combo"]
    base: str
    quote: str
    settle: str
    tick_size: float
    min_amount: float
    contract_size: float
    inverse: bool
    #: Price-dependent ticks: (above_price, tick_size), ascending; empty when flat.
    tick_steps: list[Level] = []
    expiry_ns: int | None = None
    strike: float | None = None
    option_type: Literal["call", "put"] | None = None
    active: bool = True


class Book(Envelope):
    venue: str
    instrument: str
    bids: list[Level]
    asks: list[Level]
    change_id: int = 0
    #: True while the book is being rebuilt after a gap: never trade on a stale book.
    stale: bool = False


class Ticker(Envelope):
    venue: str
    instrument: str
    bid: float | None = None
    bid_amount: float | None = None
    ask: float | None = None
    ask_amount: float | None = None
    last: float | None = None
    mark_price: float | None = None
    mark_iv: float | None = None
    bid_iv: float | None = None
    ask_iv: float | None = None
    underlying_price: float | None = None
    underlying_index: str | None = None
    index_price: float | None = None
    interest_rate: float | None = None
    open_interest: float | None = None
    delta: float | None = None
    gamma: float | None = None
    vega: float | None = None
    theta: float | None = None
    rho: float | None = None


class Trade(Envelope):
    venue: str
    instrument: str
    trade_id: str
    price: float
    amount: float
    side: Literal["buy", "sell"]
    index_price: float | None = None
    iv: float | None = None


class Index(Envelope):
    venue: str
    #: Deribit index name, e.g. ``btc_usd``.
    name: str
    price: float
    #: How many sources the price was made from (1 for a single venue's index).
    sources: int = 1


class Heartbeat(Envelope):
    name: str
    pid: int
    #: "running", or "draining" in the last heartbeat a daemon sends as it stops.
    state: Literal["running", "draining"]
    uptime_s: float
    counters: dict[str, int]
    #: Latency from each input's ``ts_recv`` to our receipt, over the last interval.
    lag_p50_us: float = 0.0
    lag_p99_us: float = 0.0
    lag_max_us: float = 0.0


# ---- clean.*: what etl-filter publishes (docs/etl-filter.md) ---------------------------------
# Each clean type is its md type plus the audit stamps below (and, for books and tickers, the
# derived fields), so code written for the md type (``isinstance(msg, Book)``) reads it as is.
# The new fields have defaults: a payload of the md type still decodes on a clean.* topic.
# ``src``/``seq`` are etl-filter's own (per-topic, for gap detection); ``ts_event``/``ts_recv``
# are the md frame's, unchanged.


class CleanInstrument(Instrument):
    #: ``src`` and ``seq`` of the md frame this was made from (for audit).
    up_src: str = ""
    up_seq: int = 0
    #: When etl-filter received the md frame, ns since the Unix epoch (its injected clock).
    ts_clean: int = 0


class CleanBook(Book):
    up_src: str = ""
    up_seq: int = 0
    ts_clean: int = 0
    #: (best bid + best ask) / 2; None when a side is empty or the book is stale.
    mid: float | None = None
    #: best ask - best bid, in price units.
    spread: float | None = None
    #: spread / mid * 10_000.
    spread_bps: float | None = None
    #: (bid * ask_amount + ask * bid_amount) / (bid_amount + ask_amount), from the best levels.
    microprice: float | None = None


class CleanTicker(Ticker):
    up_src: str = ""
    up_seq: int = 0
    ts_clean: int = 0
    mid: float | None = None
    spread: float | None = None
    spread_bps: float | None = None
    microprice: float | None = None
    #: (bid_iv + ask_iv) / 2 when both are present and positive.
    mid_iv: float | None = None


class CleanTrade(Trade):
    up_src: str = ""
    up_seq: int = 0
    ts_clean: int = 0


class CleanIndex(Index):
    up_src: str = ""
    up_seq: int = 0
    ts_clean: int = 0


# ---- signal.* and order.*: what strategies publish (docs/strategy-box.md) -----------------------


class SignalLeg(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One order a signal would send: options in contracts at a BTC price, futures in USD."""

    instrument: str
    side: Literal["buy", "sell"]
    #: The price of the quote it would trade (the ask when buying, the bid when selling).
    price: float
    #: Contracts (coin) for options; USD for inverse futures and perpetuals, coin for linear ones.
    amount: float
    kind: Literal["option", "future", "perpetual"] = "option"


class BoxSignal(Envelope, kw_only=True):
    """A box spread, reversal or conversion worth trading: its open, updates and close.

    ``opp_id`` is the same for one structure (venue, expiry, strikes, side) every time it
    appears; ``event`` says where it is in its lifecycle and ``reason`` why it closed.
    Money fields are USD at expiry: ``edge_usd`` per contract after option and hedge fees,
    ``total_usd`` for ``size`` contracts.
    """

    opp_id: str
    event: Literal["open", "update", "close"]
    reason: str = ""
    venue: str
    base: str
    expiry: str
    expiry_ns: int
    structure: Literal["long", "short", "reversal", "conversion"]
    k1: float
    k2: float | None = None
    legs: list[SignalLeg]
    #: The future (or perpetual) order that locks the USD result; None when none is needed.
    hedge: SignalLeg | None = None
    #: True when the hedge is the expiry's own future; False for the perpetual (basis risk).
    hedge_exact: bool = True
    edge_usd: float
    size: float
    total_usd: float
    capital_usd: float
    annual_rate: float | None = None
    t_years: float
    #: The forward the hedge trades at (USD); None for a linear box with no forward known.
    forward: float | None = None
    #: Option fees per contract (option price unit) and the hedge's fee (USD, whole size).
    option_fees: float
    hedge_fee_usd: float
    #: The order.intent group sent for it (--trade), else "".
    group_id: str = ""


class OrderIntent(Envelope, kw_only=True):
    """One order a strategy wants, for risk-gate to approve or deny.

    Intents of one structure share a ``group_id``; ``leg`` is the order to send them in
    (0 first). ``intent_id`` is unique and becomes the venue order label (<= 64 characters).
    """

    intent_id: str
    group_id: str
    group_size: int
    leg: int
    strategy: str
    #: The signal the group comes from.
    opp_id: str = ""
    venue: str
    instrument: str
    side: Literal["buy", "sell"]
    #: Contracts (coin) for options; USD for inverse futures and perpetuals, coin for linear ones.
    amount: float
    price: float
    order_type: Literal["limit", "market"] = "limit"
    time_in_force: Literal["good_til_cancelled", "immediate_or_cancel", "fill_or_kill"] = "immediate_or_cancel"
    post_only: bool = False
    reduce_only: bool = False


#: Topic kind -> payload type.
TOPIC_TYPES: dict[str, type[Envelope]] = {
    "md.instrument": Instrument,
    "md.book": Book,
    "md.ticker": Ticker,
    "md.trade": Trade,
    "md.index": Index,
    "clean.instrument": CleanInstrument,
    "clean.book": CleanBook,
    "clean.ticker": CleanTicker,
    "clean.trade": CleanTrade,
    "clean.index": CleanIndex,
    "signal.box": BoxSignal,
    "order.intent": OrderIntent,
    "hb": Heartbeat,
}

MAX_TOPIC_BYTES = 256
_TOPIC_CHARS = bytes(range(33, 127))  # printable ASCII, no space


def topic_kind(topic: str) -> str:
    """The registry key of a topic: its first two segments, or ``hb``."""
    if topic.startswith("hb.") or topic == "hb":
        return "hb"
    first = topic.find(".")
    if first < 0:
        return topic
    second = topic.find(".", first + 1)
    return topic if second < 0 else topic[:second]


def type_for_topic(topic: str) -> type[Envelope] | None:
    return TOPIC_TYPES.get(topic_kind(topic))


# ---- topic builders: the only place topic strings are spelled -------------------------------

def md_topic(kind: str, venue: str, instrument: str, stage: str = "md") -> str:
    return f"{stage}.{kind}.{venue}.{instrument}"


def signal_topic(kind: str, venue: str, opp_id: str) -> str:
    return f"signal.{kind}.{venue}.{opp_id}"


def intent_topic(venue: str, instrument: str) -> str:
    return f"order.intent.{venue}.{instrument}"


def heartbeat_topic(name: str) -> str:
    return f"hb.{name}"


def topic_bytes(topic: str) -> bytes:
    """A topic as sent, after checking the rules every transport shares.

    Printable ASCII without spaces, 1-256 bytes: a topic that breaks them would travel over a
    socket but be refused as garbage by the next pipe reader, so it is refused here instead.
    """
    raw = topic.encode("ascii", errors="replace")
    if not raw or len(raw) > MAX_TOPIC_BYTES or raw.translate(None, _TOPIC_CHARS):
        raise ValueError(f"topic {topic[:80]!r}: want 1-{MAX_TOPIC_BYTES} printable ASCII "
                         "characters without spaces")
    return raw


# ---- codec ----------------------------------------------------------------------------------

class FrameError(Exception):
    """A frame that cannot be accepted. ``kind`` is the counter it goes to."""

    def __init__(self, kind: str, detail: str, topic: str | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.topic = topic  # as far as it could be read (for logs and displays)


_encoder = msgspec.msgpack.Encoder()
_decoders: dict[type, msgspec.msgpack.Decoder] = {
    t: msgspec.msgpack.Decoder(t) for t in set(TOPIC_TYPES.values())
}


def encode(msg: Envelope) -> bytes:
    return _encoder.encode(msg)


#: topic -> decoder, filled on first sight of each topic (bounded: see decode).
_decoder_by_topic: dict[str, msgspec.msgpack.Decoder] = {}
_MAX_CACHED_TOPICS = 200_000


def decode(topic: str, payload: bytes) -> Envelope:
    """Decode and validate one payload for ``topic``.

    Raises :class:`FrameError` with kind ``unknown_topic`` (no type for the topic),
    ``decode_error`` (not msgpack, or not the declared shape), or ``envelope_error``
    (``src`` or ``seq`` missing, or a schema version other than ours; a payload without
    ``v`` is taken as version 1, the first schema).
    """
    decoder = _decoder_by_topic.get(topic)
    if decoder is None:
        decoder = _decoders.get(TOPIC_TYPES.get(topic_kind(topic)))  # type: ignore[arg-type]
        if decoder is None:
            raise FrameError("unknown_topic", f"no message type for topic {topic!r}")
        if len(_decoder_by_topic) < _MAX_CACHED_TOPICS:
            _decoder_by_topic[topic] = decoder
    try:
        msg = decoder.decode(payload)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise FrameError("decode_error", f"{topic}: {exc}") from None
    if msg.v != SCHEMA_VERSION or not msg.src or msg.seq < 1:
        raise FrameError(
            "envelope_error",
            f"{topic}: envelope v={msg.v} src={msg.src!r} seq={msg.seq} "
            f"(want v={SCHEMA_VERSION}, a src and seq >= 1)",
        )
    return msg


def check_size(topic_b: bytes, payload: bytes, max_bytes: int) -> None:
    if len(payload) > max_bytes:
        raise FrameError("oversized", f"payload of {len(payload)} bytes > max_frame_bytes {max_bytes}",
                         topic_b[:120].decode(errors="replace"))


def decode_frame(topic_b: bytes, payload: bytes, max_bytes: int) -> tuple[str, Envelope]:
    """A received frame checked as every receiver checks it: size, topic, then payload.

    Raises :class:`FrameError` (``oversized``, ``decode_error``, ``unknown_topic``,
    ``envelope_error``) with ``.topic`` set as far as it could be read.
    """
    check_size(topic_b, payload, max_bytes)
    try:
        topic = topic_b.decode()
    except UnicodeDecodeError:
        raise FrameError("decode_error", "topic is not UTF-8", repr(topic_b[:120])) from None
    try:
        return topic, decode(topic, payload)
    except FrameError as exc:
        exc.topic = topic
        raise


class EnvelopeIds(msgspec.Struct):
    """The envelope fields a forwarder reads from a payload it does not decode."""

    src: str = ""
    seq: int = 0
    ts_recv: int = 0


_ids_decoder = msgspec.msgpack.Decoder(EnvelopeIds)


def envelope_ids(payload: bytes) -> EnvelopeIds | None:
    """``src``, ``seq``, ``ts_recv`` of any payload that is a map carrying them; None when it
    is not one (a forwarder passes such a frame on all the same: it does not validate)."""
    try:
        return _ids_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return None


def decode_any(payload: bytes) -> object:
    """Untyped decode, for tools that show whatever arrives. Raises FrameError only."""
    try:
        return msgspec.msgpack.decode(payload)
    except msgspec.DecodeError as exc:
        raise FrameError("decode_error", str(exc)) from None
    except RecursionError:  # absurdly nested input: refuse it like any other bad payload
        raise FrameError("decode_error", "payload nested too deeply") from None


def to_builtins(msg: Envelope) -> dict:
    return msgspec.structs.asdict(msg)
