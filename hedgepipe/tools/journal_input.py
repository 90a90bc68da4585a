"""What ``hedgepipe replay`` and ``hedgepipe stats`` share: which journal files to read (all
checked before anything is read), the ``--from``/``--to``/``--topic`` filter, and the records of
several files merged in time order.

Exit codes of bad input (docs/replay-and-stats.md): 65 a file named is not a journal; 66 there
is nothing to read (a directory without journals, a file that cannot be opened); 2 a usage
error (a path that does not exist, ``--from`` not before ``--to``: click's own code).
"""

from __future__ import annotations

import functools
import heapq
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable, Iterator

import click

from ..clock import iso_to_ns
from ..errors import EX_DATAERR, EX_NOINPUT, HedgepipeError
from ..journal import JournalError, NotAJournal, Problem, Record, check_journal, journal_files, read_journal

#: sysexits.h: "an input file did not exist or was not readable".
#: Bytes read from each file at a time; files of one family are read one after another, so
#: memory is about this times the number of families (md, clean, hb ...), not of files.
CHUNK_BYTES = 256 * 1024


class NotAJournalError(HedgepipeError):
    """A file named on the command line is not a hedgepipe journal."""

    exit_code = EX_DATAERR


class NoJournalError(HedgepipeError):
    """Nothing to read: a directory without journal files, or a file that cannot be opened."""

    exit_code = EX_NOINPUT


# ---- --from / --to ----------------------------------------------------------------------------

_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")


def parse_time(text: str) -> int:
    """ns since the epoch from ISO 8601 (UTC unless it names a zone) or epoch seconds."""
    text = text.strip()
    if _NUMBER.fullmatch(text):
        try:
            return int(Decimal(text) * 10**9)
        except InvalidOperation:
            pass
    try:
        return iso_to_ns(text)
    except ValueError:
        raise ValueError(f"{text!r}: want an ISO 8601 time (2026-11-23T05:00:00Z, UTC when no "
                         f"zone is given) or seconds since the epoch (1795410000.5)") from None


class TimeType(click.ParamType):
    name = "TIME"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_time(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def iso(ts_ns: int, digits: int = 3) -> str:
    """UTC ISO 8601 with ``digits`` decimals of a second and a Z."""
    seconds, ns = divmod(ts_ns, 10**9)
    base = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{ns:09d}"[:digits]
    return f"{base}.{frac}Z" if digits else f"{base}Z"


def filter_options(fn):
    """--from, --to, --topic; the command gets ``record_filter`` (a RecordFilter).

    --from not before --to is a usage error (exit 2), raised here, outside ``guarded``.
    """
    @functools.wraps(fn)
    def wrapper(*args, from_ns, to_ns, topics, **kwargs):
        if from_ns is not None and to_ns is not None and from_ns >= to_ns:
            raise click.UsageError(f"--from {iso(from_ns)} is not before --to {iso(to_ns)}")
        return fn(*args, record_filter=RecordFilter(tuple(t.encode() for t in topics), from_ns, to_ns),
                  **kwargs)

    wrapper = click.option("--topic", "topics", multiple=True, metavar="PREFIX",
                           help="Only records whose topic starts with PREFIX (repeatable).")(wrapper)
    wrapper = click.option("--to", "to_ns", type=TimeType(), default=None,
                           help="Only records stamped before TIME (exclusive): ISO 8601, UTC "
                                "unless a zone is given, or epoch seconds.")(wrapper)
    wrapper = click.option("--from", "from_ns", type=TimeType(), default=None,
                           help="Only records stamped at or after TIME: ISO 8601, UTC unless a "
                                "zone is given, or epoch seconds.")(wrapper)
    return wrapper


@dataclass(frozen=True)
class RecordFilter:
    """Which records to keep: topic prefixes (any), and the window [from_ns, to_ns)."""

    topics: tuple[bytes, ...] = ()
    from_ns: int | None = None
    to_ns: int | None = None

    def __call__(self, record: Record) -> bool:
        if self.topics and not record.topic.startswith(self.topics):
            return False
        if self.from_ns is not None and record.ts_ns < self.from_ns:
            return False
        return self.to_ns is None or record.ts_ns < self.to_ns

    def describe(self) -> dict:
        return {"topics": [t.decode() for t in self.topics],
                "from": None if self.from_ns is None else iso(self.from_ns, 9),
                "to": None if self.to_ns is None else iso(self.to_ns, 9)}


# ---- which files --------------------------------------------------------------------------------

@dataclass
class JournalSet:
    files: list[Path]
    #: Files under a directory with a torn header (empty, or cut inside the header): a
    #: writer stopped right after creating them. They hold no record: reported (kind
    #: ``torn_header``), then left out.
    skipped: list[Problem]


def resolve_journals(paths: list[str]) -> JournalSet:
    """Expand directories and check every file's header before anything is read.

    A file named twice (directly and under a directory named) is read once.

    A file named that is not a journal raises NotAJournalError (65), naming every such file;
    a directory without journal files, or a file that cannot be opened, NoJournalError (66).
    """
    files: list[Path] = []
    skipped: list[Problem] = []
    not_journals: list[str] = []
    unreadable: list[str] = []
    seen: set[Path] = set()
    for arg in paths:
        is_dir = Path(arg).is_dir()
        found = journal_files([arg])
        if is_dir and not found:
            raise NoJournalError(f"{arg}: no journal files (*.hpj, *.hpj.gz) under this directory")
        for path in found:
            if path.resolve() in seen:
                continue  # named twice (a directory and a file in it): read once
            seen.add(path.resolve())
            try:
                check_journal(path)
            except NotAJournal as exc:
                if is_dir and exc.torn_header:
                    skipped.append(Problem(str(path), "torn_header", 0, str(exc)))
                else:
                    not_journals.append(str(exc))
                continue
            except JournalError as exc:
                unreadable.append(str(exc))
                continue
            files.append(path)
    if not_journals:
        raise NotAJournalError("; ".join(not_journals) + "; nothing was read")
    if unreadable:
        raise NoJournalError("; ".join(unreadable))
    if not files:
        raise NoJournalError(f"no readable journal in {', '.join(paths)}: "
                             + "; ".join(p.detail for p in skipped))
    return JournalSet(files, skipped)


# ---- records in time order ----------------------------------------------------------------------

_PART_NAME = re.compile(r"^(?P<family>.+)\.(?P<part>\d+)\.hpj(\.gz)?$")


def _chains(files: list[Path]) -> list[list[int]]:
    """File indexes grouped into chains read one after another: the parts of one family under
    one journal root, in day and part order (the writer fills them one after another)."""
    groups: dict[tuple, list[tuple]] = {}
    for i, path in enumerate(files):
        m = _PART_NAME.match(path.name)
        if m is None:
            groups[("file", i)] = [((), i)]
        else:
            key = (str(path.parent.parent), m["family"])
            groups.setdefault(key, []).append(((path.parent.name, int(m["part"])), i))
    return [[i for _, i in sorted(members)] for members in groups.values()]


def _chain_records(files: list[Path], chain: list[int], on_problem: Callable[[Problem], None],
                   chunk_bytes: int) -> Iterator[tuple[int, Record]]:
    for i in chain:
        for record in read_journal(files[i], on_problem, chunk_bytes):
            yield i, record


def merged_records(files: list[Path], on_problem: Callable[[Problem], None],
                   chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, Record]]:
    """(file index, record) of every file, merged by record time.

    Each file's records keep their file (write) order, so a record stamped earlier than the
    one before it (the writer's clock went back) stays where it was written. Ties between
    files go to the file named first: the order is the same on every run.
    """
    chains = [_chain_records(files, chain, on_problem, chunk_bytes) for chain in _chains(files)]
    if len(chains) == 1:
        return chains[0]
    return heapq.merge(*chains, key=_record_time)


def _record_time(item: tuple[int, Record]) -> int:
    return item[1].ts_ns


def format_problem(p: Problem) -> str:
    skipped = f", {p.skipped_bytes} bytes skipped" if p.skipped_bytes else ""
    return f"{p.path}: {p.kind} at offset {p.offset}{skipped}: {p.detail}"


def problem_as_dict(p: Problem) -> dict:
    return {"path": p.path, "kind": p.kind, "offset": p.offset, "skipped_bytes": p.skipped_bytes,
            "detail": p.detail}


def span_text(seconds: float) -> str:
    """1h02m03.5s, 2m00.0s, 4.25s."""
    if seconds < 60:
        return f"{seconds:.3g}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}h{minutes:02d}m{secs:04.1f}s" if hours else f"{minutes}m{secs:04.1f}s"

