"""RMU on the tiny random model: the loss against a hand computation, the trained parameters, a run."""

import copy

import pytest
import torch

from rwkuplus.benchmark.records import TrainExample
from rwkuplus.errors import UserError
from rwkuplus.methods import Reference, make_method, method_names
from rwkuplus.methods.rmu import random_direction, steered_parameters
from rwkuplus.training.loop import train
from rwkuplus.training.settings import TrainSettings

FORGET = ["Alice Smith was born in 1970 in Lyon.", "Her best-known work is The Silver Harbor, a painting."]
RETAIN = ["The quick brown fox jumps over the lazy dog.", "Who was born in which city?"]


def raw(texts):
    return [(TrainExample("", t),) for t in texts]


def hidden_by_hand(model, tok, text, layer):
    """Layer ``layer``'s output for one unpadded text, captured with a forward hook (not hidden_states)."""
    ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
    seen = {}
    handle = model.model.layers[layer].register_forward_hook(
        lambda m, i, o: seen.__setitem__("h", (o[0] if isinstance(o, tuple) else o).detach()))
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    return seen["h"][0].double()  # [T, H]


def test_rmu_loss_matches_hand_computation(tiny):
    model, tok = tiny
    model.eval()
    ref = copy.deepcopy(model)
    with torch.no_grad():  # the model has moved away from its reference
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    method = make_method("rmu", layer=0, update_layers="0", steering_coeff=4.0, alpha=7.0)
    batch = {"forget": method.encode(tok, raw(FORGET), [0, 1], 512), "retain": method.encode(tok, raw(RETAIN), [0, 1], 512)}
    with torch.no_grad():
        out = method.forward(model, batch, Reference.frozen(ref))
    u = random_direction(32, 0).double()
    assert abs(float(u.norm()) - 1) < 1e-6 and bool((u >= 0).all())
    for i, text in enumerate(FORGET):
        h = hidden_by_hand(model, tok, text, 0)
        want = float(((h - 4.0 * u) ** 2).mean())
        assert abs(float(out.parts["forget"][i]) - want) < 1e-4 * max(1, want)
    for i, text in enumerate(RETAIN):
        want = float(((hidden_by_hand(model, tok, text, 0) - hidden_by_hand(ref, tok, text, 0)) ** 2).mean())
        assert abs(float(out.parts["retain"][i]) - want) < 1e-5 * max(1, want)
        assert want > 0
    total = method.objective(out.parts)
    assert abs(float(total) - (float(out.parts["forget"].mean()) + 7.0 * float(out.parts["retain"].mean()))) < 1e-5
    # At the reference itself the retain term is exactly zero.
    with torch.no_grad():
        same = method.forward(ref, {"retain": batch["retain"]}, Reference.frozen(copy.deepcopy(ref)))
    assert float(same.parts["retain"].abs().max()) < 1e-10


def test_rmu_trains_only_down_proj_of_its_layers_and_moves_toward_the_direction(tiny):
    model, tok = tiny
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = make_method("rmu", layer=0, update_layers="0", steering_coeff=5.0, alpha=1.0)
    assert steered_parameters(model, method) == ["model.layers.0.mlp.down_proj.weight"]
    settings = TrainSettings(lr=0.2, max_steps=8, batch_size=2, warmup_ratio=0.0, schedule="constant")
    result = train(model, tok, method, {"forget": raw(FORGET), "retain": raw(RETAIN)}, settings)
    changed = sorted(n for n, p in result.model.named_parameters() if not torch.equal(p.detach(), start[n]))
    assert changed == ["model.layers.0.mlp.down_proj.weight"]
    forget = [row["parts"]["forget"] for row in result.log]
    # the forget activations approach c * u (slowly: the tiny model's MLP activations are small)
    assert all(b < a for a, b in zip(forget, forget[1:])) and forget[-1] < 0.85 * forget[0]
    assert result.log[0]["parts"]["retain"] < 1e-10  # the first step starts at the reference
    assert result.cost.reference_forward_passes == 8


def test_rmu_is_registered_with_checked_params(tiny):
    assert "rmu" in method_names("unlearning")
    auto = make_method("rmu")
    assert auto.steered_layer(30) == 7 and auto.updated_layers(30) == [5, 6, 7]  # WMDP's choice on deep models
    assert auto.steered_layer(2) == 0 and auto.updated_layers(2) == [0]  # the tiny model: the layer before the last
    model, _ = tiny
    assert steered_parameters(model, auto) == ["model.layers.0.mlp.down_proj.weight"]
    assert make_method("rmu", layer=7, update_layers="6-7").updated_layers(2) == [6, 7]  # given: kept as given
    with pytest.raises(UserError, match="steering_coeff"):
        make_method("rmu", steering_coeff=0)
    with pytest.raises(UserError, match="after the steered layer"):
        make_method("rmu", layer=3, update_layers="2-4")
    model, tok = tiny
    method = make_method("rmu", layer=1, update_layers="1")  # the last of 2 layers: after the final norm
    batch = {"forget": method.encode(tok, raw(FORGET), [0], 512)}
    with pytest.raises(UserError, match="decoder layers"):
        method.forward(model, batch, None)
