"""The journal: every frame store-writer receives, append-only on disk, for audit and replay.

Layout: ``<root>/<YYYY-MM-DD>/<family>.<part>.hpj`` while open, ``...hpj.gz`` once closed.
``family`` is the topic's first segment (``md``, ``clean``, ``hb``, ``signal`` ...); the day is
the UTC day of the receive stamp; a new ``part`` starts on rotation (size) and on every start
(a file left by a crash is never appended to: its tail may be torn; it is compressed at the
next start). One writer per directory (a lock file, ``.lock``, holds its pid). A failing disk
never stops the writer: records wait in memory (bounded) and are retried; see JournalWriter.

A file is the 8-byte header :data:`MAGIC`, then records::

    mark  b"\\xf1J"    2 bytes: a resync point after corruption
    size  u32 LE      len(topic) + len(payload)
    crc   u32 LE      CRC-32 of everything after it (ts, topic_len, topic, payload)
    ts    i64 LE      receive time, ns since the epoch (the writer's clock)
    tlen  u16 LE      topic length
    topic, payload    the frame exactly as it travelled (payload: msgpack with the envelope)

Frames are stored as received, undecoded: a frame of a type nobody knows yet is kept too.
A torn tail (a crash mid-write) or a corrupt record is reported by the reader with its
offset; every record before it, and every intact record after a corrupt one, stays readable.
See docs/journal.md.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import queue
import re
import shutil
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from .errors import EX_DATAERR, EX_NOINPUT, HedgepipeError
from .procs import LockHeld, take_pid_lock

MAGIC = b"HPJRNL1\n"
MARK = b"\xf1J"
_HEAD = struct.Struct("<2sIIqH")
_CRC_FROM = 10  # the crc covers the head from ts on
#: A record larger than this is taken as corruption (frames are capped far below it).
MAX_RECORD_BYTES = 64 * 1024 * 1024
#: The record header holds the topic length in 16 bits (bus topics are capped at 256 bytes).
MAX_TOPIC_BYTES = 65_535
OPEN_SUFFIX = ".hpj"
CLOSED_SUFFIX = ".hpj.gz"
_FAMILY_OK = re.compile(rb"^[a-z0-9_-]{1,32}$")
FSYNC_POLICIES = ("always", "interval", "never")


class JournalError(HedgepipeError):
    """A journal cannot be written, read, or is not one. A command that lets one escape exits
    66 (no input: a file that cannot be opened or vanished); NotAJournal exits 65."""

    exit_code = EX_NOINPUT


class Record(NamedTuple):
    ts_ns: int
    topic: bytes
    payload: bytes


@dataclass
class Problem:
    """Something wrong found while reading: ``torn_tail`` or ``corrupt``."""

    path: str
    kind: str
    offset: int
    detail: str
    skipped_bytes: int = 0


def family_of(topic: bytes) -> str:
    """The file family of a topic: its first segment, or ``other`` when that is not a safe name."""
    first = topic.split(b".", 1)[0]
    return first.decode() if _FAMILY_OK.match(first) else "other"


_PRE = struct.Struct("<2sII")   # mark, size, crc
_POST = struct.Struct("<qH")    # ts, topic length: the head's crc-covered part


def encode_record(ts_ns: int, topic: bytes, payload: bytes) -> bytes:
    post = _POST.pack(ts_ns, len(topic))
    crc = zlib.crc32(payload, zlib.crc32(topic, zlib.crc32(post)))
    return b"".join((_PRE.pack(MARK, len(topic) + len(payload), crc), post, topic, payload))


_DAY_NS = 86_400 * 10**9


def iso_day_index(day: str) -> int:
    """``2023-11-14`` -> days since the epoch."""
    return int(dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc).timestamp()) // 86_400


def utc_day(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns // _DAY_NS * 86_400, dt.timezone.utc).strftime("%Y-%m-%d")


# ---- writing ---------------------------------------------------------------------------------

@dataclass
class _OpenFile:
    path: Path
    day_index: int  # days since the epoch (UTC)
    #: Bytes not yet handed to the OS (a new file's start with the header). Kept until
    #: os.write takes them, so a failing disk loses nothing that was not counted.
    pending: bytearray
    size: int = 0  # the file's size once pending is written
    fd: int = -1  # -1 until the file could be created

    day_end_ns: int = 0  # where the next UTC day begins

    def __post_init__(self):
        self.day_end_ns = (self.day_index + 1) * _DAY_NS


@dataclass
class JournalStats:
    records: int = 0
    bytes: int = 0
    files_opened: int = 0
    files_compressed: int = 0
    clock_backwards: int = 0
    compress_errors: int = 0
    #: Failed creates, writes and fsyncs (disk full, I/O error); each is retried.
    write_errors: int = 0
    #: Records refused because ``max_pending_bytes`` were already waiting on a failing disk.
    dropped: int = 0
    #: Bytes still unwritten when the writer closed (only ever non-zero after write errors).
    unwritten_bytes: int = 0
    #: Gauge: bytes waiting to be written.
    pending_bytes: int = 0
    #: Day folders deleted by retention (``retain_days``).
    days_pruned: int = 0
    #: Days retention was not applied because the clock jumped (see JournalWriter._end_days).
    prune_skipped: int = 0
    #: Records refused because the format cannot hold them (topic > 65535 bytes, record too big).
    refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f"journal_{k}": v for k, v in self.__dict__.items()}


_LOCK_NAME = ".lock"
_DAY_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class JournalWriter:
    """Appends frames to per-(day, family) files. ``open()`` does the I/O; raises JournalError.

    Records are buffered in memory and handed to the OS when ``buffer_bytes`` are waiting
    and on every :meth:`flush` / :meth:`tick`. fsync policy: ``always`` (after every record:
    slow, nothing in the OS cache is ever at risk), ``interval`` (every ``fsync_interval_s``,
    from :meth:`tick`), ``never`` (only when a file is closed). Closed files are
    gzip-compressed by a background thread, so a rotation never stalls the writer.

    A failing disk (full, I/O error) never raises from :meth:`append`: the error is counted
    (``write_errors``), reported through ``on_error``, the bytes stay in memory and are
    retried on every :meth:`tick`; once ``max_pending_bytes`` are waiting, new records are
    refused and counted (``dropped``). One writer per directory: ``open()`` takes a lock.
    """

    root: Path
    fsync: str = "interval"
    fsync_interval_s: float = 1.0
    rotate_bytes: int = 256 * 1024 * 1024
    compress_level: int = 6
    buffer_bytes: int = 1 << 20
    max_pending_bytes: int = 256 * 1024 * 1024
    #: Keep this many UTC days (today included); older day folders are deleted when a day's
    #: first file is opened. 0 keeps everything.
    retain_days: int = 0
    on_error: Callable[[str, str], None] = lambda kind, detail: None
    stats: JournalStats = field(default_factory=JournalStats)

    def __post_init__(self):
        if self.fsync not in FSYNC_POLICIES:
            raise JournalError(f"fsync policy {self.fsync!r}: want one of {', '.join(FSYNC_POLICIES)}")
        if not 0 <= self.compress_level <= 9:
            raise JournalError(f"compress level {self.compress_level}: want 0-9")
        if self.rotate_bytes < 4096 or self.buffer_bytes < 1 or self.max_pending_bytes < self.buffer_bytes:
            raise JournalError(f"rotate_bytes {self.rotate_bytes} (>= 4096), buffer_bytes {self.buffer_bytes} "
                               f"(>= 1), max_pending_bytes {self.max_pending_bytes} (>= buffer_bytes)")
        self.root = Path(self.root)
        self._always = self.fsync == "always"
        self._files: dict[str, _OpenFile] = {}
        self._closing: list[_OpenFile] = []  # rotated out with bytes a failing disk refused
        self._failing = False  # a write failed and has not yet been retried successfully
        self._families: dict[bytes, str] = {}  # topic -> family, cached
        self._last_ts = 0
        self._last_fsync = 0.0
        self._pruned_for_day = -1  # the day index retention was last applied for
        self._newest_day_on_disk: int | None = None
        self._lock_fd = -1
        self._closed = False
        self._compress_q: queue.Queue = queue.Queue()
        self._compressor: threading.Thread | None = None

    def open(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-probe"
            probe.write_bytes(b"")
            probe.unlink()
            lock_fd = take_pid_lock(self.root / _LOCK_NAME)
        except LockHeld as held:
            raise JournalError(f"journal directory {self.root} is in use by another writer "
                               f"(pid {held.holder})") from None
        except OSError as exc:
            raise JournalError(f"journal directory {self.root} is not writable: {exc}") from None
        self._lock_fd = lock_fd
        self._compressor = threading.Thread(target=self._compress_loop, name="journal-gzip", daemon=True)
        self._compressor.start()
        for left in sorted(self.root.glob(f"*/*{OPEN_SUFFIX}")):  # left open by a crash
            self._compress_q.put(left)
        days = sorted(p.name for p in _glob(self.root, "*") if _DAY_NAME.match(p.name) and p.is_dir())
        self._newest_day_on_disk = (iso_day_index(days[-1]) if days else None)

    def append(self, topic: bytes, payload: bytes, ts_ns: int) -> bool:
        """Add one record; False when it was refused (counted in ``dropped``)."""
        # Once per frame store-writer receives: encode_record is inlined (bench/store_writer.py).
        if ts_ns < self._last_ts:
            # The clock went back: keep the stamp as read (the audit shows it), but never
            # go back to an earlier day's file; readers sort by time where they need to.
            self.stats.clock_backwards += 1
        else:
            self._last_ts = ts_ns
        family = self._families.get(topic)
        if family is None:
            family = family_of(topic)
            if len(self._families) < 100_000:
                self._families[topic] = family
        f = self._files.get(family)
        if f is None or ts_ns >= f.day_end_ns or f.size >= self.rotate_bytes:
            f = self._rotate(family, max(ts_ns, self._last_ts) // _DAY_NS)
        body = len(topic) + len(payload)
        if len(topic) > MAX_TOPIC_BYTES or body > MAX_RECORD_BYTES:
            self.stats.refused += 1
            self.on_error("journal_refused", f"record refused: topic {len(topic)} bytes (max "
                                             f"{MAX_TOPIC_BYTES}), topic+payload {body} bytes (max "
                                             f"{MAX_RECORD_BYTES}); topic {topic[:80]!r}")
            return False
        post = _POST.pack(ts_ns, len(topic))
        size = _HEAD.size + body
        if self._failing and self._pending_total() + size > self.max_pending_bytes:
            self.stats.dropped += 1
            self.on_error("journal_dropped", f"{self.max_pending_bytes} bytes already wait for a "
                                             "failing disk: records are refused and counted")
            return False
        pending = f.pending
        pending += _PRE.pack(MARK, body, zlib.crc32(payload, zlib.crc32(topic, zlib.crc32(post))))
        pending += post
        pending += topic
        pending += payload
        f.size += size
        stats = self.stats
        stats.records += 1
        stats.bytes += size
        # While the disk fails, only tick() retries: not one failing syscall per record.
        if (len(pending) >= self.buffer_bytes or self._always) and not self._failing:
            if self._write_out(f) and self._always:
                self._fsync(f)
        return True

    def flush(self) -> bool:
        """Hand every buffered byte to the OS; False if some could not be written."""
        ok = True
        for f in self._files.values():
            ok = self._write_out(f) and ok
        if self._closing:
            self._closing = [f for f in self._closing if not self._finish(f)]
            ok = ok and not self._closing
        self._failing = not ok
        self.stats.pending_bytes = self._pending_total()
        return ok

    def tick(self, now_monotonic: float, now_ns: int = 0) -> None:
        """Flush (retrying what failed), and fsync when the interval policy says it is time.

        With the wall clock (``now_ns``): close the files of a UTC day that has ended, even a
        quiet family's, and apply retention once per new day."""
        if now_ns:
            self._end_days(now_ns)
        ok = self.flush()
        if ok and self.fsync == "interval" and now_monotonic - self._last_fsync >= self.fsync_interval_s:
            self._last_fsync = now_monotonic
            for f in self._files.values():
                self._fsync(f)

    def _end_days(self, now_ns: int) -> None:
        for family, f in list(self._files.items()):
            if now_ns >= f.day_end_ns:  # its day is over: closed and compressed now
                del self._files[family]
                if not self._finish(f):
                    self._closing.append(f)
        today = now_ns // _DAY_NS
        if not self.retain_days or today == self._pruned_for_day:
            return
        previous, self._pruned_for_day = self._pruned_for_day, today
        # Retention deletes data: only on a clock that moved as a clock does. At start the
        # day must be at most one past the newest day already on disk; later, exactly one
        # day past the last. A jump (a bad clock, a restored VM) is said and waited out.
        newest = self._newest_day_on_disk if previous < 0 else previous
        if newest is not None and today not in (newest, newest + 1):
            self.stats.prune_skipped += 1
            self.on_error("prune_skipped", f"the clock moved from {utc_day(newest * _DAY_NS)} to "
                                           f"{utc_day(today * _DAY_NS)}: retention waits for a day "
                                           "that follows the last one")
            return
        protected = frozenset(f.path.parent.name for f in (*self._files.values(), *self._closing))
        # On the compressor's thread, after the files queued before it are compressed.
        self._compress_q.put(("prune", today, protected))

    def open_paths(self) -> list[Path]:
        return [f.path for f in self._files.values()]

    def close(self, wait: bool = True) -> None:
        """Write, fsync and close every file; they are compressed in the background (``wait``
        for it here, or later with :meth:`wait_compressed`)."""
        for family in list(self._files):
            f = self._files.pop(family)
            if not self._finish(f):
                self._closing.append(f)
        for f in self._closing:  # a disk still failing at the end: say how much is lost
            if not self._finish(f):
                self.stats.unwritten_bytes += len(f.pending)
                self.on_error("journal_unwritten", f"{f.path}: {len(f.pending)} bytes could not "
                                                   "be written before closing")
                self._close_fd(f)
        self._closing = []
        self.stats.pending_bytes = 0
        if self._compressor is not None and not self._closed:
            self._compress_q.put(None)
        self._closed = True
        if wait:
            self.wait_compressed()

    def wait_compressed(self, timeout: float | None = None) -> bool:
        """After :meth:`close`: wait for the background compression of the closed files, then
        release the directory lock (held until then, so a new writer never compresses a file
        this one is still compressing). True when done."""
        if self._compressor is not None:
            self._compressor.join(timeout)
            if self._compressor.is_alive():
                return False
            self._compressor = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1
        return True

    # ---- files ------------------------------------------------------------------------

    def _pending_total(self) -> int:
        return (sum(len(f.pending) for f in self._files.values())
                + sum(len(f.pending) for f in self._closing))

    def _rotate(self, family: str, day_index: int) -> _OpenFile:
        old = self._files.pop(family, None)
        if old is not None and not self._finish(old):
            self._closing.append(old)
        f = self._files[family] = _OpenFile(self._next_path(family, day_index), day_index,
                                            bytearray(MAGIC), len(MAGIC))
        if self._create(f, family) and not self._failing:
            self._write_out(f)  # the header at once: a new file is a valid (empty) journal
        return f

    def prune(self, today_index: int, protected: frozenset[str] = frozenset()) -> list[str]:
        """Delete day folders older than ``retain_days`` (today included); returns their names.

        Only folders named as this writer names them (YYYY-MM-DD) are touched, never one in
        ``protected`` (holding a file still open)."""
        keep_from = utc_day((today_index - self.retain_days + 1) * _DAY_NS)
        removed = []
        for folder in sorted(_glob(self.root, "*")):
            if (folder.is_dir() and _DAY_NAME.match(folder.name) and folder.name < keep_from
                    and folder.name not in protected):
                try:
                    shutil.rmtree(folder)
                    removed.append(folder.name)
                    self.stats.days_pruned += 1
                except OSError as exc:
                    self.on_error("prune_error", f"{folder}: {exc}")
        return removed

    def _next_path(self, family: str, day_index: int) -> Path:
        folder = self.root / utc_day(day_index * _DAY_NS)
        part = 1 + max((int(p.name.split(".")[1]) for p in _glob(folder, f"{family}.*.hpj*")
                        if p.name.split(".")[1].isdigit()), default=0)
        return folder / f"{family}.{part:04d}{OPEN_SUFFIX}"

    def _create(self, f: _OpenFile, family: str) -> bool:
        """Create the file; on failure count it and leave ``fd`` -1 for a retry."""
        for _ in range(100):  # another part with our number appeared: take the next one
            try:
                f.path.parent.mkdir(parents=True, exist_ok=True)
                f.fd = os.open(f.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                self.stats.files_opened += 1
                return True
            except FileExistsError:
                f.path = self._next_path(family, f.day_index)
            except OSError as exc:
                self._write_failed(f, exc)
                return False
        self._write_failed(f, OSError(f"no free part number for {f.path}"))
        return False

    def _write_out(self, f: _OpenFile) -> bool:
        if f.fd < 0 and not self._create(f, f.path.name.split(".")[0]):
            return False
        pending = f.pending
        try:
            while pending:
                # A short write (disk filling up) leaves the rest pending: the file stays a
                # prefix of what was appended, so records resume intact on the next try.
                del pending[:os.write(f.fd, pending)]
        except OSError as exc:
            self._write_failed(f, exc)
            return False
        return True

    def _fsync(self, f: _OpenFile) -> bool:
        try:
            os.fsync(f.fd)
            return True
        except OSError as exc:
            self._write_failed(f, exc)
            return False

    def _write_failed(self, f: _OpenFile, exc: OSError) -> None:
        self._failing = True
        self.stats.write_errors += 1
        self.on_error("write_error", f"{f.path}: {exc}; kept in memory and retried")

    def _finish(self, f: _OpenFile) -> bool:
        """Write what is pending, fsync, close and queue for compression; False if it failed."""
        if not self._write_out(f) or not self._fsync(f):  # a closed file is always durable
            return False
        self._close_fd(f)
        self._compress_q.put(f.path)
        return True

    @staticmethod
    def _close_fd(f: _OpenFile) -> None:
        if f.fd >= 0:
            os.close(f.fd)
            f.fd = -1

    def _compress_loop(self) -> None:
        while (item := self._compress_q.get()) is not None:
            try:
                if isinstance(item, tuple):  # ("prune", today, protected folders)
                    self.prune(item[1], item[2])
                    continue
                compress_file(item, self.compress_level)
                self.stats.files_compressed += 1
            except OSError as exc:  # the plain file stays, readable; said once per kind
                self.stats.compress_errors += 1
                self.on_error("compress_error", f"{item}: {exc}")
            finally:
                self._compress_q.task_done()
        self._compress_q.task_done()

    def settle(self) -> None:
        """Wait until the background work queued so far (compression, retention) is done."""
        if self._compressor is not None and self._compressor.is_alive():
            self._compress_q.join()


def _glob(folder: Path, pattern: str) -> list[Path]:
    try:
        return list(folder.glob(pattern))
    except OSError:  # the folder cannot be listed (yet): creating the file will say why
        return []


def compress_file(path: Path, level: int = 6) -> Path:
    """``x.hpj`` -> ``x.hpj.gz`` durably (temp file, fsync, rename), then remove ``x.hpj``."""
    target = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".gz.tmp")
    with open(path, "rb") as src, open(tmp, "wb") as raw:
        with gzip.GzipFile(filename=path.name, mode="wb", compresslevel=level, fileobj=raw, mtime=0) as gz:
            shutil.copyfileobj(src, gz, 1 << 20)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, target)
    path.unlink()
    return target


# ---- reading ---------------------------------------------------------------------------------

class NotAJournal(JournalError):
    """The file does not start with :data:`MAGIC`.

    ``torn_header`` is True when the file is empty or holds only part of the header (or its
    gzip stream ends before the header): what a writer stopped right after creating the file
    leaves behind. Such a file holds no record; anything else is not a journal at all.
    """

    exit_code = EX_DATAERR

    def __init__(self, message: str, torn_header: bool = False):
        super().__init__(message)
        self.torn_header = torn_header


_GZIP_MAGIC = b"\x1f\x8b"


def _open_any(path: Path):
    """The file's bytes, decompressed when it is gzip (by its first bytes, whatever its name)."""
    with open(path, "rb") as probe:
        is_gzip = probe.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if is_gzip else open(path, "rb")


def _open_checked(path: Path):
    """An open journal positioned after its header. Raises JournalError / NotAJournal.

    An open file (``x.hpj``) that is gone is read as ``x.hpj.gz``: the writer closed and
    compressed it between the moment it was listed and the moment it is read."""
    try:
        try:
            fh = _open_any(path)
        except FileNotFoundError:
            if not path.name.endswith(OPEN_SUFFIX):
                raise
            fh = _open_any(path.with_name(path.name + ".gz"))
    except OSError as exc:
        raise JournalError(f"{path}: cannot open: {exc.strerror or exc}") from None
    try:
        head = fh.read(len(MAGIC))
    except EOFError:  # a gzip stream cut before the header's end
        fh.close()
        raise NotAJournal(f"{path}: its compressed stream ends before the journal header",
                          torn_header=True) from None
    except OSError as exc:  # gzip.BadGzipFile (gzip magic, then garbage) is an OSError
        fh.close()
        raise NotAJournal(f"{path}: not a hedgepipe journal ({exc})") from None
    if head == MAGIC:
        return fh
    fh.close()
    if not head:
        raise NotAJournal(f"{path}: empty file, not a hedgepipe journal", torn_header=True)
    if MAGIC.startswith(head):
        raise NotAJournal(f"{path}: holds only {len(head)} of the {len(MAGIC)} bytes of a journal "
                          f"header", torn_header=True)
    raise NotAJournal(f"{path}: not a hedgepipe journal (it starts with {head!r}; a journal "
                      f"starts with {MAGIC!r})")


def check_journal(path: str | os.PathLike) -> None:
    """Raise JournalError if the file cannot be opened, NotAJournal if its header is wrong."""
    _open_checked(Path(path)).close()


def read_journal(path: str | os.PathLike, on_problem: Callable[[Problem], None] | None = None,
                 chunk_bytes: int = 1 << 20) -> Iterator[Record]:
    """Yield every intact record of one journal file (plain or gzip), in file order.

    Raises JournalError if the file cannot be opened, NotAJournal if its header is wrong (on
    the first ``next()``: call :func:`check_journal` first to know before reading anything).
    A torn tail or a corrupt record is passed to ``on_problem`` as a :class:`Problem` (pass
    one: the default ignores them); reading goes on at the next intact record. Offsets are
    in the uncompressed bytes. Memory: one chunk, or the largest record if larger.
    """
    path = Path(path)
    report = on_problem or (lambda p: None)
    with _open_checked(path) as fh:
        reader = _RecordScanner(fh, str(path), report, chunk_bytes)
        yield from reader.records()


class _RecordScanner:
    """Walks a journal's records through a sliding buffer (one chunk, or the largest record).

    Bytes that are not an intact record (mark, plausible size, CRC) are skipped to the next
    :data:`MARK` where one is. Unreadable bytes followed by an intact record are reported as
    ``corrupt``; unreadable bytes that run to the end of the file as ``torn_tail``: a crash
    mid-write leaves that, and a corrupt size field in the last record looks the same. A
    corrupt size field in the middle claims bytes past a later record: the scan goes on from
    the next mark rather than take the rest of the file for a torn tail.
    """

    def __init__(self, fh, path: str, report: Callable[[Problem], None], chunk_bytes: int):
        self.path, self.report = path, report
        self.chunk = max(chunk_bytes, _HEAD.size)
        # read1: at most one underlying read, so a gzip stream cut mid-chunk still hands over
        # what it decompressed before the cut (read(n) would drop it with the EOFError).
        self.read = getattr(fh, "read1", fh.read)
        self.buf = b""
        self.base = len(MAGIC)  # file offset of buf[0]
        self.pos = 0
        self.eof = False
        self.stream_error = ""  # a gzip stream that ends early (the file itself is torn)

    def _more(self, at_least: int = 0) -> bool:
        """Append one more read to the buffer (dropping what is before pos); False at the end."""
        if self.eof:
            return False
        try:
            more = self.read(max(self.chunk, at_least))
        except (OSError, EOFError) as exc:  # gzip: the compressed stream itself is torn
            more = b""
            self.stream_error = f"compressed stream ends early ({exc})"
        if not more:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + more
        self.base += self.pos
        self.pos = 0
        return True

    def _fill(self, need: int) -> bool:
        """Make ``need`` bytes from pos available; False if the file ends first."""
        while len(self.buf) - self.pos < need:
            if not self._more(need - (len(self.buf) - self.pos)):
                return False
        return True

    def records(self) -> Iterator[Record]:
        skipping_from = -1  # file offset where unreadable bytes began
        head_size = _HEAD.size
        unpack = _HEAD.unpack_from
        crc32 = zlib.crc32
        while True:
            if len(self.buf) - self.pos < head_size and not self._fill(head_size):
                break
            buf, pos = self.buf, self.pos
            mark, size, crc, ts, tlen = unpack(buf, pos)
            if mark == MARK and tlen <= size <= MAX_RECORD_BYTES:
                end = pos + head_size + size
                if end > len(buf):
                    if self._fill(head_size + size):
                        continue  # parse again from the grown buffer
                    pos = self.pos  # the file ends before this record does: look on from here
                elif crc32(memoryview(buf)[pos + _CRC_FROM:end]) == crc:
                    if skipping_from >= 0:
                        self._corrupt(skipping_from, self.base + pos)
                        skipping_from = -1
                    start = pos + head_size
                    self.pos = end
                    yield Record(ts, buf[start:start + tlen], buf[start + tlen:end])
                    continue
            # Not a record here: skip to the next mark and try again from there.
            if skipping_from < 0:
                skipping_from = self.base + pos
            if not self._next_mark():
                break
        self._at_end(skipping_from)

    def _next_mark(self) -> bool:
        """Move pos to the next MARK after it (or to a byte that may start one, at a chunk's
        end); False when the file ends first, with pos at the end."""
        while True:
            nxt = self.buf.find(MARK, self.pos + 1)
            if nxt >= 0:
                self.pos = nxt
                return True
            self.pos = max(self.pos, len(self.buf) - 1)  # a mark may straddle two reads
            if not self._more():
                self.pos = len(self.buf)
                return False
            if self.buf[:1] == MARK[:1]:
                return True  # the kept byte may begin a mark: let the caller parse there

    def _corrupt(self, start: int, upto: int) -> None:
        self.report(Problem(self.path, "corrupt", start, f"{upto - start} unreadable bytes skipped "
                            "before an intact record", skipped_bytes=upto - start))

    def _at_end(self, skipping_from: int) -> None:
        end = self.base + len(self.buf)  # offset of the last byte read, plus one
        if skipping_from < 0 and self.pos < len(self.buf):
            skipping_from = self.base + self.pos  # a record header cut short
        stream = f"{self.stream_error}; " if self.stream_error else ""
        if skipping_from >= 0:
            self.report(Problem(self.path, "torn_tail", skipping_from,
                                f"{stream}the file ends inside a record: its last "
                                f"{end - skipping_from} bytes are not a whole record",
                                skipped_bytes=end - skipping_from))
        elif self.stream_error:  # the compressed stream was cut exactly between records
            self.report(Problem(self.path, "torn_tail", end, self.stream_error))


def journal_files(paths: list[str | os.PathLike]) -> list[Path]:
    """Files named, and every journal file under directories named, in name order.

    Under a directory, ``x.hpj`` is left out when ``x.hpj.gz`` is there too: the writer
    removes the plain file only after the compressed copy is complete, so for a moment (or
    after a crash at that moment) both exist with the same records.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = {q for q in p.rglob("*") if q.name.endswith((OPEN_SUFFIX, CLOSED_SUFFIX))
                     and q.is_file()}
            out.extend(sorted(q for q in found if q.with_name(q.name + ".gz") not in found))
        else:
            out.append(p)
    return out
