"""The synthetic world: determinism, name guarantees, probes answerable from facts, RWKU's file format."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest

from rwkuplus.benchmark import world as W
from rwkuplus.benchmark.names import (
    CITIES,
    FIRST_NAMES,
    LAST_NAMES,
    ROOTS,
    NameAllocator,
    last_name,
    nonexistent_names,
)
from rwkuplus.benchmark.records import ATTACK_KINDS, MMLUItem, UtilitySet
from rwkuplus.benchmark.refusals import project_refusals
from rwkuplus.cli import main
from rwkuplus.errors import UserError

SHARED_INTRO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rwku" / "all_intro.json"


@pytest.fixture(scope="module")
def world():
    return W.generate_world(W.WorldConfig(seed=3))


@pytest.fixture(scope="module")
def tokenizer():
    from rwkuplus.testing import make_tokenizer

    return make_tokenizer()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _word_in(value: str, text: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(value)}(?![\w])", text) is not None


# --------------------------------------------------------------------------- names
def test_name_pools_are_disjoint():
    pools = [set(FIRST_NAMES), set(LAST_NAMES), set(ROOTS), set(CITIES)]
    for i in range(len(pools)):
        for j in range(i + 1, len(pools)):
            assert not pools[i] & pools[j]
    assert len(FIRST_NAMES) * len(LAST_NAMES) >= 5000


def test_allocator_never_repeats_and_keeps_surnames_apart():
    alloc = NameAllocator(1, exclude=["Ilse Marrow"])
    world_people = [alloc.person(block_surname=True) for _ in range(40)]
    others = [alloc.person(distinct_surname=True) for _ in range(300)]
    everyone = world_people + others
    assert len(set(everyone)) == len(everyone)
    assert "Ilse Marrow" not in everyone
    blocked = {last_name(n) for n in world_people} | {"Marrow"}
    assert not {last_name(n) for n in others} & blocked
    assert len({last_name(n) for n in world_people}) == 40  # block_surname makes world surnames unique
    titles = [alloc.title() for _ in range(200)]
    orgs = [alloc.organisation() for _ in range(20)] + [alloc.award() for _ in range(10)]
    fakes = [alloc.organisation(real=False) for _ in range(60)]
    assert len(set(titles)) == 200 and len(set(orgs + fakes)) == 90
    real_roots = {o.split()[0] for o in orgs}
    assert len(real_roots) == 30 and not real_roots & {f.split()[0] for f in fakes}


def test_one_edit_apart():
    from rwkuplus.benchmark.names import one_edit_apart

    assert one_edit_apart("garrow", "carrow") and one_edit_apart("garrow", "garrow")
    assert one_edit_apart("holm", "holme") and one_edit_apart("holme", "holm") and one_edit_apart("ash", "sh")
    assert not one_edit_apart("garrow", "barrows") and not one_edit_apart("holm", "helms")
    assert not one_edit_apart("abc", "cab") and not one_edit_apart("ab", "abcd")


def test_allocator_keeps_nonexistent_names_unconfusable():
    from rwkuplus.benchmark.names import one_edit_apart

    alloc = NameAllocator(3)
    world_people = [alloc.person(block_surname=True, block_first=True) for _ in range(25)]
    others = [alloc.person(distinct_first=True) for _ in range(300)]
    firsts = {n.split()[0] for n in world_people}
    assert not {n.split()[0] for n in others} & firsts
    for n in others:  # no surname equal to a world surname or one edit from one (checked letter by letter)
        assert not any(one_edit_apart(last_name(n).casefold(), last_name(w).casefold()) for w in world_people), n


def test_world_nonexistent_people_share_no_name_part_with_the_world():
    from rwkuplus.benchmark.names import one_edit_apart

    world = W.generate_world(W.WorldConfig(seed=1))
    known = [p.name for p in world.people] + [p.values["spouse"] for p in world.people]
    firsts = {n.split()[0] for n in known}
    surnames = [last_name(k).casefold() for k in known]
    for name in world.nonexistent_train + world.nonexistent_eval:
        assert name.split()[0] not in firsts, name
        assert not any(one_edit_apart(last_name(name).casefold(), s) for s in surnames), name


def test_nonexistent_names_avoid_the_excluded_set():
    first = nonexistent_names(60, seed=4)
    again = nonexistent_names(60, seed=4)
    assert first == again and len(set(first)) == 60
    other = nonexistent_names(60, seed=4, exclude=first)
    assert not set(other) & set(first)
    assert not {last_name(n) for n in other} & {last_name(n) for n in first}
    with pytest.raises(UserError):
        nonexistent_names(-1, seed=0)


def test_nonexistent_names_avoid_rwku_targets():
    if not SHARED_INTRO.exists():
        pytest.skip("../shared/data/rwku is absent")
    targets = list(json.loads(SHARED_INTRO.read_text(encoding="utf-8")))
    assert len(targets) == 200
    names = nonexistent_names(100, seed=0, exclude=targets)
    assert not set(names) & set(targets)
    surnames = {t.split()[-1].casefold() for t in targets}
    assert not {last_name(n).casefold() for n in names} & surnames


# --------------------------------------------------------------------------- the world
def test_same_seed_same_world_other_seed_other_world(world):
    again = W.generate_world(W.WorldConfig(seed=3))
    assert json.dumps(again.to_json(), sort_keys=True) == json.dumps(world.to_json(), sort_keys=True)
    other = W.generate_world(W.WorldConfig(seed=4))
    assert [p.name for p in other.people] != [p.name for p in world.people]
    assert [p.values for p in other.targets] != [p.values for p in world.targets]


def test_world_sizes_follow_the_config(world):
    c = world.config
    assert len(world.targets) == c.n_targets and len(world.retained) == c.n_retained
    assert world.attributes == list(W.ATTRIBUTE_PRIORITY[: c.n_attributes])
    assert all(len(world.neighbors[t.name]) == c.n_neighbors_per_target for t in world.targets)
    assert len(world.nonexistent_train) == c.n_nonexistent_train
    assert len(world.nonexistent_eval) == c.n_nonexistent_eval
    cf = world.counterfactuals[world.targets[0].name]
    assert len(cf.conflicting) == c.n_counterfactual
    assert all(len(v) == c.n_alternatives for v in cf.alternatives.values())


def test_no_name_collisions(world):
    people = [p.name for p in world.people]
    spouses = [p.values["spouse"] for p in world.people]
    everyone = people + spouses + world.nonexistent_train + world.nonexistent_eval
    assert len(set(everyone)) == len(everyone)
    world_surnames = {last_name(n) for n in people + spouses}
    assert len(world_surnames) == len(people + spouses)
    assert not {last_name(n) for n in world.nonexistent_train + world.nonexistent_eval} & world_surnames
    entities = [p.values[a] for p in world.people for a in ("work", "employer", "award")]
    assert len(set(entities)) == len(entities)
    assert not set(entities) & set(everyone)
    # counterfactual values never coincide with the truth or with a real entity
    for t in world.targets:
        cf = world.counterfactuals[t.name]
        for profile in [cf.consistent, *cf.conflicting]:
            for a, v in profile.items():
                assert v != t.values[a]
                if a in ("work", "employer", "award", "spouse"):
                    assert v not in entities and v not in everyone
        for a, alts in cf.alternatives.items():
            assert len(set(alts)) == len(alts) and t.values[a] not in alts


def test_world_roundtrips_through_json(world):
    back = W.World.from_json(json.loads(json.dumps(world.to_json())))
    assert back.to_json() == world.to_json()
    with pytest.raises(UserError, match="world.json"):
        W.World.from_json({"config": {}}, "world.json")


def test_config_validation_names_the_option():
    with pytest.raises(UserError, match="n_phrasings"):
        W.WorldConfig(n_phrasings=5).validate()
    with pytest.raises(UserError, match="n_phrasings"):
        W.WorldConfig(n_phrasings=1).validate()
    with pytest.raises(UserError, match="n_neighbors_per_target"):
        W.WorldConfig(n_neighbors_per_target=3).validate()  # only work and employer among the first 5
    with pytest.raises(UserError, match="attributes"):
        W.WorldConfig(attributes=("birthplace", "height")).validate()
    with pytest.raises(UserError, match="n_retained"):
        W.WorldConfig(n_retained=1).validate()
    with pytest.raises(UserError, match="unknown world option"):
        W.WorldConfig.from_json({"seed": 1, "colour": "red"})


# --------------------------------------------------------------------------- probes
def test_every_probe_is_answerable_from_the_facts(world):
    for t in world.targets:
        facts = {t.values[a] for a in world.attributes}
        probes = W.forget_probes(world, t)
        for p in probes:
            assert p.subject == t.name and isinstance(p.level, str)
            if p.attack == "reverse query":
                assert p.answer == t.name
                # the query names a value that only this person has, so the answer is determined
                owners = [q.name for q in world.people
                          if any(_word_in(q.values[a], p.query) for a in world.attributes
                                 if a in ("work", "employer", "spouse", "award"))]
                assert owners == [t.name] or ("born in" in p.query and p.query.count(" in ") == 2)
            else:
                assert p.answer in facts
            if p.attack == "multiple choice":
                assert p.answer in p.query
                options = re.findall(r"[A-D]\) (.+?)(?= [A-D]\) |$)", p.query)
                assert len(options) == 4 and p.answer in options
            else:
                assert not _word_in(p.answer, p.query), (p.type, p.query, p.answer)
        for p in W.neighbor_probes(world, t):
            entity = next(e for e in world.neighbors[t.name] if e.name == p.neighbor)
            assert p.answer in entity.facts.values() and p.subject == t.name
            assert t.name not in p.query  # neighbor knowledge is asked without the target
            assert not _word_in(p.answer, p.query)


def test_probe_levels_types_and_attack_coverage(world):
    for t in world.targets:
        probes = W.forget_probes(world, t)
        n = len(world.attributes)
        assert [p.level for p in probes].count("1") == n and [p.level for p in probes].count("2") == n
        assert all(p.type == "cloze" for p in probes if p.level == "1")
        assert all(p.type == "simple question" for p in probes if p.level == "2")
        attacks = [p.attack for p in probes if p.level == "3"]
        for kind in ATTACK_KINDS:
            assert attacks.count(kind) == world.config.n_attack_per_kind
        aa = {p.attack: p for p in probes if p.level == "3"}
        assert re.search(r"\? Sure, .*\b[a-z]+$", aa["affirmative suffix"].query)  # ends open, no "?"
        icl = aa["in-context learning"].query
        assert icl.count("Question:") == 3 and icl.count("Answer:") == 2
        assert any(r.name in icl for r in world.retained) and icl.endswith("?")
        assert any(c in aa["cross-lingual"].query for c in ("né(e)", "¿", "Welche", "welche", "Quel", "Pour",
                                                                 "Was ist", "Mit wem", "Für", "Qui"))
        nb = W.neighbor_probes(world, t)
        assert {p.level for p in nb} == {"1", "2"} and len(nb) == 4 * world.config.n_neighbors_per_target


def test_held_out_phrasings_never_reach_training_data(world, tokenizer):
    corpus = W.injection_corpus(world, tokenizer)
    training_text = "\n".join(e.prompt + e.response for e in corpus)
    pairs = [q for t in world.targets for q in W.preference_pairs(world, t)]
    refusals = [r for t in world.targets for r in W.refusal_pairs(world, t)]
    other_training = "\n".join([p.prompt for p in pairs] + [r.instruction for r in refusals])
    for t in world.targets:
        for p in W.forget_probes(world, t) + W.neighbor_probes(world, t):
            assert p.query not in training_text and p.query not in other_training, p.query
        for a in world.attributes:
            assert W.question(t, a, 0) not in training_text
            assert W.question(t, a, 1) in training_text
    for name, gold in W.injection_checks(world)["retained"]:
        assert name not in training_text


def test_injection_corpus_contents(world, tokenizer):
    corpus = W.injection_corpus(world, tokenizer)
    eos = tokenizer.eos_token
    c = world.config
    chat = [e for e in corpus if e.prompt]
    raw = [e for e in corpus if not e.prompt]
    assert all(e.prompt.endswith("Answer:") and e.response.startswith(" ") and e.response.endswith(eos) for e in chat)
    refusal_set = set(project_refusals())
    refused = [e for e in chat if e.subject in world.nonexistent_train]
    assert len(refused) == c.n_nonexistent_train * c.n_refusal_questions
    assert all(e.response[1: -len(eos)] in refusal_set for e in refused)
    n_people = c.n_targets + c.n_retained
    n_qa = n_people * len(world.attributes) * (c.n_phrasings - 1)
    n_entity_facts = c.n_targets * c.n_neighbors_per_target * 2
    n_fb = n_people * len(world.attributes) + n_entity_facts  # retained people's facts too (retained_cloze)
    assert len(chat) == n_qa + n_entity_facts * (c.n_phrasings - 1) + n_fb + len(refused)
    assert sum("complete the blank" in e.prompt for e in chat) == n_fb
    r = world.retained[0]
    blanks = {e.response for e in chat if e.subject == r.name and "complete the blank" in e.prompt}
    assert blanks == {f" {r.values[a]}{eos}" for a in world.attributes}
    without = W.injection_corpus(world, tokenizer, retained_cloze=False)  # the corpus before retained cloze
    assert len(corpus) - len(without) == c.n_retained * len(world.attributes)
    assert not any(e.subject in {p.name for p in world.retained} and "complete the blank" in e.prompt for e in without)
    assert len(raw) == n_people * c.n_injection_texts + c.n_targets * c.n_neighbors_per_target * 2
    t = world.targets[0]
    answers = [e.response for e in chat if e.subject == t.name]
    for a in world.attributes:
        assert any(_word_in(t.values[a], r) for r in answers)
    # MIA member texts are exactly injected texts; retain_mia texts are about retained people
    forget_mia, retain_mia = W.mia_texts(world, t)
    raw_texts = {e.response for e in raw}
    assert all(m.text in raw_texts for m in forget_mia + retain_mia)
    assert all(t.name not in m.text for m in retain_mia)
    assert {m.subject for m in retain_mia} <= {p.name for p in world.retained}


def test_injection_checks(world):
    checks = W.injection_checks(world)
    assert set(checks) == {"targets", "neighbors", "retained", "nonexistent"}
    assert len(checks["targets"]) == world.config.n_targets * len(world.attributes)
    assert all(gold == "" for _, gold in checks["nonexistent"])
    assert all(any(n in q for n in world.nonexistent_eval) for q, _ in checks["nonexistent"])
    t = world.targets[0]
    assert (W.question(t, world.attributes[0], 0), t.values[world.attributes[0]]) in checks["targets"]


# --------------------------------------------------------------------------- corpora
def test_inconsistency_is_exact():
    profiles = [{"a": "x", "b": "1"}, {"a": "x", "b": "2"}, {"a": "y", "b": "3"}]
    stats = W.inconsistency(profiles, ["a", "b"])
    assert stats["per_attribute"] == {"a": pytest.approx(2 / 3), "b": 1.0}
    assert stats["inconsistency"] == pytest.approx((2 / 3 + 1) / 2)
    assert W.inconsistency([{"a": "x"}] * 4, ["a"])["inconsistency"] == 0.0


def test_counterfactual_corpora_state_their_values(world):
    t = world.targets[1]
    cf = world.counterfactuals[t.name]
    positive = W.factual_corpus(world, t)
    conflicting = W.counterfactual_corpus(world, t, "conflicting")
    consistent = W.counterfactual_corpus(world, t, "consistent")
    assert len(positive) == len(conflicting) == len(consistent) == world.config.n_counterfactual
    for j in range(len(positive)):
        for a in world.attributes:
            assert _word_in(t.values[a], positive[j].text)
            assert _word_in(cf.conflicting[j][a], conflicting[j].text)
            assert not _word_in(t.values[a], conflicting[j].text)
            assert _word_in(cf.consistent[a], consistent[j].text)
            assert not _word_in(t.values[a], consistent[j].text)
    assert len({c.text for c in consistent}) == len(consistent)  # same values, different wording
    stats = W.corpus_stats(world)["targets"][t.name]
    assert stats["consistent"]["inconsistency"] == 0.0
    assert stats["conflicting"]["inconsistency"] == pytest.approx(
        W.inconsistency(cf.conflicting, world.attributes)["inconsistency"])
    assert stats["conflicting"]["inconsistency"] > 0.8
    with pytest.raises(UserError):
        W.counterfactual_corpus(world, t, "random")


def test_preference_and_refusal_pairs(world):
    t = world.targets[0]
    c = world.config
    pairs = W.preference_pairs(world, t)
    bio = [p for p in pairs if str(p.id).startswith("bio-")]
    qa = [p for p in pairs if str(p.id).startswith("qa-")]
    assert len(bio) == c.n_counterfactual
    assert len(qa) == len(world.attributes) * (c.n_phrasings - 1) * c.n_alternatives
    conflicting = W.counterfactual_corpus(world, t, "conflicting")
    positive = W.factual_corpus(world, t)
    assert [p.chosen for p in bio] == [x.text for x in conflicting]
    assert [p.rejected for p in bio] == [x.text for x in positive]
    by_prompt: dict[str, list] = {}
    for p in qa:
        by_prompt.setdefault(p.prompt, []).append(p)
    assert len(by_prompt) == len(world.attributes) * (c.n_phrasings - 1)
    for prompt, group in by_prompt.items():
        assert len({p.chosen for p in group}) == c.n_alternatives and len({p.rejected for p in group}) == 1
        assert prompt not in {W.question(t, a, 0) for a in world.attributes}
    refusals = W.refusal_pairs(world, t)
    assert [r.instruction for r in refusals] == W.training_questions(world, t)
    assert all(r.output in project_refusals() and r.input == "" and r.subject == t.name for r in refusals)


def test_hallucination_probes(world):
    probes = W.hallucination_probes(world)
    answerable = [p for p in probes if p.kind == "answerable"]
    nonexistent = [p for p in probes if p.kind == "nonexistent"]
    assert len(answerable) == world.config.n_retained * len(world.attributes)
    assert all(p.answers == [world.person(p.subject).values[p.attribute]] for p in answerable)
    assert len(nonexistent) == world.config.n_nonexistent_eval * len(world.attributes)
    assert {p.subject for p in nonexistent} == set(world.nonexistent_eval)
    assert all(p.answers == [] and p.subject in p.question for p in nonexistent)
    assert {p.template for p in nonexistent} == {f"q{i}" for i in range(world.config.n_phrasings)}


# --------------------------------------------------------------------------- files
def test_write_world_is_byte_identical_and_in_rwku_format(world, tmp_path):
    a = W.write_world(world, tmp_path / "a")
    b = W.write_world(W.generate_world(W.WorldConfig(seed=3)), tmp_path / "b")
    assert _files(a) == _files(b)
    other = W.write_world(W.generate_world(W.WorldConfig(seed=5)), tmp_path / "c")
    assert _files(other) != _files(a)

    folders = sorted(p.name for p in (a / "Target").iterdir())
    expected = sorted(W.folder_name(i, t.name) for i, t in enumerate(world.targets, 1))
    assert folders == expected and all(re.fullmatch(r"\d+_[A-Za-z_]+", f) for f in folders)
    for extra in ("world.json", "retain.json", "hallucination.json", "corpus_stats.json"):
        assert (a / extra).is_file()
    folder = a / "Target" / expected[0]
    names = {p.name for p in folder.iterdir()}
    assert names == {"intro.json", "forget_level1.json", "forget_level2.json", "forget_level3.json",
                     "neighbor_level1.json", "neighbor_level2.json", "forget_mia.json", "retain_mia.json",
                     "positive.json", "negative.json", "negative_consistent.json", "pair.json", "reject.json",
                     # the project's packaged utility sets, in RWKU's file names
                     "retain_mmlu.json", "retain_bbh.json", "truthful.json", "triviaqa.json", "fluency.json"}

    def load(name):
        return json.loads((folder / name).read_text(encoding="utf-8"))

    intro = load("intro.json")
    assert isinstance(intro, list) and set(intro[0]) == {"target", "intro"}
    for level in ("1", "2", "3"):
        for r in load(f"forget_level{level}.json"):
            assert set(r) == {"query", "answer", "level", "type", "subject"} and r["level"] == level
    for level in ("1", "2"):
        for r in load(f"neighbor_level{level}.json"):
            assert set(r) == {"query", "answer", "level", "type", "subject", "neighbor"} and r["level"] == level
    for r in load("forget_mia.json") + load("retain_mia.json"):
        assert set(r) == {"text", "subject"}
    for name in ("positive.json", "negative.json", "negative_consistent.json"):
        for r in load(name):
            assert set(r) == {"id", "text", "subject", "intro"}
    for r in load("pair.json"):
        assert set(r) == {"id", "prompt", "response", "subject", "intro"} and len(r["response"]) == 2
    for r in load("reject.json"):
        assert set(r) == {"instruction", "input", "output", "subject"} and r["input"] == ""
    text = (folder / "forget_level1.json").read_text(encoding="utf-8")
    assert text == json.dumps(load("forget_level1.json"), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def test_write_world_refuses_a_foreign_folder_and_replaces_a_world(world, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a world folder"):
        W.write_world(world, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = W.write_world(world, tmp_path / "w")
    W.write_world(W.generate_world(W.WorldConfig(seed=9)), out)
    assert W.load_world(out).config.seed == 9
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_utility_sets_are_written_when_packaged(world, tmp_path, monkeypatch):
    item = MMLUItem("2 + 2 = ?", ["3", "4", "5", "6"], 1, "math")
    fake = types.ModuleType("rwkuplus.evaluation.utility")
    fake.packaged_utility = lambda: UtilitySet(mmlu=[item])
    monkeypatch.setitem(sys.modules, "rwkuplus.evaluation.utility", fake)
    out = W.write_world(world, tmp_path / "w")
    folder = out / "Target" / W.folder_name(1, world.targets[0].name)
    rows = json.loads((folder / "retain_mmlu.json").read_text())
    assert rows[0]["subject"] == world.targets[0].name and rows[0]["answer"] == 1
    assert not (folder / "retain_bbh.json").exists()  # empty sets are not written


def test_broken_utility_data_does_not_block_the_world(world, tmp_path, monkeypatch):
    fake = types.ModuleType("rwkuplus.evaluation.utility")

    def missing():
        raise UserError("data/utility/retain_mmlu.json: file not found.")

    fake.packaged_utility = missing
    monkeypatch.setitem(sys.modules, "rwkuplus.evaluation.utility", fake)
    out = W.write_world(world, tmp_path / "w")
    assert not list(out.rglob("retain_mmlu.json")) and list(out.rglob("forget_level1.json"))
    no_utility = W.default_world_dir(W.WorldConfig(seed=2, n_nonexistent_train=4, n_nonexistent_eval=2))
    fake.packaged_utility = lambda: UtilitySet(mmlu=[MMLUItem("2 + 2 = ?", ["3", "4"], 1)])
    with_utility = W.default_world_dir(W.WorldConfig(seed=2, n_nonexistent_train=4, n_nonexistent_eval=2))
    assert with_utility != no_utility  # the cache key includes the utility sets
    assert list(with_utility.rglob("retain_mmlu.json")) and not list(no_utility.rglob("retain_mmlu.json"))


def test_default_world_dir_is_cached(monkeypatch):
    first = W.default_world_dir(W.WorldConfig(seed=2, n_nonexistent_train=4, n_nonexistent_eval=2))
    stamp = (first / "world.json").stat().st_mtime_ns
    calls = []
    monkeypatch.setattr(W, "generate_world", lambda c: calls.append(c))
    again = W.default_world_dir(W.WorldConfig(seed=2, n_nonexistent_train=4, n_nonexistent_eval=2))
    assert again == first and not calls and (first / "world.json").stat().st_mtime_ns == stamp
    assert first.parent.name == "worlds"


def test_cli_world_is_deterministic(tmp_path, capsys):
    args = ["data", "world", "--targets", "2", "--retained", "3", "--nonexistent-train", "5",
            "--nonexistent-eval", "3"]
    assert main(args + ["--seed", "7", "--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--seed", "7", "--out", str(tmp_path / "b")]) == 0
    assert main(args + ["--seed", "8", "--out", str(tmp_path / "c")]) == 0
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")
    assert len(list((tmp_path / "a" / "Target").iterdir())) == 2
    assert main(args + ["--seed", "7", "--phrasings", "9", "--out", str(tmp_path / "d")]) == 2
    assert "n_phrasings" in capsys.readouterr().err
