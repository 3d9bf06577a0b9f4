"""The claims table: RWKU+'s two claims tested on the records of one or more run folders (one per world).

``claims_table(run_dirs)`` reads the run folders (a folder written by ``rwkuplus run``, or the parent
folder of a run over several worlds, whose ``world-<SEED>/`` sub-folders are run folders) and
returns one row per measure, each with its estimate, its 95% interval and a verdict written by the
rule below. ``rwkuplus claims`` prints and writes it (``claims.json``, ``claims.md``) and can rewrite
the claims block of ``docs/experiments.md``.

Claim 1, knowledge conflict: a counterfactual corpus that contradicts itself makes per-example
gradients fight. CFT-SFT on the ``conflicting`` corpus against the ``consistent`` one (same size,
same attributes, same settings), read at equal forgetting (FE = 0.5, ``tradeoff.at_forgetting``):
the conflict ratio, the same-attribute conflict ratio and the cancellation ratio of the probe items'
gradients, and the optimisation cost, steps to FE = 0.8. Each is the difference conflicting minus
consistent, per target (seeds averaged), predicted > 0.

Claim 2, hallucination spillover: after learning to fabricate about one person, the model
fabricates elsewhere. For CFT-SFT (conflicting) and CFT-DPO against the mean of GA, GD, NPO and RT,
at equal forgetting (FE = 0.5 and 0.8), the HR change (dHR, against the Before model) in each domain
(same, related, unrelated, nonexistent: ``report/comparisons.py``): per target and item, CFT's dHR
minus the baselines' mean dHR (each item's change interpolated at the FE level along the unit's
checkpoints, seeds averaged), predicted > 0. For context, the same differences at equal steps (each
unit's last checkpoint, step 12 in the hidden-costs run) follow in rows of their own: the comparison
the claim replaces, where a method that trains further past a forgetting level shows more spillover.

Intervals: the hierarchical bootstrap (``rwkuplus.bootstrap``) over worlds, then targets, then items
(claim 1's measures are one number per target: worlds, then targets). A unit whose trajectory never
reaches the FE level gives no number there; its target counts only through the units that do, and
a target with no value on either side of a comparison is left out (``n_targets`` says how many
count).

Verdict (``verdict``), with the predicted direction d (+1: the claim predicts a positive difference):
- **supported**: the 95% interval lies entirely on the predicted side of 0, and every world's own
  estimate has the predicted sign;
- **mixed**: the interval lies on the predicted side but some world's estimate does not (the worlds
  disagree), or the estimate has the predicted sign but the interval contains 0 (not resolved);
- **not supported**: the estimate is 0 or has the opposite sign;
- **not measured**: no target has a value.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError

BASELINES = ("ga", "gd", "npo", "rt")
CFT_METHODS = (("cft-sft", "conflicting", "CFT-SFT (conflicting)"), ("cft-dpo", None, "CFT-DPO"))
CONFLICT_MEASURES = (("conflict_ratio", "conflict ratio"), ("same_attribute.conflict_ratio",
                                                               "same-attribute conflict ratio"),
                     ("cancellation_ratio", "cancellation ratio"))
DOMAINS = ("same", "related", "unrelated", "nonexistent")
VERDICTS = ("supported", "mixed", "not supported", "not measured")


@dataclass
class ClaimRow:
    claim: str
    measure: str
    comparison: str
    level: float | None  # the FE level it is read at; None: the last checkpoint (equal steps)
    estimate: float | None
    low: float | None
    high: float | None
    verdict: str
    n_worlds: int = 0
    n_targets: int = 0
    n_items: int = 0
    per_world: dict[str, float | None] = field(default_factory=dict)
    direction: int = 1

    def to_json(self) -> dict:
        return asdict(self)


def verdict(estimate: float | None, low: float | None, high: float | None, per_world: Iterable[float | None],
            direction: int = 1) -> str:
    """The decision rule of the module docstring."""
    if estimate is None or low is None or high is None:
        return "not measured"
    est, lo = direction * estimate, min(direction * low, direction * high)
    if est <= 0:
        return "not supported"
    if lo > 0:
        worlds = [w for w in per_world if w is not None]
        return "supported" if all(direction * w > 0 for w in worlds) else "mixed"
    return "mixed"


# ------------------------------------------------------------------ reading run folders

def run_folders(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders from the given paths: a run folder itself, or a parent whose sub-folders are run folders."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "run.json").is_file():
            out.append(p)
            continue
        subs = sorted(q for q in p.glob("*/") if (q / "run.json").is_file()) if p.is_dir() else []
        if not subs:
            raise UserError(f"{p}: not a run folder (no run.json) and no run folders inside; expected the output "
                            "folder of 'rwkuplus run'.")
        out += subs
    return out


def _world_name(run, folder: Path) -> str:
    """``world <seed>`` for a synthetic world (its configuration's seed), else the revision, path or folder."""
    b = run.benchmark if isinstance(run.benchmark, dict) else {}
    seed = (b.get("world_config") or {}).get("seed") if b.get("kind") == "world" else None
    if seed is not None:
        return f"world {seed}"
    return str(b.get("revision") or b.get("path") or folder.name)


def _runs(paths: Iterable[str | Path]) -> list[tuple[str, Any]]:
    """``(world name, Run)`` for each run folder among ``paths``."""
    from .report.summary import load_run

    out = []
    for folder in run_folders(paths):
        run = load_run(folder)
        out.append((_world_name(run, folder), run))
    return out


def _worlds_of(runs: list[tuple[str, Any]]) -> dict[str, list]:
    worlds: dict[str, list] = {}
    for name, run in runs:
        worlds.setdefault(name, []).extend(u for u in run.units if u.ok)
    return worlds


def load_worlds(paths: Iterable[str | Path]) -> dict[str, list]:
    """``{world: [finished UnitResult, ...]}`` over the run folders (two folders of one world are joined)."""
    return _worlds_of(_runs(paths))


def _unit_hours(runs: list[tuple[str, Any]]) -> dict[str, float]:
    """``{world: hours}``: the finished units' own times summed (``result.json`` "seconds"), whatever else
    ran on the machine beside them."""
    out: dict[str, float] = {}
    for name, run in runs:
        out[name] = out.get(name, 0.0) + sum(u.seconds or 0.0 for u in run.units) / 3600
    return dict(sorted(out.items()))


def _planned(runs: list[tuple[str, Any]]) -> dict[str, int]:
    """``{world: units planned}``: finished, failed and not yet run (a run writes its plan into
    ``run.json`` when it starts), so that a table from a run part-way says so."""
    out: dict[str, int] = {}
    for name, run in runs:
        out[name] = out.get(name, 0) + len(run.units) + len(run.pending)
    return dict(sorted(out.items()))


# ------------------------------------------------------------------ per-unit readings

def _is(unit, method: str, corpus: str | None) -> bool:
    return unit.method == method and (corpus is None or (unit.corpus or "conflicting") == corpus)


def _reading(unit, key: str, level: float) -> float | None:
    from .report.comparisons import unit_checkpoints
    from .tradeoff import at_forgetting

    r = at_forgetting(unit_checkpoints(unit), level, [key])
    return r["step"] if key == "step" else r.get(key)


def item_changes(unit, domain: str, level: float | None) -> dict[str, float] | None:
    """Each counted item's HR change at FE = ``level``, interpolated along the unit's checkpoints (their
    ``domain_items``; the Before point: every change 0); at the last checkpoint when ``level`` is None.
    None when FE never reaches the level or the checkpoints hold no items of the domain."""
    from .tradeoff import value_at

    rows = sorted((r for r in unit.trajectory if isinstance(r.get("step"), (int, float))), key=lambda r: r["step"])
    rows = [r for r in rows if isinstance(r.get("FE"), (int, float))]
    ids = sorted({i for r in rows for i in ((r.get("domain_items") or {}).get(domain) or {})})
    if not ids:
        return None
    if level is None:
        last = (rows[-1].get("domain_items") or {}).get(domain) or {}
        return {i: float(v) for i, v in last.items() if isinstance(v, (int, float))} or None
    fe = [0.0] + [float(r["FE"]) for r in rows]
    if value_at(fe, fe, level) is None:
        return None
    out = {}
    for i in ids:
        ys = [0.0] + [((r.get("domain_items") or {}).get(domain) or {}).get(i) for r in rows]
        v = value_at(fe, ys, level)
        if v is not None:
            out[i] = v
    return out


def _mean(values: Iterable[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return statistics.fmean(xs) if xs else None


def _by_target(units: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for u in units:
        out.setdefault(str(u.target), []).append(u)
    return out


# ------------------------------------------------------------------ the rows

def _row(claim: str, measure: str, comparison: str, level, data: dict[str, dict[str, list[float]]],
         n_boot: int, seed: int, direction: int = 1) -> ClaimRow:
    from .bootstrap import hierarchical_bootstrap

    data = {w: {t: v for t, v in ts.items() if v} for w, ts in data.items()}
    data = {w: ts for w, ts in data.items() if ts}
    ci = hierarchical_bootstrap(data, n_boot=n_boot, seed=seed)
    per_world = {w: hierarchical_bootstrap(ts, n_boot=1).estimate for w, ts in data.items()}
    row = ClaimRow(claim, measure, comparison, level, ci.estimate, ci.low, ci.high,
                   verdict(ci.estimate, ci.low, ci.high, per_world.values(), direction),
                   n_worlds=len(data), n_targets=sum(len(ts) for ts in data.values()),
                   n_items=sum(len(v) for ts in data.values() for v in ts.values()), per_world=per_world,
                   direction=direction)
    return row


def claim1_rows(worlds: dict[str, list], n_boot: int = 2000, seed: int = 0) -> list[ClaimRow]:
    comparison = "CFT-SFT conflicting - consistent"
    rows = []
    measures = [(k, name, 0.5) for k, name in CONFLICT_MEASURES] + [("step", "steps to FE = 0.8", 0.8)]
    for key, name, level in measures:
        data: dict[str, dict[str, list[float]]] = {}
        for world, units in worlds.items():
            for target, us in _by_target([u for u in units if u.method == "cft-sft"]).items():
                conf = _mean(_reading(u, key, level) for u in us if _is(u, "cft-sft", "conflicting"))
                cons = _mean(_reading(u, key, level) for u in us if _is(u, "cft-sft", "consistent"))
                if conf is not None and cons is not None:
                    data.setdefault(world, {})[target] = [conf - cons]
        rows.append(_row("1: knowledge conflict", name + (f" at FE = {level:g}" if key != "step" else ""),
                         comparison, level, data, n_boot, seed))
    return rows


def _method_items(units: list, domain: str, level: float) -> dict[str, float] | None:
    """Per item, the mean over the units (seeds) of its change at the level; None when no unit has one."""
    per_unit = [c for c in (item_changes(u, domain, level) for u in units) if c]
    if not per_unit:
        return None
    ids = sorted({i for c in per_unit for i in c})
    return {i: statistics.fmean(c[i] for c in per_unit if i in c) for i in ids}


def _baselines_text(counted: set[str]) -> str:
    """``mean of GA, GD, NPO, RT``; naming the baselines that never reached the level where some did not."""
    names = [m.upper() for m in BASELINES if m in counted]
    missing = [m.upper() for m in BASELINES if m not in counted]
    if not names or not missing:
        return "mean of " + ", ".join(m.upper() for m in BASELINES)
    return f"mean of {', '.join(names)} ({', '.join(missing)}: FE never reaches the level)"


def claim2_rows(worlds: dict[str, list], levels=(0.5, 0.8, None), n_boot: int = 2000,
                seed: int = 0) -> list[ClaimRow]:
    """Claim 2's rows at each level; a level None: at the last checkpoint (equal steps, for context)."""
    rows = []
    for method, corpus, label in CFT_METHODS:
        for level in levels:
            for domain in DOMAINS:
                data: dict[str, dict[str, list[float]]] = {}
                counted: set[str] = set()  # the baselines that reach the level on some compared target
                for world, units in worlds.items():
                    for target, us in _by_target(units).items():
                        cft = _method_items([u for u in us if _is(u, method, corpus)], domain, level)
                        reading = {m: _method_items([u for u in us if u.method == m], domain, level) for m in BASELINES}
                        bases = [b for b in reading.values() if b]
                        if not cft or not bases:
                            continue
                        counted |= {m for m, b in reading.items() if b}
                        diffs = []
                        for i, v in sorted(cft.items()):
                            others = [b[i] for b in bases if i in b]
                            if others:
                                diffs.append(v - statistics.fmean(others))
                        if diffs:
                            data.setdefault(world, {})[target] = diffs
                claim, where = (("2: hallucination spillover", f"at FE = {level:g}") if level is not None else
                                ("2, context: at equal steps", "at the last checkpoint"))
                rows.append(_row(claim, f"dHR {domain} {where}", f"{label} - {_baselines_text(counted)}", level,
                                 data, n_boot, seed))
    return rows


def claims_table(paths: Iterable[str | Path], n_boot: int = 2000, seed: int = 0) -> dict:
    """The claims table of the run folders (module docstring): ``{"format", "version", "worlds", "rule",
    "rows": [...]}``."""
    runs = _runs(paths)
    worlds = _worlds_of(runs)
    rows = claim1_rows(worlds, n_boot, seed) + claim2_rows(worlds, n_boot=n_boot, seed=seed)
    return {"format": "rwkuplus-claims", "version": 1, "worlds": sorted(worlds),
            "units": {w: len(us) for w, us in sorted(worlds.items())},
            "planned": _planned(runs),
            "unit_hours": _unit_hours(runs),
            "rule": "supported: the 95% interval on the predicted side of 0 and every world's estimate too; "
                    "mixed: the worlds disagree, or the interval contains 0 with the estimate on the predicted "
                    "side; not supported: the estimate 0 or on the other side",
            "n_boot": n_boot, "rows": [r.to_json() for r in rows]}


# ------------------------------------------------------------------ rendering

def _num(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _hours_text(hours: dict[str, float]) -> str:
    if not any(hours.values()):
        return ""
    each = ", ".join(f"{w} {h:.1f}" for w, h in hours.items())
    return (f"Unit time: {sum(hours.values()):.1f} h summed over the units ({each}), each unit's time as it ran, "
            "beside whatever else the machine ran. ")


def to_markdown(table: dict) -> str:
    worlds = table["worlds"]
    done, planned = sum(table["units"].values()), sum((table.get("planned") or {}).values())
    extent = (f"{done} finished units of {planned} planned: **a partial run**, the rows count only the "
              f"targets whose units have finished" if planned > done else f"{done} finished units")
    lines = [f"Worlds: {', '.join(worlds) or 'none'} ({extent}). "
             + _hours_text(table.get("unit_hours") or {}) +
             f"Intervals: hierarchical bootstrap ({table['n_boot']} resamples) over worlds, then targets, then items. "
             f"Verdict rule: {table['rule']}.", "",
             "| claim | measure | comparison | estimate | 95% CI | worlds / targets / items | per world | verdict |",
             "|:---|:---|:---|---:|:---|:---|:---|:---|"]
    for r in table["rows"]:
        per_world = ", ".join(f"{w}: {_num(v)}" for w, v in r["per_world"].items()) or "–"
        ci = "–" if r["low"] is None else f"[{_num(r['low'])}, {_num(r['high'])}]"
        lines.append(f"| {r['claim']} | {r['measure']} | {r['comparison']} | {_num(r['estimate'])} | {ci} | "
                     f"{r['n_worlds']} / {r['n_targets']} / {r['n_items']} | {per_world} | **{r['verdict']}** |")
    return "\n".join(lines) + "\n"


def write_claims(paths: Iterable[str | Path], out_dir: str | Path, n_boot: int = 2000, seed: int = 0) -> dict:
    """Write ``claims.json`` and ``claims.md`` into ``out_dir`` (atomically); returns the table."""
    from .fileio import write_json, write_text

    table = claims_table(paths, n_boot, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "claims.json", table)
    write_text(out / "claims.md", "# RWKU+ claims\n\n" + to_markdown(table))
    return table


def replace_doc_block(text: str, block: str, key: str = "claims") -> str:
    """Put ``block`` between ``<!-- table:KEY -->`` and ``<!-- /table:KEY -->`` (appended when absent)."""
    import re

    begin, end = f"<!-- table:{key} -->", f"<!-- /table:{key} -->"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    new = f"{begin}\n{block.rstrip()}\n{end}"
    if pattern.search(text):
        return pattern.sub(lambda _: new, text)
    return text.rstrip("\n") + f"\n\n{new}\n"
