"""Batched generation from chat-formatted prompts: the one way every evaluator generates text.

``generate(model, tokenizer, prompts, ...)`` returns one output string per prompt:

- Prompts are tokenised with ``add_special_tokens=False`` (they carry the chat template already, so
  no second BOS), left-padded, and generated with the KV cache (``model.generate``), greedy unless
  ``do_sample``. Prompts are sorted by token length (longest first) so that each batch holds
  prompts of similar length, and the outputs are put back in the caller's order. Batched output is
  identical to one-prompt-at-a-time output (tests check it on the tiny model).
- A sequence stops at an end-of-turn token (the tokenizer's eos, ``<|im_end|>``, ``<|eot_id|>``,
  ``<|endoftext|>`` where they exist, and the model's generation-config eos) or after
  ``max_new_tokens`` new tokens.
- With ``stop_at_newline`` (the probe protocol), the output is the generated text (special tokens
  removed) with leading whitespace stripped, cut before its first ``"\\n"``, then stripped; generation
  of that sequence stops as soon as such a newline exists. So ``"\\n Portland\\nMaine"`` gives
  ``"Portland"`` (RWKU's code stopped at a leading newline token and scored ``NOANSWER``; a leading
  newline is formatting, not an answer). Without it, the output is the whole text, stripped.
- An empty output stays ``""`` here; the probe scorer turns it into ``NOANSWER``.

Token counts (prompt tokens, generated tokens up to and including the stop) are returned with
``return_stats=True`` for cost accounting.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

import torch

_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end|>")


@dataclass
class GenerationStats:
    """What a generation call cost: prompts, prompt tokens read, tokens generated, wall time."""

    prompts: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    def __add__(self, other: GenerationStats) -> GenerationStats:
        return GenerationStats(
            self.prompts + other.prompts, self.prompt_tokens + other.prompt_tokens,
            self.generated_tokens + other.generated_tokens, self.seconds + other.seconds,
        )

    def to_json(self) -> dict:
        return asdict(self)


def progress_bar(total: int, desc: str | None):
    """A tqdm bar on stderr, shown only when ``desc`` is given and stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=desc is None or not sys.stderr.isatty())


def stop_token_ids(model, tokenizer) -> list[int]:
    """Token ids that end a turn for this model and tokenizer."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for tok in _END_OF_TURN:
        if tok in vocab:
            ids.add(int(vocab[tok]))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids.update(int(i) for i in (gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]))
    return sorted(ids)


_NEWLINE_TOKENS: dict[int, frozenset[int]] = {}


def newline_token_ids(tokenizer) -> frozenset[int]:
    """Ids of the tokens whose text contains a newline (computed once per tokenizer)."""
    key = id(tokenizer)
    if key not in _NEWLINE_TOKENS:
        size = len(tokenizer)
        texts = tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=False)
        _NEWLINE_TOKENS[key] = frozenset(i for i, t in enumerate(texts) if "\n" in t)
    return _NEWLINE_TOKENS[key]


def finish_text(text: str, stop_at_newline: bool) -> str:
    """The output rule: strip; with ``stop_at_newline`` cut at the first newline after leading whitespace."""
    if stop_at_newline:
        return text.lstrip().split("\n", 1)[0].strip()
    return text.strip()


def _cut(tokenizer, new_ids: list[int], stops: set[int], newline_ids: frozenset[int],
         stop_at_newline: bool) -> tuple[list[int], str]:
    """The generated ids up to and including the stop, and the output text."""
    for j, tok in enumerate(new_ids):
        if tok in stops:
            kept = new_ids[: j + 1]
            return kept, finish_text(tokenizer.decode(kept, skip_special_tokens=True), stop_at_newline)
        if stop_at_newline and tok in newline_ids:
            text = tokenizer.decode(new_ids[: j + 1], skip_special_tokens=True)
            if "\n" in text.lstrip():
                return new_ids[: j + 1], finish_text(text, True)
    return new_ids, finish_text(tokenizer.decode(new_ids, skip_special_tokens=True), stop_at_newline)


class _NewlineStop:
    """Per-sequence stopping criterion: the new text, left-stripped, contains a newline."""

    def __init__(self, tokenizer, prompt_width: int, newline_ids: frozenset[int]):
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.newline_ids = newline_ids

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        last = input_ids[:, -1].tolist()
        for i, tok in enumerate(last):
            if tok in self.newline_ids:
                text = self.tokenizer.decode(input_ids[i, self.prompt_width:], skip_special_tokens=True)
                done[i] = "\n" in text.lstrip()
        return done


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 30,
    batch_size: int = 16,
    stop_at_newline: bool = True,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    progress: str | None = None,
    return_stats: bool = False,
):
    """Generate one output per prompt (see the module docstring); ``(outputs, GenerationStats)`` with ``return_stats``."""
    from transformers import GenerationConfig, StoppingCriteriaList

    start = time.perf_counter()
    stats = GenerationStats(prompts=len(prompts))
    outputs: list[str] = [""] * len(prompts)
    if not prompts:
        return (outputs, stats) if return_stats else outputs
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    encoded = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    stops = stop_token_ids(model, tokenizer)
    stop_set = set(stops)
    newline_ids = newline_token_ids(tokenizer) if stop_at_newline else frozenset()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=do_sample, eos_token_id=stops, pad_token_id=pad, use_cache=True,
        **({"temperature": temperature, "top_p": top_p, "top_k": 0} if do_sample else {}),
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    bar = progress_bar(len(prompts), progress)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            for b in range(0, len(order), batch_size):
                rows = order[b : b + batch_size]
                width = max(len(encoded[i]) for i in rows)
                input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, i in enumerate(rows):
                    n = len(encoded[i])
                    input_ids[r, width - n :] = torch.tensor(encoded[i], dtype=torch.long)
                    mask[r, width - n :] = 1
                criteria = StoppingCriteriaList([_NewlineStop(tokenizer, width, newline_ids)]) if stop_at_newline else None
                out = model.generate(
                    input_ids=input_ids.to(device), attention_mask=mask.to(device), generation_config=config,
                    stopping_criteria=criteria,
                )
                new = out[:, width:].tolist()
                for r, i in enumerate(rows):
                    kept, text = _cut(tokenizer, new[r], stop_set, newline_ids, stop_at_newline)
                    outputs[i] = text
                    stats.prompt_tokens += len(encoded[i])
                    stats.generated_tokens += len(kept)
                bar.update(len(rows))
    finally:
        bar.close()
        if was_training:
            model.train()
    stats.seconds = time.perf_counter() - start
    return (outputs, stats) if return_stats else outputs
