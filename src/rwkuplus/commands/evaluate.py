"""``rwkuplus evaluate``: RWKU's full evaluation of one model (forget, neighbor, MIA, utility) and the
RWKU+ hallucination suite."""

from __future__ import annotations

from ..errors import UserError
from ..evaluation.protocol import PROTOCOL_HELP
from ..models import DTYPE_HELP

NAME = "evaluate"
HELP = "evaluate a model on RWKU's metrics (forget, neighbor, MIA, utility) and hallucination, resumably"
DESCRIPTION = (
    "Evaluate a model (optionally with a LoRA adapter) on every target of a benchmark: forget probes "
    "(FB/QA/AA), neighbor probes (FB/QA), membership inference (FM/RM and AUC) and utility "
    "(Gen/Rea/Tru/Fac/Flu), and the hallucination suite (hallucination rate on unrelated answerable "
    "questions, fabrication about nonexistent people, the forget probes' honesty split). Writes per-item "
    "records and metrics under --out, prints RWKU's table row and the hallucination rates, and skips parts "
    "already finished in --out by the same evaluation."
)


def add_arguments(parser) -> None:
    from ..models import DEFAULT_MODEL

    parser.add_argument("--model", help=f"model spec: {DEFAULT_MODEL}, a folder or a hub id (default: on a world "
                                        f"its subject model, otherwise {DEFAULT_MODEL})")
    parser.add_argument("--adapter", help="a saved LoRA adapter folder to apply to the model")
    parser.add_argument("--benchmark", default="world", help="world, world:SEED, rwku:DIR or DIR (default: world)")
    parser.add_argument("--targets", metavar="SELECTION",
                        help="targets to evaluate: indices and ranges such as 1-10 or 1,3,5, or names separated "
                             "by ';' (default: all)")
    parser.add_argument("--icu", action="store_true",
                        help="in-context unlearning: put RWKU's unlearning instruction naming the target before every prompt")
    parser.add_argument("--parts", default="forget,neighbor,mia,utility,hallucination",
                        help="comma-separated parts to run (default: forget,neighbor,mia,utility,hallucination; "
                             "the attacks on the weights: quantization, relearning)")
    parser.add_argument("--quantization-bits", metavar="LIST",
                        help="the quantization part's weight widths, e.g. 8,4 (default 8,4)")
    parser.add_argument("--relearning-steps", metavar="LIST",
                        help="the relearning part's fine-tuning steps, e.g. 1,5,20 (default 1,5,20)")
    parser.add_argument("--protocol", help=PROTOCOL_HELP)
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per batch (default 32)")
    parser.add_argument("--bbh-max-new-tokens", type=int,
                        help="generation length for Rea (the protocol's: rwku 256, world 96; the result records it)")
    parser.add_argument("--fluency-max-new-tokens", type=int,
                        help="generation length for Flu (the protocol's: rwku 256, world 64; the result records it)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--dtype", default="auto", help=DTYPE_HELP + ", float16")
    parser.add_argument("--out", required=True, help="output folder (resumable)")


def _load_benchmark(spec: str, targets):
    from ..benchmark.rwku import load_benchmark

    return load_benchmark(spec, targets=targets)


def _adapter_fingerprint(adapter: str | None) -> str | None:
    """Names, sizes and modification times of an adapter folder's files (a changed adapter is another model)."""
    import hashlib
    from pathlib import Path

    if adapter is None:
        return None
    h = hashlib.sha256()
    for f in sorted(Path(adapter).glob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


HALLUCINATION_RATES = (("HR", "hallucination_rate"), ("abstention", "abstention_rate"),
                      ("fabrication", "fabrication_rate"), ("forget leaked", "forget_leaked"),
                      ("abstained", "forget_abstained"), ("fabricated", "forget_fabricated"))


def _rate(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise UserError(f"{option}: expected a positive integer, got {value}.")


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{option}: expected comma-separated integers such as 8,4; got {text!r}.") from None


def _attack_settings(args):
    """The attack parts' settings from --quantization-bits / --relearning-steps (None = the defaults)."""
    from ..evaluation.attacks import AttackSettings

    given = {}
    if getattr(args, "quantization_bits", None):
        given["quantization_bits"] = _int_list(args.quantization_bits, "--quantization-bits")
    if getattr(args, "relearning_steps", None):
        given["relearning_steps"] = _int_list(args.relearning_steps, "--relearning-steps")
    return AttackSettings.from_json(given, where="--") if given else None


def run(args) -> int:
    from ..evaluation.runner import EvalSettings, evaluate_model, format_table, parse_parts
    from ..default_model import default_model
    from ..fileio import ensure_dir
    from ..models import load_model

    ensure_dir(args.out, "--out", create=False)
    parts = parse_parts(args.parts)
    for value, option in ((args.batch_size, "--batch-size"), (args.bbh_max_new_tokens, "--bbh-max-new-tokens"),
                          (args.fluency_max_new_tokens, "--fluency-max-new-tokens")):
        _positive(value, option)
    from ..evaluation.protocol import parse_protocol, resolve_protocol

    if args.protocol is not None:
        parse_protocol(args.protocol)  # a mistake is reported before anything is loaded
    benchmark = _load_benchmark(args.benchmark, args.targets)
    protocol = resolve_protocol(args.protocol, (benchmark.source or {}).get("kind"))
    lengths = {"bbh_max_new_tokens": args.bbh_max_new_tokens, "fluency_max_new_tokens": args.fluency_max_new_tokens}
    lengths = {k: v for k, v in lengths.items() if v is not None}
    if lengths:
        protocol = protocol.replace(**lengths)  # recorded: rwku,bbh_max_new_tokens=...
    settings = EvalSettings(batch_size=args.batch_size, protocol=protocol, attacks=_attack_settings(args))
    model_spec = default_model(benchmark, args.model, args.dtype)
    model, tokenizer, spec = load_model(model_spec, dtype=args.dtype, device=args.device, adapter=args.adapter)
    model_info = {"spec": spec.spec, "path": spec.path, "fingerprint": spec.fingerprint, "adapter": args.adapter,
                  "adapter_fingerprint": _adapter_fingerprint(args.adapter), "dtype": str(next(model.parameters()).dtype)}
    # The loader has already selected the targets.
    result = evaluate_model(model, tokenizer, benchmark, args.out, icu=args.icu, parts=parts,
                            settings=settings, model_info=model_info, progress=True)
    label = spec.spec + (" + adapter" if args.adapter else "") + (" (ICU)" if args.icu else "")
    print(format_table({label: result["rwku"]}))
    h = result["mean"].get("hallucination")
    if h:
        print("hallucination: " + ", ".join(f"{name} {_rate(h.get(key))}" for name, key in HALLUCINATION_RATES))
    from ..evaluation.attacks import attack_columns

    attacks = attack_columns(result["mean"])
    if attacks:
        print("attacks: " + ", ".join(f"{k} {'-' if v is None else f'{v:.1f}'}" for k, v in attacks.items()))
    print(f"protocol: {protocol.label}; results: {args.out}/metrics.json")
    return 0
