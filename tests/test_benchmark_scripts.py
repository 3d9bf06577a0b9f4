"""The prepared GPU check runs before a GPU exists: its CPU smoke mode, end to end on a tiny model; and the
matrix-shape benchmark prints its table."""

import json
from pathlib import Path

from rwkuplus.testing import load_module

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    return load_module(BENCHMARKS / f"{name}.py")


def test_gpu_check_smoke_mode_prints_its_table(tmp_path, capsys):
    gpu_check = _load("gpu_check")
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--smoke", "--items", "2", "--steps", "2", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    for row in ("training step", "evaluation, first 2 items per part", "whole evaluation", "rwkuplus run --quick",
                "peak GPU memory"):
        assert row in table, row
    result = json.loads(out.read_text())
    assert result["smoke"] is True and result["quick_run"]["exit"] == 0 and result["quick_run"]["units_ok"] == 3
    assert result["train"]["seconds_per_step"] > 0 and result["evaluate"]["all_agree"] is True
    assert result["evaluate"]["whole_records"] > 0


def test_matmul_shapes_prints_one_row_per_shape_and_dtype(capsys):
    import re

    assert _load("matmul_shapes").main(["--tokens", "8", "--reference-size", "64"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 8 |")]
    assert len(rows) == 8  # 4 shapes x (bfloat16, float32)
    for row in rows:
        rates = [float(x) for x in re.findall(r"\| ([0-9.]+)(?= \|)", row)[1:]]
        assert len(rates) == 3 and all(r > 0 for r in rates), row
    assert "64^3 reference" in out


def test_generation_batch_prints_one_row_per_batch_size_and_the_first_again(tiny_model_dir, capsys):
    assert _load("generation_batch").main([str(tiny_model_dir), "--prompts", "6", "--batch-sizes", "2,4",
                                           "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split("|")[1].strip() for r in rows] == ["2", "4", "2"]
    assert rows[0].split("|")[4].strip() == "1.00x" and rows[0].split("|")[5].strip() == "100%"
    assert rows[2].split("|")[5].strip() == "100%"  # the same batch size again gives the same answers


def _fake_run(folder: Path, fe_ga: float, answers: dict[str, list[str]]) -> Path:
    rows = [{"method": "Before", "method_id": "before", "setting": "none", "corpus": None,
             "metrics": {"Forget All": {"mean": 80.0}, "FE": None}},
            {"method": "GA", "method_id": "ga", "setting": "full", "corpus": None,
             "metrics": {"Forget All": {"mean": 20.0, "std": 1.0}, "FE": {"mean": fe_ga}}}]
    (folder / "units").mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"rows": rows}))
    for unit, texts in answers.items():
        method, setting = unit.split("__")[:2]
        (folder / "units" / unit / "eval" / "t1").mkdir(parents=True)
        (folder / "units" / unit / "result.json").write_text(json.dumps(
            {"unit": {"method": method, "setting": setting, "corpus": None}, "seconds": 10.0}))
        (folder / "units" / unit / "eval" / "t1" / "forget.jsonl").write_text(
            "".join(json.dumps({"prediction": t, "score": 1.0}) + "\n" for t in texts))
    return folder


def test_compare_runs_puts_two_runs_side_by_side_with_their_answer_agreement(tmp_path, capsys):
    compare_runs = _load("compare_runs")
    a = _fake_run(tmp_path / "a", 0.75, {"before__none__X__s-": ["Lyon", "1960"], "ga__full__X__s0": ["a", "b", "c", "d"]})
    b = _fake_run(tmp_path / "b", 0.70, {"before__none__X__s-": ["Lyon", "1960"], "ga__full__X__s0": ["a", "x", "c", "y"]})
    result = compare_runs.compare(a, b, ("Forget All", "FE"))
    rows = {r["method"]: r for r in result["rows"]}
    assert rows["Before"]["identical"] == 1.0 and rows["GA"]["identical"] == 0.5 and rows["GA"]["answers"] == 4
    assert rows["GA"]["values"]["FE"] == (0.75, 0.70) and rows["Before"]["values"]["FE"] == (None, None)
    assert result["identical"] == 4 / 6 and result["seconds"] == (20.0, 20.0)
    assert result["largest"]["FE"][1] == "GA" and abs(result["largest"]["FE"][0] - 0.05) < 1e-12
    assert compare_runs.main([str(a), str(b), "--names", "float32,bfloat16", "--metrics", "Forget All,FE"]) == 0
    out = capsys.readouterr().out
    assert "| GA | 20.0 / 20.0 | 0.75 / 0.70 | 50.0% of 4 |" in out and "float32 / bfloat16" in out
    assert "66.7% of 6" in out
    assert compare_runs.main([str(a), str(tmp_path / "missing")]) == 2
    assert compare_runs.main([str(a), str(b), "--names", "float32"]) == 2
    assert "--names: expected two names" in capsys.readouterr().err
