"""Forgotten or hidden? Which methods' forgetting survives the quantization and relearning attacks.

One resumable `rwkuplus run` suite on the default world from the subject model ("Before"): Before and
the unlearning methods (default CFT-SFT on the conflicting corpus, GA, NPO, RT, RMU), each evaluated
with the forget probes and the two attack parts (``evaluation/attacks.py``): weight quantization to
8 and 4 bits, and 1, 5 and 20 steps of fine-tuning on half of the target's facts with the other
half's probes scored. The Before unit also runs the relearning attack on the base model (it never
knew the target).

The table (printed and written into ``docs/experiments.md`` between ``<!-- table:attacks -->`` and
``<!-- /table:attacks -->``) is computed from the units' per-probe records, not from the summary's
means: for each method and attack, recovery = (attacked - after) / (Before - after) of Forget All
with a paired probe-bootstrap 95% interval (``attacks.recovery_interval``; the row's units pooled:
each unit's probes paired with its target's Before answers). Verdict per cell: ``did not forget``
when unlearning removed under ``--min-forgotten`` points of Forget All; ``attack destroys`` when the
same attack lowers the Before model's own Forget All by that much (the control: then the attack
wipes knowledge rather than recovering it, and recovery says nothing); ``hidden`` when the
interval's lower end is above 0.5 (most of it comes back); ``gone`` when the upper end is below 0.2;
``partly`` otherwise.

    python scripts/experiment_attacks.py --out runs/attacks --seeds 0 --targets 1
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from rwkuplus.claims import replace_doc_block
from rwkuplus.config import RunConfig
from rwkuplus.evaluation.attacks import recovery_interval
from rwkuplus.fileio import read_json, read_jsonl, write_text
from rwkuplus.suite import Suite

DOC = Path(__file__).resolve().parents[1] / "docs" / "experiments.md"
METHODS = ["cft-sft:conflicting", "ga", "npo", "rt", "rmu"]


def build_config(args) -> RunConfig:
    attacks = {"quantization_bits": _ints(args.bits), "relearning_steps": _ints(args.relearning_steps)}
    if args.group_size:
        attacks["group_size"] = args.group_size
    train = {"all": {"max_steps": args.max_steps}} if args.max_steps else {}
    return RunConfig(model=args.model, targets=args.targets, methods=["before", *args.methods.split(",")],
                     seeds=_ints(args.seeds), checkpoints=[], diagnostics=False, train=train,
                     eval={"batch_size": args.batch_size, "parts": ["forget", "quantization", "relearning"],
                           "attacks": attacks}).validate()


def _ints(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


# ----------------------------------------------------------------------------------- the records
def _records(unit_dir: Path, stem: str) -> dict[str, list[dict]]:
    """Per target folder of a unit's evaluation: the rows of ``<stem>.jsonl``."""
    out = {}
    for path in sorted((unit_dir / "eval").glob(f"*/{stem}.jsonl")):
        out[path.parent.name] = read_jsonl(path)
    return out


def _select(rows: list[dict], key: str, value) -> list[dict]:
    return [r for r in rows if r.get(key) == value]


def unit_triples(run: Path) -> dict[str, dict[str, list[tuple[list, list, list, list]]]]:
    """Per method label, per attack column (``Q8``, ``Relearn@5``, ...): (before, after, attacked,
    before_attacked) record lists, one per finished unit (paired with its target's Before unit; the
    last is the Before model under the same attack, the control)."""
    before: dict[str, dict] = {}
    units = []
    for folder in sorted((run / "units").iterdir()):
        if not (folder / "result.json").is_file():
            continue
        result = read_json(folder / "result.json")
        if result.get("status") != "ok":
            continue
        q, r = _records(folder, "quantization"), _records(folder, "relearning")
        if result["unit"]["method"] == "before":
            for target in q.keys() | r.keys():
                before[target] = {"q": q.get(target, []), "r": r.get(target, [])}
        else:
            units.append((result["unit"]["label"], q, r))
    out: dict[str, dict[str, list]] = {}
    for label, q, r in units:
        cols = out.setdefault(label, {})
        for target, rows in q.items():
            b = before.get(target, {}).get("q") or []
            for precision in sorted({x["precision"] for x in rows} - {"full"}, key=lambda p: -int(p[3:])):
                cols.setdefault(f"Q{precision[3:]}", []).append(
                    (_select(b, "precision", "full"), _select(rows, "precision", "full"),
                     _select(rows, "precision", precision), _select(b, "precision", precision)))
        for target, rows in r.items():
            b = before.get(target, {}).get("r") or []
            for k in sorted({x["steps"] for x in rows} - {0}):
                cols.setdefault(f"Relearn@{k}", []).append(
                    (_select(b, "steps", 0), _select(rows, "steps", 0), _select(rows, "steps", k),
                     _select(b, "steps", k)))
    return out


def pooled_recovery(triples: list[tuple[list, list, list, list]], n_boot: int, seed: int = 0) -> dict:
    """Recovery over the pooled probes of several units, with its paired bootstrap interval, and the
    control: the Before model's Forget All under the same attack (``before_attacked``)."""
    before, after, attacked, control = [], [], [], []
    for k, (b, a, t, c) in enumerate(triples):
        tag = f"u{k}:"  # the same probe in two units is two probes of the pool
        before += [{**x, "prompt": tag + x["prompt"]} for x in b]
        after += [{**x, "prompt": tag + x["prompt"]} for x in a]
        attacked += [{**x, "prompt": tag + x["prompt"]} for x in t]
        control += c
    r = recovery_interval(before, after, attacked, n_boot=n_boot, seed=seed)
    from rwkuplus.evaluation.probes import probe_metrics

    r["before"] = probe_metrics(before).get("All")
    r["after"] = probe_metrics(after).get("All")
    r["attacked"] = probe_metrics(attacked).get("All")
    r["before_attacked"] = probe_metrics(control).get("All") if control else None
    r["units"] = len(triples)
    return r


def verdict(r: dict, min_forgotten: float) -> str:
    if r["before"] is None or r["after"] is None or r["before"] - r["after"] < min_forgotten:
        return "did not forget"
    control = r.get("before_attacked")
    if control is not None and r["before"] - control >= min_forgotten:
        return "attack destroys"  # the attack wipes the Before model's knowledge too: recovery says nothing
    if r["low"] is not None and r["low"] > 0.5:
        return "hidden"
    if r["high"] is not None and r["high"] < 0.2:
        return "gone"
    return "partly"


# ------------------------------------------------------------------------------------------ tables
def findings_table(run: Path, n_boot: int = 2000, min_forgotten: float = 10.0) -> tuple[str, dict]:
    triples = unit_triples(run)
    cols = sorted({c for m in triples.values() for c in m}, key=lambda c: (c[0] != "Q", -int(c[1:]) if c[0] == "Q"
                                                                           else int(c.split("@")[1])))
    results = {label: {c: pooled_recovery(t, n_boot) for c, t in m.items()} for label, m in triples.items()}
    header = ["method", "Forget All Before -> after"] + [f"{c} recovery [95% CI]" for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] * 2 + ["---:"] * len(cols)) + "|"]
    for label, by_col in results.items():
        first = next(iter(by_col.values()))
        cells = [label, f"{first['before']:.1f} -> {first['after']:.1f}" if first["before"] is not None else "n/a"]
        for c in cols:
            r = by_col.get(c)
            if r is None:
                cells.append("n/a")
                continue
            rec = "n/a" if r["recovery"] is None else f"{r['recovery']:.2f}"
            ci = "" if r["low"] is None else f" [{r['low']:.2f}, {r['high']:.2f}]"
            control = "" if r.get("before_attacked") is None else f", Before {r['before_attacked']:.1f}"
            cells.append(f"{rec}{ci} ({r['attacked']:.1f}{control}; {verdict(r, min_forgotten)})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), results


def reference_table(run: Path) -> str:
    """The Before model under the same attacks (the control) and the base model's relearning."""
    summary = read_json(run / "summary.json")
    before = next((r for r in summary["rows"] if r["method_id"] == "before"), None)
    if before is None:
        return "_no Before unit_"
    names = [n for n in before["metrics"] if re.fullmatch(r"(Q\d+|Relearn@\d+) Forget All( \(base\))?", n)]
    names = ["Forget All"] + names

    def cell(n):
        m = before["metrics"].get(n) or {}
        return "n/a" if m.get("mean") is None else f"{m['mean']:.1f}"

    return ("| model | " + " | ".join(names) + " |\n|:---|" + "---:|" * len(names) + "\n"
            + "| Before (subject) and base | " + " | ".join(cell(n) for n in names) + " |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/attacks")
    p.add_argument("--model", help="model spec (default: the world's subject model)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0")
    p.add_argument("--targets", default="1")
    p.add_argument("--max-steps", type=int, default=12, help="training steps per method (0 = the presets' epochs)")
    p.add_argument("--bits", default="8,4")
    p.add_argument("--group-size", type=int, default=0, help="per-group quantization size below 8 bits (0 = 32)")
    p.add_argument("--relearning-steps", default="1,5,20")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--min-forgotten", type=float, default=10.0,
                   help="Forget All points unlearning must remove for a recovery verdict (default 10)")
    p.add_argument("--doc", default=str(DOC), help="the Markdown file the tables are written into")
    p.add_argument("--no-doc", action="store_true", help="print the tables without writing the doc")
    args = p.parse_args(argv)
    out = Path(args.out)
    Suite(build_config(args), out).run()
    table, _ = findings_table(out, n_boot=args.n_boot, min_forgotten=args.min_forgotten)
    note = (f"\n\n_seeds {args.seeds} x target(s) {args.targets}, {args.max_steps or 'preset'} training steps; "
            f"recovery [95% CI] (the attacked model's Forget All, the Before model's under the same attack; "
            f"verdict), paired probe bootstrap ({args.n_boot} draws); "
            f"source: the per-probe records under `{out}/units/*/eval/`._")
    tables = {"attacks": table + note, "attacks-reference": reference_table(out)}
    for key, t in tables.items():
        print(f"\n### {key}\n{t}")
    if not args.no_doc:
        doc = Path(args.doc)
        text = doc.read_text(encoding="utf-8") if doc.exists() else ""
        for key, t in tables.items():
            text = replace_doc_block(text, t, key)
        write_text(doc, text)
        print(f"\nTables written into {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
