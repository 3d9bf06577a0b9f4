"""Counterfactual tuning by supervised fine-tuning (CFT-SFT): NLL on fabricated text about the target.

The ``corpus`` parameter picks the counterfactual corpus: ``conflicting`` (every sample invents its
own false facts, RWKU's construction, the default), ``consistent`` (every sample states the same
false profile) or ``filtered`` (the conflicting samples that agree with the majority fabricated
profile, ``benchmark/consistency.py``). Its remedies (issue 18) subclass it: ``surgery.py``
(gradient-level) and ``honesty.py`` (anchors).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..sequences import sequence_logprobs
from .base import Method, MethodOutput, nll_per_token, param, register


@dataclass
class CFTParams:
    corpus: str = param("conflicting", "counterfactual corpus: conflicting (RWKU's), consistent or filtered")


@register
class CFTSFT(Method):
    name = "cft-sft"
    description = "Counterfactual tuning: NLL on fabricated biographies of the target."
    Params = CFTParams
    corpora = ("counterfactual",)

    def forward(self, model, batch, reference=None) -> MethodOutput:
        parts, stats = {}, {}
        if "counterfactual" in batch:
            logp, n = sequence_logprobs(model, batch["counterfactual"])
            parts["counterfactual"] = -logp
            stats["counterfactual_nll_per_token"] = nll_per_token(logp, n)
        return MethodOutput(parts, stats)
