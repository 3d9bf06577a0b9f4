"""Two finished run folders side by side: each method's numbers in both, and how many answers agree.

    .venv/bin/python benchmarks/compare_runs.py runs/default-fp32 runs/default-bf16 [--names float32,bfloat16]

Made for the default run in float32 against bfloat16 on the same weights (docs/benchmarks.md), it
works for any two runs of the same suite. Prints one markdown table: per summary row (method, setting,
corpus) each metric as ``A / B`` and the share of identical generated answers over the units both runs
have (every ``*.jsonl`` record of a unit's evaluation, line by line, as ``benchmarks/precision.py``
compares them); then the largest difference of each metric and the units' summed time in each run
(``result.json`` "seconds"). Every number comes from the runs' ``summary.json`` and per-probe records.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from precision import _records, _texts, answers_agree  # noqa: E402

METRICS = ("Forget All", "Neighbor All", "FE", "NR", "UR", "HS", "TS", "HTS", "dHR")


def _value(metric) -> float | None:
    if isinstance(metric, dict):
        metric = metric.get("mean")
    return float(metric) if isinstance(metric, (int, float)) and not isinstance(metric, bool) else None


def _rows(summary: dict) -> dict[tuple, dict]:
    return {(r["method_id"], r.get("setting"), r.get("corpus")): r for r in summary["rows"]}


def _units(run: Path) -> dict[str, tuple[tuple, list[str], float]]:
    """Each finished unit: the summary row it belongs to (method, setting, corpus, from its
    ``result.json``), its generated answers in a fixed order (records file by file, line by line)
    and its seconds."""
    out = {}
    for path in sorted(run.glob("units/*/result.json")):
        result = json.loads(path.read_text())
        unit = result.get("unit") or {}
        records = _records(path.parent / "eval") if (path.parent / "eval").is_dir() else {}
        key = (unit.get("method"), unit.get("setting"), unit.get("corpus"))
        out[path.parent.name] = (key, [t for k in sorted(records) for t in _texts(records[k])],
                                 float(result.get("seconds") or 0.0))
    return out


def compare(run_a: Path, run_b: Path, metrics=METRICS) -> dict:
    """The comparison as data: rows (label, per metric (a, b), agreement, answers), largest differences."""
    summary_a = json.loads((run_a / "summary.json").read_text())
    summary_b = json.loads((run_b / "summary.json").read_text())
    rows_a, rows_b = _rows(summary_a), _rows(summary_b)
    units_a, units_b = _units(run_a), _units(run_b)
    both = [u for u in units_a if u in units_b]
    rows, largest = [], {}
    for key in [k for k in rows_a if k in rows_b]:
        a, b = rows_a[key], rows_b[key]
        values = {m: (_value(a["metrics"].get(m)), _value(b["metrics"].get(m))) for m in metrics}
        for m, (x, y) in values.items():
            if x is not None and y is not None and abs(x - y) >= largest.get(m, (-1.0, ""))[0]:
                largest[m] = (abs(x - y), a["method"])
        texts_a, texts_b = _paired([u for u in both if units_a[u][0] == key], units_a, units_b)
        rows.append({"method": a["method"], "values": values, "answers": len(texts_a),
                     "identical": answers_agree(texts_a, texts_b) if texts_a else None})
    every_a, every_b = _paired(both, units_a, units_b)
    return {"rows": rows, "largest": largest, "identical": answers_agree(every_a, every_b) if every_a else None,
            "answers": len(every_a), "seconds": tuple(sum(u[2] for u in units.values()) for units in (units_a, units_b))}


def _paired(units: list[str], units_a: dict, units_b: dict) -> tuple[list[str], list[str]]:
    """The units' answers in both runs, paired line by line (a unit's extra lines in one run are left out)."""
    a, b = [], []
    for u in units:
        n = min(len(units_a[u][1]), len(units_b[u][1]))
        a += units_a[u][1][:n]
        b += units_b[u][1][:n]
    return a, b


def _num(x: float | None, metric: str) -> str:
    if x is None:
        return "n/a"
    return f"{x:.1f}" if metric.startswith(("Forget", "Neighbor")) else f"{x:.2f}"


def table(result: dict, names: tuple[str, str], metrics=METRICS) -> str:
    head = ["method", *metrics, "answers identical"]
    lines = [f"Each cell: {names[0]} / {names[1]}.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["rows"]:
        cells = [f"{_num(a, m)} / {_num(b, m)}" for m, (a, b) in r["values"].items()]
        agree = "n/a" if r["identical"] is None else f"{r['identical']:.1%} of {r['answers']}"
        lines.append("| " + " | ".join([r["method"], *cells, agree]) + " |")
    lines.append("")
    worst = ", ".join(f"{m} {d:.2f} ({who})" for m, (d, who) in result["largest"].items())
    lines.append(f"Largest difference per metric: {worst}.")
    if result["identical"] is not None:
        lines.append(f"Generated answers identical over every unit: {result['identical']:.1%} of {result['answers']}.")
    a, b = result["seconds"]
    lines.append(f"Units' summed time: {names[0]} {a:.0f} s, {names[1]} {b:.0f} s.")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--names", default="A,B", help="the two runs' names in the table, comma-separated")
    p.add_argument("--metrics", default=",".join(METRICS), help="summary metrics to compare, comma-separated")
    args = p.parse_args(argv)
    names = tuple(n.strip() for n in args.names.split(","))
    if len(names) != 2 or not all(names):
        print(f"--names: expected two names separated by a comma, got {args.names!r}.", file=sys.stderr)
        return 2
    for run in (args.run_a, args.run_b):
        if not (run / "summary.json").is_file():
            print(f"{run}: expected a finished run folder with a summary.json.", file=sys.stderr)
            return 2
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    print(table(compare(args.run_a, args.run_b, metrics), names, metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
