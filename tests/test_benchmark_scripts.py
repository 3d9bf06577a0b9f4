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
