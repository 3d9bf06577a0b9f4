"""The training loop, its settings and the corpora builder, on the tiny model."""

import math

import pytest
import torch

from rwkuplus.benchmark.records import (
    Benchmark,
    CorpusText,
    PreferencePair,
    RefusalPair,
    Target,
    TargetData,
    TrainExample,
)
from rwkuplus.errors import UserError
from rwkuplus.methods import Method, MethodOutput, make_method
from rwkuplus.methods.presets import default_settings
from rwkuplus.models import LoraSettings, load_model
from rwkuplus.training import StartingWeights, TrainSettings, parse_layers, train
from rwkuplus.training.data import build_corpora
from rwkuplus.training.loop import _make_optimizer

FORGET = [TrainExample("", f"Alice Smith was born in {1960 + i} in Lyon.") for i in range(6)]
RETAIN = [TrainExample("", f"The quick brown fox number {i} jumps.") for i in range(5)]





def settings(**kw):
    base = dict(lr=1e-3, max_steps=4, batch_size=2, warmup_ratio=0.0, schedule="constant")
    base.update(kw)
    return TrainSettings(**base)


def nll(model, tok, examples):
    method = make_method("cft-sft")
    enc = method.encode(tok, [(e,) for e in examples], list(range(len(examples))), 512)
    with torch.no_grad():
        return float(method.loss_parts(model, {"counterfactual": enc})["counterfactual"].sum())


def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ------------------------------------------------------------------------------------------ training
def test_sft_lowers_and_ga_raises_the_nll(tiny_model_dir):
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    before = nll(model, tok, FORGET)
    result = train(model, tok, make_method("sft", corpus_name="facts"), {"facts": FORGET}, settings(max_steps=6))
    assert result.stopped_reason is None and result.steps == 6
    assert nll(result.model, tok, FORGET) < before - 1.0
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    result = train(model, tok, make_method("ga"), {"forget": FORGET}, settings(max_steps=6))
    assert nll(result.model, tok, FORGET) > before + 1.0


def test_log_counts_and_seeded_epoch_order(tiny_model_dir):
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    s = settings(max_steps=None, epochs=2, batch_size=4)
    result = train(model, tok, make_method("gd"), {"forget": FORGET, "retain": RETAIN}, s)
    steps = math.ceil(2 * len(FORGET) / 4)
    assert result.steps == result.total_steps == steps == len(result.log)
    entry = result.log[0]
    assert set(entry) >= {"step", "epoch", "loss", "parts", "lr", "grad_norm", "tokens", "time", "stats"}
    assert set(entry["parts"]) == {"forget", "retain"} and entry["grad_norm"] > 0
    assert math.isclose(entry["loss"], entry["parts"]["forget"] + entry["parts"]["retain"], rel_tol=1e-5)
    # Every epoch is a permutation: the first len(FORGET) draws cover every forget item exactly once.
    seen = result.seen["forget"]
    assert len(seen) == steps * 4 and sorted(seen[: len(FORGET)]) == list(range(len(FORGET)))
    assert sorted(seen[len(FORGET): 2 * len(FORGET)]) == list(range(len(FORGET)))
    c = result.cost
    assert c.optimizer_steps == steps and c.backward_passes == steps and c.forward_passes == 2 * steps
    assert c.tokens_trained == sum(e["tokens"] for e in result.log) > 0
    assert c.reference_forward_passes == 0 and c.wall_time_s > 0 and c.peak_rss_mb > 0
    # Same seed, same run; another seed, another order.
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    again = train(model, tok, make_method("gd"), {"forget": FORGET, "retain": RETAIN}, s)
    assert [e["loss"] for e in again.log] == [e["loss"] for e in result.log]
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    other = train(model, tok, make_method("gd"), {"forget": FORGET, "retain": RETAIN}, s.replace(seed=1))
    assert other.seen["forget"] != seen


def test_group_by_length_batches_similar_lengths_and_keeps_epochs_whole(tiny_model_dir):
    examples = [TrainExample("", "word " * n) for n in (1, 30, 2, 29, 3, 28, 4, 27)]
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    s = settings(max_steps=None, epochs=2, batch_size=2, group_by_length=True)
    result = train(model, tok, make_method("sft", corpus_name="facts"), {"facts": examples}, s)
    seen = result.seen["facts"]
    assert sorted(seen[:8]) == list(range(8)) and sorted(seen[8:]) == list(range(8))
    # Within one window (all 8 items here), sorted by length then cut in pairs: neighbours in length.
    pairs = [tuple(sorted(seen[i:i + 2])) for i in range(0, 8, 2)]
    assert sorted(pairs) == [(0, 2), (1, 3), (4, 6), (5, 7)]
    plain = train(load_model(str(tiny_model_dir), device="cpu")[0], tok, make_method("sft", corpus_name="facts"),
                  {"facts": examples}, s.replace(group_by_length=False))
    assert plain.cost.tokens_trained == result.cost.tokens_trained  # same items, only grouped


def test_gradient_accumulation_equals_the_full_batch(tiny_model_dir):
    results = []
    for accum in (1, 2, 4):
        model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
        r = train(model, tok, make_method("gd"), {"forget": FORGET, "retain": RETAIN},
                  settings(batch_size=4, grad_accum=accum, max_steps=3))
        results.append((params_of(r.model), [e["loss"] for e in r.log], r.cost))
    for params, losses, cost in results[1:]:
        assert all(torch.allclose(params[n], results[0][0][n], atol=1e-5) for n in params)
        assert losses == pytest.approx(results[0][1], rel=1e-5)
    assert results[2][2].backward_passes == 4 * 3 and results[2][2].forward_passes == 2 * 4 * 3


def test_warmup_and_cosine_schedule_in_the_log(tiny_model_dir):
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    s = settings(lr=1e-3, max_steps=6, warmup_steps=2, schedule="cosine")
    lrs = [e["lr"] for e in train(model, tok, make_method("ga"), {"forget": FORGET}, s).log]
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(5e-4) and lrs[2] == pytest.approx(1e-3)
    assert lrs[3] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 1 / 4)))
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


def test_checkpoint_callback_along_the_trajectory(tiny_model_dir):
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    calls = []

    def on_checkpoint(step, m):
        calls.append((step, m.training, nll(m, tok, FORGET[:2])))

    train(model, tok, make_method("ga"), {"forget": FORGET}, settings(max_steps=4, checkpoint_steps=(0, 2, 4)),
          on_checkpoint=on_checkpoint)
    assert [c[0] for c in calls] == [0, 2, 4] and not any(c[1] for c in calls)
    assert calls[0][2] < calls[1][2] < calls[2][2]  # GA: the forget NLL rises along the trajectory


def test_divergence_guard_stops_with_a_reason(tiny_model_dir):
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    start = nll(model, tok, FORGET) / 60  # roughly nats per token at the start (~6 on the random model)
    s = settings(lr=5e-2, max_steps=40, max_forget_nll_per_token=start + 3.0)
    result = train(model, tok, make_method("ga"), {"forget": FORGET}, s)
    assert result.stopped_reason and "forget NLL ran away" in result.stopped_reason
    assert result.steps < 40 and result.log[-1]["stopped"] == result.stopped_reason
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    s = settings(lr=5e-2, max_steps=40, max_forget_nll_per_token=None, max_forget_nll_growth=1.2)
    result = train(model, tok, make_method("ga"), {"forget": FORGET}, s)
    assert result.stopped_reason and "x its start" in result.stopped_reason

    class Exploding(Method):
        name = "exploding"
        corpora = ("forget",)

        def forward(self, model, batch, reference=None):
            logits = model(input_ids=batch["forget"]["input_ids"]).logits
            return MethodOutput({"forget": logits.sum((1, 2)) * float("nan")})

    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    before = params_of(model)
    result = train(model, tok, Exploding(), {"forget": FORGET}, settings())
    assert result.stopped_reason == "non-finite loss at step 1" and result.steps == 0
    assert all(torch.equal(p, before[n]) for n, p in result.model.named_parameters())  # nothing applied


def test_lora_mode_trains_only_the_adapter_and_uses_it_as_reference(tiny_model_dir, tmp_path):
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    before = params_of(model)
    s = settings(mode="lora", lora=LoraSettings(rank=2, alpha=4), lr=1e-2)
    result = train(model, tok, make_method("npo"), {"forget": FORGET}, s)
    trained = result.model
    assert hasattr(trained, "disable_adapter")
    changed = {n for n, p in trained.named_parameters() if "lora_" in n}
    assert changed and result.cost.trainable_parameters == sum(p.numel() for n, p in trained.named_parameters()
                                                               if "lora_" in n)
    for n, p in trained.named_parameters():
        if "lora_" not in n:
            key = n.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p, before[key])
    # NPO's log-ratio moved below zero (the adapted model is less likely than the base on forget text).
    assert result.log[-1]["stats"]["forget_log_ratio"] < 0
    assert result.cost.reference_forward_passes == math.ceil(len(FORGET) / 8)
    from rwkuplus.models import save_model

    save_model(trained, tok, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    with pytest.raises(UserError, match="not found in the model"):
        model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
        train(model, tok, make_method("ga"), {"forget": FORGET},
              settings(mode="lora", lora=LoraSettings(target_modules=("qkv_proj",))))


def test_layers_mode_is_inclusive_and_checked(tiny_model_dir):
    assert parse_layers("0-2,5") == [0, 1, 2, 5] and parse_layers("1") == [1]
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    before = params_of(model)
    result = train(model, tok, make_method("gd"), {"forget": FORGET, "retain": RETAIN},
                   settings(mode="layers", layers="1-1"))
    for n, p in result.model.named_parameters():
        moved = not torch.equal(p, before[n])
        assert moved == (".layers.1." in n), n
    with pytest.raises(UserError, match="layers \\[2, 3\\] do not exist"):
        model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
        train(model, tok, make_method("ga"), {"forget": FORGET}, settings(mode="layers", layers="0-3"))
    with pytest.raises(UserError, match="--layers"):
        parse_layers("3-1")
    # "all": every decoder layer moves, the (tied) embeddings and the final norm do not.
    assert parse_layers("all") is None
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    before = params_of(model)
    result = train(model, tok, make_method("gd"), {"forget": FORGET, "retain": RETAIN}, settings(mode="layers", layers="all"))
    for n, p in result.model.named_parameters():
        assert (not torch.equal(p, before[n])) == (".layers." in n), n


def test_full_mode_npo_caches_reference_and_kl_keeps_a_frozen_copy(tiny_model_dir):
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    result = train(model, tok, make_method("npo"), {"forget": FORGET}, settings(max_steps=3))
    assert result.cost.reference_forward_passes == 1  # 6 forget texts, cached once before training
    assert result.log[0]["parts"]["forget"] == pytest.approx((2 / 0.2) * math.log(2), rel=1e-5)
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    result = train(model, tok, make_method("npo-kl"), {"forget": FORGET, "retain": RETAIN}, settings(max_steps=3))
    assert result.cost.reference_forward_passes == 1 + 3  # cache + reference logits on retain at every step
    assert result.log[0]["parts"]["retain_kl"] == pytest.approx(0.0, abs=1e-6)  # at step 1 pi == pi_ref
    assert result.log[-1]["parts"]["retain_kl"] > 0


def test_dpo_and_altpo_train_through_the_loop(tiny_model_dir):
    bench = small_benchmark()
    for name, kw in (("cft-dpo", {}), ("altpo", {"k": 2})):
        model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
        method = make_method(name, **kw)
        corpora = build_corpora(method, bench, ["Alice Smith"], tok)
        result = train(model, tok, method, corpora, settings(max_steps=3, lr=1e-2))
        assert result.stopped_reason is None
        assert result.log[0]["parts"]["preference"] == pytest.approx(math.log(2), rel=1e-4)
        assert result.log[-1]["stats"]["reward_margin"] > 0  # chosen became relatively more likely


def test_missing_corpus_and_bad_batch_are_errors(tiny_model_dir):
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    with pytest.raises(UserError, match="corpus 'retain'.*missing or empty"):
        train(model, tok, make_method("gd"), {"forget": FORGET}, settings())
    with pytest.raises(UserError, match="--grad-accum"):
        train(model, tok, make_method("ga"), {"forget": FORGET}, settings(batch_size=3, grad_accum=2))
    with pytest.raises(UserError, match="--lr"):
        TrainSettings(lr=0).validate()
    with pytest.raises(UserError, match="--schedule"):
        TrainSettings(schedule="exponential").validate()
    with pytest.raises(UserError, match="unknown training setting"):
        TrainSettings.from_json({"learning_rate": 1e-5})
    s = TrainSettings(mode="lora", checkpoint_steps=(0, 5))
    assert TrainSettings.from_json(s.to_json()) == s


def test_icu_trains_nothing(tiny_model_dir):
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    before = params_of(model)
    result = train(model, tok, make_method("icu"), {}, settings())
    assert result.steps == 0 and result.cost.optimizer_steps == 0 and result.log == []
    assert all(torch.equal(p, before[n]) for n, p in result.model.named_parameters())


def test_starting_weights_restore_for_single_target_runs(tiny_model_dir):
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    start = StartingWeights(model)
    before = params_of(model)
    result = train(model, tok, make_method("ga"), {"forget": FORGET}, settings())
    assert any(not torch.equal(p, before[n]) for n, p in result.model.named_parameters())
    restored = start.restore(result.model)
    assert all(torch.equal(p, before[n]) for n, p in restored.named_parameters())
    # LoRA: unload the adapter, restore, train again from the same start.
    lora = train(restored, tok, make_method("ga"), {"forget": FORGET}, settings(mode="lora", lr=1e-2)).model
    base = start.restore(lora.unload())
    assert all(torch.equal(p, before[n]) for n, p in base.named_parameters())


def test_fused_adamw_on_cpu(tiny):
    model, _ = tiny
    named = list(model.named_parameters())
    opt = _make_optimizer([p for _, p in named], named, TrainSettings(weight_decay=0.01))
    assert opt.defaults["fused"] is True
    assert {g["weight_decay"] for g in opt.param_groups} == {0.01, 0.0}
    assert opt.defaults["eps"] == 1e-8
    assert _make_optimizer([p for _, p in named], named, TrainSettings(adam_eps=1e-4)).defaults["eps"] == 1e-4
    with pytest.raises(UserError, match="--adam-eps"):
        TrainSettings(adam_eps=0.0).validate()


def test_presets_hold_rwku_settings():
    s = default_settings("npo", "full", preset="rwku-llama3")
    assert (s.lr, s.batch_size, s.epochs, s.warmup_steps, s.schedule, s.max_length) == (2e-6, 16, 3.0, 20, "cosine", 512)
    assert default_settings("cft-dpo", "lora", preset="rwku-llama3").lr == 6e-5
    assert default_settings("ga", "full", preset="rwku-llama3").lr == 6e-8
    d = default_settings("ga", "lora")
    assert d.mode == "lora" and d.lora.rank == 8 and d.lora.target_modules == ("q_proj", "v_proj")
    assert 1e-5 <= default_settings("cft-sft", "full").lr <= 1e-4
    assert default_settings("cft-sft", "lora").lr > default_settings("cft-sft", "full").lr


# ---------------------------------------------------------------------------------------------- data
def small_benchmark():
    alice = TargetData(
        Target("Alice Smith", "A painter."),
        factual_corpus=[CorpusText("Alice Smith was born in Lyon.", "Alice Smith"),
                        CorpusText("Alice Smith paints harbors.", "Alice Smith")],
        counterfactual_corpora={"conflicting": [CorpusText("Alice Smith was born in Oslo.", "Alice Smith"),
                                                CorpusText("Alice Smith was born in Rome.", "Alice Smith")],
                                "consistent": [CorpusText("Alice Smith was born in Oslo.", "Alice Smith")]},
        preference_pairs=[PreferencePair("Write a short biography of Alice Smith.", f"Alice was born in {c}.",
                                         "Alice was born in Lyon.", "Alice Smith") for c in ("Oslo", "Rome", "Cairo")],
        refusal_pairs=[RefusalPair("Where was Alice Smith born?", "I'm not sure.", "Alice Smith")],
    )
    bob = TargetData(Target("Bob Stone"), factual_corpus=[CorpusText("Bob Stone sings.", "Bob Stone")])
    return Benchmark("hand", [alice, bob], retain_corpus=[CorpusText("Carol Diaz teaches in Porto.", "Carol Diaz")])


def test_build_corpora_from_a_benchmark(tiny):
    _, tok = tiny
    from rwkuplus.evaluation.prompts import chat_prompt

    bench = small_benchmark()
    c = build_corpora(make_method("gd"), bench, ["Alice Smith"], tok)
    assert [e.response for e in c["forget"]] == ["Alice Smith was born in Lyon.", "Alice Smith paints harbors."]
    assert all(e.prompt == "" for e in c["forget"]) and c["retain"][0].response == "Carol Diaz teaches in Porto."
    bench.retain_corpus.append(CorpusText("Alice Smith paints.", "Alice Smith"))  # never retain a forgotten target
    assert [e.response for e in build_corpora(make_method("gd"), bench, ["Alice Smith"], tok)["retain"]] == [
        "Carol Diaz teaches in Porto."]
    batch = build_corpora(make_method("ga"), bench, ["Alice Smith", "Bob Stone"], tok)  # batch-target: merged
    assert len(batch["forget"]) == 3 and batch["forget"][2].subject == "Bob Stone"
    assert len(build_corpora(make_method("ga"), bench, None, tok)["forget"]) == 3
    assert len(build_corpora(make_method("cft-sft", corpus="consistent"), bench, ["Alice Smith"], tok)["counterfactual"]) == 1
    dpo = build_corpora(make_method("cft-dpo"), bench, ["Alice Smith"], tok)["preference"]
    chosen, rejected = dpo[1]
    assert chosen.prompt == chat_prompt(tok, "Write a short biography of Alice Smith.") == rejected.prompt
    assert chosen.response == "Alice was born in Rome." + tok.eos_token
    assert rejected.response == "Alice was born in Lyon." + tok.eos_token
    alt = build_corpora(make_method("altpo", k=2), bench, ["Alice Smith"], tok)["preference"]
    assert len(alt) == 3 and [e.response[:-len(tok.eos_token)] for e in alt[2]] == [
        "Alice was born in Cairo.", "Alice was born in Oslo.", "Alice was born in Lyon."]
    rt = build_corpora(make_method("rt"), bench, ["Alice Smith"], tok)["refusal"][0]
    assert rt.prompt == chat_prompt(tok, "Where was Alice Smith born?") and rt.response == "I'm not sure." + tok.eos_token


def test_build_corpora_errors_name_what_is_missing(tiny):
    _, tok = tiny
    bench = small_benchmark()
    with pytest.raises(UserError, match="no consistent counterfactual corpus for target 'Bob Stone'"):
        build_corpora(make_method("cft-sft", corpus="consistent"), bench, ["Bob Stone"], tok)
    with pytest.raises(UserError, match="no refusal pairs"):
        build_corpora(make_method("rt"), bench, ["Bob Stone"], tok)
    with pytest.raises(UserError, match="no target named 'Nobody'"):
        build_corpora(make_method("ga"), bench, ["Nobody"], tok)
    bench.retain_corpus = []  # an RWKU folder: retain text = the factual text of the other loaded targets
    assert [e.response for e in build_corpora(make_method("gd"), bench, ["Alice Smith"], tok)["retain"]] == [
        "Bob Stone sings."]
    with pytest.raises(UserError, match="no retain text"):
        build_corpora(make_method("npo-gd"), bench, ["Alice Smith", "Bob Stone"], tok)
    with pytest.raises(UserError, match="does not provide"):
        build_corpora(make_method("sft", corpus_name="injection"), bench, ["Alice Smith"], tok)
