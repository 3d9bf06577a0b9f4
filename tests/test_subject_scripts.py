"""The subject scripts: scripts/general_check.py on tiny random models (one line per subject with its
general kept, every lost answer listed), and scripts/subject_seeds.py's per-seed table from hand-made
subject summaries and general kept on the wave-one questions from hand-made stored answers."""

import json
import re
from pathlib import Path

from rwkuplus.subject import THRESHOLDS, general_questions
from rwkuplus.testing import load_module

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str):
    return load_module(SCRIPTS / f"{name}.py")


def test_prints_kept_and_losses_for_each_subject(tiny_model_dir, capsys, monkeypatch):
    module = _script("general_check")
    n = len(general_questions())
    calls = []

    def fake_answer(spec, dtype, questions, matcher):  # the base knows the first 3 answers, the subject the first
        calls.append(spec)
        right = 3 if spec == "base" else 1
        return [{"question": q, "prediction": "x", "grade": "correct" if i < right else "incorrect"}
                for i, (q, _) in enumerate(questions)]

    monkeypatch.setattr(module, "answer", fake_answer)
    assert module.main(["sub", "--base", "base", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert calls == ["base", "sub"]
    assert f"base model: 3 of {n} correct" in out
    assert "sub: general kept 0.333 of 3 known" in out
    assert len(re.findall(r"^  lost: ", out, flags=re.M)) == 2


def test_answers_with_a_real_model(tiny_model_dir):
    from rwkuplus.evaluation.grading import load_refusal_matcher

    questions = general_questions()[:3]
    rows = _script("general_check").answer(str(tiny_model_dir), "float32", questions, load_refusal_matcher(paths=[]))
    assert [r["question"] for r in rows] == [q for q, _ in questions]
    assert all(r["grade"] in ("correct", "incorrect", "abstained") for r in rows)


def test_seeds_of():
    assert _script("subject_seeds").seeds_of("0-2,7") == [0, 1, 2, 7]


def test_first_general_kept_reads_only_the_first_questions(tmp_path):
    def rows(grades):
        return {"general": [{"question": f"q{i}", "grade": g} for i, g in enumerate(grades)]}

    # first 4: known 3 before, 2 of them still right; the 5th (known, lost) lies beyond n
    (tmp_path / "records_before.json").write_text(json.dumps(rows(["correct", "correct", "incorrect", "correct", "correct"])))
    (tmp_path / "records_after.json").write_text(json.dumps(rows(["correct", "incorrect", "correct", "correct", "incorrect"])))
    assert _script("subject_seeds").first_general_kept(tmp_path, n=4) == 2 / 3


def test_table_marks_each_missed_threshold():
    after = {k: v + (1 if v > 1.5 else 0.05) for k, v in THRESHOLDS.items()}
    after["general_kept"] = 0.72
    met = {k: k != "general_kept" for k in THRESHOLDS}
    summary = {"after": after, "thresholds_met": met, "all_thresholds_met": False, "general_kept_first": 0.9231,
               "training": {"train_seconds": 400.4}, "total_seconds": 500.6}
    lines = _script("subject_seeds").table([(3, summary)]).splitlines()
    assert lines[0].startswith("| world seed |") and "general kept, first 40" in lines[0]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[0] == "3" and "**0.72** (needs 0.9)" in cells and "0.92" in cells
    assert cells[-3:] == ["**no**", "400", "501"]
    assert sum("**" in c for c in cells) == 2  # the missed check and "no"


def test_general_floor_trains_the_model_on_its_own_replay_and_reports_kept(tiny_model_dir, capsys, monkeypatch):
    module = _script("general_floor")
    questions = general_questions()[:4]
    monkeypatch.setattr(module, "general_questions", lambda: questions)
    real_replay = module.replay_examples
    monkeypatch.setattr(module, "replay_examples", lambda m, t, n: real_replay(m, t, n)[:16])
    graded = iter([["correct", "correct", "incorrect", "correct"], ["correct", "incorrect", "correct", "incorrect"]])
    real_answers = module.answer_general

    def answers(model, tokenizer, qs, matcher):  # the real answering, with hand-set grades
        rows = real_answers(model, tokenizer, qs, matcher)
        return [{**r, "grade": g} for r, g in zip(rows, next(graded))]

    monkeypatch.setattr(module, "answer_general", answers)
    assert module.main(["--model", str(tiny_model_dir), "--dtype", "float32", "--teacher-kernel", "training"]) == 0
    out = capsys.readouterr().out
    assert "replay alone: 16 answers x 1 passes at lr 0.0002 (2 steps" in out
    assert "general kept 0.333 of 3 known" in out
    assert len(re.findall(r"^  lost: ", out, flags=re.M)) == 2


def test_subject_interpolate_moves_every_weight_between_base_and_subject(tmp_path):
    import pytest
    import torch

    module = _script("subject_interpolate")
    model = torch.nn.Linear(2, 1)
    base = {"weight": torch.tensor([[0.0, 2.0]]), "bias": torch.tensor([1.0])}
    subject = {"weight": torch.tensor([[4.0, 2.0]]), "bias": torch.tensor([-1.0])}
    module.interpolate(model, base, subject, 0.25)
    assert model.weight.tolist() == [[1.0, 2.0]] and model.bias.tolist() == [0.5]
    module.interpolate(model, base, subject, 1.0)
    assert model.weight.tolist() == [[4.0, 2.0]]
    assert module.alphas_of("1, 0.5") == [1.0, 0.5]
    with pytest.raises(SystemExit, match="--alphas"):
        module.alphas_of("1,x")
    with pytest.raises(SystemExit, match="no subject.json"):
        module.main([str(tmp_path)])
