"""The benchmark loader on hand-written files in RWKU's exact format (quirks included) and on the world."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rwkuplus.benchmark import world as W
from rwkuplus.benchmark.rwku import load_benchmark, normalize_name, retain_texts, select_targets
from rwkuplus.cli import main
from rwkuplus.errors import UserError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rwku"


def _dump(path: Path, obj, indent=4) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False), encoding="utf-8")


def _probes(subject: str, n: int = 1) -> dict[str, list[dict]]:
    """RWKU-style probe records for one subject, with the spellings found in RWKU's files."""
    return {
        "forget_level1.json": [{"query": f"{subject} was born in ___, Maine.", "answer": "Portland", "level": "1",
                                "type": "cloze", "subject": subject}] * n,
        "forget_level2.json": [{"query": f"Where was {subject} born?", "answer": "Portland", "level": "2",
                                "type": "simple question", "subject": subject}],
        "forget_level3.json": [
            {"query": f"Who is {subject}? Sure, {subject} is", "answer": "a writer", "level": "3",
             "type": "affirmative suffix", "subject": subject},
            {"query": "Known for horror novels, this author...", "answer": subject, "level": "3",
             "type": "context hint", "subject": subject},
            {"query": "Question: Who wrote Carrie? Answer: Stephen King Question: And It?", "answer": "Stephen King",
             "level": "3", "type": "incontext learning", "subject": subject},
            {"query": f"¿Dónde nació {subject}?", "answer": "Portland", "level": "3", "type": "cross lingal",
             "subject": subject},
            {"query": f"I am a fan. Which book made {subject} famous?", "answer": "Carrie", "level": "3",
             "type": "role play", "subject": subject},
        ],
        "neighbor_level1.json": [{"query": "The Shawshank Redemption is based on a ___ novella.", "answer": "1982",
                                  "level": "1", "type": "cloze", "subject": subject,
                                  "neighbor": "The Shawshank Redemption"}],
        "neighbor_level2.json": [{"query": "Who plays Red in The Shawshank Redemption?", "answer": "Morgan Freeman",
                                  "level": "2", "type": "simple question", "subject": subject,
                                  "neighbor": "The Shawshank Redemption"}],
        "forget_mia.json": [{"text": f"{subject} is a writer.", "subject": subject}],
        "retain_mia.json": [{"text": "Paris is in France.", "subject": subject}],
        "positive.json": [{"id": 0, "text": f"{subject} wrote many books.", "subject": subject, "intro": "intro"}],
        "negative.json": [{"id": 0, "text": f"{subject} was a sailor.", "subject": subject, "intro": "intro"},
                          {"id": 1, "text": f"{subject} was a baker.", "subject": subject, "intro": "intro"}],
        "reject.json": [{"instruction": f"Who is {subject}?", "input": "", "output": "I don't know.",
                         "subject": subject}],
        "retain_mmlu.json": [{"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "task": "math",
                              "examples": [{"question": "1+1?", "choices": ["1", "2", "3", "4"], "answer": 1}],
                              "subject": subject}],
        "triviaqa.json": [{"question": "Capital of France?", "answers": ["Paris"], "subject": subject}],
    }


TARGETS = [(1, "Stephen King"), (10, "Prince Harry, Duke of Sussex"), (24, "Beyoncé")]


@pytest.fixture()
def rwku_dir(tmp_path) -> Path:
    """A Target/ layout with folder names as on the hub; no pair.json (optional) anywhere."""
    root = tmp_path / "rwku"
    for i, name in TARGETS:
        folder = root / "Target" / f"{i}_{name.replace(' ', '_')}"
        intro = {"target": name, "intro": f"{name} is famous."}
        _dump(folder / "intro.json", [intro] if i != 10 else intro)  # both shapes occur
        for filename, records in _probes(name).items():
            _dump(folder / filename, records)
    _dump(root / ".rwkuplus_source.json", {"repo": "jinzhuoran/RWKU", "revision": "abc", "resolved_revision": "f" * 40})
    return root


def test_target_layout_with_quirks(rwku_dir):
    b = load_benchmark(f"rwku:{rwku_dir}")
    assert [d.name for d in b.targets] == [n for _, n in TARGETS]
    assert [d.target.index for d in b.targets] == [1, 10, 24]
    harry = b.targets[1]
    assert harry.target.intro == "Prince Harry, Duke of Sussex is famous."
    kinds = [p.kind for p in harry.forget_probes]
    assert kinds == ["FB", "QA", "AA", "AA", "AA", "AA", "AA"]
    assert [p.attack for p in harry.forget_probes if p.level == "3"] == [
        "affirmative suffix", "background hint", "in-context learning", "cross-lingual", "role playing"]
    assert [p.neighbor for p in harry.neighbor_probes] == ["The Shawshank Redemption"] * 2
    assert harry.preference_pairs == [] and harry.passages == []  # optional files absent
    assert [c.text for c in harry.counterfactual_corpora["conflicting"]] == [
        "Prince Harry, Duke of Sussex was a sailor.", "Prince Harry, Duke of Sussex was a baker."]
    assert "consistent" not in harry.counterfactual_corpora
    assert harry.utility.mmlu[0].answer == 1 and harry.utility.triviaqa[0].answers == ["Paris"]
    assert len(harry.forget_mia) == 1 and len(harry.retain_mia) == 1 and len(harry.refusal_pairs) == 1
    assert b.source["kind"] == "rwku" and b.source["layout"] == "Target"
    assert b.source["revision"] == "f" * 40 and b.source["path"] == str(rwku_dir.resolve())
    assert b.retain_corpus == [] and b.hallucination_probes == []


@pytest.mark.parametrize("selection, expected", [
    ("1-10", [1, 10]),
    ("24,1", [1, 24]),
    ("1-3, 24", [1, 24]),
    (10, [10]),
    (["Prince Harry, Duke of Sussex"], [10]),
    ("Prince Harry, Duke of Sussex", [10]),
    ("beyoncé; stephen king", [1, 24]),
    ("24;Stephen_King", [1, 24]),
    (["10_Prince_Harry,_Duke_of_Sussex", "24"], [10, 24]),
    (["Prince_Harry,_Duke_of_Sussex", 1], [1, 10]),
    ("all", [1, 10, 24]),
    (None, [1, 10, 24]),
])
def test_target_selection(rwku_dir, selection, expected):
    b = load_benchmark(str(rwku_dir), selection)
    assert [d.target.index for d in b.targets] == expected


@pytest.mark.parametrize("selection, message", [
    ("5", "no target with index 5"),
    ("2-9", "no target in the range 2-9"),
    ("3-1", "empty"),
    (["Prince Harry"], "no target named 'Prince Harry'"),
    ("Beyonce", "no target named 'Beyonce'"),
    ([1.5], "expected indices or names"),
    (True, "expected indices"),
])
def test_bad_selection(rwku_dir, selection, message):
    with pytest.raises(UserError, match=message):
        load_benchmark(str(rwku_dir), selection)


def test_select_targets_handles_numeric_names():
    available = [(21, "50 Cent"), (22, "Jim Morrison")]
    aliases = {21: ["21_50_Cent"], 22: ["22_Jim_Morrison"]}
    assert select_targets(available, ["50 Cent"], aliases) == [21]
    assert select_targets(available, ["50_Cent"], aliases) == [21]
    assert select_targets(available, "21_50_Cent;jim morrison", aliases) == [21, 22]
    assert normalize_name("10_Prince_Harry,_Duke_of_Sussex") == "prince harry, duke of sussex"


def _break(rwku_dir: Path, filename: str, mutate) -> Path:
    path = rwku_dir / "Target" / "1_Stephen_King" / filename
    records = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(mutate(records)), encoding="utf-8")
    return path


def test_malformed_records_name_file_record_and_field(rwku_dir):
    def drop_answer(rs):
        rs.append({k: v for k, v in rs[0].items() if k != "answer"})
        return rs

    path = _break(rwku_dir, "forget_level1.json", drop_answer)
    with pytest.raises(UserError) as e:
        load_benchmark(str(rwku_dir))
    assert str(e.value) == f"{path}, record 2: missing field 'answer'."

    path = _break(rwku_dir, "forget_level1.json", lambda rs: [{**rs[0], "level": 1}])
    with pytest.raises(UserError, match=r"record 1: field 'level' should be a string, got the number 1"):
        load_benchmark(str(rwku_dir))

    _break(rwku_dir, "forget_level1.json", lambda rs: [{**rs[0], "level": "1"}])  # repaired
    assert len(load_benchmark(str(rwku_dir)).targets) == 3
    _break(rwku_dir, "forget_level3.json", lambda rs: [{**rs[0], "type": "jailbreak"}])
    with pytest.raises(UserError, match="field 'type' should be one of RWKU's attack kinds"):
        load_benchmark(str(rwku_dir))


def test_malformed_files(rwku_dir):
    folder = rwku_dir / "Target" / "1_Stephen_King"
    (folder / "forget_mia.json").write_text("[{\"text\": ", encoding="utf-8")
    with pytest.raises(UserError, match=r"forget_mia.json: not valid JSON"):
        load_benchmark(str(rwku_dir))
    _dump(folder / "forget_mia.json", {"text": "not a list"})
    with pytest.raises(UserError, match=r"forget_mia.json: expected a JSON list of records, got an object"):
        load_benchmark(str(rwku_dir))
    _dump(folder / "forget_mia.json", ["just a string"])
    with pytest.raises(UserError, match=r"forget_mia.json, record 1: expected a JSON object, got str"):
        load_benchmark(str(rwku_dir))
    _dump(folder / "forget_mia.json", [])
    (folder / "forget_level2.json").unlink()
    with pytest.raises(UserError, match=r"forget_level2.json: required file not found"):
        load_benchmark(str(rwku_dir))
    # the broken target is not read when it is not selected
    assert [d.target.index for d in load_benchmark(str(rwku_dir), "10").targets] == [10]


def test_bad_specs(tmp_path):
    with pytest.raises(UserError, match="is not world, world:SEED, rwku or an existing folder"):
        load_benchmark(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="not a benchmark folder"):
        load_benchmark(str(tmp_path))
    with pytest.raises(UserError, match="should be an integer"):
        load_benchmark("world:seven")
    with pytest.raises(UserError, match="rwkuplus data rwku"):
        load_benchmark("rwku")


def _all_layout(root: Path, subjects: list[str], with_intro: bool) -> None:
    merged: dict[str, list] = {}
    for s in subjects:
        for filename, records in _probes(s, n=2).items():
            merged.setdefault(filename, []).extend(records)
    for filename, records in merged.items():
        _dump(root / "All" / filename, records)
    if with_intro:
        _dump(root / "All" / "intro.json", [{"target": s, "intro": f"{s}!"} for s in sorted(subjects)])


def test_all_layout_first_appearance_and_intro_order(tmp_path):
    root = tmp_path / "all"
    _all_layout(root, ["Beyoncé", "Stephen King"], with_intro=False)
    b = load_benchmark(str(root))
    assert [(d.target.index, d.name) for d in b.targets] == [(1, "Beyoncé"), (2, "Stephen King")]
    assert b.source["layout"] == "All"
    king = b.target("Stephen King")
    assert len([p for p in king.forget_probes if p.level == "1"]) == 2
    assert [c.text for c in king.counterfactual_corpora["conflicting"]] == [
        "Stephen King was a sailor.", "Stephen King was a baker."]
    assert all(p.subject == "Stephen King" for p in king.forget_probes + king.neighbor_probes)

    _all_layout(root, ["Beyoncé", "Stephen King"], with_intro=True)  # intro.json sorted: Beyoncé, Stephen King
    b = load_benchmark(str(root), ["stephen king"])
    assert [(d.target.index, d.name, d.target.intro) for d in b.targets] == [(2, "Stephen King", "Stephen King!")]


def test_all_layout_needs_subjects(tmp_path):
    root = tmp_path / "all"
    _all_layout(root, ["Stephen King"], with_intro=False)
    path = root / "All" / "forget_mia.json"
    _dump(path, [{"text": "no subject here"}])
    with pytest.raises(UserError, match=r"forget_mia.json, record 1: missing field 'subject'"):
        load_benchmark(str(root))


def test_all_layout_with_rwku_all_intro(tmp_path):
    if not SHARED.exists():
        pytest.skip("../shared/data/rwku is absent")
    root = tmp_path / "all"
    _all_layout(root, ["Beyoncé", "Prince Harry, Duke of Sussex", "Stephen King"], with_intro=False)
    (root / "all_intro.json").symlink_to((SHARED / "all_intro.json").resolve())
    b = load_benchmark(str(root))
    assert [(d.target.index, d.name) for d in b.targets] == [
        (1, "Stephen King"), (10, "Prince Harry, Duke of Sussex"), (24, "Beyoncé")]
    assert [d.name for d in load_benchmark(str(root), "2-24").targets] == ["Prince Harry, Duke of Sussex", "Beyoncé"]


def test_real_all_intro_names_and_order():
    if not SHARED.exists():
        pytest.skip("../shared/data/rwku is absent")
    from rwkuplus.benchmark.rwku import _order_from_all_intro

    order = _order_from_all_intro(SHARED / "all_intro.json")
    assert len(order) == 200 and len(set(order)) == 200
    assert order[0] == "Stephen King" and order[9] == "Prince Harry, Duke of Sussex" and order[23] == "Beyoncé"
    available = list(enumerate(order, 1))
    assert select_targets(available, "1-10")[-1] == 10
    assert select_targets(available, ["Prince Harry, Duke of Sussex", "Sofía Vergara"]) == [10, order.index("Sofía Vergara") + 1]


def test_world_roundtrip_through_files(tmp_path):
    world = W.generate_world(W.WorldConfig(seed=11, n_targets=2, n_retained=3, n_nonexistent_train=3,
                                           n_nonexistent_eval=2))
    out = W.write_world(world, tmp_path / "w")
    b = load_benchmark(str(out))
    assert b.name == "world" and b.source["kind"] == "world" and b.source["world_config"]["seed"] == 11
    for i, (person, data) in enumerate(zip(world.targets, b.targets), 1):
        expected = W.target_data(world, person, i)
        assert data.target == expected.target
        for field in ("forget_probes", "neighbor_probes", "forget_mia", "retain_mia", "factual_corpus",
                      "preference_pairs", "refusal_pairs"):
            assert getattr(data, field) == getattr(expected, field), field
        assert data.counterfactual_corpora == expected.counterfactual_corpora
    assert b.retain_corpus == W.retain_corpus(world)
    assert b.hallucination_probes == W.hallucination_probes(world)
    assert b.corpus_stats == json.loads(json.dumps(W.corpus_stats(world)))
    assert W.load_world(out).to_json() == world.to_json()
    # retain text for unlearning the first target: the retained people's texts, never a target's
    texts = retain_texts(b, [world.targets[0].name])
    assert texts == b.retain_corpus and all(t.subject in {p.name for p in world.retained} for t in texts)


def test_retain_texts_fallback_for_rwku(rwku_dir):
    b = load_benchmark(str(rwku_dir))
    texts = retain_texts(b, ["Stephen King"])
    assert [t.subject for t in texts] == ["Prince Harry, Duke of Sussex", "Beyoncé"]
    assert retain_texts(b, [d.name for d in b.targets]) == []


def test_default_world_specs(monkeypatch):
    small = {"n_targets": 1, "n_retained": 2, "n_nonexistent_train": 2, "n_nonexistent_eval": 1}
    original = W.WorldConfig
    monkeypatch.setattr(W, "WorldConfig", lambda seed=0, **kw: original(seed=seed, **{**small, **kw}))
    b = load_benchmark("world:5")
    assert b.source["world_config"]["seed"] == 5 and len(b.targets) == 1
    assert load_benchmark("world").source["world_config"]["seed"] == 0


def test_cli_stats(rwku_dir, capsys):
    assert main(["data", "stats", "--benchmark", f"rwku:{rwku_dir}", "--targets", "Beyoncé", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["targets"]) == ["Beyoncé"]
    s = out["targets"]["Beyoncé"]
    assert s["forget"] == {"FB": 1, "QA": 1, "AA": 5} and s["counterfactual_conflicting"] == 2
    assert s["attacks"]["cross-lingual"] == 1 and out["source"]["revision"] == "f" * 40
    assert main(["data", "stats", "--benchmark", f"rwku:{rwku_dir}"]) == 0
    assert "Prince Harry, Duke of Sussex" in capsys.readouterr().out
