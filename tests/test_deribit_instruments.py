"""Deribit instruments: every recorded get_instruments item parses; units and filter rules.

Reads ``DERIBIT.0`` (BTC and ETH in the 2021 schema, SOL and USDC in the newer one) and
``api/http_get_instrument_option.json`` from the shared data folder.
"""

from __future__ import annotations

import collections
import json

import msgspec
import pytest

from hedgepipe.messages import Instrument
from hedgepipe.venues.deribit.instruments import (
    InstrumentError,
    InstrumentFilter,
    parse_get_instruments_body,
    parse_instrument,
)

MS = 1_000_000
MINUTE_NS = 60 * 1_000_000_000
DAY_NS = 86_400 * 1_000_000_000
#: When the BTC/ETH lists were recorded (the line's receive time; usIn 1626993723161363 us).
RECORDED_NS = 1_626_993_723_161_363_000


@pytest.fixture(scope="module")
def lines(shared_data) -> dict[str, str]:
    """currency -> the DERIBIT.0 line of its get_instruments response."""
    out = {}
    for line in (shared_data / "deribit" / "DERIBIT.0").read_text().splitlines():
        if " -> " in line:
            currency = line.split("currency=")[1].split("&")[0]
            out[currency] = line
    return out


@pytest.fixture(scope="module")
def raw_items(lines) -> dict[str, list[dict]]:
    return {currency: parse_get_instruments_body(line) for currency, line in lines.items()}


@pytest.fixture(scope="module")
def parsed(raw_items) -> dict[str, Instrument]:
    return {i.name: i for items in raw_items.values() for i in map(parse_instrument, items)}


def test_every_recorded_instrument_parses(raw_items):
    shapes = {}
    for currency, items in raw_items.items():
        instruments = [parse_instrument(raw) for raw in items]
        assert [i.name for i in instruments] == [raw["instrument_name"] for raw in items]
        shapes[currency] = collections.Counter((i.kind, i.quote, i.settle, i.inverse) for i in instruments)
    assert shapes == {
        "BTC": {("option", "BTC", "BTC", True): 390, ("future", "USD", "BTC", True): 7,
                ("perpetual", "USD", "BTC", True): 1},
        "ETH": {("option", "ETH", "ETH", True): 418, ("future", "USD", "ETH", True): 7,
                ("perpetual", "USD", "ETH", True): 1},
        "SOL": {("option", "SOL", "SOL", True): 172, ("future", "USD", "SOL", True): 4,
                ("perpetual", "USD", "SOL", True): 1},
        "USDC": {("perpetual", "USDC", "USDC", False): 16},
    }


def test_btc_option_2021_schema(parsed):
    # {"tick_size":0.0005,"strike":40000.0,"quote_currency":"BTC","option_type":"put",
    #  "min_trade_amount":0.1,"kind":"option","is_active":true,"instrument_name":"BTC-24SEP21-40000-P",
    #  "expiration_timestamp":1632470400000,"contract_size":1.0,"base_currency":"BTC"}
    assert parsed["BTC-24SEP21-40000-P"] == Instrument(
        venue="deribit", name="BTC-24SEP21-40000-P", kind="option", base="BTC", quote="BTC",
        settle="BTC", tick_size=0.0005, min_amount=0.1, contract_size=1.0, inverse=True,
        tick_steps=[], expiry_ns=1_632_470_400_000 * MS, strike=40000.0, option_type="put",
        active=True)


def test_btc_future_and_perpetual(parsed):
    fut = parsed["BTC-25MAR22"]
    assert (fut.kind, fut.base, fut.quote, fut.settle, fut.inverse) == ("future", "BTC", "USD", "BTC", True)
    assert (fut.tick_size, fut.min_amount, fut.contract_size) == (0.5, 10.0, 10.0)
    assert fut.expiry_ns == 1_648_195_200_000 * MS
    assert (fut.strike, fut.option_type) == (None, None)
    perp = parsed["BTC-PERPETUAL"]
    # Deribit gives the perpetual expiration_timestamp 32503708800000 (3000-01-01): no expiry.
    assert (perp.kind, perp.expiry_ns, perp.settle, perp.inverse) == ("perpetual", None, "BTC", True)
    assert (perp.tick_size, perp.min_amount, perp.contract_size) == (0.5, 10.0, 10.0)
    eth_perp = parsed["ETH-PERPETUAL"]
    assert (eth_perp.tick_size, eth_perp.min_amount, eth_perp.contract_size) == (0.05, 1.0, 1.0)


def test_usdc_linear_perpetual_newer_schema(parsed):
    # {"tick_size":1.0,"settlement_period":"perpetual","settlement_currency":"USDC","quote_currency":"USDC",
    #  "min_trade_amount":0.001,"kind":"future","future_type":"linear","contract_size":0.001,"base_currency":"BTC"}
    assert parsed["BTC_USDC-PERPETUAL"] == Instrument(
        venue="deribit", name="BTC_USDC-PERPETUAL", kind="perpetual", base="BTC", quote="USDC",
        settle="USDC", tick_size=1.0, min_amount=0.001, contract_size=0.001, inverse=False)


def test_sol_option_and_reversed_future_newer_schema(parsed):
    opt = parsed["SOL-10JUN22-28-P"]
    assert (opt.base, opt.quote, opt.settle, opt.inverse) == ("SOL", "SOL", "SOL", True)
    assert (opt.tick_size, opt.min_amount, opt.strike, opt.expiry_ns) == (0.001, 1.0, 28.0, 1_654_848_000_000 * MS)
    fut = parsed["SOL-24JUN22"]  # future_type "reversed"
    assert (fut.kind, fut.quote, fut.settle, fut.inverse, fut.contract_size) == ("future", "USD", "SOL", True, 10.0)


def test_tick_size_steps_and_instrument_type(shared_data):
    raw = json.loads((shared_data / "deribit" / "api" / "http_get_instrument_option.json").read_text())["result"]
    inst = parse_instrument(raw)
    assert (inst.name, inst.inverse, inst.tick_steps, inst.settle) == ("BTC-27DEC24-100000-C", True, [], "BTC")
    stepped = dict(raw, tick_size=0.0001, tick_size_steps=[{"above_price": 0.12, "tick_size": 0.001},
                                                           {"above_price": 0.005, "tick_size": 0.0005}])
    assert parse_instrument(stepped).tick_steps == [(0.005, 0.0005), (0.12, 0.001)]
    assert parse_instrument(dict(raw, instrument_type="linear", settlement_currency="USDC")).inverse is False


@pytest.mark.parametrize("change, message", [
    ({"tick_size": None}, "'tick_size' missing"),
    ({"tick_size": True}, "'tick_size' missing or of the wrong type"),
    ({"tick_size": "0.0005"}, "'tick_size'"),
    ({"tick_size": float("nan")}, "not finite"),
    ({"kind": "warrant"}, "unknown kind 'warrant'"),
    ({"option_type": "straddle"}, "not call|put"),
    ({"expiration_timestamp": 1.5e12}, "'expiration_timestamp'"),
    ({"instrument_name": ""}, "without instrument_name"),
    ({"tick_size_steps": [[0.005, 0.0005]]}, "not a list of objects"),
    ({"is_active": "yes"}, "is_active"),
])
def test_bad_items_raise_a_clear_error(raw_items, change, message):
    raw = dict(raw_items["BTC"][0], **change)
    with pytest.raises(InstrumentError, match=message.replace("|", r"\|")):
        parse_instrument(raw)


def test_get_instruments_body_forms(lines):
    line = lines["USDC"]
    body = line.split(": ", 1)[1]
    assert parse_get_instruments_body(line) == parse_get_instruments_body(body.encode()) == json.loads(body)["result"]
    for bad, why in [("configuration: {\"trades\": []}", "not a get_instruments body"),
                     ('{"jsonrpc":"2.0","id":1,"error":{"code":10028,"message":"too_many_requests"}}', "10028"),
                     ('{"jsonrpc":"2.0","result":{"x":1}}', "no 'result' list"),
                     ('{"jsonrpc":"2.0","result":[', "not JSON"),
                     ("[1, 2]", "not a get_instruments body")]:
        with pytest.raises(InstrumentError, match=why):
            parse_get_instruments_body(bad)


# ---- the filter ---------------------------------------------------------------------------------

def _all(parsed) -> list[Instrument]:
    return list(parsed.values())


def test_filter_currencies_and_kinds(parsed):
    kept, dropped = InstrumentFilter(currencies=["BTC"]).select(_all(parsed), RECORDED_NS)
    # Base BTC: 390 options, 7 futures, BTC-PERPETUAL and the linear BTC_USDC-PERPETUAL.
    assert len(kept) == 390 + 7 + 1 + 1 and dropped == {"currency": len(parsed) - 399}
    kept, dropped = InstrumentFilter(currencies=["USDC"]).select(_all(parsed), RECORDED_NS)
    assert {i.settle for i in kept} == {"USDC"} and len(kept) == 16
    kept, dropped = InstrumentFilter(currencies=["BTC"], kinds=["option"]).select(_all(parsed), RECORDED_NS)
    assert len(kept) == 390 and dropped["kind"] == 9


def test_filter_drops_expired_and_expiring(parsed):
    btc = [i for i in parsed.values() if i.base == "BTC" and i.settle == "BTC"]
    first_expiry = min(i.expiry_ns for i in btc if i.expiry_ns)  # 23JUL21 08:00 UTC
    on_first = sum(1 for i in btc if i.expiry_ns == first_expiry)
    assert first_expiry == 1_627_027_200_000 * MS and on_first > 0
    f = InstrumentFilter(currencies=["BTC"])
    # At the expiry instant: expired, even with no minimum time left configured.
    kept, dropped = f.select(btc, first_expiry)
    assert dropped == {"expired": on_first} and len(kept) == len(btc) - on_first
    assert any(i.kind == "perpetual" for i in kept)  # no expiry: never dropped as expired
    # Five minutes before, with a ten-minute floor: expiring soon.
    f = InstrumentFilter(currencies=["BTC"], min_expiry_minutes=10)
    assert f.select(btc, first_expiry - 5 * MINUTE_NS)[1] == {"expiring_soon": on_first}
    assert f.select(btc, first_expiry - 11 * MINUTE_NS)[1] == {}


def test_filter_max_expiry_days(parsed):
    btc = [i for i in parsed.values() if i.base == "BTC" and i.settle == "BTC"]
    limit_ns = RECORDED_NS + 30 * DAY_NS
    far = sum(1 for i in btc if i.expiry_ns is not None and i.expiry_ns > limit_ns)
    kept, dropped = InstrumentFilter(currencies=["BTC"], max_expiry_days=30).select(btc, RECORDED_NS)
    assert far > 0 and dropped == {"beyond_max_expiry": far}
    assert all(i.expiry_ns is None or i.expiry_ns <= limit_ns for i in kept)


def test_filter_strike_band(parsed):
    btc = [i for i in parsed.values() if i.base == "BTC" and i.settle == "BTC"]
    f = InstrumentFilter(currencies=["BTC"], strike_band=0.25)
    kept, dropped = f.select(btc, RECORDED_NS, {"BTC": 32_000.0})
    # [32000 / 1.25, 32000 * 1.25] = [25600, 40000], both ends included.
    inside = [i for i in btc if i.kind == "option" and 25_600 <= i.strike <= 40_000]
    assert {i.name for i in kept if i.kind == "option"} == {i.name for i in inside}
    assert "BTC-24SEP21-40000-P" in {i.name for i in inside}
    assert dropped == {"strike_band": 390 - len(inside)}
    assert sum(1 for i in kept if i.kind != "option") == 8  # futures and the perpetual untouched
    # No reference price for the base: its options are dropped and counted, the rest kept.
    kept, dropped = f.select(btc, RECORDED_NS, {"ETH": 2000.0})
    assert dropped == {"no_reference_price": 390} and len(kept) == 8


def test_filter_inactive(parsed):
    inst = parsed["BTC-PERPETUAL"]
    inactive = msgspec.structs.replace(inst, active=False)
    assert InstrumentFilter(currencies=["BTC"]).select([inactive], RECORDED_NS)[1] == {"inactive": 1}
    assert InstrumentFilter(currencies=["BTC"], include_inactive=True).select([inactive], RECORDED_NS)[0] == [inactive]
