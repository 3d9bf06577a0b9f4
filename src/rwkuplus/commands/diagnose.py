"""``rwkuplus diagnose``: gradient-level knowledge conflict of a method's training data, per target."""

from __future__ import annotations

from ..errors import UserError
from ..models import DTYPE_HELP

NAME = "diagnose"
HELP = "measure gradient conflict among a method's training examples (JSON + cosine heatmap per target)"
DESCRIPTION = (
    "For each target, take the examples a method would train on (by default, for CFT-SFT on a world, one QA "
    "item per counterfactual sample and attribute), compute the per-example gradients of the method's loss "
    "over a parameter set, and write the conflict measures (conflict ratio, mean and mean negative cosine, "
    "cancellation ratio, coherence; over all pairs and over pairs about the same attribute; overall and "
    "per layer) to OUT/<target>/conflict.json and the cosine matrix to OUT/<target>/cosine.png. With "
    "--retain N, N retain texts join the Gram and the forget/retain alignment is reported."
)


def add_arguments(parser) -> None:
    from ..diagnostics.params import PARAMS_HELP
    from ..diagnostics.runner import UNITS

    parser.add_argument("--model", help="model spec (default: on a world its subject model, once built; "
                                        "otherwise the packaged default)")
    parser.add_argument("--adapter", help="a saved LoRA adapter folder to apply to the model")
    parser.add_argument("--benchmark", default="world", help="world, world:SEED, rwku:DIR or DIR (default: world)")
    parser.add_argument("--targets", nargs="+", metavar="NAME", help="diagnose only these targets (default: all)")
    parser.add_argument("--method", default="cft-sft", help="unlearning method whose loss to differentiate "
                                                            "(default cft-sft)")
    parser.add_argument("--corpus", choices=("conflicting", "consistent", "filtered"),  # base.CORPUS_VARIANTS
                        help="counterfactual corpus for CFT methods (default: the method's default, conflicting)")
    parser.add_argument("--params", default="auto", help=f"parameter set: {PARAMS_HELP} (default auto)")
    parser.add_argument("--project", type=int, metavar="D",
                        help="sketch each layer's gradient to D numbers (seeded; cosine error ~ sqrt(2/D)); "
                             "default: exact")
    parser.add_argument("--unit", default="auto", choices=UNITS,
                        help="text: the method's training texts; attribute (world): one QA item per sample and "
                             "attribute, labelled; auto (default): attribute on a world for corpora that have it")
    parser.add_argument("--max-examples", type=int, default=64, help="at most this many examples per target "
                                                                      "(default 64)")
    parser.add_argument("--retain", type=int, default=0, metavar="N",
                        help="add N retain texts for the forget/retain alignment (default 0)")
    parser.add_argument("--layer-block", type=int, default=1, help="report per block of this many layers (default 1)")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per backward pass (default 32)")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per example at most (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="projection seed (default 0)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    parser.add_argument("--out", required=True, help="output folder")


def _check(args) -> None:
    for value, option, low in ((args.max_examples, "--max-examples", 2), (args.batch_size, "--batch-size", 1),
                               (args.max_length, "--max-length", 2), (args.layer_block, "--layer-block", 1),
                               (args.retain, "--retain", 0)):
        if value < low:
            raise UserError(f"{option}: expected an integer of at least {low}, got {value}.")
    if args.project is not None and args.project < 8:
        raise UserError(f"--project: expected at least 8 dimensions, got {args.project}.")


def run(args) -> int:
    from ..benchmark.rwku import load_benchmark
    from ..diagnostics.params import select_parameters
    from ..diagnostics.runner import (diagnose_target, diagnostic_data, headline, make_reference,
                                      target_folder)
    from .. import progress
    from ..default_model import default_model
    from ..fileio import ensure_dir, write_json
    from ..methods.base import make_method, method_class
    from ..models import load_model

    _check(args)
    ensure_dir(args.out, "--out", create=False)
    cls = method_class(args.method)
    if args.corpus and "corpus" not in cls.hyperparameters():
        raise UserError(f"--corpus: the method {cls.name} does not train on a counterfactual corpus.")
    method = make_method(args.method, **({"corpus": args.corpus} if args.corpus else {}))
    benchmark = load_benchmark(args.benchmark, targets=args.targets)
    model_spec = default_model(benchmark, args.model, args.dtype)
    model, tokenizer, spec = load_model(model_spec, dtype=args.dtype, device=args.device, adapter=args.adapter)
    pset = select_parameters(model, args.params)
    reference = make_reference(method, model)
    summary = {}
    bar = progress.bar(len(benchmark.targets), "targets", unit="target")
    for index, target in enumerate(benchmark.targets, 1):
        bar.set_postfix_str(target.name)
        data = diagnostic_data(benchmark, target, method, tokenizer, unit=args.unit, max_examples=args.max_examples,
                               retain=args.retain, max_length=args.max_length, reference=reference)
        info = {"target": target.name, "method": method.name, "method_params": vars(method.params),
                "model": {"spec": spec.spec, "fingerprint": spec.fingerprint, "adapter": args.adapter},
                "benchmark": benchmark.source}
        title = (f"{target.name}: {method.name}"
                 + (f" ({method.params.corpus})" if hasattr(method.params, "corpus") else "")
                 + f", {data.unit} items, params {pset.spec}" + (f", D={args.project}" if args.project else ""))
        folder = target_folder(target.target.index or index, target.name)
        result = diagnose_target(model, data, f"{args.out}/{folder}", pset, project=args.project, seed=args.seed,
                                 batch_size=args.batch_size, layer_block=args.layer_block, title=title, info=info)
        summary[target.name] = {"folder": folder, **headline(result)}
        numbers = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in
                            summary[target.name].items() if k != "folder")
        progress.say(f"{target.name}: {numbers}")
        bar.update(1)
    bar.close()
    write_json(f"{args.out}/summary.json", {"method": method.name, "method_params": vars(method.params),
                                            "parameters": pset.describe(), "project": args.project,
                                            "targets": summary})
    print(f"results: {args.out}/summary.json")
    return 0
