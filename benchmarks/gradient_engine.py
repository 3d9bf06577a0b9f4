"""Speed and memory of the per-example gradient engine on the default model, as ratios in one run.

    .venv/bin/python benchmarks/gradient_engine.py [--n 32] [--max-length 48] [--sections ...] [--json FILE]

Sections (all by default; on a shared 2-core machine run them one by one, each takes 1-3 minutes, and
pass the same --json FILE so the numbers merge into one table):

- ``step``: one ordinary training step on the n examples (forward, backward, AdamW step), full
  fine-tuning; the reference for "engine time / training step".
- ``exact``: the engine's exact Gram over all parameters (tied lm_head/embed_tokens included).
- ``loop``: the plain loop's time over all parameters: one single-example backward per example, each
  gradient flattened. Over all 135M parameters the loop cannot keep its n flattened gradients
  (n x 540 MB), so its time here is a lower bound (backward + flatten, not kept) and its memory is
  given as what keeping them needs.
- ``check``: engine vs the plain loop (gradients kept) on ``layers:20-29:mlp.down_proj`` (8.8M
  parameters): max abs difference of the cosines, and both times and memories.
- ``projected``: the engine with ``--project`` (default 1024) over all parameters; cosine error
  against the exact Gram of the ``exact`` section (same process, or saved in --json by an earlier run
  with the same --n and --max-length).
- ``lora``: a LoRA model (rank 8, q_proj and v_proj): its training step, the engine and the loop on
  the LoRA parameters only, and their cosine difference.

Memory: peak resident memory (RSS, sampled every 5 ms by ``rwkuplus.costs.ResourceMeter``) minus the
RSS at the start of the measured call, after ``malloc_trim`` has handed freed heap pages back to the
OS (so an earlier section's freed memory does not hide this one's); no tracemalloc (it would slow the run and miss torch's
allocator). On a GPU the CUDA peak allocation is reported as well.

Examples: the first n counterfactual (conflicting) texts of the world's targets, what CFT-SFT trains
on, cut to --max-length tokens; without the world, n short biography-like sentences.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

SECTIONS = ("step", "exact", "loop", "check", "projected", "lora")
CHECK_PARAMS = "layers:20-29:mlp.down_proj"


def examples(n: int):
    from rwkuplus.benchmark.records import TrainExample

    try:
        from rwkuplus.benchmark.rwku import load_benchmark

        bench = load_benchmark("world")
        texts = [t.text for d in bench.targets for t in d.counterfactual_corpora.get("conflicting", [])]
        source = "world counterfactual (conflicting) texts"
    except Exception as e:  # noqa: BLE001 - the benchmark falls back to plain sentences on any problem
        texts, source = [], f"sentences (no world: {e})"
    if len(texts) < n:
        cities = ["Lyon", "Oslo", "Porto", "Graz", "Turku", "Ghent", "Split", "Bergen"]
        jobs = ["painter", "architect", "chemist", "novelist", "violinist", "surgeon", "engineer", "poet"]
        texts += [f"Mira Castell{i} was born in {cities[i % 8]} in {1950 + i} and works as a {jobs[(i * 3) % 8]}."
                  for i in range(n - len(texts))]
    return [TrainExample("", t) for t in texts[:n]], source


def _release_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc keeps them), so RSS deltas start from a fair base."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def measure(fn):
    from rwkuplus.costs import ResourceMeter, current_rss_bytes

    _release_freed_memory()
    base = current_rss_bytes() or 0
    with ResourceMeter(interval=0.005) as meter:
        value = fn()
    peak = (meter.peak_rss_bytes or 0) - base
    return value, meter.wall_seconds, peak / 2**20, (meter.peak_gpu_bytes or 0) / 2**20


def train_step(model, batch, params):
    from rwkuplus.diagnostics.gradients import nll_loss

    opt = torch.optim.AdamW(params, lr=1e-5)

    def step():
        model.train()
        loss = nll_loss(model, batch).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.eval()
    return step


def loop_time_only(model, batch, params):
    """The loop's compute without keeping the gradients: backward per example, flatten, drop."""
    from rwkuplus.diagnostics.gradients import _take, nll_loss

    def run():
        for i in range(batch["input_ids"].shape[0]):
            b = _take(batch, torch.tensor([i]), next(model.parameters()).device)
            grads = torch.autograd.grad(nll_loss(model, b).sum(), params)
            flat = torch.cat([g.reshape(-1) for g in grads])
            del flat, grads
    return run


def cosines(G):
    n = G.diagonal().clamp_min(1e-30).sqrt()
    return G / n[:, None] / n[None, :]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=48)
    ap.add_argument("--project", type=int, default=1024)
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--json", help="merge the results into this JSON file")
    args = ap.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section {bad[0]}; expected some of {', '.join(SECTIONS)}")
    torch.manual_seed(0)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from rwkuplus.diagnostics.gradients import gradient_gram, loop_gram
    from rwkuplus.models import DEFAULT_MODEL, LoraSettings, load_model
    from rwkuplus.sequences import encode_examples

    results: dict = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).exists() else {}
    model, tokenizer, _ = load_model(DEFAULT_MODEL)
    exs, source = examples(args.n)
    batch = encode_examples(tokenizer, exs, args.max_length)
    tokens = int(batch["attention_mask"].sum())
    results["setup"] = {"model": DEFAULT_MODEL, "n": args.n, "tokens": tokens, "max_length": args.max_length,
                        "examples": source, "threads": torch.get_num_threads(),
                        "device": str(next(model.parameters()).device)}
    print(f"n={args.n} examples, {tokens} tokens ({source}); torch threads {torch.get_num_threads()}", flush=True)

    def record(name, seconds, mem, gpu, **extra):
        results[name] = {"seconds": round(seconds, 3), "peak_rss_delta_mb": round(mem, 1),
                         "peak_gpu_mb": round(gpu, 1), **extra}
        print(f"  {name:28s} {seconds:8.2f} s   peak +{mem:8.1f} MB" + (f"  gpu {gpu:.0f} MB" if gpu else "")
              + "".join(f"   {k} {v}" for k, v in extra.items()), flush=True)

    tiny = encode_examples(tokenizer, exs[:2], 8)  # warm-up input: first calls pay one-time allocations
    exact_all = None
    saved = results.get("exact_all_gram")
    if saved and saved["n"] == args.n and saved["max_length"] == args.max_length:
        exact_all = torch.tensor(saved["gram"], dtype=torch.float64)  # from an earlier run of 'exact'
    if "step" in sections:
        params = [p for p in model.parameters()]
        step = train_step(model, encode_examples(tokenizer, exs[:1], 8), params)
        step()  # warm-up (allocations, AdamW state)
        state = {n: p.detach().clone() for n, p in model.named_parameters()}
        _, s, m, g = measure(train_step(model, batch, params))
        record("train_step_full", s, m, g)
        with torch.no_grad():
            for n_, p in model.named_parameters():
                p.copy_(state[n_])
        del state
    if "exact" in sections:
        gradient_gram(model, tiny, "all")  # warm-up
        gram, s, m, g = measure(lambda: gradient_gram(model, batch, "all"))
        exact_all = gram.gram
        results["exact_all_gram"] = {"n": args.n, "max_length": args.max_length, "gram": exact_all.tolist()}
        record("engine_exact_all", s, m, g, strategies=_count(gram.strategies))
    if "loop" in sections:
        params = [p for p in model.parameters()]
        loop_time_only(model, tiny, params)()  # warm-up
        _, s, m, g = measure(loop_time_only(model, batch, params))
        needed = args.n * sum(p.numel() for p in params) * 4 / 2**20
        record("loop_all_lower_bound", s, m, g, keeping_gradients_needs_mb=round(needed))
    if "check" in sections:
        gradient_gram(model, tiny, CHECK_PARAMS)
        loop_gram(model, tiny, CHECK_PARAMS)
        gram, s, m, g = measure(lambda: gradient_gram(model, batch, CHECK_PARAMS))
        record("engine_exact_subset", s, m, g, params=CHECK_PARAMS)
        ref, s, m, g = measure(lambda: loop_gram(model, batch, CHECK_PARAMS))
        diff = float((cosines(gram.gram) - cosines(ref.gram)).abs().max())
        record("loop_subset", s, m, g, max_abs_cosine_diff=f"{diff:.2e}")
    if "projected" in sections:
        gradient_gram(model, tiny, "all", project=args.project)
        gram, s, m, g = measure(lambda: gradient_gram(model, batch, "all", project=args.project))
        extra = {"project": args.project}
        if exact_all is not None:
            err = (cosines(gram.gram) - cosines(exact_all)).abs()
            extra.update(mean_abs_cosine_error=f"{float(err.mean()):.4f}", max_abs_cosine_error=f"{float(err.max()):.4f}")
        record("engine_projected_all", s, m, g, **extra)
    if "lora" in sections:
        del model
        lm, _, _ = load_model(DEFAULT_MODEL, lora=LoraSettings())
        with torch.no_grad():  # a trained adapter: B is not zero (peft starts it at zero)
            for n_, p in lm.named_parameters():
                if "lora_B" in n_:
                    p.normal_(0, 0.01)
        params = [p for p in lm.parameters() if p.requires_grad]
        train_step(lm, encode_examples(tokenizer, exs[:1], 8), params)()  # warm-up
        _, s, m, g = measure(train_step(lm, batch, params))
        record("train_step_lora", s, m, g)
        gradient_gram(lm, tiny, "lora")
        loop_gram(lm, tiny, "lora")
        gram, s, m, g = measure(lambda: gradient_gram(lm, batch, "lora"))
        record("engine_exact_lora", s, m, g)
        ref, s, m, g = measure(lambda: loop_gram(lm, batch, "lora"))
        diff = float((cosines(gram.gram) - cosines(ref.gram)).abs().max())
        record("loop_lora", s, m, g, max_abs_cosine_diff=f"{diff:.2e}")
    ratios = {}

    def ratio(name, a, b):
        if a in results and b in results and results[b]["seconds"] > 0:
            ratios[name] = round(results[a]["seconds"] / results[b]["seconds"], 3)

    ratio("engine_exact_all / train_step_full", "engine_exact_all", "train_step_full")
    ratio("engine_exact_all / loop_all_lower_bound", "engine_exact_all", "loop_all_lower_bound")
    ratio("engine_exact_subset / loop_subset", "engine_exact_subset", "loop_subset")
    ratio("engine_projected_all / train_step_full", "engine_projected_all", "train_step_full")
    ratio("engine_projected_all / loop_all_lower_bound", "engine_projected_all", "loop_all_lower_bound")
    ratio("engine_exact_lora / train_step_lora", "engine_exact_lora", "train_step_lora")
    ratio("engine_exact_lora / loop_lora", "engine_exact_lora", "loop_lora")
    results["ratios"] = {**results.get("ratios", {}), **ratios}
    print("ratios (time):")
    for k, v in results["ratios"].items():
        print(f"  {k:45s} {v:.3f}")
    if args.json:
        from rwkuplus.fileio import write_json

        write_json(args.json, results)
    return 0


def _count(strategies: dict) -> str:
    token = sum(1 for v in strategies.values() if v == "token")
    return f"{len(strategies) - token} materialised / {token} token-kernel"


if __name__ == "__main__":
    sys.exit(main())
