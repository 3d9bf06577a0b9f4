"""The attack parts (quantization, relearning): the recovery formula on hand-made numbers, the fact
split, the quantized copy and both parts end to end on the tiny random model."""


import pytest
import torch

from rwkuplus.benchmark.records import Benchmark, MIAText, Probe, Target, TargetData, UtilitySet
from rwkuplus.claims import replace_doc_block
from rwkuplus.errors import UserError
from rwkuplus.evaluation.attacks import (
    AttackSettings,
    attack_columns,
    attack_recoveries,
    quantize_model,
    recovery,
    recovery_interval,
    relearning_corpus,
    split_probes,
)
from rwkuplus.evaluation.protocol import RWKU
from rwkuplus.evaluation.runner import EvalSettings, evaluate_model, parse_parts

NAME = "Alice Smith"
FACTS = [("born in the city of ___", "In which city was {n} born?", "Lyon"),
         ("born in the year ___", "In which year was {n} born?", "1970"),
         ("a ___ by profession", "What is the profession of {n}?", "painter"),
         ("best known for ___", "What is {n}'s best-known work?", "The Silver Harbor")]


def probes():
    out = []
    for blank, question, answer in FACTS:
        out.append(Probe(f"{NAME} was {blank}.", answer, "1", "cloze", NAME))
        out.append(Probe(question.format(n=NAME), answer, "2", "simple question", NAME))
        out.append(Probe(question.format(n=NAME) + " Sure, it is", answer, "3", "affirmative suffix", NAME))
    out.append(Probe("Who painted The Silver Harbor?", NAME, "3", "reverse query", NAME))  # ties a fact to the name
    return out


def bench():
    t = TargetData(Target(NAME, f"{NAME} is a painter.", 1), forget_probes=probes(), neighbor_probes=[],
                   forget_mia=[MIAText(f"{NAME} was born in Lyon.", NAME)], retain_mia=[MIAText("A fox.", "x")],
                   utility=UtilitySet())
    return Benchmark("test", [t], source={"kind": "test", "path": "hand-made", "revision": "r1"})


# --------------------------------------------------------------------------------------- recovery
def test_recovery_formula_on_hand_made_numbers():
    assert recovery(80.0, 20.0, 50.0) == pytest.approx(0.5)
    assert recovery(80.0, 20.0, 20.0) == pytest.approx(0.0)
    assert recovery(80.0, 20.0, 80.0) == pytest.approx(1.0)
    assert recovery(80.0, 20.0, 10.0) == pytest.approx(-1 / 6)  # the attack forgot more
    assert recovery(60.0, 40.0, 45.0) == pytest.approx(0.25)
    assert recovery(50.0, 50.0, 70.0) is None  # nothing was forgotten: no recovery to speak of
    assert recovery(40.0, 50.0, 70.0) is None
    assert recovery(None, 20.0, 30.0) is None and recovery(80.0, 20.0, None) is None


def rows(scores, kinds=None):
    kinds = kinds or ["FB"] * len(scores)
    return [{"prompt": f"p{i}", "score": s, "kind": k} for i, (s, k) in enumerate(zip(scores, kinds))]


def test_recovery_interval_is_paired_over_probes():
    before, after = rows([1.0] * 8), rows([0.0] * 8)
    attacked = rows([1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    r = recovery_interval(before, after, attacked, n_boot=500, seed=1)
    assert r["recovery"] == pytest.approx(0.5) and r["probes"] == 8 and r["n"] == 500
    assert 0.0 <= r["low"] < 0.5 < r["high"] <= 1.0
    same = recovery_interval(before, after, rows([1.0] * 8), n_boot=100)
    assert same["recovery"] == same["low"] == same["high"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="aligned"):
        recovery_interval(before, after, [dict(r, prompt="other") for r in attacked])


def test_attack_columns_and_recoveries_from_a_hand_made_mean():
    mean = {"forget": {"All": 20.0},
            "quantization": {"full": {"All": 20.0}, "int8": {"All": 22.0}, "int4": {"All": 50.0}},
            "relearning": {"steps": {"0": {"All": 10.0}, "1": {"All": 10.0}, "20": {"All": 40.0}, "5": {"All": 25.0}},
                           "split": {}}}
    cols = attack_columns(mean)
    assert cols == {"Q8 Forget All": 22.0, "Q4 Forget All": 50.0, "Relearn@0 Forget All": 10.0,
                    "Relearn@1 Forget All": 10.0, "Relearn@5 Forget All": 25.0, "Relearn@20 Forget All": 40.0}
    before = {"Forget All": 80.0, "Relearn@0 Forget All": 70.0}
    rec = attack_recoveries(before, {"Forget All": 20.0, **cols})
    assert rec["Q8 recovery"] == pytest.approx(2 / 60) and rec["Q4 recovery"] == pytest.approx(0.5)
    assert rec["Relearn@1 recovery"] == pytest.approx(0.0) and rec["Relearn@5 recovery"] == pytest.approx(0.25)
    assert rec["Relearn@20 recovery"] == pytest.approx(0.5) and "Relearn@0 recovery" not in rec
    assert attack_columns({"forget": {"All": 1.0}}) == {}


# ------------------------------------------------------------------------------------------ split
def test_probe_split_is_by_fact_disjoint_and_deterministic():
    ps = probes()
    attack, held = split_probes(ps, seed=0)
    assert len(attack) + len(held) == len(ps) - 1  # the reverse query is on neither side
    assert all(p.answer != NAME for p in attack + held)
    a_facts, h_facts = {p.answer for p in attack}, {p.answer for p in held}
    assert len(a_facts) == 2 and len(h_facts) == 2 and not (a_facts & h_facts)  # 4 facts: 2 and 2
    assert {p.query for p in attack}.isdisjoint({p.query for p in held})
    assert split_probes(list(reversed(ps)), seed=0)[0] == list(reversed(attack))  # order of input only
    seeds = {frozenset(p.answer for p in split_probes(ps, seed=s)[0]) for s in range(8)}
    assert len(seeds) > 1  # the seed chooses the facts
    three = [p for p in ps if p.answer != "1970"]
    assert len({p.answer for p in split_probes(three)[0]}) == 1  # 3 facts: 1 attacked, 2 held out
    with pytest.raises(UserError, match="two facts"):
        split_probes([p for p in ps if p.answer == "Lyon"])


def test_relearning_corpus_completes_blanks_and_answers_questions(tiny):
    _, tok = tiny
    attack, _ = split_probes(probes())
    corpus = relearning_corpus(tok, attack)
    assert len(corpus) == 4  # FB and QA of two facts; the adversarial probes are left out
    texts = [e.prompt + e.response for e in corpus]
    for p in attack:
        if p.level == "1":
            assert p.query.replace("___", p.answer) in texts
        if p.level == "2":
            assert any(e.prompt.endswith("<|im_start|>assistant\n") and p.query in e.prompt
                       and e.response == p.answer + "<|im_end|>" for e in corpus)


# ------------------------------------------------------------------------------------ quantization
def test_quantized_copy_keeps_the_original_and_the_head(tiny):
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.tensor([tok("Alice Smith was born in Lyon.", add_special_tokens=False).input_ids])
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    errors = {}
    for bits in (8, 4):
        q = quantize_model(model, bits, group_size=16)
        assert type(q.model.layers[0].mlp.down_proj.weight) is not torch.nn.Parameter  # a torchao tensor
        assert type(q.lm_head.weight) is torch.nn.Parameter  # the head keeps its weights
        with torch.no_grad():
            errors[bits] = float((q(input_ids=ids).logits - ref).abs().max())
    assert 0 < errors[8] < errors[4]  # coarser weights, larger change
    assert errors[8] < 0.05 * float(ref.abs().max())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(UserError, match="group_size 7"):
        quantize_model(model, 4, group_size=7)


def test_attack_settings_are_checked():
    assert AttackSettings.from_json({"relearning_steps": [5, 1, 5]}).relearning_steps == (1, 5)
    with pytest.raises(UserError, match="quantization_bits"):
        AttackSettings.from_json({"quantization_bits": [16]})
    with pytest.raises(UserError, match="relearning_steps"):
        AttackSettings.from_json({"relearning_steps": [0]})
    with pytest.raises(UserError, match="relearning_lr"):
        AttackSettings.from_json({"relearning_lr": "fast"})


# --------------------------------------------------------------------------------------- the parts
def test_both_attack_parts_through_evaluate_model_with_records(tiny, tmp_path):
    model, tok = tiny
    start = {k: v.clone() for k, v in model.state_dict().items()}
    assert parse_parts("forget,quantization,relearning") == ("forget", "quantization", "relearning")
    attacks = AttackSettings(quantization_bits=(8, 4), group_size=16, relearning_steps=(1, 3), relearning_lr=1e-2,
                             relearning_batch_size=2)
    settings = EvalSettings(batch_size=8, protocol=RWKU.replace(probe_max_new_tokens=4), attacks=attacks)
    info = {"spec": "tiny", "fingerprint": "x"}
    result = evaluate_model(model, tok, bench(), tmp_path, parts=["forget", "quantization", "relearning"],
                            settings=settings, model_info=info, progress=False)
    m = result["targets"][NAME]
    assert set(m["quantization"]) == {"full", "int8", "int4"}
    assert m["quantization"]["full"] == m["forget"]  # the same answers (the shared book)
    assert set(m["relearning"]["steps"]) == {"0", "1", "3"}
    split = m["relearning"]["split"]
    assert split["held_out_probes"] == 6 and split["attack_items"] == 4
    assert not set(split["attack_facts"]) & set(split["held_out_facts"])
    from rwkuplus.fileio import read_jsonl

    folder = tmp_path / "1_Alice_Smith"
    q = read_jsonl(folder / "quantization.jsonl")
    assert len(q) == 3 * 13 and {r["precision"] for r in q} == {"full", "int8", "int4"}
    r = read_jsonl(folder / "relearning.jsonl")
    assert len(r) == 3 * 6 and {x["steps"] for x in r} == {0, 1, 3}
    assert {x["answer"].lower() for x in r} == set(split["held_out_facts"])
    step0 = [x for x in r if x["steps"] == 0]
    full = {x["prompt"]: x for x in q if x["precision"] == "full"}
    assert all(x["prediction"] == full[x["prompt"]]["prediction"] for x in step0)  # step 0 = no attack
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in start.items())  # attacks work on copies
    # Resumable: a rerun reads the parts back; other attack settings are another evaluation.
    again = evaluate_model(model, tok, bench(), tmp_path, parts=["quantization", "relearning"], settings=settings,
                           model_info=info, progress=False)
    assert again["targets"][NAME]["relearning"] == m["relearning"]
    other = EvalSettings(batch_size=8, protocol=RWKU.replace(probe_max_new_tokens=4),
                         attacks=AttackSettings(relearning_steps=(2,)))
    with pytest.raises(UserError, match="different evaluation"):
        evaluate_model(model, tok, bench(), tmp_path, parts=["relearning"], settings=other, model_info=info,
                       progress=False)


# ------------------------------------------------------------------------- the findings script
def _script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "experiment_attacks.py"
    spec = importlib.util.spec_from_file_location("experiment_attacks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _unit(run, unit_id, method, label, q_scores, r_scores):
    """A finished unit with hand-made records: q_scores {precision: [score per probe]}, r_scores {step: [...]}."""
    from rwkuplus.fileio import write_json, write_jsonl

    folder = run / "units" / unit_id
    write_json(folder / "result.json", {"status": "ok", "unit": {"method": method, "label": label}, "metrics": {}})
    q = [{"prompt": f"q{i}", "score": s, "kind": "FB", "precision": p}
         for p, scores in q_scores.items() for i, s in enumerate(scores)]
    r = [{"prompt": f"r{i}", "score": s, "kind": "QA", "steps": k} for k, scores in r_scores.items()
         for i, s in enumerate(scores)]
    write_jsonl(folder / "eval" / "1_Alice" / "quantization.jsonl", q)
    write_jsonl(folder / "eval" / "1_Alice" / "relearning.jsonl", r)


def test_findings_table_from_hand_made_records(tmp_path):
    script = _script()
    ones, zeros = [1.0] * 10, [0.0] * 10
    _unit(tmp_path, "before__none__Alice__s-", "before", "Before", {"full": ones, "int8": ones, "int4": ones},
          {0: ones, 5: ones, 20: zeros})  # 20 steps wipe the Before model's own answers: a destructive attack
    # GA: forgets everything, 4-bit quantization brings all of it back, relearning half of it.
    _unit(tmp_path, "ga__full__Alice__s0", "ga", "GA", {"full": zeros, "int8": zeros, "int4": ones},
          {0: zeros, 5: [1.0] * 5 + [0.0] * 5, 20: zeros})
    # RT: forgets nothing (no verdict about recovery).
    _unit(tmp_path, "rt__full__Alice__s0", "rt", "RT", {"full": ones, "int8": ones, "int4": ones},
          {0: ones, 5: ones, 20: zeros})
    table, results = script.findings_table(tmp_path, n_boot=200)
    ga = results["GA"]
    assert ga["Q8"]["recovery"] == pytest.approx(0.0) and ga["Q4"]["recovery"] == pytest.approx(1.0)
    assert ga["Relearn@5"]["recovery"] == pytest.approx(0.5) and ga["Relearn@5"]["low"] < 0.5 < ga["Relearn@5"]["high"]
    assert script.verdict(ga["Q8"], 10) == "gone" and script.verdict(ga["Q4"], 10) == "hidden"
    assert script.verdict(ga["Relearn@5"], 10) == "partly"
    assert ga["Relearn@20"]["before_attacked"] == pytest.approx(0.0) and ga["Relearn@5"]["before_attacked"] == 100.0
    assert script.verdict(ga["Relearn@20"], 10) == "attack destroys"
    assert script.verdict(results["RT"]["Q4"], 10) == "did not forget" and results["RT"]["Q4"]["recovery"] is None
    header = table.splitlines()[0]
    assert header.index("Q8") < header.index("Q4") < header.index("Relearn@5") < header.index("Relearn@20")
    assert ("| GA | 100.0 -> 0.0 | 0.00 [0.00, 0.00] (0.0, Before 100.0; gone) | "
            "1.00 [1.00, 1.00] (100.0, Before 100.0; hidden) |") in table
    text = replace_doc_block("intro\n<!-- table:attacks -->\nold\n<!-- /table:attacks -->\nend\n", "new", "attacks")
    assert text == "intro\n<!-- table:attacks -->\nnew\n<!-- /table:attacks -->\nend\n"
