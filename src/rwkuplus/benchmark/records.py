"""One record type per kind of benchmark data, shared by the ``world`` and ``rwku`` sources.

Field names follow RWKU's files (see docs/rwku-format in the shared docs). Each record type has
``from_json(obj, where)``, which validates one record read from a file and raises a UserError
naming the file, the record and the field, and ``to_json()``, which writes RWKU's layout back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UserError

# RWKU's nine adversarial-attack kinds (level 3), with the spellings that occur in its files.
ATTACK_KINDS = (
    "prefix injection",
    "affirmative suffix",
    "role playing",
    "multiple choice",
    "reverse query",
    "synonym manipulation",
    "background hint",
    "in-context learning",
    "cross-lingual",
)
ATTACK_SPELLINGS = {
    "context hint": "background hint",
    "incontext learning": "in-context learning",
    "in context learning": "in-context learning",
    "cross lingal": "cross-lingual",
    "cross lingual": "cross-lingual",
    "crosslingual": "cross-lingual",
    "role play": "role playing",  # as spelled in RWKU's forget_level3.json files
    "role-playing": "role playing",
}
PROBE_TYPES = {"1": ("cloze",), "2": ("simple question",)}


def canonical_attack(kind: str) -> str:
    """Map an attack kind as spelled in RWKU's files to its canonical name (or return it unchanged)."""
    k = kind.strip().lower()
    return ATTACK_SPELLINGS.get(k, k)


def _field(obj: Any, name: str, kind: type | tuple[type, ...], where: str, optional: bool = False):
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(obj).__name__}.")
    if name not in obj:
        if optional:
            return None
        raise UserError(f"{where}: missing field '{name}'.")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UserError(f"{where}: field '{name}' should be a {_json_type(expected)}, got {_json_value(value)}.")
    return value


def _json_type(py: str) -> str:
    return {"str": "string", "int": "integer", "list": "list", "dict": "object", "float": "number"}.get(py, py)


def _json_value(v: Any) -> str:
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()}"
    if isinstance(v, (int, float)):
        return f"the number {v}"
    if isinstance(v, str):
        return f"the string {v!r}"
    return {list: "a list", dict: "an object", type(None): "null"}.get(type(v), type(v).__name__)


def _str_list(obj: dict, name: str, where: str, min_len: int = 1) -> list[str]:
    value = _field(obj, name, list, where)
    if len(value) < min_len or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where}: field '{name}' should be a list of at least {min_len} string(s).")
    return value


class _Record:
    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Target(_Record):
    """A person to unlearn; ``index`` is RWKU's 1-based position (the ``<i>`` of ``Target/<i>_<Name>``)."""

    target: str
    intro: str = ""
    index: int | None = None

    @classmethod
    def from_json(cls, obj: Any, where: str) -> Target:
        return cls(_field(obj, "target", str, where), _field(obj, "intro", str, where, optional=True) or "")

    def to_json(self) -> dict:
        return {"target": self.target, "intro": self.intro}


@dataclass
class Probe(_Record):
    """A forget or neighbor probe. ``level`` is a string: "1" = FB, "2" = QA, "3" = AA (with ``type``)."""

    query: str
    answer: str
    level: str
    type: str
    subject: str
    neighbor: str | None = None

    @property
    def kind(self) -> str:
        """``FB``, ``QA`` or ``AA``."""
        return {"1": "FB", "2": "QA", "3": "AA"}[self.level]

    @property
    def attack(self) -> str | None:
        return canonical_attack(self.type) if self.level == "3" else None

    @classmethod
    def from_json(cls, obj: Any, where: str, neighbor: bool = False) -> Probe:
        query = _field(obj, "query", str, where)
        answer = _field(obj, "answer", str, where)
        level = _field(obj, "level", str, where)
        if level not in ("1", "2", "3"):
            raise UserError(f"{where}: field 'level' should be \"1\", \"2\" or \"3\", got {level!r}.")
        type_ = _field(obj, "type", str, where)
        if level == "3" and canonical_attack(type_) not in ATTACK_KINDS:
            raise UserError(
                f"{where}: field 'type' should be one of RWKU's attack kinds ({', '.join(ATTACK_KINDS)}), got {type_!r}."
            )
        subject = _field(obj, "subject", str, where)
        nb = _field(obj, "neighbor", str, where, optional=not neighbor)
        return cls(query, answer, level, type_, subject, nb)


@dataclass
class MIAText(_Record):
    text: str
    subject: str

    @classmethod
    def from_json(cls, obj: Any, where: str) -> MIAText:
        return cls(_field(obj, "text", str, where), _field(obj, "subject", str, where, optional=True) or "")


@dataclass
class CorpusText(_Record):
    """A training text: factual (positive.json), counterfactual (negative.json) or a passage."""

    text: str
    subject: str
    id: int | str | None = None
    intro: str | None = None

    @classmethod
    def from_json(cls, obj: Any, where: str) -> CorpusText:
        return cls(
            _field(obj, "text", str, where),
            _field(obj, "subject", str, where, optional=True) or "",
            _field(obj, "id", (int, str), where, optional=True),
            _field(obj, "intro", str, where, optional=True),
        )


@dataclass
class PreferencePair(_Record):
    """A DPO pair; in RWKU's pair.json ``response`` = [counterfactual (chosen), factual (rejected)]."""

    prompt: str
    chosen: str
    rejected: str
    subject: str
    id: int | str | None = None

    @classmethod
    def from_json(cls, obj: Any, where: str) -> PreferencePair:
        response = _str_list(obj, "response", where, min_len=2)
        return cls(
            _field(obj, "prompt", str, where), response[0], response[1],
            _field(obj, "subject", str, where, optional=True) or "",
            _field(obj, "id", (int, str), where, optional=True),
        )

    def to_json(self) -> dict:
        d = {"id": self.id, "prompt": self.prompt, "response": [self.chosen, self.rejected], "subject": self.subject}
        return {k: v for k, v in d.items() if v is not None}


@dataclass
class RefusalPair(_Record):
    """A rejection-tuning example (reject.json): a question about the target and a refusal."""

    instruction: str
    output: str
    subject: str
    input: str = ""

    @classmethod
    def from_json(cls, obj: Any, where: str) -> RefusalPair:
        return cls(
            _field(obj, "instruction", str, where), _field(obj, "output", str, where),
            _field(obj, "subject", str, where, optional=True) or "",
            _field(obj, "input", str, where, optional=True) or "",
        )


@dataclass
class MMLUItem(_Record):
    question: str
    choices: list[str]
    answer: int
    task: str = ""
    examples: list[dict] = field(default_factory=list)
    subject: str = ""

    @classmethod
    def from_json(cls, obj: Any, where: str) -> MMLUItem:
        choices = _str_list(obj, "choices", where, min_len=2)
        answer = _field(obj, "answer", int, where)
        if not 0 <= answer < len(choices):
            raise UserError(f"{where}: field 'answer' should index 'choices' (0..{len(choices) - 1}), got {answer}.")
        examples = _field(obj, "examples", list, where, optional=True) or []
        for j, ex in enumerate(examples):
            MMLUItem.from_json({**ex, "examples": []}, f"{where}, examples[{j}]")
        return cls(_field(obj, "question", str, where), choices, answer,
                   _field(obj, "task", str, where, optional=True) or "", examples,
                   _field(obj, "subject", str, where, optional=True) or "")


@dataclass
class BBHItem(_Record):
    question: str
    answer: str
    task: str = ""
    cot: str = ""
    subject: str = ""

    @classmethod
    def from_json(cls, obj: Any, where: str) -> BBHItem:
        return cls(_field(obj, "question", str, where), _field(obj, "answer", str, where),
                   _field(obj, "task", str, where, optional=True) or "",
                   _field(obj, "cot", str, where, optional=True) or "",
                   _field(obj, "subject", str, where, optional=True) or "")


@dataclass
class TruthfulQAItem(_Record):
    question: str
    mc1_targets: dict
    mc2_targets: dict
    subject: str = ""

    @classmethod
    def from_json(cls, obj: Any, where: str) -> TruthfulQAItem:
        targets = {}
        for name in ("mc1_targets", "mc2_targets"):
            t = _field(obj, name, dict, where)
            choices = _str_list(t, "choices", f"{where}, {name}", min_len=2)
            labels = _field(t, "labels", list, f"{where}, {name}")
            if len(labels) != len(choices) or not all(lab in (0, 1) for lab in labels) or 1 not in labels:
                raise UserError(f"{where}: field '{name}.labels' should be 0/1 per choice with at least one 1.")
            targets[name] = {"choices": choices, "labels": labels}
        return cls(_field(obj, "question", str, where), targets["mc1_targets"], targets["mc2_targets"],
                   _field(obj, "subject", str, where, optional=True) or "")


@dataclass
class TriviaQAItem(_Record):
    question: str
    answers: list[str]
    subject: str = ""

    @classmethod
    def from_json(cls, obj: Any, where: str) -> TriviaQAItem:
        return cls(_field(obj, "question", str, where), _str_list(obj, "answers", where),
                   _field(obj, "subject", str, where, optional=True) or "")


@dataclass
class FluencyItem(_Record):
    instruction: str
    subject: str = ""

    @classmethod
    def from_json(cls, obj: Any, where: str) -> FluencyItem:
        return cls(_field(obj, "instruction", str, where), _field(obj, "subject", str, where, optional=True) or "")


@dataclass
class HallucinationProbe(_Record):
    """A question for the hallucination suite (our extra file, not RWKU's).

    ``kind`` is ``answerable`` (unrelated to the targets, with gold ``answers``) or ``nonexistent``
    (about a person who does not exist; the right behaviour is to abstain, ``answers`` is empty).
    """

    question: str
    kind: str
    answers: list[str] = field(default_factory=list)
    subject: str = ""
    attribute: str = ""
    template: str = ""

    @classmethod
    def from_json(cls, obj: Any, where: str) -> HallucinationProbe:
        kind = _field(obj, "kind", str, where)
        if kind not in ("answerable", "nonexistent"):
            raise UserError(f"{where}: field 'kind' should be \"answerable\" or \"nonexistent\", got {kind!r}.")
        answers = _field(obj, "answers", list, where, optional=True) or []
        if kind == "answerable" and (not answers or not all(isinstance(a, str) for a in answers)):
            raise UserError(f"{where}: field 'answers' should be a non-empty list of strings for an answerable question.")
        return cls(_field(obj, "question", str, where), kind, answers,
                   _field(obj, "subject", str, where, optional=True) or "",
                   _field(obj, "attribute", str, where, optional=True) or "",
                   _field(obj, "template", str, where, optional=True) or "")


@dataclass
class UtilitySet:
    """RWKU's five utility sets (any may be empty)."""

    mmlu: list[MMLUItem] = field(default_factory=list)
    bbh: list[BBHItem] = field(default_factory=list)
    truthfulqa: list[TruthfulQAItem] = field(default_factory=list)
    triviaqa: list[TriviaQAItem] = field(default_factory=list)
    fluency: list[FluencyItem] = field(default_factory=list)


@dataclass
class TrainExample:
    """What the training loop consumes: loss on ``response`` given ``prompt``.

    ``prompt`` is already formatted (chat template applied, or empty for raw text); ``response``
    is the text whose tokens carry the loss (it ends with the end-of-turn token for chat data).
    """

    prompt: str
    response: str
    subject: str = ""


@dataclass
class TargetData:
    """Everything the benchmark holds about one target."""

    target: Target
    forget_probes: list[Probe] = field(default_factory=list)
    neighbor_probes: list[Probe] = field(default_factory=list)
    forget_mia: list[MIAText] = field(default_factory=list)
    retain_mia: list[MIAText] = field(default_factory=list)
    utility: UtilitySet = field(default_factory=UtilitySet)
    factual_corpus: list[CorpusText] = field(default_factory=list)  # positive.json
    counterfactual_corpora: dict[str, list[CorpusText]] = field(default_factory=dict)  # conflicting / consistent
    passages: list[CorpusText] = field(default_factory=list)
    preference_pairs: list[PreferencePair] = field(default_factory=list)
    refusal_pairs: list[RefusalPair] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.target.target


@dataclass
class Benchmark:
    """A loaded benchmark: its targets' data, shared retain text and hallucination probes.

    ``source`` records where it came from (kind, path, hub revision) for every result.
    """

    name: str
    targets: list[TargetData]
    source: dict = field(default_factory=dict)
    retain_corpus: list[CorpusText] = field(default_factory=list)
    hallucination_probes: list[HallucinationProbe] = field(default_factory=list)
    corpus_stats: dict = field(default_factory=dict)

    def target(self, name: str) -> TargetData:
        for t in self.targets:
            if t.name == name:
                return t
        raise UserError(f"--targets: no target named {name!r} in this benchmark.")
