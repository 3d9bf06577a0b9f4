import math

import pytest

from rwkuplus.informative import (
    MAX_WIDTH,
    check_column,
    check_columns,
    informative_columns,
    interval,
    scores_from_records,
    tru_floor,
    wilson,
)


def test_wilson_interval_known_values():
    # p = 0.5, n = 100: 0.404 - 0.596 (the textbook value)
    low, high = wilson(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    # all correct does not collapse: 10 items -> lower bound 0.722
    low, high = wilson(1.0, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=1e-3)


def test_ten_items_all_correct_are_too_few():
    c = check_column("Gen", [100.0] * 10)
    assert not c["informative"] and "wide" in c["reason"]
    assert c["width"] == pytest.approx(27.75, abs=0.1)


def test_fifty_items_all_correct_discriminate():
    c = check_column("Gen", [100.0] * 50)
    assert c["informative"], c["reason"]
    assert c["width"] < MAX_WIDTH and c["low"] > 25.0


def test_at_the_floor_is_uninformative_however_many_items():
    # Rea 0 for every item (the default run's Before): not above its floor 0
    c = check_column("Rea", [0.0] * 500)
    assert not c["informative"] and "floor" in c["reason"]
    # Gen at chance (25%) on 1000 items: narrow, but not above chance
    gen = check_column("Gen", [100.0] * 250 + [0.0] * 750)
    assert not gen["informative"] and "floor" in gen["reason"]
    # the same share of correct answers is informative for a column whose floor is 0
    assert check_column("Fac", [100.0] * 250 + [0.0] * 750)["informative"]


def test_unbounded_column_uses_the_normal_interval():
    flu = [560.0, 600.0] * 25  # sd 20.2, n 50: half-width 1.96 * 20.2 / 7.07 = 5.6 -> 11.2 wide
    low, high = interval(flu, bounded=False)
    assert high - low == pytest.approx(2 * 1.959964 * 20.203 / math.sqrt(50), rel=1e-3)
    assert not check_column("Flu", flu)["informative"]
    assert check_column("Flu", [580.0, 590.0] * 25)["informative"]
    assert not check_column("Flu", [580.0])["informative"]  # one item: no spread, no interval


def test_missing_and_rules_for_ur():
    assert check_column("Gen", [])["reason"] == "no items measured"
    checks = check_columns({"Gen": [100.0] * 60, "Rea": [0.0] * 60, "Tru": [100.0] * 5})
    assert informative_columns(checks, ["Gen", "Rea", "Tru", "Fac", "Flu"]) == ["Gen"]
    assert informative_columns(None, ["Gen", "Rea"]) == ["Gen", "Rea"]
    assert tru_floor([4, 4, 2]) == pytest.approx(100 * (0.25 + 0.25 + 0.5) / 3)


def test_scores_from_records():
    records = {"mmlu": [{"correct": True}, {"correct": False}], "truthfulqa": [{"mc1": 1.0}],
               "triviaqa": [{"f1": 0.5}], "fluency": [{"entropy": 5.6}], "other": [{"x": 1}]}
    s = scores_from_records(records)
    assert s == {"Gen": [100.0, 0.0], "Tru": [100.0], "Fac": [50.0], "Flu": [pytest.approx(560.0)]}
