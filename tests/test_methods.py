"""Every method's loss against a hand computation on the tiny model, and the registry."""

import copy
import math

import pytest
import torch

from rwkuplus.benchmark.records import TrainExample
from rwkuplus.errors import UserError
from rwkuplus.methods import Reference, make_method, method_class, method_names
from rwkuplus.methods.base import token_kl


# ------------------------------------------------------------------------------------ hand computation
def manual_logp(model, tok, prompt: str, response: str) -> tuple[float, int]:
    """log pi(response | prompt), one token at a time from a plain forward pass (no shared helper)."""
    p = tok(prompt, add_special_tokens=False).input_ids if prompt else []
    r = tok(response, add_special_tokens=False).input_ids
    ids = torch.tensor([p + r])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    total, count = 0.0, 0
    for j in range(max(len(p), 1), len(p) + len(r)):
        total += float(torch.log_softmax(logits[j - 1], -1)[ids[0, j]])
        count += 1
    return total, count


def manual_kl(ref, model, tok, text: str) -> float:
    ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
    with torch.no_grad():
        a = torch.log_softmax(ref(input_ids=ids).logits[0].double(), -1)
        b = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    total = 0.0
    for j in range(ids.shape[1] - 1):  # positions predicting tokens 1..T-1
        total += float((a[j].exp() * (a[j] - b[j])).sum())
    return total


def perturbed(model, seed=1, scale=0.05):
    """A copy of ``model`` with noise on every weight: a model that has 'moved' from its reference."""
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other


FORGET = ["Alice Smith was born in 1970 in Lyon.", "Her best-known work is The Silver Harbor, a painting."]
RETAIN = ["The quick brown fox jumps over the lazy dog.", "Who was born in which city?"]


def encode(method, tok, corpus, items):
    return method.encode(tok, items, list(range(len(items))), 512)


def raw(texts):
    return [(TrainExample("", t),) for t in texts]


@pytest.fixture()
def pair(tiny):
    """(moved model, frozen reference, tokenizer)."""
    ref, tok = tiny
    ref.eval()
    model = perturbed(ref)
    model.eval()
    return model, ref, tok


def close(a, b, tol=1e-4):
    a, b = float(torch.as_tensor(a).detach()), float(torch.as_tensor(b).detach())
    return abs(a - b) <= tol * max(1.0, abs(b))


# ------------------------------------------------------------------------------------------- losses
def test_ga_is_minus_nll_and_gd_adds_weighted_retain(pair):
    model, _, tok = pair
    ga = make_method("ga")
    batch = {"forget": encode(ga, tok, "forget", raw(FORGET))}
    parts = ga.loss_parts(model, batch)
    assert set(parts) == {"forget"} and parts["forget"].shape == (2,)
    for i, text in enumerate(FORGET):
        logp, _ = manual_logp(model, tok, "", text)
        assert logp < 0 and close(parts["forget"][i], logp)  # loss = -l = +log p: minimising raises the NLL
    gd = make_method("gd", retain_weight=0.5)
    batch["retain"] = encode(gd, tok, "retain", raw(RETAIN))
    out = gd.forward(model, batch, None)
    for i, text in enumerate(RETAIN):
        assert close(out.parts["retain"][i], -manual_logp(model, tok, "", text)[0])
    expected = out.parts["forget"].mean() + 0.5 * out.parts["retain"].mean()
    assert close(gd.objective(out.parts), expected)
    total_tokens = sum(manual_logp(model, tok, "", t)[1] for t in FORGET)
    assert close(out.stats["forget_nll_per_token"], -sum(manual_logp(model, tok, "", t)[0] for t in FORGET) / total_tokens)


def test_ga_step_raises_forget_nll(tiny):
    model, tok = tiny
    ga = make_method("ga")
    batch = {"forget": encode(ga, tok, "forget", raw(FORGET))}
    before = -ga.loss_parts(model, batch)["forget"].sum().item()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    ga.objective(ga.loss_parts(model, batch)).backward()
    opt.step()
    after = -ga.loss_parts(model, batch)["forget"].sum().item()
    assert after > before  # the NLL went up


def test_ga_kl_matches_token_level_kl_and_is_zero_at_reference(pair):
    model, ref, tok = pair
    m = make_method("ga-kl", kl_weight=2.0)
    batch = {"forget": encode(m, tok, "forget", raw(FORGET)), "retain": encode(m, tok, "retain", raw(RETAIN))}
    out = m.forward(model, batch, Reference.frozen(ref))
    for i, text in enumerate(RETAIN):
        assert close(out.parts["retain_kl"][i], manual_kl(ref, model, tok, text))
    assert float(out.parts["retain_kl"].min()) > 0
    assert close(m.objective(out.parts), out.parts["forget"].mean() + 2.0 * out.parts["retain_kl"].mean())
    same = m.forward(ref, batch, Reference.frozen(copy.deepcopy(ref)))
    assert float(same.parts["retain_kl"].abs().max()) < 1e-5
    # The helper on hand-made logits: KL between two known distributions at one position.
    ref_logits = torch.log(torch.tensor([[[0.5, 0.5], [0.5, 0.5]]]))
    cur_logits = torch.log(torch.tensor([[[0.9, 0.1], [0.5, 0.5]]]))
    labels = torch.tensor([[0, 1]])
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert close(token_kl(ref_logits, cur_logits, labels)[0], expected)


def test_npo_against_hand_formula_with_reference(pair):
    model, ref, tok = pair
    beta = 0.2
    for name in ("npo", "npo-gd", "npo-kl"):
        m = make_method(name, beta=beta)
        batch = {"forget": encode(m, tok, "forget", raw(FORGET))}
        parts = m.loss_parts(model, batch, Reference.frozen(ref))
        assert set(parts) == {"forget"}  # retain parts are skipped when their corpus is absent
        for i, text in enumerate(FORGET):
            lp, _ = manual_logp(model, tok, "", text)
            lr, _ = manual_logp(ref, tok, "", text)
            assert abs(lp - lr) > 0.1  # the two models really differ
            expected = -(2 / beta) * math.log(1 / (1 + math.exp(beta * (lp - lr))))
            assert close(parts["forget"][i], expected)
    # At the reference the loss is (2/beta) log 2 exactly.
    npo = make_method("npo")
    batch = {"forget": encode(npo, tok, "forget", raw(FORGET))}
    at_ref = npo.loss_parts(ref, batch, Reference.frozen(copy.deepcopy(ref)))["forget"]
    assert torch.allclose(at_ref, torch.full((2,), (2 / 0.2) * math.log(2)), atol=1e-4)


def test_npo_gd_and_kl_weights(pair):
    model, ref, tok = pair
    gd = make_method("npo-gd", retain_weight=3.0)
    kl = make_method("npo-kl", kl_weight=0.5)
    batch = {"forget": encode(gd, tok, "forget", raw(FORGET)), "retain": encode(gd, tok, "retain", raw(RETAIN))}
    out = gd.forward(model, batch, Reference.frozen(ref))
    assert close(gd.objective(out.parts), out.parts["forget"].mean() + 3.0 * out.parts["retain"].mean())
    assert close(out.parts["retain"][0], -manual_logp(model, tok, "", RETAIN[0])[0])
    out = kl.forward(model, batch, Reference.frozen(ref))
    assert close(out.parts["retain_kl"][1], manual_kl(ref, model, tok, RETAIN[1]))
    assert close(kl.objective(out.parts), out.parts["forget"].mean() + 0.5 * out.parts["retain_kl"].mean())


def test_simnpo_is_length_normalised_with_margin(pair):
    model, _, tok = pair
    beta, gamma = 0.1, 0.5  # small beta: the tiny random model's NLL (~6 nats/token) would saturate 2.5
    m = make_method("simnpo", beta=beta, gamma=gamma)
    short, long_ = "Alice Smith.", "Alice Smith. " * 6
    batch = {"forget": encode(m, tok, "forget", raw([short, long_]))}
    parts = m.loss_parts(model, batch)
    for i, text in enumerate([short, long_]):
        lp, n = manual_logp(model, tok, "", text)
        z = -(beta / n) * lp - gamma
        assert close(parts["forget"][i], -(2 / beta) * math.log(1 / (1 + math.exp(-z))))
    # Length normalisation: without it the long text's loss would be far smaller than the short one's.
    lp_s, n_s = manual_logp(model, tok, "", short)
    lp_l, n_l = manual_logp(model, tok, "", long_)
    unnormalised_long = -(2 / beta) * math.log(1 / (1 + math.exp(beta * lp_l + gamma)))
    assert n_l > 3 * n_s and not close(parts["forget"][1], unnormalised_long)
    assert not m.needs_reference


def chat_items(tok, prompt, responses):
    from rwkuplus.evaluation.prompts import chat_prompt

    p = chat_prompt(tok, prompt)
    return tuple(TrainExample(p, r + tok.eos_token) for r in responses)


def test_cft_dpo_against_hand_formula(pair):
    model, ref, tok = pair
    beta = 0.1
    m = make_method("cft-dpo", beta=beta)
    items = [chat_items(tok, "Who is Alice Smith?", ["A painter from Oslo.", "A painter from Lyon."]),
             chat_items(tok, "Where was Alice born?", ["In Rome, in 1950.", "In Lyon, in 1970."])]
    batch = {"preference": m.encode(tok, items, [0, 1], 512)}
    assert batch["preference"]["input_ids"].shape[0] == 4 and batch["preference"]["group"] == 2
    parts = m.loss_parts(model, batch, Reference.frozen(ref))
    assert parts["preference"].shape == (2,)
    for i, (chosen, rejected) in enumerate(items):
        r_c = manual_logp(model, tok, chosen.prompt, chosen.response)[0] - manual_logp(ref, tok, chosen.prompt, chosen.response)[0]
        r_r = (manual_logp(model, tok, rejected.prompt, rejected.response)[0]
               - manual_logp(ref, tok, rejected.prompt, rejected.response)[0])
        expected = -math.log(1 / (1 + math.exp(-beta * (r_c - r_r))))
        assert close(parts["preference"][i], expected)
    # At the reference every margin is 0: loss = log 2.
    at_ref = m.loss_parts(ref, batch, Reference.frozen(copy.deepcopy(ref)))["preference"]
    assert torch.allclose(at_ref, torch.full((2,), math.log(2)), atol=1e-5)


def test_altpo_averages_dpo_over_k_alternatives_plus_retain(pair):
    model, ref, tok = pair
    beta, k = 0.1, 3
    m = make_method("altpo", beta=beta, k=k, retain_weight=0.7)
    assert m.group_size("preference") == 4
    alts = ["A painter from Oslo.", "A sculptor in Rome.", "A poet from Cairo."]
    item = chat_items(tok, "Who is Alice Smith?", alts + ["A painter from Lyon."])
    batch = {"preference": m.encode(tok, [item], [0], 512), "retain": m.encode(tok, raw(RETAIN), [0, 1], 512)}
    out = m.forward(model, batch, Reference.frozen(ref))

    def ratio(ex):
        return manual_logp(model, tok, ex.prompt, ex.response)[0] - manual_logp(ref, tok, ex.prompt, ex.response)[0]

    r_rej = ratio(item[3])
    terms = [-math.log(1 / (1 + math.exp(-beta * (ratio(item[j]) - r_rej)))) for j in range(k)]
    assert len({round(t, 6) for t in terms}) == 3  # three different alternatives, three different terms
    assert close(out.parts["preference"][0], sum(terms) / k)
    assert close(out.parts["retain"][0], -manual_logp(model, tok, "", RETAIN[0])[0])
    assert close(m.objective(out.parts), out.parts["preference"].mean() + 0.7 * out.parts["retain"].mean())


def test_rt_cft_sft_and_sft_are_nll(pair):
    model, _, tok = pair
    refusal = [chat_items(tok, "Where was Alice Smith born?", ["I'm not sure who that is."])]
    rt = make_method("rt")
    parts = rt.loss_parts(model, {"refusal": rt.encode(tok, refusal, [0], 512)})
    ex = refusal[0][0]
    assert close(parts["refusal"][0], -manual_logp(model, tok, ex.prompt, ex.response)[0])
    cft = make_method("cft-sft", corpus="consistent")
    parts = cft.loss_parts(model, {"counterfactual": cft.encode(tok, raw(FORGET), [1], 512)})
    assert close(parts["counterfactual"][0], -manual_logp(model, tok, "", FORGET[1])[0])
    sft = make_method("sft", corpus_name="injection")
    assert sft.corpora == ("injection",) and sft.kind == "tuning"
    parts = sft.loss_parts(model, {"injection": sft.encode(tok, raw(FORGET), [0], 512)})
    assert close(parts["injection"][0], -manual_logp(model, tok, "", FORGET[0])[0])


def manual_topk_kl(teacher, model, tok, prompt: str, response: str, k: int) -> tuple[float, float]:
    """KL(teacher's renormalised top-k || model) summed over the response's positions, and the
    sum of -log(top-k mass) (what that KL is when model == teacher), one position at a time."""
    p = tok(prompt, add_special_tokens=False).input_ids
    r = tok(response, add_special_tokens=False).input_ids
    ids = torch.tensor([p + r])
    with torch.no_grad():
        a = torch.log_softmax(teacher(input_ids=ids).logits[0].double(), -1)
        b = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    kl, self_kl = 0.0, 0.0
    for j in range(len(p), len(p) + len(r)):
        top = a[j - 1].topk(k)
        mass = top.values.exp().sum()
        q = top.values.exp() / mass
        kl += float((q * (q.log() - b[j - 1][top.indices])).sum())
        self_kl += float(-mass.log())
    return kl, self_kl


def test_sft_soft_targets_train_on_top_k_kl_to_the_teacher(pair):
    from rwkuplus.methods.sft import teacher_targets

    model, teacher, tok = pair
    items = [(TrainExample("Question: Where was Alice born?\nAnswer:", " In Lyon, long ago."),),
             (TrainExample("Question: What did she paint?\nAnswer:", " The Silver Harbor."),)]
    soft = teacher_targets(teacher, tok, [it[0] for it in items], top_k=5, offset=0)
    soft = {1: soft[1]}  # item 1 distilled, item 0 plain NLL
    sft = make_method("sft", corpus_name="injection", soft_targets=soft)
    parts = sft.loss_parts(model, {"injection": sft.encode(tok, items, [0, 1], 512)})
    ex0, ex1 = items[0][0], items[1][0]
    assert close(parts["injection"][0], -manual_logp(model, tok, ex0.prompt, ex0.response)[0])
    kl, _ = manual_topk_kl(teacher, model, tok, ex1.prompt, ex1.response, 5)
    assert kl > 0.01 and close(parts["injection"][1], kl)
    # At the teacher itself the loss is only the mass left out of the top k: -log(mass) per token.
    same = make_method("sft", corpus_name="injection", soft_targets=soft)
    parts = same.loss_parts(teacher, {"injection": same.encode(tok, items, [1], 512)})
    _, self_kl = manual_topk_kl(teacher, teacher, tok, ex1.prompt, ex1.response, 5)
    assert close(parts["injection"][0], self_kl)
    double = make_method("sft", corpus_name="injection", soft_weight=2.0, soft_targets=soft)
    parts = double.loss_parts(model, {"injection": double.encode(tok, items, [1], 512)})
    assert close(parts["injection"][0], 2 * kl)
    with pytest.raises(ValueError, match="covers"):
        wrong = make_method("sft", corpus_name="injection", soft_targets={0: soft[1]})
        wrong.loss_parts(model, {"injection": wrong.encode(tok, items, [0], 512)})


def test_icu_does_not_train():
    icu = make_method("icu")
    assert icu.icu and not icu.trains and icu.corpora == ()


# ---------------------------------------------------------------------------------------- reference
def test_precomputed_reference_equals_live_reference(pair):
    model, ref, tok = pair
    npo = make_method("npo")
    items = raw(FORGET + RETAIN)
    cached = Reference.frozen(copy.deepcopy(ref))
    cached.precompute(npo, "forget", tok, items, 512, batch_size=3)
    assert cached.forward_passes == 2
    cached.model = None  # answers from the cache only
    batch = {"forget": npo.encode(tok, items, [3, 0, 2], 512)}
    live = npo.loss_parts(model, batch, Reference.frozen(ref))["forget"]
    from_cache = npo.loss_parts(model, batch, cached)["forget"]
    assert torch.allclose(live, from_cache, atol=1e-4)


def test_adapter_reference_is_the_base_model(tiny_model_dir):
    from rwkuplus.models import LoraSettings, load_model

    base, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    model, _, _ = load_model(str(tiny_model_dir), device="cpu", lora=LoraSettings(rank=2, alpha=4))
    with torch.no_grad():  # move the adapter away from zero so the adapted model differs from the base
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    npo = make_method("npo")
    batch = {"forget": npo.encode(tok, raw(FORGET), [0, 1], 512)}
    reference = Reference.adapter(model)
    from_adapter = reference.sequence_logprobs("forget", batch["forget"])
    for i, text in enumerate(FORGET):
        assert close(from_adapter[i], manual_logp(base, tok, "", text)[0])
        assert not close(manual_logp(model, tok, "", text)[0], manual_logp(base, tok, "", text)[0])


# ------------------------------------------------------------------------------------------ registry
def test_registry_lists_every_method_with_defaults():
    names = method_names()
    for expected in ("icu", "ga", "gd", "ga-kl", "npo", "npo-gd", "npo-kl", "simnpo", "rt", "cft-sft", "cft-dpo",
                     "altpo", "sft"):
        assert expected in names
    assert "sft" not in method_names("unlearning")
    assert method_class("npo").hyperparameters() == {"beta": 0.2}
    assert method_class("altpo").hyperparameters() == {"beta": 0.1, "k": 3, "retain_weight": 1.0}
    assert method_class("cft-sft").hyperparameters() == {"corpus": "conflicting"}
    assert all(method_class(n).description for n in names)


def test_bad_method_names_and_params_are_one_sentence_errors():
    with pytest.raises(UserError, match="unknown method.*expected one of"):
        make_method("gradient-descent")
    with pytest.raises(UserError, match="no such hyperparameter"):
        make_method("npo", gamma=1.0)
    with pytest.raises(UserError, match="expected a float"):
        make_method("npo", beta="high")
    with pytest.raises(UserError, match="beta > 0"):
        make_method("npo", beta=0)
    with pytest.raises(UserError, match="--corpus"):
        make_method("cft-sft", corpus="mixed")
    assert make_method("npo", beta="0.5").params.beta == 0.5  # command-line strings are converted
    assert make_method("altpo", k="5").params.k == 5
