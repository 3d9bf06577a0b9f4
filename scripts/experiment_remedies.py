"""Issue 18: do CFT's remedies remove its two hidden costs (knowledge conflict, hallucination spillover)?

One resumable `rwkuplus run` suite (``rwkuplus.suite.Suite``) on the default world from the cached
subject model: plain CFT-SFT on the conflicting and on the consistent corpus, each remedy
(``cft-sft:filtered``: the consistency-filtered corpus; ``cft-pcgrad``: gradient surgery among the
counterfactual samples; ``cft-honest``: honesty anchors; ``cft-gru``: the published forget-retain
projection), and GA, NPO and RT as references. Every unit is evaluated at the checkpoints (forget,
neighbor, hallucination and utility probes; the gradient-conflict measures for the counterfactual
methods) and at the end (the whole evaluation, spillover with bootstrap intervals).

The comparison is at equal forgetting: each unit's trajectory (the Before model first, FE 0 at step
0) is read at FE = 0.5 and 0.8 by ``tradeoff.at_levels`` (linear interpolation between the two
checkpoints that bracket the level; a unit that never reaches it says so): NR, UR (checkpoint UR:
from Gen alone), HS, HTS, dHR and dFabrication (the checkpoint's rate minus Before's), the conflict
ratio and the same-attribute conflict ratio, and the step at which FE first reaches the level
(steps-to-FE). The end columns are the final evaluation's (dHR with its 95% interval over items).
Then a verdict table, written by code from the same numbers and the rules in ``verdicts``: which
remedy removes which cost, at what price. Tables go into docs/experiments.md between the markers
``<!-- table:KEY -->`` ... ``<!-- /table:KEY -->`` of each KEY: ``remedy-filter`` (what consistency
filtering does to each target's corpus), ``remedies`` (the comparison), ``remedy-conflict`` (the
conflict measures along training), ``remedy-spillover`` (dHR by domain) and ``remedy-verdicts``.

    python scripts/experiment_remedies.py --out runs/remedies --seeds 0,1,2 --targets 1

``--steps``, ``--checkpoints``, ``--methods``, ``--utility-items`` and ``--hallucination-items`` size the
run; ``--model DIR`` runs it on another model (the tests use the tiny one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from experiment_hidden_costs import DOC, _fmt, _table  # noqa: E402

from rwkuplus.claims import replace_doc_block  # noqa: E402
from rwkuplus.config import RunConfig  # noqa: E402
from rwkuplus.errors import UserError  # noqa: E402
from rwkuplus.evaluation.hallucination import DOMAINS  # noqa: E402
from rwkuplus.fileio import write_text  # noqa: E402
from rwkuplus.report.summary import UnitResult, load_run, mean_std  # noqa: E402
from rwkuplus.suite import Suite  # noqa: E402
from rwkuplus.tradeoff import FE_LEVELS, at_levels  # noqa: E402

METHODS = ["cft-sft:conflicting", "cft-sft:consistent", "cft-sft:filtered", "cft-pcgrad", "cft-honest", "cft-gru",
           "ga", "npo", "rt"]
PLAIN = "CFT-SFT (conflicting)"
#: What a remedy is meant to remove (the verdict table checks it against plain CFT-SFT).
REMEDIES = {"CFT-SFT (consistent)": "reference", "CFT-SFT (filtered)": "conflict",
            "CFT-PCGrad (conflicting)": "conflict", "CFT-Honest (conflicting)": "spillover",
            "CFT-GRU (conflicting)": "retention"}  # GRU treats the forget-retain conflict: NR/UR
SPILL_DOMAINS = tuple(DOMAINS)  # same, related, unrelated, nonexistent (hallucination.domain_spillover)
DOMAIN_KEYS = tuple(f"dHR {d}" for d in SPILL_DOMAINS)
AT_KEYS = ("NR", "UR", "HS", "HTS", "dHR", "dFabrication", "conflict_ratio", "same_attribute_conflict_ratio",
           *DOMAIN_KEYS)
END_KEYS = ("FE", "NR", "UR", "HS", "HTS", "dHR", "dFabrication")
ALONG_KEYS = ("conflict_ratio", "same_attribute_conflict_ratio", "FE", "dHR")
COST_KEYS = ("tokens_trained", "estimated_flops", "wall_seconds", "gradient_passes", "gradient_seconds")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/remedies")
    p.add_argument("--seeds", default="0")
    p.add_argument("--targets", default="1")
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per method (max_steps)")
    p.add_argument("--checkpoints", default="2,4,6,8,10,12", help="steps at which every unit is evaluated")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (before is added)")
    p.add_argument("--model", default=None, help="model spec (default: the world's subject model)")
    p.add_argument("--benchmark", default="world", help="world (default) or world:SEED (another world)")
    p.add_argument("--utility-items", type=int, default=20)
    p.add_argument("--hallucination-items", type=int, default=60)
    p.add_argument("--no-doc", action="store_true", help="print the tables without writing docs/experiments.md")
    p.add_argument("--doc", default=str(DOC), help=argparse.SUPPRESS)
    p.add_argument("--filter-table-only", action="store_true",
                   help="only the consistency filter's tables (no training)")
    p.add_argument("--filter-model", default=None, metavar="SPEC",
                   help="also filter a corpus written by this model RWKU's way, per chosen target (e.g. "
                        "smollm2-135m-instruct): the model samples the biographies and reads their claims")
    p.add_argument("--filter-samples", type=int, default=12, help="biographies the model writes per target")
    p.add_argument("--filter-max-new-tokens", type=int, default=128, help="length of each written biography")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.benchmark != "world" and not (args.benchmark.startswith("world:") and args.benchmark[6:].isdigit()):
        raise UserError(f"--benchmark {args.benchmark}: expected world or world:SEED (the filter needs known values).")
    seed = int(args.benchmark[6:]) if ":" in args.benchmark else 0
    filter_tables = {"remedy-filter": filter_table(_world(seed))
                     + f"\n\n_the world of seed {seed}, every target; known values, no model call._"}
    if args.filter_model:
        records = model_filter_records(args.filter_model, seed, args.targets, out / "filter", args.filter_samples,
                                       args.filter_max_new_tokens)
        filter_tables["remedy-filter-model"] = (
            model_filter_table(records) + f"\n\n_{args.filter_model} writes {args.filter_samples} biographies of "
            f"at most {args.filter_max_new_tokens} tokens per target and reads them; records: `{out / 'filter'}`._")
    if args.filter_table_only:
        _write_tables(filter_tables, args)
        return
    cfg = RunConfig(benchmark=args.benchmark, targets=args.targets, model=args.model, methods=["before", *args.methods.split(",")],
                    seeds=[int(s) for s in args.seeds.split(",")],
                    checkpoints=[int(s) for s in args.checkpoints.split(",") if s], diagnostics=True,
                    train={"all": {"max_steps": args.steps}},
                    eval={"batch_size": 32, "utility_items": args.utility_items,
                          "hallucination_items": args.hallucination_items})
    print(f"== suite: {out}", flush=True)
    Suite(cfg.validate(), out).run()
    rows = method_rows(load_run(out).units)
    note = (f"_{len(cfg.seeds)} seed(s) x target(s) {args.targets}, {args.steps} steps, checkpoints "
            f"{args.checkpoints}; source: `{out}/units/*/result.json`._")
    tables = {**filter_tables, "remedies": remedies_table(rows) + "\n\n" + note,
              "remedy-conflict": along_table(rows) + "\n\n" + note,
              "remedy-spillover": spillover_table(rows) + "\n\n" + note,
              "remedy-verdicts": verdict_table(verdicts(rows)) + "\n\n" + note}
    _write_tables(tables, args)


def _write_tables(tables: dict[str, str], args) -> None:
    for key, table in tables.items():
        print(f"\n### {key}\n{table}")
    if not args.no_doc:
        doc = Path(args.doc)
        text = doc.read_text(encoding="utf-8")
        for key, table in tables.items():
            text = replace_doc_block(text, table, key)
        write_text(doc, text)
        print(f"\nTables written into {doc}")


# ------------------------------------------------------------------------ the consistency filter
def _world(seed: int):
    from rwkuplus.benchmark.world import WorldConfig, default_world_dir, load_world

    return load_world(default_world_dir(WorldConfig(seed=seed)))


def filter_table(world=None) -> str:
    """What consistency filtering does to each target's conflicting corpus (``benchmark/consistency.py``)."""
    from rwkuplus.benchmark.consistency import filtered_world_corpus

    world = world or _world(0)
    body = []
    for person in world.targets:
        _, r = filtered_world_corpus(world, person)
        body.append([person.name, f"{r.samples_before} -> {r.samples_after}", ", ".join(map(str, r.kept)),
                     f"{max(r.agreement):.2f}", f"{r.inconsistency_before:.3f}", f"{r.inconsistency_after:.3f}"])
    return _table(["target", "samples (conflicting -> filtered)", "kept", "best agreement with the majority profile",
                   "inconsistency before", "inconsistency after"], body)


# Openings the model continues (ours: RWKU's all_truncated_outputs.json is not shipped), cycled over the samples.
OPENINGS = ("", "{name} was born", "{name} is", "Born in", "{name}, a", "Early life")


def model_filter_records(model_spec: str, seed: int, targets, folder: Path, n: int, max_new_tokens: int) -> list[dict]:
    """Per chosen target: a corpus written by ``model_spec`` RWKU's way, filtered by the model's own reading
    (``consistency.generate_filtered_corpus``); records under ``folder/<target>/`` (negative.json,
    negative_filtered.json, consistency_filter.json, generation.json), reused when present."""
    from rwkuplus.benchmark import consistency as C
    from rwkuplus.benchmark.rwku import load_benchmark
    from rwkuplus.benchmark.world import WorldConfig, default_world_dir
    from rwkuplus.fileio import read_json, write_json

    benchmark = load_benchmark(str(default_world_dir(WorldConfig(seed=seed))), targets=None if targets == "all" else targets)
    loaded = None
    records = []
    for d in benchmark.targets:
        sub = folder / d.name.replace(" ", "_")
        if not (sub / "consistency_filter.json").is_file():
            if loaded is None:
                from rwkuplus.models import load_model

                loaded = load_model(model_spec)[:2]
            openings = [o.format(name=d.name) for o in OPENINGS]
            corpora, result = C.generate_filtered_corpus(*loaded, d.target, openings, d.forget_probes, n=n,
                                                         max_new_tokens=max_new_tokens)
            write_json(sub / "negative.json", [t.to_json() for t in corpora.counterfactual["conflicting"]])
            write_json(sub / "generation.json", corpora.cost_json())
            C.write_filtered_corpus(sub, corpora.counterfactual["filtered"], result)
        records.append({"target": d.name, "result": read_json(sub / "consistency_filter.json"),
                        "generation": read_json(sub / "generation.json")})
    return records


def model_filter_table(records: list[dict]) -> str:
    body = []
    for r in records:
        f, parts = r["result"], r["generation"]["parts"]
        body.append([r["target"], f"{f['samples_before']} -> {f['samples_after']}", f"{max(f['agreement']):.2f}",
                     f"{f['inconsistency_before']:.3f}", f"{f['inconsistency_after']:.3f}",
                     str(parts.get("conflicting", {}).get("tokens_generated", "n/a")), str(f["tokens_generated"])])
    return _table(["target", "samples (written -> filtered)", "best agreement", "inconsistency before (as read)",
                   "inconsistency after", "tokens written", "tokens read"], body)


# ---------------------------------------------------------------------------------- per unit
def unit_points(unit: UnitResult, before: dict) -> list[dict]:
    """The unit's checkpoints in step order, the Before model first (step 0, FE 0), each with dHR and
    dFabrication against Before and the conflict measures of the same step."""
    hr0, fab0 = before.get("HR"), before.get("Fabrication")
    diags = {d.get("step"): d for d in unit.diagnostics}
    start = {"step": 0, "FE": 0.0, "NR": 1.0, "UR": 1.0, "HS": 1.0, "HR": hr0, "Fabrication": fab0}
    points = [start] + sorted((dict(t) for t in unit.trajectory if t.get("step")), key=lambda t: t["step"])
    for pt in points:
        pt["dHR"] = _minus(pt.get("HR"), hr0)
        pt["dFabrication"] = _minus(pt.get("Fabrication"), fab0)
        d = diags.get(pt["step"], {})
        pt["conflict_ratio"] = d.get("conflict_ratio")
        pt["same_attribute_conflict_ratio"] = (d.get("same_attribute") or {}).get("conflict_ratio")
    return points  # Before has no HTS (FE 0): HTS is interpolated between checkpoints only


def _minus(a, b):
    return a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def unit_record(unit: UnitResult, before: dict) -> dict:
    """What the tables need from one finished unit: values at each FE level, at the end, and costs."""
    points = unit_points(unit, before)
    levels = at_levels(points, FE_LEVELS, AT_KEYS)
    m = unit.metrics
    end = {k: m.get(k) for k in END_KEYS}
    end["dHR_ci"] = m.get("dHR_ci")
    for k in DOMAIN_KEYS:
        end[k], end[f"{k}_ci"] = m.get(k), m.get(f"{k}_ci")
    end["conflict_ratio_start"] = points[0].get("conflict_ratio")
    end["same_attribute_conflict_ratio_start"] = points[0].get("same_attribute_conflict_ratio")
    last = [p for p in points if p.get("conflict_ratio") is not None]
    end["conflict_ratio_last"] = last[-1]["conflict_ratio"] if last else None
    end["same_attribute_conflict_ratio_last"] = last[-1].get("same_attribute_conflict_ratio") if last else None
    costs = {k: unit.costs.get(k) for k in COST_KEYS}
    return {"label": unit.label, "levels": levels, "end": end, "costs": costs, "points": points}


def method_rows(units: list[UnitResult]) -> list[dict]:
    """One row per method (label): mean/std over its finished units of every number of ``unit_record``."""
    befores = {u.target: u.metrics for u in units if u.method == "before" and u.ok}
    records: dict[str, list[dict]] = {}
    for u in units:
        if u.method == "before" or not u.ok or u.target not in befores:
            continue
        records.setdefault(u.label, []).append(unit_record(u, befores[u.target]))
    rows = []
    for label, recs in records.items():
        row = {"label": label, "n": len(recs), "levels": {}, "end": {}, "costs": {}}
        for level in (f"{x:g}" for x in FE_LEVELS):
            lv = [r["levels"][level] for r in recs]
            row["levels"][level] = {"reached": sum(bool(v["reached"]) for v in lv),
                                    **{k: mean_std(v.get(k) for v in lv) for k in ("step", *AT_KEYS)}}
        for k in recs[0]["end"]:
            if not k.endswith("_ci"):
                row["end"][k] = mean_std(r["end"][k] for r in recs)
            else:  # one unit: its interval over items; several: the std over units says the spread
                cis = [r["end"][k] for r in recs if r["end"].get(k)]
                row["end"][k] = cis[0] if len(cis) == 1 else None
        for k in COST_KEYS:
            row["costs"][k] = mean_std(r["costs"][k] for r in recs)
        steps = sorted({p["step"] for r in recs for p in r["points"]})
        row["along"] = [{"step": s, **{k: mean_std(p.get(k) for r in recs for p in r["points"] if p["step"] == s)
                                      for k in ALONG_KEYS}} for s in steps]
        rows.append(row)
    order = {m: i for i, m in enumerate([PLAIN, "CFT-SFT (consistent)", *REMEDIES])}
    return sorted(rows, key=lambda r: (order.get(r["label"], len(order)), r["label"]))


# ------------------------------------------------------------------------------------- tables
def _mean(stat: dict | None):
    return None if not stat else stat.get("mean")


def _cell(stat: dict | None, digits: int = 2) -> str:
    return _fmt(stat, digits)


def remedies_table(rows: list[dict]) -> str:
    header = ["method", "conflict ratio (start / FE 0.5 / FE 0.8)", "same-attribute conflict ratio (start / FE 0.5 / FE 0.8)",
              "steps to FE 0.5", "steps to FE 0.8"]
    for level in ("0.5", "0.8"):
        header += [f"{k} @FE {level}" for k in ("NR", "UR", "HTS", "dHR", "dFabrication")]
    header += ["FE (end)", "dHR (end) [95% CI]", "dFabrication (end)", "tokens", "FLOPs", "wall time (s)",
               "gradient passes"]
    body = []
    for r in rows:
        lv, end, c = r["levels"], r["end"], r["costs"]

        def trio(key: str) -> str:
            vals = [_mean(end.get(f"{key}_start")), _mean(lv["0.5"].get(key)), _mean(lv["0.8"].get(key))]
            return " / ".join("n/a" if v is None else f"{v:.2f}" for v in vals)

        def steps(level: str) -> str:
            s = lv[level]
            return f"{_cell(s['step'], 1)} ({s['reached']}/{r['n']} reached)"

        cells = [r["label"], trio("conflict_ratio"), trio("same_attribute_conflict_ratio"), steps("0.5"), steps("0.8")]
        for level in ("0.5", "0.8"):
            cells += [_cell(lv[level].get(k)) for k in ("NR", "UR", "HTS", "dHR", "dFabrication")]
        ci = end.get("dHR_ci")
        dhr = _cell(end.get("dHR")) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
        cells += [_cell(end.get("FE")), dhr, _cell(end.get("dFabrication")), _big(c.get("tokens_trained")),
                  _big(c.get("estimated_flops")), _cell(c.get("wall_seconds"), 0), _cell(c.get("gradient_passes"), 0)]
        body.append(cells)
    return _table(header, body)


def along_table(rows: list[dict]) -> str:
    """The conflict measures along training (mean over seeds at each checkpoint step), with FE and dHR there."""
    body = []
    for r in rows:
        if not any(_mean(p["conflict_ratio"]) is not None for p in r["along"]):
            continue  # no counterfactual corpus: no conflict probes
        for p in r["along"]:
            body.append([r["label"], f"{p['step']:g}"] + [_cell(p[k]) for k in ALONG_KEYS])
    return _table(["method", "step", "conflict ratio", "same-attribute conflict ratio", "FE", "dHR"], body)


def spillover_table(rows: list[dict]) -> str:
    """Spillover by domain (``hallucination.domain_spillover``): dHR at FE 0.5, at FE 0.8, and at the end
    with its 95% interval over items."""
    header = ["method"] + [f"dHR {d} (FE 0.5 / FE 0.8 / end [95% CI])" for d in SPILL_DOMAINS]
    body = []
    for r in rows:
        cells = [r["label"]]
        for k in DOMAIN_KEYS:
            vals = [_mean(r["levels"]["0.5"].get(k)), _mean(r["levels"]["0.8"].get(k)), _mean(r["end"].get(k))]
            text = " / ".join("n/a" if v is None else f"{v:.2f}" for v in vals)
            ci = r["end"].get(f"{k}_ci")
            cells.append(text + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and None not in ci else ""))
        body.append(cells)
    return _table(header, body)


def _big(stat: dict | None) -> str:
    v = _mean(stat)
    return "n/a" if v is None else f"{v:.3g}"


#: Differences smaller than these are "no change" in the verdicts.
MARGIN = {"conflict": 0.05, "spillover": 0.02, "retention": 0.02}


def verdicts(rows: list[dict]) -> list[dict]:
    """For each remedy against plain CFT-SFT (conflicting): does it lower the conflict (same-attribute
    conflict ratio at FE 0.8, else at the last checkpoint), lower spillover (dHR at FE 0.8, else at the
    end), keep NR/UR at FE 0.8, and at what price (wall time, FLOPs, steps to FE 0.8, as ratios)?
    A difference within ``MARGIN`` is "no change"; a quantity missing on either side is "n/a"."""
    by = {r["label"]: r for r in rows}
    plain = by.get(PLAIN)
    out = []
    if plain is None:
        return out

    def value(row, key, level="0.8", fallback=None):
        v = _mean(row["levels"][level].get(key))
        return v if v is not None or fallback is None else _mean(row["end"].get(fallback))

    def compare(a, b, margin, lower_is_better=True):
        if a is None or b is None:
            return "n/a"
        d = a - b if lower_is_better else b - a
        if d < -margin:
            return "better"
        if d > margin:
            return "worse"
        return "no change"

    for label, aim in REMEDIES.items():
        row = by.get(label)
        if row is None:
            continue
        conflict = compare(value(row, "same_attribute_conflict_ratio", fallback="same_attribute_conflict_ratio_last"),
                           value(plain, "same_attribute_conflict_ratio", fallback="same_attribute_conflict_ratio_last"),
                           MARGIN["conflict"])
        spill = compare(value(row, "dHR", fallback="dHR"), value(plain, "dHR", fallback="dHR"), MARGIN["spillover"])
        keep = [compare(value(row, k), value(plain, k), MARGIN["retention"], lower_is_better=False) for k in ("NR", "UR")]

        def ratio(a, b):
            return None if a is None or b in (None, 0) else a / b

        price = {"wall": ratio(_mean(row["costs"]["wall_seconds"]), _mean(plain["costs"]["wall_seconds"])),
                 "flops": ratio(_mean(row["costs"]["estimated_flops"]), _mean(plain["costs"]["estimated_flops"])),
                 "steps": ratio(_mean(row["levels"]["0.8"]["step"]), _mean(plain["levels"]["0.8"]["step"]))}
        removes = [name for name, v in (("conflict", conflict), ("spillover", spill)) if v == "better"]
        helps = {"conflict": conflict == "better", "spillover": spill == "better",
                 "retention": "better" in keep}.get(aim, False)
        out.append({"label": label, "aim": aim, "conflict": conflict, "spillover": spill, "NR": keep[0],
                    "UR": keep[1], "price": price, "removes": ", ".join(removes) or "none",
                    "verdict": "reference" if aim == "reference" else ("helps" if helps else "does not help")})
    return out


def verdict_table(items: list[dict]) -> str:
    def x(v):
        return "n/a" if v is None else f"{v:.2f}x"

    body = [[v["label"], v["aim"], v["conflict"], v["spillover"], v["NR"], v["UR"], v["removes"],
             x(v["price"]["wall"]), x(v["price"]["flops"]), x(v["price"]["steps"]), f"**{v['verdict']}**"]
            for v in items]
    return _table(["remedy", "aimed at", "same-attribute conflict vs plain", "spillover (dHR) vs plain",
                   "NR vs plain", "UR vs plain", "removes", "wall time vs plain", "FLOPs vs plain",
                   "steps to FE 0.8 vs plain", "verdict"], body)


if __name__ == "__main__":
    try:
        main()
    except UserError as e:  # a user's mistake: one sentence, no traceback
        sys.exit(f"error: {e}")
