"""How much faster the evaluation is than the plain way, and how long a whole evaluation takes.

    .venv/bin/python benchmarks/eval_speed.py [MODEL] [--benchmark world] [--items 16] [--skip-full]

1. Our way vs the reference way, per part, on the first ``--items`` items of each part of the first
   target (the same items both ways, in one process, on the same model):
   - generation (forget and neighbor probes, Rea, Fac, Flu): ours = ``generation.generate`` (batched,
     shared-prefix cache); reference = one prompt at a time through ``model.generate``;
   - MIA: ours = batched ``mia.score_texts``; reference = one text at a time;
   - multiple choice (Gen, Tru): ours = shared-prefix batched scoring; reference = one full forward
     pass per item (Gen) or per choice (Tru).
   It checks that both ways give the same outputs (generations and predictions identical, numbers
   within 1e-4) and prints time, items/second and the speed-up per part and overall.
2. Then (unless ``--skip-full``) the whole evaluation (``runner.evaluate_model``, every part, every
   target) of the model on the benchmark, timed, as ``rwkuplus evaluate`` runs it; then the same
   whole evaluation the reference way (``reference_way()``: the same evaluators with generation one
   prompt at a time through ``model.generate``, MIA one text at a time and multiple choice one
   forward pass per item or choice), timed; it checks that both wrote the same records (every field
   of every per-item record; numbers to a relative 1e-4) and the same RWKU row, and prints their
   ratio: the whole evaluation's speed-up.
   With ``--reference projected`` the reference way's time is projected from its per-item rates in
   step 1 and the number of records each part wrote instead (minutes faster, less exact). The
   per-part table understates the speed-up when ``--items`` is below the batch size, since our way
   then cannot fill a batch.

Results depend on the machine and on what else runs on it: report the numbers with the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def reference_generate(model, tokenizer, prompts, max_new_tokens, stop_at_newline):
    """One prompt at a time through ``model.generate``, with the same stop and output rules."""
    from rwkuplus.evaluation.generation import _cut, newline_token_ids, stop_token_ids

    stops = stop_token_ids(model, tokenizer)
    newline_ids = newline_token_ids(tokenizer) if stop_at_newline else frozenset()
    device = next(model.parameters()).device
    outs = []
    for p in prompts:
        ids = torch.tensor([tokenizer(p, add_special_tokens=False).input_ids], device=device)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
        outs.append(_cut(tokenizer, out[0, ids.shape[1]:].tolist(), set(stops), newline_ids, stop_at_newline)[1])
    return outs


def reference_next_token(model, tokenizer, prompts, token_ids):
    out = []
    for p in prompts:
        ids = torch.tensor([tokenizer(p, add_special_tokens=False).input_ids])
        with torch.inference_mode():
            logits = model(input_ids=ids.to(next(model.parameters()).device)).logits[0, -1].float()
        out.append(torch.log_softmax(logits, -1)[token_ids].tolist())
    return out


def reference_scores(model, tokenizer, examples):
    from rwkuplus.sequences import encode_examples, sequence_logprobs, to_device

    device = next(model.parameters()).device
    scores = []
    for ex in examples:
        with torch.inference_mode():
            scores.append(float(sequence_logprobs(model, to_device(encode_examples(tokenizer, [ex], 1 << 30), device))[0][0]))
    return scores


@contextlib.contextmanager
def reference_way(settings):
    """The evaluators of ``evaluate_model`` with the reference way's inner loops swapped in."""
    from rwkuplus.evaluation import answers as A
    from rwkuplus.evaluation import utility as U
    from rwkuplus.evaluation.generation import GenerationStats

    def generate_each(model, tokenizer, prompts, max_new_tokens=30, batch_size=16, stop_at_newline=True, *args,
                      **kwargs):
        outs = reference_generate(model, tokenizer, prompts, max_new_tokens, stop_at_newline)
        return outs, [GenerationStats(prompts=1) for _ in outs]

    def generate(model, tokenizer, prompts, max_new_tokens=30, batch_size=16, stop_at_newline=True, *args,
                 return_stats=False, **kwargs):
        outs = reference_generate(model, tokenizer, prompts, max_new_tokens, stop_at_newline)
        return (outs, GenerationStats(prompts=len(outs))) if return_stats else outs

    def score_continuations(model, tokenizer, examples, *args, **kwargs):
        return reference_scores(model, tokenizer, examples)

    def next_token_logprobs(model, tokenizer, prompts, token_ids, *args, **kwargs):
        return reference_next_token(model, tokenizer, prompts, token_ids)

    saved = (A.generate_each, U.generate, U.score_continuations, U.next_token_logprobs, settings.mia_batch_size)
    A.generate_each, U.generate, U.score_continuations, U.next_token_logprobs = (
        generate_each, generate, score_continuations, next_token_logprobs)
    settings.mia_batch_size = 1  # one text at a time
    try:
        yield settings
    finally:
        A.generate_each, U.generate, U.score_continuations, U.next_token_logprobs, settings.mia_batch_size = saved


def records(folder: Path) -> dict[str, list[dict]]:
    """Every per-item record an evaluation wrote under ``folder``, by file."""
    return {str(f.relative_to(folder)): [json.loads(line) for line in f.open(encoding="utf-8") if line.strip()]
            for f in sorted(folder.rglob("*.jsonl"))}


def _agree(x, y, worst: list[float]) -> bool:
    """Equal, numbers to a relative 1e-4 (the largest difference is kept in ``worst``)."""
    if isinstance(x, float) or isinstance(y, float):
        if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
            return False
        worst[0] = max(worst[0], abs(x - y) / max(1.0, abs(y)))
        return abs(x - y) <= 1e-4 * max(1.0, abs(y))
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_agree(x[k], y[k], worst) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_agree(a, b, worst) for a, b in zip(x, y))
    return x == y


def same_records(a: dict[str, list[dict]], b: dict[str, list[dict]]) -> tuple[int, int, float]:
    """(records identical in every field, records, largest relative numeric difference) of two ``records``."""
    same = total = 0
    worst = [0.0]
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name, []), b.get(name, [])
        total += max(len(x), len(y))
        same += sum(_agree(r, q, worst) for r, q in zip(x, y))
    return same, total, worst[0]


PART_FILES = {"probes": ("forget.jsonl", "neighbor.jsonl", "hallucination.jsonl"), "Rea": ("utility.bbh.jsonl",),
              "Fac": ("utility.triviaqa.jsonl",), "Flu": ("utility.fluency.jsonl",), "MIA": ("mia.jsonl",),
              "Gen": ("utility.mmlu.jsonl",), "Tru": ("utility.truthfulqa.jsonl",)}


def record_counts(folder: Path) -> dict[str, int]:
    """Per-item records the whole evaluation wrote under ``folder``, by the comparison's part names."""
    counts = {}
    for part, names in PART_FILES.items():
        counts[part] = sum(sum(1 for line in f.open(encoding="utf-8") if line.strip())
                           for name in names for f in folder.rglob(name))
    return counts


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def compare_parts(model, tokenizer, target, settings, n):
    from rwkuplus.benchmark.records import TrainExample
    from rwkuplus.evaluation import utility as U
    from rwkuplus.evaluation.generation import generate
    from rwkuplus.evaluation.mia import score_texts
    from rwkuplus.evaluation.prompts import probe_prompt

    u = target.utility
    bs = settings.batch_size
    rows = []

    def gen_part(name, prompts, max_new, newline):
        ours, t_ours = timed(lambda: generate(model, tokenizer, prompts, max_new_tokens=max_new, batch_size=bs,
                                              stop_at_newline=newline))
        ref, t_ref = timed(lambda: reference_generate(model, tokenizer, prompts, max_new, newline))
        same = sum(a == b for a, b in zip(ours, ref))
        rows.append((name, len(prompts), t_ours, t_ref, f"{same}/{len(prompts)} outputs identical", same == len(prompts)))

    probes = (target.forget_probes + target.neighbor_probes)[:n]
    if probes:
        gen_part("probes (generation)", [probe_prompt(tokenizer, p) for p in probes], settings.probe_max_new_tokens, True)
    if u.bbh:
        gen_part("Rea (generation)", [U.bbh_prompt(tokenizer, it) for it in u.bbh[:n]],
                 settings.protocol.bbh_max_new_tokens, settings.protocol.bbh_stop_at_newline)
    if u.triviaqa:
        items = list(u.triviaqa)
        gen_part("Fac (generation)", [U.triviaqa_prompt(tokenizer, it, U.triviaqa_shots(items, i)) for i, it in
                                      enumerate(items[:n])], settings.protocol.triviaqa_max_new_tokens,
                 settings.protocol.triviaqa_stop_at_newline)
    if u.fluency:
        gen_part("Flu (generation)", [U.fluency_prompt(tokenizer, it) for it in u.fluency[:n]],
                 settings.protocol.fluency_max_new_tokens, False)

    texts = [t.text for t in (target.forget_mia + target.retain_mia)][:n]
    if texts:
        ours, t_ours = timed(lambda: score_texts(model, tokenizer, texts, batch_size=settings.mia_batch_size))
        ref, t_ref = timed(lambda: [score_texts(model, tokenizer, [t], batch_size=1)[0] for t in texts])
        worst = max(abs(a[k] - b[k]) for a, b in zip(ours, ref) for k in ("mean_ll", "min_k_plus_plus")
                    if a[k] is not None)
        rows.append(("MIA (scoring)", len(texts), t_ours, t_ref, f"max difference {worst:.1e}", worst < 1e-4))

    if u.mmlu and settings.protocol.mmlu_format == "choice":
        items = u.mmlu[:n]
        examples = [TrainExample(U.mmlu_choice_prompt(tokenizer, it), " " + c) for it in items for c in it.choices]
        ours, t_ours = timed(lambda: U.score_continuations(model, tokenizer, examples, batch_size=bs))
        ref, t_ref = timed(lambda: reference_scores(model, tokenizer, examples))

        def predictions(scores):
            out, k = [], 0
            for it in items:
                row = scores[k : k + len(it.choices)]
                out.append(max(range(len(row)), key=row.__getitem__))
                k += len(it.choices)
            return out

        same = sum(a == b for a, b in zip(predictions(ours), predictions(ref)))
        worst = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(ours, ref))
        rows.append(("Gen (choice scoring)", len(items), t_ours, t_ref,
                     f"{same}/{len(items)} predictions identical, max relative difference {worst:.1e}", same == len(items)))
    elif u.mmlu:
        items = u.mmlu[:n]
        prompts = [U.mmlu_prompt(tokenizer, it) for it in items]
        ids = U.choice_token_ids(tokenizer, len(items[0].choices))
        ours, t_ours = timed(lambda: U.next_token_logprobs(model, tokenizer, prompts, ids, batch_size=bs))
        ref, t_ref = timed(lambda: reference_next_token(model, tokenizer, prompts, ids))
        same = sum(max(range(len(a)), key=a.__getitem__) == max(range(len(b)), key=b.__getitem__) for a, b in zip(ours, ref))
        worst = max(abs(x - y) for a, b in zip(ours, ref) for x, y in zip(a, b))
        rows.append(("Gen (multiple choice)", len(items), t_ours, t_ref,
                     f"{same}/{len(items)} predictions identical, max difference {worst:.1e}", same == len(items)))
    if u.truthfulqa:
        items = u.truthfulqa[:n]
        examples = [TrainExample(U.truthfulqa_prompt(tokenizer, it), " " + c) for it in items
                    for c in dict.fromkeys(it.mc1_targets["choices"] + it.mc2_targets["choices"])]
        ours, t_ours = timed(lambda: U.score_continuations(model, tokenizer, examples, batch_size=bs))
        ref, t_ref = timed(lambda: reference_scores(model, tokenizer, examples))
        worst = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(ours, ref))
        rows.append(("Tru (choice scoring)", len(items), t_ours, t_ref, f"max relative difference {worst:.1e}",
                     worst < 1e-4))
    return rows


def main(argv=None) -> int:
    from rwkuplus.benchmark.rwku import load_benchmark
    from rwkuplus.evaluation.runner import EvalSettings, evaluate_model, format_table
    from rwkuplus.models import DEFAULT_MODEL, load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="model spec or subject model folder")
    ap.add_argument("--benchmark", default="world")
    ap.add_argument("--items", type=int, default=16, help="items per part for the comparison (default 16)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--skip-compare", action="store_true")
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--reference", choices=("full", "projected"), default="full",
                    help="run the whole evaluation the reference way too (default), or project its time")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    model, tokenizer, spec = load_model(args.model)
    bench = load_benchmark(args.benchmark)
    world = (bench.source or {}).get("kind") == "world"
    settings = EvalSettings.world_defaults(batch_size=args.batch_size) if world else EvalSettings(batch_size=args.batch_size)
    print(f"model {spec.spec} ({spec.fingerprint}); benchmark {args.benchmark}: {len(bench.targets)} targets; "
          f"torch threads {torch.get_num_threads()}")

    ok = True
    ref_rates = {}
    if not args.skip_compare:
        rows = compare_parts(model, tokenizer, bench.targets[0], settings, args.items)
        print(f"\nOur way vs one item at a time, first {args.items} items of each part of {bench.targets[0].name}:")
        print(f"{'part':<24}{'items':>6}{'ours s':>9}{'ref s':>9}{'ours/s':>8}{'ref/s':>8}{'speed-up':>10}  check")
        for name, n, t_ours, t_ref, check, good in rows:
            ok &= good
            ref_rates[name.split(" (")[0]] = t_ref / n
            print(f"{name:<24}{n:>6}{t_ours:>9.1f}{t_ref:>9.1f}{n / t_ours:>8.2f}{n / t_ref:>8.2f}{t_ref / t_ours:>9.1f}x  "
                  f"{check}{'' if good else '  <-- MISMATCH'}")
        total_ours, total_ref = sum(r[2] for r in rows), sum(r[3] for r in rows)
        print(f"{'all parts':<24}{'':>6}{total_ours:>9.1f}{total_ref:>9.1f}{'':>16}{total_ref / total_ours:>9.1f}x")

    if not args.skip_full:
        with tempfile.TemporaryDirectory() as tmp:
            ours_dir = Path(tmp) / "ours"
            result, seconds = timed(lambda: evaluate_model(model, tokenizer, bench, ours_dir, settings=settings,
                                                           model_info={"spec": spec.spec}, progress=False))
            counts = record_counts(ours_dir)
            print(f"\nWhole evaluation ({len(bench.targets)} targets, all parts): {seconds:.1f} s wall; "
                  f"{result['cost']['generation']['generated_tokens']} tokens generated")
            print("Records per part: " + ", ".join(f"{part} {n}" for part, n in counts.items()))
            if args.reference == "full":
                ref_dir = Path(tmp) / "reference"
                with reference_way(settings):
                    ref, ref_seconds = timed(lambda: evaluate_model(model, tokenizer, bench, ref_dir, settings=settings,
                                                                    model_info={"spec": spec.spec}, progress=False))
                same, total, worst = same_records(records(ours_dir), records(ref_dir))
                row_diff = max(abs(a - b) for a, b in zip(result["rwku"].values(), ref["rwku"].values())
                               if a is not None and b is not None)
                good = same == total and row_diff <= 1e-4
                ok &= good
                print(f"The same whole evaluation the reference way: {ref_seconds:.1f} s wall; speed-up of the whole "
                      f"evaluation {ref_seconds / seconds:.1f}x; {same}/{total} per-item records identical (numbers to "
                      f"1e-4; largest relative difference {worst:.1e}), largest RWKU-row difference {row_diff:.1e}"
                      f"{'' if good else '  <-- MISMATCH'}")
            elif ref_rates:
                projected = sum(n * ref_rates[part] for part, n in counts.items() if part in ref_rates)
                print(f"Reference way for the same whole evaluation, projected from its per-item rates: {projected:.1f} s; "
                      f"speed-up of the whole evaluation {projected / seconds:.1f}x")
        print(format_table({spec.spec: result["rwku"]}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
