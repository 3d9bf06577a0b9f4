"""``rwkuplus methods``: the unlearning methods, what they train on, their hyperparameters and defaults."""

from __future__ import annotations

import json

NAME = "methods"
HELP = "list the unlearning methods with their corpora, hyperparameters and default settings"
DESCRIPTION = (
    "List every method of the registry: a one-line description, the corpora it trains on (forget = the "
    "target's factual text, retain, counterfactual, preference pairs, refusal pairs), whether it needs the "
    "reference model, its hyperparameters with defaults (set them with 'rwkuplus unlearn --param NAME=VALUE'), "
    "and its default learning rates for full fine-tuning and LoRA on the default model."
)


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.add_argument("--all", action="store_true", help="also list tuning methods that are not unlearning (sft)")


def method_table(include_tuning: bool = False) -> list[dict]:
    from ..methods import make_method, method_names
    from ..methods.presets import DEFAULT_MODEL_SETTINGS

    rows = []
    for name in method_names(None if include_tuning else "unlearning"):
        m = make_method(name)
        full_lr, lora_lr, batch = DEFAULT_MODEL_SETTINGS.get(name, (None, None, None))
        rows.append({
            **m.describe(),
            "hyperparameter_help": type(m).hyperparameter_help(),
            "defaults": {"lr_full": full_lr, "lr_lora": lora_lr, "batch_size": batch},
        })
    return rows


def run(args) -> int:
    rows = method_table(include_tuning=args.all)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        corpora = ", ".join(r["corpora"]) or "none (no training)"
        ref = "; needs the reference model" if r["needs_reference"] else ""
        print(f"{r['name']}: {r['description']}")
        print(f"    trains on: {corpora}{ref}")
        for key, value in r["params"].items():
            note = r["hyperparameter_help"].get(key, "")
            print(f"    --param {key}={value}" + (f"  ({note})" if note else ""))
        d = r["defaults"]
        if r["trains"] and d["lr_full"] is not None:
            print(f"    default lr: {d['lr_full']:g} full, {d['lr_lora']:g} LoRA; batch {d['batch_size']}")
    return 0
