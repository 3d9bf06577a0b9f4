"""Glue: which examples to diagnose, with which loss, and the files a diagnosis writes.

- ``conflict_probe(model, tokenizer, examples, ...)``: the measures for a list of TrainExamples, as a
  JSON-ready dict; ``ConflictTracker`` calls it from the training loop's ``on_checkpoint(step,
  model)`` and keeps the curve (optionally written to a JSONL file after every checkpoint).
- ``diagnostic_data(...)``: a target's examples for a method. ``unit="text"`` takes the method's own
  primary training corpus (what it really trains on: whole counterfactual biographies for CFT-SFT);
  ``unit="attribute"`` (world benchmarks, counterfactual or forget corpus) builds one QA item per
  (sample, attribute): a training phrasing of the attribute's question and the sample's value for it,
  labelled by the attribute, so that pairs answering the same question can be told apart.
- ``diagnose_target(...)``: Gram, measures, ``conflict.json`` and ``cosine.png`` for one target.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..benchmark.records import Benchmark, TargetData, TrainExample
from ..errors import UserError
from ..evaluation.prompts import question_prompt
from ..fileio import write_json, write_jsonl
from ..sequences import encode_examples
from .conflict import conflict_report, cosine_matrix
from .gradients import GradientGram, LossFn, LossPart, gradient_gram, nll_loss
from .heatmap import plot_cosine_heatmap
from .params import ParameterSet, select_parameters

UNITS = ("auto", "text", "attribute")


# ----------------------------------------------------------------------------------- probe in training
def conflict_probe(model, tokenizer, examples: Sequence[TrainExample], loss_fn: LossFn = nll_loss,
                   params: str | ParameterSet = "trainable", project: int | None = None,
                   groups: Sequence[str] | None = None, retain_examples: Sequence[TrainExample] | None = None,
                   retain_loss_fn: LossFn = nll_loss, max_length: int = 512, seed: int = 0, batch_size: int = 32,
                   layer_block: int = 1, with_matrix: bool = False) -> dict:
    """Knowledge-conflict measures of ``examples`` under ``model`` now (JSON-ready).

    ``groups`` labels each example (e.g. its attribute) for the same-label measures. With
    ``retain_examples`` the Gram is joint and ``forget_retain_alignment`` is reported.
    """
    parts = [LossPart(encode_examples(tokenizer, list(examples), max_length), loss_fn)]
    roles = None
    labels = list(groups) if groups is not None else None
    if retain_examples:
        parts.append(LossPart(encode_examples(tokenizer, list(retain_examples), max_length), retain_loss_fn))
        roles = ["forget"] * len(examples) + ["retain"] * len(retain_examples)
        if labels is not None:
            labels = labels + ["retain"] * len(retain_examples)
    pset = params if isinstance(params, ParameterSet) else select_parameters(model, params)
    gram = gradient_gram(model, parts, pset, project=project, seed=seed, batch_size=batch_size)
    return summarize(gram, pset, labels, roles, layer_block, with_matrix)


def summarize(gram: GradientGram, pset: ParameterSet, labels, roles, layer_block: int = 1,
              with_matrix: bool = False) -> dict:
    out = {
        "parameters": pset.describe(),
        "engine": gram.describe(),
        "measures": conflict_report(gram.gram, gram.groups, labels, roles, layer_block),
    }
    if with_matrix:
        out["norms"] = [float(x) for x in gram.norms]
        out["cosine"] = np.round(cosine_matrix(gram.gram), 5).tolist()
    return out


class ConflictTracker:
    """``on_checkpoint(step, model)`` for the training loop: probe the same examples at every checkpoint.

    ``records`` holds ``{"step": s, ...conflict_probe output}``; with ``path`` the whole curve is
    rewritten (atomically) as JSONL after each checkpoint. The projection seed stays fixed, so
    projected values are comparable along training.
    """

    def __init__(self, tokenizer, examples: Sequence[TrainExample], path: str | os.PathLike | None = None,
                 **probe_options):
        self.tokenizer = tokenizer
        self.examples = list(examples)
        self.path = Path(path) if path else None
        self.options = probe_options
        self.records: list[dict] = []

    def __call__(self, step: int, model) -> None:
        record = {"step": int(step), **conflict_probe(model, self.tokenizer, self.examples, **self.options)}
        self.records.append(record)
        if self.path is not None:
            write_jsonl(self.path, self.records)


# ----------------------------------------------------------------------------------- what to diagnose
@dataclass
class DiagnosticData:
    """The loss parts of one diagnosis, and per item: a label, a short name and a role."""

    parts: list[LossPart]
    labels: list[str] | None
    names: list[str]
    roles: list[str] | None
    unit: str
    corpus: str


def method_loss(method, corpus: str, reference=None) -> LossFn:
    """Per-item loss of ``method`` on one corpus: its part(s) computed from that corpus alone.

    When the corpus yields several parts they are combined with the method's part weights, i.e.
    the method's own objective restricted to that corpus, per item.
    """
    weights = method.part_weights()

    def loss(model, batch):
        parts = method.loss_parts(model, {corpus: batch}, reference)
        if not parts:
            raise ValueError(f"{method.name}: no loss part comes from the corpus {corpus!r}.")
        total = None
        for name, value in parts.items():
            term = weights.get(name, 1.0) * value
            total = term if total is None else total + term
        return total

    return loss


def _items(corpus: Sequence) -> list[tuple]:
    return [x if isinstance(x, tuple) else (x,) for x in corpus]


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def attribute_items(benchmark: Benchmark, target: TargetData, corpus: str, variant: str, tokenizer,
                    max_examples: int) -> tuple[list[TrainExample], list[str]]:
    """One QA item per (sample, attribute) from the world behind ``benchmark``, labelled by attribute."""
    from ..benchmark import world as W

    path = (benchmark.source or {}).get("path")
    if not path or not (Path(path) / "world.json").is_file():
        raise UserError("--unit attribute: needs a world benchmark (its folder holds world.json); use --unit text.")
    world = W.load_world(path)
    try:
        person = world.person(target.name)
    except KeyError:
        raise UserError(f"--targets: {target.name!r} is not a person of this world.") from None
    if corpus == "counterfactual":
        cf = world.counterfactuals[target.name]
        if variant == "filtered":  # the kept samples' profiles, cycled to the corpus's size
            from ..benchmark.consistency import kept_profiles

            profiles = kept_profiles(world, target.name, len(cf.conflicting))
        else:
            profiles = cf.conflicting if variant == "conflicting" else [cf.consistent] * len(cf.conflicting)
    elif corpus == "forget":
        profiles = [dict(person.values)] * world.config.n_counterfactual
    else:
        raise UserError(f"--unit attribute: the method trains on {corpus!r} text; attribute items exist for "
                        "counterfactual and forget corpora only (use --unit text).")
    attributes = list(world.attributes)
    samples = max(1, min(len(profiles), max_examples // max(1, len(attributes))))
    eos = tokenizer.eos_token or ""
    examples, labels = [], []
    for a in attributes:
        phrasings = len(W.ATTRIBUTES[a].questions) - 1  # questions[0] is held out for the probes
        for j in range(samples):
            q = W.question(person, a, 1 + j % max(1, phrasings))
            answer = W.answer_sentence(person, a, profiles[j][a])
            examples.append(TrainExample(question_prompt(tokenizer, q), " " + answer + eos, target.name))
            labels.append(a)
    return examples, labels


def diagnostic_data(benchmark: Benchmark, target: TargetData, method, tokenizer, unit: str = "auto",
                    max_examples: int = 64, retain: int = 0, max_length: int = 512,
                    reference=None) -> DiagnosticData:
    """The examples to diagnose for ``target`` under ``method`` (see the module docstring)."""
    from ..training.data import build_corpora

    if unit not in UNITS:
        raise UserError(f"--unit: expected one of {', '.join(UNITS)}; got {unit!r}.")
    if max_examples < 2:
        raise UserError(f"--max-examples: expected at least 2 (measures are over pairs), got {max_examples}.")
    if not method.corpora:
        raise UserError(f"--method {method.name}: it does not train, so it has no gradients to diagnose.")
    corpus = method.corpora[0]
    is_world = (benchmark.source or {}).get("kind") == "world"
    if unit == "auto":
        unit = "attribute" if is_world and corpus in ("counterfactual", "forget") else "text"
    variant = getattr(method.params, "corpus", "conflicting")
    loss = method_loss(method, corpus, reference)
    if unit == "attribute":
        examples, labels = attribute_items(benchmark, target, corpus, variant, tokenizer, max_examples)
        items = [(e,) for e in examples]
    else:
        items = _items(build_corpora(method, benchmark, [target.name], tokenizer)[corpus])[:max_examples]
        labels = None
    group = len(items[0])
    batch = method.encode(tokenizer, items, list(range(len(items))), max_length)
    parts = [LossPart(batch, loss, group_size=group)]
    names = [_short(it[0].response) for it in items]
    roles = None
    if retain > 0:
        from ..benchmark.rwku import retain_texts

        texts = retain_texts(benchmark, [target.name])[:retain]
        if not texts:
            raise UserError(f"--retain: benchmark {benchmark.name!r} has no retain text for {target.name!r}.")
        retain_items = [(TrainExample("", t.text, t.subject),) for t in texts]
        retain_loss = method_loss(method, "retain", reference) if "retain" in method.corpora else nll_loss
        retain_batch = encode_examples(tokenizer, [it[0] for it in retain_items], max_length)
        retain_batch["index"] = torch.arange(len(retain_items))
        retain_batch["group"] = 1
        parts.append(LossPart(retain_batch, retain_loss))
        roles = ["forget"] * len(items) + ["retain"] * len(retain_items)
        names += [_short(it[0].response) for it in retain_items]
        if labels is not None:
            labels = labels + ["retain"] * len(retain_items)
    return DiagnosticData(parts, labels, names, roles, unit, corpus)


def make_reference(method, model):
    """pi_ref for methods that need one: the model without its adapter (LoRA), else a frozen copy."""
    if not method.needs_reference:
        return None
    from ..methods.base import Reference

    if hasattr(model, "disable_adapter"):
        return Reference.adapter(model)
    return Reference.frozen(copy.deepcopy(model))


# ------------------------------------------------------------------------------------------- outputs
def diagnose_target(model, data: DiagnosticData, out_dir: str | os.PathLike, params: str | ParameterSet = "auto",
                    project: int | None = None, seed: int = 0, batch_size: int = 32, layer_block: int = 1,
                    title: str = "", info: dict | None = None) -> dict:
    """Compute the Gram and the measures; write ``conflict.json`` and ``cosine.png`` under ``out_dir``."""
    out_dir = Path(out_dir)
    pset = params if isinstance(params, ParameterSet) else select_parameters(model, params)
    gram = gradient_gram(model, data.parts, pset, project=project, seed=seed, batch_size=batch_size)
    summary = summarize(gram, pset, data.labels, data.roles, layer_block, with_matrix=True)
    result = {**(info or {}), "unit": data.unit, "corpus": data.corpus, "labels": data.labels,
              "roles": data.roles, "names": data.names, **summary}
    heat_labels = data.labels
    if heat_labels is None and data.roles is not None:
        heat_labels = data.roles
    plot_cosine_heatmap(summary["cosine"], out_dir / "cosine.png", heat_labels, data.names, title)
    write_json(out_dir / "conflict.json", result)
    return result


def headline(result: dict) -> dict:
    """The few numbers printed per target: over all pairs and, when labelled, over same-label pairs."""
    m = result["measures"]["overall"]
    m = m.get("forget", m)
    out = {"n": m["n"], "CR": m["all_pairs"]["conflict_ratio"], "cos": m["all_pairs"]["mean_cosine"],
           "cancel": m["cancellation_ratio"], "coherence": m["coherence"]}
    if "same_label_pairs" in m:
        out["CR_same"] = m["same_label_pairs"]["conflict_ratio"]
        out["cos_same"] = m["same_label_pairs"]["mean_cosine"]
    if "forget_retain_alignment" in result["measures"]["overall"]:
        out["align"] = result["measures"]["overall"]["forget_retain_alignment"]
    return out


def target_folder(index: int, name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name.replace(" ", "_"))
    return f"{index}_{safe}"

