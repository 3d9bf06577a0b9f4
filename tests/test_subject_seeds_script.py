"""scripts/subject_seeds.py: the per-seed table from hand-made subject summaries, and general kept on
the wave-one questions from hand-made stored answers."""

import importlib.util
import json
from pathlib import Path

from rwkuplus.subject import THRESHOLDS

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "subject_seeds.py"


def _script():
    spec = importlib.util.spec_from_file_location("subject_seeds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seeds_of():
    assert _script().seeds_of("0-2,7") == [0, 1, 2, 7]


def test_first_general_kept_reads_only_the_first_questions(tmp_path):
    def rows(grades):
        return {"general": [{"question": f"q{i}", "grade": g} for i, g in enumerate(grades)]}

    # first 4: known 3 before, 2 of them still right; the 5th (known, lost) lies beyond n
    (tmp_path / "records_before.json").write_text(json.dumps(rows(["correct", "correct", "incorrect", "correct", "correct"])))
    (tmp_path / "records_after.json").write_text(json.dumps(rows(["correct", "incorrect", "correct", "correct", "incorrect"])))
    assert _script().first_general_kept(tmp_path, n=4) == 2 / 3


def test_table_marks_each_missed_threshold():
    after = {k: v + (1 if v > 1.5 else 0.05) for k, v in THRESHOLDS.items()}
    after["general_kept"] = 0.72
    met = {k: k != "general_kept" for k in THRESHOLDS}
    summary = {"after": after, "thresholds_met": met, "all_thresholds_met": False, "general_kept_first": 0.9231,
               "training": {"train_seconds": 400.4}, "total_seconds": 500.6}
    lines = _script().table([(3, summary)]).splitlines()
    assert lines[0].startswith("| world seed |") and "general kept, first 40" in lines[0]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[0] == "3" and "**0.72** (needs 0.9)" in cells and "0.92" in cells
    assert cells[-3:] == ["**no**", "400", "501"]
    assert sum("**" in c for c in cells) == 2  # the missed check and "no"
