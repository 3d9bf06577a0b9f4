"""Gradient ascent on the target's factual text: GA, GD (+ retain NLL), GA+KL (+ KL to the reference).

loss_GA(x, y) = -l(x, y) on factual forget text (RWKU's positive.json), so minimising it raises the
NLL of the facts. GD adds ``retain_weight * l`` on retain text; GA+KL adds ``kl_weight`` times the
token-level KL(pi_ref || pi) on retain text, summed over the text's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..sequences import sequence_logprobs
from .base import Method, MethodOutput, nll_per_token, param, register, retain_kl_part, retain_nll_part


def forget_ga_part(model, batch: dict, parts: dict, stats: dict) -> None:
    if "forget" in batch:
        logp, n = sequence_logprobs(model, batch["forget"])
        parts["forget"] = logp  # = -l(x, y): minimising it is gradient ascent on the NLL
        stats["forget_nll_per_token"] = nll_per_token(logp, n)


@register
class GA(Method):
    name = "ga"
    description = "Gradient ascent: maximise the NLL of the target's factual text (loss = -l)."
    corpora = ("forget",)

    def forward(self, model, batch, reference=None) -> MethodOutput:
        parts, stats = {}, {}
        forget_ga_part(model, batch, parts, stats)
        return MethodOutput(parts, stats)


@dataclass
class GDParams:
    retain_weight: float = param(1.0, "weight of the retain NLL")


@register
class GD(Method):
    name = "gd"
    description = "Gradient difference: gradient ascent on factual text plus NLL on retain text."
    Params = GDParams
    corpora = ("forget", "retain")

    def part_weights(self):
        return {"retain": self.params.retain_weight}

    def forward(self, model, batch, reference=None) -> MethodOutput:
        parts, stats = {}, {}
        forget_ga_part(model, batch, parts, stats)
        retain_nll_part(model, batch, parts, stats)
        return MethodOutput(parts, stats)


@dataclass
class KLParams:
    kl_weight: float = param(1.0, "weight of KL(pi_ref || pi) on retain text")


@register
class GAKL(Method):
    name = "ga-kl"
    description = "Gradient ascent on factual text plus token-level KL(pi_ref || pi) on retain text."
    Params = KLParams
    corpora = ("forget", "retain")
    needs_reference = True
    reference_logits_corpora = ("retain",)

    def part_weights(self):
        return {"retain_kl": self.params.kl_weight}

    def forward(self, model, batch, reference=None) -> MethodOutput:
        parts, stats = {}, {}
        forget_ga_part(model, batch, parts, stats)
        retain_kl_part(model, batch, reference, parts, stats)
        return MethodOutput(parts, stats)
