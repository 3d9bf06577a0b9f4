"""The per-method learning-rate sweep behind ``methods/presets.py``'s defaults (default model + world).

For each method and learning rate, one `rwkuplus run` unit per target (forget and neighbor probes
only, no checkpoints) from the cached subject model; prints a table of Forget All and Neighbor All
against Before and writes it as JSON. Rerunning resumes (each setting has its own run folder).

    python scripts/sweep_defaults.py --out runs/sweep --methods ga,gd,npo --lrs 1e-5,3e-5,1e-4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rwkuplus.config import RunConfig
from rwkuplus.fileio import read_json, write_json
from rwkuplus.suite import Suite


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--methods", default="ga,gd,npo,rt,cft-sft:conflicting,cft-dpo,altpo,simnpo")
    p.add_argument("--lrs", default="1e-5,3e-5,1e-4")
    p.add_argument("--targets", default="1")
    p.add_argument("--epochs", type=float, default=None, help="override the preset's epochs")
    args = p.parse_args()
    rows = []
    for method in args.methods.split(","):
        name = method.split(":")[0]
        for lr in args.lrs.split(","):
            train = {"lr": float(lr)}
            if args.epochs:
                train["epochs"] = args.epochs
            config = RunConfig(targets=args.targets, methods=["before", method], checkpoints=[], diagnostics=False,
                               train={name: train}, eval={"batch_size": 16, "parts": ["forget", "neighbor"],
                                                          "utility_items": 1, "hallucination_items": 1})
            out = Path(args.out) / f"{method.replace(':', '-')}_lr{lr}"
            Suite(config, out, progress=False).run()
            units = [read_json(f) for f in sorted((out / "units").glob("*/result.json"))]
            before = [u for u in units if u["unit"]["method"] == "before"]
            after = [u for u in units if u["unit"]["method"] != "before"]
            b_f = _mean([u["metrics"].get("Forget All") for u in before])
            b_n = _mean([u["metrics"].get("Neighbor All") for u in before])
            ok = [u for u in after if u["status"] == "ok"]
            row = {"method": method, "lr": float(lr), "forget_before": b_f, "neighbor_before": b_n,
                   "forget_after": _mean([u["metrics"].get("Forget All") for u in ok]),
                   "neighbor_after": _mean([u["metrics"].get("Neighbor All") for u in ok]),
                   "failed": [u["reason"] for u in after if u["status"] != "ok"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    write_json(Path(args.out) / "sweep.json", rows)
    print(f"\n{'method':<22}{'lr':>8}{'Forget':>16}{'Neighbor':>18}")
    for r in rows:
        print(f"{r['method']:<22}{r['lr']:>8.0e}{_pair(r['forget_before'], r['forget_after']):>16}"
              f"{_pair(r['neighbor_before'], r['neighbor_after']):>18}  {'; '.join(r['failed'])}")


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _pair(b, a) -> str:
    f = lambda x: "-" if x is None else f"{x:.1f}"  # noqa: E731
    return f"{f(b)} -> {f(a)}"


if __name__ == "__main__":
    main()
