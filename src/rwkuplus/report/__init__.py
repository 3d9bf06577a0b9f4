"""Summary tables and the HTML report of a run folder, rebuilt from its records alone.

``rebuild(run_dir)`` writes ``summary.json``, ``summary.csv``, ``summary.md`` and ``report.html``
into the run folder and returns their paths; ``rwkuplus report RUN_DIR`` calls it.
"""

from __future__ import annotations

from pathlib import Path


def rebuild(run_dir: str | Path, html: bool = True) -> dict[str, Path]:
    """Write the summary files (and the HTML report unless ``html`` is False); returns name -> path."""
    from .html import write_report
    from .summary import load_run, summarize_run, write_summary

    folder = Path(run_dir)
    run = load_run(folder)
    summary = write_summary(folder, summarize_run(run))
    paths = {name: folder / name for name in ("summary.json", "summary.csv", "summary.md")}
    if html:
        paths["report.html"] = write_report(folder, summary)
    return paths
