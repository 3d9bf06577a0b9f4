"""The training loop under 2 CPU processes (gloo DDP via torch.distributed.run) equals 1 process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "ddp_check.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process(tiny_model_dir, tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import ddp_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    threads = torch.get_num_threads()
    try:
        ddp_check.main(str(tiny_model_dir), str(tmp_path / "one"))  # the 1-process baseline, in this process
    finally:
        torch.set_num_threads(threads)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(SCRIPT), str(tiny_model_dir), str(tmp_path / "two")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    start = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    for method in ("gd", "npo-kl"):
        one = json.loads((tmp_path / "one" / f"{method}.json").read_text())
        two = json.loads((tmp_path / "two" / f"{method}.json").read_text())
        assert one["processes"] == 1 and two["processes"] == 2
        # Every rank drew different items, and together they drew exactly the 1-process batches.
        rank0, rank1 = two["seen_forget"]
        per_step = 2  # 4 items per step, 2 per rank
        for s in range(3):
            a, b = rank0[s * per_step:(s + 1) * per_step], rank1[s * per_step:(s + 1) * per_step]
            assert not set(a) & set(b)
            assert a + b == one["seen_forget"][0][s * 4:(s + 1) * 4]
        assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
        assert two["cost"]["tokens_trained"] == one["cost"]["tokens_trained"]
        assert two["cost"]["optimizer_steps"] == one["cost"]["optimizer_steps"] == 3
        x = load_file(str(tmp_path / "one" / f"{method}.safetensors"))
        y = load_file(str(tmp_path / "two" / f"{method}.safetensors"))
        moved = sum(float(((x[k] - start[k]) ** 2).sum()) for k in x) ** 0.5
        diff = sum(float(((x[k] - y[k]) ** 2).sum()) for k in x) ** 0.5
        assert moved > 0.1 and diff < 1e-4 * moved, (method, diff, moved)
    # Gradient surgery (Method.step_loss) under DDP: the same micro-batches as 2 accumulation steps on 1 process.
    one = json.loads((tmp_path / "one" / "cft-pcgrad.json").read_text())
    two = json.loads((tmp_path / "two" / "cft-pcgrad.json").read_text())
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert one["cost"]["gradient_passes"] == two["cost"]["gradient_passes"] == 6  # a pass per micro-batch
    x = load_file(str(tmp_path / "one" / "cft-pcgrad.safetensors"))
    y = load_file(str(tmp_path / "two" / "cft-pcgrad.safetensors"))
    moved = sum(float(((x[k] - start[k]) ** 2).sum()) for k in x) ** 0.5
    diff = sum(float(((x[k] - y[k]) ** 2).sum()) for k in x) ** 0.5
    assert moved > 0.1 and diff < 1e-4 * moved, ("cft-pcgrad", diff, moved)
