"""Which parameters a gradient diagnostic looks at: the ``--params`` option.

Spec grammar (one of):

- ``all``: every parameter of the model, base weights and adapters alike. A tied weight (the default
  model ties ``lm_head`` to ``embed_tokens``) is one parameter, listed once under its first name;
  its gradient is the sum of both uses, which the engine handles.
- ``trainable``: the parameters with ``requires_grad`` (what the training loop updates).
- ``lora``: the LoRA parameters (names containing ``lora_``), trainable or not.
- ``auto``: ``lora`` when the model has LoRA parameters, else ``all``.
- ``layers:RANGES[:MODULES]``: the parameters under ``layers.<i>.`` for ``i`` in RANGES (comma
  separated indices or inclusive ranges ``a-b``), optionally only those of modules whose path
  contains one of MODULES (comma separated, e.g. ``layers:15-29:mlp.down_proj``). In a LoRA model
  this includes the adapters of those layers (add ``:lora_`` to keep only them).

Each selected parameter carries a *layer group*: ``layers.<i>`` for a transformer block, else the
module's own name (``embed_tokens``, ``norm``, ``lm_head``): the per-layer measures are per group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..errors import UserError

PARAMS_HELP = (
    "all, trainable, lora, auto (lora if the model has LoRA parameters, else all) or "
    "layers:A-B[,C...][:MODULE,...] (e.g. layers:15-29:mlp.down_proj)"
)
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_RANGES = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_PREFIXES = ("base_model.model.", "model.")


@dataclass
class ParameterSet:
    """The selected parameters, in model order, each once (tied weights under their first name)."""

    spec: str
    names: list[str]
    params: list[torch.nn.Parameter]
    groups: list[str]  # layer group of each parameter
    aliases: dict[str, list[str]] = field(default_factory=dict)  # name -> every name of a tied parameter

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)

    def group_names(self) -> list[str]:
        """Layer groups in model order, each once."""
        return list(dict.fromkeys(self.groups))

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "parameters": len(self.names),
            "numel": self.numel,
            "groups": self.group_names(),
            "tied": {k: v for k, v in self.aliases.items() if len(v) > 1},
        }


def layer_index(name: str) -> int | None:
    """The transformer block a parameter name belongs to (``...layers.<i>....``), or None."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def layer_group(name: str) -> str:
    """``layers.<i>`` for a block's parameter, else the owning module's short name (``embed_tokens``)."""
    i = layer_index(name)
    if i is not None:
        return f"layers.{i}"
    module = name.rsplit(".", 1)[0] if "." in name else name
    for prefix in _PREFIXES:
        while module.startswith(prefix):
            module = module[len(prefix):]
    return module


def _all_parameters(model) -> tuple[list[str], list[torch.nn.Parameter], dict[str, list[str]]]:
    names: list[str] = []
    params: list[torch.nn.Parameter] = []
    aliases: dict[str, list[str]] = {}
    first: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        key = id(p)
        if key in first:
            aliases[first[key]].append(name)
            continue
        first[key] = name
        aliases[name] = [name]
        names.append(name)
        params.append(p)
    return names, params, aliases


def _parse_ranges(text: str, spec: str) -> list[int]:
    if not _RANGES.match(text):
        raise UserError(f"--params {spec}: expected layer indices like 10-15 or 3,5,7-9 after 'layers:'.")
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        lo, hi = int(a), int(b) if b else int(a)
        if hi < lo:
            raise UserError(f"--params {spec}: the range {part} is empty (write the lower index first).")
        out.extend(range(lo, hi + 1))
    return sorted(set(out))


def select_parameters(model, spec: str = "all") -> ParameterSet:
    """Resolve a ``--params`` spec against ``model`` (see the module docstring); a bad spec is a UserError."""
    spec = (spec or "all").strip()
    names, params, aliases = _all_parameters(model)
    has_lora = any("lora_" in n for n in names)
    kind, _, rest = spec.partition(":")
    if kind == "auto" and not rest:
        kind = spec = "lora" if has_lora else "all"
    if kind == "all" and not rest:
        keep = [True] * len(names)
    elif kind == "trainable" and not rest:
        keep = [p.requires_grad for p in params]
        if not any(keep):
            raise UserError("--params trainable: no parameter of the model requires a gradient (use all or lora).")
    elif kind == "lora" and not rest:
        keep = ["lora_" in n for n in names]
        if not any(keep):
            raise UserError("--params lora: the model has no LoRA parameters (load an adapter with --adapter, "
                            "or use all).")
    elif kind == "layers" and rest:
        ranges, _, modules_text = rest.partition(":")
        wanted = _parse_ranges(ranges, spec)
        present = sorted({i for n in names if (i := layer_index(n)) is not None})
        if not present:
            raise UserError(f"--params {spec}: the model has no parameters named like 'layers.<i>.'.")
        missing = [i for i in wanted if i not in present]
        if missing:
            raise UserError(f"--params {spec}: the model has layers {present[0]}-{present[-1]}; "
                            f"no layer {missing[0]}.")
        modules = [m.strip().strip(".") for m in modules_text.split(",")] if modules_text else []
        if modules_text and not all(modules):
            raise UserError(f"--params {spec}: expected comma-separated module names after the second ':'.")
        keep = []
        for n in names:
            ok = layer_index(n) in wanted
            if ok and modules:
                path = "." + n + "."
                ok = any(f".{m}." in path or f".{m}" in path and m.startswith("lora_") for m in modules)
            keep.append(ok)
        if not any(keep):
            sample = sorted({n.split(f"layers.{wanted[0]}.", 1)[1].rsplit(".", 1)[0]
                             for n in names if layer_index(n) == wanted[0]})
            raise UserError(f"--params {spec}: no parameter of layers {ranges} matches "
                            f"{', '.join(modules)}; modules there: {', '.join(sample)}.")
    else:
        raise UserError(f"--params: expected {PARAMS_HELP}; got {spec!r}.")
    chosen = [i for i, k in enumerate(keep) if k]
    return ParameterSet(
        spec=spec,
        names=[names[i] for i in chosen],
        params=[params[i] for i in chosen],
        groups=[layer_group(names[i]) for i in chosen],
        aliases={names[i]: aliases[names[i]] for i in chosen},
    )
