"""Which utility columns measure anything on a benchmark: the rule that decides what UR averages.

A utility column (Gen, Rea, Tru, Fac, Flu) can only show collateral damage if the Before model
scores clearly above what a model with no ability would (its *floor*) and if there are enough items
to tell a drop from noise. On a small model and a short item list neither holds for every column
(on the default run Rea is 0 for every model, Before included; Tru moves in steps of 10 points), and
averaging such a column into UR dilutes it with a number that cannot move, or moves by chance.

The rule (``check_column``), on the Before model's per-item scores of the column (x100, as the
tables show them):

- the 95% interval of the Before score: for per-item scores in [0, 100] (Gen, Rea, Tru MC1, Fac F1)
  the Wilson score interval at the mean with n items (exact for 0/1 scores; conservative for scores
  in between, whose variance is at most p(1 - p)), which, unlike the bootstrap, does not collapse to
  zero width when every item is right; for unbounded scores (Flu, entropy x100) the normal interval
  mean +- 1.96 s / sqrt(n);
- the column is **informative** when its lower bound is above its floor (``FLOORS``: chance for
  multiple choice, 25 for four-choice Gen, 100 x the mean of 1 / choices for Tru MC1; 0 otherwise)
  **and** the interval is narrower than ``MAX_WIDTH`` = 10 points;
- otherwise it is **uninformative**, with the reason, and UR on that benchmark leaves it out
  (``informative_columns``). No informative column: UR is n/a, never a made-up number.
"""

from __future__ import annotations

import math
import statistics
from typing import Mapping, Sequence

MAX_WIDTH = 10.0  # points (x100)
Z95 = 1.959963984540054
BOUNDED = frozenset({"Gen", "Rea", "Tru", "Fac"})  # per-item scores in [0, 100]
FLOORS = {"Gen": 25.0, "Rea": 0.0, "Tru": 25.0, "Fac": 0.0, "Flu": 0.0}  # Tru: replaced by the items' own chance


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` (in [0, 1]) observed on ``n`` items."""
    if n <= 0:
        raise ValueError("wilson: n should be positive.")
    p = min(1.0, max(0.0, p))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if p == 0 else low), (1.0 if p == 1 else high)  # exact at the ends (no rounding)


def interval(scores: Sequence[float], bounded: bool) -> tuple[float, float]:
    """The 95% interval of the mean of per-item ``scores`` (x100): Wilson when ``bounded``, else normal."""
    n = len(scores)
    mean = statistics.fmean(scores)
    if bounded:
        low, high = wilson(mean / 100.0, n)
        return 100.0 * low, 100.0 * high
    half = Z95 * statistics.stdev(scores) / math.sqrt(n) if n > 1 else math.inf
    return mean - half, mean + half


def check_column(name: str, scores: Sequence[float], floor: float | None = None,
                 max_width: float = MAX_WIDTH) -> dict:
    """``{"column", "informative", "reason", "mean", "low", "high", "width", "floor", "n"}`` for one column.

    ``scores``: the Before model's per-item scores x100 (missing ones dropped). ``floor`` defaults to
    ``FLOORS[name]`` (0 for a column it does not know).
    """
    xs = [float(s) for s in scores if isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s)]
    floor = FLOORS.get(name, 0.0) if floor is None else float(floor)
    out = {"column": name, "informative": False, "reason": "", "mean": None, "low": None, "high": None,
           "width": None, "floor": floor, "n": len(xs)}
    if not xs:
        out["reason"] = "no items measured"
        return out
    low, high = interval(xs, name in BOUNDED)
    mean = statistics.fmean(xs)
    out.update(mean=mean, low=low, high=high, width=high - low)
    if not low > floor:
        out["reason"] = (f"Before {mean:.1f} is not clearly above its floor {floor:g} "
                         f"(95% interval {low:.1f}-{high:.1f}, {len(xs)} items)")
    elif not high - low < max_width:
        out["reason"] = (f"95% interval {high - low:.1f} points wide with {len(xs)} items "
                         f"(needs under {max_width:g})")
    else:
        out["informative"] = True
        out["reason"] = f"Before {mean:.1f}, 95% interval {low:.1f}-{high:.1f} ({len(xs)} items)"
    return out


def check_columns(scores: Mapping[str, Sequence[float]], floors: Mapping[str, float] | None = None) -> dict[str, dict]:
    """``check_column`` for each column of ``scores`` (column -> the Before model's per-item scores x100)."""
    floors = floors or {}
    return {name: check_column(name, values, floors.get(name)) for name, values in scores.items()}


def informative_columns(checks: Mapping[str, dict] | None, columns: Sequence[str]) -> list[str]:
    """The columns UR averages: those ``checks`` marks informative; every column when there are no checks
    (a benchmark whose Before records were not read, e.g. an older run)."""
    if not checks:
        return list(columns)
    return [c for c in columns if (checks.get(c) or {}).get("informative")]


def tru_floor(n_choices: Sequence[int]) -> float:
    """Tru MC1's chance level x100: the mean over items of 1 / number of MC1 choices."""
    ns = [n for n in n_choices if n > 0]
    return 100.0 * statistics.fmean(1.0 / n for n in ns) if ns else FLOORS["Tru"]


# utility record file (``utility.<set>.jsonl``) -> (column, per-item field, scale to x100)
RECORD_FIELDS = {"mmlu": ("Gen", "correct", 100.0), "bbh": ("Rea", "correct", 100.0),
                 "truthfulqa": ("Tru", "mc1", 100.0), "triviaqa": ("Fac", "f1", 100.0),
                 "fluency": ("Flu", "entropy", 100.0)}


def scores_from_records(records: Mapping[str, Sequence[dict]]) -> dict[str, list[float]]:
    """Per-item scores x100 by column from the utility records (set name -> rows, as the evaluation writes)."""
    out: dict[str, list[float]] = {}
    for set_name, rows in records.items():
        if set_name not in RECORD_FIELDS:
            continue
        column, key, scale = RECORD_FIELDS[set_name]
        out[column] = [scale * float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return out


def read_utility_scores(eval_folder) -> dict[str, list[float]]:
    """Per-item scores by column from an evaluation folder's ``utility.<set>.jsonl`` files (any depth)."""
    from pathlib import Path

    from .fileio import read_jsonl

    records: dict[str, list[dict]] = {}
    for path in sorted(Path(eval_folder).rglob("utility.*.jsonl")):
        records.setdefault(path.name[len("utility."):-len(".jsonl")], []).extend(read_jsonl(path))
    return scores_from_records(records)
