"""etl-filter's pure rule code (hedgepipe.etl), with the numbers worked by hand."""

from __future__ import annotations

import pytest

from hedgepipe.etl.dedup import BEHIND, DUPLICATE, NEW, RESET, RecentIds, SeqWindow
from hedgepipe.etl.derive import mid_iv, top_fields
from hedgepipe.etl.rules import (BAD_VALUE, OFF_TICK, all_finite, levels_problem,
                                 positive_problem, price_problem)
from hedgepipe.etl.spike import ACCEPT, CONFIRMED, SPIKE, SpikeRule
from hedgepipe.etl.topics import MAX_SRCS_PER_TOPIC, TopicState
from hedgepipe.etl.universe import NEVER, NS_PER_DAY, Universe, definition_problem
from hedgepipe.etl.watermark import SourceClock, Watermarks

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


def test_a_move_confirmed_by_consistent_values_rebases_the_window():
    rule = SpikeRule(size=5, min_samples=3, k=5.0, confirm=3)
    w = filled(rule, [100.0] * 5)                    # median 100, MAD 0, floor 1: limit 5
    assert rule.judge(w, 200.0, 0.01) == SPIKE       # a move up, reached by a step of 100
    assert rule.judge(w, 120.0, 0.01) == SPIKE       # back 80 (> the limit): a new move, step 20
    assert rule.judge(w, 300.0, 0.01) == SPIKE       # a leap of 180 > 5 + 20: a new move again
    assert w.pending == [300.0]
    assert rule.judge(w, 302.0, 0.01) == SPIKE       # on by 2
    assert rule.judge(w, 299.0, 0.01) == CONFIRMED   # back 3: noise, within the limit
    assert w.ordered == [299.0, 300.0, 302.0]
    assert rule.judge(w, 100.0, 0.01) == SPIKE       # the old level is the outlier now


def rising(start: float, factor: float, n: int) -> list[float]:
    return [round(start * factor ** i, 4) for i in range(1, n + 1)]


def test_a_trend_faster_than_the_limit_is_confirmed_and_followed():
    # The review's case: an option mid at 0.0100 (floor 0.00025: half its spread) rises 15% an
    # update, so every step (0.0015, 0.0017, ...) is beyond the limit (5 * 0.00025 = 0.00125)
    # from the one before: agreeing with the first pending value, it froze until three equal
    # values came. Each step is consistent with the previous one: confirmed after two.
    rule = SpikeRule(size=20, min_samples=5, k=5.0, confirm=3)
    w = rule.window()
    for _ in range(20):
        assert rule.judge(w, 0.0100, 0.02, 0.00025) == ACCEPT
    trend = rising(0.0100, 1.15, 10)                 # 0.0115 ... 0.0405
    verdicts = [rule.judge(w, x, 0.02, 0.00025) for x in trend]
    assert verdicts[:3] == [SPIKE, SPIKE, CONFIRMED]
    assert SPIKE not in verdicts[3:]                 # followed to the end of the move
    for _ in range(12):                              # it settles; the window catches up
        assert rule.judge(w, 0.0405, 0.02, 0.00025) == ACCEPT
    assert not w.moving and w.median() == 0.0405
    assert rule.judge(w, 0.0500, 0.02, 0.00025) == SPIKE   # a one-off spike is one again
    assert rule.judge(w, 0.0405, 0.02, 0.00025) == ACCEPT


def test_a_spike_that_decays_back_or_escalates_never_confirms():
    rule = SpikeRule(size=5, min_samples=3, k=5.0, confirm=3)
    w = filled(rule, [100.0] * 5)                    # limit 5
    assert [rule.judge(w, x, 0.01) for x in (200.0, 150.0, 120.0, 110.0)] == [SPIKE] * 4
    assert rule.judge(w, 100.0, 0.01) == ACCEPT and w.pending == []
    # ever bigger leaps: each beyond the limit plus the step before it
    assert [rule.judge(w, x, 0.01) for x in (150.0, 500.0, 10_000.0)] == [SPIKE] * 3
    # a bounce from one side of the median to the other
    assert [rule.judge(w, x, 0.01) for x in (150.0, 50.0, 150.0)] == [SPIKE] * 3
    assert w.ordered == [100.0] * 5


def test_a_jump_and_stay_still_confirms_and_a_one_tick_spike_is_still_rejected():
    rule = SpikeRule(size=5, min_samples=3, k=5.0, confirm=3)
    w = filled(rule, [100.0] * 5)
    assert [rule.judge(w, x, 0.01) for x in (130.0, 100.0)] == [SPIKE, ACCEPT]   # one tick
    assert [rule.judge(w, x, 0.01) for x in (130.0, 131.0, 130.0)] == [SPIKE, SPIKE, CONFIRMED]
    assert w.median() == 130.0


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

def observe_all(w: SeqWindow, seqs, width=8, run=0):
    """Frames of one run of the publisher: each received at ``run * 1000 + seq`` (a copy
    carries its original's ts_recv; a restarted publisher's frames are received later)."""
    return [w.observe(s, run * 1000 + s, width, (1 << width) - 1) for s in seqs]


def test_seq_window_tells_new_late_and_duplicate_frames_apart():
    w = SeqWindow(1, 1)
    # width 8: the window remembers seqs high-7 .. high; after 10, that is 3 .. 10
    assert observe_all(w, [2, 3, 2, 10, 5, 5, 10, 3]) == [
        NEW, NEW, DUPLICATE, NEW, NEW, DUPLICATE, DUPLICATE, DUPLICATE]
    assert w.high == 10


def test_a_seq_at_or_below_the_highest_received_later_is_a_restart_inside_the_window_too():
    w = SeqWindow(1, 1)
    assert observe_all(w, range(2, 21), width=1024) == [NEW] * 19
    # restarted: seq 1 again, received after all of them; a copy of it is then a duplicate
    assert observe_all(w, [1, 2, 1, 3], width=1024, run=1) == [RESET, NEW, DUPLICATE, NEW]
    assert observe_all(w, [20], width=1024) == [NEW]        # an old copy above the new high
    assert observe_all(w, [4], width=1024, run=1) == [RESET]  # ... costs one more reset
    assert observe_all(w, [4, 5], width=1024, run=2) == [RESET, NEW]  # same high, later: restart


def test_an_old_copy_further_back_than_the_window_is_behind_not_a_restart():
    w = SeqWindow(1, 1)
    observe_all(w, range(2, 101))
    # a relay lagging 8 frames or more: copies out of the window, received no later: refused
    # (as a restart, each would re-base the window and pass)
    assert observe_all(w, [92, 50, 1, 2, 93, 93]) == [BEHIND, BEHIND, BEHIND, BEHIND, DUPLICATE,
                                                     DUPLICATE]
    assert (w.high, observe_all(w, [101])) == (100, [NEW])
    assert observe_all(w, [1], run=1) == [RESET]            # a real restart still is one


def test_a_jump_wider_than_the_window_forgets_the_old_bits():
    w = SeqWindow(1, 1)
    assert observe_all(w, [50, 49, 1000]) == [NEW, NEW, NEW]
    assert w.seen == 1 and w.high == 1000


def test_a_topic_remembers_at_most_16_publishers():
    st = TopicState("book", "clean.book.d.X", "d", "X")
    for n in range(MAX_SRCS_PER_TOPIC):
        assert st.observe(f"feed-{n}", 1, T0, 8, 255) == NEW
    assert st.observe("feed-0", 1, T0, 8, 255) == DUPLICATE
    assert st.observe("feed-new", 1, T0, 8, 255) == NEW     # the 17th: the others are forgotten
    assert list(st.seqs) == ["feed-new"]
    assert st.observe("feed-0", 1, T0, 8, 255) == NEW


# ---- the watermark: one per src, moved by several frames agreeing ---------------------------

S = 1_000_000_000


def clocked(marks: Watermarks, clock: SourceClock, stamps) -> list[int]:
    """The time each frame is judged at."""
    return [marks.time_of(clock, ts) for ts in stamps]


def test_the_mark_is_set_by_confirm_frames_agreeing_not_by_the_first():
    marks, clock = Watermarks(jump_ns=S, confirm=3), SourceClock()
    # the first stamp is 30 s fast; the next ones disagree with it, and agree together
    assert clocked(marks, clock, [T0 + 30 * S, T0, T0 + 1, T0 + 2]) == [
        T0 + 30 * S, T0, T0 + 1, T0 + 2]              # before a mark: each on its own stamps
    assert clock.mark == T0 + 2 and marks.outliers == 1 and marks.resets == 0


def test_one_stamp_ahead_is_judged_on_its_own_and_moves_nothing():
    marks, clock = Watermarks(jump_ns=S, confirm=3), SourceClock()
    clocked(marks, clock, [T0, T0, T0])
    assert clocked(marks, clock, [T0 + 30 * S, T0 + S // 2]) == [T0 + 30 * S, T0 + S // 2]
    assert clock.mark == T0 + S // 2 and marks.outliers == 1
    assert clocked(marks, clock, [T0 + 30 * S, T0 + 31 * S, T0 + S]) == [
        T0 + 30 * S, T0 + 31 * S, T0 + S]
    assert clock.mark == T0 + S and marks.outliers == 3   # two ahead agreed, not three


def test_frames_behind_are_judged_at_the_mark_until_confirm_agree_the_clock_went_back():
    marks, clock = Watermarks(jump_ns=S, confirm=3), SourceClock()
    clocked(marks, clock, [T0 + 3600 * S] * 3)
    back = [T0, T0 + 1, T0 + 2, T0 + 3]
    assert clocked(marks, clock, back) == [T0 + 3600 * S] * 3 + [T0 + 3]
    assert (clock.mark, marks.resets, marks.outliers) == (T0 + 3, 1, 0)


def test_a_quiet_gap_moves_the_mark_forward_after_confirm_frames_counting_nothing():
    marks, clock = Watermarks(jump_ns=S, confirm=3), SourceClock()
    clocked(marks, clock, [T0] * 3)
    later = [T0 + 120 * S + i * 10 * S for i in range(3)]   # 2 min quiet, then one every 10 s
    assert clocked(marks, clock, later) == later
    assert (clock.mark, marks.resets, marks.outliers) == (later[-1], 0, 0)
    assert clocked(marks, clock, [T0 + 60 * S]) == [later[-1]]   # behind now: at the mark


def test_watermark_parameters_are_checked():
    with pytest.raises(ValueError):
        Watermarks(jump_ns=0, confirm=3)


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
