"""The CUDA path in one prepared check (under 8 minutes on one GPU), with a CPU smoke mode.

    .venv/bin/python benchmarks/gpu_check.py [--json FILE]          # on a CUDA machine
    .venv/bin/python benchmarks/gpu_check.py --smoke [--json FILE]  # anywhere: a tiny random model, seconds

Prints one table:
1. the default model's bf16 training step (the loop, CFT-SFT, batch 8, full fine-tuning): seconds per
   optimizer step, tokens per second, peak GPU memory;
2. the whole evaluation's throughput against the per-item way (``benchmarks/eval_speed.py``'s
   reference way: one prompt at a time through ``model.generate``, one text or choice per forward
   pass) on the first ``--items`` items of each part of the first world target, both ways in this
   process, outputs compared; then our whole evaluation of every world target (items per second);
3. ``rwkuplus run --quick`` end to end in a subprocess (subject model build included when it is not
   cached), its wall time and exit status;
4. peak GPU memory over the whole check.
``--smoke`` does the same on a tiny random model (built here) on the CPU, with a handful of items, a
two-step suite and no subject build: it shows the script works before a GPU exists (the tests run it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _peak_gpu_mb() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def training_step(spec: str, device: str, steps: int, max_length: int) -> dict:
    from rwkuplus.benchmark.records import TrainExample
    from rwkuplus.benchmark.rwku import load_benchmark
    from rwkuplus.methods import make_method
    from rwkuplus.models import load_model
    from rwkuplus.training import TrainSettings, train

    bench = load_benchmark("world")
    texts = [t.text for d in bench.targets for t in d.counterfactual_corpora.get("conflicting", [])]
    model, tokenizer, _ = load_model(spec, device=device)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = train(model, tokenizer, make_method("cft-sft"), {"counterfactual": [(TrainExample("", t),) for t in texts]},
                   TrainSettings(lr=1e-5, batch_size=8, max_steps=steps, warmup_ratio=0.0, schedule="constant",
                                 max_length=max_length))
    times = [row["time"] for row in result.log]
    deltas = sorted(b - a for a, b in zip(times, times[1:])) or [times[0]]
    per_step = deltas[len(deltas) // 2]
    tokens = sorted(row["tokens"] for row in result.log)[len(result.log) // 2]
    return {"dtype": dtype, "seconds_per_step": per_step, "tokens_per_second": tokens / per_step,
            "peak_gpu_mb": result.cost.peak_gpu_mb}


def evaluation(spec: str, device: str, items: int) -> dict:
    from eval_speed import compare_parts

    from rwkuplus.benchmark.rwku import load_benchmark
    from rwkuplus.evaluation.runner import EvalSettings, evaluate_model
    from rwkuplus.models import load_model
    from rwkuplus.suite import _cap_hallucination, _cap_utility

    model, tokenizer, _ = load_model(spec, device=device)
    bench = load_benchmark("world")
    settings = EvalSettings.world_defaults(batch_size=32)
    rows = compare_parts(model, tokenizer, bench.targets[0], settings, items)
    ours, ref = sum(r[2] for r in rows), sum(r[3] for r in rows)
    n = sum(r[1] for r in rows)
    out = {"items": n, "ours_s": ours, "per_item_s": ref, "speedup": ref / ours, "all_agree": all(r[5] for r in rows)}
    if items < 16:  # smoke: a small whole evaluation
        bench.targets = bench.targets[:1]
        _cap_utility(bench, items)
        _cap_hallucination(bench, items)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = evaluate_model(model, tokenizer, bench, Path(tmp), settings=settings,
                                model_info={"spec": spec}, progress=False)
        whole = time.perf_counter() - start
        records = sum(1 for f in Path(tmp).rglob("*.jsonl") for line in f.open() if line.strip())
    out.update(whole_s=whole, whole_records=records, whole_items_per_s=records / whole,
               generated_tokens=result["cost"]["generation"].get("generated_tokens"))
    return out


def quick_run(smoke_model: str | None, out: Path) -> dict:
    cmd = [sys.executable, "-m", "rwkuplus", "run", "--quick", "--quiet", "--out", str(out)]
    if smoke_model is not None:
        import yaml

        config = {"model": smoke_model, "targets": "1", "methods": ["before", "ga", "cft-sft:consistent"],
                  "checkpoints": [], "train": {"all": {"max_steps": 2, "batch_size": 2, "max_length": 64}},
                  "eval": {"batch_size": 8, "parts": ["forget", "neighbor", "hallucination"], "utility_items": 4,
                           "hallucination_items": 4}}
        path = out.parent / "smoke.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd = [sys.executable, "-m", "rwkuplus", "run", "--config", str(path), "--quiet", "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    summary = out / "summary.json"
    n_ok = json.loads(summary.read_text())["n_ok"] if summary.is_file() else None
    return {"seconds": time.perf_counter() - start, "exit": proc.returncode, "units_ok": n_ok,
            "stderr_tail": proc.stderr[-400:] if proc.returncode else ""}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a tiny random model on the CPU (seconds)")
    ap.add_argument("--items", type=int, help="items per part for the per-item comparison (default 16; smoke 3)")
    ap.add_argument("--steps", type=int, help="training steps timed (default 8; smoke 3)")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)
    device = "cpu" if args.smoke else ("cuda" if torch.cuda.is_available() else "cpu")
    if not args.smoke and device != "cuda":
        print("no CUDA device here; run with --smoke for the CPU check", file=sys.stderr)
        return 2
    items = args.items or (3 if args.smoke else 16)
    steps = args.steps or (3 if args.smoke else 8)
    results: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "smoke": args.smoke,
                     "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            from rwkuplus.testing import make_tiny_model

            spec = str(make_tiny_model(Path(tmp) / "tiny"))
        else:
            from rwkuplus.models import DEFAULT_MODEL

            spec = DEFAULT_MODEL
        results["train"] = training_step(spec, device, steps, 64 if args.smoke else 128)
        results["evaluate"] = evaluation(spec, device, items)
        results["quick_run"] = quick_run(spec if args.smoke else None, Path(tmp) / "quick")
    results["peak_gpu_mb"] = _peak_gpu_mb()
    t, e, q = results["train"], results["evaluate"], results["quick_run"]
    lines = [
        f"device: {results['device']} (torch {results['torch']}{', smoke' if args.smoke else ''})",
        "| what | value |", "|---|---|",
        f"| training step ({t['dtype']}, CFT-SFT, batch 8) | {t['seconds_per_step']:.3f} s, "
        f"{t['tokens_per_second']:.0f} tokens/s, peak GPU {_mb(t['peak_gpu_mb'])} |",
        f"| evaluation, first {items} items per part: ours vs per item | {e['ours_s']:.1f} s vs {e['per_item_s']:.1f} s "
        f"= {e['speedup']:.1f}x ({'outputs agree' if e['all_agree'] else 'OUTPUTS DIFFER'}) |",
        f"| whole evaluation (ours) | {e['whole_s']:.1f} s, {e['whole_records']} records, "
        f"{e['whole_items_per_s']:.1f} records/s |",
        f"| rwkuplus run --quick{' (smoke config)' if args.smoke else ''} | {q['seconds']:.0f} s, exit {q['exit']}, "
        f"{q['units_ok']} units ok |",
        f"| peak GPU memory (whole check) | {_mb(results['peak_gpu_mb'])} |",
    ]
    print("\n".join(lines))
    if q["exit"]:
        print(q["stderr_tail"], file=sys.stderr)
    if args.json:
        from rwkuplus.fileio import write_json

        write_json(args.json, results)
    return 0 if q["exit"] == 0 and e["all_agree"] else 1


def _mb(v) -> str:
    return "-" if v is None else f"{v:.0f} MB"


if __name__ == "__main__":
    sys.exit(main())
