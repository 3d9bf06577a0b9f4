"""The one training loop, for every method (unlearning and knowledge injection alike), on accelerate.

Read top to bottom: ``train`` prepares the trainable parameters (full, LoRA or a subset of layers),
sets up the reference (adapter-disabled base under LoRA, cached log-probabilities of the fixed
training examples, a frozen copy only when KL needs reference logits at run time), builds AdamW
(fused where the device supports it) and the warm-up schedule, then runs optimizer steps. Each step
draws ``settings.batch_size`` items of every corpus the method reads from a seeded stream of epoch
permutations (so every batch is full and the order depends only on the seed); each process and
accumulation micro-step takes its own slice of that global batch, which is why 1 process and N
processes give the same run. Loss = method.objective(parts) (sum over parts of weight x mean).
Gradient-level methods (gradient surgery, projections) change what is back-propagated through ONE
hook, ``method.step_loss(...)`` (``methods/base.py``): it returns a loss whose gradient is the
modified one, so accumulation, DDP, LoRA, clipping and the optimizer step are untouched; the log
keeps the plain objective, and the hook's extra passes are counted in ``TrainCost.gradient_*``.

Every step is logged (loss parts, total, lr, grad norm, tokens, time). ``on_checkpoint(step, model)``
is called at ``settings.checkpoint_steps`` (0 = before training), on every process, with the model
in eval mode. A non-finite loss or gradient, or a runaway forget NLL, stops the run with
``TrainResult.stopped_reason`` set instead of raising; the step that diverged is not applied.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from ..benchmark.records import TrainExample
from ..errors import UserError
from ..methods.base import Method, Reference, unwrap
from ..models import add_lora
from ..sequences import to_device
from .precision import CPU_TRAINING_ATTENTION, HALF, AttentionSwitch, MasterWeights
from .settings import TrainSettings, parse_layers

log = logging.getLogger(__name__)

Corpora = dict[str, Sequence]  # corpus name -> list of TrainExample or of tuples of TrainExample


@dataclass
class TrainCost:
    """Counts for cost accounting (summed over all processes)."""

    optimizer_steps: int = 0
    items_trained: int = 0
    tokens_trained: int = 0  # non-padding tokens through trained forward + backward passes
    forward_passes: int = 0  # forward calls of the trained model (one per corpus per micro-batch)
    backward_passes: int = 0
    reference_forward_passes: int = 0
    reference_tokens: int = 0
    gradient_passes: int = 0  # extra per-example-gradient passes of gradient-level methods (Method.step_loss)
    gradient_tokens: int = 0  # their non-padding tokens
    gradient_seconds: float = 0.0  # their wall time (part of wall_time_s)
    wall_time_s: float = 0.0
    peak_rss_mb: float = 0.0  # the process's peak resident memory so far (CPU)
    peak_gpu_mb: float | None = None  # torch.cuda.max_memory_allocated during training
    trainable_parameters: int = 0


@dataclass
class TrainResult:
    model: torch.nn.Module
    log: list[dict]
    cost: TrainCost
    stopped_reason: str | None = None
    steps: int = 0
    total_steps: int = 0
    seen: dict[str, list[int]] = field(default_factory=dict)  # item indices this process trained on

    def to_json(self) -> dict:
        return {"steps": self.steps, "total_steps": self.total_steps, "stopped_reason": self.stopped_reason,
                "cost": asdict(self.cost)}


class StartingWeights:
    """The starting weights kept on CPU, so each target is unlearned from the same start cheaply.

    ``restore(model)`` loads them back into a model of the same architecture (no re-reading from
    disk); ``fresh(model)`` returns a restored deep copy when the trained model must be kept.
    Take the snapshot before adding a LoRA adapter; after LoRA training use ``model.unload()`` (peft)
    to get the base model back, then ``restore`` it.
    """

    def __init__(self, model: torch.nn.Module):
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}

    def restore(self, model: torch.nn.Module) -> torch.nn.Module:
        model = unwrap(model)
        missing, unexpected = model.load_state_dict(self.state, strict=False)
        if unexpected or [m for m in missing if "lora_" not in m]:
            raise ValueError(f"StartingWeights.restore: the model does not match the snapshot "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]}).")
        for p in model.parameters():
            p.grad = None
        return model

    def fresh(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.restore(copy.deepcopy(unwrap(model)))


# ------------------------------------------------------------------------------- trainable parameters
def _layer_index(name: str) -> int | None:
    parts = name.split(".")
    for i, p in enumerate(parts[:-1]):
        if p in ("layers", "h", "blocks", "layer") and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def prepare_model(model, settings: TrainSettings):
    """Make the parameters of ``settings.mode`` trainable and freeze the rest; returns the model
    (wrapped in a fresh LoRA adapter for mode ``lora`` unless it already has one)."""
    if settings.mode == "lora":
        if hasattr(model, "peft_config"):
            for n, p in model.named_parameters():
                p.requires_grad_("lora_" in n)
        else:
            model = add_lora(model, settings.lora)
    elif settings.mode == "layers":
        present = {i for i in (_layer_index(n) for n, _ in model.named_parameters()) if i is not None}
        if not present:
            raise UserError("--layers: this model has no numbered layers (no '.layers.N.' parameters).")
        chosen = parse_layers(settings.layers)
        wanted = present if chosen is None else set(chosen)
        outside = sorted(wanted - present)
        if outside:
            raise UserError(f"--layers {settings.layers}: layers {outside} do not exist; the model has layers "
                            f"0-{max(present)}.")
        for n, p in model.named_parameters():
            p.requires_grad_(_layer_index(n) in wanted)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    return model


def _make_optimizer(params: list[torch.nn.Parameter], named: list[tuple[str, torch.nn.Parameter]],
                    settings: TrainSettings) -> torch.optim.Optimizer:
    decay = [p for n, p in named if p.ndim >= 2]
    no_decay = [p for n, p in named if p.ndim < 2]
    groups = [g for g in ({"params": decay, "weight_decay": settings.weight_decay},
                          {"params": no_decay, "weight_decay": 0.0}) if g["params"]]
    device_types = {p.device.type for p in params}
    fused_ok = len(device_types) == 1 and device_types <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)
    if fused_ok:
        try:
            return torch.optim.AdamW(groups, lr=settings.lr, eps=settings.adam_eps, fused=True)
        except (RuntimeError, TypeError, ValueError):  # a build without the fused kernel
            pass
    return torch.optim.AdamW(groups, lr=settings.lr, eps=settings.adam_eps)


class _Stream:
    """An endless seeded stream of epoch permutations of ``range(n)``.

    With ``lengths`` (``group_by_length``), each permutation is cut into windows of 16 batches, each
    window sorted by length and cut into batches, and the batches shuffled: batches of similar
    lengths waste less compute on padding, and the order stays random and seeded.
    """

    def __init__(self, n: int, seed: int, lengths: Sequence[int] | None = None, batch_size: int = 1):
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)
        self.buffer: list[int] = []
        self.lengths = lengths
        self.batch_size = batch_size

    def _epoch(self) -> list[int]:
        perm = torch.randperm(self.n, generator=self.generator).tolist()
        if self.lengths is None:
            return perm
        window = 16 * self.batch_size
        batches = []
        for start in range(0, len(perm), window):
            chunk = sorted(perm[start:start + window], key=lambda i: -self.lengths[i])
            batches += [chunk[j:j + self.batch_size] for j in range(0, len(chunk), self.batch_size)]
        order = torch.randperm(len(batches), generator=self.generator).tolist()
        return [i for b in order for i in batches[b]]

    def take(self, k: int) -> list[int]:
        while len(self.buffer) < k:
            self.buffer.extend(self._epoch())
        out, self.buffer = self.buffer[:k], self.buffer[k:]
        return out


def _as_items(method: Method, name: str, corpus: Sequence) -> list[tuple]:
    items = [tuple(x) if isinstance(x, (tuple, list)) else (x,) for x in corpus]
    group = method.group_size(name)
    for i, item in enumerate(items):
        if len(item) != group or not all(isinstance(e, TrainExample) for e in item):
            raise ValueError(f"{method.name}: corpus {name!r} item {i} should be {group} TrainExample(s).")
    return items


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def make_accelerator(cpu: bool | None = None):
    """The loop's default Accelerator: bf16 autocast on GPU; none on CPU, where a bf16 model trains
    through fp32 master weights instead (``cpu`` forces the CPU)."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available() and not cpu
    return Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no")


# ------------------------------------------------------------------------------------------ the loop
def train(
    model,
    tokenizer,
    method: Method,
    corpora: Corpora,
    settings: TrainSettings,
    *,
    on_checkpoint: Callable[[int, torch.nn.Module], None] | None = None,
    on_step: Callable[[dict], None] | None = None,
    accelerator=None,
    reference_model=None,
) -> TrainResult:
    """Train ``model`` with ``method`` on ``corpora`` (name -> items); see the module docstring.

    ``reference_model`` (optional) is a frozen copy of the starting model to use as pi_ref when a
    method needs reference logits at run time in full or layers mode; by default one is copied.
    Returns a TrainResult whose ``model`` is the trained (unwrapped) model.
    """
    settings.validate()
    if accelerator is None:
        accelerator = make_accelerator()
    cpu = accelerator.device.type == "cpu"
    attention = AttentionSwitch(model, CPU_TRAINING_ATTENTION if cpu and method.trains else None)
    try:
        return _train(model, tokenizer, method, corpora, settings, on_checkpoint=on_checkpoint, on_step=on_step,
                      accelerator=accelerator, reference_model=reference_model, attention=attention)
    finally:
        attention.restore()


def _train(model, tokenizer, method: Method, corpora: Corpora, settings: TrainSettings, *, on_checkpoint, on_step,
           accelerator, reference_model, attention: AttentionSwitch) -> TrainResult:
    started = time.perf_counter()
    cost = TrainCost()
    if not method.trains:
        cost.wall_time_s = time.perf_counter() - started
        cost.peak_rss_mb = _peak_rss_mb()
        if on_checkpoint and 0 in settings.checkpoint_steps:
            on_checkpoint(0, model)
        return TrainResult(model, [], cost, None, 0, 0)

    names = list(method.corpora)
    items: dict[str, list[tuple]] = {}
    for name in names:
        if name not in corpora or len(corpora[name]) == 0:
            raise UserError(f"--method {method.name}: it trains on the corpus {name!r}, which is missing or empty.")
        items[name] = _as_items(method, name, corpora[name])

    processes = accelerator.num_processes
    rank = accelerator.process_index
    if settings.batch_size % (processes * settings.grad_accum):
        raise UserError(f"--batch-size {settings.batch_size}: must be a multiple of processes x grad_accum "
                        f"({processes} x {settings.grad_accum}).")
    micro = settings.batch_size // (processes * settings.grad_accum)
    total_steps = settings.total_steps(len(items[names[0]]))
    device = accelerator.device

    # Trainable parameters (seeded, so a fresh LoRA adapter is the same on every process and run).
    torch.manual_seed(settings.seed)
    model = prepare_model(model, settings)
    if settings.mode != "lora":  # a method may train only some parameters (RMU)
        for n, p in model.named_parameters():
            if p.requires_grad and not method.trainable_parameter(n, model):
                p.requires_grad_(False)
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise UserError(f"--mode {settings.mode}: no parameter is trainable.")
    autocast = accelerator.mixed_precision != "no"
    if autocast:  # GPU: trained parameters in fp32 under bf16 autocast (composes with FSDP)
        for p in trainable:
            if p.dtype in HALF:
                p.data = p.data.float()
    cost.trainable_parameters = sum(p.numel() for p in trainable)

    # The reference.
    reference = None
    if method.needs_reference:
        autocast = accelerator.autocast
        is_adapter = settings.mode == "lora" and hasattr(model, "disable_adapter")
        if is_adapter:
            reference = Reference.adapter(model, autocast=autocast)
        elif method.reference_logits_corpora:
            ref = reference_model if reference_model is not None else copy.deepcopy(unwrap(model))
            reference = Reference.frozen(ref.to(device), autocast=autocast)
        else:
            reference = Reference(model, autocast=autocast)  # the model itself, before any step
        was_training = model.training
        model.eval()
        for name in method.reference_corpora:
            reference.precompute(method, name, tokenizer, items[name], settings.max_length, batch_size=max(micro, 8))
        model.train(was_training)
        if not is_adapter and not method.reference_logits_corpora:
            reference.model = None  # every reference number is cached; the model moves on

    # Wrap for distributed training (DDP / FSDP) first, then build the optimizer on the wrapped
    # model's parameters (FSDP replaces them).
    model = accelerator.prepare_model(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # CPU bf16: the model computes in bf16, the optimizer updates fp32 masters (training/precision.py).
    master = MasterWeights(named) if MasterWeights.needed([p for _, p in named], autocast) else None
    if master is not None:
        named = master.named
    params = [p for _, p in named]
    optimizer = _make_optimizer(params, named, settings)
    from transformers import get_scheduler

    warmup = settings.warmup(total_steps)
    schedule = "constant_with_warmup" if settings.schedule == "constant" and warmup else settings.schedule
    scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)

    if torch.cuda.is_available() and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def lengths(name: str) -> list[int] | None:
        if not settings.group_by_length:
            return None
        return [sum(len(tokenizer(e.prompt + e.response, add_special_tokens=False).input_ids) for e in item)
                for item in items[name]]

    streams = {name: _Stream(len(items[name]), settings.seed * 1000 + 17 * k + 1, lengths(name), settings.batch_size)
               for k, name in enumerate(names)}
    seen: dict[str, list[int]] = {name: [] for name in names}
    train_log: list[dict] = []
    stopped_reason = None
    first_forget_nll = None
    steps_done = 0

    def checkpoint(step: int):
        if on_checkpoint is None or step not in settings.checkpoint_steps:
            return
        inner = accelerator.unwrap_model(model)
        was = inner.training
        inner.eval()
        with attention.original():  # evaluation with the model's own attention kernel
            on_checkpoint(step, inner)
        inner.train(was)

    checkpoint(0)
    model.train()
    max_norm = settings.max_grad_norm if settings.max_grad_norm is not None else math.inf
    for step in range(total_steps):
        global_batch = {name: streams[name].take(settings.batch_size) for name in names}
        part_sums: dict[str, float] = {}
        stat_sums: dict[str, float] = {}
        loss_sum = 0.0
        tokens = 0
        for a in range(settings.grad_accum):
            chunk = (a * processes + rank) * micro
            batch = {}
            for name in names:
                idx = global_batch[name][chunk: chunk + micro]
                seen[name].extend(idx)
                batch[name] = to_device(method.encode(tokenizer, items[name], idx, settings.max_length), device)
                tokens += int(batch[name]["attention_mask"].sum())
            sync = contextlib.nullcontext() if a == settings.grad_accum - 1 else accelerator.no_sync(model)
            with sync:
                out = method.forward(model, batch, reference)
                objective = method.objective(out.parts)
                # Gradient-level methods' hook (Method.step_loss): the loss to back-propagate; the objective by default.
                loss = method.step_loss(model, batch, out, reference, objective, cost)
                accelerator.backward(loss / settings.grad_accum)
            loss_sum += float(objective.detach()) / settings.grad_accum
            for k, v in out.parts.items():
                part_sums[k] = part_sums.get(k, 0.0) + float(v.detach().mean()) / settings.grad_accum
            for k, v in out.stats.items():
                stat_sums[k] = stat_sums.get(k, 0.0) + v / settings.grad_accum
            cost.forward_passes += len(batch)
            cost.backward_passes += 1

        # Numbers for the log, averaged over processes (identical on every process afterwards).
        keys_p, keys_s = sorted(part_sums), sorted(stat_sums)
        packed = torch.tensor([loss_sum, tokens] + [part_sums[k] for k in keys_p] + [stat_sums[k] for k in keys_s],
                              dtype=torch.float64, device=device)
        if processes > 1:
            packed = accelerator.reduce(packed, reduction="mean")
        values = packed.tolist()
        total_loss, step_tokens = values[0], int(round(values[1] * processes))
        parts_log = dict(zip(keys_p, values[2:2 + len(keys_p)]))
        stats_log = dict(zip(keys_s, values[2 + len(keys_p):]))
        cost.tokens_trained += step_tokens
        cost.items_trained += settings.batch_size * len(names)

        lr = scheduler.get_last_lr()[0]
        if master is not None:
            master.grads_to_masters()
        grad_norm = float(accelerator.clip_grad_norm_(params, max_norm))
        forget_nll = stats_log.get("forget_nll_per_token")
        if first_forget_nll is None and forget_nll is not None:
            first_forget_nll = forget_nll
        reason = None
        if not math.isfinite(total_loss):
            reason = f"non-finite loss at step {step + 1}"
        elif not math.isfinite(grad_norm):
            reason = f"non-finite gradient norm at step {step + 1}"
        elif (forget_nll is not None and settings.max_forget_nll_per_token is not None
              and forget_nll > settings.max_forget_nll_per_token):
            reason = (f"forget NLL ran away at step {step + 1}: {forget_nll:.1f} nats/token > "
                      f"{settings.max_forget_nll_per_token:g}")
        elif (forget_nll is not None and settings.max_forget_nll_growth is not None and first_forget_nll
              and forget_nll > settings.max_forget_nll_growth * first_forget_nll):
            reason = (f"forget NLL ran away at step {step + 1}: {forget_nll:.2f} nats/token > "
                      f"{settings.max_forget_nll_growth:g} x its start {first_forget_nll:.2f}")
        entry = {"step": step + 1, "epoch": (step + 1) * settings.batch_size / len(items[names[0]]),
                 "loss": total_loss, "parts": parts_log, "stats": stats_log, "lr": lr, "grad_norm": grad_norm,
                 "tokens": step_tokens, "time": time.perf_counter() - started}
        if reason is not None:
            entry["stopped"] = reason
            train_log.append(entry)
            optimizer.zero_grad(set_to_none=True)
            stopped_reason = reason
            log.warning("%s: %s; stopping.", method.name, reason)
            break
        optimizer.step()
        if master is not None:
            master.masters_to_model()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        steps_done = step + 1
        cost.optimizer_steps = steps_done
        train_log.append(entry)
        if on_step is not None:
            on_step(entry)
        checkpoint(steps_done)

    if reference is not None:
        ref_counts = torch.tensor([reference.forward_passes, reference.tokens], dtype=torch.float64, device=device)
        if processes > 1:
            ref_counts = accelerator.reduce(ref_counts, reduction="sum")
        cost.reference_forward_passes, cost.reference_tokens = (int(x) for x in ref_counts.tolist())
    if processes > 1:
        counts = torch.tensor([cost.forward_passes, cost.backward_passes, cost.gradient_passes, cost.gradient_tokens],
                              dtype=torch.float64, device=device)
        counts = accelerator.reduce(counts, reduction="sum")
        cost.forward_passes, cost.backward_passes, cost.gradient_passes, cost.gradient_tokens = (
            int(x) for x in counts.tolist())
    cost.wall_time_s = time.perf_counter() - started
    cost.peak_rss_mb = _peak_rss_mb()
    if device.type == "cuda":
        cost.peak_gpu_mb = torch.cuda.max_memory_allocated(device) / 2**20
    trained = accelerator.unwrap_model(model)
    trained.eval()
    return TrainResult(trained, train_log, cost, stopped_reason, steps_done, total_steps, seen)
