"""etl-filter's pure rule code (hedgepipe.etl), with the numbers worked by hand."""

from __future__ import annotations

import pytest

from hedgepipe.etl.dedup import DUPLICATE, NEW, RESET, RecentIds, SeqWindow
from hedgepipe.etl.derive import mid_iv, top_fields
from hedgepipe.etl.rules import (BAD_VALUE, OFF_TICK, all_finite, levels_problem,
                                 positive_problem, price_problem)
from hedgepipe.etl.spike import ACCEPT, CONFIRMED, SPIKE, SpikeRule
from hedgepipe.etl.topics import MAX_SRCS_PER_TOPIC, TopicState
from hedgepipe.etl.universe import NEVER, NS_PER_DAY, Universe, definition_problem

from .frames import T0, instrument

NAN, INF = float("nan"), float("inf")


# ---- spike --------------------------------------------------------------------------------------

def filled(rule: SpikeRule, values):
    w = rule.window()
    for v in values:
        assert rule.judge(w, v, 0.0) == ACCEPT
    return w


def test_the_scale_is_the_mad_so_one_outlier_in_the_window_does_not_widen_it():
    rule = SpikeRule(size=5, min_samples=5, k=5.0, confirm=3)
    w = filled(rule, [10.0, 11.0, 12.0, 13.0, 100.0])
    # median 12; |v - 12| = 2, 1, 0, 1, 88 -> sorted 0, 1, 1, 2, 88 -> MAD 1; limit 5 * 1 = 5
    assert w.median() == 12.0
    assert rule.judge(w, 17.5, 0.0) == SPIKE and rule.threshold == 5.0
    assert rule.judge(w, 17.0, 0.0) == ACCEPT       # |17 - 12| = 5: not beyond the limit


def test_the_floor_applies_when_the_values_do_not_move():
    rule = SpikeRule(size=5, min_samples=3, k=5.0, confirm=3)
    w = filled(rule, [100.0] * 5)                    # MAD 0
    assert rule.judge(w, 105.01, 0.01) == SPIKE      # floor 0.01 * 100 = 1 -> limit 5
    assert rule.judge(w, 105.0, 0.01) == ACCEPT
    assert rule.judge(w, 99.0, 0.0, floor=0.1) == SPIKE  # an absolute floor (a tick): limit 0.5


def test_nothing_is_judged_before_min_samples():
    rule = SpikeRule(size=10, min_samples=4, k=5.0, confirm=3)
    w = filled(rule, [100.0, 1000.0, 1.0])
    assert len(w.ordered) == 3


def test_the_window_keeps_the_last_size_accepted_values_sorted():
    rule = SpikeRule(size=3, min_samples=3, k=1e9, confirm=3)
    w = filled(rule, [5.0, 1.0, 4.0, 2.0, 3.0])
    assert list(w.values) == [4.0, 2.0, 3.0] and w.ordered == [2.0, 3.0, 4.0]


def test_repeats_are_not_judged_but_still_roll_the_window():
    rule = SpikeRule(size=3, min_samples=3, k=5.0, confirm=3)
    w = filled(rule, [1.0, 2.0, 3.0, 3.0, 3.0])
    assert list(w.values) == [3.0, 3.0, 3.0] and w.ordered == [3.0, 3.0, 3.0]


def test_the_sorted_window_always_matches_the_values():
    import random
    rnd = random.Random(4)
    rule = SpikeRule(size=7, min_samples=3, k=3.0, confirm=2)
    w = rule.window()
    for _ in range(2000):
        rule.judge(w, rnd.choice([100.0, 101.0, 102.0, 150.0, float(rnd.randint(90, 110))]), 0.001)
        assert w.ordered == sorted(w.values) and len(w.values) <= 7


def test_a_move_confirmed_by_agreeing_values_rebases_the_window():
    rule = SpikeRule(size=5, min_samples=3, k=5.0, confirm=3)
    w = filled(rule, [100.0] * 5)
    assert rule.judge(w, 200.0, 0.01) == SPIKE
    assert rule.judge(w, 300.0, 0.01) == SPIKE       # disagrees with 200 (limit 5): a new move
    assert w.pending == [300.0]
    assert rule.judge(w, 302.0, 0.01) == SPIKE
    assert rule.judge(w, 299.0, 0.01) == CONFIRMED
    assert w.ordered == [299.0, 300.0, 302.0] and w.pending == []
    assert rule.judge(w, 100.0, 0.01) == SPIKE       # the old level is the outlier now


def test_an_accepted_value_clears_a_pending_move():
    rule = SpikeRule(size=5, min_samples=3, k=5.0, confirm=2)
    w = filled(rule, [100.0] * 5)
    assert rule.judge(w, 200.0, 0.01) == SPIKE
    assert rule.judge(w, 100.0, 0.01) == ACCEPT and w.pending == []
    assert rule.judge(w, 200.0, 0.01) == SPIKE       # not consecutive: starts again


def test_rebase_pads_to_min_samples_so_the_rule_keeps_judging():
    rule = SpikeRule(size=10, min_samples=4, k=5.0, confirm=3)
    w = filled(rule, [100.0] * 10)
    rule.rebase(w, [70.0])
    assert w.ordered == [70.0] * 4
    assert rule.judge(w, 100.0, 0.01) == SPIKE


def test_spike_rule_parameters_are_checked():
    with pytest.raises(ValueError):
        SpikeRule(size=5, min_samples=3, k=0.0, confirm=3)


# ---- duplicates --------------------------------------------------------------------------------

def observe_all(w: SeqWindow, seqs, width=8):
    return [w.observe(s, width, (1 << width) - 1) for s in seqs]


def test_seq_window_tells_new_late_and_duplicate_frames_apart():
    w = SeqWindow(1)
    # width 8: the window remembers seqs high-7 .. high; after 10, that is 3 .. 10
    assert observe_all(w, [2, 3, 2, 10, 5, 5, 10, 3]) == [
        NEW, NEW, DUPLICATE, NEW, NEW, DUPLICATE, DUPLICATE, DUPLICATE]
    assert w.high == 10


def test_a_seq_further_back_than_the_window_is_a_restart():
    w = SeqWindow(1)
    # 93 is 7 below 100: a late frame; 92 is 8 below: out of the window, taken as a restart
    assert observe_all(w, [100, 93, 92, 1, 2, 1]) == [NEW, NEW, RESET, RESET, NEW, DUPLICATE]


def test_a_jump_wider_than_the_window_forgets_the_old_bits():
    w = SeqWindow(1)
    assert observe_all(w, [50, 49, 1000]) == [NEW, NEW, NEW]
    assert w.seen == 1 and w.high == 1000


def test_a_topic_remembers_at_most_16_publishers():
    st = TopicState("book", "clean.book.d.X", "d", "X")
    for n in range(MAX_SRCS_PER_TOPIC):
        assert st.observe(f"feed-{n}", 1, 8, 255) == NEW
    assert st.observe("feed-0", 1, 8, 255) == DUPLICATE
    assert st.observe("feed-new", 1, 8, 255) == NEW     # the 17th: the others are forgotten
    assert list(st.seqs) == ["feed-new"]
    assert st.observe("feed-0", 1, 8, 255) == NEW


def test_recent_ids_remembers_the_last_capacity_ids():
    ids = RecentIds(2)
    assert [ids.seen(k) for k in "abac" "a"] == [False, False, True, False, False]
    assert list(ids.ids) == ["c", "a"]


# ---- value rules -----------------------------------------------------------------------------------

@pytest.mark.parametrize("levels, descending, expected", [
    ([(0.05, 1.0), (0.0495, 2.0)], True, None),
    ([(0.05, 1.0), (0.0495, 2.0)], False, BAD_VALUE),           # asks must go up
    ([(0.05, NAN)], True, BAD_VALUE),
    ([(INF, 1.0)], False, BAD_VALUE),
    ([(0.0, 1.0)], False, BAD_VALUE),
    ([(0.05, 1.0), (0.05, 1.0)], False, BAD_VALUE),
    ([(0.05, 1.0), (0.05025, 1.0)], False, OFF_TICK),
    ([], True, None),
])
def test_levels_problem(levels, descending, expected):
    got = levels_problem(levels, descending, 0.0005, (), 1e-6)
    assert (got and got[0]) == expected


def test_levels_problem_with_steps_and_without_the_tick_check():
    steps = ((0.005, 0.0005),)
    assert levels_problem([(0.0043, 1.0), (0.0051, 1.0)], False, 0.0001, steps, 1e-6)[0] == OFF_TICK
    assert levels_problem([(0.0043, 1.0), (0.0055, 1.0)], False, 0.0001, steps, 1e-6) is None
    assert levels_problem([(0.00431, 1.0)], False, 0.0001, (), None) is None      # ticks not checked
    assert levels_problem([(0.00431, NAN)], False, 0.0001, (), None)[0] == BAD_VALUE


def test_the_detail_says_what_was_wrong():
    assert "nan" in levels_problem([(0.05, NAN)], True, 0.0005, (), 1e-6)[1]
    assert "not strictly descending at 0.05" in levels_problem(
        [(0.05, 1.0), (0.05, 1.0)], True, 0.0005, (), 1e-6)[1]
    assert price_problem(0.05001, "price", 0.0005, (), 1e-6) == (
        OFF_TICK, "price 0.05001 not on tick 0.0005")


def test_single_values():
    assert price_problem(65000.5, "bid", 0.5, (), 1e-6) is None
    assert price_problem(-1.0, "bid", 0.5, (), 1e-6)[0] == BAD_VALUE
    assert positive_problem(None, "bid_amount") is None
    assert positive_problem(0.0, "bid_amount") == (BAD_VALUE, "bid_amount 0.0")


@pytest.mark.parametrize("values, ok", [
    ((None, 1.0, -30.0, 0.0), True), ((None, NAN), False), ((INF,), False), ((INF, -INF), False),
    ((1e308, 1e308), False),   # absurd: the sum overflows; refused with the rest
])
def test_all_finite(values, ok):
    assert all_finite(values) is ok


# ---- derived fields ------------------------------------------------------------------------------

def test_top_fields_by_hand():
    mid, spread, bps, micro = top_fields(64999.5, 100.0, 65000.5, 300.0)
    assert (mid, spread) == (65000.0, 1.0)
    assert bps == pytest.approx(1.0 / 65000.0 * 1e4)               # 0.1538 bp
    assert micro == pytest.approx((64999.5 * 300 + 65000.5 * 100) / 400)  # 64999.75
    assert top_fields(None, None, 65000.5, 1.0) == (None, None, None, None)
    assert top_fields(1.0, None, 2.0, 1.0)[3] is None


def test_mid_iv():
    assert mid_iv(50.0, 54.0) == 52.0
    assert mid_iv(0.0, 54.0) is None and mid_iv(None, 54.0) is None


# ---- universe ------------------------------------------------------------------------------------

def test_expiry_window_bounds():
    u = Universe([], [], min_expiry_days=1.0, max_expiry_days=10.0, moneyness_min=0, moneyness_max=0)
    st = u.judge(instrument(expiry_ns=T0 + 30 * NS_PER_DAY))
    assert (st.valid_from, st.valid_until) == (T0 + 20 * NS_PER_DAY, T0 + 29 * NS_PER_DAY)
    assert u.outside(st, T0) == "beyond max_expiry_days"
    assert u.outside(st, T0 + 20 * NS_PER_DAY) is None
    assert u.outside(st, T0 + 29 * NS_PER_DAY) == "within min_expiry_days"
    assert u.outside(st, T0 + 30 * NS_PER_DAY) == "expired"
    perpetual = u.judge(instrument("BTC-PERPETUAL", kind="perpetual", expiry_ns=None))
    assert (perpetual.valid_from, perpetual.valid_until) == (0, NEVER)


def test_currency_matches_base_or_settlement_and_kinds_filter():
    u = Universe(["usdc"], ["future"], 0, 0, 0, 0)
    assert u.judge(instrument("BTC_USDC-PERPETUAL", kind="future", settle="USDC")).static_reason is None
    assert "currency" in u.judge(instrument("BTC-27DEC26")).static_reason
    assert "kind" in u.judge(instrument(settle="USDC")).static_reason


def test_references_prefer_the_composite_and_only_usd_indexes():
    u = Universe([], [], 0, 0, 0.8, 1.2)
    u.note_index("deribit", "btc_usd", 100.0)
    assert u.references == {"BTC": 100.0}
    u.note_index("composite", "btc_usd", 110.0)
    u.note_index("deribit", "btc_usd", 90.0)
    u.note_index("kraken", "btc_eur", 1.0)
    assert u.references == {"BTC": 110.0}


@pytest.mark.parametrize("fields, problem", [
    ({}, None), (dict(tick_size=-1.0), "tick_size"), (dict(tick_steps=[(0.01, 0.001), (0.005, 0.0005)]),
                                                      "tick_steps"),
    (dict(strike=INF), "strike"),
])
def test_definition_problem(fields, problem):
    got = definition_problem(instrument(**fields))
    assert (got is None) if problem is None else (problem in got)
