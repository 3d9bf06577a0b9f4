"""Fetching RWKU's targets from the hub, with huggingface_hub replaced by a local fake repository."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub.errors import OfflineModeIsEnabled, RevisionNotFoundError

from rwkuplus.benchmark import hub
from rwkuplus.benchmark.rwku import load_benchmark
from rwkuplus.cli import main
from rwkuplus.errors import UserError

FOLDERS = ["1_Stephen_King", "10_Prince_Harry,_Duke_of_Sussex", "24_Beyoncé"]


def _probe(subject, level, kind):
    return {"query": f"About {subject} ___?", "answer": "x", "level": level, "type": kind, "subject": subject}


@pytest.fixture()
def fake_hub(tmp_path, monkeypatch):
    """A fake dataset repository on disk; list_repo_files / hf_hub_download / HfApi read it."""
    repo = tmp_path / "repo"
    for folder in FOLDERS:
        name = folder.split("_", 1)[1].replace("_", " ")
        d = repo / "Target" / folder
        d.mkdir(parents=True)
        files = {
            "intro.json": [{"target": name, "intro": "..."}],
            "forget_level1.json": [_probe(name, "1", "cloze")],
            "forget_level2.json": [_probe(name, "2", "simple question")],
            "forget_level3.json": [_probe(name, "3", "cross lingal")],
            "positive.json": [{"id": 0, "text": f"{name} fact.", "subject": name, "intro": "..."}],
            "positive_phi.json": [{"id": 0, "text": f"{name} phi fact.", "subject": name, "intro": "..."}],
            "negative.json": [{"id": 0, "text": f"{name} fiction.", "subject": name, "intro": "..."}],
            "fluency.json": [{"instruction": "Write a poem.", "subject": name}],
        }
        for filename, records in files.items():
            (d / filename).write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    (repo / "All").mkdir()
    (repo / "All" / "forget_level1.json").write_text("[]")
    (repo / "README.md").write_text("card")
    calls = {"list": [], "download": []}

    def list_repo_files(repo_id, *, repo_type=None, revision=None, token=None):
        calls["list"].append((repo_id, repo_type, revision))
        return sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())

    def hf_hub_download(repo_id, filename, *, repo_type=None, revision=None, local_dir=None, token=None, **kw):
        calls["download"].append((repo_id, filename, repo_type, revision))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo / filename, target)
        return str(target)

    class FakeApi:
        def dataset_info(self, repo_id, revision=None, token=None):
            return SimpleNamespace(sha="a" * 40)

    monkeypatch.setattr(hub, "list_repo_files", list_repo_files)
    monkeypatch.setattr(hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(hub, "HfApi", FakeApi)
    return calls


def test_pinned_revision_is_a_commit():
    assert re.fullmatch(r"[0-9a-f]{40}", hub.PINNED_REVISION)
    assert hub.REPO_ID == "jinzhuoran/RWKU"


def test_fetch_only_the_chosen_targets(fake_hub, tmp_path):
    out = hub.fetch_rwku("1-10", tmp_path / "data")
    assert fake_hub["list"] == [("jinzhuoran/RWKU", "dataset", hub.PINNED_REVISION)]
    fetched = sorted(f for _, f, _, _ in fake_hub["download"])
    assert all(f.startswith(("Target/1_Stephen_King/", "Target/10_Prince_Harry,_Duke_of_Sussex/")) for f in fetched)
    assert len(fetched) == 2 * 7  # every file but the Phi-3 corpus, for two targets; nothing from All/
    assert all(rev == hub.PINNED_REVISION and kind == "dataset" for _, _, kind, rev in fake_hub["download"])
    source = json.loads((out / ".rwkuplus_source.json").read_text())
    assert source["revision"] == hub.PINNED_REVISION and source["resolved_revision"] == "a" * 40
    assert source["targets"] == ["1_Stephen_King", "10_Prince_Harry,_Duke_of_Sussex"]

    b = load_benchmark(f"rwku:{out}")
    assert [d.name for d in b.targets] == ["Stephen King", "Prince Harry, Duke of Sussex"]
    assert b.source["revision"] == "a" * 40 and b.source["repo"] == "jinzhuoran/RWKU"
    assert [p.attack for p in b.targets[0].forget_probes if p.level == "3"] == ["cross-lingual"]

    # a second fetch adds a target by name and downloads nothing twice
    fake_hub["download"].clear()
    hub.fetch_rwku(["Beyoncé"], out)
    assert {f.split("/")[1] for _, f, _, _ in fake_hub["download"]} == {"24_Beyoncé"}
    source = json.loads((out / ".rwkuplus_source.json").read_text())
    assert source["targets"] == FOLDERS
    assert len(load_benchmark(f"rwku:{out}").targets) == 3


def test_fetch_options(fake_hub, tmp_path):
    out = hub.fetch_rwku("24", tmp_path / "lean", corpora=False)
    names = sorted(p.name for p in (out / "Target" / "24_Beyoncé").iterdir())
    assert names == ["fluency.json", "forget_level1.json", "forget_level2.json", "forget_level3.json", "intro.json"]
    out = hub.fetch_rwku("Prince Harry, Duke of Sussex", tmp_path / "phi", phi=True)
    assert (out / "Target" / "10_Prince_Harry,_Duke_of_Sussex" / "positive_phi.json").exists()
    b = load_benchmark(f"rwku:{out}", corpus_variant="phi")
    assert [c.text for c in b.targets[0].factual_corpus] == ["Prince Harry, Duke of Sussex phi fact."]


def test_fetch_refuses_to_mix_revisions(fake_hub, tmp_path):
    out = hub.fetch_rwku("1", tmp_path / "data")
    with pytest.raises(UserError, match="from revision .* not 'main'"):
        hub.fetch_rwku("10", out, revision="main")


def test_unknown_targets(fake_hub, tmp_path):
    with pytest.raises(UserError, match="no target with index 300"):
        hub.fetch_rwku("300", tmp_path / "data")
    with pytest.raises(UserError, match="no target named 'Nobody'"):
        hub.fetch_rwku(["Nobody"], tmp_path / "data")
    assert not (tmp_path / "data" / ".rwkuplus_source.json").exists()


@pytest.mark.parametrize("error", [
    OfflineModeIsEnabled("offline mode is enabled"),
    ConnectionError("Name or service not known"),
    type("ConnectError", (Exception,), {"__module__": "httpx"})("[Errno -2] Name or service not known"),
])
def test_offline_is_one_clear_sentence(monkeypatch, tmp_path, error):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(hub, "list_repo_files", broken)
    with pytest.raises(UserError) as e:
        hub.fetch_rwku("1-10", tmp_path / "data")
    assert str(e.value).startswith("Cannot reach the Hugging Face hub to list the dataset's files")
    assert "rwku:DIR" in str(e.value) and "\n" not in str(e.value)


def test_unknown_revision(monkeypatch, tmp_path):
    error = RevisionNotFoundError.__new__(RevisionNotFoundError)
    Exception.__init__(error, "404")

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(hub, "list_repo_files", broken)
    with pytest.raises(UserError, match="has no revision 'v9'"):
        hub.fetch_rwku("1", tmp_path / "data", revision="v9")


def test_a_bug_is_not_disguised_as_offline(monkeypatch, tmp_path):
    def buggy(*args, **kwargs):
        raise TypeError("unexpected keyword")

    monkeypatch.setattr(hub, "list_repo_files", buggy)
    with pytest.raises(TypeError):
        hub.fetch_rwku("1", tmp_path / "data")


def test_cli_rwku(fake_hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RWKUPLUS_HOME", str(tmp_path / "home"))
    assert main(["data", "rwku", "--targets", "24"]) == 0
    assert (tmp_path / "home" / "rwku" / "Target" / "24_Beyoncé" / "forget_level1.json").exists()
    assert [d.name for d in load_benchmark("rwku").targets] == ["Beyoncé"]
    assert main(["data", "rwku", "--targets", "1", "--revision", "other"]) == 2
    assert "not 'other'" in capsys.readouterr().err
