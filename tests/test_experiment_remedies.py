"""scripts/experiment_remedies.py: equal-forgetting tables from hand-made unit records with known
answers, and the whole script on the tiny model at the smallest size."""

import importlib.util
from pathlib import Path

import pytest

from rwkuplus.report.summary import UnitResult

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "experiment_remedies.py"


@pytest.fixture(scope="module")
def er():
    spec = importlib.util.spec_from_file_location("experiment_remedies", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unit(method, label, trajectory=(), diagnostics=(), metrics=None, costs=None, seed=0):
    return UnitResult(f"{label}-{seed}", method, label, "full", "T", seed, None, "ok", None, metrics or {}, costs or {},
                      list(trajectory), list(diagnostics))


def point(step, fe, nr, hr, fab=0.2, ur=1.0, hts=0.5):
    return {"step": step, "FE": fe, "NR": nr, "UR": ur, "HS": 1.0, "HTS": hts, "HR": hr, "Fabrication": fab}


def diag(step, cr, same):
    return {"step": step, "conflict_ratio": cr, "same_attribute": {"conflict_ratio": same}}


BEFORE = unit("before", "Before", metrics={"HR": 0.1, "Fabrication": 0.2})
PLAIN = unit("cft-sft", "CFT-SFT (conflicting)",
             [point(4, 0.4, 0.9, 0.2), point(8, 0.8, 0.8, 0.3)],
             [diag(0, 0.1, 0.0), diag(4, 0.3, 0.2), diag(8, 0.5, 0.4)],
             {"FE": 0.9, "dHR": 0.25, "dHR_ci": [0.1, 0.4], "NR": 0.8, "UR": 0.9},
             {"wall_seconds": 10.0, "estimated_flops": 100.0, "tokens_trained": 50, "gradient_passes": 0})
PCGRAD = unit("cft-pcgrad", "CFT-PCGrad (conflicting)",
              [point(4, 0.4, 0.9, 0.2), point(8, 0.8, 0.8, 0.3)],
              [diag(0, 0.1, 0.0), diag(4, 0.1, 0.05), diag(8, 0.2, 0.1)],
              {"FE": 0.9, "dHR": 0.25}, {"wall_seconds": 20.0, "estimated_flops": 150.0, "gradient_passes": 12})
HONEST = unit("cft-honest", "CFT-Honest (conflicting)",
              [point(4, 0.3, 1.0, 0.1), point(8, 0.6, 1.0, 0.1)], [diag(0, 0.1, 0.0), diag(8, 0.5, 0.4)],
              {"FE": 0.6, "dHR": 0.0}, {"wall_seconds": 15.0, "estimated_flops": 200.0})


def test_values_at_equal_forgetting(er):
    rows = {r["label"]: r for r in er.method_rows([BEFORE, PLAIN, PCGRAD, HONEST])}
    assert list(rows) == ["CFT-SFT (conflicting)", "CFT-PCGrad (conflicting)", "CFT-Honest (conflicting)"]
    plain = rows["CFT-SFT (conflicting)"]["levels"]
    # FE 0.5 lies a quarter of the way from step 4 (FE 0.4) to step 8 (FE 0.8).
    assert plain["0.5"]["step"]["mean"] == pytest.approx(5.0)
    assert plain["0.5"]["NR"]["mean"] == pytest.approx(0.875)
    assert plain["0.5"]["dHR"]["mean"] == pytest.approx(0.125)  # HR 0.225 - Before's 0.1
    assert plain["0.5"]["same_attribute_conflict_ratio"]["mean"] == pytest.approx(0.25)
    assert plain["0.8"]["step"]["mean"] == pytest.approx(8.0) and plain["0.8"]["reached"] == 1
    assert plain["0.8"]["dFabrication"]["mean"] == pytest.approx(0.0)
    honest = rows["CFT-Honest (conflicting)"]
    assert honest["levels"]["0.8"]["reached"] == 0 and honest["levels"]["0.8"]["step"]["mean"] is None
    # FE 0.5 between step 4 (0.3) and 8 (0.6): two thirds of the way.
    assert honest["levels"]["0.5"]["step"]["mean"] == pytest.approx(4 + 4 * 2 / 3)
    assert rows["CFT-SFT (conflicting)"]["end"]["conflict_ratio_start"]["mean"] == pytest.approx(0.1)
    assert rows["CFT-SFT (conflicting)"]["end"]["dHR_ci"] == [0.1, 0.4]
    along = er.along_table(list(rows.values()))
    assert "| CFT-SFT (conflicting) | 4 | 0.30 | 0.20 | 0.40 | 0.10 |" in along  # dHR 0.2 - 0.1
    assert "| CFT-Honest (conflicting) | 4 | n/a | n/a | 0.30 | 0.00 |" in along  # no probe at step 4


def test_verdicts_follow_the_rules(er):
    rows = er.method_rows([BEFORE, PLAIN, PCGRAD, HONEST])
    v = {x["label"]: x for x in er.verdicts(rows)}
    pc = v["CFT-PCGrad (conflicting)"]
    assert pc["conflict"] == "better" and pc["spillover"] == "no change" and pc["verdict"] == "helps"
    assert pc["removes"] == "conflict"
    assert pc["price"]["wall"] == pytest.approx(2.0) and pc["price"]["flops"] == pytest.approx(1.5)
    assert pc["price"]["steps"] == pytest.approx(1.0)
    h = v["CFT-Honest (conflicting)"]
    # Never reaches FE 0.8: compared at the end (dHR 0 against 0.25) and at the last checkpoint (0.4 vs 0.4).
    assert h["spillover"] == "better" and h["conflict"] == "no change" and h["verdict"] == "helps"
    assert h["price"]["steps"] is None
    table = er.verdict_table(er.verdicts(rows))
    assert "| CFT-PCGrad (conflicting) | conflict | better | no change |" in table
    assert "2.00x" in table and "**helps**" in table
    remedies = er.remedies_table(rows)
    assert "0.10 / 0.35 / 0.50" in remedies  # conflict ratio at the start, FE 0.5 (0.3 + 0.25 x 0.2), FE 0.8
    assert "0.25 [0.10, 0.40]" in remedies and "(0/1 reached)" in remedies


def test_spillover_by_domain_at_equal_forgetting(er):
    traj = [dict(point(4, 0.4, 0.9, 0.2), **{"dHR related": 0.1}), dict(point(8, 0.8, 0.8, 0.3), **{"dHR related": 0.5})]
    u = unit("cft-sft", "CFT-SFT (conflicting)", traj, [], {"dHR related": 0.6, "dHR related_ci": [0.4, 0.8]})
    row = er.method_rows([BEFORE, u])[0]
    assert row["levels"]["0.5"]["dHR related"]["mean"] == pytest.approx(0.2)  # 0.1 + 0.25 x 0.4
    table = er.spillover_table([row])
    assert "| CFT-SFT (conflicting) | n/a / n/a / n/a | 0.20 / 0.50 / 0.60 [0.40, 0.80] |" in table


def test_a_remedy_that_does_not_help_is_reported_as_such(er):
    worse = unit("cft-pcgrad", "CFT-PCGrad (conflicting)", PLAIN.trajectory,
                 [diag(0, 0.1, 0.0), diag(4, 0.5, 0.5), diag(8, 0.6, 0.6)], {"FE": 0.9, "dHR": 0.25},
                 {"wall_seconds": 20.0})
    v = er.verdicts(er.method_rows([BEFORE, PLAIN, worse]))
    assert v[0]["conflict"] == "worse" and v[0]["verdict"] == "does not help" and v[0]["removes"] == "none"


def test_the_script_runs_and_writes_its_tables(er, tiny_model_dir, tmp_path):
    doc = tmp_path / "experiments.md"
    doc.write_text("# Experiments\n\n<!-- table:remedies -->\nold\n<!-- /table:remedies -->\n")
    args = ["--out", str(tmp_path / "run"), "--model", str(tiny_model_dir), "--steps", "2", "--checkpoints", "1,2",
            "--methods", "cft-sft:conflicting,cft-pcgrad", "--utility-items", "2", "--hallucination-items", "2",
            "--doc", str(doc)]
    er.main(args)
    text = doc.read_text()
    assert "old" not in text and "| CFT-PCGrad (conflicting) |" in text
    assert "<!-- table:remedy-verdicts -->" in text and "conflict ratio (start / FE 0.5 / FE 0.8)" in text
    assert "<!-- table:remedy-filter -->" in text and "samples (conflicting -> filtered)" in text
    er.main(args)  # resumes: nothing left to run, same tables
    assert doc.read_text() == text


def test_filter_table_from_the_world(er, tmp_path):
    from rwkuplus.benchmark.consistency import filtered_world_corpus
    from rwkuplus.benchmark.world import default_world_dir, load_world

    world = load_world(default_world_dir())
    table = er.filter_table(world)
    lines = table.splitlines()[2:]
    assert len(lines) == len(world.targets)
    for person, line in zip(world.targets, lines):
        _, r = filtered_world_corpus(world, person)
        assert line.startswith(f"| {person.name} | 12 -> {r.samples_after} |")
        assert f"| {r.inconsistency_before:.3f} | {r.inconsistency_after:.3f} |" in line
    doc = tmp_path / "doc.md"
    doc.write_text("# x\n")
    er.main(["--filter-table-only", "--doc", str(doc)])
    assert "<!-- table:remedy-filter -->" in doc.read_text() and lines[0] in doc.read_text()


def test_filter_of_a_model_written_corpus_is_recorded_and_reused(er, tiny_model_dir, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("# x\n")
    args = ["--filter-table-only", "--filter-model", str(tiny_model_dir), "--filter-samples", "3",
            "--filter-max-new-tokens", "4", "--out", str(tmp_path / "out"), "--doc", str(doc)]
    er.main(args)
    folders = list((tmp_path / "out" / "filter").iterdir())
    assert len(folders) == 1  # --targets 1
    names = {p.name for p in folders[0].iterdir()}
    assert names == {"negative.json", "negative_filtered.json", "consistency_filter.json", "generation.json"}
    text = doc.read_text()
    assert "<!-- table:remedy-filter-model -->" in text and "| 3 -> " in text
    stamp = (folders[0] / "consistency_filter.json").stat().st_mtime_ns
    er.main(args)  # the records are reused, not written again
    assert (folders[0] / "consistency_filter.json").stat().st_mtime_ns == stamp and doc.read_text() == text
