"""The HTML report of a run folder: one self-contained file (inline CSS, plots as base64 PNG, no external assets).

``render_report(run, summary)`` returns the page as a string; ``write_report(run_dir)`` writes
``report.html`` into the run folder atomically. Sections: run information, the summary tables
(RWKU's metrics, then RWKU+'s), the trade-off scatter, hallucination spillover, knowledge conflict
(curves and cosine heatmaps), cost, failed units. A section whose data are absent says so.
The page is rebuilt from the records alone and holds no time of its own making: the date shown is
that of the newest record, so rebuilding an unchanged run gives the same page.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .. import __version__
from ..fileio import write_text
from . import attacks, comparisons, plots, subject_table
from .summary import (
    DIRECTION, INTERVAL_METRICS, RWKU_COLUMNS, TRAJECTORY_SCORES, Run, describe_benchmark, format_cell,
    format_number, load_run, summarize_run,
)

RWKU_GROUPS = (
    ("Forget", "lower is better", ("Forget FB", "Forget QA", "Forget AA", "Forget All")),
    ("Neighbor", "higher is better", ("Neighbor FB", "Neighbor QA", "Neighbor All")),
    ("MIA", "FM ↑ forgotten · RM steady", ("MIA FM", "MIA RM")),
    ("Utility", "higher is better", ("Gen", "Rea", "Tru", "Fac", "Flu")),
)
PLUS_GROUPS = (
    ("Hallucination", "lower is better", ("HR", "Fabrication", "dHR")),
    ("Trade-off", "higher is better", ("FE", "NR", "UR", "HS", "TS", "HTS")),
    ("Conflict", "lower is better", ("Conflict ratio",)),
    ("Cost", "lower is cheaper", ("Tokens", "FLOPs", "Wall time (s)")),
)
SHORT = {"Forget FB": "FB", "Forget QA": "QA", "Forget AA": "AA", "Forget All": "All", "Neighbor FB": "FB",
         "Neighbor QA": "QA", "Neighbor All": "All", "MIA FM": "FM", "MIA RM": "RM", "Conflict ratio": "CR",
         "Fabrication": "Fab.", "Wall time (s)": "Wall (s)"}

CSS = """
:root { --ink:#1d2330; --muted:#6b7280; --line:#e3e6ea; --soft:#f6f7f9; --accent:#2458a6; --best:#e3f4e8; --bestink:#14532d; }
* { box-sizing: border-box; }
body { margin:0; background:#fff; color:var(--ink); font: 15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI",
       Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 32px 40px 64px; }
header.top { border-bottom: 3px solid var(--accent); padding-bottom: 14px; margin-bottom: 8px; }
h1 { font-size: 28px; margin: 0 0 4px; letter-spacing: -0.01em; }
h1 small { font-weight: 400; color: var(--muted); font-size: 18px; }
h2 { font-size: 21px; margin: 40px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 6px; }
p { margin: 6px 0 10px; }
.lede { color: var(--muted); margin: 0; }
nav { margin: 10px 0 0; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 16px; }
dl.info { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 14px 0; font-size: 14px; }
dl.info dt { color: var(--muted); }
dl.info dd { margin: 0; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
details { margin: 8px 0; font-size: 13px; }
details pre { background: var(--soft); border: 1px solid var(--line); padding: 10px 14px; border-radius: 6px;
              max-height: 360px; overflow: auto; }
.read { background: #f3f6fb; border-left: 4px solid var(--accent); padding: 10px 16px; border-radius: 0 6px 6px 0;
        font-size: 14px; margin: 10px 0 14px; }
.read b { color: var(--accent); }
.absent { color: var(--muted); font-style: italic; background: var(--soft); padding: 10px 14px; border-radius: 6px; }
.tablewrap { overflow: auto; max-height: 75vh; border: 1px solid var(--line); border-radius: 8px; margin: 10px 0 18px; }
table { border-collapse: separate; border-spacing: 0; font-size: 13.5px; width: 100%; }
th, td { padding: 6px 10px; white-space: nowrap; text-align: left; }
thead th { position: sticky; background: #fff; z-index: 2; font-weight: 600; }
thead tr.groups th { top: 0; height: 30px; font-size: 12px; text-transform: uppercase; letter-spacing: .04em;
                     color: var(--accent); border-bottom: 1px solid var(--line); }
thead tr.groups th span { display:block; text-transform:none; letter-spacing:0; color:var(--muted); font-weight:400; font-size:11px; }
thead tr.cols th { top: 44px; border-bottom: 2px solid var(--ink); }
table.simple thead th { top: 0; border-bottom: 2px solid var(--ink); }
th.group + th.group, td.g0 { }
.gstart { border-left: 1px solid var(--line); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.name { font-weight: 600; }
td.setting, td.count { color: var(--muted); }
tbody tr:nth-child(even) td { background: #fafbfc; }
tbody tr:hover td { background: #eef3fb; }
tbody tr.before td { background: #f1f2f4; }
td .sd { display: block; color: var(--muted); font-size: 11px; line-height: 1.1; }
td.best { background: var(--best) !important; color: var(--bestink); font-weight: 700; }
.reason { display:block; white-space: normal; max-width: 560px; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; }
figure { margin: 12px 0 18px; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 8px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.legend-note { color: var(--muted); font-size: 12.5px; }
footer { margin-top: 48px; color: var(--muted); font-size: 12.5px; border-top: 1px solid var(--line); padding-top: 10px; }
"""

COST_NAMES = {"tokens_trained": "tokens trained", "corpus_tokens_generated": "corpus tokens generated",
              "forward_passes": "forward passes", "backward_passes": "backward passes",
              "reference_passes": "reference passes", "wall_seconds": "wall time (s)",
              "peak_memory_mb": "peak memory (MB)", "flops": "FLOPs"}

READ = {
    "summary": (
        "One row per method and setting; each cell is the <b>mean</b> over the row's targets and seeds with the "
        "<b>sample standard deviation</b> below it (n = finished units). <b>Forget</b> FB / QA / AA / All is the "
        "ROUGE-L recall (x100) of the original answer on fill-in-the-blank, question and adversarial-attack probes "
        "about the unlearning target: <b>lower is better</b>. <b>Neighbor</b> is the same on related knowledge that "
        "must survive: <b>higher is better</b>. <b>MIA</b> FM / RM is the LOSS statistic (-100 x mean token "
        "log-likelihood) on forget and retain texts: FM rising means the target texts look unseen, RM should stay "
        "where Before had it. <b>Gen / Rea / Tru / Fac / Flu</b> are MMLU, BBH, TruthfulQA MC1, TriviaQA F1 and "
        "fluency entropy: <b>higher is better</b>. Shaded cells are the best value of a column where the direction "
        "is known, among the unlearning methods (Before is the reference and never competes)."
    ),
    "plus": (
        "<b>HR</b> is the hallucination rate (wrong answers / all) on answerable questions unrelated to the targets; "
        "<b>Fab.</b> the fabrication rate (answers that are not refusals) on questions about people who do not exist; "
        "<b>dHR</b> the change of HR from Before (spillover, lower is better). <b>FE</b> = 1 - Forget All / Before's, "
        "<b>NR</b> = Neighbor All / Before's, <b>UR</b> = mean utility ratio to Before, <b>HS</b> = honesty, 1 when "
        "neither hallucination nor fabrication rose; all in [0, 1], higher is better. <b>TS</b> is the harmonic mean "
        "of FE, NR, UR; <b>HTS</b> adds HS: a method can win on TS and lose on HTS, which is the hidden cost. "
        "<b>CR</b> is the share of pairs of per-example gradients of the counterfactual corpus that point against "
        "each other (cosine &lt; 0), at the start of training. <b>Tokens</b> = tokens trained + generated to build "
        "the corpus; <b>FLOPs</b> = 2N T<sub>gen</sub> + 6N T<sub>trained</sub> + 2N T<sub>ref</sub>."
    ),
    "tradeoff": (
        "Each large dot is a method's mean after unlearning; the thin line through small dots is its trajectory over "
        "training checkpoints, so you can see what it gave up on the way. The ideal is the top-right corner: "
        "everything forgotten (FE = 1) with utility (left) and honesty (right) intact. A method that looks fine "
        "on the left but drops on the right buys forgetting with hallucination. HV is the area dominated by the "
        "trajectory's Pareto front against (0, 0), larger is better; \"at FE = 0.5\" is the utility or honesty left "
        "when half the target knowledge is gone (blank when a method never got there)."
    ),
    "hallucination": (
        "Left: rates after unlearning. <b>HR</b> (solid) = answerable questions unrelated to the targets (the world's retained "
        "people; for RWKU, TriviaQA and the neighbor probes) answered wrongly; <b>fabrication</b> (hatched) = questions about nonexistent people answered "
        "instead of refused. Right: the change of each rate from the Before model, with a 95% paired-bootstrap "
        "interval; an interval entirely right of zero is spillover: the method taught the model to make things "
        "up about people it was never trained on. Lower is better everywhere. The honesty split says how the "
        "forget probes are answered after unlearning: the original answer leaked, an abstention, or a fabrication."
    ),
    "conflict": (
        "Each counterfactual training example has its own gradient. The <b>conflict ratio</b> is the share of "
        "pairs whose gradients point against each other (cosine &lt; 0), the <b>mean cosine</b> how aligned they "
        "are on average, the <b>cancellation ratio</b> 1 - ||sum g|| / sum ||g|| the share of the gradient mass "
        "that cancels out (lower means the corpus pulls one way). <b>Conflicting</b> corpora give the target a "
        "different false profile in every sample; <b>consistent</b> ones repeat one false profile. Solid lines "
        "count all pairs, dashed lines only pairs about the same attribute, where a mutually inconsistent corpus "
        "shows its conflict most directly. Heatmaps: red = aligned, blue = opposed, examples grouped by attribute."
    ),
    "cost": (
        "What each method spent: estimated FLOPs (2N per generated or reference token, 6N per trained token, "
        "N = parameters; log scale) and wall time. Counterfactual tuning also pays for building its corpus "
        "(tokens generated), which is counted here. Lower is cheaper."
    ),
}


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _figure(png: bytes | None, alt: str, caption: str, absent: str) -> str:
    if png is None:
        return f'<p class="absent">{_e(absent)}</p>'
    return f"<figure>{_img(png, alt)}<figcaption>{_e(caption)}</figcaption></figure>"


def display_names(rows: Sequence[Mapping]) -> list[str]:
    """Row names for plots and tables: the label, with the setting added when rows differ in setting."""
    settings = {r["setting"] for r in rows if r["setting"] is not None}
    labels = [r["method"] for r in rows]
    add = len(settings) > 1 or len(set(labels)) < len(labels)
    return [f"{r['method']} · {r['setting']}" if add and r["setting"] is not None else r["method"] for r in rows]


def _num(v: Any) -> float | None:
    return plots._num(v)


def _best_rows(rows: Sequence[Mapping], column: str) -> set[int]:
    """Indices of the rows holding the best mean of ``column`` (Before excluded; needs two candidates)."""
    direction = DIRECTION.get(column)
    if not direction:
        return set()
    vals = [(i, _num(r["metrics"].get(column, {}).get("mean"))) for i, r in enumerate(rows)
            if r["method_id"] != "before"]
    vals = [(i, v) for i, v in vals if v is not None]
    if len(vals) < 2:
        return set()
    best = max(v * direction for _, v in vals)
    if all(v * direction == best for _, v in vals):
        return set()
    return {i for i, v in vals if v * direction == best}


def _metric_table(rows: Sequence[Mapping], names: Sequence[str], groups) -> str:
    present = [(g, note, [c for c in cols if c in names]) for g, note, cols in groups]
    present = [(g, note, cols) for g, note, cols in present if cols]
    head1 = ['<th colspan="3"></th>'] + [
        f'<th class="gstart" colspan="{len(cols)}">{_e(g)}<span>{_e(note)}</span></th>' for g, note, cols in present]
    head2 = ["<th>Method</th>", "<th>Setting</th>", '<th class="num" title="finished units">n</th>']
    for _, _, cols in present:
        for k, c in enumerate(cols):
            arrow = {1: " ↑", -1: " ↓"}.get(DIRECTION.get(c), "")
            cls = "num gstart" if k == 0 else "num"
            head2.append(f'<th class="{cls}" title="{_e(c)}">{_e(SHORT.get(c, c))}{arrow}</th>')
    best = {c: _best_rows(rows, c) for _, _, cols in present for c in cols}
    names_shown = display_names(rows)
    body = []
    for i, (r, shown) in enumerate(zip(rows, names_shown)):
        cells = [f'<td class="name">{_e(r["method"])}</td>', f'<td class="setting">{_e(r["setting"] or "–")}</td>',
                 f'<td class="num count">{r["n_units"] or "–"}</td>']
        for _, _, cols in present:
            for k, c in enumerate(cols):
                stat = r["metrics"].get(c) or {}
                mean = format_number(c, stat.get("mean"))
                sd = stat.get("std")
                sd_html = f'<span class="sd">± {_e(format_number(c, sd))}</span>' if _num(sd) is not None else ""
                cls = ["num"] + (["gstart"] if k == 0 else []) + (["best"] if i in best[c] else [])
                cells.append(f'<td class="{" ".join(cls)}">{_e(mean)}{sd_html}</td>')
        tr = ' class="before"' if r["method_id"] == "before" else ""
        body.append(f"<tr{tr}>" + "".join(cells) + "</tr>")
    return ('<div class="tablewrap"><table><thead><tr class="groups">' + "".join(head1) + '</tr><tr class="cols">'
            + "".join(head2) + "</tr></thead><tbody>" + "".join(body) + "</tbody></table></div>")


def _simple_table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int = 1,
                  raw: bool = False) -> str:
    head = "".join(f'<th class="{"num" if k >= numeric_from else ""}">{_e(h)}</th>' for k, h in enumerate(header))
    body = []
    for row in rows:
        cells = []
        for k, v in enumerate(row):
            cls = "num" if k >= numeric_from else ("name" if k == 0 else "")
            cells.append(f'<td class="{cls}">{v if raw else _e(v)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ('<div class="tablewrap"><table class="simple"><thead><tr>' + head + "</tr></thead><tbody>"
            + "".join(body) + "</tbody></table></div>")


def _read(key: str) -> str:
    return f'<div class="read"><b>How to read this.</b> {READ[key]}</div>'


def _mean(row: Mapping, name: str) -> float | None:
    return _num((row["metrics"].get(name) or {}).get("mean"))


# ------------------------------------------------------------------ sections

def _run_info(run: Run, summary: Mapping) -> str:
    stamps = [p.stat().st_mtime for p in [run.folder / "run.json", *run.folder.glob("units/*/result.json")]
              if p.exists()]
    date = run.info.get("date") or run.info.get("started") or run.info.get("created")
    if not date and stamps:
        date = _dt.datetime.fromtimestamp(max(stamps), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    items = [("Benchmark", describe_benchmark(summary.get("benchmark"))), ("Model", summary.get("model") or "?"),
             ("Evaluation protocol", summary.get("protocol") or "not recorded"),
             ("Date of results", date or "?"),
             ("Units", f"{summary['n_ok']} finished, {summary['n_failed']} failed"
              + (f", {summary['n_pending']} unfinished" if summary.get("n_pending") else "")),
             ("Run folder", str(run.folder.resolve()))]
    config = summary.get("config")
    if isinstance(config, dict):
        for key, value in config.items():
            if key in ("benchmark", "model", "protocol"):
                continue
            if isinstance(value, (str, int, float, bool)) or value is None:
                items.append((str(key), str(value)))
            elif isinstance(value, list) and len(value) <= 12 and all(isinstance(v, (str, int, float)) for v in value):
                items.append((str(key), ", ".join(str(v) for v in value)))
            elif isinstance(value, list):
                items.append((str(key), f"{len(value)} entries"))
            elif isinstance(value, dict):
                flat = all(isinstance(v, (str, int, float, bool)) or v is None for v in value.values())
                text = ", ".join(f"{k}={v}" for k, v in value.items()) if flat else ", ".join(str(k) for k in value)
                items.append((str(key), text if len(text) <= 160 else ", ".join(str(k) for k in value)))
    out = '<dl class="info">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>"
    if config is not None:
        import yaml

        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False)
        out += f"<details><summary>Full configuration (config.yaml)</summary><pre>{_e(text)}</pre></details>"
    return out


def _summary_section(summary: Mapping) -> str:
    rows, cols = summary["rows"], summary["columns"]
    if not rows:
        return '<p class="absent">No unit has finished yet: there is nothing to summarize.</p>'
    plus = [c for c in cols if c not in RWKU_COLUMNS]
    return ("<h3>RWKU's metrics</h3>" + _metric_table(rows, cols, RWKU_GROUPS) + _read("summary")
            + "<h3>RWKU+ metrics</h3>" + _metric_table(rows, plus, PLUS_GROUPS) + _read("plus"))


def _tradeoff_section(summary: Mapping, names: list[str], colors: Mapping[str, str]) -> str:
    rows = summary["rows"]
    points = [{"name": n, "FE": _mean(r, "FE"), "UR": _mean(r, "UR"), "HS": _mean(r, "HS"),
               "trajectory": r.get("trajectory") or []} for n, r in zip(names, rows)]
    out = _figure(plots.tradeoff_scatter(points, colors), "forget efficacy against utility retention and honesty",
                  "Left: FE vs UR. Right: FE vs HS. Dots: means after unlearning; lines: training trajectories.",
                  "No trade-off scores (FE with UR or HS) were recorded in this run.")
    traj_rows = [(n, r) for n, r in zip(names, rows) if any(_mean(r, s) is not None for s in TRAJECTORY_SCORES)]
    if traj_rows:
        out += "<h3>Along the trajectories</h3>" + _simple_table(
            ["Method", *TRAJECTORY_SCORES, "checkpoints"],
            [[n, *[format_cell(s, r["metrics"].get(s)) for s in TRAJECTORY_SCORES], str(len(r.get("trajectory") or []))]
             for n, r in traj_rows])
    return out + _read("tradeoff")


def _ci_text(stat: Mapping | None, name: str) -> str:
    stat = stat or {}
    text = format_number(name, stat.get("mean"))
    ci = stat.get("ci")
    if ci and _num(ci[0]) is not None and _num(ci[1]) is not None:
        text += f" [{format_number(name, ci[0])}, {format_number(name, ci[1])}]"
    return text


def _hallucination_section(summary: Mapping, names: list[str], colors: Mapping[str, str]) -> str:
    rows = summary["rows"]
    data = []
    for n, r in zip(names, rows):
        item = {"name": n}
        for k in ("HR", "Fabrication", *INTERVAL_METRICS):
            item[k] = _mean(r, k)
        for k in INTERVAL_METRICS:
            item[f"{k}_ci"] = (r["metrics"].get(k) or {}).get("ci")
        data.append(item)
    out = _figure(plots.hallucination_bars(data, colors), "hallucination and fabrication rates per method",
                  "Bars: means over targets and seeds; error bars: 95% intervals of the change from Before.",
                  "No hallucination measures (HR, fabrication, dHR) were recorded in this run.")
    cols = ("HR", "Fabrication", "Abstention", "dHR", "dFabrication", "Leaked", "Abstained", "Fabricated")
    table_rows = [(n, r) for n, r in zip(names, rows) if any(_mean(r, c) is not None for c in cols)]
    if table_rows:
        out += "<h3>Rates and honesty split</h3>" + _simple_table(
            ["Method", "HR", "Fabrication", "Abstention", "dHR [95% CI]", "dFabrication [95% CI]",
             "Leaked", "Abstained", "Fabricated"],
            [[n, *[format_cell(c, r["metrics"].get(c), with_std=False) for c in ("HR", "Fabrication", "Abstention")],
              _ci_text(r["metrics"].get("dHR"), "dHR"), _ci_text(r["metrics"].get("dFabrication"), "dFabrication"),
              *[format_cell(c, r["metrics"].get(c), with_std=False) for c in ("Leaked", "Abstained", "Fabricated")]]
             for n, r in table_rows])
    return out + _read("hallucination")


def _representative_diagnostics(run: Run, row: Mapping) -> tuple[Any, list[dict]]:
    """The first finished unit of the row (by target, then seed) whose diagnostics hold a cosine matrix."""
    units = [u for u in run.units if u.ok and u.label == row["method"] and u.setting == row["setting"]]
    units.sort(key=lambda u: (str(u.target), str(u.seed)))
    for u in units:
        with_matrix = [d for d in u.diagnostics if d.get("cosine_matrix")]
        if with_matrix:
            return u, with_matrix
    return None, []


def _conflict_section(run: Run, summary: Mapping, names: list[str], colors: Mapping[str, str]) -> str:
    rows = summary["rows"]
    series = []
    for n, r in zip(names, rows):
        diag = r.get("diagnostics") or []
        if not diag:
            continue
        keys = {k for d in diag for k in d if k not in ("checkpoint", "n")}
        series.append({"name": n, **{k: [d.get(k) for d in diag] for k in keys}})
    out = _figure(plots.conflict_curves(series, colors), "gradient conflict measures over training",
                  "Means over the row's targets and seeds at each checkpoint. Solid: all pairs; dashed: same attribute.",
                  "No gradient-conflict diagnostics were recorded in this run (they are measured for CFT units).")
    if series:
        measures = ("conflict_ratio", "mean_cosine", "cancellation_ratio", "coherence",
                    "same_attribute.conflict_ratio", "same_attribute.mean_cosine")
        header = ["Method", "when", "step", "conflict ratio", "mean cosine", "cancellation", "coherence",
                  "same-attr. CR", "same-attr. cosine"]
        table = []
        for n, r in zip(names, rows):
            diag = r.get("diagnostics") or []
            picks = [("start", diag[0]), ("end", diag[-1])] if len(diag) > 1 else [("start", diag[0])] if diag else []
            for when, d in picks:
                step = _num(d.get("step"))
                table.append([n, when, "–" if step is None else f"{step:g}",
                              *[format_number("rate", d.get(m)) for m in measures]])
        out += "<h3>Start and end of training</h3>" + _simple_table(header, table, numeric_from=2)
    panels = []
    for n, r in zip(names, rows):
        unit, diags = _representative_diagnostics(run, r)
        if unit is None:
            continue
        picks = [diags[0], diags[-1]] if len(diags) > 1 else [diags[0]]
        for d in picks:
            step = d.get("step")
            panels.append({"title": f"{n}\nstep {step}" + (f" · {unit.target}" if unit.target else ""),
                           "matrix": d.get("cosine_matrix"), "labels": d.get("labels")})
    if panels:
        out += _figure(plots.cosine_heatmaps(panels), "cosine matrices of per-example gradients",
                       "Pairwise cosines of per-example gradients for one target per method, at the first and the last "
                       "checkpoint (red: aligned, blue: opposed).",
                       "The cosine matrices could not be drawn.")
    elif series:
        out += '<p class="absent">No cosine matrices were recorded, so no heatmaps.</p>'
    return out + _read("conflict")


def _cost_section(summary: Mapping, names: list[str], colors: Mapping[str, str]) -> str:
    rows = summary["rows"]
    data = [{"name": n, "FLOPs": _mean(r, "FLOPs"), "Wall time (s)": _mean(r, "Wall time (s)")}
            for n, r in zip(names, rows)]
    out = _figure(plots.cost_bars(data, colors), "estimated FLOPs and wall time per method",
                  "Means over targets and seeds.", "No costs were recorded in this run.")
    cost_keys = list(dict.fromkeys(k for r in rows for k in r.get("costs") or {}))
    if cost_keys:
        def fmt(k, stat):
            v = _num((stat or {}).get("mean"))
            if v is None:
                return "–"
            if k == "flops" or abs(v) >= 1e9:
                return f"{v:.2e}"
            return f"{v:,.1f}" if "seconds" in k or k.endswith("_mb") else f"{v:,.0f}"
        out += "<h3>Counts (means per unit)</h3>" + _simple_table(
            ["Method", *[COST_NAMES.get(k, k.replace("_", " ")) for k in cost_keys]],
            [[n, *[fmt(k, (r.get("costs") or {}).get(k)) for k in cost_keys]] for n, r in zip(names, rows)])
    return out + _read("cost")


def _failed_section(summary: Mapping) -> str:
    failed = summary.get("failed") or []
    out = ""
    if failed:
        out += _simple_table(
            ["Unit", "Method", "Setting", "Target", "Seed", "Reason"],
            [[_e(f["unit_id"]), _e(f["method"]), _e(f["setting"] or "–"), _e(f["target"] or "–"),
              _e("–" if f["seed"] is None else f["seed"]), f'<span class="reason">{_e(f["reason"])}</span>']
             for f in failed], numeric_from=99, raw=True)
    else:
        out += '<p class="absent">No unit failed.</p>'
    if summary.get("pending"):
        out += (f"<p>{len(summary['pending'])} unit(s) have no result yet (interrupted or still running): "
                f"{_e(', '.join(summary['pending'][:20]))}{' …' if len(summary['pending']) > 20 else ''}.</p>")
    return out


def render_report(run: Run, summary: Mapping) -> str:
    """The whole report as one self-contained HTML page."""
    rows = summary["rows"]
    names = display_names(rows)
    colors = plots.method_colors(names, before=[n for n, r in zip(names, rows) if r["method_id"] == "before"])
    title = f"RWKU+ report · {run.folder.resolve().name}"
    sections = [
        ("summary", "Summary", _summary_section(summary)),
        ("tradeoff", "Trade-off: forgetting against what it costs", _tradeoff_section(summary, names, colors)),
        ("hallucination", "Hallucination spillover", _hallucination_section(summary, names, colors)),
        ("equal-fe", "By domain and at equal forgetting", comparisons.html_section(summary, _simple_table, _e, _figure,
                                                                                     colors, names)),
        ("conflict", "Knowledge conflict: counterfactual corpora", _conflict_section(run, summary, names, colors)),
        ("cost", "Cost", _cost_section(summary, names, colors)),
        ("attacks", "Attacks and sequential unlearning: forgotten or hidden?",
         attacks.html_section(summary, _simple_table, _figure, _e)),
        ("failed", f"Failed units ({summary['n_failed']})", _failed_section(summary)),
    ]
    nav = "".join(f'<a href="#{key}">{_e(name.split(":")[0])}</a>' for key, name, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{_e(name)}</h2>{content}</section>' for key, name, content in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
        f'<header class="top"><h1>RWKU+ report <small>{_e(run.folder.resolve().name)}</small></h1>'
        '<p class="lede">Unlearning on RWKU\'s metrics plus the hidden costs of counterfactual tuning: '
        "knowledge conflict, hallucination spillover, trade-off and cost.</p>"
        f"<nav>{nav}</nav></header>"
        f"{subject_table.html(summary.get('subject'))}{_run_info(run, summary)}{body}"
        f"<footer>Made by rwkuplus {_e(__version__)} from the records in this run folder "
        "(<code>rwkuplus report RUN_DIR</code> rebuilds it). Definitions: RWKU (Jin et al., 2024) and RWKU+ "
        "(arXiv 2605.27083).</footer></main></body></html>\n"
    )


def write_report(run_dir: str | Path, summary: Mapping | None = None) -> Path:
    """Write ``report.html`` into the run folder (atomically) and return its path."""
    run = load_run(run_dir)
    if summary is None:
        summary = summarize_run(run)
    path = Path(run_dir) / "report.html"
    write_text(path, render_report(run, summary))
    return path
