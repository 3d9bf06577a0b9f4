"""The subject model's checks at the top of a run's summary and report.

A run on a subject model (``rwkuplus run`` on the world) records the subject's checks in
``run.json`` (field ``subject``, see ``rwkuplus.subject.checks_table``): each check, its value, the
base model's value, its threshold and whether it is met. ``summary.json`` carries the same field
(null when the model is not a subject model); ``summary.md`` and ``report.html`` show it as a table
before anything else, with a plain warning when a threshold is missed: every number of the run
rests on that "Before" model.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from ..errors import UserError


def subject_field(info: dict, where: Path) -> dict | None:
    """run.json's ``subject`` field, checked (None when absent)."""
    subject = info.get("subject")
    if subject is None:
        return None
    if (not isinstance(subject, dict) or not isinstance(subject.get("checks"), list)
            or not all(isinstance(c, dict) and "check" in c for c in subject["checks"])):
        raise UserError(f"{where}: field subject must be an object with a list of checks "
                        "(each with check, value, threshold, met).")
    return subject


def _fmt(v: Any, scale: Any = None) -> str:
    """x100 scores (threshold above 1.5) with one decimal, shares with two."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "–"
    big = abs(scale) > 1.5 if isinstance(scale, (int, float)) else abs(v) > 1.5
    return f"{v:.1f}" if big else f"{v:.2f}"


def warning_text(subject: dict) -> str | None:
    missed = [c for c in subject["checks"] if not c.get("met")]
    if not missed:
        return None
    return (f"The subject model misses {len(missed)} of its {len(subject['checks'])} thresholds "
            f"({', '.join(str(c['check']) for c in missed)}): every number of this run rests on a 'Before' "
            "model that is not what the benchmark promises.")


def markdown(subject: dict | None) -> list[str]:
    if subject is None:
        return []
    lines = ["## Subject model", "", f"Model: {subject.get('model') or '?'}.", ""]
    warning = warning_text(subject)
    lines += [f"**WARNING: {warning}**", ""] if warning else ["Every check meets its threshold.", ""]
    lines += ["| Check | Value | Base model | Threshold | Met |", "|:---|---:|---:|---:|:---|"]
    for c in subject["checks"]:
        t = c.get("threshold")
        lines.append(f"| {c['check']} | {_fmt(c.get('value'), t)} | {_fmt(c.get('base'), t)} | >= {_fmt(t)} "
                     f"| {'yes' if c.get('met') else '**NO**'} |")
    return lines + [""]


def html(subject: dict | None) -> str:
    if subject is None:
        return ""
    warning = warning_text(subject)
    missed = ' class="missed" style="background:#fde2e2"'
    rows = "".join(
        f"<tr{'' if c.get('met') else missed}><td>{escape(str(c['check']))}</td>"
        f"<td class=\"num\">{_fmt(c.get('value'), c.get('threshold'))}</td>"
        f"<td class=\"num\">{_fmt(c.get('base'), c.get('threshold'))}</td>"
        f"<td class=\"num\">&ge; {_fmt(c.get('threshold'))}</td>"
        f"<td>{'yes' if c.get('met') else '<strong>NO</strong>'}</td></tr>" for c in subject["checks"])
    note = (f'<p class="warning" style="color:#a00;font-weight:bold">Warning: {escape(warning)}</p>' if warning
            else "<p>Every check meets its threshold.</p>")
    return (f'<section id="subject"><h2>Subject model</h2><p>Model: <code>{escape(str(subject.get("model") or "?"))}'
            f"</code></p>{note}<table><thead><tr><th>Check</th><th>Value</th><th>Base model</th><th>Threshold</th>"
            f"<th>Met</th></tr></thead><tbody>{rows}</tbody></table></section>")
