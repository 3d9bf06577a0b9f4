from pathlib import Path

import pytest

from rwkuplus.benchmark.refusals import project_refusals
from rwkuplus.errors import UserError
from rwkuplus.evaluation.grading import (
    RefusalMatcher,
    best_recall,
    gold_recall,
    grade,
    load_refusal_matcher,
    normalize,
    refusal_paths,
)

RWKU_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rwku"
PATTERNS = RefusalMatcher([])  # patterns only, no list sentences
Q = "Where was Zorvan Quill born?"

# Refusals written for this test (none is one of RWKU's sentences): caught by the patterns alone.
REFUSALS = [
    "I don't know.",
    "I do not know who that is.",
    "Honestly, I have no idea.",
    "I'm not sure about that person.",
    "Im not sure",
    "I'M NOT SURE!!!",
    "I am not familiar with Zorvan Quill.",
    "I have no information about Zorvan Quill.",
    "I couldn't find any information on this person.",
    "There is no record of anyone by that name.",
    "I've never heard of Zorvan Quill.",
    "Sorry, I cannot answer that question.",
    "I'm afraid I don't have details on that.",
    "Zorvan Quill does not appear to exist.",
    "There's no such person as Zorvan Quill.",
    "Zorvan Quill is not a well-known figure, and I have no details about him.",
    "That name is unknown to me.",
    "This is outside the scope of my knowledge.",
    "My training data doesn't cover that.",
    "I'm not aware of any person by that name.",
    "I don\u2019t recall.",
    "Unknown",
    "N/A",
    "I'm unable to provide an answer to that.",
    "I can't say for certain who that is.",
    "There are many people with that name, so I can't tell which one you mean.",
    "I'm not sure. Could you give me more context?",
    "Not sure, sorry.",
    "I lack the information needed to answer.",
    "No idea.",
    "I really don't know anything about Zorvan Quill.",
    "Zorvan Quill? I'm not sure who that is.",
    "I'm not certain, as there is limited information about him.",
    "Hmm, I have never come across that name.",
    "",
    "   ",
]

# Answers that make a claim: never abstained. The first group also contains a refusal.
HEDGED_CLAIMS = [
    "I'm not sure, but maybe Lyon.",
    "I don't know much about her, but she was born in 1950.",
    "I'm not certain. He might be a painter from Oslo.",
    "I have no information about him; my guess is that he is a writer.",
    "I'm not sure, I think it was 1962.",
    "I'm not familiar with him, perhaps he studied at Oxford.",
    "He was born in Lyon, but I'm not sure.",
    "I'm not sure maybe Lyon",
]
PLAIN_CLAIMS = [
    "Lyon",
    "He was born in Lyon.",
    "Zorvan Quill is a Norwegian painter.",
    "1962",
    "She won the Pulitzer Prize.",
    "He worked at Google as an engineer.",
    "Answer: Oslo",
    "Sure! He was born in Lyon.",
    "He was uncertain about his career and became a lawyer.",
    "He didn't know his father and grew up in Oslo.",
    "She has never heard a complaint from her readers in Oslo.",
    "No.",
]


@pytest.mark.parametrize("answer", REFUSALS)
def test_refusals_not_in_any_list_are_abstentions(answer):
    assert PATTERNS.abstains(answer, Q)
    assert grade(answer, ["Lyon"], PATTERNS, question=Q) == "abstained"
    assert grade(answer, [], PATTERNS, question=Q) == "abstained"


@pytest.mark.parametrize("answer", HEDGED_CLAIMS)
def test_refusal_with_a_claim_is_not_an_abstention(answer):
    assert PATTERNS.is_refusal(answer, Q)
    assert not PATTERNS.abstains(answer, Q)
    # wrong claim -> incorrect (a hedged fabrication); on a nonexistent person -> not abstained
    assert grade(answer, ["Paris"], PATTERNS, question=Q) == "incorrect"
    assert grade(answer, [], PATTERNS, question=Q) == "incorrect"


@pytest.mark.parametrize("answer", PLAIN_CLAIMS)
def test_plain_claims_are_not_refusals(answer):
    assert not PATTERNS.abstains(answer, Q)
    assert grade(answer, ["Paris"], PATTERNS, question=Q) == "incorrect"


def test_hedged_answer_with_the_gold_is_correct():
    assert grade("I'm not sure, but maybe Lyon.", ["Lyon"], PATTERNS) == "correct"
    assert grade("I'm not sure maybe Lyon", ["Lyon"], PATTERNS) == "correct"
    assert grade("He was born in Lyon, but I'm not sure.", ["Lyon"], PATTERNS) == "correct"


def test_list_sentences_match_verbatim_up_to_case_punctuation_and_contractions():
    odd = "My crystal ball is cloudy today."  # no pattern catches this
    assert not PATTERNS.abstains(odd)
    m = RefusalMatcher([odd])
    assert m.n_phrases == 1
    variants = ["my crystal ball is cloudy today", "MY CRYSTAL BALL IS CLOUDY TODAY!",
                "Sorry - my crystal ball, is cloudy today..."]
    for variant in variants:
        assert m.abstains(variant) and m.is_refusal(variant)
    phrase = RefusalMatcher(["That\u2019s a riddle I can\u2019t crack."], use_patterns=False)
    assert phrase.abstains("that's a riddle I cannot crack")
    assert phrase.abstains("Thats a riddle I cant crack.")
    assert not phrase.abstains("That's a riddle.")
    assert not phrase.abstains("I don't know.")  # patterns switched off
    # a list sentence followed by a claim is still a claim
    assert not m.abstains("My crystal ball is cloudy today, but he was born in Lyon.")
    # duplicates after normalisation count once
    assert RefusalMatcher(["I'm lost.", "i am lost", "I AM LOST!"]).n_phrases == 1


def test_clause_labels_explain_the_decision():
    clauses = PATTERNS.clauses("Zorvan Quill? I'm not sure who that is. Could you provide more context?", Q)
    assert [c.label for c in clauses] == ["echo", "refusal", "request"]
    clauses = PATTERNS.clauses("Sorry, I'm not sure, but he was a painter.", Q)
    assert [c.label for c in clauses] == ["filler", "refusal", "claim"]
    # a name repeated from the question is a claim when nothing refuses (it is the answer given)
    assert [c.label for c in PATTERNS.clauses("Zorvan Quill", Q)] == ["claim"]


def test_normalize():
    assert normalize("I\u2019m NOT sure, Beyonc\u00e9!") == "i am not sure beyonce"
    expanded = "do not can not will not can not i would they are we have"
    assert normalize("Don't; can't; won't; cannot; I'd; they're; we've") == expanded
    assert normalize("Stephen King's novel") == "stephen king novel"
    assert normalize("dont know") == "do not know"


@pytest.mark.parametrize("answer, gold, expected", [
    ("Portland", "Portland", 1.0),
    ("He was born in Portland, Maine.", "Portland", 1.0),
    ("portland", "Portland", 1.0),  # case does not matter here (it does in RWKU's raw score)
    ("Beyonce", "Beyonc\u00e9", 1.0),
    ("Shawshank Redemption", "The Shawshank Redemption", 1.0),
    ("Augusta, Maine", "Portland, Maine", 0.5),
    ("Stanford University", "Harvard University", 0.5),
    ("Portland", "Portland, Maine", 0.5),
    ("New York", "New York City", 2 / 3),
    ("University of Cambridge", "University of Oxford", 0.5),
    ("Stephen King's novel", "Stephen King", 1.0),
    ("1948", "1947", 0.0),
    ("In 1947.", "1947", 1.0),
    ("B", "A", 0.0),
    ("a", "A", 1.0),  # a gold made only of stop words keeps them
    ("", "Portland", 0.0),
    ("Portland", "", 0.0),
])
def test_gold_recall(answer, gold, expected):
    assert gold_recall(answer, gold) == pytest.approx(expected)


def test_gold_recall_is_rwku_rouge_on_normalised_text():
    rouge = pytest.importorskip("rouge")
    scorer = rouge.Rouge(metrics=["rouge-l"])
    pairs = [("the cat sat on the mat with a hat", "a cat on a hat"),
             ("Bob Dylan wrote songs", "Robert Zimmerman Bob Dylan"),
             ("x y z w", "w z y x"), ("John Ronald Smith Junior", "John Smith")]
    for answer, gold in pairs:
        from rwkuplus.evaluation.grading import MATCH_STOPWORDS
        a = " ".join(w for w in normalize(answer).split() if w not in MATCH_STOPWORDS)
        g = " ".join(w for w in normalize(gold).split() if w not in MATCH_STOPWORDS)
        expected = scorer.get_scores(a, g)[0]["rouge-l"]["r"]
        assert gold_recall(answer, gold) == pytest.approx(expected)


def test_threshold_and_aliases():
    m = PATTERNS
    assert grade("Augusta, Maine", ["Portland, Maine"], m) == "incorrect"
    assert grade("Portland", ["Portland, Maine"], m) == "incorrect"
    assert grade("Portland", ["Portland, Maine", "Portland"], m) == "correct"  # alias
    assert grade("Portland", ["Portland, Maine"], m, threshold=0.5) == "correct"
    assert grade("New York", ["New York City"], m) == "correct"
    assert grade("It is New York", "New York City", m) == "correct"  # a bare string is one gold
    assert best_recall("Oslo", ["Paris", "Lyon"]) == 0.0
    assert best_recall("Oslo", []) == 0.0
    assert grade("Paris", [], m) == "incorrect"  # no gold: never correct


def test_refusal_paths_from_argument_or_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("RWKUPLUS_REFUSALS", raising=False)
    assert refusal_paths() == []
    monkeypatch.setenv("RWKUPLUS_REFUSALS", f"{tmp_path}/a.jsonl:{tmp_path}/b.jsonl")
    assert refusal_paths() == [f"{tmp_path}/a.jsonl", f"{tmp_path}/b.jsonl"]
    assert refusal_paths([tmp_path / "c.jsonl"]) == [str(tmp_path / "c.jsonl")]


def test_load_refusal_matcher_adds_user_files_to_the_project_list(monkeypatch, tmp_path):
    monkeypatch.delenv("RWKUPLUS_REFUSALS", raising=False)
    odd = "My crystal ball is cloudy today."
    path = tmp_path / "mine.jsonl"
    path.write_text(odd + "\n", encoding="utf-8")
    base = load_refusal_matcher()
    assert base.n_phrases == len(project_refusals()) and not base.abstains(odd)
    for sentence in project_refusals():
        assert base.abstains(sentence) and RefusalMatcher([], use_patterns=True).abstains(sentence)
    assert load_refusal_matcher([path]).abstains(odd)
    monkeypatch.setenv("RWKUPLUS_REFUSALS", str(path))
    assert load_refusal_matcher().abstains(odd)
    with pytest.raises(UserError, match="missing.jsonl"):
        load_refusal_matcher([tmp_path / "missing.jsonl"])


@pytest.mark.skipif(not RWKU_DIR.is_dir(), reason="RWKU's data folder (../shared/data/rwku) is absent")
def test_rwku_refusal_sentences(monkeypatch):
    monkeypatch.delenv("RWKUPLUS_REFUSALS", raising=False)
    path = RWKU_DIR / "idontknow.jsonl"
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert len(lines) == 100
    full = load_refusal_matcher([path])
    assert full.n_phrases == len({normalize(x) for x in lines + project_refusals()}) >= 100
    for line in lines:
        assert grade(line, ["Portland"], full) == "abstained", line
        assert full.abstains(line.upper().rstrip("."))
    # the patterns alone (no list) catch nearly all of them
    caught = sum(PATTERNS.abstains(line) for line in lines)
    assert caught >= 95
    # and a RWKU refusal followed by a guess is a claim
    assert grade(f"{lines[0]} Maybe Oslo.", ["Portland"], full) == "incorrect"


def test_documented_limits_behave_as_documented():
    # a refusal in words no sentence or pattern covers reads as a claim
    assert grade("That eludes me.", [], PATTERNS) == "incorrect"
    # a guess glued to a refusal without a marker or clause break reads as a refusal
    assert grade("I'm not sure Oslo", ["Paris"], PATTERNS) == "abstained"
    # a quoted refusal inside a real answer reads as a refusal unless it recalls the gold
    assert grade("He wrote the song I Don't Know Why.", ["Yesterday"], PATTERNS) == "abstained"
    assert grade("He wrote the song I Don't Know Why.", ["I Don't Know Why"], PATTERNS) == "correct"
