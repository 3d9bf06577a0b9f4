"""``rwkuplus run``: the main job — the whole RWKU+ suite to a summary table and an HTML report."""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig, quick_config
from ..evaluation.protocol import PROTOCOL_HELP, parse_protocol
from ..models import DTYPE_HELP

NAME = "run"
HELP = "run the RWKU+ suite end to end (default: the embedded world and subject model) and write the report"
DESCRIPTION = (
    "Build (or reuse) the world and the subject model, run every method of the suite on every target and seed, "
    "evaluate each with the RWKU evaluation, the hallucination suite and the trade-off metrics, and write "
    "summary.json/csv/md and report.html into the run folder. Rerunning the same command resumes: finished units "
    "are skipped. Options given here override the --config file."
)


def add_arguments(p) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML run configuration (see the README for its keys)")
    p.add_argument("--quick", action="store_true", help="a reduced suite for a first look (one target, four methods)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/default, or runs/quick with --quick)")
    p.add_argument("--benchmark", help="world, world:SEED or rwku:DIR")
    p.add_argument("--model", help="model spec (default for the world: the subject model)")
    p.add_argument("--targets", help="target selection, e.g. 1-2 or all")
    p.add_argument("--methods", help="comma-separated methods, e.g. before,ga,cft-sft:consistent")
    p.add_argument("--settings", help="comma-separated: full, lora")
    p.add_argument("--seeds", help="comma-separated integers")
    p.add_argument("--target-mode", choices=("single", "batch"), help="single-target or batch-target unlearning")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), help=DTYPE_HELP)
    p.add_argument("--protocol", help=PROTOCOL_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress display (logs still go to run.log)")
    p.add_argument("--join", action="store_true",
                   help="share the work of the run already working in --out (same options): take the units it has "
                        "not started; that run writes the summary at the end")


def resolve_config(args) -> RunConfig:
    from ..errors import UserError

    config = RunConfig.from_yaml(args.config) if args.config else (quick_config() if args.quick else RunConfig())
    if args.config and args.quick:
        raise UserError("--quick and --config cannot be combined; put the reduced settings in the config file.")
    def ints(text: str, option: str) -> list[int]:
        try:
            return [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"{option}: expected comma-separated integers, got {text!r}.") from None

    changes = {
        "benchmark": args.benchmark, "model": args.model, "targets": args.targets,
        "methods": [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None,
        "settings": [s.strip() for s in args.settings.split(",") if s.strip()] if args.settings else None,
        "seeds": ints(args.seeds, "--seeds") if args.seeds else None,
        "target_mode": args.target_mode,
        "dtype": args.dtype,
        "protocol": parse_protocol(args.protocol).label if args.protocol else None,  # --protocol named in errors
    }
    return config.replace(**changes).validate("command line")


def run(args) -> int:
    from ..suite import Suite

    config = resolve_config(args)
    out = Path(args.out or ("runs/quick" if args.quick else "runs/default"))
    summary = Suite(config, out, progress=not args.quiet, join=args.join).run()
    print(f"\nRun folder: {out}")
    if args.join and summary is None:  # a helper: the run that owns the folder writes the summary
        return 0
    if isinstance(config.benchmark, list):  # a run over several worlds: one run folder each, the claims here
        print((out / "claims.md").read_text(encoding="utf-8"))
        from ..config import world_seed

        print("Per world: " + ", ".join(str(out / f"world-{world_seed(b)}" / "report.html") for b in config.benchmark))
        return 0 if summary is not None else 1
    md = out / "summary.md"
    if md.is_file():
        print(md.read_text(encoding="utf-8"))
    print(f"Report: {out / 'report.html'}")
    return 0 if summary is not None else 1
