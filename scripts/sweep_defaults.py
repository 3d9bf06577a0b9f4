"""The per-method learning-rate sweep behind ``methods/presets.py``'s defaults (default model + world).

Each method is trained at each learning rate of its grid (full fine-tuning, or ``--setting lora``),
from the cached subject model, on the chosen targets (single-target), with every other setting at
its preset; forget and neighbor probes are evaluated at the end (no checkpoints). Grid point i of
every method runs in one resumable `rwkuplus run` suite (``<out>/<setting>_<i>``), so Before is
evaluated once per grid point. Prints Forget All and Neighbor All against Before for each method
and learning rate, marks the rows that meet issue 3's bar (Forget All at most half of Before;
Neighbor All at least half of Before), and writes everything to ``<out>/sweep_<setting>.json``.

    python scripts/sweep_defaults.py --out runs/sweep              # full fine-tuning grid
    python scripts/sweep_defaults.py --out runs/sweep --setting lora --grid-scale 10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rwkuplus.config import RunConfig
from rwkuplus.fileio import read_json, write_json
from rwkuplus.suite import Suite

# Full fine-tuning learning rates tried per method, at the default run's budget (12 optimizer steps at
# batch 4 on one world target) and in the default dtype (bf16 on a CPU with fast bf16).
GRID = {
    "ga": (3e-5, 1e-4, 1.5e-4, 3e-4),
    "gd": (3e-5, 1e-4, 1.5e-4, 3e-4),
    "npo": (3e-5, 1e-4, 1.5e-4, 3e-4),
    "simnpo": (3e-5, 1e-4, 1.5e-4, 3e-4),
    "rt": (3e-5, 1e-4, 1.5e-4, 3e-4),
    "cft-sft:conflicting": (3e-5, 1e-4, 1.5e-4, 3e-4),
    "cft-dpo": (1e-5, 3e-5, 1e-4, 3e-4),
    "altpo": (1e-5, 3e-5, 1e-4, 3e-4),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--methods", default=",".join(GRID))
    p.add_argument("--targets", default="1")
    p.add_argument("--setting", choices=("full", "lora"), default="full")
    p.add_argument("--grid-scale", type=float, default=1.0, help="multiply every grid learning rate (LoRA: 10)")
    p.add_argument("--points", default="0,1,2,3", help="which grid points to run")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    args = p.parse_args()
    methods = args.methods.split(",")
    rows = []
    for i in (int(x) for x in args.points.split(",")):
        lrs = {m.split(":")[0]: {"lr": GRID[m][i] * args.grid_scale} for m in methods}
        train = {**RunConfig().train, **lrs}  # the default run's budget ("all": 12 steps) at each rate
        config = RunConfig(targets=args.targets, methods=["before", *methods], settings=[args.setting],
                           checkpoints=[], diagnostics=False, train=train, dtype=args.dtype,
                           eval={"batch_size": 16, "parts": ["forget", "neighbor"], "utility_items": 1,
                                 "hallucination_items": 1})
        out = Path(args.out) / f"{args.setting}_{i}"
        Suite(config.validate(), out, progress=False).run()
        units = [read_json(f) for f in sorted((out / "units").glob("*/result.json"))]
        before = [u for u in units if u["unit"]["method"] == "before"]
        b_f = _mean([u["metrics"].get("Forget All") for u in before])
        b_n = _mean([u["metrics"].get("Neighbor All") for u in before])
        for m in methods:
            name, _, corpus = m.partition(":")
            mine = [u for u in units if u["unit"]["method"] == name and (u["unit"].get("corpus") or "") == corpus]
            ok = [u for u in mine if u["status"] == "ok"]
            f_a = _mean([u["metrics"].get("Forget All") for u in ok])
            n_a = _mean([u["metrics"].get("Neighbor All") for u in ok])
            row = {"method": m, "setting": args.setting, "lr": lrs[name]["lr"], "forget_before": b_f,
                   "neighbor_before": b_n, "forget_after": f_a, "neighbor_after": n_a,
                   "steps": _mean([u.get("training", {}).get("steps") for u in mine]),
                   "halved": None if f_a is None or not b_f else f_a <= b_f / 2,
                   "neighbor_kept_half": None if n_a is None or not b_n else n_a >= b_n / 2,
                   "failed": [u["reason"] for u in mine if u["status"] != "ok"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_json(Path(args.out) / f"sweep_{args.setting}.json", rows)
    print("\n| method | setting | lr | steps | Forget All | Neighbor All | forget halved | neighbor >= half |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (methods.index(r["method"]), r["lr"])):
        print(f"| {r['method']} | {r['setting']} | {_lr(r['lr'])} | {_f(r['steps'], 0)} | "
              f"{_f(r['forget_before'])} -> {_f(r['forget_after'])} | {_f(r['neighbor_before'])} -> "
              f"{_f(r['neighbor_after'])} | {_yn(r['halved'])} | {_yn(r['neighbor_kept_half'])} |"
              + (f" failed: {'; '.join(r['failed'])}" if r["failed"] else ""))


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _f(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _lr(x: float) -> str:
    return f"{x:.1e}".replace(".0e", "e")  # 1e-04, 1.5e-04


def _yn(x) -> str:
    return "-" if x is None else ("yes" if x else "no")


if __name__ == "__main__":
    main()
