import pytest
import torch

from rwkuplus.evaluation.generation import (
    GenerationStats,
    finish_text,
    generate,
    newline_token_ids,
    stop_token_ids,
)
from rwkuplus.evaluation.prompts import chat_prompt
from rwkuplus.testing import sharpen

QUESTIONS = [
    "Who is Alice?", "Where was Alice Smith born and in which year?", "x",
    "Please complete the blank in the following question. Question: ___ Answer:", "The quick brown fox",
    "abc", "Lyon painter 1970 The Silver Harbor", "I don't know", "a b c d e f", "Question: 1947",
]


@pytest.fixture()
def sharp(tiny):
    model, tokenizer = tiny
    return sharpen(model), tokenizer


@pytest.fixture()
def prompts(tiny):
    return [chat_prompt(tiny[1], q) for q in QUESTIONS]


def test_finish_text_rule():
    assert finish_text("\n Portland\nMaine", True) == "Portland"
    assert finish_text("  Portland, Maine  ", True) == "Portland, Maine"
    assert finish_text("\n\n  \n", True) == ""
    assert finish_text("Portland \nMaine", True) == "Portland"
    assert finish_text("\nPortland\nMaine\n", False) == "Portland\nMaine"


@pytest.mark.parametrize("stop_at_newline,batch_size", [(True, 3), (False, 16)])
def test_batched_equals_one_at_a_time(sharp, prompts, stop_at_newline, batch_size):
    model, tokenizer = sharp
    batched = generate(model, tokenizer, prompts, max_new_tokens=16, batch_size=batch_size,
                       stop_at_newline=stop_at_newline)
    single = [generate(model, tokenizer, [p], max_new_tokens=16, batch_size=1, stop_at_newline=stop_at_newline)[0]
              for p in prompts]
    assert batched == single
    assert len(set(batched)) > 5  # the outputs really differ from prompt to prompt


def test_order_restored(sharp, prompts):
    model, tokenizer = sharp
    forward = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=4)
    backward = generate(model, tokenizer, prompts[::-1], max_new_tokens=12, batch_size=4)
    assert backward == forward[::-1]


def test_newline_cuts_output_and_stops_generation(sharp, prompts):
    model, tokenizer = sharp
    whole, stats_whole = generate(model, tokenizer, prompts, max_new_tokens=20, stop_at_newline=False, return_stats=True)
    cut, stats_cut = generate(model, tokenizer, prompts, max_new_tokens=20, stop_at_newline=True, return_stats=True)
    with_newline = [i for i, w in enumerate(whole) if "\n" in w]
    assert with_newline, "the sharpened tiny model should produce a newline somewhere"
    for w, c in zip(whole, cut):
        assert c == finish_text(w, True)
        assert "\n" not in c
    assert stats_cut.generated_tokens < stats_whole.generated_tokens


def test_stops_at_end_of_turn_per_sequence(sharp, prompts):
    model, tokenizer = sharp
    whole = generate(model, tokenizer, prompts, max_new_tokens=16, stop_at_newline=False)
    # Make a token the model often produces an end-of-turn token: each sequence must stop there on its own.
    ids = tokenizer(whole[0], add_special_tokens=False).input_ids
    stop = ids[1]
    stop_text = tokenizer.decode([stop])
    model.generation_config.eos_token_id = stop
    assert stop in stop_token_ids(model, tokenizer)
    outs, stats = generate(model, tokenizer, prompts, max_new_tokens=16, stop_at_newline=False, return_stats=True)
    singles = [generate(model, tokenizer, [p], max_new_tokens=16, stop_at_newline=False)[0] for p in prompts]
    assert outs == singles
    stopped = [o for o, w in zip(outs, whole) if o != w]
    assert stopped, "some sequence should have stopped early"
    for o, w in zip(outs, whole):
        assert w.startswith(o)
    assert stats.generated_tokens < len(prompts) * 16
    assert stop_text  # the stop token has text, which is removed from the output with the rest


def test_stats_count_tokens(sharp, prompts):
    model, tokenizer = sharp
    _outs, stats = generate(model, tokenizer, prompts, max_new_tokens=7, stop_at_newline=False, return_stats=True)
    assert isinstance(stats, GenerationStats)
    assert stats.prompts == len(prompts)
    # Prompts are tokenised without special tokens: no second BOS.
    assert stats.prompt_tokens == sum(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
    assert 0 < stats.generated_tokens <= 7 * len(prompts)
    assert stats.seconds > 0
    total = stats + stats
    assert total.generated_tokens == 2 * stats.generated_tokens


def test_max_new_tokens_bounds_output(sharp, prompts):
    model, tokenizer = sharp
    short, stats = generate(model, tokenizer, prompts, max_new_tokens=3, stop_at_newline=False, return_stats=True)
    longer = generate(model, tokenizer, prompts, max_new_tokens=10, stop_at_newline=False)
    assert stats.generated_tokens == 3 * len(prompts)  # nothing stops this model early
    for s, lo in zip(short, longer):
        assert lo.startswith(s.rstrip("\ufffd").strip())  # a cut multi-byte character decodes as U+FFFD
        assert len(s) < len(lo)


def test_sampling_is_seeded(sharp, prompts):
    model, tokenizer = sharp
    a = generate(model, tokenizer, prompts, max_new_tokens=10, do_sample=True, temperature=1.0, seed=1)
    b = generate(model, tokenizer, prompts, max_new_tokens=10, do_sample=True, temperature=1.0, seed=1)
    c = generate(model, tokenizer, prompts, max_new_tokens=10, do_sample=True, temperature=1.0, seed=2)
    greedy = generate(model, tokenizer, prompts, max_new_tokens=10)
    assert a == b
    assert a != c
    assert a != greedy
    state = torch.random.get_rng_state()
    generate(model, tokenizer, prompts[:2], max_new_tokens=4, do_sample=True, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left alone


def test_empty_and_newline_tokens(tiny):
    model, tokenizer = tiny
    assert generate(model, tokenizer, []) == []
    nl = newline_token_ids(tokenizer)
    assert tokenizer.encode("\n", add_special_tokens=False)[0] in nl
    assert tokenizer.encode("a", add_special_tokens=False)[0] not in nl
    # The untrained tiny model only emits newlines: cut at the first newline after leading whitespace -> "".
    assert generate(model, tokenizer, [chat_prompt(tokenizer, "hi")], max_new_tokens=5) == [""]


def test_lora_wrapped_model(sharp, prompts):
    """A peft-wrapped model goes through the same cache path (the adapter starts as the identity)."""
    from rwkuplus.models import LoraSettings, add_lora

    model, tokenizer = sharp
    plain = generate(model, tokenizer, prompts[:4], max_new_tokens=8, batch_size=4)
    wrapped = add_lora(model, LoraSettings())
    wrapped.train()
    assert generate(wrapped, tokenizer, prompts[:4], max_new_tokens=8, batch_size=4) == plain
    assert wrapped.training is True  # the caller's training mode is restored


SHOTS_A = "Q: What colour is the sky? A: blue\nQ: What colour is grass? A: green\nQ: What colour is snow? A: white\n"
SHOTS_B = "Translate into French: cat -> chat; dog -> chien; house -> maison; water -> eau; bread -> pain\n"


def _prefill_tokens(model):
    """A forward pre-hook counting the tokens of every multi-token forward pass (prefill, not decoding)."""
    seen = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:
            seen.append(ids.numel())

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def test_prefix_groups_share_a_batch(sharp):
    """Two few-shot prefixes in one batch: each group's prefix runs once, the caches are joined for
    decoding, and the outputs equal one prompt at a time."""
    model, tokenizer = sharp
    prompts = [chat_prompt(tokenizer, shots + q) for shots in (SHOTS_A, SHOTS_B) for q in QUESTIONS[:5]]
    single = [generate(model, tokenizer, [p], max_new_tokens=12, batch_size=1)[0] for p in prompts]
    seen, handle = _prefill_tokens(model)
    try:
        batched = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=16)
    finally:
        handle.remove()
    assert batched == single
    assert len(set(batched)) > 3
    lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    shots = min(len(tokenizer(s, add_special_tokens=False).input_ids) for s in (SHOTS_A, SHOTS_B))
    # Without groups the batch shares only the chat template, and every row reads its few-shot text.
    assert sum(seen) < sum(lengths) - 8 * shots


def test_unjoinable_caches_fall_back_to_one_group(sharp, monkeypatch):
    from rwkuplus.evaluation import generation

    model, tokenizer = sharp
    prompts = [chat_prompt(tokenizer, shots + q) for shots in (SHOTS_A, SHOTS_B) for q in QUESTIONS[:3]]
    expected = generate(model, tokenizer, prompts, max_new_tokens=10, batch_size=16)
    calls = []

    def refuse(caches):
        calls.append(len(caches))
        return None

    monkeypatch.setattr(generation, "_join_caches", refuse)
    assert generate(model, tokenizer, prompts, max_new_tokens=10, batch_size=16) == expected
    assert calls == [2]  # tried once, then every batch runs as one group

