"""``rwkuplus diagnose`` end to end on the tiny model and the world, the probe along training, the heatmap."""

import json

import numpy as np
import pytest
import torch

from rwkuplus.benchmark.records import TrainExample
from rwkuplus.cli import main
from rwkuplus.diagnostics.conflict import cosine_matrix
from rwkuplus.diagnostics.gradients import gradient_gram, loop_gram
from rwkuplus.diagnostics.heatmap import label_order, plot_cosine_heatmap
from rwkuplus.diagnostics.runner import ConflictTracker, conflict_probe
from rwkuplus.sequences import encode_examples

TEXTS = ["Alice Smith was born in Lyon.", "Alice Smith was born in Oslo.", "Alice Smith is a painter.",
         "Alice Smith is a sculptor.", "The quick brown fox."]


def test_diagnose_writes_measures_and_heatmap(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "diag"
    code = main(["diagnose", "--model", str(tiny_model_dir), "--targets", "1", "--max-examples", "10",
                 "--retain", "3", "--params", "layers:0-1", "--layer-block", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    (name, row), = summary["targets"].items()
    folder = out / row["folder"]
    result = json.loads((folder / "conflict.json").read_text())
    assert (folder / "cosine.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["target"] == name and result["method"] == "cft-sft" and result["unit"] == "attribute"
    labels, roles = result["labels"], result["roles"]
    n = len(labels)
    assert roles.count("retain") == 3 and labels[-3:] == ["retain"] * 3
    forget_labels = labels[:-3]
    attributes = sorted(set(forget_labels))
    assert len(attributes) >= 3 and all(forget_labels.count(a) == forget_labels.count(attributes[0]) for a in attributes)
    C = np.array(result["cosine"])
    assert C.shape == (n, n) and np.allclose(C, C.T, atol=1e-5) and np.allclose(np.diag(C), 1, atol=1e-4)
    overall = result["measures"]["overall"]
    assert overall["forget"]["n"] == n - 3 and overall["retain"]["n"] == 3
    assert -1 <= overall["forget_retain_alignment"] <= 1
    # the JSON numbers are those of the cosine matrix it holds
    f = [i for i, r in enumerate(roles) if r == "forget"]
    upper = np.triu_indices(len(f), 1)
    Cf = C[np.ix_(f, f)][upper]
    assert overall["forget"]["all_pairs"]["mean_cosine"] == pytest.approx(Cf.mean(), abs=1e-4)
    assert overall["forget"]["all_pairs"]["conflict_ratio"] == pytest.approx((Cf < 0).mean())
    assert "same_label_pairs" in overall["forget"]
    assert set(result["measures"]["per_layer"]) == {"layers.0-1"}
    assert result["parameters"]["groups"] == ["layers.0", "layers.1"]
    assert "CR_same" in capsys.readouterr().out


def test_diagnose_text_unit_other_method_and_projection(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "diag"
    code = main(["diagnose", "--model", str(tiny_model_dir), "--targets", "1", "--method", "ga",
                 "--unit", "text", "--max-examples", "4", "--project", "64", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["targets"].values()
    result = json.loads((out / row["folder"] / "conflict.json").read_text())
    assert result["unit"] == "text" and result["corpus"] == "forget" and result["labels"] is None
    assert result["engine"]["project"] == 64 and result["measures"]["overall"]["n"] == 4


@pytest.mark.parametrize("argv, message", [
    (["--params", "layers:7-9"], "--params layers:7-9: the model has layers 0-1"),
    (["--params", "nonsense"], "--params: expected all"),
    (["--method", "nope"], "--method nope: unknown method"),
    (["--method", "ga", "--corpus", "consistent"], "--corpus: the method ga does not train"),
    (["--max-examples", "1"], "--max-examples: expected an integer of at least 2"),
    (["--project", "2"], "--project: expected at least 8"),
])
def test_diagnose_user_errors_are_one_sentence(tiny_model_dir, tmp_path, capsys, argv, message):
    code = main(["diagnose", "--model", str(tiny_model_dir), "--targets", "1", "--out", str(tmp_path / "o")] + argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and err.count("\n") == 1


def test_default_model_needs_the_subject_model(tmp_path, capsys, monkeypatch):
    import rwkuplus.subject

    monkeypatch.setattr(rwkuplus.subject, "subject_model_dir", lambda *a, **k: None)  # not built (no conversion)
    code = main(["diagnose", "--targets", "1", "--out", str(tmp_path / "o")])
    assert code == 2 and "rwkuplus subject" in capsys.readouterr().err


def test_conflict_probe_matches_the_loop_and_tracks_training(tiny_model_dir, tmp_path):
    from rwkuplus.methods.base import make_method
    from rwkuplus.models import load_model
    from rwkuplus.training.loop import train
    from rwkuplus.training.settings import TrainSettings

    model, tokenizer, _ = load_model(str(tiny_model_dir), device="cpu")
    examples = [TrainExample("", t) for t in TEXTS]
    groups = ["birthplace", "birthplace", "profession", "profession", "other"]
    probe = conflict_probe(model, tokenizer, examples, params="all", groups=groups, with_matrix=True)
    ref = loop_gram(model, encode_examples(tokenizer, examples), "all")
    assert np.allclose(probe["cosine"], cosine_matrix(ref.gram), atol=1e-4)
    assert probe["measures"]["overall"]["same_label_pairs"]["pairs"] == 2
    assert json.loads(json.dumps(probe)) == probe  # JSON-ready

    tracker = ConflictTracker(tokenizer, examples, tmp_path / "curve.jsonl", params="trainable", groups=groups,
                              project=256)
    settings = TrainSettings(lr=1e-2, max_steps=2, batch_size=2, warmup_steps=1, checkpoint_steps=(0, 2),
                             max_forget_nll_per_token=None)
    train(model, tokenizer, make_method("cft-sft"), {"counterfactual": examples[:4]}, settings,
          on_checkpoint=tracker)
    rows = [json.loads(line) for line in (tmp_path / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2]
    before, after = (r["measures"]["overall"]["all_pairs"]["mean_cosine"] for r in rows)
    assert before != after  # the model moved, and the probe sees it


def test_heatmap_orders_by_label(tmp_path):
    labels = ["b", "a", "b", "a", "c"]
    assert label_order(labels, 5) == [0, 2, 1, 3, 4]
    G = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    order = plot_cosine_heatmap(cosine_matrix(G @ G.T), tmp_path / "h.png", labels, title="t")
    assert order == [0, 2, 1, 3, 4] and (tmp_path / "h.png").stat().st_size > 1000
    plot_cosine_heatmap(np.eye(3), tmp_path / "plain.png", None, ["x", "y", "z"])
    assert (tmp_path / "plain.png").exists() and not list(tmp_path.glob(".*.tmp"))


def test_gram_of_a_method_loss_with_reference(tiny_model_dir):
    """NPO's per-item loss (needs pi_ref) through the registry: engine equals the loop."""
    from rwkuplus.diagnostics.gradients import LossPart
    from rwkuplus.diagnostics.runner import make_reference, method_loss
    from rwkuplus.methods.base import make_method
    from rwkuplus.models import load_model

    model, tokenizer, _ = load_model(str(tiny_model_dir), device="cpu")
    method = make_method("npo")
    reference = make_reference(method, model)
    items = [(TrainExample("", t),) for t in TEXTS]
    batch = method.encode(tokenizer, items, list(range(len(items))), 64)
    with torch.no_grad():  # move the model away from the reference so the NPO weights are not all equal
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    part = LossPart(batch, method_loss(method, method.corpora[0], reference))
    got, ref = gradient_gram(model, part, "all"), loop_gram(model, part, "all")
    assert (got.gram - ref.gram).abs().max() <= 1e-4 * ref.gram.abs().max()
