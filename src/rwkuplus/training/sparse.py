"""Sparse fine-tuning: train only the weight entries that matter most for a corpus.

AdamW moves every trained entry by about the learning rate at each step, even an entry whose
gradient is close to nothing (its update is the gradient's sign, scaled): fine-tuning a small model
on a few hundred facts moves all of its weights and costs general answers that nothing in the
corpus asked to change (docs/subject.md, "The optimisation floor of general kept"). A mask keeps
that drift to the few entries the corpus needs:

- ``fisher_scores``: the squared gradient of a method's objective on a corpus, summed over its
  batches (a diagonal empirical Fisher information, as in Sung et al. 2021, "Training Neural
  Networks with Fixed Sparse Masks");
- ``top_fraction_masks``: the entries with the largest scores, a fraction of all trainable entries
  taken over every tensor at once;
- ``masked_gradients``: a block inside which the gradients of the masked-out entries are zero, so
  that AdamW (no weight decay) never moves them.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch

from ..sequences import to_device
from .precision import CPU_TRAINING_ATTENTION, AttentionSwitch


def fisher_scores(model, tokenizer, method, corpus_name: str, items: Sequence[tuple], max_length: int,
                  batch_size: int = 8) -> dict[str, torch.Tensor]:
    """Sum over batches of ``items`` of the squared gradient of ``method``'s objective, for every
    parameter that requires a gradient (fp32, on the parameter's device)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("fisher_scores: no parameter of the model requires a gradient.")
    scores = {n: torch.zeros(p.shape, dtype=torch.float32, device=p.device) for n, p in named}
    device = named[0][1].device
    was_training = model.training
    model.train()
    attention = AttentionSwitch(model, CPU_TRAINING_ATTENTION if device.type == "cpu" else None)
    try:
        for start in range(0, len(items), batch_size):
            idx = list(range(start, min(start + batch_size, len(items))))
            batch = {corpus_name: to_device(method.encode(tokenizer, items, idx, max_length), device)}
            out = method.forward(model, batch, None)
            method.objective(out.parts).backward()
            for n, p in named:
                if p.grad is not None:
                    scores[n].add_(p.grad.float().square())
                    p.grad = None
    finally:
        attention.restore()
        model.train(was_training)
    return scores


def top_fraction_masks(scores: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """Boolean masks keeping the ``fraction`` of all entries with the largest scores (over every
    tensor together; ties at the threshold are kept)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"top_fraction_masks: fraction should be in (0, 1], got {fraction}.")
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = max(1, round(fraction * flat.numel()))
    threshold = torch.topk(flat, keep, sorted=False).values.min()
    return {n: s >= threshold for n, s in scores.items()}


@contextlib.contextmanager
def masked_gradients(model, masks: dict[str, torch.Tensor]):
    """Inside the block, each named parameter's gradient is multiplied by its mask as it is computed."""
    handles = []
    params = dict(model.named_parameters())
    try:
        for name, mask in masks.items():
            p = params[name]
            keep = mask.to(device=p.device, dtype=p.dtype)
            handles.append(p.register_hook(lambda g, keep=keep: g * keep))
        yield
    finally:
        for h in handles:
            h.remove()


__all__ = ["fisher_scores", "top_fraction_masks", "masked_gradients"]
