"""RWKU+'s two experiments on the default world: knowledge conflict and hallucination spillover.

Two resumable `rwkuplus run` suites from the cached subject model (the "Before" model), then the
tables, printed and written into ``docs/experiments.md`` between the markers of each table:

1. ``<out>/conflict``: CFT-SFT on the ``conflicting`` and on the ``consistent`` counterfactual corpus
   (same size, same attributes rewritten, same hyperparameters), several seeds, evaluated at
   checkpoints along training with the gradient-conflict measures of the training corpus's probe
   items (conflict ratio, cancellation ratio, ...). Table "conflict".
2. ``<out>/methods``: Before, GA, GD, NPO, RT and CFT-DPO with the same seeds, full evaluation at the
   end (no checkpoints). With the CFT-SFT units of suite 1 this gives the hallucination table and the
   trade-off table. Tables "hallucination" and "tradeoff".

Every number comes from the suites' ``summary.json`` (mean +- sample std over targets x seeds), which
in turn comes from each unit's per-probe records.

    python scripts/experiment_hidden_costs.py --out runs/hidden_costs --seeds 0,1,2 --targets 1

The replicated version (3 worlds x every target, spillover by domain, methods compared at equal
forgetting, the claims table with verdicts) is one command of its own: ``rwkuplus run --config
hidden-costs`` (``src/rwkuplus/data/experiments/hidden-costs.yaml``, ``rwkuplus.claims``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rwkuplus.claims import replace_doc_block
from rwkuplus.config import RunConfig
from rwkuplus.fileio import read_json, write_text
from rwkuplus.suite import Suite

DOC = Path(__file__).resolve().parents[1] / "docs" / "experiments.md"
CFT = ["cft-sft:conflicting", "cft-sft:consistent"]
OTHERS = ["before", "ga", "gd", "npo", "rt", "cft-dpo"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/hidden_costs")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--targets", default="1")
    p.add_argument("--checkpoints", default="0,3,6", help="steps at which the CFT runs are evaluated and probed "
                   "(the end, step 12 at the default settings, is the final evaluation)")
    p.add_argument("--utility-items", type=int, default=20, help="items per utility set in the final evaluation")
    p.add_argument("--no-doc", action="store_true", help="print the tables without writing docs/experiments.md")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    eval_opts = {"batch_size": 32, "utility_items": args.utility_items, "hallucination_items": 60}
    conflict_cfg = RunConfig(targets=args.targets, methods=["before", *CFT], seeds=seeds,
                             checkpoints=[int(s) for s in args.checkpoints.split(",")], diagnostics=True, eval=eval_opts)
    methods_cfg = RunConfig(targets=args.targets, methods=OTHERS, seeds=seeds, checkpoints=[], diagnostics=False,
                            eval=eval_opts)
    for name, cfg in (("conflict", conflict_cfg), ("methods", methods_cfg)):
        print(f"== suite {name}: {out / name}", flush=True)
        Suite(cfg.validate(), out / name).run()
    conflict = read_json(out / "conflict" / "summary.json")
    methods = read_json(out / "methods" / "summary.json")
    rows = [r for r in methods["rows"]] + [r for r in conflict["rows"] if r["method_id"] != "before"]
    n = f"{len(seeds)} seed(s) x target(s) {args.targets}"
    tables = {
        "conflict": conflict_table(conflict) + f"\n\n_{n}; source: `{out / 'conflict' / 'summary.json'}`._",
        "hallucination": hallucination_table(rows) + f"\n\n_{n}; source: `{out}/*/summary.json`._",
        "tradeoff": tradeoff_table(rows) + f"\n\n_{n}; source: `{out}/*/summary.json`._",
    }
    for key, table in tables.items():
        print(f"\n### {key}\n{table}")
    if not args.no_doc:
        text = DOC.read_text(encoding="utf-8")
        for key, table in tables.items():
            text = replace_doc_block(text, table, key)
        write_text(DOC, text)
        print(f"\nTables written into {DOC}")


# ------------------------------------------------------------------------------------------ tables
def _fmt(m: dict | None, digits: int = 2, ci: bool = False) -> str:
    if not m or m.get("mean") is None:
        return "n/a"
    s = f"{m['mean']:.{digits}f}"
    if m.get("std") is not None:
        s += f" ± {m['std']:.{digits}f}"
    if ci and m.get("ci"):
        lo, hi = m["ci"]
        s += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return s


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def conflict_table(summary: dict) -> str:
    body = []
    for row in summary["rows"]:
        if row["method_id"] != "cft-sft":
            continue
        diags = {d["checkpoint"]: d for d in row.get("diagnostics", [])}
        traj = {t["checkpoint"]: t for t in row.get("trajectory", [])}
        for ck in sorted(set(diags) | set(traj)):
            d, t = diags.get(ck, {}), traj.get(ck, {})
            step = d.get("step", t.get("step"))
            body.append([row.get("corpus") or "?", f"{step:g}" if step is not None else "?",
                         _num(d.get("conflict_ratio")), _num(d.get("same_attribute.conflict_ratio")),
                         _num(d.get("cancellation_ratio")), _num(d.get("mean_cosine")),
                         _num(t.get("FE")), _num(t.get("NR")), _num(t.get("UR"))])
        m = row["metrics"]
        body.append([f"**{row.get('corpus')} (end)**", "end", "", "", "", "",
                     _fmt(m.get("FE")), _fmt(m.get("NR")), _fmt(m.get("UR"))])
    return _table(["corpus", "step", "conflict ratio", "same-attribute conflict ratio", "cancellation ratio",
                   "mean cosine", "FE", "NR", "UR"], body)


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def hallucination_table(rows: list[dict]) -> str:
    cols = ["HR", "Abstention", "Fabrication", "Leaked", "Abstained", "Fabricated"]
    body = [[r["method"]] + [_fmt(r["metrics"].get(c)) for c in cols]
            + [_fmt(r["metrics"].get("dHR"), ci=True), _fmt(r["metrics"].get("dFabrication"), ci=True)] for r in rows]
    return _table(["method", *cols, "dHR [95% CI]", "dFabrication [95% CI]"], body)


def tradeoff_table(rows: list[dict]) -> str:
    cols = ["Forget All", "Neighbor All", "FE", "NR", "UR", "HS", "TS", "HTS"]
    body = [[r["method"]] + [_fmt(r["metrics"].get(c), 1 if c.startswith(("Forget", "Neighbor")) else 2)
                             for c in cols] for r in rows]
    return _table(["method", *cols], body)


if __name__ == "__main__":
    main()
