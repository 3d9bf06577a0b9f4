"""The summary's and the report's sections for the attacks on the weights and sequential unlearning.

Attacks (``evaluation/attacks.py``; the units' metrics): ``Q8 Forget All`` / ``Q4 Forget All`` (the
forget probes after 8- and 4-bit weight quantization), ``Q8 recovery`` / ``Q4 recovery``,
``Relearn@0 Forget All`` (the held-out facts' probes, no attack), ``Relearn@k Forget All`` (after k
steps of fine-tuning on the other facts), ``Relearn@k recovery`` and, on the Before row,
``Relearn@k Forget All (base)`` (the same attack on the base model, which never knew the target).
Their row means are in every row's ``metrics`` of summary.json like any metric; this module picks
them out for their own table.

Sequential unlearning (``sequential.py``): a row's ``sequence`` in summary.json is its units' step
rows averaged by step: ``{"step", "target", "n", "forget": {target: Forget All}, "Forget All",
"Neighbor All", "Gen", "HR"}`` (the targets so far at each step; ``target`` is the one forgotten in
that step).
"""

from __future__ import annotations

import math
import re
import statistics
from typing import Any, Mapping, Sequence

ATTACK_PATTERN = re.compile(r"^(Q(\d+) (Forget All|recovery)|Relearn@(\d+) (Forget All|recovery)( \(base\))?)$")
SEQUENCE_KEYS = ("Forget All", "Neighbor All", "Gen", "HR")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _order(name: str) -> tuple:
    m = ATTACK_PATTERN.match(name)
    if m.group(2):  # quantization: wider first, Forget All before recovery
        return (0, -int(m.group(2)), m.group(3) != "Forget All", 0)
    return (1, int(m.group(4)), m.group(5) != "Forget All", bool(m.group(6)))


def attack_columns(rows: Sequence[Mapping]) -> list[str]:
    """The attack metrics some row measured, in table order (quantization, then relearning by step)."""
    names = {n for r in rows for n, stat in r["metrics"].items()
             if ATTACK_PATTERN.match(n) and _is_number((stat or {}).get("mean"))}
    return sorted(names, key=_order)


def sequence_mean(series: Sequence[Sequence[Mapping]]) -> list[dict]:
    """Units' sequence step rows averaged step by step (over the steps every unit has)."""
    series = [s for s in series if s]
    if not series:
        return []
    out = []
    for k in range(min(len(s) for s in series)):
        steps = [s[k] for s in series]
        row: dict = {"step": steps[0].get("step"), "target": steps[0].get("target"), "n": len(steps)}
        forget: dict = {}
        for name in dict.fromkeys(t for s in steps for t in (s.get("forget") or {})):
            vals = [s["forget"][name] for s in steps if _is_number((s.get("forget") or {}).get(name))]
            forget[name] = statistics.fmean(vals) if vals else None
        row["forget"] = forget
        for key in SEQUENCE_KEYS:
            vals = [s.get(key) for s in steps if _is_number(s.get(key))]
            row[key] = statistics.fmean(vals) if vals else None
        out.append(row)
    return out


def _cell(name: str, stat: Mapping | None) -> str:
    v = (stat or {}).get("mean")
    if not _is_number(v):
        return "–"
    return f"{v:.2f}" if name.endswith("recovery") else f"{v:.1f}"


def _v(v: Any, digits: int = 1) -> str:
    return f"{v:.{digits}f}" if _is_number(v) else "–"


def markdown(summary: Mapping) -> list[str]:
    """The Markdown sections (empty when the run has neither attacks nor sequential units)."""
    lines: list[str] = []
    rows = summary.get("rows") or []
    cols = attack_columns(rows)
    if cols:
        cols = ["Forget All"] + cols
        lines += ["## Attacks: forgotten or hidden?", "",
                  "Forget All (x100) after weight quantization (Q8, Q4) and after k steps of fine-tuning on the "
                  "target's other facts (Relearn@k, scored on the held-out facts' probes; Relearn@0 = no attack). "
                  "recovery = (attacked - after) / (Before - after): 0 = nothing came back, 1 = all of it; "
                  "(base) = the attack on the base model, which never knew the target. "
                  "Definitions: docs/metrics.md.", "",
                  "| Method | Setting | n | " + " | ".join(cols) + " |",
                  "|:---|:---|---:|" + "---:|" * len(cols)]
        for r in rows:
            cells = [r["method"].replace("|", "\\|"), r.get("setting") or "–", str(r.get("n_units", ""))]
            cells += [_cell(c, r["metrics"].get(c)) for c in cols]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    seq = [r for r in rows if r.get("sequence")]
    if seq:
        lines += ["## Sequential unlearning", "",
                  "The targets forgotten one after another, each step from the previous step's model; after each "
                  "step, Forget All of every target so far, their mean, Neighbor All, Gen and HR.", ""]
        for r in seq:
            names = list(r["sequence"][-1]["forget"])
            lines += [f"**{r['method']}** ({r.get('setting') or '–'})", "",
                      "| Step | Forgotten | " + " | ".join(names) + " | Forget All | Neighbor All | Gen | HR |",
                      "|---:|:---|" + "---:|" * (len(names) + 4)]
            for s in r["sequence"]:
                cells = [str(s["step"]), str(s["target"])] + [_v(s["forget"].get(n)) for n in names]
                cells += [_v(s.get("Forget All")), _v(s.get("Neighbor All")), _v(s.get("Gen")), _v(s.get("HR"), 3)]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def sequence_curves(rows: Sequence[Mapping], colors: Mapping[str, str] | None = None) -> bytes | None:
    """Per sequential row, Forget All of each target against the step (a target's line starts at the step
    it was forgotten) and the mean; None when no row is sequential."""
    from . import plots

    seq = [r for r in rows if r.get("sequence")]
    if not seq:
        return None
    fig, axes = plots._figure(4.2 * len(seq), 3.2, ncols=len(seq))
    for ax, r in zip(axes[0], seq):
        steps = [s["step"] for s in r["sequence"]]
        names = list(r["sequence"][-1]["forget"])
        for k, name in enumerate(names):
            pts = [(s["step"], s["forget"].get(name)) for s in r["sequence"] if _is_number(s["forget"].get(name))]
            if pts:
                ax.plot(*zip(*pts), marker="o", linewidth=1.2, label=name,
                        color=plots.PALETTE[k % len(plots.PALETTE)])
        mean = [(s["step"], s.get("Forget All")) for s in r["sequence"] if _is_number(s.get("Forget All"))]
        if mean:
            ax.plot(*zip(*mean), color="black", linestyle="--", linewidth=1.5, label="mean")
        ax.set_title(f"{r['method']} ({r.get('setting') or '–'})", fontsize=10)
        ax.set_xlabel("sequence step (targets forgotten)")
        ax.set_ylabel("Forget All")
        ax.set_xticks(steps)
        ax.legend(fontsize=7)
    return plots.to_png(fig)


def html_section(summary: Mapping, table, figure, escape) -> str:
    """The report's section: the attack table and the sequence curves (``table(header, rows)``,
    ``figure(png, alt, caption, absent)`` and ``escape`` are html.py's helpers)."""
    rows = summary.get("rows") or []
    cols = attack_columns(rows)
    parts = []
    if cols:
        cols = ["Forget All"] + cols
        body = [[r["method"], r.get("setting") or "–"] + [_cell(c, r["metrics"].get(c)) for c in cols] for r in rows]
        parts.append("<p>Forget All after weight quantization (Q8, Q4) and after k steps of fine-tuning on the "
                     "target's other facts (Relearn@k, on the held-out facts; Relearn@0 = no attack). recovery = "
                     "(attacked − after) / (Before − after): near 0 the forgetting is gone, near 1 it was only "
                     "hidden. (base): the attack on the base model, which never knew the target.</p>")
        parts.append(table(["Method", "Setting"] + cols, body, numeric_from=2))
    if any(r.get("sequence") for r in rows):
        parts.append(figure(sequence_curves(rows), "sequential unlearning curves",
                            "Sequential unlearning: Forget All of each target after each step (dashed: the mean).",
                            "No sequential units."))
    if not parts:
        return '<p class="absent">Neither the attack parts (eval.parts: quantization, relearning) nor ' \
               "target_mode sequential were run.</p>"
    return "".join(parts)
