"""hedgepipe stats: what is in journal files, per instrument and per index, as tables or JSON.

Records are streamed (merged by time across files, as replay sends them) into the
accumulators of :mod:`journal_stats`; the table is drawn from the same document ``--json``
prints. docs/replay-and-stats.md defines every figure.
"""

from __future__ import annotations

import json
import os

import click

from ..cli import guarded
from ..clock import SystemClock
from ..config import load_settings
from ..journal import utc_day
from .journal_input import NoJournalError, RecordFilter, filter_options, merged_records, resolve_journals, span_text
from .journal_stats import EXACT_VALUES, MIN_RETURNS, SKETCH_RELATIVE_ERROR, VOL_WINDOWS, StatsCollector


def collect(paths: list[str], record_filter: RecordFilter) -> dict:
    """The stats document of the journals under ``paths`` (raises the journal_input errors)."""
    journals = resolve_journals(paths)
    collector = StatsCollector()
    for problem in journals.skipped:
        collector.add_problem(problem)
    counts = [0] * len(journals.files)
    for index, record in merged_records(journals.files, collector.add_problem):
        if record_filter(record):
            counts[index] += 1
            collector.add(record)
    files = [{"path": str(p), "records": n} for p, n in zip(journals.files, counts)]
    return collector.document(files, record_filter.describe())


# ---- the table ------------------------------------------------------------------------------

def _table(headers: list[str], rows: list[list[str]], left: int) -> list[str]:
    """Columns padded to their widest cell; the first ``left`` columns flush left."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) if i < left else c.rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in [headers, *rows]]


def fmt_price(x: float | str | None) -> str:
    if x is None:
        return "-"
    return x if isinstance(x, str) else f"{x:.8g}"  # (a str: "nan" or "inf", as read)


def fmt_spread(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def fmt_bps(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def fmt_vol(v: dict) -> str:
    if v["vol"] is None:
        return f"n/a ({v['returns']})"
    return f"{v['vol'] * 100:.2f}% ({v['returns']})"


def render_table(doc: dict) -> str:
    same_day = doc["first"] is not None and doc["first"][:10] == doc["last"][:10]

    def when(text: str | None) -> str:
        if text is None:
            return "-"
        return text[11:-1] if same_day else text

    out = []
    head = f"{len(doc['files'])} files, {doc['records']} records"
    if doc["first"] is not None:
        day = f"{doc['first'][:10]} " if same_day else ""
        head += (f", {day}{when(doc['first'])} .. {when(doc['last'])} UTC "
                 f"({span_text(doc['span_s'])})")
    out.append(head)
    flt = doc["filter"]
    if flt["topics"] or flt["from"] or flt["to"]:
        out.append(f"filter: topics {', '.join(flt['topics']) or 'all'}; from {flt['from'] or '-'}; "
                   f"to {flt['to'] or '-'}")
    out.append("kinds: " + (", ".join(f"{k} {n}" for k, n in doc["kinds"].items()) or "none"))
    if doc["unknown_topics"]:
        out.append(f"unknown topics (no message type, counted under their kind): {doc['unknown_topics']}")
    if doc["decode_errors"]:
        out.append("decode errors: " + ", ".join(f"{k} {n}" for k, n in doc["decode_errors"].items()))
    seq = doc["sequence"]
    out.append(f"sequence: {seq['gaps']} gaps, {seq['missed']} missed, {seq['resets']} resets")

    if doc["instruments"]:
        rows = [[i["stage"], i["venue"], i["instrument"], *(str(i["counts"][k]) for k in i["counts"]),
                 when(i["first"]), when(i["last"]), span_text(i["span_s"]),
                 f"{i['max_time_gap_s']:.3f}", str(i["sequence"]["gaps"]), str(i["sequence"]["missed"]),
                 str(i["sequence"]["resets"]), str(i["stale_books"])]
                for i in doc["instruments"]]
        out += ["", "INSTRUMENTS (times: journal record time)"]
        out += _table(["STAGE", "VENUE", "INSTRUMENT", "BOOK", "TICKER", "TRADE", "INSTR", "FIRST",
                       "LAST", "SPAN", "MAX-GAP-S", "GAPS", "MISSED", "RESETS", "STALE"], rows, 3)
        rows = [[i["stage"], i["venue"], i["instrument"], source, str(s["n"]), fmt_spread(s["mean"]),
                 fmt_spread(s["median"]), fmt_spread(s["p95"]), fmt_bps(s["mean_bps"]),
                 fmt_bps(s["median_bps"]), fmt_bps(s["p95_bps"])]
                for i in doc["instruments"] for source, s in i["spread"].items() if s]
        if rows:
            out += ["", f"SPREADS (ask - bid where both exist; bps of the mid; median and p95 "
                        f"exact up to {EXACT_VALUES} distinct values, else within "
                        f"{SKETCH_RELATIVE_ERROR:.1%})"]
            out += _table(["STAGE", "VENUE", "INSTRUMENT", "SOURCE", "N", "MEAN", "MEDIAN", "P95",
                           "MEAN-BPS", "MEDIAN-BPS", "P95-BPS"], rows, 4)
    if doc["indexes"]:
        rows = [[x["stage"], x["source"], x["name"], str(x["count"]), fmt_price(x["first_price"]),
                 fmt_price(x["last_price"]), when(x["first"]), when(x["last"]),
                 str(x["sequence"]["gaps"]), str(x["sequence"]["missed"]),
                 *(fmt_vol(x["realized_vol"][name]) for name, _ in VOL_WINDOWS)]
                for x in doc["indexes"]]
        out += ["", f"INDEXES (realized vol annualised, (returns); n/a under {MIN_RETURNS} returns)"]
        out += _table(["STAGE", "SOURCE", "NAME", "COUNT", "FIRST-PRICE", "LAST-PRICE", "FIRST",
                       "LAST", "GAPS", "MISSED", *(f"VOL-{name.upper()}" for name, _ in VOL_WINDOWS)],
                      rows, 3)
    if doc["problems"]:
        rows = [[p["path"], str(p["offset"]), p["kind"], str(p["skipped_bytes"]), p["detail"]]
                for p in doc["problems"]]
        out += ["", "PROBLEMS (offsets in the uncompressed file)"]
        out += _table(["FILE", "OFFSET", "KIND", "SKIPPED", "DETAIL"], rows, 1)
    return "\n".join(out)


def todays_journal(config_path: str | None, clock=SystemClock()) -> str:
    """Today's (UTC) journal folder of the configured store-writer."""
    from ..daemons.store_writer import StoreWriterConfig, StoreWriterService

    settings = load_settings(StoreWriterService.name, StoreWriterConfig, config_path=config_path)
    root = settings.daemon.journal_dir.replace("{run_dir}", settings.runtime.run_dir)
    today = os.path.join(os.path.normpath(root), utc_day(clock.time_ns()))
    if not os.path.isdir(today):
        raise NoJournalError(f"no journal for today at {today}: is store-writer running "
                        "(`hedgepipe status`)? Name files or directories to read others.")
    return today


@click.command(context_settings={"show_default": True})
@click.argument("paths", nargs=-1, type=click.Path(exists=True), metavar="[FILE...]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of tables.")
@filter_options
def stats(paths, as_json, record_filter):
    """What journal files (or every journal under directories) hold; with no FILE, today's
    (UTC) journal of the configured store-writer ([store-writer] journal_dir).

    Per instrument: counts by kind, first/last time, largest time gap, sequence gaps, spread
    mean/median/p95 from books and tickers. Per index: count, first/last price, realized
    volatility on 1 min, 5 min and 1 h grids. Torn tails and corrupt records are listed under
    PROBLEMS; frames that do not decode are counted. A file that is not a journal: exit 65.
    See docs/replay-and-stats.md.
    """
    from .ctl import Control  # (ctl registers this command: imported here, not at the top)
    control = click.get_current_context().find_object(Control)
    _run(control.config_path if control else None, list(paths), as_json, record_filter)


@guarded
def _run(config_path: str | None, paths: list[str], as_json: bool, record_filter: RecordFilter) -> int:
    doc = collect(paths or [todays_journal(config_path)], record_filter)
    click.echo(json.dumps(doc, indent=1) if as_json else render_table(doc))
    return 0
