"""The Method interface, the reference model, and the registry of unlearning methods.

A method is a small class whose whole job is its loss. It declares

- ``name`` (the registry key, e.g. ``npo-gd``) and a one-line ``description``;
- ``Params``: a dataclass of its hyperparameters with defaults (beta, gamma, retain weight, ...);
- ``corpora``: the training corpora it reads, by name. The names a benchmark can provide are
  ``forget`` (the target's factual text, RWKU's positive.json, raw text), ``retain`` (the
  benchmark's retain text, raw), ``counterfactual`` (the target's counterfactual corpus, raw; which
  one is the method's ``corpus`` parameter, ``conflicting`` = RWKU's construction,
  ``consistent``, or ``filtered``: the conflicting corpus's samples that agree with its majority
  fabricated profile, ``benchmark/consistency.py``), ``preference`` (DPO pairs, chat prompt +
  response + end-of-turn), ``refusal`` (question + refusal, chat formatted) and ``honesty``
  (questions about people who do not exist + refusal, disjoint from the hallucination suite's
  questions: the honesty anchor). ``rwkuplus.training.data`` builds them;
  other callers (knowledge injection) pass their own corpora under any name the method declares.
  The FIRST corpus is the primary one: it defines an epoch; the others are sampled alongside it.
- ``needs_reference``: whether it compares against pi_ref, the frozen starting model;
  ``reference_corpora`` are the corpora whose fixed reference log-probabilities it needs (these
  are computed once before training: the reference is frozen and the examples are fixed), and
  ``reference_logits_corpora`` the corpora on which it needs the reference's full next-token
  distribution at run time (the KL regulariser).

Data. A corpus is a list of *items*; an item is a tuple of ``TrainExample``s of the corpus's fixed
``group_size(corpus)`` (1 for plain text; 2 = (chosen, rejected) for DPO; K + 1 =
(alternative_1..K, rejected) for AltPO). ``Method.encode(tokenizer, items, indices, max_length)``
turns the items at ``indices`` into the batch of one corpus: the tensors of
``rwkuplus.sequences.encode_examples`` over the flattened examples ``[B * G, T]`` (item-major),
plus ``index`` (``[B * G]``, each example's flat position ``item * G + g`` in its corpus, the key of
the reference cache) and ``group`` (G, an int).

The loss. ``method.loss_parts(model, batch, reference)`` takes ``batch = {corpus_name: encoded
batch}`` and returns ``{part_name: tensor [B]}``: each part is PER ITEM (one value per item of the
part's corpus, not reduced), so per-example gradients of one part are just the gradients of its
entries. Parts whose corpus is absent from ``batch`` are skipped, so a batch holding only
``{"forget": ...}`` yields just the forget part (what the gradient diagnostics do). The training
objective is ``method.objective(parts) = sum over parts of part_weights()[part] * parts[part].mean()``.
``method.forward(...)`` returns the same parts plus a few detached statistics (for example
``forget_nll_per_token``, which the divergence guard watches).

Notation (docs/rwku-plus.md): l(x, y) = summed token NLL of the response y; log pi(y|x) = -l.
Every log-probability comes from ``rwkuplus.sequences.sequence_logprobs`` / ``token_logprobs``.

The reference (``Reference``): under LoRA it is the same model with its adapter disabled (no second
copy); otherwise a frozen copy, or nothing at all when only fixed log-probabilities are needed and
those were computed before training (``Reference.precompute``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Sequence

import torch

from ..benchmark.records import TrainExample
from ..errors import UserError
from ..sequences import encode_examples, sequence_logprobs, token_logprobs

Item = tuple  # a tuple of TrainExample (one corpus item)

#: Corpus names that ``rwkuplus.training.data`` can build from a benchmark.
BENCHMARK_CORPORA = ("forget", "retain", "counterfactual", "preference", "refusal", "honesty")
CORPUS_VARIANTS = ("conflicting", "consistent", "filtered")


@dataclass
class NoParams:
    """This method has no hyperparameters."""


@dataclass
class MethodOutput:
    """Per-item loss parts (each ``[B]``, with grad) and detached float statistics."""

    parts: dict[str, torch.Tensor]
    stats: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- reference
def unwrap(model):
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


class Reference:
    """Where pi_ref's numbers come from.

    - ``Reference.adapter(model)``: ``model`` is a peft model; the reference is the same model with
      its adapter disabled (``with model.disable_adapter():``).
    - ``Reference.frozen(ref_model)``: a separate frozen model (a copy of the starting model).
    - ``Reference.none()``: no live reference; only precomputed log-probabilities.
    ``precompute(method, corpus, tokenizer, items, max_length)`` stores the reference log-probability
    of every example of a fixed corpus, after which ``sequence_logprobs`` answers from that cache.
    Counters: ``forward_passes`` and ``tokens`` of the reference's own forward passes.
    """

    def __init__(self, model=None, *, use_adapter: bool = False, autocast=None):
        self.model = model
        self.use_adapter = use_adapter
        self.cache: dict[str, torch.Tensor] = {}
        self.forward_passes = 0
        self.tokens = 0
        self.autocast = autocast or contextlib.nullcontext

    @classmethod
    def adapter(cls, model, autocast=None) -> Reference:
        base = unwrap(model)
        if not hasattr(base, "disable_adapter"):
            raise ValueError("Reference.adapter needs a peft model (one with disable_adapter()).")
        return cls(base, use_adapter=True, autocast=autocast)

    @classmethod
    def frozen(cls, ref_model, autocast=None) -> Reference:
        ref_model.eval()
        for p in ref_model.parameters():
            p.requires_grad_(False)
        return cls(ref_model, autocast=autocast)

    @classmethod
    def none(cls) -> Reference:
        return cls(None)

    @property
    def live(self) -> bool:
        return self.model is not None

    def _context(self):
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(self.autocast())
        if self.use_adapter:
            stack.enter_context(self.model.disable_adapter())
        return stack

    def logits(self, enc: dict) -> torch.Tensor:
        """The reference's next-token logits on an encoded batch (no grad)."""
        if self.model is None:
            raise RuntimeError("This method needs the reference's logits at run time, but no live reference was given.")
        with self._context():
            out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        self.forward_passes += 1
        self.tokens += int(enc["attention_mask"].sum())
        return out.float()

    def sequence_logprobs(self, corpus: str, enc: dict) -> torch.Tensor:
        """Summed reference log-probability of each encoded example (``[B * G]``)."""
        if corpus in self.cache:
            return self.cache[corpus].to(enc["input_ids"].device)[enc["index"].to(enc["input_ids"].device)]
        return self._logprobs(enc)

    def _logprobs(self, enc: dict) -> torch.Tensor:
        logps, _ = token_logprobs(self.logits(enc), enc["labels"])
        return logps.sum(-1)

    def precompute(self, method: Method, corpus: str, tokenizer, items: Sequence[Item], max_length: int,
                   batch_size: int = 16) -> None:
        """Cache the reference log-probability of every example of a fixed corpus."""
        if self.model is None:
            raise RuntimeError("Reference.precompute needs a live reference model.")
        device = next(self.model.parameters()).device
        values = []
        for start in range(0, len(items), batch_size):
            idx = list(range(start, min(start + batch_size, len(items))))
            enc = method.encode(tokenizer, items, idx, max_length)
            enc = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in enc.items()}
            values.append(self._logprobs(enc).cpu())
        self.cache[corpus] = torch.cat(values) if values else torch.zeros(0)


# ------------------------------------------------------------------------------------------- method
class Method:
    """Base class: subclasses set the class attributes and implement ``forward``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    corpora: ClassVar[tuple[str, ...]] = ()
    needs_reference: ClassVar[bool] = False
    reference_corpora: ClassVar[tuple[str, ...]] = ()
    reference_logits_corpora: ClassVar[tuple[str, ...]] = ()
    trains: ClassVar[bool] = True
    icu: ClassVar[bool] = False
    #: "unlearning" methods are offered by ``rwkuplus unlearn``; "tuning" ones (plain SFT) serve the API.
    kind: ClassVar[str] = "unlearning"

    def __init__(self, params: Any = None, **overrides):
        if params is None:
            params = self.Params()
        elif not isinstance(params, self.Params):
            raise TypeError(f"{self.name}: params should be a {self.Params.__name__}.")
        if overrides:
            params = dataclasses.replace(params, **_coerce_params(self, overrides))
        self.params = params
        self.validate()

    # -- what subclasses may override ----------------------------------------------------------
    def validate(self) -> None:
        """Raise UserError for impossible hyperparameters."""
        variant = getattr(self.params, "corpus", None)
        if "counterfactual" in self.corpora and variant not in CORPUS_VARIANTS:
            raise UserError(f"--corpus: expected one of {', '.join(CORPUS_VARIANTS)}; got {variant!r}.")

    def group_size(self, corpus: str) -> int:
        return 1

    def part_weights(self) -> dict[str, float]:
        """Weight of each loss part in the objective (absent = 1)."""
        return {}

    def trainable_parameter(self, name: str, model=None) -> bool:
        """Whether the loop may train the parameter ``name`` of ``model`` in full and layers modes (RMU
        trains only a few layers' MLP); every parameter by default. LoRA adapters ignore it."""
        return True

    def forward(self, model, batch: dict[str, dict], reference: Reference | None) -> MethodOutput:
        raise NotImplementedError

    def step_loss(self, model, batch: dict[str, dict], out: MethodOutput, reference: Reference | None,
                  objective: torch.Tensor, cost=None) -> torch.Tensor:
        """The loss the training loop back-propagates for this micro-batch: ``objective`` (=
        ``self.objective(out.parts)``) unless a gradient-level method overrides it.

        The hook for methods that change the gradient itself (``methods/surgery.py``). Such a method
        returns a loss whose gradient IS the modified gradient, e.g. sum_i w_i l_i with detached
        weights computed from per-example gradients (the Gram engine), so the loop's one backward,
        gradient accumulation, DDP, LoRA, clipping and the optimizer step stay as they are. It adds
        what its extra passes cost to ``cost`` (``gradient_passes``, ``gradient_tokens``,
        ``gradient_seconds`` of the loop's ``TrainCost``; ``cost`` may be None outside the loop).
        """
        return objective

    # -- shared machinery -----------------------------------------------------------------------
    def loss_parts(self, model, batch: dict[str, dict], reference: Reference | None = None) -> dict[str, torch.Tensor]:
        """Per-item loss parts ``{part: [B]}`` on ``batch = {corpus: encoded batch}`` (see module docstring)."""
        return self.forward(model, batch, reference).parts

    def objective(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        weights = self.part_weights()
        total = None
        for name, value in parts.items():
            term = weights.get(name, 1.0) * value.mean()
            total = term if total is None else total + term
        if total is None:
            raise ValueError(f"{self.name}: no loss part could be computed from this batch.")
        return total

    def encode(self, tokenizer, items: Sequence[Item], indices: Sequence[int], max_length: int) -> dict:
        """The encoded batch of one corpus for the items at ``indices`` (see module docstring)."""
        examples: list[TrainExample] = []
        flat: list[int] = []
        group = None
        for i in indices:
            item = items[i]
            if group is None:
                group = len(item)
            elif len(item) != group:
                raise ValueError(f"{self.name}: items of one corpus must have the same group size.")
            examples.extend(item)
            flat.extend(i * group + g for g in range(group))
        enc = encode_examples(tokenizer, examples, max_length)
        enc["index"] = torch.tensor(flat, dtype=torch.long)
        enc["group"] = group or 1
        return enc

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Hyperparameter names and defaults."""
        return {f.name: getattr(cls.Params(), f.name) for f in fields(cls.Params)}

    @classmethod
    def hyperparameter_help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls.Params)}

    def describe(self) -> dict:
        return {
            "name": self.name, "description": self.description, "kind": self.kind,
            "corpora": list(self.corpora), "needs_reference": self.needs_reference, "trains": self.trains,
            "icu": self.icu, "params": dataclasses.asdict(self.params),
        }


def _coerce_params(method: Method, overrides: dict) -> dict:
    """Check names and convert values (strings from the command line) to the declared types."""
    hints = typing.get_type_hints(method.Params)
    known = {f.name for f in fields(method.Params)}
    out = {}
    for name, value in overrides.items():
        if name not in known:
            choices = ", ".join(sorted(known)) or "none"
            raise UserError(f"--param {name}: method {method.name} has no such hyperparameter (it has: {choices}).")
        kind = hints.get(name)
        if isinstance(value, str) and kind in (int, float, bool):
            try:
                if kind is bool:
                    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError
                    value = value.lower() in ("true", "1", "yes")
                else:
                    value = kind(value)
            except ValueError:
                raise UserError(f"--param {name}: expected a {kind.__name__}, got {value!r}.") from None
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif kind in (int, float, bool, str) and not isinstance(value, kind):
            raise UserError(f"--param {name}: expected a {kind.__name__}, got {value!r}.")
        out[name] = value
    return out


def param(default, help: str):
    """A hyperparameter with its one-line help (shown by ``rwkuplus methods``)."""
    return field(default=default, metadata={"help": help})


# -------------------------------------------------------------------------------- loss building blocks
def logprobs_and_logits(model, enc: dict):
    """``sequence_logprobs`` that also returns the logits (for the KL regulariser)."""
    logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    logps, mask = token_logprobs(logits, enc["labels"])
    return logps.sum(-1), mask.sum(-1), logits


def token_kl(ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per example: sum over scored positions of KL(pi_ref || pi) over the vocabulary ([B])."""
    mask = labels[:, 1:] != -100
    ref_logp = torch.log_softmax(ref_logits[:, :-1, :].float(), dim=-1)
    logp = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return (kl * mask).sum(-1)


def nll_per_token(logps: torch.Tensor, counts: torch.Tensor) -> float:
    return float(-logps.detach().sum() / counts.sum().clamp(min=1))


# ----------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"method name {cls.name!r} is empty or already registered")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    # Imported in the order ``rwkuplus methods`` lists them.
    from . import icu  # noqa: F401
    from . import gradient_ascent  # noqa: F401
    from . import npo  # noqa: F401
    from . import rejection  # noqa: F401
    from . import counterfactual  # noqa: F401
    from . import surgery  # noqa: F401
    from . import honesty  # noqa: F401
    from . import preference  # noqa: F401
    from . import rmu  # noqa: F401
    from . import sft  # noqa: F401


def method_names(kind: str | None = None) -> list[str]:
    _load_all()
    return [n for n, c in _REGISTRY.items() if kind is None or c.kind == kind]


def method_class(name: str) -> type[Method]:
    _load_all()
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise UserError(f"--method {name}: unknown method; expected one of {', '.join(_REGISTRY)}.")
    return _REGISTRY[key]


def make_method(name: str, **params) -> Method:
    """Instantiate a registered method with hyperparameter overrides (UserError for unknown names)."""
    return method_class(name)(**params)


def retain_nll_part(model, batch: dict, parts: dict, stats: dict) -> None:
    """The retain regulariser of GD-style methods: l(x, y) on retain text, per item."""
    if "retain" in batch:
        logp, n = sequence_logprobs(model, batch["retain"])
        parts["retain"] = -logp
        stats["retain_nll_per_token"] = nll_per_token(logp, n)


def retain_kl_part(model, batch: dict, reference: Reference | None, parts: dict, stats: dict) -> None:
    """The KL regulariser: sum over retain-text tokens of KL(pi_ref || pi), per item."""
    if "retain" in batch:
        if reference is None:
            raise ValueError("The KL regulariser needs a reference model.")
        enc = batch["retain"]
        logp, n, logits = logprobs_and_logits(model, enc)
        parts["retain_kl"] = token_kl(reference.logits(enc), logits, enc["labels"])
        stats["retain_nll_per_token"] = nll_per_token(logp, n)
