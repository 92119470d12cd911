"""Embedded vocabulary for the local simulator, and prompt analysis (keywords, places).

Everything the simulator writes is built from these lists, so its output is plain English
without any model or download.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NOUNS = (
    "river", "garden", "window", "market", "journey", "library", "mountain", "signal", "lantern",
    "bridge", "harbor", "forest", "village", "machine", "letter", "castle", "engine", "island",
    "pattern", "answer", "method", "system", "process", "result", "detail", "picture", "record",
    "network", "problem", "solution", "question", "project", "moment", "balance", "surface",
    "shadow", "compass", "recipe", "melody", "notebook", "horizon", "orchard", "workshop",
)
ADJECTIVES = (
    "quiet", "bright", "ancient", "curious", "simple", "gentle", "careful", "clever", "distant",
    "golden", "hidden", "useful", "steady", "practical", "elegant", "familiar", "strange",
    "patient", "remarkable", "reliable", "silver", "warm", "narrow", "peaceful", "sudden",
    "important", "modest", "vivid", "honest", "common",
)
ADVERBS = (
    "quietly", "carefully", "slowly", "gently", "quickly", "patiently", "suddenly", "usually",
    "clearly", "steadily", "eventually", "happily",
)
# (base, third person, past)
VERBS = (
    ("build", "builds", "built"), ("find", "finds", "found"), ("follow", "follows", "followed"),
    ("explore", "explores", "explored"), ("measure", "measures", "measured"),
    ("improve", "improves", "improved"), ("protect", "protects", "protected"),
    ("describe", "describes", "described"), ("change", "changes", "changed"),
    ("review", "reviews", "reviewed"), ("carry", "carries", "carried"),
    ("share", "shares", "shared"), ("shape", "shapes", "shaped"), ("guide", "guides", "guided"),
    ("connect", "connects", "connected"), ("study", "studies", "studied"),
    ("wander", "wanders", "wandered"), ("repair", "repairs", "repaired"),
    ("discover", "discovers", "discovered"), ("organize", "organizes", "organized"),
)
NAMES = (
    "Mira", "Tomas", "Elena", "Arlo", "Nadia", "Felix", "Ines", "Oskar", "Lena", "Ravi", "Clara",
    "Hugo", "Sofia", "Jonah", "Amara", "Theo",
)
SURNAMES = ("Smith", "Garcia", "Novak", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Rossi", "Keller")
CHARACTERS = (
    "baker", "sailor", "inventor", "gardener", "fox", "dragon", "clockmaker", "librarian",
    "traveler", "painter", "shepherd", "owl",
)
PLACES = (
    "valley", "seaside town", "mountain village", "old city", "forest clearing", "desert oasis",
    "river delta", "harbor town", "kingdom", "meadow",
)
CITIES = ("Paris", "Lisbon", "Tokyo", "Nairobi", "Toronto", "Oslo", "Lima", "Berlin", "Sydney", "Austin")
COUNTRIES = ("France", "Portugal", "Japan", "Kenya", "Canada", "Norway", "Peru", "Germany")
COLORS = ("red", "blue", "green", "amber", "teal", "violet", "orange", "white")
TOPICS = (
    "the weather", "gardening", "music", "travel", "cooking", "history", "software design",
    "astronomy", "photography", "the ocean",
)

_STOPWORDS_TEXT = """
a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each even ever every
    few for from further get got had has have having he her here hers him his how i if in into is
    it its itself just let like make me more most much must my no nor not now of off on once only
    or other our out over own please same say she should so some such tell than thank thanks that
    the their them then there these they this those through to too under until up us very was we
    were what when where which while who whom why will with would you your yours give show want
    need know think really something anything thing things one two way use using used sure okay
    ok hi hello hey write writing wrote explain describe long longer short detailed detail story
    stories essay article words word paragraph paragraphs answer reply respond question many may
    might shall via per yes current given value values returns return specified provided
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*[A-Za-z]|[A-Za-z]")
_MAX_SCAN = 4000  # characters of the prompt that are analysed
_MAX_KEYWORDS = 40


@dataclass(frozen=True, slots=True)
class Hints:
    """What the simulator takes from the prompt: topic keywords, proper nouns and the raw text."""

    keywords: tuple[str, ...] = ()
    proper: tuple[str, ...] = ()
    text: str = ""


def _starts_sentence(text: str, pos: int) -> bool:
    i = pos - 1
    while i >= 0 and text[i] in " \t\"'(*[":
        i -= 1
    return i < 0 or text[i] in ".!?:;\n"


def analyze(text: str) -> Hints:
    """Extracts the keywords (content words, in order, deduplicated) and the proper nouns
    (capitalised words that do not start a sentence) of `text`."""
    keywords: list[str] = []
    proper: list[str] = []
    seen: set[str] = set()
    scanned = text[:_MAX_SCAN]
    for match in _WORD.finditer(scanned):
        word = match.group()
        low = word.lower()
        if low.endswith("'s"):
            low, word = low[:-2], word[:-2]
        if low in STOPWORDS or len(low) < 3 or low in seen or "'" in low:
            continue
        seen.add(low)
        if word[0].isupper() and not _starts_sentence(scanned, match.start()):
            proper.append(word)
            keywords.append(word)
        else:
            keywords.append(low)
        if len(keywords) >= _MAX_KEYWORDS:
            break
    return Hints(keywords=tuple(keywords), proper=tuple(proper), text=text.strip())
