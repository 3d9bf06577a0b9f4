"""Build (or reuse) the subject model of several world seeds and print each one's checks as a table.

    python scripts/subject_seeds.py --seeds 0-4 [--dtype auto] [--markdown FILE] [--doc docs/subject.md]

Every seed is built with the same ``InjectionSettings`` (the defaults) and cached as ``rwkuplus
subject --world-seed S`` would (a later ``rwkuplus run --benchmark world:S`` reuses it). The table
(one row per seed: each check's value, a mark where it misses its threshold, training and build
seconds) is what docs/subject.md shows (``--doc`` rewrites its block ``table:seeds``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rwkuplus.benchmark.world import WorldConfig
from rwkuplus.models import DEFAULT_MODEL, dtype_name
from rwkuplus.fileio import read_json
from rwkuplus.subject import THRESHOLDS, ensure_subject, general_kept, read_subject


def seeds_of(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


#: The general check of wave one: the first 40 questions of ``data/general_questions.json`` (the set
#: grew to 200 in injection version 5); kept on them too, for comparison with the older tables.
WAVE_ONE_GENERAL = 40


def first_general_kept(folder: Path, n: int = WAVE_ONE_GENERAL) -> float | None:
    """General kept on the first ``n`` check questions, from a subject's stored answers."""
    before = read_json(folder / "records_before.json")["general"][:n]
    after = read_json(folder / "records_after.json")["general"][:n]
    return general_kept(before, after)[0]


def table(rows: list[tuple[int, dict]]) -> str:
    head = ["world seed", *THRESHOLDS, f"general kept, first {WAVE_ONE_GENERAL}", "all met", "train s", "build s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for seed, s in rows:
        cells = [str(seed)]
        for key, need in THRESHOLDS.items():
            v = s["after"].get(key)
            text = "-" if v is None else (f"{v:.1f}" if need > 1.5 else f"{v:.2f}")
            cells.append(text if s["thresholds_met"][key] else f"**{text}** (needs {need:g})")
        first = s.get("general_kept_first")
        cells.append("-" if first is None else f"{first:.2f}")
        cells += ["yes" if s["all_thresholds_met"] else "**no**", f"{s['training']['train_seconds']:.0f}",
                  f"{s['total_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0-4", help="world seeds, e.g. 0-4 or 0,1,2 (default 0-4)")
    ap.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--doc", help="rewrite the block <!-- table:seeds --> of this Markdown file with the table")
    args = ap.parse_args(argv)
    rows = []
    for seed in seeds_of(args.seeds):
        print(f"world seed {seed} ({dtype_name(args.dtype)}):", flush=True)
        folder = ensure_subject(DEFAULT_MODEL, WorldConfig(seed=seed), dtype=args.dtype)
        rows.append((seed, {**read_subject(folder), "general_kept_first": first_general_kept(folder)}))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    if args.doc:
        from rwkuplus.claims import replace_doc_block
        from rwkuplus.fileio import write_text

        doc = Path(args.doc)
        write_text(doc, replace_doc_block(doc.read_text(encoding="utf-8"), text, "seeds"))
    return 0 if all(s["all_thresholds_met"] for _, s in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
