import json

import pytest

from rwkuplus import cli
from rwkuplus.benchmark.records import (
    BBHItem,
    Benchmark,
    FluencyItem,
    HallucinationProbe,
    MIAText,
    MMLUItem,
    Probe,
    Target,
    TargetData,
    TriviaQAItem,
    TruthfulQAItem,
    UtilitySet,
)
from rwkuplus.commands import evaluate as evaluate_command
from rwkuplus.errors import UserError
from rwkuplus.evaluation.runner import (
    PARTS,
    RWKU_COLUMNS,
    EvalSettings,
    Part,
    PartResult,
    evaluate_model,
    format_table,
    parse_parts,
    rwku_row,
    target_folder_name,
)
from rwkuplus.evaluation.protocol import RWKU, WORLD
from rwkuplus.evaluation.utility import utility_fingerprint


def utility_set(tag=""):
    return UtilitySet(
        mmlu=[MMLUItem(f"What is 2 + 2?{tag}", ["3", "4"], 1, "math", [{"question": "1 + 1?", "choices": ["2", "5"], "answer": 0}])],
        bbh=[BBHItem("1 + 2?", "3", "math", "Add.\n\nQ: 1 + 1?\nA: So the answer is 2.")],
        truthfulqa=[TruthfulQAItem("Is the sun a star?", {"choices": ["Yes", "No"], "labels": [1, 0]},
                                   {"choices": ["Yes", "No"], "labels": [1, 0]})],
        triviaqa=[TriviaQAItem("Capital of France?", ["Paris"]), TriviaQAItem("Red planet?", ["Mars"])],
        fluency=[FluencyItem("Describe the sea.")],
    )


def target(name, index, utility):
    def p(query, answer, level, type_, neighbor=None):
        return Probe(query, answer, level, type_, name, neighbor)

    return TargetData(
        Target(name, f"{name} is a painter.", index),
        forget_probes=[p(f"{name} was born in ___.", "Lyon", "1", "cloze"),
                       p(f"Where was {name} born?", "Lyon", "2", "simple question"),
                       p(f"Where was {name} born? Sure, in", "Lyon", "3", "affirmative suffix")],
        neighbor_probes=[p("The Silver Harbor was painted in ___.", "1990", "1", "cloze", "The Silver Harbor"),
                         p("Who owns The Silver Harbor?", "A museum", "2", "simple question", "The Silver Harbor")],
        forget_mia=[MIAText(f"{name} was born in Lyon.", name), MIAText(f"{name} paints harbours.", name)],
        retain_mia=[MIAText("The quick brown fox jumps over the lazy dog.", "x")],
        utility=utility,
    )


def benchmark(shared=True):
    names = ["Alice Smith", "Prince Harry, Duke of Sussex"]
    targets = [target(n, i + 1, utility_set() if shared else utility_set(f" ({n})")) for i, n in enumerate(names)]
    return Benchmark("test", targets, source={"kind": "test", "path": "hand-made", "revision": "r1"})


SHORT = RWKU.replace(probe_max_new_tokens=4, bbh_max_new_tokens=4, triviaqa_max_new_tokens=4, fluency_max_new_tokens=4)


def settings(**kw):
    s = EvalSettings(batch_size=4, mia_batch_size=2, protocol=SHORT)
    for k, v in kw.items():
        setattr(s, k, v)
    return s


INFO = {"spec": "tiny", "fingerprint": "local:abc"}


def count_calls(monkeypatch, name):
    """Count how often the registered part ``name`` really runs."""
    part = PARTS[name]
    calls = []

    def wrapped(ctx):
        calls.append(ctx.target.name)
        return part.evaluate(ctx)

    monkeypatch.setitem(PARTS, name, Part(name, wrapped, part.share_key))
    return calls


def test_evaluate_model_writes_records_and_metrics(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    utility_calls = count_calls(monkeypatch, "utility")
    bench = benchmark()
    result = evaluate_model(model, tok, bench, tmp_path, settings=settings(), model_info=INFO, progress=False)
    assert utility_calls == ["Alice Smith"]  # shared items: evaluated once for both targets
    for folder in ("1_Alice_Smith", "2_Prince_Harry,_Duke_of_Sussex"):
        for part, n in (("forget", 3), ("neighbor", 2), ("mia", 3)):
            rows = [json.loads(line) for line in (tmp_path / folder / f"{part}.jsonl").read_text().splitlines()]
            assert len(rows) == n
            assert json.loads((tmp_path / folder / f"{part}.json").read_text())["part"] == part
        per_target = json.loads((tmp_path / folder / "metrics.json").read_text())
        assert set(per_target["rwku"]) == {c for c, _, _ in RWKU_COLUMNS}
    shared = tmp_path / "shared" / f"utility-{utility_fingerprint(utility_set())}"
    for name in ("mmlu", "bbh", "truthfulqa", "triviaqa", "fluency"):
        assert (shared / f"utility.{name}.jsonl").is_file()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["model"] == INFO and saved["benchmark"]["revision"] == "r1"
    assert set(saved["targets"]) == {"Alice Smith", "Prince Harry, Duke of Sussex"}
    a, b = (saved["targets"][n] for n in saved["targets"])
    assert saved["mean"]["forget"]["All"] == pytest.approx((a["forget"]["All"] + b["forget"]["All"]) / 2)
    assert saved["mean"]["mia"]["FM"] == pytest.approx((a["mia"]["FM"] + b["mia"]["FM"]) / 2)
    assert saved["rwku"]["MIA FM"] == saved["mean"]["mia"]["FM"]
    assert "AA" not in a["neighbor"] and a["utility"] == b["utility"]
    assert all(saved["rwku"][c] is not None for c, _, _ in RWKU_COLUMNS)
    assert saved["cost"]["generation"]["prompts"] > 0


def test_rerun_reads_finished_parts_back(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    bench = benchmark()
    first = evaluate_model(model, tok, bench, tmp_path, parts=["forget", "mia"], settings=settings(), model_info=INFO,
                           progress=False)
    calls = {name: count_calls(monkeypatch, name) for name in ("forget", "mia")}
    again = evaluate_model(model, tok, bench, tmp_path, parts=["forget", "mia"], settings=settings(), model_info=INFO,
                           progress=False)
    assert calls == {"forget": [], "mia": []}
    assert again["targets"] == first["targets"]
    (tmp_path / "1_Alice_Smith" / "mia.json").unlink()  # as if interrupted before MIA finished for this target
    evaluate_model(model, tok, bench, tmp_path, parts=["forget", "mia"], settings=settings(), model_info=INFO,
                   progress=False)
    assert calls == {"forget": [], "mia": ["Alice Smith"]}


def test_other_evaluation_in_the_same_folder_is_refused(tiny, tmp_path):
    model, tok = tiny
    evaluate_model(model, tok, benchmark(), tmp_path, parts=["mia"], settings=settings(), model_info=INFO, progress=False)
    with pytest.raises(UserError, match=r"mia.json: holds a result of a different evaluation"):
        evaluate_model(model, tok, benchmark(), tmp_path, parts=["mia"], settings=settings(mia_k=0.5), model_info=INFO,
                       progress=False)
    with pytest.raises(UserError, match="different evaluation"):
        evaluate_model(model, tok, benchmark(), tmp_path, parts=["mia"], settings=settings(),
                       model_info={"spec": "other"}, progress=False)


def test_other_evaluation_is_refused_before_any_probe_is_answered(tiny, tmp_path, asked):
    model, tok = tiny
    evaluate_model(model, tok, benchmark(), tmp_path, parts=["forget"], settings=settings(), model_info=INFO,
                   progress=False)
    asked.clear()
    with pytest.raises(UserError, match=r"forget.json: holds a result of a different evaluation"):
        evaluate_model(model, tok, benchmark(), tmp_path, parts=["forget"], settings=settings(),
                       model_info={"spec": "other"}, progress=False)
    assert asked == []  # the answers ahead of the parts were not generated for nothing


def test_icu_puts_the_instruction_everywhere(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    utility_calls = count_calls(monkeypatch, "utility")
    evaluate_model(model, tok, benchmark(), tmp_path, parts=["forget", "utility"], icu=True, settings=settings(),
                   model_info=INFO, progress=False)
    assert utility_calls == ["Alice Smith", "Prince Harry, Duke of Sussex"]  # the instruction names each target
    assert not (tmp_path / "shared").exists()
    rows = [json.loads(x) for x in (tmp_path / "1_Alice_Smith" / "forget.jsonl").read_text().splitlines()]
    assert all("supposed to unlearn about Alice Smith" in r["prompt"] for r in rows)
    assert (tmp_path / "2_Prince_Harry,_Duke_of_Sussex" / "utility.mmlu.jsonl").is_file()


def test_targets_with_their_own_utility_items(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    utility_calls = count_calls(monkeypatch, "utility")
    result = evaluate_model(model, tok, benchmark(shared=False), tmp_path, parts=["utility"], settings=settings(),
                            targets=["Prince Harry, Duke of Sussex"], model_info=INFO, progress=False)
    assert utility_calls == ["Prince Harry, Duke of Sussex"]
    assert list(result["targets"]) == ["Prince Harry, Duke of Sussex"]
    assert not (tmp_path / "1_Alice_Smith").exists()
    with pytest.raises(UserError, match="no target named 'Nobody'"):
        evaluate_model(model, tok, benchmark(), tmp_path, targets=["Nobody"], settings=settings(), progress=False)


def test_a_registered_part_runs_and_is_shared(tiny, tmp_path, monkeypatch):
    model, tok = tiny
    seen = []

    def extra(ctx):
        seen.append(ctx.target.name)
        return PartResult({"extra": [{"n": len(ctx.benchmark.targets)}]}, {"rate": 0.25})

    monkeypatch.setitem(PARTS, "extra", Part("extra", extra, lambda ctx: "all"))
    result = evaluate_model(model, tok, benchmark(), tmp_path, parts="extra", settings=settings(), progress=False)
    assert seen == ["Alice Smith"]
    assert (tmp_path / "shared" / "extra-all" / "extra.jsonl").read_text().strip() == '{"n": 2}'
    assert result["mean"]["extra"] == {"rate": 0.25}


def test_parse_parts_and_folder_names():
    assert parse_parts("forget, mia") == ("forget", "mia")
    assert parse_parts(["utility", "utility"]) == ("utility",)
    with pytest.raises(UserError, match="--parts: expected a comma-separated list"):
        parse_parts("forget,nope")
    with pytest.raises(UserError, match="--parts"):
        parse_parts("")
    t = target("Prince Harry, Duke of Sussex", 10, UtilitySet())
    assert target_folder_name(t, 99) == "10_Prince_Harry,_Duke_of_Sussex"
    t.target.index = None
    assert target_folder_name(t, 3) == "3_Prince_Harry,_Duke_of_Sussex"
    assert target_folder_name(target("AC/DC: Beyoncé?", 1, UtilitySet()), 1) == "1_AC_DC_Beyoncé"


def test_rwku_row_and_table():
    metrics = {"forget": {"FB": 85.94, "QA": 76.4, "AA": 77.7, "All": 79.6}, "neighbor": {"FB": 95.6, "QA": 85.3, "All": 90.7},
               "mia": {"FM": 226.7, "RM": 230.4}, "utility": {"Gen": 65.7, "Rea": 42.3, "Tru": 36.8, "Fac": 53.5}}
    row = rwku_row(metrics)
    assert row["Forget FB"] == 85.94 and row["MIA RM"] == 230.4 and row["Flu"] is None
    table = format_table({"Before": row}).splitlines()
    assert table[0].split()[:3] == ["Model", "Forget", "FB"]
    assert table[1].split() == ["Before", "85.9", "76.4", "77.7", "79.6", "95.6", "85.3", "90.7", "226.7", "230.4",
                                "65.7", "42.3", "36.8", "53.5", "-"]


def test_world_defaults():
    s = EvalSettings.world_defaults(batch_size=8)
    assert s.batch_size == 8 and s.protocol is WORLD and s.utility.protocol is WORLD and s.utility.batch_size == 8
    assert s.protocol.bbh_max_new_tokens < 256 and s.protocol.fluency_max_new_tokens < 256
    assert s.protocol.mmlu_format == "choice"
    assert EvalSettings().protocol is RWKU and RWKU.bbh_max_new_tokens == 256  # RWKU's protocol by default
    assert EvalSettings().protocol.mmlu_format == "letter"


def test_evaluate_command(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate_command, "_load_benchmark", lambda spec, targets: benchmark())
    out = tmp_path / "out"
    code = cli.main(["evaluate", "--model", str(tiny_model_dir), "--benchmark", "hand-made", "--parts", "forget,mia",
                     "--batch-size", "4", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Forget FB" in printed and "MIA FM" in printed and str(out / "metrics.json") in printed
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["parts"] == ["forget", "mia"] and saved["model"]["fingerprint"].startswith("local:")
    assert saved["settings"]["batch_size"] == 4


def test_evaluate_command_runs_the_hallucination_suite_by_default(tiny_model_dir, tmp_path, monkeypatch, capsys):
    bench = benchmark()
    bench.hallucination_probes = [
        HallucinationProbe("Where was Bram Okafor born?", "answerable", ["Lyon"], "Bram Okafor", "birthplace", "a0"),
        HallucinationProbe("What is Bram Okafor's job?", "answerable", ["painter"], "Bram Okafor", "profession", "a1"),
        HallucinationProbe("Where was Tobin Yelverton born?", "nonexistent", [], "Tobin Yelverton", "birthplace", "n0"),
    ]
    monkeypatch.setattr(evaluate_command, "_load_benchmark", lambda spec, targets: bench)
    out = tmp_path / "out"
    assert cli.main(["evaluate", "--model", str(tiny_model_dir), "--batch-size", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["parts"] == ["forget", "neighbor", "mia", "utility", "hallucination"]
    records = [json.loads(line) for line in (out / "1_Alice_Smith" / "hallucination.jsonl").read_text().splitlines()]
    answerable = [r for r in records if r["kind"] == "answerable"]
    nonexistent = [r for r in records if r["kind"] == "nonexistent"]
    assert len(answerable) == 2 and len(nonexistent) == 1
    assert len([r for r in records if r["kind"] == "forget"]) == len(bench.targets[0].forget_probes)
    rates = saved["targets"]["Alice Smith"]["hallucination"]
    assert rates["hallucination_rate"] == sum(r["grade"] == "incorrect" for r in answerable) / 2
    assert rates["fabrication_rate"] == sum(r["grade"] != "abstained" for r in nonexistent) / 1
    assert f"HR {saved['mean']['hallucination']['hallucination_rate']:.3f}" in printed


@pytest.fixture()
def asked(monkeypatch):
    """The prompt lists the evaluation's AnswerBook sends to generation, call by call."""
    from rwkuplus.evaluation import answers as A

    calls = []
    real = A.generate_each

    def counting(model, tokenizer, prompts, **kw):
        calls.append(list(prompts))
        return real(model, tokenizer, prompts, **kw)

    monkeypatch.setattr(A, "generate_each", counting)
    return calls


def test_shared_hallucination_questions_are_answered_once(tiny, tmp_path, asked):
    model, tok = tiny
    bench = benchmark()
    bench.hallucination_probes = [
        HallucinationProbe("Where was Bram Okafor born?", "answerable", ["Lyon"], "Bram Okafor", "birthplace", "a0"),
        HallucinationProbe("Where was Tobin Yelverton born?", "nonexistent", [], "Tobin Yelverton", "birthplace", "n0"),
    ]
    result = evaluate_model(model, tok, bench, tmp_path, parts=["hallucination"], settings=settings(), progress=False)
    n_forget = [len(t.forget_probes) for t in bench.targets]
    # Both targets' prompts in one call; the two questions they share asked once.
    assert [len(a) for a in asked] == [2 + n_forget[0] + n_forget[1]]
    assert len(set(asked[0])) == len(asked[0])
    for t in bench.targets:
        folder = tmp_path / target_folder_name(t, bench.targets.index(t) + 1)
        records = [json.loads(line) for line in (folder / "hallucination.jsonl").read_text().splitlines()]
        assert sorted(r["kind"] for r in records) == sorted(["answerable", "nonexistent"] + ["forget"] * len(t.forget_probes))
    first, second = (result["targets"][t.name]["hallucination"] for t in bench.targets)
    assert first["hallucination_rate"] == second["hallucination_rate"]
    # Under ICU every prompt names its target, so nothing is shared.
    asked.clear()
    evaluate_model(model, tok, bench, tmp_path / "icu", parts=["hallucination"], icu=True, settings=settings(),
                   progress=False)
    assert [len(a) for a in asked] == [2 + n_forget[0] + 2 + n_forget[1]]
    # Resuming a finished evaluation generates nothing.
    asked.clear()
    evaluate_model(model, tok, bench, tmp_path, parts=["hallucination"], settings=settings(), progress=False)
    assert asked == []


def test_honesty_split_reuses_the_forget_answers(tiny, tmp_path, asked):
    from rwkuplus.evaluation import hallucination as H

    model, tok = tiny
    bench = benchmark()
    bench.hallucination_probes = [
        HallucinationProbe("Where was Bram Okafor born?", "answerable", ["Lyon"], "Bram Okafor", "birthplace", "a0"),
    ]
    evaluate_model(model, tok, bench, tmp_path, targets=[bench.targets[0].name], parts=["forget", "hallucination"],
                   settings=settings(), progress=False)
    items = H.hallucination_items(bench, [bench.targets[0].name])
    others = [it.prompt(tok, None) for it in items if it.kind != "forget"]
    forget_prompts = [it.prompt(tok, None) for it in items if it.kind == "forget"]
    # One call for both parts; no forget probe asked twice.
    assert len(asked) == 1 and sorted(asked[0]) == sorted(forget_prompts + others), (len(asked[0]), len(others))
    folder = tmp_path / target_folder_name(bench.targets[0], 1)
    # Each prompt's cost is charged once, to the first part that used it.
    charged = {part: json.loads((folder / f"{part}.json").read_text())["generation"]["prompts"]
               for part in ("forget", "hallucination")}
    assert charged == {"forget": len(forget_prompts), "hallucination": len(others)}
    forget = [json.loads(line) for line in (folder / "forget.jsonl").read_text().splitlines()]
    split = [r for r in map(json.loads, (folder / "hallucination.jsonl").read_text().splitlines()) if r["kind"] == "forget"]
    assert len(split) == len(forget) > 0
    assert [r["prompt"] for r in split] == [r["prompt"] for r in forget]
    assert [r["prediction"] or "NOANSWER" for r in split] == [r["prediction"] for r in forget]


def test_probe_prompts_of_several_targets_are_answered_together(tiny, tmp_path, asked, monkeypatch):
    """The runner answers the next targets' probe prompts in one call, at most PREFETCH_BATCHES
    batches at a time; the answers equal those of each target evaluated alone."""
    from rwkuplus.evaluation import runner

    model, tok = tiny
    bench = benchmark()
    parts = ["forget", "neighbor"]
    result = evaluate_model(model, tok, bench, tmp_path / "together", parts=parts, settings=settings(), progress=False)
    from rwkuplus.evaluation.probes import probe_prompts

    mine = [set(probe_prompts(tok, t.forget_probes + t.neighbor_probes)) for t in bench.targets]
    n = [len(mine[0]), len(mine[1] - mine[0])]  # a prompt both targets ask is answered once
    assert [len(a) for a in asked] == [sum(n)]
    # The answers were generated ahead of the parts; their cost still reaches the parts, each prompt once.
    assert result["cost"]["generation"]["prompts"] == sum(n) and result["cost"]["prefetch_seconds"] > 0
    asked.clear()
    small = settings()
    small.batch_size = 1
    monkeypatch.setattr(runner, "PREFETCH_BATCHES", n[0])  # room for the first target's prompts only
    evaluate_model(model, tok, bench, tmp_path / "window", parts=parts, settings=small, progress=False)
    assert [len(a) for a in asked] == n
    for t in bench.targets:
        alone = tmp_path / "alone" / t.name
        evaluate_model(model, tok, bench, alone, targets=[t.name], parts=parts, settings=settings(), progress=False)
        name = target_folder_name(t, bench.targets.index(t) + 1)
        for part in parts:
            assert ((tmp_path / "together" / name / f"{part}.jsonl").read_text()
                    == (alone / name / f"{part}.jsonl").read_text())

def test_evaluate_command_errors(tiny_model_dir, tmp_path, monkeypatch, capsys):
    code = cli.main(["evaluate", "--model", str(tiny_model_dir), "--parts", "forget,bogus", "--out", str(tmp_path)])
    assert code == 2
    assert "--parts: expected a comma-separated list" in capsys.readouterr().err
    code = cli.main(["evaluate", "--model", str(tiny_model_dir), "--batch-size", "0", "--out", str(tmp_path)])
    assert code == 2
    assert "--batch-size: expected a positive integer" in capsys.readouterr().err


def test_malformed_utility_file_in_rwku_layout(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "rwku" / "Target" / "1_Alice_Smith"
    folder.mkdir(parents=True)
    probe = {"query": "Alice Smith was born in ___.", "answer": "Lyon", "level": "1", "type": "cloze",
             "subject": "Alice Smith"}
    (folder / "forget_level1.json").write_text(json.dumps([probe]))
    (folder / "forget_level2.json").write_text(json.dumps([probe | {"level": "2", "type": "simple question"}]))
    (folder / "forget_level3.json").write_text(json.dumps([probe | {"level": "3", "type": "role playing"}]))
    bad = {"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": "B", "task": "t", "examples": []}
    (folder / "retain_mmlu.json").write_text(json.dumps([bad]))
    code = cli.main(["evaluate", "--model", str(tiny_model_dir), "--benchmark", f"rwku:{tmp_path / 'rwku'}",
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "retain_mmlu.json" in err and "'answer'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
