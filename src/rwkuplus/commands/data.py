"""``rwkuplus data``: write the synthetic world, fetch RWKU's official data, count what a benchmark holds."""

from __future__ import annotations

import argparse
import json

NAME = "data"
HELP = "write the synthetic world, fetch RWKU's data from the hub, or count a benchmark's records"
DESCRIPTION = (
    "Benchmark data. 'data world' writes the seeded synthetic world in RWKU's folder layout "
    "(same seed, same bytes); 'data rwku' fetches chosen targets of RWKU's official data "
    "(jinzhuoran/RWKU) at a pinned revision; 'data stats' counts the records of a benchmark."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..benchmark.world import WorldConfig

    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    defaults = WorldConfig()

    w = sub.add_parser("world", help="write the synthetic world (RWKU's layout plus our extras)",
                       description="Write the seeded synthetic world into --out in RWKU's folder layout.")
    w.add_argument("--seed", type=int, default=defaults.seed, help="world seed (default %(default)s)")
    w.add_argument("--out", required=True, help="folder to write (new, empty, or a world written before)")
    for flag, field, text in (
        ("--targets", "n_targets", "people to unlearn"),
        ("--neighbors", "n_neighbors_per_target", "neighbor entities per target"),
        ("--retained", "n_retained", "retained people"),
        ("--attributes", "n_attributes", "facts per person"),
        ("--phrasings", "n_phrasings", "question phrasings per fact (the first is held out)"),
        ("--counterfactual", "n_counterfactual", "samples per counterfactual corpus"),
        ("--alternatives", "n_alternatives", "false answers per question (AltPO)"),
        ("--nonexistent-train", "n_nonexistent_train", "nonexistent names the subject model learns to refuse"),
        ("--nonexistent-eval", "n_nonexistent_eval", "nonexistent names for the hallucination probes"),
        ("--attacks-per-kind", "n_attack_per_kind", "adversarial probes per attack kind per target"),
    ):
        w.add_argument(flag, type=int, dest=field, default=getattr(defaults, field),
                       help=f"{text} (default %(default)s)")

    r = sub.add_parser("rwku", help="fetch chosen targets of RWKU's official data from the hub",
                       description="Fetch the Target/<i>_<Name>/ folders of the chosen targets from the "
                                   "hub dataset jinzhuoran/RWKU at a pinned revision.")
    r.add_argument("--targets", default="1-10",
                   help="indices such as 1-10 or 1,3,5, or names separated by ';' (default %(default)s)")
    r.add_argument("--out", default=None, help="folder to fetch into (default: $RWKUPLUS_HOME/rwku, "
                                               "what --benchmark rwku loads)")
    r.add_argument("--revision", default=None, help="dataset revision (default: the pinned commit)")
    r.add_argument("--no-corpora", action="store_true",
                   help="skip the training corpora (positive, negative, pair, reject, passage)")
    r.add_argument("--phi", action="store_true", help="also fetch the corpora generated with Phi-3")

    s = sub.add_parser("stats", help="count the records of a benchmark, per target and file",
                       description="Count the records of a benchmark, per target and kind.")
    s.add_argument("--benchmark", default="world", help="world, world:SEED, rwku, rwku:DIR or a folder")
    s.add_argument("--targets", default=None, help="indices such as 1-10, or names separated by ';'")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(_parser=parser)


def run(args) -> int:
    if args.data_command == "world":
        return _world(args)
    if args.data_command == "rwku":
        return _rwku(args)
    if args.data_command == "stats":
        return _stats(args)
    args._parser.print_help()
    return 0


def _world(args) -> int:
    from dataclasses import fields

    from ..benchmark.world import WorldConfig, generate_world, write_world
    from ..fileio import ensure_dir

    values = {f.name: getattr(args, f.name) for f in fields(WorldConfig) if hasattr(args, f.name)}
    config = WorldConfig(**values)
    ensure_dir(args.out, "--out", create=False)
    out = write_world(generate_world(config), args.out)
    print(f"wrote the world (seed {config.seed}, {config.n_targets} targets, {config.n_retained} retained "
          f"people) to {out}")
    return 0


def _rwku(args) -> int:
    from ..benchmark.hub import PINNED_REVISION, fetch_rwku
    from ..fileio import ensure_dir

    if args.out is not None:
        ensure_dir(args.out, "--out", create=False)
    out = fetch_rwku(args.targets, args.out, revision=args.revision or PINNED_REVISION,
                     corpora=not args.no_corpora, phi=args.phi)
    print(f"fetched RWKU targets {args.targets} into {out}")
    return 0


def stats(benchmark) -> dict:
    """Record counts per target (probes by kind, MIA, corpora, pairs, utility) and top-level extras."""
    per_target = {}
    for d in benchmark.targets:
        kinds: dict[str, int] = {}
        for p in d.forget_probes:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        attacks: dict[str, int] = {}
        for p in d.forget_probes:
            if p.level == "3":
                attacks[p.attack] = attacks.get(p.attack, 0) + 1
        u = d.utility
        per_target[d.name] = {
            "index": d.target.index,
            "forget": kinds,
            "attacks": dict(sorted(attacks.items())),
            "neighbor": {k: sum(p.kind == k for p in d.neighbor_probes) for k in ("FB", "QA")},
            "forget_mia": len(d.forget_mia),
            "retain_mia": len(d.retain_mia),
            "positive": len(d.factual_corpus),
            **{f"counterfactual_{k}": len(v) for k, v in sorted(d.counterfactual_corpora.items())},
            "passages": len(d.passages),
            "pairs": len(d.preference_pairs),
            "refusals": len(d.refusal_pairs),
            "utility": {"mmlu": len(u.mmlu), "bbh": len(u.bbh), "truthfulqa": len(u.truthfulqa),
                        "triviaqa": len(u.triviaqa), "fluency": len(u.fluency)},
        }
    return {
        "name": benchmark.name,
        "source": benchmark.source,
        "targets": per_target,
        "retain_corpus": len(benchmark.retain_corpus),
        "hallucination": {k: sum(p.kind == k for p in benchmark.hallucination_probes)
                          for k in ("answerable", "nonexistent")},
    }


def _stats(args) -> int:
    from ..benchmark.rwku import load_benchmark

    result = stats(load_benchmark(args.benchmark, args.targets))
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    print(f"benchmark {result['name']} from {result['source']['path']} "
          f"(revision {result['source'].get('revision') or '-'})")
    for name, s in result["targets"].items():
        forget = " ".join(f"{k} {v}" for k, v in s["forget"].items())
        print(f"  {s['index']:>3} {name}: forget {forget}; neighbor FB {s['neighbor']['FB']} QA {s['neighbor']['QA']}; "
              f"MIA {s['forget_mia']}/{s['retain_mia']}; positive {s['positive']}; "
              + "; ".join(f"{k} {v}" for k, v in s.items() if k.startswith("counterfactual_"))
              + f"; pairs {s['pairs']}; refusals {s['refusals']}; "
              f"utility {sum(s['utility'].values())}")
    h = result["hallucination"]
    print(f"  retain corpus {result['retain_corpus']}; hallucination answerable {h['answerable']} "
          f"nonexistent {h['nonexistent']}")
    return 0
