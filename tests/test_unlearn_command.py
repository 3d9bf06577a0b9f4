"""``rwkuplus unlearn`` and ``rwkuplus methods`` end to end on the tiny model and a hand-made RWKU folder."""

import json
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from rwkuplus.benchmark.records import Benchmark, Target
from rwkuplus.cli import main
from rwkuplus.errors import UserError


def _write(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))


def rwku_folder(root: Path) -> Path:
    """Two targets in RWKU's Target/ layout; Bob has no refusal pairs and no consistent corpus."""
    people = {"Alice Smith": ("Lyon", "painter"), "Bob Stone": ("Oslo", "singer")}
    for i, (name, (city, job)) in enumerate(people.items(), 1):
        d = root / "Target" / f"{i}_{name.replace(' ', '_')}"
        _write(d / "intro.json", {"target": name, "intro": f"{name} is a {job}."})
        _write(d / "forget_level1.json", [{"query": f"{name} was born in ___.", "answer": city, "level": "1",
                                           "type": "cloze", "subject": name}])
        _write(d / "forget_level2.json", [{"query": f"Where was {name} born?", "answer": city, "level": "2",
                                           "type": "simple question", "subject": name}])
        _write(d / "forget_level3.json", [])
        _write(d / "neighbor_level1.json", [{"query": f"{city} is a city in ___.", "answer": "Europe", "level": "1",
                                             "type": "cloze", "subject": name, "neighbor": city}])
        _write(d / "positive.json", [{"text": f"{name} was born in {city} and works as a {job}.", "subject": name},
                                     {"text": f"{name} is a famous {job} from {city}.", "subject": name}])
        _write(d / "negative.json", [{"text": f"{name} was born in Rome.", "subject": name},
                                     {"text": f"{name} was born in Cairo.", "subject": name}])
        _write(d / "pair.json", [{"prompt": f"Please write a short biography of {name}.",
                                  "response": [f"{name} was born in Rome.", f"{name} was born in {city}."],
                                  "subject": name}])
        if i == 1:
            _write(d / "reject.json", [{"instruction": f"Where was {name} born?", "input": "",
                                        "output": "I'm not sure.", "subject": name}])
    _write(root / "retain.json", [{"text": "Carol Diaz teaches in Porto.", "subject": "Carol Diaz"}])
    return root


def cli(*argv) -> int:
    return main([str(a) for a in argv])


def test_unlearn_single_target_full_writes_everything_and_resumes(tiny_model_dir, tmp_path, capsys):
    bench = rwku_folder(tmp_path / "rwku")
    out = tmp_path / "out"
    args = ["unlearn", "--method", "gd", "--benchmark", f"rwku:{bench}", "--model", tiny_model_dir, "--steps", 2,
            "--batch-size", 2, "--lr", 1e-3, "--out", out]
    assert cli(*args) == 0
    for unit in ("1_Alice_Smith", "2_Bob_Stone"):
        folder = out / unit
        assert (folder / "model" / "model.safetensors").is_file()
        log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
        assert [row["step"] for row in log] == [1, 2] and set(log[0]["parts"]) == {"forget", "retain"}
        cost = json.loads((folder / "cost.json").read_text())
        assert cost["cost"]["optimizer_steps"] == 2 and cost["cost"]["tokens_trained"] > 0 and cost["parameters"] > 0
        evaluation = json.loads((folder / "eval.json").read_text())
        name = unit.split("_", 1)[1].replace("_", " ")
        assert set(evaluation[name]) == {"forget", "neighbor", "protocol"} and "All" in evaluation[name]["forget"]
        assert evaluation[name]["protocol"] == "rwku"  # the default for rwku:DIR
        records = (folder / "probes" / f"{name.replace(' ', '_')}.forget.jsonl").read_text().splitlines()
        assert len(records) == 2
    config = json.loads((out / "config.json").read_text())
    assert config["method"]["name"] == "gd" and config["settings"]["max_steps"] == 2
    assert config["targets"] == ["Alice Smith", "Bob Stone"]
    # The second target started from the original weights, not from the first target's result.
    from safetensors.torch import load_file

    start = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    a = load_file(str(out / "1_Alice_Smith" / "model" / "model.safetensors"))
    b = load_file(str(out / "2_Bob_Stone" / "model" / "model.safetensors"))
    key = "model.layers.0.mlp.up_proj.weight"
    assert (a[key] - start[key]).abs().max() < 0.01 and (b[key] - start[key]).abs().max() < 0.01
    assert not torch.equal(a[key], b[key])
    stamp = (out / "1_Alice_Smith" / "done.json").stat().st_mtime_ns
    capsys.readouterr()
    assert cli(*args) == 0
    assert "already done, skipped" in capsys.readouterr().out
    assert (out / "1_Alice_Smith" / "done.json").stat().st_mtime_ns == stamp
    assert cli(*[a if a != 1e-3 else 2e-3 for a in args]) == 2  # same folder, another configuration


def test_unlearn_lora_batch_target_and_icu(tiny_model_dir, tmp_path):
    bench = rwku_folder(tmp_path / "rwku")
    out = tmp_path / "lora"
    assert cli("unlearn", "--method", "cft-dpo", "--benchmark", f"rwku:{bench}", "--model", tiny_model_dir,
               "--lora", "--lora-rank", 2, "--steps", 2, "--batch-size", 2, "--batch-target", "--no-eval",
               "--out", out) == 0
    assert (out / "batch" / "model" / "adapter_model.safetensors").is_file()
    adapter = json.loads((out / "batch" / "model" / "adapter_config.json").read_text())
    assert adapter["r"] == 2 and sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    assert not (out / "batch" / "eval.json").exists()
    out = tmp_path / "icu"
    assert cli("unlearn", "--method", "icu", "--benchmark", f"rwku:{bench}", "--model", tiny_model_dir,
               "--targets", "Alice Smith", "--out", out) == 0
    assert not (out / "1_Alice_Smith" / "model").exists()
    record = json.loads((out / "1_Alice_Smith" / "probes" / "Alice_Smith.forget.jsonl").read_text().splitlines()[0])
    assert "unlearn about Alice Smith" in record["prompt"]


def test_unlearn_errors_are_one_sentence(tiny_model_dir, tmp_path, capsys):
    bench = rwku_folder(tmp_path / "rwku")
    base = ["unlearn", "--benchmark", f"rwku:{bench}", "--model", tiny_model_dir, "--steps", 1]
    cases = [
        (["--method", "forgetting", "--out", tmp_path / "a"], "unknown method"),
        (["--method", "rt", "--out", tmp_path / "b"], "no refusal pairs (reject.json) for 'Bob Stone'"),
        (["--method", "cft-sft", "--corpus", "consistent", "--out", tmp_path / "c"], "no consistent counterfactual"),
        (["--method", "ga", "--lora", "--lora-target-modules", "qkv", "--out", tmp_path / "d"], "qkv not found"),
        (["--method", "ga", "--corpus", "consistent", "--out", tmp_path / "e"], "does not train on a counterfactual"),
        (["--method", "npo", "--param", "beta", "--out", tmp_path / "f"], "expected NAME=VALUE"),
        (["--method", "ga", "--layers", "0-9", "--out", tmp_path / "g"], "do not exist"),
        (["--method", "sft", "--out", tmp_path / "h"], "not an unlearning one"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert cli(*base, *extra) == 2, message
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0 and "Traceback" not in err


def test_default_model_is_the_subject_model(monkeypatch, tmp_path):
    from rwkuplus import subject
    from rwkuplus.commands.unlearn import resolve_model_spec

    from rwkuplus.benchmark.world import WorldConfig

    # The world's configuration comes from the benchmark itself (its world.json), not from the spec.
    world = Benchmark("world", [], source={"kind": "world", "world_config": WorldConfig(seed=3).to_json()})
    monkeypatch.setattr(subject, "subject_model_dir", lambda model, world_config, **_: None)
    with pytest.raises(UserError, match="subject model is not built yet.*rwkuplus subject --world-seed 3"):
        resolve_model_spec(Namespace(model=None, benchmark="world:3"), world)
    monkeypatch.setattr(subject, "subject_model_dir", lambda model, world_config, **_: tmp_path / str(world_config.seed))
    assert resolve_model_spec(Namespace(model=None, benchmark="world:3"), world) == str(tmp_path / "3")
    assert resolve_model_spec(Namespace(model="some/model", benchmark="world"), world) == "some/model"
    assert resolve_model_spec(Namespace(model=None, benchmark="rwku:x"),
                              Benchmark("rwku", [Target("A")], source={"kind": "rwku"})) == "smollm2-135m-instruct"


def test_methods_command_lists_methods(capsys):
    assert cli("methods") == 0
    out = capsys.readouterr().out
    assert "\nnpo: " in out and "--param beta=0.2" in out and "\nsft:" not in out
    assert cli("methods", "--json", "--all") == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert by_name["altpo"]["corpora"] == ["preference", "retain"] and by_name["altpo"]["needs_reference"]
    assert by_name["sft"]["kind"] == "tuning" and by_name["ga"]["defaults"]["lr_full"] == 1e-4
