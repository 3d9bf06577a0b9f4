"""The hidden costs in a summary: spillover by domain, comparisons at equal forgetting, which utility
columns measure anything. Computed from the units' records (``result.json``) alone, like the rest of
the summary; ``report/summary.py`` puts them in each row and in the Markdown.

Spillover by domain (``row["domains"]``): for each domain (same: the retained people; related: the
targets' neighbors; unrelated: the packaged general-knowledge questions the Before model answers
correctly; nonexistent: people who do not exist, where HR is the fabrication rate) the row's units'
counted items (``result.json`` ``domains``: item id -> [Before grade, grade]) are pooled by target
(each item's HR change averaged over the row's seeds, so seeds are not counted as independent
replicates) and the interval of dHR is the hierarchical bootstrap over targets, then items
(``rwkuplus.bootstrap``; over worlds too in the claims table). ``accuracy``, ``hr``, ``abstention`` and
``before_hr`` are means over the units.

Equal forgetting (``row["at_fe"]``): each trained unit's checkpoints (the trajectory joined by step
with its gradient-conflict diagnostics, the Before model first: FE 0, NR = UR = HS = 1, every dHR 0)
read at FE = 0.5 and FE = 0.8 (``tradeoff.at_levels``): UR, NR, HS, dHR per domain, the conflict
measures, and the step at which FE first reaches the level (steps-to-FE). Per level: ``n_units``,
``n_reached`` (units whose trajectory reaches it: the others are left out of every mean, never given
a made-up value) and ``mean_std`` of each quantity over the units that reach it.

Utility columns (``summary["utility_columns"]``): the informativeness rule's verdict per column
(``rwkuplus.informative``), read from the Before units; uninformative columns are left out of UR.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable

DOMAINS = ("same", "related", "unrelated", "nonexistent")
FE_LEVELS = (0.5, 0.8)
# quantities read at equal forgetting: trajectory fields, then the diagnostics' (flattened) fields
AT_FE_KEYS = ("UR", "NR", "HS", "dHR same", "dHR related", "dHR unrelated", "dHR nonexistent",
              "conflict_ratio", "same_attribute.conflict_ratio", "cancellation_ratio", "mean_cosine")
BEFORE_POINT = {"step": 0, "FE": 0.0, "NR": 1.0, "UR": 1.0, "HS": 1.0,
                **{f"dHR {d}": 0.0 for d in DOMAINS}}
HR_GRADES = {"nonexistent": ("correct", "incorrect")}  # else ("incorrect",)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _mean_std(values: Iterable[Any]) -> dict:
    xs = [float(v) for v in values if _is_number(v)]
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else None, "n": len(xs)}


# ------------------------------------------------------------------ spillover by domain

def hr_change(domain: str, pair: list[str]) -> float:
    """One counted item's HR change: after's HR indicator minus Before's (pair = [Before grade, grade])."""
    counted = HR_GRADES.get(domain, ("incorrect",))
    before, after = pair
    return float(after in counted) - float(before in counted)


def target_items(units: Iterable, domain: str) -> dict[str, list[float]]:
    """Per target, the per-item HR changes of a domain, each item averaged over the units (seeds) of that
    target that counted it: ``{target: [change, ...]}`` (items in id order)."""
    by_target: dict[str, dict[str, list[float]]] = {}
    for u in units:
        pairs = ((getattr(u, "domains", None) or {}).get(domain) or {}).get("items") or {}
        items = by_target.setdefault(str(u.target), {})
        for item_id, pair in pairs.items():
            if isinstance(pair, list) and len(pair) == 2:
                items.setdefault(item_id, []).append(hr_change(domain, pair))
    return {t: [statistics.fmean(v) for _, v in sorted(items.items())] for t, items in by_target.items() if items}


def domain_rows(units: list, n_boot: int = 2000, seed: int = 0) -> dict[str, dict]:
    """``{domain: {"n_units", "n_targets", "n_items", "accuracy", "hr", "abstention", "before_hr", "dHR":
    {"estimate", "low", "high"}}}`` for the units of one row (module docstring)."""
    from ..bootstrap import hierarchical_bootstrap

    out = {}
    for domain in DOMAINS:
        have = [u for u in units if ((getattr(u, "domains", None) or {}).get(domain) or {}).get("n")]
        if not have:
            continue
        stats = {k: _mean_std(u.domains[domain].get(k) for u in have)["mean"]
                 for k in ("accuracy", "hr", "abstention", "before_hr")}
        per_target = target_items(have, domain)
        ci = hierarchical_bootstrap(per_target, n_boot=n_boot, seed=seed)
        out[domain] = {"n_units": len(have), "n_targets": len(per_target),
                       "n_items": sum(len(v) for v in per_target.values()), **stats,
                       "dHR": {"estimate": ci.estimate, "low": ci.low, "high": ci.high}}
    return out


# ------------------------------------------------------------------ equal forgetting

def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if k in ("cosine_matrix", "labels", "parameters", "domain_items"):
            continue
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif _is_number(v):
            out[f"{prefix}{k}"] = float(v)
    return out


def unit_checkpoints(unit) -> list[dict]:
    """A trained unit's checkpoints in step order: trajectory rows joined by step with its diagnostics
    (flattened: ``same_attribute.conflict_ratio``), the Before point first when step 0 is not measured."""
    by_step: dict[float, dict] = {}
    for row in list(unit.trajectory) + list(unit.diagnostics):
        step = row.get("step")
        if _is_number(step):
            by_step.setdefault(float(step), {"step": float(step)}).update(
                {k: v for k, v in _flat(row).items() if k != "step"})
    points = [by_step[s] for s in sorted(by_step)]
    if not points or not _is_number(points[0].get("FE")) or points[0]["step"] != 0:
        start = points.pop(0) if points and points[0]["step"] == 0 else {}
        points.insert(0, {**BEFORE_POINT, **{k: v for k, v in start.items() if k not in BEFORE_POINT}})
    return points


def equal_forgetting_rows(units: list, levels=FE_LEVELS, keys=AT_FE_KEYS) -> dict[str, dict]:
    """``{"0.5": {"n_units", "n_reached", "step": mean_std, <key>: mean_std, ...}, "0.8": ...}`` over the
    trained units that have checkpoints (empty when none has)."""
    from ..tradeoff import at_levels

    readings = [at_levels(unit_checkpoints(u), levels, keys) for u in units if u.trajectory]
    if not readings:
        return {}
    out = {}
    for level in (f"{x:g}" for x in levels):
        reached = [r[level] for r in readings if r[level]["reached"]]
        row: dict = {"n_units": len(readings), "n_reached": len(reached), "step": _mean_std(r["step"] for r in reached)}
        for k in keys:
            row[k] = _mean_std(r.get(k) for r in reached)
        out[level] = row
    return out


def equal_forgetting_metrics(at_fe: dict) -> dict[str, dict]:
    """The row metrics from ``equal_forgetting_rows``: ``Steps to FE=0.8``, ``Reached FE=0.8`` (share of
    units), ``UR at FE=0.8`` ... (the FE = 0.5 trajectory scores stay ``trajectory_summary``'s)."""
    out = {}
    for level, row in at_fe.items():
        out[f"Steps to FE={level}"] = row["step"]
        out[f"Reached FE={level}"] = {"mean": row["n_reached"] / row["n_units"], "std": None, "n": row["n_units"]}
        if level != "0.5":
            for k in ("UR", "NR", "HS"):
                out[f"{k} at FE={level}"] = row[k]
    return out


# ------------------------------------------------------------------ utility columns

def utility_columns(units: list) -> dict | None:
    """The informativeness verdicts (column -> check) recorded by the run, from its Before units first."""
    ordered = sorted(units, key=lambda u: u.method != "before")
    for u in ordered:
        checks = getattr(u, "utility_columns", None)
        if checks:
            return checks
    return None


# ------------------------------------------------------------------ Markdown

def _f(v: Any, digits: int = 3) -> str:
    return "–" if not _is_number(v) else f"{v:.{digits}f}"


def _ms(stat: dict | None, digits: int = 2) -> str:
    stat = stat or {}
    text = _f(stat.get("mean"), digits)
    if _is_number(stat.get("std")):
        text += f" ± {stat['std']:.{digits}f}"
    return text


def tables(summary: dict) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """The three sections as ``(title, intro, header, rows)``, for the Markdown and the HTML report (none
    for what the run did not measure)."""
    out = []
    checks = summary.get("utility_columns")
    if checks:
        bad = [c for c, v in checks.items() if not v.get("informative")]
        out.append(("Utility columns on this benchmark",
                    "A column counts in UR only when the Before model is clearly above its floor and its 95% "
                    "interval is narrower than 10 points (rwkuplus.informative). "
                    + (f"Left out of UR: {', '.join(bad)}." if bad else "Every column counts."),
                    ["column", "informative", "why"],
                    [[c, "yes" if v.get("informative") else "no", str(v.get("reason", ""))] for c, v in checks.items()]))
    rows = [r for r in summary["rows"] if r.get("domains")]
    if rows:
        body = []
        for r in rows:
            for domain, d in r["domains"].items():
                ci = d["dHR"]
                body.append([r["method"], r["setting"] or "–", domain, str(d["n_items"]), _f(d["accuracy"]), _f(d["hr"]),
                             _f(d["abstention"]), _f(d["before_hr"]),
                             f"{_f(ci['estimate'])} [{_f(ci['low'])}, {_f(ci['high'])}]"])
        out.append(("Spillover by domain",
                    "Per domain: accuracy, HR (for nonexistent people: fabrication) and abstention after unlearning, "
                    "Before's HR, and dHR with its 95% hierarchical-bootstrap interval (targets, then items). "
                    "Unrelated counts only the general-knowledge items the Before model answers correctly.",
                    ["Method", "Setting", "domain", "items", "accuracy", "HR", "abstention", "HR before", "dHR [95% CI]"],
                    body))
    rows = [r for r in summary["rows"] if r.get("at_fe")]
    if rows:
        body = []
        for r in rows:
            for level, a in r["at_fe"].items():
                body.append([r["method"], r["setting"] or "–", level, f"{a['n_reached']}/{a['n_units']}",
                             _ms(a["step"], 1), _ms(a["UR"]), _ms(a["NR"]), _ms(a["HS"]), _ms(a["dHR same"], 3),
                             _ms(a["dHR related"], 3), _ms(a["dHR unrelated"], 3), _ms(a["dHR nonexistent"], 3),
                             _ms(a["conflict_ratio"], 3)])
        out.append(("At equal forgetting",
                    "Each trained unit's checkpoints read at FE = 0.5 and 0.8 by linear interpolation; mean ± std over "
                    "the units that reach the level (reached = k/n; a unit that never reaches it is left out, – when "
                    "none does). Steps: the training step where FE first reaches the level.",
                    ["Method", "Setting", "FE", "reached", "steps", "UR", "NR", "HS", "dHR same", "dHR related",
                     "dHR unrelated", "dFabrication", "conflict ratio"], body))
    return out


def markdown(summary: dict) -> list[str]:
    """The three sections' Markdown lines (empty when the run measured none of them)."""
    lines: list[str] = []
    for title, intro, header, rows in tables(summary):
        first_numeric = 3 if header[0] == "Method" else 99
        lines += [f"## {title}", "", intro, "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(":---" if k < first_numeric else "---:" for k in range(len(header))) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        lines.append("")
    return lines


def html_section(summary: dict, simple_table, escape, figure=None, colors=None, names=None) -> str:
    """The three sections for the HTML report (``report/html.py``'s table helper and escaping; with its
    ``figure`` helper, the dHR-by-domain bars of ``plots.domain_bars`` first)."""
    parts = []
    if figure is not None and any(r.get("domains") for r in summary["rows"]):
        from . import plots

        names = names or [r["method"] for r in summary["rows"]]  # the report's display names and colours
        rows = [{"name": n, "domains": r.get("domains")} for n, r in zip(names, summary["rows"])]
        parts.append(figure(plots.domain_bars(rows, colors), "dHR by domain per method",
                            "Bars: dHR per domain; error bars: 95% hierarchical-bootstrap intervals.",
                            "No spillover by domain was recorded in this run."))
    for title, intro, header, rows in tables(summary):
        parts.append(f"<h3>{escape(title)}</h3><p>{escape(intro)}</p>"
                     + simple_table(header, rows, numeric_from=3 if header[0] == "Method" else 99))
    return "".join(parts) or "<p>This run measured no spillover by domain, no trajectory and no utility check.</p>"
