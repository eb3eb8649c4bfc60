"""Deterministic redaction of profile values in free text, in their canonical surface forms.

A value can reappear in a message in another shape than it was stored: ``62000`` as "62,000" or "62 000",
a list as its single items, a nested record as its leaves, ``"breast cancer"`` as "breast-cancer" or
"breast_cancer", a date ``1945-09-18`` as "18.09.1945" or "09/18/1945".  :func:`value_forms` enumerates those
shapes and :func:`redact` removes every one of them; :func:`find_fields` is the same matcher used as a detector.

Every removal is replaced by :data:`REDACTED`, ``<redacted>``: one lowercase word in angle brackets, the form
placeholder-aware scanners (AgentLeak's key-name detector among them) skip as "already redacted", and which no
profile value takes.  The older ``[REDACTED]`` read as a value to such scanners.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: The one redaction placeholder (see the module docstring).
REDACTED = "<redacted>"
# A numeric date with the same separator twice: 1945-09-18, 18.09.1945, 09/18/1945.  Matched before numbers,
# because the number pattern alone reads "18.09" of "18.09.1945" as a decimal and leaves the date whole.
_DATE_TOKEN = re.compile(r"(?<![\w.])(\d{1,4})([./-])(\d{1,2})\2(\d{1,4})(?![\w]|\.\d)")
_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:[,\u202f  ]\d{3})+(?:\.\d+)?(?![\w])|(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")


def leaves(value: Any) -> list[Any]:
    """Scalars of a nested value: dict leaves and list items, recursively."""
    if isinstance(value, Mapping):
        return [x for v in value.values() for x in leaves(v)]
    if isinstance(value, (list, tuple, set)):
        return [x for v in value for x in leaves(v)]
    return [value]


def _number_key(text: str) -> str:
    """62,000 / 62 000 / 62000 / 62000.0 -> '62000'."""
    digits = re.sub(r"[,\u202f  ]", "", text)
    try:
        num = float(digits)
    except ValueError:
        return digits
    return str(int(num)) if num == int(num) else repr(num)


def value_forms(value: Any, min_len: int = 2) -> tuple[set[str], set[str]]:
    """``(strings, number_keys)`` to look for: each leaf as text, and every number inside it, canonicalised."""
    strings, numbers = set(), set()
    for leaf in leaves(value):
        if leaf is None or isinstance(leaf, bool):
            continue
        text = str(leaf).strip()
        if len(text) >= min_len:
            strings.add(text)
        for m in _NUMBER.finditer(text):
            numbers.add(_number_key(m.group()))
        if isinstance(leaf, (int, float)):
            numbers.add(_number_key(str(leaf)))
    return strings, numbers


def _string_pattern(strings: Iterable[str]) -> re.Pattern | None:
    parts = sorted(strings, key=len, reverse=True)
    if not parts:
        return None
    # Word boundaries only where the value itself starts/ends with a word character; an underscore counts as
    # a boundary, so a value glued into an identifier ("penicillin_allergy") is removed too.
    alts = []
    for s in parts:
        # Any run of whitespace (line breaks included), hyphens or underscores where the value has a space,
        # hyphen or underscore: "breast cancer", "breast-cancer", "breast_cancer" and a value split over lines
        # are all the value.
        words = [w for w in re.split(r"[\s_-]+", s) if w]
        if not words:
            continue
        esc = r"[\s_-]+".join(re.escape(w) for w in words)
        alts.append((r"(?<![^\W_])" if s[0].isalnum() else "") + esc + (r"(?![^\W_])" if s[-1].isalnum() else ""))
    return re.compile("|".join(alts), re.IGNORECASE) if alts else None


def _date_readings(day_month_year: tuple[str, str, str]) -> set[tuple[int, int, int]]:
    """(year, month, day) readings of a numeric date token: year first or last, day/month in either order."""
    a, b, c = day_month_year
    out = set()
    if len(a) == 4:
        out.add((int(a), int(b), int(c)))
    if len(c) == 4:
        out |= {(int(c), int(b), int(a)), (int(c), int(a), int(b))}
    return out


def _private_dates(strings: Iterable[str]) -> set[tuple[int, int, int]]:
    """The calendar dates written as numeric dates inside the private values."""
    out = set()
    for s in strings:
        for m in _DATE_TOKEN.finditer(s):
            out |= _date_readings((m.group(1), m.group(3), m.group(4)))
    return out


def redact(text: str, values: Iterable[Any], replacement: str = REDACTED) -> str:
    """Remove every canonical form of every value from ``text``."""
    strings, numbers = set(), set()
    for v in values:
        s, n = value_forms(v)
        strings |= s
        numbers |= n
    dates = _private_dates(strings)
    if dates:
        # a numeric date in any order and with any of the separators, removed whole
        text = _DATE_TOKEN.sub(
            lambda m: replacement if _date_readings((m.group(1), m.group(3), m.group(4))) & dates else m.group(),
            text,
        )
    pat = _string_pattern(strings)
    if pat is not None:
        text = pat.sub(replacement, text)
    if numbers:
        text = _NUMBER.sub(lambda m: replacement if _number_key(m.group()) in numbers else m.group(), text)
    return text


def contains_value(text: str, value: Any) -> bool:
    """Whether any canonical form of ``value`` occurs in ``text``."""
    return redact(text, [value], replacement="\x00") != text


def find_fields(text: str, record: Mapping[str, Any], key: str = "value") -> list[str]:
    """Fields of ``record`` whose ``key`` (``"value"`` or ``"canary"``) occurs in ``text`` in any canonical form."""
    found = []
    for fname, entry in record.items():
        if not isinstance(entry, Mapping) or key not in entry:
            continue
        if contains_value(text, entry[key]):
            found.append(fname)
    return found
