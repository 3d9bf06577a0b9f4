"""Preference optimisation toward counterfactual answers: CFT-DPO (RWKU's DPO) and AltPO.

CFT-DPO, per pair (chosen = counterfactual, rejected = factual; RWKU's pair.json), with
r(y) = log pi(y|x) - log pi_ref(y|x):
    -log sigmoid(beta * (r(chosen) - r(rejected)))          beta defaults to 0.1 (RWKU / LLaMA-Factory)
AltPO (Mekala et al. 2024), per prompt with K alternative counterfactual answers a_1..a_K and the
factual answer y: the DPO loss averaged over the alternatives, plus the retain NLL:
    (1/K) * sum_k -log sigmoid(beta * (r(a_k) - r(y)))   +   retain_weight * l(retain)
A preference item is the tuple (chosen, rejected) for DPO and (a_1, ..., a_K, y) for AltPO; see
``rwkuplus.training.data`` for how the K alternatives are gathered from the preference pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..errors import UserError
from ..sequences import sequence_logprobs
from .base import Method, MethodOutput, param, register, retain_nll_part


def _log_ratios(model, enc, reference, group: int):
    logp, n = sequence_logprobs(model, enc)
    ref = reference.sequence_logprobs("preference", enc)
    return (logp - ref).view(-1, group), logp.view(-1, group), n.view(-1, group)


def _check_beta(method):
    if method.params.beta <= 0:
        raise UserError(f"--param beta: {method.name} needs beta > 0, got {method.params.beta}.")


@dataclass
class DPOParams:
    beta: float = param(0.1, "inverse temperature (RWKU / LLaMA-Factory: 0.1)")


@register
class CFTDPO(Method):
    name = "cft-dpo"
    description = "DPO with chosen = counterfactual and rejected = factual answer (RWKU's DPO)."
    Params = DPOParams
    corpora = ("preference",)
    needs_reference = True
    reference_corpora = ("preference",)

    def validate(self):
        super().validate()
        _check_beta(self)

    def group_size(self, corpus):
        return 2 if corpus == "preference" else 1

    def forward(self, model, batch, reference=None) -> MethodOutput:
        parts, stats = {}, {}
        if "preference" in batch:
            ratio, logp, n = _log_ratios(model, batch["preference"], reference, 2)
            margin = ratio[:, 0] - ratio[:, 1]
            parts["preference"] = -F.logsigmoid(self.params.beta * margin)
            stats["forget_nll_per_token"] = float(-logp[:, 1].detach().sum() / n[:, 1].sum().clamp(min=1))
            stats["chosen_nll_per_token"] = float(-logp[:, 0].detach().sum() / n[:, 0].sum().clamp(min=1))
            stats["reward_margin"] = float(margin.detach().mean())
        return MethodOutput(parts, stats)


@dataclass
class AltPOParams:
    beta: float = param(0.1, "inverse temperature of the DPO terms")
    k: int = param(3, "alternative counterfactual answers per prompt")
    retain_weight: float = param(1.0, "weight of the retain NLL")


@register
class AltPO(Method):
    name = "altpo"
    description = "AltPO: DPO averaged over K alternative counterfactual answers per prompt, plus retain NLL."
    Params = AltPOParams
    corpora = ("preference", "retain")
    needs_reference = True
    reference_corpora = ("preference",)

    def validate(self):
        super().validate()
        _check_beta(self)
        if self.params.k < 1:
            raise UserError(f"--param k: altpo needs at least 1 alternative, got {self.params.k}.")

    def group_size(self, corpus):
        return self.params.k + 1 if corpus == "preference" else 1

    def part_weights(self):
        return {"retain": self.params.retain_weight}

    def forward(self, model, batch, reference=None) -> MethodOutput:
        parts, stats = {}, {}
        if "preference" in batch:
            k = self.params.k
            ratio, logp, n = _log_ratios(model, batch["preference"], reference, k + 1)
            margins = ratio[:, :k] - ratio[:, k:]  # [B, K]
            parts["preference"] = -F.logsigmoid(self.params.beta * margins).mean(dim=1)
            stats["forget_nll_per_token"] = float(-logp[:, k].detach().sum() / n[:, k].sum().clamp(min=1))
            stats["reward_margin"] = float(margins.detach().mean())
        retain_nll_part(model, batch, parts, stats)
        return MethodOutput(parts, stats)
