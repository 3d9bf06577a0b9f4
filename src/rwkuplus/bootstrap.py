"""The hierarchical bootstrap: intervals that respect how the data were sampled (worlds, targets, items).

Items of one target are not independent replicates of the benchmark, and neither are the targets of
one world: a world's subject model, people and facts are shared by everything measured on it. The
flat item bootstrap treats every item as an independent draw and so gives intervals that are too
narrow when most of the variation is between worlds or between targets. This one resamples each
level within the level above:

1. draw as many worlds as there are, with replacement;
2. within each drawn world, draw as many of its targets as it has, with replacement;
3. within each drawn target, draw as many of its items as it has, with replacement;

and takes the statistic of each replicate: the mean over the drawn worlds of the mean over their drawn
targets of the mean over their drawn items (each level weighs its groups equally, as the estimate
does). A group drawn twice gets two independent resamples of what is under it. The interval is the
percentile interval of the replicates; the estimate is the same nested mean on the data as given.

The data are nested lists (or mappings, whose values are used in key order) of any depth; the leaves
are numbers: ``{"world-0": {"Ann": [1, 0, 1], "Bob": [0, 0]}, "world-1": {...}}``. A group with a single
number (``[0.4]`` or ``0.4``) is kept as it is at its level (a per-target score such as FE). Paired
comparisons pass the per-item differences (after - before) as leaves. Deterministic in ``seed``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

DEFAULT_N_BOOT = 2000


@dataclass
class Interval:
    """A point estimate with its bootstrap percentile interval (``level``: 0.95) and the group counts."""

    estimate: float | None
    low: float | None
    high: float | None
    level: float = 0.95
    n_boot: int = 0
    counts: tuple[int, ...] = ()  # groups at each level: (worlds, targets, items) summed over their parents

    def to_json(self) -> dict:
        out = asdict(self)
        out["counts"] = list(self.counts)
        return out

    @property
    def width(self) -> float | None:
        return None if self.low is None or self.high is None else self.high - self.low


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and np.isfinite(v)


def _children(node: Any) -> list:
    return list(node.values()) if isinstance(node, Mapping) else list(node)


def _clean(node: Any) -> Any:
    """Numbers stay; groups keep their non-empty children (non-finite numbers dropped); None when empty."""
    if _is_number(node):
        return float(node)
    if node is None or isinstance(node, (str, bytes, bool, int, float, np.number)):
        return None  # a missing or non-finite value
    kids = [c for c in (_clean(k) for k in _children(node)) if c is not None]
    if not kids:
        return None
    if all(isinstance(k, float) for k in kids):
        return np.asarray(kids, dtype=float)
    if any(isinstance(k, float) for k in kids):
        raise ValueError("hierarchical_bootstrap: a group mixes numbers and subgroups; nest every leaf to the same depth.")
    return kids


def _estimate(node: Any) -> float:
    if isinstance(node, float):
        return node
    if isinstance(node, np.ndarray):
        return float(node.mean())
    return float(np.mean([_estimate(k) for k in node]))


def _draw(node: Any, rng: np.random.Generator, m: int) -> np.ndarray:
    """``m`` independent bootstrap replicates of ``node``'s nested mean."""
    if m == 0:
        return np.empty(0)
    if isinstance(node, float):
        return np.full(m, node)
    if isinstance(node, np.ndarray):
        out = np.empty(m)
        rows = max(1, 2_000_000 // max(1, len(node)))  # bounded memory for long item lists
        for start in range(0, m, rows):
            stop = min(m, start + rows)
            out[start:stop] = node[rng.integers(0, len(node), size=(stop - start, len(node)))].mean(axis=1)
        return out
    k = len(node)
    picks = rng.integers(0, k, size=(m, k))
    values = np.empty((m, k))
    for j, child in enumerate(node):
        where = picks == j
        values[where] = _draw(child, rng, int(where.sum()))
    return values.mean(axis=1)


def _counts(node: Any) -> tuple[int, ...]:
    if isinstance(node, float):
        return ()
    if isinstance(node, np.ndarray):
        return (len(node),)
    below = [_counts(k) for k in node]
    depth = max(len(b) for b in below)
    return (len(node),) + tuple(sum(b[i] for b in below if len(b) > i) for i in range(depth))


def hierarchical_bootstrap(data: Any, n_boot: int = DEFAULT_N_BOOT, seed: int = 0, level: float = 0.95) -> Interval:
    """The nested mean of ``data`` with its hierarchical-bootstrap percentile interval (module docstring).

    No numbers at all: estimate and bounds are None. ``level`` is the interval's coverage (0.95).
    """
    if not 0 < level < 1:
        raise ValueError(f"hierarchical_bootstrap: level should be in (0, 1), got {level}.")
    if n_boot < 1:
        raise ValueError(f"hierarchical_bootstrap: n_boot should be positive, got {n_boot}.")
    node = _clean(data)
    if node is None:
        return Interval(None, None, None, level, 0, ())
    reps = _draw(node, np.random.default_rng(seed), n_boot)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(reps, [tail, 100 - tail])
    return Interval(_estimate(node), float(low), float(high), level, n_boot, _counts(node))


def flat_bootstrap(values: Sequence[float], n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                   level: float = 0.95) -> Interval:
    """The ordinary item bootstrap of a mean: every value an independent draw (one level)."""
    return hierarchical_bootstrap(list(values), n_boot, seed, level)


def flatten(data: Any) -> list[float]:
    """Every leaf number of nested data, in order (what the flat bootstrap would resample)."""
    if _is_number(data):
        return [float(data)]
    if data is None or isinstance(data, (str, bytes, bool, int, float, np.number)):
        return []
    return [x for child in _children(data) for x in flatten(child)]
