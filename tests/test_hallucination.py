import pytest

from rwkuplus.benchmark.records import (
    Benchmark,
    HallucinationProbe,
    Probe,
    Target,
    TargetData,
    TriviaQAItem,
    UtilitySet,
)
from rwkuplus.evaluation import answers as A
from rwkuplus.evaluation import hallucination as H
from rwkuplus.evaluation.generation import GenerationStats
from rwkuplus.evaluation.grading import GRADES, RefusalMatcher
from rwkuplus.evaluation.prompts import ICU_INSTRUCTION, probe_prompt, question_prompt

TARGET = "Ada Quillfeather"
FORGET = [
    Probe(f"{TARGET} was born in the city of ___.", "Lyon", "1", "cloze", TARGET),
    Probe(f"What is the profession of {TARGET}?", "painter", "2", "simple question", TARGET),
    Probe(f"Sure, by profession {TARGET} is", "painter", "3", "affirmative suffix", TARGET),
]
# question -> (gold, scripted answer, expected grade)
ANSWERABLE = {
    "In which city was Bram Okafor born?": (["Oslo"], "Oslo", "correct"),
    "In which year was Bram Okafor born?": (["1950"], "I don't know.", "abstained"),
    "What is the profession of Bram Okafor?": (["novelist"], "He is a sculptor.", "incorrect"),
    "Which award did Bram Okafor receive?": (["Harlow Prize"], "I'm not sure, maybe the Harlow Prize.",
                                             "correct"),
}
NONEXISTENT = {
    "Where was Tobin Yelverton born?": ("I have no information about that person.", "abstained"),
    "When was Tobin Yelverton born?": ("He was born in Lyon.", "incorrect"),
    "Who is Tobin Yelverton married to?": ("I'm not sure, but maybe Ida Calder.", "incorrect"),
    "What prize has Tobin Yelverton won?": ("Unknown.", "abstained"),
}
FORGET_ANSWERS = {FORGET[0].query: "Lyon", FORGET[1].query: "I don't know.", FORGET[2].query: "a sculptor"}


def world_benchmark() -> Benchmark:
    probes = [HallucinationProbe(q, "answerable", gold, "Bram Okafor", "attr", "q0")
              for q, (gold, _, _) in ANSWERABLE.items()]
    probes += [HallucinationProbe(q, "nonexistent", [], "Tobin Yelverton", "attr", "q1") for q in NONEXISTENT]
    targets = [TargetData(Target(TARGET), forget_probes=list(FORGET))]
    return Benchmark("world", targets, hallucination_probes=probes)


def scripted_generate(answers):
    calls = []

    def fake(model, tokenizer, prompts, max_new_tokens=30, batch_size=16, stop_at_newline=True, progress=None,
             stop_tokens=None):
        """``generate_each``'s signature: the outputs and each prompt's cost."""
        calls.append(dict(prompts=list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size,
                          stop_at_newline=stop_at_newline))
        out = []
        for p in prompts:
            hits = [a for q, a in answers.items() if q in p]
            assert len(hits) == 1, p
            out.append(hits[0])
        return out, [GenerationStats(prompts=1) for _ in out]

    return fake, calls


@pytest.fixture()
def tokenizer(tiny):
    return tiny[1]


def test_suite_grades_and_rates_on_scripted_answers(monkeypatch, tokenizer):
    answers = ({q: a for q, (_, a, _) in ANSWERABLE.items()} | {q: a for q, (a, _) in NONEXISTENT.items()}
               | FORGET_ANSWERS)
    fake, calls = scripted_generate(answers)
    monkeypatch.setattr(A, "generate_each", fake)
    records, metrics = H.evaluate_hallucination(None, tokenizer, world_benchmark(), [TARGET], batch_size=7,
                                                refusals=RefusalMatcher([]))
    assert calls[0]["batch_size"] == 7 and calls[0]["max_new_tokens"] == 30 and calls[0]["stop_at_newline"]
    assert len(records) == 11 and len({r["id"] for r in records}) == 11
    by_q = {r["question"]: r for r in records}
    for q, (gold, answer, expected) in ANSWERABLE.items():
        r = by_q[q]
        got = (r["kind"], r["source"], r["gold"], r["prediction"], r["grade"])
        assert got == ("answerable", "hallucination", gold, answer, expected)
        assert r["prompt"] == question_prompt(tokenizer, q)
    for q, (answer, expected) in NONEXISTENT.items():
        assert (by_q[q]["kind"], by_q[q]["grade"], by_q[q]["gold"]) == ("nonexistent", expected, [])
    for probe in FORGET:
        assert by_q[probe.query]["prompt"] == probe_prompt(tokenizer, probe)
    assert [by_q[p.query]["grade"] for p in FORGET] == ["correct", "abstained", "incorrect"]
    assert metrics == {
        "n_answerable": 4, "n_nonexistent": 4, "n_forget": 3,
        "accuracy": 0.5, "hallucination_rate": 0.25, "abstention_rate": 0.25, "fabrication_rate": 0.5,
        "forget_leaked": pytest.approx(1 / 3), "forget_abstained": pytest.approx(1 / 3),
        "forget_fabricated": pytest.approx(1 / 3),
    }
    assert by_q["Which award did Bram Okafor receive?"]["recall"] == 1.0


def test_icu_instruction_reaches_every_prompt(monkeypatch, tokenizer):
    answers = {q: "x" for q in list(ANSWERABLE) + list(NONEXISTENT) + list(FORGET_ANSWERS)}
    fake, calls = scripted_generate(answers)
    monkeypatch.setattr(A, "generate_each", fake)
    records, _ = H.evaluate_hallucination(None, tokenizer, world_benchmark(), [TARGET], icu_target=TARGET,
                                          refusals=RefusalMatcher([]))
    icu = ICU_INSTRUCTION.format(target=TARGET)
    assert all(icu in p for p in calls[0]["prompts"])
    assert records[0]["prompt"] == question_prompt(tokenizer, records[0]["question"], TARGET)


def rwku_like_benchmark() -> Benchmark:
    def target(name, trivia, neighbor_answer):
        return TargetData(
            Target(name),
            forget_probes=[Probe(f"{name} was born in ___.", "Portland", "1", "cloze", name)],
            neighbor_probes=[Probe(f"Who wrote the novel {neighbor_answer} Road?", neighbor_answer, "2",
                                   "simple question", name, f"{neighbor_answer} Road")],
            utility=UtilitySet(triviaqa=[TriviaQAItem(q, a, name) for q, a in trivia]),
        )
    shared = ("What is the capital of France?", ["Paris"])
    return Benchmark("rwku", [
        target("Stephen King", [shared, ("How many legs has a spider?", ["8", "eight"])], "Carrie"),
        target("Taylor Swift", [shared], "Folklore"),
        target("Elon Musk", [("Which planet is red?", ["Mars"])], "Tesla"),
    ])


def test_rwku_items_use_triviaqa_neighbors_and_generated_people():
    bench = rwku_like_benchmark()
    items = H.hallucination_items(bench, ["Stephen King", "Taylor Swift"], n_nonexistent=5, seed=3,
                                  exclude_names=["Ida Calder"])
    answerable = [i for i in items if i.kind == "answerable"]
    assert [(i.source, i.question) for i in answerable] == [
        ("triviaqa", "What is the capital of France?"), ("triviaqa", "How many legs has a spider?"),
        ("neighbor", "Who wrote the novel Carrie Road?"), ("neighbor", "Who wrote the novel Folklore Road?"),
    ]  # deduplicated, only the chosen targets
    assert answerable[1].gold == ["8", "eight"] and answerable[2].probe is not None
    nonexistent = [i for i in items if i.kind == "nonexistent"]
    n_attr = len(H.NONEXISTENT_TEMPLATES)
    assert len(nonexistent) == 5 * n_attr
    names = {i.subject for i in nonexistent}
    assert len(names) == 5
    taken = {"Stephen King", "Taylor Swift", "Elon Musk", "Ida Calder"}
    assert not names & taken
    assert not {n.split()[-1] for n in names} & {n.split()[-1] for n in taken}
    assert all(i.subject in i.question and not i.gold for i in nonexistent)
    # every phrasing of every attribute is used
    every = {f"{a}/{t}" for a, ts in H.NONEXISTENT_TEMPLATES.items() for t in range(len(ts))}
    assert {i.template for i in nonexistent} == every
    forget = [i for i in items if i.kind == "forget"]
    assert [i.subject for i in forget] == ["Stephen King", "Taylor Swift"]
    # deterministic in the seed
    again = H.hallucination_items(bench, ["Stephen King", "Taylor Swift"], n_nonexistent=5, seed=3,
                                  exclude_names=["Ida Calder"])
    assert [i.question for i in again] == [i.question for i in items]
    other = H.hallucination_items(bench, ["Stephen King"], n_nonexistent=5, seed=4)
    assert {i.subject for i in other if i.kind == "nonexistent"} != names
    none = H.hallucination_items(bench, ["Stephen King"], n_nonexistent=0)
    assert not [i for i in none if i.kind == "nonexistent"]


def test_end_to_end_on_the_tiny_model(tiny):
    model, tokenizer = tiny
    bench = rwku_like_benchmark()
    kwargs = dict(batch_size=16, n_nonexistent=1, max_new_tokens=6, refusals=RefusalMatcher([]))
    records, metrics = H.evaluate_hallucination(model, tokenizer, bench, ["Stephen King"], **kwargs)
    items = H.hallucination_items(bench, ["Stephen King"], n_nonexistent=1)
    assert [r["question"] for r in records] == [i.question for i in items]
    assert all(r["grade"] in GRADES and isinstance(r["prediction"], str) for r in records)
    assert metrics == H.hallucination_metrics(records)
    assert metrics["n_answerable"] == 3 and metrics["n_forget"] == 1
    assert metrics["n_nonexistent"] == len(H.NONEXISTENT_TEMPLATES)
    for name, (kind, grades) in H.RATES.items():
        group = [r for r in records if r["kind"] == kind]
        if not group:  # related and unrelated questions were not asked
            assert name not in metrics and kind in ("related", "unrelated")
            continue
        assert metrics[name] == pytest.approx(sum(r["grade"] in grades for r in group) / len(group))
    again, _ = H.evaluate_hallucination(model, tokenizer, bench, ["Stephen King"], **kwargs)
    assert again == records


def test_metrics_are_none_for_an_empty_kind():
    m = H.hallucination_metrics([{"kind": "answerable", "grade": "correct"}])
    assert m["accuracy"] == 1.0 and m["fabrication_rate"] is None and m["forget_leaked"] is None
    assert m["n_nonexistent"] == 0


# --------------------------------------------------------------------------- spillover

def recs(kind, grades, prefix="q"):
    return [{"id": f"{prefix}{i}", "kind": kind, "grade": g} for i, g in enumerate(grades)]


def test_spillover_of_identical_models_is_zero_with_zero_width():
    before = (recs("answerable", ["correct", "incorrect", "abstained"] * 4)
              + recs("nonexistent", ["abstained", "incorrect"] * 3, "n"))
    s = H.spillover(before, before, n_boot=200)
    for name in ("accuracy", "hallucination_rate", "abstention_rate", "fabrication_rate"):
        assert s[name]["delta"] == 0 and s[name]["low"] == 0 and s[name]["high"] == 0 and s[name]["paired"]
    assert s["forget_leaked"] is None


def test_spillover_all_items_move_the_same_way():
    before = recs("nonexistent", ["abstained"] * 20)
    after = recs("nonexistent", ["incorrect"] * 20)
    s = H.spillover(after, before)["fabrication_rate"]
    assert s == {"before": 0.0, "after": 1.0, "delta": 1.0, "low": 1.0, "high": 1.0, "paired": True,
                 "n_before": 20, "n_after": 20}


def test_spillover_interval_brackets_the_change_and_is_deterministic():
    before = recs("answerable", ["correct"] * 10)
    after = recs("answerable", ["incorrect"] * 3 + ["correct"] * 7)
    s = H.spillover(after, before, n_boot=500, seed=1)
    hr = s["hallucination_rate"]
    assert hr["delta"] == pytest.approx(0.3) and hr["paired"]
    assert 0.0 <= hr["low"] <= 0.3 <= hr["high"] <= 1.0 and hr["high"] - hr["low"] > 0.2
    assert s["accuracy"]["delta"] == pytest.approx(-0.3)
    assert H.spillover(after, before, n_boot=500, seed=1) == s


def test_pairing_narrows_the_interval():
    grades = ["incorrect"] * 10 + ["correct"] * 10
    before = recs("answerable", grades)
    after = recs("answerable", ["incorrect"] + grades[1:])  # identical answers except one (already incorrect)
    after[10]["grade"] = "incorrect"  # one item moves
    paired = H.spillover(after, before, n_boot=1000)["hallucination_rate"]
    renamed = [dict(r, id="other" + r["id"]) for r in after]
    unpaired = H.spillover(renamed, before, n_boot=1000)["hallucination_rate"]
    assert paired["paired"] and not unpaired["paired"]
    assert paired["delta"] == unpaired["delta"] == pytest.approx(0.05)
    assert paired["high"] - paired["low"] < 0.5 * (unpaired["high"] - unpaired["low"])
    assert paired["low"] >= 0.0  # no paired difference is negative


def test_spillover_with_different_items_is_unpaired():
    before = recs("forget", ["correct"] * 4)
    after = recs("forget", ["abstained"] * 6, "x")
    s = H.spillover(after, before)
    leaked = s["forget_leaked"]
    assert leaked["paired"] is False and leaked["n_after"] == 6 and leaked["n_before"] == 4
    assert s["forget_leaked"]["delta"] == -1.0 and s["forget_abstained"]["delta"] == 1.0
    assert s["forget_leaked"]["low"] == s["forget_leaked"]["high"] == -1.0
    assert s["hallucination_rate"] is None


def test_benchmark_folder_supplies_all_target_names_and_rwku_refusals(tmp_path, monkeypatch):
    import json

    monkeypatch.delenv("RWKUPLUS_REFUSALS", raising=False)
    bench = rwku_like_benchmark()
    without = H.hallucination_items(bench, ["Stephen King"], n_nonexistent=60, seed=0)
    # a surname the pool uses
    surname = next(i.subject for i in without if i.kind == "nonexistent").split()[-1]
    other = f"Somebody {surname}"  # a target of the folder that was not loaded
    intro = {"Stephen King": ["x"], other: ["y"]}
    (tmp_path / "all_intro.json").write_text(json.dumps(intro), encoding="utf-8")
    (tmp_path / "idontknow.jsonl").write_text("My crystal ball is cloudy today.\n", encoding="utf-8")
    bench.source = {"kind": "rwku", "path": str(tmp_path)}
    assert other in H.known_names(bench)
    items = H.hallucination_items(bench, ["Stephen King"], n_nonexistent=60, seed=0)
    assert not any(i.subject.endswith(" " + surname) for i in items if i.kind == "nonexistent")
    assert H.default_refusals(bench).abstains("My crystal ball is cloudy today")
    bench.source = {"kind": "rwku", "path": str(tmp_path / "gone")}
    assert not H.default_refusals(bench).abstains("My crystal ball is cloudy today")


RWKU_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rwku"


@pytest.mark.skipif(not RWKU_DIR.is_dir(), reason="RWKU's data folder (../shared/data/rwku) is absent")
def test_generated_people_avoid_rwku_200_targets(monkeypatch):
    monkeypatch.delenv("RWKUPLUS_REFUSALS", raising=False)
    bench = rwku_like_benchmark()
    bench.source = {"kind": "rwku", "path": str(RWKU_DIR)}
    known = H.known_names(bench)
    assert len(set(known)) >= 200
    items = H.hallucination_items(bench, ["Stephen King"], n_nonexistent=80)
    people = {i.subject for i in items if i.kind == "nonexistent"}
    assert len(people) == 80
    surnames = {n.split()[-1].casefold() for n in known if n.split()}
    assert not people & set(known) and not {p.split()[-1].casefold() for p in people} & surnames
    # RWKU's refusal sentences are recognised verbatim
    matcher = H.default_refusals(bench)
    text = (RWKU_DIR / "idontknow.jsonl").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    assert all(matcher.abstains(line) for line in lines)
    assert matcher.n_phrases >= len(set(lines))


# --------------------------------------------------------------------------- spillover by domain

def test_related_and_unrelated_items():
    bench = rwku_like_benchmark()
    bench.targets[0].neighbor_probes.append(Probe("Carrie Road was written in ___.", "1974", "1", "cloze",
                                                  "Stephen King", "Carrie Road"))
    items = H.hallucination_items(bench, ["Stephen King"], n_nonexistent=0, n_unrelated=24, related=True)
    related = [i for i in items if i.kind == "related"]
    # the neighbor QA probe only (not the cloze one), asked with RWKU's probe prompt
    assert [(i.question, i.gold, i.source) for i in related] == [
        ("Who wrote the novel Carrie Road?", ["Carrie"], "neighbor")]
    assert related[0].probe is bench.targets[0].neighbor_probes[0]
    unrelated = [i for i in items if i.kind == "unrelated"]
    assert len(unrelated) == 24 and all(i.gold and i.source == "general" for i in unrelated)
    assert len({i.subject for i in unrelated}) >= 10  # spread over the subjects
    assert len(H.general_knowledge()) == len(H.general_knowledge(None)) >= 400
    # off by default: the suite's items are unchanged
    plain = H.hallucination_items(bench, ["Stephen King"], n_nonexistent=0)
    assert not [i for i in plain if i.kind in ("related", "unrelated")]


def _records(domain_kind, grades, prefix):
    return [{"id": f"{prefix}{i}", "kind": domain_kind, "grade": g} for i, g in enumerate(grades)]


def test_domain_spillover_known_values():
    before = (_records("answerable", ["correct", "correct", "incorrect", "abstained"], "s")
              + _records("related", ["correct"] * 4, "r")
              + _records("unrelated", ["correct", "correct", "incorrect", "abstained", "correct"], "u")
              + _records("nonexistent", ["abstained", "abstained", "incorrect", "abstained"], "n"))
    after = (_records("answerable", ["incorrect", "correct", "incorrect", "incorrect"], "s")
             + _records("related", ["correct", "abstained", "incorrect", "correct"], "r")
             + _records("unrelated", ["incorrect", "abstained", "correct", "incorrect", "correct"], "u")
             + _records("nonexistent", ["incorrect", "abstained", "incorrect", "abstained"], "n"))
    s = H.domain_spillover(after, before, n_boot=500)
    assert set(s) == {"same", "related", "unrelated", "nonexistent"}
    same = s["same"]
    assert (same["n"], same["hr"], same["before_hr"], same["dHR"]) == (4, 0.75, 0.25, 0.5)
    assert same["accuracy"] == 0.25 and same["abstention"] == 0.0 and same["before_abstention"] == 0.25
    assert 0.0 <= same["low"] <= 0.5 <= same["high"] <= 1.0
    rel = s["related"]
    assert (rel["hr"], rel["abstention"], rel["accuracy"], rel["dHR"]) == (0.25, 0.25, 0.5, 0.25)
    # unrelated: only u0, u1 and u4 count (Before answered them correctly)
    un = s["unrelated"]
    assert un["n"] == 3 and sorted(un["items"]) == ["u0", "u1", "u4"]
    assert un["before_accuracy"] == 1.0 and un["before_hr"] == 0.0
    assert un["hr"] == pytest.approx(1 / 3) and un["abstention"] == pytest.approx(1 / 3)
    assert un["dHR"] == pytest.approx(1 / 3)
    # nonexistent people: HR is the fabrication rate, accuracy is undefined
    ne = s["nonexistent"]
    assert ne["accuracy"] is None and ne["hr"] == 0.5 and ne["before_hr"] == 0.25 and ne["dHR"] == 0.25
    # identical models: zero change, zero-width interval
    same_model = H.domain_spillover(before, before, n_boot=200)
    assert all(d["dHR"] == 0 and d["low"] == 0 and d["high"] == 0 for d in same_model.values())


def test_domain_spillover_needs_paired_known_items():
    before = _records("unrelated", ["incorrect", "abstained"], "u")
    after = _records("unrelated", ["correct", "correct"], "u")
    assert H.domain_spillover(after, before) == {}  # Before knew none of them
    # items only one side answered are not paired
    assert H.domain_spillover(_records("answerable", ["correct"], "x"), _records("answerable", ["correct"], "y")) == {}
