"""The one place where labels are built and responses scored: the shared-prefix pass is exact."""

import pytest
import torch

from rwkuplus.benchmark.records import TrainExample
from rwkuplus.evaluation.prompts import chat_prompt
from rwkuplus.models import LoraSettings, add_lora
from rwkuplus.sequences import IGNORE, encode_examples, sequence_logprobs, shared_prefix_length, token_logprobs


def _plain(model, batch):
    """Reference: every position of every row, no cache, no logits_to_keep."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps, mask = token_logprobs(logits, batch["labels"])
    return logps.sum(-1), mask.sum(-1)


def _examples(tok):
    return [TrainExample(chat_prompt(tok, "Please briefly answer the following question.\nQuestion: " + q), a)
            for q, a in [("Who wrote it?", " Ann Lee wrote it."), ("Where was she born?", " Lyon"),
                         ("What is the longest river in the world, by most measures?", " The Nile, about 6,650 km.")]]


def test_shared_prefix_length_stops_at_the_first_difference_and_the_first_scored_token(tiny):
    _, tok = tiny
    batch = encode_examples(tok, _examples(tok))
    ids = batch["input_ids"]
    n = shared_prefix_length(batch, first_scored=10_000)
    assert n > 8 and (ids[:, :n] == ids[:1, :n]).all() and not (ids[:, n] == ids[0, n]).all()
    assert shared_prefix_length(batch, first_scored=5) == 5
    assert shared_prefix_length({k: v[:1] for k, v in batch.items()}, first_scored=10_000) == 0  # one row
    # A row whose padding starts inside the common part limits the prefix to its real tokens.
    short = encode_examples(tok, [TrainExample("a b c d e f g h i j k", " x"), TrainExample("a b c d e f g h i j k l m n", " y")])
    real = int(short["attention_mask"][0].sum())
    assert shared_prefix_length(short, first_scored=10_000) <= real


def test_shared_prefix_pass_equals_the_plain_pass_in_value_and_gradient(tiny):
    model, tok = tiny
    batch = encode_examples(tok, _examples(tok))
    assert shared_prefix_length(batch, int((batch["labels"][:, 1:] != IGNORE).any(0).nonzero()[0])) >= 8
    fast, n_fast = sequence_logprobs(model, batch)
    fast.sum().backward()
    g_fast = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    ref, n_ref = _plain(model, batch)
    ref.sum().backward()
    g_ref = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    assert torch.equal(n_fast, n_ref)
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-5)
    assert g_fast.keys() == g_ref.keys()
    for k in g_ref:
        torch.testing.assert_close(g_fast[k], g_ref[k], atol=1e-5, rtol=1e-4, msg=k)


def test_shared_prefix_pass_with_a_lora_adapter(tiny):
    model, tok = tiny
    model = add_lora(model, LoraSettings(rank=4, alpha=8, target_modules=("q_proj", "v_proj")))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # a non-zero adapter, so that it matters
    batch = encode_examples(tok, _examples(tok))
    fast, _ = sequence_logprobs(model, batch)
    ref, _ = _plain(model, batch)
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("prompts", [["", ""], ["same prompt here and there and more", "other prompt"]])
def test_rows_without_a_long_shared_prefix_take_the_plain_path(tiny, prompts):
    model, tok = tiny
    batch = encode_examples(tok, [TrainExample(p, " some answer text") for p in prompts])
    fast, _ = sequence_logprobs(model, batch)
    ref, _ = _plain(model, batch)
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-5)
