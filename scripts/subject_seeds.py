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
from rwkuplus.subject import THRESHOLDS, ensure_subject, read_subject


def seeds_of(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def table(rows: list[tuple[int, dict]]) -> str:
    head = ["world seed", *THRESHOLDS, "all met", "train s", "build s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for seed, s in rows:
        cells = [str(seed)]
        for key, need in THRESHOLDS.items():
            v = s["after"].get(key)
            text = "-" if v is None else (f"{v:.1f}" if need > 1.5 else f"{v:.2f}")
            cells.append(text if s["thresholds_met"][key] else f"**{text}** (needs {need:g})")
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
        rows.append((seed, read_subject(folder)))
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
