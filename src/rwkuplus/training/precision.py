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

import contextlib

import torch

HALF = (torch.float16, torch.bfloat16)


class MasterWeights:
    """fp32 masters of half-precision parameters: the optimizer's parameters in their place."""

    def __init__(self, named: list[tuple[str, torch.nn.Parameter]]):
        self.model_params = [p for _, p in named]
        self.masters = [torch.nn.Parameter(p.detach().float().clone()) for p in self.model_params]
        self.named = [(n, m) for (n, _), m in zip(named, self.masters)]
        self.grad_buffers: list[torch.Tensor | None] = [None] * len(self.masters)

    @staticmethod
    def needed(params: list[torch.nn.Parameter], autocast: bool) -> bool:
        """Whether trained parameters are half precision and no autocast holds fp32 weights for them."""
        return not autocast and any(p.dtype in HALF for p in params)

    def grads_to_masters(self) -> None:
        """Move each model gradient to its master, in fp32 (the model's own gradients are dropped).

        The fp32 gradients are written into buffers kept across steps: allocating 4 bytes per
        parameter afresh every step (``p.grad.float()``) cost 156 ms against 40 ms on SmolLM2-135M,
        the new pages being faulted in one by one."""
        for k, (p, m) in enumerate(zip(self.model_params, self.masters)):
            if p.grad is None:
                m.grad = None
                continue
            if self.grad_buffers[k] is None:
                self.grad_buffers[k] = torch.empty_like(m)
            m.grad = self.grad_buffers[k].copy_(p.grad)
            p.grad = None

    @torch.no_grad()
    def masters_to_model(self) -> None:
        """Round the updated masters into the model's half-precision weights."""
        for p, m in zip(self.model_params, self.masters):
            p.copy_(m)


#: The attention kernel training runs with on a CPU. With padded batches of short sequences (what
#: unlearning and injection train on), torch's fused CPU attention (``sdpa``) spends most of a step
#: on masking: a SmolLM2-135M forward + backward on 8 x 73 tokens took 1.65 s with ``sdpa`` and
#: 1.09 s with ``eager`` in bf16 (3.30 s and 2.42 s in fp32). For generation ``sdpa`` stays faster
#: (5.4 s against 7.0 s on 32 BBH prompts), so evaluation keeps the model's own kernel.
CPU_TRAINING_ATTENTION = "eager"


class AttentionSwitch:
    """Sets a model's attention implementation for training and puts the original back (``restore``),
    also for the length of a callback (``original()``). Models without the switch are left alone."""

    def __init__(self, model, implementation: str | None):
        self.model = getattr(model, "get_base_model", lambda: model)()
        config = getattr(self.model, "config", None)
        self.original_impl = getattr(config, "_attn_implementation", None)
        self.training_impl = implementation if hasattr(self.model, "set_attn_implementation") else None
        if self.training_impl == self.original_impl:
            self.training_impl = None
        self._set(self.training_impl)

    def _set(self, implementation: str | None) -> None:
        if implementation is not None:
            self.model.set_attn_implementation(implementation)

    def restore(self) -> None:
        if self.training_impl is not None:
            self._set(self.original_impl)
            self.training_impl = None

    @contextlib.contextmanager
    def original(self):
        """The original kernel inside the block (a checkpoint's evaluation), the training one after it."""
        if self.training_impl is None:
            yield
            return
        self._set(self.original_impl)
        try:
            yield
        finally:
            self._set(self.training_impl)


__all__ = ["MasterWeights", "AttentionSwitch", "CPU_TRAINING_ATTENTION"]
