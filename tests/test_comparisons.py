"""Spillover by domain, comparisons at equal forgetting and the utility note of the summary, on hand-made units."""

import pytest

from rwkuplus.report.comparisons import (
    domain_rows,
    equal_forgetting_metrics,
    equal_forgetting_rows,
    html_section,
    markdown,
    target_items,
    unit_checkpoints,
    utility_columns,
)
from rwkuplus.report.summary import UnitResult


def unit(target="A", seed=0, method="ga", trajectory=(), diagnostics=(), domains=None, utility=None):
    return UnitResult(unit_id=f"{method}-{target}-{seed}", method=method, label=method.upper(), setting="full",
                      target=target, seed=seed, corpus=None, status="ok", reason=None,
                      trajectory=list(trajectory), diagnostics=list(diagnostics), domains=domains or {},
                      utility_columns=utility)


def pairs(grades):
    """item id -> [before, after] from 'cc', 'ci', ... strings."""
    code = {"c": "correct", "i": "incorrect", "a": "abstained"}
    return {f"q{k}": [code[g[0]], code[g[1]]] for k, g in enumerate(grades)}


def domain(grades, **rates):
    return {"n": len(grades), "items": pairs(grades), **rates}


def test_unit_checkpoints_join_diagnostics_and_put_before_first():
    u = unit(trajectory=[{"step": 2, "FE": 0.4, "UR": 0.9}, {"step": 4, "FE": 0.9, "UR": 0.7}],
             diagnostics=[{"step": 0, "conflict_ratio": 0.1, "same_attribute": {"conflict_ratio": 0.0}},
                          {"step": 4, "conflict_ratio": 0.5, "cosine_matrix": [[1.0]]}])
    pts = unit_checkpoints(u)
    assert [p["step"] for p in pts] == [0, 2, 4]
    assert pts[0]["FE"] == 0.0 and pts[0]["UR"] == 1.0 and pts[0]["dHR unrelated"] == 0.0
    assert pts[0]["conflict_ratio"] == 0.1 and pts[0]["same_attribute.conflict_ratio"] == 0.0
    assert pts[2] == {"step": 4, "FE": 0.9, "UR": 0.7, "conflict_ratio": 0.5}


def test_equal_forgetting_counts_units_that_never_reach_a_level():
    fast = unit("A", trajectory=[{"step": 2, "FE": 0.5, "UR": 0.8, "dHR unrelated": 0.1},
                                 {"step": 4, "FE": 1.0, "UR": 0.6, "dHR unrelated": 0.3}])
    slow = unit("B", trajectory=[{"step": 2, "FE": 0.2, "UR": 1.0}, {"step": 4, "FE": 0.6, "UR": 0.9}])
    rows = equal_forgetting_rows([fast, slow, unit("C")])  # C has no checkpoints: not counted
    half, high = rows["0.5"], rows["0.8"]
    assert (half["n_units"], half["n_reached"]) == (2, 2)
    # fast: exactly at step 2 (UR 0.8); slow: between steps 2 and 4 at 3/4 (UR 0.925)
    assert half["step"]["mean"] == pytest.approx((2 + 3.5) / 2)
    assert half["UR"]["mean"] == pytest.approx((0.8 + 0.925) / 2)
    assert (high["n_units"], high["n_reached"]) == (2, 1)  # slow never reaches 0.8: left out, not zero
    assert high["step"] == {"mean": pytest.approx(2 + 2 * 0.3 / 0.5), "std": None, "n": 1}
    assert high["UR"]["mean"] == pytest.approx(0.8 - 0.2 * 0.6) and high["dHR unrelated"]["mean"] == pytest.approx(0.22)
    m = equal_forgetting_metrics(rows)
    assert m["Reached FE=0.8"]["mean"] == 0.5 and m["Steps to FE=0.8"]["mean"] == pytest.approx(3.2)
    assert m["UR at FE=0.8"]["mean"] == pytest.approx(0.68) and "UR at FE=0.5" not in m
    never = equal_forgetting_rows([slow])["0.8"]
    assert never["n_reached"] == 0 and never["step"]["mean"] is None and never["UR"]["mean"] is None


def test_domain_rows_pool_seeds_per_item_and_bootstrap_targets_then_items():
    # target A, two seeds: q0 becomes incorrect in one seed only (0.5), q1 in both (1.0), q2 never (0)
    a0 = unit("A", 0, domains={"unrelated": domain(["ci", "ci", "cc"], accuracy=1 / 3, hr=2 / 3, abstention=0.0,
                                                   before_hr=0.0)})
    a1 = unit("A", 1, domains={"unrelated": domain(["cc", "ci", "cc"], accuracy=2 / 3, hr=1 / 3, abstention=0.0,
                                                   before_hr=0.0)})
    # target B: HR falls on one of two items (nonexistent people: fabrication counts correct and incorrect)
    b0 = unit("B", 0, domains={"unrelated": domain(["cc", "cc"], accuracy=1.0, hr=0.0, abstention=0.0, before_hr=0.0),
                               "nonexistent": domain(["ia", "aa"], accuracy=None, hr=0.0, abstention=1.0,
                                                     before_hr=0.5)})
    assert target_items([a0, a1], "unrelated") == {"A": [0.5, 1.0, 0.0]}
    rows = domain_rows([a0, a1, b0], n_boot=500)
    un = rows["unrelated"]
    assert (un["n_units"], un["n_targets"], un["n_items"]) == (3, 2, 5)
    # A's mean change 0.5, B's 0: the estimate weighs targets equally
    assert un["dHR"]["estimate"] == pytest.approx(0.25)
    assert un["dHR"]["low"] <= 0.25 <= un["dHR"]["high"]
    assert un["accuracy"] == pytest.approx((1 / 3 + 2 / 3 + 1.0) / 3)
    ne = rows["nonexistent"]
    assert ne["dHR"]["estimate"] == pytest.approx(-0.5) and ne["accuracy"] is None and ne["n_units"] == 1
    assert "same" not in rows


def test_utility_columns_and_markdown():
    checks = {"Gen": {"informative": True, "reason": "Before 96.0"}, "Rea": {"informative": False, "reason": "floor"}}
    assert utility_columns([unit(), unit(method="before", utility=checks)]) == checks
    assert utility_columns([unit()]) is None
    summary = {"utility_columns": checks, "rows": [
        {"method": "GA", "setting": "full", "domains": domain_rows([unit(domains={"same": domain(
            ["ci"], accuracy=0.0, hr=1.0, abstention=0.0, before_hr=0.0)})], n_boot=10),
         "at_fe": equal_forgetting_rows([unit(trajectory=[{"step": 2, "FE": 0.6}])])}]}
    text = "\n".join(markdown(summary))
    assert "Left out of UR: Rea." in text
    assert "| GA | full | same | 1 |" in text
    assert "| GA | full | 0.8 | 0/1 |" in text and "| GA | full | 0.5 | 1/1 |" in text
    assert markdown({"rows": []}) == []


def test_html_section_renders_the_same_tables():
    from rwkuplus.report.html import _e, _simple_table

    summary = {"utility_columns": {"Rea": {"informative": False, "reason": "Before 0.0 <at> its floor"}}, "rows": [
        {"method": "NPO", "setting": "full", "domains": {},
         "at_fe": equal_forgetting_rows([unit(trajectory=[{"step": 2, "FE": 0.9, "UR": 0.5}])])}]}
    html = html_section(summary, _simple_table, _e)
    assert "<h3>Utility columns on this benchmark</h3>" in html and "Left out of UR: Rea." in html
    assert "&lt;at&gt;" in html  # escaped
    assert "<h3>At equal forgetting</h3>" in html and "Spillover by domain" not in html
    assert "no spillover" in html_section({"rows": []}, _simple_table, _e)


def test_domain_bars_plot_in_the_report():
    from rwkuplus.report import plots
    from rwkuplus.report.html import _e, _figure, _simple_table

    rows = [{"method": "GA", "setting": "full", "domains": domain_rows([unit(domains={
        "unrelated": domain(["ci", "cc"], accuracy=0.5, hr=0.5, abstention=0.0, before_hr=0.0)})], n_boot=20)},
        {"method": "Before", "setting": None, "domains": {}}]
    png = plots.domain_bars([{"name": "GA", "domains": rows[0]["domains"]}])
    assert png.startswith(b"\x89PNG")
    assert plots.domain_bars([{"name": "x", "domains": {}}]) is None
    html = html_section({"rows": rows}, _simple_table, _e, _figure, {"GA": "#123456", "Before": "#000000"},
                        ["GA", "Before"])
    assert "<img" in html and "dHR by domain" in html
