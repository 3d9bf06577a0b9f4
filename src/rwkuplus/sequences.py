"""Tokenising (prompt, response) examples and scoring them: the one place where labels are built.

Used by the training loop, the methods' losses, the gradient diagnostics and the log-likelihood
evaluators alike, so that "the log-probability of a response" means the same thing everywhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from .benchmark.records import TrainExample

IGNORE = -100
_EVERY_POSITION = contextvars.ContextVar("rwkuplus_every_position", default=False)


@contextlib.contextmanager
def every_position() -> Iterator[None]:
    """Within this block ``sequence_logprobs`` projects every position (the gradient engine's hooks
    need each layer to see the whole ``[batch, tokens]`` grid)."""
    token = _EVERY_POSITION.set(True)
    try:
        yield
    finally:
        _EVERY_POSITION.reset(token)


def encode_examples(tokenizer, examples: Sequence[TrainExample], max_length: int = 512) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 on prompt and padding).

    The prompt and response are tokenised separately and concatenated (no special tokens added:
    prompts carry the chat template already), so a response's tokens never depend on its prompt.
    Sequences longer than ``max_length`` are cut from the right.
    """
    rows, labels = [], []
    for ex in examples:
        p = tokenizer(ex.prompt, add_special_tokens=False).input_ids if ex.prompt else []
        r = tokenizer(ex.response, add_special_tokens=False).input_ids
        ids = (p + r)[:max_length]
        lab = ([IGNORE] * len(p) + r)[:max_length]
        rows.append(ids)
        labels.append(lab)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    label_t = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(zip(rows, labels)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        label_t[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_t}


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of the next-token labels and the mask of scored tokens ([B, T-1] each)."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE
    safe = shift_labels.masked_fill(~mask, 0)
    logps = -F.cross_entropy(shift_logits.transpose(1, 2), safe, reduction="none")
    return logps * mask, mask


def sequence_logprobs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each example's labelled tokens, and how many tokens were scored ([B] each)."""
    logits, target, mask = scored_logits(model, batch)
    logps = -F.cross_entropy(logits.float().transpose(1, 2), target.masked_fill(~mask, 0), reduction="none")
    return (logps * mask).sum(-1), mask.sum(-1)


def scored_logits(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logits that predict labelled tokens: ``logits [B, C, V]``, their ``target`` ids and ``mask`` ([B, C]).

    The C columns are the positions that predict a labelled token in some row of the batch, in
    order, so row i's labelled tokens are ``target[i][mask[i]]``. The vocabulary projection is
    computed only there (transformers' ``logits_to_keep``; the batch dimension is kept), which skips
    most of the ``lm_head`` work on prompts; models without that argument project every position.
    A prefix that every row shares is run once (``_logits_after_shared_prefix``).
    """
    labels = batch["labels"]
    scored = labels[:, 1:] != IGNORE
    cols = scored.any(0).nonzero().squeeze(1)  # position t predicts token t + 1
    if _EVERY_POSITION.get() or cols.numel() == 0 or cols.numel() == labels.shape[1] - 1:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1, :]
        return logits, labels[:, 1:], scored
    prefix = shared_prefix_length(batch, int(cols[0]))
    if prefix >= MIN_SHARED_PREFIX:
        logits = _logits_after_shared_prefix(model, batch, prefix, cols)
    else:
        try:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           logits_to_keep=cols).logits
        except TypeError:  # an architecture without logits_to_keep
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, cols, :]
    target = labels[:, cols + 1]
    return logits, target, target != IGNORE


#: A batch whose rows all start with at least this many identical tokens computes them once.
MIN_SHARED_PREFIX = 8


def shared_prefix_length(batch: dict[str, torch.Tensor], first_scored: int) -> int:
    """How many leading tokens every row of ``batch`` shares (real tokens, none of them scored).

    ``first_scored`` is the first position whose next token is labelled: the shared part stops
    there, so every scored logit comes from the per-row part. 0 for a single row.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if ids.shape[0] < 2:
        return 0
    same = (ids == ids[:1]).all(0) & mask.bool().all(0)
    differ = (~same).nonzero()
    length = int(differ[0]) if differ.numel() else ids.shape[1]
    return min(length, first_scored)


def _logits_after_shared_prefix(model, batch: dict[str, torch.Tensor], prefix: int, cols: torch.Tensor) -> torch.Tensor:
    """Logits at positions ``cols`` (all >= ``prefix``), computing the rows' shared prefix once.

    The prefix runs through the model for one row with a KV cache, the cache is repeated over the
    batch, and the rows' remaining tokens attend to it. The result and its gradient (which flows
    through the repeated cache into the one prefix pass) equal those of the plain batched pass;
    only the prefix's repeated compute is saved. Chat-formatted corpora (a system prompt and an
    instruction before each question) spend most of their tokens there.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    out = model(input_ids=ids[:1, :prefix], attention_mask=mask[:1, :prefix], use_cache=True)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    cache.batch_repeat_interleave(ids.shape[0])
    return model(input_ids=ids[:, prefix:], attention_mask=mask, use_cache=True, logits_to_keep=cols - prefix,
                 **{cache_argument(model): cache}).logits


def cache_argument(model) -> str:
    """``cache`` (transformers >= 5.x) or ``past_key_values`` (older): the name the model's forward takes."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = getattr(base, "module", base)  # DistributedDataParallel
    inner = getattr(base, "model", base)
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
