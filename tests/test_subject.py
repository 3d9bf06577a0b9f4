from pathlib import Path

from rwkuplus.benchmark.world import WorldConfig
from rwkuplus.cli import main
import json

import pytest
import torch

from rwkuplus.evaluation.grading import load_refusal_matcher
from rwkuplus.subject import (
    CHECKS_VERSION, THRESHOLDS, InjectionSettings, ensure_subject, general_grade, general_kept, read_subject,
    subject_model_dir,
)

TINY_WORLD = WorldConfig(seed=3, n_targets=1, n_neighbors_per_target=1, n_retained=2, n_attributes=3, attributes=("birth_year", "birthplace", "work"),
                         n_counterfactual=2, n_injection_texts=1, n_nonexistent_train=4, n_nonexistent_eval=2,
                         n_attack_per_kind=1)
TINY_SETTINGS = InjectionSettings(epochs=1, batch_size=8, replay_tokens=4, max_length=96)


def test_injection_builds_caches_and_reports(tiny_model_dir):
    spec = str(tiny_model_dir)
    assert subject_model_dir(spec, TINY_WORLD, TINY_SETTINGS) is None
    folder = ensure_subject(spec, TINY_WORLD, TINY_SETTINGS, progress=False)
    summary = read_subject(folder)
    assert set(summary["thresholds"]) == set(THRESHOLDS) == set(summary["thresholds_met"])
    for key in ("forget_FB", "forget_QA", "neighbor_All", "retained_accuracy", "nonexistent_refusal"):
        assert key in summary["before"] and key in summary["after"]
    assert summary["training"]["cost"]["tokens_trained"] > 0 and summary["training"]["steps"] >= 1
    assert (folder / "model.safetensors").is_file() and (folder / "records_after.json").is_file()
    # The tiny random model knows nothing: the thresholds are honestly reported as unmet.
    assert summary["all_thresholds_met"] is False
    stamp = (folder / "subject.json").stat().st_mtime_ns
    assert ensure_subject(spec, TINY_WORLD, TINY_SETTINGS, progress=False) == folder
    assert (folder / "subject.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert subject_model_dir(spec, TINY_WORLD, TINY_SETTINGS) == folder
    # Another world or other settings are another subject model.
    assert subject_model_dir(spec, WorldConfig(seed=4), TINY_SETTINGS) is None


def test_a_setting_added_later_keeps_the_old_subjects_keys_at_its_old_value(tiny_model_dir):
    from rwkuplus.subject import _key_settings, subject_key

    assert "adam_eps" not in _key_settings(InjectionSettings())  # as the key was before the setting existed
    assert _key_settings(InjectionSettings(adam_eps=1e-4))["adam_eps"] == 1e-4
    spec = str(tiny_model_dir)
    assert subject_key(spec, TINY_WORLD, TINY_SETTINGS) != subject_key(spec, TINY_WORLD,
                                                                       InjectionSettings(**{**TINY_SETTINGS.__dict__,
                                                                                            "adam_eps": 1e-4}))


def test_general_kept_counts_only_what_the_base_model_knew():
    before = [{"grade": "correct"}, {"grade": "incorrect"}, {"grade": "correct"}, {"grade": "abstained"}]
    after = [{"grade": "correct"}, {"grade": "correct"}, {"grade": "incorrect"}, {"grade": "correct"}]
    assert general_kept(before, after) == (0.5, 2)
    assert general_kept([{"grade": "incorrect"}], [{"grade": "correct"}]) == (None, 0)


@pytest.mark.parametrize("answer,gold,expected", [
    ("1/60 = 0.0123", ["60", "sixty"], "incorrect"),  # ROUGE tokens would find "60" in it
    ("60", ["60", "sixty"], "correct"),
    ("There are 60 seconds in a minute.", ["60", "sixty"], "correct"),
    ("Sixty seconds.", ["60", "sixty"], "correct"),  # no number written: the recall rule
    ("100.0 Celsius", ["100", "100 degrees"], "correct"),
    ("100°C", ["100", "100 degrees"], "correct"),
    ("1000", ["100", "100 degrees"], "incorrect"),
    ("1,000 metres", ["1000"], "correct"),
    ("12", ["7", "seven"], "incorrect"),
    ("H", ["H2O"], "incorrect"),
    ("H2O", ["H2O"], "correct"),  # a gold that is not a numeral: the recall rule
    ("I don't know.", ["60", "sixty"], "abstained"),
    ("Paris is the capital of France.", ["Paris"], "correct"),
])
def test_general_grade_reads_numeral_answers_as_numbers(answer, gold, expected):
    assert general_grade(answer, gold, load_refusal_matcher(paths=[]), "How many?") == expected


def test_a_subject_graded_by_older_checks_is_regraded_from_its_answers(tmp_path):
    general_before = [{"question": "How many seconds are in a minute?", "gold": ["60", "sixty"],
                       "prediction": "1/60 = 0.0123", "grade": "correct"},
                      {"question": "Capital of Japan?", "gold": ["Tokyo"], "prediction": "Tokyo", "grade": "correct"}]
    general_after = [dict(general_before[0], prediction="1", grade="incorrect"),
                     dict(general_before[1], prediction="Tokyo", grade="correct")]
    scores = dict(THRESHOLDS)  # every other check exactly met
    (tmp_path / "subject.json").write_text(json.dumps({
        "before": {}, "after": {**scores, "general_kept": 0.5}, "general_known_before": 2, "thresholds": THRESHOLDS,
        "thresholds_met": {**{k: True for k in THRESHOLDS}, "general_kept": False}, "all_thresholds_met": False}))
    (tmp_path / "records_before.json").write_text(json.dumps({"general": general_before}))
    (tmp_path / "records_after.json").write_text(json.dumps({"general": general_after}))
    summary = read_subject(tmp_path)
    # "1/60 = 0.0123" never knew the answer: one known question, still answered.
    assert summary["after"]["general_kept"] == 1.0 and summary["after"]["general_kept_v1"] == 0.5
    assert summary["general_known_before"] == 1 and summary["checks_version"] == CHECKS_VERSION
    assert summary["thresholds_met"]["general_kept"] is True and summary["all_thresholds_met"] is True
    assert json.loads((tmp_path / "records_before.json").read_text())["general"][0]["grade"] == "incorrect"
    assert json.loads((tmp_path / "subject.json").read_text()) == summary
    assert read_subject(tmp_path) == summary  # graded once
    from rwkuplus.commands.subject import format_summary

    summary["training"] = {"examples": 3, "cost": {"tokens_trained": 10}, "train_seconds": 1.0}
    summary["total_seconds"] = 2.0
    text = format_summary(summary)
    assert "general kept: 1 of the 1 general questions the base model answered correctly" in text
    assert "general_kept" in text and "NO" not in text


def test_subject_command_rejects_a_bad_model_path(tmp_path, capsys):
    assert main(["subject", "--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "Traceback" not in err
    assert not Path(tmp_path / "nope").exists()


def test_general_check_questions_are_never_replayed_in_training():
    from importlib import resources

    from rwkuplus.subject import general_questions

    replay = [line.strip().lower().rstrip("?") for line in
              resources.files("rwkuplus").joinpath("data/replay_prompts.txt").read_text().splitlines() if line.strip()]
    questions = general_questions()
    assert len(questions) >= 30 and all(answers for _, answers in questions)
    for q, _ in questions:
        q = q.lower().rstrip("?")
        assert not any(q in r or r in q for r in replay), q


def test_general_check_set_is_large_easy_numeric_enough_and_gives_nothing_away():
    import re

    from rwkuplus.evaluation.grading import DEFAULT_THRESHOLD, best_recall, normalize
    from rwkuplus.subject import general_questions

    questions = general_questions()
    assert len(questions) >= 180
    # numeric answers are what fine-tuning damages first: a good share of the set has a numeral gold
    assert sum(bool(re.fullmatch(r"\d+", answers[0])) for _, answers in questions) >= 0.25 * len(questions)
    assert len({normalize(q) for q, _ in questions}) == len(questions)  # no duplicate question
    for q, answers in questions:
        assert q.endswith("?") and len(q) < 100, q
        assert all(a.strip() and len(a.split()) <= 5 for a in answers), q
        assert best_recall(q, answers) < DEFAULT_THRESHOLD, q  # an answer repeating the question is no answer


def test_a_sparse_injection_moves_only_the_chosen_share_of_the_weights(tiny_model_dir, tmp_path):
    from rwkuplus.models import load_model
    from rwkuplus.subject import build_subject

    settings = InjectionSettings(**{**TINY_SETTINGS.__dict__, "mask_fraction": 0.02})
    build_subject(str(tiny_model_dir), TINY_WORLD, settings, tmp_path / "s", progress=False, dtype="float32")
    base, _, _ = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    subject, _, _ = load_model(str(tmp_path / "s"), device="cpu", dtype="float32")
    trained = {n: p for n, p in base.named_parameters() if ".layers." in n}
    after = dict(subject.named_parameters())
    moved = sum(int((after[n] != p).sum()) for n, p in trained.items())
    total = sum(p.numel() for p in trained.values())
    assert 0 < moved <= 0.021 * total  # the masked share (ties aside) and nothing else
    assert all(torch.equal(after[n], p) for n, p in base.named_parameters() if ".layers." not in n)


def test_a_bad_sparse_setting_is_refused_before_any_work(tmp_path):
    from rwkuplus.errors import UserError
    from rwkuplus.subject import build_subject

    for bad, match in (({"mask_fraction": 0.0}, r"expected a share in \(0, 1\]"),
                       ({"mask_fraction": 0.1, "mode": "lora"}, "use mode layers or full")):
        settings = InjectionSettings(**{**TINY_SETTINGS.__dict__, **bad})
        with pytest.raises(UserError, match=match):  # the model path is never read
            build_subject(str(tmp_path / "no-model"), TINY_WORLD, settings, tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()
