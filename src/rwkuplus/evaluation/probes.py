"""Forget and neighbor probes, scored RWKU's way.

Each probe is put in RWKU's prompt (``prompts.probe_prompt``, with the ICU instruction when
``icu_target`` is given), answered greedily under the protocol's stop rule (``protocol.py``): at most
30 new tokens; ``rwku`` stops at the end of the turn only and scores the whole answer, as RWKU's code
does; ``world`` also cuts it at its first newline (``generation.generate``). The answer is scored by
ROUGE-L recall of the prediction against the gold answer (``rouge.rouge_l_recall``, identical to
RWKU's ``rouge`` package). An empty output is scored as the text ``NOANSWER``, as RWKU did. Metrics
are means over probes x100: FB, QA, AA and All for forget probes; FB, QA and All for neighbor probes
(a kind with no probes is left out). "All" (RWKU's code computes none) follows the protocol's
``all_rule``: ``pooled`` (both protocols), the mean over every probe of the target, which reproduces
RWKU's Table 1 (its Before row's All, 79.6, is not the mean of FB, QA and AA, 80.0); ``mean``, the
mean of the kinds' means.
"""

from __future__ import annotations

from ..benchmark.records import Probe
from .answers import AnswerBook, shared_book
from .prompts import probe_prompt
from .protocol import RWKU
from .rouge import rouge_l_recall

NO_ANSWER = "NOANSWER"


def score_prediction(prediction: str, answer: str) -> float:
    """ROUGE-L recall of a prediction (``NOANSWER`` when empty) against the gold answer."""
    return rouge_l_recall(prediction.strip() or NO_ANSWER, answer)


ALL_RULES = ("pooled", "mean")


def probe_metrics(records: list[dict], kinds: tuple[str, ...] = ("FB", "QA", "AA"),
                  all_rule: str = "pooled") -> dict[str, float]:
    """Mean score x100 per kind (FB / QA / AA) and "All": over every record (``pooled``) or the mean of
    the kinds' means (``mean``); kinds without records are omitted."""
    if all_rule not in ALL_RULES:
        raise ValueError(f"all_rule: expected 'pooled' or 'mean', got {all_rule!r}")
    metrics: dict[str, float] = {}
    for kind in kinds:
        scores = [r["score"] for r in records if r["kind"] == kind]
        if scores:
            metrics[kind] = 100.0 * sum(scores) / len(scores)
    if records and all_rule == "pooled":
        metrics["All"] = 100.0 * sum(r["score"] for r in records) / len(records)
    elif metrics:
        metrics["All"] = sum(metrics.values()) / len(metrics)
    return metrics


def probe_prompts(tokenizer, probes: list[Probe], icu_target: str | None = None) -> list[str]:
    """The prompts of ``probes`` (RWKU's, with the ICU instruction when ``icu_target`` is given)."""
    return [probe_prompt(tokenizer, p, icu_target) for p in probes]


def evaluate_probes(
    model,
    tokenizer,
    probes: list[Probe],
    icu_target: str | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 30,
    progress: str | None = None,
    return_stats: bool = False,
    answers: AnswerBook | None = None,
    protocol=None,
):
    """Answer and score ``probes``: ``(records, metrics)`` (plus ``GenerationStats`` with ``return_stats``).

    ``answers``: this model's ``AnswerBook`` at ``max_new_tokens`` when the caller shares one (a
    prompt already answered in it is not generated again, and its cost is charged once: see
    ``answers.py``); by default a fresh one under ``protocol``'s stop rule. ``protocol``
    (``protocol.Protocol``, default ``rwku``) also gives the All rule.

    A record is ``{prompt, prediction, answer, score, level, type, kind, subject, neighbor}``;
    ``metrics`` holds FB, QA, AA (when there are level-3 probes) and All, x100.
    """
    protocol = protocol or RWKU
    prompts = probe_prompts(tokenizer, probes, icu_target)
    book = shared_book(answers, model, tokenizer, max_new_tokens, batch_size, protocol)
    outputs, stats = book.take(prompts, progress)
    records = []
    for probe, prompt, output in zip(probes, prompts, outputs):
        prediction = output or NO_ANSWER
        records.append({
            "prompt": prompt, "prediction": prediction, "answer": probe.answer,
            "score": score_prediction(prediction, probe.answer),
            "level": probe.level, "type": probe.type, "kind": probe.kind,
            "subject": probe.subject, "neighbor": probe.neighbor,
        })
    metrics = probe_metrics(records, all_rule=protocol.all_rule)
    return (records, metrics, stats) if return_stats else (records, metrics)

