"""Knowledge-conflict measures from a Gram matrix of per-example gradients (docs: rwku-plus.md).

Every function takes plain inputs (a square Gram matrix G_ij = <g_i, g_j> as a list, numpy array
or torch tensor; optional per-example labels) and returns plain numbers (``None`` where a measure
is undefined, e.g. no pairs). With c_ij = cos(g_i, g_j):

- conflict ratio CR: fraction of pairs i < j with c_ij < 0;
- mean cosine over pairs i < j; mean negative cosine: the mean of c_ij over conflicting pairs;
- cancellation ratio = 1 - ||sum_i g_i|| / sum_i ||g_i||, using ||sum g||^2 = sum_ij G_ij;
- coherence = ||mean g||^2 / mean ||g||^2 = sum_ij G_ij / (n trace G);
- forget/retain alignment = cos(sum_{forget} g_i, sum_{retain} g_j) from a joint Gram.

Pair measures are given over all pairs, over pairs with the same label (examples that answer the
same question, e.g. the same attribute) and over pairs with different labels: at the start of CFT
pairs about different attributes can be weakly negative in both corpora, so only the same-label
pairs separate a conflicting corpus from a consistent one. Cancellation and coherence are also
given within each label. An example whose gradient is zero has cosine 0 with every other one.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

PAIRS = ("all", "same", "different")


def as_gram(gram: Any) -> np.ndarray:
    """A float64 numpy copy of a square, symmetric Gram matrix (ValueError otherwise)."""
    if hasattr(gram, "detach"):
        gram = gram.detach().cpu().double().numpy()
    G = np.array(gram, dtype=np.float64)
    if G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"a Gram matrix must be square, got shape {G.shape}.")
    scale = max(1.0, float(np.abs(G).max())) if G.size else 1.0
    if not np.allclose(G, G.T, rtol=1e-5, atol=1e-5 * scale):  # float32 sums are symmetric to ~1e-7
        raise ValueError("a Gram matrix must be symmetric.")
    return (G + G.T) / 2


def norms(gram: Any) -> np.ndarray:
    return np.sqrt(np.clip(np.diag(as_gram(gram)), 0.0, None))


def cosine_matrix(gram: Any) -> np.ndarray:
    """c_ij = G_ij / (||g_i|| ||g_j||); 0 where a gradient is zero (its diagonal entry too)."""
    G = as_gram(gram)
    nrm = np.sqrt(np.clip(np.diag(G), 0.0, None))
    denom = np.outer(nrm, nrm)
    with np.errstate(divide="ignore", invalid="ignore"):
        C = np.where(denom > 0, G / np.where(denom > 0, denom, 1.0), 0.0)
    return np.clip(C, -1.0, 1.0)


def pair_mask(n: int, labels: Sequence | None = None, pairs: str = "all") -> np.ndarray:
    """Boolean [n, n] mask of the pairs i < j to count: all, same label or different label."""
    if pairs not in PAIRS:
        raise ValueError(f"pairs: expected one of {', '.join(PAIRS)}, got {pairs!r}.")
    upper = np.triu(np.ones((n, n), dtype=bool), k=1)
    if pairs == "all":
        return upper
    if labels is None:
        raise ValueError(f"pairs={pairs!r} needs one label per example.")
    if len(labels) != n:
        raise ValueError(f"expected {n} labels, got {len(labels)}.")
    lab = np.array([str(x) for x in labels])
    same = lab[:, None] == lab[None, :]
    return upper & (same if pairs == "same" else ~same)


def _pair_values(gram, labels, pairs) -> np.ndarray:
    C = cosine_matrix(gram)
    return C[pair_mask(C.shape[0], labels, pairs)]


def conflict_ratio(gram: Any, labels: Sequence | None = None, pairs: str = "all") -> float | None:
    v = _pair_values(gram, labels, pairs)
    return float(np.mean(v < 0)) if v.size else None


def mean_cosine(gram: Any, labels: Sequence | None = None, pairs: str = "all") -> float | None:
    v = _pair_values(gram, labels, pairs)
    return float(np.mean(v)) if v.size else None


def mean_negative_cosine(gram: Any, labels: Sequence | None = None, pairs: str = "all") -> float | None:
    v = _pair_values(gram, labels, pairs)
    neg = v[v < 0]
    return float(np.mean(neg)) if neg.size else None


def _sub(G: np.ndarray, index) -> np.ndarray:
    if index is None:
        return G
    idx = np.asarray(index)
    if idx.dtype == bool:
        idx = np.nonzero(idx)[0]
    return G[np.ix_(idx, idx)]


def cancellation_ratio(gram: Any, index: Sequence | None = None) -> float | None:
    """1 - ||sum g_i|| / sum ||g_i|| over the examples in ``index`` (all by default)."""
    G = _sub(as_gram(gram), index)
    total = float(np.sqrt(np.clip(np.diag(G), 0, None)).sum())
    if G.shape[0] == 0 or total <= 0:
        return None
    return float(1.0 - math.sqrt(max(float(G.sum()), 0.0)) / total)


def coherence(gram: Any, index: Sequence | None = None) -> float | None:
    """||mean g||^2 / mean ||g||^2 = sum_ij G_ij / (n trace G)."""
    G = _sub(as_gram(gram), index)
    n = G.shape[0]
    tr = float(np.trace(G))
    if n == 0 or tr <= 0:
        return None
    return float(max(float(G.sum()), 0.0) / (n * tr))


def alignment(gram: Any, forget: Sequence, retain: Sequence) -> float | None:
    """cos(sum_{i in forget} g_i, sum_{j in retain} g_j) from a joint Gram (indices or boolean masks)."""
    G = as_gram(gram)
    f, r = (np.nonzero(np.asarray(x))[0] if np.asarray(x).dtype == bool else np.asarray(x, dtype=int)
            for x in (forget, retain))
    ff, rr, fr = G[np.ix_(f, f)].sum(), G[np.ix_(r, r)].sum(), G[np.ix_(f, r)].sum()
    if ff <= 0 or rr <= 0:
        return None
    return float(np.clip(fr / math.sqrt(ff * rr), -1.0, 1.0))


def pair_measures(gram: Any, labels: Sequence | None = None, pairs: str = "all") -> dict:
    v = _pair_values(gram, labels, pairs)
    neg = v[v < 0]
    return {
        "pairs": int(v.size),
        "conflict_ratio": float(np.mean(v < 0)) if v.size else None,
        "mean_cosine": float(np.mean(v)) if v.size else None,
        "mean_negative_cosine": float(np.mean(neg)) if neg.size else None,
    }


def conflict_measures(gram: Any, labels: Sequence | None = None) -> dict:
    """Every measure for one Gram matrix: over all pairs, and by label when labels are given."""
    G = as_gram(gram)
    n = G.shape[0]
    nrm = np.sqrt(np.clip(np.diag(G), 0, None))
    out: dict[str, Any] = {
        "n": n,
        "mean_norm": float(nrm.mean()) if n else None,
        "all_pairs": pair_measures(G),
        "cancellation_ratio": cancellation_ratio(G),
        "coherence": coherence(G),
    }
    if labels is not None:
        if len(labels) != n:
            raise ValueError(f"expected {n} labels, got {len(labels)}.")
        out["same_label_pairs"] = pair_measures(G, labels, "same")
        out["different_label_pairs"] = pair_measures(G, labels, "different")
        lab = [str(x) for x in labels]
        per = {}
        for name in dict.fromkeys(lab):
            idx = [i for i, x in enumerate(lab) if x == name]
            per[name] = {"n": len(idx), "cancellation_ratio": cancellation_ratio(G, idx) if len(idx) > 1 else None,
                         "coherence": coherence(G, idx) if len(idx) > 1 else None}
        within = {}
        for key in ("cancellation_ratio", "coherence"):
            vals = [v[key] for v in per.values() if v[key] is not None]
            within[key] = float(np.mean(vals)) if vals else None
        out["within_label"] = {**within, "per_label": per}
    return out


def block_grams(groups: Mapping[str, Any], size: int) -> dict[str, np.ndarray]:
    """Sum per-layer Grams over blocks of ``size`` consecutive layers (``layers.0-3``); others kept."""
    if size < 1:
        raise ValueError("block size must be at least 1.")
    out: dict[str, np.ndarray] = {}
    layers: dict[int, np.ndarray] = {}
    for name, g in groups.items():
        if name.startswith("layers.") and name[7:].isdigit():
            layers[int(name[7:])] = as_gram(g)
        else:
            out[name] = as_gram(g)
    for i in sorted(layers):
        lo = (i // size) * size
        key = f"layers.{lo}-{lo + size - 1}" if size > 1 else f"layers.{i}"
        out[key] = out[key] + layers[i] if key in out else layers[i].copy()
    return out


def conflict_report(gram: Any, groups: Mapping[str, Any] | None = None, labels: Sequence | None = None,
                    roles: Sequence[str] | None = None, layer_block: int = 1) -> dict:
    """Measures overall and per layer group (or per block of ``layer_block`` layers).

    With ``roles`` (``forget`` / ``retain`` per example) the Gram is a joint one: the measures are
    computed on the forget examples, the retain examples get their own, and ``alignment`` is the
    cosine of the two batch gradients, overall and per layer.
    """
    G = as_gram(gram)
    n = G.shape[0]
    if labels is not None and len(labels) != n:
        raise ValueError(f"expected {n} labels, got {len(labels)}.")
    blocks = block_grams(groups, layer_block) if groups else {}

    def one(M: np.ndarray) -> dict:
        if roles is None:
            return conflict_measures(M, labels)
        if len(roles) != n or not set(roles) <= {"forget", "retain"}:
            raise ValueError("roles: expected 'forget' or 'retain' for each example.")
        f = [i for i, r in enumerate(roles) if r == "forget"]
        r = [i for i, r in enumerate(roles) if r == "retain"]
        fl = [labels[i] for i in f] if labels is not None else None
        return {
            "forget": conflict_measures(_sub(M, f), fl),
            "retain": conflict_measures(_sub(M, r)) if r else None,
            "forget_retain_alignment": alignment(M, f, r) if f and r else None,
        }

    return {"overall": one(G), "per_layer": {name: one(M) for name, M in blocks.items()}}
