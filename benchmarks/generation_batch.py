"""Greedy generation's throughput by batch size, on the same prompts in one process.

    .venv/bin/python benchmarks/generation_batch.py [MODEL] [--prompts 128] [--batch-sizes 16,32,64,128] [--dtype auto]

The prompts are the first ``--prompts`` questions of the packaged general-knowledge set in the
evaluation's question format (what the hallucination part and the checkpoint evaluations generate
most of). Each batch size answers all of them (``generation.generate``, the evaluation's newline
stop and length); the first batch size is timed again at the end, so drift of the machine shows.
Prints seconds, prompts per second, the speed-up against the first batch size and the share of
answers identical to its answers (batches pad differently, which can move a bf16 greedy answer).
Report the numbers with the machine and what else ran on it.
"""

from __future__ import annotations

import argparse
import time

from rwkuplus.evaluation.generation import generate
from rwkuplus.evaluation.hallucination import general_knowledge
from rwkuplus.models import DEFAULT_MODEL, load_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="model spec or saved model folder")
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--batch-sizes", default="16,32,64,128")
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    model, tokenizer, _ = load_model(args.model, dtype=args.dtype)
    model.eval()
    prompts = [it.prompt(tokenizer) for it in general_knowledge()[: args.prompts]]
    generate(model, tokenizer, prompts[:4], batch_size=4)  # warm-up
    rows, reference = [], None
    for bs in sizes + sizes[:1]:
        start = time.perf_counter()
        answers = generate(model, tokenizer, prompts, batch_size=bs)
        seconds = time.perf_counter() - start
        reference = reference or (seconds, answers)
        same = sum(a == b for a, b in zip(answers, reference[1])) / len(prompts)
        rows.append((bs, seconds, len(prompts) / seconds, reference[0] / seconds, same))
    print(f"{len(prompts)} prompts, {model.dtype}")
    print("| batch size | seconds | prompts/s | speed-up vs first | same answers as first |")
    print("|---:|---:|---:|---:|---:|")
    for bs, seconds, rate, speed, same in rows:
        print(f"| {bs} | {seconds:.2f} | {rate:.1f} | {speed:.2f}x | {same:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
