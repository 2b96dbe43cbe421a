"""Claim-level support for an answer sentence, without a model: do the chunks it cites state the
same numbers, name the same names, keep the same polarity and the same order of a comparison?

Embedding similarity and word overlap (`agent.nodes.reflect`) pass a sentence with one wrong
number or name, because one token barely moves either. A careful reader checks exactly those
tokens, and so does this module: it reads the facts a sentence commits to (quantities, dates,
proper names, a negation, a comparative) and looks for each of them in the cited text. Everything
here is regular expressions and small tables, pure functions over strings, with per-text results
cached, so a check costs a fraction of a millisecond and can run on every answer sentence.

The rules lean towards silence: a problem is reported only when the evidence plainly disagrees
or plainly lacks the fact. Known limits (each a reader's inference we do not attempt): no
arithmetic (an age computed from two dates, a sum, a unit conversion between metric and imperial),
no synonyms of names beyond a small table of countries and their adjectives, no coreference
beyond giving a sentence that opens with "It" or "She" the subject of its chunk's first sentence
(a name must be in the cited text: pass a chunk's title along with its text when the writer saw
it), and negation or order is judged against the evidence clause or sentence closest in words,
so a paraphrase that turns "few survive" into "most are lost" is reported.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal, TypeVar

from agent.text import split_sentences, without_citations

_T = TypeVar("_T")


def _words(text: str) -> list[str]:
    """A word list written as prose: the tables below read better as paragraphs than as lists."""
    return text.split()


QuantityKind = Literal["number", "year", "decade", "date", "ordinal"]
Bound = Literal["", "min", "max"]


@dataclass(frozen=True, slots=True)
class Quantity:
    """A number as a reader compares it.

    `value` is normalised ("1.5 million" -> 1500000.0, "45 percent" -> 45.0 with unit "%"); a
    `date` is yyyymmdd with 0 for a part not written ("April 1928" -> 19280400, "23 April" ->
    423); an `ordinal` is its rank ("third", "3rd", "III" -> 3). `unit` is canonical ("°c", "km",
    "$", "years", ...) or "" when none is written. `approximate` is set when the text hedges it
    ("about", "nearly", "~"), `bound` when it states a limit ("more than" -> "min"). `counts` is
    the word after it, lowercased and cut to five letters ("peopl" in "512 people"): what it
    counts, which a bound must share with the number that backs it.
    """

    value: float
    unit: str
    text: str
    kind: QuantityKind = "number"
    approximate: bool = False
    bound: Bound = ""
    counts: str = ""


@dataclass(frozen=True, slots=True)
class Facts:
    """What a text commits to, each as written: quantities and dates, proper names (leading
    article and possessive left out), whether it is negated, and its comparative or ordering
    words (normalised: "fewer" -> "less", "elder" -> "older")."""

    quantities: tuple[Quantity, ...]
    names: tuple[str, ...]
    negated: bool
    comparatives: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClaimProblem:
    """One fact of an answer sentence the cited evidence does not back. `claim` is the number,
    name or word as the sentence writes it; `detail` is one line for the reader and for the
    model asked to fix the sentence."""

    kind: Literal["number", "name", "negation", "comparison"]
    claim: str
    detail: str


# --- quantities -----------------------------------------------------------------------------

APPROXIMATE_TOLERANCE = 0.005
"""Relative slack for a hedged number ("about 465" for 465.2); unhedged numbers match exactly."""

BOUND_REACH = 2.0
"""How far a bound may sit from the evidence and still describe it: "more than 500" is backed
by 500 to 1,000, not by 5,000 (a reader would call that a misleading understatement)."""

_MONTHS = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7,
    "august": 8, "september": 9, "october": 10, "november": 11, "december": 12,
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9,
    "sept": 9, "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
_MONTH = r"(?P<mon>(?:" + "|".join(m.capitalize() for m in _MONTHS) + r")\.?)"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>\d{4})"
_DATE_PATTERNS = tuple(
    re.compile(p)
    for p in (
        r"\b(?P<year>\d{4})-(?P<mnum>[01]\d)-(?P<day>[0-3]\d)\b",
        rf"\b{_MONTH}\s+{_DAY},?\s+{_YEAR}\b",
        rf"\b{_DAY}\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b",
        rf"\b{_MONTH},?\s+(?:of\s+)?{_YEAR}\b",
        rf"\b{_MONTH}\s+{_DAY}\b",
        rf"\b{_DAY}\s+(?:of\s+)?{_MONTH}(?!\w)",
        rf"^\s*{_DAY},\s+{_YEAR}\b",
        r"\b(?P<mon>January|February|March|April|June|July|August|September|October|November|"
        r"December)\b",
    )
)
"""Full dates first, then month-year, then day-month without a year, then a month alone ("in
April", not "May", which is as often a name or a verb); each span is taken once.
The last reads "31, 2014." at the start of a text as a date whose month was cut off: the sentence
splitter ends a sentence after "Dec." and leaves the rest of the date to the next one."""
_NUMERIC_DATE_PATTERNS = (_DATE_PATTERNS[0], _DATE_PATTERNS[-2])
_MONTH_WORDS = frozenset(_MONTHS)

_NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)")
_SCALES = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}
_MONEY_SCALES = {"k": 1e3, "m": 1e6, "mn": 1e6, "mil": 1e6, "b": 1e9, "bn": 1e9}
_SCALE = re.compile(r"\s?(thousand|million|billion|trillion)\b", re.IGNORECASE)
_MONEY_SCALE = re.compile(r"\s?(k|m|mn|mil|b|bn)\b", re.IGNORECASE)
_CURRENCY_BEFORE = re.compile(
    r"(?:(?P<sym>(?:US|A|C|NZ|HK|S)?\$|[€£¥₹])|\b(?P<code>USD|EUR|GBP|JPY|INR|Rs\.?)\s?)$"
)
_CURRENCY_CODES = {"$": "$", "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹", "Rs": "₹"}

_UNIT_WORDS = {
    "percent": "%", "per cent": "%",
    "degrees celsius": "°c", "degree celsius": "°c", "degrees centigrade": "°c", "celsius": "°c",
    "centigrade": "°c", "degrees fahrenheit": "°f", "degree fahrenheit": "°f",
    "fahrenheit": "°f", "kelvin": "k", "kelvins": "k", "degrees": "°", "degree": "°",
    "kilometres per hour": "km/h", "kilometers per hour": "km/h", "miles per hour": "mph",
    "square kilometres": "km²", "square kilometers": "km²", "square kilometre": "km²",
    "square kilometer": "km²", "square miles": "mi²", "square mile": "mi²",
    "square metres": "m²", "square meters": "m²", "square feet": "ft²", "square foot": "ft²",
    "kilometres": "km", "kilometers": "km", "kilometre": "km", "kilometer": "km",
    "centimetres": "cm", "centimeters": "cm", "centimetre": "cm", "centimeter": "cm",
    "millimetres": "mm", "millimeters": "mm", "millimetre": "mm", "millimeter": "mm",
    "metres": "m", "meters": "m", "metre": "m", "meter": "m", "miles": "mi", "mile": "mi",
    "feet": "ft", "foot": "ft", "inches": "in", "inch": "in", "yards": "yd", "yard": "yd",
    "acres": "acre", "acre": "acre", "hectares": "ha", "hectare": "ha",
    "kilograms": "kg", "kilogram": "kg", "kilos": "kg", "kilo": "kg", "grams": "g", "gram": "g",
    "metric tons": "t", "metric tonnes": "t", "tonnes": "t", "tonne": "t", "tons": "ton",
    "ton": "ton", "pounds sterling": "£", "sterling": "£", "pounds": "pound", "pound": "pound",
    "ounces": "oz", "ounce": "oz", "litres": "l", "liters": "l", "litre": "l", "liter": "l",
    "megawatts": "mw", "megawatt": "mw", "kilowatts": "kw", "kilowatt": "kw",
    "gigawatts": "gw", "gigawatt": "gw",
    "years": "years", "year": "years", "yrs": "years", "yr": "years", "months": "months",
    "month": "months", "weeks": "weeks", "week": "weeks", "days": "days", "day": "days",
    "hours": "hours", "hour": "hours", "minutes": "minutes", "minute": "minutes",
    "seconds": "seconds", "second": "seconds", "decades": "decades", "decade": "decades",
    "centuries": "centuries", "century": "centuries",
    "us dollars": "$", "dollars": "$", "dollar": "$", "euros": "€", "euro": "€", "yen": "¥",
    "rupees": "₹", "rupee": "₹",
}  # fmt: skip
"""Unit words, read case-insensitively; singular and plural map to one canonical unit."""

_UNIT_SYMBOLS = {
    "%": "%", "°C": "°c", "° C": "°c", "ºC": "°c", "°F": "°f", "° F": "°f", "ºF": "°f",
    "°": "°", "º": "°", "km²": "km²", "km2": "km²", "sq km": "km²", "sq mi": "mi²",
    "mi²": "mi²", "mi2": "mi²", "m²": "m²", "m2": "m²", "sq m": "m²", "sq ft": "ft²",
    "ft²": "ft²", "km/h": "km/h", "kph": "km/h", "mph": "mph", "m/s": "m/s", "km": "km",
    "cm": "cm", "mm": "mm", "mi": "mi", "ft": "ft", "m": "m", "kg": "kg", "g": "g", "lb": "lb",
    "lbs": "lb", "oz": "oz", "ha": "ha", "MW": "mw", "kW": "kw", "GW": "gw",
    "USD": "$", "EUR": "€", "GBP": "£", "BC": "bc", "BCE": "bc", "B.C.": "bc", "AD": "",
    "CE": "", "A.D.": "",
}  # fmt: skip
"""Unit symbols and abbreviations, read as written: "m" is a metre, "M" is not a unit."""


def _alternation(words: Sequence[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_UNIT_WORD = re.compile(rf"[\s-]?({_alternation(list(_UNIT_WORDS))})(?!\w)", re.IGNORECASE)
_UNIT_SYMBOL = re.compile(rf"\s?({_alternation(list(_UNIT_SYMBOLS))})(?![\w²])")

_UNIT_BASE = {
    "km": ("m", 1000.0), "m": ("m", 1.0), "cm": ("m", 0.01), "mm": ("m", 0.001),
    "kg": ("g", 1000.0), "g": ("g", 1.0), "t": ("g", 1e6),
    "km²": ("m²", 1e6), "m²": ("m²", 1.0), "ha": ("m²", 1e4),
    "gw": ("w", 1e9), "mw": ("w", 1e6), "kw": ("w", 1e3),
}  # fmt: skip
"""Metric units that differ by a power of ten: "1.5 km" is "1,500 m" to a reader."""

_LOOSE_UNITS = frozenset(
    frozenset(pair)
    for pair in (
        ("°", "°c"), ("°", "°f"), ("°", "k"), ("pound", "lb"), ("pound", "£"), ("t", "ton"),
        ("years", "bc"),
    )
)  # fmt: skip
"""Units one word can stand for: "465 degrees" may be Celsius, "5 pounds" money or weight."""

_APPROXIMATE = re.compile(
    r"(?:\b(?:about|approximately|approx\.|around|roughly|nearly|almost|circa|some|"
    r"an estimated|estimated)|\bca?\.|[~≈])\s*$",
    re.IGNORECASE,
)
_AT_LEAST = re.compile(
    r"\b(?:(?:no|not) (?:less|fewer) than|more than|over|at least|upwards of|in excess of|"
    r"exceeding|above|greater than)\s*$",
    re.IGNORECASE,
)
_AT_MOST = re.compile(
    r"\b(?:(?:no|not) more than|less than|fewer than|under|below|at most|up to)\s*$",
    re.IGNORECASE,
)

_SMALL = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
)
_TENS = _words("twenty thirty forty fifty sixty seventy eighty ninety")
_WORD_VALUES = {w: float(i) for i, w in enumerate(_SMALL)} | {
    w: float(20 + 10 * i) for i, w in enumerate(_TENS)
}
_NUMBER_WORD = re.compile(
    rf"\b(?P<w>(?:{'|'.join(_TENS)})(?:[-\s](?:{'|'.join(_SMALL[1:10])}))?"
    rf"|{'|'.join(_SMALL[2:])})(?:\s+(?P<scale>hundred|thousand|million|billion|trillion))?\b"
    r"|\b(?P<one>one|a|an)\s+(?P<onescale>hundred|thousand|million|billion|trillion)\b",
    re.IGNORECASE,
)
"""Number words from two up; "one", "a" and "an" count only with a scale ("a million")."""

_ORDINAL_WORDS = {
    "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
    "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
    "nineteenth": 19, "twentieth": 20, "thirtieth": 30, "fortieth": 40, "fiftieth": 50,
    "hundredth": 100,
}  # fmt: skip
_ORDINAL_ONES = {"first": 1} | {w: n for w, n in _ORDINAL_WORDS.items() if n < 10}
_ORDINAL_WORD = re.compile(
    rf"\b(?:(?P<tens>{'|'.join(_TENS)})-(?P<one>{'|'.join(_ORDINAL_ONES)})"
    rf"|(?P<w>{'|'.join(_ORDINAL_WORDS)}))\b",
    re.IGNORECASE,
)
"""Ordinals from "second" up count as numbers ("the third largest"); "first" is read as an
ordering word instead (see `_ANTONYMS`), because answers use it loosely ("first released")."""

_NUMBER_VOCABULARY = frozenset(
    [*_SMALL[2:], *_TENS, "hundred", "thousand", "million", "billion", "trillion"]
)
_ORDINAL_VOCABULARY = frozenset([*_ORDINAL_WORDS, *_ORDINAL_ONES])
_TWO_ROMAN = re.compile(r"[IVXL]{2}")
_ROMAN = re.compile(r"(?<=[A-Za-z][\s])\b([IVXL]{2,})\b")
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50}

_IMPLIED_COUNTS = re.compile(
    r"\b(both|twice|pair|couple|duo|twins?|trio|triple|thrice|quartet|quintet|dozen)\b",
    re.IGNORECASE,
)
_IMPLIED_VALUES = {
    "both": 2, "twice": 2, "pair": 2, "couple": 2, "duo": 2, "twin": 2, "twins": 2, "trio": 3,
    "triple": 3, "thrice": 3, "quartet": 4, "quintet": 5, "dozen": 12,
}  # fmt: skip
"""Words in the evidence that state a count without a digit; they back "two", "three" (not "2":
digits are mostly codes and measures, which "both" would back by chance)."""


def _roman_value(numeral: str) -> int | None:
    total = 0
    for i, ch in enumerate(numeral):
        v = _ROMAN_VALUES[ch]
        following = _ROMAN_VALUES[numeral[i + 1]] if i + 1 < len(numeral) else 0
        total += -v if v < following else v
    return total if total >= 2 and _to_roman(total) == numeral else None


def _to_roman(n: int) -> str:
    out = ""
    for v, s in ((50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= v:
            out += s
            n -= v
    return out


_ORDINAL_SUFFIX = re.compile(r"(st|nd|rd|th)\b")
_DECADE_SUFFIX = re.compile(r"'?s\b")
_RANGE_START = re.compile(r"(\d\d)\d\d\s?[\u2013-]\s?$")
_LETTER = re.compile(r"[^\W\d_]")
_DOTTED = re.compile(r"\b[A-Z]\.(?:\s?[A-Z]\.)+")
_FOLDED_POSSESSIVE = re.compile(r"'s\b|(?<=s)'(?!\w)")
_POSSESSIVE = re.compile(r"['\u2019]s?$")
_ALNUM = re.compile(r"[^\W_]+")
_LOWER_WORD = re.compile(r"[a-z]+")


_SCALED = re.compile(r"\d[\d,]*(?:\.(\d+))?\s*(thousand|million|billion|trillion)", re.I)
_COUNTED = re.compile(r"\s*(?:(?:of|the|a|an)\s+)*([^\W\d_]+)")
_NO_LESS_THAN = re.compile(r"\b(?:no|not) (?:less|fewer) than\s*$", re.IGNORECASE)


def _overlaps(span: tuple[int, int], taken: list[tuple[int, int]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in taken)


def _hedge(before: str) -> tuple[bool, Bound]:
    """How the words before a number qualify it."""
    window = before[-30:]
    if _APPROXIMATE.search(window):
        return True, ""
    if _NO_LESS_THAN.search(window):
        return False, "min"
    if _AT_MOST.search(window):
        return False, "max"
    if _AT_LEAST.search(window):
        return False, "min"
    return False, ""


def _counted(text: str, pos: int) -> str:
    m = _COUNTED.match(text, pos)
    return m.group(1).lower()[:5] if m else ""


def _unit_after(text: str, pos: int) -> tuple[str, int] | None:
    m = _UNIT_SYMBOL.match(text, pos) or _UNIT_WORD.match(text, pos)
    if m is None:
        return None
    written = m.group(1)
    unit = _UNIT_SYMBOLS.get(written)
    if unit is None:
        unit = _UNIT_WORDS[re.sub(r"\s+", " ", written.lower())]
    return unit, m.end()


def _dates(text: str, taken: list[tuple[int, int]], months: bool) -> list[tuple[int, Quantity]]:
    out = []
    for pattern in _DATE_PATTERNS if months else _NUMERIC_DATE_PATTERNS:
        for m in pattern.finditer(text):
            if _overlaps(m.span(), taken):
                continue
            groups = m.groupdict()
            year = int(groups.get("year") or 0)
            if groups.get("mnum"):
                month = int(groups["mnum"])
            elif groups.get("mon"):
                month = _MONTHS[groups["mon"].rstrip(".").lower()]
            else:
                month = 0
            day = int(groups.get("day") or 0)
            if (groups.get("day") and not 1 <= day <= 31) or not 0 <= month <= 12:
                continue
            taken.append(m.span())
            value = float(year * 10000 + month * 100 + day)
            out.append((m.start(), Quantity(value, "date", m.group(0), "date")))
    return out


def _numerals(text: str, taken: list[tuple[int, int]]) -> list[tuple[int, Quantity]]:
    """Digits with what a reader reads with them: currency, scale, unit, ordinal suffix, decade,
    hedge. A number glued to letters that are none of these ("4K", "3D") is a name, not a
    quantity; a two-digit end of a year range ("1951-53", hyphen or en dash) is read as the year
    it abbreviates."""
    out = []
    for m in _NUMBER.finditer(text):
        if _overlaps(m.span(), taken):
            continue
        written = m.group(1)
        start, end = m.span()
        value = float(written.replace(",", ""))
        kind: QuantityKind = "number"
        unit = ""
        before = text[max(0, start - 40) : start]
        currency = _CURRENCY_BEFORE.search(before[-5:])
        if currency:
            symbol = currency.group("sym")
            code = (currency.group("code") or "").rstrip(".")
            unit = _CURRENCY_CODES.get(code, "") if code else symbol[-1]
            start -= len(currency.group(0))
            before = text[max(0, start - 40) : start]
        suffix = _ORDINAL_SUFFIX.match(text, end)
        decade = _DECADE_SUFFIX.match(text, end)
        range_start = _RANGE_START.search(before[-8:])
        if suffix and "." not in written and "," not in written:
            kind, end = "ordinal", suffix.end()
        elif decade and len(written) in (2, 4) and written.endswith("0"):
            kind, end = "decade", decade.end()
        elif range_start and len(written) == 2:
            kind, value = "year", float(int(range_start.group(1)) * 100 + int(written))
        else:
            scale = _SCALE.match(text, end) or (_MONEY_SCALE.match(text, end) if unit else None)
            if scale:
                word = scale.group(1).lower()
                value *= _SCALES.get(word) or _MONEY_SCALES[word]
                end = scale.end()
            found = _unit_after(text, end)
            if found and not (unit and found[0] in ("", "bc")):
                unit = unit or found[0]
                end = found[1]
            elif _LETTER.match(text, end):
                continue
            plain_year = len(written) == 4 and written.isdigit() and 1000 <= value <= 2100
            if not scale and unit in ("", "bc") and (plain_year or unit == "bc"):
                kind = "year"
        approximate, bound = _hedge(before)
        taken.append((start, end))
        written = text[start:end]
        counts = _counted(text, end)
        out.append((start, Quantity(value, unit, written, kind, approximate, bound, counts)))
    return out


def _worded(
    text: str, taken: list[tuple[int, int]], vocabulary: frozenset[str]
) -> list[tuple[int, Quantity]]:
    out: list[tuple[int, Quantity]] = []
    numbers = vocabulary & _NUMBER_VOCABULARY
    ordinals = vocabulary & _ORDINAL_VOCABULARY
    for m in _NUMBER_WORD.finditer(text) if numbers else ():
        word = (m.group("w") or m.group("one")).lower()
        scale = m.group("scale") or m.group("onescale")
        if _overlaps(m.span(), taken):
            continue
        parts = re.split(r"[-\s]", word)
        value = 1.0 if word in ("one", "a", "an") else sum(_WORD_VALUES[p] for p in parts)
        if scale:
            value *= 100.0 if scale.lower() == "hundred" else _SCALES[scale.lower()]
        end = m.end()
        found = _unit_after(text, end)
        unit = ""
        if found:
            unit, end = found
        approximate, bound = _hedge(text[max(0, m.start() - 40) : m.start()])
        taken.append((m.start(), end))
        written = text[m.start() : end]
        counts = _counted(text, end)
        out.append(
            (m.start(), Quantity(value, unit, written, "number", approximate, bound, counts))
        )
    for m in _ORDINAL_WORD.finditer(text) if ordinals else ():
        if _overlaps(m.span(), taken):
            continue
        if m.group("w"):
            value = float(_ORDINAL_WORDS[m.group("w").lower()])
        else:
            value = _WORD_VALUES[m.group("tens").lower()] + _ORDINAL_ONES[m.group("one").lower()]
        taken.append(m.span())
        out.append((m.start(), Quantity(value, "", m.group(0), "ordinal")))
    for m in _ROMAN.finditer(text) if _TWO_ROMAN.search(text) else ():
        rank = _roman_value(m.group(1))
        if rank is not None and not _overlaps(m.span(), taken):
            taken.append(m.span())
            out.append((m.start(), Quantity(float(rank), "", m.group(1), "ordinal")))
    return out


def _quantities_and_spans(text: str) -> tuple[tuple[Quantity, ...], tuple[tuple[int, int], ...]]:
    """Each quantity with where it stands; the spans also tell `_names` which capitalised words
    ("April" in a date, "Two" at the start) are numbers. A text's lowercase vocabulary decides
    first which of the slower patterns can match at all."""
    taken: list[tuple[int, int]] = []
    vocabulary = frozenset(_LOWER_WORD.findall(text.lower()))
    found = _dates(text, taken, months=bool(vocabulary & _MONTH_WORDS))
    found += _numerals(text, taken)
    found += _worded(text, taken, vocabulary)
    found.sort(key=lambda item: item[0])
    return tuple(q for _, q in found), tuple(taken)


def _base(q: Quantity) -> tuple[str, float]:
    unit, factor = _UNIT_BASE.get(q.unit, (q.unit, 1.0))
    return unit, q.value * factor


def _compatible(a: str, b: str) -> bool:
    """Unitless matches any unit; otherwise units must be one, one metric family, or one word
    that can mean either (`_LOOSE_UNITS`). km against miles is a mismatch."""
    if not a or not b or a == b:
        return True
    if _UNIT_BASE.get(a, (a,))[0] == _UNIT_BASE.get(b, (b,))[0]:
        return True
    return frozenset((a, b)) in _LOOSE_UNITS


def _date_parts(value: float) -> tuple[int, int, int]:
    v = int(value)
    return v // 10000, v // 100 % 100, v % 100


def _backs(evidence: Quantity, claim: Quantity) -> bool:
    """Whether `evidence` states `claim`. Years, decades, dates and ordinals match exactly (a
    date backs its year and the parts a shorter date names; years back their decade). Other
    numbers match exactly, in a compatible unit (metric ones converted), unless the claim is
    hedged: then within `APPROXIMATE_TOLERANCE`, or half a unit of its last digit written before
    a scale word when that is wider ("about 1.5 million" covers 1.45 to 1.55 million). A bound
    ("more than 500 people") is backed by an exact number of the same thing it describes within
    `BOUND_REACH` ("512 people"); never by another bound or hedge, since "fewer than 25" is not
    what "fewer than 24" says."""
    e, c = evidence, claim
    if c.kind == "date":
        if e.kind != "date":
            return False
        return all(
            part in (0, have)
            for part, have in zip(_date_parts(c.value), _date_parts(e.value), strict=True)
        )
    if c.kind == "decade":
        if e.kind not in ("year", "decade", "date"):
            return False
        year = float(_date_parts(e.value)[0]) if e.kind == "date" else e.value
        if c.value < 100 or (e.kind == "decade" and e.value < 100):
            return c.value % 100 <= year % 100 <= c.value % 100 + 9
        return c.value <= year <= c.value + 9
    if e.text.lower() in _IMPLIED_VALUES and not c.text[:1].isalpha():
        return False
    if c.kind == "ordinal" or e.kind == "ordinal":
        return c.kind == e.kind and c.value == e.value
    if e.kind == "date":
        return c.kind == "year" and _date_parts(e.value)[0] == c.value
    if e.kind == "decade" or not _compatible(c.unit, e.unit):
        return False
    c_base, c_value = _base(c)
    e_base, e_value = _base(e)
    if c_base != e_base and c.unit and e.unit:
        c_value, e_value = c.value, e.value
    if abs(c_value - e_value) <= 1e-9 * max(abs(c_value), 1.0):
        return True
    if c.kind == "year":
        return False
    if c.approximate:
        return abs(c_value - e_value) <= max(APPROXIMATE_TOLERANCE * abs(e_value), _half_step(c))
    exact = e.kind == "number" and not (e.bound or e.approximate)
    if c.bound and exact and c.counts == e.counts and (not c.unit or e.unit):
        if c.bound == "min":
            return c_value <= e_value <= BOUND_REACH * c_value
        return c_value / BOUND_REACH <= e_value <= c_value
    return False


def _half_step(q: Quantity) -> float:
    """Half a unit of the last digit written with a scale word: "1.5 million" is 1.5 +- 0.05
    million. A plain integer has none: its trailing zeros count as written."""
    m = _SCALED.search(q.text)
    if not m:
        return 0.0
    return 0.5 * 10.0 ** -len(m.group(1) or "") * _SCALES[m.group(2).lower()]


def _closest(claim: Quantity, quantities: Sequence[Quantity]) -> Quantity | None:
    """The evidence quantity a reader would say the claim mis-states: the same value in another
    unit, else the nearest of its kind (a year against years and the years of dates, within
    10; a number against numbers of a compatible unit, within a factor of two)."""
    for q in quantities:
        if q.kind == claim.kind and q.value == claim.value and not _compatible(q.unit, claim.unit):
            return q
    gaps = [(gap, q) for q in quantities if (gap := _gap(claim, q)) is not None]
    return min(gaps, key=lambda item: item[0])[1] if gaps else None


def _gap(claim: Quantity, q: Quantity) -> float | None:
    if claim.kind in ("year", "decade"):
        if q.kind == "date" and _date_parts(q.value)[0]:
            value = float(_date_parts(q.value)[0])
        elif q.kind in ("year", "decade"):
            value = q.value
        else:
            return None
        return abs(value - claim.value) if abs(value - claim.value) <= 10 else None
    if claim.kind == "date":
        if q.kind != "date":
            return None
        (cy, cm, cd), (qy, qm, qd) = _date_parts(claim.value), _date_parts(q.value)
        if cy and qy and abs(cy - qy) > 2:
            return None
        return abs(cy - qy) * 400.0 + abs(cm - qm) * 31.0 + abs(cd - qd)
    if claim.kind != q.kind or not _compatible(q.unit, claim.unit):
        return None
    (claim_base, claim_value), (q_base, q_value) = _base(claim), _base(q)
    if claim_base != q_base:
        claim_value, q_value = claim.value, q.value
    gap = abs(q_value - claim_value)
    return gap if gap <= abs(claim.value) else None


# --- names ----------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"(?P<abbr>[A-Z]\.(?:\s?[A-Z]\.)+|(?:Dr|Mr|Mrs|Ms|St|Mt|Ft|Jr|Sr|Gen|Col|Lt|Sgt|Capt|Gov|Sen|"
    r"Rep|Rev|Prof|Hon)\.|[A-Z]\.(?=\s?[A-Z]))"
    r"|(?P<word>[^\W\d_][\w\u0300-\u036f]*(?:['\u2019-][\w\u0300-\u036f]+)*['\u2019]?)"
    r"|(?P<num>\d(?:[\w,.]*\w)?)"
    r"|(?P<punct>[^\w\s])"
)
"""Words (with inner hyphens and apostrophes), abbreviations with their dots ("U.S.", "Dr.",
the initial "J." before a capital), numbers, and single punctuation marks."""

_CONNECTORS = frozenset(
    _words(
        "of the de da di do dos das del della der den des du van von la le y bin ibn al el upon "
        "am for &"
    )
)
"""Lowercase words allowed inside a name ("Bank of America", "Ludwig van Beethoven"); not
"and", which joins two names more often than it sits inside one."""

_ARTICLES = frozenset({"the", "a", "an"})
_CALENDAR = frozenset(
    _words(
        "january february march april may june july august september october november december "
        "monday tuesday wednesday thursday friday saturday sunday"
    )
)
"""Months and days are dates, not names ("in April", "on Monday"; "Theresa May" is "Theresa")."""

_TITLES = frozenset(
    _words(
        "mr mrs ms dr sir dame lord lady president vice prime minister king queen prince princess "
        "saint st pope emperor empress duke duchess count countess baron baroness archbishop "
        "bishop cardinal chancellor senator governor general captain colonel admiral professor "
        "prof judge justice mayor sheikh sultan rabbi father brother sister reverend rev"
    )
)
"""Honorifics a sentence may put before a name the evidence writes bare ("President Obama")."""

_COMMON_STARTERS = frozenset(
    _words(
        """a an the this that these those it its he she they we i you his her their our my your
        there here in on at by for from to of with without within into onto upon over under after
        before during since until till while when where whereas what which who whom whose why how
        if unless although though because as also and but or nor so yet then thus hence therefore
        however moreover furthermore additionally besides meanwhile nevertheless nonetheless
        instead otherwise still indeed likewise similarly conversely regardless both either neither
        each every all any some many most several few no not none yes one two three four five six
        seven eight nine ten other another such much more less only just even first second third
        last next finally later earlier today currently originally initially eventually
        subsequently previously recently formerly ultimately overall together according following
        despite unlike like among amongst between around about approximately nearly almost roughly
        along across against behind beyond near per via toward towards throughout born released
        founded located known based directed written produced created established formed named
        built situated called considered described designed developed published recorded played
        starring set held given made found used being having is are was were be been has have had
        do does did can could will would shall should may might must unfortunately interestingly
        notably specifically namely generally typically usually often sometimes always never once
        twice now soon already perhaps maybe probably certainly clearly especially particularly
        primarily mainly mostly largely partly answer note sources source evidence apart aside
        whereby whether whatever whoever wherever whenever again alongside beside above below
        beneath inside outside except including excluding regarding concerning considering
        thanks due others"""
    )
)
"""Capitalised only because they start a sentence: never read as names there."""

_DEMONYMS = {
    "american": ("united states", "america", "us", "usa"),  # short ones only as capitals
    "british": ("united kingdom", "britain", "uk", "england", "scotland", "wales"),
    "english": ("england",), "scottish": ("scotland",), "welsh": ("wales",),
    "irish": ("ireland",), "french": ("france",), "german": ("germany",),
    "italian": ("italy",), "spanish": ("spain",), "portuguese": ("portugal",),
    "dutch": ("netherlands", "holland"), "belgian": ("belgium",), "swiss": ("switzerland",),
    "austrian": ("austria",), "swedish": ("sweden",), "norwegian": ("norway",),
    "danish": ("denmark",), "finnish": ("finland",), "polish": ("poland",),
    "russian": ("russia",), "greek": ("greece",), "turkish": ("turkey",),
    "japanese": ("japan",), "chinese": ("china",), "korean": ("korea",),
    "indian": ("india",), "pakistani": ("pakistan",), "canadian": ("canada",),
    "mexican": ("mexico",), "brazilian": ("brazil",), "argentine": ("argentina",),
    "australian": ("australia",), "egyptian": ("egypt",), "israeli": ("israel",),
    "south african": ("south africa",),
}  # fmt: skip
"""Country adjectives and the countries they name, read both ways ("American" <-> "U.S.")."""

_ALIASES: dict[str, frozenset[str]] = {}
for _adjective, _countries in _DEMONYMS.items():
    for _form in (_adjective, *_countries):
        _ALIASES[_form] = _ALIASES.get(_form, frozenset()) | {_adjective, *_countries}


def _is_roman(word: str) -> bool:
    return len(word) >= 2 and not word.strip("IVXL") and _roman_value(word) is not None


def _fold(text: str, join: bool = False) -> str:
    """Case, accents and possessives folded away: what two spellings of one name share
    ("Beyoncé's" -> "beyonce"). With `join`, dotted initials become one word ("U.S." -> "us",
    "J. R. R." -> "jrr"); without, one word each, so "K." still finds "K. A. Applegate"."""
    if join:
        text = _DOTTED.sub(lambda m: re.sub(r"[.\s]", "", m.group(0)) + " ", text)
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.casefold().replace("\u2019", "'")
    return _FOLDED_POSSESSIVE.sub("", text)


def _fold_tokens(text: str, join: bool = False) -> list[str]:
    return _ALNUM.findall(_fold(text, join))


@dataclass(frozen=True, slots=True)
class _Span:
    text: str
    start: int
    end: int


def _names(text: str, skip: Sequence[tuple[int, int]]) -> list[_Span]:
    """Capitalised runs, joined by connectors ("University of the Arts"), and codes with digits
    and letters ("4K", "F1"). A sentence's first word counts only when it is not a common word
    and is not written lowercase elsewhere in the text; months and days, numbers written as
    words, ordinals and Roman numerals are dates and quantities, not names. A possessive ends a
    name; a leading article is left out."""
    tokens = [(m.lastgroup or "", m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    lowercase = {t[1].lower() for t in tokens if t[0] == "word" and t[1][:1].islower()}
    covered = bytearray(len(text))
    for a, b in skip:
        covered[a:b] = b"\x01" * (b - a)

    def opens_sentence(start: int) -> bool:
        j = start - 1
        while j >= 0 and (text[j].isspace() or text[j] in "\"'\u201c\u2018([*_#>\u2022"):
            j -= 1
        if j < 0:
            return True
        initial = text[j] == "." and j >= 1 and text[j - 1].isupper()
        return text[j] in ".!?:;" and not (initial and (j < 2 or text[j - 2].isspace()))

    def is_name_word(i: int) -> bool:
        kind, word, start, end = tokens[i]
        if kind == "num":
            return any(ch.isalpha() for ch in word) and not any(covered[start:end])
        if kind not in ("word", "abbr") or not word[:1].isupper() or word == "I":
            return False
        if any(covered[start:end]) or _is_roman(word):
            return False
        bare = _POSSESSIVE.sub("", word).lower()
        if bare in _WORD_VALUES or bare in _ORDINAL_WORDS or bare in _CALENDAR:
            return False
        common = bare in _COMMON_STARTERS or bare in lowercase
        return not (common and opens_sentence(start))

    capitalised = [is_name_word(i) for i in range(len(tokens))]
    spans: list[_Span] = []
    run: list[int] = []

    def close() -> None:
        if not run:
            return
        while run and (tokens[run[0]][1].lower() in _ARTICLES or tokens[run[0]][0] == "punct"):
            run.pop(0)
        if run:
            start, end = tokens[run[0]][2], tokens[run[-1]][3]
            written = _POSSESSIVE.sub("", text[start:end])
            spans.append(_Span(written, start, start + len(written)))
        run.clear()

    for i, (_kind, word, _start, _end) in enumerate(tokens):
        if capitalised[i]:
            run.append(i)
            if _POSSESSIVE.search(word):
                close()
            continue
        if run and word.lower() in _CONNECTORS and i + 1 < len(tokens) and capitalised[i + 1]:
            run.append(i)
            continue
        close()
    close()
    return spans


@dataclass(frozen=True, slots=True)
class _Reading:
    quantities: tuple[Quantity, ...]
    names: tuple[_Span, ...]


@lru_cache(maxsize=8192)
def _read(text: str) -> _Reading:
    """Quantities and names of one text: read once, for the facts and for the checks."""
    quantities, spans = _quantities_and_spans(text)
    return _Reading(quantities, tuple(_names(text, spans)))


def _caps_initials(spans: Sequence[_Span]) -> frozenset[str]:
    out = set()
    for span in spans:
        words = _fold_tokens(span.text)
        core = [w for w in words if w not in _CONNECTORS]
        if len(core) >= 2:
            out.add("".join(w[0] for w in core))
        if len(words) >= 2:
            out.add("".join(w[0] for w in words))
    return frozenset(out)


# --- negation and comparison ----------------------------------------------------------------

_NEGATION = re.compile(
    r"\b(?:not|no|never|neither|nor|without|none|nobody|nothing|nowhere|cannot|no one)\b"
    r"|n['\u2019]t\b",
    re.IGNORECASE,
)
_NOT_NEGATION = re.compile(
    r"\bnot (?:only|just|merely)\b|\bno\.\s*\d|\bno (?:doubt|less|fewer)\b|\bnothing but\b",
    re.IGNORECASE,
)
"""Phrases that look negative and are not: "not only ... but also", "No. 1", "no less than"."""

_COMPARATIVE_FORMS = {
    "fewer": "less", "bigger": "larger", "greater": "larger", "elder": "older",
    "biggest": "largest", "eldest": "oldest", "prior": "before",
}  # fmt: skip
_ANTONYM_PAIRS = (
    ("more", "less"), ("larger", "smaller"), ("older", "younger"), ("before", "after"),
    ("earlier", "later"), ("higher", "lower"), ("first", "last"), ("longer", "shorter"),
    ("taller", "shorter"), ("heavier", "lighter"), ("faster", "slower"), ("hotter", "colder"),
    ("warmer", "cooler"), ("wider", "narrower"), ("deeper", "shallower"), ("above", "below"),
    ("most", "least"), ("largest", "smallest"), ("oldest", "youngest"), ("highest", "lowest"),
    ("longest", "shortest"), ("tallest", "shortest"), ("earliest", "latest"), ("best", "worst"),
    ("better", "worse"), ("predecessor", "successor"), ("maximum", "minimum"),
    ("preceded", "succeeded"), ("increased", "decreased"), ("richer", "poorer"),
    ("stronger", "weaker"), ("northern", "southern"), ("eastern", "western"),
    ("hottest", "coldest"), ("warmest", "coolest"), ("heaviest", "lightest"),
    ("fastest", "slowest"), ("widest", "narrowest"), ("deepest", "shallowest"),
    ("richest", "poorest"), ("strongest", "weakest"), ("closer", "farther"),
    ("closest", "farthest"), ("nearest", "farthest"), ("minority", "majority"),
    ("inferior", "superior"), ("oldest", "newest"), ("older", "newer"),
)  # fmt: skip
_ANTONYMS: dict[str, frozenset[str]] = {}
for _a, _b in _ANTONYM_PAIRS:
    _ANTONYMS[_a] = _ANTONYMS.get(_a, frozenset()) | {_b}
    _ANTONYMS[_b] = _ANTONYMS.get(_b, frozenset()) | {_a}
_COMPARATIVE_VOCABULARY = frozenset([*_ANTONYMS, *_COMPARATIVE_FORMS])
_COMPARATIVE = re.compile(
    rf"\b({_alternation([*_ANTONYMS, *_COMPARATIVE_FORMS])})\b", re.IGNORECASE
)

_STOP = frozenset(
    _words(
        """a an the of in on at to for from by with and or but is are was were be been being do does
        did what which who whom whose when where why how that this these those it its as into than
        then there their they them he she his her i you your we our about also has have had having
        would could should will can may might must shall s t so such not no never neither nor
        without none nobody nothing nowhere cannot only just very"""
    )
)
_CLAUSE_BREAK = re.compile(
    r"\s*(?:[;:()\[\]\u2014]|\s[\u2013-]\s|,\s*(?:but|and|while|whereas|although|though|which|who|where|"
    r"when|yet|so)\b|\s(?:but|whereas|although|though|while|yet)\b)\s*",
    re.IGNORECASE,
)
"""Where one statement of a sentence ends and another begins: negation is judged per clause,
so "born in Paris, but never returned" backs neither "was not born in Paris" nor "returned"."""

MIN_SHARED_WORDS = 2
MIN_OVERLAP = 0.5
"""An evidence clause or sentence speaks to a claim when it shares at least this many, and this
share, of the claim's content words; below that a flipped negation or comparative is not
reported (the sentence may restate something the chunk says elsewhere)."""


def _content_words(text: str) -> frozenset[str]:
    """Content words, crudely stemmed to five letters, negations and comparatives left out so
    that a flipped sentence still finds the statement it flips."""
    words = _ALNUM.findall(_fold(text))
    return frozenset(
        w[:5]
        for w in words
        if w not in _STOP and w not in _ANTONYMS and w not in _COMPARATIVE_FORMS
    )


def _negation_cue(text: str) -> str:
    m = _NEGATION.search(_NOT_NEGATION.sub(" ", text))
    return m.group(0) if m else ""


def _comparatives(text: str) -> tuple[tuple[str, str, int], ...]:
    """(normalised, as written, offset) for each comparative written in lowercase: "Older" in
    "Daniel José Older" is a name."""
    out: list[tuple[str, str, int]] = []
    if not _COMPARATIVE_VOCABULARY & set(_LOWER_WORD.findall(text.lower())):
        return ()
    for m in _COMPARATIVE.finditer(text):
        word = m.group(1)
        at_start = not text[: m.start()].strip()
        if word[0].isupper() and not at_start:
            continue
        lowered = word.lower()
        out.append((_COMPARATIVE_FORMS.get(lowered, lowered), word, m.start()))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _Clause:
    text: str
    words: frozenset[str]
    cue: str


@dataclass(frozen=True, slots=True)
class _Relation:
    """ "A <word> B": the names either side of a comparative ("Venus is hotter than Mercury")."""

    left: str
    word: str
    right: str
    written: str  # the comparative and what follows it up to the right name ("older than")


@dataclass(frozen=True, slots=True)
class _Statement:
    """One sentence as the negation and comparison checks see it. `clauses` are its statements
    (small ones joined to their neighbour); as evidence, each piece before that joining counts
    too, so "expressed A and B" finds "expressed A and B" in "expressed A and B, but not C"."""

    text: str
    words: frozenset[str]
    clauses: tuple[_Clause, ...]
    comparatives: tuple[str, ...]
    relations: tuple[_Relation, ...]
    pieces: tuple[_Clause, ...]


_RELATIVE = re.compile(
    r"((?:\S+\s+){0,2}\S+),\s*(?:which|who|whom|whose|where)\s+([^,;]+)(?:,|(?=[.!?]?\s*$))"
)


def _clauses(sentence: str) -> tuple[tuple[_Clause, ...], tuple[_Clause, ...]]:
    """A relative clause becomes a statement about the words before it ("Venus, which has no
    moons, is the second planet" states "Venus has no moons" and "Venus is the second planet").
    Clauses with fewer than `MIN_SHARED_WORDS` content words join the one before (or after):
    "but did not win" alone cannot be matched, "nominated, but did not win" can."""
    embedded: list[str] = []

    def pull(m: re.Match[str]) -> str:
        embedded.append(f"{m.group(1)} {m.group(2)}")
        return m.group(1)

    main = _RELATIVE.sub(pull, sentence)
    pieces = [p.strip() for p in (*_CLAUSE_BREAK.split(main), *embedded) if p and p.strip()]
    merged: list[str] = []
    for piece in pieces:
        if merged and min(map(len, map(_content_words, (merged[-1], piece)))) < MIN_SHARED_WORDS:
            merged[-1] = f"{merged[-1]} {piece}"
        else:
            merged.append(piece)
    return tuple(_Clause(p, _content_words(p), _negation_cue(p)) for p in merged), tuple(
        _Clause(p, _content_words(p), _negation_cue(p)) for p in pieces if p not in merged
    )


def _relations(sentence: str, names: Sequence[_Span]) -> tuple[_Relation, ...]:
    out = []
    for word, written, at in _comparatives(sentence):
        left = [n for n in names if n.end <= at]
        right = [n for n in names if n.start > at and n.start - at < len(written) + 12]
        if left and right:
            phrase = sentence[at : right[0].start].strip()
            out.append(_Relation(left[-1].text, word, right[0].text, phrase))
    return tuple(out)


@lru_cache(maxsize=8192)
def _statement(sentence: str) -> _Statement:
    names = _read(sentence).names
    clauses, pieces = _clauses(sentence)
    return _Statement(
        sentence,
        _content_words(sentence),
        clauses,
        tuple(word for word, _, _ in _comparatives(sentence)),
        _relations(sentence, names),
        pieces,
    )


# --- evidence -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Evidence:
    """One cited text, read once: its quantities, its folded words for name look-ups, the
    initialisms its names make, and its sentences for negation and comparison."""

    quantities: tuple[Quantity, ...]
    folded: tuple[str, str]
    positions: dict[str, list[int]]
    initialisms: frozenset[str]
    acronyms: frozenset[str]
    statements: tuple[_Statement, ...]


@lru_cache(maxsize=4096)
def _evidence(text: str) -> _Evidence:
    text = without_citations(text)
    reading = _read(text)
    implied = tuple(
        Quantity(float(_IMPLIED_VALUES[m.group(1).lower()]), "", m.group(1))
        for m in _IMPLIED_COUNTS.finditer(text)
    )
    tokens = _fold_tokens(text)
    positions: dict[str, list[int]] = {}
    for i, token in enumerate(tokens):
        positions.setdefault(token, []).append(i)
    acronyms = re.findall(r"\b[A-Z]\.(?:\s?[A-Z]\.)+|\b[A-Z]{2,}\b", text)
    return _Evidence(
        reading.quantities + implied,
        (f" {' '.join(tokens)} ", f" {' '.join(_fold_tokens(text, join=True))} "),
        positions,
        _caps_initials(reading.names),
        frozenset(re.sub(r"[.\s]", "", a).lower() for a in acronyms),
        _resolve_pronouns(tuple(_statement(s) for s in split_sentences(text)), reading.names),
    )


_PRONOUN_START = re.compile(r"[\s\"'“(]*(?:he|she|it|they|his|her|its|their)\b", re.IGNORECASE)


def _resolve_pronouns(
    statements: tuple[_Statement, ...], names: Sequence[_Span]
) -> tuple[_Statement, ...]:
    """A chunk names its subject once and then says "It has no moons": sentences that open with
    a pronoun get the words of the chunk's subject (what its first sentence says before "is",
    "was", "has" ..., else its first name), so "Venus has moons" finds the sentence that denies
    it. Crude coreference, right for the encyclopedic chunks it is meant for."""
    if not statements:
        return statements
    opening = re.sub(r"\([^)]*\)", " ", statements[0].text)
    head = re.match(r"(.{1,80}?)\s(?:is|was|are|were|has|had|have)\b", opening)
    if head:
        subject = _content_words(head.group(1))
    elif names:
        subject = _content_words(names[0].text)
    else:
        return statements
    out = []
    for st in statements:
        if _PRONOUN_START.match(st.text) and st.clauses:
            opening = st.text.strip()[:12]

            def resolved(clause: _Clause, opening: str = opening) -> _Clause:
                if not clause.text.startswith(opening):
                    return clause
                return replace(clause, words=clause.words | subject)

            st = replace(
                st,
                words=st.words | subject,
                clauses=tuple(map(resolved, st.clauses)),
                pieces=tuple(map(resolved, st.pieces)),
            )
        out.append(st)
    return tuple(out)


def _in_order(words: Sequence[str], positions: dict[str, list[int]], gap: int = 4) -> bool:
    """Whether `words` occur in this order, each within `gap` tokens of the one before: "Shirley
    Black" in "Shirley Temple Black", "Martin King" in "Martin Luther King"."""
    if not words or any(w not in positions for w in words):
        return False

    def extend(k: int, at: int) -> bool:
        if k == len(words):
            return True
        return any(extend(k + 1, p) for p in positions[words[k]] if at < p <= at + gap)

    return any(extend(1, p) for p in positions[words[0]])


_DERIVED = re.compile(r"(?:ian|ean|an|ese|ish)$")
"""Endings that make an adjective of a name: such a word is backed by the name it comes from."""


def _named(name: str, evidence: _Evidence) -> bool:
    """A name is backed when the evidence holds it, folded (case, accents, possessive), whole or
    as a part ("Temple" of "Shirley Temple Black"); or its words in order with a few words
    between; or it is an initialism of a name there ("NBC"), or there as an initialism of it; or
    it is a country or its adjective written the other way, or an adjective made from a name
    there ("Mercurian"). A leading honorific is not
    required ("President Obama" for "Obama"), nor a leading country adjective when that
    adjective is itself backed ("British Prime Minister Theresa May")."""
    forms = []
    for form in (_fold_tokens(name), _fold_tokens(name, join=True)):
        while len(form) > 1 and form[0] in _TITLES:
            form = form[1:]
        forms.append(form)
    words = forms[0]
    if not words:
        return True
    for form in forms:
        if any(f" {' '.join(form)} " in folded for folded in evidence.folded):
            return True
    joined = " ".join(words)
    for alias in _ALIASES.get(joined, ()):
        if alias in evidence.acronyms if len(alias) <= 3 else f" {alias} " in evidence.folded[0]:
            return True
    if (
        re.fullmatch(r"(?:[A-Z]\.?\s?){2,6}", name.strip())
        and "".join(words) in evidence.initialisms
    ):
        return True
    stem = _DERIVED.sub("", words[0]) if len(words) == 1 else words[0]
    if stem != words[0] and len(stem) >= 4 and any(w.startswith(stem) for w in evidence.positions):
        return True  # "Mercurian" of "Mercury", "Venusian" of "Venus"
    core = [w for w in words if w not in _CONNECTORS]
    if len(core) >= 2 and "".join(w[0] for w in core) in evidence.acronyms:
        return True
    if len(core) >= 2 and _in_order(core, evidence.positions):
        return True
    for cut in range(1, len(words)):
        head = " ".join(words[:cut])
        if head in _ALIASES or all(w in _TITLES for w in words[:cut]):
            rest = " ".join(words[cut:])
            return _named(head, evidence) and _named(rest, evidence)
    return False


# --- the public checks ----------------------------------------------------------------------


@lru_cache(maxsize=8192)
def sentence_facts(text: str) -> Facts:
    """The facts `text` commits to. Citation marks are left out; results are cached per text."""
    text = without_citations(text)
    reading = _read(text)
    quantities = reading.quantities
    names = tuple(dict.fromkeys(span.text for span in reading.names))
    comparatives = tuple(dict.fromkeys(word for word, _, _ in _comparatives(text)))
    return Facts(quantities, names, bool(_negation_cue(text)), comparatives)


def _quantity_backed(q: Quantity, evidence: Sequence[_Evidence]) -> bool:
    return any(_backs(e, q) for ev in evidence for e in ev.quantities)


def _name_backed(name: str, evidence: Sequence[_Evidence]) -> bool:
    return any(_named(name, ev) for ev in evidence)


def _best(words: frozenset[str], candidates: Sequence[tuple[frozenset[str], _T]]) -> list[_T]:
    """The candidates sharing most of `words`, ties broken by the fewest words besides (the
    statement itself, not a longer one that contains it), all of them when still tied; none
    when even the best shares too little to speak to the claim."""
    if len(words) < MIN_SHARED_WORDS:
        return []
    scored = [(len(words & have), -len(have - words), item) for have, item in candidates]
    top = max(((shared, spare) for shared, spare, _ in scored), default=(0, 0))
    if top[0] < MIN_SHARED_WORDS or top[0] / len(words) < MIN_OVERLAP:
        return []
    return [item for shared, spare, item in scored if (shared, spare) == top]


def _quote(text: str, limit: int = 140) -> str:
    text = " ".join(text.split())
    return f'"{text}"' if len(text) <= limit else f'"{text[: limit - 3].rstrip()}..."'


def _negation_problems(claim: _Statement, evidence: Sequence[_Evidence]) -> list[ClaimProblem]:
    """Per clause of the sentence: the evidence clauses that share most of its words; a problem
    when none of them agrees with it on being negated."""
    pool = [(c.words, c) for ev in evidence for s in ev.statements for c in (*s.clauses, *s.pieces)]
    problems = []
    for clause in claim.clauses:
        best = _best(clause.words, pool)
        if not best or any(bool(c.cue) == bool(clause.cue) for c in best):
            continue
        if clause.cue:
            detail = (
                f'the sentence says "{clause.cue}" but the closest cited statement does not: '
                f"{_quote(best[0].text)}"
            )
            problems.append(ClaimProblem("negation", clause.cue, detail))
        else:
            detail = (
                f'the closest cited statement is negated ("{best[0].cue}"): {_quote(best[0].text)}'
            )
            problems.append(ClaimProblem("negation", clause.text, detail))
    return problems


def _same_name(a: str, b: str) -> bool:
    x, y = set(_fold_tokens(a)), set(_fold_tokens(b))
    return bool(x) and bool(y) and (x <= y or y <= x)


def _comparison_problems(claim: _Statement, evidence: Sequence[_Evidence]) -> list[ClaimProblem]:
    """Against the evidence sentences that share most words with the sentence: an ordering
    between two names is checked by `_order_problem`; a comparative without two names (or
    whose names the evidence does not order) by `_antonym_problem`."""
    pool = [(s.words, s) for ev in evidence for s in ev.statements]
    best = _best(claim.words, pool)
    if not best or not claim.comparatives:
        return []
    problems: list[ClaimProblem] = []
    settled: set[str] = set()
    for rel in claim.relations:
        verdict = _order_problem(rel, best)
        if verdict is not None:
            settled.add(rel.word)
            if verdict:
                problems.append(verdict)
    for word in dict.fromkeys(claim.comparatives):
        if word not in settled and (problem := _antonym_problem(word, claim, best)):
            problems.append(problem)
    return problems


def _order_problem(rel: _Relation, best: Sequence[_Statement]) -> ClaimProblem | Literal[""] | None:
    """None when no best sentence orders the same two names with this word or its antonym;
    "" when one agrees ("B younger than A" for "A older than B"); else the problem: the same
    word with the names swapped, or the antonym with them in place."""
    if _same_name(rel.left, rel.right):
        return None
    contradiction: _Relation | None = None
    for other in (o for st in best for o in st.relations):
        same = _same_name(rel.left, other.left) and _same_name(rel.right, other.right)
        swapped = _same_name(rel.left, other.right) and _same_name(rel.right, other.left)
        if same == swapped:
            continue
        if other.word == rel.word:
            consistent = same
        elif other.word in _ANTONYMS.get(rel.word, frozenset()):
            consistent = swapped
        else:
            continue
        if consistent:
            return ""
        contradiction = contradiction or other
    if contradiction is None:
        return None
    c = contradiction
    detail = (
        f"the sentence says {rel.left} {rel.written} {rel.right}; "
        f"the cited evidence says {c.left} {c.written} {c.right}"
    )
    return ClaimProblem("comparison", rel.written.split()[0], detail)


def _antonym_problem(
    word: str, claim: _Statement, best: Sequence[_Statement]
) -> ClaimProblem | None:
    """A problem when every best sentence that uses the word or its antonym uses the word fewer
    times than the sentence and the antonym more: "older" against "younger". Counting, not mere
    presence, keeps "before ... before" honest against "after ... before"."""
    antonyms = _ANTONYMS.get(word, frozenset())

    def opposite(st: _Statement) -> str:
        if st.comparatives.count(word) >= claim.comparatives.count(word):
            return ""
        more = (
            a for a in sorted(antonyms) if st.comparatives.count(a) > claim.comparatives.count(a)
        )
        return next(more, "")

    relevant = [st for st in best if {word, *antonyms} & set(st.comparatives)]
    if not relevant or not all(opposite(st) for st in relevant):
        return None
    written = next(w for c, w, _ in _comparatives(claim.text) if c == word)
    detail = (
        f'the sentence says "{written}" but the closest cited statement says '
        f'"{opposite(relevant[0])}": {_quote(relevant[0].text)}'
    )
    return ClaimProblem("comparison", written, detail)


def check_claims(
    sentence: str, cited: Sequence[str], given: Sequence[str] = ()
) -> list[ClaimProblem]:
    """The facts of `sentence` its cited texts do not back, numbers first, then names, negation
    and comparison.

    `cited` are the texts of the chunks the sentence cites (with their titles when the writer
    saw them); `given` are texts whose numbers and names count as known, such as the user's
    question: a name the question states is not a hallucination. Negation and comparison are
    judged against `cited` only. With nothing cited, every number and name `given` does not
    hold is reported.
    """
    text = without_citations(sentence)
    facts = sentence_facts(text)
    evidence = [_evidence(t) for t in cited]
    known = evidence + [_evidence(t) for t in given]
    problems: list[ClaimProblem] = []
    quoted = [q for ev in evidence for q in ev.quantities]
    for q in facts.quantities:
        if _quantity_backed(q, known):
            continue
        near = _closest(q, quoted)
        said = f" (it says {near.text})" if near else ""
        problems.append(
            ClaimProblem("number", q.text, f"{q.text} is not in the cited evidence{said}")
        )
    for name in facts.names:
        if not _name_backed(name, known):
            problems.append(ClaimProblem("name", name, f"the cited evidence never names {name}"))
    if evidence:
        claim = _statement(text)
        problems += _negation_problems(claim, evidence)
        problems += _comparison_problems(claim, evidence)
    return list(dict.fromkeys(problems))


def supporting_texts(sentence: str, texts: Sequence[str], given: Sequence[str] = ()) -> list[int]:
    """Indices of `texts` each of which alone (with `given`) backs every number and name of
    `sentence`: where a claim cited to the wrong chunk really comes from. A sentence with no
    number and no name is backed by every text in this sense; check `sentence_facts` first when
    that matters."""
    facts = sentence_facts(without_citations(sentence))
    known = [_evidence(t) for t in given]
    out = []
    for i, text in enumerate(texts):
        evidence = [_evidence(text), *known]
        if all(_quantity_backed(q, evidence) for q in facts.quantities) and all(
            _name_backed(n, evidence) for n in facts.names
        ):
            out.append(i)
    return out
