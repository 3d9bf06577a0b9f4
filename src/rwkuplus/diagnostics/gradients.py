"""Per-example gradients, compressed to what the conflict measures need: the Gram matrix.

For n training examples and a per-example loss l_i, ``gradient_gram`` returns the n x n matrix
G_ij = <g_i, g_j> of the per-example gradients g_i = d l_i / d theta over a chosen parameter set
(``rwkuplus.diagnostics.params``), overall and per layer group, without ever forming the n
flattened gradients.

How (exact mode). One forward and ONE batched backward over all n examples. Hooks capture, for every
module that owns a selected parameter, its input and the gradient of the loss w.r.t. its output:

- ``Linear`` (also LoRA's A and B): the per-example weight gradient is G_i = sum_t delta_it a_it^T
  (delta: output gradient, a: input, t: tokens of example i), so
  <G_i, G_j> = sum_{t,s} (a_it . a_js)(delta_it . delta_js). Per layer the engine either evaluates
  that sum from the two token kernels (cost ~ N^2 (d_in + d_out) for N tokens, memory in blocks)
  or materialises the n per-example gradients (cost ~ N d_in d_out + n^2 d_in d_out, memory
  n d_in d_out), whichever is cheaper and fits ``memory_budget_mb``. Biases are the case a = 1.
- ``Embedding``: G_i = sum_t onehot(x_it) delta_it^T, so the first kernel is [x_it == x_js]
  (tokens equal to the embedding's ``padding_idx`` carry no gradient, as in ``nn.Embedding``).
- Anything else that owns a selected parameter (RMSNorm/LayerNorm scales, ...): its per-example
  gradients are materialised (these parameters are small). A 1-D parameter that scales or shifts
  the output elementwise (checked on the batch) gets sum_t delta_t * (f(w=1) - f(w=0))_t from two
  batched calls; anything else the exact ``torch.func.vmap`` of the module's vector-Jacobian product
  at the captured input and output gradient.
- A parameter used in several places (tied ``lm_head``/``embed_tokens``) gets the gradient of the
  sum of its uses: cross terms between the uses are included (the ``lm_head`` use is reduced to
  what the embedding use needs as soon as it arrives).
The backward asks autograd only for the gradient w.r.t. a leaf: the input embeddings, or, when every
selected parameter lies in transformer blocks, the hidden states entering the first such block (the
blocks before it are then run without a graph). No weight gradient is computed or even prepared
(``requires_grad`` is switched off during the pass and restored) and ``.grad`` is never touched; the model is put in eval mode (no
dropout) and restored. Each part of the Gram is computed while the backward runs and the captured
tensors are dropped right after, so the extra memory is one layer's worth plus the n x n matrices.

Bounded memory for any n. With more than ``batch_size`` examples the examples are cut into chunks
and each pair of chunks gets one pass (k chunks: k (k - 1) / 2 passes), so memory depends on the
chunk size only.

Projected mode (``project=D``). Each layer group's per-example gradient is sketched to D numbers
with a seeded random count sketch (every coordinate goes to one of D buckets with a random sign;
inner products are preserved in expectation). Linear and embedding gradients are sketched without
forming them: the sketch of sum_t delta_t a_t^T is the circular convolution of the sketches of
delta_t and a_t (TensorSketch), computed by FFT. A group with at most D numbers is kept exact. The
overall Gram is the sum of the group Grams, so its effective dimension is D x the number of
groups. Error: an inner product's standard error is about sqrt((1 + c^2) / D) of ||g_i|| ||g_j||
(c the cosine), at most sqrt(2 / D) relative: D = 1024 gives cosines within ~0.04 per group. One
pass per chunk suffices (the sketches are kept), so the cost is linear in n. The same seed gives
the same sketch at every checkpoint, so values along training are comparable.

``loop_gram`` is the plain reference (one backward per example, flattened gradients kept), used
by the tests and the speed benchmark.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ..sequences import every_position, sequence_logprobs
from .params import ParameterSet, layer_index, select_parameters

LossFn = Callable[[nn.Module, dict], torch.Tensor]


def nll_loss(model, batch: dict) -> torch.Tensor:
    """Summed token NLL of each example's response (``[B]``): CFT-SFT's per-example loss."""
    logps, _ = sequence_logprobs(model, batch)
    return -logps


@dataclass
class LossPart:
    """A batch and the per-example loss to differentiate on it.

    ``loss_fn(model, batch)`` returns one value per item (``[B // group_size]``), each depending only
    on that item's ``group_size`` consecutive rows (e.g. 2 rows = a DPO pair). Several parts (forget
    and retain, with their own losses) give one joint Gram over all their items, in order.
    """

    batch: dict
    loss_fn: LossFn = nll_loss
    group_size: int = 1

    @property
    def rows(self) -> int:
        return int(self.batch["input_ids"].shape[0])

    @property
    def n(self) -> int:
        return self.rows // self.group_size


@dataclass
class GradientGram:
    """Gram matrices of per-example gradients: overall and per layer group (float64, CPU)."""

    gram: torch.Tensor
    groups: dict[str, torch.Tensor]
    parameters: list[str]
    numel: int
    project: int | None = None
    seed: int = 0
    passes: int = 1
    seconds: float = 0.0
    strategies: dict[str, str] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.gram.shape[0])

    @property
    def norms(self) -> torch.Tensor:
        return self.gram.diagonal().clamp_min(0).sqrt()

    def describe(self) -> dict:
        return {"n": self.n, "parameters": len(self.parameters), "numel": self.numel,
                "project": self.project, "seed": self.seed, "passes": self.passes,
                "seconds": round(self.seconds, 3)}


# --------------------------------------------------------------------------------- representations
@dataclass
class _Factor:
    """Per-item gradients of one use of a [p, q] parameter: G_e = sum over e's tokens of L_t R_t^T."""

    items: torch.Tensor  # [N] local item index of each token
    R: torch.Tensor  # [N, q]
    p: int
    L: torch.Tensor | None = None  # [N, p] (dense), or
    ids: torch.Tensor | None = None  # [N] (one-hot rows: an embedding)
    use: int = -1
    gathered: dict[int, torch.Tensor] = field(default_factory=dict)  # use -> L[:, ids of that use]

    @property
    def q(self) -> int:
        return int(self.R.shape[1])


@dataclass
class _Dense:
    """Materialised per-item gradients: row k of X is the gradient of item ``items[k]``."""

    items: torch.Tensor  # [m] local item indices
    X: torch.Tensor  # [m, P]


@dataclass
class _Use:
    """One forward call of a module that owns selected parameters."""

    index: int
    module: nn.Module
    kind: str  # linear | embedding | generic
    items: torch.Tensor  # [rows] local item of each batch row
    mask: torch.Tensor  # [rows, T] bool
    x: torch.Tensor  # the module's input (ids for an embedding)
    keys: list[tuple[int, str]]  # (parameter index, role)


@dataclass
class _ParamState:
    name: str
    group: int
    shape: tuple[int, ...]
    pending: int = 0
    stored: list = field(default_factory=list)


def _seed_for(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


class _Sketch:
    """Seeded count-sketch hashes of one parameter (its [p, q] view, or flat for generic modules)."""

    def __init__(self, dims: Sequence[int], d: int, seed: int, name: str, device):
        g = torch.Generator().manual_seed(_seed_for(seed, name))
        self.h, self.s = [], []
        for k in dims:
            self.h.append(torch.randint(0, d, (k,), generator=g).to(device))
            self.s.append((torch.randint(0, 2, (k,), generator=g).float() * 2 - 1).to(device))


# ------------------------------------------------------------------------------------------ engine
class _Engine:
    def __init__(self, model, pset: ParameterSet, project: int | None, seed: int, memory_budget_mb: float,
                 strategy: str, block_tokens: int):
        self.model = model
        self.pset = pset
        self.project = project
        self.seed = seed
        self.budget = memory_budget_mb * 2**20
        self.strategy = strategy
        self.block = block_tokens
        self.device = next(model.parameters()).device
        self.groups = pset.group_names()
        gindex = {g: i for i, g in enumerate(self.groups)}
        self.states = [_ParamState(n, gindex[g], tuple(p.shape)) for n, p, g in zip(pset.names, pset.params, pset.groups)]
        self.strategies: dict[str, str] = {}
        self._owners = self._find_owners()
        self._sketches: dict[int, _Sketch] = {}
        self._affine: dict[nn.Module, bool] = {}
        self.group_numel = [0] * len(self.groups)
        for st, p in zip(self.states, pset.params):
            self.group_numel[st.group] += p.numel()
        self.start_block = self._find_start_block()
        self._offsets: dict[int, int] = {}
        if project:
            offs = [0] * len(self.groups)
            for k, (st, p) in enumerate(zip(self.states, pset.params)):
                self._offsets[k] = offs[st.group]
                offs[st.group] += p.numel()

    def _find_start_block(self) -> nn.Module | None:
        """The first transformer block holding a selected parameter, when all of them are in blocks.

        The backward then starts there instead of at the input embeddings (it skips the earlier blocks).
        """
        indices = [layer_index(n) for n in self.pset.names]
        if not indices or any(i is None for i in indices):
            return None
        suffix = f"layers.{min(indices)}"
        for name, module in self.model.named_modules():
            if name == suffix or name.endswith("." + suffix):
                return module
        return None

    # -- which module owns which selected parameter --------------------------------------------
    def _find_owners(self) -> dict[nn.Module, tuple[str, list[tuple[int, str]]]]:
        index = {id(p): k for k, p in enumerate(self.pset.params)}
        owners: dict[nn.Module, tuple[str, list[tuple[int, str]]]] = {}
        found = set()
        for mname, module in self.model.named_modules():
            keys = [(index[id(p)], pname) for pname, p in module.named_parameters(recurse=False) if id(p) in index]
            if not keys:
                continue
            if isinstance(module, nn.Linear):
                kind = "linear"
            elif isinstance(module, nn.Embedding):
                kind = "embedding"
                if module is not self.model.get_input_embeddings():
                    raise ValueError(f"gradient diagnostics: {mname} is an embedding other than the input "
                                     "embeddings; only the input embeddings are supported.")
            else:
                kind = "generic"
                size = sum(self.pset.params[k].numel() for k, _ in keys)
                if size > 2**22:
                    raise ValueError(f"gradient diagnostics: module {mname} ({type(module).__name__}) owns "
                                     f"{size} selected numbers but only Linear, Embedding and small modules "
                                     "(norm scales, biases) are supported.")
            owners[module] = (kind, keys)
            found.update(k for k, _ in keys)
        missing = [self.pset.names[k] for k in range(len(self.pset.params)) if k not in found]
        if missing:
            raise ValueError(f"gradient diagnostics: no module owns {missing[0]}.")
        return owners

    # -- one pass: forward every part's rows, one backward -------------------------------------
    def run_pass(self, parts: list[tuple[LossPart, torch.Tensor, torch.Tensor]], m: int):
        """``parts``: (part, batch rows to use, local item index of each of those rows); m items in all.

        Returns per-group [m, m] Grams (exact) or per-group [m, D] vectors (projected).
        """
        self.m = m
        if self.project:
            self.vectors = [torch.zeros(m, n if n <= self.project else self.project, device=self.device)
                            for n in self.group_numel]
        else:
            self.grams = [torch.zeros(m, m, dtype=torch.float64, device=self.device) for _ in self.groups]
        for st in self.states:
            st.pending, st.stored = 0, []
        self.uses: list[_Use] = []
        self.arrived: set[int] = set()
        self.choice: dict[int, str] = {}
        self.leaves: list[tuple[torch.Tensor, _Use | None]] = []
        self._context: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.start_block is None:
            handles = [self.model.get_input_embeddings().register_forward_hook(self._embedding_leaf)]
        else:
            handles = [self.start_block.register_forward_pre_hook(self._block_leaf, with_kwargs=True)]
        for module in self._owners:
            handles.append(module.register_forward_hook(self._forward_hook, with_kwargs=True))
        # No weight needs a gradient (the leaf carries the graph): autograd then saves no input for a
        # weight gradient and builds nothing before the leaf.
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in flags:
            p.requires_grad_(False)
        try:
            total = None
            for part, rows, items in parts:
                batch = _take(part.batch, rows, self.device)
                mask = batch["attention_mask"].bool()
                self._context = (items.to(self.device), mask)
                with every_position():
                    losses = part.loss_fn(self.model, batch)
                expected = len(rows) // part.group_size
                if losses.dim() != 1 or losses.shape[0] != expected:
                    raise ValueError(f"gradient diagnostics: the loss should be one value per example "
                                     f"([{expected}]), got shape {list(losses.shape)}.")
                total = losses.sum() if total is None else total + losses.sum()
            self._context = None
            for use in self.uses:
                for k, _ in use.keys:
                    self.states[k].pending += 1
            leaves = [leaf for leaf, _ in self.leaves]
            grads = torch.autograd.grad(total, leaves, allow_unused=True)
            for (leaf, use), g in zip(self.leaves, grads):
                if use is not None:
                    self._arrive(use, g if g is not None else torch.zeros_like(leaf))
            lost = [u for u in self.uses if u.index not in self.arrived]
            if lost:
                raise RuntimeError(f"gradient diagnostics: no gradient reached {type(lost[0].module).__name__} "
                                   f"(use {lost[0].index}); its output does not depend on the leaf.")
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
            for h in handles:
                h.remove()
            self.uses, self.leaves = [], []
            for st in self.states:
                st.stored = []
        return self.vectors if self.project else self.grams

    def _block_leaf(self, module, args, kwargs):
        """Forward pre-hook of the first selected block: its hidden-state input becomes the leaf."""
        if self._context is None or not torch.is_grad_enabled():
            return None
        if args:
            leaf = args[0].detach().requires_grad_(True)
            args = (leaf,) + tuple(args[1:])
        elif "hidden_states" in kwargs:
            leaf = kwargs["hidden_states"].detach().requires_grad_(True)
            kwargs = {**kwargs, "hidden_states": leaf}
        else:
            raise RuntimeError("gradient diagnostics: cannot find the hidden states a transformer block receives.")
        self.leaves.append((leaf, None))
        return args, kwargs

    def _embedding_leaf(self, module, args, output):
        if self._context is None or not torch.is_grad_enabled():
            return None  # not one of our forwards (a reference forward under no_grad, say)
        leaf = output.detach().requires_grad_(True)
        use = None
        if module in self._owners:
            use = self._new_use(module, args[0])
        self.leaves.append((leaf, use))
        return leaf

    def _new_use(self, module, x) -> _Use:
        items, mask = self._context
        if x.shape[0] != items.shape[0] or x.shape[1] != mask.shape[1]:
            raise ValueError(f"gradient diagnostics: {type(module).__name__} saw an input of shape "
                             f"{list(x.shape)}, expected [batch, tokens, ...] = [{items.shape[0]}, {mask.shape[1]}, ...].")
        kind, keys = self._owners[module]
        use = _Use(len(self.uses), module, kind, items, mask, x.detach(), keys)
        self.uses.append(use)
        return use

    def _forward_hook(self, module, args, kwargs, output):
        if self._context is None:
            return None
        kind = self._owners[module][0]
        if kind == "embedding" or not isinstance(output, torch.Tensor) or not output.requires_grad:
            return None  # the input embedding is handled by the leaf hook; a no-grad forward is not ours
        x = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        use = self._new_use(module, x)
        output.register_hook(lambda g, use=use: self._arrive(use, g))
        return None

    # -- a use's output gradient arrived ------------------------------------------------------------
    def _arrive(self, use: _Use, delta: torch.Tensor) -> None:
        with torch.no_grad():
            self.arrived.add(use.index)
            reps = self._representations(use, delta)
            for k, rep in reps:
                st = self.states[k]
                st.pending -= 1
                if self.project:
                    self._project(k, rep)
                    continue
                gram = self.grams[st.group]
                gram += self._dot(k, rep, rep, symmetric=True)
                for other in st.stored:
                    c = self._dot(k, rep, other, symmetric=False)
                    gram += c + c.T
                if st.pending > 0:
                    st.stored.append(self._compact(k, rep))
                else:
                    st.stored = []

    def _representations(self, use: _Use, delta: torch.Tensor) -> list[tuple[int, object]]:
        mask = use.mask
        out: list[tuple[int, object]] = []
        if use.kind == "generic":
            for k, X in self._generic_grads(use, delta):
                out.append((k, X))
            return out
        full = bool(mask.all())  # no padding: flatten as a view instead of copying through the mask
        tok_items = use.items[:, None].expand_as(mask).reshape(-1) if full else use.items[:, None].expand_as(mask)[mask]

        def tokens(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(-1, *t.shape[2:]) if full else t[mask]

        D = tokens(delta).float()
        for k, role in use.keys:
            shape = self.states[k].shape
            if use.kind == "embedding":
                ids = tokens(use.x)
                pad = getattr(use.module, "padding_idx", None)
                if pad is not None:  # nn.Embedding never updates its padding row
                    D = D * (ids != pad)[:, None]
                f = _Factor(tok_items, D, int(shape[0]), ids=ids, use=use.index)
            elif role == "weight":
                f = _Factor(tok_items, tokens(use.x).float(), int(shape[0]), L=D, use=use.index)
            else:  # bias: a = 1
                f = _Factor(tok_items, torch.ones(D.shape[0], 1, device=D.device), int(shape[0]), L=D,
                            use=use.index)
            out.append((k, self._maybe_materialise(k, f)))
        return out

    def _generic_grads(self, use: _Use, delta: torch.Tensor):
        module = use.module
        params = {role: self.pset.params[k].detach() for k, role in use.keys}
        grads = None
        if self._affine.get(module, True):  # checked once per module, then trusted
            grads = _elementwise_affine_grads(module, params, use.x, delta, check=module not in self._affine)
            self._affine[module] = grads is not None
        if grads is None:
            grads = _vmap_grads(module, params, use.x, delta)
        present = torch.unique(use.items)
        for k, role in use.keys:
            g = grads[role].reshape(use.x.shape[0], -1).float()
            X = torch.zeros(self.m, g.shape[1], device=g.device).index_add_(0, use.items, g)
            yield k, _Dense(present, X[present])

    # -- choosing and evaluating inner products ---------------------------------------------------
    def _maybe_materialise(self, k: int, f: _Factor):
        """Decide once per use how its self term is computed (kept for the cross terms too)."""
        if self.project:
            return f
        p, q, N = f.p, f.q, f.R.shape[0]
        m = int(torch.unique(f.items).numel())
        mem = m * p * q * 4
        pe = 1 if f.ids is not None else p
        token_cost = 0.5 * N * N * (pe + q)
        mat_cost = N * pe * q + 0.5 * m * m * p * q
        if k in self.choice:  # every use of a parameter (tied weights) is treated alike
            choice = self.choice[k]
        elif self.strategy == "token":
            choice = "token"
        elif self.strategy == "materialise":
            choice = "materialise"
        else:
            choice = "materialise" if mem <= self.budget and mat_cost < token_cost else "token"
        self.choice[k] = choice
        self.strategies[self.states[k].name] = choice
        return _materialise(f) if choice == "materialise" else f

    def _dot(self, k: int, a, b, symmetric: bool) -> torch.Tensor:
        """[m, m] float64 with entry (i, j) = <G^a_i, G^b_j> (items of a along rows)."""
        m = self.m
        if isinstance(a, _Factor) and isinstance(b, _Factor):
            return _token_dot(a, b, m, symmetric, self.block)
        A = a if isinstance(a, _Dense) else _materialise(a)
        B = b if isinstance(b, _Dense) else _materialise(b)
        out = torch.zeros(m, m, dtype=torch.float64, device=A.X.device)
        block = (A.X @ B.X.T).double()
        out[A.items[:, None], B.items[None, :]] = block
        return out

    def _compact(self, k: int, rep):
        """What a use keeps for the cross terms with the uses still to come."""
        if not isinstance(rep, _Factor) or rep.L is None:
            return rep
        pending = [u for u in self.uses
                   if u.index not in self.arrived and any(kk == k for kk, _ in u.keys)]
        # Uses still to come are those whose gradient has not arrived; an embedding use only ever needs
        # L gathered at its token ids, which is far smaller than L for a vocabulary-sized layer.
        if pending and all(u.kind == "embedding" for u in pending):
            g = {u.index: rep.L.index_select(1, u.x[u.mask]) for u in pending}
            return _Factor(rep.items, rep.R, rep.p, L=None, ids=None, use=rep.use, gathered=g)
        return rep

    # -- projected mode ------------------------------------------------------------------------------
    def _project(self, k: int, rep) -> None:
        st = self.states[k]
        vec = self.vectors[st.group]
        d = self.project
        exact = self.group_numel[st.group] <= d
        if exact:
            dense = rep if isinstance(rep, _Dense) else _materialise(rep)
            off = self._offsets[k]
            vec[dense.items, off:off + dense.X.shape[1]] += dense.X
            return
        if isinstance(rep, _Dense):
            sk = self._sketch(k, [rep.X.shape[1]])
            Z = torch.zeros(rep.X.shape[0], d, device=rep.X.device).index_add_(1, sk.h[0], rep.X * sk.s[0])
            vec[rep.items] += Z
            return
        sk = self._sketch(k, [rep.p, rep.q])
        vec += _tensor_sketch(rep, sk, d, self.m, self.block)

    def _sketch(self, k: int, dims: list[int]) -> _Sketch:
        if k not in self._sketches:
            self._sketches[k] = _Sketch(dims, self.project, self.seed, self.states[k].name, self.device)
        return self._sketches[k]


def _vmap_grads(module, params: dict, x: torch.Tensor, delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-row gradients of <module(x_r), delta_r> w.r.t. ``params`` by vmap over vector-Jacobian products."""
    from torch.func import functional_call, vjp, vmap

    def per_row(x_r, d_r):
        _, pull = vjp(lambda p: functional_call(module, p, (x_r[None],)), params)
        return pull(d_r[None])[0]

    return vmap(per_row)(x, delta)


def _elementwise_affine_grads(module, params: dict, x: torch.Tensor, delta: torch.Tensor, check: bool = True):
    """Per-row gradients for 1-D parameters that scale or shift the output elementwise (norm scales, biases).

    If the output is affine and elementwise in a parameter w (f(w) = A(x) * w + c(x), as in RMSNorm,
    LayerNorm, Gemma's (1 + w) scale), the gradient of <f, delta> is sum_t delta_t * A_t with
    A = f(1) - f(0). This is checked on the batch itself with a random w; None means "not of that
    form" and the caller falls back to vmap.
    """
    from torch.func import functional_call

    out = {}
    with torch.no_grad():
        for name, p in params.items():
            if p.dim() != 1 or p.shape[0] != delta.shape[-1]:
                return None

            def f(w, name=name):
                return functional_call(module, {name: w}, (x,)).float()

            f0 = f(torch.zeros_like(p))
            A = f(torch.ones_like(p)) - f0
            if check:
                r = torch.randn(p.shape, generator=torch.Generator().manual_seed(0)).to(p)
                scale = float(A.abs().max()) + 1e-12
                if not torch.allclose(f(r) - f0, A * r.float(), rtol=1e-3, atol=1e-4 * scale):
                    return None
            out[name] = (delta.float() * A).sum(1)
    return out


def _materialise(f: _Factor) -> _Dense:
    present = torch.unique(f.items)
    X = torch.zeros(present.numel(), f.p, f.q, device=f.R.device)
    pos = torch.searchsorted(present, f.items)
    if f.ids is not None:
        X.view(-1, f.q).index_add_(0, pos * f.p + f.ids, f.R)
    elif bool((f.items[1:] >= f.items[:-1]).all()):  # tokens grouped by item: one padded batched matmul
        _, counts = torch.unique_consecutive(f.items, return_counts=True)
        sizes = counts.tolist()
        L = torch.nn.utils.rnn.pad_sequence(list(torch.split(f.L, sizes)), batch_first=True)
        R = torch.nn.utils.rnn.pad_sequence(list(torch.split(f.R, sizes)), batch_first=True)
        torch.bmm(L.transpose(1, 2), R, out=X)
    else:
        for r, e in enumerate(present.tolist()):
            sel = f.items == e
            X[r] = f.L[sel].T @ f.R[sel]
    return _Dense(present, X.reshape(present.numel(), -1))


def _token_dot(a: _Factor, b: _Factor, m: int, symmetric: bool, block: int) -> torch.Tensor:
    """sum over tokens t of item i (in a) and s of item j (in b) of (L_t . L_s)(R_t . R_s)."""
    out = torch.zeros(m, m, dtype=torch.float64, device=a.R.device)
    Na, Nb = a.R.shape[0], b.R.shape[0]
    for i0 in range(0, Na, block):
        i1 = min(i0 + block, Na)
        for j0 in range(i0 if symmetric else 0, Nb, block):
            j1 = min(j0 + block, Nb)
            KL = _l_kernel(a, b, i0, i1, j0, j1)
            K = KL * (a.R[i0:i1] @ b.R[j0:j1].T)
            c = (_segments(a.items[i0:i1], m) @ K @ _segments(b.items[j0:j1], m).T).double()
            out += c
            if symmetric and j0 != i0:
                out += c.T
    return out


def _segments(items: torch.Tensor, m: int) -> torch.Tensor:
    """[m, N] one-hot rows: token t belongs to item items[t] (sums over tokens become a matmul)."""
    S = torch.zeros(m, items.shape[0], device=items.device)
    S[items, torch.arange(items.shape[0], device=items.device)] = 1.0
    return S


def _l_kernel(a: _Factor, b: _Factor, i0, i1, j0, j1) -> torch.Tensor:
    if a.L is not None and b.L is not None:
        return a.L[i0:i1] @ b.L[j0:j1].T
    if a.ids is not None and b.ids is not None:
        return (a.ids[i0:i1, None] == b.ids[None, j0:j1]).float()
    if a.L is not None and b.ids is not None:
        return a.L[i0:i1].index_select(1, b.ids[j0:j1])
    if a.ids is not None and b.L is not None:
        return b.L[j0:j1].index_select(1, a.ids[i0:i1]).T
    if b.use in a.gathered:
        return a.gathered[b.use][i0:i1, j0:j1]
    if a.use in b.gathered:
        return b.gathered[a.use][j0:j1, i0:i1].T
    raise RuntimeError("gradient diagnostics: a stored use lost the factor a later use needs.")


def _tensor_sketch(f: _Factor, sk: _Sketch, d: int, m: int, block: int) -> torch.Tensor:
    """[m, d] count sketches of the items' sum_t L_t R_t^T, via FFT (TensorSketch), in token blocks."""
    out = torch.zeros(m, d // 2 + 1, dtype=torch.complex64, device=f.R.device)
    N = f.R.shape[0]
    for i0 in range(0, N, block):
        i1 = min(i0 + block, N)
        n = i1 - i0
        S1 = torch.zeros(n, d, device=f.R.device)
        if f.ids is not None:
            ids = f.ids[i0:i1]
            S1.scatter_(1, sk.h[0][ids][:, None], sk.s[0][ids][:, None])
        else:
            S1.index_add_(1, sk.h[0], f.L[i0:i1] * sk.s[0])
        S2 = torch.zeros(n, d, device=f.R.device).index_add_(1, sk.h[1], f.R[i0:i1] * sk.s[1])
        out.index_add_(0, f.items[i0:i1], torch.fft.rfft(S1) * torch.fft.rfft(S2))
    return torch.fft.irfft(out, n=d)


def _take(batch: dict, rows: torch.Tensor, device) -> dict:
    """The rows ``rows`` of an encoded batch, trailing all-padding columns dropped, on ``device``."""
    B = int(batch["input_ids"].shape[0])
    T = int(batch["input_ids"].shape[1])
    rows_cpu = rows.cpu()
    mask = batch["attention_mask"][rows_cpu]
    width = int(mask.sum(0).nonzero().max()) + 1 if mask.any() else T
    out = {}
    for key, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == B:
            v = v[rows_cpu.to(v.device)]
            if v.dim() == 2 and v.shape[1] == T:
                v = v[:, :width]
            out[key] = v.to(device)
        else:
            out[key] = v
    return out


# ------------------------------------------------------------------------------------------- public
def _resolve_parts(parts) -> list[LossPart]:
    if isinstance(parts, LossPart):
        return [parts]
    if isinstance(parts, dict):
        return [LossPart(parts)]
    return list(parts)


@contextlib.contextmanager
def full_precision(model):
    """Hold a half-precision model's parameters (and gradients) in fp32 inside the block, then put
    each back in its own dtype: bf16 -> fp32 -> bf16 is exact, so the model leaves unchanged.

    The per-example Gram is computed in fp32 because in bf16 its cosines are not reliable: on 32
    counterfactual texts of the default model the largest cosine difference between a bf16 and an fp32
    Gram was 0.90 (``benchmarks/precision.py``, section ``engine``), for a 1.7x speed-up."""
    half = [p for p in model.parameters() if p.dtype in (torch.float16, torch.bfloat16)]
    dtypes = [p.dtype for p in half]
    for p in half:
        p.data = p.data.float()
        if p.grad is not None:
            p.grad = p.grad.float()
    try:
        yield
    finally:
        for p, dtype in zip(half, dtypes):
            p.data = p.data.to(dtype)
            if p.grad is not None:
                p.grad = p.grad.to(dtype)


def gradient_gram(model, parts: LossPart | dict | Sequence[LossPart], params: str | ParameterSet = "all", *,
                  precision: str = "float32", **options) -> GradientGram:
    """The Gram matrix of per-example gradients over ``params`` (see the module docstring), computed
    in fp32 (``full_precision``) unless ``precision="model"`` (the model's own dtype)."""
    if precision not in ("float32", "model"):
        raise ValueError(f"precision: expected float32 or model, got {precision!r}.")
    with full_precision(model) if precision == "float32" else contextlib.nullcontext():
        return _gradient_gram(model, parts, params, **options)


def _gradient_gram(
    model,
    parts: LossPart | dict | Sequence[LossPart],
    params: str | ParameterSet = "all",
    *,
    project: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    memory_budget_mb: float = 256,
    strategy: str = "auto",
    block_tokens: int = 2048,
) -> GradientGram:
    """``gradient_gram`` in the model's dtype.

    ``parts`` is an encoded batch (``sequences.encode_examples``; loss = summed token NLL), a
    ``LossPart`` or a list of them (items numbered across parts in order). ``batch_size`` items go
    through one backward; more are handled by pairs of chunks (exact) or chunk by chunk (projected).
    ``strategy`` (tests only) forces ``token`` or ``materialise`` for every Linear/embedding layer.
    """
    if strategy not in ("auto", "token", "materialise"):
        raise ValueError(f"strategy: expected auto, token or materialise, got {strategy!r}.")
    if project is not None and project < 1:
        raise ValueError("project: expected a positive number of dimensions.")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    flag = "is_activation_checkpointing" if hasattr(type(base), "is_activation_checkpointing") else "is_gradient_checkpointing"
    if getattr(base, flag, False):
        raise ValueError("gradient diagnostics need gradient checkpointing off (hooks would see each layer twice).")
    parts = _resolve_parts(parts)
    pset = params if isinstance(params, ParameterSet) else select_parameters(model, params)
    start = time.perf_counter()
    engine = _Engine(model, pset, project, seed, memory_budget_mb, strategy, block_tokens)
    # every item: (part index, its rows in the part's batch)
    items: list[tuple[int, list[int]]] = []
    for pi, part in enumerate(parts):
        if part.rows % part.group_size:
            raise ValueError("LossPart: the batch rows are not a multiple of group_size.")
        for i in range(part.n):
            items.append((pi, list(range(i * part.group_size, (i + 1) * part.group_size))))
    n = len(items)
    if n == 0:
        raise ValueError("gradient diagnostics need at least one example.")
    chunks = [list(range(s, min(s + batch_size, n))) for s in range(0, n, max(1, batch_size))]

    def pass_over(idx: list[int]):
        spec = []
        for pi, part in enumerate(parts):
            mine = [(local, items[g][1]) for local, g in enumerate(idx) if items[g][0] == pi]
            if not mine:
                continue
            rows = torch.tensor([r for _, rr in mine for r in rr], dtype=torch.long)
            loc = torch.tensor([local for local, rr in mine for _ in rr], dtype=torch.long)
            spec.append((part, rows, loc))
        return engine.run_pass(spec, len(idx))

    was_training = model.training
    model.eval()
    groups = {g: torch.zeros(n, n, dtype=torch.float64) for g in engine.groups}
    passes = 0
    try:
        with torch.enable_grad():
            if project:
                vectors = [[None] * n for _ in engine.groups]
                for chunk in chunks:
                    vs = pass_over(chunk)
                    passes += 1
                    for g, v in enumerate(vs):
                        for local, gi in enumerate(chunk):
                            vectors[g][gi] = v[local].double().cpu()
                for g, name in enumerate(engine.groups):
                    V = torch.stack(vectors[g])
                    groups[name] = V @ V.T
            elif len(chunks) == 1:
                grams = pass_over(chunks[0])
                passes = 1
                for g, name in enumerate(engine.groups):
                    groups[name] = grams[g].cpu()
            else:
                done_diag = set()
                for a in range(len(chunks)):
                    for b in range(a + 1, len(chunks)):
                        idx = chunks[a] + chunks[b]
                        grams = pass_over(idx)
                        passes += 1
                        ia, ib = torch.tensor(chunks[a]), torch.tensor(chunks[b])
                        la, lb = torch.arange(len(chunks[a])), torch.arange(len(chunks[a]), len(idx))
                        for g, name in enumerate(engine.groups):
                            G = grams[g].cpu()
                            groups[name][ia[:, None], ib[None, :]] = G[la[:, None], lb[None, :]]
                            groups[name][ib[:, None], ia[None, :]] = G[lb[:, None], la[None, :]]
                            for c, ic, lc in ((a, ia, la), (b, ib, lb)):
                                if c not in done_diag:
                                    groups[name][ic[:, None], ic[None, :]] = G[lc[:, None], lc[None, :]]
                        done_diag.update((a, b))
    finally:
        model.train(was_training)
    groups = {name: (G + G.T) / 2 for name, G in groups.items()}  # exact symmetry (float32 sums are ~1e-7 off)
    total = sum(groups.values()) if groups else torch.zeros(n, n, dtype=torch.float64)
    return GradientGram(total, groups, list(pset.names), pset.numel, project, seed, passes,
                        time.perf_counter() - start, dict(engine.strategies))


def loop_gram(model, parts: LossPart | dict | Sequence[LossPart], params: str | ParameterSet = "all") -> GradientGram:
    """Reference implementation: one backward per example, flattened gradients kept (float32), Gram = g g^T."""
    parts = _resolve_parts(parts)
    pset = params if isinstance(params, ParameterSet) else select_parameters(model, params)
    start = time.perf_counter()
    groups = pset.group_names()
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in pset.params:
        p.requires_grad_(True)
    per_group: dict[str, list[torch.Tensor]] = {g: [] for g in groups}
    try:
        with torch.enable_grad():
            for part in parts:
                device = next(model.parameters()).device
                for i in range(part.n):
                    rows = torch.arange(i * part.group_size, (i + 1) * part.group_size)
                    batch = _take(part.batch, rows, device)
                    loss = part.loss_fn(model, batch)
                    grads = torch.autograd.grad(loss.sum(), pset.params, allow_unused=True)
                    for g in groups:
                        flat = [(gr if gr is not None else torch.zeros_like(p)).reshape(-1).float().cpu()
                                for gr, p, pg in zip(grads, pset.params, pset.groups) if pg == g]
                        per_group[g].append(torch.cat(flat))
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
    grams = {}
    for g in groups:
        V = torch.stack(per_group[g])  # float32, n x P (the loop's memory: every flattened gradient)
        per_group[g] = []
        grams[g] = (V @ V.T).double()
        del V
    total = sum(grams.values())
    return GradientGram(total, grams, list(pset.names), pset.numel, None, 0, sum(p.n for p in parts),
                        time.perf_counter() - start)

