"""Gradient-level remedies for counterfactual tuning (CFT-SFT): surgery among the counterfactual
samples (``cft-pcgrad``), and the published forget-retain projection for comparison (``cft-gru``).

Both change the gradient through the training loop's one hook, ``Method.step_loss``: the gradient
they want is a linear combination of gradients the loop can already back-propagate, so they return
the loss whose gradient it is, with weights computed (and detached) from Gram matrices of
gradients. The loop's single backward, gradient accumulation, DDP, LoRA and clipping are
untouched. The Gram matrices come from the diagnostics' engine (``diagnostics/gradients.py``:
one extra forward and one backward to the activations only, no weight gradient); its passes
are charged to ``TrainCost.gradient_passes`` / ``gradient_tokens`` / ``gradient_seconds``.

``cft-pcgrad`` (PCGrad, Yu et al. 2020, applied to the samples of one counterfactual micro-batch).
For each sample i, in a seeded random order over the others j: when <g_i', g_j> < 0 (their
cosine is negative), g_i' <- g_i' - <g_i', g_j> / ||g_j||^2 g_j, projecting off the ORIGINAL g_j.
The update is the mean of the g_i'. Every g_i' stays in the span of the g_k: g_i' = sum_k A_ik g_k,
and every inner product the procedure needs is (A G)_ij with G the B x B Gram matrix, so the
whole surgery is computed on G alone, and the modified mean gradient is exactly the gradient of
sum_k w_k l_k / B with w = 1^T A. ``rule: pairs`` is the order-free variant: every g_i is projected
off all the g_j it conflicts with at once, with the original inner products
(g_i' = g_i - sum_{j: G_ij < 0} G_ij / G_jj g_j): deterministic, and the same as PCGrad whenever no
sample conflicts with more than one other. ``project: D`` computes G on the engine's seeded
count sketch of each gradient (TensorSketch; cosines within ~sqrt(2 / D) per layer group) instead
of exactly: cost linear in B instead of quadratic in the batch's tokens.

``cft-gru`` (GRU, Wang et al. ICML 2025, without its running average): the CFT gradient g_f (mean
over the counterfactual micro-batch) is projected off the retain gradient g_r (mean over the
retain micro-batch) when they conflict, g_f' = g_f - min(0, <g_f, g_r>) / ||g_r||^2 g_r, and the
update is g_f' + retain_weight g_r. The 2 x 2 Gram of the two mean gradients takes one engine
pass; the loss back-propagated is l_f + (retain_weight - c) l_r with c = min(0, <g_f, g_r>) / ||g_r||^2.
It treats the forget-retain conflict, not the conflict among the counterfactual samples.

Scope: the surgery is within one MICRO-batch, ``batch_size / (processes x grad_accum)`` samples (the
default preset: 4): with gradient accumulation or DDP each micro-batch is treated on its own and the
results are summed as usual. FSDP is refused (the Gram engine needs whole parameters).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from .base import MethodOutput, param, register, retain_nll_part, unwrap
from .counterfactual import CFTSFT

RULES = ("pcgrad", "pairs")


# ---------------------------------------------------------------------------------------- weights
def pcgrad_weights(gram, rule: str = "pcgrad", seed: int = 0) -> np.ndarray:
    """w such that sum_i g_i' = sum_k w_k g_k for the surgery ``rule`` on the Gram matrix ``gram``.

    ``pcgrad``: sequential projections, each sample's others in a random order drawn from ``seed``;
    ``pairs``: all conflicting pairs at once with the original inner products. A sample with a zero
    gradient is never projected off. Without any conflict w is all ones (the plain gradient).
    """
    if rule not in RULES:
        raise ValueError(f"rule: expected one of {', '.join(RULES)}, got {rule!r}.")
    G = np.asarray(gram.detach().cpu().double() if hasattr(gram, "detach") else gram, dtype=np.float64)
    n = G.shape[0]
    diag = np.diag(G)
    A = np.eye(n)
    if rule == "pairs":
        for i in range(n):
            for j in range(n):
                if j != i and G[i, j] < 0 and diag[j] > 0:
                    A[i, j] -= G[i, j] / diag[j]
        return A.sum(0)
    rng = np.random.default_rng(seed)
    for i in range(n):
        for j in rng.permutation(n):
            if j == i or diag[j] <= 0:
                continue
            dot = float(A[i] @ G[:, j])  # <g_i', g_j>
            if dot < 0:
                A[i, j] -= dot / diag[j]
    return A.sum(0)


def retain_projection(g_ff: float, g_fr: float, g_rr: float) -> float:
    """c with g_f' = g_f - c g_r: <g_f, g_r> / ||g_r||^2 when they conflict (<g_f, g_r> < 0), else 0."""
    return g_fr / g_rr if g_fr < 0 and g_rr > 0 else 0.0


def _gram(method, model, parts: list[tuple[str, dict, int]], project: int | None, seed: int, cost) -> torch.Tensor:
    """The Gram of the items of ``parts`` ((corpus, encoded batch, rows per item)) under the method's
    own per-item loss of each corpus (its parts unweighted), over the trainable parameters; charged
    to ``cost``."""
    from ..diagnostics.gradients import LossPart, gradient_gram
    from ..diagnostics.params import select_parameters

    started = time.perf_counter()
    inner = unwrap(model)
    if type(inner).__name__ == "FullyShardedDataParallel":
        raise UserError(f"--method {method.name}: gradient surgery needs whole parameters on each process "
                        "(DDP or one process), not FSDP's shards.")
    key = id(inner)
    if getattr(method, "_pset_key", None) != key:  # the trainable set is fixed for a run
        method._pset, method._pset_key = select_parameters(inner, "trainable"), key
    loss_parts = []
    for corpus, enc, group in parts:
        def per_item(m, b, _corpus=corpus, _group=group):
            # The UNWEIGHTED part(s) of this corpus (the weights enter through the returned loss).
            losses = sum(method.loss_parts(m, {_corpus: b}).values())
            return losses.mean().reshape(1) if _group > 1 else losses  # group > 1: one item = the batch mean
        loss_parts.append(LossPart(enc, per_item, group_size=group))
    result = gradient_gram(inner, loss_parts, method._pset, project=project, seed=seed,
                           batch_size=sum(p.n for p in loss_parts))
    if cost is not None:
        cost.gradient_passes += result.passes
        cost.gradient_tokens += sum(int(enc["attention_mask"].sum()) for _, enc, _ in parts)
        cost.gradient_seconds += time.perf_counter() - started
    return result.gram


def _weighted_objective(method, parts: dict[str, torch.Tensor], item_weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum over parts of weight x mean(w_i l_i): the objective with per-item weights on some parts."""
    weights = method.part_weights()
    total = None
    for name, value in parts.items():
        w = item_weights.get(name)
        term = weights.get(name, 1.0) * ((w.to(value) * value).mean() if w is not None else value.mean())
        total = term if total is None else total + term
    return total


# ----------------------------------------------------------------------------------------- methods
@dataclass
class PCGradParams:
    corpus: str = param("conflicting", "counterfactual corpus: conflicting (RWKU's), consistent or filtered")
    rule: str = param("pcgrad", "pcgrad (sequential, seeded order) or pairs (all conflicting pairs at once)")
    project: int = param(0, "0 = exact Gram; D > 0 = Gram of D-dimensional count sketches per layer group (cheaper)")
    seed: int = param(0, "seed of PCGrad's projection order (and of the sketch)")


@register
class CFTPCGrad(CFTSFT):
    name = "cft-pcgrad"
    description = ("CFT-SFT with gradient surgery among the counterfactual samples of each batch "
                   "(PCGrad: project each sample's gradient off those it conflicts with).")
    Params = PCGradParams

    def __init__(self, params=None, **overrides):
        super().__init__(params, **overrides)
        self._calls = 0  # surgery calls so far: each draws its own projection order

    def validate(self) -> None:
        super().validate()
        if self.params.rule not in RULES:
            raise UserError(f"--param rule: expected one of {', '.join(RULES)}; got {self.params.rule!r}.")
        if self.params.project < 0:
            raise UserError(f"--param project: expected 0 (exact) or a positive dimension; got {self.params.project}.")

    def step_loss(self, model, batch, out: MethodOutput, reference, objective, cost=None):
        part = out.parts.get("counterfactual")
        if part is None or part.numel() < 2:
            return objective
        enc = batch["counterfactual"]
        G = _gram(self, model, [("counterfactual", enc, 1)], self.params.project or None, self.params.seed, cost)
        w = pcgrad_weights(G, self.params.rule, seed=self.params.seed * 100_003 + self._calls)
        self._calls += 1
        n = G.shape[0]
        nrm = G.diagonal().clamp_min(0).sqrt()
        cos = G / (nrm[:, None] * nrm[None, :]).clamp_min(1e-30)
        upper = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
        out.stats["surgery_conflict_ratio"] = float((cos[upper] < 0).double().mean())
        out.stats["surgery_weight_mean"] = float(w.mean())
        return _weighted_objective(self, out.parts, {"counterfactual": torch.as_tensor(w)})


@dataclass
class GRUParams:
    corpus: str = param("conflicting", "counterfactual corpus: conflicting (RWKU's), consistent or filtered")
    retain_weight: float = param(1.0, "weight of the retain NLL term (its gradient is added after the projection)")


@register
class CFTGRU(CFTSFT):
    name = "cft-gru"
    description = ("CFT-SFT + retain NLL, the CFT gradient projected off the retain gradient when they "
                   "conflict (GRU-style forget-retain projection).")
    Params = GRUParams
    corpora = ("counterfactual", "retain")

    def validate(self) -> None:
        super().validate()
        if self.params.retain_weight < 0:
            raise UserError(f"--param retain_weight: expected >= 0; got {self.params.retain_weight}.")

    def part_weights(self) -> dict[str, float]:
        return {"retain": self.params.retain_weight}

    def forward(self, model, batch, reference=None) -> MethodOutput:
        out = super().forward(model, batch, reference)
        retain_nll_part(model, batch, out.parts, out.stats)
        return out

    def step_loss(self, model, batch, out: MethodOutput, reference, objective, cost=None):
        if "counterfactual" not in out.parts or "retain" not in out.parts:
            return objective
        f, r = batch["counterfactual"], batch["retain"]
        G = _gram(self, model, [("counterfactual", f, int(f["input_ids"].shape[0])),
                                ("retain", r, int(r["input_ids"].shape[0]))], None, 0, cost)
        c = retain_projection(float(G[0, 0]), float(G[0, 1]), float(G[1, 1]))
        out.stats["gru_conflict"] = float(G[0, 1] < 0)
        out.stats["gru_projection"] = c
        # g_f' + w_r g_r = g_f + (w_r - c) g_r: the objective with the retain part reweighted.
        cf, retain = out.parts["counterfactual"], out.parts["retain"]
        return cf.mean() + (self.params.retain_weight - c) * retain.mean()
