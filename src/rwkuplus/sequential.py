"""Sequential unlearning (``target_mode: sequential``) and the base model's relearning reference.

A sequential unit forgets its targets one after another, in the configured order, each step
starting from the previous step's model (MUSE's "sustainability"; RWKU's batch and single settings
start every target from the original). After step k (target k trained through the suite's usual
``_train`` on that target alone) the model is evaluated with the run's parts on targets 1..k:
the forget score of every target so far, their neighbors, utility and the hallucination suite.
The last step's evaluation is the unit's final one (``eval/``, read back by the suite).

Resumable: after each step the model's weights (``sequence/model.safetensors``, only the latest)
and then ``sequence/<k>.json`` are written atomically; a rerun loads the weights of the last
finished step and goes on with the next target. ``sequence/<k>/`` holds the step's training log and,
for k < N, its evaluation records (``sequence/<k>/eval``).

The step rows (``training.sequence`` in the unit's result.json; ``sequence_rows``) are what the
report draws: per step, each target's Forget All so far, the mean, Neighbor All, Gen and HR.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .fileio import read_json, write_json


def _step_row(step: int, target: str, result: dict) -> dict:
    """One step's numbers from its ``evaluate_model`` result."""
    from .evaluation.runner import rwku_row

    forget = {name: (m.get("forget") or {}).get("All") for name, m in result["targets"].items()}
    mean = result["mean"]
    row = {"step": step, "target": target, "forget": forget, **rwku_row(mean)}
    h = mean.get("hallucination") or {}
    row.update({"HR": h.get("hallucination_rate"), "Fabrication": h.get("fabrication_rate")})
    return row


def _add_costs(total, cost):
    from .training.loop import TrainCost

    if total is None:
        return cost
    out = {}
    for f in dataclasses.fields(TrainCost):
        a, b = getattr(total, f.name), getattr(cost, f.name)
        if f.name.startswith("peak_"):
            out[f.name] = max(x for x in (a, b) if x is not None) if (a is not None or b is not None) else None
        elif f.name == "trainable_parameters":
            out[f.name] = b
        else:
            out[f.name] = (a or 0) + (b or 0)
    return TrainCost(**out)


def _save_weights(model, path: Path) -> None:
    from safetensors.torch import save_model

    from .methods.base import unwrap

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_model(unwrap(model), str(tmp))  # handles tied (shared) weights
    os.replace(tmp, path)


def _load_weights(suite, unit, path: Path):
    """The model of the last finished step: the suite's model (with a LoRA adapter in setting lora)
    loaded with the saved weights."""
    from safetensors.torch import load_model

    model = suite.model
    if unit.setting == "lora" and not hasattr(model, "peft_config"):
        from .methods.presets import default_settings
        from .models import add_lora

        model = add_lora(model, default_settings(unit.method, mode="lora", preset=suite.config.preset).lora)
    load_model(model, str(path), strict=True)
    model.eval()
    return model


def train_sequential(suite, unit, folder: Path, before: list[dict], bar):
    """The suite's ``_train`` for a sequential unit: ``(model, info, trajectory, diagnostics, cost)``,
    ``info["sequence"]`` holding the step rows."""
    from .evaluation.runner import evaluate_model
    from .training.loop import TrainCost

    seq = folder / "sequence"
    weights = seq / "model.safetensors"
    rows: list[dict] = []
    steps_info: list[dict] = []
    total = None
    model = suite.model
    n = len(unit.targets)
    done = 0
    while done < n and (seq / f"{done + 1}.json").is_file():
        saved = read_json(seq / f"{done + 1}.json")
        rows.append(saved["row"])
        steps_info.append(saved["training"])
        total = _add_costs(total, TrainCost(**saved["cost"]))
        done += 1
    if 0 < done < n:
        model = _load_weights(suite, unit, weights)
        suite.model = model
        suite._say(f"{unit.label}: resuming the sequence after step {done} of {n} ({unit.targets[done - 1]}).")
    trajectory: list[dict] = []
    diagnostics: list[dict] = []
    for k in range(done, n):
        name = unit.targets[k]
        if bar is not None:
            bar.set_postfix_str(f"{unit.label} / sequence step {k + 1}/{n}: {name[:20]}")
        step_unit = dataclasses.replace(unit, targets=(name,), sequential=False)
        step_dir = seq / str(k + 1)
        suite.model = model
        model, info, traj, diag, cost = suite._train(step_unit, step_dir, [before[k]], bar)
        suite.model = model
        if info.get("stopped_reason"):
            info["stopped_reason"] = f"sequence step {k + 1} ({name}): {info['stopped_reason']}"
            info["sequence"] = rows
            return model, info, trajectory, diagnostics, _add_costs(total, cost)
        model.eval()
        eval_dir = folder / "eval" if k == n - 1 else step_dir / "eval"
        result = evaluate_model(model, suite.tokenizer, suite.benchmark, eval_dir, targets=list(unit.targets[:k + 1]),
                                icu=False, parts=suite.config.eval["parts"], settings=suite.eval_settings,
                                progress=False)
        row = _step_row(k + 1, name, result)
        step_info = {"target": name, **{key: info[key] for key in ("steps", "total_steps", "stopped_reason")}}
        trajectory += [{"sequence_step": k + 1, **t} for t in traj]
        diagnostics += [{"sequence_step": k + 1, **d} for d in diag]
        if k < n - 1:
            _save_weights(model, weights)
        write_json(seq / f"{k + 1}.json", {"row": row, "training": step_info, "cost": dataclasses.asdict(cost)})
        rows.append(row)
        steps_info.append(step_info)
        total = _add_costs(total, cost)
        suite._say(f"{unit.label}: sequence step {k + 1}/{n} ({name}): Forget All so far "
                   + ", ".join(f"{t} {v:.1f}" if v is not None else f"{t} -" for t, v in row["forget"].items()))
    if weights.exists():
        weights.unlink()  # the finished unit keeps its records, not the weights
    info = {"steps": sum(s["steps"] for s in steps_info), "total_steps": sum(s["total_steps"] for s in steps_info),
            "stopped_reason": None, "sequence": rows, "sequence_steps": steps_info,
            "cost": dataclasses.asdict(total) if total is not None else None}
    return model, info, trajectory, diagnostics, total


def sequence_rows(result: dict) -> list[dict]:
    """A unit result's sequence step rows (empty for a unit that is not sequential)."""
    return ((result or {}).get("training") or {}).get("sequence") or []


def base_relearning_reference(suite, unit, folder: Path) -> dict:
    """``Relearn@k Forget All (base)``: the relearning attack on the base model, for the Before unit,
    when the run's model is the world's subject model (the base model never knew the target)."""
    from .evaluation.attacks import attack_columns
    from .evaluation.runner import evaluate_model
    from .models import DEFAULT_MODEL, load_model

    if "relearning" not in suite.config.eval["parts"] or suite.config.model is not None \
            or not suite.config.benchmark.startswith("world"):
        return {}
    base, tokenizer, spec = load_model(DEFAULT_MODEL, dtype=suite.config.dtype)
    base.eval()
    try:
        result = evaluate_model(base, tokenizer, suite.benchmark, folder / "eval_base", targets=list(unit.targets),
                                parts=["relearning"], settings=suite.eval_settings,
                                model_info={"spec": spec.spec, "fingerprint": spec.fingerprint}, progress=False)
    finally:
        del base
    return {f"{k} (base)": v for k, v in attack_columns(result["mean"]).items()}
