"""The hidden-costs experiment's wiring end to end on the tiny random model: a run over two worlds,
spillover by domain at every checkpoint, comparisons at equal forgetting, the claims table."""

import json

import yaml

from rwkuplus.cli import main
from rwkuplus.config import RunConfig, packaged_experiments


def test_packaged_experiment_configuration_is_valid():
    config = RunConfig.from_yaml("hidden-costs")
    assert config.benchmark == ["world:0", "world:1", "world:2"] and config.targets == "all"
    assert config.checkpoints == [2, 3, 4, 5, 6, 8, 12] and config.diagnostics
    # the CFT methods train at the rates that reach FE = 0.8 within the 12 steps (read as numbers)
    assert config.train["cft-sft"] == {"lr": 1.5e-4} and config.train["cft-dpo"] == {"lr": 3e-4}
    # and the baselines: NPO at the rate that reaches FE = 0.8, RT at CFT-SFT's (docs/experiments.md)
    assert config.train["npo"] == {"lr": 3e-4} and config.train["rt"] == {"lr": 1.5e-4}
    assert config.train["all"] == {"max_steps": 12}
    assert {"ga", "gd", "npo", "rt", "cft-sft:conflicting", "cft-sft:consistent", "cft-dpo"} <= set(config.methods)
    assert "hidden-costs" in packaged_experiments()


def test_a_list_of_worlds_is_checked():
    import pytest

    from rwkuplus.errors import UserError

    ok = RunConfig.from_dict({"benchmark": ["world", "world:3"], "eval": {"unrelated_items": 0}})
    assert ok.eval["unrelated_items"] == 0 and ok.eval["batch_size"] == 32  # the other options keep their defaults
    for bad, what in ((["world:0", "rwku:/nowhere"], "a list of worlds"), (["world:0", "world"], "distinct"),
                      ([], "a list of worlds")):
        with pytest.raises(UserError, match=what):
            RunConfig.from_dict({"benchmark": bad})
    with pytest.raises(UserError, match="eval.unrelated_items"):
        RunConfig.from_dict({"eval": {"unrelated_items": -1}})
    with pytest.raises(UserError, match="packaged experiments: hidden-costs"):
        RunConfig.from_yaml("no-such-experiment")


def test_two_worlds_end_to_end_and_resume(tiny_model_dir, tmp_path, capsys):
    config = {
        "benchmark": ["world:0", "world:1"], "model": str(tiny_model_dir), "targets": "1",
        "methods": ["before", "ga", "cft-sft:conflicting"], "checkpoints": [1, 2],
        "diagnostics": False,
        "train": {"all": {"max_steps": 2, "batch_size": 2, "max_length": 64}},
        "eval": {"batch_size": 8, "parts": ["forget", "neighbor", "hallucination", "utility"], "utility_items": 4,
                 "hallucination_items": 4, "unrelated_items": 6},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["run", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    for world in ("world-0", "world-1"):
        assert (out / world / "summary.json").is_file()
        assert yaml.safe_load((out / world / "config.yaml").read_text())["benchmark"] == f"world:{world[-1]}"
    ga = json.loads(next((out / "world-1" / "units").glob("ga__*/result.json")).read_text())
    # the unrelated domain asked 6 general-knowledge questions; only those the Before unit got right count
    before = json.loads(next((out / "world-1" / "units").glob("before__*/result.json")).read_text())
    records = [json.loads(line) for p in (out / "world-1" / "units").glob("before__*/eval/*/hallucination.jsonl")
               for line in p.read_text().splitlines()]
    unrelated = [r for r in records if r["kind"] == "unrelated"]
    related = [r for r in records if r["kind"] == "related"]
    assert len(unrelated) == 6 and related and all(r["source"] == "neighbor" for r in related)
    known = sum(r["grade"] == "correct" for r in unrelated)
    assert before["domains"].get("unrelated", {}).get("n", 0) == known
    assert set(ga["domains"]) >= {"same", "related", "nonexistent"}
    # the utility columns were checked on the Before unit's records; Tru's floor is its items' chance
    checks = before["utility_columns"]
    assert set(checks) == {"Gen", "Rea", "Tru", "Fac", "Flu"} and all(c["n"] == 4 for c in checks.values())
    assert checks["Tru"]["floor"] == 25.0 and checks["Gen"]["floor"] == 25.0
    assert not any(c["informative"] for c in checks.values())  # 4 items: too few for a 10-point interval
    assert ga["metrics"]["UR"] is None  # so UR has no column on this world
    assert ga["metrics"]["dHR related"] == ga["domains"]["related"]["dHR"]
    assert len(ga["metrics"]["dHR related_ci"]) == 2
    # every checkpoint carries the domains, and each counted item's HR change
    for row in ga["trajectory"]:
        assert "dHR same" in row and set(row["domain_items"]) == set(ga["domains"])
        assert len(row["domain_items"]["same"]) == row["Items same"]
    summary = json.loads((out / "world-1" / "summary.json").read_text())
    row = next(r for r in summary["rows"] if r["method_id"] == "ga")
    assert set(row["at_fe"]) == {"0.5", "0.8"} and row["at_fe"]["0.5"]["n_units"] == 1
    assert row["domains"]["same"]["n_items"] == ga["domains"]["same"]["n"]
    assert "## Spillover by domain" in (out / "world-1" / "summary.md").read_text()
    claims = json.loads((out / "claims.json").read_text())
    assert claims["worlds"] == ["world 0", "world 1"] and claims["units"] == {"world 0": 3, "world 1": 3}
    assert {r["verdict"] for r in claims["rows"]} <= {"supported", "mixed", "not supported", "not measured"}
    assert (out / "claims.md").is_file()
    # a rerun resumes: every unit is finished, nothing is recomputed
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("world-*/units/*/result.json")}
    assert main(["run", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("world-*/units/*/result.json")} == stamps
    # the report of a run over several worlds rebuilds every world's tables and the claims
    (out / "claims.md").unlink()
    assert main(["report", str(out), "--no-html"]) == 0
    assert (out / "claims.md").is_file() and "world-0" in capsys.readouterr().out


def test_ur_leaves_out_the_columns_the_rule_marks_uninformative(tmp_path):
    from rwkuplus.benchmark.records import Benchmark, Target, TargetData
    from rwkuplus.fileio import write_jsonl
    from rwkuplus.suite import Suite, Unit

    suite = Suite(RunConfig(), tmp_path)
    suite.benchmark = Benchmark("world", [TargetData(Target("Ann"))])
    shared = tmp_path / "units" / Unit("before", None, "none", ("Ann",), 0).id / "eval" / "shared" / "utility-x"
    write_jsonl(shared / "utility.mmlu.jsonl", [{"correct": True}] * 60)  # Gen: 60 items, all right: informative
    write_jsonl(shared / "utility.truthfulqa.jsonl", [{"mc1": 1.0}] * 5)  # Tru: 5 items: too few
    ga = Unit("ga", None, "full", ("Ann",), 0)
    checks = suite._utility_checks(ga)
    assert checks["Gen"]["informative"] and not checks["Tru"]["informative"]
    before = [{"metrics": {"Forget All": 80.0, "Neighbor All": 90.0, "Gen": 100.0, "Tru": 100.0}}]
    after = {"Forget All": 40.0, "Neighbor All": 90.0, "Gen": 50.0, "Tru": 0.0}
    assert suite._relative(after, [], before, ga, checks)["UR"] == 0.5  # Gen alone
    assert suite._relative(after, [], before, ga, None)["UR"] == 0.25  # no checks: every column
