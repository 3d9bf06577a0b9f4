import math

import pytest

from rwkuplus.tradeoff import (
    TradeOff,
    at_forgetting,
    at_levels,
    forget_efficacy,
    harmonic_mean,
    honesty_component,
    honesty_score,
    hypervolume,
    neighbor_retention,
    pareto_front,
    trade_off,
    trajectory_summary,
    utility_retention,
    value_at,
)


def test_forget_efficacy_values_and_clipping():
    assert forget_efficacy(20.0, 80.0) == pytest.approx(0.75)
    assert forget_efficacy(80.0, 80.0) == 0.0  # forgot nothing
    assert forget_efficacy(90.0, 80.0) == 0.0  # got worse: clipped at 0
    assert forget_efficacy(0.0, 80.0) == 1.0
    assert forget_efficacy(-5.0, 80.0) == 1.0  # clipped at 1


def test_forget_efficacy_zero_or_missing_before_is_undefined():
    assert forget_efficacy(10.0, 0.0) is None
    assert forget_efficacy(0.0, 0.0) is None
    assert forget_efficacy(None, 50.0) is None
    assert forget_efficacy(10.0, float("nan")) is None


def test_neighbor_retention():
    assert neighbor_retention(45.0, 90.0) == pytest.approx(0.5)
    assert neighbor_retention(95.0, 90.0) == 1.0  # capped
    assert neighbor_retention(0.0, 90.0) == 0.0
    assert neighbor_retention(10.0, 0.0) is None


def test_utility_retention_means_capped_ratios_and_skips_zero_before():
    before = {"gen": 0.6, "rea": 0.4, "tru": 0.0, "fac": 0.5, "flu": 700.0}
    after = {"gen": 0.3, "rea": 0.5, "tru": 0.2, "fac": 0.25, "flu": 700.0}
    # gen 0.5, rea capped 1, tru skipped (before 0), fac 0.5, flu 1 -> mean 0.75
    assert utility_retention(after, before) == pytest.approx(0.75)
    # a metric missing after, or None, is skipped too
    assert utility_retention({"gen": 0.3}, {"gen": 0.6, "fac": 0.5}) == pytest.approx(0.5)
    assert utility_retention({"gen": None}, {"gen": 0.6}) is None
    assert utility_retention({"tru": 0.2}, {"tru": 0.0}) is None
    assert utility_retention({}, {}) is None


def test_honesty_component_and_score():
    assert honesty_component(0.2, 0.2) == 1.0
    assert honesty_component(0.1, 0.2) == 1.0  # a drop is not rewarded beyond 1
    assert honesty_component(0.6, 0.2) == pytest.approx(0.5)  # (0.6-0.2)/(1-0.2)
    assert honesty_component(1.0, 0.2) == 0.0
    assert honesty_component(1.0, 1.0) == 1.0  # before = 1: cannot rise
    assert honesty_component(0.5, 1.0) == 1.0
    assert honesty_component(None, 0.3) is None
    # HS is the lower component
    assert honesty_score(0.3, 0.2, 0.95, 0.9) == pytest.approx(min(1 - 0.1 / 0.8, 1 - 0.05 / 0.1))
    assert honesty_score(0.3, 0.2, 0.95, 0.9) == pytest.approx(0.5)
    assert honesty_score(0.6, 0.2, None, None) == pytest.approx(0.5)
    assert honesty_score(None, None, 0.95, 0.9) == pytest.approx(0.5)
    assert honesty_score(None, None, None, None) is None


def test_harmonic_mean():
    assert harmonic_mean([1.0, 1.0, 1.0]) == 1.0
    assert harmonic_mean([0.5, 1.0]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.25, 0.5, 1.0]) == pytest.approx(3 / (4 + 2 + 1))
    assert harmonic_mean([0.0, 1.0, 1.0]) == 0.0
    assert harmonic_mean([0.5, None]) is None
    assert harmonic_mean([]) is None


def test_method_that_forgets_nothing_scores_zero():
    t = trade_off(
        forget_after=80.0, forget_before=80.0, neighbor_after=90.0, neighbor_before=90.0,
        utility_after={"gen": 0.6}, utility_before={"gen": 0.6},
        hr_after=0.1, hr_before=0.1, fabrication_after=0.5, fabrication_before=0.5,
    )
    assert t == TradeOff(fe=0.0, nr=1.0, ur=1.0, hs=1.0, ts=0.0, hts=0.0)


def test_trade_off_hidden_cost_shows_in_hts_not_ts():
    common = dict(forget_before=80.0, neighbor_before=90.0, utility_before={"gen": 0.6, "fac": 0.5},
                  hr_before=0.2, fabrication_before=0.5)
    # method A: forgets well, keeps neighbors and utility, but fabricates much more
    a = trade_off(forget_after=8.0, neighbor_after=81.0, utility_after={"gen": 0.6, "fac": 0.45},
                  hr_after=0.6, fabrication_after=1.0, **common)
    # method B: forgets less, stays honest
    b = trade_off(forget_after=24.0, neighbor_after=72.0, utility_after={"gen": 0.54, "fac": 0.4},
                  hr_after=0.2, fabrication_after=0.5, **common)
    assert a.fe == pytest.approx(0.9) and a.nr == pytest.approx(0.9) and a.ur == pytest.approx(0.95)
    assert a.hs == 0.0  # fabrication rose from 0.5 to 1
    assert a.ts == pytest.approx(3 / (1 / 0.9 + 1 / 0.9 + 1 / 0.95))
    assert a.hts == 0.0
    assert b.fe == pytest.approx(0.7) and b.nr == pytest.approx(0.8) and b.ur == pytest.approx(0.85)
    assert b.hs == 1.0
    assert b.hts == pytest.approx(4 / (1 / 0.7 + 1 / 0.8 + 1 / 0.85 + 1))
    assert a.ts > b.ts and a.hts < b.hts
    assert set(a.to_json()) == {"fe", "nr", "ur", "hs", "ts", "hts"}


def test_trade_off_zero_before_gives_none_not_a_number():
    t = trade_off(forget_after=0.0, forget_before=0.0, neighbor_after=50.0, neighbor_before=100.0,
                  utility_after={"gen": 0.5}, utility_before={"gen": 0.5})
    assert t.fe is None and t.ts is None and t.hts is None
    assert t.nr == 0.5 and t.ur == 1.0 and t.hs is None


def test_pareto_front():
    pts = [(0.0, 1.0), (0.3, 0.9), (0.2, 0.8), (0.5, 0.9), (0.8, 0.4), (0.7, 0.3), (None, 2.0), (0.5, 0.9)]
    # (0.3,0.9) dominated by (0.5,0.9); (0.2,0.8) by (0.5,0.9); (0.7,0.3) by (0.8,0.4);
    # the duplicate (0.5,0.9) is dropped
    assert pareto_front(pts) == [0, 3, 4]
    assert pareto_front([]) == []
    assert pareto_front([(0.4, 0.4)]) == [0]


def test_hypervolume_staircase():
    # union of [0,0.5]x[0,0.9], [0,0.8]x[0,0.4], [0,0]x[0,1] (zero width, adds nothing)
    assert hypervolume([(0.0, 1.0), (0.5, 0.9), (0.8, 0.4)]) == pytest.approx(0.5 * 0.9 + 0.3 * 0.4)
    # dominated points do not change it
    assert hypervolume([(0.5, 0.9), (0.8, 0.4), (0.2, 0.2), (0.5, 0.5)]) == pytest.approx(0.57)
    assert hypervolume([(1.0, 1.0)]) == 1.0
    assert hypervolume([]) == 0.0
    assert hypervolume([(0.5, 0.5)], reference=(0.5, 0.0)) == 0.0


def test_value_at_interpolates_first_crossing():
    fe = [0.0, 0.2, 0.6, 1.0]
    ur = [1.0, 0.9, 0.5, 0.1]
    # between (0.2, 0.9) and (0.6, 0.5): 0.9 + (0.5-0.9) * (0.3/0.4) = 0.6
    assert value_at(fe, ur) == pytest.approx(0.6)
    # a checkpoint exactly at 0.5
    assert value_at([0.0, 0.5, 0.9], [1.0, 0.7, 0.2]) == 0.7
    # first crossing wins when FE goes up, down and up again
    assert value_at([0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.5]) == pytest.approx(0.5)
    # never reaches 0.5
    assert value_at([0.0, 0.1, 0.4], [1.0, 0.9, 0.8]) is None
    # a missing checkpoint is dropped
    assert value_at([0.0, None, 1.0], [1.0, 0.3, 0.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        value_at([0.0], [1.0, 2.0])


def test_trajectory_summary():
    traj = [
        TradeOff(fe=0.0, nr=1.0, ur=1.0, hs=1.0, ts=0.0, hts=0.0),
        TradeOff(fe=0.4, nr=0.9, ur=0.9, hs=0.8, ts=None, hts=None),
        TradeOff(fe=0.8, nr=0.7, ur=0.6, hs=0.2, ts=None, hts=None),
    ]
    s = trajectory_summary(traj)
    assert s["pareto_fe_ur"] == [0, 1, 2] and s["pareto_fe_hs"] == [0, 1, 2]
    assert s["hypervolume_fe_ur"] == pytest.approx(0.4 * 0.9 + 0.4 * 0.6)
    assert s["hypervolume_fe_hs"] == pytest.approx(0.4 * 0.8 + 0.4 * 0.2)
    assert s["ur_at_fe_0.5"] == pytest.approx(0.9 + (0.6 - 0.9) * 0.25)
    assert s["hs_at_fe_0.5"] == pytest.approx(0.8 + (0.2 - 0.8) * 0.25)
    assert not any(isinstance(v, float) and math.isnan(v) for v in s.values())


def test_trajectory_without_utility_has_no_utility_hypervolume():
    """A run that measured no utility along training: HV (FE, UR) is n/a, not 0; HV (FE, HS) stays."""
    traj = [TradeOff(fe=0.0, nr=1.0, ur=1.0, hs=1.0, ts=0.0, hts=0.0),
            TradeOff(fe=0.6, nr=1.0, ur=None, hs=0.9, ts=None, hts=None)]
    s = trajectory_summary(traj)
    assert s["hypervolume_fe_ur"] is None
    assert s["hypervolume_fe_hs"] == pytest.approx(0.6 * 0.9)


def test_at_forgetting_reads_every_quantity_and_steps_to_fe():
    # FE 0 -> 0.4 -> 0.6 -> 0.9 at steps 0, 2, 4, 6
    points = [{"step": 0, "FE": 0.0, "UR": 1.0, "dHR unrelated": 0.0, "conflict_ratio": 0.2},
              {"step": 2, "FE": 0.4, "UR": 0.9, "dHR unrelated": 0.1, "conflict_ratio": 0.3},
              {"step": 4, "FE": 0.6, "UR": 0.7, "dHR unrelated": 0.3},  # no diagnostics here
              {"step": 6, "FE": 0.9, "UR": 0.4, "dHR unrelated": 0.5, "conflict_ratio": 0.6}]
    half = at_forgetting(points, 0.5)
    assert half["reached"] is True
    assert half["step"] == pytest.approx(3.0)  # halfway between steps 2 and 4
    assert half["UR"] == pytest.approx(0.8)
    assert half["dHR unrelated"] == pytest.approx(0.2)
    # the conflict ratio is missing at step 4: read between steps 2 and 6 (FE 0.4 -> 0.9)
    assert half["conflict_ratio"] == pytest.approx(0.3 + 0.3 * (0.1 / 0.5))
    high = at_forgetting(points, 0.8)
    assert high["step"] == pytest.approx(4 + 2 * (0.2 / 0.3))
    assert high["UR"] == pytest.approx(0.7 - 0.3 * (0.2 / 0.3))
    both = at_levels(points)
    assert set(both) == {"0.5", "0.8"} and both["0.8"] == high


def test_at_forgetting_never_reached_says_so():
    points = [{"step": 0, "FE": 0.0, "UR": 1.0}, {"step": 4, "FE": 0.3, "UR": 0.9}, {"step": 8, "FE": 0.7, "UR": 0.8}]
    high = at_forgetting(points, 0.8)
    assert high == {"level": 0.8, "reached": False, "step": None, "UR": None}
    assert at_forgetting(points, 0.5)["reached"] is True
    # an exact hit counts as reached; the step is that checkpoint's
    hit = at_forgetting(points + [{"step": 10, "FE": 0.8, "UR": 0.5}], 0.8)
    assert hit["reached"] and hit["step"] == 10 and hit["UR"] == 0.5
    # missing FE values are skipped, not read as 0
    assert at_forgetting([{"step": 0, "FE": 0.0}, {"step": 2, "FE": None}], 0.5)["reached"] is False


def test_trajectory_summary_at_several_levels():
    traj = [TradeOff(0.0, 1.0, 1.0, 1.0, 0.0, 0.0), TradeOff(1.0, 1.0, 0.0, 0.5, None, None)]
    s = trajectory_summary(traj, at=(0.5, 0.8))
    assert s["ur_at_fe_0.5"] == pytest.approx(0.5) and s["ur_at_fe_0.8"] == pytest.approx(0.2)
    assert s["hs_at_fe_0.8"] == pytest.approx(0.6)
