"""The report's plots, each from plain data to PNG bytes (matplotlib, Agg, no pyplot state, deterministic).

Every function takes lists of plain dicts keyed by a method name and returns the PNG as bytes, or
``None`` when the data hold nothing to draw (the report then says the data are absent).
``method_colors(names)`` gives each method one colour used by every plot.

- ``tradeoff_scatter``: FE vs UR and FE vs HS, one point per method (its mean), its trajectory
  (checkpoints) as a line ending at the point.
- ``hallucination_bars``: HR and fabrication rate per method; dHR and dFabrication with their 95%
  intervals as error bars.
- ``conflict_curves``: conflict ratio, mean cosine and cancellation ratio over training steps, one
  line per method (all pairs solid, same-attribute pairs dashed).
- ``cosine_heatmaps``: pairwise gradient cosines, diverging colormap fixed to [-1, 1], examples
  grouped by label (attribute) with the group boundaries drawn.
- ``cost_bars``: estimated FLOPs (log scale) and wall time per method.
"""

from __future__ import annotations

import io
import math
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

BEFORE_COLOR = "#7f7f7f"
PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
    "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
)
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.color": "#e5e5e5", "grid.linewidth": 0.8,
    "axes.axisbelow": True, "legend.frameon": False, "font.family": "DejaVu Sans",
}
DPI = 130


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def method_colors(names: Sequence[str], before: Sequence[str] = ("Before",)) -> dict[str, str]:
    """One colour per method name, in order: grey for the Before model, then a fixed palette (cycled)."""
    colors, k = {}, 0
    for name in names:
        if name in colors:
            continue
        if name in before:
            colors[name] = BEFORE_COLOR
        else:
            colors[name] = PALETTE[k % len(PALETTE)]
            k += 1
    return colors


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1, **kw):
    import matplotlib

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (no timestamp in the metadata, so the same data give the same bytes)."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white")
    return buf.getvalue()


def _colors_for(items: Sequence[Mapping], colors: Mapping[str, str] | None) -> dict[str, str]:
    return dict(colors) if colors else method_colors([it["name"] for it in items])


def _legend_below(fig: Figure, handles, labels, ncol: int | None = None) -> None:
    """A legend under the axes, read row by row (matplotlib fills columns first, so the entries are permuted)."""
    if not handles:
        return
    n = len(labels)
    c = ncol or min(5, n)
    rows = math.ceil(n / c)
    order = [r * c + j for j in range(c) for r in range(rows) if r * c + j < n]
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside lower center", ncol=c,
               fontsize=9)


# ------------------------------------------------------------------ trade-off

def tradeoff_scatter(points: Sequence[Mapping], colors: Mapping[str, str] | None = None) -> bytes | None:
    """FE vs UR (left) and FE vs HS (right).

    ``points``: ``{"name", "FE", "UR", "HS", "trajectory": [{"FE", "UR", "HS"}, ...]}`` per method; the
    mean point is a large marker, the trajectory a thin line through its checkpoints. None if no point
    has FE together with UR or HS.
    """
    pairs = (("UR", "utility retention UR"), ("HS", "honesty HS"))
    if not any(_num(p.get("FE")) is not None and any(_num(p.get(y)) is not None for y, _ in pairs) for p in points):
        return None
    colors = _colors_for(points, colors)
    import matplotlib

    fig, axes = _figure(10.5, 4.6, ncols=2)
    handles, labels = [], []
    with matplotlib.rc_context(STYLE):
        for ax, (y, ylabel) in zip(axes[0], pairs):
            for p in points:
                c = colors[p["name"]]
                traj = [(_num(t.get("FE")), _num(t.get(y))) for t in p.get("trajectory") or []]
                traj = [(a, b) for a, b in traj if a is not None and b is not None]
                if len(traj) > 1:
                    ax.plot(*zip(*traj), color=c, lw=1.3, alpha=0.55, marker="o", ms=3, zorder=2)
                fe, v = _num(p.get("FE")), _num(p.get(y))
                if fe is None or v is None:
                    continue
                h = ax.scatter([fe], [v], s=90, color=c, edgecolor="white", linewidth=1.2, zorder=3)
                if p["name"] not in labels:
                    handles.append(h)
                    labels.append(p["name"])
            ax.set_xlim(-0.03, 1.03)
            ax.set_ylim(-0.03, 1.05)
            ax.set_xlabel("forget efficacy FE  →  better")
            ax.set_ylabel(f"{ylabel}  →  better")
            ax.set_title(f"FE vs {y}")
            ax.scatter([1], [1], marker="*", s=140, color="#f1c40f", edgecolor="#b7950b", zorder=1)
            ax.annotate("ideal", (1, 1), textcoords="offset points", xytext=(-28, -14), fontsize=8, color="#7d6608")
        _legend_below(fig, handles, labels)
    return to_png(fig)


# ------------------------------------------------------------------ hallucination

def _interval(mean: float | None, ci: Any) -> tuple[float, float]:
    if mean is None or not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return (0.0, 0.0)
    lo, hi = _num(ci[0]), _num(ci[1])
    if lo is None or hi is None:
        return (0.0, 0.0)
    return (max(0.0, mean - lo), max(0.0, hi - mean))


def hallucination_bars(rows: Sequence[Mapping], colors: Mapping[str, str] | None = None) -> bytes | None:
    """Left: HR (solid) and fabrication rate (hatched) per method; right: dHR and dFabrication with 95% intervals.

    ``rows``: ``{"name", "HR", "Fabrication", "dHR", "dHR_ci": [lo, hi], "dFabrication", "dFabrication_ci"}``.
    None if no row has any of the four rates.
    """
    keys = ("HR", "Fabrication", "dHR", "dFabrication")
    rows = [r for r in rows if any(_num(r.get(k)) is not None for k in keys)]
    if not rows:
        return None
    colors = _colors_for(rows, colors)
    import matplotlib

    n = len(rows)
    fig, axes = _figure(10.5, 1.3 + 0.62 * n, ncols=2, sharey=True)
    y = np.arange(n)[::-1].astype(float)
    with matplotlib.rc_context(STYLE):
        for ax, (a, b), title in ((axes[0][0], ("HR", "Fabrication"), "rates after unlearning  (lower is better)"),
                                  (axes[0][1], ("dHR", "dFabrication"), "spillover: change from Before, 95% interval")):
            for k, (key, hatch, off) in enumerate(((a, None, 0.2), (b, "///", -0.2))):
                for i, r in enumerate(rows):
                    v = _num(r.get(key))
                    if v is None:
                        continue
                    err = _interval(v, r.get(f"{key}_ci"))
                    c = colors[r["name"]]
                    ax.barh(y[i] + off, v, height=0.38, color=c if hatch is None else "white", edgecolor=c,
                            hatch=hatch, linewidth=1.2,
                            xerr=[[err[0]], [err[1]]] if any(err) else None,
                            error_kw={"ecolor": "#333333", "capsize": 3, "lw": 1})
            ax.set_title(title)
            if a == "dHR":
                ax.axvline(0, color="#333333", lw=0.9)
            else:
                ax.set_xlim(0, 1.02)
        axes[0][0].set_yticks(y, [r["name"] for r in rows])
        axes[0][0].tick_params(axis="y", length=0)
        from matplotlib.patches import Patch

        legend = [Patch(facecolor="#999999", edgecolor="#999999", label="HR / dHR (answerable questions)"),
                  Patch(facecolor="white", edgecolor="#999999", hatch="///",
                        label="fabrication / dFabrication (nonexistent people)")]
        _legend_below(fig, legend, [p.get_label() for p in legend], ncol=2)
    return to_png(fig)


# ------------------------------------------------------------------ knowledge conflict

CONFLICT_PANELS = (
    ("conflict_ratio", "conflict ratio (share of pairs with cos < 0)"),
    ("mean_cosine", "mean pairwise cosine"),
    ("cancellation_ratio", "cancellation ratio"),
)


def conflict_curves(series: Sequence[Mapping], colors: Mapping[str, str] | None = None) -> bytes | None:
    """Conflict ratio, mean cosine and cancellation ratio over training steps.

    ``series``: ``{"name", "step": [...], "conflict_ratio": [...], "mean_cosine": [...],
    "cancellation_ratio": [...], "same_attribute.conflict_ratio": [...], ...}`` per method (lists aligned
    with ``step``; None where unmeasured). Solid lines are all pairs, dashed the same-attribute pairs.
    None if nothing is measured.
    """
    def pts(s, key):
        steps = s.get("step") or []
        vals = s.get(key) or []
        return [(_num(a), _num(b)) for a, b in zip(steps, vals) if _num(a) is not None and _num(b) is not None]

    if not any(pts(s, k) or pts(s, f"same_attribute.{k}") for s in series for k, _ in CONFLICT_PANELS):
        return None
    colors = _colors_for(series, colors)
    import matplotlib
    from matplotlib.lines import Line2D

    fig, axes = _figure(11.5, 3.9, ncols=3)
    handles, labels = [], []
    same_used = False
    with matplotlib.rc_context(STYLE):
        for ax, (key, title) in zip(axes[0], CONFLICT_PANELS):
            for s in series:
                c = colors[s["name"]]
                main = pts(s, key)
                if main:
                    ax.plot(*zip(*main), color=c, lw=2, marker="o", ms=4)
                    if s["name"] not in labels:
                        handles.append(Line2D([], [], color=c, lw=2, marker="o", ms=4))
                        labels.append(s["name"])
                same = pts(s, f"same_attribute.{key}")
                if same:
                    same_used = True
                    ax.plot(*zip(*same), color=c, lw=1.5, ls="--", marker="s", ms=3, alpha=0.85)
            if key == "mean_cosine":
                ax.axhline(0, color="#333333", lw=0.8)
            ax.set_title(title)
            ax.set_xlabel("training step")
        if same_used:
            handles += [Line2D([], [], color="#555555", lw=2), Line2D([], [], color="#555555", lw=1.5, ls="--")]
            labels += ["all pairs", "same-attribute pairs"]
        _legend_below(fig, handles, labels)
    return to_png(fig)


def _grouped(matrix: np.ndarray, labels: Sequence | None):
    n = matrix.shape[0]
    if not labels or len(labels) != n:
        return matrix, None
    lab = [str(x) for x in labels]
    first = {}
    for x in lab:
        first.setdefault(x, len(first))
    order = sorted(range(n), key=lambda i: (first[lab[i]], i))
    m = matrix[np.ix_(order, order)]
    groups, start = [], 0
    for i in range(1, n + 1):
        if i == n or lab[order[i]] != lab[order[start]]:
            groups.append((lab[order[start]], start, i))
            start = i
    return m, groups


def cosine_heatmaps(panels: Sequence[Mapping]) -> bytes | None:
    """Pairwise gradient cosines as heatmaps side by side, colormap RdBu_r fixed to [-1, 1].

    ``panels``: ``{"title", "matrix": [[...]], "labels": [...] or None}``; examples are grouped by label
    (first-appearance order) with the group boundaries drawn. None if no panel has a square matrix.
    """
    mats = []
    for p in panels:
        try:
            m = np.asarray(p.get("matrix"), dtype=float)
        except (TypeError, ValueError):
            continue
        if m.ndim == 2 and m.shape[0] == m.shape[1] and m.shape[0] > 0:
            mats.append((p.get("title") or "", *_grouped(np.nan_to_num(m), p.get("labels"))))
    if not mats:
        return None
    import matplotlib

    k = len(mats)
    ncols = min(k, 2 if k % 2 == 0 and k > 2 else k)
    nrows = math.ceil(k / ncols)
    fig, axes = _figure(3.7 * ncols + 1.0, 3.6 * nrows, ncols=ncols, nrows=nrows)
    with matplotlib.rc_context(STYLE):
        image = None
        for idx, ax in enumerate(axes.flat):
            if idx >= k:
                ax.set_visible(False)
                continue
            title, m, groups = mats[idx]
            image = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
            ax.grid(False)
            ax.set_title(title, fontsize=10)
            if groups and len(groups) > 1:
                for _, a, b in groups[:-1]:
                    ax.axhline(b - 0.5, color="black", lw=0.8)
                    ax.axvline(b - 0.5, color="black", lw=0.8)
                centers = [(a + b - 1) / 2 for _, a, b in groups]
                names = [g[0] if len(g[0]) <= 14 else g[0][:13] + "…" for g in groups]
                ax.set_xticks(centers, names, rotation=45, ha="right", fontsize=8)
                ax.set_yticks(centers, names, fontsize=8)
            else:
                ax.set_xlabel("example")
                ax.set_ylabel("example")
            ax.tick_params(length=0)
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="cosine of per-example gradients")
    return to_png(fig)


# ------------------------------------------------------------------ cost

def _fmt_sci(v: float) -> str:
    return f"{v:.1e}"


def cost_bars(rows: Sequence[Mapping], colors: Mapping[str, str] | None = None) -> bytes | None:
    """Estimated FLOPs (log scale, left) and wall time in seconds (right) per method.

    ``rows``: ``{"name", "FLOPs", "Wall time (s)"}``. Zero FLOPs (no training) cannot sit on a log axis
    and is written as text instead. None if no row has either number.
    """
    rows = [r for r in rows if _num(r.get("FLOPs")) is not None or _num(r.get("Wall time (s)")) is not None]
    if not rows:
        return None
    colors = _colors_for(rows, colors)
    import matplotlib

    n = len(rows)
    fig, axes = _figure(10.5, 1.2 + 0.42 * n, ncols=2, sharey=True)
    y = np.arange(n)[::-1].astype(float)
    with matplotlib.rc_context(STYLE):
        ax_f, ax_w = axes[0]
        flops = [_num(r.get("FLOPs")) for r in rows]
        positive = [f for f in flops if f and f > 0]
        if positive:
            ax_f.set_xscale("log")
            lo = 10 ** math.floor(math.log10(min(positive))) / 10
            hi = 10 ** math.ceil(math.log10(max(positive)) + 0.5)
            ax_f.set_xlim(lo, hi)
        for i, (r, f) in enumerate(zip(rows, flops)):
            c = colors[r["name"]]
            if f is not None and f > 0:
                ax_f.barh(y[i], f - (lo if positive else 0), left=lo if positive else 0, height=0.6, color=c)
                ax_f.annotate(_fmt_sci(f), (f, y[i]), textcoords="offset points", xytext=(3, 0), va="center", fontsize=8)
            elif f is not None:
                ax_f.annotate("0 (no training)", (lo if positive else 0, y[i]), textcoords="offset points",
                              xytext=(3, 0), va="center", fontsize=8, color="#555555")
            w = _num(r.get("Wall time (s)"))
            if w is not None:
                ax_w.barh(y[i], w, height=0.6, color=c)
                ax_w.annotate(f"{w:.1f} s", (w, y[i]), textcoords="offset points", xytext=(3, 0), va="center",
                              fontsize=8)
        ax_f.set_title("estimated FLOPs (log scale, lower is cheaper)")
        ax_w.set_title("wall time in seconds (lower is cheaper)")
        ax_w.margins(x=0.15)
        ax_f.set_yticks(y, [r["name"] for r in rows])
        ax_f.tick_params(axis="y", length=0)
    return to_png(fig)


# ------------------------------------------------------------------ spillover by domain

DOMAIN_PANELS = ("same", "related", "unrelated", "nonexistent")


def domain_bars(rows: Sequence[Mapping], colors: Mapping[str, str] | None = None) -> bytes | None:
    """One panel per domain (same, related, unrelated, nonexistent): each method's dHR with its 95% interval.

    ``rows``: ``{"name", "domains": {domain: {"dHR": {"estimate", "low", "high"}}}}`` (a summary row's
    ``domains``). None when no row has a domain.
    """
    rows = [r for r in rows if r.get("domains")]
    if not rows:
        return None
    colors = _colors_for(rows, colors)
    import matplotlib

    n = len(rows)
    fig, axes = _figure(12.0, 1.3 + 0.45 * n, ncols=len(DOMAIN_PANELS), sharey=True)
    y = np.arange(n)[::-1].astype(float)
    with matplotlib.rc_context(STYLE):
        for ax, domain in zip(axes[0], DOMAIN_PANELS):
            if not any(_num(((r["domains"].get(domain) or {}).get("dHR") or {}).get("estimate")) is not None
                       for r in rows):
                ax.text(0.5, 0.5, "no counted items", transform=ax.transAxes, ha="center", va="center",
                        color="#777777")
            for i, r in enumerate(rows):
                d = (r["domains"].get(domain) or {}).get("dHR") or {}
                v = _num(d.get("estimate"))
                if v is None:
                    continue
                err = _interval(v, [d.get("low"), d.get("high")])
                ax.barh(y[i], v, height=0.6, color=colors.get(r["name"], "#777777"),
                        xerr=[[err[0]], [err[1]]] if any(err) else None,
                        error_kw={"ecolor": "#333333", "capsize": 3, "lw": 1})
            ax.axvline(0, color="#333333", lw=0.9)
            ax.set_title(f"dHR {domain}")
        axes[0][0].set_yticks(y, [r["name"] for r in rows])
        axes[0][0].tick_params(axis="y", length=0)
    return to_png(fig)
