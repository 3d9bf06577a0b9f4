"""RWKU+: a benchmark and diagnostic toolkit for LLM unlearning."""

__version__ = "0.1.0"
