"""The evaluation entry point: RWKU's whole evaluation of one model on a benchmark, resumable.

``evaluate_model(model, tokenizer, benchmark, out_dir, ...)`` runs the chosen *parts* for each
target and writes, atomically, as each part finishes::

    OUT/metrics.json                         all targets, their mean, RWKU's row, model, benchmark, settings
    OUT/<i>_<Target_Name>/forget.jsonl       per-probe records (prompt, prediction, answer, score, ...)
    OUT/<i>_<Target_Name>/forget.json        the part's metrics and cost (its presence = part done)
    OUT/<i>_<Target_Name>/neighbor.jsonl|json, mia.jsonl|json, hallucination.jsonl|json
    OUT/<i>_<Target_Name>/metrics.json       the target's metrics and RWKU row
    OUT/shared/utility-<hash>/utility.<set>.jsonl, utility.json
                                             utility evaluated once for all targets that share the same
                                             items (the world); per target (in the target's folder)
                                             when items differ (RWKU) or under ICU

A part already finished in ``OUT`` by the same evaluation (same model, benchmark, ICU, protocol and
settings: the ``key`` in its JSON) is read back instead of recomputed; a part finished by a
*different* evaluation, another protocol included, is a UserError (results never get mixed).

The evaluation protocol (``protocol.py``: ``rwku``, RWKU's code, or ``world``) is part of the
settings; its label is recorded in every part's JSON, every target's ``metrics.json`` and
``OUT/metrics.json`` (``protocol``).

Parts are a registry (``PARTS``): RWKU's four (``DEFAULT_PARTS``) and ``hallucination`` (the RWKU+
hallucination suite for the target: unrelated answerable questions, nonexistent people, the forget
probes' honesty split; ``hallucination.evaluate_hallucination``), and the two attacks on the weights,
``quantization`` and ``relearning`` (``attacks.py``: the forget probes after weight quantization, the
held-out forget probes after a few steps of fine-tuning on the target's other facts); more with
``register_part``.
A part's ``evaluate(ctx) -> PartResult`` gets an ``EvalContext``; its optional ``share_key(ctx)``
returns a string when its result is the same for several targets (computed once, stored under
``OUT/shared/<part>-<key>``), or None for per-target work.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..benchmark.records import Benchmark, TargetData
from ..errors import UserError
from ..fileio import read_json, write_json, write_jsonl
from .answers import AnswerBook
from .attacks import AttackSettings, quantization_attack, relearning_attack
from .generation import GenerationStats
from .hallucination import evaluate_hallucination, hallucination_items
from .mia import evaluate_mia
from .probes import evaluate_probes, probe_prompts
from .protocol import RWKU, WORLD, Protocol
from .utility import UtilitySettings, evaluate_utility, utility_fingerprint

DEFAULT_PARTS = ("forget", "neighbor", "mia", "utility")

# RWKU's table: (column, part, metric key).
RWKU_COLUMNS = (
    ("Forget FB", "forget", "FB"), ("Forget QA", "forget", "QA"), ("Forget AA", "forget", "AA"),
    ("Forget All", "forget", "All"),
    ("Neighbor FB", "neighbor", "FB"), ("Neighbor QA", "neighbor", "QA"), ("Neighbor All", "neighbor", "All"),
    ("MIA FM", "mia", "FM"), ("MIA RM", "mia", "RM"),
    ("Gen", "utility", "Gen"), ("Rea", "utility", "Rea"), ("Tru", "utility", "Tru"), ("Fac", "utility", "Fac"),
    ("Flu", "utility", "Flu"),
)


@dataclass
class EvalSettings:
    """How the evaluation runs: batch sizes, MIA's k, and the protocol (``protocol.Protocol``) that
    holds every rule and token limit defining the numbers. RWKU's protocol by default;
    ``world_defaults()`` gives the world's (``protocol.WORLD``)."""

    batch_size: int = 32
    mia_k: float = 0.2
    mia_batch_size: int = 8
    protocol: Protocol = RWKU
    icu_utility: bool = True  # under ICU, put the instruction before utility prompts too (RWKU did)
    # The hallucination part's spillover domains (hallucination.py): the neighbor QA probes as questions
    # (related) and how many packaged general-knowledge questions (unrelated; None = all). Off by default.
    related_questions: bool = False
    unrelated_items: int | None = 0
    # The attack parts' settings (attacks.AttackSettings; None = its defaults, left out of the key).
    attacks: AttackSettings | None = None

    @property
    def probe_max_new_tokens(self) -> int:
        """The probes' token limit (the protocol's), also the hallucination questions'."""
        return self.protocol.probe_max_new_tokens

    @property
    def utility(self) -> UtilitySettings:
        return UtilitySettings(batch_size=self.batch_size, protocol=self.protocol)

    def to_json(self) -> dict:
        return {"batch_size": self.batch_size, "mia_k": self.mia_k, "mia_batch_size": self.mia_batch_size,
                "icu_utility": self.icu_utility, "protocol": self.protocol.to_json(),
                "related_questions": self.related_questions, "unrelated_items": self.unrelated_items,
                **({"attacks": self.attacks.to_json()} if self.attacks is not None else {})}

    @classmethod
    def world_defaults(cls, **overrides) -> EvalSettings:
        """Settings for the offline world on a CPU and a small model: the ``world`` protocol
        (``protocol.WORLD``, whose ``departures`` list each adaptation and its reason)."""
        return cls(**{"protocol": WORLD, **overrides})


@dataclass
class EvalContext:
    model: object
    tokenizer: object
    benchmark: Benchmark
    target: TargetData
    icu_target: str | None
    settings: EvalSettings
    progress: bool = False
    memo: dict = field(default_factory=dict)  # shared by the targets of one evaluate_model call

    def desc(self, what: str) -> str | None:
        return f"{self.target.name}: {what}" if self.progress else None


@dataclass
class PartResult:
    """``records``: file stem -> rows (one JSONL file each); ``metrics``: the part's numbers."""

    records: dict[str, list[dict]]
    metrics: dict
    generation: GenerationStats = field(default_factory=GenerationStats)


@dataclass(frozen=True)
class Part:
    """``prompts(ctx)``, when given: the prompts the part answers from the evaluation's ``AnswerBook``
    (the probe protocol); the runner answers those of several targets' pending parts in one call."""

    name: str
    evaluate: Callable[[EvalContext], PartResult]
    share_key: Callable[[EvalContext], str | None] | None = None
    prompts: Callable[[EvalContext], list[str]] | None = None


# The runner answers the probe prompts of the next targets' pending parts together, this many batches
# at a time (full batches, fewer decoding steps; an interruption loses at most one such call).
PREFETCH_BATCHES = 8


def _book(ctx: EvalContext) -> AnswerBook:
    """This evaluation's greedy answers (newline stop, the probes' token limit) by prompt: a prompt
    several parts or targets ask (the forget probes again in the honesty split, the questions every
    target shares) is generated once."""
    p = ctx.settings.protocol
    return ctx.memo.setdefault("answers", AnswerBook(ctx.model, ctx.tokenizer, p.probe_max_new_tokens,
                                                     ctx.settings.batch_size, p.probe_stop_at_newline,
                                                     p.probe_stop_tokens))


def _forget_prompts(ctx: EvalContext) -> list[str]:
    return probe_prompts(ctx.tokenizer, ctx.target.forget_probes, ctx.icu_target)


def _forget(ctx: EvalContext) -> PartResult:
    records, metrics, stats = evaluate_probes(
        ctx.model, ctx.tokenizer, ctx.target.forget_probes, ctx.icu_target, ctx.settings.batch_size,
        ctx.settings.probe_max_new_tokens, progress=ctx.desc("forget"), return_stats=True, answers=_book(ctx),
        protocol=ctx.settings.protocol)
    return PartResult({"forget": records}, metrics, stats)


def _neighbor_prompts(ctx: EvalContext) -> list[str]:
    return probe_prompts(ctx.tokenizer, ctx.target.neighbor_probes, ctx.icu_target)


def _neighbor(ctx: EvalContext) -> PartResult:
    records, metrics, stats = evaluate_probes(
        ctx.model, ctx.tokenizer, ctx.target.neighbor_probes, ctx.icu_target, ctx.settings.batch_size,
        ctx.settings.probe_max_new_tokens, progress=ctx.desc("neighbor"), return_stats=True, answers=_book(ctx),
        protocol=ctx.settings.protocol)
    metrics.pop("AA", None)
    return PartResult({"neighbor": records}, metrics, stats)


def _mia(ctx: EvalContext) -> PartResult:
    records, metrics = evaluate_mia(
        ctx.model, ctx.tokenizer, ctx.target.forget_mia, ctx.target.retain_mia, ctx.icu_target,
        k=ctx.settings.mia_k, batch_size=ctx.settings.mia_batch_size, progress=ctx.desc("mia"))
    return PartResult({"mia": records}, metrics)


def _utility_icu(ctx: EvalContext) -> str | None:
    return ctx.icu_target if ctx.settings.icu_utility else None


def _utility(ctx: EvalContext) -> PartResult:
    records, metrics, stats = evaluate_utility(
        ctx.model, ctx.tokenizer, ctx.target.utility, _utility_icu(ctx), ctx.settings.utility, progress=ctx.progress)
    return PartResult({f"utility.{name}": rows for name, rows in records.items()}, metrics, stats)


def _utility_share(ctx: EvalContext) -> str | None:
    if _utility_icu(ctx) is not None:
        return None
    return utility_fingerprint(ctx.target.utility)


def _hallucination_prompts(ctx: EvalContext) -> list[str]:
    items = hallucination_items(ctx.benchmark, [ctx.target.name], n_unrelated=ctx.settings.unrelated_items,
                                related=ctx.settings.related_questions)
    return [it.prompt(ctx.tokenizer, ctx.icu_target) for it in items]


def _hallucination(ctx: EvalContext) -> PartResult:
    # The probes' token limit: the honesty split reuses the forget answers.
    records, metrics, stats = evaluate_hallucination(
        ctx.model, ctx.tokenizer, ctx.benchmark, [ctx.target.name], icu_target=ctx.icu_target,
        batch_size=ctx.settings.batch_size, max_new_tokens=ctx.settings.probe_max_new_tokens,
        progress=ctx.desc("hallucination"), return_stats=True, answers=_book(ctx),
        n_unrelated=ctx.settings.unrelated_items, related=ctx.settings.related_questions)
    return PartResult({"hallucination": records}, metrics, stats)


def _attack_settings(ctx: EvalContext) -> AttackSettings:
    return ctx.settings.attacks or AttackSettings()


def _quantization(ctx: EvalContext) -> PartResult:
    """The forget probes after weight quantization (attacks.py); the full-precision answers from the book."""
    records, metrics, stats = quantization_attack(
        ctx.model, ctx.tokenizer, ctx.target.forget_probes, _attack_settings(ctx), icu_target=ctx.icu_target,
        batch_size=ctx.settings.batch_size, max_new_tokens=ctx.settings.probe_max_new_tokens,
        protocol=ctx.settings.protocol, answers=_book(ctx), progress=ctx.desc("quantization"))
    return PartResult({"quantization": records}, metrics, stats)


def _relearning(ctx: EvalContext) -> PartResult:
    """The held-out forget probes after a few steps of fine-tuning on the other facts (attacks.py)."""
    records, metrics, stats = relearning_attack(
        ctx.model, ctx.tokenizer, ctx.target.forget_probes, _attack_settings(ctx), icu_target=ctx.icu_target,
        batch_size=ctx.settings.batch_size, max_new_tokens=ctx.settings.probe_max_new_tokens,
        protocol=ctx.settings.protocol, answers=_book(ctx), progress=ctx.desc("relearning"))
    return PartResult({"relearning": records}, metrics, stats)


PARTS: dict[str, Part] = {
    "forget": Part("forget", _forget, prompts=_forget_prompts),
    "neighbor": Part("neighbor", _neighbor, prompts=_neighbor_prompts),
    "mia": Part("mia", _mia),
    "utility": Part("utility", _utility, _utility_share),
    "hallucination": Part("hallucination", _hallucination, prompts=_hallucination_prompts),
    "quantization": Part("quantization", _quantization),
    "relearning": Part("relearning", _relearning),
}


def register_part(part: Part) -> None:
    """Add (or replace) an evaluation part, e.g. ``Part("my_probe", fn, share_key)``."""
    PARTS[part.name] = part


def parse_parts(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"forget,mia"`` -> ``("forget", "mia")``, checked against the registry."""
    names = [p.strip() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    unknown = [p for p in names if p not in PARTS]
    if unknown or not names:
        raise UserError(f"--parts: expected a comma-separated list of {', '.join(PARTS)}; got {','.join(names) or 'nothing'}.")
    return tuple(dict.fromkeys(names))


def target_folder_name(target: TargetData, position: int) -> str:
    """RWKU's ``<index>_<Name_with_underscores>`` (the index is 1-based), made safe as a folder name."""
    index = target.target.index if target.target.index is not None else position
    name = re.sub(r"[\s/\\]+", "_", target.name.strip())
    name = re.sub(r'[<>:"|?*\x00-\x1f]', "", name) or "target"
    return f"{index}_{name}"


def _fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _mean_tree(trees: list[dict]) -> dict:
    """Mean of every numeric leaf over the trees that have it (None and NaN ignored); a text leaf
    (``Flu_tokenizer``) is kept when every tree has the same one."""
    out: dict = {}
    keys = list(dict.fromkeys(k for t in trees for k in t))
    for k in keys:
        vals = [t[k] for t in trees if k in t]
        if all(isinstance(v, dict) for v in vals):
            out[k] = _mean_tree(vals)
            continue
        if all(isinstance(v, str) for v in vals):
            out[k] = vals[0] if len(set(vals)) == 1 else None
            continue
        nums = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)]
        bools = [float(v) for v in vals if isinstance(v, bool)]
        nums = nums or bools
        out[k] = sum(nums) / len(nums) if nums else None
    return out


def rwku_row(metrics: dict) -> dict[str, float | None]:
    """RWKU's table columns from a target's (or the mean) nested metrics."""
    return {col: metrics.get(part, {}).get(key) for col, part, key in RWKU_COLUMNS}


def format_table(rows: dict[str, dict[str, float | None]]) -> str:
    """A plain-text table: one line per row name, RWKU's columns, one decimal."""
    cols = [c for c, _, _ in RWKU_COLUMNS]
    name_w = max([len("Model")] + [len(n) for n in rows])
    widths = [max(len(c), 6) for c in cols]
    lines = ["  ".join([f"{'Model':<{name_w}}"] + [f"{c:>{w}}" for c, w in zip(cols, widths)])]
    for name, row in rows.items():
        cells = [f"{'-' if row.get(c) is None else f'{row[c]:.1f}':>{w}}" for c, w in zip(cols, widths)]
        lines.append("  ".join([f"{name:<{name_w}}"] + cells))
    return "\n".join(lines)


def _finished(part: Part, folder: Path, key: str, protocol: str) -> dict | None:
    """The part's summary when this same evaluation finished it in ``folder``, None when it has not
    run there; a UserError when a different evaluation's result is there."""
    summary_path = folder / f"{part.name}.json"
    if not summary_path.exists():
        return None
    summary = read_json(summary_path)
    if summary.get("key") == key:
        return summary
    theirs = summary.get("protocol")
    if theirs is None:
        raise UserError(f"{summary_path}: holds a result made before evaluation protocols were recorded, not one "
                        f"under protocol {protocol!r}; use another --out folder or delete this one.")
    if theirs != protocol:
        raise UserError(f"{summary_path}: holds a result of the evaluation protocol {theirs!r}, not {protocol!r}; "
                        f"use another --out folder, delete this one, or pass --protocol {theirs}.")
    raise UserError(
        f"{summary_path}: holds a result of a different evaluation (other model, benchmark, ICU or settings); "
        "use another --out folder or delete this one."
    )


def _run_part(part: Part, ctx: EvalContext, folder: Path, key: str) -> dict:
    """Run one part (or read it back when already done by the same evaluation); returns its summary."""
    protocol = ctx.settings.protocol.label
    summary = _finished(part, folder, key, protocol)
    if summary is not None:
        return summary
    start = time.perf_counter()
    result = part.evaluate(ctx)
    for stem, rows in result.records.items():
        write_jsonl(folder / f"{stem}.jsonl", rows)
    summary = {
        "part": part.name, "key": key, "protocol": protocol, "metrics": result.metrics,
        "files": sorted(f"{stem}.jsonl" for stem in result.records),
        "records": {stem: len(rows) for stem, rows in result.records.items()},
        "generation": result.generation.to_json(), "seconds": time.perf_counter() - start,
    }
    write_json(folder / f"{part.name}.json", summary)
    return summary


def _prefetch(plans: list, parts: Sequence[str], progress: bool) -> None:
    """Answer the probe prompts of the first target's pending parts, together with those of the
    targets after it, up to ``PREFETCH_BATCHES`` batches, in one call (nothing when already answered;
    a folder holding another evaluation's part is a UserError before anything is generated)."""
    wanted: list[str] = []
    count = 0
    for i, (_, _, ctx, where) in enumerate(plans):
        book = _book(ctx)
        label = ctx.settings.protocol.label
        mine = [p for name in parts if PARTS[name].prompts and _finished(PARTS[name], *where[name], label) is None
                for p in PARTS[name].prompts(ctx) if p not in book]
        if i == 0 and not mine:
            return
        if i > 0 and len(wanted) + len(mine) > PREFETCH_BATCHES * ctx.settings.batch_size:
            break
        wanted += mine
        count += 1
    _book(plans[0][2]).fill(wanted, f"probes of {count} target{'s' * (count > 1)}" if progress else None)


def evaluate_model(
    model,
    tokenizer,
    benchmark: Benchmark,
    out_dir: str | Path,
    targets: Sequence[str] | None = None,
    icu: bool = False,
    parts: Sequence[str] = DEFAULT_PARTS,
    settings: EvalSettings | None = None,
    model_info: dict | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate ``model`` on ``benchmark`` (all targets or the named ones); returns what ``OUT/metrics.json`` holds.

    ``model_info`` (spec, fingerprint, adapter) is recorded and keys the resumable parts: pass it
    so that a folder cannot silently mix two models' results.
    """
    settings = settings or EvalSettings()
    parts = parse_parts(parts)
    out = Path(out_dir)
    chosen = [benchmark.target(n) for n in targets] if targets else list(benchmark.targets)
    if not chosen:
        raise UserError("--benchmark: the benchmark has no targets to evaluate.")
    positions = {id(t): i + 1 for i, t in enumerate(benchmark.targets)}
    base_key = {"model": model_info or {}, "benchmark": benchmark.source or {"name": benchmark.name},
                "icu": icu, "settings": settings.to_json()}
    memo: dict = {}
    plans = []  # per target: its context and, per part, (folder, key)
    for target in chosen:
        folder = out / target_folder_name(target, positions.get(id(target), 0))
        ctx = EvalContext(model, tokenizer, benchmark, target, target.name if icu else None, settings, progress, memo)
        where = {}
        for name in parts:
            part = PARTS[name]
            share = part.share_key(ctx) if part.share_key else None
            if share is None:
                where[name] = folder, _fingerprint({**base_key, "part": name, "target": target.name})
            else:
                where[name] = out / "shared" / f"{name}-{share}", _fingerprint({**base_key, "part": name, "share": share})
        plans.append((target, folder, ctx, where))
    per_target: dict[str, dict] = {}
    cost = GenerationStats()
    seconds = 0.0
    ahead = 0.0  # wall time of answering probes ahead of their parts (in this call)
    counted: set[tuple[Path, str]] = set()  # shared parts count once in the cost
    for position, (target, folder, ctx, where) in enumerate(plans):
        start = time.perf_counter()
        _prefetch(plans[position:], parts, progress)
        ahead += time.perf_counter() - start
        metrics: dict = {}
        for name in parts:
            part_folder, key = where[name]
            summary = _run_part(PARTS[name], ctx, part_folder, key)
            metrics[name] = summary["metrics"]
            if (part_folder, name) not in counted:
                counted.add((part_folder, name))
                cost = cost + GenerationStats(**summary.get("generation", {}))
                seconds += summary.get("seconds", 0.0)
        per_target[target.name] = metrics
        write_json(folder / "metrics.json", {"target": target.name, "protocol": settings.protocol.label,
                                             "metrics": metrics, "rwku": rwku_row(metrics)})
    mean = _mean_tree(list(per_target.values()))
    result = {
        "model": model_info or {},
        "benchmark": benchmark.source or {"name": benchmark.name},
        "icu": icu,
        "protocol": settings.protocol.label,
        "parts": list(parts),
        "settings": settings.to_json(),
        "targets": per_target,
        "mean": mean,
        "rwku": rwku_row(mean),
        # part_seconds: wall time inside the parts (as recorded when each ran); the probes answered
        # ahead of their parts in this call took prefetch_seconds (their tokens are in the parts' generation)
        "cost": {"generation": cost.to_json(), "part_seconds": seconds, "prefetch_seconds": ahead},
    }
    write_json(out / "metrics.json", result)
    return result
