"""``rwkuplus subject``: build (once) or show the subject model, the world injected into the default model."""

from __future__ import annotations


import shutil
from pathlib import Path

from ..benchmark.world import WorldConfig
from ..errors import UserError
from ..fileio import ensure_dir, write_json
from ..models import DEFAULT_MODEL, DTYPE_HELP
from ..paths import home
from ..subject import THRESHOLDS, InjectionSettings, ensure_subject, read_subject, subject_key

NAME = "subject"
HELP = "build or reuse the subject model (knowledge injection of the synthetic world) and show its scores"
DESCRIPTION = (
    "Fine-tune the model on the synthetic world's facts (targets, neighbors, retained people) and on "
    "refusing questions about people who do not exist, then cache it by a hash of model + world + settings. "
    "Prints the scores before and after injection and whether each threshold is met. A second call reuses the cache."
)


def add_arguments(p) -> None:
    d = InjectionSettings()
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"base model spec (default {DEFAULT_MODEL})")
    p.add_argument("--world-seed", type=int, default=0, help="seed of the synthetic world (default 0)")
    p.add_argument("--lr", type=float, default=d.lr, help=f"injection learning rate (default {d.lr:g})")
    p.add_argument("--epochs", type=float, default=d.epochs, help=f"injection epochs (default {d.epochs:g})")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                   help=DTYPE_HELP + " (a subject is built and cached per dtype)")
    p.add_argument("--force", action="store_true", help="rebuild even if a cached subject model exists")
    p.add_argument("--json", metavar="FILE", help="also write the scores (subject.json) to FILE")


def run(args) -> int:
    if args.json and Path(args.json).is_dir():
        raise UserError(f"--json {args.json}: expected a file to write, but it is a folder.")
    if args.json:
        ensure_dir(Path(args.json).parent, "--json", create=False)
    config = WorldConfig(seed=args.world_seed)
    config.validate()
    settings = InjectionSettings(lr=args.lr, epochs=args.epochs)
    if args.force:
        shutil.rmtree(home() / "subjects" / subject_key(args.model, config, settings, args.dtype), ignore_errors=True)
    folder = ensure_subject(args.model, config, settings, dtype=args.dtype)
    summary = read_subject(folder)
    print(format_summary(summary))
    print(f"subject model: {folder}")
    if args.json:
        write_json(args.json, summary)
    return 0


def format_summary(summary: dict) -> str:
    rows = [f"{'check':<22}{'before':>10}{'after':>10}{'needs':>10}  met"]
    for key, need in THRESHOLDS.items():
        b, a = summary["before"].get(key), summary["after"].get(key)
        rows.append(f"{key:<22}{_fmt(b):>10}{_fmt(a):>10}{'>= ' + _fmt(need):>10}  "
                    f"{'yes' if summary['thresholds_met'][key] else 'NO'}")
    known, kept = summary.get("general_known_before"), summary["after"].get("general_kept")
    if known and kept is not None:
        rows.append(f"general kept: {round(kept * known)} of the {known} general questions the base model answered correctly")
    t = summary["training"]
    rows.append(f"injection ({summary.get('dtype', 'float32')}): {t['examples']} examples, {t['cost']['tokens_trained']} tokens trained, "
                f"{t['train_seconds']:.0f} s training, {summary['total_seconds']:.0f} s in all")
    return "\n".join(rows)


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.1f}" if v > 1.5 else f"{v:.2f}")



