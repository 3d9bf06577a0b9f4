"""Forgotten or hidden? Two attacks on an unlearned model's weights, as evaluation parts.

``quantization``: the model's linear layers (the output head excepted) quantized weight-only through
torchao, round-to-nearest, to each of ``AttackSettings.quantization_bits`` (8: int8 per output
channel, ``Int8WeightOnlyConfig``; 4 and other widths: ``IntxWeightOnlyConfig`` per group of
``group_size`` input weights), then the target's forget probes answered again. Records: one row per
probe and precision (``precision``: ``full``, ``int8``, ``int4``), RWKU's probe fields and score.

``relearning``: the target's forget probes split by fact (``split_probes``: probes that share a gold
answer are one fact; the facts are ordered by a seeded hash and the first half of them, at least
one, is the attack's; a probe whose answer is the target's name, a reverse query, is on neither side), the model fine-tuned on the attack half's facts (``relearning_corpus``: each
fill-in-the-blank sentence completed, as text, and each question with its answer, chat formatted)
through the one training loop (``training.loop.train``, plain SFT, constant learning rate, no
warm-up, so the checkpoint after k steps is exactly a k-step attack), and the held-out half answered
at step 0 (no attack) and after each of ``relearning_steps``. The attack's training items and the
evaluated probes never share a fact. Records: one row per held-out probe and step (``steps``).

Recovery (``recovery``) is how much of the Forget All that unlearning removed comes back:
    (attacked - after) / (before - after)
with ``before`` the Before model's score and ``after`` the unlearned model's, both unattacked
(quantization: all forget probes; relearning: the held-out probes). The suite computes it against
the Before unit's numbers and runs the same attacks on the Before model (and, for relearning, on the
base model that never knew the target) as references.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from ..benchmark.records import Probe, TrainExample
from ..errors import UserError
from .probes import evaluate_probes, probe_metrics


@dataclass
class AttackSettings:
    quantization_bits: tuple[int, ...] = (8, 4)
    group_size: int = 32  # per-group quantization below 8 bits (input weights per scale)
    relearning_steps: tuple[int, ...] = (1, 5, 20)
    relearning_lr: float = 1e-4  # the SFT rate of the default model (methods/presets.py)
    relearning_batch_size: int = 4
    split_seed: int = 0

    def validate(self, where: str = "eval.attacks") -> AttackSettings:
        bits = list(self.quantization_bits)
        if not bits or any(not _is_int(b) or not 2 <= b <= 8 for b in bits):
            raise UserError(f"{_option(where, 'quantization_bits')}: expected a non-empty list of widths from 2 to 8, got {bits!r}.")
        if not _is_int(self.group_size) or self.group_size < 1:
            raise UserError(f"{_option(where, 'group_size')}: expected a positive integer, got {self.group_size!r}.")
        steps = list(self.relearning_steps)
        if not steps or any(not _is_int(s) or s < 1 for s in steps):
            raise UserError(f"{_option(where, 'relearning_steps')}: expected a non-empty list of positive integers, got {steps!r}.")
        if isinstance(self.relearning_lr, bool) or not isinstance(self.relearning_lr, (int, float)) \
                or self.relearning_lr <= 0:
            raise UserError(f"{_option(where, 'relearning_lr')}: expected a positive number, got {self.relearning_lr!r}.")
        if not _is_int(self.relearning_batch_size) or self.relearning_batch_size < 1:
            raise UserError(f"{_option(where, 'relearning_batch_size')}: expected a positive integer, "
                            f"got {self.relearning_batch_size!r}.")
        self.quantization_bits = tuple(sorted(set(bits), reverse=True))
        self.relearning_steps = tuple(sorted(set(steps)))
        return self

    def to_json(self) -> dict:
        d = asdict(self)
        d["quantization_bits"] = list(self.quantization_bits)
        d["relearning_steps"] = list(self.relearning_steps)
        return d

    @classmethod
    def from_json(cls, obj: dict | None, where: str = "eval.attacks") -> AttackSettings:
        if obj is not None and not isinstance(obj, dict):
            raise UserError(f"{where}: expected a mapping of attack settings, got {obj!r}.")
        obj = dict(obj or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(obj) - set(known))
        if unknown:
            raise UserError(f"{where}: unknown setting(s) {', '.join(unknown)}; expected among {', '.join(known)}.")
        for k in ("quantization_bits", "relearning_steps"):
            if k in obj:
                if not isinstance(obj[k], (list, tuple)):
                    raise UserError(f"{where}.{k}: expected a list of integers, got {obj[k]!r}.")
                obj[k] = tuple(obj[k])
        return cls(**obj).validate(where)


def _option(where: str, key: str) -> str:
    """The name of a setting in an error: ``eval.attacks.relearning_steps`` or ``--relearning-steps``."""
    return "--" + key.replace("_", "-") if where == "--" else f"{where}.{key}"


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# ------------------------------------------------------------------------------------ recovery
def recovery(before: float | None, after: float | None, attacked: float | None) -> float | None:
    """(attacked - after) / (before - after): 0 = nothing came back, 1 = all of it; None when a number
    is missing or the unlearning removed nothing (before <= after)."""
    if before is None or after is None or attacked is None or before - after <= 0:
        return None
    return (attacked - after) / (before - after)


def recovery_interval(before: list[dict], after: list[dict], attacked: list[dict], all_rule: str = "pooled",
                      n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Recovery of Forget All with a paired probe-bootstrap percentile interval: the three record lists
    hold the same probes in the same order (the Before model's, the unlearned model's and the
    attacked model's answers); each replicate resamples probe positions and recomputes the three
    scores. Replicates where nothing was forgotten are dropped (``n`` counts those kept)."""
    if not (len(before) == len(after) == len(attacked)) or not before:
        raise ValueError("recovery_interval: the three record lists must hold the same probes (and some).")
    for a, b, c in zip(before, after, attacked):
        if not (a["prompt"] == b["prompt"] == c["prompt"]):
            raise ValueError("recovery_interval: the record lists are not aligned probe by probe.")

    def score(rows, idx):
        return probe_metrics([rows[i] for i in idx], all_rule=all_rule).get("All")

    n = len(before)
    whole = list(range(n))
    point = recovery(score(before, whole), score(after, whole), score(attacked, whole))
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n).tolist()
        r = recovery(score(before, idx), score(after, idx), score(attacked, idx))
        if r is not None:
            values.append(r)
    if not values:
        return {"recovery": point, "low": None, "high": None, "n": 0, "probes": n}
    low, high = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2]).tolist()
    return {"recovery": point, "low": low, "high": high, "n": len(values), "probes": n}


# -------------------------------------------------------------------------------- quantization
def quantize_model(model, bits: int, group_size: int = 32):
    """A weight-only round-to-nearest quantized copy of ``model`` (torchao; the output head and the
    embeddings keep their weights). A LoRA adapter is merged into the copy first."""
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    q = copy.deepcopy(model)
    if hasattr(q, "merge_and_unload"):
        q = q.merge_and_unload()
    if bits == 8:
        config = Int8WeightOnlyConfig()
    else:
        for name, module in q.named_modules():
            if isinstance(module, torch.nn.Linear) and _quantized(module, name) and module.in_features % group_size:
                raise UserError(f"eval.attacks.group_size {group_size}: {name} has {module.in_features} inputs, not a multiple; "
                                "choose a group size that divides the model's layer widths.")
        config = IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{bits}"), granularity=PerGroup(group_size))
    quantize_(q, config, filter_fn=_quantized)
    q.eval()
    return q


def _quantized(module, fqn: str) -> bool:
    return isinstance(module, torch.nn.Linear) and not re.search(r"(^|\.)lm_head$", fqn)


def quantization_attack(model, tokenizer, probes: list[Probe], settings: AttackSettings, *, icu_target=None,
                        batch_size: int = 32, max_new_tokens: int = 30, protocol=None, answers=None,
                        progress: str | None = None):
    """``(records, metrics, stats)``: the probes answered at full precision (``answers``: the
    evaluation's AnswerBook, when shared) and after each quantization; metrics per precision."""
    records, metrics = [], {}
    rows, m, stats = evaluate_probes(model, tokenizer, probes, icu_target, batch_size, max_new_tokens,
                                     return_stats=True, answers=answers, protocol=protocol)
    records += [{**r, "precision": "full"} for r in rows]
    metrics["full"] = m
    for bits in settings.quantization_bits:
        q = quantize_model(model, bits, settings.group_size)
        rows, m, s = evaluate_probes(q, tokenizer, probes, icu_target, batch_size, max_new_tokens,
                                     progress=f"{progress}: int{bits}" if progress else None,
                                     return_stats=True, protocol=protocol)
        del q
        records += [{**r, "precision": f"int{bits}"} for r in rows]
        metrics[f"int{bits}"] = m
        stats = stats + s
    return records, metrics, stats


# ---------------------------------------------------------------------------------- relearning
def _fact(answer: str) -> str:
    return " ".join(answer.lower().split())


def split_probes(probes: list[Probe], seed: int = 0) -> tuple[list[Probe], list[Probe]]:
    """``(attack, held_out)``: the probes split by fact (same gold answer = same fact), the facts in
    the order of a seeded hash; the first half of the facts (rounded down, at least one) goes to the
    attack. Deterministic, and no fact is on both sides. Probes whose answer is the target's own name
    (reverse queries) are on neither side. A target with one fact cannot be split."""
    # A probe whose answer is the target itself (a reverse query: "Who wrote X?") ties X's fact to the
    # name; it is on neither side.
    probes = [p for p in probes if _fact(p.answer) != _fact(p.subject)]
    facts = sorted({_fact(p.answer) for p in probes},
                   key=lambda f: hashlib.sha256(f"{seed}:{f}".encode()).hexdigest())
    if len(facts) < 2:
        raise UserError(f"relearning: target {probes[0].subject if probes else '?'} has {len(facts)} distinct "
                        "forget answer(s); the attack needs two facts or more to hold one out.")
    attack_facts = set(facts[:max(1, len(facts) // 2)])
    attack = [p for p in probes if _fact(p.answer) in attack_facts]
    held = [p for p in probes if _fact(p.answer) not in attack_facts]
    return attack, held


def relearning_corpus(tokenizer, probes: list[Probe]) -> list[TrainExample]:
    """The attack's training items from its probes: each fill-in-the-blank sentence completed with its
    answer (raw text), each question with its answer (chat prompt, answer + end of turn). The
    adversarial (level 3) probes are prompts about the same facts, not new text: left out."""
    from ..training.data import _eos
    from .prompts import chat_prompt

    out = []
    for p in probes:
        if p.level == "1" and "___" in p.query:
            out.append(TrainExample("", p.query.replace("___", p.answer, 1), p.subject))
        elif p.level == "2":
            out.append(TrainExample(chat_prompt(tokenizer, p.query), p.answer + _eos(tokenizer), p.subject))
    if not out:
        raise UserError("relearning: the attack half of the target's probes holds no fill-in-the-blank or question "
                        "probe to train on.")
    return out


def relearning_attack(model, tokenizer, probes: list[Probe], settings: AttackSettings, *, icu_target=None,
                      batch_size: int = 32, max_new_tokens: int = 30, protocol=None, answers=None,
                      progress: str | None = None):
    """``(records, metrics, stats)``: the held-out probes answered before the attack (step 0) and after
    each of ``settings.relearning_steps`` steps of SFT on the attack half; ``metrics["steps"][str(k)]``
    holds the probe metrics after k steps, ``metrics["split"]`` the facts on each side. ``answers``: the
    evaluation's AnswerBook of ``model``, when shared, answers step 0 (the untouched model)."""
    from ..methods import make_method
    from ..training.loop import train
    from ..training.settings import TrainSettings
    from .generation import GenerationStats

    attack, held = split_probes(probes, settings.split_seed)
    corpus = relearning_corpus(tokenizer, attack)
    steps = tuple(settings.relearning_steps)
    records: list[dict] = []
    by_step: dict[str, dict] = {}
    stats_box = [GenerationStats()]

    def on_checkpoint(step: int, m) -> None:
        rows, metrics, s = evaluate_probes(m, tokenizer, held, icu_target, batch_size, max_new_tokens,
                                           progress=f"{progress}: step {step}" if progress else None,
                                           return_stats=True, protocol=protocol,
                                           answers=answers if step == 0 else None)
        records.extend({**r, "steps": step} for r in rows)
        by_step[str(step)] = metrics
        stats_box[0] = stats_box[0] + s

    copy_ = copy.deepcopy(model)
    if hasattr(copy_, "merge_and_unload"):
        copy_ = copy_.merge_and_unload()
    method = make_method("sft", corpus_name="relearn")
    train_settings = TrainSettings(lr=float(settings.relearning_lr), max_steps=max(steps),
                                   batch_size=settings.relearning_batch_size, warmup_ratio=0.0, schedule="constant",
                                   seed=settings.split_seed, checkpoint_steps=(0,) + steps,
                                   max_forget_nll_per_token=None)
    result = train(copy_, tokenizer, method, {"relearn": corpus}, train_settings, on_checkpoint=on_checkpoint)
    del result, copy_
    metrics = {"steps": by_step,
               "split": {"attack_facts": sorted({_fact(p.answer) for p in attack}),
                         "held_out_facts": sorted({_fact(p.answer) for p in held}),
                         "attack_items": len(corpus), "held_out_probes": len(held)}}
    return records, metrics, stats_box[0]


# ----------------------------------------------------------------------- flat columns for summaries
def attack_columns(mean: dict) -> dict[str, float | None]:
    """The attack parts' Forget All numbers of an evaluation's (mean) metrics as flat columns:
    ``Q8 Forget All``, ``Q4 Forget All``, ``Relearn@0 Forget All`` (held-out probes, no attack),
    ``Relearn@5 Forget All``, ... (absent parts give no columns)."""
    out: dict[str, float | None] = {}
    q = mean.get("quantization") or {}
    for key, m in q.items():
        if key.startswith("int") and isinstance(m, dict):
            out[f"Q{key[3:]} Forget All"] = m.get("All")
    r = (mean.get("relearning") or {}).get("steps") or {}
    for k in sorted(r, key=int):
        if isinstance(r[k], dict):
            out[f"Relearn@{k} Forget All"] = r[k].get("All")
    return out


def attack_recoveries(before: dict, after: dict) -> dict[str, float | None]:
    """``Q8 recovery``, ``Relearn@5 recovery``, ...: ``recovery`` from the Before unit's flat metrics and
    the unlearned unit's (both holding ``Forget All`` and the ``attack_columns``)."""
    out: dict[str, float | None] = {}
    for col, value in after.items():
        m = re.fullmatch(r"Q(\d+) Forget All", col)
        if m:
            out[f"Q{m.group(1)} recovery"] = recovery(before.get("Forget All"), after.get("Forget All"), value)
        m = re.fullmatch(r"Relearn@(\d+) Forget All", col)
        if m and m.group(1) != "0":
            out[f"Relearn@{m.group(1)} recovery"] = recovery(before.get("Relearn@0 Forget All"),
                                                             after.get("Relearn@0 Forget All"), value)
    return out
