"""Plain supervised fine-tuning (NLL) on one named corpus: knowledge injection reuses the loop with it.

``SFT(corpus_name="injection")`` trains on ``corpora["injection"]``; it is a "tuning" method, not
offered by ``rwkuplus unlearn``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from ..sequences import sequence_logprobs
from .base import Method, MethodOutput, nll_per_token, param, register


@dataclass
class SFTParams:
    corpus_name: str = param("train", "name of the corpus to fit")


@register
class SFT(Method):
    name = "sft"
    description = "Supervised fine-tuning: NLL on one named corpus (used for knowledge injection)."
    Params = SFTParams
    kind = "tuning"

    @property
    def corpora(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.params.corpus_name,)

    def validate(self):
        if not self.params.corpus_name:
            raise UserError("--param corpus_name: sft needs a non-empty corpus name.")

    def forward(self, model, batch, reference=None) -> MethodOutput:
        parts, stats = {}, {}
        name = self.params.corpus_name
        if name in batch:
            logp, n = sequence_logprobs(model, batch[name])
            parts[name] = -logp
            stats[f"{name}_nll_per_token"] = nll_per_token(logp, n)
        return MethodOutput(parts, stats)
