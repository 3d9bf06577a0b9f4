"""The project's bad-input battery: every command, as a new user would misuse it.

Each case runs the command line in-process (``rwkuplus.cli.main``) and asserts a non-zero exit, one
line on stderr that names the file, field or option, and no traceback. Cases that need data share
one tiny model, one small RWKU folder and one cached world (module fixtures), so the battery takes
seconds. The six cases of issue 20 (an --out that is a file, a damaged cache, two runs in one folder,
progress in a log, the default model of evaluate, the subject's checks) have their own tests below,
with the interrupt-and-resume check on the tiny model.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from rwkuplus.cli import main

# ------------------------------------------------------------------------------------------ fixtures


def _write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return path


def _rwku(root: Path) -> Path:
    """One target in RWKU's Target/ layout (the files every target needs)."""
    d = root / "Target" / "1_Alice_Smith"
    name = "Alice Smith"
    _write(d / "intro.json", {"target": name, "intro": f"{name} is a painter."})
    _write(d / "forget_level1.json", [{"query": f"{name} was born in ___.", "answer": "Lyon", "level": "1",
                                       "type": "cloze", "subject": name}])
    _write(d / "forget_level2.json", [{"query": f"Where was {name} born?", "answer": "Lyon", "level": "2",
                                       "type": "simple question", "subject": name}])
    _write(d / "forget_level3.json", [])
    _write(d / "neighbor_level1.json", [{"query": "Lyon is a city in ___.", "answer": "France", "level": "1",
                                         "type": "cloze", "subject": name, "neighbor": "Lyon"}])
    _write(d / "positive.json", [{"text": f"{name} was born in Lyon.", "subject": name}])
    _write(d / "negative.json", [{"text": f"{name} was born in Rome.", "subject": name}])
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Shared inputs: the tiny model and damaged copies of it, an RWKU folder and broken ones, a home
    folder holding the default world once."""
    from rwkuplus.testing import make_tiny_model

    root = tmp_path_factory.mktemp("bad_input")
    tiny = make_tiny_model(root / "tiny")
    pickle = root / "pickle_only"
    pickle.mkdir()
    shutil.copy(tiny / "config.json", pickle / "config.json")
    (pickle / "pytorch_model.bin").write_bytes(b"\x80\x02}q\x00.")
    remote = root / "remote_code"
    shutil.copytree(tiny, remote)
    config = json.loads((remote / "config.json").read_text())
    config.update(model_type="my-own-arch", auto_map={"AutoModelForCausalLM": "modeling_mine.MyModel"})
    _write(remote / "config.json", config)
    bad_config = root / "bad_config_json"
    shutil.copytree(tiny, bad_config)
    _write(bad_config / "config.json", "{not json")
    truncated = root / "truncated"
    shutil.copytree(tiny, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    rwku = _rwku(root / "rwku")
    malformed = _rwku(root / "rwku_malformed")
    _write(malformed / "Target" / "1_Alice_Smith" / "forget_level1.json", "[{\"query\": ")
    missing_file = _rwku(root / "rwku_missing_file")
    (missing_file / "Target" / "1_Alice_Smith" / "forget_level2.json").unlink()
    not_rwku = root / "not_rwku"
    _write(not_rwku / "notes.txt", "hello")
    wrong_type = _rwku(root / "rwku_wrong_type")
    _write(wrong_type / "Target" / "1_Alice_Smith" / "forget_level1.json", {"query": "a dict, not a list"})
    a_file = _write(root / "a_file.txt", "I am a file")
    home = root / "home"
    # The tiny model stands in for the converted default model (the subject key needs its fingerprint).
    shutil.copytree(tiny, home / "models" / "smollm2-135m-instruct")
    _write(home / "models" / "smollm2-135m-instruct" / "converted.json", {"source": "tiny"})
    before = os.environ.get("RWKUPLUS_HOME")
    os.environ["RWKUPLUS_HOME"] = str(home)
    try:
        from rwkuplus.benchmark.world import default_world_dir

        default_world_dir()
        config = _write(root / "finished.yaml", yaml.safe_dump({
            "model": str(tiny), "methods": ["before"], "checkpoints": [],
            "eval": {"batch_size": 8, "parts": ["forget"], "utility_items": 2, "hallucination_items": 2}}))
        assert main(["run", "--config", str(config), "--out", str(root / "finished"), "--quiet"]) == 0
    finally:
        if before is None:
            del os.environ["RWKUPLUS_HOME"]
        else:
            os.environ["RWKUPLUS_HOME"] = before
    return {"root": root, "tiny": tiny, "pickle": pickle, "remote": remote, "bad_config": bad_config,
            "truncated": truncated, "rwku": rwku, "malformed": malformed, "missing_file": missing_file,
            "not_rwku": not_rwku, "wrong_type": wrong_type, "file": a_file, "home": home}


@pytest.fixture()
def shared_home(data, monkeypatch):
    from rwkuplus import models

    monkeypatch.setenv("RWKUPLUS_HOME", str(data["home"]))
    monkeypatch.setattr(models, "_gguf_path", lambda: data["root"] / "SmolLM2-135M-Instruct.Q4_1.gguf")
    return data["home"]


def _config(data, tmp_path, **entries) -> Path:
    return _write(tmp_path / "config.yaml", yaml.safe_dump(entries) if entries else "")


def run_cli(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_sentence(code, err: str, *needles: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "error:" in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


# ------------------------------------------------------------------------------------------- battery
# Each case: (name, argv builder (data, tmp_path) -> argv, words the one sentence must contain).
def _cfg(**entries):
    return lambda d, t: ["run", "--config", _config(d, t, **entries), "--out", t / "run"]


CASES = [
    # rwkuplus run: configuration files
    ("run: config file missing", lambda d, t: ["run", "--config", t / "nope.yaml"], ["nope.yaml", "file not found"]),
    ("run: config not YAML", lambda d, t: ["run", "--config", _write(t / "c.yaml", "a: [1, 2\nb: }"), "--out", t / "r"],
     ["c.yaml", "not valid YAML"]),
    ("run: config a list", lambda d, t: ["run", "--config", _write(t / "c.yaml", "- ga\n- npo\n")], ["c.yaml", "mapping"]),
    ("run: unknown key", _cfg(methodz=["ga"]), ["unknown key 'methodz'"]),
    ("run: unknown method", _cfg(methods=["before", "forget-everything"]), ["methods", "forget-everything"]),
    ("run: unknown corpus", _cfg(methods=["cft-sft:imaginary"]), ["methods", "cft-sft:imaginary"]),
    ("run: methods not a list", _cfg(methods="ga"), ["methods"]),
    ("run: seeds wrong type", _cfg(seeds="zero"), ["seeds"]),
    ("run: seeds of strings", _cfg(seeds=["a"]), ["seeds"]),
    ("run: negative checkpoint", _cfg(checkpoints=[-1]), ["checkpoints"]),
    ("run: diagnostics not a bool", _cfg(diagnostics="yes"), ["diagnostics"]),
    ("run: unknown setting", _cfg(settings=["qlora"]), ["settings", "qlora"]),
    ("run: unknown target mode", _cfg(target_mode="all-at-once"), ["target_mode"]),
    ("run: unknown train key", _cfg(train={"ga": {"learning_rate": 1.0}}), ["train.ga", "learning_rate"]),
    ("run: train of an unknown method", _cfg(train={"nope": {"lr": 1.0}}), ["train", "nope"]),
    ("run: eval batch size 0", _cfg(eval={"batch_size": 0}), ["eval.batch_size"]),
    ("run: eval part unknown", _cfg(eval={"parts": ["forget", "vibes"]}), ["eval.parts"]),
    ("run: eval key unknown", _cfg(eval={"temperature": 0.7}), ["eval", "temperature"]),
    ("run: utility items negative", _cfg(eval={"utility_items": -3}), ["eval.utility_items"]),
    ("run: unknown preset", _cfg(preset="llama9"), ["preset"]),
    ("run: rwku without a model", lambda d, t: ["run", "--benchmark", f"rwku:{d['rwku']}", "--out", t / "r"], ["model"]),
    ("run: rwku folder missing", lambda d, t: ["run", "--benchmark", f"rwku:{t / 'gone'}", "--model", d["tiny"]],
     ["benchmark", "existing data folder"]),
    ("run: world seed not a number", lambda d, t: ["run", "--benchmark", "world:abc"], ["benchmark", "world:abc"]),
    ("run: --quick with --config", lambda d, t: ["run", "--quick", "--config", _config(d, t)], ["--quick", "--config"]),
    ("run: --seeds not integers", lambda d, t: ["run", "--seeds", "1,two"], ["--seeds", "1,two"]),
    ("run: unknown option", lambda d, t: ["run", "--fast"], ["--fast"]),
    ("run: --out is a file", lambda d, t: ["run", "--model", d["tiny"], "--out", d["file"]], ["--out", "existing file"]),
    ("run: --out under a file", lambda d, t: ["run", "--model", d["tiny"], "--out", d["file"] / "run"],
     ["--out", "is a file"]),
    ("run: model folder missing", lambda d, t: ["run", "--model", t / "no_model", "--out", t / "r"], ["--model", "no_model"]),
    ("run: pickle-only model", lambda d, t: ["run", "--model", d["pickle"], "--out", t / "r"], ["--model", "safetensors"]),
    ("run: remote-code model", lambda d, t: ["run", "--model", d["remote"], "--out", t / "r"],
     ["--model", "auto_map", "trust_remote_code"]),
    ("run: a unit's result.json damaged", lambda d, t: _damaged_copy(
        d, t, lambda r: _write(next(r.glob("units/*/result.json")), "{\"status\": \"ok\", ")),
     ["result.json", "not valid JSON"]),
    ("run: config.yaml of the folder changed", lambda d, t: _damaged_copy(
        d, t, lambda r: _write(r / "config.yaml", "methods: [ga]\n")), ["another configuration", "config.yaml"]),
    ("run: truncated weights", lambda d, t: ["run", "--model", d["truncated"], "--out", t / "r"],
     ["--model", "damaged", "model.safetensors", "truncated"]),
    # rwkuplus evaluate
    ("evaluate: --out required", lambda d, t: ["evaluate", "--model", d["tiny"]], ["--out"]),
    ("evaluate: unknown part", lambda d, t: ["evaluate", "--model", d["tiny"], "--parts", "forget,vibes", "--out", t / "e"],
     ["vibes"]),
    ("evaluate: batch size 0", lambda d, t: ["evaluate", "--model", d["tiny"], "--batch-size", "0", "--out", t / "e"],
     ["--batch-size"]),
    ("evaluate: batch size not a number", lambda d, t: ["evaluate", "--batch-size", "many", "--out", t / "e"],
     ["--batch-size", "many"]),
    ("evaluate: benchmark folder missing", lambda d, t: ["evaluate", "--model", d["tiny"], "--benchmark", t / "gone",
                                                         "--out", t / "e"], ["--benchmark"]),
    ("evaluate: not an RWKU folder", lambda d, t: ["evaluate", "--model", d["tiny"], "--benchmark", d["not_rwku"],
                                                   "--out", t / "e"], ["not_rwku", "RWKU's layout"]),
    ("evaluate: malformed RWKU file", lambda d, t: ["evaluate", "--model", d["tiny"], "--benchmark", d["malformed"],
                                                    "--out", t / "e"], ["forget_level1.json", "JSON"]),
    ("evaluate: RWKU file missing", lambda d, t: ["evaluate", "--model", d["tiny"], "--benchmark", d["missing_file"],
                                                  "--out", t / "e"], ["forget_level2.json", "not found"]),
    ("evaluate: RWKU file of the wrong type", lambda d, t: ["evaluate", "--model", d["tiny"], "--benchmark",
                                                            d["wrong_type"], "--out", t / "e"],
     ["forget_level1.json", "list"]),
    ("evaluate: no such target", lambda d, t: ["evaluate", "--model", d["tiny"], "--benchmark", d["rwku"], "--targets",
                                               "7", "--out", t / "e"], ["--targets", "7"]),
    ("evaluate: offline hub id", lambda d, t: ["evaluate", "--model", "nobody-here/no-such-model", "--benchmark",
                                               d["rwku"], "--out", t / "e"], ["--model", "nobody-here/no-such-model"]),
    ("evaluate: model spec nonsense", lambda d, t: ["evaluate", "--model", "../not a model", "--benchmark", d["rwku"],
                                                    "--out", t / "e"], ["--model"]),
    ("evaluate: config.json not JSON", lambda d, t: ["evaluate", "--model", d["bad_config"], "--benchmark", d["rwku"],
                                                     "--out", t / "e"], ["--model", "config.json"]),
    ("evaluate: unknown dtype", lambda d, t: ["evaluate", "--model", d["tiny"], "--benchmark", d["rwku"], "--dtype",
                                              "int7", "--out", t / "e"], ["--dtype", "int7"]),
    ("evaluate: adapter missing", lambda d, t: ["evaluate", "--model", d["tiny"], "--benchmark", d["rwku"], "--adapter",
                                                t / "no_adapter", "--out", t / "e"], ["--adapter"]),
    ("evaluate: --out is a file", lambda d, t: ["evaluate", "--model", d["tiny"], "--out", d["file"]],
     ["--out", "existing file"]),
    ("evaluate: world subject not built", lambda d, t: ["evaluate", "--benchmark", "world", "--out", t / "e"],
     ["--model", "subject model is not built yet", "rwkuplus subject"]),
    # rwkuplus unlearn
    ("unlearn: unknown method", lambda d, t: ["unlearn", "--method", "forget-all", "--out", t / "u"], ["forget-all"]),
    ("unlearn: --param without =", lambda d, t: ["unlearn", "--method", "npo", "--param", "beta", "--out", t / "u"],
     ["--param", "beta"]),
    ("unlearn: unknown hyperparameter", lambda d, t: ["unlearn", "--method", "npo", "--param", "gamma=1", "--out", t / "u"],
     ["gamma"]),
    ("unlearn: --lora with --layers", lambda d, t: ["unlearn", "--method", "ga", "--lora", "--layers", "0-1",
                                                    "--out", t / "u"], ["--lora", "--layers"]),
    ("unlearn: --lora-rank without --lora", lambda d, t: ["unlearn", "--method", "ga", "--lora-rank", "4",
                                                          "--out", t / "u"], ["--lora"]),
    ("unlearn: --corpus for GA", lambda d, t: ["unlearn", "--method", "ga", "--corpus", "consistent", "--out", t / "u"],
     ["--corpus"]),
    ("unlearn: --steps with --epochs", lambda d, t: ["unlearn", "--method", "ga", "--steps", "3", "--epochs", "1",
                                                     "--out", t / "u"], ["--epochs", "--steps"]),
    ("unlearn: unknown preset", lambda d, t: ["unlearn", "--method", "ga", "--preset", "llama9", "--out", t / "u"],
     ["preset", "llama9"]),
    ("unlearn: --out is a file", lambda d, t: ["unlearn", "--method", "ga", "--out", d["file"]], ["--out", "existing file"]),
    ("unlearn: world subject not built", lambda d, t: ["unlearn", "--method", "ga", "--steps", "1", "--out", t / "u"],
     ["--model", "subject model is not built yet"]),
    # rwkuplus diagnose
    ("diagnose: --max-examples 1", lambda d, t: ["diagnose", "--max-examples", "1", "--out", t / "g"], ["--max-examples"]),
    ("diagnose: --project 2", lambda d, t: ["diagnose", "--project", "2", "--out", t / "g"], ["--project"]),
    ("diagnose: unknown method", lambda d, t: ["diagnose", "--method", "forget-all", "--out", t / "g"], ["forget-all"]),
    ("diagnose: --corpus for GA", lambda d, t: ["diagnose", "--method", "ga", "--corpus", "consistent", "--out", t / "g"],
     ["--corpus"]),
    ("diagnose: unknown unit", lambda d, t: ["diagnose", "--unit", "sentence", "--out", t / "g"], ["--unit", "sentence"]),
    ("diagnose: --out is a file", lambda d, t: ["diagnose", "--out", d["file"]], ["--out", "existing file"]),
    ("diagnose: world subject not built", lambda d, t: ["diagnose", "--out", t / "g"], ["--model", "subject model"]),
    # rwkuplus data
    ("data world: --out is a file", lambda d, t: ["data", "world", "--out", d["file"]], ["--out", "existing file"]),
    ("data world: --out a folder of something else", lambda d, t: ["data", "world", "--out", d["not_rwku"]],
     ["--out", "not a world folder"]),
    ("data world: no --out", lambda d, t: ["data", "world"], ["--out"]),
    ("data: unknown subcommand", lambda d, t: ["data", "planets"], ["planets"]),
    # rwkuplus report
    ("report: folder missing", lambda d, t: ["report", t / "no_run"], ["no_run"]),
    ("report: a file", lambda d, t: ["report", d["file"]], ["a_file.txt", "not a folder"]),
    ("report: not a run folder", lambda d, t: ["report", d["rwku"]], ["run.json", "not a run folder"]),
    ("report: run.json not JSON", lambda d, t: ["report", _write(t / "run" / "run.json", "{oops").parent],
     ["run.json", "not valid JSON"]),
    ("report: run.json a list", lambda d, t: ["report", _write(t / "run" / "run.json", "[1]").parent], ["run.json"]),
    ("report: result.json damaged", lambda d, t: ["report", _corrupt_run(t)], ["result.json"]),
    ("report: subject field malformed", lambda d, t: ["report", _write(t / "run" / "run.json",
                                                                       {"benchmark": {}, "model": "m",
                                                                        "subject": "yes"}).parent],
     ["run.json", "subject"]),
    # rwkuplus subject
    ("subject: --json is a folder", lambda d, t: ["subject", "--json", t], ["--json", "folder"]),
    ("subject: model folder missing", lambda d, t: ["subject", "--model", t / "no_model"], ["--model", "no_model"]),
    ("subject: remote-code model", lambda d, t: ["subject", "--model", d["remote"]], ["--model", "auto_map"]),
    ("subject: epochs not a number", lambda d, t: ["subject", "--epochs", "three"], ["--epochs", "three"]),
    # rwkuplus claims
    ("claims: --n-boot 0", lambda d, t: ["claims", d["rwku"], "--n-boot", "0"], ["--n-boot"]),
    ("claims: not a run folder", lambda d, t: ["claims", d["rwku"]], ["rwku", "not a run folder"]),
    ("claims: run.json not JSON", lambda d, t: ["claims", _write(t / "run" / "run.json", "{oops").parent],
     ["run.json", "not valid JSON"]),
    # rwkuplus methods and the command line itself
    ("methods: unknown option", lambda d, t: ["methods", "--format", "yaml"], ["--format"]),
    ("cli: unknown command", lambda d, t: ["frobnicate"], ["frobnicate"]),
]


def _damaged_copy(d, t: Path, damage) -> list:
    """A copy of the finished tiny run, damaged by ``damage(folder)``; argv to run it again."""
    run = shutil.copytree(d["root"] / "finished", t / "finished")
    damage(run)
    return ["run", "--config", d["root"] / "finished.yaml", "--out", run, "--quiet"]


def _corrupt_run(t: Path) -> Path:
    run = t / "run"
    _write(run / "run.json", {"benchmark": {"kind": "world"}, "model": "m"})
    _write(run / "units" / "ga__full__x__s0" / "result.json", "{\"status\": \"ok\", ")
    return run


def test_the_battery_has_at_least_40_cases_over_every_command():
    from rwkuplus.cli import _command_modules

    assert len(CASES) >= 40
    named = {name.split(":")[0].split()[0] for name, _, _ in CASES}
    assert {m.NAME for m in _command_modules()} <= named


@pytest.mark.parametrize("name, argv, needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_sentence(name, argv, needles, data, shared_home, tmp_path, capsys):
    code, _, err = run_cli(argv(data, tmp_path), capsys)
    assert_one_sentence(code, err, *needles)
