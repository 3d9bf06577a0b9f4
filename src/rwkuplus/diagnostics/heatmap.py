"""The cosine matrix of per-example gradients as a PNG heatmap (matplotlib, Agg backend).

Examples are ordered by their label (e.g. the attribute a counterfactual sample rewrites), label
blocks are outlined and named, and the colour scale is a diverging one fixed to [-1, 1] (blue =
conflicting, red = aligned), so heatmaps of different corpora and checkpoints compare at a glance.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..fileio import atomic_path


def label_order(labels: Sequence[str] | None, n: int) -> list[int]:
    """Example indices grouped by label (labels in order of first appearance), stable within a label."""
    if labels is None:
        return list(range(n))
    first: dict[str, int] = {}
    for i, lab in enumerate(labels):
        first.setdefault(str(lab), i)
    return sorted(range(n), key=lambda i: (first[str(labels[i])], i))


def plot_cosine_heatmap(cosine, path: str | os.PathLike, labels: Sequence[str] | None = None,
                        names: Sequence[str] | None = None, title: str = "") -> list[int]:
    """Write the heatmap of ``cosine`` ([n, n]) to ``path`` (PNG, atomically); return the order used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    C = np.asarray(cosine, dtype=float)
    n = C.shape[0]
    order = label_order(labels, n)
    C = C[np.ix_(order, order)]
    size = min(14.0, max(5.0, 3.0 + 0.16 * n))
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(C, cmap="RdBu_r", vmin=-1.0, vmax=1.0, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("cosine of per-example gradients")
    if labels is not None:
        ordered = [str(labels[i]) for i in order]
        starts = [0] + [i for i in range(1, n) if ordered[i] != ordered[i - 1]] + [n]
        for s in starts[1:-1]:
            ax.axhline(s - 0.5, color="black", linewidth=0.8)
            ax.axvline(s - 0.5, color="black", linewidth=0.8)
        centers = [(a + b - 1) / 2 for a, b in zip(starts[:-1], starts[1:])]
        block_names = [ordered[a] for a in starts[:-1]]
        ax.set_xticks(centers)
        ax.set_xticklabels(block_names, rotation=45, ha="right", fontsize=9)
        ax.set_yticks(centers)
        ax.set_yticklabels(block_names, fontsize=9)
    elif names is not None and n <= 48:
        ticks = [str(names[i])[:28] for i in order]
        ax.set_xticks(range(n))
        ax.set_xticklabels(ticks, rotation=90, fontsize=6)
        ax.set_yticks(range(n))
        ax.set_yticklabels(ticks, fontsize=6)
    else:
        ax.set_xlabel("example")
        ax.set_ylabel("example")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return order
