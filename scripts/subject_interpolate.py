"""Score a saved subject model with its weights moved back towards the base model.

Every weight becomes ``base + alpha x (subject - base)`` (alpha 1: the subject; 0: the base model),
and the subject checks are run again at each alpha: the trade-off between what the injection taught
and the general answers it cost (docs/subject.md, "The optimisation floor of general kept"). Nothing
is written.

    python scripts/subject_interpolate.py ~/.cache/rwkuplus/subjects/<key> --alphas 1,0.8,0.65,0.5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from rwkuplus.benchmark.world import WorldConfig, generate_world
from rwkuplus.fileio import read_json
from rwkuplus.models import DEFAULT_MODEL, load_model
from rwkuplus.subject import general_kept, general_questions, subject_checks


def alphas_of(text: str) -> list[float]:
    try:
        values = [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise SystemExit(f"--alphas: expected numbers separated by commas, got {text!r}.") from None
    if not values:
        raise SystemExit("--alphas: expected at least one number.")
    return values


@torch.no_grad()
def interpolate(model, base_state: dict, subject_state: dict, alpha: float) -> None:
    for name, tensor in model.state_dict().items():
        b, s = base_state[name], subject_state[name]
        tensor.copy_((b + alpha * (s - b)).to(tensor.dtype))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("subject", help="a saved subject model folder (with subject.json)")
    ap.add_argument("--base", default=DEFAULT_MODEL, help="the model the subject was injected into")
    ap.add_argument("--alphas", default="1,0.8,0.65,0.5")
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    args = ap.parse_args(argv)
    alphas = alphas_of(args.alphas)
    folder = Path(args.subject)
    if not (folder / "subject.json").is_file():
        raise SystemExit(f"{folder}: not a subject model folder (no subject.json).")
    summary = read_json(folder / "subject.json")
    world = generate_world(WorldConfig.from_json(summary["world_config"]))
    before = read_json(folder / "records_before.json")["general"]
    base, _, _ = load_model(args.base, dtype=args.dtype)
    base_state = {k: v.float().clone() for k, v in base.state_dict().items()}
    del base
    model, tokenizer, _ = load_model(str(folder), dtype=args.dtype)
    model.eval()
    subject_state = {k: v.float().clone() for k, v in model.state_dict().items()}
    questions = general_questions()
    print("| alpha | FB | QA | neighbor | retained | refusal | general kept | s |")
    print("|---|---|---|---|---|---|---|---|")
    for alpha in alphas:
        start = time.perf_counter()
        interpolate(model, base_state, subject_state, alpha)
        checks = subject_checks(model, tokenizer, world, questions)
        kept, _ = general_kept(before, checks["records"]["general"])
        s = checks["scores"]
        print(f"| {alpha:g} | {s['forget_FB']:.1f} | {s['forget_QA']:.1f} | {s['neighbor_All']:.1f} | "
              f"{s['retained_accuracy']:.2f} | {s['nonexistent_refusal']:.2f} | {kept:.2f} | "
              f"{time.perf_counter() - start:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
