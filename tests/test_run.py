import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rwkuplus.cli import main
from rwkuplus.config import RunConfig
from rwkuplus.errors import UserError
from rwkuplus.suite import Unit, plan_units


def _tiny_config(tmp_path: Path, model_dir: Path, methods=("before", "ga", "cft-sft:consistent")) -> Path:
    config = {
        "model": str(model_dir), "targets": "1", "methods": list(methods), "checkpoints": [2],
        "train": {"all": {"max_steps": 2, "batch_size": 2, "max_length": 64}},
        "eval": {"batch_size": 8, "parts": ["forget", "neighbor", "hallucination"], "utility_items": 4, "hallucination_items": 4},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_config_errors_are_one_sentence(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("benchmark: world\nmethodz: [ga]\n")
    assert main(["run", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "unknown key 'methodz'" in capsys.readouterr().err
    bad.write_text("methods: [before, forget-everything]\n")
    assert main(["run", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "forget-everything" in capsys.readouterr().err
    bad.write_text(f"benchmark: rwku:{tmp_path / 'missing'}\nmodel: x\n")
    assert main(["run", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "existing data folder" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # nothing written for a bad configuration
    with pytest.raises(UserError, match="eval.parts"):
        RunConfig.from_dict({"eval": {"parts": ["forget", "vibes"]}})
    # YAML reads "2e-4" (no dot) as a string: a number in any spelling is a number ...
    text = "train: {all: {max_steps: 12}, cft-sft: {lr: 2e-4}, cft-dpo: {lr: 1E-4, warmup_ratio: '0.1'}}\n"
    train = RunConfig.from_dict(yaml.safe_load(text)).train
    assert train["cft-sft"]["lr"] == 2e-4 and train["cft-dpo"] == {"lr": 1e-4, "warmup_ratio": 0.1}
    # ... and a value that is no number, or no valid setting, is named before any unit runs
    with pytest.raises(UserError, match=r"train\.ga\.lr.*a number"):
        RunConfig.from_dict({"train": {"ga": {"lr": "fast"}}})
    with pytest.raises(UserError, match=r"train\.ga.*positive"):
        RunConfig.from_dict({"train": {"ga": {"lr": -1e-4}}})
    assert RunConfig.from_dict(yaml.safe_load("train: {all: {adam_eps: 1e-4}}")).train["all"] == {"adam_eps": 1e-4}
    with pytest.raises(UserError, match=r"train\.all.*adam-eps.*positive"):
        RunConfig.from_dict({"train": {"all": {"adam_eps": 0.0}}})
    # Evaluation options not given keep their defaults, however the configuration was built.
    partial = RunConfig(eval={"batch_size": 4}).validate()
    assert partial.eval["batch_size"] == 4 and partial.eval["parts"] == RunConfig().eval["parts"]


def test_plan_units_single_and_batch():
    config = RunConfig(methods=["before", "icu", "ga", "cft-sft:consistent"], seeds=[0, 1], settings=["full", "lora"])
    units = plan_units(config, ["A", "B"])
    assert sum(u.method == "before" for u in units) == 2 and sum(u.method == "icu" for u in units) == 2
    assert sum(u.method == "ga" for u in units) == 2 * 2 * 2  # targets x seeds x settings
    assert len({u.id for u in units}) == len(units)
    # Before and ICU first; then the trained units target by target (a stopped run holds whole targets)
    assert [u.method for u in units[:4]] == ["before", "before", "icu", "icu"]
    order = [u.targets[0] for u in units[4:]]
    assert order == ["A"] * 8 + ["B"] * 8
    assert [(u.method, u.seed, u.setting) for u in units[4:8]] == [("ga", 0, "full"), ("ga", 0, "lora"),
                                                                   ("ga", 1, "full"), ("ga", 1, "lora")]
    batch = plan_units(RunConfig(methods=["ga"], target_mode="batch"), ["A", "B"])
    assert [u.targets for u in batch if u.method == "ga"] == [("A", "B")]
    assert Unit("cft-sft", "consistent", "full", ("A",), 0).label == "CFT-SFT (consistent)"


def test_run_end_to_end_resumes_without_recomputing(tiny_model_dir, tmp_path):
    config = _tiny_config(tmp_path, tiny_model_dir)
    out = tmp_path / "run"
    assert main(["run", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    results = sorted((out / "units").glob("*/result.json"))
    assert len(results) == 3
    for f in ("summary.json", "summary.csv", "summary.md", "report.html", "config.yaml", "run.log"):
        assert (out / f).is_file(), f
    stamps = {p: p.stat().st_mtime_ns for p in results}
    ga = next(p for p in results if p.parent.name.startswith("ga__"))
    import json

    r = json.loads(ga.read_text())
    assert r["status"] == "ok" and r["unit"]["method"] == "ga"
    assert [row["step"] for row in r["trajectory"]] == [2]  # the configured checkpoints only
    assert r["costs"]["tokens_trained"] > 0 and r["metrics"]["FLOPs"] > 0
    assert "FE" in r["metrics"] and "Forget All" in r["metrics"]
    # Hallucination: the evaluation's per-target records back HR, and dHR pairs them with Before's.
    from rwkuplus.evaluation.hallucination import spillover
    from rwkuplus.fileio import read_jsonl

    ga_records = read_jsonl(next((ga.parent / "eval").glob("*/hallucination.jsonl")))
    before_dir = next(p.parent for p in results if p.parent.name.startswith("before__"))
    before_records = read_jsonl(next((before_dir / "eval").glob("*/hallucination.jsonl")))
    answerable = [x for x in ga_records if x["kind"] == "answerable"]
    assert answerable and r["metrics"]["HR"] == sum(x["grade"] == "incorrect" for x in answerable) / len(answerable)
    assert r["metrics"]["dHR"] == spillover(ga_records, before_records, seed=0)["hallucination_rate"]["delta"]
    cft = json.loads(next(p for p in results if "cft-sft" in p.parent.name).read_text())
    assert cft["diagnostics"] and "conflict_ratio" in cft["diagnostics"][0]
    # CFT's conflict diagnostics: at the start as well as at the checkpoints; its trajectory: checkpoints only.
    assert [d["step"] for d in cft["diagnostics"]] == [0, 2] and [t["step"] for t in cft["trajectory"]] == [2]
    assert json.loads((out / "run.json").read_text())["complete"] is True
    # Again: nothing recomputed.
    assert main(["run", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in results} == stamps


def test_interrupted_run_loses_only_the_unit_in_progress(tiny_model_dir, tmp_path):
    config = _tiny_config(tmp_path, tiny_model_dir, methods=("before", "ga", "gd"))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "rwkuplus", "run", "--config", str(config), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "units").glob("*/result.json"))) < 1:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p: p.stat().st_mtime_ns for p in (out / "units").glob("*/result.json")}
    assert len(first) >= 1
    # the killed run can be read already: its plan (run.json, written at the start) and what finished
    import json

    from rwkuplus.report.summary import load_run

    plan = json.loads((out / "run.json").read_text())
    assert plan["complete"] is False and len(plan["units"]) == 3
    partial = load_run(out)
    assert len(partial.units) + len(partial.pending) == 3 and len(partial.units) == len(first)
    assert subprocess.run(cmd, env=os.environ.copy(), capture_output=True).returncode == 0
    assert len(list((out / "units").glob("*/result.json"))) == 3
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())  # finished units were not recomputed
