import random

import pytest

from rwkuplus.evaluation.rouge import rouge_l_recall, sentences


def reference_recall(prediction: str, reference: str) -> float:
    """The reference implementation: PyPI rouge 1.0.1, as RWKU called it (a test dependency)."""
    import rouge

    return rouge.Rouge(metrics=["rouge-l"]).get_scores(prediction, reference, avg=True)["rouge-l"]["r"]


HAND_MADE = [
    # (prediction, reference, known recall)
    ("Portland", "Portland", 1.0),
    ("portland", "Portland", 0.0),  # case-sensitive
    ("He was born in Portland, Maine.", "Portland", 0.0),  # "Portland," is not "Portland"
    ("He was born in Portland Maine", "Portland, Maine", 0.5),  # "Portland," vs "Portland"
    ("Portland. Maine", "Portland, Maine", 0.5),  # "Maine" matches in the second sentence
    ("in Portland in Maine", "Portland Maine", 1.0),
    ("Maine Portland", "Portland Maine", 0.5),  # order matters: LCS of length 1
    ("The Shining", "The Shining and Carrie", 0.5),
    ("NOANSWER", "1947", 0.0),
    ("the the the", "the cat the", 0.5),  # distinct words: {the, cat}
    ("Carrie. The Shining", "The Shining. Carrie", 1.0),  # summary level: sentences matched separately
    ("Born 1947.", "1947", 1.0),
    ("a b c", "c b a", 1 / 3),
    ("x y", "a b c d", 0.0),
    ("Stephen  King\twrote   it", "Stephen King", 1.0),  # whitespace runs collapse
    ("", "Portland", 0.0),  # empty prediction (the package raises; RWKU never scores "")
    ("...", "Portland", 0.0),
]


@pytest.mark.parametrize("prediction,reference,expected", HAND_MADE)
def test_known_values(prediction, reference, expected):
    assert rouge_l_recall(prediction, reference) == pytest.approx(expected)
    if sentences(prediction) and sentences(reference):
        assert rouge_l_recall(prediction, reference) == reference_recall(prediction, reference)


def test_sentence_split_matches_package():
    assert sentences("a. b .c") == ["a", "b", "c"]
    assert sentences("a. ") == ["a", ""]  # a whitespace-only piece stays, as the empty sentence
    assert sentences("..a..") == ["a"]
    assert sentences("") == []


MULTI = [
    ("He wrote Carrie. Then he wrote The Shining. Both were hits", "Carrie and The Shining"),
    ("Born in Portland. Raised in Maine. Lives in Bangor", "Portland, Maine. Bangor"),
    ("A. B. C. D", "D. C. B. A"),
    ("x. y z. z y x. ", "x y z. z"),
    ("The answer is 42. The answer is not 41", "42. 41. The answer"),
    ("St. Louis", "St. Louis, Missouri"),
    ("Dr. Who. Dr. No", "Dr. No"),
    ("the cat sat on the mat. the dog sat", "the cat sat. on the mat"),
    ("Ünïcödé names: Beyoncé. Zoë", "Beyoncé"),
    ("Question: who? Answer: Joe", "Joe"),
]


@pytest.mark.parametrize("prediction,reference", MULTI)
def test_multi_sentence_and_punctuation_match_package(prediction, reference):
    assert rouge_l_recall(prediction, reference) == reference_recall(prediction, reference)


def test_random_strings_match_package():
    rng = random.Random(1234)
    vocab = ["a", "b", "c", "A", "the", "The", "Lyon", "lyon", ".", ",", "x.", "y,", "1947", " ", "  ", "\n", "z"]
    for _ in range(600):
        pred = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 14)))
        ref = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 8)))
        if not sentences(pred) or not sentences(ref):
            assert rouge_l_recall(pred, ref) == 0.0
            continue
        assert rouge_l_recall(pred, ref) == reference_recall(pred, ref), (pred, ref)


def test_random_characters_match_package():
    rng = random.Random(99)
    alphabet = "ab. ,A\tc"
    for _ in range(400):
        pred = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 25)))
        ref = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        if not sentences(pred) or not sentences(ref):
            continue
        assert rouge_l_recall(pred, ref) == reference_recall(pred, ref), (pred, ref)
