"""Per-method training settings, in ONE place: the default-model defaults and RWKU's Llama-3 preset.

- ``default`` (SmolLM2-135M-Instruct, the embedded default): full fine-tuning learning rates chosen
  by the sweep of ``scripts/sweep_defaults.py`` on the default world, in the default dtype (bf16 on
  a CPU with fast bf16) at the default run's 12 steps (``docs/defaults.md``: the smallest learning
  rate of each method's grid that halves Forget All); LoRA learning rates 10x (not swept); 3 epochs,
  batch 4, cosine schedule with 10% warm-up. GA+KL, NPO+GD and NPO+KL take their family's rate (not
  swept).
- ``rwku-llama3``: RWKU's Llama-3-8B-Instruct settings (rwku-format.md): 3 epochs, cosine, 20
  warm-up steps, cut-off 512 tokens; full learning rates GA 6e-8 (batch 8), NPO 2e-6 (batch 16),
  DPO 5e-6 (batch 8), RT 4e-7 (batch 8); LoRA GA 1e-5, DPO 6e-5, NPO 5e-5, RT 3e-5 (rank 8,
  alpha 16, q_proj and v_proj). RWKU has no setting for the methods it did not run; those take
  the setting of the closest RWKU method (named in ``RWKU_FAMILY``).
The loss hyperparameters (beta, gamma, weights) are each method's ``Params`` defaults.
"""

from __future__ import annotations

from ..errors import UserError
from ..models import LoraSettings
from ..training.settings import TrainSettings

PRESETS = ("default", "rwku-llama3")

# method -> (full fine-tuning lr, LoRA lr, batch size)
DEFAULT_MODEL_SETTINGS: dict[str, tuple[float, float, int]] = {
    "ga": (1e-4, 1e-3, 4),
    "gd": (1e-4, 1e-3, 4),
    "ga-kl": (1e-4, 1e-3, 4),
    "npo": (1.5e-4, 1.5e-3, 4),
    "npo-gd": (1.5e-4, 1.5e-3, 4),
    "npo-kl": (1.5e-4, 1.5e-3, 4),
    "simnpo": (1e-4, 1e-3, 4),
    "rt": (1e-4, 1e-3, 4),
    "cft-sft": (1e-4, 1e-3, 4),
    # CFT-SFT's remedies (issue 18) take CFT-SFT's rate, so that only the remedy differs (not swept).
    "cft-pcgrad": (1e-4, 1e-3, 4),
    "cft-gru": (1e-4, 1e-3, 4),
    "cft-honest": (1e-4, 1e-3, 4),
    "cft-dpo": (3e-4, 3e-3, 4),
    "altpo": (3e-4, 3e-3, 4),
    "sft": (1e-4, 1e-3, 4),
    "rmu": (5e-3, 1e-3, 4),  # only three layers' mlp.down_proj train (methods/rmu.py); not swept
    "icu": (1e-4, 1e-3, 4),  # never trains; kept so every method has an entry
}

RWKU_LLAMA3_SETTINGS: dict[str, tuple[float, float, int]] = {
    "ga": (6e-8, 1e-5, 8),
    "npo": (2e-6, 5e-5, 16),
    "cft-dpo": (5e-6, 6e-5, 8),
    "rt": (4e-7, 3e-5, 8),
    "rmu": (5e-5, 1e-4, 4),  # not RWKU's (it did not run RMU): WMDP's Zephyr-7B setting, lr 5e-5, batch 4
}
RWKU_FAMILY = {
    "ga": "ga", "gd": "ga", "ga-kl": "ga", "npo": "npo", "npo-gd": "npo", "npo-kl": "npo",
    "simnpo": "npo", "rt": "rt", "cft-sft": "rt", "cft-dpo": "cft-dpo", "altpo": "cft-dpo", "sft": "rt",
    "icu": "ga", "rmu": "rmu", "cft-pcgrad": "rt", "cft-gru": "rt", "cft-honest": "rt",
}


def default_settings(method: str, mode: str = "full", preset: str = "default") -> TrainSettings:
    """The training settings a method starts from, before command-line overrides."""
    if preset not in PRESETS:
        raise UserError(f"--preset: expected one of {', '.join(PRESETS)}, got {preset!r}.")
    if preset == "default":
        if method not in DEFAULT_MODEL_SETTINGS:
            raise UserError(f"--method {method}: no default training settings for this method.")
        full_lr, lora_lr, batch = DEFAULT_MODEL_SETTINGS[method]
        settings = TrainSettings(epochs=3.0, batch_size=batch, warmup_ratio=0.1, schedule="cosine", max_length=512)
    else:
        if method not in RWKU_FAMILY:
            raise UserError(f"--method {method}: no RWKU setting for this method.")
        full_lr, lora_lr, batch = RWKU_LLAMA3_SETTINGS[RWKU_FAMILY[method]]
        settings = TrainSettings(epochs=3.0, batch_size=batch, warmup_steps=20, schedule="cosine", max_length=512)
    lr = lora_lr if mode == "lora" else full_lr
    return settings.replace(lr=lr, mode=mode, lora=LoraSettings(rank=8, alpha=16, target_modules=("q_proj", "v_proj")))
