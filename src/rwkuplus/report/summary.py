"""Summary tables of a run folder: one row per method label and setting, RWKU's columns then RWKU+'s.

``summarize(run_dir)`` reads the records of a run folder (``run.json``, ``config.yaml`` and every
``units/<unit_id>/result.json``) and returns the summary as plain data; ``write_summary(run_dir)``
writes it as ``summary.json``, ``summary.csv`` and ``summary.md`` in the run folder, atomically.
Nothing else is read, so the tables can be rebuilt at any time from the records alone.

How rows are formed
-------------------
- A row is one method label (``unit.label``, e.g. ``CFT-SFT (conflicting)``) in one setting
  (``unit.setting``: ``full``, ``lora``, ...). Its numbers come from the units with status ``ok``.
- Each metric's ``mean`` is over those units (every target and seed of the row, each unit counted
  once) that report the metric (missing, null or non-finite values are skipped, and ``n`` says how
  many were used). ``std`` is the **sample** standard deviation (n - 1 in the denominator) over the
  same units; it is null when fewer than two units report the metric.
- ``dHR`` and ``dFabrication`` carry a 95% interval ``ci`` = [mean of the units' lower bounds, mean
  of their upper bounds]. For one unit this is that unit's (bootstrap) interval; for several it is
  conservative: it assumes the units' errors are perfectly correlated, as they share the
  hallucination probes.
- ``Tokens``, ``FLOPs`` and ``Wall time (s)`` fall back to the unit's ``costs`` (tokens_trained +
  corpus_tokens_generated, flops, wall_seconds) when the metric itself is absent.
- Trajectory scores (from each unit's checkpoints, via ``rwkuplus.tradeoff.trajectory_summary``, a
  Before point FE 0, UR 1, HS 1 put first when the first checkpoint is not step 0):
  ``HV (FE, UR)``, ``HV (FE, HS)`` (hypervolume of the Pareto front against (0, 0)),
  ``UR at FE=0.5`` and ``HS at FE=0.5`` (null when FE never reaches 0.5).
- Row order: Before, ICU, then by setting (full, lora, others alphabetically), then by label.
- When no unit has method ``before`` but ``run.json`` has ``before`` metrics, a Before row is made
  from them (``n_units`` 0, ``std`` null).

summary.json (stable format, version 1)
---------------------------------------
::

    {
      "format": "rwkuplus-summary", "version": 1,
      "benchmark": {"kind": "world" | "rwku", "path": ..., "revision": ...},   # from run.json
      "model": "<model spec>",                                                # from run.json
      "protocol": "world" | "rwku" | "rwku,bbh_match=whole" | null,          # the evaluation protocol
                                                 # (run.json; else the units' result.json; null when unrecorded)
      "config": {...},                           # config.yaml as loaded (null when absent)
      "subject": {"model": ..., "all_thresholds_met": false, "missed": ["nonexistent_refusal"],
                  "checks": [{"check": "forget_FB", "value": 91.2, "base": 6.7, "threshold": 80.0,
                              "met": true}, ...]},   # the subject model's checks (run.json); null when
                                                 # the model is not a subject model (report/subject_table.py)
      "columns": ["Forget FB", ..., "Wall time (s)"],   # the table's metric columns, in order
      "n_units": 12, "n_ok": 11, "n_failed": 1, "n_pending": 0,
      "rows": [
        {"method": "CFT-SFT (conflicting)",  # the unit label: what the table shows
         "method_id": "cft-sft",              # the registry name (unit.method)
         "setting": "full",                   # null when the units give none
         "corpus": "conflicting",             # null for methods without a corpus
         "n_units": 4, "n_targets": 2, "n_seeds": 2, "n_failed": 0,
         "targets": ["..."], "seeds": [0, 1],
         "metrics": {"Forget FB": {"mean": 12.3, "std": 1.2, "n": 4}, ...,
                     "dHR": {"mean": 0.05, "std": 0.01, "n": 4, "ci": [0.01, 0.09]}, ...},
         "costs": {"tokens_trained": {"mean": ..., "std": ..., "n": ...}, ...},
         "trajectory": [{"checkpoint": 0, "step": 0, "n": 4, "FE": ..., "UR": ..., ...}, ...],
         "diagnostics": [{"checkpoint": 0, "step": 0, "n": 4, "conflict_ratio": ...,
                          "same_attribute.conflict_ratio": ..., ...}, ...],
         "domains": {"unrelated": {"n_units": 4, "n_targets": 2, "n_items": 19, "accuracy": ..., "hr": ...,
                                   "abstention": ..., "before_hr": ...,
                                   "dHR": {"estimate": ..., "low": ..., "high": ...}}, ...},
         "at_fe": {"0.5": {"n_units": 4, "n_reached": 3, "step": {"mean", "std", "n"}, "UR": {...}, ...},
                   "0.8": {...}},                   # report/comparisons.py
         "sequence": [{"step": 1, "target": ..., "n": 1, "forget": {target: ...}, "Forget All": ...,
                       "Neighbor All": ..., "Gen": ..., "HR": ...}, ...]},  # target_mode sequential
                                                 # (report/attacks.py); [] otherwise
        ...
      ],
      "failed": [{"unit_id": ..., "method": <label>, "method_id": ..., "setting": ..., "target": ...,
                  "seed": ..., "reason": "..."}, ...],
      "pending": ["<unit_id>", ...],         # planned units without a result.json yet (started or not)
      "utility_columns": {"Gen": {"informative": true, "reason": "...", "mean": ..., "low": ..., "high": ...,
                                  "floor": 25.0, "n": 50}, ...}       # null when not recorded
    }

Every row's ``metrics`` has every name of ``columns`` (``mean`` null where no unit measured it),
plus any other numeric metric its units report (``Abstention``, ``dFabrication``, ``Leaked``,
``Abstained``, ``Fabricated``, ...) and the four trajectory scores when there are trajectories.
``trajectory`` and ``diagnostics`` are the units' checkpoints averaged by checkpoint index over the
checkpoints every unit of the row has (``step`` is the mean step; ``n`` the number of units); they
are empty lists when the units have none. ``std`` is the sample standard deviation.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import UserError
from ..fileio import read_json, write_json, write_text
from .attacks import sequence_mean
from .subject_table import markdown as subject_markdown
from .subject_table import subject_field

SUMMARY_FORMAT = "rwkuplus-summary"
SUMMARY_VERSION = 1

RWKU_COLUMNS = (
    "Forget FB", "Forget QA", "Forget AA", "Forget All",
    "Neighbor FB", "Neighbor QA", "Neighbor All",
    "MIA FM", "MIA RM",
    "Gen", "Rea", "Tru", "Fac", "Flu",
)
RWKUPLUS_COLUMNS = (
    "HR", "Fabrication", "dHR", "FE", "NR", "UR", "HS", "TS", "HTS",
    "Conflict ratio", "Tokens", "FLOPs", "Wall time (s)",
)
OPTIONAL_COLUMNS = frozenset({"Conflict ratio"})  # in the table only where some row measured it
TRAJECTORY_SCORES = ("HV (FE, UR)", "HV (FE, HS)", "UR at FE=0.5", "HS at FE=0.5")
INTERVAL_METRICS = ("dHR", "dFabrication")

# Which direction is better, where it is known: +1 higher, -1 lower. MIA RM should not move: none.
DIRECTION = {
    **{c: -1 for c in ("Forget FB", "Forget QA", "Forget AA", "Forget All")},
    **{c: +1 for c in ("Neighbor FB", "Neighbor QA", "Neighbor All")},
    "MIA FM": +1,
    **{c: +1 for c in ("Gen", "Rea", "Tru", "Fac", "Flu")},
    "HR": -1, "Fabrication": -1, "dHR": -1, "dFabrication": -1, "Abstention": None,
    **{c: +1 for c in ("FE", "NR", "UR", "HS", "TS", "HTS")},
    "Conflict ratio": -1, "Tokens": -1, "FLOPs": -1, "Wall time (s)": -1,
    **{c: +1 for c in TRAJECTORY_SCORES},
}

# How a number is shown in the Markdown table and the HTML report.
ONE_DECIMAL = frozenset(RWKU_COLUMNS) | {"Wall time (s)"}
TWO_DECIMALS = frozenset({"FE", "NR", "UR", "HS", "TS", "HTS", *TRAJECTORY_SCORES})
SCIENTIFIC = frozenset({"FLOPs"})
INTEGER = frozenset({"Tokens"})

SETTING_ORDER = {None: 0, "full": 1, "lora": 2}
SPECIAL_METHODS = {"before": 0, "icu": 1}


# ------------------------------------------------------------------ reading a run folder

@dataclass
class UnitResult:
    """One unit of work as read from ``units/<unit_id>/result.json``."""

    unit_id: str
    method: str
    label: str
    setting: str | None
    target: str | None
    seed: Any
    corpus: str | None
    status: str
    reason: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    costs: dict[str, Any] = field(default_factory=dict)
    trajectory: list[dict] = field(default_factory=list)
    diagnostics: list[dict] = field(default_factory=list)
    protocol: str | None = None  # the evaluation protocol its result names
    domains: dict[str, Any] = field(default_factory=dict)  # spillover by domain (report/comparisons.py)
    utility_columns: dict[str, Any] | None = None  # the informativeness rule's verdicts (rwkuplus.informative)
    sequence: list[dict] = field(default_factory=list)  # sequential unlearning's step rows (report/attacks.py)
    seconds: float | None = None  # the unit's time as it ran (training, checkpoints, final evaluation)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def row_key(self) -> tuple[str, str | None]:
        return (self.label, self.setting)


@dataclass
class Run:
    """The records of a run folder."""

    folder: Path
    benchmark: Any
    model: Any
    config: Any
    before: dict
    units: list[UnitResult]
    pending: list[str]
    info: dict = field(default_factory=dict)  # run.json as read


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _optional_str(obj: dict, key: str, where: Path) -> str | None:
    v = obj.get(key)
    if v is None or isinstance(v, str):
        return v
    raise UserError(f"{where}: field unit.{key} must be a string or null, got {type(v).__name__}.")


def _dict_field(obj: dict, key: str, where: Path) -> dict:
    v = obj.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise UserError(f"{where}: field {key} must be an object, got {type(v).__name__}.")
    return v


def _list_of_dicts(obj: dict, key: str, where: Path) -> list[dict]:
    v = obj.get(key)
    if v is None:
        return []
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise UserError(f"{where}: field {key} must be a list of objects.")
    return v


def read_unit(folder: Path) -> UnitResult:
    """Read and check one ``result.json``; a malformed one is a UserError naming the file and field."""
    path = folder / "result.json"
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object with fields unit, status and metrics.")
    unit = obj.get("unit")
    if not isinstance(unit, dict):
        raise UserError(f"{path}: field unit must be an object with method, label, setting, target and seed.")
    method = unit.get("method")
    if not isinstance(method, str) or not method:
        raise UserError(f"{path}: field unit.method must be a non-empty string.")
    label = _optional_str(unit, "label", path) or method
    status = obj.get("status")
    if status not in ("ok", "failed"):
        raise UserError(f"{path}: field status must be 'ok' or 'failed', got {status!r}.")
    reason = obj.get("reason")
    if reason is not None and not isinstance(reason, str):
        reason = str(reason)
    metrics = _dict_field(obj, "metrics", path)
    for name, value in metrics.items():
        if value is None or _is_number(value) or (isinstance(value, float) and math.isnan(value)):
            continue
        if name.endswith("_ci") and isinstance(value, list) and len(value) == 2:
            continue
        if isinstance(value, (str, bool, list, dict)):
            raise UserError(f"{path}: metric {name!r} must be a number or null, got {value!r}.")
    seed = unit.get("seed")
    if seed is not None and not isinstance(seed, (int, str)):
        raise UserError(f"{path}: field unit.seed must be an integer, got {seed!r}.")
    return UnitResult(
        unit_id=folder.name, method=method, label=label, setting=_optional_str(unit, "setting", path),
        target=_optional_str(unit, "target", path), seed=seed, corpus=_optional_str(unit, "corpus", path),
        status=status, reason=reason, metrics=metrics, costs=_dict_field(obj, "costs", path),
        trajectory=_list_of_dicts(obj, "trajectory", path), diagnostics=_list_of_dicts(obj, "diagnostics", path),
        protocol=_optional_str(obj, "protocol", path),
        domains=_dict_field(obj, "domains", path), utility_columns=_dict_field(obj, "utility_columns", path) or None,
        sequence=_list_of_dicts(_dict_field(obj, "training", path), "sequence", path),
        seconds=float(obj["seconds"]) if _is_number(obj.get("seconds")) else None,
    )


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder; a folder that is not one (no run.json) is a UserError."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder; expected a run folder written by 'rwkuplus run'.")
    run_json = folder / "run.json"
    if not run_json.is_file():
        raise UserError(f"{folder}: not a run folder (no run.json); expected the output folder of 'rwkuplus run'.")
    info = read_json(run_json)
    if not isinstance(info, dict):
        raise UserError(f"{run_json}: expected a JSON object with fields benchmark, model and before.")
    before = info.get("before") or {}
    if not isinstance(before, dict):
        raise UserError(f"{run_json}: field before must be an object of metrics.")
    config = None
    config_path = folder / "config.yaml"
    if config_path.is_file():
        import yaml

        try:
            config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise UserError(f"{config_path}: not valid YAML ({str(e).splitlines()[0]}).") from None
    units, pending = [], []
    units_dir = folder / "units"
    if units_dir.is_dir():
        for sub in sorted(p for p in units_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if (sub / "result.json").is_file():
                units.append(read_unit(sub))
            else:
                pending.append(sub.name)
    finished = {u.unit_id for u in units} | set(pending)
    planned = info.get("units") if isinstance(info.get("units"), list) else []
    pending += [uid for uid in planned if isinstance(uid, str) and uid not in finished]  # not started yet
    return Run(folder=folder, benchmark=info.get("benchmark"), model=info.get("model"), config=config,
               before=before, units=units, pending=pending, info=info)


# ------------------------------------------------------------------ statistics

def mean_std(values: Iterable[Any]) -> dict:
    """``{"mean", "std", "n"}`` of the finite numbers among ``values``; sample std, null below two values."""
    xs = [float(v) for v in values if _is_number(v)]
    if not xs:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else None, "n": len(xs)}


def _unit_metric(unit: UnitResult, name: str) -> Any:
    value = unit.metrics.get(name)
    if _is_number(value):
        return value
    costs = unit.costs
    if name == "Tokens":
        parts = [costs.get("tokens_trained"), costs.get("corpus_tokens_generated")]
        if any(_is_number(p) for p in parts):
            return sum(p for p in parts if _is_number(p))
    elif name == "FLOPs":
        return costs.get("flops")
    elif name == "Wall time (s)":
        return costs.get("wall_seconds")
    return value


def _trajectory_scores(unit: UnitResult) -> dict[str, float | None]:
    from ..tradeoff import TradeOff, trajectory_summary

    points = [p for p in unit.trajectory if any(_is_number(p.get(k)) for k in ("FE", "UR", "HS"))]
    if not points:
        return {}

    def num(p, k):
        v = p.get(k)
        return float(v) if _is_number(v) else None

    offs = [TradeOff(num(p, "FE"), num(p, "NR"), num(p, "UR"), num(p, "HS"), num(p, "TS"), num(p, "HTS"))
            for p in points]
    if points[0].get("step") != 0:
        offs.insert(0, TradeOff(0.0, 1.0, 1.0, 1.0, 0.0, 0.0))
    s = trajectory_summary(offs)
    return {"HV (FE, UR)": s["hypervolume_fe_ur"], "HV (FE, HS)": s["hypervolume_fe_hs"],
            "UR at FE=0.5": s["ur_at_fe_0.5"], "HS at FE=0.5": s["hs_at_fe_0.5"]}


def _flatten(d: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if k in ("cosine_matrix", "labels", "domain_items"):  # per-item data stays in result.json
            continue
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif _is_number(v) and k != "step":
            out[f"{prefix}{k}"] = float(v)
    return out


def mean_checkpoints(series: list[list[dict]]) -> list[dict]:
    """Average checkpoint lists by index over the checkpoints every list has; numeric fields only.

    Nested objects are flattened with dots (``same_attribute.conflict_ratio``); ``step`` is the mean step.
    """
    series = [s for s in series if s]
    if not series:
        return []
    length = min(len(s) for s in series)
    out = []
    for i in range(length):
        flat = [_flatten(s[i]) for s in series]
        names = list(dict.fromkeys(k for f in flat for k in f))
        steps = [s[i].get("step") for s in series if _is_number(s[i].get("step"))]
        row: dict[str, Any] = {"checkpoint": i, "step": statistics.fmean(steps) if steps else None,
                               "n": len(series)}
        for name in names:
            row[name] = mean_std(f.get(name) for f in flat)["mean"]
        out.append(row)
    return out


def _row_order(row: dict) -> tuple:
    setting = row["setting"]
    return (SPECIAL_METHODS.get(row["method_id"], 2), SETTING_ORDER.get(setting, 3),
            "" if setting is None else setting, row["method"])


def _aggregate_row(key: tuple[str, str | None], units: list[UnitResult], failed: int) -> dict:
    label, setting = key
    ok = [u for u in units if u.ok]
    first = units[0]
    names = list(RWKU_COLUMNS) + list(RWKUPLUS_COLUMNS)
    extra = [n for u in ok for n, v in u.metrics.items() if n not in names and not n.endswith("_ci")
             and (_is_number(v) or v is None)]
    names += list(dict.fromkeys(extra))
    metrics = {name: mean_std(_unit_metric(u, name) for u in ok) for name in names}
    for name in INTERVAL_METRICS:
        cis = [u.metrics.get(f"{name}_ci") for u in ok]
        cis = [c for c in cis if isinstance(c, list) and len(c) == 2 and all(_is_number(x) for x in c)]
        if name in metrics and cis:
            metrics[name]["ci"] = [statistics.fmean(c[0] for c in cis), statistics.fmean(c[1] for c in cis)]
    scores = [_trajectory_scores(u) for u in ok]
    if any(scores):
        for name in TRAJECTORY_SCORES:
            metrics[name] = mean_std(s.get(name) for s in scores)
    from .comparisons import domain_rows, equal_forgetting_metrics, equal_forgetting_rows

    domains = domain_rows(ok)
    for domain, d in domains.items():  # the interval over targets, then items (not the mean of the units')
        if f"dHR {domain}" in metrics:
            metrics[f"dHR {domain}"]["ci"] = [d["dHR"]["low"], d["dHR"]["high"]]
    at_fe = equal_forgetting_rows(ok)
    metrics.update(equal_forgetting_metrics(at_fe))
    cost_names = list(dict.fromkeys(k for u in ok for k, v in u.costs.items() if _is_number(v)))
    targets = sorted({u.target for u in ok if u.target is not None})
    seeds = sorted({u.seed for u in ok if u.seed is not None}, key=lambda s: (str(type(s)), s))
    return {
        "method": label, "method_id": first.method, "setting": setting, "corpus": first.corpus,
        "n_units": len(ok), "n_targets": len(targets), "n_seeds": len(seeds), "n_failed": failed,
        "targets": targets, "seeds": seeds,
        "metrics": metrics,
        "costs": {k: mean_std(u.costs.get(k) for u in ok) for k in cost_names},
        "trajectory": mean_checkpoints([u.trajectory for u in ok]),
        "diagnostics": mean_checkpoints([u.diagnostics for u in ok]),
        "domains": domains, "at_fe": at_fe,
        "sequence": sequence_mean([u.sequence for u in ok]),
    }


def _before_row(before: dict) -> dict:
    names = list(RWKU_COLUMNS) + list(RWKUPLUS_COLUMNS)
    names += [n for n in before if n not in names and not n.endswith("_ci")]
    metrics = {}
    for n in names:
        v = before.get(n)
        metrics[n] = {"mean": float(v), "std": None, "n": 1} if _is_number(v) else {"mean": None, "std": None, "n": 0}
    return {"method": "Before", "method_id": "before", "setting": None, "corpus": None, "n_units": 0,
            "n_targets": 0, "n_seeds": 0, "n_failed": 0, "targets": [], "seeds": [], "metrics": metrics,
            "costs": {}, "trajectory": [], "diagnostics": []}


def table_columns(rows: list[dict]) -> list[str]:
    """The metric columns of the table, in order: RWKU's, then RWKU+'s (optional ones only if measured)."""
    cols = list(RWKU_COLUMNS)
    for c in RWKUPLUS_COLUMNS:
        if c in OPTIONAL_COLUMNS and not any(r["metrics"].get(c, {}).get("mean") is not None for r in rows):
            continue
        cols.append(c)
    return cols


def summarize_run(run: Run) -> dict:
    """The summary (see the module docstring for its format) of an already loaded run."""
    groups: dict[tuple, list[UnitResult]] = {}
    for u in run.units:
        groups.setdefault(u.row_key, []).append(u)
    rows = []
    for key, units in groups.items():
        failed = sum(not u.ok for u in units)
        if len(units) > failed:
            rows.append(_aggregate_row(key, units, failed))
    if not any(r["method_id"] == "before" for r in rows) and any(_is_number(v) for v in run.before.values()):
        rows.append(_before_row(run.before))
    rows.sort(key=_row_order)
    failed = [{"unit_id": u.unit_id, "method": u.label, "method_id": u.method, "setting": u.setting,
               "target": u.target, "seed": u.seed, "reason": u.reason or "no reason given"}
              for u in run.units if not u.ok]
    return {
        "format": SUMMARY_FORMAT, "version": SUMMARY_VERSION,
        "benchmark": run.benchmark, "model": run.model, "protocol": run_protocol(run), "config": run.config,
        "subject": subject_field(run.info, run.folder / "run.json"),
        "columns": table_columns(rows),
        "n_units": len(run.units), "n_ok": sum(u.ok for u in run.units), "n_failed": len(failed),
        "n_pending": len(run.pending),
        "rows": rows, "failed": failed, "pending": list(run.pending),
        "utility_columns": _utility_columns(run.units),
    }


def _utility_columns(units: list[UnitResult]) -> dict | None:
    from .comparisons import utility_columns

    return utility_columns(units)


def run_protocol(run: Run) -> str | None:
    """The evaluation protocol of a run: run.json's, else the one its units' results name (None when
    unrecorded, or when units name different ones)."""
    if isinstance(run.info.get("protocol"), str):
        return run.info["protocol"]
    names = {u.protocol for u in run.units} - {None}
    return names.pop() if len(names) == 1 else None


def summarize(run_dir: str | Path) -> dict:
    """Summarize a run folder from its records (see the module docstring for the format)."""
    return summarize_run(load_run(run_dir))


# ------------------------------------------------------------------ formatting

def format_number(name: str, value: Any) -> str:
    """One number as the tables show it: x100 scores 1 decimal, rates 3, trade-off scores 2, FLOPs 1.2e+15."""
    if not _is_number(value):
        return "–"
    if name in SCIENTIFIC:
        return "0" if value == 0 else f"{value:.2e}"
    if name in INTEGER:
        return f"{value:,.0f}" if abs(value) < 1e9 else f"{value:.2e}"
    if name in ONE_DECIMAL:
        return f"{value:.1f}"
    if name in TWO_DECIMALS:
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_cell(name: str, stat: dict | None, with_std: bool = True) -> str:
    """``mean ± std`` (just the mean when there is no spread), ``–`` when unmeasured."""
    stat = stat or {}
    text = format_number(name, stat.get("mean"))
    if with_std and _is_number(stat.get("mean")) and _is_number(stat.get("std")):
        text += f" ± {format_number(name, stat['std'])}"
    return text


def describe_benchmark(benchmark: Any) -> str:
    """``kind, path, revision N`` for a run's benchmark field."""
    if isinstance(benchmark, dict):
        parts = [str(benchmark.get("kind") or "?")]
        if benchmark.get("path"):
            parts.append(str(benchmark["path"]))
        if benchmark.get("revision"):
            parts.append(f"revision {benchmark['revision']}")
        return ", ".join(parts)
    return "?" if benchmark is None else str(benchmark)


def to_markdown(summary: dict) -> str:
    """The summary as Markdown: run line, the table (mean ± sample std), failed units."""
    cols = summary["columns"]
    lines = [
        "# RWKU+ summary", "",
        f"Benchmark: {describe_benchmark(summary.get('benchmark'))}. Model: {summary.get('model') or '?'}. "
        f"Evaluation protocol: {summary.get('protocol') or 'not recorded'}. "
        f"Units: {summary['n_ok']} ok, {summary['n_failed']} failed"
        + (f", {summary['n_pending']} unfinished" if summary.get("n_pending") else "") + ".",
        "",
        *subject_markdown(summary.get("subject")),
        "Cells are mean ± sample standard deviation over the targets and seeds of a row (n = units). "
        "Forget, Neighbor, MIA and utility scores are x100 as in RWKU; HR, Fabrication, dHR and rates are "
        "fractions; FE, NR, UR, HS, TS and HTS are in [0, 1].",
        "",
    ]
    header = ["Method", "Setting", "n"] + cols
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":---", ":---", "---:"] + ["---:"] * len(cols)) + "|")
    for row in summary["rows"]:
        cells = [row["method"].replace("|", "\\|"), row["setting"] or "–", str(row["n_units"])]
        cells += [format_cell(c, row["metrics"].get(c)) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    if not summary["rows"]:
        lines.append("| (no finished units) |" + " |" * (len(header) - 1))
    lines.append("")
    from .attacks import markdown as attacks_markdown
    from .comparisons import markdown as comparisons_markdown

    lines += comparisons_markdown(summary)
    lines += attacks_markdown(summary)
    if summary["failed"]:
        lines += [f"## Failed units ({summary['n_failed']})", "", "| Unit | Method | Setting | Target | Seed | Reason |",
                  "|:---|:---|:---|:---|---:|:---|"]
        for f in summary["failed"]:
            reason = " ".join(str(f["reason"]).split()).replace("|", "\\|")
            lines.append(f"| {f['unit_id']} | {f['method']} | {f['setting'] or '–'} | {f['target'] or '–'} | "
                         f"{'–' if f['seed'] is None else f['seed']} | {reason} |")
        lines.append("")
    return "\n".join(lines)


def csv_header(summary: dict) -> list[str]:
    """CSV columns: method, setting, counts, every table column's mean in order, then their stds, then CIs."""
    cols = summary["columns"]
    head = ["method", "setting", "n_units", "n_targets", "n_seeds", "n_failed"] + cols + [f"{c} std" for c in cols]
    for name in INTERVAL_METRICS:
        if name in cols:
            head += [f"{name} ci low", f"{name} ci high"]
    return head


def to_csv(summary: dict) -> str:
    """The table as CSV, full precision; empty cells where a value is missing."""
    cols = summary["columns"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(csv_header(summary))

    def cell(v):
        return "" if v is None else repr(float(v)) if isinstance(v, float) else v

    for row in summary["rows"]:
        m = row["metrics"]
        values = [row["method"], row["setting"] or "", row["n_units"], row["n_targets"], row["n_seeds"],
                  row["n_failed"]]
        values += [cell(m.get(c, {}).get("mean")) for c in cols]
        values += [cell(m.get(c, {}).get("std")) for c in cols]
        for name in INTERVAL_METRICS:
            if name in cols:
                ci = m.get(name, {}).get("ci") or [None, None]
                values += [cell(ci[0]), cell(ci[1])]
        writer.writerow(values)
    return buf.getvalue()


def write_summary(run_dir: str | Path, summary: dict | None = None) -> dict:
    """Write summary.json, summary.csv and summary.md into the run folder (atomically); returns the summary."""
    folder = Path(run_dir)
    if summary is None:
        summary = summarize(folder)
    write_json(folder / "summary.json", summary)
    write_text(folder / "summary.csv", to_csv(summary))
    write_text(folder / "summary.md", to_markdown(summary))
    return summary
