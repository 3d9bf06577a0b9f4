"""Issue 20's six cases, each on the tiny model, plus the interrupt-and-resume check.

1. ``--out`` that is a file; 2. damaged caches (subject, world, any model folder); 3. the run-folder
lock; 4. progress in a log; 5. one default-model rule (evaluate on the world); 6. the subject's
checks in every run's console, summary.json, summary.md and report.html.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from rwkuplus.cli import main


def _config(tmp_path: Path, model: Path, methods=("before",), steps: int = 2, **extra) -> Path:
    config = {
        "model": str(model), "targets": "1", "methods": list(methods), "checkpoints": [1],
        "train": {"all": {"max_steps": steps, "batch_size": 2, "max_length": 64}},
        "eval": {"batch_size": 8, "parts": ["forget", "neighbor", "hallucination"], "utility_items": 4,
                 "hallucination_items": 4},
        **extra,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _fake_subject(tiny_model_dir: Path, folder: Path, nonexistent_refusal: float = 0.6) -> Path:
    """A subject model folder as ``build_subject`` writes it (the tiny model's weights, a subject.json
    whose checks miss one threshold)."""
    from rwkuplus.subject import CHECKS_VERSION, THRESHOLDS

    shutil.copytree(tiny_model_dir, folder)  # no manifest: as a subject written before they existed
    after = {"forget_FB": 91.0, "forget_QA": 88.0, "neighbor_All": 84.0, "retained_accuracy": 0.9,
             "nonexistent_refusal": nonexistent_refusal, "general_kept": 0.95}
    before = {k: 0.0 for k in after}
    met = {k: after[k] >= v for k, v in THRESHOLDS.items()}
    (folder / "subject.json").write_text(json.dumps({
        "model": "tiny", "checks_version": CHECKS_VERSION, "before": before, "after": after,
        "thresholds": THRESHOLDS, "thresholds_met": met, "all_thresholds_met": all(met.values())}))
    return folder


# ----------------------------------------------------------------------------- 1. --out is a file
def test_run_out_that_is_a_file_is_one_sentence(tiny_model_dir, tmp_path, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    assert main(["run", "--config", str(_config(tmp_path, tiny_model_dir)), "--out", str(a_file), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--out" in err and "existing file" in err and str(a_file) in err
    assert a_file.read_text() == "keep me"


# ------------------------------------------------------------------------------- 2. damaged caches
def test_manifest_and_header_checks(tiny_model_dir, tmp_path):
    from rwkuplus.integrity import MANIFEST, check_folder, safetensors_problem, write_manifest

    folder = shutil.copytree(tiny_model_dir, tmp_path / "m")
    assert check_folder(folder) is None  # no manifest yet: the safetensors header alone is checked
    write_manifest(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    weights = folder / "model.safetensors"
    assert manifest["files"]["model.safetensors"]["size"] == weights.stat().st_size
    assert check_folder(folder, full=True) is None
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte changed: only the full check sees it
    weights.write_bytes(bytes(data))
    assert check_folder(folder) is None
    assert "does not match the checksum" in check_folder(folder, full=True)
    weights.write_bytes(bytes(data[:-10]))
    assert check_folder(folder) == f"model.safetensors has {len(data) - 10} bytes, {len(data)} were written"
    (folder / MANIFEST).unlink()  # a folder from before manifests: the header still tells
    assert "model.safetensors is truncated" in safetensors_problem(weights)
    weights.write_bytes(b"\x01")
    assert check_folder(folder) == "model.safetensors is truncated (1 bytes, no safetensors header)"
    (folder / "tokenizer.json").unlink()
    write_manifest(folder)
    (folder / "tokenizer.json").write_text("{}")  # not in the manifest: not checked
    assert check_folder(folder) == "model.safetensors is truncated (1 bytes, no safetensors header)"
    write_manifest(folder)
    (folder / "tokenizer.json").unlink()
    assert check_folder(folder) == "tokenizer.json is missing"


def test_truncated_model_folder_is_one_sentence(tiny_model_dir, tmp_path, capsys):
    subject = _fake_subject(tiny_model_dir, tmp_path / "subject")
    weights = subject / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    assert main(["run", "--config", str(_config(tmp_path, subject)), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert "model.safetensors" in err and "damaged" in err and "rwkuplus subject --force" in err


TINY_WORLD_ARGS = dict(seed=3, n_targets=1, n_neighbors_per_target=1, n_retained=2, n_attributes=3,
                       attributes=("birth_year", "birthplace", "work"), n_counterfactual=2, n_injection_texts=1,
                       n_nonexistent_train=4, n_nonexistent_eval=2, n_attack_per_kind=1)


def test_damaged_cached_subject_is_named_and_rebuilt(tiny_model_dir, capsys, monkeypatch):
    from rwkuplus.benchmark.world import WorldConfig
    from rwkuplus.paths import home
    from rwkuplus.subject import InjectionSettings, ensure_subject, subject_key

    def check_folder(folder, full=False):
        from rwkuplus.integrity import check_folder

        return check_folder(folder, full)

    world, settings = WorldConfig(**TINY_WORLD_ARGS), InjectionSettings(epochs=1, batch_size=8, replay_tokens=4,
                                                                       max_length=96)
    spec = str(tiny_model_dir)
    cached = home() / "subjects" / subject_key(spec, world, settings)
    _fake_subject(tiny_model_dir, cached)
    weights = cached / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # a copy cut short
    capsys.readouterr()
    monkeypatch.setenv("RWKUPLUS_PROGRESS_SECONDS", "0.05")  # stdout is not a terminal here: progress lines
    folder = ensure_subject(spec, world, settings, progress=True)
    out = capsys.readouterr().out
    assert folder == cached and "damaged" in out and "model.safetensors" in out and "building it again" in out
    # The build's phases and steps show in a log.
    for line in ("Scoring the base model on the world (before injection)...", "[progress] injection steps: started",
                 "Scoring the subject model (after injection)..."):
        assert line in out
    assert "[progress] injection steps " in out and "done in" in out
    assert check_folder(folder, full=True) is None
    summary = json.loads((folder / "subject.json").read_text())
    assert "training" in summary  # really rebuilt (the fake one had no training record)
    assert ensure_subject(spec, world, settings, progress=False) == folder  # sound now: reused


def test_damaged_converted_default_model_is_converted_again(tiny_model_dir, tmp_path, monkeypatch, caplog):
    import transformers

    from rwkuplus import models
    from rwkuplus.integrity import MANIFEST, check_folder
    from rwkuplus.paths import home

    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(models, "_gguf_path", lambda: gguf)
    # The GGUF reader stands in: 'converting' loads the tiny model.
    real_model, real_tok = transformers.AutoModelForCausalLM.from_pretrained, transformers.AutoTokenizer.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: real_model(str(tiny_model_dir)))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: real_tok(str(tiny_model_dir)))
    cached = home() / "models" / models.DEFAULT_MODEL
    shutil.copytree(tiny_model_dir, cached)
    (cached / "converted.json").write_text("{}")
    weights = cached / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1])
    with caplog.at_level(logging.WARNING):
        assert models.default_model_folder() == cached
    assert any("converted default model" in r.getMessage() and "damaged" in r.getMessage()
               and "model.safetensors" in r.getMessage() for r in caplog.records)
    assert (cached / MANIFEST).is_file() and check_folder(cached, full=True) is None
    stamp = weights.stat().st_mtime_ns
    assert models.default_model_folder() == cached and weights.stat().st_mtime_ns == stamp  # sound: reused


def test_damaged_cached_world_is_written_again(caplog):
    from rwkuplus.benchmark.world import default_world_dir

    folder = default_world_dir()
    probe = sorted(folder.rglob("forget_level1.json"))[0]
    text = probe.read_text()
    probe.write_text(text[: len(text) // 2])
    with caplog.at_level(logging.WARNING):
        assert default_world_dir() == folder
    assert probe.read_text() == text
    assert any("damaged" in r.getMessage() and "forget_level1.json" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------- 3. the lock
def _lock(folder: Path, pid: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": time.time()}))


def test_a_second_run_on_a_folder_in_use_says_who_holds_it(tiny_model_dir, tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = tmp_path / "run"
        _lock(out, holder.pid)
        assert main(["run", "--config", str(_config(tmp_path, tiny_model_dir)), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"pid {holder.pid}" in err and socket.gethostname() in err
        assert "another rwkuplus run" in err and "started" in err and "--join" in err
        assert not (out / "units").exists()  # nothing done in the folder
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_the_lock_released(tiny_model_dir, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    _lock(out, dead.pid)
    assert main(["run", "--config", str(_config(tmp_path, tiny_model_dir)), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "taking over the lock" in stdout and f"pid {dead.pid}" in stdout
    assert not (out / ".lock").exists() and (out / "summary.json").is_file()


def test_a_lock_whose_pid_was_reused_is_stale(tmp_path):
    from rwkuplus.errors import UserError
    from rwkuplus.lock import folder_lock

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        folder = tmp_path / "run"
        (folder / ".lock").parent.mkdir()
        (folder / ".lock").write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(),
                                                  "started": time.time()}))
        with pytest.raises(UserError, match=f"pid {other.pid}"):  # its process is alive: held
            with folder_lock(folder):
                pass
        # The same pid in a lock taken an hour before that process started: the pid was reused.
        (folder / ".lock").write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(),
                                                  "started": time.time() - 3600}))
        said = []
        with folder_lock(folder, say=said.append):
            assert json.loads((folder / ".lock").read_text())["pid"] == os.getpid()
        assert "taking over" in said[0] and not (folder / ".lock").exists()
        # A second holder in this very process is refused too.
        with folder_lock(folder):
            with pytest.raises(UserError, match="this process already runs"):
                with folder_lock(folder):
                    pass
    finally:
        other.kill()
        other.wait()


def test_the_lock_is_released_on_ctrl_c(tiny_model_dir, tmp_path, monkeypatch):
    from rwkuplus import suite

    def interrupted(self, *args, **kwargs):
        assert (self.out / ".lock").is_file()  # held while the run works
        raise KeyboardInterrupt

    monkeypatch.setattr(suite.Suite, "_run_unit", interrupted)
    out = tmp_path / "run"
    assert main(["run", "--config", str(_config(tmp_path, tiny_model_dir)), "--out", str(out), "--quiet"]) == 130
    assert not (out / ".lock").exists()


def test_a_helper_shares_a_run_folder_with_its_owner(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """``--join``: the helper skips the unit another process holds, keeps the units that need that unit's
    Before for later, waits for it, runs them when it is finished; the owner (alive) writes the summary,
    or the helper when the owner is gone."""
    from rwkuplus import suite
    from rwkuplus.config import RunConfig

    config_path = _config(tmp_path, tiny_model_dir, methods=("before", "ga"), targets="1-2")
    config = RunConfig.from_yaml(config_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(config.to_yaml())  # as the owner wrote it when it started
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        time.sleep(0.2)
        _lock(out, owner.pid)
        targets = _target_names(config)
        names = [u.id for u in suite.plan_units(config, targets)]
        before1, held = (suite.Unit("before", None, "none", (t,), 0).id for t in targets)
        assert names[:2] == [before1, held] and len(names) == 4  # the Before units first, then GA's
        _lock(out / "units" / held, owner.pid)  # the owner is running target 2's Before unit
        order, waits = [], []
        real_run_unit = suite.Suite._run_unit

        def run_unit(self, unit, *args):
            order.append(unit.id)
            return real_run_unit(self, unit, *args)

        def owner_finishes(self):  # while the helper waits, the owner finishes its unit
            waits.append(self.poll_seconds)
            result = json.loads((out / "units" / before1 / "result.json").read_text())
            result["unit"] = suite.Unit("before", None, "none", (targets[1],), 0).to_json()
            (out / "units" / held / "result.json").write_text(json.dumps(result))
            (out / "units" / held / ".lock").unlink()

        monkeypatch.setattr(suite.Suite, "_run_unit", run_unit)
        monkeypatch.setattr(suite.Suite, "_wait", owner_finishes)
        monkeypatch.setattr(suite.Suite, "poll_seconds", 0.01)
        assert main(["run", "--config", str(config_path), "--out", str(out), "--join"]) == 0
        stdout = capsys.readouterr().out
        assert order == [before1, names[2], names[3]]  # not the held unit; target 2's GA after its Before
        assert waits == [0.01] and "waiting for 2 units that another process is running" in stdout
        assert f"pid {owner.pid}" in stdout and "writes the summary" in stdout
        assert all((out / "units" / n / "result.json").is_file() for n in names)
        assert not (out / "summary.json").exists() and (out / ".lock").is_file()  # the owner's to write
    finally:
        owner.kill()
        owner.wait()
    # The owner is gone: the helper, run again, finds every unit finished and writes the summary itself.
    assert main(["run", "--config", str(config_path), "--out", str(out), "--join"]) == 0
    assert "taking over the lock" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert [r["method"] for r in summary["rows"]] == ["Before", "GA"] and summary["pending"] == []
    assert not (out / ".lock").exists()


def _target_names(config) -> list[str]:
    from rwkuplus.benchmark.rwku import load_benchmark
    from rwkuplus.benchmark.world import default_world_dir
    from rwkuplus.suite import _targets

    return [t.name for t in load_benchmark(str(default_world_dir()), targets=_targets(config.targets)).targets]


def test_join_needs_a_started_run_with_the_same_options(tiny_model_dir, tmp_path, capsys):
    config_path = _config(tmp_path, tiny_model_dir)
    out = tmp_path / "run"
    assert main(["run", "--config", str(config_path), "--out", str(out), "--join", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--join needs a run folder where a run has started" in err
    assert not out.exists()
    out.mkdir()
    (out / "config.yaml").write_text("methods: [ga]\n")
    assert main(["run", "--config", str(config_path), "--out", str(out), "--join", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "the run to join holds a run with another configuration" in err and "same options" in err
    assert not (out / "units").exists()
    assert main(["run", "--config", "hidden-costs", "--out", str(out), "--join", "--quiet"]) == 2
    assert "--join shares one world's run folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------ 4. progress in a log
def test_progress_lines_and_unit_lines_reach_a_log(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "RWKUPLUS_PROGRESS_SECONDS": "0.05"}
    done = subprocess.run([sys.executable, "-m", "rwkuplus", "run", "--config",
                           str(_config(tmp_path, tiny_model_dir)), "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    log = done.stdout
    assert "[progress] units: started (0/1)" in log and "[progress] units 1/1" in log and "done in" in log
    assert log.count("[progress ") >= 2  # heartbeat lines while the unit works
    assert "unit before__none__" in log and " ok in " in log  # unit lines on stdout, not only in run.log
    assert "[progress" not in done.stderr


def test_line_progress_beats_on_long_steps_without_flooding(monkeypatch, capsys):
    from rwkuplus import progress

    monkeypatch.setattr(progress, "is_terminal", lambda: False)
    monkeypatch.setenv("RWKUPLUS_PROGRESS_SECONDS", "0.2")
    bar = progress.bar(10_000, "steps")
    for _ in range(10_000):  # many quick updates: no line for each
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[progress] steps: started (0/10000)" and lines[-1].startswith("[progress] steps 10000/10000")
    assert len(lines) <= 3
    bar = progress.bar(3, "slow")
    bar.set_postfix_str("step 1")
    time.sleep(0.7)  # one long step: the heartbeat still says where the work is
    bar.close()
    beats = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[progress 0")]
    assert len(beats) >= 2 and all("slow 0/3 (step 1)" in b for b in beats)
    with progress.activity("Scoring the base model..."):
        pass
    assert capsys.readouterr().out.startswith("Scoring the base model...\n")
    progress.bar(5, "left open by an error")
    progress.close_all()  # (the command line does this when a command ends)
    time.sleep(0.5)
    assert "left open" not in capsys.readouterr().out.replace("[progress] left open by an error: started", "")


# ------------------------------------------------------------------------------ 5. default model
def test_evaluate_on_the_world_defaults_to_its_subject_model(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from rwkuplus import models, subject

    fake = _fake_subject(tiny_model_dir, tmp_path / "subject")
    monkeypatch.setattr(subject, "subject_model_dir", lambda model, world_config, *a, **k: fake)

    def no_base_model():
        raise AssertionError("the base model was taken as the default")

    monkeypatch.setattr(models, "default_model_folder", no_base_model)
    out = tmp_path / "eval"
    assert main(["evaluate", "--benchmark", "world", "--targets", "1", "--parts", "forget", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"model: the world's subject model, {fake}" in printed
    assert json.loads((out / "metrics.json").read_text())["model"]["spec"] == str(fake)


@pytest.mark.parametrize("command", [["evaluate"], ["unlearn", "--method", "ga"], ["diagnose"]])
def test_a_damaged_default_subject_is_one_sentence_suggesting_force(command, tiny_model_dir, tmp_path, monkeypatch,
                                                                     capsys):
    from rwkuplus import subject

    fake = _fake_subject(tiny_model_dir, tmp_path / "subject")
    (fake / "model.safetensors").write_bytes(b"\0" * 100)
    monkeypatch.setattr(subject, "subject_model_dir", lambda model, world_config, *a, **k: fake)
    assert main([*command, "--benchmark", "world", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "damaged" in err and "model.safetensors" in err
    assert "rwkuplus subject --force" in err


def test_every_command_takes_the_same_default_on_the_world(tmp_path, monkeypatch):
    from rwkuplus import subject
    from rwkuplus.benchmark.records import Benchmark
    from rwkuplus.benchmark.world import WorldConfig
    from rwkuplus.default_model import default_model

    seen = []
    monkeypatch.setattr(subject, "subject_model_dir",
                        lambda model, world_config, *a, **k: seen.append(world_config) or tmp_path / "s")
    world = Benchmark("world", [], source={"kind": "world", "world_config": WorldConfig(seed=5).to_json()})
    said = []
    assert default_model(world, None, say=said.append) == str(tmp_path / "s")
    assert seen == [WorldConfig(seed=5)] and "subject model" in said[0]
    assert default_model(world, "my/model", say=said.append) == "my/model" and len(said) == 1
    rwku = Benchmark("rwku", [], source={"kind": "rwku"})
    assert default_model(rwku, None, say=said.append) == "smollm2-135m-instruct" and "packaged default" in said[1]


# ------------------------------------------------------------------------- 6. the subject's checks
def test_the_subject_checks_travel_with_the_run(tiny_model_dir, tmp_path, caplog):
    fake = _fake_subject(tiny_model_dir, tmp_path / "subject", nonexistent_refusal=0.6)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="rwkuplus.run"):
        assert main(["run", "--config", str(_config(tmp_path, fake)), "--out", str(out), "--quiet"]) == 0
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("misses 1 of its 6 thresholds" in w and "nonexistent_refusal 0.60 (needs 0.80)" in w for w in warning)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["version"] == 1
    table = summary["subject"]
    assert table["model"] == str(fake) and table["all_thresholds_met"] is False
    assert table["missed"] == ["nonexistent_refusal"] and len(table["checks"]) == 6
    row = next(c for c in table["checks"] if c["check"] == "nonexistent_refusal")
    assert row == {"check": "nonexistent_refusal", "value": 0.6, "base": 0.0, "threshold": 0.8, "met": False}
    md = (out / "summary.md").read_text()
    assert md.index("## Subject model") < md.index("| Method |")
    assert "**WARNING: The subject model misses 1 of its 6 thresholds (nonexistent_refusal)" in md
    assert "| nonexistent_refusal | 0.60 | 0.00 | >= 0.80 | **NO** |" in md
    assert "| forget_FB | 91.0 | 0.0 | >= 80.0 | yes |" in md  # x100 scores with one decimal, shares with two
    html = (out / "report.html").read_text()
    assert html.index('id="subject"') < html.index('id="summary"') and "Warning: The subject model misses" in html
    # The same run on a plain model: no subject table, no warning.
    plain = tmp_path / "plain"
    assert main(["run", "--config", str(_config(tmp_path, tiny_model_dir)), "--out", str(plain), "--quiet"]) == 0
    assert json.loads((plain / "summary.json").read_text())["subject"] is None
    assert "Subject model" not in (plain / "summary.md").read_text()


# ------------------------------------------------------------------------- interrupt and resume
def test_a_run_interrupted_in_a_unit_resumes_to_the_same_summary(tiny_model_dir, tmp_path, monkeypatch):
    from rwkuplus.training import loop

    config = _config(tmp_path, tiny_model_dir, methods=("before", "ga", "gd"), steps=3)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(["run", "--config", str(config), "--out", str(whole), "--quiet"]) == 0

    real_train = loop.train
    calls = []

    def train_then_ctrl_c(*args, on_step=None, **kwargs):  # Ctrl-C at step 2 of the second trained unit
        calls.append(1)

        def step(row):
            if on_step is not None:
                on_step(row)
            if len(calls) == 2 and row.get("step") == 2:
                raise KeyboardInterrupt

        return real_train(*args, on_step=step, **kwargs)

    monkeypatch.setattr(loop, "train", train_then_ctrl_c)
    assert main(["run", "--config", str(config), "--out", str(resumed), "--quiet"]) == 130
    finished = sorted(p.parent.name for p in (resumed / "units").glob("*/result.json"))
    assert len(finished) == 2 and not (resumed / ".lock").exists()
    monkeypatch.setattr(loop, "train", real_train)
    assert main(["run", "--config", str(config), "--out", str(resumed), "--quiet"]) == 0

    def metrics(folder: Path) -> dict:
        s = json.loads((folder / "summary.json").read_text())
        return {r["method"]: {k: v for k, v in r["metrics"].items() if k != "Wall time (s)"} for r in s["rows"]}

    a, b = metrics(whole), metrics(resumed)
    assert set(a) == {"Before", "GA", "GD"} and a == b
    assert sum(len(m) for m in a.values()) > 30
