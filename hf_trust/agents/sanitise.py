"""Deterministic redaction of profile values in free text, in their canonical surface forms.

A value can reappear in a message in another shape than it was stored: ``62000`` as "62,000" or "62 000",
a list as its single items, a nested record as its leaves.  :func:`value_forms` enumerates those shapes and
:func:`redact` removes every one of them; :func:`find_fields` is the same matcher used as a detector.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[REDACTED]"
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
    # Word boundaries only where the value itself starts/ends with a word character.
    alts = []
    for s in parts:
        # Any run of whitespace (line breaks included) where the value has a space: a value split over lines
        # or padded with spaces is still the value.
        esc = re.sub(r"(?:\\ )+", r"\\s+", re.escape(s))
        alts.append((r"(?<!\w)" if s[0].isalnum() else "") + esc + (r"(?!\w)" if s[-1].isalnum() else ""))
    return re.compile("|".join(alts), re.IGNORECASE)


def redact(text: str, values: Iterable[Any], replacement: str = REDACTED) -> str:
    """Remove every canonical form of every value from ``text``."""
    strings, numbers = set(), set()
    for v in values:
        s, n = value_forms(v)
        strings |= s
        numbers |= n
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
