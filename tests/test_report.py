"""Summary tables and HTML report, on hand-made run folders in the format 'rwkuplus run' writes."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import statistics

import pytest

from rwkuplus.errors import UserError
from rwkuplus.report import plots, rebuild
from rwkuplus.report.html import display_names, render_report, write_report
from rwkuplus.report.summary import (
    RWKU_COLUMNS, RWKUPLUS_COLUMNS, csv_header, format_cell, load_run, mean_std, summarize, to_markdown,
    write_summary,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _small_plots(monkeypatch):
    """Draw the plots at a low resolution: same code path, a fraction of the rasterising time."""
    monkeypatch.setattr(plots, "DPI", 40)


def _metrics(**values):
    """A full metrics object: every RWKU column set from ``base``, overridden by ``values``."""
    base = {c: 50.0 for c in RWKU_COLUMNS}
    base.update({"MIA FM": 220.0, "MIA RM": 230.0, "Flu": 700.0})
    base.update(values)
    return base


def _unit(folder, unit_id, method, label, setting, target, seed, metrics=None, status="ok", reason=None,
          corpus=None, costs=None, trajectory=None, diagnostics=None):
    d = folder / "units" / unit_id
    d.mkdir(parents=True)
    (d / "records").mkdir()
    (d / "records" / "forget.jsonl").write_text('{"query": "q", "prediction": "p"}\n')
    obj = {"unit": {"method": method, "label": label, "setting": setting, "target": target, "seed": seed,
                    "corpus": corpus},
           "status": status, "reason": reason, "metrics": metrics or {}, "costs": costs or {},
           "trajectory": trajectory or [], "diagnostics": diagnostics or []}
    (d / "result.json").write_text(json.dumps(obj))


def _diag(step, cr, cos, canc, same_cr, n=4):
    labels = ["birthplace", "profession"] * (n // 2)
    matrix = [[1.0 if i == j else (cos if labels[i] == labels[j] else -cos) for j in range(n)] for i in range(n)]
    return {"step": step, "conflict_ratio": cr, "mean_cosine": cos, "cancellation_ratio": canc, "coherence": 0.3,
            "same_attribute": {"conflict_ratio": same_cr, "mean_cosine": cos / 2},
            "cosine_matrix": matrix, "labels": labels}


def make_run(folder, trajectories=True, diagnostics=True):
    """Before, ICU, GA (full), CFT-SFT conflicting / consistent (full), GA (lora); 2 targets; one failed unit."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(
        "benchmark: world\nmodel: tiny\nmethods: [ga, cft-sft]\nsettings: [full, lora]\nseeds: [0]\n"
        "training: {epochs: 2, lr: 5.0e-5}\n")
    (folder / "run.json").write_text(json.dumps({
        "benchmark": {"kind": "world", "path": None, "revision": "seed0"}, "model": "tiny",
        "before": _metrics(HR=0.1, Fabrication=0.3)}))
    for t, target in enumerate(["Ada Quill", "Bo Renn"]):
        _unit(folder, f"before-{t}", "before", "Before", None, target, 0,
              _metrics(HR=0.1, Fabrication=0.3, **{"Wall time (s)": 0.0}))
        _unit(folder, f"icu-{t}", "icu", "ICU", None, target, 0,
              _metrics(**{"Forget All": 20.0 + t, "Neighbor All": 40.0}, HR=0.12, FE=0.6, UR=0.9, HS=0.95,
                       FLOPs=0.0, **{"Wall time (s)": 2.0}))
    # GA full: two targets with hand-chosen values
    traj = (lambda fe: [{"step": 0, "FE": 0.0, "UR": 1.0, "HS": 1.0},
                        {"step": 5, "FE": fe / 2, "UR": 0.95, "HS": 0.9},
                        {"step": 10, "FE": fe, "UR": 0.8, "HS": 0.85}]) if trajectories else (lambda fe: [])
    _unit(folder, "ga-full-0", "ga", "GA", "full", "Ada Quill", 0,
          _metrics(**{"Forget FB": 10.0, "Forget All": 12.0}, HR=0.2, Fabrication=0.4, dHR=0.10,
                   dHR_ci=[0.02, 0.18], FE=0.8, NR=0.9, UR=0.8, HS=0.85, TS=0.83, HTS=0.84, FLOPs=1.0e12,
                   **{"Wall time (s)": 10.0}),
          costs={"tokens_trained": 1000, "corpus_tokens_generated": 0, "flops": 1.0e12, "wall_seconds": 10.0},
          trajectory=traj(0.8))
    _unit(folder, "ga-full-1", "ga", "GA", "full", "Bo Renn", 0,
          _metrics(**{"Forget FB": 20.0, "Forget All": 18.0}, HR=0.3, Fabrication=None, dHR=0.20,
                   dHR_ci=[0.10, 0.30], FE=0.6, NR=0.7, UR=0.9, HS=0.75, TS=0.72, HTS=0.72, FLOPs=3.0e12,
                   **{"Wall time (s)": 30.0}),
          costs={"tokens_trained": 3000, "corpus_tokens_generated": 0, "flops": 3.0e12, "wall_seconds": 30.0},
          trajectory=traj(0.6))
    _unit(folder, "ga-lora-0", "ga", "GA", "lora", "Ada Quill", 0, _metrics(FE=0.5),
          costs={"tokens_trained": 500, "corpus_tokens_generated": 0, "flops": 2.0e11, "wall_seconds": 5.0})
    for corpus, cr in (("conflicting", 0.5), ("consistent", 0.1)):
        for t, target in enumerate(["Ada Quill", "Bo Renn"]):
            status = "failed" if (corpus == "consistent" and t == 1) else "ok"
            _unit(folder, f"cft-{corpus}-{t}", "cft-sft", f"CFT-SFT ({corpus})", "full", target, 0,
                  None if status == "failed" else _metrics(
                      **{"Conflict ratio": cr + 0.1 * t, "Forget All": 30.0}, HR=0.4 - cr / 2, FE=0.4, UR=0.7,
                      HS=0.5, dHR=0.3, dHR_ci=[0.2, 0.4]),
                  status=status, reason="loss became NaN at step 3 (diverged)" if status == "failed" else None,
                  corpus=corpus,
                  costs=None if status == "failed" else {"tokens_trained": 2000, "corpus_tokens_generated": 500},
                  trajectory=traj(0.4),
                  diagnostics=[_diag(0, 0.0, 0.3, 0.4, 0.0), _diag(10, cr, 0.1 - cr / 5, 0.6, cr)]
                  if diagnostics else [])
    return folder


@pytest.fixture()
def run_dir(tmp_path):
    return make_run(tmp_path / "run")


def _row(summary, method, setting):
    [row] = [r for r in summary["rows"] if r["method"] == method and r["setting"] == setting]
    return row


# ------------------------------------------------------------------ summary


def test_means_and_sample_stds_equal_hand_computation(run_dir):
    s = summarize(run_dir)
    ga = _row(s, "GA", "full")
    assert ga["n_units"] == 2 and ga["n_targets"] == 2 and ga["n_seeds"] == 1 and ga["n_failed"] == 0
    assert ga["metrics"]["Forget FB"] == {"mean": 15.0, "std": pytest.approx(math.sqrt(50.0)), "n": 2}
    assert ga["metrics"]["Forget All"]["mean"] == 15.0
    assert ga["metrics"]["Forget All"]["std"] == pytest.approx(statistics.stdev([12.0, 18.0]))
    assert ga["metrics"]["HR"]["mean"] == pytest.approx(0.25)
    # a null value is skipped, not counted as zero
    assert ga["metrics"]["Fabrication"] == {"mean": 0.4, "std": None, "n": 1}
    assert ga["metrics"]["FLOPs"]["mean"] == pytest.approx(2.0e12)
    assert ga["metrics"]["Wall time (s)"]["mean"] == pytest.approx(20.0)
    # dHR interval: mean of lower bounds, mean of upper bounds
    assert ga["metrics"]["dHR"]["mean"] == pytest.approx(0.15)
    assert ga["metrics"]["dHR"]["ci"] == pytest.approx([0.06, 0.24])
    # Tokens falls back to costs: tokens_trained + corpus_tokens_generated
    assert ga["metrics"]["Tokens"]["mean"] == pytest.approx(2000.0)
    assert ga["costs"]["tokens_trained"]["mean"] == pytest.approx(2000.0)
    # the one-unit LoRA row: no spread
    lora = _row(s, "GA", "lora")
    assert lora["metrics"]["FE"] == {"mean": 0.5, "std": None, "n": 1}
    assert lora["metrics"]["FLOPs"]["mean"] == pytest.approx(2.0e11)
    assert lora["metrics"]["Tokens"]["mean"] == pytest.approx(500.0)


def test_failed_units_are_listed_counted_and_left_out_of_means(run_dir):
    s = summarize(run_dir)
    assert s["n_units"] == 11 and s["n_ok"] == 10 and s["n_failed"] == 1 and s["n_pending"] == 0
    [f] = s["failed"]
    assert f == {"unit_id": "cft-consistent-1", "method": "CFT-SFT (consistent)", "method_id": "cft-sft",
                 "setting": "full", "target": "Bo Renn", "seed": 0, "reason": "loss became NaN at step 3 (diverged)"}
    cons = _row(s, "CFT-SFT (consistent)", "full")
    assert cons["n_units"] == 1 and cons["n_failed"] == 1 and cons["targets"] == ["Ada Quill"]
    assert cons["metrics"]["Conflict ratio"] == {"mean": pytest.approx(0.1), "std": None, "n": 1}
    conf = _row(s, "CFT-SFT (conflicting)", "full")
    assert conf["metrics"]["Conflict ratio"]["mean"] == pytest.approx(0.55)
    assert conf["corpus"] == "conflicting" and conf["method_id"] == "cft-sft"


def test_row_order_and_counts(run_dir):
    s = summarize(run_dir)
    order = [(r["method"], r["setting"]) for r in s["rows"]]
    assert order == [("Before", None), ("ICU", None), ("CFT-SFT (conflicting)", "full"),
                     ("CFT-SFT (consistent)", "full"), ("GA", "full"), ("GA", "lora")]
    assert s["rows"][0]["n_units"] == 2


def test_json_matches_documented_schema(run_dir):
    write_summary(run_dir)
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["format"] == "rwkuplus-summary" and s["version"] == 1
    assert s["benchmark"] == {"kind": "world", "path": None, "revision": "seed0"}
    assert s["model"] == "tiny"
    assert s["config"]["methods"] == ["ga", "cft-sft"] and s["config"]["training"]["lr"] == 5.0e-5
    assert s["columns"] == list(RWKU_COLUMNS) + list(RWKUPLUS_COLUMNS)
    assert set(s) == {"format", "version", "benchmark", "model", "protocol", "config", "subject", "columns", "n_units",
                      "n_ok", "n_failed", "n_pending", "rows", "failed", "pending", "utility_columns"}
    assert s["subject"] is None  # the model is not a subject model (tests/test_bad_input.py: one that is)
    for row in s["rows"]:
        assert {"method", "method_id", "setting", "corpus", "n_units", "n_targets", "n_seeds", "n_failed",
                "targets", "seeds", "metrics", "costs", "trajectory", "diagnostics"} <= set(row)
        for name in s["columns"]:
            stat = row["metrics"][name]
            assert set(stat) - {"ci"} == {"mean", "std", "n"}
            assert stat["mean"] is None or isinstance(stat["mean"], float)
    # extra metrics reported by units are kept, trajectory scores are added
    ga = _row(s, "GA", "full")
    assert ga["metrics"]["HV (FE, UR)"]["n"] == 2
    # GA trajectory of target 0: (0,1) (0.4,0.95) (0.8,0.8): front area = 0.4*0.95 + 0.4*0.8
    hv = [0.4 * 0.95 + 0.4 * 0.8, 0.3 * 0.95 + 0.3 * 0.8]
    assert ga["metrics"]["HV (FE, UR)"]["mean"] == pytest.approx(statistics.fmean(hv))
    # UR at FE = 0.5: 0.95 -> 0.8 interpolated between FE 0.4 and 0.8 (target 0) and FE 0.3 and 0.6 (target 1)
    at = [0.95 - 0.15 * 0.1 / 0.4, 0.95 - 0.15 * 0.2 / 0.3]
    assert ga["metrics"]["UR at FE=0.5"]["mean"] == pytest.approx(statistics.fmean(at))
    assert ga["metrics"]["UR at FE=0.5"]["std"] == pytest.approx(statistics.stdev(at))
    # trajectories averaged by checkpoint
    assert [c["FE"] for c in ga["trajectory"]] == pytest.approx([0.0, 0.35, 0.7])
    assert ga["trajectory"][1]["step"] == 5 and ga["trajectory"][1]["n"] == 2
    conf = _row(s, "CFT-SFT (conflicting)", "full")
    assert conf["diagnostics"][1]["same_attribute.conflict_ratio"] == pytest.approx(0.5)
    assert "cosine_matrix" not in conf["diagnostics"][0]
    json.dumps(s, allow_nan=False)  # no NaN anywhere


def test_conflict_ratio_column_only_where_measured(tmp_path):
    run = make_run(tmp_path / "run")
    for corpus in ("conflicting", "consistent"):
        for t in (0, 1):
            p = run / "units" / f"cft-{corpus}-{t}"
            for f in p.iterdir():
                if f.is_file():
                    f.unlink()
                else:
                    for g in f.iterdir():
                        g.unlink()
                    f.rmdir()
            p.rmdir()
    s = summarize(run)
    assert "Conflict ratio" not in s["columns"]
    assert s["columns"][-3:] == ["Tokens", "FLOPs", "Wall time (s)"]


def test_csv_and_markdown_columns_in_order(run_dir):
    write_summary(run_dir)
    cols = list(RWKU_COLUMNS) + list(RWKUPLUS_COLUMNS)
    rows = list(csv.reader(io.StringIO((run_dir / "summary.csv").read_text())))
    assert rows[0][:6] == ["method", "setting", "n_units", "n_targets", "n_seeds", "n_failed"]
    assert rows[0][6:6 + len(cols)] == cols
    assert rows[0][6 + len(cols):6 + 2 * len(cols)] == [f"{c} std" for c in cols]
    assert rows[0][-2:] == ["dHR ci low", "dHR ci high"]
    assert rows[0] == csv_header(summarize(run_dir))
    ga = [r for r in rows if r[0] == "GA" and r[1] == "full"][0]
    assert float(ga[6 + cols.index("Forget FB")]) == 15.0
    assert float(ga[6 + len(cols) + cols.index("Forget FB")]) == pytest.approx(math.sqrt(50.0))
    assert float(ga[-2]) == pytest.approx(0.06)
    before = rows[1]
    assert before[0] == "Before" and before[1] == "" and before[6 + cols.index("FE")] == ""

    md = (run_dir / "summary.md").read_text()
    header = [line for line in md.splitlines() if line.startswith("| Method")][0]
    assert [c.strip() for c in header.strip("|").split("|")] == ["Method", "Setting", "n"] + cols
    ga_line = [line for line in md.splitlines() if line.startswith("| GA | full")][0]
    cells = [c.strip() for c in ga_line.strip("|").split("|")]
    assert cells[3 + cols.index("Forget FB")] == "15.0 ± 7.1"       # x100 score: one decimal
    assert cells[3 + cols.index("HR")] == "0.250 ± 0.071"            # rate: three decimals
    assert cells[3 + cols.index("FE")] == "0.70 ± 0.14"              # trade-off score: two decimals
    assert cells[3 + cols.index("FLOPs")] == "2.00e+12 ± 1.41e+12"   # scientific
    assert cells[3 + cols.index("Fabrication")] == "0.400"            # one value: no spread
    assert "Failed units (1)" in md and "loss became NaN at step 3 (diverged)" in md


def test_format_cell_rules():
    assert format_cell("Forget All", {"mean": 41.94, "std": 2.06}) == "41.9 ± 2.1"
    assert format_cell("Tokens", {"mean": 123456.4, "std": None}) == "123,456"
    assert format_cell("dHR", {"mean": None, "std": None}) == "–"
    assert format_cell("HTS", {"mean": 0.456, "std": 0.01}, with_std=False) == "0.46"
    assert mean_std([1, None, float("nan"), 3, True]) == {"mean": 2.0, "std": pytest.approx(math.sqrt(2)), "n": 2}


def test_rebuilding_twice_gives_the_same_files(run_dir):
    rebuild(run_dir)
    first = {n: (run_dir / n).read_bytes() for n in ("summary.json", "summary.csv", "summary.md", "report.html")}
    rebuild(run_dir)
    second = {n: (run_dir / n).read_bytes() for n in first}
    assert first == second
    assert not list(run_dir.glob(".*.tmp"))


def test_before_row_from_run_json_when_no_before_unit(tmp_path):
    run = make_run(tmp_path / "run")
    for t in (0, 1):
        d = run / "units" / f"before-{t}"
        (d / "records" / "forget.jsonl").unlink()
        (d / "records").rmdir()
        (d / "result.json").unlink()
        d.rmdir()
    s = summarize(run)
    before = s["rows"][0]
    assert before["method"] == "Before" and before["n_units"] == 0
    assert before["metrics"]["HR"] == {"mean": 0.1, "std": None, "n": 1}


def test_pending_units_are_reported(run_dir):
    (run_dir / "units" / "npo-full-0").mkdir()
    s = summarize(run_dir)
    assert s["pending"] == ["npo-full-0"] and s["n_pending"] == 1
    assert "1 unfinished" in to_markdown(s)


# ------------------------------------------------------------------ errors


def test_not_a_run_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a run folder"):
        summarize(tmp_path)
    with pytest.raises(UserError, match="not a folder"):
        summarize(tmp_path / "missing")


@pytest.mark.parametrize("obj,field", [
    ({"unit": {"method": "ga"}, "status": "done", "metrics": {}}, "status"),
    ({"status": "ok", "metrics": {}}, "unit"),
    ({"unit": {"label": "GA"}, "status": "ok"}, "unit.method"),
    ({"unit": {"method": "ga"}, "status": "ok", "metrics": {"HR": "high"}}, "'HR'"),
    ({"unit": {"method": "ga"}, "status": "ok", "metrics": []}, "metrics"),
    ({"unit": {"method": "ga"}, "status": "ok", "trajectory": {"step": 0}}, "trajectory"),
])
def test_malformed_result_names_file_and_field(run_dir, obj, field):
    (run_dir / "units" / "ga-full-0" / "result.json").write_text(json.dumps(obj))
    with pytest.raises(UserError) as e:
        summarize(run_dir)
    msg = str(e.value)
    assert "ga-full-0" in msg and "result.json" in msg and field in msg
    assert msg.endswith(".") and ". " not in msg  # one sentence


def test_malformed_config_and_json(run_dir):
    (run_dir / "units" / "ga-full-0" / "result.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        summarize(run_dir)
    (run_dir / "units" / "ga-full-0" / "result.json").unlink()
    (run_dir / "config.yaml").write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="config.yaml: not valid YAML"):
        summarize(run_dir)


def test_command_line(run_dir, tmp_path, capsys):
    from rwkuplus.cli import main

    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and (run_dir / "report.html").is_file()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rwkuplus report: error:") and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------ report


def _images(page):
    return re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def test_report_is_self_contained_with_embedded_plots(run_dir):
    page = write_report(run_dir).read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.I)
    assert "<link" not in page and "<script" not in page and "@import" not in page
    images = _images(page)
    # trade-off, hallucination, conflict curves, heatmaps, cost
    assert len(images) == 5
    for _, data in images:
        assert base64.b64decode(data).startswith(PNG_MAGIC)
    for heading in ("Summary", "Trade-off", "Hallucination spillover", "Knowledge conflict", "Cost",
                    "Failed units (1)", "How to read this"):
        assert heading in page
    assert "loss became NaN at step 3 (diverged)" in page
    assert "world, revision seed0" in page and "tiny" in page
    # the best Forget FB among methods (not Before) is highlighted: GA full 15.0 vs ICU/CFT 50.0
    assert re.search(r'<td class="num gstart best">15\.0<span class="sd">', page)


def test_report_sections_without_data_say_so(tmp_path):
    run = make_run(tmp_path / "run", trajectories=False, diagnostics=False)
    page = render_report(load_run(run), summarize(run))
    assert "No gradient-conflict diagnostics were recorded" in page
    assert len(_images(page)) == 3  # trade-off, hallucination, cost
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "run.json").write_text(json.dumps({"benchmark": {"kind": "rwku", "path": "/data/rwku"}, "model": "m"}))
    page = render_report(load_run(empty), summarize(empty))
    assert "No unit has finished yet" in page and "No costs were recorded" in page
    assert _images(page) == []
    assert summarize(empty)["rows"] == []


def test_display_names_add_setting_only_when_needed(run_dir):
    s = summarize(run_dir)
    names = display_names(s["rows"])
    assert names[0] == "Before" and "GA · full" in names and "GA · lora" in names
    one = [r for r in s["rows"] if r["setting"] in (None, "full") and r["method"] != "GA"]
    assert display_names(one) == ["Before", "ICU", "CFT-SFT (conflicting)", "CFT-SFT (consistent)"]


# ------------------------------------------------------------------ plots


def test_plots_return_png_and_none_without_data():
    colors = plots.method_colors(["Before", "GA", "NPO"])
    assert colors["Before"] == plots.BEFORE_COLOR and colors["GA"] != colors["NPO"]
    pts = [{"name": "GA", "FE": 0.7, "UR": 0.8, "HS": 0.6,
            "trajectory": [{"FE": 0, "UR": 1, "HS": 1}, {"FE": 0.7, "UR": 0.8, "HS": 0.6}]}]
    png = plots.tradeoff_scatter(pts, colors)
    assert png.startswith(PNG_MAGIC) and png == plots.tradeoff_scatter(pts, colors)  # deterministic
    assert plots.tradeoff_scatter([{"name": "GA", "FE": None}]) is None
    assert plots.hallucination_bars([{"name": "GA", "HR": 0.2, "dHR": 0.1, "dHR_ci": [0.0, 0.2]}]).startswith(PNG_MAGIC)
    assert plots.hallucination_bars([{"name": "GA"}]) is None
    assert plots.conflict_curves([{"name": "CFT", "step": [0, 5], "conflict_ratio": [0.1, 0.4]}]).startswith(PNG_MAGIC)
    assert plots.conflict_curves([{"name": "CFT", "step": [0], "conflict_ratio": [None]}]) is None
    assert plots.cosine_heatmaps([{"title": "x", "matrix": [[1, -1], [-1, 1]], "labels": ["a", "b"]}]).startswith(PNG_MAGIC)
    assert plots.cosine_heatmaps([{"title": "x", "matrix": [[1, 2, 3]]}]) is None
    assert plots.cost_bars([{"name": "ICU", "FLOPs": 0.0, "Wall time (s)": 1.0},
                            {"name": "GA", "FLOPs": 1e12, "Wall time (s)": 9.0}]).startswith(PNG_MAGIC)
    assert plots.cost_bars([{"name": "GA"}]) is None


def test_heatmap_groups_examples_by_label():
    m, groups = plots._grouped(__import__("numpy").array([[1, 2, 3], [2, 1, 4], [3, 4, 1.0]]), ["a", "b", "a"])
    assert groups == [("a", 0, 2), ("b", 2, 3)]
    assert m.tolist() == [[1, 3, 2], [3, 1, 4], [2, 4, 1]]
