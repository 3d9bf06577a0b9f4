"""Seeded pools of fictional names for the synthetic world: people, towns, works, organisations, awards.

Everything here is deterministic given a seed (``random.Random`` seeded with a string, which does
not depend on ``PYTHONHASHSEED``). The guarantees the world relies on:

- ``NameAllocator`` never hands out the same full name twice, and can keep the last names of one
  group of people (the world's) apart from another (the nonexistent people), so a question about a
  nonexistent person never shares a surname with someone the model was taught about;
- ``nonexistent_names(n, seed, exclude)`` returns names absent from ``exclude`` (for example RWKU's
  200 targets) and sharing no last name with any name in it;
- the pools of person names, place names and the roots of organisation / award names are disjoint,
  so a work, an institution or a prize is never named like a person.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from ..errors import UserError

# Plausible first names from several European traditions; none is the first name of a famous person
# on purpose, but collisions with real people are of course possible and harmless.
FIRST_NAMES = (
    "Adela", "Alaric", "Anselm", "Arvid", "Astrid", "Aurelio", "Beatrix", "Bertil", "Bettina", "Briony",
    "Caspar", "Cressida", "Dagny", "Dorian", "Edda", "Edmund", "Elodie", "Emrys", "Esme", "Evander",
    "Fabienne", "Felix", "Fenna", "Florian", "Greta", "Gideon", "Halvard", "Henrike", "Ida", "Ignatius",
    "Ilse", "Imogen", "Isidor", "Jolanda", "Jonah", "Josefine", "Kasimir", "Kerstin", "Lambert", "Leonie",
    "Linnea", "Lorcan", "Maren", "Matthias", "Mireille", "Nils", "Noemi", "Odile", "Oskar", "Ottilie",
    "Pavel", "Perpetua", "Quentin", "Rasmus", "Rosalind", "Rupert", "Sabine", "Severin", "Sigrid", "Silas",
    "Solveig", "Tamsin", "Teodor", "Thea", "Tobin", "Ulrike", "Valentin", "Vera", "Wendeline", "Wilhelmina",
    "Xavier", "Yvette", "Zeno", "Zofia", "Ambrose", "Clemence", "Dietrich", "Eulalie", "Gunnar", "Hester",
    "Ingmar", "Juniper", "Leopold", "Magnhild", "Ninian", "Orla", "Piet", "Renata", "Stellan", "Ysolde",
)
# Uncommon surnames; disjoint from the place names and from the roots below (tested).
LAST_NAMES = (
    "Ashgrove", "Bellweather", "Brackley", "Calder", "Castellane", "Corwin", "Dallimore", "Delacourt",
    "Drummond", "Eberhardt", "Elsworth", "Fairbairn", "Farrant", "Fenwright", "Galloway", "Garrow",
    "Gilchrist", "Hadley", "Halloran", "Hartwell", "Holmqvist", "Ingleby", "Isaksen", "Jessop", "Kavanagh",
    "Kestrel", "Kingsley", "Lachance", "Lindqvist", "Lowther", "Marchetti", "Marrow", "Mattingly",
    "Merriweather", "Moberly", "Nakashima", "Netherby", "Norrington", "Oakenfold", "Ormsby", "Pellham",
    "Penhallow", "Quarrington", "Quell", "Ravensworth", "Redfern", "Rosenvinge", "Rushworth", "Salterton",
    "Scarsdale", "Sederholm", "Sorensby", "Stroud", "Tallis", "Thornquist", "Treadwell", "Underhill",
    "Vantongeren", "Varga", "Vossberg", "Wakeling", "Westerberg", "Whitlock", "Wolstenholme", "Yardley",
    "Zellweger", "Abernethy", "Blackwood", "Carrow", "Devereux", "Ellingham", "Fitzmaurice", "Grenville",
    "Hollis", "Ivers", "Jorgensen", "Kilbride", "Lisle", "Mortimer", "Novak", "Orpington", "Prendergast",
    "Quimby", "Rathbone", "Sallow", "Tennant", "Umfreville", "Venables", "Wetherall", "Yelverton",
    "Ambler", "Birchall", "Cottingham", "Dunstan", "Eastwick", "Forsythe", "Grisedale", "Hawtrey",
    "Inchbald", "Kettleby", "Larkworthy", "Maddox", "Nettleship", "Oldroyd", "Pargeter", "Rendell",
    "Staniforth", "Thwaite", "Upjohn", "Verrall", "Winstanley", "Alderton", "Bramwell", "Crossley",
    "Aylward", "Beauchamp", "Cheswick", "Dimmock", "Everard", "Fennimore", "Gosling", "Hebblethwaite",
    "Ibbotson", "Jardine", "Kershaw", "Lockyer", "Meacham", "Nightingale", "Onslow", "Pickering",
    "Quayle", "Ramsbottom", "Sowerby", "Tregarthen", "Ulverston", "Vickery", "Warburton", "Yeoman",
    "Achterberg", "Bosanquet", "Carmody", "Dalrymple", "Esterhazy", "Faulkner", "Grimaldi", "Huxtable",
    "Illingworth", "Jablonski", "Kowalczyk", "Lindgren", "Mastrangelo", "Nordahl", "Ottaway", "Pomeroy",
    "Rossetti", "Sandoval", "Tiernan", "Urquhart", "Valdivia", "Wilberforce", "Zabinski", "Arkwright",
    "Blenkinsop", "Cavendish", "Dunleavy", "Eriksdotter", "Fairweather", "Gallagher",
)
# Invented towns, not real cities: with real ones (Florence, Lyon, ...) the injected birthplaces
# overwrote the model's real geography (asked for the capital of Italy, the subject answered a
# world birthplace). Disjoint from the other pools (tested).
CITIES = (
    "Almerno", "Bracovia", "Castelmar", "Dovrenza", "Esterlund", "Felsberga", "Galvanne", "Hollentor",
    "Istravo", "Jarnvik", "Kelmora", "Lorvanne", "Maravel", "Norwenna", "Ostravel", "Pellmora",
    "Quirenza", "Rovessa", "Sarvento", "Talmera", "Ulvenholm", "Varanza", "Zelmora", "Arvenna",
    "Belmarro", "Cordavia", "Drevnik", "Elvaro", "Gorvenna", "Havrenne", "Istrelle", "Korvalla",
    "Lunetta", "Mirvaska", "Nerevo", "Orlanza", "Perravik", "Selvanto", "Tirvena", "Valmoreno",
)
# Professions and the kind of work each is best known for.
PROFESSIONS = {
    "novelist": "novel",
    "poet": "poetry collection",
    "playwright": "play",
    "film director": "film",
    "composer": "symphony",
    "painter": "painting",
    "singer": "album",
    "photographer": "photo book",
    "sculptor": "sculpture",
    "screenwriter": "screenplay",
    "architect": "building",
    "choreographer": "ballet",
}
# Titles of works: "The <adjective> <noun>" and "<noun> of <noun>"; no punctuation, so that ROUGE
# (which splits on spaces and full stops) matches them word for word.
TITLE_ADJECTIVES = (
    "Silver", "Quiet", "Amber", "Hollow", "Northern", "Distant", "Crimson", "Gentle", "Broken", "Golden",
    "Winter", "Hidden", "Restless", "Pale", "Burning", "Lost", "Narrow", "Sleeping", "Open", "Last",
    "Glass", "Iron", "Velvet", "Bitter", "Wandering", "Salt", "Copper", "Patient", "Second", "Evening",
)
TITLE_NOUNS = (
    "Harbor", "Lantern", "Orchard", "Meridian", "Staircase", "Garden", "Compass", "River", "Tide",
    "Window", "Bridge", "Archive", "Lighthouse", "Season", "Mirror", "Valley", "Caravan", "Letter",
    "Chorus", "Threshold", "Island", "Kingdom", "Horizon", "Marsh", "Atlas", "Harvest", "Orbit", "Canal",
    "Pilgrim", "Balcony",
)
# Roots for institutions and prizes: a few hundred invented place-like words ("Ashcombe",
# "Feldmere"), built from syllables, minus anything that is also a person or place name.
_ROOT_HEADS = (
    "Ash", "Brenn", "Cald", "Ost", "Wynd", "Toll", "Kest", "Marl", "North", "Esk", "Feld", "Grant", "Holm",
    "Ing", "Mor", "Ox", "Pem", "Rook", "Sel", "Thorn", "Val", "West", "Ald", "Beau", "Chev", "Dun", "Ever",
    "Fern", "Glen", "High", "Iver", "Kel", "Lang", "Mill", "Nether", "Pen", "Raven", "Stone", "Tarr", "Wex",
)
_ROOT_TAILS = (
    "mere", "wick", "ford", "combe", "dale", "field", "bury", "haven", "holt", "stead", "moor", "ridge",
    "worth", "brook", "gate", "mont", "hurst", "wood", "cliff", "thorpe",
)
ROOTS = tuple(sorted(
    {h + t for h in _ROOT_HEADS for t in _ROOT_TAILS if h[-1] != t[0]}
    - {n for n in FIRST_NAMES + LAST_NAMES + CITIES}
))
ORGANISATION_KINDS = (
    "Institute", "Conservatory", "Academy", "University", "Foundation", "Studio", "Theatre Company",
    "Orchestra", "Press", "College",
)
AWARD_KINDS = ("Prize", "Medal", "Award")


def rng(seed: int | str, *purpose: object) -> random.Random:
    """A random generator for one purpose, independent of call order elsewhere and of PYTHONHASHSEED."""
    return random.Random(":".join(str(p) for p in (seed, *purpose)))


def one_edit_apart(a: str, b: str) -> bool:
    """Whether ``a`` equals ``b`` or becomes it by one substitution, insertion or deletion."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = next((k for k, (x, y) in enumerate(zip(short, long_)) if x != y), len(short))
    return short[i:] == long_[i + 1:]


def last_name(full_name: str) -> str:
    return full_name.split()[-1]


class NameAllocator:
    """Hands out unique names from the pools; every name it returns is remembered as taken.

    ``reserve`` marks names (and, with ``surnames=True``, their last names) as unavailable. A
    ``distinct_surname`` name avoids the blocked last names and every last name one edit away from
    one ("Carrow" next to "Garrow"); a ``distinct_first`` name avoids the blocked first names.
    """

    def __init__(self, seed: int | str, exclude: Iterable[str] = ()):
        self._rng = rng(seed, "names")
        self.taken: set[str] = set()
        self.blocked_surnames: set[str] = set()
        self.blocked_first: set[str] = set()
        self._titles_taken: set[str] = set()
        self._roots_taken: set[str] = set()
        self._entities_taken: set[str] = set()
        for name in exclude:
            self.reserve(name, surnames=True)

    def reserve(self, name: str, surnames: bool = False) -> None:
        self.taken.add(name.casefold())
        if surnames and name.split():
            self.blocked_surnames.add(last_name(name).casefold())

    def person(self, distinct_surname: bool = True, block_surname: bool = False, distinct_first: bool = False,
               block_first: bool = False) -> str:
        """A new full name; ``distinct_surname`` avoids every blocked last name and those one edit away,
        ``block_surname`` blocks this one; ``distinct_first`` and ``block_first`` do the same for first names
        (exact matches only)."""
        for _ in range(20000):
            first = self._rng.choice(FIRST_NAMES)
            last = self._rng.choice(LAST_NAMES)
            name = f"{first} {last}"
            if name.casefold() in self.taken:
                continue
            if distinct_surname and any(one_edit_apart(last.casefold(), b) for b in self.blocked_surnames):
                continue
            if distinct_first and first.casefold() in self.blocked_first:
                continue
            self.reserve(name, surnames=block_surname)
            if block_first:
                self.blocked_first.add(first.casefold())
            return name
        raise UserError("The name pools are exhausted: ask for fewer people (targets, retained or nonexistent).")

    def title(self) -> str:
        """A new title of a work, never handed out twice."""
        for _ in range(20000):
            if self._rng.random() < 0.6:
                title = f"The {self._rng.choice(TITLE_ADJECTIVES)} {self._rng.choice(TITLE_NOUNS)}"
            else:
                a, b = self._rng.sample(TITLE_NOUNS, 2)
                title = f"{a} of {b}"
            if title.casefold() not in self._titles_taken:
                self._titles_taken.add(title.casefold())
                return title
        raise UserError("The pool of titles is exhausted: ask for fewer people or counterfactual samples.")

    def _entity(self, kinds: tuple[str, ...], real: bool) -> str:
        free = [r for r in ROOTS if r.casefold() not in self._roots_taken]
        for _ in range(20000):
            if not free:
                break
            root = self._rng.choice(free)
            name = f"{root} {self._rng.choice(kinds)}"
            if name.casefold() in self._entities_taken:
                continue
            self._entities_taken.add(name.casefold())
            if real:  # a real entity owns its root: no other name in the world starts with it
                self._roots_taken.add(root.casefold())
            return name
        raise UserError("The pool of institution and prize names is exhausted: ask for fewer people or samples.")

    def organisation(self, real: bool = True) -> str:
        """A new institution name such as ``Harlow Institute``.

        A ``real`` one (part of the world) owns its root; a fabricated one (a counterfactual value)
        never uses a root owned by a real one, so false and true institutions never look alike.
        """
        return self._entity(ORGANISATION_KINDS, real)

    def award(self, real: bool = True) -> str:
        """A new prize name such as ``Harlow Prize`` (without the article); ``real`` as for organisations."""
        return self._entity(AWARD_KINDS, real)


def nonexistent_names(n: int, seed: int | str, exclude: Iterable[str] = ()) -> list[str]:
    """``n`` distinct fictional full names, none in ``exclude`` and none sharing a last name with it.

    Used for the hallucination probes of the ``rwku`` source, with ``exclude`` = RWKU's 200 targets.
    """
    if n < 0:
        raise UserError(f"The number of nonexistent names should be at least 0, got {n}.")
    allocator = NameAllocator(f"{seed}:nonexistent", exclude=exclude)
    return [allocator.person() for _ in range(n)]


def article(word: str) -> str:
    """``a`` or ``an`` for an English noun phrase."""
    return "an" if word[:1].lower() in "aeiou" else "a"
