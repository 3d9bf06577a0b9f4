"""``rwkuplus claims``: RWKU+'s two claims tested on run folders' records (``rwkuplus.claims``)."""

from __future__ import annotations

NAME = "claims"
HELP = "the claims table (knowledge conflict, hallucination spillover) from one or more run folders"
DESCRIPTION = (
    "Read run folders written by 'rwkuplus run' (one per world, or the parent folder of a run over several "
    "worlds) and write claims.json and claims.md: for each measure of claim 1 (conflicting vs consistent corpus) "
    "and claim 2 (CFT against GA, GD, NPO, RT at equal forgetting, by domain) its estimate, its 95% "
    "hierarchical-bootstrap interval (worlds, then targets, then items) and a verdict (supported, mixed, not "
    "supported) written by a fixed rule (docs/experiments.md). Only the records are read."
)


def add_arguments(p) -> None:
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run folders (or a multi-world run's folder)")
    p.add_argument("--out", metavar="DIR", help="where to write claims.json and claims.md (default: the first RUN_DIR)")
    p.add_argument("--doc", metavar="FILE", help="also rewrite the claims block of this Markdown file "
                   "(between <!-- table:claims --> and <!-- /table:claims -->), e.g. docs/experiments.md")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def run(args) -> int:
    from pathlib import Path

    from ..claims import replace_doc_block, to_markdown, write_claims
    from ..errors import UserError
    from ..fileio import write_text

    if args.n_boot < 1:
        raise UserError(f"--n-boot: expected a positive integer, got {args.n_boot}.")
    out = Path(args.out or args.run_dirs[0])
    table = write_claims(args.run_dirs, out, n_boot=args.n_boot, seed=args.seed)
    text = to_markdown(table)
    print(text)
    if args.doc:
        doc = Path(args.doc)
        if not doc.is_file():
            raise UserError(f"--doc {doc}: file not found.")
        write_text(doc, replace_doc_block(doc.read_text(encoding="utf-8"), text))
        print(f"Claims written into {doc}")
    print(f"{out / 'claims.json'}\n{out / 'claims.md'}")
    return 0
