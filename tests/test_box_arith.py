"""The arithmetic of strategy-box (DESIGN §6, issue 5), on hand-worked chains and Black-76 chains.

Conventions of every hand-worked example below (the numbers in the comments are the proof):
- inverse options are priced in BTC per contract; strikes, forwards and edges are USD;
- option fee per leg = min(0.0003, 0.125 x price) BTC, whichever side the leg is on;
- the hedge buys b = premium + option fees BTC forward at the future's ask Fa (sells -b at its bid
  Fb when b < 0) and pays the taker fee h = 0.0005 of its USD notional;
- long box (K1 < K2): buy C(K1) at ask, sell P(K1) at bid, sell C(K2) at bid, buy P(K2) at ask;
  short box: the opposite side of each leg.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hedgepipe.boxes.chain import CALL, CONVERSION, LONG, PUT, REVERSAL, SHORT, ChainKey, ExpiryChain
from hedgepipe.boxes.detail import BUY, SELL, YEAR_NS, describe
from hedgepipe.boxes.fees import FeeSchedule
from hedgepipe.sim.black76 import price_inverse

#: 22MAY20 08:00 UTC, the expiry of every hand-worked chain.
EXPIRY_NS = 1_590_134_400_000 * 1_000_000
H = 0.0005  # future taker fee, FeeSchedule's default


def _chain(quotes, *, forward_ask=10_000.0, forward_bid=10_000.0, **kwargs) -> ExpiryChain:
    """quotes: {(strike, CALL|PUT): (bid, bid_amount, ask, ask_amount[, ts_ns, default 1000])}."""
    chain = ExpiryChain(ChainKey("deribit", "BTC", "BTC", EXPIRY_NS), **kwargs)
    for (strike, option), quote in quotes.items():
        bid, bid_amount, ask, ask_amount, *ts = quote
        name = f"BTC-22MAY20-{strike:g}-{'C' if option == CALL else 'P'}"
        k = chain.add(float(strike), option, name)
        chain.set_quote(k, option, bid, bid_amount, ask, ask_amount, ts[0] if ts else 1_000)
    chain.forward_ask, chain.forward_bid = forward_ask, forward_bid
    return chain


def _one(chain: ExpiryChain, side: str, i: int, j: int, h: float = H):
    ev = chain.boxes(side, np.array([i]), np.array([j]), h)
    return float(ev.edge[0]), float(ev.size[0]), float(ev.capital[0]), float(ev.b[0])


# ---- the fee schedule ------------------------------------------------------------------------

def test_option_fee_is_0_0003_btc_capped_at_an_eighth_of_the_price():
    fees = FeeSchedule()
    assert fees.option_fee(0.15) == pytest.approx(0.0003, abs=1e-15)      # 0.125 x 0.15 = 0.01875 > 0.0003
    assert fees.option_fee(0.001) == pytest.approx(0.000125, abs=1e-15)   # 0.125 x 0.001 = 0.000125 < 0.0003
    assert fees.option_fee(0.0024) == pytest.approx(0.0003, abs=1e-15)    # the cap and the rate meet
    # Linear (USDC) options: the rate is on one unit of underlying in USD (the index, 10 000).
    assert fees.option_fee(50.0, 10_000.0) == pytest.approx(3.0)          # min(0.0003 x 10 000, 6.25)
    assert fees.option_fee(16.0, 10_000.0) == pytest.approx(2.0)          # min(3, 0.125 x 16 = 2)
    got = fees.option_fees(np.array([0.001, 0.15, np.nan]))
    assert got[:2] == pytest.approx([0.000125, 0.0003]) and math.isnan(got[2])


# ---- long and short boxes on an inverse chain ------------------------------------------------

#: Strikes 9000 < 11000 (width 2000 USD), forward 10 000: a fair box costs 2000 / 10 000 = 0.2 BTC.
#: The amounts the long box does not trade are 0.1, so a size using them would show.
LONG_CHEAP = {
    (9000, CALL): (0.1450, 0.1, 0.1500, 1.27),
    (9000, PUT): (0.0500, 5.0, 0.0550, 0.1),
    (11000, CALL): (0.0400, 3.0, 0.0450, 0.1),
    (11000, PUT): (0.1300, 0.1, 0.1350, 2.0),
}


def test_long_box_hand_worked():
    chain = _chain(LONG_CHEAP)
    edge, size, capital, b = _one(chain, LONG, 0, 1)
    # premium = +0.1500 (C9000 ask) - 0.0500 (P9000 bid) - 0.0400 (C11000 bid) + 0.1350 (P11000 ask)
    #         = 0.1950 BTC; fees 4 x 0.0003 = 0.0012 (no leg below 0.0024 BTC): b = 0.1962 BTC.
    assert b == pytest.approx(0.1962, abs=1e-12)
    # hedge: buy 0.1962 BTC at 10 000 = 1962 USD, fee 0.0005 x 1962 = 0.981 USD
    # edge = 2000 - 1962 - 0.981 = 37.019 USD
    assert edge == pytest.approx(37.019, abs=1e-9)
    # capital: what the long box pays, as USD at expiry = 1962 + 0.981 = 1962.981
    assert capital == pytest.approx(1962.981, abs=1e-9)
    # size = min(C9000 ask 1.27, P9000 bid 5, C11000 bid 3, P11000 ask 2) = 1.27 -> 1.2 (0.1 lot)
    assert size == pytest.approx(1.2, abs=1e-12)


#: The same strikes, a rich market (bids high): the short box pays and the long one does not.
RICH = {
    (9000, CALL): (0.1600, 2.0, 0.1650, 0.7),
    (9000, PUT): (0.0450, 0.4, 0.0500, 1.5),
    (11000, CALL): (0.0350, 0.9, 0.0400, 0.3),
    (11000, PUT): (0.1400, 0.35, 0.1450, 4.0),
}


def test_short_box_hand_worked_sells_the_hedge_at_the_bid():
    chain = _chain(RICH, forward_ask=10_010.0, forward_bid=9_990.0)
    edge, size, capital, b = _one(chain, SHORT, 0, 1)
    # credit = +0.1600 (C9000 bid) - 0.0500 (P9000 ask) - 0.0400 (C11000 ask) + 0.1400 (P11000 bid)
    #        = 0.2100 BTC; fees 0.0012: 0.2088 BTC kept, so b = -0.2088 (sold forward).
    assert b == pytest.approx(-0.2088, abs=1e-12)
    # sold at the bid Fb = 9990: 0.2088 x 9990 = 2085.912 USD, fee 0.0005 x 2085.912 = 1.042956
    # edge = 2085.912 - 1.042956 - 2000 = 84.869044 USD
    assert edge == pytest.approx(84.869044, abs=1e-9)
    # a short box owes its width at expiry: that is its capital
    assert capital == pytest.approx(2000.0)
    # size = min(C9000 bid 2.0, P9000 ask 1.5, C11000 ask 0.3, P11000 bid 0.35) = 0.3
    # (0.3 / 0.1 = 2.9999999999999996 in floats: the lot rounding must not make it 0.2)
    assert size == pytest.approx(0.3, abs=1e-12)


def test_long_box_buys_the_hedge_at_the_ask():
    chain = _chain(RICH, forward_ask=10_010.0, forward_bid=9_990.0)
    edge, size, _, b = _one(chain, LONG, 0, 1)
    # premium = 0.1650 (C9000 ask) - 0.0450 (P9000 bid) - 0.0350 (C11000 bid) + 0.1450 (P11000 ask)
    #         = 0.2300; + fees 0.0012: b = 0.2312 BTC bought at Fa = 10 010 -> 2314.312 USD,
    # fee 0.0005 x 2314.312 = 1.157156; edge = 2000 - 2314.312 - 1.157156 = -315.469156
    assert b == pytest.approx(0.2312, abs=1e-12)
    assert edge == pytest.approx(-315.469156, abs=1e-9)
    # size = min(C9000 ask 0.7, P9000 bid 0.4, C11000 bid 0.9, P11000 ask 4.0) = 0.4
    assert size == pytest.approx(0.4, abs=1e-12)


def test_a_leg_fee_at_its_cap():
    # Strikes 5000 < 6000 (width 1000), forward 10 000; the 5000 put is bid at 0.001 BTC.
    chain = _chain({
        (5000, CALL): (0.4950, 1.0, 0.5030, 1.0),
        (5000, PUT): (0.0010, 1.0, 0.0015, 1.0),
        (6000, CALL): (0.4000, 1.0, 0.4080, 1.0),
        (6000, PUT): (0.0015, 1.0, 0.0020, 1.0),
    })
    edge, _, _, b = _one(chain, LONG, 0, 1)
    # premium = 0.5030 - 0.0010 - 0.4000 + 0.0020 = 0.1040 BTC
    # fees = 0.0003 (C5000 0.503) + 0.000125 (P5000 0.001 x 0.125, capped)
    #      + 0.0003 (C6000 0.400) + 0.00025 (P6000 0.002 x 0.125, capped) = 0.000975
    # b = 0.104975 BTC -> 1049.75 USD, fee 0.524875; edge = 1000 - 1049.75 - 0.524875 = -50.274875
    assert b == pytest.approx(0.104975, abs=1e-12)
    assert edge == pytest.approx(-50.274875, abs=1e-9)


def test_a_leg_with_no_quote_leaves_its_boxes_unevaluated():
    quotes = dict(LONG_CHEAP)
    quotes[(11000, PUT)] = (0.1300, 0.1, None, None)  # no ask on the 11000 put
    chain = _chain(quotes)
    # the long box buys the 11000 put at its ask: not evaluated
    assert math.isnan(_one(chain, LONG, 0, 1)[0])
    # the short box sells it at its bid, which is there:
    # credit = 0.1450 - 0.0550 - 0.0450 + 0.1300 = 0.1750, kept 0.1738 -> 1738 USD, fee 0.869
    # edge = 1738 - 0.869 - 2000 = -262.869
    assert _one(chain, SHORT, 0, 1)[0] == pytest.approx(-262.869, abs=1e-9)
    # a zero price, or a price without an amount, is no quote either
    for absent in ((0.1300, 0.1, 0.0, 2.0), (0.1300, 0.1, 0.1350, 0.0)):
        quotes[(11000, PUT)] = absent
        assert math.isnan(_one(_chain(quotes), LONG, 0, 1)[0])
    # and a cleared quote (stale book) stops counting
    chain = _chain(LONG_CHEAP)
    chain.clear_quote(1, PUT)
    assert math.isnan(_one(chain, LONG, 0, 1)[0]) and math.isnan(_one(chain, SHORT, 0, 1)[0])


def test_size_is_the_thinnest_leg_rounded_down_to_the_lot():
    quotes = dict(LONG_CHEAP)
    quotes[(9000, CALL)] = (0.1450, 0.1, 0.1500, 0.09)  # thinner than one lot
    assert _one(_chain(quotes), LONG, 0, 1)[1] == 0.0
    # a lot of 1 contract: 1.27 -> 1
    assert _one(_chain(LONG_CHEAP, lot=1.0), LONG, 0, 1)[1] == pytest.approx(1.0)


# ---- a linear (USDC) chain: premium in USD, no hedge leg --------------------------------------

def test_linear_box_needs_no_hedge():
    # prices in USD; index 10 000 -> option fee min(0.0003 x 10 000 = 3, 0.125 x price) USD
    chain = _chain({
        (9000, CALL): (1150.0, 1.0, 1200.0, 1.0),
        (9000, PUT): (16.0, 1.0, 20.0, 1.0),
        (11000, CALL): (350.0, 1.0, 380.0, 1.0),
        (11000, PUT): (1050.0, 1.0, 1100.0, 1.0),
    }, forward_ask=float("nan"), forward_bid=float("nan"), inverse=False)
    chain.set_fee_underlying(10_000.0)
    edge, _, capital, b = _one(chain, LONG, 0, 1)
    # premium = 1200 (C9000 ask) - 16 (P9000 bid) - 350 (C11000 bid) + 1100 (P11000 ask) = 1934 USD
    # fees = 3 + min(3, 0.125 x 16 = 2) + 3 + 3 = 11 USD; edge = 2000 - 1934 - 11 = 55 USD,
    # whatever the forward (here unknown): nothing is hedged.
    assert b == 0.0
    assert edge == pytest.approx(55.0, abs=1e-9)
    assert capital == pytest.approx(1945.0, abs=1e-9)   # 1934 + 11 paid now
    # short: credit 1150 - 20 - 380 + 1050 = 1800, fees 3 + min(3, 0.125 x 20 = 2.5) + 3 + 3 = 11.5,
    # edge = 1800 - 11.5 - 2000 = -211.5
    assert _one(chain, SHORT, 0, 1)[0] == pytest.approx(-211.5, abs=1e-9)
    chain.forward_ask = chain.forward_bid = 10_000.0
    assert _one(chain, LONG, 0, 1)[0] == pytest.approx(55.0, abs=1e-9)
    st = describe(chain, LONG, 0, 1, H, EXPIRY_NS - YEAR_NS // 10)
    assert st.hedge_btc == 0.0 and st.hedge_usd == 0.0 and st.hedge_fee_usd == 0.0


def test_linear_fee_underlying_reprices_existing_strikes_and_is_ignored_for_inverse():
    quotes = {
        (9000, CALL): (1150.0, 1.0, 1200.0, 1.0), (9000, PUT): (16.0, 1.0, 20.0, 1.0),
        (11000, CALL): (350.0, 1.0, 380.0, 1.0), (11000, PUT): (1050.0, 1.0, 1100.0, 1.0),
    }
    chain = _chain(quotes, inverse=False)
    # before the index is known no fee can be charged right: no edge (NaN), never a made-up fee
    assert math.isnan(_one(chain, LONG, 0, 1)[0])
    chain.set_fee_underlying(10_000.0)
    assert _one(chain, LONG, 0, 1)[0] == pytest.approx(55.0, abs=1e-9)
    inverse = _chain(LONG_CHEAP)
    inverse.set_fee_underlying(10_000.0)
    assert _one(inverse, LONG, 0, 1)[0] == pytest.approx(37.019, abs=1e-9)


def test_linear_reversal_hedges_only_its_forward():
    chain = _chain({(9000, CALL): (1150.0, 1.0, 1200.0, 1.0), (9000, PUT): (16.0, 1.0, 20.0, 1.0)},
                   forward_ask=10_010.0, forward_bid=9_990.0, inverse=False)
    chain.set_fee_underlying(10_000.0)
    ev = chain.parity(REVERSAL, H)
    # synthetic long = 1200 + 3 - 16 + 2 = 1189 USD; sell 1 BTC forward at 9990 less 0.05 %:
    # 9990 x 0.9995 = 9985.005; edge = 9985.005 - 9000 - 1189 = -203.995
    assert float(ev.b[0]) == -1.0
    assert float(ev.edge[0]) == pytest.approx(-203.995, abs=1e-9)


# ---- reversals and conversions --------------------------------------------------------------

PARITY = {
    (9000, CALL): (0.1450, 2.0, 0.1500, 1.27),
    (9000, PUT): (0.0500, 0.8, 0.0550, 3.0),
}


def test_reversal_and_conversion_hand_worked():
    chain = _chain(PARITY, forward_ask=10_010.0, forward_bid=9_990.0)
    rev = chain.parity(REVERSAL, H)
    # reversal: buy C9000 at 0.1500, sell P9000 at 0.0500, sell 1 BTC forward (pays -9000 USD + the forward)
    # synthetic = 0.1500 + 0.0003 - 0.0500 + 0.0003 = 0.1006 BTC; b = 0.1006 - 1 = -0.8994 (sold at Fb)
    # hedge = -0.8994 x 9990 x (1 - 0.0005) = -8985.006 + 4.492503 = -8980.513497
    # edge = -9000 + 8980.513497 = -19.486503
    assert float(rev.b[0]) == pytest.approx(-0.8994, abs=1e-12)
    assert float(rev.edge[0]) == pytest.approx(-19.486503, abs=1e-9)
    assert float(rev.size[0]) == pytest.approx(0.8, abs=1e-12)       # min(C ask 1.27, P bid 0.8)
    assert float(rev.capital[0]) == pytest.approx(10_000.0)         # one unit at the mid forward
    conv = chain.parity(CONVERSION, H)
    # conversion: sell C9000 at 0.1450, buy P9000 at 0.0550, buy 1 BTC forward (pays +9000 USD)
    # synthetic = -0.1450 + 0.0003 + 0.0550 + 0.0003 = -0.0894; b = 1 - 0.0894 = 0.9106 (bought at Fa)
    # hedge = 0.9106 x 10 010 x 1.0005 = 9115.106 + 4.557553 = 9119.663553
    # edge = 9000 - 9119.663553 = -119.663553
    assert float(conv.b[0]) == pytest.approx(0.9106, abs=1e-12)
    assert float(conv.edge[0]) == pytest.approx(-119.663553, abs=1e-9)
    assert float(conv.size[0]) == pytest.approx(2.0, abs=1e-12)      # min(C bid 2.0, P ask 3.0)


# ---- detail.describe: the breakdown adds up --------------------------------------------------

def test_describe_long_box_legs_and_breakdown():
    chain = _chain(LONG_CHEAP)
    now = EXPIRY_NS - YEAR_NS // 10   # 0.1 year to expiry
    st = describe(chain, LONG, 0, 1, H, now)
    assert [(leg.instrument, leg.side, leg.price, leg.displayed) for leg in st.legs] == [
        ("BTC-22MAY20-9000-C", BUY, 0.1500, 1.27),
        ("BTC-22MAY20-9000-P", SELL, 0.0500, 5.0),
        ("BTC-22MAY20-11000-C", SELL, 0.0400, 3.0),
        ("BTC-22MAY20-11000-P", BUY, 0.1350, 2.0),
    ]
    assert [leg.fee for leg in st.legs] == pytest.approx([0.0003] * 4)
    assert (st.k1, st.k2) == (9000.0, 11000.0)
    assert st.premium == pytest.approx(0.195, abs=1e-12)
    assert st.option_fees == pytest.approx(0.0012, abs=1e-12)
    assert st.hedge_btc == pytest.approx(0.1962, abs=1e-12)
    assert st.hedge_price == 10_000.0
    assert st.hedge_usd == pytest.approx(1962.0, abs=1e-9)
    assert st.hedge_fee_usd == pytest.approx(0.981, abs=1e-9)
    assert st.edge_usd == pytest.approx(37.019, abs=1e-9)
    # the parts add up: 2000 - (0.195 + 0.0012) x 10 000 - 0.981 = 37.019
    assert 2000 - (st.premium + st.option_fees) * st.hedge_price - st.hedge_fee_usd == pytest.approx(st.edge_usd)
    assert st.size == pytest.approx(1.2) and st.total_usd == pytest.approx(1.2 * 37.019)   # 44.4228
    # 37.019 / 1962.981 / 0.1 year = 0.188586 a year
    assert st.t_years == pytest.approx(0.1)
    assert st.annual_rate == pytest.approx(0.188586, abs=1e-6)


def test_describe_short_box_is_every_leg_the_other_way():
    chain = _chain(RICH, forward_ask=10_010.0, forward_bid=9_990.0)
    st = describe(chain, SHORT, 0, 1, H, EXPIRY_NS - YEAR_NS // 10)
    assert [(leg.instrument, leg.side, leg.price) for leg in st.legs] == [
        ("BTC-22MAY20-9000-C", SELL, 0.1600),
        ("BTC-22MAY20-9000-P", BUY, 0.0500),
        ("BTC-22MAY20-11000-C", BUY, 0.0400),
        ("BTC-22MAY20-11000-P", SELL, 0.1400),
    ]
    assert st.premium == pytest.approx(-0.21, abs=1e-12)     # received
    assert st.hedge_btc == pytest.approx(-0.2088, abs=1e-12)
    assert st.hedge_price == 9_990.0                          # sold at the bid
    assert st.hedge_usd == pytest.approx(2085.912, abs=1e-9)
    assert st.hedge_fee_usd == pytest.approx(1.042956, abs=1e-9)
    # (0.21 - 0.0012) x 9990 - 2000 - 1.042956 = 84.869044
    assert -(st.premium + st.option_fees) * st.hedge_price - 2000 - st.hedge_fee_usd == pytest.approx(st.edge_usd)
    assert st.edge_usd == pytest.approx(84.869044, abs=1e-9)
    # 84.869044 / 2000 / 0.1 = 0.42434522
    assert st.annual_rate == pytest.approx(0.42434522, abs=1e-8)


def test_describe_parity_legs():
    chain = _chain(PARITY, forward_ask=10_010.0, forward_bid=9_990.0)
    rev = describe(chain, REVERSAL, 0, 0, H, EXPIRY_NS - YEAR_NS // 10)
    assert [(leg.side, leg.price) for leg in rev.legs] == [(BUY, 0.1500), (SELL, 0.0500)]
    assert rev.k2 is None and rev.hedge_price == 9_990.0
    assert rev.hedge_usd == pytest.approx(8985.006, abs=1e-9)        # 0.8994 x 9990
    assert rev.edge_usd == pytest.approx(-19.486503, abs=1e-9)
    conv = describe(chain, CONVERSION, 0, 0, H, EXPIRY_NS - YEAR_NS // 10)
    assert [(leg.side, leg.price) for leg in conv.legs] == [(SELL, 0.1450), (BUY, 0.0550)]
    assert conv.hedge_price == 10_010.0 and conv.hedge_usd == pytest.approx(9115.106, abs=1e-9)


# ---- which pairs, and the best one ----------------------------------------------------------

def _random_chain(seed: int, n: int = 30, forward_ask: float = 9_100.0, forward_bid: float = 9_100.0,
                  fresh_share: float = 1.0) -> ExpiryChain:
    """Black-76 mids with random spreads, skews, holes and quote times (a realistic mess)."""
    rng = np.random.default_rng(seed)
    forward = (forward_ask + forward_bid) / 2
    strikes = np.sort(rng.choice(np.arange(5_000, 14_000, 250), n, replace=False))
    quotes = {}
    for strike in strikes:
        for option in (CALL, PUT):
            mid = price_inverse(forward, float(strike), 0.05, 0.6 + 0.2 * rng.random(), option == CALL)
            half = rng.uniform(0.0005, 0.01)
            bid = round(mid - half, 4)
            ask = round(mid + half + rng.normal(0.0, 0.003), 4)
            ts = 2_000 if rng.random() < fresh_share else 1_000
            quotes[(int(strike), option)] = (bid if bid > 0 else None, rng.uniform(0.1, 10.0),
                                             ask if ask > 0 else None, rng.uniform(0.1, 10.0), ts)
    return _chain(quotes, forward_ask=forward_ask, forward_bid=forward_bid)


def test_pairs_with_k_are_exactly_the_pairs_containing_k():
    chain = _random_chain(1, n=9)
    i_all, j_all = chain.all_pairs()
    assert len(i_all) == 9 * 8 // 2 and (i_all < j_all).all()
    every = set(zip(i_all.tolist(), j_all.tolist()))
    for k in range(9):
        i, j = chain.pairs_with(k)
        got = list(zip(i.tolist(), j.tolist()))
        assert len(got) == 8 and len(set(got)) == 8
        assert set(got) == {p for p in every if k in p}
    # the incremental pass (slices, in pairs_with's order) prices them as the full pass does
    for side in (LONG, SHORT):
        full = chain.boxes(side, i_all, j_all, H)
        by_pair = dict(zip(zip(i_all.tolist(), j_all.tolist()), full.edge.tolist()))
        assert not all(math.isnan(e) for e in by_pair.values())
        for k in (0, 4, 8):
            i, j = chain.pairs_with(k)
            edges = chain.box_edges_with(side, k, H)
            assert len(edges) == 8
            for pos, (a, b, edge) in enumerate(zip(i.tolist(), j.tolist(), edges.tolist())):
                one_i, one_j = chain.pairs_with(k, np.array([pos]))
                assert (int(one_i[0]), int(one_j[0])) == (a, b)
                want = by_pair[(a, b)]
                assert edge == pytest.approx(want, abs=1e-9) or (math.isnan(edge) and math.isnan(want))


def _full_best(chain: ExpiryChain, side: str, h: float, fresh_after_ns: int = 0) -> float:
    i, j = chain.all_pairs()
    ev = chain.boxes(side, i, j, h)
    edge = np.where(ev.oldest_ns >= fresh_after_ns, ev.edge, np.nan)
    return float(np.nanmax(edge))


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("side", [LONG, SHORT])
def test_best_is_the_full_scans_best_when_the_hedge_is_free(seed, side):
    chain = _random_chain(seed)
    i, j, edge = chain.best(side, 0.0)
    assert edge == pytest.approx(_full_best(chain, side, 0.0), abs=1e-9)
    assert edge == pytest.approx(_one(chain, side, i, j, 0.0)[0], abs=1e-12)


def test_best_hand_worked_when_the_hedge_has_a_fee():
    # h = 0.0005, Fa = Fb = 10 000: a bought hedge costs 10 005 USD/BTC, best()'s bound uses 9995.
    chain = _chain({
        (9000, CALL): (0.1450, 1.0, 0.1500, 1.0), (9000, PUT): (0.0500, 1.0, 0.0550, 1.0),
        (10000, CALL): (0.0600, 1.0, 0.0700, 1.0), (10000, PUT): (0.0500, 1.0, 0.0583, 1.0),
        (11000, CALL): (0.0300, 1.0, 0.0350, 1.0), (11000, PUT): (0.1200, 1.0, 0.1283, 1.0),
    })
    # (9000, 10000): 0.1500 - 0.0500 - 0.0600 + 0.0583 = 0.0983 + fees 0.0012 = b 0.0995
    #   edge = 1000 - 0.0995 x 10 005 = 1000 - 995.4975 = 4.5025   (bound 1000 - 994.5025 = 5.4975)
    # (9000, 11000): 0.1500 - 0.0500 - 0.0300 + 0.1283 = 0.1983 + 0.0012 = b 0.1995
    #   edge = 2000 - 0.1995 x 10 005 = 2000 - 1995.9975 = 4.0025 (bound 2000 - 1994.0025 = 5.9975)
    # (10000, 11000): 0.0700 - 0.0500 - 0.0300 + 0.1283 = 0.1183 + 0.0012 = b 0.1195
    #   edge = 1000 - 1195.5975 = -195.5975
    assert _one(chain, LONG, 0, 1)[0] == pytest.approx(4.5025, abs=1e-9)
    assert _one(chain, LONG, 0, 2)[0] == pytest.approx(4.0025, abs=1e-9)
    assert _one(chain, LONG, 1, 2)[0] == pytest.approx(-195.5975, abs=1e-9)
    # At Fb (1 - h) = 9995 the bound of (9000, 11000) would be the highest, 5.9975; a long box's
    # own bound prices its hedge at Fa (1 + h) = 10 005, exact for boxes that pay: 4.5025.
    assert chain.best(LONG, H, bound=True) == (0, 1, pytest.approx(4.5025, abs=1e-9))
    picked = chain.best(LONG, H)
    assert picked[:2] == (0, 1) and picked[2] == pytest.approx(4.5025, abs=1e-9)


# Random chains with a hedge spread (Fa 9110, Fb 9090) and fee: a single pass with the sell-side
# price once picked a worse long box on seeds 53 and 55 (seed 53: (10000, 11750) at 34.64 USD,
# b 0.1882, while the full scan has (9000, 9750) at 36.33 USD, b 0.0783); best() now also runs
# the buy-side pass and keeps the better exact edge.
def test_best_is_the_full_scans_best_with_spread_and_fee_on_the_hedge():
    misses = []
    for seed in range(60):
        chain = _random_chain(seed, forward_ask=9_110.0, forward_bid=9_090.0)
        for side in (LONG, SHORT):
            _, _, edge = chain.best(side, H)
            full = _full_best(chain, side, H)
            if abs(edge - full) > 1e-9:
                misses.append((seed, side, edge, full))
    assert misses == []


@pytest.mark.parametrize("seed", range(8))
def test_best_bound_is_above_every_exact_edge(seed):
    # What best() guarantees (and strategy-box's skip of a full scan relies on): with bound=True
    # no box of the side has a higher exact edge; the pair's bound is payoff - b x c with the
    # side's own hedge price: Fa (1 + h) for long boxes, Fb (1 - h) for short ones.
    chain = _random_chain(seed, forward_ask=9_110.0, forward_bid=9_090.0)
    for side, c in ((LONG, 9_110.0 * (1 + H)), (SHORT, 9_090.0 * (1 - H))):
        i, j, bound = chain.best(side, H, bound=True)
        b = _one(chain, side, i, j)[3]
        width = chain.strikes[j] - chain.strikes[i]
        assert bound == pytest.approx((width if side == LONG else -width) - b * c, abs=1e-9)
        assert bound >= _full_best(chain, side, H) - 1e-9
        assert chain.best(side, H)[2] >= _one(chain, side, i, j)[0] - 1e-12


@pytest.mark.parametrize("seed", range(8))
def test_best_respects_fresh_after_ns(seed):
    chain = _random_chain(seed, fresh_share=0.7)   # about 30 % of quotes are at 1000 ns, the rest 2000
    for side in (LONG, SHORT):
        picked = chain.best(side, 0.0, fresh_after_ns=2_000)
        i, j, edge = picked
        assert chain.oldest_ns[i] >= 2_000 and chain.oldest_ns[j] >= 2_000
        assert edge == pytest.approx(_full_best(chain, side, 0.0, fresh_after_ns=2_000), abs=1e-9)
    stale = _random_chain(seed, fresh_share=0.0)
    assert stale.best(LONG, 0.0, fresh_after_ns=2_000) is None
    assert stale.best(LONG, 0.0, fresh_after_ns=1_000) is not None


def test_best_ignores_a_stale_better_box():
    # (9000, 11000) is the best long box (2000 - 1962 = 38 USD with h = 0, hand-worked above) but
    # its 9000 call was quoted at 500 ns; every other quote is from 1000 ns.
    quotes = dict(LONG_CHEAP)
    quotes[(9000, CALL)] = (0.1450, 0.1, 0.1500, 1.27, 500)
    quotes[(12000, CALL)] = (0.0200, 1.0, 0.0250, 1.0)
    quotes[(12000, PUT)] = (0.2100, 1.0, 0.2250, 1.0)
    chain = _chain(quotes)
    assert chain.best(LONG, 0.0)[:2] == (0, 1)
    # with 9000 stale, only (1, 2) = (11000, 12000) is left:
    # 11000: buy C at 0.0450 (+0.0003), sell P at 0.1300 (+0.0003) -> -0.0844
    # 12000: sell C at 0.0200 (+0.0003), buy P at 0.2250 (+0.0003) -> 0.2056
    # b = 0.1212 -> 1212 USD; edge = 1000 - 1212 = -212 (h = 0)
    i, j, edge = chain.best(LONG, 0.0, fresh_after_ns=1_000)
    assert (i, j) == (1, 2) and edge == pytest.approx(-212.0, abs=1e-9)
    assert _chain({}).best(LONG, 0.0) is None


# ---- Black-76 chains: no edge at a fair zero-spread market; a mispricing shows exactly where it is

F = 9_100.0
#: A quarter year, so even the wings are worth more than the bump below (cheapest: 0.0046 BTC).
T_YEARS = 0.25
STRIKES = [5_000.0 + 300.0 * n for n in range(30)]   # 5000 ... 13700
ZERO_FEES = FeeSchedule(option_rate=0.0, future_taker=0.0)


def _vol(strike: float, smile: bool) -> float:
    m = math.log(strike / F)
    return 0.6 + 0.8 * m * m - 0.1 * m if smile else 0.7


def _black76_chain(smile: bool, bump=None) -> ExpiryChain:
    """Zero spread (bid = ask = model), 10 contracts a side; bump = (strike index, option, 'ask'|'bid', x)."""
    chain = ExpiryChain(ChainKey("deribit", "BTC", "BTC", EXPIRY_NS), fees=ZERO_FEES)
    for n, strike in enumerate(STRIKES):
        for option in (CALL, PUT):
            k = chain.add(strike, option, f"{strike:g}{option}")
            price = price_inverse(F, strike, T_YEARS, _vol(strike, smile), option == CALL)
            bid = ask = price
            if bump is not None and bump[:2] == (n, option):
                if bump[2] == "ask":
                    ask -= bump[3]
                else:
                    bid += bump[3]
            chain.set_quote(k, option, bid, 10.0, ask, 10.0, 1)
    chain.forward_ask = chain.forward_bid = F
    return chain


def _all_edges(chain: ExpiryChain) -> dict:
    """{(structure, i, j): edge} over every box of both sides and every parity trade."""
    out = {}
    i, j = chain.all_pairs()
    for side in (LONG, SHORT):
        ev = chain.boxes(side, i, j, 0.0)
        out.update({(side, a, b): e for a, b, e in zip(i.tolist(), j.tolist(), ev.edge.tolist())})
    for side in (REVERSAL, CONVERSION):
        ev = chain.parity(side, 0.0)
        out.update({(side, a, a): e for a, e in zip(ev.i.tolist(), ev.edge.tolist())})
    return out


@pytest.mark.parametrize("smile", [False, True])
def test_black76_chain_has_no_box_or_parity_edge(smile):
    edges = _all_edges(_black76_chain(smile))
    assert len(edges) == 2 * (30 * 29 // 2) + 2 * 30
    worst = max(abs(e) for e in edges.values())
    assert worst < 1e-9 * F


def _favoured(k: int, option: int, where: str) -> set:
    """The structures that trade leg (k, option) on the side a bump of its `where` price favours.

    A lower ask helps whoever buys the leg; a higher bid whoever sells it. Per the issue's legs:
    long (K1, K2) buys C(K1), sells P(K1), sells C(K2), buys P(K2); short is the opposite;
    a reversal buys C(K) and sells P(K); a conversion sells C(K) and buys P(K).
    """
    n = len(STRIKES)
    as_k1 = lambda side: {(side, k, j) for j in range(k + 1, n)}      # noqa: E731
    as_k2 = lambda side: {(side, i, k) for i in range(k)}              # noqa: E731
    buys = where == "ask"
    if option == CALL:
        # buyers of C(k): long with K1 = k, short with K2 = k, the reversal at k
        if buys:
            return as_k1(LONG) | as_k2(SHORT) | {(REVERSAL, k, k)}
        # sellers of C(k): long with K2 = k, short with K1 = k, the conversion at k
        return as_k2(LONG) | as_k1(SHORT) | {(CONVERSION, k, k)}
    # buyers of P(k): long with K2 = k, short with K1 = k, the conversion at k
    if buys:
        return as_k2(LONG) | as_k1(SHORT) | {(CONVERSION, k, k)}
    # sellers of P(k): long with K1 = k, short with K2 = k, the reversal at k
    return as_k1(LONG) | as_k2(SHORT) | {(REVERSAL, k, k)}


@pytest.mark.parametrize("smile", [False, True])
@pytest.mark.parametrize("k", [0, 11, 29])
@pytest.mark.parametrize("option, where", list(itertools.product((CALL, PUT), ("ask", "bid"))))
def test_a_mispricing_of_x_btc_is_x_times_f_on_exactly_the_boxes_using_it(smile, k, option, where):
    x = 0.0025  # BTC, below every model price (an ask stays positive); x x F = 0.0025 x 9100 = 22.75 USD
    edges = _all_edges(_black76_chain(smile, bump=(k, option, where, x)))
    favoured = _favoured(k, option, where)
    # strike k is in 29 pairs, as K1 in 29 - k and as K2 in k: one side's boxes plus one parity trade
    assert len(favoured) == 29 + 1
    for key, edge in edges.items():
        if key in favoured:
            assert edge == pytest.approx(22.75, rel=1e-9), key
        else:
            assert abs(edge) < 1e-9 * F, key


# ---- the per-update shortcuts: the bound and parity in plain floats -----------------------------

@pytest.mark.parametrize("seed", range(12))
def test_may_pass_with_never_rules_out_a_box_that_reaches_the_floor(seed):
    # The random chain's noise makes some boxes positive: for each strike k and floor, the O(1)
    # bound says "maybe" whenever any box with k reaches the floor (and on a fair chain, "no").
    chain = _random_chain(seed, forward_ask=9_110.0, forward_bid=9_090.0)
    best_with = _best_with_each_strike(chain)
    for floor in (-50.0, 0.0, 5.0, 50.0):
        for k in range(len(chain)):
            if best_with[k] >= floor:
                assert chain.may_pass_with(k, floor), (k, floor, best_with[k])


def _best_with_each_strike(chain: ExpiryChain) -> np.ndarray:
    """Per strike, the highest exact edge of any box using it (the full evaluation)."""
    i_all, j_all = chain.all_pairs()
    best_with = np.full(len(chain), -np.inf)
    for side in (LONG, SHORT):
        edges = np.nan_to_num(chain.box_edges(side, i_all, j_all, H), nan=-np.inf)
        np.maximum.at(best_with, i_all, edges)
        np.maximum.at(best_with, j_all, edges)
    return best_with


def test_may_pass_with_stays_an_upper_bound_through_quote_updates_and_forward_moves():
    # Quotes move one at a time (the kept maxima follow), the forward moves by small steps (the
    # bound is loosened by the slack, not rebuilt) and sometimes by big ones (rebuilt): at every
    # step, a strike with a box at or above the floor is never ruled out.
    chain = _random_chain(3, forward_ask=9_100.0, forward_bid=9_100.0)
    rng = np.random.default_rng(7)
    rebuilt = 0
    for step in range(400):
        k = int(rng.integers(len(chain)))
        option = int(rng.integers(2))
        bid, bid_amount, ask, ask_amount, ts = chain.quotes[option][k]
        shift = float(rng.normal(0.0, 0.004))
        chain.set_quote(k, option, bid + shift if bid == bid else None, bid_amount,
                        ask + shift if ask == ask else None, ask_amount, ts)
        move = float(rng.normal(0.0, 0.5 if step % 40 else 60.0))
        chain.forward_ask, chain.forward_bid = chain.forward_ask + move, chain.forward_bid + move
        before = chain._c_long
        best_with = _best_with_each_strike(chain)
        for floor in (-60.0, -20.0, 0.0, 20.0):
            for kk in range(len(chain)):
                if best_with[kk] >= floor:
                    assert chain.may_pass_with(kk, floor), (step, kk, floor, best_with[kk])
        rebuilt += chain._c_long != before
    assert 0 < rebuilt < 400          # both paths taken: loosened and rebuilt


@pytest.mark.parametrize("forward_ask, forward_bid", [(9_100.0, 9_100.0), (9_110.0, 9_090.0)])
def test_parity_edge_at_one_strike_equals_the_vector_parity(forward_ask, forward_bid):
    for seed in range(4):
        chain = _random_chain(seed, forward_ask=forward_ask, forward_bid=forward_bid)
        for side in (REVERSAL, CONVERSION):
            vector = chain.parity(side, H).edge
            for k in range(len(chain)):
                one = chain.parity_edge(side, k, H)
                assert (math.isnan(one) and math.isnan(vector[k])) or one == pytest.approx(vector[k], abs=1e-9)


def test_may_pass_with_rules_out_every_strike_of_a_fair_chain_with_one_tick_spreads():
    # What makes the per-update path cheap: 81 strikes 2000-18000 around F = 10 000, Black-76 mids
    # on the 0.0005 tick, 1 tick each side, fees, a future 100 USD wide. No box reaches 1 USD (the
    # full scan agrees) and the O(1) bound says so for every strike, the widest boxes included
    # (a bound pricing every hedge at the bid would not: it undercharges a 16 000 wide long box
    # 1.6 BTC x (10 050 x 1.0005 - 9 950 x 0.9995) = 176 USD, more than the rest of its cost).
    quotes = {}
    for strike in range(2_000, 18_001, 200):
        for option in (CALL, PUT):
            mid = round(price_inverse(10_000.0, float(strike), 1.0, 0.8, option == CALL) / 0.0005) * 0.0005
            quotes[(strike, option)] = (mid - 0.0005 if mid > 0.0005 else None, 5.0, mid + 0.0005, 5.0)
    chain = _chain(quotes, forward_ask=10_050.0, forward_bid=9_950.0)
    i, j = chain.all_pairs()
    for side in (LONG, SHORT):
        assert np.nanmax(chain.box_edges(side, i, j, H)) < 1.0
    assert not any(chain.may_pass_with(k, 1.0) for k in range(len(chain)))


@pytest.mark.parametrize("forward_ask, forward_bid", [(9_100.0, 9_100.0), (9_110.0, 9_090.0)])
def test_box_edge_at_one_pair_equals_the_vector_edges(forward_ask, forward_bid):
    chain = _random_chain(5, forward_ask=forward_ask, forward_bid=forward_bid)
    i, j = chain.all_pairs()
    for side in (LONG, SHORT):
        vector = chain.box_edges(side, i, j, H)
        for n in range(len(i)):
            one = chain.box_edge_at(side, int(i[n]), int(j[n]), H)
            assert (math.isnan(one) and math.isnan(vector[n])) or one == pytest.approx(vector[n], abs=1e-9)
