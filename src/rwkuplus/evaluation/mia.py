"""Membership-inference statistics on RWKU's MIA texts (forget_mia = FM, retain_mia = RM).

Per text, following RWKU's ``eval_mia.py`` (itself the Min-K%++ authors' code), with the text scored
as one sequence whose labels are its own tokens:

- tokenisation: ``tokenizer(text)`` with the tokenizer's normal special-token behaviour, the same
  for every text (RWKU used ``tokenizer.encode(text)``). For SmolLM2 that adds no BOS; for
  Llama-3 it adds ``<|begin_of_text|>``. The first token is never scored (nothing predicts it), so a
  text of n tokens has n-1 scored tokens; a text with fewer than 2 tokens has no statistics (RWKU
  skipped texts whose loss was NaN).
- ``mean_ll``: mean log-likelihood of the scored tokens (natural log).
- ``loss`` = -100 x ``mean_ll``: the LOSS statistic RWKU's table reports (FM and RM).
- ``zlib`` = ``mean_ll`` / (byte length of ``zlib.compress(text.encode("utf-8"))``). RWKU's and the
  Min-K%++ code divide the *mean* (per-token) log-likelihood, not the total, by the compressed
  length; we follow the code (docs that say "total log-likelihood" describe the same ratio up to the
  token count, which this definition leaves out).
- ``min_k``: mean of the lowest k-fraction of token log-probabilities (Min-K%, k = 0.2 reported).
- ``min_k_plus_plus``: each token's log-probability standardised by the mean ``mu`` and standard
  deviation ``sigma`` of the log-probability under the model's next-token distribution at that
  position (``mu = sum p log p``, ``sigma^2 = sum p (log p)^2 - mu^2``, computed as the equal
  ``sum p (log p - mu)^2``, which does not lose precision in float32 when the distribution is flat),
  then the mean of the lowest k-fraction (Min-K%++).
  The lowest k-fraction holds ``max(1, int(k x n_scored))`` tokens (RWKU's ``int(...)`` alone gives an
  empty slice, and a NaN mean, for texts shorter than 1/k tokens): a departure from RWKU's code kept
  on purpose under both evaluation protocols, listed in ``protocol.RWKU.departures``. Every other
  MIA rule is the same under both protocols.

With ICU, RWKU scored the text with its unlearning instruction prepended (``icu_prefix``), the zlib
length included; ``icu_target`` does the same.

``auc``: ROC AUC of forget texts (positives) against retain texts for each statistic, oriented so
that higher means "looks like training data" (higher ``mean_ll``, ``zlib``, ``min_k``,
``min_k_plus_plus``; lower ``loss``); ties count one half. 0.5 = indistinguishable.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..benchmark.records import MIAText
from .generation import progress_bar
from .prompts import icu_prefix

STATISTICS = ("loss", "zlib", "min_k", "min_k_plus_plus")
# Sign that turns each statistic into a membership score (higher = more likely a training text).
MEMBERSHIP_SIGN = {"mean_ll": 1.0, "loss": -1.0, "zlib": 1.0, "min_k": 1.0, "min_k_plus_plus": 1.0}


def lowest_fraction_mean(values: Sequence[float], k: float) -> float:
    """Mean of the ``max(1, int(k * n))`` smallest values."""
    n = len(values)
    if n == 0:
        return math.nan
    m = max(1, int(n * k))
    return sum(sorted(values)[:m]) / m


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(score of a random positive > score of a random negative) + 0.5 P(tie): the ROC AUC.

    NaN when either side is empty.
    """
    if not positive or not negative:
        return math.nan
    wins = 0.0
    for p in positive:
        for q in negative:
            wins += 1.0 if p > q else 0.5 if p == q else 0.0
    return wins / (len(positive) * len(negative))


def text_statistics(token_logprobs: Sequence[float], mu: Sequence[float], sigma: Sequence[float],
                    text: str, k: float = 0.2) -> dict:
    """The per-text statistics from per-token log-probs and the per-position vocabulary mean/std."""
    n = len(token_logprobs)
    if n == 0:
        return {"n_scored": 0, "mean_ll": None, "loss": None, "zlib": None, "min_k": None, "min_k_plus_plus": None}
    mean_ll = sum(token_logprobs) / n
    z = [(lp - m) / s if s > 0 else 0.0 for lp, m, s in zip(token_logprobs, mu, sigma)]
    return {
        "n_scored": n,
        "mean_ll": mean_ll,
        "loss": -100.0 * mean_ll,
        "zlib": mean_ll / len(zlib.compress(text.encode("utf-8"))),
        "min_k": lowest_fraction_mean(token_logprobs, k),
        "min_k_plus_plus": lowest_fraction_mean(z, k),
    }


def _batches(lengths: list[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), within both limits."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, current = [], []
    for i in order:
        width = max([lengths[j] for j in current] + [lengths[i]])
        if current and (len(current) + 1 > batch_size or (len(current) + 1) * width > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@torch.inference_mode()
def score_texts(model, tokenizer, texts: list[str], k: float = 0.2, batch_size: int = 8,
                max_batch_tokens: int = 8192, progress: str | None = None) -> list[dict]:
    """Per-text MIA statistics (see the module docstring), batched with right padding."""
    encoded = [tokenizer(t).input_ids for t in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    results: list[dict] = [{} for _ in texts]
    was_training = model.training
    model.eval()
    bar = progress_bar(len(texts), progress)
    try:
        for rows in _batches([len(e) for e in encoded], batch_size, max_batch_tokens):
            width = max(len(encoded[i]) for i in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, : len(encoded[i])] = torch.tensor(encoded[i], dtype=torch.long)
                mask[r, : len(encoded[i])] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for r, i in enumerate(rows):
                n = len(encoded[i])
                if n < 2:
                    results[i] = text_statistics([], [], [], texts[i], k)
                    continue
                logp = F.log_softmax(logits[r, : n - 1].float(), dim=-1)
                target = torch.tensor(encoded[i][1:], device=logp.device).unsqueeze(-1)
                token_lp = logp.gather(-1, target).squeeze(-1)
                p = logp.exp()
                mu = (p * logp).sum(-1)
                # sum p (log p - mu)^2 equals RWKU's sum p (log p)^2 - mu^2, without its float32 cancellation.
                sigma = (p * (logp - mu.unsqueeze(-1)).square()).sum(-1).sqrt()
                results[i] = text_statistics(token_lp.tolist(), mu.tolist(), sigma.tolist(), texts[i], k)
            bar.update(len(rows))
    finally:
        bar.close()
        if was_training:
            model.train()
    return results


def mia_metrics(forget: list[dict], retain: list[dict], k: float = 0.2) -> dict:
    """FM / RM (mean LOSS), per-set means of every statistic, and the forget-vs-retain AUC per statistic."""

    def mean(rows, key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    def membership(rows, key):
        return [MEMBERSHIP_SIGN[key] * r[key] for r in rows if r.get(key) is not None]

    keys = ("mean_ll",) + STATISTICS
    out = {
        "FM": mean(forget, "loss"),
        "RM": mean(retain, "loss"),
        "k": k,
        "forget": {key: mean(forget, key) for key in keys},
        "retain": {key: mean(retain, key) for key in keys},
        "auc": {},
    }
    for key in STATISTICS:
        auc = roc_auc(membership(forget, key), membership(retain, key))
        out["auc"][key] = None if math.isnan(auc) else auc
    return out


def evaluate_mia(model, tokenizer, forget: list[MIAText], retain: list[MIAText], icu_target: str | None = None,
                 k: float = 0.2, batch_size: int = 8, max_batch_tokens: int = 8192, progress: str | None = None):
    """Score forget and retain MIA texts: ``(records, metrics)``.

    A record is ``{set: "forget"|"retain", subject, text, n_scored, mean_ll, loss, zlib, min_k,
    min_k_plus_plus}`` (``text`` as given; with ICU the scored text had the instruction prepended).
    """
    items = [("forget", t) for t in forget] + [("retain", t) for t in retain]
    scored = [icu_prefix(t.text, icu_target) for _, t in items]
    stats = score_texts(model, tokenizer, scored, k=k, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                        progress=progress)
    records = [{"set": which, "subject": t.subject, "text": t.text, **s} for (which, t), s in zip(items, stats)]
    metrics = mia_metrics([r for r in records if r["set"] == "forget"], [r for r in records if r["set"] == "retain"], k)
    return records, metrics
