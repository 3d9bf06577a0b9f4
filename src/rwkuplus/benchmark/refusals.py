"""Refusal sentences: the project's own list, and a reader for RWKU's ``idontknow.jsonl``.

The project's sentences (``rwkuplus/data/refusals.txt``, written for this project, one per line)
are the answers the synthetic world's rejection data (reject.json) and the knowledge injection's
nonexistent-people questions train on; the hallucination grader also recognises them.

RWKU's ``idontknow.jsonl`` is, despite its name, one plain sentence per line (not JSON). Users
may also have a variant with one JSON string per line, or one JSON object per line; ``load_refusals``
reads all three: a line that parses as a JSON string is that string, a JSON object gives its
``output`` / ``text`` / ``refusal`` / ``response`` field (or its only string value), anything else
is taken as plain text.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import UserError

_OBJECT_FIELDS = ("output", "text", "refusal", "response")


@lru_cache(maxsize=1)
def _packaged() -> tuple[str, ...]:
    text = resources.files("rwkuplus").joinpath("data/refusals.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def project_refusals() -> list[str]:
    """The project's own refusal sentences, in file order."""
    return list(_packaged())


def _line_text(line: str, path: Path, lineno: int) -> str:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return line
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        for name in _OBJECT_FIELDS:
            if isinstance(value.get(name), str):
                return value[name].strip()
        strings = [v for v in value.values() if isinstance(v, str)]
        if len(strings) == 1:
            return strings[0].strip()
        raise UserError(
            f"{path}: line {lineno} is a JSON object without a refusal field "
            f"(expected one of {', '.join(_OBJECT_FIELDS)})."
        )
    return line  # a number or list that happens to be valid JSON: keep the line as written


def load_refusals(path: str | os.PathLike | None = None) -> list[str]:
    """Refusal sentences from ``path`` (RWKU's idontknow.jsonl format), or the project's when None."""
    if path is None:
        return project_refusals()
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: refusal file not found.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the refusal file ({e}).") from None
    refusals = [_line_text(line.strip(), path, i) for i, line in enumerate(lines, 1) if line.strip()]
    refusals = [r for r in refusals if r]
    if not refusals:
        raise UserError(f"{path}: the refusal file holds no sentences (expected one refusal per line).")
    return refusals
