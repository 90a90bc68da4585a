"""hedgepipe stats: counts, gaps, spreads and realized volatility, worked out by hand here."""

from __future__ import annotations

import gzip
import json
import math
import random
import re

import msgspec
import pytest

from hedgepipe import messages as m
from hedgepipe.errors import EX_DATAERR
from hedgepipe.journal import MAGIC
from hedgepipe.tools.journal_input import EX_NOINPUT, RecordFilter
from hedgepipe.tools.journal_stats import (EXACT_VALUES, MIN_RETURNS, SECONDS_PER_YEAR,
                                           SKETCH_RELATIVE_ERROR, QuantileSketch, RealizedVol)
from hedgepipe.tools.stats import collect

from ._journal_helpers import OPTION, SEC, T0, book, index, md_records, run_tool, ticker, trade, write_journal

PERP = "BTC-PERPETUAL"


def rec(ts, frame):
    return (ts, *frame)


@pytest.fixture
def day(tmp_path):
    """One instrument with a sequence gap, a 4 s silence, a stale book, a one-sided ticker; a
    second instrument; a heartbeat, a frame of an unknown kind and two that do not decode."""
    hb = m.Heartbeat(name="feed-deribit", pid=1, state="running", uptime_s=1.0, counters={},
                     src="feed-deribit", seq=1)
    records = [
        rec(T0, book(1, [(100.0, 1.0)], [(101.0, 1.0)])),
        rec(T0 + 1 * SEC, book(2, [(100.0, 1.0)], [(102.0, 1.0)])),
        rec(T0 + 5 * SEC, book(4, [(100.0, 1.0)], [(104.0, 1.0)])),          # seq 3 missed
        rec(T0 + 6 * SEC, book(5, [], [], stale=True)),
        rec(T0 + 6 * SEC, ticker(1, None, 105.0)),                           # one side only
        rec(T0 + 7 * SEC, ticker(2, 99.0, 101.0)),
        rec(T0 + 7 * SEC, trade(1, 100.5)),
        rec(T0 + 8 * SEC, ticker(1, 50_000.0, 50_000.5, instrument=PERP)),
        rec(T0 + 9 * SEC, ticker(2, 50_000.0, 50_001.5, instrument=PERP)),
        rec(T0 + 10 * SEC, ticker(1, 50_000.0, 50_002.0, instrument=PERP, src="feed-deribit-2")),
        rec(T0 + 11 * SEC, ticker(1, 50_000.0, 50_000.5, instrument=PERP)),  # src restarted: reset
        (T0 + 2 * SEC, b"hb.feed-deribit", m.encode(hb)),
        (T0 + 3 * SEC, b"md.weather.deribit.X", msgspec.msgpack.encode({"src": "w", "seq": 1})),
        (T0 + 3 * SEC, f"md.book.deribit.{OPTION}".encode(), b"\xc1 not msgpack"),
        (T0 + 4 * SEC, f"md.book.deribit.{OPTION}".encode(), book(0, [], [])[1]),  # seq 0: envelope
    ]
    records.sort(key=lambda r: r[0])
    write_journal(tmp_path / "j", records)
    return tmp_path / "j"


def row(doc, instrument):
    [found] = [i for i in doc["instruments"] if i["instrument"] == instrument]
    return found


def test_counts_times_and_gaps_per_instrument(day):
    doc = collect([str(day)], RecordFilter())
    assert doc["records"] == 15
    assert doc["kinds"] == {"hb": 1, "md.book": 6, "md.ticker": 6, "md.trade": 1, "md.weather": 1}
    assert doc["unknown_topics"] == 1
    assert doc["decode_errors"] == {"md.book": 2}
    opt = row(doc, OPTION)
    assert opt["counts"] == {"book": 4, "ticker": 2, "trade": 1, "instrument": 0}
    assert opt["messages"] == 7
    assert (opt["first_ns"], opt["last_ns"], opt["span_s"]) == (T0, T0 + 7 * SEC, 7.0)
    assert opt["first"] == "2026-11-23T05:00:00.000Z"
    # books at 0, 1, 5 s: the largest silence is the 4 s after the one at 1 s
    assert (opt["max_time_gap_s"], opt["max_time_gap_at"]) == (4.0, "2026-11-23T05:00:01.000Z")
    assert opt["sequence"] == {"gaps": 1, "missed": 1, "resets": 0}
    assert opt["stale_books"] == 1
    perp = row(doc, PERP)
    assert perp["sequence"] == {"gaps": 0, "missed": 0, "resets": 1}
    assert doc["sequence"] == {"gaps": 1, "missed": 1, "resets": 1}
    assert (doc["first_ns"], doc["last_ns"]) == (T0, T0 + 11 * SEC)


def test_spreads_from_books_and_tickers_worked_by_hand(day):
    doc = collect([str(day)], RecordFilter())
    book_spread = row(doc, OPTION)["spread"]["book"]
    # best bid/ask 100/101, 100/102, 100/104: spreads 1, 2, 4 (the stale book has none)
    assert book_spread["n"] == 3
    assert book_spread["mean"] == pytest.approx(7 / 3)
    assert (book_spread["median"], book_spread["p95"]) == (2.0, 4.0)  # nearest rank: 2nd, 3rd
    # in bps of the mid: 1/100.5, 2/101, 4/102 * 1e4
    assert book_spread["mean_bps"] == pytest.approx((99.50248756 + 198.01980198 + 392.15686275) / 3)
    assert book_spread["median_bps"] == pytest.approx(198.01980198)
    assert book_spread["p95_bps"] == pytest.approx(392.15686275)
    # tickers: one without a bid (no spread), one 99/101: 2 wide, 200 bps of 100
    assert row(doc, OPTION)["spread"]["ticker"] == {
        "n": 1, "mean": 2.0, "median": 2.0, "p95": 2.0, "mean_bps": 200.0, "median_bps": 200.0,
        "p95_bps": 200.0}
    perp = row(doc, PERP)["spread"]
    assert perp["book"] is None
    # 0.5, 1.5, 2.0, 0.5: sorted 0.5 0.5 1.5 2.0; median = 2nd = 0.5, p95 = 4th = 2.0
    assert (perp["ticker"]["n"], perp["ticker"]["mean"]) == (4, 1.125)
    assert (perp["ticker"]["median"], perp["ticker"]["p95"]) == (0.5, 2.0)


def test_percentiles_past_the_exact_limit_stay_within_the_stated_error():
    rng = random.Random(7)
    values = [10 ** rng.uniform(-5, 3) for _ in range(20_000)] + [0.0] * 50 + [-0.001] * 30
    sketch = QuantileSketch()
    for v in values:
        sketch.add(v)
    assert sketch.exact is None  # far more distinct values than EXACT_VALUES
    ordered = sorted(values)
    for pct in (1, 50, 95, 99):
        exact = ordered[math.ceil(pct * len(values) / 100) - 1]
        assert sketch.percentile(pct) == pytest.approx(exact, rel=SKETCH_RELATIVE_ERROR)
    assert sketch.percentile(0) == pytest.approx(-0.001, rel=SKETCH_RELATIVE_ERROR)
    # bounded: 8 decades at 0.5 % is about 8 * 461 buckets, whatever the number of values
    assert len(sketch.positive) < 8 * 470
    few = QuantileSketch()
    for v in range(EXACT_VALUES):
        few.add(v * 0.0005 + 0.0005)
    assert few.exact is not None and few.percentile(50) == 0.064


def test_realized_vol_of_alternating_returns_is_exact_and_a_short_grid_is_na():
    x = 0.001
    series = RealizedVol(60), RealizedVol(300), RealizedVol(3600)
    for k in range(61):  # one price a minute for an hour: log returns +x, -x, +x ...
        for vol in series:
            vol.observe(T0 + k * 60 * SEC, 50_000.0 * math.exp(x * (k % 2)))
    one_min, five_min, one_hour = (v.as_dict() for v in series)
    assert one_min["returns"] == 60
    assert one_min["vol"] == pytest.approx(x * math.sqrt(SECONDS_PER_YEAR / 60), rel=1e-9)
    # every 5 minutes the price has moved an odd number of steps: still +x, -x, ...
    assert five_min["returns"] == 12
    assert five_min["vol"] == pytest.approx(x * math.sqrt(SECONDS_PER_YEAR / 300), rel=1e-9)
    assert one_hour["returns"] == 1 < MIN_RETURNS
    assert one_hour["vol"] is None


def test_the_grid_takes_the_last_price_at_or_before_each_point():
    vol = RealizedVol(60)
    for t, price in ((0, 100.0), (30, 110.0), (60, 121.0), (150, 100.0)):
        vol.observe(T0 + t * SEC, price)
    vol.as_dict()
    # grid 0 s: 100; 60 s: 121 (observed exactly then); 120 s: still 121; 180 s is past the end
    assert vol.returns == 2
    assert vol.sum_sq == pytest.approx(math.log(1.21) ** 2)


def test_index_series_counts_prices_and_volatility(tmp_path):
    x = 0.002
    records = [rec(T0 + k * 60 * SEC, index(k + 1, 3000.0 * math.exp(x * (k % 2)), name="eth_usd"))
               for k in range(31)]
    records.append(rec(T0 + 5 * SEC, index(1, 3001.0, name="eth_usd", source="composite")))
    write_journal(tmp_path / "j", sorted(records, key=lambda r: r[0]))
    doc = collect([str(tmp_path / "j")], RecordFilter())
    [composite, deribit] = doc["indexes"]
    assert (composite["source"], composite["count"], composite["first_price"]) == ("composite", 1, 3001.0)
    assert (deribit["source"], deribit["name"], deribit["count"]) == ("deribit", "eth_usd", 31)
    assert deribit["first_price"] == 3000.0
    assert deribit["last_price"] == pytest.approx(3000.0)
    vols = deribit["realized_vol"]
    assert vols["1m"]["returns"] == 30
    assert vols["1m"]["vol"] == pytest.approx(x * math.sqrt(SECONDS_PER_YEAR / 60), rel=1e-9)
    assert (vols["5m"]["returns"], vols["5m"]["vol"]) == (6, None)
    assert composite["realized_vol"]["1m"] == {"interval_s": 60, "returns": 0, "vol": None}


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def section(table: str, title: str) -> list[list[str]]:
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        rows.append(cells(line))
    return rows


def test_json_parses_and_the_table_shows_the_same_numbers(day, tmp_path):
    x = 0.001
    extra = [rec(T0 + k * 60 * SEC, index(k + 1, 50_000.0 * math.exp(x * (k % 2)))) for k in range(20)]
    write_journal(tmp_path / "idx", extra)
    as_json = run_tool(["stats", str(day), str(tmp_path / "idx"), "--json"], cwd=tmp_path)
    table = run_tool(["stats", str(day), str(tmp_path / "idx")], cwd=tmp_path)
    assert as_json.returncode == 0 and table.returncode == 0, as_json.stderr + table.stderr
    doc = json.loads(as_json.stdout)
    text = table.stdout.decode()
    assert text.splitlines()[0] == ("3 files, 35 records, 2026-11-23 05:00:00.000 .. 05:19:00.000 UTC "
                                    "(19m00.0s)")
    assert f"sequence: {doc['sequence']['gaps']} gaps, {doc['sequence']['missed']} missed" in text
    instruments = {r[2]: r for r in section(text, "INSTRUMENTS")}
    for inst in doc["instruments"]:
        r = instruments[inst["instrument"]]
        assert [int(c) for c in r[3:7]] == list(inst["counts"].values())
        assert (r[7], r[8]) == (inst["first"][11:-1], inst["last"][11:-1])
        assert float(r[10]) == pytest.approx(inst["max_time_gap_s"])
        assert [int(c) for c in r[11:14]] == list(inst["sequence"].values())
    spreads = {(r[2], r[3]): r for r in section(text, "SPREADS")}
    assert len(spreads) == 3
    for inst in doc["instruments"]:
        for source, s in inst["spread"].items():
            if s is None:
                assert (inst["instrument"], source) not in spreads
                continue
            r = spreads[(inst["instrument"], source)]
            assert int(r[4]) == s["n"]
            for cell, key in zip(r[5:], ("mean", "median", "p95", "mean_bps", "median_bps", "p95_bps")):
                assert float(cell) == pytest.approx(s[key], rel=1e-5, abs=0.005)
    [idx] = section(text, "INDEXES")
    [jidx] = doc["indexes"]
    assert (idx[3], float(idx[4]), float(idx[5])) == (str(jidx["count"]), jidx["first_price"],
                                                      pytest.approx(jidx["last_price"]))
    one_min = jidx["realized_vol"]["1m"]
    assert idx[10] == f"{one_min['vol'] * 100:.2f}% ({one_min['returns']})"
    assert (idx[11], idx[12]) == ("n/a (3)", "n/a (0)")
    assert jidx["realized_vol"]["5m"] == {"interval_s": 300, "returns": 3, "vol": None}


def test_a_torn_tail_and_a_corrupt_record_are_listed_and_the_rest_counted(tmp_path):
    [path] = write_journal(tmp_path / "j", md_records(40))
    data = bytearray(gzip.decompress(path.read_bytes()))
    corrupt_at = len(MAGIC) + 5
    data[corrupt_at] ^= 0xFF  # inside the first record's header
    torn = tmp_path / "torn.hpj"
    torn.write_bytes(bytes(data[:-3]))
    result = run_tool(["stats", str(torn), "--json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["records"] == 38
    assert [(p["kind"], p["offset"]) for p in doc["problems"]] == [
        ("corrupt", len(MAGIC)), ("torn_tail", doc["problems"][1]["offset"])]
    assert doc["problems"][1]["offset"] > doc["problems"][0]["offset"]
    table = run_tool(["stats", str(torn)], cwd=tmp_path).stdout.decode()
    problems = section(table, "PROBLEMS")
    assert [(r[0], int(r[1]), r[2]) for r in problems] == [
        (str(torn), p["offset"], p["kind"]) for p in doc["problems"]]


def test_topic_and_time_window_filters(tmp_path):
    write_journal(tmp_path / "j", md_records(40))  # a record every 0.1 s, kinds in turn
    doc = collect([str(tmp_path / "j")], RecordFilter((b"md.book", b"md.trade"), T0 + SEC, T0 + 2 * SEC))
    # records 10..19 are in [1 s, 2 s): books are i % 4 == 0 (12, 16), trades 2 (10, 14, 18)
    assert doc["kinds"] == {"md.book": 2, "md.trade": 3}
    result = run_tool(["stats", str(tmp_path / "j"), "--json", "--topic", "md.index",
                       "--from", "2026-11-23T05:00:01", "--to", str(1_795_410_002)], cwd=tmp_path)
    assert json.loads(result.stdout)["kinds"] == {"md.index": 3}  # 11, 15, 19


@pytest.mark.parametrize("content", [b"", b"hello\n", msgspec.msgpack.encode([1, 2]), b"\x1f\x8b\x08junk"])
def test_a_file_that_is_not_a_journal_exits_65_naming_it(tmp_path, content):
    write_journal(tmp_path / "j", md_records(4))
    bad = tmp_path / "bad.hpj"
    bad.write_bytes(content)
    result = run_tool(["stats", str(tmp_path / "j"), str(bad)], cwd=tmp_path)
    assert result.returncode == EX_DATAERR
    assert str(bad) in result.stderr.decode()
    assert result.stdout == b""


def test_a_directory_without_journals_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no journals here")
    result = run_tool(["stats", str(tmp_path / "empty")], cwd=tmp_path)
    assert result.returncode == EX_NOINPUT
    assert "no journal files" in result.stderr.decode() and str(tmp_path / "empty") in result.stderr.decode()


def test_from_after_to_is_a_usage_error(tmp_path):
    write_journal(tmp_path / "j", md_records(4))
    result = run_tool(["stats", str(tmp_path / "j"), "--from", "2026-11-23T06:00:00Z",
                       "--to", "2026-11-23T05:00:00Z"], cwd=tmp_path)
    assert result.returncode == 2
    assert "is not before --to" in result.stderr.decode()


def test_bad_prices_keep_the_json_valid_and_stay_out_of_spreads_and_volatility(tmp_path):
    nan, inf = float("nan"), float("inf")
    records = [rec(T0, index(1, nan)), rec(T0 + SEC, index(2, 100.0)), rec(T0 + 2 * SEC, index(3, inf)),
               rec(T0, ticker(1, nan, 101.0)), rec(T0 + SEC, ticker(2, 100.0, inf)),
               rec(T0 + 2 * SEC, ticker(3, 100.0, 101.0))]
    write_journal(tmp_path / "j", sorted(records, key=lambda r: r[0]))
    result = run_tool(["stats", str(tmp_path / "j"), "--json"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    [idx] = doc["indexes"]
    assert (idx["count"], idx["first_price"], idx["last_price"], idx["bad_prices"]) == (3, "nan", "inf", 2)
    assert row(doc, OPTION)["spread"]["ticker"]["n"] == 1
    table = run_tool(["stats", str(tmp_path / "j")], cwd=tmp_path)
    assert table.returncode == 0 and section(table.stdout.decode(), "INDEXES")[0][4:6] == ["nan", "inf"]


def test_a_file_named_twice_is_counted_once(tmp_path):
    [path] = write_journal(tmp_path / "j", md_records(8))
    doc = collect([str(tmp_path / "j"), str(path)], RecordFilter())
    assert doc["records"] == 8 and len(doc["files"]) == 1


def test_clean_frames_get_their_own_rows_beside_the_md_ones(tmp_path):
    md_book = book(1, [(100.0, 1.0)], [(101.0, 1.0)])
    clean_book = (b"clean" + md_book[0][2:], book(1, [(100.0, 1.0)], [(103.0, 1.0)], src="etl-filter")[1])
    clean_ticker = (f"clean.ticker.deribit.{OPTION}".encode(), ticker(1, 99.0, 101.0, src="etl-filter")[1])
    write_journal(tmp_path / "j", [rec(T0, md_book), rec(T0 + 1, clean_book), rec(T0 + 2, clean_ticker)])
    doc = collect([str(tmp_path / "j")], RecordFilter())
    rows = {(i["stage"], i["instrument"]): i for i in doc["instruments"]}
    assert set(rows) == {("md", OPTION), ("clean", OPTION)}
    assert rows[("md", OPTION)]["counts"]["book"] == 1
    assert rows[("md", OPTION)]["spread"]["book"]["mean"] == 1.0
    clean = rows[("clean", OPTION)]
    assert (clean["counts"]["book"], clean["counts"]["ticker"], clean["counts"]["instrument"]) == (1, 1, 0)
    assert (clean["spread"]["book"]["mean"], clean["spread"]["ticker"]["mean"]) == (3.0, 2.0)
