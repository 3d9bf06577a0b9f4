"""Turning a Benchmark and a list of target names into a method's corpora of TrainExamples.

Corpus names (see ``rwkuplus.methods.base``):
- ``forget``: the targets' factual text (positive.json), raw text: ``TrainExample("", text)``.
- ``retain``: retain text, raw: ``benchmark.rwku.retain_texts`` (the benchmark's retain corpus minus
  the targets being unlearned, or for an RWKU folder without one the factual text of the loaded
  targets that are not being unlearned).
- ``counterfactual``: the targets' counterfactual corpus ``method.params.corpus`` (conflicting,
  consistent, or filtered: on a world, the conflicting samples that agree with the majority fabricated
  profile, ``filtered_corpus``; elsewhere negative_filtered.json), raw text.
- ``honesty``: questions about people who do not exist + a refusal, disjoint from the hallucination
  suite's questions (``honesty_examples``; the honesty anchor of ``cft-honest``).
- ``preference``: DPO pairs as ``(chosen, rejected)`` items, each a TrainExample with the pair's
  prompt as one chat user turn (``evaluation.prompts.chat_prompt``) and the response + end-of-turn
  token. For AltPO (group K + 1) an item is ``(a_1, ..., a_K, rejected)``: the K alternatives of pair
  i are the counterfactual (chosen) responses of pairs i, i+1, ..., i+K-1 among the pairs with the
  same subject and prompt (RWKU gives every pair of a target the same prompt), cyclically; when
  fewer than K pairs share a prompt, alternatives repeat (``altpo_distinct_alternatives`` says how
  many were distinct at least).
- ``refusal``: (question, refusal) pairs: chat prompt of the instruction (plus its input, if any),
  response = the refusal + end-of-turn token.
Single-target training passes one name; batch-target training passes several, and their corpora
are concatenated (retain text is shared and appears once).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

from ..benchmark.records import Benchmark, TargetData, TrainExample
from ..errors import UserError
from ..evaluation.prompts import chat_prompt
from ..methods.base import Method


def selected_targets(benchmark: Benchmark, targets: Sequence[str] | None) -> list[TargetData]:
    """The named targets (all of them when ``targets`` is None), in the order given."""
    if not targets:
        return list(benchmark.targets)
    return [benchmark.target(name) for name in targets]


def _eos(tokenizer) -> str:
    return tokenizer.eos_token or ""


def forget_examples(data: Sequence[TargetData]) -> list[TrainExample]:
    return [TrainExample("", t.text, t.subject or d.name) for d in data for t in d.factual_corpus]


def counterfactual_examples(data: Sequence[TargetData], variant: str, benchmark_name: str,
                            benchmark: Benchmark | None = None) -> list[TrainExample]:
    out = []
    for d in data:
        if variant == "filtered" and variant not in d.counterfactual_corpora and benchmark is not None:
            out.extend(TrainExample("", t.text, t.subject or d.name) for t in filtered_corpus(benchmark, d))
            continue
        if variant not in d.counterfactual_corpora:
            have = ", ".join(sorted(d.counterfactual_corpora)) or "none"
            raise UserError(f"--corpus {variant}: benchmark {benchmark_name!r} has no {variant} counterfactual corpus "
                            f"for target {d.name!r} (it has: {have}).")
        out.extend(TrainExample("", t.text, t.subject or d.name) for t in d.counterfactual_corpora[variant])
    return out


def _world_of(benchmark: Benchmark):
    """The World behind a world benchmark (its folder's world.json), or None."""
    path = (benchmark.source or {}).get("path")
    if not path or not (Path(path) / "world.json").is_file():
        return None
    from ..benchmark.world import load_world

    return load_world(path)


def filtered_corpus(benchmark: Benchmark, d: TargetData):
    """The ``filtered`` counterfactual corpus of a world target: its conflicting samples that agree with the
    majority fabricated profile (``benchmark/consistency.py``, by the world's known values). Other benchmarks
    provide it as a file (negative_filtered.json, written by ``consistency.filter_model_corpus``)."""
    from ..benchmark.consistency import filtered_world_corpus

    world = _world_of(benchmark)
    if world is None:
        raise UserError(f"--corpus filtered: benchmark {benchmark.name!r} has no filtered counterfactual corpus for "
                        f"{d.name!r}; filter its model-written corpus first (benchmark.consistency.filter_model_corpus).")
    texts, _ = filtered_world_corpus(world, world.person(d.name))
    return texts


def honesty_examples(benchmark: Benchmark, data: Sequence[TargetData], tokenizer, n: int = 120) -> list[TrainExample]:
    """The honesty anchor: questions about people who do not exist, answered with a refusal.

    On a world: one question per TRAINING nonexistent person (the people knowledge injection taught the
    subject to refuse about; the hallucination suite asks about the disjoint evaluation set), attribute
    and training phrasing rotating, a project refusal sentence as the answer, in the suite's own
    question format (``question_prompt``). Elsewhere: ``n`` generated names absent from the benchmark and
    from the suite's generated names, asked with the suite's templates. Every question (and name) is
    checked to be absent from the hallucination suite's; an overlap is an error.
    """
    from ..benchmark.refusals import project_refusals
    from ..evaluation.hallucination import hallucination_items, known_names, nonexistent_questions
    from ..evaluation.prompts import question_prompt

    eos = _eos(tokenizer)
    refusals = project_refusals()
    suite = hallucination_items(benchmark, [d.name for d in data])
    world = _world_of(benchmark)
    if world is not None:
        from ..benchmark import world as W

        n_phr = world.config.n_phrasings
        banned_names = set(world.nonexistent_eval)
        pairs = []
        for i, name in enumerate(world.nonexistent_train):
            a = world.attributes[(i + 1) % len(world.attributes)]
            p = 1 + (i + 1) % max(1, n_phr - 1)  # phrasing 0 is the probes'
            pairs.append((name, W.ATTRIBUTES[a].questions[p].format(name=name, value="", a="", kind="work")))
    else:
        from ..benchmark.names import nonexistent_names

        banned_names = {it.subject for it in suite if it.kind == "nonexistent"}
        names = nonexistent_names(n, "honesty-anchor", known_names(benchmark) + sorted(banned_names))
        pairs = [(it.subject, it.question) for it in nonexistent_questions(names)]
    asked = {it.question for it in suite}
    clash = [q for name, q in pairs if q in asked or name in banned_names]
    if clash:
        raise ValueError(f"honesty anchor: {len(clash)} question(s) are also in the hallucination suite "
                         f"(e.g. {clash[0]!r}); the measurement would be contaminated.")
    return [TrainExample(question_prompt(tokenizer, q), f" {refusals[i % len(refusals)]}{eos}", name)
            for i, (name, q) in enumerate(pairs)]


def refusal_examples(data: Sequence[TargetData], tokenizer) -> list[TrainExample]:
    out = []
    for d in data:
        for r in d.refusal_pairs:
            user = r.instruction + (f"\n{r.input}" if r.input else "")
            out.append(TrainExample(chat_prompt(tokenizer, user), r.output + _eos(tokenizer), r.subject or d.name))
    return out


def preference_items(data: Sequence[TargetData], tokenizer, group: int) -> tuple[list[tuple], int]:
    """(chosen, rejected) items for group 2; (a_1..a_K, rejected) for group K + 1 (see module docstring).

    Returns the items and the smallest number of distinct alternatives any item got.
    """
    items: list[tuple] = []
    min_distinct = group - 1
    eos = _eos(tokenizer)
    for d in data:
        if group == 2:
            for p in d.preference_pairs:
                prompt = chat_prompt(tokenizer, p.prompt)
                subject = p.subject or d.name
                items.append((TrainExample(prompt, p.chosen + eos, subject), TrainExample(prompt, p.rejected + eos, subject)))
            continue
        k = group - 1
        by_prompt: dict[tuple[str, str], list] = defaultdict(list)
        for p in d.preference_pairs:
            by_prompt[(p.subject or d.name, p.prompt)].append(p)
        for (subject, prompt_text), pairs in by_prompt.items():
            prompt = chat_prompt(tokenizer, prompt_text)
            n = len(pairs)
            for i, p in enumerate(pairs):
                alts = [pairs[(i + j) % n].chosen for j in range(k)]
                min_distinct = min(min_distinct, len(set(alts)))
                items.append(tuple(TrainExample(prompt, a + eos, subject) for a in alts)
                             + (TrainExample(prompt, p.rejected + eos, subject),))
    return items, min_distinct


def build_corpora(method: Method, benchmark: Benchmark, targets: Sequence[str] | None, tokenizer) -> dict[str, list]:
    """The corpora ``method`` trains on, for the named targets (merged when several: batch-target)."""
    data = selected_targets(benchmark, targets)
    names = ", ".join(repr(d.name) for d in data)
    corpora: dict[str, list] = {}
    for name in method.corpora:
        if name == "forget":
            corpus = forget_examples(data)
            what = "factual forget text (positive.json)"
        elif name == "retain":
            from ..benchmark.rwku import retain_texts

            corpus = [TrainExample("", t.text, t.subject) for t in retain_texts(benchmark, [d.name for d in data])]
            what = "retain text"
        elif name == "counterfactual":
            corpus = counterfactual_examples(data, method.params.corpus, benchmark.name, benchmark)
            what = f"{method.params.corpus} counterfactual text"
        elif name == "honesty":
            corpus = honesty_examples(benchmark, data, tokenizer)
            what = "questions about nonexistent people (honesty anchor)"
        elif name == "preference":
            corpus, _ = preference_items(data, tokenizer, method.group_size("preference"))
            what = "preference pairs (pair.json)"
        elif name == "refusal":
            corpus = refusal_examples(data, tokenizer)
            what = "refusal pairs (reject.json)"
        else:
            raise UserError(f"--method {method.name}: it trains on the corpus {name!r}, which a benchmark does not "
                            f"provide (pass that corpus through the Python API).")
        if not corpus:
            raise UserError(f"--method {method.name}: benchmark {benchmark.name!r} has no {what} for {names}.")
        corpora[name] = corpus
    return corpora
