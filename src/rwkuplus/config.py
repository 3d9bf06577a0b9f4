"""The run configuration: one typed dataclass, loaded from YAML (``safe_load``), overridable on the command line.

Every key is validated with a one-sentence error naming the file and the key. The resolved
configuration is saved as ``config.yaml`` in the run folder.

Keys (all optional):

``benchmark``   ``world`` (default), ``world:SEED`` or ``rwku:DIR`` (a folder in RWKU's layout); or a
                list of worlds (``[world:0, world:1, world:2]``): the run then spans several worlds,
                one ordinary run folder per world (``<out>/world-<SEED>/``) and the claims table over
                all of them in ``<out>`` (``suite.MultiWorldSuite``).
``model``       model spec; default: for ``world`` the subject model (the default model after
                knowledge injection, built once and cached); for ``rwku`` required.
``targets``     target selection (``"1-2"``, a list of indices or names); default: the first world
                target (``all`` = every target).
``methods``     list of ``before``, ``icu`` and registry names; ``cft-sft:consistent`` picks a
                counterfactual corpus (conflicting, consistent or filtered; the default conflicting),
                also for CFT's remedies (``cft-pcgrad``, ``cft-gru``, ``cft-honest``); ``before`` is
                always evaluated.
``settings``    list of ``full`` / ``lora``.
``target_mode`` ``single`` (each target from a fresh copy, results averaged), ``batch`` (all targets
                at once) or ``sequential`` (the targets forgotten one after another in their order, each
                from the previous step's model; after each step every target so far is scored, plus
                neighbor, utility and the hallucination suite: ``suite.py``).
``seeds``       list of ints.
``checkpoints`` training steps at which to evaluate along the trajectory (0 = before training).
``diagnostics`` record gradient-conflict measures for CFT methods at the start and at the checkpoints (bool).
``train``       per-method overrides of the training settings, e.g. ``{ga: {lr: 2e-5, max_steps: 20}}``;
                the key ``all`` applies to every method. Default ``{all: {max_steps: 12}}`` (the CPU
                budget); a ``train`` given in a file replaces it (``train: {}`` = the presets uncapped).
``eval``        evaluation options: ``batch_size``, ``parts`` (forget, neighbor, mia, utility,
                hallucination), ``utility_items`` (cap per utility set; null = all),
                ``hallucination_items`` (cap per kind of hallucination question, answerable and
                nonexistent, spread evenly over the list; null = all), ``unrelated_items`` (how many
                packaged general-knowledge questions the unrelated spillover domain asks, spread
                evenly over its subjects; 0 = none, null = all 472; default 32, one batch).
                The attacks on the weights are the parts ``quantization`` and ``relearning``
                (``evaluation/attacks.py``; off by default and in ``--quick``), set by ``attacks``:
                ``quantization_bits`` ([8, 4]), ``group_size`` (32), ``relearning_steps`` ([1, 5, 20]),
                ``relearning_lr`` (1e-4), ``relearning_batch_size`` (4), ``split_seed`` (0).
``preset``      training preset (``default`` or ``rwku-llama3``).
``protocol``    evaluation protocol (``rwkuplus.evaluation.protocol``): ``rwku`` (RWKU's own code) or
                ``world`` (the world's adaptations for a small model), optionally with documented
                options (``rwku,bbh_match=whole``); default (null): ``world`` for the world, ``rwku``
                for ``rwku:DIR``. The summary, the report and every result record it.
``dtype``       ``auto`` (default: bfloat16 on a GPU and on a CPU with fast bf16, AMX / AVX512-BF16;
                float32 elsewhere), ``float32`` or ``bfloat16``; the subject model is built and
                cached per dtype, and every result records the dtype it was computed in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

DEFAULT_METHODS = ("before", "icu", "ga", "gd", "npo", "rt", "cft-sft:conflicting", "cft-sft:consistent",
                   "cft-dpo", "altpo", "rmu")
QUICK_METHODS = ("before", "ga", "cft-sft:conflicting", "cft-sft:consistent")
EVAL_PARTS = ("forget", "neighbor", "mia", "utility", "hallucination", "quantization", "relearning")
DEFAULT_EVAL_PARTS = EVAL_PARTS[:5]  # the attacks on the weights (attacks.py) are off by default
TRAIN_KEYS = ("lr", "epochs", "max_steps", "batch_size", "grad_accum", "warmup_ratio", "warmup_steps", "schedule",
              "weight_decay", "adam_eps", "max_grad_norm", "max_length", "layers")


@dataclass
class RunConfig:
    benchmark: str = "world"
    model: str | None = None
    targets: Any = "1"
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    settings: list[str] = field(default_factory=lambda: ["full"])
    target_mode: str = "single"
    seeds: list[int] = field(default_factory=lambda: [0])
    checkpoints: list[int] = field(default_factory=lambda: [4])
    diagnostics: bool = True
    # The default suite is sized for a 2-core CPU (under 30 minutes from a cold cache, subject model
    # included; see the README): 12 optimizer steps per method (max_steps overrides epochs), 10 items
    # per utility set, 20 hallucination questions per kind.
    train: dict[str, dict] = field(default_factory=lambda: {"all": {"max_steps": 12}})
    eval: dict[str, Any] = field(default_factory=lambda: {"batch_size": 32, "parts": list(DEFAULT_EVAL_PARTS),
                                                         "utility_items": 10, "hallucination_items": 20,
                                                         "unrelated_items": 32})
    preset: str = "default"
    dtype: str = "auto"
    protocol: str | None = None

    # --------------------------------------------------------------------------------- loading
    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.exists() and str(path) in packaged_experiments():  # e.g. --config hidden-costs
            path = packaged_experiments()[str(path)]
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            names = ", ".join(sorted(packaged_experiments())) or "none"
            raise UserError(f"--config {path}: file not found (packaged experiments: {names}).") from None
        except yaml.YAMLError as e:
            raise UserError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]}).") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise UserError(f"--config {path}: expected a mapping of keys to values at the top level.")
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> RunConfig:
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                raise UserError(f"{where}: unknown key {key!r}; expected one of {', '.join(known)}.")
        config = cls(**{k: v for k, v in data.items()})
        return config.validate(where)

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # ------------------------------------------------------------------------------- validation
    def validate(self, where: str = "config") -> RunConfig:
        from .methods import method_names
        from .methods.base import CORPUS_VARIANTS
        from .training.settings import TrainSettings

        def fail(key: str, what: str, got: Any):
            raise UserError(f"{where}: key '{key}' should be {what}, got {got!r}.")

        if isinstance(self.benchmark, list):
            worlds = self.benchmark
            if not worlds or not all(isinstance(b, str) and (b == "world" or (
                    b.startswith("world:") and b[6:].lstrip("-").isdigit())) for b in worlds):
                fail("benchmark", "a list of worlds such as [world:0, world:1, world:2]", worlds)
            if len({world_seed(b) for b in worlds}) != len(worlds):
                fail("benchmark", "a list of distinct worlds", worlds)
            for b in worlds:  # every other key is checked as for one world (and eval gets its defaults)
                checked = dataclasses.replace(self, benchmark=b).validate(where)
            self.eval = checked.eval
            return self
        if not isinstance(self.benchmark, str) or not (
            self.benchmark == "world" or self.benchmark.startswith(("world:", "rwku:"))
        ):
            fail("benchmark", "'world', 'world:SEED' or 'rwku:DIR'", self.benchmark)
        if self.benchmark.startswith("world:") and not self.benchmark[6:].lstrip("-").isdigit():
            fail("benchmark", "'world:SEED' with an integer seed", self.benchmark)
        if self.benchmark.startswith("rwku:") and not Path(self.benchmark[5:]).expanduser().is_dir():
            fail("benchmark", "'rwku:DIR' naming an existing data folder", self.benchmark)
        if self.benchmark.startswith("rwku:") and not self.model:
            fail("model", "a model spec when the benchmark is rwku (there is no subject model)", self.model)
        if self.model is not None and not isinstance(self.model, str):
            fail("model", "a model spec (string)", self.model)
        if not isinstance(self.methods, list) or not self.methods:
            fail("methods", "a non-empty list of method names", self.methods)
        known = set(method_names()) | {"before"}
        for m in self.methods:
            name, _, corpus = str(m).partition(":")
            if name not in known:
                fail("methods", f"a list of known methods ({', '.join(sorted(known))})", m)
            if corpus and corpus not in CORPUS_VARIANTS:
                fail("methods", f"entries like 'cft-sft:consistent' (corpus {', '.join(CORPUS_VARIANTS)})", m)
        if not isinstance(self.settings, list) or not self.settings or any(s not in ("full", "lora") for s in self.settings):
            fail("settings", "a non-empty list of 'full' and/or 'lora'", self.settings)
        if self.target_mode not in ("single", "batch", "sequential"):
            fail("target_mode", "'single', 'batch' or 'sequential'", self.target_mode)
        if not isinstance(self.seeds, list) or not self.seeds or not all(_is_int(s) for s in self.seeds):
            fail("seeds", "a non-empty list of integers", self.seeds)
        if not isinstance(self.checkpoints, list) or not all(_is_int(s) and s >= 0 for s in self.checkpoints):
            fail("checkpoints", "a list of non-negative integers (training steps)", self.checkpoints)
        if not isinstance(self.diagnostics, bool):
            fail("diagnostics", "true or false", self.diagnostics)
        if not isinstance(self.train, dict):
            fail("train", "a mapping of method name to training options", self.train)
        for method, options in self.train.items():
            if method != "all" and method not in known:
                fail("train", f"a mapping whose keys are methods or 'all' (unknown {method!r})", method)
            if not isinstance(options, dict):
                fail(f"train.{method}", "a mapping of training options", options)
            for k in options:
                if k not in TRAIN_KEYS:
                    fail(f"train.{method}", f"a mapping with keys among {', '.join(TRAIN_KEYS)} (unknown {k!r})", k)
            for k, v in list(options.items()):
                # YAML 1.1 (safe_load) reads an exponent without a dot, "lr: 2e-4", as a string
                if isinstance(getattr(TrainSettings(), k, None), float) and isinstance(v, str):
                    try:
                        options[k] = float(v)
                    except ValueError:
                        fail(f"train.{method}.{k}", "a number", v)
            try:  # every value checked now, not when its first unit starts
                TrainSettings().replace(**options).validate()
            except (UserError, TypeError, ValueError) as e:
                fail(f"train.{method}", f"valid training options ({e})", options)
        if not isinstance(self.eval, dict):
            fail("eval", "a mapping of evaluation options", self.eval)
        for k, v in self.eval.items():
            if k == "parts":
                if not isinstance(v, list) or any(p not in EVAL_PARTS for p in v):
                    fail("eval.parts", f"a list among {', '.join(EVAL_PARTS)}", v)
            elif k == "batch_size":
                if not _is_int(v) or v < 1:
                    fail("eval.batch_size", "a positive integer", v)
            elif k in ("utility_items", "hallucination_items"):
                if v is not None and (not _is_int(v) or v < 1):
                    fail(f"eval.{k}", "a positive integer or null", v)
            elif k == "unrelated_items":
                if v is not None and (not _is_int(v) or v < 0):
                    fail(f"eval.{k}", "a non-negative integer or null", v)
            elif k == "attacks":
                from .evaluation.attacks import AttackSettings

                AttackSettings.from_json(v, where=f"{where}: eval.attacks")
            else:
                fail("eval", "a mapping with keys batch_size, parts, utility_items, hallucination_items, "
                     "unrelated_items, attacks", k)
        defaults = RunConfig.__dataclass_fields__["eval"].default_factory()
        self.eval = {**defaults, **self.eval}  # options not given keep their defaults
        if self.preset not in ("default", "rwku-llama3"):
            fail("preset", "'default' or 'rwku-llama3'", self.preset)
        if self.dtype not in ("auto", "float32", "bfloat16"):
            fail("dtype", "'auto', 'float32' or 'bfloat16'", self.dtype)
        if self.protocol is not None:
            from .evaluation.protocol import parse_protocol

            parse_protocol(self.protocol, f"{where}: key 'protocol'")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def packaged_experiments() -> dict[str, Path]:
    """The experiment configurations shipped with the package (``data/experiments/<name>.yaml``), by name."""
    from importlib import resources

    folder = resources.files("rwkuplus").joinpath("data/experiments")
    return {f.name[:-5]: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".yaml")} if folder.is_dir() else {}


def world_seed(benchmark: str) -> int:
    """The world seed of ``world`` (0) or ``world:SEED``."""
    return int(benchmark.split(":")[1]) if ":" in benchmark else 0


def quick_config() -> RunConfig:
    """``--quick``: one target, four methods, short training, the cheap evaluation parts."""
    return RunConfig(targets="1", methods=list(QUICK_METHODS), checkpoints=[],
                     train={"all": {"max_steps": 6}},
                     eval={"batch_size": 32, "parts": ["forget", "neighbor", "mia", "hallucination"],
                           "utility_items": 20, "hallucination_items": 20})
