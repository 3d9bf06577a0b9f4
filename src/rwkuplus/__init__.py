"""RWKU+: a benchmark and diagnostic toolkit for LLM unlearning."""

__version__ = "0.1.0"

# torchao (the quantization attack) is imported by peft whenever it is installed, and then logs a warning
# for each CUDA kernel library a CPU build cannot load and a deprecation notice per enum it registers:
# noise on every command, about code the CPU never runs. Only its errors are shown.
import logging as _logging

for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
del _logging, _name
