"""target_mode sequential on the tiny model: the plan, the order of the steps and their scores, resume
after an interruption (the same numbers as an uninterrupted run), and the attacks in the suite."""

from pathlib import Path

import pytest
import yaml

from rwkuplus.config import RunConfig
from rwkuplus.errors import UserError
from rwkuplus.fileio import read_json
from rwkuplus.suite import Suite, plan_units


def _config(tmp_path: Path, model_dir: Path, **over) -> RunConfig:
    data = {"model": str(model_dir), "targets": "1-2", "methods": ["before", "ga"], "checkpoints": [],
            "target_mode": "sequential", "diagnostics": False,
            "train": {"all": {"max_steps": 2, "batch_size": 2, "max_length": 64, "lr": 1e-3}},
            "eval": {"batch_size": 8, "parts": ["forget", "neighbor"], "utility_items": 2, "hallucination_items": 2},
            **over}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return RunConfig.from_yaml(path)


def test_plan_sequential_is_one_unit_in_target_order():
    units = plan_units(RunConfig(methods=["before", "ga", "npo"], target_mode="sequential"), ["B", "A", "C"])
    seq = [u for u in units if u.method != "before"]
    assert [u.targets for u in seq] == [("B", "A", "C")] * 2 and all(u.sequential for u in seq)
    batch = plan_units(RunConfig(methods=["ga"], target_mode="batch"), ["B", "A", "C"])
    assert {u.id for u in seq}.isdisjoint(u.id for u in batch)  # another unit than batch unlearning
    assert [u.targets for u in units if u.method == "before"] == [("B",), ("A",), ("C",)]
    with pytest.raises(UserError, match="target_mode"):
        RunConfig.from_dict({"target_mode": "one-by-one"})


def _losses(unit_dir: Path, step: int) -> list[float]:
    from rwkuplus.fileio import read_jsonl

    return [row["loss"] for row in read_jsonl(unit_dir / "sequence" / str(step) / "train_log.jsonl")]


def _ga_unit(out: Path) -> Path:
    return next(p for p in (out / "units").iterdir() if p.name.startswith("ga__"))


def test_sequential_run_scores_every_target_so_far_and_resumes(tiny_model_dir, tmp_path, monkeypatch):
    import rwkuplus.evaluation.runner as runner

    config = _config(tmp_path, tiny_model_dir)
    whole = Suite(config, tmp_path / "whole", progress=False).run()
    unit = _ga_unit(tmp_path / "whole")
    result = read_json(unit / "result.json")
    assert result["status"] == "ok" and result["unit"]["sequential"] is True
    names = result["unit"]["targets"]
    rows = result["training"]["sequence"]
    assert [r["step"] for r in rows] == [1, 2] and [r["target"] for r in rows] == names
    assert list(rows[0]["forget"]) == names[:1] and list(rows[1]["forget"]) == names  # every target so far
    assert result["training"]["steps"] == 4  # 2 steps per target
    assert result["metrics"]["Forget All"] == pytest.approx(sum(rows[1]["forget"].values()) / 2)
    assert (unit / "sequence" / "1" / "train_log.jsonl").is_file() and (unit / "sequence" / "1" / "eval").is_dir()
    assert not (unit / "sequence" / "model.safetensors").exists()  # weights dropped once finished
    assert any(r["method_id"] == "ga" and r["sequence"] for r in whole["rows"])
    report = (tmp_path / "whole" / "report.html").read_text()
    assert "sequential unlearning curves" in report and "data:image/png" in report
    assert "## Sequential unlearning" in (tmp_path / "whole" / "summary.md").read_text()

    # Interrupted during step 2's evaluation: step 1's weights and scores stay; a rerun resumes from them.
    real = runner.evaluate_model
    calls = {"train": 0}

    def interrupt(model, tokenizer, benchmark, out_dir, targets=None, **kw):
        if targets is not None and len(targets) == 2 and "ga__" in str(out_dir):
            raise KeyboardInterrupt
        return real(model, tokenizer, benchmark, out_dir, targets=targets, **kw)

    monkeypatch.setattr(runner, "evaluate_model", interrupt)
    with pytest.raises(KeyboardInterrupt):
        Suite(config, tmp_path / "cut", progress=False).run()
    cut = _ga_unit(tmp_path / "cut")
    assert (cut / "sequence" / "1.json").is_file() and (cut / "sequence" / "model.safetensors").is_file()
    assert not (cut / "result.json").exists()
    monkeypatch.setattr(runner, "evaluate_model", real)
    from rwkuplus import suite as suite_module

    original = suite_module.Suite._train

    def counting(self, unit, *a, **k):
        if not unit.sequential:
            calls["train"] += 1
        return original(self, unit, *a, **k)

    monkeypatch.setattr(suite_module.Suite, "_train", counting)
    Suite(config, tmp_path / "cut", progress=False).run()
    assert calls["train"] == 1  # only the second target was trained again
    resumed = read_json(cut / "result.json")
    assert resumed["training"]["sequence"] == rows
    assert _losses(cut, 2) == pytest.approx(_losses(unit, 2), rel=1e-6)  # step 2 from step 1's saved weights
    assert resumed["metrics"]["Forget All"] == pytest.approx(result["metrics"]["Forget All"])
    assert not (cut / "sequence" / "model.safetensors").exists()


def test_sequential_lora_resumes_from_the_saved_adapter(tiny_model_dir, tmp_path, monkeypatch):
    import rwkuplus.evaluation.runner as runner

    config = _config(tmp_path, tiny_model_dir, settings=["lora"], methods=["before", "npo"],
                     train={"all": {"max_steps": 2, "batch_size": 2, "max_length": 64, "lr": 1e-2}})
    Suite(config, tmp_path / "whole", progress=False).run()
    whole = read_json(next((tmp_path / "whole" / "units").glob("npo__lora__*")) / "result.json")
    real = runner.evaluate_model

    def interrupt(model, tokenizer, benchmark, out_dir, targets=None, **kw):
        if targets is not None and len(targets) == 2 and "npo__" in str(out_dir):
            raise KeyboardInterrupt
        return real(model, tokenizer, benchmark, out_dir, targets=targets, **kw)

    monkeypatch.setattr(runner, "evaluate_model", interrupt)
    with pytest.raises(KeyboardInterrupt):
        Suite(config, tmp_path / "cut", progress=False).run()
    monkeypatch.setattr(runner, "evaluate_model", real)
    Suite(config, tmp_path / "cut", progress=False).run()
    cut = read_json(next((tmp_path / "cut" / "units").glob("npo__lora__*")) / "result.json")
    assert cut["status"] == whole["status"] == "ok"
    assert cut["training"]["sequence"] == whole["training"]["sequence"]
    folder = {name: next((tmp_path / name / "units").glob("npo__lora__*")) for name in ("whole", "cut")}
    assert _losses(folder["cut"], 2) == pytest.approx(_losses(folder["whole"], 2), rel=1e-6)


def test_attack_parts_in_the_suite_give_columns_and_recovery(tiny_model_dir, tmp_path):
    from rwkuplus.config import quick_config

    for off in (RunConfig().validate().eval["parts"], quick_config().validate().eval["parts"]):
        assert "quantization" not in off and "relearning" not in off  # off by default and in --quick
    config = _config(tmp_path, tiny_model_dir, targets="1", target_mode="single",
                     eval={"batch_size": 8, "parts": ["forget", "quantization", "relearning"],
                           "attacks": {"quantization_bits": [8, 4], "group_size": 16, "relearning_steps": [1, 2],
                                       "relearning_batch_size": 2}})
    summary = Suite(config, tmp_path / "run", progress=False).run()
    before = read_json(next((tmp_path / "run" / "units").glob("before__*")) / "result.json")["metrics"]
    ga = read_json(_ga_unit(tmp_path / "run") / "result.json")["metrics"]
    for m in (before, ga):
        for col in ("Q8 Forget All", "Q4 Forget All", "Relearn@0 Forget All", "Relearn@1 Forget All",
                    "Relearn@2 Forget All"):
            assert col in m
    from rwkuplus.evaluation.attacks import recovery

    assert "Q4 recovery" in ga and "Relearn@2 recovery" in ga
    assert ga["Q4 recovery"] == recovery(before["Forget All"], ga["Forget All"], ga["Q4 Forget All"])
    assert ga["Relearn@2 recovery"] == recovery(before["Relearn@0 Forget All"], ga["Relearn@0 Forget All"],
                                                ga["Relearn@2 Forget All"])
    row = next(r for r in summary["rows"] if r["method_id"] == "ga")
    assert row["metrics"]["Q4 Forget All"]["mean"] == ga["Q4 Forget All"]
    text = (tmp_path / "run" / "summary.md").read_text()
    assert "Attacks" in text and "Q4 Forget All" in text
    assert "Attacks" in (tmp_path / "run" / "report.html").read_text()
    with pytest.raises(UserError, match="eval.attacks.relearning_steps"):
        _config(tmp_path, tiny_model_dir, eval={"attacks": {"relearning_steps": [0]}})
    with pytest.raises(UserError, match="unknown setting"):
        _config(tmp_path, tiny_model_dir, eval={"attacks": {"bits": [8]}})


def test_unlearn_sequential_trains_in_order_from_the_last_model_and_resumes(tiny_model_dir, tmp_path):
    import json
    import shutil

    import torch
    from safetensors.torch import load_file
    from test_unlearn_command import cli, rwku_folder

    bench = rwku_folder(tmp_path / "rwku")
    args = ["unlearn", "--method", "gd", "--benchmark", f"rwku:{bench}", "--model", tiny_model_dir, "--steps", 2,
            "--batch-size", 2, "--lr", 1e-3, "--sequential"]
    out = tmp_path / "seq"
    assert cli(*args, "--out", out) == 0
    first, second = out / "step1_1_Alice_Smith", out / "step2_2_Bob_Stone"
    assert set(json.loads((first / "eval.json").read_text())) == {"Alice Smith"}
    assert set(json.loads((second / "eval.json").read_text())) == {"Alice Smith", "Bob Stone"}  # every target so far
    assert json.loads((out / "config.json").read_text())["sequential"] is True
    key = "model.layers.0.mlp.up_proj.weight"
    a = load_file(str(first / "model" / "model.safetensors"))[key]
    b = load_file(str(second / "model" / "model.safetensors"))[key]
    assert cli("unlearn", "--method", "gd", "--benchmark", f"rwku:{bench}", "--model", tiny_model_dir, "--steps", 2,
               "--batch-size", 2, "--lr", 1e-3, "--targets", "2", "--out", tmp_path / "alone") == 0
    alone = load_file(str(tmp_path / "alone" / "2_Bob_Stone" / "model" / "model.safetensors"))[key]
    assert not torch.equal(b, alone)  # step 2 did not start from the original weights ...
    start = load_file(str(Path(tiny_model_dir) / "model.safetensors"))[key]
    assert (b - a).abs().max() < (b - start).abs().max() + 1e-12  # ... but from step 1's
    # Resume: step 2 lost, rerun: it starts from step 1's saved model and gives the same weights.
    shutil.rmtree(second)
    assert cli(*args, "--out", out) == 0
    again = load_file(str(second / "model" / "model.safetensors"))[key]
    assert torch.allclose(again, b, atol=1e-6)
    assert cli(*args, "--batch-target", "--out", tmp_path / "both") == 2
