"""Check that the training loop gives the same result on N processes as on one.

    accelerate launch --num_processes 2 --cpu scripts/ddp_check.py MODEL_DIR OUT_DIR     # 2 CPU processes
    python scripts/ddp_check.py MODEL_DIR OUT_DIR                                       # the 1-process baseline

Trains GD (forget + retain corpora, reference-free), NPO-KL (cached reference log-probs plus
run-time reference logits) and CFT-PCGrad (gradient surgery through ``Method.step_loss``, within
each micro-batch of 2: 2 accumulation steps on one process, 1 on each of 2) for a few steps with a
fixed global batch, then writes from rank 0
``OUT_DIR/<method>.safetensors`` (the trained weights) and ``OUT_DIR/<method>.json`` (losses, and
the item indices every rank trained on). ``tests/test_ddp.py`` runs both and compares them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def examples():
    from rwkuplus.benchmark.records import TrainExample

    forget = [TrainExample("", f"Alice Smith was born in {1960 + i} in Lyon.") for i in range(8)]
    retain = [TrainExample("", f"The quick brown fox number {i} jumps.") for i in range(8)]
    return {"forget": forget, "retain": retain, "counterfactual": forget}


def main(model_dir: str, out_dir: str) -> None:
    from accelerate import Accelerator
    from safetensors.torch import save_file

    from rwkuplus.methods import make_method
    from rwkuplus.models import load_model
    from rwkuplus.training import TrainSettings, train

    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    out = Path(out_dir)
    for name in ("gd", "npo-kl", "cft-pcgrad"):
        device = accelerator.device.type if accelerator.device.type == "cpu" else str(accelerator.device)
        model, tok, _ = load_model(model_dir, device=device)
        # Surgery compares the samples of one micro-batch: the same micro-batches of 2 on 1 or 2 processes.
        accum = max(1, 2 // accelerator.num_processes) if name == "cft-pcgrad" else 1
        settings = TrainSettings(lr=1e-3, max_steps=3, batch_size=4, warmup_ratio=0.0, schedule="linear", seed=3,
                                 grad_accum=accum)
        result = train(model, tok, make_method(name), examples(), settings, accelerator=accelerator)
        mine = torch.tensor(result.seen[make_method(name).corpora[0]], device=accelerator.device)
        everyone = accelerator.gather(mine.unsqueeze(0)).cpu().tolist()  # [processes, items]
        if accelerator.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
            state.pop("lm_head.weight", None)  # tied to the embeddings
            save_file(state, str(out / f"{name}.safetensors"))
            (out / f"{name}.json").write_text(json.dumps({
                "processes": accelerator.num_processes, "losses": [e["loss"] for e in result.log], "parts": [e["parts"] for e in result.log],
                "seen_forget": everyone, "cost": result.to_json()["cost"],
            }))
        accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
