"""Every unlearning method behind one registry; see ``base`` for the interface.

``make_method(name, **params)``, ``method_class(name)`` and ``method_names()`` are the entry points.
"""

from .base import (  # noqa: F401
    BENCHMARK_CORPORA,
    Method,
    MethodOutput,
    Reference,
    make_method,
    method_class,
    method_names,
)
