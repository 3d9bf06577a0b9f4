"""bf16 on the CPU: the dtype rule, fp32 master weights in the loop, and dtype in cache keys and records."""

import pytest
import torch

from rwkuplus.benchmark.records import TrainExample
from rwkuplus.config import RunConfig
from rwkuplus.errors import UserError
from rwkuplus.methods import make_method
from rwkuplus.models import dtype_name, load_model, resolve_dtype
from rwkuplus.training import TrainSettings, train
from rwkuplus.training.precision import MasterWeights

FACTS = [TrainExample("", f"Alice Smith was born in {1960 + i} in Lyon.") for i in range(6)]


def _settings(**kw):
    base = dict(lr=1e-3, max_steps=4, batch_size=2, warmup_ratio=0.0, schedule="constant")
    base.update(kw)
    return TrainSettings(**base)


def test_auto_dtype_follows_the_cpus_bf16_units(monkeypatch):
    monkeypatch.setenv("RWKUPLUS_CPU_BF16", "1")
    assert resolve_dtype("auto", "cpu") is torch.bfloat16 and dtype_name("auto", "cpu") == "bfloat16"
    monkeypatch.setenv("RWKUPLUS_CPU_BF16", "0")
    assert resolve_dtype("auto", "cpu") is torch.float32 and dtype_name("auto", "cpu") == "float32"
    assert resolve_dtype("auto", "cuda") is torch.bfloat16  # a GPU always computes in bf16
    assert resolve_dtype("float32", "cuda") is torch.float32 and dtype_name("bf16", "cpu") == "bfloat16"
    with pytest.raises(UserError, match="--dtype"):
        resolve_dtype("int8", "cpu")


def test_master_weights_keep_updates_below_bf16_resolution():
    # 1.0 in bf16 moves only in steps of 2**-7; 100 updates of 1e-4 are each lost in bf16 alone.
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    naive = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    master = MasterWeights([("w", p)])
    opt = torch.optim.SGD([m for _, m in master.named], lr=1e-4)
    naive_opt = torch.optim.SGD([naive], lr=1e-4)
    for _ in range(100):
        p.grad = -torch.ones_like(p)
        naive.grad = -torch.ones_like(naive)
        master.grads_to_masters()
        assert p.grad is None and master.masters[0].grad.dtype is torch.float32
        opt.step()
        master.masters_to_model()
        naive_opt.step()
    assert torch.allclose(master.masters[0], torch.full((4,), 1.01), atol=1e-5)
    assert torch.equal(naive.detach(), torch.ones(4, dtype=torch.bfloat16))  # every update lost
    assert p.dtype is torch.bfloat16 and float(p.detach()[0]) == pytest.approx(1.0078125)  # moved one bf16 step


def test_a_bf16_model_trains_through_fp32_masters_close_to_fp32(tiny_model_dir):
    results = {}
    for dtype in ("float32", "bfloat16"):
        model, tok, _ = load_model(str(tiny_model_dir), device="cpu", dtype=dtype)
        start = {n: p.detach().float().clone() for n, p in model.named_parameters()}
        r = train(model, tok, make_method("sft", corpus_name="facts"), {"facts": FACTS}, _settings(lr=1e-5))
        assert r.stopped_reason is None and r.steps == 4
        assert all(p.dtype is getattr(torch, dtype) for p in r.model.parameters())  # the model keeps its dtype
        moved = {n: (p.detach().float() - start[n]) for n, p in r.model.named_parameters()}
        results[dtype] = moved
    # lr 1e-5 for 4 steps: each update is below bf16's resolution for most weights, yet the bf16
    # model's weights move with the fp32 run's (the masters accumulate; each step is rounded once).
    total32 = sum(float(d.abs().sum()) for d in results["float32"].values())
    total16 = sum(float(d.abs().sum()) for d in results["bfloat16"].values())
    assert total32 > 0 and 0.5 < total16 / total32 < 2.0
    cos = torch.nn.functional.cosine_similarity(
        torch.cat([d.flatten() for d in results["float32"].values()]),
        torch.cat([d.flatten() for d in results["bfloat16"].values()]), dim=0)
    assert float(cos) > 0.5


def test_run_configuration_dtype_is_validated():
    assert RunConfig.from_dict({"dtype": "bfloat16"}).dtype == "bfloat16"
    with pytest.raises(UserError, match="key 'dtype'"):
        RunConfig.from_dict({"dtype": "int4"})


def test_the_subject_key_carries_the_dtype(monkeypatch, tiny_model_dir):
    from rwkuplus.benchmark.world import WorldConfig
    from rwkuplus.subject import InjectionSettings, subject_key

    world, settings = WorldConfig(), InjectionSettings()
    monkeypatch.setenv("RWKUPLUS_CPU_BF16", "0")
    fp32 = subject_key(str(tiny_model_dir), world, settings, "float32")
    assert subject_key(str(tiny_model_dir), world, settings, "auto") == fp32
    bf16 = subject_key(str(tiny_model_dir), world, settings, "bfloat16")
    assert bf16 != fp32
    monkeypatch.setenv("RWKUPLUS_CPU_BF16", "1")
    assert subject_key(str(tiny_model_dir), world, settings, "auto") == bf16


def test_the_suite_runs_in_bf16_end_to_end_and_records_its_dtype(tiny_model_dir, tmp_path):
    # Training (fp32 masters), evaluation, hallucination and the gradient engine, all on a bf16 model.
    import json

    import yaml

    from rwkuplus.cli import main

    config = {"model": str(tiny_model_dir), "targets": "1", "methods": ["before", "npo", "cft-sft:conflicting"],
              "checkpoints": [2], "dtype": "bfloat16",
              "train": {"all": {"max_steps": 2, "batch_size": 2, "max_length": 64}},
              "eval": {"batch_size": 8, "parts": ["forget", "neighbor", "mia", "hallucination"], "utility_items": 4,
                       "hallucination_items": 4}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["run", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "run.json").read_text())["model_info"]["dtype"] == "bfloat16"
    results = [json.loads(p.read_text()) for p in sorted((out / "units").glob("*/result.json"))]
    assert len(results) == 3 and all(r["status"] == "ok" for r in results)
    cft = next(r for r in results if r["unit"]["method"] == "cft-sft")
    assert cft["costs"]["tokens_trained"] > 0
    ratio = cft["diagnostics"][0]["conflict_ratio"]
    assert 0.0 <= ratio <= 1.0  # the gradient engine ran on the bf16 model


def test_the_gradient_engine_computes_in_fp32_on_a_bf16_model(tiny_model_dir):
    import copy

    from rwkuplus.diagnostics.conflict import cosine_matrix as cos
    from rwkuplus.diagnostics.gradients import gradient_gram
    from rwkuplus.sequences import encode_examples

    model, tok, _ = load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    reference = copy.deepcopy(model).float()  # the same weights, held in fp32
    batch = encode_examples(tok, FACTS, 32)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    default = gradient_gram(model, batch, "all").gram
    own = gradient_gram(model, batch, "all", precision="model").gram
    # The model leaves exactly as it came: same dtype, same weights (bf16 -> fp32 -> bf16 is exact).
    assert all(p.dtype is torch.bfloat16 and torch.equal(p, before[n]) for n, p in model.named_parameters())
    exact = gradient_gram(reference, batch, "all").gram

    assert default.dtype is torch.float64  # accumulated in high precision whatever the model's dtype
    assert abs(cos(default) - cos(exact)).max() < 1e-6  # fp32 arithmetic: the fp32 model's Gram
    assert abs(cos(own) - cos(exact)).max() > 1e-4  # bf16 arithmetic is measurably off
    with pytest.raises(ValueError, match="precision"):
        gradient_gram(model, batch, "all", precision="half")


def test_training_on_a_cpu_uses_eager_attention_and_gives_the_model_back_unchanged(tiny_model_dir):
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu")
    original = model.config._attn_implementation
    assert original != "eager"  # the tiny model loads with sdpa, as every model does by default
    seen = {}

    def on_checkpoint(step, m):
        seen[step] = m.config._attn_implementation

    def on_step(row):
        seen.setdefault("training", model.config._attn_implementation)

    r = train(model, tok, make_method("sft", corpus_name="facts"), {"facts": FACTS},
              _settings(checkpoint_steps=[0, 2]), on_checkpoint=on_checkpoint, on_step=on_step)
    assert seen == {0: original, 2: original, "training": "eager"}
    assert r.model.config._attn_implementation == original
