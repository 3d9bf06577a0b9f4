"""``rwkuplus run``: the whole suite, unit by unit, resumable, into one run folder.

A *unit* is one method x setting x target (or target batch) x seed. Each unit starts from the
same starting weights (kept in memory), trains through the one loop (``training.loop.train``),
is evaluated along its trajectory (checkpoints: forget/neighbor probes, the hallucination suite,
the multiple-choice utility sets and, for CFT units, the gradient-conflict measures) and at the
end with the whole RWKU evaluation + hallucination suite, and is scored against the Before unit
of the same target (trade-off metrics, spillover, costs). Its ``result.json`` is written
atomically when it finishes: a rerun skips finished units, an interrupted run loses only the unit
in progress, a unit that fails is recorded with its reason and the suite goes on.

One process owns a run folder (its lock, ``lock.py``). Others may share its work (``--join``): every
process claims a unit's folder before it runs the unit, skips units another process holds, and keeps
a unit whose Before unit is still running elsewhere for later. The owner waits for the units its
helpers hold, then writes the summary and the report (a helper does it if the owner is gone).

Run folder::

    config.yaml  run.json  run.log
    units/<unit id>/result.json           metrics, costs, trajectory, diagnostics, status
    units/<unit id>/eval/...              per-probe records (JSONL) of the final evaluation
    units/<unit id>/train_log.jsonl       per-step loss parts, lr, grad norm, tokens, time
    summary.json  summary.csv  summary.md  report.html
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig
from .errors import UserError
from .fileio import read_json, write_json, write_jsonl, write_text

log = logging.getLogger("rwkuplus.run")

LABELS = {"before": "Before", "icu": "ICU", "ga": "GA", "gd": "GD", "ga-kl": "GA+KL", "npo": "NPO", "npo-gd": "NPO-GD",
          "npo-kl": "NPO-KL", "simnpo": "SimNPO", "rt": "RT", "cft-sft": "CFT-SFT", "cft-dpo": "CFT-DPO",
          "altpo": "AltPO", "rmu": "RMU", "cft-pcgrad": "CFT-PCGrad", "cft-gru": "CFT-GRU", "cft-honest": "CFT-Honest"}
RWKU_COLUMNS = ("Forget FB", "Forget QA", "Forget AA", "Forget All", "Neighbor FB", "Neighbor QA", "Neighbor All",
                "MIA FM", "MIA RM", "Gen", "Rea", "Tru", "Fac", "Flu")
UTILITY_COLUMNS = ("Gen", "Rea", "Tru", "Fac", "Flu")


@dataclass(frozen=True)
class Unit:
    method: str  # "before", "icu" or a registry name
    corpus: str | None
    setting: str
    targets: tuple[str, ...]
    seed: int
    sequential: bool = False  # target_mode sequential: the targets forgotten one after another

    @property
    def label(self) -> str:
        base = LABELS.get(self.method, self.method)
        return f"{base} ({self.corpus})" if self.corpus else base

    @property
    def trains(self) -> bool:
        return self.method not in ("before", "icu")

    @property
    def id(self) -> str:
        method = self.method + (f"-{self.corpus}" if self.corpus else "")
        target = _slug("+".join(self.targets)) if len(self.targets) < 4 else f"batch{len(self.targets)}"
        setting = self.setting if self.trains else "none"
        seed = f"s{self.seed}" if self.trains else "s-"
        if self.sequential:
            target = f"seq{len(self.targets)}-" + _slug("+".join(t[:12] for t in self.targets))[:60]
        return f"{method}__{setting}__{target}__{seed}"

    def to_json(self) -> dict:
        return {"method": self.method, "label": self.label, "setting": self.setting if self.trains else "none",
                "target": " + ".join(self.targets), "targets": list(self.targets), "seed": self.seed, "corpus": self.corpus,
                **({"sequential": True} if self.sequential else {})}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_")[:80]


def _takes_corpus(name: str) -> bool:
    """Whether a registered method has a counterfactual ``corpus`` hyperparameter (CFT-SFT and its remedies)."""
    from .methods import method_class

    return "corpus" in method_class(name).hyperparameters()


def plan_units(config: RunConfig, target_names: list[str]) -> list[Unit]:
    """Before and ICU once per target; every trained method per setting, target (or batch) and seed.

    Trained units come target by target (every method of the first target, then the next), so that a
    run stopped part-way holds whole comparisons for the targets it finished (what the claims read)."""
    groups = [(t,) for t in target_names] if config.target_mode == "single" else [tuple(target_names)]
    sequential = config.target_mode == "sequential"  # one unit: the targets in order, each from the last
    units: list[Unit] = [Unit("before", None, "none", (t,), 0) for t in target_names]
    trained: list[tuple[str, str | None]] = []
    for entry in config.methods:
        name, _, corpus = entry.partition(":")
        if name == "before":
            continue
        if name == "icu":
            units += [Unit("icu", None, "none", (t,), 0) for t in target_names]
            continue
        if not corpus and _takes_corpus(name):  # CFT-SFT and its remedies: conflicting by default
            corpus = "conflicting"
        trained.append((name, corpus or None))
    for g in groups:
        for name, corpus in trained:
            for seed in config.seeds:
                for setting in config.settings:
                    units.append(Unit(name, corpus, setting, g, seed, sequential))
    return units


# ------------------------------------------------------------------------------------------ suite
class Suite:
    poll_seconds = 10.0  # how often a process waits for units another one is running

    def __init__(self, config: RunConfig, out_dir: Path, progress: bool = True, join: bool = False):
        self.config = config
        self.out = Path(out_dir)
        self.progress = progress
        self.join = join

    def run(self) -> dict | None:
        """The run's summary (``summary.json``); None for a helper (``join``) whose owner writes it."""
        from .fileio import ensure_dir
        from .lock import folder_lock

        if self.join:
            if isinstance(self.config.benchmark, list):
                raise UserError("--join shares one world's run folder: add --benchmark world:SEED and --out "
                                "<out>/world-SEED, as the run being joined uses.")
            if not (self.out / "config.yaml").is_file():
                raise UserError(f"--out {self.out}: --join needs a run folder where a run has started (no "
                                f"config.yaml there); start the run without --join first.")
            return self._run_locked()
        ensure_dir(self.out, "--out")
        with folder_lock(self.out, "--out", say=self._say):
            return self._run_locked()

    def _run_locked(self) -> dict:
        from .evaluation.runner import EvalSettings

        if isinstance(self.config.benchmark, list):
            return self._run_worlds()
        self._check_config_unchanged()
        handler = logging.FileHandler(self.out / "run.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger("rwkuplus").addHandler(handler)
        logging.getLogger("rwkuplus").setLevel(logging.INFO)
        try:
            started = time.perf_counter()
            self.benchmark, model_spec, model_info = self._prepare()
            names = [t.name for t in self.benchmark.targets]
            units = plan_units(self.config, names)
            done = [u for u in units if (self._unit_dir(u) / "result.json").is_file()]
            todo = [u for u in units if u not in done]
            log.info("run: %d units, %d already finished, %d to do", len(units), len(done), len(todo))
            self._say(f"{len(units)} units: {len(done)} finished earlier, {len(todo)} to run.")
            from .evaluation.protocol import resolve_protocol

            kind = "world" if self.benchmark.name == "world" else (self.benchmark.source or {}).get("kind")
            self.protocol = resolve_protocol(self.config.protocol, kind, "protocol")
            self.eval_settings = EvalSettings(batch_size=self.config.eval["batch_size"], protocol=self.protocol)
            # spillover by domain: the neighbor QA probes as questions, and the general-knowledge set
            self.eval_settings.related_questions = True
            self.eval_settings.unrelated_items = self.config.eval.get("unrelated_items", 0)
            self.eval_settings.attacks = _attack_settings(self.config)
            if todo:
                self._load(model_spec)
            # run.json at the start too ("complete": false), so that a run stopped or still going can be
            # read (``rwkuplus report``, ``rwkuplus claims``) from the units it has finished
            if not self.join:
                self._write_run_json(units, model_spec, model_info, started, complete=not todo)
            bar = self._bar(len(units), len(done))
            self._work(todo, model_info, bar)
            if bar is not None:
                bar.close()
            if self.join:
                return self._finish_as_helper(units, model_spec, model_info, started)
            return self._finish(units, model_spec, model_info, started)
        finally:
            logging.getLogger("rwkuplus").removeHandler(handler)
            handler.close()

    def _work(self, todo: list[Unit], model_info: dict, bar) -> None:
        """Run the units of ``todo`` in plan order, each under its claim (``_run_claimed``); when only
        units that another process holds, or whose Before unit it runs, are left, wait for them (every
        ``poll_seconds``), saying for which."""
        from .lock import describe, held_by

        pending, said = list(todo), None
        while pending:
            # the first unit finished (here or by another process); after each, back to the plan's start,
            # since a Before unit finished elsewhere may free others
            unit = next((u for u in pending if self._finished(u) or self._run_claimed(u, model_info, bar)), None)
            if unit is not None:
                pending.remove(unit)
                if bar is not None:
                    bar.update(1)
                continue
            holders = sorted({describe(h) for u in pending if (h := held_by(self._unit_dir(u))) is not None})
            text = f"waiting for {len(pending)} units that another process is running ({'; '.join(holders)})."
            if text != said:
                self._say(text)
                said = text
            self._wait()

    def _run_claimed(self, unit: Unit, model_info: dict, bar) -> bool:
        """Run ``unit`` if its Before units are finished and no other process holds it (``lock.claim``);
        True when it is finished now."""
        from .lock import claim

        if unit.method != "before" and not all(self._finished(Unit("before", None, "none", (t,), 0))
                                               for t in unit.targets):
            return False  # its Before unit runs in another process: come back to it
        with claim(self._unit_dir(unit), say=self._say) as mine:
            if mine and not self._finished(unit):
                if bar is not None:
                    bar.set_postfix_str(unit.label + " / " + unit.targets[0][:20])
                self._run_unit(unit, model_info, bar)
            return mine

    def _wait(self) -> None:
        time.sleep(self.poll_seconds)

    def _finished(self, unit: Unit) -> bool:
        return (self._unit_dir(unit) / "result.json").is_file()

    def _finish(self, units: list[Unit], model_spec: str, model_info: dict, started: float) -> dict:
        """Every unit is finished: run.json marked complete, the summary and the report written."""
        from .report import rebuild

        self._write_run_json(units, model_spec, model_info, started, complete=True)
        rebuild(self.out, html=True)
        return read_json(self.out / "summary.json")

    def _finish_as_helper(self, units: list[Unit], model_spec: str, model_info: dict, started: float) -> dict | None:
        """A helper's end: the owner writes the summary; if the owner is gone, the helper does."""
        from .lock import describe, folder_lock, held_by

        owner = held_by(self.out)
        if owner is not None:
            self._say(f"every unit is finished; the run that owns {self.out} ({describe(owner)}) writes the "
                      "summary and the report.")
            return None
        with folder_lock(self.out, "--out", say=self._say):
            return self._finish(units, model_spec, model_info, started)

    def _write_run_json(self, units: list[Unit], model_spec: str, model_info: dict, started: float,
                        complete: bool) -> None:
        write_json(self.out / "run.json", {"benchmark": self.benchmark.source, "model": model_spec,
                                           "model_info": model_info, "protocol": self.protocol.label,
                                           "subject": self.subject, "units": [u.id for u in units],
                                           "complete": complete,
                                           "seconds_this_call": time.perf_counter() - started})

    def _run_worlds(self) -> dict:
        """A run over several worlds (``benchmark: [world:0, world:1, ...]``): one ordinary run folder per
        world, ``<out>/world-<SEED>/`` (each resumable and locked on its own), then the claims table over
        all of them in ``<out>`` (``claims.json``, ``claims.md``). Returns ``{"worlds": {world: summary},
        "claims": table}``."""
        from .claims import write_claims
        from .config import world_seed

        self._check_config_unchanged()
        summaries, folders = {}, []
        for b in self.config.benchmark:
            folder = self.out / f"world-{world_seed(b)}"
            self._say(f"== {b}: {folder}")
            summaries[b] = Suite(self.config.replace(benchmark=b), folder, self.progress).run()
            folders.append(folder)
        return {"worlds": summaries, "claims": write_claims(folders, self.out)}

    # --------------------------------------------------------------------------- preparation
    def _check_config_unchanged(self) -> None:
        path = self.out / "config.yaml"
        text = self.config.to_yaml()
        if path.exists() and path.read_text(encoding="utf-8") != text:
            what = "the run to join" if self.join else "this run folder"
            raise UserError(f"{self.out}: {what} holds a run with another configuration (see its config.yaml); "
                            + ("give --join the same options as that run." if self.join
                               else "choose another --out or delete the folder."))
        if not self.join:
            write_text(path, text)

    def _prepare(self):
        from .benchmark.rwku import load_benchmark
        from .benchmark.world import WorldConfig, default_world_dir
        from .models import DEFAULT_MODEL, dtype_name, resolve_model

        config = self.config
        if config.benchmark.startswith("rwku:"):
            benchmark = load_benchmark(config.benchmark, targets=_targets(config.targets))
            model_spec = config.model
        else:
            seed = int(config.benchmark.split(":")[1]) if ":" in config.benchmark else 0
            world_config = WorldConfig(seed=seed)
            benchmark = load_benchmark(str(default_world_dir(world_config)), targets=_targets(config.targets))
            if config.model is None:
                from .subject import ensure_subject

                self._say("Building or reusing the subject model (knowledge injection of the world)...")
                model_spec = str(ensure_subject(DEFAULT_MODEL, world_config, progress=self.progress,
                                                dtype=config.dtype))
                self._say(f"model: the world's subject model, {model_spec} (the default on the world; "
                          "--model or the configuration's 'model' chooses another)")
            else:
                model_spec = config.model
        _cap_utility(benchmark, config.eval.get("utility_items"))
        _cap_hallucination(benchmark, config.eval.get("hallucination_items"))
        resolved = resolve_model(model_spec)
        self.subject = self._subject_checks(model_spec)
        return benchmark, model_spec, {"spec": model_spec, "fingerprint": resolved.fingerprint,
                                       "dtype": dtype_name(config.dtype)}

    def _subject_checks(self, model_spec: str) -> dict | None:
        """The subject's checks when the model is a subject model (its folder holds subject.json),
        recorded in run.json for the summary and the report; a warning now when one misses its threshold."""
        from .subject import checks_table, missed_text, read_subject

        folder = Path(model_spec)
        if not (folder / "subject.json").is_file():
            return None
        table = checks_table(read_subject(folder), folder)
        if not table["all_thresholds_met"]:
            log.warning("the subject model misses %d of its %d thresholds: %s; every number of this run rests on "
                        "this 'Before' model (see the subject table in summary.md and report.html).",
                        len(table["missed"]), len(table["checks"]), missed_text(table))
        return table

    def _load(self, model_spec: str) -> None:
        from .models import load_model
        from .training.loop import StartingWeights

        self.model, self.tokenizer, _ = load_model(model_spec, dtype=self.config.dtype)
        self.model.eval()
        self.start = StartingWeights(self.model)

    # ---------------------------------------------------------------------------------- units
    def _unit_dir(self, unit: Unit) -> Path:
        return self.out / "units" / unit.id

    def _before(self, target: str) -> dict | None:
        path = self._unit_dir(Unit("before", None, "none", (target,), 0)) / "result.json"
        return read_json(path) if path.is_file() else None

    def _run_unit(self, unit: Unit, model_info: dict, bar) -> None:
        folder = self._unit_dir(unit)
        started = time.perf_counter()
        log.info("unit %s: start", unit.id)
        try:
            result = self._unit_body(unit, folder, model_info, bar)
            result["status"] = "ok" if result.get("reason") is None else "failed"
        except (KeyboardInterrupt, UserError):
            raise
        except Exception as e:  # a unit that fails is recorded and the suite goes on
            log.error("unit %s failed:\n%s", unit.id, traceback.format_exc())
            reason = "out of memory" if "out of memory" in str(e).lower() else f"{type(e).__name__}: {e}"
            result = {"status": "failed", "reason": reason, "metrics": {}, "costs": {}, "trajectory": [],
                      "diagnostics": []}
        finally:
            self._reset_model()
        result["unit"] = unit.to_json()
        result["protocol"] = self.protocol.label
        result["seconds"] = time.perf_counter() - started
        write_json(folder / "result.json", result)  # last: its presence marks the unit finished
        self._say(f"unit {unit.id}: {result['status']} in {result['seconds']:.0f} s"
                  + (f" ({result['reason']})" if result.get("reason") else ""))

    def _reset_model(self) -> None:
        model = self.model
        if hasattr(model, "peft_config"):
            model = model.unload()
        self.model = self.start.restore(model)
        self.model.eval()

    def _unit_body(self, unit: Unit, folder: Path, model_info: dict, bar) -> dict:
        from .costs import Costs
        from .models import parameter_count

        before = [self._before(t) for t in unit.targets] if unit.method != "before" else []
        if any(b is None or b.get("status") != "ok" for b in before):
            return {"reason": "the Before unit of this target did not finish", "metrics": {}, "costs": {},
                    "trajectory": [], "diagnostics": []}
        trajectory, diagnostics, train_info = [], [], {}
        costs = Costs(n_parameters=parameter_count(self.model))
        model = self.model
        if unit.trains:
            model, train_info, trajectory, diagnostics, train_cost = self._train(unit, folder, before, bar)
            self.model = model
            costs = Costs.from_training(train_cost, parameter_count(model))
            if train_info.get("stopped_reason"):
                return {"reason": f"training stopped: {train_info['stopped_reason']}", "metrics": {},
                        "costs": costs.to_json(), "trajectory": trajectory, "diagnostics": diagnostics,
                        "training": train_info}
        model.eval()
        if bar is not None:
            bar.set_postfix_str(f"{unit.label} / {unit.targets[0][:20]} / final evaluation")
        metrics, halluc_records = self._evaluate(model, unit, folder / "eval", icu=unit.method == "icu")
        utility_columns = self._utility_checks(unit)
        if unit.method != "before":
            metrics.update(self._relative(metrics, halluc_records, before, unit, utility_columns))
        else:
            metrics.update(self._attack_references(unit, folder))
        domains = self._domains(halluc_records, unit)
        metrics.update(_domain_metrics(domains, with_ci=True))
        costs_json = costs.to_json()
        metrics["Tokens"] = costs.tokens_trained + costs.corpus_tokens_generated
        metrics["FLOPs"] = costs_json.get("estimated_flops")
        metrics["Wall time (s)"] = costs.wall_seconds
        if diagnostics:
            metrics["Conflict ratio"] = diagnostics[0].get("conflict_ratio")
        return {"reason": None, "metrics": metrics, "costs": costs_json, "trajectory": trajectory,
                "diagnostics": diagnostics, "training": train_info, "domains": domains,
                "utility_columns": utility_columns}

    # ------------------------------------------------------------------------------- training
    def _train(self, unit: Unit, folder: Path, before: list[dict], bar):
        if unit.sequential:
            return self._train_sequential(unit, folder, before, bar)
        from .methods import make_method
        from .methods.presets import default_settings
        from .training.data import build_corpora
        from .training.loop import train

        method = make_method(unit.method, **({"corpus": unit.corpus} if unit.corpus else {}))
        settings = default_settings(unit.method, mode=unit.setting, preset=self.config.preset)
        overrides = {**self.config.train.get("all", {}), **self.config.train.get(unit.method, {})}
        # Conflict diagnostics for every method that trains on a counterfactual corpus (CFT-SFT, its remedies).
        probe = (self._conflict_examples(unit) if self.config.diagnostics and "counterfactual" in method.corpora
                 else None)
        # The conflict diagnostics are measured at the start (step 0) and at every checkpoint; the
        # trajectory's metrics only at the configured checkpoints (step 0 is the Before unit's row).
        steps = set(self.config.checkpoints) | ({0} if probe is not None else set())
        settings = settings.replace(**overrides, seed=unit.seed, checkpoint_steps=tuple(sorted(steps)))
        corpora = build_corpora(method, self.benchmark, list(unit.targets), self.tokenizer)
        trajectory, diagnostics = [], []

        def on_checkpoint(step: int, model) -> None:
            if bar is not None:
                bar.set_postfix_str(f"{unit.label} / {unit.targets[0][:20]} / checkpoint {step}")
            if step in self.config.checkpoints:
                trajectory.append({"step": step, **self._checkpoint_metrics(model, unit, before)})
            if probe is not None:
                diagnostics.append({"step": step, **self._conflict(model, *probe)})

        def on_step(row: dict) -> None:
            if bar is not None:
                bar.set_postfix_str(f"{unit.label} / {unit.targets[0][:20]} / step {row.get('step')}")

        result = train(self.model, self.tokenizer, method, corpora, settings, on_checkpoint=on_checkpoint,
                       on_step=on_step)
        write_jsonl(folder / "train_log.jsonl", result.log)
        info = {**result.to_json(), "settings": settings.to_json(), "method": method.describe()}
        return result.model, info, trajectory, diagnostics, result.cost

    def _train_sequential(self, unit: Unit, folder: Path, before: list[dict], bar):
        """target_mode sequential: the unit's targets forgotten in order (``sequential.py``)."""
        from .sequential import train_sequential

        return train_sequential(self, unit, folder, before, bar)

    def _attack_references(self, unit: Unit, folder: Path) -> dict:
        """The Before unit's reference for the relearning attack: the same attack on the base model
        (it never knew the target; only on a world whose model is its subject model)."""
        from .sequential import base_relearning_reference

        return base_relearning_reference(self, unit, folder)

    def _conflict_examples(self, unit: Unit):
        """The CFT unit's counterfactual items to probe at every checkpoint, labelled by attribute (world)."""
        from .diagnostics.runner import attribute_items

        target = self.benchmark.target(unit.targets[0])
        if (self.benchmark.source or {}).get("kind") == "world":
            return attribute_items(self.benchmark, target, "counterfactual", unit.corpus or "conflicting",
                                   self.tokenizer, _DIAGNOSTIC_EXAMPLES)
        from .benchmark.records import TrainExample

        texts = target.counterfactual_corpora.get(unit.corpus or "conflicting", [])[:_DIAGNOSTIC_EXAMPLES]
        return [TrainExample("", t.text, t.subject) for t in texts], None

    def _conflict(self, model, examples, labels) -> dict:
        """Conflict measures of the probe examples now, flattened for the report (see report/summary.py)."""
        from .diagnostics.runner import conflict_probe

        r = conflict_probe(model, self.tokenizer, examples, params="auto", groups=labels, with_matrix=True)
        m = r["measures"]["overall"]
        same = m.get("same_label_pairs") or {}
        return {"conflict_ratio": m["all_pairs"]["conflict_ratio"], "mean_cosine": m["all_pairs"]["mean_cosine"],
                "mean_negative_cosine": m["all_pairs"].get("mean_negative_cosine"),
                "cancellation_ratio": m["cancellation_ratio"], "coherence": m["coherence"],
                "same_attribute": {k: same.get(k) for k in ("conflict_ratio", "mean_cosine", "mean_negative_cosine")},
                "cosine_matrix": r.get("cosine"), "labels": labels, "parameters": r.get("parameters")}

    def _checkpoint_metrics(self, model, unit: Unit, before: list[dict]) -> dict:
        """Cheap metrics along the trajectory: forget/neighbor probes, hallucination (by domain), MC utility
        (Gen; UR from Gen alone, none when Gen is uninformative on the benchmark)."""
        from .evaluation.answers import AnswerBook
        from .informative import informative_columns
        from .evaluation.hallucination import evaluate_hallucination, hallucination_items, hr_differences
        from .evaluation.probes import evaluate_probes, probe_prompts
        from .evaluation.utility import evaluate_utility
        from .benchmark.records import UtilitySet
        from .tradeoff import trade_off

        targets = [self.benchmark.target(t) for t in unit.targets]
        bs = self.config.eval["batch_size"]
        n = self.eval_settings.probe_max_new_tokens
        forget_probes = [p for t in targets for p in t.forget_probes]
        neighbor_probes = [p for t in targets for p in t.neighbor_probes]
        # Every prompt below in one batched call (the honesty split asks the forget probes again).
        p = self.eval_settings.protocol
        book = AnswerBook(model, self.tokenizer, n, bs, p.probe_stop_at_newline, p.probe_stop_tokens)
        domains = {"n_unrelated": self.eval_settings.unrelated_items, "related": self.eval_settings.related_questions}
        book.fill(probe_prompts(self.tokenizer, forget_probes) + probe_prompts(self.tokenizer, neighbor_probes)
                  + [it.prompt(self.tokenizer) for it in hallucination_items(self.benchmark, list(unit.targets),
                                                                              **domains)])
        _, forget = evaluate_probes(model, self.tokenizer, forget_probes, batch_size=bs, max_new_tokens=n, answers=book,
                                    protocol=p)
        _, neighbor = evaluate_probes(model, self.tokenizer, neighbor_probes, batch_size=bs, max_new_tokens=n, protocol=p,
                                      answers=book)
        halluc_records, halluc = evaluate_hallucination(model, self.tokenizer, self.benchmark, list(unit.targets),
                                                        batch_size=bs, max_new_tokens=n, answers=book, **domains)
        u = targets[0].utility
        _, util, _ = evaluate_utility(model, self.tokenizer, UtilitySet(mmlu=u.mmlu), settings=self.eval_settings.utility)
        row = {"Forget All": forget.get("All"), "Neighbor All": neighbor.get("All"),
               "HR": halluc.get("hallucination_rate"), "Fabrication": halluc.get("fabrication_rate"),
               "Gen": _first(util, "Gen")}
        checkpoint_domains = self._domains(halluc_records, unit)
        row.update(_domain_metrics(checkpoint_domains, with_ci=False))
        # each counted item's HR change, so that comparisons at equal FE can resample items (claims.py)
        row["domain_items"] = {d: dict(zip(sorted(v["items"]), hr_differences(v["items"], d)))
                               for d, v in checkpoint_domains.items()}
        b = _mean_metrics([x["metrics"] for x in before])
        gen = "Gen" in informative_columns(before[0].get("utility_columns") if before else None, ["Gen"])
        t = trade_off(forget_before=b.get("Forget All"), forget_after=row["Forget All"],
                      neighbor_before=b.get("Neighbor All"), neighbor_after=row["Neighbor All"],
                      utility_before={"Gen": b.get("Gen")} if gen else {}, utility_after={"Gen": row["Gen"]},
                      hr_before=b.get("HR"), hr_after=row["HR"],
                      fabrication_before=b.get("Fabrication"), fabrication_after=row["Fabrication"])
        return {**row, **_upper(t.to_json())}

    # ----------------------------------------------------------------------------- evaluation
    def _evaluate(self, model, unit: Unit, folder: Path, icu: bool) -> tuple[dict, list[dict]]:
        """The unit's whole evaluation (``evaluate_model`` with the configured parts): its summary
        metrics and its hallucination records (all targets), which spillover pairs with Before's."""
        from .evaluation.runner import evaluate_model, rwku_row

        result = evaluate_model(model, self.tokenizer, self.benchmark, folder, targets=list(unit.targets), icu=icu,
                                parts=self.config.eval["parts"], settings=self.eval_settings, progress=False)
        metrics = dict(rwku_row(result["mean"]))
        if "hallucination" in result["parts"]:
            m = result["mean"]["hallucination"]
            metrics.update({"HR": m.get("hallucination_rate"), "Fabrication": m.get("fabrication_rate"),
                            "Abstention": m.get("abstention_rate"), "Accuracy": m.get("accuracy"),
                            "Leaked": m.get("forget_leaked"), "Abstained": m.get("forget_abstained"),
                            "Fabricated": m.get("forget_fabricated")})
        from .evaluation.attacks import attack_columns

        metrics.update(attack_columns(result["mean"]))  # Q8/Q4 and Relearn@k Forget All (when those parts ran)
        return metrics, _hallucination_records(folder)

    def _before_records(self, unit: Unit) -> list[dict]:
        records = []
        for t_name in unit.targets:
            records += _hallucination_records(self._unit_dir(Unit("before", None, "none", (t_name,), 0)) / "eval")
        return records

    def _domains(self, records: list[dict], unit: Unit) -> dict:
        """Spillover by domain against the Before unit's answers (the Before unit pairs with itself)."""
        from .evaluation.hallucination import domain_spillover

        before = records if unit.method == "before" else self._before_records(unit)
        return domain_spillover(records, before, seed=unit.seed) if records and before else {}

    def _utility_checks(self, unit: Unit) -> dict | None:
        """Which utility columns discriminate on this benchmark (``informative.check_columns`` on the Before
        unit's per-item utility records); None when the Before unit has none (utility not evaluated)."""
        from .informative import check_columns, read_utility_scores, tru_floor

        folder = self._unit_dir(Unit("before", None, "none", (unit.targets[0],), 0)) / "eval"
        scores = read_utility_scores(folder)
        if not scores:
            return None
        u = self.benchmark.target(unit.targets[0]).utility
        floors = {"Tru": tru_floor([len(it.mc1_targets.get("choices", [])) for it in u.truthfulqa])} \
            if u.truthfulqa else {}
        return check_columns(scores, floors)

    def _relative(self, metrics: dict, records: list[dict], before: list[dict], unit: Unit,
                  utility_columns: dict | None = None) -> dict:
        from .evaluation.hallucination import spillover
        from .informative import informative_columns
        from .tradeoff import trade_off

        b = _mean_metrics([x["metrics"] for x in before])
        out: dict = {}
        kept = informative_columns(utility_columns, UTILITY_COLUMNS)  # UR leaves uninformative columns out
        t = trade_off(forget_before=b.get("Forget All"), forget_after=metrics.get("Forget All"),
                      neighbor_before=b.get("Neighbor All"), neighbor_after=metrics.get("Neighbor All"),
                      utility_before={k: b.get(k) for k in kept},
                      utility_after={k: metrics.get(k) for k in kept},
                      hr_before=b.get("HR"), hr_after=metrics.get("HR"),
                      fabrication_before=b.get("Fabrication"), fabrication_after=metrics.get("Fabrication"))
        out.update(_upper(t.to_json()))
        before_records = self._before_records(unit)
        if records and before_records:
            s = spillover(records, before_records, seed=unit.seed)
            for key, name in (("hallucination_rate", "dHR"), ("fabrication_rate", "dFabrication")):
                if s.get(key):
                    out[name] = s[key]["delta"]
                    out[f"{name}_ci"] = [s[key]["low"], s[key]["high"]]
        from .evaluation.attacks import attack_recoveries

        out.update(attack_recoveries(b, metrics))  # Q8/Q4 and Relearn@k recovery against Before
        return out

    # ------------------------------------------------------------------------------- display
    def _bar(self, total: int, initial: int):
        if not self.progress:
            return None
        from . import progress

        return progress.bar(total, "units", unit="unit", initial=initial)

    def _say(self, message: str) -> None:
        log.info(message)
        if self.progress:
            from . import progress

            progress.say(message)


_DIAGNOSTIC_EXAMPLES = 20  # counterfactual items probed per checkpoint (4 per attribute on the default world)


def _attack_settings(config: RunConfig):
    """The attack parts' settings of ``eval.attacks`` (None: the parts' defaults, left out of the key)."""
    from .evaluation.attacks import AttackSettings

    given = config.eval.get("attacks")
    return None if given is None else AttackSettings.from_json(given, where="eval.attacks")


def _targets(spec):
    return None if spec in (None, "all") else spec


def _upper(trade: dict) -> dict:
    return {k.upper(): v for k, v in trade.items()}


def _first(metrics: dict, key: str):
    v = metrics.get(key)
    if isinstance(v, dict):
        return v.get("accuracy", v.get("value"))
    return v


def _mean_metrics(rows: list[dict]) -> dict:
    keys = {k for r in rows for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out = {}
    for k in keys:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
        out[k] = sum(vals) / len(vals) if vals else None
    return out


def _domain_metrics(domains: dict, with_ci: bool) -> dict:
    """Spillover by domain as flat metrics: ``Accuracy/HR/Abstention/dHR <domain>`` and ``Items <domain>``
    (with ``dHR <domain>_ci`` when ``with_ci``); see ``hallucination.domain_spillover``."""
    out: dict = {}
    for domain, d in domains.items():
        out.update({f"Accuracy {domain}": d["accuracy"], f"HR {domain}": d["hr"],
                    f"Abstention {domain}": d["abstention"], f"dHR {domain}": d["dHR"], f"Items {domain}": d["n"]})
        if with_ci:
            out[f"dHR {domain}_ci"] = [d["low"], d["high"]]
    return out


def _hallucination_records(eval_folder: Path) -> list[dict]:
    """A unit's hallucination records: every ``hallucination.jsonl`` its evaluation wrote (one per target)."""
    from .fileio import read_jsonl

    return [r for path in sorted(eval_folder.rglob("hallucination.jsonl")) for r in read_jsonl(path)]


def _cap_hallucination(benchmark, n: int | None) -> None:
    """Keep ``n`` questions of each kind (``eval.hallucination_items``), evenly spaced over the list."""
    if not n:
        return
    kept = []
    for kind in ("answerable", "nonexistent"):
        items = [p for p in benchmark.hallucination_probes if p.kind == kind]
        step = max(1, len(items) / n) if len(items) > n else 1
        kept += [items[int(i * step)] for i in range(min(n, len(items)))]
    benchmark.hallucination_probes = kept


def _cap_utility(benchmark, n: int | None) -> None:
    """Keep the first ``n`` items of each utility set (``eval.utility_items``), for a faster default run."""
    if not n:
        return
    for t in benchmark.targets:
        u = t.utility
        u.mmlu, u.bbh, u.truthfulqa, u.triviaqa, u.fluency = (u.mmlu[:n], u.bbh[:n], u.truthfulqa[:n],
                                                              u.triviaqa[:n], u.fluency[:n])
