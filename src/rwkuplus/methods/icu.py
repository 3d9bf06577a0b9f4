"""In-context unlearning (ICU): no training; the evaluators prepend RWKU's unlearning instruction."""

from __future__ import annotations

from .base import Method, MethodOutput, register


@register
class ICU(Method):
    name = "icu"
    description = "In-context unlearning: no training, an unlearning instruction before every prompt."
    corpora = ()
    trains = False
    icu = True

    def forward(self, model, batch, reference=None) -> MethodOutput:
        return MethodOutput({}, {})
