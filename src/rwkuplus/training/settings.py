"""Training settings: one typed dataclass, validated with one-sentence errors naming the option.

``batch_size`` is the GLOBAL number of items per optimizer step (all processes and accumulation
micro-steps together, RWKU's "batch 8"), so the same settings give the same run on 1 or N processes;
each micro-batch holds ``batch_size / (processes * grad_accum)`` items of every corpus.
Layer ranges are inclusive: ``"0-4"`` trains layers 0, 1, 2, 3 and 4 (RWKU's code trained 0..3); ``"all"``
every decoder layer, with the embeddings frozen.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..errors import UserError
from ..models import LoraSettings

MODES = ("full", "lora", "layers")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class TrainSettings:
    lr: float = 5e-5
    epochs: float = 3.0
    max_steps: int | None = None  # when set, overrides epochs
    batch_size: int = 8  # global items per optimizer step
    grad_accum: int = 1
    warmup_steps: int = 0  # when > 0, overrides warmup_ratio
    warmup_ratio: float = 0.1
    schedule: str = "cosine"
    weight_decay: float = 0.0
    adam_eps: float = 1e-8  # AdamW's epsilon: raised, parameters whose gradients are below it move less than lr per step
    max_grad_norm: float | None = 1.0
    max_length: int = 512
    seed: int = 0
    group_by_length: bool = False  # batches of similar lengths (less padding); order still seeded
    mode: str = "full"
    lora: LoraSettings = field(default_factory=LoraSettings)
    layers: str | None = None  # mode "layers": inclusive ranges such as "0-4" or "0-2,10,12-13"
    checkpoint_steps: tuple[int, ...] = ()  # 0 = before training
    # Divergence guard: stop (not raise) when the forget NLL per token exceeds this many nats ...
    max_forget_nll_per_token: float | None = 40.0
    # ... or grows past this many times its value at the first step (None = off).
    max_forget_nll_growth: float | None = None

    def validate(self) -> TrainSettings:
        def positive(name, value, kind=float):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise UserError(f"--{name.replace('_', '-')}: expected a positive {kind.__name__}, got {value!r}.")

        positive("lr", self.lr)
        if self.max_steps is None:
            positive("epochs", self.epochs)
        else:
            positive("steps", self.max_steps, int)
        positive("batch_size", self.batch_size, int)
        positive("grad_accum", self.grad_accum, int)
        positive("max_length", self.max_length, int)
        if self.batch_size % self.grad_accum:
            raise UserError(f"--grad-accum: {self.grad_accum} should divide --batch-size {self.batch_size}.")
        if self.warmup_steps < 0 or not 0 <= self.warmup_ratio < 1:
            raise UserError("--warmup-steps/--warmup-ratio: expected steps >= 0 and a ratio in [0, 1).")
        if self.schedule not in SCHEDULES:
            raise UserError(f"--schedule: expected one of {', '.join(SCHEDULES)}, got {self.schedule!r}.")
        if self.weight_decay < 0:
            raise UserError(f"--weight-decay: expected >= 0, got {self.weight_decay}.")
        positive("adam_eps", self.adam_eps)
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise UserError(f"--max-grad-norm: expected a positive number, got {self.max_grad_norm}.")
        if self.mode not in MODES:
            raise UserError(f"--mode: expected one of {', '.join(MODES)}, got {self.mode!r}.")
        if self.mode == "layers":
            if not self.layers:
                raise UserError("--layers: training a subset of layers needs ranges such as 0-4.")
            parse_layers(self.layers)
        if self.mode == "lora" and (self.lora.rank <= 0 or self.lora.alpha <= 0):
            raise UserError(f"--lora-rank/--lora-alpha: expected positive numbers, got {self.lora.rank}/{self.lora.alpha}.")
        if any((not isinstance(s, int)) or s < 0 for s in self.checkpoint_steps):
            raise UserError(f"--checkpoint-steps: expected steps >= 0, got {list(self.checkpoint_steps)}.")
        if self.max_forget_nll_growth is not None and self.max_forget_nll_growth <= 1:
            raise UserError(f"--max-forget-nll-growth: expected a factor > 1, got {self.max_forget_nll_growth}.")
        return self

    def total_steps(self, n_items: int) -> int:
        """Optimizer steps for a primary corpus of ``n_items`` items."""
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * n_items / self.batch_size))

    def warmup(self, total_steps: int) -> int:
        """Warm-up steps, never more than half of the run (short runs on small corpora)."""
        steps = self.warmup_steps if self.warmup_steps > 0 else math.ceil(self.warmup_ratio * total_steps)
        return min(steps, total_steps // 2)

    def replace(self, **changes) -> TrainSettings:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["lora"]["target_modules"] = list(self.lora.target_modules)
        d["checkpoint_steps"] = list(self.checkpoint_steps)
        return d

    @classmethod
    def from_json(cls, obj: dict, where: str = "settings") -> TrainSettings:
        if not isinstance(obj, dict):
            raise UserError(f"{where}: expected an object of training settings.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise UserError(f"{where}: unknown training setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        obj = dict(obj)
        if isinstance(obj.get("lora"), dict):
            lora = dict(obj["lora"])
            if "target_modules" in lora:
                lora["target_modules"] = tuple(lora["target_modules"])
            obj["lora"] = LoraSettings(**lora)
        if "checkpoint_steps" in obj:
            obj["checkpoint_steps"] = tuple(obj["checkpoint_steps"])
        return cls(**obj).validate()


def parse_layers(spec: str) -> list[int] | None:
    """``"0-4,10"`` -> [0, 1, 2, 3, 4, 10] (inclusive ranges); ``"all"`` -> None (every layer, not the
    embeddings: the tied input/output embedding and the final norm stay frozen)."""
    if str(spec).strip().lower() == "all":
        return None
    out: list[int] = []
    for part in str(spec).split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
            else:
                a = b = int(part)
        except ValueError:
            raise UserError(f"--layers {spec}: expected 'all' or inclusive ranges such as 0-4 or 0-2,10.") from None
        if a < 0 or b < a:
            raise UserError(f"--layers {spec}: the range {part} should be a-b with 0 <= a <= b.")
        out.extend(range(a, b + 1))
    return sorted(set(out))
