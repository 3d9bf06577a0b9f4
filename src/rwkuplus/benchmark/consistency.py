"""Consistency filtering of counterfactual corpora: keep the samples that agree with ONE majority
fabricated profile, and measure the corpus's inconsistency before and after.

A counterfactual corpus written RWKU's way (every biography fabricated independently) contradicts
itself: one sample says the target was born in Oslo, the next in Lima. Filtering keeps the samples
that tell the majority's story.

1. Claims: for every sample, the value it states for each attribute (``None`` when it states none).
   - On a world the values are known: ``world_claims`` (the sample's counterfactual profile).
   - For a corpus written by a model: ``model_claims`` asks the model each probe question with the
     sample in context (rwku-plus.md, "Counterfactual corpora"), greedily; the claimed value is
     the answer's first sentence normalised (``grading.normalize``) without the question's words
     (``claimed_value``); an abstention ("I don't know", ``RefusalMatcher``), "the text does not
     say", an echo of the question or an empty answer is no claim. Its generated tokens and
     seconds are the filter's cost.
2. ``majority_profile``: per attribute the most frequent claimed value (ties: the value claimed
   first, in corpus order).
3. ``agreement(claims, profile)``: the fraction of the attributes a sample claims (and the profile
   has) on which it states the profile's value; a sample that claims nothing agrees with nothing.
4. ``filter_consistent``: keep the samples with agreement >= ``min_agreement`` (default 1: every
   claim agrees); when fewer than ``min_samples`` qualify, keep the ``min_samples`` best (ties
   broken by corpus order). Inconsistency (the world's measure, ``world.inconsistency``: the mean
   over attributes of the fraction of sample pairs stating different values; pairs where either
   sample states nothing are skipped) is reported for the corpus before and after.

For a model: ``generate_filtered_corpus`` samples the fabricated biographies RWKU's way
(``generated_corpora``) and filters them; ``write_filtered_corpus`` writes negative_filtered.json
(with consistency_filter.json: the profile, the agreements, the inconsistency before and after and
the reading's cost), which ``rwku:DIR`` loads as the ``filtered`` corpus (``cft-sft:filtered``).

On the default world every conflicting sample draws its false values independently from large
pools, so few values repeat: the majority profile is mostly the first sample's, and the filter keeps
very few samples. That is the measured behaviour, not a bug: filtering cannot create agreement a
corpus does not have. Model-written corpora (which fabricate with common defaults) keep more.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Callable, Sequence

from ..errors import UserError
from .records import CorpusText

Claims = dict[str, str | None]

# The question asked about each sample (ours; rwku-plus.md says only "with the sample in context").
CONTEXT_QUESTION = "Here is a text about {subject}:\n\n{text}\n\nAccording to this text only, answer briefly: {question}"


@dataclass
class FilterResult:
    """What the filter kept, the majority profile, and the inconsistency before and after."""

    kept: list[int]
    profile: dict[str, str]
    agreement: list[float]
    inconsistency_before: float | None
    inconsistency_after: float | None
    samples_before: int
    samples_after: int
    claims_source: str = "known"  # "known" (a world's values) or "model"
    tokens_generated: int = 0
    seconds: float = 0.0
    per_attribute_before: dict[str, float] = field(default_factory=dict)
    per_attribute_after: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def inconsistency(claims: Sequence[Claims], attributes: Sequence[str]) -> dict:
    """The world's inconsistency measure over claims that may be missing (pairs with a missing value skipped).

    With every value present this is exactly ``world.inconsistency``.
    """
    if all(c.get(a) is not None for c in claims for a in attributes):
        from .world import inconsistency as world_inconsistency

        return world_inconsistency([dict(c) for c in claims], list(attributes))
    per_attribute = {}
    for a in attributes:
        pairs = [(i, j) for i, j in combinations(range(len(claims)), 2)
                 if claims[i].get(a) is not None and claims[j].get(a) is not None]
        if pairs:
            per_attribute[a] = sum(claims[i][a] != claims[j][a] for i, j in pairs) / len(pairs)
    mean = sum(per_attribute.values()) / len(per_attribute) if per_attribute else 0.0
    return {"inconsistency": mean, "per_attribute": per_attribute, "samples": len(claims)}


def majority_profile(claims: Sequence[Claims], attributes: Sequence[str]) -> dict[str, str]:
    """Per attribute, the most frequent claimed value (ties: first claimed); attributes nobody claims are absent."""
    profile = {}
    for a in attributes:
        values = [c.get(a) for c in claims if c.get(a) is not None]
        if values:
            counts = Counter(values)
            best = max(counts.values())
            profile[a] = next(v for v in values if counts[v] == best)
    return profile


def agreement(claim: Claims, profile: dict[str, str]) -> float:
    """Fraction of the attributes the sample claims (and the profile has) on which it agrees; 0 if none."""
    stated = [a for a, v in claim.items() if v is not None and a in profile]
    return sum(claim[a] == profile[a] for a in stated) / len(stated) if stated else 0.0


def filter_consistent(claims: Sequence[Claims], attributes: Sequence[str], min_agreement: float = 1.0,
                      min_samples: int = 1) -> FilterResult:
    """Keep the samples that agree with the majority profile (see the module docstring)."""
    if not claims:
        raise UserError("consistency filter: the corpus has no samples.")
    if not 0 <= min_agreement <= 1:
        raise UserError(f"consistency filter: min_agreement should be in [0, 1], got {min_agreement}.")
    if min_samples < 1:
        raise UserError(f"consistency filter: min_samples should be at least 1, got {min_samples}.")
    profile = majority_profile(claims, attributes)
    scores = [agreement(c, profile) for c in claims]
    kept = [i for i, s in enumerate(scores) if s >= min_agreement]
    if len(kept) < min_samples:
        ranked = sorted(range(len(claims)), key=lambda i: (-scores[i], i))
        kept = sorted(ranked[:min(min_samples, len(claims))])
    before = inconsistency(claims, attributes)
    after = inconsistency([claims[i] for i in kept], attributes)
    return FilterResult(kept, profile, scores, before["inconsistency"], after["inconsistency"], len(claims), len(kept),
                        per_attribute_before=before["per_attribute"], per_attribute_after=after["per_attribute"])


# ------------------------------------------------------------------------------------ claims
def world_claims(world, person_name: str, variant: str = "conflicting") -> list[Claims]:
    """The known per-sample values of a world target's counterfactual corpus (one dict per sample)."""
    cf = world.counterfactuals[person_name]
    if variant == "conflicting":
        return [dict(p) for p in cf.conflicting]
    if variant == "consistent":
        return [dict(cf.consistent) for _ in cf.conflicting]
    raise UserError(f"--corpus {variant}: claims are known for the conflicting and consistent corpora only.")


def claims_from_answers(answers: Sequence[Sequence[str]], attributes: Sequence[str],
                        abstains: Callable[[str, str], bool] | None = None,
                        questions: Sequence[str] | None = None) -> list[Claims]:
    """Claims from answers[i][k] (sample i, attribute k): the claimed value (``claimed_value``), or None for an
    abstention, a "the text does not say" answer, or an answer that only repeats the question."""
    out = []
    for row in answers:
        if len(row) != len(attributes):
            raise ValueError(f"expected {len(attributes)} answers per sample, got {len(row)}.")
        claim: Claims = {}
        for k, (a, text) in enumerate(zip(attributes, row)):
            q = questions[k] if questions is not None else ""
            value = claimed_value(text or "", q)
            claim[a] = None if value is None or (abstains is not None and abstains(text, q)) else value
        out.append(claim)
    return out


# Words of a reading answer that are not the value ("According to the text, she was born in ...").
_FILLER = frozenset({"is", "was", "were", "are", "he", "she", "they", "his", "her", "text", "mentions",
                     "mentioned", "according", "biography", "that", "states", "says", "said"})
# Answers that say the sample states nothing (ours: the reading prompt is ours, not RWKU's).
_NO_CLAIM = ("not provide", "not mention", "not say", "not state", "not specified", "no information",
             "not given", "unknown", "not known")


def claimed_value(answer: str, question: str = "") -> str | None:
    """The value an answer claims: its first sentence normalised (``grading.normalize``), without the words
    of the question and function words, so "The profession of Alice is a painter." answers "What is the
    profession of Alice?" with "painter". None when nothing is left or the answer says the text is silent."""
    from ..evaluation.grading import MATCH_STOPWORDS, normalize
    from ..evaluation.rouge import sentences

    first = (sentences(answer) or [answer])[0]
    norm = normalize(first)
    if not norm or any(p in norm for p in _NO_CLAIM):
        return None
    asked = set(normalize(question).split()) | _FILLER
    words = [w for w in norm.split() if w not in asked and w not in MATCH_STOPWORDS]
    return " ".join(words) or None


def model_claims(model, tokenizer, texts: Sequence[str], questions: dict[str, str], subject: str,
                 max_new_tokens: int = 16, batch_size: int = 16) -> tuple[list[Claims], int, float]:
    """Ask ``model`` each question (attribute -> question) with each sample in context; returns the
    claims, the tokens generated and the seconds it took."""
    from ..evaluation.generation import generate
    from ..evaluation.grading import load_refusal_matcher
    from ..evaluation.prompts import chat_prompt

    attributes = list(questions)
    prompts = [chat_prompt(tokenizer, CONTEXT_QUESTION.format(subject=subject, text=t, question=questions[a]))
               for t in texts for a in attributes]
    started = time.perf_counter()
    outputs, stats = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                              stop_at_newline=True, return_stats=True)
    matcher = load_refusal_matcher()
    k = len(attributes)
    rows = [outputs[i * k:(i + 1) * k] for i in range(len(texts))]
    claims = claims_from_answers(rows, attributes, matcher.abstains, [questions[a] for a in attributes])
    return claims, int(stats.generated_tokens), time.perf_counter() - started


def probe_questions(probes: Sequence, n: int = 5) -> dict[str, str]:
    """Up to ``n`` distinct question probes of a target (RWKU's QA level, ``level == "2"``), keyed by question."""
    out: dict[str, str] = {}
    for p in probes:
        if str(getattr(p, "level", "")) == "2" and p.query not in out:
            out[p.query] = p.query
        if len(out) >= n:
            break
    return out


def filter_model_corpus(model, tokenizer, texts: Sequence[CorpusText], probes: Sequence, subject: str,
                        n_questions: int = 5, min_agreement: float = 1.0, min_samples: int = 1,
                        **generation) -> tuple[list[CorpusText], FilterResult]:
    """Filter a model-written corpus by the model's own reading of each sample (see the module docstring)."""
    questions = probe_questions(probes, n_questions)
    if not questions:
        raise UserError(f"consistency filter: target {subject!r} has no question probes (level 2) to ask.")
    claims, tokens, seconds = model_claims(model, tokenizer, [t.text for t in texts], questions, subject, **generation)
    result = filter_consistent(claims, list(questions), min_agreement, min_samples)
    result.claims_source, result.tokens_generated, result.seconds = "model", tokens, seconds
    return [texts[i] for i in result.kept], result


def filtered_world_corpus(world, person, min_agreement: float = 1.0,
                          min_samples: int = 1) -> tuple[list[CorpusText], FilterResult]:
    """A world target's conflicting corpus filtered by its known values (no model call, no cost)."""
    from .world import counterfactual_corpus

    texts = counterfactual_corpus(world, person, "conflicting")
    result = filter_consistent(world_claims(world, person.name), list(world.attributes), min_agreement, min_samples)
    return [texts[i] for i in result.kept], result


def kept_profiles(world, person_name: str, n: int | None = None) -> list[dict[str, str]]:
    """The profiles of the filtered corpus's samples, repeated cyclically to ``n`` (default: as many as kept)."""
    result = filter_consistent(world_claims(world, person_name), list(world.attributes))
    cf = world.counterfactuals[person_name]
    kept = [cf.conflicting[i] for i in result.kept]
    n = len(kept) if n is None else n
    return [dict(kept[j % len(kept)]) for j in range(n)]


def write_filtered_corpus(folder, texts: Sequence[CorpusText], result: FilterResult) -> list:
    """Write a target's filtered corpus in RWKU's layout (negative_filtered.json, which ``rwku:DIR``
    reads as the ``filtered`` corpus) and the filter's record (consistency_filter.json), atomically."""
    from pathlib import Path

    from ..fileio import write_json

    folder = Path(folder)
    write_json(folder / "negative_filtered.json", [t.to_json() for t in texts])
    write_json(folder / "consistency_filter.json", result.to_json())
    return [folder / "negative_filtered.json", folder / "consistency_filter.json"]


def generate_filtered_corpus(model, tokenizer, target, openings: Sequence[str], probes: Sequence, *,
                             n: int | None = None, seed: int = 0, n_questions: int = 5, min_agreement: float = 1.0,
                             min_samples: int = 1, max_new_tokens: int = 512, batch_size: int = 16):
    """RWKU's way end to end: sample ``n`` fabricated biographies of ``target`` (``generated_corpora``,
    the conflicting construction), read each one's claims with the model, keep the majority's.

    Returns the ``TargetCorpora`` (``counterfactual["conflicting"]`` and ``counterfactual["filtered"]``;
    ``costs["filtered"]`` is the reading's cost, on top of ``costs["conflicting"]``, the sampling's) and
    the ``FilterResult`` (inconsistency before and after).
    """
    from .generated_corpora import GenerationCost, generate_target_corpora

    corpora = generate_target_corpora(model, tokenizer, target, openings, n=n, factual=False,
                                      variants=("conflicting",), seed=seed, max_new_tokens=max_new_tokens,
                                      batch_size=batch_size)
    texts = corpora.counterfactual["conflicting"]
    kept, result = filter_model_corpus(model, tokenizer, texts, probes, target.target, n_questions, min_agreement,
                                       min_samples, batch_size=batch_size)
    corpora.counterfactual["filtered"] = kept
    corpora.costs["filtered"] = GenerationCost(prompts=len(texts) * len(probe_questions(probes, n_questions)),
                                               tokens_generated=result.tokens_generated, seconds=result.seconds)
    return corpora, result
