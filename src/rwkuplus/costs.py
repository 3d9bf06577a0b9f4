"""Cost accounting: what a method spent to unlearn (docs: rwku-plus.md, "Overhead").

``Costs`` holds the counts of one method on one target (or one batch of targets):

- ``corpus_tokens_generated`` / ``corpus_generation_seconds``: building the training corpus with a
  model (counterfactual biographies, paraphrases); 0 for a corpus that was given or synthesised.
- ``tokens_trained``: non-padding tokens that went through a forward *and* backward pass of the
  trained model, summed over steps (prompt tokens included: they cost compute even without loss).
- ``forward_passes`` / ``backward_passes``: batches through the trained model.
- ``reference_passes`` / ``reference_tokens``: forward-only batches (and their non-padding tokens)
  through a frozen reference model (NPO, DPO, KL terms).
- ``gradient_passes`` / ``gradient_tokens`` / ``gradient_seconds``: the extra per-example-gradient
  passes of gradient-level methods (``cft-pcgrad``, ``cft-gru``: the Gram engine's forward and
  backward to the activations, no weight gradient); their seconds are part of ``wall_seconds``.
- ``wall_seconds``: elapsed time; ``peak_memory_bytes``: peak resident memory of the process on the
  CPU; ``peak_gpu_memory_bytes``: ``torch.cuda.max_memory_allocated`` where there is a GPU.
- ``n_parameters``: N, the parameter count of the model (``models.parameter_count``);
  ``generator_parameters``: the corpus generator's N when it is another model (default: N).

``estimated_flops = 2 N_gen T_generated + 6 N T_trained + 2 N T_reference + 4 N T_gradient`` (the
usual 2N-per-token forward, 6N-per-token forward + backward approximation; a gradient pass is a
forward and a backward to the activations only, 2N + 2N per token; attention and the Gram
kernels are ignored, so the measured wall time is the fairer price of those passes).

Memory. ``resource.getrusage(...).ru_maxrss`` is the peak of the whole process since it started and
cannot be reset, so after a first method it only says "at least this much so far". ``ResourceMeter``
instead samples the current resident size from ``/proc/self/statm`` in a background thread, giving a
per-unit peak (a lower bound: a spike shorter than the sampling interval can be missed); where
``/proc`` is missing (macOS, Windows) it falls back to the process-lifetime peak and says so in
``rss_source``. The two sources can differ by a few MiB (statm counts shared pages; the kernel
updates the high-water mark lazily). On a GPU it resets and reads ``torch.cuda.max_memory_allocated``
(exact, per unit).
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import UserError


@dataclass
class Costs:
    corpus_tokens_generated: int = 0
    corpus_generation_seconds: float = 0.0
    tokens_trained: int = 0
    forward_passes: int = 0
    backward_passes: int = 0
    reference_passes: int = 0
    reference_tokens: int = 0
    gradient_passes: int = 0
    gradient_tokens: int = 0
    gradient_seconds: float = 0.0
    wall_seconds: float = 0.0
    peak_memory_bytes: int | None = None
    peak_gpu_memory_bytes: int | None = None
    n_parameters: int = 0
    generator_parameters: int | None = None

    @property
    def estimated_flops(self) -> float:
        """2 N_gen T_generated + 6 N T_trained + 2 N T_reference + 4 N T_gradient."""
        n = self.n_parameters
        n_gen = self.generator_parameters if self.generator_parameters is not None else n
        return (2.0 * n_gen * self.corpus_tokens_generated + 6.0 * n * self.tokens_trained
                + 2.0 * n * self.reference_tokens + 4.0 * n * self.gradient_tokens)

    def to_json(self) -> dict:
        return {**asdict(self), "estimated_flops": self.estimated_flops}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Costs:
        """Read costs written by ``to_json`` (``estimated_flops`` is recomputed, not trusted)."""
        if not isinstance(obj, dict):
            raise UserError(f"{where}: expected a JSON object of costs, got {type(obj).__name__}.")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(obj) - set(known) - {"estimated_flops"})
        if unknown:
            raise UserError(
                f"{where}: unknown cost field '{unknown[0]}' (expected some of {', '.join(known)}).")
        values = {}
        for name, value in obj.items():
            if name == "estimated_flops":
                continue
            optional = name in ("peak_memory_bytes", "peak_gpu_memory_bytes", "generator_parameters")
            if value is None and optional:
                values[name] = None
                continue
            integer = str(known[name].type).startswith("int")
            ok = isinstance(value, int) if integer else isinstance(value, (int, float))
            if not ok or isinstance(value, bool) or value < 0:
                kind = "non-negative integer" if integer else "non-negative number"
                raise UserError(f"{where}: field '{name}' should be a {kind}, got {value!r}.")
            values[name] = value
        return cls(**values)

    @classmethod
    def from_training(cls, train_cost: Any, n_parameters: int, generation: Any = None) -> Costs:
        """Costs of one unlearning run from the training loop's ``TrainCost`` and, when the corpus was
        generated by a model, that generation's ``GenerationStats`` (its generated tokens and seconds).

        ``n_parameters`` is the model's *total* parameter count (``models.parameter_count``), also with
        LoRA: the forward and backward passes go through every layer, trainable or not. The loop's
        ``peak_rss_mb`` is the process-lifetime peak (``ru_maxrss``); use ``ResourceMeter`` for a per-run one.
        """
        mib = 2 ** 20
        gpu = getattr(train_cost, "peak_gpu_mb", None)
        rss = getattr(train_cost, "peak_rss_mb", None)
        return cls(
            corpus_tokens_generated=int(getattr(generation, "generated_tokens", 0) or 0),
            corpus_generation_seconds=float(getattr(generation, "seconds", 0.0) or 0.0),
            tokens_trained=int(train_cost.tokens_trained),
            forward_passes=int(train_cost.forward_passes),
            backward_passes=int(train_cost.backward_passes),
            reference_passes=int(train_cost.reference_forward_passes),
            reference_tokens=int(train_cost.reference_tokens),
            gradient_passes=int(getattr(train_cost, "gradient_passes", 0)),
            gradient_tokens=int(getattr(train_cost, "gradient_tokens", 0)),
            gradient_seconds=float(getattr(train_cost, "gradient_seconds", 0.0)),
            wall_seconds=float(train_cost.wall_time_s),
            peak_memory_bytes=int(rss * mib) if rss else None,
            peak_gpu_memory_bytes=int(gpu * mib) if gpu is not None else None,
            n_parameters=int(n_parameters),
        )

    def __add__(self, other: Costs) -> Costs:
        """Two units of work by the same model: counts and times add, peaks take the maximum."""
        if not isinstance(other, Costs):
            return NotImplemented
        if self.n_parameters and other.n_parameters and self.n_parameters != other.n_parameters:
            raise ValueError(f"Costs of different models cannot be added ({self.n_parameters} vs "
                             f"{other.n_parameters} parameters).")
        if (self.generator_parameters is not None and other.generator_parameters is not None
                and self.generator_parameters != other.generator_parameters):
            raise ValueError("Costs with different corpus generators cannot be added.")
        total = Costs()
        for f in fields(Costs):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name in ("peak_memory_bytes", "peak_gpu_memory_bytes"):
                value = None if a is None and b is None else max(x for x in (a, b) if x is not None)
            elif f.name in ("n_parameters", "generator_parameters"):
                value = a if a else b
            else:
                value = a + b
            setattr(total, f.name, value)
        return total

    def add_measurement(self, meter: ResourceMeter) -> None:
        """Add a finished ``ResourceMeter``'s wall time and fold in its peaks."""
        self.wall_seconds += meter.wall_seconds
        peaks = (("peak_memory_bytes", meter.peak_rss_bytes), ("peak_gpu_memory_bytes", meter.peak_gpu_bytes))
        for name, value in peaks:
            if value is not None:
                current = getattr(self, name)
                setattr(self, name, value if current is None else max(current, value))


# ---------------------------------------------------------------- memory probes

def process_peak_rss_bytes() -> int:
    """Peak resident memory of this process since it started (``ru_maxrss``; cannot be reset)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB on Linux


def current_rss_bytes() -> int | None:
    """Current resident memory of this process from ``/proc/self/statm``; None where there is no /proc."""
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def gpu_peak_bytes() -> int | None:
    """``torch.cuda.max_memory_allocated`` (current device) where CUDA is in use, else None."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.max_memory_allocated())


def reset_gpu_peak() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


class ResourceMeter:
    """Context manager measuring one unit of work: wall time, peak RSS (sampled) and GPU peak.

    >>> with ResourceMeter() as meter:
    ...     work()
    >>> meter.wall_seconds, meter.peak_rss_bytes, meter.peak_gpu_bytes, meter.rss_source
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.wall_seconds = 0.0
        self.peak_rss_bytes: int | None = None
        self.peak_gpu_bytes: int | None = None
        self.rss_source = "sampled" if current_rss_bytes() is not None else "process_lifetime"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0.0

    def _sample(self) -> None:
        rss = current_rss_bytes()
        if rss is not None and (self.peak_rss_bytes is None or rss > self.peak_rss_bytes):
            self.peak_rss_bytes = rss

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> ResourceMeter:
        reset_gpu_peak()
        self._start = time.perf_counter()
        if self.rss_source == "sampled":
            self._sample()
            self._thread = threading.Thread(target=self._run, name="rwkuplus-rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()
        else:
            self.peak_rss_bytes = process_peak_rss_bytes()
        self.wall_seconds = time.perf_counter() - self._start
        self.peak_gpu_bytes = gpu_peak_bytes()

    def sample_now(self) -> None:
        """Take one extra sample (call at a known high point, e.g. right after a backward pass)."""
        if self.rss_source == "sampled":
            self._sample()
