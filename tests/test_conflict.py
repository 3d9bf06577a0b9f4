"""The conflict measures on hand-made gradient sets whose values are known."""

import math

import numpy as np
import pytest
import torch

from rwkuplus.diagnostics.conflict import (
    alignment,
    block_grams,
    cancellation_ratio,
    coherence,
    conflict_measures,
    conflict_ratio,
    conflict_report,
    cosine_matrix,
    mean_cosine,
    mean_negative_cosine,
)


def gram(*vectors):
    V = np.array(vectors, dtype=float)
    return V @ V.T


def test_identical_gradients_agree_fully():
    G = gram([1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3])
    assert np.allclose(cosine_matrix(G), 1)
    assert conflict_ratio(G) == 0
    assert mean_cosine(G) == pytest.approx(1)
    assert mean_negative_cosine(G) is None
    assert cancellation_ratio(G) == pytest.approx(0, abs=1e-12)
    assert coherence(G) == pytest.approx(1)


def test_opposite_pair_cancels_completely():
    G = gram([1, -2], [-1, 2])
    assert conflict_ratio(G) == 1
    assert mean_cosine(G) == pytest.approx(-1)
    assert mean_negative_cosine(G) == pytest.approx(-1)
    assert cancellation_ratio(G) == pytest.approx(1)
    assert coherence(G) == pytest.approx(0, abs=1e-12)


def test_orthogonal_set():
    G = gram([1, 0, 0], [0, 1, 0], [0, 0, 1])
    assert conflict_ratio(G) == 0  # zero cosine is not a conflict
    assert mean_cosine(G) == pytest.approx(0)
    assert mean_negative_cosine(G) is None
    assert cancellation_ratio(G) == pytest.approx(1 - math.sqrt(3) / 3)
    assert coherence(G) == pytest.approx(1 / 3)


MIX = [[1, 0], [0, 2], [-1, 1]]  # norms 1, 2, sqrt 2; sum (0, 3)


def test_mixed_set_by_hand():
    G = gram(*MIX)
    C = cosine_matrix(G)
    assert C[0, 1] == pytest.approx(0)
    assert C[0, 2] == pytest.approx(-1 / math.sqrt(2))
    assert C[1, 2] == pytest.approx(1 / math.sqrt(2))
    assert conflict_ratio(G) == pytest.approx(1 / 3)
    assert mean_cosine(G) == pytest.approx(0, abs=1e-12)
    assert mean_negative_cosine(G) == pytest.approx(-1 / math.sqrt(2))
    assert cancellation_ratio(G) == pytest.approx(1 - 3 / (3 + math.sqrt(2)))
    assert coherence(G) == pytest.approx(3 / 7)


def test_same_and_different_label_pairs_by_hand():
    G = gram(*MIX)
    labels = ["birthplace", "profession", "birthplace"]
    assert conflict_ratio(G, labels, "same") == 1
    assert mean_cosine(G, labels, "same") == pytest.approx(-1 / math.sqrt(2))
    assert conflict_ratio(G, labels, "different") == 0
    assert mean_cosine(G, labels, "different") == pytest.approx(1 / (2 * math.sqrt(2)))
    m = conflict_measures(G, labels)
    assert m["n"] == 3 and m["all_pairs"]["pairs"] == 3
    assert m["same_label_pairs"] == {"pairs": 1, "conflict_ratio": 1.0,
                                     "mean_cosine": pytest.approx(-1 / math.sqrt(2)),
                                     "mean_negative_cosine": pytest.approx(-1 / math.sqrt(2))}
    per = m["within_label"]["per_label"]
    assert per["birthplace"]["cancellation_ratio"] == pytest.approx(1 - 1 / (1 + math.sqrt(2)))
    assert per["birthplace"]["coherence"] == pytest.approx(1 / 6)
    assert per["profession"] == {"n": 1, "cancellation_ratio": None, "coherence": None}
    assert m["within_label"]["cancellation_ratio"] == pytest.approx(1 - 1 / (1 + math.sqrt(2)))
    assert m["mean_norm"] == pytest.approx((1 + 2 + math.sqrt(2)) / 3)


def test_forget_retain_alignment_by_hand():
    G = gram(*MIX)
    assert alignment(G, [0, 1], [2]) == pytest.approx(1 / math.sqrt(10))
    assert alignment(G, [True, True, False], [False, False, True]) == pytest.approx(1 / math.sqrt(10))
    assert alignment(gram([1, 0], [-3, 0]), [0], [1]) == pytest.approx(-1)


def test_zero_gradient_has_zero_cosine_and_torch_input_works():
    G = torch.tensor(gram([1, 0], [0, 0], [2, 0]))
    C = cosine_matrix(G)
    assert C[0, 1] == 0 and C[1, 1] == 0 and C[0, 2] == pytest.approx(1)
    assert conflict_ratio(G) == 0
    assert mean_cosine(G) == pytest.approx(1 / 3)
    assert cancellation_ratio(gram([0, 0], [0, 0])) is None


def test_bad_gram_matrices_are_rejected():
    with pytest.raises(ValueError, match="square"):
        cosine_matrix(np.ones((2, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        cosine_matrix(np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="labels"):
        conflict_measures(gram(*MIX), ["a"])


def test_blocks_sum_layer_grams_and_report_uses_them():
    a, b, c = gram([1, 0], [0, 1]), gram([1, 1], [1, -1]), gram([2, 0], [0, 3])
    blocks = block_grams({"embed_tokens": c, "layers.0": a, "layers.1": b, "layers.2": a}, 2)
    assert set(blocks) == {"embed_tokens", "layers.0-1", "layers.2-3"}
    assert np.allclose(blocks["layers.0-1"], a + b)
    assert np.allclose(blocks["layers.2-3"], a)
    report = conflict_report(a + b + c + a, {"embed_tokens": c, "layers.0": a, "layers.1": b, "layers.2": a},
                             layer_block=2)
    assert report["per_layer"]["layers.0-1"]["all_pairs"]["mean_cosine"] == pytest.approx(0)
    assert report["overall"]["n"] == 2


def test_report_with_roles_splits_forget_and_retain():
    G = gram(*MIX, [0, 5])
    report = conflict_report(G, {"layers.0": G}, labels=["x", "y", "x", "r"],
                             roles=["forget", "forget", "forget", "retain"])
    overall = report["overall"]
    assert overall["forget"]["n"] == 3
    assert overall["forget"]["same_label_pairs"]["conflict_ratio"] == 1
    assert overall["retain"]["n"] == 1
    assert overall["forget_retain_alignment"] == pytest.approx(1.0)  # sum of forget = (0, 3)
    assert report["per_layer"]["layers.0"]["forget_retain_alignment"] == pytest.approx(1.0)
