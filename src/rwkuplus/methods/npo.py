"""Negative preference optimisation: NPO, NPO+GD, NPO+KL, and the reference-free SimNPO.

NPO (Zhang et al. 2024), per forget example:
    -(2/beta) * log sigmoid(-beta * (log pi(y|x) - log pi_ref(y|x)))
with summed sequence log-probabilities, as in RWKU's trainer. beta defaults to RWKU's 0.2 (the NPO
paper's default is 0.1). NPO+GD adds ``retain_weight * l`` on retain text, NPO+KL adds
``kl_weight * KL(pi_ref || pi)`` on retain text (token level, summed).
SimNPO (Fan et al. 2024), no reference, length-normalised, margin gamma:
    -(2/beta) * log sigmoid(-(beta/|y|) * log pi(y|x) - gamma)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..sequences import sequence_logprobs
from .base import Method, MethodOutput, nll_per_token, param, register, retain_kl_part, retain_nll_part


@dataclass
class NPOParams:
    beta: float = param(0.2, "inverse temperature (RWKU: 0.2)")


def forget_npo_part(model, batch, reference, beta: float, parts: dict, stats: dict) -> None:
    if "forget" in batch:
        enc = batch["forget"]
        logp, n = sequence_logprobs(model, enc)
        ref = reference.sequence_logprobs("forget", enc)
        parts["forget"] = -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref))
        stats["forget_nll_per_token"] = nll_per_token(logp, n)
        stats["forget_log_ratio"] = float((logp - ref).detach().mean())


class _NPOBase(Method):
    corpora = ("forget",)
    needs_reference = True
    reference_corpora = ("forget",)

    def validate(self):
        super().validate()
        from ..errors import UserError

        if self.params.beta <= 0:
            raise UserError(f"--param beta: {self.name} needs beta > 0, got {self.params.beta}.")


@register
class NPO(_NPOBase):
    name = "npo"
    description = "NPO: push the forget text's likelihood below the reference's (beta-weighted log-sigmoid)."
    Params = NPOParams

    def forward(self, model, batch, reference=None) -> MethodOutput:
        parts, stats = {}, {}
        forget_npo_part(model, batch, reference, self.params.beta, parts, stats)
        return MethodOutput(parts, stats)


@dataclass
class NPOGDParams(NPOParams):
    retain_weight: float = param(1.0, "weight of the retain NLL")


@register
class NPOGD(_NPOBase):
    name = "npo-gd"
    description = "NPO on factual text plus NLL on retain text."
    Params = NPOGDParams
    corpora = ("forget", "retain")

    def part_weights(self):
        return {"retain": self.params.retain_weight}

    def forward(self, model, batch, reference=None) -> MethodOutput:
        parts, stats = {}, {}
        forget_npo_part(model, batch, reference, self.params.beta, parts, stats)
        retain_nll_part(model, batch, parts, stats)
        return MethodOutput(parts, stats)


@dataclass
class NPOKLParams(NPOParams):
    kl_weight: float = param(1.0, "weight of KL(pi_ref || pi) on retain text")


@register
class NPOKL(_NPOBase):
    name = "npo-kl"
    description = "NPO on factual text plus token-level KL(pi_ref || pi) on retain text."
    Params = NPOKLParams
    corpora = ("forget", "retain")
    reference_logits_corpora = ("retain",)

    def part_weights(self):
        return {"retain_kl": self.params.kl_weight}

    def forward(self, model, batch, reference=None) -> MethodOutput:
        parts, stats = {}, {}
        forget_npo_part(model, batch, reference, self.params.beta, parts, stats)
        retain_kl_part(model, batch, reference, parts, stats)
        return MethodOutput(parts, stats)


@dataclass
class SimNPOParams:
    beta: float = param(2.5, "inverse temperature on the length-normalised log-probability")
    gamma: float = param(0.0, "reward margin")


@register
class SimNPO(Method):
    name = "simnpo"
    description = "SimNPO: NPO without a reference, on the length-normalised log-probability with margin gamma."
    Params = SimNPOParams
    corpora = ("forget",)

    def validate(self):
        super().validate()
        from ..errors import UserError

        if self.params.beta <= 0:
            raise UserError(f"--param beta: simnpo needs beta > 0, got {self.params.beta}.")

    def forward(self, model, batch, reference=None) -> MethodOutput:
        parts, stats = {}, {}
        if "forget" in batch:
            logp, n = sequence_logprobs(model, batch["forget"])
            beta, gamma = self.params.beta, self.params.gamma
            parts["forget"] = -(2.0 / beta) * F.logsigmoid(-(beta / n.clamp(min=1)) * logp - gamma)
            stats["forget_nll_per_token"] = nll_per_token(logp, n)
        return MethodOutput(parts, stats)
