import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The tests use tiny models: one thread is as fast, and it keeps subprocesses (the run and DDP tests)
# from oversubscribing the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# dtype "auto" is float32 in the fast tests on every CPU (their exact comparisons are fp32's, and
# module-scoped fixtures load models before any function fixture runs); the bf16 path is tested with
# explicit dtypes, and the slow tests take the machine's own default (see _isolated_home).
_BF16_SET_HERE = "RWKUPLUS_CPU_BF16" not in os.environ
os.environ.setdefault("RWKUPLUS_CPU_BF16", "0")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama chat model saved as a local folder (safetensors + tokenizer + chat template)."""
    from rwkuplus.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture()
def tiny(tiny_model_dir):
    """``(model, tokenizer)`` freshly loaded from the tiny model folder (fp32, CPU)."""
    from rwkuplus.models import load_model

    model, tokenizer, _ = load_model(str(tiny_model_dir), device="cpu")
    return model, tokenizer


@pytest.fixture(autouse=True)
def _isolated_home(request, tmp_path, monkeypatch):
    """Each test gets its own RWKUPLUS_HOME unless it is slow (the slow tests share the real cache)."""
    if request.node.get_closest_marker("slow") is None:
        monkeypatch.setenv("RWKUPLUS_HOME", str(tmp_path / "rwkuplus_home"))
    elif _BF16_SET_HERE and "RWKUPLUS_CPU_BF16" in os.environ:
        monkeypatch.delenv("RWKUPLUS_CPU_BF16")  # the slow tests: the machine's own default dtype
