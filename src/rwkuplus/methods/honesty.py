"""Honesty-anchored counterfactual tuning (``cft-honest``): CFT-SFT plus anchors that keep the
habit of not fabricating.

Learning to state made-up facts about the target teaches the model to make up facts in general
(hallucination spillover). Two anchors pull the other way while the counterfactual corpus is fitted:

- refusal anchor (``honesty`` corpus, weight ``refusal_weight``): NLL of a refusal to questions
  about people who do not exist. Its questions are built by ``training.data.honesty_examples``:
  on a world, about the world's TRAINING nonexistent people (the ones knowledge injection taught
  the subject to refuse about) in the training phrasings; elsewhere about generated names. They are
  disjoint from every question of the hallucination suite, so the fabrication rate the suite
  measures is not trained on (checked when the corpus is built).
- replay anchor (``retain`` corpus, weight ``retain_weight``): the retained people's text replayed,
  by NLL (``replay: nll``, GD's retain term) or by KL(pi_start || pi) over the vocabulary at every
  retain token (``replay: kl``; full fine-tuning then keeps a frozen copy of the starting model,
  LoRA uses the adapter-disabled base).

A weight of 0 drops its corpus (no batches, no cost). The counterfactual corpus is the primary one
(it defines an epoch); each step also draws ``batch_size`` items of each anchor corpus, and the loop
counts their tokens in the cost like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from ..sequences import sequence_logprobs
from .base import MethodOutput, nll_per_token, param, register, retain_kl_part, retain_nll_part
from .counterfactual import CFTSFT

REPLAYS = ("nll", "kl")


@dataclass
class HonestParams:
    corpus: str = param("conflicting", "counterfactual corpus: conflicting (RWKU's), consistent or filtered")
    refusal_weight: float = param(1.0, "weight of the refusal anchor (questions about nonexistent people; 0 = off)")
    retain_weight: float = param(1.0, "weight of the replay anchor on retained text (0 = off)")
    replay: str = param("nll", "replay anchor: nll on retained text, or kl to the starting model")


@register
class CFTHonest(CFTSFT):
    name = "cft-honest"
    description = ("CFT-SFT + honesty anchors: refusals on questions about nonexistent people and "
                   "retained text replayed (NLL or KL to the starting model).")
    Params = HonestParams

    def validate(self) -> None:
        super().validate()
        p = self.params
        if p.replay not in REPLAYS:
            raise UserError(f"--param replay: expected one of {', '.join(REPLAYS)}; got {p.replay!r}.")
        for name in ("refusal_weight", "retain_weight"):
            if getattr(p, name) < 0:
                raise UserError(f"--param {name}: expected a weight >= 0; got {getattr(p, name)}.")

    @property
    def corpora(self) -> tuple[str, ...]:  # type: ignore[override]
        out = ["counterfactual"]
        if self.params.refusal_weight > 0:
            out.append("honesty")
        if self.params.retain_weight > 0:
            out.append("retain")
        return tuple(out)

    @property
    def needs_reference(self) -> bool:  # type: ignore[override]
        return self.params.replay == "kl" and self.params.retain_weight > 0

    @property
    def reference_logits_corpora(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("retain",) if self.needs_reference else ()

    def part_weights(self) -> dict[str, float]:
        return {"honesty": self.params.refusal_weight, "retain": self.params.retain_weight,
                "retain_kl": self.params.retain_weight}

    def forward(self, model, batch, reference=None) -> MethodOutput:
        out = super().forward(model, batch, reference)
        if "honesty" in batch:
            logp, n = sequence_logprobs(model, batch["honesty"])
            out.parts["honesty"] = -logp
            out.stats["honesty_nll_per_token"] = nll_per_token(logp, n)
        if self.params.replay == "kl":
            retain_kl_part(model, batch, reference, out.parts, out.stats)
        else:
            retain_nll_part(model, batch, out.parts, out.stats)
        return out
