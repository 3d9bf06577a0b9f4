"""The floor of general kept: what the injection's own training does to the base model with no world.

The base model is trained, as knowledge injection trains it (``InjectionSettings``: lr, batch,
layers, cosine schedule, bf16 with fp32 masters on a CPU with fast bf16), on the replay alone: its
own answers to the replay prompts, on KL to its own top-k distribution. That loss is about zero at
the start, so whatever general answers are lost are lost to the optimisation, not to the world's
facts. Prints general kept on the 200-question check (``data/general_questions.json``) and the
answers lost. Nothing is written.

    python scripts/general_floor.py                 # the injection's lr and replay weight
    python scripts/general_floor.py --lr 5e-5
    python scripts/general_floor.py --teacher-kernel training --adam-eps 1e-4
"""

from __future__ import annotations

import argparse
import time

from rwkuplus.evaluation.grading import load_refusal_matcher
from rwkuplus.methods import make_method
from rwkuplus.methods.sft import teacher_targets
from rwkuplus.models import DEFAULT_MODEL, load_model
from rwkuplus.subject import (
    InjectionSettings, answer_general, general_kept, general_questions, lost_lines, replay_examples,
)
from rwkuplus.training.loop import train
from rwkuplus.training.precision import CPU_TRAINING_ATTENTION
from rwkuplus.training.settings import TrainSettings


def main(argv=None) -> int:
    defaults = InjectionSettings()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    ap.add_argument("--lr", type=float, default=defaults.lr)
    ap.add_argument("--passes", type=float, default=1.0, help="epochs over the replay (the injection makes 3)")
    ap.add_argument("--adam-eps", type=float, default=defaults.adam_eps, help="AdamW's epsilon")
    ap.add_argument("--teacher-kernel", choices=("evaluation", "training"), default="evaluation",
                    help="attention kernel of the teacher's pass: the evaluation's (as injection does) or the "
                         "one training runs with on a CPU (eager), for a loss of exactly zero at the start")
    args = ap.parse_args(argv)
    questions, matcher = general_questions(), load_refusal_matcher(paths=[])
    model, tokenizer, _ = load_model(args.model, dtype=args.dtype)
    model.eval()
    before = answer_general(model, tokenizer, questions, matcher)
    replay = replay_examples(model, tokenizer, defaults.replay_tokens)
    original = model.config._attn_implementation
    if args.teacher_kernel == "training":
        model.set_attn_implementation(CPU_TRAINING_ATTENTION)
    soft = teacher_targets(model, tokenizer, replay, defaults.replay_top_k, defaults.max_length)
    model.set_attn_implementation(original)
    settings = TrainSettings(lr=args.lr, epochs=args.passes, batch_size=defaults.batch_size,
                             warmup_ratio=defaults.warmup_ratio, schedule="cosine", max_length=defaults.max_length,
                             seed=defaults.seed, mode=defaults.mode, layers=defaults.layers, group_by_length=True,
                             adam_eps=args.adam_eps,
                             max_forget_nll_per_token=None)
    start = time.perf_counter()
    result = train(model, tokenizer, make_method("sft", corpus_name="injection", soft_weight=defaults.replay_weight,
                                                 soft_targets=soft), {"injection": replay}, settings)
    seconds = time.perf_counter() - start
    after = answer_general(result.model, tokenizer, questions, matcher)
    kept, known = general_kept(before, after)
    print(f"replay alone: {len(replay)} answers x {args.passes:g} passes at lr {args.lr:g} "
          f"({result.cost.optimizer_steps} steps, {seconds:.0f} s, teacher kernel: {args.teacher_kernel}, "
          f"Adam eps {args.adam_eps:g})")
    print(f"general kept {kept:.3f} of {known} known")
    for line in lost_lines(before, after):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
