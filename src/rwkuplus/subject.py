"""The subject model: the default model after knowledge injection of the synthetic world.

SmolLM2 does not know the world's fictional people, so a one-time fine-tune (the one training loop)
teaches it the world's facts about targets, neighbor entities and retained people (in training
phrasings; the evaluation phrasing is held out) and to say it does not know when asked about people
who are not in the world. To keep the base model's general ability, the injection corpus also
replays the base model's answers to a fixed list of everyday prompts (``data/replay_prompts.txt``),
trained not on the NLL of its greedy tokens but on ``replay_weight`` x KL(base || model) to the base
model's top-``replay_top_k`` distribution at each answer token (self-distillation, ``SFT.soft_targets``).

The result is cached under ``$RWKUPLUS_HOME/subjects/<key>/`` (safetensors + tokenizer +
``subject.json``), keyed by a hash of model fingerprint + world configuration + injection settings + dtype.
``subject.json`` holds the scores before and after injection, the thresholds and whether each
is met, the time and the tokens trained. This model is the "Before" row of every experiment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from .benchmark.records import TrainExample
from .benchmark.world import (
    World, WorldConfig, forget_probes, generate_world, injection_checks, injection_corpus, neighbor_probes,
)
from .errors import UserError
from .fileio import read_json, write_json
from .models import DEFAULT_MODEL, LoraSettings, dtype_name, load_model, resolve_model, save_model
from .integrity import check_folder
from .paths import home
from .progress import activity

log = logging.getLogger(__name__)

INJECTION_VERSION = 5  # 2: replay in the question format, length-grouped batches; 3: replay distilled (KL); 4: eager attention while training on CPUs; 5: retained people in cloze form too (retained_cloze)
# How the checks grade (not part of the cache key: a cached subject is re-graded from its stored answers).
# 2: a general question with a numeral gold answer is decided by the first number of the answer.
CHECKS_VERSION = 2

#: What the "Before" model must reach on the default world (x100 for ROUGE, fractions for rates).
THRESHOLDS = {
    "forget_FB": 80.0,  # ROUGE-L recall x100 on the targets' FB probes
    "forget_QA": 80.0,  # ... on the targets' QA probes
    "neighbor_All": 80.0,  # ... on the neighbor probes
    "retained_accuracy": 0.80,  # share of held-out questions about retained people answered correctly
    "nonexistent_refusal": 0.80,  # share of questions about unseen nonexistent people refused
    "general_kept": 0.90,  # share of general questions the base model got right that are still right
}


@dataclass(frozen=True)
class InjectionSettings:
    lr: float = 2e-4
    epochs: float = 3.0
    batch_size: int = 8
    warmup_ratio: float = 0.05
    max_length: int = 256
    seed: int = 0
    replay_tokens: int = 48  # length of the replayed answers to instructions (questions: the evaluation's 30)
    replay_top_k: int = 20  # replay trains on KL to the base model's top-k distribution; 0: NLL of its greedy answers
    replay_weight: float = 3.0  # weight of a replayed answer's KL against a world example's NLL
    mode: str = "layers"  # "full", "layers" (the decoder layers; embeddings frozen) or "lora" (merged afterwards)
    layers: str | None = "all"  # mode "layers": which ("all": every decoder layer, embeddings frozen)
    lora_rank: int = 64
    lora_alpha: int = 128
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    retained_cloze: bool = True  # retained people's facts also in fill-in-the-blank form (``injection_corpus``)
    adam_eps: float = 1e-8  # AdamW's epsilon (docs/subject.md: the optimisation floor of general kept)
    mask_fraction: float = 1.0  # < 1: train only this share of the weight entries, those that matter most for the world (training/sparse.py)


#: Settings added after injection version 5, with the value that builds what version 5 built: left
#: out of the cache key at that value, so the subjects cached before keep their keys.
_ADDED_SETTINGS = {"adam_eps": 1e-8, "mask_fraction": 1.0}


def subject_key(model: str, world_config: WorldConfig, settings: InjectionSettings, dtype: str = "auto") -> str:
    """The cache key: model fingerprint, world, injection settings, replayed prompts and the dtype the
    subject is trained and held in (a bf16 subject is another subject; float32 keeps the keys that
    float32 subjects had before the dtype was part of the key)."""
    replay = hashlib.sha256(_replay_prompts_text().encode()).hexdigest()  # what is replayed shapes the model
    fields = {"version": INJECTION_VERSION, "model": resolve_model(model).fingerprint,
              "world": world_config.fingerprint(), "settings": _key_settings(settings), "replay": replay}
    name = dtype_name(dtype)
    if name != "float32":
        fields["dtype"] = name
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _key_settings(settings: InjectionSettings) -> dict:
    """The settings as the cache key holds them: an added setting at its old value is left out."""
    return {k: v for k, v in asdict(settings).items() if not (k in _ADDED_SETTINGS and v == _ADDED_SETTINGS[k])}


def subject_model_dir(model: str = DEFAULT_MODEL, world_config: WorldConfig | None = None,
                      settings: InjectionSettings | None = None, dtype: str = "auto") -> Path | None:
    """The cached subject model's folder, or None when it has not been built yet."""
    key = subject_key(model, world_config or WorldConfig(), settings or InjectionSettings(), dtype)
    folder = home() / "subjects" / key
    return folder if (folder / "subject.json").is_file() else None


def ensure_subject(model: str = DEFAULT_MODEL, world_config: WorldConfig | None = None,
                   settings: InjectionSettings | None = None, progress: bool = True, dtype: str = "auto") -> Path:
    """Build the subject model once (or reuse the cache) and return its folder."""
    world_config = world_config or WorldConfig()
    settings = settings or InjectionSettings()
    existing = subject_model_dir(model, world_config, settings, dtype)
    if existing is not None:
        problem = check_folder(existing)  # sizes and headers: a damaged cache is rebuilt, not loaded
        if problem is None:
            return existing
        _say(True, f"The cached subject model in {existing} is damaged ({problem}); building it again.")
    folder = home() / "subjects" / subject_key(model, world_config, settings, dtype)
    build_subject(model, world_config, settings, folder, progress=progress, dtype=dtype)
    return folder


# ----------------------------------------------------------------------------------------- checks
def general_questions() -> list[tuple[str, list[str]]]:
    """The project's small general-knowledge set (``data/general_questions.json``) for the ability check."""
    text = resources.files("rwkuplus").joinpath("data/general_questions.json").read_text(encoding="utf-8")
    return [(item["question"], item["answers"]) for item in json.loads(text)]


def subject_checks(model, tokenizer, world: World, general: list[tuple[str, list[str]]] | None = None,
                   batch_size: int = 32) -> dict:
    """The scores that say whether the model knows the world: see THRESHOLDS; plus per-question records."""
    from .evaluation.generation import generate
    from .evaluation.grading import grade, load_refusal_matcher
    from .evaluation.probes import evaluate_probes
    from .evaluation.prompts import question_prompt

    probes = [p for t in world.targets for p in forget_probes(world, t) if p.level in ("1", "2")]
    f_records, f_metrics = evaluate_probes(model, tokenizer, probes, batch_size=batch_size)
    n_records, n_metrics = evaluate_probes(model, tokenizer, [p for t in world.targets for p in neighbor_probes(world, t)],
                                           batch_size=batch_size)
    checks = injection_checks(world)
    matcher = load_refusal_matcher(paths=[])
    questions = checks["retained"] + checks["nonexistent"] + [(q, a) for q, a in (general or [])]
    answers = generate(model, tokenizer, [question_prompt(tokenizer, q) for q, _ in questions], batch_size=batch_size)
    n_ret, n_non = len(checks["retained"]), len(checks["nonexistent"])
    graded = []
    for k, ((q, gold), answer) in enumerate(zip(questions, answers)):
        golds = gold if isinstance(gold, list) else ([gold] if gold else [])
        verdict = (grade(answer, golds, matcher, question=q) if k < n_ret + n_non
                   else general_grade(answer, golds, matcher, q))
        graded.append({"question": q, "gold": golds, "prediction": answer, "grade": verdict})
    retained, nonexistent, gen = graded[:n_ret], graded[n_ret:n_ret + n_non], graded[n_ret + n_non:]
    scores = {
        "forget_FB": f_metrics.get("FB"), "forget_QA": f_metrics.get("QA"), "neighbor_All": n_metrics.get("All"),
        "retained_accuracy": _share(retained, "correct"), "nonexistent_refusal": _share(nonexistent, "abstained"),
    }
    return {"scores": scores, "records": {"forget": f_records, "neighbor": n_records, "retained": retained,
                                          "nonexistent": nonexistent, "general": gen}}


_NUMERAL = re.compile(r"\d+(?:\.\d+)?")
_FIRST_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")


def general_grade(answer: str, gold: list[str], matcher, question: str = "") -> str:
    """The general check's grade: ``grading.grade``, except that when a gold answer is a numeral and
    the answer states a number, its first number decides (it must equal a numeral gold). ROUGE's
    tokens would count "1/60 = 0.0123" as answering 60 to "How many seconds are in a minute?"."""
    from .evaluation.grading import grade

    numerals = [g.strip() for g in gold if _NUMERAL.fullmatch(g.strip())]
    first = _FIRST_NUMBER.search(answer)
    if not numerals or first is None:
        return grade(answer, gold, matcher, question=question)
    text = first.group().replace(",", "")
    if "/" not in text and any(float(text) == float(g) for g in numerals):
        return "correct"
    return "abstained" if matcher.abstains(answer, question) else "incorrect"


def answer_general(model, tokenizer, questions: list[tuple[str, list[str]]], matcher) -> list[dict]:
    """The general check alone: each question answered in the evaluation's question format and graded
    (``general_grade``); one row per question. ``subject_checks`` asks the same questions in one
    batch with the world's, so its answers can differ from these by padding."""
    from .evaluation.generation import generate
    from .evaluation.prompts import question_prompt

    model.eval()
    answers = generate(model, tokenizer, [question_prompt(tokenizer, q) for q, _ in questions], batch_size=32)
    return [{"question": q, "prediction": a, "grade": general_grade(a, gold, matcher, q)}
            for (q, gold), a in zip(questions, answers)]


def lost_lines(before: list[dict], after: list[dict]) -> list[str]:
    """One line per general answer right before and not after: the question, both answers cut short."""
    return [f"  lost: {b['question']} | {b['prediction'][:40]!r} -> {r['prediction'][:50]!r}"
            for b, r in zip(before, after) if b["grade"] == "correct" and r["grade"] != "correct"]


def _share(rows: list[dict], grade: str) -> float | None:
    return sum(r["grade"] == grade for r in rows) / len(rows) if rows else None


def general_kept(before: list[dict], after: list[dict]) -> tuple[float | None, int]:
    """Share of the general questions answered correctly before that are still correct after."""
    known = [i for i, r in enumerate(before) if r["grade"] == "correct"]
    if not known:
        return None, 0
    return sum(after[i]["grade"] == "correct" for i in known) / len(known), len(known)


# ------------------------------------------------------------------------------------------ build
def _replay_prompts_text() -> str:
    return resources.files("rwkuplus").joinpath("data/replay_prompts.txt").read_text(encoding="utf-8")


def replay_examples(model, tokenizer, max_new_tokens: int, batch_size: int = 32) -> list[TrainExample]:
    """The base model's own greedy answers to everyday prompts, replayed to keep its general behaviour.

    A prompt ending in "?" is asked in the evaluation's question format (``question_prompt``, the
    format the world's facts are injected in, answer cut at the first newline as the evaluation
    does); any other prompt is a plain chat instruction. Replaying the question format matters: it
    is the format the injection rewrites, so it is where general answers would otherwise be lost.
    """
    from .evaluation.generation import generate
    from .evaluation.prompts import chat_prompt, question_prompt

    lines = [line.strip() for line in _replay_prompts_text().splitlines() if line.strip()]
    questions = [q for q in lines if q.endswith("?")]
    instructions = [q for q in lines if not q.endswith("?")]
    prompts = [question_prompt(tokenizer, q) for q in questions]
    answers = generate(model, tokenizer, prompts, batch_size=batch_size)  # the evaluation's length and newline stop
    chat = [chat_prompt(tokenizer, q) for q in instructions]
    answers += generate(model, tokenizer, chat, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        stop_at_newline=False)
    eos = tokenizer.eos_token or ""
    n = len(prompts)
    return ([TrainExample(p, " " + a.strip() + eos) for p, a in zip(prompts, answers[:n]) if a.strip()]
            + [TrainExample(p, a + eos) for p, a in zip(chat, answers[n:]) if a.strip()])


def build_subject(model_spec: str, world_config: WorldConfig, settings: InjectionSettings, folder: Path,
                  progress: bool = True, dtype: str = "auto") -> dict:
    """Inject the world into ``model_spec`` and save the subject model + ``subject.json`` into ``folder``."""
    from .methods import make_method
    from .methods.sft import teacher_targets
    from .training.loop import train
    from .training.settings import TrainSettings
    from .training.sparse import masked_gradients

    _check_sparse(settings)  # before minutes of work
    start = time.perf_counter()
    world = generate_world(world_config)
    model, tokenizer, resolved = load_model(model_spec, dtype=dtype)
    model.eval()
    general = general_questions()
    with activity("Scoring the base model on the world (before injection)...", progress):
        before = subject_checks(model, tokenizer, world, general)
    corpus = injection_corpus(world, tokenizer, retained_cloze=settings.retained_cloze)
    with activity("Answering the replay prompts with the base model...", progress):
        replay = replay_examples(model, tokenizer, settings.replay_tokens)
        examples = corpus + replay
        # The replayed answers train on KL to the base model's distribution (self-distillation).
        soft = (teacher_targets(model, tokenizer, replay, settings.replay_top_k, settings.max_length,
                                offset=len(corpus)) if settings.replay_top_k else {})
    _say(progress, f"Injecting the world: {len(corpus)} examples + {len(replay)} replayed answers, "
                   f"{settings.epochs:g} epochs at lr {settings.lr:g}...")
    lora = LoraSettings(rank=settings.lora_rank, alpha=settings.lora_alpha, target_modules=tuple(settings.lora_targets))
    train_settings = TrainSettings(lr=settings.lr, epochs=settings.epochs, batch_size=settings.batch_size,
                                   warmup_ratio=settings.warmup_ratio, schedule="cosine", max_length=settings.max_length,
                                   adam_eps=settings.adam_eps,
                                   seed=settings.seed, mode=settings.mode, layers=settings.layers, lora=lora, group_by_length=True,
                                   max_forget_nll_per_token=None)
    method = make_method("sft", corpus_name="injection", soft_weight=settings.replay_weight, soft_targets=soft)
    masks = _world_masks(model, tokenizer, method, corpus, settings, train_settings, progress)
    bar = _step_bar(progress, train_settings.total_steps(len(examples)))
    with masked_gradients(model, masks):
        result = train(model, tokenizer, method, {"injection": examples}, train_settings,
                       on_step=(lambda row: bar.update(1)) if bar else None)
    if bar:
        bar.close()
    model = result.model
    if hasattr(model, "merge_and_unload"):  # LoRA injection: the subject is a plain model
        model = model.merge_and_unload()
    model.eval()
    with activity("Scoring the subject model (after injection)...", progress):
        after = subject_checks(model, tokenizer, world, general)
    kept, n_known = general_kept(before["records"]["general"], after["records"]["general"])
    after["scores"]["general_kept"] = kept
    summary = {
        "model": model_spec, "model_fingerprint": resolved.fingerprint, "dtype": dtype_name(dtype),
        "world_config": world_config.to_json(),
        "world_fingerprint": world_config.fingerprint(), "settings": asdict(settings),
        "injection_version": INJECTION_VERSION, "checks_version": CHECKS_VERSION,
        "before": before["scores"], "after": after["scores"], "general_known_before": n_known,
        **_verdict(after["scores"]),
        "training": {**result.to_json(), "examples": len(examples), "replay_examples": len(replay),
                     "train_seconds": result.cost.wall_time_s},
        "total_seconds": time.perf_counter() - start,
    }
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tokenizer, tmp)
    write_json(tmp / "records_before.json", before["records"])
    write_json(tmp / "records_after.json", after["records"])
    write_json(tmp / "subject.json", summary)  # written last: its presence marks a finished subject
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return summary


def _check_sparse(settings: InjectionSettings) -> None:
    if not 0 < settings.mask_fraction <= 1:
        raise UserError(f"mask_fraction: expected a share in (0, 1], got {settings.mask_fraction!r}.")
    if settings.mask_fraction < 1 and settings.mode == "lora":
        raise UserError("mask_fraction: sparse injection trains the model's own weights; use mode layers or full.")


def _world_masks(model, tokenizer, method, corpus, settings: InjectionSettings, train_settings, progress: bool) -> dict:
    """With ``mask_fraction`` < 1, the masks of sparse fine-tuning: the share of the trained entries with
    the largest squared gradients of the world corpus' NLL (the replay is not scored); {} otherwise."""
    if settings.mask_fraction >= 1:
        return {}
    from .training.loop import prepare_model
    from .training.sparse import fisher_scores, top_fraction_masks

    with activity(f"Choosing the {settings.mask_fraction:.1%} of the weights the world needs most...", progress):
        prepare_model(model, train_settings)
        scores = fisher_scores(model, tokenizer, method, "injection", [(e,) for e in corpus], settings.max_length,
                               settings.batch_size)
        return top_fraction_masks(scores, settings.mask_fraction)


def _verdict(scores: dict) -> dict:
    met = {k: (scores.get(k) is not None and scores[k] >= v) for k, v in THRESHOLDS.items()}
    return {"thresholds": THRESHOLDS, "thresholds_met": met, "all_thresholds_met": all(met.values())}


def read_subject(folder: Path) -> dict:
    """A subject's ``subject.json``; one graded by older checks is re-graded first from its stored
    answers (``records_*.json``) and rewritten, its earlier general-kept kept as ``general_kept_v<N>``."""
    folder = Path(folder)
    summary = read_json(folder / "subject.json")
    version = summary.get("checks_version", 1)
    if version >= CHECKS_VERSION:
        return summary
    from .evaluation.grading import load_refusal_matcher

    matcher = load_refusal_matcher(paths=[])
    records = {}
    for side in ("before", "after"):
        records[side] = read_json(folder / f"records_{side}.json")
        for r in records[side]["general"]:
            r["grade"] = general_grade(r["prediction"], r["gold"], matcher, r["question"])
    kept, n_known = general_kept(records["before"]["general"], records["after"]["general"])
    summary["after"][f"general_kept_v{version}"] = summary["after"].get("general_kept")
    summary["after"]["general_kept"] = kept
    summary.update(general_known_before=n_known, checks_version=CHECKS_VERSION, **_verdict(summary["after"]))
    try:  # subject.json last: a re-grade cut short is simply done again on the next read
        for side in ("before", "after"):
            write_json(folder / f"records_{side}.json", records[side])
        write_json(folder / "subject.json", summary)
    except OSError as e:  # a read-only cache: the re-graded summary is still returned
        log.warning("could not save the re-graded checks in %s: %s", folder, e)
    return summary


def checks_table(summary: dict, folder: str | Path | None = None) -> dict:
    """A subject's checks as a run records them (``run.json`` and ``summary.json`` field ``subject``):
    each check's value after injection, the base model's value, its threshold and whether it is met."""
    thresholds = summary.get("thresholds") or THRESHOLDS
    after, before = summary.get("after") or {}, summary.get("before") or {}
    checks = []
    for key, need in thresholds.items():
        value = after.get(key)
        met = value is not None and value >= need
        checks.append({"check": key, "value": value, "base": before.get(key), "threshold": need, "met": met})
    return {"model": str(folder) if folder is not None else summary.get("model"),
            "all_thresholds_met": all(c["met"] for c in checks), "checks": checks,
            "missed": [c["check"] for c in checks if not c["met"]]}


def missed_text(table: dict) -> str:
    """``nonexistent_refusal 0.60 (needs 0.80), ...``: the checks a subject misses, for a warning."""
    def fmt(v, scale):  # x100 scores with one decimal, shares with two
        return "-" if v is None else (f"{v:.1f}" if abs(scale) > 1.5 else f"{v:.2f}")

    return ", ".join(f"{c['check']} {fmt(c['value'], c['threshold'])} (needs {fmt(c['threshold'], c['threshold'])})"
                     for c in table["checks"] if not c["met"])


def _say(progress: bool, message: str) -> None:
    if progress:
        from .progress import say

        say(message)


def _step_bar(progress: bool, total: int):
    if not progress:
        return None
    from .progress import bar

    return bar(total, "injection steps", unit="step")


__all__ = ["THRESHOLDS", "InjectionSettings", "ensure_subject", "subject_model_dir", "subject_checks",
           "build_subject", "read_subject"]
