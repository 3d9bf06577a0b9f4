"""The packaged general-knowledge set (the unrelated domain of spillover) is well formed and disjoint
from everything the subject model is trained on or checked with, and from the utility sets."""

import json
from importlib import resources

import pytest

from rwkuplus.evaluation.grading import DEFAULT_THRESHOLD, MATCH_STOPWORDS, best_recall, normalize
from rwkuplus.evaluation.hallucination import general_knowledge


def _data(name: str) -> str:
    return resources.files("rwkuplus").joinpath(name).read_text(encoding="utf-8")


def _content(question: str) -> frozenset[str]:
    return frozenset(w for w in normalize(question).split() if w not in MATCH_STOPWORDS)


ITEMS = json.loads(_data("data/general_knowledge.json"))


def test_well_formed_several_hundred_items_over_many_subjects():
    assert len(ITEMS) >= 400
    subjects = {it["subject"] for it in ITEMS}
    assert {"geography", "science", "arithmetic", "dates", "history", "language"} <= subjects
    assert all(sum(it["subject"] == s for it in ITEMS) >= 8 for s in subjects)
    for it in ITEMS:
        assert it["question"].endswith("?") and len(it["question"]) < 100
        assert it["answers"] and all(isinstance(a, str) and a.strip() and len(a.split()) <= 5 for a in it["answers"])
    assert len({normalize(it["question"]) for it in ITEMS}) == len(ITEMS)  # no duplicate question
    assert [i.question for i in general_knowledge()] == [it["question"] for it in ITEMS]


def test_no_question_gives_its_own_answer_away():
    # an answer that only repeats the question must not count as correct
    for it in ITEMS:
        assert best_recall(it["question"], it["answers"]) < DEFAULT_THRESHOLD, it["question"]


def test_disjoint_from_what_builds_the_subject_and_from_the_utility_sets():
    replay = [line.strip() for line in _data("data/replay_prompts.txt").splitlines() if line.strip()]
    checks = [q["question"] for q in json.loads(_data("data/general_questions.json"))]
    trivia = [q["question"] for q in json.loads(_data("data/utility/triviaqa.json"))]
    assert len(replay) > 250 and len(checks) >= 40 and len(trivia) >= 60
    taken = {_content(q): q for q in replay + checks + trivia}
    shared = [(it["question"], taken[_content(it["question"])]) for it in ITEMS if _content(it["question"]) in taken]
    assert shared == []
    # and the exact strings, normalised
    assert not {normalize(it["question"]) for it in ITEMS} & {normalize(q) for q in replay + checks + trivia}


@pytest.mark.slow
def test_the_default_base_model_answers_most_items_in_every_subject():
    """The unrelated domain can only show damage on items the model knows: SmolLM2-135M-Instruct answered
    282 of 472 (fp32, CPU, 2026-12-01); every subject has some it answers."""
    import collections

    from rwkuplus.evaluation.generation import generate
    from rwkuplus.evaluation.grading import load_refusal_matcher
    from rwkuplus.evaluation.hallucination import grade_items
    from rwkuplus.models import DEFAULT_MODEL, load_model

    model, tok, _ = load_model(DEFAULT_MODEL, dtype="float32")
    model.eval()
    items = general_knowledge()
    prompts = [it.prompt(tok) for it in items]
    records = grade_items(items, generate(model, tok, prompts, batch_size=32), prompts, load_refusal_matcher())
    correct = collections.Counter(it.subject for it, r in zip(items, records) if r["grade"] == "correct")
    assert sum(correct.values()) >= 0.5 * len(items)
    assert set(correct) == {it.subject for it in items}
