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
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (the --out of 'rwkuplus run')")
    parser.add_argument("--no-html", action="store_true", help="write only the summary files, not report.html")


def run(args) -> int:
    from ..report import rebuild

    paths = rebuild(args.run_dir, html=not args.no_html)
    for path in paths.values():
        print(path)
    return 0
