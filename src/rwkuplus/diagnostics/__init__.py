"""Gradient-level knowledge-conflict diagnostics: per-example gradient Gram matrices and the measures."""
