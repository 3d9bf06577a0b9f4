"""Batched generation from chat-formatted prompts: the one way every evaluator generates text.

``generate(model, tokenizer, prompts, ...)`` returns one output string per prompt:

- Prompts are tokenised with ``add_special_tokens=False`` (they carry the chat template already, so
  no second BOS) and decoded with the KV cache, greedy unless ``do_sample`` (temperature and top-p
  through transformers' logits warpers). A sequence that has stopped leaves the batch at once
  (its rows are dropped from the cache), so a batch costs what its longest answers cost, not
  ``batch x max_new_tokens``.
  Prompts are sorted by their tokens, so that prompts sharing a prefix (few-shot examples, a task
  description) share a batch. Within a batch, rows that share a longer prefix form a group
  (``plan_prefix_groups``: a group is split off when that saves token passes); each group's prefix
  is run through the model once and its cache reused by the group's rows (``PrefixCaches``), the
  rest of each prompt left-padded after it, with positions following the attention mask; the groups'
  caches are then joined (left-padded, masked) and the whole batch decodes together (a model whose
  cache cannot be joined, e.g. sliding-window layers, runs each batch as one group). Outputs come
  back in the caller's order. Batched
  output equals one-prompt-at-a-time output (tests check it on the tiny model; with real models
  float rounding can in principle flip a near-tie between two tokens).
- A sequence stops at an end-of-turn token (the tokenizer's eos, ``<|im_end|>``, ``<|eot_id|>``,
  ``<|endoftext|>`` where they exist, and the model's generation-config eos) or after
  ``max_new_tokens`` new tokens. With ``stop_tokens`` (RWKU's rule, ``protocol.py``) the stops are
  instead the tokenizer's eos and ``tokenizer.convert_tokens_to_ids(s)`` of each string (None
  dropped), as RWKU's ``eval_*.py`` build their terminators: on byte-level BPE tokenizers
  (SmolLM2, Llama-3) ``"\\n"`` and ``" \\n"`` are not tokens (SmolLM2 maps them to its unknown token,
  id 0 = ``<|endoftext|>``; Llama-3 to None), so RWKU never stops at a newline.
- With ``stop_at_newline`` (the world protocol's probes), the output is the generated text (special
  tokens removed) with leading whitespace stripped, cut before its first ``"\\n"``, then stripped;
  generation of that sequence stops as soon as such a newline exists. So ``"\\n Portland\\nMaine"``
  gives ``"Portland"``. Without it (RWKU's behaviour), the output is the whole text, stripped
  (``"Portland\\nMaine"``).
- An empty output stays ``""`` here; the probe scorer turns it into ``NOANSWER``.

Token counts (prompt tokens, generated tokens up to and including the stop) are returned with
``return_stats=True`` for cost accounting.
"""

from __future__ import annotations

import copy
import time
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ..sequences import cache_argument

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
    """An inner progress bar (``rwkuplus.progress``), shown only when ``desc`` is given: a tqdm bar
    in a terminal, part of the heartbeat lines in a log."""
    from .. import progress

    return progress.bar(total, desc, leave=False)


def stop_token_ids(model, tokenizer, stop_tokens: Sequence[str] | None = None) -> list[int]:
    """Token ids that end a turn for this model and tokenizer; with ``stop_tokens``, RWKU's: the
    tokenizer's eos and ``convert_tokens_to_ids`` of each string (None dropped)."""
    if stop_tokens is not None:
        rwku = [tokenizer.eos_token_id] + [tokenizer.convert_tokens_to_ids(s) for s in stop_tokens]
        return sorted({int(i) for i in rwku if i is not None})
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


_NEWLINE_TOKENS: dict[int, tuple[weakref.ref, frozenset[int]]] = {}


def newline_token_ids(tokenizer) -> frozenset[int]:
    """Ids of the tokens whose text contains a newline (computed once per tokenizer object)."""
    key = id(tokenizer)
    hit = _NEWLINE_TOKENS.get(key)
    if hit is None or hit[0]() is not tokenizer:
        size = len(tokenizer)
        texts = tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=False)
        hit = (weakref.ref(tokenizer), frozenset(i for i, t in enumerate(texts) if "\n" in t))
        _NEWLINE_TOKENS[key] = hit
    return hit[1]


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


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix that all ``rows`` share."""
    if not rows:
        return 0
    first = rows[0]
    n = min(len(r) for r in rows)
    for i in range(n):
        t = first[i]
        if any(r[i] != t for r in rows):
            return i
    return n


class PrefixCaches:
    """KV caches (batch 1) of token prefixes already run through the model.

    A prefix shared by many prompts (the system prompt, few-shot examples, a primer) is computed
    once; a longer prefix extends the longest stored one it starts with. ``expanded(ids, n)`` gives a
    fresh copy repeated for a batch of ``n`` rows (the model appends to the cache it is given).
    """

    def __init__(self, model, size: int = 8):
        self.model = model
        self.size = size
        self.device = next(model.parameters()).device
        self.arg = cache_argument(model)
        self.store: list[tuple[tuple[int, ...], object]] = []
        self.joinable = True  # whether caches of several prefix groups can be joined into one batch

    def get(self, ids: Sequence[int]):
        ids = tuple(ids)
        if not ids:
            return None
        best_len, best = 0, None
        for key, cache in self.store:
            if len(key) <= len(ids) and len(key) > best_len and ids[: len(key)] == key:
                best_len, best = len(key), cache
        if best_len == len(ids):
            return best
        x = torch.tensor([list(ids[best_len:])], dtype=torch.long, device=self.device)
        pos = torch.arange(best_len, len(ids), device=self.device).unsqueeze(0)
        kwargs = {self.arg: copy.deepcopy(best)} if best is not None else {}
        out = self.model(input_ids=x, position_ids=pos, use_cache=True, logits_to_keep=1, **kwargs)
        cache = getattr(out, "cache", None)
        cache = cache if cache is not None else out.past_key_values
        self.store.append((ids, cache))
        if len(self.store) > self.size:
            self.store.pop(0)
        return cache

    def expanded(self, ids: Sequence[int], rows: int):
        cache = self.get(ids)
        if cache is None:
            return None
        cache = copy.deepcopy(cache)
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        return cache


# Shorter shared prefixes are not worth a separate pass.
MIN_SHARED_PREFIX = 8


# A new group costs about this many tokens' worth of work beyond its tokens: an extra forward pass
# (planning heuristic).
NEW_GROUP_COST = 64


def plan_prefix_groups(rows: Sequence[Sequence[int]], limits: Sequence[int]) -> list[tuple[list[int], int]]:
    """Sort one batch's rows so that neighbours share prefixes, and cut them into groups.

    ``limits[i]`` is the longest prefix row ``i`` may share (each prompt keeps at least its last
    token). Returns ``[(row indices, shared prefix length)]``. A row joins the current group unless
    starting a new one costs fewer token passes: a new group runs its own longer shared prefix once
    (extending the cache of the previous prefix), so prompts with different few-shot texts each read
    theirs once, while unrelated short prompts still share one group.
    """
    order = sorted(range(len(rows)), key=lambda i: tuple(rows[i]))
    groups: list[tuple[list[int], int]] = []
    current: list[int] = []
    current_p = 0
    width = 0
    for i in order:
        row = rows[i]
        if current:
            shared = common_prefix_length([rows[current[0]], row])
            p = min(current_p, shared, limits[i])
            new_width = max(width + current_p - p, len(row) - p)
            join = (len(current) + 1) * new_width - len(current) * width
            fresh = (limits[i] - min(shared, current_p)) + (len(row) - limits[i]) + NEW_GROUP_COST
            if join <= fresh:
                current.append(i)
                current_p, width = p, new_width
                continue
            groups.append((current, current_p))
        current, current_p, width = [i], limits[i], len(row) - limits[i]
    if current:
        groups.append((current, current_p))
    return groups


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _plain_layers(cache) -> list | None:
    """The per-layer key/value layers of a plain cache (``DynamicLayer``s); None for any other kind
    (sliding windows, ...), whose rows cannot be joined or selected here."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return None if layers is None or any(type(layer) is not DynamicLayer for layer in layers) else layers


def _join_caches(caches: list):
    """The rows of ``caches`` in order, in the first cache (modified), each left-padded (masked
    positions) to the longest; None when a cache is not plain (``_plain_layers``)."""
    layers = [_plain_layers(c) for c in caches]
    if any(ls is None for ls in layers):
        return None
    length = max(c.get_seq_length() for c in caches)
    for i, layer in enumerate(layers[0]):
        for attr in ("keys", "values"):
            parts = [getattr(ls[i], attr) for ls in layers]
            setattr(layer, attr, torch.cat([torch.nn.functional.pad(x, (0, 0, length - x.shape[-2], 0)) for x in parts]))
    return caches[0]


def select_cache_rows(cache, rows: torch.Tensor):
    """A new KV cache holding the rows ``rows`` of a plain cache (``cache`` is left as it is); None when
    the cache is not plain (``_plain_layers``)."""
    from transformers.cache_utils import DynamicCache

    layers = _plain_layers(cache)
    if layers is None:
        return None
    new = DynamicCache()
    for i, layer in enumerate(layers):
        new.update(layer.keys[rows], layer.values[rows], i)
    return new


def prefill_batch(model, caches: PrefixCaches, seqs: list[list[int]], groups: list[tuple[list[int], int]], pad: int):
    """Run one batch's prompts through the model, group by group.

    ``groups``: ``[(row indices, shared prefix length)]``. A group's prefix comes from ``caches`` (run
    once); its rows' remainders are left-padded after it (``[prefix][padding][rest]``, positions
    following the mask). The groups' caches are joined into one, each left-padded to the longest.
    Returns ``(row order, cache, last logits, attention mask, next positions)`` (None when the caches
    cannot be joined), rows in ``row order``.
    """
    device = caches.device
    done = []
    for rows, p in groups:
        group = [seqs[i] for i in rows]
        p = p if p >= MIN_SHARED_PREFIX else 0
        width = max(len(x) - p for x in group)
        ids = torch.full((len(group), p + width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), p + width), dtype=torch.long)
        for r, x in enumerate(group):
            rest = x[p:]
            ids[r, :p] = torch.tensor(x[:p], dtype=torch.long)
            ids[r, p + width - len(rest):] = torch.tensor(rest, dtype=torch.long)
            mask[r, :p] = 1
            mask[r, p + width - len(rest):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = {caches.arg: caches.expanded(group[0][:p], len(group))} if p else {}
        out = model(input_ids=ids[:, p:].to(device), attention_mask=mask.to(device),
                    position_ids=positions[:, p:].to(device), use_cache=True, logits_to_keep=1, **kwargs)
        done.append((rows, _cache_of(out), out.logits[:, -1, :], mask, positions[:, -1] + 1))
    cache = done[0][1] if len(done) == 1 else _join_caches([d[1] for d in done])
    if cache is None:
        return None
    length = max(d[3].shape[1] for d in done)
    mask = torch.cat([torch.nn.functional.pad(d[3], (length - d[3].shape[1], 0)) for d in done])
    return ([i for d in done for i in d[0]], cache, torch.cat([d[2] for d in done]), mask.to(device),
            torch.cat([d[4] for d in done]).to(device))


def prefill_prompts(model, caches: PrefixCaches, seqs: list[list[int]], pad: int):
    """``prefill_batch`` of one batch of prompts, grouped by the prefixes they share (each prompt keeps
    at least its last token); one group per batch from the first time a model's caches cannot be joined."""
    limits = [len(x) - 1 for x in seqs]
    if caches.joinable:
        filled = prefill_batch(model, caches, seqs, plan_prefix_groups(seqs, limits), pad)
        if filled is not None:
            return filled
        caches.joinable = False
    return prefill_batch(model, caches, seqs, [(list(range(len(seqs))), min(common_prefix_length(seqs), min(limits)))],
                         pad)


def _decode(model, cache, arg: str, logits: torch.Tensor, mask: torch.Tensor, next_pos: torch.Tensor,
            max_new_tokens: int, stops: set[int], newline_ids: frozenset[int], tokenizer, sampler) -> list[list[int]]:
    """Greedy (or sampled) decoding of one prefilled batch with the KV cache; a row leaves the batch when it stops.

    ``logits``: each row's next-token logits after its prompt. Returns each row's new tokens, up to
    and including its stop token.
    """
    n = logits.shape[0]
    active = list(range(n))  # rows still generating, in the order of the cache's batch dimension
    new: list[list[int]] = [[] for _ in range(n)]
    for step in range(max_new_tokens):
        tokens = sampler(logits.float()).tolist()
        keep = []
        for j, row in enumerate(active):
            tok = tokens[j]
            new[row].append(tok)
            done = tok in stops
            if not done and tok in newline_ids:
                done = "\n" in tokenizer.decode(new[row], skip_special_tokens=True).lstrip()
            if not done:
                keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=mask.device)
            cache.batch_select_indices(index)
            mask, next_pos = mask[index], next_pos[index]
            active = [active[j] for j in keep]
        step_ids = torch.tensor([[new[row][-1]] for row in active], dtype=torch.long, device=mask.device)
        mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=mask.device)], dim=1)
        out = model(input_ids=step_ids, attention_mask=mask, position_ids=next_pos.unsqueeze(-1), use_cache=True,
                    logits_to_keep=1, **{arg: cache})
        logits = out.logits[:, -1, :]
        next_pos = next_pos + 1
    return new


def _sampler(do_sample: bool, temperature: float, top_p: float):
    """Next-token choice: argmax, or a draw after temperature and nucleus (top-p) filtering (transformers' warpers)."""
    if not do_sample:
        return lambda logits: logits.argmax(-1)
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    warpers = ([TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []) + \
              ([TopPLogitsWarper(top_p)] if top_p < 1.0 else [])

    def draw(logits):
        for w in warpers:
            logits = w(None, logits)
        return torch.multinomial(torch.softmax(logits, dim=-1), 1).squeeze(-1)

    return draw


def generate(model, tokenizer, prompts: list[str], *args, return_stats: bool = False, **kwargs):
    """Generate one output per prompt (see the module docstring; the options are ``generate_each``'s:
    ``max_new_tokens=30, batch_size=16, stop_at_newline=True, do_sample=False, temperature=1.0,
    top_p=1.0, seed=None, progress=None, stop_tokens=None``); ``(outputs, GenerationStats)`` with
    ``return_stats``."""
    outputs, each = generate_each(model, tokenizer, prompts, *args, **kwargs)
    if not return_stats:
        return outputs
    return outputs, sum(each, GenerationStats())


@torch.inference_mode()
def generate_each(
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
    stop_tokens: Sequence[str] | None = None,
) -> tuple[list[str], list[GenerationStats]]:
    """``generate``, with each prompt's own cost: its tokens, and its share of the wall time (in
    proportion to its prompt and generated tokens)."""
    start = time.perf_counter()
    outputs: list[str] = [""] * len(prompts)
    each = [GenerationStats(prompts=1) for _ in prompts]
    if not prompts:
        return outputs, each
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be at least 1")
    encoded = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    # Token order puts prompts that share a prefix (few-shot text) side by side.
    order = sorted(range(len(prompts)), key=lambda i: encoded[i])
    stops = stop_token_ids(model, tokenizer, stop_tokens)
    stop_set = set(stops)
    newline_ids = newline_token_ids(tokenizer) if stop_at_newline else frozenset()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    sampler = _sampler(do_sample, temperature, top_p)
    device = next(model.parameters()).device
    caches = PrefixCaches(model)
    was_training = model.training
    model.eval()
    bar = progress_bar(len(prompts), progress)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            for b in range(0, len(order), batch_size):
                rows = order[b : b + batch_size]
                seqs = [encoded[i] for i in rows]
                where, cache, logits, mask, next_pos = prefill_prompts(model, caches, seqs, pad)
                new_rows = _decode(model, cache, caches.arg, logits, mask, next_pos, max_new_tokens, stop_set,
                                   newline_ids, tokenizer, sampler)
                new = [[] for _ in rows]
                for j, r in enumerate(where):
                    new[r] = new_rows[j]
                for r, i in enumerate(rows):
                    kept, text = _cut(tokenizer, new[r], stop_set, newline_ids, stop_at_newline)
                    outputs[i] = text
                    each[i].prompt_tokens = len(encoded[i])
                    each[i].generated_tokens = len(kept)
                bar.update(len(rows))
    finally:
        bar.close()
        if was_training:
            model.train()
    seconds = time.perf_counter() - start
    tokens = sum(s.prompt_tokens + s.generated_tokens for s in each) or 1
    for s in each:
        s.seconds = seconds * (s.prompt_tokens + s.generated_tokens) / tokens
    return outputs, each
