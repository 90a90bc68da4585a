"""store-writer: every frame into the journal, the live state and recent history into Redis.

It takes frames undecoded (``decode_inputs = False``): each one, whatever its type (a type
no daemon knows yet included), is appended raw to the journal (:mod:`hedgepipe.journal`) and
stored in Redis by its topic kind (:mod:`hedgepipe.store.redis_state`): the latest payload
per topic in ``hp:last:<kind>`` and a capped stream ``hp:stream:<kind>``. Only books are
decoded, and only when they carry more than ``book_levels`` levels, to cut them to the top.

With no Redis URL it runs an embedded redis-server on ``{run_dir}/redis.sock``
(:mod:`hedgepipe.store.embedded`), and starts it again if it exits. Redis being down never
stops the journal, and a frame the journal refuses still reaches Redis; the live state is
rebuilt on reconnect. docs/store-writer.md has the key schema, counters and behaviour.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, Literal

import msgspec

from .. import messages
from ..cli import daemon_command
from ..clock import SystemClock
from ..config import DaemonConfig
from ..errors import ConfigError, StorageError
from ..journal import JournalError, JournalWriter
from ..logs import OncePerKind
from ..runtime import Service, Timer
from ..state import redact_url, resolve_url
from ..store.embedded import EmbeddedRedis
from ..store.redis_state import RedisStateWriter, Slot, topic_kind

log = logging.getLogger("hedgepipe.store-writer")

Positive = Annotated[int, msgspec.Meta(ge=1)]
#: Topic kinds whose payload is a Book or extends it (cut to its top levels).
BOOK_KINDS = frozenset(k.encode() for k, t in messages.TOPIC_TYPES.items() if issubclass(t, messages.Book))
_MAX_CACHED_TOPICS = 200_000
#: At stop, how long an embedded server that is being restarted may take to answer.
_STOP_WAIT_FOR_REDIS_S = 5.0


class StoreWriterConfig(DaemonConfig):
    inputs: list[str] = msgspec.field(
        default_factory=lambda: ["feed-deribit", "feed-index", "etl-filter", "strategy-box"])
    #: Redis URL (redis://host:port/db, unix:///path). "" = the embedded server under run_dir.
    #: REDIS_URL in the environment wins; a password only ever comes from there.
    redis_url: str = ""
    #: Books with more levels per side are cut to this many in Redis (the journal keeps all).
    book_levels: Positive = 10
    #: Approximate cap (XADD MAXLEN ~) of each hp:stream:<kind>.
    stream_maxlen: Positive = 10_000
    #: Stream entries kept while Redis is away; the oldest are dropped (counted) beyond it.
    backlog_max: Positive = 200_000
    #: Live-state fields (topics) held in memory to rebuild Redis; new topics beyond are counted.
    max_keys: Positive = 200_000
    #: Topic kinds stored (a Redis hash and stream each); frames of further kinds are counted.
    max_kinds: Positive = 256
    #: Frames per pipeline; a batch this big is flushed at once, else every flush interval.
    batch_max: Positive = 1000
    flush_interval_ms: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20
    #: Connect and read timeout: the longest a dead Redis can hold up the loop per attempt.
    redis_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    #: Reconnect attempts and embedded-server restarts back off from 50 ms, doubling, to this.
    backoff_max_s: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    #: The embedded server's RDB save points ("seconds changes" pairs).
    embedded_save: str = "60 1"
    #: Journal root; "{run_dir}" expands; a relative path must start with it.
    journal_dir: str = "{run_dir}/../journal"
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    #: A journal file is closed (and compressed) past this size, and a new part started.
    rotate_mb: Annotated[float, msgspec.Meta(ge=0.01)] = 256.0
    compress_level: Annotated[int, msgspec.Meta(ge=0, le=9)] = 6
    #: UTC days of journal kept, today included; older day folders are deleted when a new
    #: day begins (and at start). 0 = keep everything.
    retain_days: Annotated[int, msgspec.Meta(ge=0)] = 0
    #: Journal bytes held in memory while the disk refuses writes; beyond, records are dropped
    #: (counted in journal_dropped).
    journal_pending_mb: Annotated[float, msgspec.Meta(ge=1)] = 256.0

    def __post_init__(self):
        # Checked when the settings load, so `hedgepipe check-config` reports them too.
        jd = self.journal_dir
        if not (jd.startswith("{run_dir}") or os.path.isabs(jd)):
            raise ConfigError(f"[store-writer] journal_dir {jd!r}: give an absolute path or one starting "
                              "with {run_dir} (a daemon does not know where its config file is)")
        if self.redis_url:
            try:
                resolve_url("", self.redis_url, {})  # a password, or not a Redis URL: refused
            except ConfigError as exc:
                raise ConfigError(f"[store-writer] {exc}") from None


class StoreWriterService(Service):
    name = "store-writer"
    summary = ("Store every frame: append it to the journal (one file per UTC day and topic "
               "family) and keep the latest value per topic plus capped streams in Redis.")
    Config = StoreWriterConfig
    decode_inputs = False

    def __init__(self, config: StoreWriterConfig, clock=SystemClock()):
        super().__init__(config, clock)
        self.once = OncePerKind(log)
        self.journal: JournalWriter | None = None
        self.store: RedisStateWriter | None = None
        self.embedded: EmbeddedRedis | None = None
        #: topic -> (its Redis slot, is a book), or None for a kind beyond max_kinds.
        self._topics: dict[bytes, tuple[Slot, bool] | None] = {}
        self._kinds: set[bytes] = set()
        self._book_sides = msgspec.msgpack.Decoder(_BookSides)
        self._counts = {"books_trimmed": 0, "books_undecodable": 0, "kinds_dropped": 0,
                        "journal_append_errors": 0, "embedded_restarts": 0}
        self._append = self._store = None
        self._time_ns = clock.time_ns

    # ---- start and stop (the I/O) ---------------------------------------------------------

    def sources(self):
        """Open the journal and Redis: here, not in __init__, and errors end the process."""
        cfg = self.config
        journal_dir = os.path.normpath(cfg.journal_dir.replace("{run_dir}", self.run_dir))
        try:
            self.journal = JournalWriter(
                journal_dir, fsync=cfg.fsync, fsync_interval_s=cfg.fsync_interval_s,
                rotate_bytes=int(cfg.rotate_mb * 2**20), compress_level=cfg.compress_level,
                max_pending_bytes=int(cfg.journal_pending_mb * 2**20), retain_days=cfg.retain_days,
                on_error=lambda kind, detail: self.once(f"journal_{kind}", detail, level=logging.ERROR))
            self.journal.open()
        except JournalError as exc:
            raise StorageError(f"[store-writer] journal: {exc}") from None
        try:
            url, embedded = resolve_url(self.run_dir, cfg.redis_url)
            if embedded:
                self.embedded = EmbeddedRedis(
                    self.run_dir, save=cfg.embedded_save, backoff_min_s=0.05,
                    backoff_max_s=cfg.backoff_max_s, monotonic=self.clock.monotonic, report=self.once)
                self.embedded.start()
        except Exception:
            self.journal.close()
            raise
        self.store = RedisStateWriter(
            url, redacted_url=redact_url(url), stream_maxlen=cfg.stream_maxlen,
            backlog_max=cfg.backlog_max, max_keys=cfg.max_keys, batch_max=cfg.batch_max,
            timeout_s=cfg.redis_timeout_s, backoff_min_s=0.05, backoff_max_s=cfg.backoff_max_s,
            monotonic=self.clock.monotonic, report=self.once,
            client_name=f"store-writer-{os.getpid()}",
            server_ready=self.embedded.ready if self.embedded is not None else None)
        self.store.connect(force=True)
        log.info("storing", extra={"journal": journal_dir, "redis": redact_url(url),
                                   "embedded": embedded, "redis_up": self.store.up})
        self._append = self.journal.append
        self._store = self.store.add
        self._refresh_stats()
        return []

    def on_stop(self):
        # The quick parts first, the compression of the day's files (seconds) last: a stop cut
        # short by SIGKILL then costs only a compression, which the next start does.
        if self.journal is not None:
            self.journal.close(wait=False)  # every record written and fsynced
        if self.store is not None and not self.store.up and self.embedded is not None:
            self.embedded.wait_ready(_STOP_WAIT_FOR_REDIS_S)  # one being restarted takes the last batch
        if self.store is not None:
            self.store.close()  # the last batch (one forced reconnect attempt if down)
        if self.embedded is not None:
            self.embedded.stop()  # after the last batch: SIGTERM, redis saves its RDB
        if self.journal is not None:
            self.journal.wait_compressed()
        self._refresh_stats()
        return ()

    # ---- per frame -------------------------------------------------------------------------

    def on_message(self, topic: bytes, payload: bytes):
        try:
            # False: refused (a topic over 65535 bytes) or dropped (a failing disk), counted
            # and logged by the journal; the frame still goes to Redis.
            self._append(topic, payload, self._time_ns())
        except Exception as exc:  # a journal bug must not cost Redis this frame or the next ones
            self._counts["journal_append_errors"] += 1
            self.once(f"journal_append:{type(exc).__name__}", f"frame not journaled: the journal raised "
                      f"{type(exc).__name__}: {exc}; it is stored in Redis", level=logging.ERROR,
                      exc_info=True, topic=topic[:80].decode(errors="replace"))
        info = self._topics.get(topic)
        if info is None:
            info = self._learn(topic)
            if info is None:
                return ()
        if info[1]:
            payload = self._top_levels(topic, payload)
        self._store(topic, info[0], payload)
        if self.store.unflushed >= self.config.batch_max:
            self.flush()
        return ()

    def _learn(self, topic: bytes) -> tuple[Slot, bool] | None:
        if topic in self._topics:  # a kind beyond max_kinds, already counted once
            self._counts["kinds_dropped"] += 1
            return None
        kind = topic_kind(topic)
        if kind not in self._kinds:
            if len(self._kinds) >= self.config.max_kinds:
                self._counts["kinds_dropped"] += 1
                self.once("kinds_full", f"{self.config.max_kinds} topic kinds stored (max_kinds): a new "
                          "kind is kept in the journal only", topic=topic[:120].decode(errors="replace"))
                if len(self._topics) < _MAX_CACHED_TOPICS:
                    self._topics[topic] = None
                return None
            self._kinds.add(kind)
        info = (self.store.slot(topic), kind in BOOK_KINDS)
        if len(self._topics) < _MAX_CACHED_TOPICS:
            self._topics[topic] = info
        return info

    def _top_levels(self, topic: bytes, payload: bytes) -> bytes:
        """The book cut to ``book_levels`` per side; decoded only when it has more."""
        n = self.config.book_levels
        try:
            sides = self._book_sides.decode(payload)
            deeper = _array_len(sides.bids) > n or _array_len(sides.asks) > n
            if not deeper:
                return payload
            book = messages.decode(topic.decode(), payload)
        except (msgspec.DecodeError, messages.FrameError, UnicodeDecodeError, ValueError) as exc:
            self._counts["books_undecodable"] += 1
            self.once("book_undecodable", f"book not cut to its top levels: it does not decode ({exc}); "
                      "stored as received", topic=topic[:120].decode(errors="replace"))
            return payload
        book.bids = book.bids[:n]
        book.asks = book.asks[:n]
        self._counts["books_trimmed"] += 1
        return messages.encode(book)

    # ---- flushing -------------------------------------------------------------------------------

    def timers(self):
        return [Timer(self.config.flush_interval_ms / 1000, self._on_flush_timer, "flush")]

    def _on_flush_timer(self, now_ns: int):
        self.flush()
        return ()

    def flush(self, wait_for_redis: bool = False) -> None:
        """Hand the journal's buffers to the OS (fsync by policy) and send the Redis batch
        (its replies are read at the next flush, or now with ``wait_for_redis``)."""
        self.journal.tick(self.clock.monotonic(), self.clock.time_ns())
        if self.embedded is not None and self.store.up and not self.embedded.ready():
            # It exited (now being restarted): reconnect and rebuild even if no frame comes.
            self.store.disconnect("the embedded redis-server exited")
        self.store.flush(wait=wait_for_redis)
        self._refresh_stats()

    def _refresh_stats(self) -> None:
        stats = self.stats
        if self.journal is not None:
            stats.update(self.journal.stats.as_dict())
        if self.store is not None:
            stats.update(self.store.stats.as_dict())
        if self.embedded is not None:
            self._counts["embedded_restarts"] = self.embedded.restarts
        stats.update(self._counts)


class _BookSides(msgspec.Struct):
    """A book's two level lists, undecoded: enough to count levels without decoding them."""

    bids: msgspec.Raw
    asks: msgspec.Raw


def _array_len(raw: msgspec.Raw) -> int:
    """The length of a msgpack array from its header; ValueError when it is not an array."""
    data = memoryview(raw)
    head = data[0] if len(data) else 0
    if 0x90 <= head <= 0x9F:
        return head & 0x0F
    if head == 0xDC and len(data) >= 3:
        return int.from_bytes(data[1:3], "big")
    if head == 0xDD and len(data) >= 5:
        return int.from_bytes(data[1:5], "big")
    raise ValueError(f"levels are not a list (msgpack type byte 0x{head:02x})")


main = daemon_command(StoreWriterService)
