"""scripts/general_check.py on tiny random models: one line per subject with its general kept, and
every lost answer listed (a model that answers nothing correctly keeps nothing)."""

import importlib.util
import re
from pathlib import Path

from rwkuplus.subject import general_questions

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "general_check.py"


def _script():
    spec = importlib.util.spec_from_file_location("general_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prints_kept_and_losses_for_each_subject(tiny_model_dir, capsys, monkeypatch):
    module = _script()
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
    rows = _script().answer(str(tiny_model_dir), "float32", questions, load_refusal_matcher(paths=[]))
    assert [r["question"] for r in rows] == [q for q, _ in questions]
    assert all(r["grade"] in ("correct", "incorrect", "abstained") for r in rows)
