"""Try one knowledge-injection setting on the default world and print the subject checks.

Used to choose ``InjectionSettings`` and the world's refusal share (docs/subject.md records the
settings tried and what each gave). Writes the candidate subject into ``--out`` (not the cache).

    python scripts/tune_subject.py --lr 1e-4 --epochs 3 --batch-size 8 --out /tmp/subject_a
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from rwkuplus.benchmark.world import WorldConfig
from rwkuplus.models import DEFAULT_MODEL
from rwkuplus.subject import InjectionSettings, build_subject


def _yes_no(text: str) -> bool:
    if text.lower() in ("yes", "true", "1"):
        return True
    if text.lower() in ("no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = InjectionSettings()
    for f in dataclasses.fields(InjectionSettings):
        if f.name == "lora_targets":
            continue
        default = getattr(defaults, f.name)
        kind = _yes_no if isinstance(default, bool) else type(default)
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=default)
    parser.add_argument("--nonexistent-train", type=int, default=WorldConfig().n_nonexistent_train)
    parser.add_argument("--refusal-questions", type=int, default=WorldConfig().n_refusal_questions)
    parser.add_argument("--world-seed", type=int, default=WorldConfig().seed)
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--out", required=True)
    args = vars(parser.parse_args())
    out = Path(args.pop("out"))
    world = WorldConfig(seed=args.pop("world_seed"), n_nonexistent_train=args.pop("nonexistent_train"),
                        n_refusal_questions=args.pop("refusal_questions"))
    dtype = args.pop("dtype")
    settings = InjectionSettings(**args)
    summary = build_subject(DEFAULT_MODEL, world, settings, out, dtype=dtype)
    print(json.dumps({"settings": dataclasses.asdict(settings), "world_seed": world.seed, "dtype": summary["dtype"],
                      "n_nonexistent_train": world.n_nonexistent_train,
                      "n_refusal_questions": world.n_refusal_questions,
                      "after": summary["after"], "all_met": summary["all_thresholds_met"],
                      "train_s": summary["training"]["train_seconds"], "total_s": summary["total_seconds"],
                      "tokens": summary["training"]["cost"]["tokens_trained"]}, indent=1))


if __name__ == "__main__":
    main()
