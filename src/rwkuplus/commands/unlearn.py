"""``rwkuplus unlearn``: unlearn targets with one method and save the model, its log, costs and probe scores."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import UserError
from ..evaluation.protocol import PROTOCOL_HELP
from ..models import DTYPE_HELP

NAME = "unlearn"
HELP = "unlearn targets with one method; save the model, the training log, costs and the probe evaluation"
DESCRIPTION = (
    "Unlearn the chosen targets with one method of the registry ('rwkuplus methods' lists them) and write, per "
    "target (single-target, each from a fresh copy of the starting model) or once for all targets "
    "(--batch-target): the unlearned model (a LoRA adapter or full weights, safetensors), the training log "
    "(train_log.jsonl, one line per step), cost counts (cost.json) and the forget/neighbor probe evaluation "
    "(eval.json). With --sequential the targets are unlearned in order, each from the previous step's model, "
    "and each step's evaluation covers every target so far. The default model for the world benchmark is its "
    "subject model; rerunning the same command skips finished targets (and steps)."
)


def add_arguments(p) -> None:
    p.add_argument("--method", required=True, help="method name (see 'rwkuplus methods')")
    p.add_argument("--corpus", choices=("conflicting", "consistent", "filtered"),  # methods.base.CORPUS_VARIANTS
                   help="counterfactual corpus for cft-sft and its remedies (default conflicting, RWKU's construction; "
                        "filtered: its samples that agree with the majority fabricated profile)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a method hyperparameter, e.g. --param beta=0.1 (repeatable)")
    p.add_argument("--benchmark", default="world", help="world, world:SEED, rwku or rwku:DIR (default: world)")
    p.add_argument("--model", help="model spec (default: the world's subject model; for rwku the packaged default)")
    p.add_argument("--targets", nargs="+", metavar="TARGET",
                   help="target names or indices, e.g. 1-3 or 'Stephen King' (default: all)")
    p.add_argument("--batch-target", action="store_true", help="unlearn all chosen targets at once (merged corpora)")
    p.add_argument("--sequential", action="store_true",
                   help="unlearn the chosen targets one after another, in order, each from the previous target's "
                        "model; after each step every target so far is evaluated (folders step<k>_<target>)")
    p.add_argument("--preset", default="default", help="training preset: default or rwku-llama3")
    p.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of all weights")
    p.add_argument("--lora-rank", type=int, help="LoRA rank (default 8)")
    p.add_argument("--lora-alpha", type=int, help="LoRA alpha (default 16)")
    p.add_argument("--lora-target-modules", help="comma-separated module names (default q_proj,v_proj)")
    p.add_argument("--layers", help="train only these layers, inclusive ranges such as 0-4 or 0-2,10")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps (overrides the epochs)")
    length.add_argument("--epochs", type=float, help="epochs over the primary corpus (default 3)")
    p.add_argument("--lr", type=float, help="learning rate (default: the method's, see 'rwkuplus methods')")
    p.add_argument("--batch-size", type=int, help="items per optimizer step, all processes together (default 8)")
    p.add_argument("--grad-accum", type=int, help="gradient accumulation micro-steps (default 1)")
    p.add_argument("--max-length", type=int, help="cut-off in tokens (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data order and adapter init (default 0)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    p.add_argument("--no-eval", action="store_true", help="skip the forget/neighbor probe evaluation")
    p.add_argument("--batch-size-eval", type=int, default=16, help="prompts per generation batch (default 16)")
    p.add_argument("--protocol", help=PROTOCOL_HELP + "; recorded in eval.json")
    p.add_argument("--out", required=True, help="output folder (resumable)")


# -------------------------------------------------------------------------------------------- options
def parse_params(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise UserError(f"--param {item}: expected NAME=VALUE, e.g. --param beta=0.1.")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def build_method(args):
    from ..methods import make_method

    params = parse_params(args.param)
    if args.corpus:
        params["corpus"] = args.corpus
    from ..methods import method_class

    cls = method_class(args.method)
    if cls.kind != "unlearning":
        raise UserError(f"--method {args.method}: a tuning method, not an unlearning one; use the Python API.")
    if args.corpus and "corpus" not in cls.hyperparameters():
        raise UserError(f"--corpus: method {cls.name} does not train on a counterfactual corpus.")
    return make_method(cls.name, **params)


def build_settings(args, method):
    from ..methods.presets import default_settings
    from ..models import LoraSettings

    if args.lora and args.layers:
        raise UserError("--lora and --layers cannot be combined; choose one way to limit the trained parameters.")
    mode = "lora" if args.lora else "layers" if args.layers else "full"
    settings = default_settings(method.name, mode=mode, preset=args.preset)
    changes = {"seed": args.seed}
    for option, key in (("lr", "lr"), ("epochs", "epochs"), ("batch_size", "batch_size"),
                        ("grad_accum", "grad_accum"), ("max_length", "max_length")):
        if getattr(args, option) is not None:
            changes[key] = getattr(args, option)
    if args.steps is not None:
        changes["max_steps"] = args.steps
    if args.layers:
        changes["layers"] = args.layers
    lora = settings.lora
    if args.lora_rank is not None or args.lora_alpha is not None or args.lora_target_modules:
        if not args.lora:
            raise UserError("--lora-rank/--lora-alpha/--lora-target-modules: these need --lora.")
        modules = tuple(m.strip() for m in args.lora_target_modules.split(",") if m.strip()) \
            if args.lora_target_modules else lora.target_modules
        lora = LoraSettings(rank=args.lora_rank or lora.rank, alpha=args.lora_alpha or lora.alpha,
                            dropout=lora.dropout, target_modules=modules)
    changes["lora"] = lora
    return settings.replace(**changes).validate()


def resolve_model_spec(args, benchmark) -> str:
    """--model, else the one default rule (``rwkuplus.default_model``): on a world its subject model."""
    from ..default_model import default_model

    return default_model(benchmark, args.model, getattr(args, "dtype", "auto"))


def unit_name(index: int | None, name: str) -> str:
    slug = re.sub(r"[^\w.,-]+", "_", name, flags=re.UNICODE).strip("_") or "target"
    return f"{index}_{slug}" if index is not None else slug


# ------------------------------------------------------------------------------------------------ run
def run(args) -> int:
    from .. import progress
    from ..benchmark.rwku import load_benchmark
    from ..fileio import ensure_dir, read_json, write_json, write_jsonl
    from ..models import load_model, load_tokenizer, parameter_count, resolve_model, save_model
    from ..training.data import build_corpora
    from ..training.loop import StartingWeights, make_accelerator, train

    ensure_dir(args.out, "--out", create=False)
    sequential = getattr(args, "sequential", False)
    if sequential and args.batch_target:
        raise UserError("--sequential and --batch-target cannot be combined; choose one way to unlearn several targets.")
    method = build_method(args)
    settings = build_settings(args, method)
    from ..evaluation.protocol import parse_protocol, resolve_protocol

    if args.protocol is not None:
        parse_protocol(args.protocol)  # a mistake is reported before anything is loaded
    benchmark = load_benchmark(args.benchmark, targets=args.targets)
    protocol = resolve_protocol(args.protocol, (benchmark.source or {}).get("kind"))
    model_spec = resolve_model_spec(args, benchmark)
    out = Path(args.out)
    config = {"method": method.describe(), "settings": settings.to_json(), "model": model_spec,
              "benchmark": benchmark.source, "targets": [t.name for t in benchmark.targets],
              "batch_target": args.batch_target, "evaluate": not args.no_eval, "protocol": protocol.label,
              **({"sequential": True} if sequential else {})}
    if (out / "config.json").is_file() and read_json(out / "config.json") != json.loads(json.dumps(config)):
        raise UserError(f"--out {out}: this folder holds an unlearning run with another configuration "
                        "(see its config.json); choose another --out or delete the folder.")
    # Under 'accelerate launch' every process runs this; only the main process writes and evaluates.
    accelerator = make_accelerator(cpu=args.device == "cpu")
    main_process = accelerator.is_main_process
    if main_process:
        write_json(out / "config.json", config)

    units = ([("batch", [t.name for t in benchmark.targets])] if args.batch_target
             else [(unit_name(t.target.index, t.name), [t.name]) for t in benchmark.targets])
    all_names = [t.name for t in benchmark.targets]
    # Sequential: step k trains on target k alone and is evaluated on targets 1..k.
    evaluated = {name: (all_names[:k + 1] if sequential else names) for k, (name, names) in enumerate(units)}
    if sequential:
        units = [(f"step{k + 1}_{name}", names) for k, (name, names) in enumerate(units)]
        evaluated = {f"step{k + 1}_{name}": v for k, (name, v) in enumerate(evaluated.items())}
    # Every unit's corpora first: a missing corpus is reported before the model is even loaded.
    tokenizer = load_tokenizer(resolve_model(model_spec).path)
    corpora = {name: build_corpora(method, benchmark, names, tokenizer) for name, names in units}
    device = "cpu" if accelerator.device.type == "cpu" else str(accelerator.device)
    model, tokenizer, _ = load_model(model_spec, device=device, dtype=args.dtype)
    model.eval()
    start = StartingWeights(model)
    n_params = parameter_count(model)
    rows = []
    resume_from = None  # sequential: the last finished step's folder, whose model the next step starts from
    for name, names in units:
        folder = out / name
        if (folder / "done.json").is_file():
            rows.append(read_json(folder / "done.json"))
            resume_from = folder
            if main_process:
                print(f"{name}: already done, skipped")
            continue
        if sequential and resume_from is not None and method.trains:
            model = _load_step_model(model_spec, resume_from / "model", settings, device, args.dtype)
            resume_from = None
        steps = progress.bar(None, f"{name}: training", unit="step", enabled=main_process)
        result = train(model, tokenizer, method, corpora[name], settings, accelerator=accelerator,
                       on_step=lambda row: steps.update(1))
        steps.close()
        trained = result.model
        row = {"unit": name, "targets": names, "steps": result.steps, "stopped_reason": result.stopped_reason,
               "evaluation": {}}
        if main_process:
            write_jsonl(folder / "train_log.jsonl", result.log)
            write_json(folder / "cost.json", {**result.to_json(), "parameters": n_params})
            if method.trains:
                save_model(trained, tokenizer, folder / "model")
            if not args.no_eval:
                with progress.activity(f"{name}: evaluating the forget and neighbor probes..."):
                    row["evaluation"] = evaluate_unit(trained, tokenizer, benchmark, evaluated[name], method.icu,
                                                      folder, args.batch_size_eval, protocol)
            write_json(folder / "done.json", row)  # last: marks the unit finished
            print(_row_text(row))
        accelerator.wait_for_everyone()
        rows.append(row)
        if sequential:
            model = trained  # the next target starts from this one
        else:
            model = start.restore(trained.unload() if hasattr(trained, "peft_config") else trained)
        model.eval()
    if main_process:
        write_json(out / "summary.json", rows)
        print(f"results: {out}")
    return 0


def _load_step_model(model_spec: str, saved: Path, settings, device: str, dtype: str):
    """A sequential run resumed: the model a finished step saved (full weights, or the starting model with
    the step's LoRA adapter, trained on by the next step)."""
    from ..models import load_model

    if settings.mode == "lora":
        model, _, _ = load_model(model_spec, device=device, dtype=dtype, adapter=str(saved))
    else:
        model, _, _ = load_model(str(saved), device=device, dtype=dtype)
    model.eval()
    return model


def evaluate_unit(model, tokenizer, benchmark, names: list[str], icu: bool, folder: Path, batch_size: int,
                  protocol) -> dict:
    """Forget and neighbor probe scores under ``protocol`` (``evaluation.protocol.Protocol``) of each
    target, its label recorded in each target's entry; records written per probe."""
    from ..evaluation.probes import evaluate_probes
    from ..fileio import write_json, write_jsonl

    model.eval()
    metrics = {}
    for name in names:
        target = benchmark.target(name)
        icu_target = name if icu else None
        entry: dict = {"protocol": protocol.label}
        for part, probes in (("forget", target.forget_probes), ("neighbor", target.neighbor_probes)):
            if not probes:
                continue
            records, scores = evaluate_probes(model, tokenizer, probes, icu_target=icu_target, batch_size=batch_size,
                                              max_new_tokens=protocol.probe_max_new_tokens, protocol=protocol)
            write_jsonl(folder / "probes" / f"{unit_name(None, name)}.{part}.jsonl", records)
            entry[part] = scores
        metrics[name] = entry
    write_json(folder / "eval.json", metrics)
    return metrics


def _row_text(row: dict) -> str:
    parts = [f"{row['unit']}: {row['steps']} steps"]
    if row["stopped_reason"]:
        parts.append(f"stopped ({row['stopped_reason']})")
    for name, entry in row["evaluation"].items():
        f = entry.get("forget", {}).get("All")
        n = entry.get("neighbor", {}).get("All")
        scores = ", ".join(s for s in (f"forget All {f:.1f}" if f is not None else "",
                                       f"neighbor All {n:.1f}" if n is not None else "") if s)
        if scores:
            parts.append(f"{name}: {scores}")
    return "; ".join(parts)
