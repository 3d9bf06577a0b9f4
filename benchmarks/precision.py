"""float32 against bfloat16 on this machine, in one run, on the same weights and inputs.

    .venv/bin/python benchmarks/precision.py [MODEL] [--sections step,inject,generate,engine,evaluate] [--json FILE]

MODEL is a model folder (default: the world's cached subject model, else the packaged default model);
it is loaded twice, once per dtype, from the same weights. Sections:

- ``step``: the training loop's step (``training.loop.train``, CFT-SFT on the world's conflicting
  counterfactual texts, batch 8, full fine-tuning): float32 against a bf16 model trained through fp32
  master weights, both with the loop's CPU attention kernel (eager); and float32 with sdpa, the
  loop's way before (the reference for "today"); seconds per optimizer step (median after the first).
- ``inject``: the knowledge injection's step (SFT at the subject's settings: batch 8, lr 2e-4, decoder
  layers, the world's injection corpus), the unit of the subject build; seconds per step.
- ``generate``: greedy generation of the world's forget and neighbor probe answers (batches of 32,
  30 new tokens): seconds, and the share of identical answers.
- ``engine``: the per-example gradient Gram (``diagnostics.gradient_gram``, exact, all parameters)
  on n = 32 counterfactual texts, in each model's own arithmetic (``precision="model"``): seconds and
  the cosine error of bf16 against fp32; and the default (a bf16 model upcast to fp32 for the Gram).
- ``evaluate``: the whole evaluation of every world target (``runner.evaluate_model``, every part as
  ``rwkuplus evaluate`` runs it, the world protocol): seconds, the share of identical greedy answers
  over every generated record, and the largest difference of any number of the RWKU row.

Wall times depend on the machine and on what else runs on it: run it alone and report the machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

SECTIONS = ("step", "inject", "generate", "engine", "evaluate")
DTYPES = ("float32", "bfloat16")


def default_model() -> str:
    from rwkuplus.models import DEFAULT_MODEL
    from rwkuplus.subject import subject_model_dir

    for dtype in ("bfloat16", "float32"):
        folder = subject_model_dir(dtype=dtype)
        if folder is not None:
            return str(folder)
    return DEFAULT_MODEL


def step_seconds(model_spec: str, dtype: str, method_name: str, corpora: dict, attention: str | None = "default",
                 **settings) -> float:
    """Median seconds per optimizer step of ``train``; ``attention=None`` trains with the model's own
    attention kernel (sdpa), as the loop did before it switched to eager attention on CPUs."""
    from rwkuplus.methods import make_method
    from rwkuplus.models import load_model
    from rwkuplus.training import TrainSettings, loop, train

    model, tokenizer, _ = load_model(model_spec, dtype=dtype)
    base = dict(batch_size=8, max_steps=6, warmup_ratio=0.0, schedule="constant", max_length=128,
                max_forget_nll_per_token=None)
    base.update(settings)
    saved = loop.CPU_TRAINING_ATTENTION
    if attention != "default":
        loop.CPU_TRAINING_ATTENTION = attention
    try:
        result = train(model, tokenizer, make_method(method_name, **({"corpus_name": "injection"} if method_name == "sft"
                                                                     else {})), corpora, TrainSettings(**base))
    finally:
        loop.CPU_TRAINING_ATTENTION = saved
    times = [row["time"] for row in result.log]
    return statistics.median(b - a for a, b in zip(times, times[1:]))


def answers_agree(a: list[str], b: list[str]) -> float:
    return sum(x == y for x, y in zip(a, b)) / max(1, len(a))


def _records(folder: Path) -> dict[str, list[dict]]:
    return {str(p.relative_to(folder)): [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            for p in sorted(folder.rglob("*.jsonl"))}


def _texts(rows: list[dict]) -> list[str]:
    keys = ("prediction", "output", "answer", "generation")
    return [str(r[k]) for r in rows for k in keys if isinstance(r.get(k), str)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help="model folder (default: the world's subject model)")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section {bad[0]}; expected some of {', '.join(SECTIONS)}")
    from rwkuplus.benchmark.records import TrainExample
    from rwkuplus.benchmark.rwku import load_benchmark
    from rwkuplus.benchmark.world import WorldConfig, generate_world, injection_corpus
    from rwkuplus.models import fast_bf16_cpu, load_model

    spec = args.model or default_model()
    bench = load_benchmark("world")
    texts = [t.text for d in bench.targets for t in d.counterfactual_corpora.get("conflicting", [])]
    cft = [(TrainExample("", t),) for t in texts]
    results: dict = {"setup": {"model": spec, "threads": torch.get_num_threads(), "fast_bf16_cpu": fast_bf16_cpu(),
                               "torch": torch.__version__}}
    print(f"model {spec}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"fast bf16 CPU: {fast_bf16_cpu()}", flush=True)
    table: list[tuple] = []

    def row(name: str, values: dict, agreement: str = ""):
        a, b = values["float32"], values["bfloat16"]
        results[name] = {"float32_s": round(a, 3), "bfloat16_s": round(b, 3), "speedup": round(a / b, 2),
                         "agreement": agreement}
        table.append((name, a, b, a / b, agreement))
        print(f"  {name:10s} float32 {a:8.2f} s   bfloat16 {b:8.2f} s   {a / b:5.2f}x   {agreement}", flush=True)

    if "step" in sections:
        before = step_seconds(spec, "float32", "cft-sft", {"counterfactual": cft}, attention=None, lr=1e-5)
        now = {d: step_seconds(spec, d, "cft-sft", {"counterfactual": cft}, lr=1e-5) for d in DTYPES}
        row("step", now, f"s per optimizer step, CFT-SFT batch 8; float32 with sdpa attention (the loop before "
                         f"this change) {before:.2f} s = {before / now['bfloat16']:.2f}x the bf16 step")
        results["step"]["float32_sdpa_s"] = round(before, 3)
    if "inject" in sections:
        from rwkuplus.models import load_tokenizer
        from rwkuplus.subject import InjectionSettings

        s = InjectionSettings()
        corpus = injection_corpus(generate_world(WorldConfig()), load_tokenizer(spec))
        opts = dict(lr=s.lr, mode=s.mode, layers=s.layers, max_length=s.max_length, group_by_length=True)
        before = step_seconds(spec, "float32", "sft", {"injection": corpus}, attention=None, **opts)
        now = {d: step_seconds(spec, d, "sft", {"injection": corpus}, **opts) for d in DTYPES}
        row("inject", now, f"s per injection step, batch 8; float32 with sdpa {before:.2f} s = "
                           f"{before / now['bfloat16']:.2f}x the bf16 step")
        results["inject"]["float32_sdpa_s"] = round(before, 3)
    if "generate" in sections:
        from rwkuplus.evaluation.generation import generate
        from rwkuplus.evaluation.prompts import probe_prompt

        outs, secs = {}, {}
        for d in DTYPES:
            model, tok, _ = load_model(spec, dtype=d)
            prompts = [probe_prompt(tok, p) for t in bench.targets for p in t.forget_probes + t.neighbor_probes]
            generate(model, tok, prompts[:4], batch_size=4)  # warm-up
            start = time.perf_counter()
            outs[d] = generate(model, tok, prompts, batch_size=32)
            secs[d] = time.perf_counter() - start
        row("generate", secs, f"{answers_agree(outs['float32'], outs['bfloat16']):.1%} of {len(outs['float32'])} "
                              "greedy answers identical")
    if "engine" in sections:
        from rwkuplus.diagnostics.conflict import cosine_matrix as cos
        from rwkuplus.diagnostics.gradients import gradient_gram
        from rwkuplus.sequences import encode_examples

        grams, secs = {}, {}
        for d, precision in (("float32", "model"), ("bfloat16", "model"), ("bfloat16", "float32")):
            model, tok, _ = load_model(spec, dtype=d)
            batch = encode_examples(tok, [e for (e,) in cft[:32]], 48)
            gradient_gram(model, encode_examples(tok, [e for (e,) in cft[:2]], 8), "all", precision=precision)
            start = time.perf_counter()
            grams[d, precision] = gradient_gram(model, batch, "all", precision=precision).gram
            secs[d, precision] = time.perf_counter() - start
        ref = cos(grams["float32", "model"])
        err = {k: abs(cos(g) - ref) for k, g in grams.items()}
        bf = err["bfloat16", "model"]
        row("engine", {"float32": secs["float32", "model"], "bfloat16": secs["bfloat16", "model"]},
            f"bf16 arithmetic: cosine error mean {float(bf.mean()):.3f}, largest {float(bf.max()):.3f} (n = 32); "
            f"the default, the bf16 model upcast to fp32: {secs['bfloat16', 'float32']:.2f} s, largest "
            f"{float(err['bfloat16', 'float32'].max()):.1e}")
    if "evaluate" in sections:
        from rwkuplus.evaluation.runner import EvalSettings, evaluate_model

        secs, rows, recs = {}, {}, {}
        with tempfile.TemporaryDirectory() as tmp:
            for d in DTYPES:
                model, tok, _ = load_model(spec, dtype=d)
                out = Path(tmp) / d
                start = time.perf_counter()
                result = evaluate_model(model, tok, bench, out, settings=EvalSettings.world_defaults(),
                                        model_info={"spec": spec, "dtype": d}, progress=False)
                secs[d] = time.perf_counter() - start
                rows[d], recs[d] = result["rwku"], _records(out)
        a = [t for k in sorted(recs["float32"]) for t in _texts(recs["float32"][k])]
        b = [t for k in sorted(recs["float32"]) for t in _texts(recs["bfloat16"].get(k, []))]
        diffs = {k: abs(rows["float32"][k] - rows["bfloat16"][k]) for k in rows["float32"]
                 if isinstance(rows["float32"][k], (int, float)) and isinstance(rows["bfloat16"].get(k), (int, float))}
        worst = max(diffs, key=diffs.get) if diffs else None
        results["evaluate_rwku_row"] = rows
        row("evaluate", secs, f"{answers_agree(a, b):.1%} of {len(a)} generated answers identical; largest "
                              f"RWKU-row difference {diffs.get(worst, 0):.1f} ({worst})")
    print("\n| what | float32 s | bfloat16 s | speed-up | agreement |\n|---|---|---|---|---|")
    for name, a, b, r, agree in table:
        print(f"| {name} | {a:.2f} | {b:.2f} | {r:.2f}x | {agree} |")
    if args.json:
        from rwkuplus.fileio import write_json

        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
