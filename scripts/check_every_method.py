"""Run every registered method through `rwkuplus unlearn` on the default world and print a table.

    python scripts/check_every_method.py --out runs/every_method --lora        # LoRA, default settings
    python scripts/check_every_method.py --out runs/every_method_full          # full fine-tuning

One world target (default 1), each method's default settings (`methods/presets.py`); prints Forget
All and Neighbor All after unlearning from each run's eval.json (Before: docs/defaults.md). Rerunning skips finished runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from rwkuplus.methods import make_method, method_names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/every_method")
    p.add_argument("--targets", default="1")
    p.add_argument("--lora", action="store_true")
    args = p.parse_args()
    rows = []
    for name in [n for n in method_names() if make_method(n).kind == "unlearning"]:  # not the tuning SFT
        out = Path(args.out) / name
        cmd = [sys.executable, "-m", "rwkuplus", "unlearn", "--method", name, "--targets", args.targets,
               "--out", str(out)] + (["--lora"] if args.lora else [])
        done = subprocess.run(cmd, capture_output=True, text=True)
        evals = sorted(out.glob("**/eval.json"))
        if done.returncode != 0 or not evals:
            rows.append((name, "FAILED: " + (done.stderr.strip().splitlines() or ["?"])[-1]))
            continue
        e = json.loads(evals[0].read_text())
        rows.append((name, e))
        print(name, json.dumps(e)[:300], flush=True)
    print("\n| method | result |\n|---|---|")
    for name, e in rows:
        print(f"| {name} | {e if isinstance(e, str) else _brief(e)} |")


def _brief(e: dict) -> str:
    """eval.json is {target: {"forget": {..., "All"}, "neighbor": {..., "All"}}}."""
    return "; ".join(f"{t}: Forget All {_f(m.get('forget', {}).get('All'))}, "
                     f"Neighbor All {_f(m.get('neighbor', {}).get('All'))}" for t, m in e.items())


def _f(x) -> str:
    return "-" if x is None else f"{x:.1f}"


if __name__ == "__main__":
    main()
