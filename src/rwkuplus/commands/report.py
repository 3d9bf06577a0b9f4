"""``rwkuplus report``: rebuild a run folder's summary tables and HTML report from its records."""

from __future__ import annotations

NAME = "report"
HELP = "rebuild the summary tables and the HTML report of a run folder from its records"
DESCRIPTION = (
    "Read a run folder written by 'rwkuplus run' (run.json, config.yaml, units/*/result.json) and write "
    "summary.json, summary.csv and summary.md (one row per method and setting: mean and sample standard deviation "
    "over targets and seeds, RWKU's columns then RWKU+'s) and report.html (one self-contained page with the "
    "tables and plots). Nothing is recomputed from the model: only the records are read."
)


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (the --out of 'rwkuplus run'; for a run "
                        "over several worlds, its folder: every world's report and the claims table)")
    parser.add_argument("--no-html", action="store_true", help="write only the summary files, not report.html")


def run(args) -> int:
    from pathlib import Path

    from ..report import rebuild

    folder = Path(args.run_dir)
    worlds = sorted(p for p in folder.glob("world-*/") if (p / "run.json").is_file())
    if not (folder / "run.json").is_file() and worlds:  # a run over several worlds: each, then the claims
        from ..claims import write_claims

        for world in worlds:
            for path in rebuild(world, html=not args.no_html).values():
                print(path)
        write_claims(worlds, folder)
        print(f"{folder / 'claims.json'}\n{folder / 'claims.md'}")
        return 0
    paths = rebuild(args.run_dir, html=not args.no_html)
    for path in paths.values():
        print(path)
    return 0
