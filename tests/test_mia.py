import math
import zlib

import pytest
import torch
import torch.nn.functional as F

from rwkuplus.benchmark.records import MIAText
from rwkuplus.evaluation.mia import (
    evaluate_mia,
    lowest_fraction_mean,
    mia_metrics,
    roc_auc,
    score_texts,
    text_statistics,
)
from rwkuplus.evaluation.prompts import icu_prefix

TEXTS = [
    "Alice Smith was born in 1970 in Lyon and works as a painter.",
    "The quick brown fox jumps over the lazy dog.",
    "Her best-known work is The Silver Harbor.",
    "abc",
    "I don't know who that is, I'm not sure. " * 3,
    "a",
]


def test_roc_auc_known_values():
    assert roc_auc([3, 4], [1, 2]) == 1.0
    assert roc_auc([1, 2], [3, 4]) == 0.0
    assert roc_auc([1], [1]) == 0.5
    assert roc_auc([1, 2, 3], [2]) == pytest.approx(0.5)  # loss, tie, win
    assert roc_auc([0.9, 0.8, 0.7, 0.6], [0.75, 0.65, 0.1]) == pytest.approx(9 / 12)
    assert roc_auc([2, 2], [2, 1]) == pytest.approx((0.5 + 1 + 0.5 + 1) / 4)
    assert math.isnan(roc_auc([], [1.0]))


def test_lowest_fraction_mean():
    assert lowest_fraction_mean([5, 1, 3, 2, 4], 0.4) == 1.5
    assert lowest_fraction_mean([5, 1, 3, 2, 4], 0.1) == 1  # at least one value
    assert lowest_fraction_mean([5, 1, 3, 2, 4], 1.0) == 3
    assert math.isnan(lowest_fraction_mean([], 0.2))


def test_text_statistics_by_hand():
    lps = [-1.0, -2.0, -3.0, -4.0, -10.0]
    mu = [-2.0] * 5
    sigma = [2.0] * 5
    s = text_statistics(lps, mu, sigma, "hello hello hello", k=0.4)
    assert s["n_scored"] == 5
    assert s["mean_ll"] == pytest.approx(-4.0)
    assert s["loss"] == pytest.approx(400.0)
    assert s["zlib"] == pytest.approx(-4.0 / len(zlib.compress(b"hello hello hello")))
    assert s["min_k"] == pytest.approx(-7.0)  # mean of the 2 lowest: -4, -10
    assert s["min_k_plus_plus"] == pytest.approx((-1.0 + -4.0) / 2)  # z = (lp + 2) / 2: -1 and -4 lowest
    empty = text_statistics([], [], [], "a")
    assert empty["n_scored"] == 0 and empty["loss"] is None


def reference_statistics(model, tokenizer, text, k=0.2):
    """RWKU's eval_mia.py computation for one text, written out independently (in float64)."""
    ids = torch.tensor([tokenizer(text).input_ids])
    with torch.no_grad():
        out = model(ids, labels=ids)
    ll = -out.loss.item()
    logits = out.logits[0, :-1].double()
    probs = F.softmax(logits, -1)
    logp = F.log_softmax(logits, -1)
    tok = logp.gather(-1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)
    mu = (probs * logp).sum(-1)
    sigma = (probs * logp.square()).sum(-1) - mu.square()
    z = (tok - mu) / sigma.sqrt()
    n = max(1, int(len(tok) * k))
    return {"mean_ll": ll, "loss": -100 * ll, "zlib": ll / len(zlib.compress(text.encode())),
            "min_k": tok.sort().values[:n].mean().item(), "min_k_plus_plus": z.sort().values[:n].mean().item()}


def test_statistics_match_rwku_computation(tiny):
    model, tok = tiny
    got = score_texts(model, tok, TEXTS[:3], k=0.2, batch_size=1)
    for text, g in zip(TEXTS[:3], got):
        ref = reference_statistics(model, tok, text)
        for key, value in ref.items():
            assert g[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_batched_equals_one_at_a_time(tiny):
    model, tok = tiny
    batched = score_texts(model, tok, TEXTS, batch_size=4)
    single = [score_texts(model, tok, [t], batch_size=1)[0] for t in TEXTS]
    tiny_budget = score_texts(model, tok, TEXTS, batch_size=16, max_batch_tokens=40)
    for b, s, t in zip(batched, single, tiny_budget):
        assert b["n_scored"] == s["n_scored"] == t["n_scored"]
        for key in ("mean_ll", "loss", "zlib", "min_k", "min_k_plus_plus"):
            if s[key] is None:
                assert b[key] is None and t[key] is None
            else:
                assert abs(b[key] - s[key]) < 1e-5 * max(1.0, abs(s[key]))
                assert abs(t[key] - s[key]) < 1e-5 * max(1.0, abs(s[key]))
    assert batched[-1]["n_scored"] == 0  # "a" is one token: nothing to score


def test_mia_metrics_by_hand():
    forget = [{"mean_ll": -1.0, "loss": 100.0, "zlib": -0.1, "min_k": -2.0, "min_k_plus_plus": -0.5},
              {"mean_ll": -2.0, "loss": 200.0, "zlib": -0.2, "min_k": -3.0, "min_k_plus_plus": -1.0}]
    retain = [{"mean_ll": -3.0, "loss": 300.0, "zlib": -0.3, "min_k": -2.5, "min_k_plus_plus": -1.0},
              {"mean_ll": None, "loss": None, "zlib": None, "min_k": None, "min_k_plus_plus": None}]
    m = mia_metrics(forget, retain)
    assert m["FM"] == 150.0 and m["RM"] == 300.0
    assert m["forget"]["zlib"] == pytest.approx(-0.15)
    assert m["auc"]["loss"] == 1.0  # lower loss on forget texts = looks like training data
    assert m["auc"]["zlib"] == 1.0
    assert m["auc"]["min_k"] == 0.5  # -2 > -2.5, -3 < -2.5
    assert m["auc"]["min_k_plus_plus"] == 0.75  # -0.5 > -1, -1 == -1 (tie)
    assert mia_metrics([], retain)["auc"]["loss"] is None


def test_evaluate_mia_with_icu(tiny):
    model, tok = tiny
    forget = [MIAText(TEXTS[0], "Alice Smith"), MIAText(TEXTS[2], "Alice Smith")]
    retain = [MIAText(TEXTS[1], "Bob"), MIAText(TEXTS[4], "Bob")]
    records, metrics = evaluate_mia(model, tok, forget, retain)
    assert [r["set"] for r in records] == ["forget", "forget", "retain", "retain"]
    assert metrics["FM"] == pytest.approx((records[0]["loss"] + records[1]["loss"]) / 2)
    assert metrics["RM"] == pytest.approx((records[2]["loss"] + records[3]["loss"]) / 2)
    assert set(metrics["auc"]) == {"loss", "zlib", "min_k", "min_k_plus_plus"}
    icu_records, _ = evaluate_mia(model, tok, forget, retain, icu_target="Alice Smith")
    assert icu_records[0]["text"] == TEXTS[0]  # the record keeps the text as given
    direct = score_texts(model, tok, [icu_prefix(TEXTS[0], "Alice Smith")])[0]
    assert icu_records[0]["loss"] == pytest.approx(direct["loss"], rel=1e-5)
    assert icu_records[0]["loss"] != pytest.approx(records[0]["loss"], rel=1e-3)
