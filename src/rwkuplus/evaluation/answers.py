"""Greedy answers by prompt for one evaluation: each prompt generated once, its cost charged once.

Several parts ask the same prompts (the hallucination part's honesty split asks the forget probes
again; the targets of the world share its hallucination questions), and the parts of several targets
are answered fastest in one batched call (full batches, fewer decoding steps). An ``AnswerBook``
holds one model's answers under one probe rule (greedy; the protocol's stop rule: ``stop_at_newline``
and ``stop_tokens``, see ``generation.py``) at one token limit:

- ``fill(prompts)`` generates, in one call, those not answered yet;
- ``take(prompts)`` fills what is missing and returns the answers, with the cost of the prompts not
  charged yet: a prompt's tokens and its share of its call's seconds are charged to the first part
  that takes it, so the parts' costs add up to what the generation cost.
"""

from __future__ import annotations

from collections.abc import Sequence

from .generation import GenerationStats, generate_each


class AnswerBook:
    def __init__(self, model, tokenizer, max_new_tokens: int = 30, batch_size: int = 32, stop_at_newline: bool = True,
                 stop_tokens: Sequence[str] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.stop_at_newline = stop_at_newline
        self.stop_tokens = None if stop_tokens is None else tuple(stop_tokens)
        self._answers: dict[str, str] = {}
        self._costs: dict[str, GenerationStats] = {}  # prompt -> its cost, until a part takes it

    def __contains__(self, prompt: str) -> bool:
        return prompt in self._answers

    def fill(self, prompts: Sequence[str], progress: str | None = None) -> None:
        """Answer, in one batched call, the ``prompts`` not answered yet."""
        todo = [p for p in dict.fromkeys(prompts) if p not in self._answers]
        if not todo:
            return
        outputs, each = generate_each(self.model, self.tokenizer, todo, max_new_tokens=self.max_new_tokens,
                                      batch_size=self.batch_size, stop_at_newline=self.stop_at_newline,
                                      stop_tokens=self.stop_tokens, progress=progress)
        self._answers.update(zip(todo, outputs))
        self._costs.update(zip(todo, each))

    def take(self, prompts: Sequence[str], progress: str | None = None) -> tuple[list[str], GenerationStats]:
        """The answers to ``prompts`` (in order) and the cost of those not charged to a part before."""
        self.fill(prompts, progress)
        stats = GenerationStats()
        for p in dict.fromkeys(prompts):
            cost = self._costs.pop(p, None)
            if cost is not None:
                stats = stats + cost
        return [self._answers[p] for p in prompts], stats


def shared_book(book: AnswerBook | None, model, tokenizer, max_new_tokens: int, batch_size: int,
                protocol=None) -> AnswerBook:
    """``book`` when the caller shares one (it must be at ``max_new_tokens``), else a fresh one under
    ``protocol``'s probe stop rule (``protocol.Protocol``; None: the world's, a newline stop)."""
    if book is None:
        if protocol is None:
            return AnswerBook(model, tokenizer, max_new_tokens, batch_size)
        return AnswerBook(model, tokenizer, max_new_tokens, batch_size, protocol.probe_stop_at_newline,
                          protocol.probe_stop_tokens)
    if book.max_new_tokens != max_new_tokens:
        raise ValueError(f"the shared AnswerBook answers at {book.max_new_tokens} new tokens, not {max_new_tokens}")
    return book


def probe_book(model, tokenizer, protocol, batch_size: int = 32) -> AnswerBook:
    """A fresh ``AnswerBook`` answering probes under ``protocol`` (its token limit and stop rule)."""
    return AnswerBook(model, tokenizer, protocol.probe_max_new_tokens, batch_size, protocol.probe_stop_at_newline,
                      protocol.probe_stop_tokens)
