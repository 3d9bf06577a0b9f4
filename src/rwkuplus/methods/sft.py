"""Plain supervised fine-tuning (NLL) on one named corpus: knowledge injection reuses the loop with it.

``SFT(corpus_name="injection")`` trains on ``corpora["injection"]``; it is a "tuning" method, not
offered by ``rwkuplus unlearn``.

Soft targets (self-distillation). ``SFT.soft_targets`` may map an example's index in the corpus to
a teacher's next-token distribution at each of its labelled positions (``SoftTarget``: the top-k
token ids and their renormalised probabilities, one row per labelled token). Such an example is
trained on ``soft_weight`` x KL(teacher || model) summed over those positions instead of the NLL of
its tokens: knowledge injection replays the base model's answers to everyday questions this way, so that the
model keeps the base model's whole distribution there, not just its greedy tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UserError
from ..sequences import scored_logits
from .base import Method, MethodOutput, nll_per_token, param, register


@dataclass(frozen=True)
class SoftTarget:
    ids: torch.Tensor  # [T, k] token ids, one row per labelled token of the example
    probs: torch.Tensor  # [T, k] their probabilities under the teacher, each row summing to 1


@dataclass
class SFTParams:
    corpus_name: str = param("train", "name of the corpus to fit")
    soft_weight: float = param(1.0, "weight of an example trained on soft targets (KL) against one trained on NLL")


@register
class SFT(Method):
    name = "sft"
    description = "Supervised fine-tuning: NLL on one named corpus (used for knowledge injection)."
    Params = SFTParams
    kind = "tuning"

    def __init__(self, params=None, soft_targets: dict[int, SoftTarget] | None = None, **overrides):
        super().__init__(params, **overrides)
        self.soft_targets = dict(soft_targets or {})

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
            enc = batch[name]
            logits, target, mask = scored_logits(model, enc)
            logq = torch.log_softmax(logits.float(), dim=-1)
            token_logp = logq.gather(-1, target.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1) * mask
            loss = -token_logp.sum(-1)
            soft_rows = [(row, self.soft_targets[int(i)]) for row, i in enumerate(enc.get("index", torch.empty(0)).tolist())
                         if int(i) in self.soft_targets]
            if soft_rows:
                kls = []
                for row, soft in soft_rows:
                    positions = mask[row].nonzero().squeeze(1)
                    if positions.numel() != soft.ids.shape[0]:
                        raise ValueError(f"sft: soft target of example {int(enc['index'][row])} covers "
                                         f"{soft.ids.shape[0]} tokens, the example has {positions.numel()}.")
                    probs = soft.probs.to(logq.device)
                    student = logq[row, positions].gather(-1, soft.ids.to(logq.device))
                    kls.append((probs * (probs.clamp_min(1e-12).log() - student)).sum())
                rows = torch.tensor([r for r, _ in soft_rows], device=loss.device)
                loss = loss.index_put((rows,), self.params.soft_weight * torch.stack(kls))
            parts[name] = loss
            stats[f"{name}_nll_per_token"] = nll_per_token(token_logp.sum(-1), mask.sum(-1))
        return MethodOutput(parts, stats)


@torch.no_grad()
def teacher_targets(model, tokenizer, examples, top_k: int = 20, max_length: int = 512,
                    batch_size: int = 16, offset: int = 0) -> dict[int, SoftTarget]:
    """``model``'s top-``top_k`` next-token distribution at every labelled position of each example.

    Keys are ``offset + position in examples`` (the examples' indices in the corpus they train in);
    examples are encoded exactly as training encodes them (``encode_examples``, same ``max_length``).
    """
    from ..sequences import encode_examples

    was_training = model.training
    model.eval()
    out: dict[int, SoftTarget] = {}
    device = next(model.parameters()).device
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        enc = {k: v.to(device) for k, v in encode_examples(tokenizer, chunk, max_length).items()}
        logits, _, mask = scored_logits(model, enc)
        top = torch.log_softmax(logits.float(), dim=-1).topk(top_k, dim=-1)
        for row in range(len(chunk)):
            positions = mask[row].nonzero().squeeze(1)
            probs = top.values[row, positions].exp()
            out[offset + start + row] = SoftTarget(top.indices[row, positions].cpu(),
                                                   (probs / probs.sum(-1, keepdim=True)).cpu())
    model.train(was_training)
    return out
