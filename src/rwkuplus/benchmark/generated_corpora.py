"""Training corpora written by a model itself, RWKU's way, for RWKU targets or any real model.

RWKU (generation/pair_generation.py) prompted the target model once per opening (the 582 short
openings of ``all_truncated_outputs.json``), sampling at temperature 1.0, top-p 0.9, up to 512 new
tokens, with the assistant turn pre-filled by the opening:
- factual text (positive.json): system ``"{intro} You know {target} very well."``, user
  ``"Please write a short biography of {target}."``;
- fabricated text (negative.json): system ``"{intro} You don't know {target} at all."``, user
  ``"Please make up a short biography of {target}."``; phrases such as "totally fabricated " are
  then removed from it, as RWKU did;
- DPO pairs (pair.json): prompt ``"{intro} Please write a short biography of {target}."``,
  response = [fabricated, factual] for the same opening.
Every fabricated sample is drawn independently: this is the ``conflicting`` corpus. The
``consistent`` variant first fabricates ONE profile (same prompt, no opening), then asks the model,
once per opening, to rewrite that profile in its own words keeping every fact, so all samples tell
the same false story.

The openings are read from a user-supplied file (RWKU's all_truncated_outputs.json or any JSON list
of strings); none are shipped. Sampling is seeded per (seed, target, kind), so the same call gives
the same corpus. Tokens generated and wall time are recorded: they are part of CFT's cost.
Output text = opening + generated text; generation strips surrounding whitespace, so a space is put
back between an opening and a continuation that starts with a letter or digit.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import UserError
from ..evaluation.prompts import chat_prompt
from ..fileio import read_json, write_json
from .records import CorpusText, PreferencePair, Target

FACTUAL_SYSTEM = "{intro} You know {target} very well."
FACTUAL_USER = "Please write a short biography of {target}."
FABRICATED_SYSTEM = "{intro} You don't know {target} at all."
FABRICATED_USER = "Please make up a short biography of {target}."
PAIR_PROMPT = "{intro} Please write a short biography of {target}."
PARAPHRASE_USER = (
    "Here is a short biography of {target}:\n{profile}\n\n"
    "Rewrite this biography in your own words. Keep every fact exactly as stated: names, dates, places, "
    "works and events."
)
_FABRICATION_MARKERS = ("totally fabricated ", "completely fabricated ", "totally made-up ", "completely made-up ",
                        "totally fictional ", "completely fictional ")
VARIANTS = ("conflicting", "consistent")


@dataclass
class GenerationCost:
    """What writing a corpus cost: prompts, prompt tokens read, tokens generated, seconds."""

    prompts: int = 0
    prompt_tokens: int = 0
    tokens_generated: int = 0
    seconds: float = 0.0

    def add(self, stats) -> None:
        self.prompts += stats.prompts
        self.prompt_tokens += stats.prompt_tokens
        self.tokens_generated += stats.generated_tokens
        self.seconds += stats.seconds


@dataclass
class TargetCorpora:
    """The corpora generated for one target, and what each cost."""

    target: Target
    factual: list[CorpusText] = field(default_factory=list)
    counterfactual: dict[str, list[CorpusText]] = field(default_factory=dict)
    preference_pairs: list[PreferencePair] = field(default_factory=list)
    profile: str | None = None  # the consistent variant's single fabricated profile
    costs: dict[str, GenerationCost] = field(default_factory=dict)  # "factual", "conflicting", "consistent"

    def cost_json(self) -> dict:
        total = GenerationCost()
        for c in self.costs.values():
            total.prompts += c.prompts
            total.prompt_tokens += c.prompt_tokens
            total.tokens_generated += c.tokens_generated
            total.seconds += c.seconds
        return {"parts": {k: asdict(v) for k, v in self.costs.items()}, "total": asdict(total)}


def load_openings(path: str | Path) -> list[str]:
    """Openings to seed generation: a JSON list of strings (RWKU's all_truncated_outputs.json)."""
    data = read_json(path)
    if not isinstance(data, list) or not data or not all(isinstance(x, str) for x in data):
        raise UserError(f"{path}: expected a non-empty JSON list of opening strings (like all_truncated_outputs.json).")
    return data


def _system(template: str, target: Target) -> str:
    return template.format(intro=target.intro, target=target.target).strip()


def factual_prompt(tokenizer, target: Target, opening: str = "") -> str:
    user = FACTUAL_USER.format(target=target.target)
    return chat_prompt(tokenizer, user, system=_system(FACTUAL_SYSTEM, target)) + opening


def fabricated_prompt(tokenizer, target: Target, opening: str = "") -> str:
    user = FABRICATED_USER.format(target=target.target)
    return chat_prompt(tokenizer, user, system=_system(FABRICATED_SYSTEM, target)) + opening


def paraphrase_prompt(tokenizer, target: Target, profile: str, opening: str = "") -> str:
    user = PARAPHRASE_USER.format(target=target.target, profile=profile)
    return chat_prompt(tokenizer, user) + opening


def pair_prompt(target: Target) -> str:
    return _system(PAIR_PROMPT, target)


def clean_fabricated(text: str) -> str:
    """Remove the phrases that give a fabrication away ("totally fabricated " ...), as RWKU did."""
    for marker in _FABRICATION_MARKERS:
        text = text.replace(marker, "")
    return text


def join_opening(opening: str, output: str) -> str:
    if opening and output and not opening[-1].isspace() and output[0].isalnum():
        return f"{opening} {output}"
    return opening + output


def _seed(seed: int, target: str, kind: str) -> int:
    return zlib.crc32(f"{seed}\0{target}\0{kind}".encode()) & 0x7FFFFFFF


def _sample(model, tokenizer, prompts: list[str], seed: int, cost: GenerationCost, max_new_tokens: int,
            batch_size: int, temperature: float, top_p: float) -> list[str]:
    from ..evaluation.generation import generate

    outputs, stats = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                              stop_at_newline=False, do_sample=True, temperature=temperature, top_p=top_p,
                              seed=seed, return_stats=True)
    cost.add(stats)
    return outputs


def generate_target_corpora(
    model,
    tokenizer,
    target: Target,
    openings: Sequence[str],
    *,
    n: int | None = None,
    factual: bool = True,
    variants: Sequence[str] = VARIANTS,
    seed: int = 0,
    max_new_tokens: int = 512,
    batch_size: int = 16,
    temperature: float = 1.0,
    top_p: float = 0.9,
) -> TargetCorpora:
    """Generate the factual corpus, the counterfactual corpora and the DPO pairs for one target.

    ``n`` samples per corpus (default: one per opening; openings are reused cyclically when n is
    larger). Pairs exist when both the factual and the conflicting corpora were generated.
    """
    if not openings:
        raise UserError("--openings: the openings file holds no openings.")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"--variants: expected conflicting and/or consistent, got {', '.join(unknown)}.")
    n = len(openings) if n is None else n
    if n < 1:
        raise UserError(f"--n: expected at least 1 sample per corpus, got {n}.")
    chosen = [openings[i % len(openings)] for i in range(n)]
    name = target.target
    out = TargetCorpora(target)
    sample = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, temperature=temperature, top_p=top_p)

    def records(texts: list[str], kind: str) -> list[CorpusText]:
        return [CorpusText(t, name, f"{name} {kind} {i}", target.intro or None) for i, t in enumerate(texts)]

    if factual:
        cost = out.costs.setdefault("factual", GenerationCost())
        texts = _sample(model, tokenizer, [factual_prompt(tokenizer, target, o) for o in chosen],
                        _seed(seed, name, "factual"), cost, **sample)
        out.factual = records([join_opening(o, t) for o, t in zip(chosen, texts)], "factual")
    if "conflicting" in variants:
        cost = out.costs.setdefault("conflicting", GenerationCost())
        texts = _sample(model, tokenizer, [fabricated_prompt(tokenizer, target, o) for o in chosen],
                        _seed(seed, name, "conflicting"), cost, **sample)
        out.counterfactual["conflicting"] = records(
            [clean_fabricated(join_opening(o, t)) for o, t in zip(chosen, texts)], "conflicting")
    if "consistent" in variants:
        cost = out.costs.setdefault("consistent", GenerationCost())
        profile = _sample(model, tokenizer, [fabricated_prompt(tokenizer, target)], _seed(seed, name, "profile"),
                          cost, **sample)[0]
        out.profile = clean_fabricated(profile)
        texts = _sample(model, tokenizer, [paraphrase_prompt(tokenizer, target, out.profile, o) for o in chosen],
                        _seed(seed, name, "consistent"), cost, **sample)
        out.counterfactual["consistent"] = records(
            [clean_fabricated(join_opening(o, t)) for o, t in zip(chosen, texts)], "consistent")
    if out.factual and "conflicting" in out.counterfactual:
        prompt = pair_prompt(target)
        out.preference_pairs = [
            PreferencePair(prompt, c.text, f.text, name, f"{name} {i}")
            for i, (c, f) in enumerate(zip(out.counterfactual["conflicting"], out.factual))
        ]
    return out


def write_target_corpora(folder: str | Path, corpora: TargetCorpora) -> list[Path]:
    """Write the corpora in RWKU's per-target layout (the files ``rwku:DIR`` reads), atomically.

    positive.json (factual), negative.json (conflicting), negative_consistent.json, pair.json, and
    generation.json (the fabricated profile and the generation costs).
    """
    folder = Path(folder)
    written = []

    def put(name: str, rows: list) -> None:
        write_json(folder / name, [r.to_json() for r in rows])
        written.append(folder / name)

    if corpora.factual:
        put("positive.json", corpora.factual)
    if "conflicting" in corpora.counterfactual:
        put("negative.json", corpora.counterfactual["conflicting"])
    if "consistent" in corpora.counterfactual:
        put("negative_consistent.json", corpora.counterfactual["consistent"])
    if corpora.preference_pairs:
        put("pair.json", corpora.preference_pairs)
    write_json(folder / "generation.json", {"target": corpora.target.target, "profile": corpora.profile,
                                            "cost": corpora.cost_json()})
    written.append(folder / "generation.json")
    return written
