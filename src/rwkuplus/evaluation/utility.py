"""RWKU's five utility metrics (Gen, Rea, Tru, Fac, Flu) on RWKU's record formats, and the packaged sets.

Prompts follow RWKU's evaluation code (``LLaMA-Factory/src/llmtuner/eval/eval_*.py``); the user
message goes through the chat template, with RWKU's unlearning instruction first under ICU. Every
rule that differs between the two protocols is a field of ``protocol.Protocol`` (``rwku``: RWKU's
code; ``world``: the world's adaptations, each listed in ``protocol.WORLD.departures``).

- **Gen** (MMLU-style, ``MMLUItem``): ``The following are multiple choice questions (with answers)
  about {task}.`` + the item's few-shot ``examples`` (``Question: ...\\nA. ...\\nAnswer: X``) +
  ``Please following the previous examples and answer the given question.`` + the question; after
  the template ``Answer:``. ``mmlu_format="letter"`` (rwku, RWKU's ``eval_mmlu.py``): the prediction
  is the choice letter whose token (the last token of `` A``, `` B``, ...) has the highest next-token
  probability (the first on a tie). ``mmlu_format="choice"`` (world: small models such as
  SmolLM2-135M-Instruct answer every letter question with the same letter, so letter accuracy sits
  at chance): the same few-shot header and examples are shown as ``Question: ...\\nAnswer: <choice
  text>`` and the prediction is the choice whose text, after ``Answer:``, has the highest summed
  log-probability (the "cloze" form of MMLU used for small models). Accuracy x100.
- **Rea** (BBH-style, ``BBHItem``): the item's ``cot`` text (task description and worked examples) +
  ``Following previous examples, answer the following questions and end with 'so the answer is'``
  + ``Q: {question}``; after the template ``A:``. Greedy, ``bbh_max_new_tokens`` (rwku 256, world 96).
  Answer extraction, ``bbh_extraction="rwku"`` (RWKU's ``eval_bbh.py``): the first match of
  ``[t|T]he answer is (.*?)\\.`` (up to the first period of any kind, so "3.5." gives "3"), else the
  whole output; ``"sentence"`` (world): after the first "the answer is" up to a sentence-ending
  period (a ``.`` followed by whitespace or the end), a newline or the end, so "3.5." gives "3.5".
  Both strip the result; an empty one is ``NOANSWER``. Exact match after SQuAD normalisation
  (lowercase, punctuation and articles removed): ``bbh_match="characters"`` (rwku) is what RWKU's
  code computes, the best match over the items of the answer field, which for a string answer are
  its *characters* (so "17" never matches a gold "17", "7" does, and any prediction that normalises
  to nothing, such as "(A)", matches a gold with a punctuation character); ``"whole"`` (world, and the
  corrected rule offered as an option, ``--protocol rwku,bbh_match=whole``) compares with the whole
  answer. Beware that normalisation turns a gold answer that is only an article (``A``, ``(A)``) into
  the empty string. Rea = exact match x100.
- **Tru** (TruthfulQA-style, ``TruthfulQAItem``): the protocol's primer (rwku: TruthfulQA's QA primer
  as in RWKU's ``presets.py``; world: the project's own in the same shape) + ``\\n\\nQ: {question}``;
  after the template ``A:``. Each choice is scored by the summed log-probability of ``" " + choice``
  given the prompt. MC1 = 1 when the first true choice of ``mc1_targets`` (TruthfulQA has exactly
  one) beats every false one strictly, MC2 = the probability mass of the true choices of
  ``mc2_targets`` normalised over all its choices. Tru = MC1 x100 (RWKU's column); MC2 beside it.
- **Fac** (TriviaQA-style, ``TriviaQAItem``): five ``\\nQ: ...\\nA: ...`` examples (rwku: the five
  fixed ones of RWKU's ``eval_triviaqa.py``, ``protocol.TRIVIAQA_FEW_SHOT``; world: the first five
  other items of the set, first alias as the answer), then ``\\nPlease briefly answer the following
  question:\\nQ: {question}\\n``; after the template ``A:``. Greedy, 30 new tokens (world: cut at the
  first newline, as small models continue with made-up "Q: ... A: ..." lines). F1 and EM against
  each alias (SQuAD normalisation), the maximum over aliases, x100. Fac = F1 (RWKU's column); EM beside it.
- **Flu** (``FluencyItem``): ``Instruction: {instruction}\\n`` through the template, greedy,
  ``fluency_max_new_tokens`` (rwku 256, world 64), stopping at the end of the turn. Per generation
  ``(2/3 * H2 + 4/3 * H3) / 2`` with Hn the entropy in bits of the frequency distribution of its word
  n-grams; the mean over generations x100. Words come from NLTK (RWKU's ``eval_fluency.py``:
  ``nltk.word_tokenize``): ``nltk.word_tokenize`` when its Punkt data is installed; otherwise the
  same Treebank word tokenizer on the sentences of an untrained Punkt splitter
  (``PunktSentenceTokenizer()``), which differs only where trained Punkt knows an abbreviation
  ("Dr. Smith"). Nothing is downloaded; which one ran is recorded (``Flu_tokenizer``).

Log-likelihood scoring runs each distinct prompt once, the prefix a batch of prompts shares (the
system prompt, the few-shot text, the primer) once for them all, and each response (a choice) as a
continuation of its prompt's KV cache, which is what makes these metrics cheap; results equal
scoring each (prompt, response) pair alone up to float rounding.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from ..benchmark.records import (
    BBHItem,
    FluencyItem,
    MMLUItem,
    TrainExample,
    TriviaQAItem,
    TruthfulQAItem,
    UtilitySet,
)
from ..errors import UserError
from ..fileio import read_json, read_jsonl
from ..sequences import IGNORE, token_logprobs
from .generation import (
    GenerationStats,
    PrefixCaches,
    generate,
    prefill_prompts,
    progress_bar,
    select_cache_rows,
)
from .prompts import chat_prompt, icu_prefix
from .protocol import RWKU, TRIVIAQA_FEW_SHOT, Protocol

LETTERS = "ABCDEFGHIJ"
NO_ANSWER = "NOANSWER"

# RWKU's file names for the five utility sets, in the order Gen, Rea, Tru, Fac, Flu.
UTILITY_FILES = {
    "mmlu": ("retain_mmlu.json", MMLUItem),
    "bbh": ("retain_bbh.json", BBHItem),
    "truthfulqa": ("truthful.json", TruthfulQAItem),
    "triviaqa": ("triviaqa.json", TriviaQAItem),
    "fluency": ("fluency.json", FluencyItem),
}


# ---------------------------------------------------------------------------------------------
# Plain metric functions
# ---------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation as RWKU's metrics do it: lowercase, drop punctuation, then articles, squeeze spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def f1_score(prediction: str, reference: str) -> float:
    """Token-level F1 of the normalised prediction against one reference (1.0 when both are empty)."""
    pred, ref = _answer_tokens(prediction), _answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised prediction equals the normalised reference."""
    return float(_answer_tokens(prediction) == _answer_tokens(reference))


def best_over_answers(metric, prediction: str, answers: Sequence[str]) -> float:
    """The maximum of ``metric(prediction, answer)`` over the gold answers (aliases)."""
    return max(metric(prediction, a) for a in answers)


_ANSWER_IS = {
    # RWKU, eval_bbh.py: the first answer after "the answer is" and before the next period.
    "rwku": re.compile(r"[t|T]he answer is (.*?)\."),
    "sentence": re.compile(r"[tT]he answer is(.*?)(?:\.(?=\s|$)|\n|$)"),
}


def extract_answer(output: str, rule: str = "sentence") -> str:
    """The BBH answer under ``rule`` (``protocol.Protocol.bbh_extraction``): ``rwku``, RWKU's regex
    (after "the answer is " up to the first period of any kind); ``sentence``, after the first "the
    answer is" up to a sentence-ending period, a newline or the end.

    Without a match, the whole output (stripped); an empty result is ``NOANSWER``.
    """
    found = _ANSWER_IS[rule].search(output)
    answer = found.group(1).strip() if found else output.strip()
    return answer or NO_ANSWER


def bbh_exact_match(prediction: str, answer: str, rule: str = "whole") -> float:
    """BBH exact match under ``rule`` (``protocol.Protocol.bbh_match``): ``whole``, against the gold
    answer; ``characters``, what RWKU's ``eval_bbh.py`` computes, the best exact match over the items
    of the answer field, i.e. over the characters of a string answer (0.0 for an empty answer, where
    RWKU's ``max`` of nothing raises)."""
    if rule == "whole":
        return exact_match(prediction, answer)
    return max((exact_match(prediction, ch) for ch in answer), default=0.0)


def mc1_score(true_scores: Sequence[float], false_scores: Sequence[float]) -> float:
    """1.0 when the first true choice has a strictly higher log-probability than every false choice
    (RWKU's ``eval_truthfulqa.py``; TruthfulQA's ``mc1_targets`` hold exactly one true choice)."""
    if not false_scores:
        return 1.0
    return float(true_scores[0] > max(false_scores))


def mc2_score(true_scores: Sequence[float], false_scores: Sequence[float]) -> float:
    """Probability mass of the true choices, normalised over all choices (log-probabilities in, 0..1 out)."""
    all_scores = list(true_scores) + list(false_scores)
    top = max(all_scores)
    total = sum(math.exp(s - top) for s in all_scores)
    return sum(math.exp(s - top) for s in true_scores) / total


_SENTENCES: list = []  # [(splitter, its name)], found once


def _sentence_splitter():
    """NLTK's Punkt sentence splitter for English when its data is installed, else an untrained one."""
    if not _SENTENCES:
        import nltk
        from nltk.tokenize.punkt import PunktSentenceTokenizer

        try:
            nltk.sent_tokenize("A test. Another one.")  # a LookupError when the Punkt data is absent
            _SENTENCES.append((nltk.sent_tokenize, "nltk.word_tokenize"))
        except LookupError:
            _SENTENCES.append((PunktSentenceTokenizer().tokenize, "nltk treebank + untrained punkt"))
    return _SENTENCES[0]


def fluency_tokenizer_name() -> str:
    """Which tokenizer ``word_tokenize`` uses here: ``nltk.word_tokenize`` or the untrained-Punkt fallback."""
    return _sentence_splitter()[1]


def word_tokenize(text: str) -> list[str]:
    """Words for the fluency entropy: ``nltk.word_tokenize`` (RWKU's ``eval_fluency.py``), i.e. NLTK's
    Treebank word tokenizer on each Punkt sentence; without the Punkt data, on the sentences of an
    untrained Punkt splitter (no download ever)."""
    from nltk.tokenize import NLTKWordTokenizer

    split, _ = _sentence_splitter()
    words = NLTKWordTokenizer()
    return [token for sentence in split(text) for token in words.tokenize(sentence)]


def ngram_entropy(tokens: Sequence[str], n: int) -> float:
    """Entropy in bits of the frequency distribution of the ``n``-grams of ``tokens`` (0.0 when there are none)."""
    grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(grams.values())
    if total == 0:
        return 0.0
    return -sum(c / total * math.log2(c / total) for c in grams.values())


def fluency_entropy(text: str) -> float:
    """RWKU's fluency score of one generation: ``(2/3 * H2 + 4/3 * H3) / 2`` over its words (bits)."""
    words = word_tokenize(text)
    return (2 / 3 * ngram_entropy(words, 2) + 4 / 3 * ngram_entropy(words, 3)) / 2


# ---------------------------------------------------------------------------------------------
# Prompts (RWKU's strings)
# ---------------------------------------------------------------------------------------------


def _after_template(prompt: str, cue: str) -> str:
    return prompt + cue if prompt[-1:] in ("\n", " ") else prompt + " " + cue


def _mmlu_block(question: str, choices: Sequence[str], answer: int | None) -> str:
    text = "Question: " + question
    for j, choice in enumerate(choices):
        text += f"\n{LETTERS[j]}. {choice}"
    if answer is not None:
        text += f"\nAnswer: {LETTERS[answer]}\n\n"
    return text


def mmlu_prompt(tokenizer, item: MMLUItem, icu_target: str | None = None) -> str:
    header = f"The following are multiple choice questions (with answers) about {item.task.replace('_', ' ')}.\n\n"
    shots = "".join(_mmlu_block(ex["question"], ex["choices"], ex["answer"]) for ex in item.examples)
    user = (header + shots + "Please following the previous examples and answer the given question.\n"
            + _mmlu_block(item.question, item.choices, None))
    return chat_prompt(tokenizer, icu_prefix(user, icu_target)) + "Answer:"


def mmlu_choice_prompt(tokenizer, item: MMLUItem, icu_target: str | None = None) -> str:
    """The choice-text ("cloze") form: examples answered with the choice text, choices not listed."""
    header = f"The following are multiple choice questions (with answers) about {item.task.replace('_', ' ')}.\n\n"
    shots = "".join(f"Question: {ex['question']}\nAnswer: {ex['choices'][ex['answer']]}\n\n" for ex in item.examples)
    user = (header + shots + "Please following the previous examples and answer the given question.\n"
            + "Question: " + item.question)
    return chat_prompt(tokenizer, icu_prefix(user, icu_target)) + "Answer:"


def bbh_prompt(tokenizer, item: BBHItem, icu_target: str | None = None) -> str:
    user = (item.cot.strip() + "\n\nFollowing previous examples, answer the following questions and end with "
            "'so the answer is'\nQ: " + item.question)
    return _after_template(chat_prompt(tokenizer, icu_prefix(user, icu_target)), "A:")


def truthfulqa_prompt(tokenizer, item: TruthfulQAItem, icu_target: str | None = None, primer: str | None = None) -> str:
    """RWKU's ``eval_truthfulqa.py`` format (preset ``qa``): primer + ``\n\nQ: `` + question, then ``A:``
    (``primer``: the protocol's, ``Protocol.primer``; default rwku's, TruthfulQA's QA primer)."""
    user = (RWKU.primer if primer is None else primer) + "\n\nQ: " + item.question
    return _after_template(chat_prompt(tokenizer, icu_prefix(user, icu_target)), "A:")


def triviaqa_prompt(tokenizer, item: TriviaQAItem, shots: Sequence[tuple[str, str]],
                    icu_target: str | None = None) -> str:
    """``shots``: (question, answer) pairs; with ``TRIVIAQA_FEW_SHOT`` the user message is exactly RWKU's
    ``few_prompt + 'Q: {question}\\n'`` (``eval_triviaqa.py``)."""
    examples = "".join(f"\nQ: {q}\nA: {a}" for q, a in shots)
    user = examples + "\nPlease briefly answer the following question:\nQ: " + item.question + "\n"
    return chat_prompt(tokenizer, icu_prefix(user, icu_target)) + "A:"


def triviaqa_shots(items: Sequence[TriviaQAItem], index: int, n: int = 5, rule: str = "items") -> list[tuple[str, str]]:
    """The few-shot (question, answer) pairs for ``items[index]`` under ``rule``
    (``Protocol.triviaqa_shots``): ``fixed``, RWKU's five (``TRIVIAQA_FEW_SHOT``); ``items``, the first
    ``n`` other items of the set, each with its first alias."""
    if rule == "fixed":
        return list(TRIVIAQA_FEW_SHOT)
    return [(it.question, it.answers[0]) for j, it in enumerate(items) if j != index][:n]


def fluency_prompt(tokenizer, item: FluencyItem, icu_target: str | None = None) -> str:
    return chat_prompt(tokenizer, icu_prefix(f"Instruction: {item.instruction}\n", icu_target))


# ---------------------------------------------------------------------------------------------
# Batched log-likelihood scoring with a shared-prefix KV cache
# ---------------------------------------------------------------------------------------------


@torch.inference_mode()
def score_continuations(model, tokenizer, examples: Sequence[TrainExample], batch_size: int = 16,
                        max_batch_tokens: int = 4096, progress: str | None = None) -> list[float]:
    """Summed log-probability of each example's ``response`` given its ``prompt`` (tokenised apart,
    as ``encode_examples`` does; with an empty prompt the response's first token is context, unscored).

    Each distinct prompt runs through the model once, ``batch_size`` prompts at a time with the
    prefixes they share run once (``generation.prefill_prompts``); then the responses to those
    prompts run as continuations of their prompt's KV cache, at most ``max_batch_tokens`` tokens per
    pass counting each row's copy of its prompt's cache (what bounds memory). So the choices of a
    multiple-choice question cost their own tokens only.
    """
    if not examples:
        return []
    prompts, responses = [], []
    for ex in examples:
        p = tokenizer(ex.prompt, add_special_tokens=False).input_ids if ex.prompt else []
        r = tokenizer(ex.response, add_special_tokens=False).input_ids
        if not p:
            p, r = r[:1], r[1:]
        prompts.append(tuple(p))
        responses.append(r)
    scores = [0.0] * len(examples)
    asked: dict[tuple, list[int]] = {}  # prompt -> the examples that have something to score after it
    for i, p in enumerate(prompts):
        if p and responses[i]:
            asked.setdefault(p, []).append(i)
    distinct = sorted(asked)  # token order: prompts sharing a prefix side by side
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    caches = PrefixCaches(model)
    was_training = model.training
    model.eval()
    bar = progress_bar(len(examples), progress)
    bar.update(len(examples) - sum(len(v) for v in asked.values()))
    try:
        for b in range(0, len(distinct), batch_size):
            batch = distinct[b : b + batch_size]
            where, cache, last, mask, next_pos = prefill_prompts(model, caches, [list(p) for p in batch], pad)
            row_of = {batch[j]: r for r, j in enumerate(where)}
            rows_prompts = [list(batch[j]) for j in where]
            todo = sorted((i for p in batch for i in asked[p]), key=lambda i: len(responses[i]))
            context = mask.shape[1]  # every row of a pass carries a copy of its prompt's cache
            while todo:
                n = 1
                while n < len(todo) and (n + 1) * (context + len(responses[todo[n]])) <= max_batch_tokens:
                    n += 1
                chunk, todo = todo[:n], todo[n:]
                rows = torch.tensor([row_of[prompts[i]] for i in chunk], device=mask.device)
                for i, lp in zip(chunk, _continuation_logprobs(model, caches.arg, cache, rows, last, mask, next_pos,
                                                               [responses[i] for i in chunk], pad, rows_prompts)):
                    scores[i] = lp
                bar.update(len(chunk))
    finally:
        bar.close()
        if was_training:
            model.train()
    return scores


def _continuation_logprobs(model, arg: str, cache, rows: torch.Tensor, last: torch.Tensor, mask: torch.Tensor,
                           next_pos: torch.Tensor, responses: list[list[int]], pad: int,
                           prompts: list[list[int]]) -> list[float]:
    """Summed log-probabilities of ``responses``, each continuing cache row ``rows[k]`` (the prompt
    ``prompts[rows[k]]``, whose last logits are ``last[rows[k]]``): one forward pass over the
    responses, right-padded."""
    width = max(len(r) for r in responses)
    ids = torch.full((len(responses), width), pad, dtype=torch.long)
    labels = torch.full((len(responses), width + 1), IGNORE, dtype=torch.long)
    for k, r in enumerate(responses):
        ids[k, : len(r)] = torch.tensor(r, dtype=torch.long)
        labels[k, 1 : len(r) + 1] = torch.tensor(r, dtype=torch.long)
    ids, labels = ids.to(mask.device), labels.to(mask.device)
    sub = select_cache_rows(cache, rows)
    if sub is None:  # not a plain cache (sliding windows, ...): prompt and response run together
        return _flat_logprobs(model, [prompts[int(r)] for r in rows], responses, pad)
    full_mask = torch.cat([mask[rows], (labels[:, 1:] != IGNORE).long()], dim=1)
    positions = next_pos[rows].unsqueeze(1) + torch.arange(width, device=mask.device)
    out = model(input_ids=ids, attention_mask=full_mask, position_ids=positions, use_cache=True, **{arg: sub})
    logits = torch.cat([last[rows].unsqueeze(1), out.logits], dim=1)
    lp, _ = token_logprobs(logits, labels)
    return [float(x) for x in lp.sum(dim=1)]


def _flat_logprobs(model, prompts: list[list[int]], responses: list[list[int]], pad: int) -> list[float]:
    """Summed log-probabilities of ``responses`` after ``prompts``, each pair run whole (left-padded)."""
    rows = [list(p) + list(r) for p, r in zip(prompts, responses)]
    width, keep = max(len(x) for x in rows), max(len(r) for r in responses) + 1
    device = next(model.parameters()).device
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), keep), IGNORE, dtype=torch.long)
    for k, (x, r) in enumerate(zip(rows, responses)):
        ids[k, width - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[k, width - len(x):] = 1
        labels[k, keep - len(r):] = torch.tensor(r, dtype=torch.long)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                logits_to_keep=keep)
    lp, _ = token_logprobs(out.logits, labels.to(device))
    return [float(x) for x in lp.sum(dim=1)]


@torch.inference_mode()
def next_token_logprobs(model, tokenizer, prompts: Sequence[str], token_ids: Sequence[int], batch_size: int = 16,
                        progress: str | None = None) -> list[list[float]]:
    """Log-probabilities (over the whole vocabulary) of ``token_ids`` as the next token after each
    prompt (``batch_size`` prompts at a time, the prefixes they share run once)."""
    if not prompts:
        return []
    rows = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    order = sorted(range(len(rows)), key=lambda i: rows[i])
    out: list[list[float]] = [[] for _ in rows]
    idx = torch.tensor(list(token_ids), dtype=torch.long)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    caches = PrefixCaches(model)
    was_training = model.training
    model.eval()
    bar = progress_bar(len(rows), progress)
    try:
        for b in range(0, len(order), batch_size):
            batch = order[b : b + batch_size]
            where, _, last, _, _ = prefill_prompts(model, caches, [rows[i] for i in batch], pad)
            logp = torch.log_softmax(last.float(), dim=-1)[:, idx.to(last.device)]
            for r, j in enumerate(where):
                out[batch[j]] = logp[r].tolist()
            bar.update(len(batch))
    finally:
        bar.close()
        if was_training:
            model.train()
    return out


# ---------------------------------------------------------------------------------------------
# The five evaluators
# ---------------------------------------------------------------------------------------------


def _mean100(values: Sequence[float]) -> float | None:
    return 100.0 * sum(values) / len(values) if values else None


def choice_token_ids(tokenizer, n: int) -> list[int]:
    """RWKU's answer tokens: the last token of ``" A"``, ``" B"``, ..."""
    return [tokenizer.encode(" " + LETTERS[j], add_special_tokens=False)[-1] for j in range(n)]


def evaluate_mmlu(model, tokenizer, items: Sequence[MMLUItem], icu_target: str | None = None, batch_size: int = 16,
                  progress: str | None = None, mmlu_format: str = "letter"):
    """Gen: ``(records, {"Gen": accuracy x100})``; ``mmlu_format`` is ``letter`` (RWKU's) or ``choice``."""
    if mmlu_format not in ("letter", "choice"):
        raise UserError(f"mmlu_format: expected 'letter' or 'choice', got {mmlu_format!r}.")
    scores: list[list[float]] = [[] for _ in items]
    if mmlu_format == "letter":
        groups: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(len(item.choices), []).append(i)
        prompts = [mmlu_prompt(tokenizer, it, icu_target) for it in items]
        for n, idx in groups.items():
            got = next_token_logprobs(model, tokenizer, [prompts[i] for i in idx], choice_token_ids(tokenizer, n),
                                      batch_size=batch_size, progress=progress)
            for i, lp in zip(idx, got):
                scores[i] = lp
    else:
        examples, where = [], []
        for i, item in enumerate(items):
            prompt = mmlu_choice_prompt(tokenizer, item, icu_target)
            for choice in item.choices:
                examples.append(TrainExample(prompt, " " + choice))
                where.append(i)
        for i, s in zip(where, score_continuations(model, tokenizer, examples, batch_size=batch_size, progress=progress)):
            scores[i].append(s)
    records = []
    for item, lp in zip(items, scores):
        prediction = max(range(len(lp)), key=lambda j: (lp[j], -j))
        records.append({"task": item.task, "question": item.question, "answer": item.answer,
                        "prediction": prediction, "correct": prediction == item.answer,
                        "format": mmlu_format, "choice_logprobs": lp})
    return records, {"Gen": _mean100([float(r["correct"]) for r in records])}


def evaluate_bbh(model, tokenizer, items: Sequence[BBHItem], icu_target: str | None = None, batch_size: int = 16,
                 protocol: Protocol = RWKU, progress: str | None = None):
    """Rea: ``(records, {"Rea": exact match x100}, GenerationStats)`` under ``protocol``'s length, stop,
    extraction and match rules."""
    prompts = [bbh_prompt(tokenizer, it, icu_target) for it in items]
    outputs, stats = generate(model, tokenizer, prompts, max_new_tokens=protocol.bbh_max_new_tokens,
                              batch_size=batch_size, stop_at_newline=protocol.bbh_stop_at_newline,
                              stop_tokens=protocol.bbh_stop_tokens, progress=progress, return_stats=True)
    records = []
    for item, output in zip(items, outputs):
        prediction = extract_answer(output, protocol.bbh_extraction)
        records.append({"task": item.task, "question": item.question, "answer": item.answer, "output": output,
                        "prediction": prediction,
                        "correct": bool(bbh_exact_match(prediction, item.answer, protocol.bbh_match))})
    return records, {"Rea": _mean100([float(r["correct"]) for r in records])}, stats


def _split_targets(targets: dict) -> tuple[list[str], list[str]]:
    true = [c for c, lab in zip(targets["choices"], targets["labels"]) if lab == 1]
    false = [c for c, lab in zip(targets["choices"], targets["labels"]) if lab != 1]
    return true, false


def evaluate_truthfulqa(model, tokenizer, items: Sequence[TruthfulQAItem], icu_target: str | None = None,
                        batch_size: int = 16, protocol: Protocol = RWKU, progress: str | None = None):
    """Tru: ``(records, {"Tru": MC1 x100, "Tru_MC2": MC2 x100})`` with ``protocol``'s primer."""
    prompts = [truthfulqa_prompt(tokenizer, it, icu_target, protocol.primer) for it in items]
    examples, where = [], []
    for i, item in enumerate(items):
        choices = list(dict.fromkeys(item.mc1_targets["choices"] + item.mc2_targets["choices"]))
        for c in choices:
            examples.append(TrainExample(prompts[i], " " + c))
            where.append((i, c))
    scores = score_continuations(model, tokenizer, examples, batch_size=batch_size, progress=progress)
    by_item: list[dict[str, float]] = [{} for _ in items]
    for (i, c), s in zip(where, scores):
        by_item[i][c] = s
    records = []
    for item, sc in zip(items, by_item):
        t1, f1 = _split_targets(item.mc1_targets)
        t2, f2 = _split_targets(item.mc2_targets)
        records.append({
            "question": item.question,
            "mc1": mc1_score([sc[c] for c in t1], [sc[c] for c in f1]),
            "mc2": mc2_score([sc[c] for c in t2], [sc[c] for c in f2]),
            "choice_logprobs": sc,
        })
    return records, {"Tru": _mean100([r["mc1"] for r in records]), "Tru_MC2": _mean100([r["mc2"] for r in records])}


def evaluate_triviaqa(model, tokenizer, items: Sequence[TriviaQAItem], icu_target: str | None = None,
                      batch_size: int = 16, protocol: Protocol = RWKU, progress: str | None = None):
    """Fac: ``(records, {"Fac": F1 x100, "Fac_EM": EM x100}, GenerationStats)`` with ``protocol``'s
    few-shot examples, length and stop rule."""
    items = list(items)
    prompts = [triviaqa_prompt(tokenizer, it, triviaqa_shots(items, i, rule=protocol.triviaqa_shots), icu_target)
               for i, it in enumerate(items)]
    outputs, stats = generate(model, tokenizer, prompts, max_new_tokens=protocol.triviaqa_max_new_tokens,
                              batch_size=batch_size, stop_at_newline=protocol.triviaqa_stop_at_newline,
                              stop_tokens=protocol.triviaqa_stop_tokens, progress=progress, return_stats=True)
    records = []
    for item, output in zip(items, outputs):
        records.append({"question": item.question, "answers": item.answers, "prediction": output,
                        "f1": best_over_answers(f1_score, output, item.answers),
                        "em": best_over_answers(exact_match, output, item.answers)})
    metrics = {"Fac": _mean100([r["f1"] for r in records]), "Fac_EM": _mean100([r["em"] for r in records])}
    return records, metrics, stats


def evaluate_fluency(model, tokenizer, items: Sequence[FluencyItem], icu_target: str | None = None,
                     batch_size: int = 16, protocol: Protocol = RWKU, progress: str | None = None):
    """Flu: ``(records, {"Flu": mean entropy x100, "Flu_tokenizer": which NLTK tokenizer ran}, GenerationStats)``."""
    prompts = [fluency_prompt(tokenizer, it, icu_target) for it in items]
    outputs, stats = generate(model, tokenizer, prompts, max_new_tokens=protocol.fluency_max_new_tokens,
                              batch_size=batch_size, stop_at_newline=False, stop_tokens=protocol.fluency_stop_tokens,
                              progress=progress, return_stats=True)
    records = [{"instruction": it.instruction, "generation": out, "entropy": fluency_entropy(out)}
               for it, out in zip(items, outputs)]
    return records, {"Flu": _mean100([r["entropy"] for r in records]), "Flu_tokenizer": fluency_tokenizer_name()}, stats


@dataclass
class UtilitySettings:
    """The batch size, and the protocol whose rules and token limits the five metrics follow."""

    batch_size: int = 32
    protocol: Protocol = RWKU


def evaluate_utility(model, tokenizer, utility: UtilitySet, icu_target: str | None = None,
                     settings: UtilitySettings | None = None, progress: bool = False):
    """All five utility metrics: ``(records by set name, metrics, GenerationStats)``; empty sets are skipped."""
    s = settings or UtilitySettings()
    records: dict[str, list[dict]] = {}
    metrics: dict[str, float | None] = {}
    stats = GenerationStats()

    def desc(name):
        return f"utility {name}" if progress else None

    if utility.mmlu:
        records["mmlu"], m = evaluate_mmlu(model, tokenizer, utility.mmlu, icu_target, s.batch_size, desc("Gen"),
                                           s.protocol.mmlu_format)
        metrics.update(m)
    if utility.bbh:
        records["bbh"], m, st = evaluate_bbh(model, tokenizer, utility.bbh, icu_target, s.batch_size, s.protocol,
                                             desc("Rea"))
        metrics.update(m)
        stats = stats + st
    if utility.truthfulqa:
        records["truthfulqa"], m = evaluate_truthfulqa(model, tokenizer, utility.truthfulqa, icu_target, s.batch_size,
                                                       s.protocol, desc("Tru"))
        metrics.update(m)
    if utility.triviaqa:
        records["triviaqa"], m, st = evaluate_triviaqa(model, tokenizer, utility.triviaqa, icu_target, s.batch_size,
                                                       s.protocol, desc("Fac"))
        metrics.update(m)
        stats = stats + st
    if utility.fluency:
        records["fluency"], m, st = evaluate_fluency(model, tokenizer, utility.fluency, icu_target, s.batch_size,
                                                     s.protocol, desc("Flu"))
        metrics.update(m)
        stats = stats + st
    return records, metrics, stats


# ---------------------------------------------------------------------------------------------
# Reading utility sets in RWKU's layout, and the packaged sets
# ---------------------------------------------------------------------------------------------


def read_records(path: str | Path) -> list:
    """A JSON list of records, or JSON lines (both occur in RWKU's hub files)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.is_file() else None
    if text is None:
        raise UserError(f"{path}: file not found.")
    if text.lstrip().startswith("["):
        data = read_json(path)
    else:
        data = read_jsonl(path)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of records or JSON lines.")
    return data


def read_utility_folder(folder: str | Path, required: bool = False) -> UtilitySet:
    """The utility sets in a folder with RWKU's file names (retain_mmlu.json, retain_bbh.json,
    truthful.json, triviaqa.json, fluency.json); a missing file gives an empty set unless ``required``."""
    folder = Path(folder)
    sets = {}
    for name, (filename, record) in UTILITY_FILES.items():
        path = folder / filename
        if not path.is_file():
            if required:
                raise UserError(f"{path}: file not found (a utility set in RWKU's format was expected).")
            sets[name] = []
            continue
        sets[name] = [record.from_json(obj, f"{path}, record {i + 1}") for i, obj in enumerate(read_records(path))]
    return UtilitySet(**sets)


def packaged_utility() -> UtilitySet:
    """The project's own small utility sets (``rwkuplus/data/utility``), written for RWKU+ in RWKU's formats."""
    folder = resources.files("rwkuplus") / "data" / "utility"
    with resources.as_file(folder) as path:
        return read_utility_folder(path, required=True)


def utility_fingerprint(utility: UtilitySet) -> str:
    """A hash of the items (subjects ignored): targets with equal fingerprints share one utility evaluation."""
    import hashlib
    import json

    h = hashlib.sha256()
    for name in UTILITY_FILES:
        for item in getattr(utility, name):
            obj = {k: v for k, v in item.to_json().items() if k != "subject"}
            h.update(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"|")
    return h.hexdigest()[:16]
