"""The Redis key schema and the batched, pipelined writer behind store-writer.

Key schema (docs/store-writer.md):

- ``hp:last:<kind>``: a hash per topic kind (the first two topic segments, or ``hb``); field =
  the full topic, value = the latest payload as received (msgpack with the envelope; books cut
  to their top levels by store-writer). ``HGETALL hp:last:clean.book`` is every clean book.
- ``hp:stream:<kind>``: a capped stream per kind (``XADD ... MAXLEN ~ stream_maxlen``), each
  entry ``t`` = topic, ``p`` = payload: recent history.

Writes are batched: :meth:`RedisStateWriter.add` only records a frame; :meth:`flush` writes
what accumulated in one pipeline (no transaction), with only the latest value per hash field.
When Redis is down or refuses the connection, the latest value per field stays in memory
(at most ``max_keys`` fields), stream entries wait in a bounded backlog (the oldest dropped
and counted when it is full), and connecting is retried with a capped backoff without
blocking the caller for longer than the socket timeouts; on reconnect every latest value is
written again (Redis may have restarted empty or from an old snapshot) and the backlog
follows. A command Redis refuses (an error reply: WRONGTYPE, OOM) is counted and reported
with its key, and the rest of the pipeline stands.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Callable, NamedTuple

from .resp import RespConnection, RespError

HASH_PREFIX = b"hp:last:"
STREAM_PREFIX = b"hp:stream:"
_HB = b"hb"


def topic_kind(topic: bytes) -> bytes:
    """The first two segments of a topic, or ``hb`` for heartbeats (as messages.topic_kind)."""
    if topic[:3] == b"hb." or topic == _HB:
        return _HB
    first = topic.find(b".")
    if first < 0:
        return topic
    second = topic.find(b".", first + 1)
    return topic if second < 0 else topic[:second]


def hash_key(kind: bytes) -> bytes:
    return HASH_PREFIX + kind


def stream_key(kind: bytes) -> bytes:
    return STREAM_PREFIX + kind


@dataclass
class StoreStats:
    redis_writes: int = 0           # commands Redis accepted
    redis_batches: int = 0          # pipelines sent
    redis_up: int = 0               # gauge: 1 while connected
    redis_reconnects: int = 0       # connections regained after a loss
    redis_errors: int = 0           # connection losses and failed connects
    redis_command_errors: int = 0   # commands Redis refused (error replies)
    redis_rebuilds: int = 0         # full rewrites of the live state after a reconnect
    backlog: int = 0                # gauge: stream entries waiting for Redis
    stream_backlog_dropped: int = 0 # stream entries dropped because the backlog was full
    keys: int = 0                   # gauge: live-state fields held in memory
    keys_dropped: int = 0           # frames of new topics beyond max_keys (not in live state)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


Report = Callable[..., None]  # OncePerKind-like: report(kind, message, level=..., **context)


class Slot(NamedTuple):
    """Where one topic's frames go; made once per topic (:meth:`RedisStateWriter.slot`)."""

    hkey: bytes
    skey: bytes
    #: The RESP text of ``XADD skey MAXLEN ~ n * t topic p`` up to the payload's length.
    xadd_head: bytes


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(arg), arg)


class RedisStateWriter:
    """Batches frames into Redis. No I/O until :meth:`connect` or :meth:`flush`.

    Commands are packed as RESP text here rather than by redis-py's pipeline (~25 µs per
    command in Python) and their replies counted by :class:`.resp.RespConnection` (redis-py's
    parser: ~3 µs per reply): docs/store-writer.md has the profiles. ``report`` is called for
    every problem (the caller logs once per kind); only ``redacted_url`` is ever put in one.
    """

    def __init__(self, url: str, *, redacted_url: str, stream_maxlen: int, backlog_max: int,
                 max_keys: int, batch_max: int, timeout_s: float, backoff_min_s: float,
                 backoff_max_s: float, monotonic: Callable[[], float], report: Report,
                 client_name: str = "store-writer", server_ready: Callable[[], bool] | None = None):
        self.url = url
        self.redacted_url = redacted_url
        self.stream_maxlen = stream_maxlen
        self.batch_max = batch_max
        self.max_keys = max_keys
        self.timeout_s = timeout_s
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.monotonic = monotonic
        self.report = report
        self.client_name = client_name
        #: Asked before each connection attempt when set (the embedded server: restarts it if it
        #: exited, False while it comes up); a False is no failed attempt, just not yet.
        self.server_ready = server_ready
        self.stats = StoreStats()
        #: topic -> (hash key, latest payload): the live state, kept to rebuild Redis.
        self.last: dict[bytes, tuple[bytes, bytes]] = {}
        #: topics whose latest value is not yet in Redis.
        self.dirty: set[bytes] = set()
        #: (slot, payload) stream entries waiting for Redis; the oldest dropped when full.
        self.backlog: deque[tuple[Slot, bytes]] = deque(maxlen=backlog_max)
        self.unflushed = 0  # frames added since the last flush
        self._maxlen = b"%d" % stream_maxlen
        self._conn: RespConnection | None = None
        #: The pipeline sent whose replies are not read yet: its commands' keys, its entries.
        self._inflight_keys: list[bytes] | None = None
        self._inflight_entries: list[tuple[Slot, bytes]] = []
        self._up = False
        self._ever_up = False
        self._rebuild = False
        self._backoff = backoff_min_s
        self._next_attempt = 0.0

    def slot(self, topic: bytes) -> Slot:
        kind = topic_kind(topic)
        skey = stream_key(kind)
        head = b"".join((b"*10\r\n$4\r\nXADD\r\n", _bulk(skey), b"$6\r\nMAXLEN\r\n$1\r\n~\r\n",
                         _bulk(self._maxlen), b"$1\r\n*\r\n$1\r\nt\r\n", _bulk(topic), b"$1\r\np\r\n"))
        return Slot(hash_key(kind), skey, head)

    # ---- the hot path -------------------------------------------------------------------

    def add(self, topic: bytes, slot: Slot, payload: bytes) -> None:
        last = self.last
        if len(last) >= self.max_keys and topic not in last:
            self.stats.keys_dropped += 1
            self.report("keys_full", f"{self.max_keys} live-state fields held (max_keys): a new topic "
                        "is kept in the journal and the stream only", topic=topic[:120].decode(errors="replace"))
        else:
            last[topic] = (slot.hkey, payload)
            self.dirty.add(topic)
        backlog = self.backlog
        if len(backlog) == backlog.maxlen:
            self.stats.stream_backlog_dropped += 1
            self.report("stream_backlog_full", f"stream backlog full ({backlog.maxlen} entries): the "
                        "oldest are dropped (the journal keeps them)", level=logging.ERROR)
        backlog.append((slot, payload))
        self.unflushed += 1

    # ---- connection -------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._up

    def connect(self, force: bool = False) -> bool:
        """Try to (re)connect when the backoff allows it (or ``force``); True when up."""
        if self._up:
            return True
        now = self.monotonic()
        if not force and now < self._next_attempt:
            return False
        if self.server_ready is not None and not self.server_ready():
            return False
        if self._conn is None:
            self._conn = RespConnection(self.url, self.timeout_s, self.client_name)
        try:
            self._conn.connect()  # the handshake: AUTH, SELECT, CLIENT SETNAME, PING
        except RespError as exc:
            self._down(exc, now)
            return False
        self._up = True
        self.stats.redis_up = 1
        self._backoff = self.backoff_min_s
        if self._ever_up:
            self.stats.redis_reconnects += 1
            self.report("redis_reconnected", "Redis is back: rebuilding the live state and writing "
                        "the backlog", level=logging.WARNING, url=self.redacted_url,
                        backlog=len(self.backlog))
        self._ever_up = True
        # Whatever Redis holds now (an empty restart, an old snapshot) is rewritten from memory.
        self._rebuild = True
        return True

    def disconnect(self, reason: str) -> None:
        """Drop the connection as lost (the server is known gone): reconnecting and the rebuild
        follow as after any loss, even when no frame comes to find the socket dead."""
        if self._up:
            self._down(RespError(reason), self.monotonic())

    def _down(self, exc: Exception, now: float) -> None:
        self.stats.redis_errors += 1
        self.report("redis_down", f"Redis unreachable: {type(exc).__name__}: {exc}; the journal keeps "
                    "every frame, live state and stream entries wait in memory",
                    level=logging.ERROR, url=self.redacted_url)
        self._up = False
        self.stats.redis_up = 0
        self._next_attempt = now + self._backoff
        self._backoff = min(self._backoff * 2, self.backoff_max_s)
        if self._conn is not None:
            self._conn.close()
        # Whether the batch in flight reached Redis is unknown: its values are rewritten by the
        # rebuild on reconnect and its entries go back to the backlog (a stream may get one twice).
        if self._inflight_entries:
            self._requeue(self._inflight_entries)
        self._inflight_keys, self._inflight_entries = None, []

    def _requeue(self, entries: list) -> None:
        """Put entries back at the front of the backlog; the oldest go if it overflows."""
        backlog = self.backlog
        total = len(entries) + len(backlog)
        if total > backlog.maxlen:
            self.stats.stream_backlog_dropped += total - backlog.maxlen
        self.backlog = deque([*entries, *backlog], maxlen=backlog.maxlen)

    # ---- writing ------------------------------------------------------------------------

    def flush(self, force_connect: bool = False, budget_s: float = 0.05, wait: bool = False) -> bool:
        """Send what accumulated as pipelines (connecting first if needed).

        The replies of the last pipeline sent are read at the next flush, so Redis executes it
        while the caller goes on with new frames; ``wait`` (or nothing new to send) reads them
        now. True when every frame has been sent (and, with ``wait``, confirmed).
        """
        self.unflushed = 0
        if not self._up and not self.connect(force_connect):
            self._gauges()
            return False
        deadline = self.monotonic() + budget_s
        if self._rebuild:
            self.dirty = set(self.last)
            self._rebuild = False
            self.stats.redis_rebuilds += 1
        sent = False
        while self.dirty or self.backlog:
            if not self._send_batch():
                break
            sent = True
            if self.monotonic() > deadline:  # a long backlog is written over several flushes
                break
        # Nothing new to send (a quiet input) or asked to: read the replies now.
        if (wait or not sent) and self._up and self._inflight_keys is not None:
            self._collect()
        self._gauges()
        return self._up and not (self.dirty or self.backlog) and (not wait or self._inflight_keys is None)

    def _gauges(self) -> None:
        self.stats.backlog = len(self.backlog) + len(self._inflight_entries)
        self.stats.keys = len(self.last)

    def _send_batch(self) -> bool:
        """One pipeline: the dirty hash fields (one HSET per key), then up to batch_max entries."""
        if self._inflight_keys is not None and not self._collect():
            return False
        n = self.batch_max
        parts: list[bytes] = []
        keys: list[bytes] = []  # the key of each command, to name it when Redis refuses one
        by_hash: dict[bytes, list[bytes]] = {}
        last = self.last
        dirty = self.dirty
        for _ in range(min(n, len(dirty))):
            topic = dirty.pop()
            hkey, payload = last[topic]
            fields = by_hash.get(hkey)
            if fields is None:
                fields = by_hash[hkey] = []
            fields += (b"$%d\r\n" % len(topic), topic, b"\r\n$%d\r\n" % len(payload), payload, b"\r\n")
        for hkey, fields in by_hash.items():
            parts += (b"*%d\r\n$4\r\nHSET\r\n" % (2 + len(fields) // 5 * 2), _bulk(hkey))
            parts += fields
            keys.append(hkey)
        popleft = self.backlog.popleft
        entries = [popleft() for _ in range(min(n, len(self.backlog)))]
        for slot, payload in entries:
            parts += (slot.xadd_head, b"$%d\r\n" % len(payload), payload, b"\r\n")
            keys.append(slot.skey)
        self._inflight_keys, self._inflight_entries = keys, entries
        try:
            self._conn.send(b"".join(parts))
        except RespError as exc:
            self._down(exc, self.monotonic())
            return False
        self.stats.redis_batches += 1
        return True

    def _collect(self) -> bool:
        """Read the replies of the pipeline in flight; count what Redis refused."""
        keys = self._inflight_keys
        try:
            refused = self._conn.read_replies(len(keys))
        except RespError as exc:
            self._down(exc, self.monotonic())
            return False
        self._inflight_keys, self._inflight_entries = None, []
        self.stats.redis_writes += len(keys) - len(refused)
        for index, text in refused:
            self._refused(keys[index], text)
        return True

    def _refused(self, key: bytes, text: str) -> None:
        self.stats.redis_command_errors += 1
        code = text.split(" ", 1)[0] if text[:1].isupper() else "ERR"
        self.report(f"redis_refused:{code}", f"Redis refused a write: {text[:200]}", level=logging.ERROR,
                    key=key.decode(errors="replace"))

    def close(self) -> None:
        """Write what is left (one forced connection attempt if down); say what could not be."""
        if not self.flush(force_connect=True, budget_s=5.0, wait=True):
            # Down: which values reached Redis is unknown, so every one counts as unwritten.
            values = len(self.dirty) if self._up else len(self.last)
            self.report("redis_unwritten", "stopping with writes Redis did not take (the journal has "
                        "them)", level=logging.ERROR, values=values, stream_entries=len(self.backlog))
        self._gauges()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
