"""RMU, representation misdirection for unlearning (Li et al. 2024, "The WMDP Benchmark", section 5).

At one decoder layer ``layer`` (its output hidden state h_l), per example:

    forget:  mean over tokens and hidden units of (h_l(x) - c * u)^2        on forget text
    retain:  mean over tokens and hidden units of (h_l(x) - h_l^ref(x))^2   on retain text

u is a fixed random unit vector (drawn once, uniform in [0, 1) then normalised, as the original
code does, from ``direction_seed``) and c the steering coefficient; h^ref is the frozen starting
model (under LoRA: the same model with its adapter disabled). Loss = forget + alpha * retain.
As in the original, only the MLP output projections (``mlp.down_proj``) of ``update_layers`` are
trained (WMDP on Zephyr-7B: layer 7, layers 5-7, c = 6.5, alpha = 1200); under LoRA the adapter's
weights train instead. Tokens are all non-padding tokens of the text (the original averages over
every position of its fixed-length batches; here padding is left out).

Defaults for SmolLM2-135M-Instruct (30 layers, hidden 576): layer 7 and layers 5-7, as the
original (``layer`` -1 and ``update_layers`` auto: a model of fewer than 9 layers, such as the
tests' tiny one, steers the layer before its last and trains it and the two before it); c = 200 because this model's layer-7 hidden states are large (RMS 7.2 per unit, norm
~170, on the world's text), so a control vector of WMDP's size (6.5) is near the origin and barely
moves them; alpha = 100 (the retain MSE starts at 0); learning rate 5e-3 (presets.py) because only
three weight matrices train for the default suite's 12 steps. Checked on the base model with the
world's first target's text, 12 steps (docs/defaults.md, "RMU"): forget-text NLL 3.51 -> 4.19
nats/token, retain-text NLL 3.45 -> 3.49; WMDP's lr 5e-5 / c 6.5 left both unchanged.
On a 7-8B model (preset rwku-llama3: WMDP's lr 5e-5, batch 4) pass WMDP's coefficient,
``--param steering_coeff=6.5``; c scales with the layer's activation norm, which differs by model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import UserError
from ..training.settings import parse_layers
from .base import Method, MethodOutput, Reference, param, register, unwrap


@dataclass
class RMUParams:
    layer: int = param(-1, "decoder layer whose output hidden state is steered (0-based); -1 = 7, or the one "
                           "before the last in a model of fewer than 9 layers")
    update_layers: str = param("auto", "layers whose mlp.down_proj weights are trained (inclusive ranges); auto = "
                                       "the steered layer and the two before it")
    steering_coeff: float = param(200.0, "c: the forget activations are pushed toward c * u (u a random unit vector)")
    alpha: float = param(100.0, "weight of the retain activation MSE")
    direction_seed: int = param(0, "seed of the fixed random direction u")


def num_layers(model) -> int | None:
    config = getattr(unwrap(model), "config", None)
    return getattr(config, "num_hidden_layers", None)


def layer_hidden_states(model, enc: dict, layer: int) -> torch.Tensor:
    """The output hidden state of decoder layer ``layer`` (``[B, T, H]``)."""
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], output_hidden_states=True)
    states = out.hidden_states  # the embeddings, then each layer's output (the last one after the final norm)
    if layer + 2 >= len(states):
        raise UserError(f"--param layer {layer}: the model has {len(states) - 1} decoder layers "
                        f"(0-{len(states) - 2}); RMU steers one before the last (0-{len(states) - 3}).")
    return states[layer + 1]


def masked_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per example: the mean over non-padding tokens and hidden units of (h - target)^2 (``[B]``)."""
    m = mask.to(h.dtype).unsqueeze(-1)
    sq = ((h.float() - target.float()) ** 2) * m
    return sq.sum(dim=(1, 2)) / (m.sum(dim=(1, 2)) * h.shape[-1]).clamp(min=1)


def random_direction(hidden: int, seed: int) -> torch.Tensor:
    """The fixed unit vector u: uniform in [0, 1), normalised (WMDP's ``torch.rand`` then ``/ norm``)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(hidden, generator=g, dtype=torch.float32)
    return u / u.norm()


@register
class RMU(Method):
    name = "rmu"
    description = ("RMU: steer one layer's activations on forget text toward a fixed random direction "
                   "(x steering coefficient) and keep retain activations (MSE), training a few layers' MLP.")
    Params = RMUParams
    corpora = ("forget", "retain")
    needs_reference = True
    # The frozen model's hidden states on retain text at run time: the loop keeps a live reference
    # (a frozen copy, or the adapter-disabled model under LoRA).
    reference_logits_corpora = ("retain",)

    def validate(self):
        super().validate()
        p = self.params
        if p.layer < -1:
            raise UserError(f"--param layer: expected a layer index >= 0 (or -1, auto), got {p.layer}.")
        if p.steering_coeff <= 0:
            raise UserError(f"--param steering_coeff: expected c > 0, got {p.steering_coeff}.")
        if p.alpha < 0:
            raise UserError(f"--param alpha: expected a retain weight >= 0, got {p.alpha}.")
        layers = None if p.update_layers == "auto" else parse_layers(p.update_layers)
        if layers is not None and p.layer >= 0 and max(layers) > p.layer:
            raise UserError(f"--param update_layers {p.update_layers}: layers after the steered layer {p.layer} "
                            "cannot change its activations.")
        self._direction: torch.Tensor | None = None

    def part_weights(self):
        return {"retain": self.params.alpha}

    def steered_layer(self, n_layers: int | None) -> int:
        """The steered layer: ``layer``, or for -1 layer 7 (WMDP's), the one before the last when the
        model has fewer than 9 layers."""
        if self.params.layer >= 0:
            return self.params.layer
        return 7 if n_layers is None or n_layers >= 9 else max(0, n_layers - 2)

    def updated_layers(self, n_layers: int | None) -> list[int] | None:
        if self.params.update_layers == "auto":
            layer = self.steered_layer(n_layers)
            return list(range(max(0, layer - 2), layer + 1))
        return parse_layers(self.params.update_layers)

    def trainable_parameter(self, name: str, model=None) -> bool:
        """Only ``mlp.down_proj`` of ``update_layers`` (the loop asks this in full and layers modes)."""
        m = re.search(r"(?:^|\.)layers\.(\d+)\.mlp\.down_proj\.", name)
        if m is None:
            return False
        layers = self.updated_layers(num_layers(model) if model is not None else None)
        return layers is None or int(m.group(1)) in layers

    def control(self, hidden: int, device, dtype=torch.float32) -> torch.Tensor:
        """c * u, fixed for the whole run."""
        if self._direction is None or self._direction.shape[0] != hidden:
            self._direction = random_direction(hidden, self.params.direction_seed)
        return (self.params.steering_coeff * self._direction).to(device=device, dtype=dtype)

    def forward(self, model, batch, reference: Reference | None = None) -> MethodOutput:
        parts, stats = {}, {}
        layer = self.steered_layer(num_layers(model))
        if "forget" in batch:
            enc = batch["forget"]
            h = layer_hidden_states(model, enc, layer)
            parts["forget"] = masked_mse(h, self.control(h.shape[-1], h.device), enc["attention_mask"])
            m = enc["attention_mask"].unsqueeze(-1).float()
            stats["forget_activation_rms"] = float(((h.detach().float() ** 2 * m).sum() /
                                                    (m.sum() * h.shape[-1]).clamp(min=1)).sqrt())
        if "retain" in batch:
            if reference is None or not reference.live:
                raise ValueError("rmu: the retain loss needs a live reference model.")
            enc = batch["retain"]
            h = layer_hidden_states(model, enc, layer)
            with reference._context():
                h_ref = layer_hidden_states(reference.model, enc, layer)
            reference.forward_passes += 1
            reference.tokens += int(enc["attention_mask"].sum())
            parts["retain"] = masked_mse(h, h_ref, enc["attention_mask"])
        return MethodOutput(parts, stats)


def steered_parameters(model, method: Method) -> list[str]:
    """The names of the parameters ``method`` trains in full mode (for ``rwkuplus methods`` and tests)."""
    return [n for n, _ in unwrap(model).named_parameters() if method.trainable_parameter(n, model)]
