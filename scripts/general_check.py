"""Answer the general-ability check (``data/general_questions.json``) with the base model and with
saved subject models, and print each subject's general kept and the answers it lost.

Used to re-check cached subjects after the check set changed (a subject's ``subject.json`` keeps
the check it was built with). Nothing is written.

    python scripts/general_check.py ~/.cache/rwkuplus/subjects/<key> [more folders] [--dtype auto]
"""

from __future__ import annotations

import argparse

from rwkuplus.evaluation.grading import load_refusal_matcher
from rwkuplus.models import DEFAULT_MODEL, load_model
from rwkuplus.subject import answer_general, general_kept, general_questions, lost_lines


def answer(spec: str, dtype: str, questions, matcher) -> list[dict]:
    model, tokenizer, _ = load_model(spec, dtype=dtype)
    return answer_general(model, tokenizer, questions, matcher)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("subjects", nargs="+", help="saved subject model folders")
    ap.add_argument("--base", default=DEFAULT_MODEL, help="the model the subjects were injected into")
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    args = ap.parse_args(argv)
    questions, matcher = general_questions(), load_refusal_matcher(paths=[])
    base = answer(args.base, args.dtype, questions, matcher)
    print(f"base model: {sum(r['grade'] == 'correct' for r in base)} of {len(questions)} correct")
    for folder in args.subjects:
        rows = answer(folder, args.dtype, questions, matcher)
        kept, known = general_kept(base, rows)
        print(f"{folder}: general kept {kept:.3f} of {known} known")
        for line in lost_lines(base, rows):
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
