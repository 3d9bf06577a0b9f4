"""Rejection tuning (RT): supervised tuning on (question about the target, refusal) pairs."""

from __future__ import annotations

from ..sequences import sequence_logprobs
from .base import Method, MethodOutput, nll_per_token, register


@register
class RT(Method):
    name = "rt"
    description = "Rejection tuning: NLL on refusals to questions about the target."
    corpora = ("refusal",)

    def forward(self, model, batch, reference=None) -> MethodOutput:
        parts, stats = {}, {}
        if "refusal" in batch:
            logp, n = sequence_logprobs(model, batch["refusal"])
            parts["refusal"] = -logp
            stats["refusal_nll_per_token"] = nll_per_token(logp, n)
        return MethodOutput(parts, stats)
