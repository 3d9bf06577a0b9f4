"""CFT's remedies (issue 18): gradient surgery, the retain-aware projection, honesty anchors and
consistency-filtered corpora; hand-made inputs with known answers and the tiny model."""

import numpy as np
import pytest
import torch

from rwkuplus.benchmark import consistency as C
from rwkuplus.benchmark.records import TrainExample
from rwkuplus.costs import Costs
from rwkuplus.errors import UserError
from rwkuplus.methods import make_method
from rwkuplus.methods.surgery import pcgrad_weights, retain_projection
from rwkuplus.training import TrainSettings, train

CF = [TrainExample("", t) for t in ("Alice Smith was born in 1970 in Lyon.", "Alice Smith was born in 1931 in Oslo.",
                                    "Alice Smith is a painter of harbors.", "Her best-known work is The Silver Harbor.")]
RETAIN = [TrainExample("", t) for t in ("The quick brown fox jumps over the lazy dog.", "Who was born in which city?")]


# ------------------------------------------------------------------------------- surgery on a Gram
def explicit_pcgrad(g: np.ndarray, seed: int) -> np.ndarray:
    """PCGrad on explicit vectors, the order drawn exactly as pcgrad_weights draws it."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(len(g)):
        gi = g[i].copy()
        for j in rng.permutation(len(g)):
            if j != i and gi @ g[j] < 0:
                gi = gi - (gi @ g[j]) / (g[j] @ g[j]) * g[j]
        out.append(gi)
    return np.sum(out, axis=0)


def test_pcgrad_weights_reproduce_explicit_pcgrad():
    rng = np.random.default_rng(3)
    g = rng.normal(size=(6, 11))
    g[1] = -0.7 * g[0] + 0.1 * g[1]  # a strong conflict
    G = g @ g.T
    w = pcgrad_weights(G, "pcgrad", seed=5)
    assert np.allclose(w @ g, explicit_pcgrad(g, 5))
    # "pairs": every g_i projected off all the g_j it conflicts with, using the original inner products.
    expected = sum(g[i] - sum(G[i, j] / G[j, j] * g[j] for j in range(6) if j != i and G[i, j] < 0) for i in range(6))
    assert np.allclose(pcgrad_weights(G, "pairs") @ g, expected)


def test_pcgrad_without_conflict_is_the_plain_gradient_and_removes_a_conflict():
    g = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 2.0]])
    assert np.allclose(pcgrad_weights(g @ g.T), np.ones(3))
    # Two opposite samples: each projected off the other leaves nothing along their common line.
    h = np.array([[1.0, 0.0], [-1.0, 0.0]])
    assert np.allclose(pcgrad_weights(h @ h.T) @ h, [0.0, 0.0])
    # A zero gradient is never projected off.
    z = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert np.allclose(pcgrad_weights(z @ z.T), [1.0, 1.0])
    with pytest.raises(ValueError, match="rule"):
        pcgrad_weights(g @ g.T, "magic")


def test_retain_projection_only_when_conflicting():
    assert retain_projection(1.0, -2.0, 4.0) == -0.5
    assert retain_projection(1.0, 2.0, 4.0) == 0.0
    assert retain_projection(1.0, -2.0, 0.0) == 0.0  # no retain gradient, nothing to project off


# ------------------------------------------------------------------------- the hook on the tiny model
def flat_grad(model, loss):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).double()


def per_example_grads(model, method, tok, examples, corpus="counterfactual"):
    out = []
    for e in examples:
        enc = method.encode(tok, [(e,)], [0], 512)
        out.append(flat_grad(model, method.loss_parts(model, {corpus: enc})[corpus].sum()))
    return torch.stack(out)


@pytest.mark.parametrize("rule", ["pcgrad", "pairs"])
def test_cft_pcgrad_step_loss_gradient_is_the_surgery_gradient(tiny, rule):
    model, tok = tiny
    method = make_method("cft-pcgrad", rule=rule, seed=2)
    enc = method.encode(tok, [(e,) for e in CF], list(range(len(CF))), 512)
    g = per_example_grads(model, method, tok, CF).numpy()
    out = method.forward(model, {"counterfactual": enc})
    calls = method._calls
    loss = method.step_loss(model, {"counterfactual": enc}, out, None, method.objective(out.parts))
    got = flat_grad(model, loss).numpy()
    seed = 2 * 100_003 + calls
    want = (explicit_pcgrad(g, seed) if rule == "pcgrad" else pcgrad_weights(g @ g.T, "pairs") @ g) / len(CF)
    assert np.allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())
    plain = g.mean(0)  # the tiny model's batch has a conflicting pair: the surgery changes the step
    assert np.abs(want - plain).max() > 100 * 1e-6 * np.abs(want).max()
    cos = (g @ g.T) / np.outer(np.linalg.norm(g, axis=1), np.linalg.norm(g, axis=1))
    assert out.stats["surgery_conflict_ratio"] == pytest.approx(np.mean(cos[np.triu_indices(4, 1)] < 0))


@pytest.mark.parametrize("sharpened", [False, True])
def test_cft_gru_step_loss_projects_the_cft_gradient_off_the_retain_gradient(tiny, sharpened):
    from rwkuplus.testing import sharpen

    model, tok = tiny
    if sharpened:  # these weights make the CFT and retain gradients conflict
        sharpen(model, seed=1, std=0.3)
    method = make_method("cft-gru", retain_weight=0.5)
    batch = {"counterfactual": method.encode(tok, [(e,) for e in CF], list(range(4)), 512),
             "retain": method.encode(tok, [(e,) for e in RETAIN], [0, 1], 512)}
    out = method.forward(model, batch)
    gf = flat_grad(model, out.parts["counterfactual"].mean())
    gr = flat_grad(model, out.parts["retain"].mean())
    out = method.forward(model, batch)
    got = flat_grad(model, method.step_loss(model, batch, out, None, method.objective(out.parts)))
    dot = float(gf @ gr)
    gf_proj = gf - min(0.0, dot) / float(gr @ gr) * gr
    assert torch.allclose(got, gf_proj + 0.5 * gr, rtol=1e-4, atol=1e-6 * float(got.abs().max()))
    assert out.stats["gru_conflict"] == float(dot < 0) == float(sharpened)


def test_plain_methods_back_propagate_their_objective(tiny):
    model, tok = tiny
    method = make_method("cft-sft")
    enc = method.encode(tok, [(e,) for e in CF], list(range(4)), 512)
    out = method.forward(model, {"counterfactual": enc})
    objective = method.objective(out.parts)
    assert method.step_loss(model, {"counterfactual": enc}, out, None, objective) is objective


@pytest.mark.parametrize("mode,accum", [("full", 1), ("full", 2), ("lora", 1)])
def test_surgery_trains_through_the_loop_and_is_charged(tiny_model_dir, mode, accum):
    from rwkuplus.models import load_model, parameter_count

    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    s = TrainSettings(lr=1e-3, max_steps=2, batch_size=4, grad_accum=accum, warmup_ratio=0.0, schedule="constant",
                      mode=mode)
    result = train(model, tok, make_method("cft-pcgrad"), {"counterfactual": CF}, s)
    assert result.steps == 2 and result.stopped_reason is None
    assert result.cost.gradient_passes == 2 * accum  # one Gram pass per micro-batch
    assert result.cost.gradient_tokens == result.cost.tokens_trained  # the Gram sees each micro-batch once
    assert 0 < result.cost.gradient_seconds < result.cost.wall_time_s
    assert all("surgery_conflict_ratio" in row["stats"] for row in result.log)
    costs = Costs.from_training(result.cost, parameter_count(result.model))
    n, t = costs.n_parameters, costs.tokens_trained
    assert costs.estimated_flops == pytest.approx(6 * n * t + 4 * n * costs.gradient_tokens)
    assert Costs.from_json(costs.to_json(), "costs").gradient_passes == 2 * accum


def test_gru_and_honest_train_through_the_loop(tiny_model_dir):
    from rwkuplus.models import load_model

    anchors = [TrainExample("Who is Zed Quill?", " I don't know.")] * 3
    for name, params, corpora in (
        ("cft-gru", {}, {"counterfactual": CF, "retain": RETAIN}),
        ("cft-honest", {}, {"counterfactual": CF, "honesty": anchors, "retain": RETAIN}),
        ("cft-honest", {"replay": "kl"}, {"counterfactual": CF, "honesty": anchors, "retain": RETAIN}),
    ):
        model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
        s = TrainSettings(lr=1e-3, max_steps=2, batch_size=2, warmup_ratio=0.0, schedule="constant")
        result = train(model, tok, make_method(name, **params), corpora, s)
        assert result.steps == 2, name
        parts = set(result.log[0]["parts"])
        if name == "cft-honest":
            assert parts == {"counterfactual", "honesty", "retain_kl" if params else "retain"}
            assert (result.cost.reference_forward_passes > 0) == bool(params)  # KL: a frozen copy runs
        else:
            assert result.cost.gradient_passes == 2 and "gru_projection" in result.log[0]["stats"]


def test_honest_weights_and_errors():
    m = make_method("cft-honest", refusal_weight=0.0)
    assert m.corpora == ("counterfactual", "retain") and not m.needs_reference
    m = make_method("cft-honest", replay="kl", retain_weight=2.0)
    assert m.needs_reference and m.reference_logits_corpora == ("retain",) and m.part_weights()["retain_kl"] == 2.0
    with pytest.raises(UserError, match="replay"):
        make_method("cft-honest", replay="l2")
    with pytest.raises(UserError, match="refusal_weight"):
        make_method("cft-honest", refusal_weight=-1.0)
    with pytest.raises(UserError, match="rule"):
        make_method("cft-pcgrad", rule="sideways")
    with pytest.raises(UserError, match="corpus"):
        make_method("cft-gru", corpus="sloppy")


# ---------------------------------------------------------------------------- corpora from the world
@pytest.fixture()
def world_benchmark():
    from rwkuplus.benchmark.rwku import load_benchmark
    from rwkuplus.benchmark.world import default_world_dir

    return load_benchmark(str(default_world_dir()))


def test_honesty_anchor_is_disjoint_from_the_hallucination_suite(world_benchmark, tiny):
    from rwkuplus.benchmark.world import load_world
    from rwkuplus.evaluation.hallucination import hallucination_items
    from rwkuplus.training.data import build_corpora

    _, tok = tiny
    b = world_benchmark
    target = b.targets[0].name
    corpora = build_corpora(make_method("cft-honest"), b, [target], tok)
    anchors = corpora["honesty"]
    world = load_world(b.source["path"])
    assert len(anchors) == len(world.nonexistent_train)
    assert {a.subject for a in anchors} == set(world.nonexistent_train)
    suite = hallucination_items(b, [target])
    asked = {it.question for it in suite}
    assert not any(it.question in a.prompt for it in suite for a in anchors[:20])
    assert all(q not in asked for q in (a.prompt for a in anchors))
    assert not {a.subject for a in anchors} & {it.subject for it in suite}
    assert all(a.response.strip() for a in anchors)
    assert len(corpora["retain"]) > 0 and len(corpora["counterfactual"]) == 12


def test_honesty_anchor_off_a_world_uses_generated_names(tiny):
    from rwkuplus.benchmark.records import Benchmark, Target, TargetData
    from rwkuplus.evaluation.hallucination import hallucination_items
    from rwkuplus.training.data import honesty_examples

    _, tok = tiny
    b = Benchmark("hand", [TargetData(Target("Alice Smith"))])
    anchors = honesty_examples(b, b.targets, tok, n=10)
    suite_names = {it.subject for it in hallucination_items(b, ["Alice Smith"]) if it.kind == "nonexistent"}
    assert anchors and suite_names and not {a.subject for a in anchors} & suite_names


def test_consistency_filter_on_hand_made_claims():
    claims = [{"city": "oslo", "year": "1970"}, {"city": "oslo", "year": "1970"}, {"city": "lima", "year": "1970"},
              {"city": "oslo", "year": None}, {"city": None, "year": None}]
    r = C.filter_consistent(claims, ["city", "year"])
    assert r.profile == {"city": "oslo", "year": "1970"}
    assert r.agreement == [1.0, 1.0, 0.5, 1.0, 0.0]
    assert r.kept == [0, 1, 3] and r.samples_after == 3
    # Before: city pairs (4 stated: 3 of 6 disagree), year pairs (3 stated, all agree) -> (0.5 + 0) / 2.
    assert r.inconsistency_before == pytest.approx(0.25) and r.inconsistency_after == 0.0
    # Nobody fully agrees: the best min_samples are kept, ties in corpus order.
    r2 = C.filter_consistent([{"a": "x", "b": "1"}, {"a": "y", "b": "1"}, {"a": "z", "b": "2"}], ["a", "b"])
    assert r2.profile == {"a": "x", "b": "1"} and r2.kept == [0]
    assert C.filter_consistent([{"a": "x"}, {"a": "y"}, {"a": "z"}], ["a"], min_samples=2).kept == [0, 1]
    with pytest.raises(UserError, match="min_agreement"):
        C.filter_consistent(claims, ["city"], min_agreement=2)


def test_inconsistency_reuses_the_worlds_measure(world_benchmark):
    from rwkuplus.benchmark.world import inconsistency, load_world

    world = load_world(world_benchmark.source["path"])
    person = world.targets[0]
    claims = C.world_claims(world, person.name)
    assert C.inconsistency(claims, world.attributes) == inconsistency(world.counterfactuals[person.name].conflicting,
                                                                      world.attributes)
    texts, result = C.filtered_world_corpus(world, person)
    assert result.inconsistency_before > 0.5 and result.inconsistency_after <= result.inconsistency_before
    assert len(texts) == result.samples_after >= 1 and result.claims_source == "known"
    assert C.kept_profiles(world, person.name, 12)[0] == world.counterfactuals[person.name].conflicting[result.kept[0]]


def test_filtered_corpus_through_the_corpus_builder_and_diagnostics(world_benchmark, tiny):
    from rwkuplus.diagnostics.runner import attribute_items
    from rwkuplus.training.data import build_corpora

    _, tok = tiny
    b = world_benchmark
    target = b.targets[0]
    corpus = build_corpora(make_method("cft-sft", corpus="filtered"), b, [target.name], tok)["counterfactual"]
    conflicting = {t.text for t in target.counterfactual_corpora["conflicting"]}
    assert corpus and all(e.response in conflicting for e in corpus)
    examples, labels = attribute_items(b, target, "counterfactual", "filtered", tok, 20)
    assert len(examples) == 20 and len(set(labels)) == 5


def test_claims_from_model_answers_and_the_tiny_model(tiny):
    from rwkuplus.benchmark.records import CorpusText, Probe

    claims = C.claims_from_answers([["Oslo.", "I don't know."], ["  oslo ", ""]], ["city", "year"],
                                   abstains=lambda a, q: "know" in a)
    assert claims == [{"city": "oslo", "year": None}, {"city": "oslo", "year": None}]
    q = "What is the profession of Alice Smith?"
    assert C.claimed_value("The profession of Alice Smith is a painter. She lives in Oslo.", q) == "painter"
    assert C.claimed_value("Alice Smith is a painter", q) == "painter"
    assert C.claimed_value("The text mentions that she is a painter.", q) == "painter"
    assert C.claimed_value("The text does not provide any information about Alice Smith.", q) is None
    assert C.claimed_value("What is the profession of Alice Smith", q) is None  # an echo of the question
    model, tok = tiny
    probes = [Probe("Where was Alice Smith born?", "Lyon", "2", "qa", "Alice Smith"),
              Probe("Alice Smith was born in ___.", "Lyon", "1", "cloze", "Alice Smith")]
    texts = [CorpusText("Alice Smith was born in Oslo.", "Alice Smith"), CorpusText("Alice was born in Rome.", "Alice Smith")]
    kept, result = C.filter_model_corpus(model, tok, texts, probes, "Alice Smith", max_new_tokens=4)
    assert result.claims_source == "model" and result.samples_before == 2 and 1 <= len(kept) <= 2
    assert result.tokens_generated > 0 and list(result.profile) in ([], ["Where was Alice Smith born?"])
    with pytest.raises(UserError, match="question probes"):
        C.filter_model_corpus(model, tok, texts, probes[1:], "Alice Smith")


def test_filtered_corpus_file_is_read_back(tmp_path):
    from rwkuplus.benchmark.records import CorpusText

    texts = [CorpusText("Alice Smith was born in Oslo.", "Alice Smith")]
    r = C.filter_consistent([{"a": "x"}], ["a"])
    paths = C.write_filtered_corpus(tmp_path, texts, r)
    assert [p.name for p in paths] == ["negative_filtered.json", "consistency_filter.json"]
    import json

    assert json.loads(paths[0].read_text())[0]["text"] == texts[0].text


# -------------------------------------------------------------------------- registry and configuration
def test_remedies_in_the_registry_config_and_plan(capsys):
    from rwkuplus.cli import main
    from rwkuplus.config import RunConfig
    from rwkuplus.suite import plan_units

    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    for name in ("cft-pcgrad", "cft-gru", "cft-honest"):
        assert name in listing
    config = RunConfig(methods=["before", "cft-pcgrad", "cft-honest:filtered", "cft-gru", "ga"]).validate()
    units = {u.method: u for u in plan_units(config, ["A"])}
    assert units["cft-pcgrad"].corpus == "conflicting" and units["cft-honest"].corpus == "filtered"
    assert units["ga"].corpus is None and units["cft-honest"].label == "CFT-Honest (filtered)"
    with pytest.raises(UserError, match="filtered"):
        RunConfig(methods=["cft-sft:halfway"]).validate()


def test_remedies_run_in_the_suite_with_diagnostics_and_costs(tiny_model_dir, tmp_path):
    import json

    import yaml

    from rwkuplus.cli import main

    config = {
        "model": str(tiny_model_dir), "targets": "1", "methods": ["before", "cft-pcgrad", "cft-honest:filtered"],
        "checkpoints": [2], "train": {"all": {"max_steps": 2, "batch_size": 2, "max_length": 64}},
        "eval": {"batch_size": 8, "parts": ["forget", "neighbor", "hallucination"], "utility_items": 4,
                 "hallucination_items": 4},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["run", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    results = {p.parent.name.split("__")[0]: json.loads(p.read_text()) for p in (out / "units").glob("*/result.json")}
    assert set(results) == {"before", "cft-pcgrad-conflicting", "cft-honest-filtered"}
    pc, honest = results["cft-pcgrad-conflicting"], results["cft-honest-filtered"]
    assert pc["status"] == honest["status"] == "ok"
    # Conflict diagnostics for every counterfactual method, at the start and at the checkpoint.
    for r in (pc, honest):
        assert [d["step"] for d in r["diagnostics"]] == [0, 2] and r["diagnostics"][0]["conflict_ratio"] is not None
    assert pc["costs"]["gradient_passes"] == 2 and pc["costs"]["gradient_tokens"] > 0
    assert honest["costs"]["gradient_passes"] == 0
    assert honest["training"]["method"]["corpora"] == ["counterfactual", "honesty", "retain"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cft-pcgrad", "cft-gru", "cft-honest", "cft-sft:filtered"])
def test_remedies_train_on_the_default_model_at_their_presets(name):
    """The packaged default model (not the subject, to keep it short) on the default world's corpora:
    each remedy at its preset fits the counterfactual corpus without diverging."""
    from rwkuplus.benchmark.rwku import load_benchmark
    from rwkuplus.benchmark.world import default_world_dir
    from rwkuplus.methods.presets import default_settings
    from rwkuplus.models import load_model
    from rwkuplus.training.data import build_corpora

    method_name, _, corpus = name.partition(":")
    method = make_method(method_name, **({"corpus": corpus} if corpus else {}))
    model, tok, _ = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
    benchmark = load_benchmark(str(default_world_dir()))
    corpora = build_corpora(method, benchmark, [benchmark.targets[0].name], tok)
    settings = default_settings(method_name).replace(max_steps=4, max_length=256)
    result = train(model, tok, method, corpora, settings)
    assert result.stopped_reason is None and result.steps == 4
    nll = [row["stats"]["counterfactual_nll_per_token"] for row in result.log]
    assert nll[-1] < nll[0]
    assert (result.cost.gradient_passes > 0) == (method_name in ("cft-pcgrad", "cft-gru"))


def test_the_loop_back_propagates_step_loss_and_logs_the_objective(tiny_model_dir):
    """Any method can use the hook: here one that back-propagates nothing, so no weight moves."""
    from rwkuplus.methods.counterfactual import CFTSFT
    from rwkuplus.models import load_model

    class Frozen(CFTSFT):
        name = "frozen-test"

        def step_loss(self, model, batch, out, reference, objective, cost=None):
            cost.gradient_passes += 1
            return 0.0 * objective

    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    s = TrainSettings(lr=1e-2, max_steps=2, batch_size=2, grad_accum=2, warmup_ratio=0.0, schedule="constant")
    result = train(model, tok, Frozen(), {"counterfactual": CF}, s)
    assert all(torch.equal(p, start[n]) for n, p in result.model.named_parameters())
    assert all(row["loss"] > 0 and row["grad_norm"] == 0 for row in result.log)  # the log keeps the objective
    assert result.cost.gradient_passes == 4  # called once per micro-batch


def test_surgery_on_sketched_gradients_is_close_to_exact(tiny):
    """project=D: the Gram of count sketches; with D larger than each layer group it is exact."""
    model, tok = tiny
    enc = make_method("cft-pcgrad").encode(tok, [(e,) for e in CF], list(range(4)), 512)
    weights = {}
    for project in (0, 100_000):
        method = make_method("cft-pcgrad", project=project)
        out = method.forward(model, {"counterfactual": enc})
        loss = method.step_loss(model, {"counterfactual": enc}, out, None, method.objective(out.parts))
        weights[project] = flat_grad(model, loss)
    assert torch.allclose(weights[0], weights[100_000], rtol=1e-4, atol=1e-6 * float(weights[0].abs().max()))
    with pytest.raises(UserError, match="project"):
        make_method("cft-pcgrad", project=-1)


def test_generate_filtered_corpus_end_to_end_on_the_tiny_model(tiny, tmp_path):
    from rwkuplus.benchmark.records import Probe, Target

    model, tok = tiny
    target = Target("Alice Smith", "Alice Smith is a painter.")
    probes = [Probe(q, "Lyon", "2", "qa", "Alice Smith") for q in ("Where was Alice Smith born?",
                                                                      "What does Alice Smith do?")]
    corpora, result = C.generate_filtered_corpus(model, tok, target, ["Alice", "She"], probes, n=3,
                                                 max_new_tokens=8, batch_size=4)
    conflicting, kept = corpora.counterfactual["conflicting"], corpora.counterfactual["filtered"]
    assert len(conflicting) == 3 and 1 <= len(kept) <= 3 and all(k in conflicting for k in kept)
    assert result.samples_before == 3 and result.samples_after == len(kept)
    assert corpora.costs["conflicting"].tokens_generated > 0
    assert corpora.costs["filtered"].tokens_generated == result.tokens_generated > 0
    assert corpora.costs["filtered"].prompts == 3 * 2
    paths = C.write_filtered_corpus(tmp_path, kept, result)
    assert all(p.is_file() for p in paths)


def test_a_written_filtered_corpus_is_what_rwku_folders_train_on(world_benchmark, tiny, tmp_path):
    import shutil
    from pathlib import Path

    from rwkuplus.benchmark.records import CorpusText
    from rwkuplus.benchmark.rwku import load_benchmark
    from rwkuplus.training.data import build_corpora

    _, tok = tiny
    folder = tmp_path / "rwku"
    shutil.copytree(world_benchmark.source["path"], folder)
    (folder / "world.json").unlink()  # an RWKU-layout folder: no known values
    first = sorted(Path(folder, "Target").iterdir())[0]
    texts = [CorpusText("Alice was born in Oslo.", "x"), CorpusText("Alice, born in Oslo, paints.", "x")]
    C.write_filtered_corpus(first, texts, C.filter_consistent([{"a": "oslo"}, {"a": "oslo"}], ["a"]))
    b = load_benchmark(f"rwku:{folder}")
    method = make_method("cft-sft", corpus="filtered")
    corpus = build_corpora(method, b, [b.targets[0].name], tok)["counterfactual"]
    assert [e.response for e in corpus] == [t.text for t in texts]
    with pytest.raises(UserError, match="filter its model-written corpus first"):
        build_corpora(method, b, [b.targets[1].name], tok)
