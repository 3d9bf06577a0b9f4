"""Evaluators: batched generation, RWKU's probe metrics, MIA, utility and hallucination."""
