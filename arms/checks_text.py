"""Deterministic checks of a free-text answer, run by the judge before any LLM judging.

Each check names itself and says why it failed, in words a repair round can act on:

- `empty`: no answer, or too few words for a goal that asks for writing;
- `refusal`: the model apologised or declined ("as an AI", "I don't have the capability")
  instead of answering (skipped when the goal itself asks for a refusal or an apology);
- `echo`: the answer repeats the goal (or the repair feedback) without new content;
- `length`: a length the goal asks for ("in three sentences", "one paragraph", "in 50 words");
- `language`: the language the goal asks for ("in French", "auf Deutsch"), by function words;
- `placeholders`: the reflex layer's `<TYPE_N>` placeholders are kept as they are, none is
  invented, and nothing that looks like a raw value of a redacted type is written out.

Which checks apply: `empty` and `placeholders` to every draft; the others only to prose (a draft
with code or JSON is checked by the judge's criteria). No model, no network: SmolLM2-135M's
typical failures (an echo, an apology) are caught by rules, not by asking the same model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from octollm.arms import checks

__all__ = [
    "COMPARE",
    "TextCheck",
    "asked_language",
    "asked_length",
    "check_answer",
    "count_units",
    "detect_language",
    "is_prose",
    "placeholders",
]


@dataclass(frozen=True)
class TextCheck:
    name: str  # empty | refusal | echo | length | language | placeholders
    passed: bool
    detail: str  # why; never quotes the draft (it is not redacted yet)
    unverified: bool = False


# --- counting (shared with the judge's length criteria) --------------------------------------


def count_units(draft: str, unit: str) -> int:
    """Words, lines, characters, sentences, paragraphs or bullets in `draft`."""
    text = draft.strip()
    if unit == "words":
        return len(re.findall(r"\w[\w'\u2019-]*", text))
    if unit == "lines":
        return sum(1 for line in text.splitlines() if line.strip())
    if unit == "characters":
        return len(text)
    if unit == "sentences":
        return len([s for s in re.split(r"(?<=[.!?])\s+", text) if re.search(r"\w", s)])
    if unit == "paragraphs":
        return len([p for p in re.split(r"\n\s*\n", text) if p.strip()])
    return sum(1 for line in text.splitlines() if re.match(r"\s*(?:[-*•]|\d+[.)])\s+", line))


#: Comparisons of a count with a bound; "~" is "about": within half of it either way.
COMPARE: dict[str, Callable[[int, int], bool]] = {
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "==": lambda a, b: a == b,
    "~": lambda a, b: b / 2 <= a <= b * 3 / 2,
}


def is_prose(draft: str) -> bool:
    """Free text: no fenced block, not JSON, not Python code."""
    text = draft.strip()
    if "```" in text or checks.extract_python(text) is not None:
        return False
    try:
        value = json.loads(text)
    except ValueError:
        return True
    return not isinstance(value, dict | list)  # "42" is an answer, not a JSON document


# --- words ------------------------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+(?:['\u2019][^\W_]+)?")
# Function words and fillers ("Sure, here is ..."): they say nothing new in an answer.
_FILLER_TEXT = (
    "a an the and or but if of to in on at by for with from as is are was were be been being "
    "it its this that these those there here i you he she we they me him her us them my your his "
    "our their what which who whom how when where why not do does did have has had will "
    "would can could should shall may might must about into than then so such also just very "
    "sure okay ok certainly please following below above"
)
_FILLER = frozenset(_FILLER_TEXT.split())
# Words a repair round adds to the instruction (arms/planner.py `_fallback`).
_FEEDBACK_WORDS = frozenset({"previous", "answer", "failed", "review", "fix"})


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _content(text: str) -> list[str]:
    return [w for w in _words(text) if w not in _FILLER and (len(w) > 1 or w.isdigit())]


# --- empty ------------------------------------------------------------------------------------

# Goals asking for prose of some length (not "list", "translate": their answers may be a word).
_WRITING_GOAL = re.compile(
    r"\b(?:write|draft|compose|explain|describe|summari[sz]e|outline|reply|respond|discuss)\b",
    re.IGNORECASE,
)
#: Fewest words an answer to a writing goal can have ("Dear <PERSON_1>, thanks." is 4).
MIN_WRITTEN_WORDS = 5


def _empty(goal: str, draft: str, asked_max_words: int | None) -> TextCheck:
    n = count_units(draft, "words")
    if n == 0:
        return TextCheck("empty", False, "the answer is empty; write the answer itself")
    # code and JSON are judged by the criteria; "x = 1" is a whole answer
    needed = MIN_WRITTEN_WORDS if _WRITING_GOAL.search(goal) and is_prose(draft) else 1
    if asked_max_words is not None:
        needed = min(needed, asked_max_words)
    if n < needed:
        return TextCheck(
            "empty",
            False,
            f"the answer has {n} word(s); the task asks for a written answer (at least {needed})",
        )
    return TextCheck("empty", True, f"{n} word(s)")


# --- refusal ----------------------------------------------------------------------------------

_HELP = (
    r"(?:help|assist|fulfil|fulfill|comply|do\s+that|do\s+this|complete\s+(?:this|that|the|your)|"
    r"answer\s+(?:this|that|your))"
)
_I_AM = r"\bi(?:'m|\u2019m|\s+am)"
_I_CANNOT = r"\bi\s+(?:cannot|can't|can\u2019t|can\s+not|won't|will\s+not)"
# What the model said, named rather than quoted: the draft is not redacted yet.
_REFUSALS = [
    (
        "speaks as an AI",
        re.compile(
            r"\bas\s+an?\s+(?:ai|artificial\s+intelligence|(?:large\s+)?language\s+model|llm|"
            rf"ai\s+(?:language\s+model|assistant))\b|{_I_AM}\s+(?:just\s+|only\s+)?an?\s+"
            r"(?:ai|language\s+model|chatbot|virtual\s+assistant)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "says it lacks the capability",
        re.compile(
            r"\bi\s+(?:do\s+not|don't|don\u2019t|dont)\s+have\s+(?:the\s+|any\s+)?"
            r"(?:capabilit(?:y|ies)|ability|abilities|access|means)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "says it cannot help",
        re.compile(
            rf"{_I_AM}\s+(?:not\s+able|unable)\s+to\s+{_HELP}|{_I_CANNOT}\s+{_HELP}",
            re.IGNORECASE,
        ),
    ),
    (
        "apologises and declines",
        re.compile(
            # declining the task itself: "sorry, but I can't refund it" is an answer
            r"\b(?:sorry|apologi[sz]e)\b[^.!?\n]{0,60}\bbut\s+i\s+(?:cannot|can't|can\u2019t|"
            r"am\s+unable\s+to|am\s+not\s+able\s+to)\s+(?:help|assist|write|draft|compose|"
            r"answer|respond|complete|fulfil|fulfill|generate|create|comply|do\s+(?:that|this|it))\b",
            re.IGNORECASE,
        ),
    ),
]
# A goal that asks for a refusal or an apology may get one.
_REFUSAL_WANTED = re.compile(
    r"\b(?:declin\w*|refus\w*|reject\w*|apolog\w*|say\s+no|turn\s+down|sorry)\b", re.IGNORECASE
)


def _refusal(goal: str, draft: str) -> TextCheck:
    if _REFUSAL_WANTED.search(goal):
        return TextCheck("refusal", True, "the goal asks for a refusal or an apology")
    for said, pattern in _REFUSALS:
        if pattern.search(draft):
            return TextCheck(
                "refusal",
                False,
                f"the answer declines or apologises instead of answering (it {said}); "
                "answer the task itself",
            )
    return TextCheck("refusal", True, "no refusal or apology")


# --- echo -------------------------------------------------------------------------------------

#: A goal with fewer content words is a short question: an answer may restate it ("7 is prime").
ECHO_MIN_GOAL_WORDS = 4
#: An answer covering this much of the goal's words ...
ECHO_OVERLAP = 0.5
#: ... with fewer than this share of words of its own is an echo.
ECHO_NEW_SHARE = 0.25


def _echo(goal: str, draft: str, feedback: Sequence[str]) -> TextCheck:
    given = set(_content(goal))
    known = given | _FEEDBACK_WORDS | {w for f in feedback for w in _content(f)}
    said = set(_content(draft))
    if len(given) < ECHO_MIN_GOAL_WORDS or not said:
        return TextCheck("echo", True, "the goal is too short to compare with")
    overlap = len(said & given) / len(given)
    new = said - known
    share = len(new) / len(said)
    if overlap >= ECHO_OVERLAP and share < ECHO_NEW_SHARE:
        return TextCheck(
            "echo",
            False,
            f"the answer repeats the task instead of answering it ({len(new)} new word(s) of "
            f"{len(said)}); write the answer, not the request",
        )
    return TextCheck("echo", True, f"{len(new)} new word(s) of {len(said)}")


# --- length asked in the goal -----------------------------------------------------------------

_NUMBERS = {
    "a single": 1,
    "single": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "twelve": 12,
    "fifteen": 15,
    "twenty": 20,
    "fifty": 50,
    "a hundred": 100,
    "one hundred": 100,
}
_N = r"(?P<n>\d{1,5}|" + "|".join(sorted(map(re.escape, _NUMBERS), key=len, reverse=True)) + ")"
_UNIT = r"(?P<unit>sentences?|paragraphs?|words?|bullet\s+points?|bullets?|lines?)"
_CMP_WORDS = {
    "at most": "<=",
    "no more than": "<=",
    "not more than": "<=",
    "up to": "<=",
    "fewer than": "<",
    "less than": "<",
    "under": "<",
    "at least": ">=",
    "no fewer than": ">=",
    "exactly": "==",
    "about": "~",
    "around": "~",
    "roughly": "~",
    "approximately": "~",
}
_CMP = "(?P<cmp>" + "|".join(sorted(map(re.escape, _CMP_WORDS), key=len, reverse=True)) + ")"
_ASKED_LENGTH = [
    # "in three sentences", "in at most 50 words", "using one paragraph"
    re.compile(rf"\b(?:in|with|using|within)\s+(?:{_CMP}\s+)?{_N}\s+{_UNIT}\b", re.IGNORECASE),
    # "at most 3 sentences", "no more than 100 words"
    re.compile(rf"\b{_CMP}\s+{_N}\s+{_UNIT}\b", re.IGNORECASE),
    # "a two-sentence summary", "a 50-word reply", "a one-paragraph answer"
    re.compile(rf"\b{_N}-(?P<unit>sentence|paragraph|word|line)\b", re.IGNORECASE),
    # "write one paragraph", "give three bullet points"
    re.compile(
        rf"\b(?:write|give|draft|compose|produce|answer\s+with|reply\s+with)\s+(?:me\s+)?"
        rf"(?:{_CMP}\s+)?{_N}\s+{_UNIT}\b",
        re.IGNORECASE,
    ),
]


@dataclass(frozen=True)
class AskedLength:
    cmp: str
    n: int
    unit: str  # words | sentences | paragraphs | lines | bullets

    def __str__(self) -> str:
        words = {"<=": "at most", "<": "fewer than", ">=": "at least", "==": "", "~": "about"}
        unit = self.unit[:-1] if self.n == 1 else self.unit
        return " ".join(w for w in (words[self.cmp], str(self.n), unit) if w)


def asked_length(goal: str) -> AskedLength | None:
    """The length the goal asks for, if it names one. Words are a ceiling ("in 50 words");
    sentences, paragraphs, lines and bullets an exact count ("in three sentences")."""
    for pattern in _ASKED_LENGTH:
        if m := pattern.search(goal):
            raw = m["n"].lower()
            n = int(raw) if raw.isdigit() else _NUMBERS[raw]
            unit = m["unit"].lower()
            unit = "bullets" if unit.startswith("bullet") else unit.rstrip("s") + "s"
            default = "<=" if unit == "words" else "=="
            said = m.groupdict().get("cmp")
            cmp = _CMP_WORDS[" ".join(said.lower().split())] if said else default
            return AskedLength(cmp, n, unit)
    return None


def _length(asked: AskedLength, draft: str) -> TextCheck:
    n = count_units(draft, asked.unit)
    if COMPARE[asked.cmp](n, asked.n):
        return TextCheck("length", True, f"{n} {asked.unit} (asked for {asked})")
    return TextCheck("length", False, f"the answer has {n} {asked.unit}; the task asks for {asked}")


# --- language ---------------------------------------------------------------------------------

_FUNCTION_WORDS = {
    "English": "the and is are of to that it for with this you your we our have has not was "
    "will be from which would can there they what about please thank",
    "French": "le la les des est et une du pour dans que qui pas sur avec vous nous votre sont "
    "au aux ce cette mais être très merci bonjour je",
    "Spanish": "el los las es y una del para por con su sus se lo como más pero está son muy "
    "gracias hola usted nuestro esta estimado",
    "German": "der die das und ist nicht ein eine zu mit den dem von auf für sich auch es sie "
    "wir ihr ihre sind bitte danke wird werden haben bei oder",
    "Italian": "il gli è di che non per una della con sono questo grazie ciao nel alla anche "
    "ma più essere gentile",
    "Portuguese": "os é não um uma do da dos das para com que por seu sua mais obrigado olá "
    "você está são muito em na",
    "Dutch": "de het een en is van niet dat die op voor met zijn ook je wij u uw bedankt dank "
    "maar naar bij",
}
_LANGUAGE_WORDS = {lang: frozenset(words.split()) for lang, words in _FUNCTION_WORDS.items()}
_ASKED_LANGUAGE = re.compile(
    r"\b(?:in|into|to)\s+(?P<lang>english|french|spanish|german|italian|portuguese|dutch)\b"
    r"|\b(?P<native>en\s+fran[cç]ais|auf\s+deutsch|en\s+espa[nñ]ol|in\s+italiano|"
    r"em\s+portugu[eê]s|in\s+het\s+nederlands)\b",
    re.IGNORECASE,
)
_NATIVE = {"fr": "French", "au": "German", "en": "Spanish", "in": "Italian", "em": "Portuguese"}
#: Fewest function words of one language before the draft is said to be in it.
MIN_LANGUAGE_HITS = 2


def asked_language(goal: str) -> str | None:
    m = _ASKED_LANGUAGE.search(goal)
    if m is None:
        return None
    if m["lang"]:
        return m["lang"].capitalize()
    native = m["native"].lower()
    if "nederlands" in native:
        return "Dutch"
    return "French" if "fran" in native else _NATIVE[native[:2]]


def detect_language(text: str) -> dict[str, int]:
    """Function words of each language found in `text`, most first."""
    words = _words(text)
    hits = {lang: sum(w in vocab for w in words) for lang, vocab in _LANGUAGE_WORDS.items()}
    return dict(sorted(hits.items(), key=lambda kv: -kv[1]))


def _language(asked: str, draft: str) -> TextCheck:
    hits = detect_language(draft)
    best = max(hits.values())
    if best < MIN_LANGUAGE_HITS:
        return TextCheck(
            "language",
            False,
            f"unverified: too few words to tell whether the answer is in {asked}",
            unverified=True,
        )
    if hits[asked] == best:
        return TextCheck("language", True, f"reads as {asked} ({best} function words)")
    other = next(iter(hits))
    return TextCheck(
        "language",
        False,
        f"the answer reads as {other} ({hits[other]} function words, {hits[asked]} {asked}); "
        f"the task asks for {asked}",
    )


# --- placeholders -----------------------------------------------------------------------------

PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9]*(?:_[A-Z][A-Z0-9]*)*)_(\d+)>")
# What a raw value of a redacted type looks like (the reflex layer's detectors are stricter;
# here anything resembling one fails, since the model must only ever write the placeholder).
_RAW = {
    "EMAIL": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    # at least 9 digits: a date or an invoice number is not a phone number
    "PHONE": re.compile(r"(?<!\w)\+?\d(?:[ ()./-]{0,2}\d){8,}(?!\w)"),
    "CREDIT_CARD": re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)"),
    "US_SSN": re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)"),
    "IBAN": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}\b"),
    "IPV4": re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"),
}


def placeholders(text: str) -> set[str]:
    return {m.group(0) for m in PLACEHOLDER.finditer(text)}


def _placeholders(sources: Iterable[str], draft: str) -> TextCheck | None:
    given = set().union(*(placeholders(s) for s in sources))
    used = placeholders(draft)
    if not given and not used:
        return None
    problems: list[str] = []
    if invented := sorted(used - given):
        problems.append(f"it has placeholder(s) the task does not: {', '.join(invented)}")
    bare = PLACEHOLDER.sub(" ", draft)  # what is left once the intact placeholders are out
    mangled = sorted(
        p
        for p in given
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(p[1:-1])}(?!\d)", bare, re.IGNORECASE)
    )
    if mangled:
        problems.append(f"it alters {', '.join(mangled)} (write each exactly as given)")
    for kind in sorted({p[1:].rsplit("_", 1)[0] for p in given}):
        raw = _RAW.get(kind)
        if raw is not None and raw.search(bare):
            problems.append(f"it writes out a value that looks like a raw {kind} (keep <{kind}_N>)")
    if problems:
        return TextCheck("placeholders", False, "; ".join(problems))
    return TextCheck(
        "placeholders", True, f"{len(used)} of {len(given)} placeholder(s) used, none altered"
    )


# --- all of them ------------------------------------------------------------------------------


def check_answer(
    goal: str, draft: str, *, context: str = "", feedback: Sequence[str] = ()
) -> list[TextCheck]:
    """Every deterministic check that applies to `draft` as an answer to `goal`, in order."""
    asked = asked_length(goal)
    words_cap = asked.n if asked is not None and asked.unit == "words" else None
    empty = _empty(goal, draft, words_cap)
    if count_units(draft, "words") == 0:
        return [empty]
    out = [empty]
    if is_prose(draft):
        out += [_refusal(goal, draft), _echo(goal, draft, feedback)]
        if asked is not None:
            out.append(_length(asked, draft))
        if (language := asked_language(goal)) is not None:
            out.append(_language(language, draft))
    if (kept := _placeholders([goal, context], draft)) is not None:
        out.append(kept)
    return out
