import numpy as np
import pytest

from rwkuplus.bootstrap import flat_bootstrap, flatten, hierarchical_bootstrap


def _worlds(means, n_targets=4, n_items=50, seed=0):
    """Hand-made data: each world's items are 0/1 with that world's share of ones, exactly."""
    rng = np.random.default_rng(seed)
    data = {}
    for w, m in enumerate(means):
        targets = {}
        for t in range(n_targets):
            items = np.zeros(n_items)
            items[: int(round(m * n_items))] = 1.0
            targets[f"t{t}"] = list(rng.permutation(items))
        data[f"world-{w}"] = targets
    return data


def test_estimate_is_the_nested_mean_each_level_weighing_its_groups_equally():
    data = {"w0": {"a": [1, 1, 1, 1], "b": [0]}, "w1": {"c": [0, 0]}}
    r = hierarchical_bootstrap(data, n_boot=200)
    # world 0: (1 + 0) / 2 = 0.5; world 1: 0; the mean of the worlds 0.25 (the pooled mean would be 4/7)
    assert r.estimate == pytest.approx(0.25)
    assert r.counts == (2, 3, 7)
    assert 0.0 <= r.low <= r.estimate <= r.high <= 1.0


def test_between_world_variance_widens_the_interval_against_the_flat_item_bootstrap():
    data = _worlds([0.1, 0.5, 0.9])
    hier = hierarchical_bootstrap(data, n_boot=2000, seed=1)
    flat = flat_bootstrap(flatten(data), n_boot=2000, seed=1)
    assert hier.estimate == pytest.approx(0.5) and flat.estimate == pytest.approx(0.5)
    # 600 items flat: half-width about 1.96 * sqrt(0.25 / 600) = 0.04; three worlds 0.1 / 0.5 / 0.9 spread far more
    assert flat.width == pytest.approx(0.08, abs=0.015)
    assert hier.width > 4 * flat.width
    assert hier.low < 0.3 and hier.high > 0.7


def test_without_between_group_variance_it_matches_the_flat_bootstrap():
    data = _worlds([0.5, 0.5, 0.5])  # every world and target has exactly half ones
    hier = hierarchical_bootstrap(data, n_boot=2000, seed=2)
    flat = flat_bootstrap(flatten(data), n_boot=2000, seed=2)
    assert hier.width == pytest.approx(flat.width, rel=0.2)


def test_single_level_interval_has_the_binomial_width():
    values = [1.0] * 200 + [0.0] * 200
    r = flat_bootstrap(values, n_boot=4000, seed=0)
    assert r.estimate == 0.5
    assert r.width == pytest.approx(2 * 1.96 * 0.025, rel=0.15)


def test_deterministic_in_the_seed():
    data = _worlds([0.2, 0.6])
    a, b = hierarchical_bootstrap(data, seed=7), hierarchical_bootstrap(data, seed=7)
    c = hierarchical_bootstrap(data, seed=8)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)


def test_constant_data_zero_width_and_per_target_scores():
    r = hierarchical_bootstrap({"w0": {"a": [0.3], "b": [0.3]}, "w1": {"c": 0.3}})
    assert r.estimate == pytest.approx(0.3) and r.low == pytest.approx(0.3) and r.high == pytest.approx(0.3)
    # one number per target (a score such as FE): targets are resampled, nothing below them
    s = hierarchical_bootstrap([[0.0, 1.0]], n_boot=1000)
    assert s.estimate == 0.5 and s.low == 0.0 and s.high == 1.0


def test_empty_missing_and_malformed():
    assert hierarchical_bootstrap({"w0": {"a": []}}).estimate is None
    # non-finite values and empty groups are dropped
    assert hierarchical_bootstrap([[1.0, float("nan")], []]).estimate == 1.0
    with pytest.raises(ValueError):
        hierarchical_bootstrap([1.0, [0.0, 1.0]])
    with pytest.raises(ValueError):
        hierarchical_bootstrap([1.0], level=1.5)
