"""Half-precision training with fp32 master weights (the CPU's bf16 path).

On a CPU with fast bf16 (AMX / AVX512-BF16) the model is held in bfloat16, so every matrix product
of the forward and backward passes runs in bf16 (about 7x the fp32 rate on such CPUs; autocast over
fp32 weights gets less than half of that gain, because it casts every weight on every pass). What
must not be bf16 is the update: at learning rates of 1e-6 to 1e-5 most single updates are smaller
than a bf16 weight's rounding step (8 bits of mantissa), so they would be lost. ``MasterWeights``
keeps an fp32 copy of each trained parameter; the optimizer (and its state) works on those copies
and each step's result is rounded once into the bf16 weights the model computes with. Small updates
accumulate in the fp32 copy until they move the bf16 weight, as in mixed-precision training on GPUs.

On a GPU the loop keeps accelerate's autocast with fp32 trained parameters instead (it composes
with FSDP, which owns the parameters there).
"""

from __future__ import annotations

import torch

HALF = (torch.float16, torch.bfloat16)


class MasterWeights:
    """fp32 masters of half-precision parameters: the optimizer's parameters in their place."""

    def __init__(self, named: list[tuple[str, torch.nn.Parameter]]):
        self.model_params = [p for _, p in named]
        self.masters = [torch.nn.Parameter(p.detach().float().clone()) for p in self.model_params]
        self.named = [(n, m) for (n, _), m in zip(named, self.masters)]

    @staticmethod
    def needed(params: list[torch.nn.Parameter], autocast: bool) -> bool:
        """Whether trained parameters are half precision and no autocast holds fp32 weights for them."""
        return not autocast and any(p.dtype in HALF for p in params)

    def grads_to_masters(self) -> None:
        """Move each model gradient to its master, in fp32 (the model's own gradients are dropped)."""
        for p, m in zip(self.model_params, self.masters):
            m.grad = None if p.grad is None else p.grad.float()
            p.grad = None

    @torch.no_grad()
    def masters_to_model(self) -> None:
        """Round the updated masters into the model's half-precision weights."""
        for p, m in zip(self.model_params, self.masters):
            p.copy_(m)


__all__ = ["MasterWeights"]
