"""strategy-box as a real process: on a pipe of market frames, and its --scan-chain CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess

import pytest

from hedgepipe import messages as m
from hedgepipe.pipeframe import FrameReader, encode_frame

from .conftest import REPO
from .frames import BOX_PREFIX, box_books, box_instruments, box_option, future_book, md, md_trade

STRATEGY_BOX = REPO / "bin" / "strategy-box"
FUTURE_BID, FUTURE_ASK = 99997.5, 100002.5
C95, P95, C100 = box_option(95000, "C"), box_option(95000, "P"), box_option(100000, "C")
#: tests/test_strategy_box.py's market: the 95000 call 0.01 BTC cheap (its ask for 2.37), which
#: opens exactly the structures that buy it.
MARKET = {C95: (0.0735, 5.0, 0.0745, 2.37), P95: (0.0335, 4.0, 0.0345, 3.0), C100: (0.0565, 6.0, 0.0575, 3.0)}
CHEAP_CALL_IDS = {"BTC-27DEC26-95000-100000-LBOX", "BTC-27DEC26-95000-105000-LBOX",
                  "BTC-27DEC26-95000-110000-LBOX", "BTC-27DEC26-90000-95000-SBOX", "BTC-27DEC26-95000-REV"}


def env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("HEDGEPIPE_")}


def frame(topic: str, msg) -> bytes:
    return encode_frame(topic.encode(), m.encode(msg))


def market_stream(stage: str = "md") -> bytes:
    """The market as one pipe: instruments, the future's book, every option's book, with a
    trade (a type it does not use) and a garbage frame in between."""
    frames = box_instruments() + [future_book(FUTURE_BID, FUTURE_ASK)] + box_books(over=MARKET)
    types = {"instrument": m.CleanInstrument, "book": m.CleanBook}
    if stage == "clean":
        frames = [(topic.replace("md.", "clean.", 1), types[topic.split(".")[1]](**m.to_builtins(msg)))
                  for topic, msg in frames]
    trade = (md("trade", C95), md_trade(1, name=C95))
    if stage == "clean":
        trade = ("clean" + trade[0][2:], m.CleanTrade(**m.to_builtins(trade[1])))
    head, tail = frames[:11], frames[11:]
    return b"".join([*(frame(t, msg) for t, msg in head), frame(*trade), b"\x00garbage\xff",
                     *(frame(t, msg) for t, msg in tail)])


def run_daemon(tmp, stream: bytes, *args: str) -> tuple[list, str]:
    config = tmp / "hedgepipe.toml"
    config.write_text(f'[runtime]\nrun_dir = "{tmp}/run"\nheartbeat_interval_s = 0.2\n')
    # Quotes age on the process's monotonic clock: a slow start must not close what it opened.
    proc = subprocess.run([str(STRATEGY_BOX), "--config", str(config), "--in", "-", "--out", "-",
                           "--set", "max_quote_age_s=3600", *args], input=stream, capture_output=True,
                          cwd=REPO, env=env(), timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    reader = FrameReader(1 << 20)
    got = [(t.decode(), m.decode(t.decode(), p)) for t, p in reader.feed(proc.stdout)]
    assert reader.pending == 0
    return got, proc.stderr.decode()


@pytest.mark.parametrize("stage, args", [("md", ("--topic", "md.")), ("clean", ())])
def test_on_a_pipe_it_signals_the_boxes_of_the_market(short_tmp, stage, args):
    got, stderr = run_daemon(short_tmp, market_stream(stage), *args)
    signals = [(t, msg) for t, msg in got if t.startswith("signal.box.")]
    assert sorted(msg.opp_id for _, msg in signals) == sorted(CHEAP_CALL_IDS)
    assert all(t == f"signal.box.deribit.{msg.opp_id}" and msg.event == "open" and msg.src == "strategy-box"
               for t, msg in signals)
    box = next(msg for _, msg in signals if msg.opp_id == "BTC-27DEC26-95000-100000-LBOX")
    # 5000 - (0.042 + 0.0012) x 100002.5 x 1.0005 (tests/test_strategy_box.py works it out)
    assert box.edge_usd == pytest.approx(677.731946, abs=1e-6)
    assert box.hedge == m.SignalLeg(instrument=BOX_PREFIX, side="buy", price=FUTURE_ASK, amount=9940.0,
                                    kind="future")
    assert not [t for t, _ in got if t.startswith("order.intent.")]          # no --trade
    beats = [msg for t, msg in got if t == "hb.strategy-box"]
    assert beats and beats[-1].state == "draining"
    c = beats[-1].counters
    assert {k: c[k] for k in ("quotes", "opened", "open", "intents", "ignored", "decode_errors")} == {
        "quotes": 10, "opened": 5, "open": 5, "intents": 0, "ignored": 1, "decode_errors": 1}
    assert "decode_error" in stderr


def test_with_trade_it_also_publishes_the_intent_groups(short_tmp):
    got, _ = run_daemon(short_tmp, market_stream(), "--topic", "md.", "--trade")
    signals = {msg.opp_id: msg for t, msg in got if t.startswith("signal.box.")}
    intents = [(t, msg) for t, msg in got if t.startswith("order.intent.")]
    assert set(signals) == CHEAP_CALL_IDS
    # the reversal opens first and its group takes C95's offer; the boxes that also buy it are cut
    assert len(intents) == 3                          # the reversal: 2 legs + hedge
    assert all(t == f"order.intent.deribit.{msg.instrument}" for t, msg in intents)
    assert len({msg.intent_id for _, msg in intents}) == 3
    assert all(len(msg.intent_id) <= 64 for _, msg in intents)
    groups = {signal.group_id for signal in signals.values()} - {""}
    assert len(groups) == 1 and groups == {msg.group_id for _, msg in intents}
    assert [(i.leg, i.instrument) for _, i in intents] == [(0, C95), (1, P95), (2, BOX_PREFIX)]
    counters = [msg for t, msg in got if t == "hb.strategy-box"][-1].counters
    assert (counters["intents"], counters["intents_cut"], counters["opened"]) == (3, 4, 5)


def test_all_without_scan_chain_is_a_usage_error(short_tmp):
    proc = subprocess.run([str(STRATEGY_BOX), "--all"], capture_output=True, text=True, cwd=REPO, env=env(),
                          timeout=30)
    assert proc.returncode == 2
    assert "--all goes with --scan-chain" in proc.stderr


# ---- --scan-chain ---------------------------------------------------------------------------------

#: The columns of ../shared/data/deribit/btc_option_chain_2020-05-21.csv, in its order.
COLUMNS = ("", "expiration_timestamp", "option_type", "instrument_name", "strike", "underlying_price",
           "underlying_index", "timestamp", "stats", "state", "settlement_price", "open_interest",
           "min_price", "max_price", "mark_price", "mark_iv", "last_price", "interest_rate",
           "index_price", "greeks", "estimated_delivery_price", "change_id", "bids", "bid_iv",
           "best_bid_price", "best_bid_amount", "best_ask_price", "best_ask_amount", "asks", "ask_iv")
EXPIRY_MS = 1590134400000            # 22 May 2020 08:00 UTC
STAMP_MS = 1590103193775             # the chain's time: 31206225 ms = 0.3612 days before


def chain_row(n: int, strike: int, cp: str, underlying: float, bid, bid_amount, ask, ask_amount) -> dict:
    row = dict.fromkeys(COLUMNS, "")
    name = f"BTC-22MAY20-{strike}-{cp}"
    row.update({"": str(n), "expiration_timestamp": str(EXPIRY_MS), "option_type": "call" if cp == "C" else "put",
                "instrument_name": name, "strike": f"{strike:.1f}", "underlying_price": str(underlying),
                "underlying_index": "SYN.BTC-22MAY20", "timestamp": str(STAMP_MS), "state": "open",
                "stats": "{'volume': 1.0}", "greeks": "{'delta': 0.5}", "index_price": "8995.0",
                "best_bid_price": str(bid), "best_bid_amount": str(bid_amount),
                "best_ask_price": str(ask), "best_ask_amount": str(ask_amount),
                "bids": f"[[{bid}, {bid_amount}]]" if bid != "" else "[]",
                "asks": f"[[{ask}, {ask_amount}]]" if ask != "" else "[]"})
    return row


#: One expiry, forward = the median of the underlying_price column: 8990, 9000, 9000, 9000, 9010,
#: 9020, 9100 -> 9000 (their mean, 9017.1, would move every edge). The 10000 put has no ask;
#: the 10500 call has no put (its strike does not count).
CHAIN = [
    (9000, "C", 8990.0, 0.028, 5.0, 0.029, 1.25),
    (9000, "P", 9000.0, 0.03, 5.0, 0.031, 5.0),
    (9500, "C", 9000.0, 0.012, 5.0, 0.013, 5.0),
    (9500, "P", 9000.0, 0.066, 5.0, 0.067, 5.0),
    (10000, "C", 9010.0, 0.0015, 5.0, 0.002, 5.0),
    (10000, "P", 9020.0, 0.11, 5.0, "", ""),
    (10500, "C", 9100.0, 0.001, 5.0, 0.0015, 5.0),
]


def write_chain(path, rows=CHAIN) -> str:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for n, row in enumerate(rows):
            writer.writerow(chain_row(n, *row))
    return str(path)


def scan(*args: str) -> tuple[int, list[dict], str]:
    proc = subprocess.run([str(STRATEGY_BOX), "--scan-chain", *args], capture_output=True, text=True,
                          cwd=REPO, env=env(), timeout=60)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def test_scan_chain_prints_the_boxes_with_edge_at_least_min_edge_worked_by_hand(tmp_path):
    code, rows, err = scan(write_chain(tmp_path / "chain.csv"))
    assert code == 0, err
    # Long 9000-9500: buy C9000 at 0.029, sell C9500 at 0.012, buy P9500 at 0.067, sell P9000 at
    # 0.03: premium 0.054 BTC + fees 4 x 0.0003 = 0.0552 BTC, bought forward at 9000 with 0.05 %:
    # 0.0552 x 9000 x 1.0005 = 497.0484; edge = 500 - 497.0484 = 2.9516 USD. Size: C9000's ask
    # amount 1.25, down to the 0.1 lot: 1.2.
    assert len(rows) == 1
    row = rows[0]
    assert {k: row[k] for k in ("expiry", "k1", "k2", "side", "size", "forward")} == {
        "expiry": "22MAY20", "k1": 9000.0, "k2": 9500.0, "side": "long", "size": 1.2, "forward": 9000.0}
    assert row["edge_usd"] == pytest.approx(2.9516, abs=1e-6)
    assert row["premium_btc"] == pytest.approx(0.054) and row["option_fees_btc"] == pytest.approx(0.0012)
    assert row["hedge_usd"] == pytest.approx(496.8) and row["hedge_fee_usd"] == pytest.approx(0.2484)
    assert row["days"] == pytest.approx(0.3612)
    assert sorted(tuple(leg[:3]) for leg in row["legs"]) == sorted([
        ("BTC-22MAY20-9000-C", "buy", 0.029), ("BTC-22MAY20-9500-C", "sell", 0.012),
        ("BTC-22MAY20-9500-P", "buy", 0.067), ("BTC-22MAY20-9000-P", "sell", 0.03)])


def test_scan_chain_all_prints_every_evaluated_box(tmp_path):
    code, rows, err = scan(write_chain(tmp_path / "chain.csv"), "--all")
    assert code == 0, err
    # Long boxes ending at 10000 buy its put, which has no ask: not evaluated. 10500 has no put.
    edges = {(r["k1"], r["k2"], r["side"]): r["edge_usd"] for r in rows}
    assert set(edges) == {(9000.0, 9500.0, "long"), (9000.0, 9500.0, "short"),
                          (9000.0, 10000.0, "short"), (9500.0, 10000.0, "short")}
    # Short 9000-9500: sell C9000 0.028, buy C9500 0.013, sell P9500 0.066, buy P9000 0.031:
    #   credit 0.05 - fees 0.0012 = 0.0488 BTC sold forward: 0.0488 x 9000 x 0.9995 - 500 = -61.0196
    # Short 9000-10000: credit 0.028 - 0.002 + 0.11 - 0.031 = 0.105, fees 0.0003 + 0.00025 (the
    #   0.002 call: 12.5 % cap) + 0.0003 + 0.0003 = 0.00115: 0.10385 x 8995.5 - 1000 = -65.817325
    # Short 9500-10000: credit 0.012 - 0.002 + 0.11 - 0.067 = 0.053 - 0.00115 = 0.05185:
    #   0.05185 x 8995.5 - 500 = -33.583325
    assert edges[(9000.0, 9500.0, "short")] == pytest.approx(-61.0196, abs=1e-6)
    assert edges[(9000.0, 10000.0, "short")] == pytest.approx(-65.817325, abs=1e-6)
    assert edges[(9500.0, 10000.0, "short")] == pytest.approx(-33.583325, abs=1e-6)
    capped = next(r for r in rows if (r["k1"], r["k2"], r["side"]) == (9000.0, 10000.0, "short"))
    assert capped["option_fees_btc"] == pytest.approx(0.00115)
    assert {r["size"] for r in rows if r["side"] == "short"} == {5.0}


@pytest.mark.parametrize("min_edge, expected", [
    ("3", set()),                                                   # 2.9516 < 3
    ("-60", {(9000.0, 9500.0, "long"), (9500.0, 10000.0, "short")}),  # -61.0 and -65.8 stay out
])
def test_scan_chain_min_edge_filters(tmp_path, min_edge, expected):
    code, rows, err = scan(write_chain(tmp_path / "chain.csv"), "--min-edge", min_edge)
    assert code == 0, err
    assert {(r["k1"], r["k2"], r["side"]) for r in rows} == expected


def test_scan_chain_of_a_missing_file_exits_66(tmp_path):
    code, rows, err = scan(str(tmp_path / "nowhere.csv"))
    assert (code, rows) == (66, [])
    assert "nowhere.csv" in err


@pytest.mark.parametrize("bad", ["price", "strike", "columns"])
def test_scan_chain_of_a_malformed_file_exits_65(tmp_path, bad):
    path = tmp_path / "chain.csv"
    if bad == "columns":
        path.write_text("a,b,c\n1,2,3\n")
    else:
        write_chain(path)
        rows = list(csv.DictReader(open(path, newline="")))
        rows[3]["best_bid_price" if bad == "price" else "strike"] = "abc"
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    code, rows, err = scan(str(path))
    assert (code, rows) == (65, [])
    assert "chain.csv" in err
    if bad != "columns":
        assert "line 5" in err                  # the header is line 1: the fourth row is line 5
