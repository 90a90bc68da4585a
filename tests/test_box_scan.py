"""``strategy-box --scan-chain``'s arithmetic (hedgepipe.boxes.scan), on a hand-made chain file
and on the recorded chain (issue 5, "An offline mode with a fixed contract").

Offline conventions: top of book only; option fee min(0.0003, 0.125 x price) BTC per leg; the
forward (for buying and selling the hedge) is the median underlying_price of the expiry's rows;
hedge fee 0.0005 of |premium + fees| x forward.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import Counter, defaultdict
from itertools import combinations

import pytest

from hedgepipe.boxes.chain import CALL, PUT
from hedgepipe.boxes.scan import load_chains, write_scan
from hedgepipe.errors import DataError, InputMissing

#: The header of ../shared/data/deribit/btc_option_chain_2020-05-21.csv (first column unnamed).
HEADER = ("", "expiration_timestamp", "option_type", "instrument_name", "strike", "underlying_price",
          "underlying_index", "timestamp", "stats", "state", "settlement_price", "open_interest", "min_price",
          "max_price", "mark_price", "mark_iv", "last_price", "interest_rate", "index_price", "greeks",
          "estimated_delivery_price", "change_id", "bids", "bid_iv", "best_bid_price", "best_bid_amount",
          "best_ask_price", "best_ask_amount", "asks", "ask_iv")

MAY22 = 1_590_134_400_000   # 22MAY20 08:00 UTC (ms)
JUN5 = 1_591_344_000_000    # 5JUN20 08:00 UTC
#: The newest row: half a day before 22MAY20's expiry, 14.5 days before 5JUN20's.
NOW_MS = MAY22 - 43_200_000


def _row(expiry_ms, code, strike, kind, underlying, bid, bid_amount, ask, ask_amount, ts=NOW_MS - 5_000):
    return {"expiration_timestamp": expiry_ms, "option_type": kind, "strike": strike,
            "instrument_name": f"BTC-{code}-{strike}-{'C' if kind == 'call' else 'P'}",
            "underlying_price": underlying, "timestamp": ts, "best_bid_price": bid,
            "best_bid_amount": bid_amount, "best_ask_price": ask, "best_ask_amount": ask_amount}


# 22MAY20: underlying 9000, 9096, 9099, 9100, 9101, 9102, 9104 -> median 9100 (the call-only 8500
# row counts in the median, its strike does not: it has no put).
# 5JUN20: underlying 9110, 9120, 9130, 9140 -> median (9120 + 9130) / 2 = 9125.
ROWS = [
    _row(MAY22, "22MAY20", 8500, "call", 9000.0, 0.0700, 1.0, 0.0750, 1.0),
    _row(MAY22, "22MAY20", 9000, "call", 9100.0, 0.0600, 2.0, 0.0650, 1.27),
    _row(MAY22, "22MAY20", 9000, "put", 9104.0, 0.0480, 3.0, 0.0520, 4.0),
    _row(MAY22, "22MAY20", 9500, "call", 9096.0, 0.0300, 5.0, 0.0330, 0.5),
    _row(MAY22, "22MAY20", 9500, "put", 9101.0, 0.0620, 1.0, 0.0660, 2.5, ts=NOW_MS),
    # 10000: the call's ask is zero and the put has no ask at all
    _row(MAY22, "22MAY20", 10000, "call", 9099.0, 0.0120, 6.0, 0.0, 0.0),
    _row(MAY22, "22MAY20", 10000, "put", 9102.0, 0.1080, 0.8, "", ""),
    _row(JUN5, "5JUN20", 8000, "call", 9110.0, 0.1400, 1.0, 0.1500, 2.0),
    _row(JUN5, "5JUN20", 8000, "put", 9140.0, 0.0020, 3.0, 0.0025, 1.5),
    _row(JUN5, "5JUN20", 10000, "call", 9120.0, 0.0400, 0.7, 0.0450, 2.2),
    _row(JUN5, "5JUN20", 10000, "put", 9130.0, 0.1300, 1.1, 0.1400, 0.9),
]

# The four evaluated boxes, worked by hand (edge_usd is rounded to 6 decimals by the scan):
#
# 22MAY20 long 9000/9500: buy C9000 0.0650, sell P9000 0.0480, sell C9500 0.0300, buy P9500 0.0660
#   premium 0.0530 + fees 4 x 0.0003 = 0.0542 BTC -> 0.0542 x 9100 = 493.22 USD, fee 0.24661
#   edge = 500 - 493.22 - 0.24661 = 6.53339; size min(1.27, 3.0, 5.0, 2.5) = 1.27 -> 1.2
# 22MAY20 short 9000/9500: sell C9000 0.0600, buy P9000 0.0520, buy C9500 0.0330, sell P9500 0.0620
#   credit 0.0370 - fees 0.0012 = 0.0358 BTC -> 325.78 USD, fee 0.16289
#   edge = 325.78 - 500 - 0.16289 = -174.38289; size min(2.0, 4.0, 0.5, 1.0) = 0.5
# 22MAY20 with 10000: long boxes buy P10000 at its ask (none), short ones buy C10000 at 0: absent.
# 5JUN20 long 8000/10000: buy C8000 0.1500, sell P8000 0.0020, sell C10000 0.0400, buy P10000 0.1400
#   premium 0.2480; fees 0.0003 + 0.00025 (0.125 x 0.002, capped) + 0.0003 + 0.0003 = 0.00115
#   b = 0.24915 BTC -> 0.24915 x 9125 = 2273.49375 USD, fee 1.136746875
#   edge = 2000 - 2273.49375 - 1.136746875 = -274.630496875 -> -274.630497; size min(2, 3, .7, .9) = 0.7
# 5JUN20 short 8000/10000: sell C8000 0.1400, buy P8000 0.0025, buy C10000 0.0450, sell P10000 0.1300
#   credit 0.2225; fees 4 x 0.0003 (0.125 x 0.0025 = 0.0003125 > 0.0003) -> 0.2213 BTC
#   0.2213 x 9125 = 2019.3625 USD, fee 1.00968125; edge = 2019.3625 - 2000 - 1.00968125 = 18.35281875
#   -> 18.352819; size min(1.0, 1.5, 2.2, 1.1) = 1.0
EXPECTED = [
    {"expiry": "22MAY20", "k1": 9000.0, "k2": 9500.0, "side": "long", "edge_usd": 6.53339, "size": 1.2,
     "forward": 9100.0},
    {"expiry": "22MAY20", "k1": 9000.0, "k2": 9500.0, "side": "short", "edge_usd": -174.38289, "size": 0.5,
     "forward": 9100.0},
    {"expiry": "5JUN20", "k1": 8000.0, "k2": 10000.0, "side": "long", "edge_usd": -274.630497, "size": 0.7,
     "forward": 9125.0},
    {"expiry": "5JUN20", "k1": 8000.0, "k2": 10000.0, "side": "short", "edge_usd": 18.352819, "size": 1.0,
     "forward": 9125.0},
]
KEYS = ("expiry", "k1", "k2", "side", "edge_usd", "size", "forward")


def _write(path, rows, header=HEADER):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, restval="")
        writer.writeheader()
        for n, row in enumerate(rows):
            writer.writerow({"": n, **row})
    return str(path)


def _scan(path, **kwargs) -> list[dict]:
    out = io.StringIO()
    count = write_scan(path, out, **kwargs)
    lines = out.getvalue().splitlines()
    assert count == len(lines)
    return [json.loads(line) for line in lines]


def _contract(rows: list[dict]) -> list[dict]:
    return [{key: row[key] for key in KEYS} for row in rows]


def test_every_box_hand_worked(tmp_path):
    rows = _scan(_write(tmp_path / "chain.csv", ROWS), every=True)
    got = _contract(rows)
    assert [r["edge_usd"] for r in got] == pytest.approx([e["edge_usd"] for e in EXPECTED], abs=1e-6)
    assert [r["size"] for r in got] == pytest.approx([e["size"] for e in EXPECTED], abs=1e-9)
    for row, want in zip(got, EXPECTED):
        assert {k: row[k] for k in ("expiry", "k1", "k2", "side", "forward")} == \
               {k: want[k] for k in ("expiry", "k1", "k2", "side", "forward")}
    assert len(got) == len(EXPECTED)


def test_the_breakdown_of_a_row(tmp_path):
    row = _scan(_write(tmp_path / "chain.csv", ROWS), every=True)[0]
    assert row["legs"] == [["BTC-22MAY20-9000-C", "buy", 0.065, 1.27], ["BTC-22MAY20-9000-P", "sell", 0.048, 3.0],
                           ["BTC-22MAY20-9500-C", "sell", 0.03, 5.0], ["BTC-22MAY20-9500-P", "buy", 0.066, 2.5]]
    assert row["premium_btc"] == pytest.approx(0.053, abs=1e-10)
    assert row["option_fees_btc"] == pytest.approx(0.0012, abs=1e-10)
    assert row["hedge_btc"] == pytest.approx(0.0542, abs=1e-10)
    assert row["hedge_usd"] == pytest.approx(493.22, abs=1e-6)
    assert row["hedge_fee_usd"] == pytest.approx(0.24661, abs=1e-6)
    assert row["total_usd"] == pytest.approx(7.840068, abs=1e-6)        # 1.2 x 6.53339
    # time from the newest row (12:00 on 21 May) to 08:00 on 22 May: 0.5 day
    assert row["days"] == pytest.approx(0.5)
    # 6.53339 USD on 493.46661 USD of capital for half a day: 6.53339 / 493.46661 x 730 = 9.66504
    assert row["annual_rate"] == pytest.approx(9.66504, abs=1e-5)
    jun_short = _scan(_write(tmp_path / "chain.csv", ROWS), every=True)[3]
    assert jun_short["days"] == pytest.approx(14.5)
    assert jun_short["hedge_btc"] == pytest.approx(-0.2213, abs=1e-10)
    # a short box ties up its width: 18.35281875 / 2000 x 365 / 14.5 = 0.230992
    assert jun_short["annual_rate"] == pytest.approx(0.230992, abs=1e-6)


@pytest.mark.parametrize("min_edge, expected", [
    (0.0, [0, 3]),          # 6.53339 and 18.352819
    (10.0, [3]),            # 18.352819 only
    (-200.0, [0, 1, 3]),    # -274.630497 is the one below
    (-1e9, [0, 1, 2, 3]),
    (20.0, []),
])
def test_min_edge_filters_and_all_keeps_every_evaluated_box(tmp_path, min_edge, expected):
    path = _write(tmp_path / "chain.csv", ROWS)
    got = _contract(_scan(path, min_edge=min_edge))
    assert [(r["expiry"], r["side"]) for r in got] == [(EXPECTED[n]["expiry"], EXPECTED[n]["side"])
                                                       for n in expected]
    # --all ignores min_edge
    assert len(_scan(path, min_edge=min_edge, every=True)) == 4


def test_default_min_edge_is_zero(tmp_path):
    assert [r["edge_usd"] for r in _scan(_write(tmp_path / "chain.csv", ROWS))] == \
           pytest.approx([6.53339, 18.352819], abs=1e-6)
    # P9500 ask 0.0668 instead of 0.0660: premium 0.0650 - 0.0480 - 0.0300 + 0.0668 = 0.0538,
    # + 0.0012 = 0.0550 BTC -> 500.5 USD, fee 0.25025: edge = 500 - 500.5 - 0.25025 = -0.75025
    rows = [dict(r) for r in ROWS]
    rows[4]["best_ask_price"] = 0.0668
    path = _write(tmp_path / "chain2.csv", rows)
    assert [r["edge_usd"] for r in _scan(path)] == pytest.approx([18.352819], abs=1e-6)
    assert [r["edge_usd"] for r in _scan(path, min_edge=-1.0)] == pytest.approx([-0.75025, 18.352819], abs=1e-6)


def test_a_strike_needs_both_a_call_and_a_put(tmp_path):
    chains, now_ns = load_chains(_write(tmp_path / "chain.csv", ROWS))
    assert [c.code for c in chains] == ["22MAY20", "5JUN20"]
    assert chains[0].strikes.tolist() == [9000.0, 9500.0, 10000.0]    # no 8500 (call only)
    assert chains[0].forward_ask == chains[0].forward_bid == 9100.0
    assert now_ns == NOW_MS * 1_000_000
    # given its put, 8500 becomes a strike with boxes: long 8500/9000 and short 8500/9000, 8500/9500
    with_put = ROWS + [_row(MAY22, "22MAY20", 8500, "put", 9100.0, 0.0300, 1.0, 0.0320, 1.0)]
    chains, _ = load_chains(_write(tmp_path / "chain2.csv", with_put))
    assert chains[0].strikes.tolist() == [8500.0, 9000.0, 9500.0, 10000.0]


def test_a_zero_or_missing_price_means_no_box(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[9]["best_bid_price"] = ""      # 5JUN20 C10000 bid: the long box sells it
    rows[10]["best_bid_price"] = 0.0    # 5JUN20 P10000 bid: the short box sells it
    got = _contract(_scan(_write(tmp_path / "chain.csv", rows), every=True))
    assert [(r["expiry"], r["side"]) for r in got] == [("22MAY20", "long"), ("22MAY20", "short")]


def test_an_expiry_without_an_underlying_price_has_no_box(tmp_path):
    rows = [dict(r, underlying_price="") if r["expiration_timestamp"] == JUN5 else r for r in ROWS]
    got = _contract(_scan(_write(tmp_path / "chain.csv", rows), every=True))
    assert [r["expiry"] for r in got] == ["22MAY20", "22MAY20"]


def test_a_bad_number_names_its_line(tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[2]["best_ask_price"] = "0.05x"   # the 4th line of the file (header = line 1)
    with pytest.raises(DataError, match=r"chain\.csv line 4: best_ask_price '0\.05x'"):
        _scan(_write(tmp_path / "chain.csv", rows))
    rows = [dict(r) for r in ROWS]
    rows[6]["strike"] = "ten thousand"
    with pytest.raises(DataError, match=r"line 8: strike"):
        _scan(_write(tmp_path / "chain.csv", rows))


def test_not_a_chain_file(tmp_path):
    with pytest.raises(DataError, match="no column best_ask_price"):
        _scan(_write(tmp_path / "chain.csv", [], header=tuple(h for h in HEADER if h != "best_ask_price")))


def test_a_missing_file(tmp_path):
    with pytest.raises(InputMissing, match="nothing.csv"):
        _scan(str(tmp_path / "nothing.csv"))


# ---- the recorded chain ------------------------------------------------------------------------

CHAIN_FILE = "deribit/btc_option_chain_2020-05-21.csv"


@pytest.fixture(scope="module")
def real_chain(shared_data):
    path = str(shared_data / CHAIN_FILE)
    out = io.StringIO()
    write_scan(path, out, every=True)
    return path, out.getvalue()


def _csv_book(path):
    """{expiry code: {strike: {CALL|PUT: (bid, bid_amount, ask, ask_amount)}}}, underlying by expiry."""
    book = defaultdict(lambda: defaultdict(dict))
    underlying = defaultdict(list)
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            code = row["instrument_name"].split("-")[1]
            underlying[code].append(float(row["underlying_price"]))

            def num(column):
                return float(row[column]) if row[column] else 0.0
            option = CALL if row["option_type"] == "call" else PUT
            book[code][float(row["strike"])][option] = (num("best_bid_price"), num("best_bid_amount"),
                                                        num("best_ask_price"), num("best_ask_amount"))
    return book, underlying


def test_real_chain_scan_is_stable(real_chain):
    path, first = real_chain
    again = io.StringIO()
    write_scan(path, again, every=True)
    assert again.getvalue() == first
    assert first.count("\n") > 1000


def test_real_chain_counts_every_box_with_four_prices(real_chain):
    path, text = real_chain
    book, _ = _csv_book(path)
    expected = Counter()
    for code, strikes in book.items():
        both = sorted(k for k, quotes in strikes.items() if len(quotes) == 2)
        for k1, k2 in combinations(both, 2):
            c1, p1, c2, p2 = strikes[k1][CALL], strikes[k1][PUT], strikes[k2][CALL], strikes[k2][PUT]
            # (price, amount) of the traded side: bid = [0:2], ask = [2:4]
            long_legs = (c1[2:], p1[:2], c2[:2], p2[2:])
            short_legs = (c1[:2], p1[2:], c2[2:], p2[:2])
            for side, legs in (("long", long_legs), ("short", short_legs)):
                if all(price > 0 and amount > 0 for price, amount in legs):
                    expected[(code, side)] += 1
    got = Counter((r["expiry"], r["side"]) for r in map(json.loads, text.splitlines()))
    assert got == expected
    assert sum(got.values()) == 2052   # as counted on 2020-05-21's file


def test_real_chain_results_are_plausible(real_chain):
    path, text = real_chain
    rows = [json.loads(line) for line in text.splitlines()]
    book, underlying = _csv_book(path)
    index = 9096.0   # BTC index while the file was recorded (its index_price column: 9085 to 9096)
    for code, prices in underlying.items():
        forward = {r["forward"] for r in rows if r["expiry"] == code}
        assert forward == {round(statistics.median(prices), 6)}, code   # printed to 6 decimals
        # dated futures trade above the index (25DEC20: 9262, +1.8 %): the forward is near, not equal
        assert abs(forward.pop() / index - 1) < 0.025, code
    for r in rows:
        assert set(KEYS) <= set(r)
        assert r["size"] >= 0.1 - 1e-9 and abs(r["size"] * 10 - round(r["size"] * 10)) < 1e-6, r
        assert r["edge_usd"] < 50.0, r                        # no free money on this file
        c1, p1, c2, p2 = (f"BTC-{r['expiry']}-{k:g}-{t}" for k, t in
                          ((r["k1"], "C"), (r["k1"], "P"), (r["k2"], "C"), (r["k2"], "P")))
        sides = ("buy", "sell", "sell", "buy") if r["side"] == "long" else ("sell", "buy", "buy", "sell")
        assert [leg[:2] for leg in r["legs"]] == [[c1, sides[0]], [p1, sides[1]], [c2, sides[2]], [p2, sides[3]]]
        # the size fits in every leg and is within one lot of the thinnest
        thinnest = min(leg[3] for leg in r["legs"])
        assert thinnest - 0.1 < r["size"] <= thinnest + 1e-9, r
    # Where a pair has both boxes, long + short is a round trip over the same four instruments:
    # it loses the four bid-ask spreads x F, the eight option fees (<= 8 x 0.0003 BTC) x F and
    # both hedge fees -- never less than the spreads, never more than spreads + fees.
    by_pair = defaultdict(dict)
    for r in rows:
        by_pair[(r["expiry"], r["k1"], r["k2"])][r["side"]] = r
    checked = 0
    for (code, k1, k2), sides in by_pair.items():
        if len(sides) < 2:
            continue
        spreads = sum(q[2] - q[0] for q in (book[code][k][o] for k in (k1, k2) for o in (CALL, PUT)))
        forward = sides["long"]["forward"]
        round_trip = sides["long"]["edge_usd"] + sides["short"]["edge_usd"]
        hedge_fees = sides["long"]["hedge_fee_usd"] + sides["short"]["hedge_fee_usd"]
        assert round_trip <= -spreads * forward + 1e-5
        assert round_trip >= -(spreads + 8 * 0.0003) * forward - hedge_fees - 1e-5   # 6-decimal rounding
        checked += 1
    assert checked > 500
    # Boxes whose four legs are all quoted within 0.02 BTC (about 180 USD) of bid to ask: their
    # edges are a few hundred USD of spread at worst, never a gain.
    def tight_quotes(r):
        quotes = [book[r["expiry"]][k][o] for k in (r["k1"], r["k2"]) for o in (CALL, PUT)]
        return all(bid > 0 and 0 < ask - bid <= 0.02 for bid, _, ask, _ in quotes)
    tight = [r for r in rows if tight_quotes(r)]
    assert len(tight) > 100
    assert all(-500.0 < r["edge_usd"] < 50.0 for r in tight)


def test_real_chain_best_box_of_each_side_hand_worked(real_chain):
    # The first rows of the note's table (docs/strategy-box-arithmetic.md), redone by hand from the file.
    _, text = real_chain
    rows = [json.loads(line) for line in text.splitlines()]
    best = {side: max((r for r in rows if r["side"] == side), key=lambda r: r["edge_usd"])
            for side in ("long", "short")}
    # long 22MAY20 9000/9500, forward 9085.44 (median underlying_price of the 58 22MAY20 rows):
    # buy C9000 0.0175 (10), sell P9000 0.006 (21), sell C9500 0.001 (24), buy P9500 0.0465 (0.1)
    # premium 0.057; fees 0.0003 + 0.0003 + 0.000125 (0.125 x 0.001, capped) + 0.0003 = 0.001025
    # b = 0.058025 -> 0.058025 x 9085.44 = 527.182656 USD, fee 0.263591328
    # edge = 500 - 527.182656 - 0.263591328 = -27.446247328; size min(10, 21, 24, 0.1) = 0.1
    long = best["long"]
    assert (long["expiry"], long["k1"], long["k2"], long["forward"]) == ("22MAY20", 9000.0, 9500.0, 9085.44)
    assert long["edge_usd"] == pytest.approx(-27.446247, abs=1e-6)
    assert long["size"] == pytest.approx(0.1)
    # short 23MAY20 9000/9125, forward 9085.6:
    # sell C9000 0.023 (9.7), buy P9000 0.0155 (35), buy C9125 0.017 (27.3), sell P9125 0.0195 (11.6)
    # credit 0.010 - fees 0.0012 = 0.0088 BTC sold -> 79.95328 USD, fee 0.03997664
    # edge = 79.95328 - 125 - 0.03997664 = -45.08669664; size 9.7
    short = best["short"]
    assert (short["expiry"], short["k1"], short["k2"]) == ("23MAY20", 9000.0, 9125.0)
    assert short["forward"] == pytest.approx(9085.6, abs=1e-9)
    assert short["edge_usd"] == pytest.approx(-45.086697, abs=1e-6)
    assert short["size"] == pytest.approx(9.7)
