"""Load a benchmark folder in RWKU's layout (the official data or our synthetic world) into records.

``load_benchmark(spec, targets=None)``; ``spec`` is one of

- ``world``: the default synthetic world, generated once into the cache (``default_world_dir``);
- ``world:SEED``: the default world configuration with another seed;
- ``rwku``: the folder ``rwkuplus data rwku`` fetches into by default (``$RWKUPLUS_HOME/rwku``);
- ``rwku:DIR`` or a plain ``DIR``: a folder in RWKU's layout.

A folder may hold either layout of RWKU's hub dataset:

- ``Target/<index>_<Name_with_underscores>/<file>.json`` (also accepted: the ``<index>_<Name>``
  folders directly inside DIR). The target's name is the ``target`` field of its intro.json, or the
  folder name without the index, underscores read as spaces. Its index is the folder's number.
- ``All/<file>.json`` (also accepted: those files directly inside DIR), every record tagged with
  ``subject``. Targets and their order come from, in this order of preference: an
  ``all_intro.json`` in DIR (RWKU's generation file: an object name -> intros, or a list of names or
  of ``{"target": ...}`` objects), ``All/intro.json``, or else the order in which subjects first
  appear in forget_level1, forget_level2 and forget_level3. Index = 1-based position in that order;
  a target with no forget probe in the files is not part of the benchmark.

Files per target (missing optional files give empty lists; forget_level1/2/3 are required):
intro, forget_level1|2|3, neighbor_level1|2, forget_mia, retain_mia, retain_mmlu, retain_bbh,
truthful, triviaqa, fluency, passage, positive (factual corpus), negative (the conflicting
counterfactual corpus), negative_consistent (ours: the consistent one), negative_filtered (ours:
the consistency-filtered one, ``consistency.write_filtered_corpus``), pair, reject. With
``corpus_variant="phi"`` the corpora are read from the ``_phi`` files instead.

Top-level extras, when present: retain.json (retain corpus), hallucination.json, corpus_stats.json,
world.json (marks a synthetic world), .rwkuplus_source.json (hub revision, written by the fetch).
A folder without retain.json has an empty ``Benchmark.retain_corpus``; ``retain_texts`` then falls
back to the factual corpora of the loaded targets other than those being unlearned.

Target selection (``targets``): None or "all" = every target; an int or a string of indices and
ranges such as ``"1-10"``, ``"1,3,5"``, ``"1-3,7"`` (a range picks the targets present in it, at
least one; a single index must exist); a list of ints, index strings and names; or a
string of names (or indices) separated by ``;`` (never by commas, which occur in names such as
``Prince Harry, Duke of Sussex``). Names match case-insensitively and may be given in folder form
(``10_Prince_Harry,_Duke_of_Sussex`` or ``Prince_Harry,_Duke_of_Sussex``). Targets always come in
benchmark (index) order.

Every record is validated by its type's ``from_json(obj, where)`` with ``where`` = "<file>,
record <k>" (k counted from 1), so a malformed file ends with one sentence naming file, record and
field.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import read_json
from ..paths import home
from .records import (
    BBHItem,
    Benchmark,
    CorpusText,
    FluencyItem,
    HallucinationProbe,
    MIAText,
    MMLUItem,
    PreferencePair,
    Probe,
    RefusalPair,
    Target,
    TargetData,
    TriviaQAItem,
    TruthfulQAItem,
)

REQUIRED_FILES = ("forget_level1.json", "forget_level2.json", "forget_level3.json")
SOURCE_FILE = ".rwkuplus_source.json"
CORPUS_VARIANTS = {"llama3": "", "phi": "_phi"}
_FOLDER = re.compile(r"^(\d+)_(.+)$")


# --------------------------------------------------------------------------- selection
def normalize_name(name: str, strip_index: bool = True) -> str:
    """How names are compared: NFC, no ``<index>_`` prefix, underscores as spaces, case-folded."""
    name = unicodedata.normalize("NFC", name).strip()
    if strip_index:
        name = _FOLDER.sub(r"\2", name)
    return " ".join(name.replace("_", " ").split()).casefold()


def _name_keys(name: str) -> list[str]:
    return list(dict.fromkeys([normalize_name(name, strip_index=False), normalize_name(name)]))


def _selection_items(targets: Any) -> list | None:
    """Parse a selection into indices and names; None means every target."""
    if targets is None:
        return None
    if isinstance(targets, bool):
        raise UserError(f"--targets: expected indices such as 1-10 or names, got {targets!r}.")
    if isinstance(targets, int):
        return [targets]
    if isinstance(targets, str):
        text = targets.strip()
        if not text or text.casefold() == "all":
            return None
        if re.fullmatch(r"[\d\s,\-]+", text):
            items: list = []
            for part in text.split(","):
                if part.strip():
                    items.extend(_index_items(part.strip()))
            return items
        return _selection_items([n for n in text.split(";") if n.strip()])
    if isinstance(targets, (list, tuple)):
        items = []
        for t in targets:
            if isinstance(t, bool):
                raise UserError(f"--targets: expected indices or names, got {t!r}.")
            if isinstance(t, int):
                items.append(t)
            elif isinstance(t, str) and re.fullmatch(r"\s*\d+\s*(-\s*\d+\s*)?", t):
                items.extend(_index_items(t.strip()))
            elif isinstance(t, str) and t.strip():
                items.append(t.strip())
            else:
                raise UserError(f"--targets: expected indices or names, got {t!r}.")
        return items
    raise UserError(f"--targets: expected indices such as 1-10, a list, or names separated by ';', got {targets!r}.")


class _Range(tuple):
    """An index range from the selection: it picks the targets present in it (at least one)."""


def _index_items(part: str) -> list[int | _Range]:
    m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        if a > b:
            raise UserError(f"--targets: the range {part!r} is empty (its start is after its end).")
        return [_Range((a, b))]
    if re.fullmatch(r"\d+", part):
        return [int(part)]
    raise UserError(f"--targets: {part!r} is neither an index nor a range such as 1-10.")


def select_targets(available: list[tuple[int, str]], targets: Any, aliases: dict[int, list[str]] | None = None) -> list[int]:
    """The indices chosen by ``targets`` among ``available`` (index, name) pairs, in index order.

    ``aliases`` may give more names per index (for example the folder name).
    """
    items = _selection_items(targets)
    indices = sorted(i for i, _ in available)
    if items is None:
        return indices
    by_name: dict[str, int] = {}
    for i, name in available:
        for alias in [name, *((aliases or {}).get(i, []))]:
            for key in _name_keys(alias):
                by_name.setdefault(key, i)
    chosen = set()
    for item in items:
        if isinstance(item, _Range):
            inside = [i for i in indices if item[0] <= i <= item[1]]
            if not inside:
                span = f"{indices[0]}-{indices[-1]}" if indices else "none"
                raise UserError(f"--targets: no target in the range {item[0]}-{item[1]} (indices: {span}).")
            chosen.update(inside)
        elif isinstance(item, int):
            if item not in indices:
                span = f"{indices[0]}-{indices[-1]}" if indices else "none"
                raise UserError(f"--targets: no target with index {item} in this benchmark (indices: {span}).")
            chosen.add(item)
        else:
            keys = [k for k in _name_keys(item) if k in by_name]
            if not keys:
                examples = ", ".join(repr(n) for _, n in available[:3])
                raise UserError(f"--targets: no target named {item!r} in this benchmark (names look like {examples}).")
            chosen.add(by_name[keys[0]])
    return [i for i in indices if i in chosen]


# --------------------------------------------------------------------------- reading files
def _records(path: Path, parse, optional: bool = True) -> list:
    """Parse a JSON list of records with ``parse(obj, where)``; a missing optional file gives []."""
    if not path.exists():
        if optional:
            return []
        raise UserError(f"{path}: required file not found.")
    data = read_json(path)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of records, got {_describe(data)}.")
    return [parse(obj, f"{path}, record {k}") for k, obj in enumerate(data, 1)]


def _describe(value: Any) -> str:
    return {dict: "an object", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _probe(obj, where):
    return Probe.from_json(obj, where)


def _neighbor_probe(obj, where):
    return Probe.from_json(obj, where, neighbor=True)


# file name -> (parser, destination); the destination says where in TargetData the records go.
_TARGET_FILES = (
    ("forget_level1.json", _probe, "forget_probes"),
    ("forget_level2.json", _probe, "forget_probes"),
    ("forget_level3.json", _probe, "forget_probes"),
    ("neighbor_level1.json", _neighbor_probe, "neighbor_probes"),
    ("neighbor_level2.json", _neighbor_probe, "neighbor_probes"),
    ("forget_mia.json", MIAText.from_json, "forget_mia"),
    ("retain_mia.json", MIAText.from_json, "retain_mia"),
    ("retain_mmlu.json", MMLUItem.from_json, "utility.mmlu"),
    ("retain_bbh.json", BBHItem.from_json, "utility.bbh"),
    ("truthful.json", TruthfulQAItem.from_json, "utility.truthfulqa"),
    ("triviaqa.json", TriviaQAItem.from_json, "utility.triviaqa"),
    ("fluency.json", FluencyItem.from_json, "utility.fluency"),
    ("passage.json", CorpusText.from_json, "passages"),
    ("positive{v}.json", CorpusText.from_json, "factual_corpus"),
    ("negative{v}.json", CorpusText.from_json, "counterfactual_corpora.conflicting"),
    ("negative_consistent{v}.json", CorpusText.from_json, "counterfactual_corpora.consistent"),
    ("negative_filtered{v}.json", CorpusText.from_json, "counterfactual_corpora.filtered"),  # consistency.py
    ("pair{v}.json", PreferencePair.from_json, "preference_pairs"),
    ("reject{v}.json", RefusalPair.from_json, "refusal_pairs"),
)


def _file_names(corpus_variant: str) -> list[tuple[str, Any, str]]:
    if corpus_variant not in CORPUS_VARIANTS:
        raise UserError(f"--corpus-variant: expected one of {', '.join(CORPUS_VARIANTS)}, got {corpus_variant!r}.")
    suffix = CORPUS_VARIANTS[corpus_variant]
    return [(name.format(v=suffix), parse, dest) for name, parse, dest in _TARGET_FILES]


def _put(data: TargetData, dest: str, records: list) -> None:
    for r in records:  # records without a subject belong to the target whose folder holds them
        if hasattr(r, "subject") and not r.subject:
            r.subject = data.target.target
    if dest.startswith("utility."):
        getattr(data.utility, dest.split(".", 1)[1]).extend(records)
    elif dest.startswith("counterfactual_corpora."):
        if records:
            data.counterfactual_corpora.setdefault(dest.split(".", 1)[1], []).extend(records)
    else:
        getattr(data, dest).extend(records)


def _read_intro(path: Path) -> Target | None:
    if not path.exists():
        return None
    data = read_json(path)
    if isinstance(data, list):
        if len(data) != 1:
            raise UserError(f"{path}: expected one target record, got a list of {len(data)}.")
        data = data[0]
    return Target.from_json(data, f"{path}, record 1")


# --------------------------------------------------------------------------- the two layouts
def _target_folders(base: Path) -> list[tuple[int, Path]]:
    found: dict[int, Path] = {}
    for d in sorted(base.iterdir()):
        m = _FOLDER.match(d.name)
        if d.is_dir() and m:
            i = int(m.group(1))
            if i in found:
                raise UserError(f"{base}: two target folders share the index {i} ({found[i].name}, {d.name}).")
            found[i] = d
    return sorted(found.items())


def _load_target_layout(base: Path, targets: Any, corpus_variant: str) -> list[TargetData]:
    folders = _target_folders(base)
    intros = {i: _read_intro(d / "intro.json") for i, d in folders}
    names = {i: (intros[i].target if intros[i] else _FOLDER.match(d.name).group(2).replace("_", " "))
             for i, d in folders}
    chosen = select_targets([(i, names[i]) for i, _ in folders], targets,
                            aliases={i: [d.name] for i, d in folders})
    out = []
    for i, d in folders:
        if i not in chosen:
            continue
        for required in REQUIRED_FILES:
            if not (d / required).exists():
                raise UserError(f"{d / required}: required file not found (every target needs {', '.join(REQUIRED_FILES)}).")
        target = intros[i] or Target(names[i])
        target.index = i
        data = TargetData(target=target)
        for filename, parse, dest in _file_names(corpus_variant):
            _put(data, dest, _records(d / filename, parse))
        out.append(data)
    return out


def _order_from_all_intro(path: Path) -> list[str]:
    data = read_json(path)
    if isinstance(data, dict):
        return [str(k) for k in data]
    if isinstance(data, list):
        out = []
        for k, item in enumerate(data, 1):
            if isinstance(item, str):
                out.append(item)
            else:
                out.append(Target.from_json(item, f"{path}, record {k}").target)
        return out
    raise UserError(f"{path}: expected an object of target names or a list of targets, got {_describe(data)}.")


def _load_all_layout(root: Path, base: Path, targets: Any, corpus_variant: str) -> list[TargetData]:
    for required in REQUIRED_FILES:
        if not (base / required).exists():
            raise UserError(f"{base / required}: required file not found (the All/ layout needs {', '.join(REQUIRED_FILES)}).")
    probes = {f: _records(base / f, _probe) for f in REQUIRED_FILES}
    subjects: list[str] = []
    for f in REQUIRED_FILES:
        for p in probes[f]:
            if p.subject not in subjects:
                subjects.append(p.subject)
    intros: dict[str, Target] = {}
    if (base / "intro.json").exists():
        for t in _records(base / "intro.json", Target.from_json):
            intros.setdefault(t.target, t)
    if (root / "all_intro.json").exists():
        order = _order_from_all_intro(root / "all_intro.json")
    elif intros:
        order = list(intros)
    else:
        order = subjects
    present = set(subjects)
    available = [(k, name) for k, name in enumerate(order, 1) if name in present]
    chosen = set(select_targets(available, targets))
    data_by_name: dict[str, TargetData] = {}
    for k, name in available:
        if k in chosen:
            t = intros.get(name) or Target(name)
            t.index = k
            data_by_name[name] = TargetData(target=t)
    for filename, parse, dest in _file_names(corpus_variant):
        records = probes[filename] if filename in probes else _records(base / filename, parse)
        grouped: dict[str, list] = {}
        for k, r in enumerate(records, 1):
            if not getattr(r, "subject", ""):
                raise UserError(f"{base / filename}, record {k}: missing field 'subject' (the All/ layout needs it "
                                "to tell targets apart).")
            grouped.setdefault(r.subject, []).append(r)
        for name, data in data_by_name.items():
            _put(data, dest, grouped.get(name, []))
    return sorted(data_by_name.values(), key=lambda d: d.target.index)


# --------------------------------------------------------------------------- entry point
def _resolve_spec(spec: str) -> tuple[Path, str]:
    from .world import WorldConfig, default_world_dir

    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"--benchmark: expected world, world:SEED, rwku, rwku:DIR or a folder, got {spec!r}.")
    spec = spec.strip()
    if spec == "world":
        return default_world_dir(), "world"
    if spec.startswith("world:"):
        seed = spec.split(":", 1)[1].strip()
        if not re.fullmatch(r"-?\d+", seed):
            raise UserError(f"--benchmark: the seed in {spec!r} should be an integer, as in world:7.")
        return default_world_dir(WorldConfig(seed=int(seed))), "world"
    if spec == "rwku":
        folder = home() / "rwku"
        if not folder.is_dir():
            raise UserError(f"--benchmark rwku: no RWKU data in {folder}; fetch it with 'rwkuplus data rwku "
                            "--targets 1-10' or give a folder as rwku:DIR.")
        return folder, "rwku"
    path = Path(os.path.expanduser(spec[5:] if spec.startswith("rwku:") else spec))
    if not path.is_dir():
        raise UserError(f"--benchmark: {spec!r} is not world, world:SEED, rwku or an existing folder.")
    return path, "rwku"


def _layout(root: Path) -> tuple[str, Path]:
    if (root / "Target").is_dir():
        return "Target", root / "Target"
    if (root / "All").is_dir():
        return "All", root / "All"
    if _target_folders(root):
        return "Target", root
    if (root / "forget_level1.json").exists():
        return "All", root
    raise UserError(f"{root}: not a benchmark folder in RWKU's layout (expected a Target/ or All/ folder).")


def load_benchmark(spec: str = "world", targets: Any = None, corpus_variant: str = "llama3") -> Benchmark:
    """Load a benchmark (see the module docstring for ``spec`` and ``targets``)."""
    root, kind = _resolve_spec(spec)
    layout, base = _layout(root)
    if layout == "Target":
        data = _load_target_layout(base, targets, corpus_variant)
    else:
        data = _load_all_layout(root, base, targets, corpus_variant)
    if not data:
        raise UserError(f"{root}: the benchmark holds no targets.")
    source: dict[str, Any] = {"kind": kind, "spec": spec, "path": str(root.resolve()), "layout": layout,
                              "revision": None, "corpus_variant": corpus_variant}
    if (root / "world.json").exists():
        world = read_json(root / "world.json")
        source["kind"] = "world"
        if isinstance(world, dict):
            source["world_version"] = world.get("version")
            source["world_config"] = world.get("config")
    if (root / SOURCE_FILE).exists():
        meta = read_json(root / SOURCE_FILE)
        if not isinstance(meta, dict):
            raise UserError(f"{root / SOURCE_FILE}: expected a JSON object.")
        source["revision"] = meta.get("resolved_revision") or meta.get("revision")
        source["repo"] = meta.get("repo")
    stats = {}
    if (root / "corpus_stats.json").exists():
        stats = read_json(root / "corpus_stats.json")
        if not isinstance(stats, dict):
            raise UserError(f"{root / 'corpus_stats.json'}: expected a JSON object, got {_describe(stats)}.")
    return Benchmark(
        name=source["kind"],
        targets=data,
        source=source,
        retain_corpus=_records(root / "retain.json", CorpusText.from_json),
        hallucination_probes=_records(root / "hallucination.json", HallucinationProbe.from_json),
        corpus_stats=stats,
    )


def retain_texts(benchmark: Benchmark, unlearned: Iterable[str]) -> list[CorpusText]:
    """Retain text when unlearning the targets named in ``unlearned``.

    retain.json's texts (the world's retained people) when the benchmark has them; otherwise (an
    RWKU folder) the factual corpora (positive.json) of the loaded targets not being unlearned,
    which is empty when every loaded target is unlearned.
    """
    skip = {normalize_name(n) for n in unlearned}
    if benchmark.retain_corpus:
        return [t for t in benchmark.retain_corpus if normalize_name(t.subject) not in skip]
    return [t for d in benchmark.targets if normalize_name(d.name) not in skip for t in d.factual_corpus]
