"""Forget and neighbor probes, scored RWKU's way.

Each probe is put in RWKU's prompt (``prompts.probe_prompt``, with the ICU instruction when
``icu_target`` is given), answered greedily (at most 30 new tokens, stopping at the end of the turn
or a newline: ``generation.generate``), and scored by ROUGE-L recall of the prediction against the
gold answer (``rouge.rouge_l_recall``, identical to RWKU's ``rouge`` package). An empty output is
scored as the text ``NOANSWER``, as RWKU did. Metrics are means over probes x100: FB, QA, AA and All
for forget probes; FB, QA and All for neighbor probes (a kind with no probes is left out).
"""

from __future__ import annotations

from ..benchmark.records import Probe
from .generation import generate
from .prompts import probe_prompt
from .rouge import rouge_l_recall

NO_ANSWER = "NOANSWER"


def score_prediction(prediction: str, answer: str) -> float:
    """ROUGE-L recall of a prediction (``NOANSWER`` when empty) against the gold answer."""
    return rouge_l_recall(prediction.strip() or NO_ANSWER, answer)


def probe_metrics(records: list[dict], kinds: tuple[str, ...] = ("FB", "QA", "AA")) -> dict[str, float]:
    """Mean score x100 per kind (FB / QA / AA) and over all records ("All"); kinds without records are omitted."""
    metrics: dict[str, float] = {}
    for kind in kinds:
        scores = [r["score"] for r in records if r["kind"] == kind]
        if scores:
            metrics[kind] = 100.0 * sum(scores) / len(scores)
    if records:
        metrics["All"] = 100.0 * sum(r["score"] for r in records) / len(records)
    return metrics


def evaluate_probes(
    model,
    tokenizer,
    probes: list[Probe],
    icu_target: str | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 30,
    progress: str | None = None,
    return_stats: bool = False,
    answers: dict[str, str] | None = None,
):
    """Answer and score ``probes``: ``(records, metrics)`` (plus ``GenerationStats`` with ``return_stats``).

    ``answers`` (prompt -> greedy answer of this same model, 30 tokens, newline stop) is read and
    filled, as in ``evaluate_hallucination``: a prompt already answered is not generated again
    (the hallucination part's honesty split asks the forget probes again, in the same prompts).

    A record is ``{prompt, prediction, answer, score, level, type, kind, subject, neighbor}``;
    ``metrics`` holds FB, QA, AA (when there are level-3 probes) and All, x100.
    """
    prompts = [probe_prompt(tokenizer, p, icu_target) for p in probes]
    answers = {} if answers is None else answers
    todo = [p for p in dict.fromkeys(prompts) if p not in answers]
    generated, stats = generate(
        model, tokenizer, todo, max_new_tokens=max_new_tokens, batch_size=batch_size,
        stop_at_newline=True, progress=progress, return_stats=True,
    )
    answers.update(zip(todo, generated))
    outputs = [answers[p] for p in prompts]
    records = []
    for probe, prompt, output in zip(probes, prompts, outputs):
        prediction = output or NO_ANSWER
        records.append({
            "prompt": prompt, "prediction": prediction, "answer": probe.answer,
            "score": score_prediction(prediction, probe.answer),
            "level": probe.level, "type": probe.type, "kind": probe.kind,
            "subject": probe.subject, "neighbor": probe.neighbor,
        })
    metrics = probe_metrics(records)
    return (records, metrics, stats) if return_stats else (records, metrics)

