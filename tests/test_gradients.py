"""The per-example gradient engine against a plain loop of single-example backward passes (tiny model)."""

import pytest
import torch

from rwkuplus.benchmark.records import TrainExample
from rwkuplus.diagnostics.gradients import LossPart, gradient_gram, loop_gram, nll_loss
from rwkuplus.diagnostics.params import layer_group, select_parameters
from rwkuplus.errors import UserError
from rwkuplus.evaluation.prompts import question_prompt
from rwkuplus.models import LoraSettings, load_model
from rwkuplus.sequences import encode_examples

TEXTS = [
    "Alice Smith was born in 1970 in Lyon.",
    "The quick brown fox.",
    "Her best-known work is The Silver Harbor, a painting of the sea at night.",
    "I don't know who that is.",
    "She works as a painter.",
    "Born in Oslo",
]


def examples(tokenizer):
    """Chat QA items and raw texts of different lengths (so the batch is padded)."""
    out = [TrainExample(question_prompt(tokenizer, "Where was Alice Smith born?"), " Lyon<|im_end|>"),
           TrainExample(question_prompt(tokenizer, "Who is she?"), " A painter from Lyon.<|im_end|>")]
    return out + [TrainExample("", t) for t in TEXTS]


def close(a, b, rtol=1e-4):
    scale = b.abs().max().item()
    return (a - b).abs().max().item() <= rtol * scale


@pytest.fixture(scope="module")
def shared(tiny_model_dir):
    """One tiny model, a padded batch of 8 examples and the loop's Gram over all parameters."""
    model, tokenizer, _ = load_model(str(tiny_model_dir), device="cpu")
    batch = encode_examples(tokenizer, examples(tokenizer))
    return model, tokenizer, batch, loop_gram(model, batch, "all")


@pytest.fixture()
def tiny(shared):
    return shared[0], shared[1]


@pytest.fixture()
def batch(shared):
    return shared[2]


@pytest.mark.parametrize("strategy", ["auto", "token", "materialise"])
def test_exact_gram_equals_single_example_loop(shared, strategy):
    model, _, batch, ref = shared
    assert len(set(batch["attention_mask"].sum(1).tolist())) > 3  # really padded, different lengths
    got = gradient_gram(model, batch, "all", strategy=strategy)
    assert got.n == 8 and got.passes == 1
    assert close(got.gram, ref.gram)
    assert set(got.groups) == set(ref.groups) == {"embed_tokens", "layers.0", "layers.1", "norm"}
    for name in ref.groups:
        assert close(got.groups[name], ref.groups[name]), name
    # the tied lm_head / embed_tokens weight is one parameter whose gradient sums both uses
    pset = select_parameters(model, "all")
    assert pset.aliases["model.embed_tokens.weight"] == ["model.embed_tokens.weight", "lm_head.weight"]


def test_gram_is_a_real_gram_and_not_trivial(tiny, batch):
    model, _ = tiny
    got = gradient_gram(model, batch, "all")
    eig = torch.linalg.eigvalsh(got.gram)
    assert eig.min() > -1e-6 * eig.max()
    cos = got.gram / got.norms[:, None] / got.norms[None, :]
    off = cos[~torch.eye(8, dtype=bool)]
    assert off.abs().max() < 0.999 and off.std() > 0.01  # distinct examples, distinct gradients


@pytest.mark.parametrize("params", ["layers:0", "layers:1:mlp.down_proj,self_attn.q_proj"])
def test_parameter_subsets_match_the_loop(tiny, batch, params):
    model, _ = tiny
    ref = loop_gram(model, batch, params)
    got = gradient_gram(model, batch, params)
    assert got.parameters == ref.parameters and got.numel == ref.numel
    assert close(got.gram, ref.gram)


def test_chunked_pairs_equal_the_loop(shared):
    model, _, batch, ref = shared
    chunked = gradient_gram(model, batch, "all", batch_size=3)  # chunks 3, 3, 2 -> 3 passes
    assert chunked.passes == 3
    assert close(chunked.gram, ref.gram)
    for name in ref.groups:
        assert close(chunked.groups[name], ref.groups[name]), name


def test_parts_with_their_own_losses_and_grouped_items(tiny):
    model, tokenizer = tiny
    ex = examples(tokenizer)
    forget = LossPart(encode_examples(tokenizer, ex[:5]), lambda m, b: -nll_loss(m, b))  # gradient ascent
    retain = LossPart(encode_examples(tokenizer, ex[5:]))
    ref = loop_gram(model, [forget, retain], "all")
    got = gradient_gram(model, [forget, retain], "all")
    assert got.n == 8 and close(got.gram, ref.gram)
    assert close(gradient_gram(model, [forget, retain], "all", batch_size=4).gram, ref.gram)
    # items of two rows (a DPO-like pair): the item's gradient is that of its loss over both rows
    pairs = LossPart(encode_examples(tokenizer, ex), lambda m, b: nll_loss(m, b).view(-1, 2)[:, 0]
                     - 0.5 * nll_loss(m, b).view(-1, 2)[:, 1], group_size=2)
    ref = loop_gram(model, pairs, "all")
    got = gradient_gram(model, pairs, "all")
    assert got.n == 4 and close(got.gram, ref.gram)


def test_lora_parameters(tiny_model_dir):
    model, tokenizer, _ = load_model(str(tiny_model_dir), device="cpu", lora=LoraSettings(rank=2, alpha=4))
    batch = encode_examples(tokenizer, examples(tokenizer))
    with torch.no_grad():  # peft starts B at zero; move it so that A's gradient is not zero either
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    for params in ("lora", "all", "layers:1:lora_"):
        ref = loop_gram(model, batch, params)
        got = gradient_gram(model, batch, params)
        assert close(got.gram, ref.gram), params
    assert select_parameters(model, "auto").names == select_parameters(model, "lora").names
    assert all("lora_" in n for n in select_parameters(model, "layers:1:lora_").names)


def test_engine_leaves_the_model_as_it_was(tiny, batch):
    model, _ = tiny
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = gradient_gram(model, batch, "trainable")  # all parameters of this model are trainable
    assert model.training
    model.eval()
    assert trainable.numel == sum(p.numel() for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


def test_projection_is_exact_when_d_covers_each_group(tiny, batch):
    model, _ = tiny
    exact = gradient_gram(model, batch, "all")
    big = max(p.numel() for p in model.parameters()) * 20
    got = gradient_gram(model, batch, "all", project=big)
    assert close(got.gram, exact.gram, 1e-5)


def cosines(G):
    n = G.diagonal().sqrt()
    return G / n[:, None] / n[None, :]


def test_projection_error_shrinks_with_d_and_is_seeded(tiny, batch):
    model, _ = tiny
    C = cosines(gradient_gram(model, batch, "layers:1").gram)

    def error(d):
        errs = [(cosines(gradient_gram(model, batch, "layers:1", project=d, seed=s).gram) - C).abs().mean()
                for s in range(2)]
        return float(sum(errs) / len(errs))

    small, large = error(32), error(2048)
    assert large < small / 3
    assert large < (2 / 2048) ** 0.5  # within the documented sqrt(2 / d) scale
    a = gradient_gram(model, batch, "all", project=64, seed=7)
    b = gradient_gram(model, batch, "all", project=64, seed=7, batch_size=3)  # chunk by chunk, same sketch
    c = gradient_gram(model, batch, "all", project=64, seed=8)
    assert close(a.gram, b.gram, 1e-5) and b.passes == 3 and not close(a.gram, c.gram, 1e-3)


def test_loss_must_be_per_example(tiny, batch):
    model, _ = tiny
    with pytest.raises(ValueError, match="one value per example"):
        gradient_gram(model, LossPart(batch, lambda m, b: nll_loss(m, b).sum()), "all")


def test_parameter_specs_and_their_errors(tiny_model_dir):
    model, _, _ = load_model(str(tiny_model_dir), device="cpu")
    assert select_parameters(model, "all").numel == sum(p.numel() for p in model.parameters())
    assert select_parameters(model, "layers:1").group_names() == ["layers.1"]
    assert layer_group("base_model.model.model.layers.12.mlp.down_proj.weight") == "layers.12"
    assert layer_group("model.embed_tokens.weight") == "embed_tokens"
    assert select_parameters(model, "layers:0-1:mlp.down_proj").names == [
        "model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"]
    for spec, message in [("bogus", "expected all, trainable"), ("layers:", "expected all"),
                          ("layers:a-b", "layer indices"), ("layers:0-5", "layers 0-1; no layer 2"),
                          ("layers:1-0", "empty"), ("layers:0:nothing_here", "modules there"),
                          ("lora", "no LoRA parameters")]:
        with pytest.raises(UserError, match=message):
            select_parameters(model, spec)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(UserError, match="trainable"):
        select_parameters(model, "trainable")


def test_small_module_gradients_fast_path_and_vmap_fallback():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from rwkuplus.diagnostics.gradients import _elementwise_affine_grads, _vmap_grads

    class Squared(torch.nn.Module):  # not affine in its weight: the fast path must refuse it
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.linspace(0.5, 1.5, 6))

        def forward(self, x):
            return x * self.weight ** 2

    g = torch.Generator().manual_seed(0)
    x, delta = torch.randn(3, 4, 6, generator=g), torch.randn(3, 4, 6, generator=g)
    for module, fast in ((LlamaRMSNorm(6), True), (torch.nn.LayerNorm(6), True), (Squared(), False)):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
        params = {n: p.detach() for n, p in module.named_parameters()}
        expected = {n: [] for n in params}
        for r in range(3):  # one backward per row
            grads = torch.autograd.grad((module(x[r:r + 1]) * delta[r:r + 1]).sum(), list(module.parameters()))
            for n, gr in zip(params, grads):
                expected[n].append(gr)
        got_vmap = _vmap_grads(module, params, x, delta)
        got_fast = _elementwise_affine_grads(module, params, x, delta)
        assert (got_fast is not None) == fast
        for n in params:
            want = torch.stack(expected[n])
            assert torch.allclose(got_vmap[n], want, atol=1e-5)
            if fast:
                assert torch.allclose(got_fast[n], want, atol=1e-5)
