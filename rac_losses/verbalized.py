"""Reading a confidence the model *states* in its response (``<confidence>0.8</confidence>``).

Two readers, both linear in the length of the text (a policy that spams digits or open tags never stalls a
reward worker; no pattern here can backtrack):

- ``style="strict"`` (default): the **last** ``<confidence>`` tag must hold one number in ``[0, 1]`` or a
  percentage in ``[1, 100]`` (``85%``, ``85 %``); anything else is ``None``, for the caller to penalise.
  A percentage below 1 (``0.8 %``) is refused as ambiguous: it almost always means 0.8, not 0.008.
- ``style="paper"``: as RAC's official release reads it. The **first** ``<confidence>`` tag (or, with no
  tag, a plain phrase such as ``Confidence: 70%``); commas are dropped; a range ``0.6 to 0.8`` (also
  ``-``, ``~``, en/em dash, ``and``) gives its midpoint; a trailing ``%`` divides by 100; what Python's
  ``float`` reads otherwise is the value; a value above 1 is divided by 100; the result is clamped to
  ``[0, 1]``. A tag whose content does not read gives ``None`` (no fall-back to the plain phrase). The
  release's quirks are kept on purpose, so that numbers match: ``0.8 %`` reads as 0.008, ``nan`` as 1.
"""

from __future__ import annotations

import math
import re
from typing import Final, NamedTuple

__all__ = [
    "CONFIDENCE_STYLES",
    "TagSpan",
    "first_tag",
    "parse_verbalized_confidence",
    "strip_verbalized_confidence",
    "tag_spans",
]

CONFIDENCE_STYLES: Final = ("strict", "paper")

_STRICT_NUMBER = re.compile(r"([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*(%?)")
_PLAIN_KEYWORD = re.compile(r"confidence|conf|certainty|probability", re.IGNORECASE)
_RANGE_WORDS = ("to", "and")
_RANGE_DASHES = "-~\u2013\u2014"
_PLAIN_PUNCTUATION = ":\uff1a=-"


class TagSpan(NamedTuple):
    """One ``<name>...</name>`` element: ``text[start:end]`` is the element, ``text[inner_start:inner_end]``
    its content (unstripped)."""

    start: int
    inner_start: int
    inner_end: int
    end: int


def tag_spans(text: str, name: str) -> list[TagSpan]:
    """The ``<name>...</name>`` elements of ``text`` from left to right, as a lazy regex
    ``<name>(.*?)</name>`` (case-insensitive, across lines) would find them, in linear time.

    An open tag pairs with the first close tag after it; an open tag without a close tag after it ends
    the search.
    """
    spans = []
    while (span := _next_tag(text, name, spans[-1].end if spans else 0)) is not None:
        spans.append(span)
    return spans


def first_tag(text: str, name: str) -> TagSpan | None:
    """The first ``<name>...</name>`` element of ``text`` (see :func:`tag_spans`), or ``None``."""
    return _next_tag(text, name, 0)


def _next_tag(text: str, name: str, position: int) -> TagSpan | None:
    # literal patterns only (a search for a fixed string is linear); re caches the compiled patterns
    opened = re.compile(re.escape(f"<{name}>"), re.IGNORECASE).search(text, position)
    closed = None if opened is None else re.compile(re.escape(f"</{name}>"), re.IGNORECASE).search(text, opened.end())
    return None if closed is None else TagSpan(opened.start(), opened.end(), closed.start(), closed.end())


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return text


def _digits_end(s: str, i: int) -> int:
    """End of the run of ASCII digits starting at ``i`` (``i`` itself when there is none)."""
    while i < len(s) and "0" <= s[i] <= "9":
        i += 1
    return i


def _number_end(s: str, i: int) -> int:
    """End of ``[0-9]+(\\.[0-9]+)?`` starting at ``i``, or -1 when ``s[i]`` is not a digit."""
    end = _digits_end(s, i)
    if end == i:
        return -1
    if end + 1 < len(s) and s[end] == "." and "0" <= s[end + 1] <= "9":
        end = _digits_end(s, end + 1)
    return end


def _space_end(s: str, i: int) -> int:
    while i < len(s) and s[i].isspace():
        i += 1
    return i


def _percent_number_end(s: str, i: int) -> int:
    """End of ``[0-9]+(\\.[0-9]+)?\\s*%?`` at ``i`` (trailing spaces kept only before a ``%``), or -1."""
    end = _number_end(s, i)
    if end < 0:
        return -1
    after = _space_end(s, end)
    return after + 1 if after < len(s) and s[after] == "%" else after


def _range_separator_end(s: str, i: int) -> int:
    if i < len(s) and s[i] in _RANGE_DASHES:
        return i + 1
    for word in _RANGE_WORDS:
        if s[i : i + len(word)].lower() == word:
            return i + len(word)
    return -1


def _first_range(s: str) -> tuple[str, str] | None:
    """The leftmost ``A <sep> B`` of two (percentage) numbers in ``s``, as the release's range pattern finds it."""
    i = 0
    while i < len(s):
        if not "0" <= s[i] <= "9":
            i += 1
            continue
        first_end = _percent_number_end(s, i)
        # the first number's spaces are given back before the separator
        number_end = first_end if s[first_end - 1 : first_end] == "%" else _number_end(s, i)
        separator = _range_separator_end(s, _space_end(s, number_end))
        if separator >= 0:
            second = _space_end(s, separator)
            second_end = _percent_number_end(s, second)
            if second_end >= 0:
                return s[i:number_end], s[second:second_end]
        # a match can also start inside this number's fractional part ("0.5.6 to 0.8" reads "5.6 to 0.8")
        i = _digits_end(s, i) + 1
    return None


def _paper_float(value: str) -> float | None:
    cleaned = value.strip().replace(",", "")
    if not cleaned:
        return None
    bounds = _first_range(cleaned)
    if bounds is not None:
        lower, upper = _paper_float(bounds[0]), _paper_float(bounds[1])
        if lower is not None and upper is not None:
            return (lower + upper) / 2.0
    scale = 1.0
    if cleaned.endswith("%"):
        cleaned = cleaned[:-1].strip()
        scale = 100.0
        if not cleaned:
            return None
    try:
        return float(cleaned) / scale
    except ValueError:
        return None


def _plain_phrase(text: str) -> str | None:
    """The number of the first ``confidence|conf|certainty|probability [:=-] <number>[%]`` phrase."""
    for keyword in _PLAIN_KEYWORD.finditer(text):
        i = _space_end(text, keyword.end())
        if i < len(text) and text[i] in _PLAIN_PUNCTUATION:
            i = _space_end(text, i + 1)
        end = _percent_number_end(text, i)
        if end >= 0:
            return text[i:end]
    return None


def _paper_raw(text: str) -> float | None:
    tag = first_tag(text, "confidence")
    if tag is not None:
        return _paper_float(text[tag.inner_start : tag.inner_end])
    phrase = _plain_phrase(text)
    return None if phrase is None else _paper_float(phrase)


def _paper_clamp(value: float) -> float:
    if value > 1.0:
        value /= 100.0
    if math.isnan(value):  # the release's min/max pass NaN through as their first argument
        return 1.0
    return max(0.0, min(1.0, value))


def _strict(text: str) -> float | None:
    spans = tag_spans(text, "confidence")
    if not spans:
        return None
    match = _STRICT_NUMBER.fullmatch(text[spans[-1].inner_start : spans[-1].inner_end].strip())
    if match is None:
        return None
    value = float(match.group(1))
    if match.group(2):
        return value / 100.0 if value == 0.0 or 1.0 <= value <= 100.0 else None
    return value if 0.0 <= value <= 1.0 else None


def parse_verbalized_confidence(text: str, *, style: str = "strict") -> float | None:
    """The confidence stated in ``text``, in ``[0, 1]``, or ``None`` when there is none that reads.

    Args:
        text: a response string.
        style: ``"strict"`` or ``"paper"``; see the module docstring for exactly what each reads.

    Raises:
        TypeError: ``text`` is not a str.
        ValueError: an unknown ``style``.
    """
    text = _check_text(text)
    if style == "strict":
        return _strict(text)
    if style == "paper":
        raw = _paper_raw(text)
        return None if raw is None else _paper_clamp(raw)
    raise ValueError(f"unknown style {style!r}; expected one of {', '.join(map(repr, CONFIDENCE_STYLES))}")


def strip_verbalized_confidence(text: str) -> str:
    """``text`` with every ``<confidence>...</confidence>`` element removed, so that an answer checker never
    reads the stated confidence as (part of) the answer. Linear time.

    Raises:
        TypeError: ``text`` is not a str.
    """
    text = _check_text(text)
    pieces, position = [], 0
    for span in tag_spans(text, "confidence"):
        pieces.append(text[position : span.start])
        position = span.end
    pieces.append(text[position:])
    return "".join(pieces)
