"""The project's refusal sentences and the reader for RWKU's idontknow.jsonl format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rwkuplus.benchmark.refusals import load_refusals, project_refusals
from rwkuplus.errors import UserError

IDONTKNOW = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rwku" / "idontknow.jsonl"


def test_project_refusals():
    refusals = project_refusals()
    assert len(refusals) == 30 and len(set(refusals)) == 30
    assert all(r.strip() == r and r[-1] in ".!" for r in refusals)
    assert load_refusals() == refusals
    refusals.append("mutated")  # callers get a copy
    assert len(project_refusals()) == 30


def test_project_refusals_are_not_rwkus():
    if not IDONTKNOW.exists():
        pytest.skip("../shared/data/rwku is absent")
    rwku = load_refusals(IDONTKNOW)
    assert len(rwku) == 100 and rwku[0] == "I'm not certain about that."  # plain text lines, not JSON
    assert not set(rwku) & set(project_refusals())


def test_json_lines_variants(tmp_path):
    strings = tmp_path / "strings.jsonl"
    strings.write_text("\n".join(json.dumps(s) for s in ["I don't know.", "No idea."]) + "\n\n")
    assert load_refusals(strings) == ["I don't know.", "No idea."]
    objects = tmp_path / "objects.jsonl"
    objects.write_text(json.dumps({"output": "Not sure.", "id": 1}) + "\n" + json.dumps({"sentence": "Beats me."}) + "\n")
    assert load_refusals(objects) == ["Not sure.", "Beats me."]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("Plain line.\n42\n")
    assert load_refusals(mixed) == ["Plain line.", "42"]


def test_bad_refusal_files(tmp_path):
    with pytest.raises(UserError, match="refusal file not found"):
        load_refusals(tmp_path / "missing.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(UserError, match="holds no sentences"):
        load_refusals(empty)
    ambiguous = tmp_path / "ambiguous.jsonl"
    ambiguous.write_text(json.dumps({"a": "x", "b": "y"}) + "\n")
    with pytest.raises(UserError, match="line 1 is a JSON object without a refusal field"):
        load_refusals(ambiguous)
