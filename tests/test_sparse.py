"""Sparse fine-tuning (training/sparse.py): Fisher scores, the top-fraction masks, and a loop whose
masked-out entries never move (in fp32 and through the bf16 path's fp32 masters)."""

import pytest
import torch

from rwkuplus.benchmark.records import TrainExample
from rwkuplus.methods import make_method
from rwkuplus.models import load_model
from rwkuplus.training import TrainSettings, train
from rwkuplus.training.loop import prepare_model
from rwkuplus.training.sparse import fisher_scores, masked_gradients, top_fraction_masks

FACTS = [TrainExample("", f"Alice Smith was born in {1960 + i} in Lyon.") for i in range(6)]


def test_top_fraction_masks_keep_the_largest_scores_over_all_tensors():
    scores = {"a": torch.tensor([[5.0, 0.1], [0.2, 4.0]]), "b": torch.tensor([3.0, 0.0, 0.3, 0.4])}
    masks = top_fraction_masks(scores, 0.25)  # 2 of 8 entries
    assert masks["a"].tolist() == [[True, False], [False, True]] and not masks["b"].any()
    masks = top_fraction_masks(scores, 0.5)  # 4 of 8: 5, 4, 3 and 0.4
    assert masks["b"].tolist() == [True, False, False, True] and int(masks["a"].sum()) == 2
    assert all(m.all() for m in top_fraction_masks(scores, 1.0).values())
    with pytest.raises(ValueError, match="fraction"):
        top_fraction_masks(scores, 0.0)


def test_fisher_scores_sum_squared_batch_gradients(tiny_model_dir):
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    settings = TrainSettings(mode="layers", layers="all")
    prepare_model(model, settings)
    method = make_method("sft", corpus_name="facts")
    items = [(e,) for e in FACTS]
    scores = fisher_scores(model, tok, method, "facts", items, max_length=64, batch_size=3)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(scores) == trained and not any("embed" in n for n in scores)  # only what is trained
    # By hand: two batches of three, each batch's gradient squared and added.
    name = next(n for n in scores if n.endswith("down_proj.weight"))
    param = dict(model.named_parameters())[name]
    expected = torch.zeros_like(param)
    for idx in ([0, 1, 2], [3, 4, 5]):
        model.zero_grad()
        batch = {"facts": method.encode(tok, items, idx, 64)}
        method.objective(method.forward(model, batch, None).parts).backward()
        expected += param.grad.square()
    assert torch.allclose(scores[name], expected, rtol=1e-4, atol=1e-10) and float(expected.sum()) > 0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_masked_out_entries_never_move_in_training(tiny_model_dir, dtype):
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu", dtype=dtype)
    settings = TrainSettings(lr=1e-2, max_steps=3, batch_size=2, warmup_ratio=0.0, schedule="constant",
                             mode="layers", layers="all")
    prepare_model(model, settings)
    method = make_method("sft", corpus_name="facts")
    scores = fisher_scores(model, tok, method, "facts", [(e,) for e in FACTS], max_length=64)
    masks = top_fraction_masks(scores, 0.1)
    start = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    with masked_gradients(model, masks):
        r = train(model, tok, method, {"facts": FACTS}, settings)
    assert r.steps == 3
    moved_in = moved_out = 0
    for n, p in r.model.named_parameters():
        delta = (p.detach().float() - start[n]) != 0
        if n in masks:
            moved_in += int((delta & masks[n]).sum())
            moved_out += int((delta & ~masks[n]).sum())
        else:
            assert not delta.any(), n  # frozen (the embeddings in layers mode)
    assert moved_out == 0 and moved_in > 0.5 * sum(int(m.sum()) for m in masks.values())
    # The hooks are gone after the block: masked-out entries get gradients again.
    model.zero_grad()
    items = [(e,) for e in FACTS]
    method.objective(method.forward(model, {"facts": method.encode(tok, items, [0, 1], 64)}, None).parts).backward()
    outside = sum(int(((p.grad != 0) & ~masks[n]).sum()) for n, p in model.named_parameters() if n in masks)
    assert outside > 0
