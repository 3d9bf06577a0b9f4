"""The claims table on hand-made run folders with known answers (two worlds)."""

import json

import pytest

from rwkuplus import claims as C
from rwkuplus.cli import main
from rwkuplus.errors import UserError


def _unit(folder, method, target, seed=0, corpus=None, trajectory=(), diagnostics=()):
    uid = f"{method}-{corpus or 'x'}__{target}__s{seed}"
    d = folder / "units" / uid
    d.mkdir(parents=True)
    obj = {"unit": {"method": method, "label": method, "setting": "full", "target": target, "seed": seed,
                    "corpus": corpus},
           "status": "ok", "reason": None, "metrics": {}, "costs": {}, "trajectory": list(trajectory),
           "diagnostics": list(diagnostics), "seconds": 360.0}
    (d / "result.json").write_text(json.dumps(obj))


def _traj(fes, changes):
    """Checkpoints at steps 2, 4, ...: FE and each item's HR change in the unrelated domain."""
    return [{"step": 2 * (k + 1), "FE": fe, "domain_items": {"unrelated": {f"q{i}": c for i, c in enumerate(ch)}}}
            for k, (fe, ch) in enumerate(zip(fes, changes))]


def make_world(folder, revision, cft_change, conflict_gap, slow_conflicting=True):
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"benchmark": {"kind": "world", "revision": revision}, "model": "m"}))
    for target in ("Ann", "Bob"):
        # claim 1: conflict ratio 0.2 + gap (conflicting) vs 0.2 (consistent) at every checkpoint;
        # FE reaches 0.8 at step 4 (conflicting: at step 6 when slow) vs step 4 (consistent)
        for corpus, cr in (("conflicting", 0.2 + conflict_gap), ("consistent", 0.2)):
            fes = [0.5, 0.6, 0.8] if corpus == "conflicting" and slow_conflicting else [0.5, 0.8, 1.0]
            diag = [{"step": s, "conflict_ratio": cr, "cancellation_ratio": cr,
                     "same_attribute": {"conflict_ratio": cr}} for s in (0, 2, 4, 6)]
            _unit(folder, "cft-sft", target, corpus=corpus, trajectory=_traj(fes, [[0.0, 0.0]] * 3), diagnostics=diag)
        # claim 2: at FE 0.5 (step 2) CFT-DPO's items change by cft_change, the baselines' by 0
        _unit(folder, "cft-dpo", target, trajectory=_traj([0.5, 1.0], [[cft_change, cft_change], [1.0, 1.0]]))
        for m in ("ga", "gd", "npo", "rt"):
            _unit(folder, m, target, trajectory=_traj([0.5, 1.0], [[0.0, 0.0], [0.0, 0.0]]))
    return folder


def _rows(table):
    return {(r["comparison"], r["measure"]): r for r in table["rows"]}


def test_verdict_rule():
    assert C.verdict(0.2, 0.1, 0.3, [0.2, 0.1]) == "supported"
    assert C.verdict(0.2, 0.1, 0.3, [0.3, -0.1]) == "mixed"  # the worlds disagree
    assert C.verdict(0.2, -0.1, 0.5, [0.2]) == "mixed"  # the interval contains 0
    assert C.verdict(-0.1, -0.3, 0.1, [-0.1]) == "not supported"
    assert C.verdict(0.0, 0.0, 0.0, [0.0]) == "not supported"
    assert C.verdict(None, None, None, []) == "not measured"
    assert C.verdict(-0.2, -0.3, -0.1, [-0.2], direction=-1) == "supported"


def test_claims_on_two_worlds(tmp_path):
    a = make_world(tmp_path / "w0", "seed0", cft_change=0.4, conflict_gap=0.3)
    b = make_world(tmp_path / "w1", "seed1", cft_change=0.2, conflict_gap=0.1)
    table = C.claims_table([a, b], n_boot=300)
    assert table["worlds"] == ["seed0", "seed1"]
    rows = _rows(table)
    cr = rows[("CFT-SFT conflicting - consistent", "conflict ratio at FE = 0.5")]
    assert cr["estimate"] == pytest.approx(0.2) and cr["per_world"] == {"seed0": pytest.approx(0.3),
                                                                         "seed1": pytest.approx(0.1)}
    assert (cr["n_worlds"], cr["n_targets"]) == (2, 4) and cr["verdict"] == "supported"
    assert cr["low"] == pytest.approx(0.1) and cr["high"] == pytest.approx(0.3)
    # conflicting reaches FE 0.8 at step 6, consistent at step 4
    steps = rows[("CFT-SFT conflicting - consistent", "steps to FE = 0.8")]
    assert steps["estimate"] == pytest.approx(2.0) and steps["verdict"] == "supported"
    # claim 2: CFT-DPO's unrelated items at FE 0.5 change by 0.4 (world 0) and 0.2 (world 1), the baselines' by 0
    dpo = rows[("CFT-DPO - mean of GA, GD, NPO, RT", "dHR unrelated at FE = 0.5")]
    assert dpo["estimate"] == pytest.approx(0.3) and dpo["n_items"] == 8 and dpo["verdict"] == "supported"
    # at FE 0.8: between steps 2 (0.5) and 4 (1.0), 3/5 of the way: 0.4 + 0.6 * 0.6 and 0.2 + 0.8 * 0.6
    high = rows[("CFT-DPO - mean of GA, GD, NPO, RT", "dHR unrelated at FE = 0.8")]
    assert high["estimate"] == pytest.approx(((0.4 + 0.36) + (0.2 + 0.48)) / 2)
    # no items of the other domains, and CFT-SFT has no unrelated items changing: not measured / not supported
    assert rows[("CFT-DPO - mean of GA, GD, NPO, RT", "dHR same at FE = 0.5")]["verdict"] == "not measured"
    # at equal steps (the last checkpoint, step 4) CFT-DPO's items changed by 1.0, the baselines' by 0
    end = rows[("CFT-DPO - mean of GA, GD, NPO, RT", "dHR unrelated at the last checkpoint")]
    assert end["claim"] == "2, context: at equal steps" and end["level"] is None
    assert end["estimate"] == pytest.approx(1.0) and end["n_items"] == 8
    assert rows[("CFT-SFT (conflicting) - mean of GA, GD, NPO, RT", "dHR unrelated at FE = 0.5")]["verdict"] == \
        "not supported"


def test_claims_mixed_when_worlds_disagree_and_never_reached(tmp_path):
    a = make_world(tmp_path / "w0", "seed0", cft_change=0.5, conflict_gap=0.3, slow_conflicting=False)
    b = make_world(tmp_path / "w1", "seed1", cft_change=-0.1, conflict_gap=0.3, slow_conflicting=False)
    rows = _rows(C.claims_table([a, b], n_boot=300))
    dpo = rows[("CFT-DPO - mean of GA, GD, NPO, RT", "dHR unrelated at FE = 0.5")]
    assert dpo["estimate"] == pytest.approx(0.2) and dpo["verdict"] == "mixed"
    steps = rows[("CFT-SFT conflicting - consistent", "steps to FE = 0.8")]
    assert steps["estimate"] == pytest.approx(0.0) and steps["verdict"] == "not supported"


def test_command_writes_tables_and_the_doc_block(tmp_path, capsys):
    make_world(tmp_path / "multi" / "world-0", "seed0", 0.4, 0.3)
    make_world(tmp_path / "multi" / "world-1", "seed1", 0.2, 0.1)
    doc = tmp_path / "doc.md"
    doc.write_text("# Doc\n\n<!-- table:claims -->\nold\n<!-- /table:claims -->\n\nafter\n")
    assert main(["claims", str(tmp_path / "multi"), "--doc", str(doc), "--n-boot", "200"]) == 0
    saved = json.loads((tmp_path / "multi" / "claims.json").read_text())
    assert saved["format"] == "rwkuplus-claims" and saved["worlds"] == ["seed0", "seed1"]
    text = doc.read_text()
    assert "old" not in text and "**supported**" in text and text.endswith("after\n")
    assert "| 1: knowledge conflict | conflict ratio at FE = 0.5 |" in (tmp_path / "multi" / "claims.md").read_text()
    with pytest.raises(UserError, match="not a run folder"):
        C.run_folders([tmp_path / "doc.md"])


def test_a_partial_run_says_so_and_counts_what_finished(tmp_path):
    a = make_world(tmp_path / "w0", "seed0", cft_change=0.4, conflict_gap=0.3)
    whole = C.claims_table([a], n_boot=100)
    assert whole["planned"] == {"seed0": 14} and "partial" not in C.to_markdown(whole)
    # the run planned a third target whose units have not run yet (run.json is written when a run starts)
    units = sorted(p.name for p in (a / "units").iterdir())
    later = [u.replace("__Bob__", "__Cid__") for u in units if "__Bob__" in u]
    (a / "run.json").write_text(json.dumps({"benchmark": {"kind": "world", "revision": "seed0"}, "model": "m",
                                            "units": units + later, "complete": False}))
    (a / "units" / later[0]).mkdir()  # one of them started, without a result yet
    part = C.claims_table([a], n_boot=100)
    assert part["units"] == {"seed0": 14} and part["planned"] == {"seed0": 21}
    text = C.to_markdown(part)
    assert "14 finished units of 21 planned: **a partial run**" in text
    assert part["unit_hours"] == {"seed0": pytest.approx(1.4)}  # 14 units of 360 s
    assert "Unit time: 1.4 h summed over the units (seed0 1.4)" in text
    assert _rows(part).keys() == _rows(whole).keys()
    cr = _rows(part)[("CFT-SFT conflicting - consistent", "conflict ratio at FE = 0.5")]
    assert cr["n_targets"] == 2 and cr["estimate"] == pytest.approx(0.3)


def test_a_baseline_that_never_reaches_the_level_is_named(tmp_path):
    a = make_world(tmp_path / "w0", "seed0", cft_change=0.4, conflict_gap=0.3)
    for unit in (a / "units").glob("npo-*"):  # NPO's forgetting stops at FE 0.4
        obj = json.loads((unit / "result.json").read_text())
        obj["trajectory"] = _traj([0.2, 0.4], [[0.0, 0.0], [0.0, 0.0]])
        (unit / "result.json").write_text(json.dumps(obj))
    rows = _rows(C.claims_table([a], n_boot=100))
    key = ("CFT-DPO - mean of GA, GD, RT (NPO: FE never reaches the level)", "dHR unrelated at FE = 0.5")
    assert key in rows and rows[key]["estimate"] == pytest.approx(0.4)
