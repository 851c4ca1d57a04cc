"""The per-sample reward of RAC's official release, on its ``<think>/<answer>/<confidence>`` response schema.

:func:`paper_reward` scores one response as the release does; :data:`RESPONSE_SCHEMA` is the instruction
the release appends to every prompt and :func:`with_response_schema` appends it to a chat prompt. The
ranking and corruption bonuses on top of this reward are in :mod:`rac_losses.shaping`.

How a response is read (every step linear in its length):

- **answer**: the first ``<answer>...</answer>`` (stripped); without one, the text with every ``<...>`` tag
  removed, after a keyword ``final answer|answer|final|option|choice`` when there is one, and for multiple
  choice its option letter (or the one choice whose text it contains).
- **confidence**: :func:`~rac_losses.verbalized.parse_verbalized_confidence` with ``style="paper"``.
- **format_ok**: an answer tag and a confidence tag, a confidence that reads, a non-empty answer (for
  multiple choice exactly one letter, optionally as ``(A)``, ``A.`` or ``A)``), the answer tag before the
  confidence tag, and nothing but whitespace after the last ``</confidence>``.
- **acc**: multiple choice compares option letters (the first letter of the answer after ``answer:``,
  ``the answer is``, ``option`` ... prefixes, else a lone letter), else the answers' texts, else the
  ground-truth letter's choice text; free form compares case-insensitively, then as numbers
  (relative tolerance 1e-6). ``reward_acc = acc`` when ``format_ok``, else 0.
- **score_raw** ``= reward_acc - format_coef * (1 - format_ok) - tail_penalty_coef * min(1, tail / 128)``
  (``tail`` the length of the text after the last ``</confidence>``); the format coefficient goes linearly
  from ``format_warmup_start`` to ``format_coef`` over the first ``format_warmup_steps`` steps;
  **score** is ``score_raw`` clamped to ``[-1, 1]`` and mapped to ``[0, 1]``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from rac_losses._validation import check_number
from rac_losses.verbalized import first_tag, parse_verbalized_confidence, tag_spans

__all__ = ["RESPONSE_SCHEMA", "PaperReward", "paper_reward", "with_response_schema"]

#: The response-schema instruction RAC's release appends to the last user turn of every prompt.
RESPONSE_SCHEMA: Final = (
    "\nPlease reason step by step and follow this exact response schema:\n"
    "<think>\n"
    "your reasoning\n"
    "</think>\n"
    "<answer>your final answer</answer>\n"
    "<confidence>your confidence</confidence>\n"
    "If options are provided, put exactly one uppercase option letter inside <answer> with no explanation "
    "or punctuation.\n"
    "Otherwise, put only the final value or short expression inside <answer>.\n"
    "Inside <confidence>, output exactly one decimal number between 0.0 and 1.0.\n"
    "Start your response with <think> and do not output any text before <think> or after </confidence>."
)

_PLAIN_ANSWER = re.compile(r"(?:final\s+answer|answer|final|option|choice)\s*[:\uff1a=\-]?\s*(.+)", re.I | re.S)
_LONE_LETTER = re.compile(r"\b([A-Za-z])\b")
_ANSWER_PREFIXES = ("answer:", "the answer is", "the correct answer is")
_CHOICE_PREFIXES = ("option", "choice")


class PaperReward(NamedTuple):
    """What :func:`paper_reward` returns.

    Attributes:
        score: ``score_raw`` clamped to ``[-1, 1]`` and mapped to ``[0, 1]`` (the reward the release trains on).
        score_raw: ``reward_acc - format penalty - tail penalty``.
        acc: 1.0 when the extracted answer matches the ground truth, else 0.0 (whatever the format).
        reward_acc: ``acc`` when ``format_ok`` else 0.0: what the ranking and corruption bonuses compare.
        confidence: the stated confidence in ``[0, 1]``, or ``None`` when none reads.
        format_ok: whether the response follows the schema (see the module docstring).
    """

    score: float
    score_raw: float
    acc: float
    reward_acc: float
    confidence: float | None
    format_ok: bool


def _is_letter(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _answer_tag(text: str) -> str | None:
    tag = first_tag(text, "answer")
    return None if tag is None else text[tag.inner_start : tag.inner_end].strip()


def _single_option(payload: str) -> bool:
    """``payload`` is one letter, optionally ``(A)``, ``A.``, ``A)`` with spaces (the release's strict form)."""
    s, i = payload, 0

    def skip(j: int) -> int:
        while j < len(s) and s[j].isspace():
            j += 1
        return j

    i = skip(i)
    if i < len(s) and s[i] == "(":
        i = skip(i + 1)
    if not (i < len(s) and _is_letter(s[i])):
        return False
    i = skip(i + 1)
    if i < len(s) and s[i] in ".)":
        i = skip(i + 1)
    if i < len(s) and s[i] == ")":
        i = skip(i + 1)
    return i == len(s)


def _payload_ok(payload: str | None, multiple_choice: bool) -> bool:
    if payload is None or not payload.strip():
        return False
    return _single_option(payload.strip()) if multiple_choice else True


def _without_tags(text: str) -> str:
    """``text`` with each ``<...>`` (at least one character inside) replaced by a space, spaces collapsed."""
    pieces, position, i = [], 0, text.find("<")
    while i >= 0:
        close = text.find(">", i + 1)
        if close < 0:
            break
        if close > i + 1:
            pieces.extend((text[position:i], " "))
            position = close + 1
            i = text.find("<", position)
        else:
            i = text.find("<", i + 1)
    pieces.append(text[position:])
    return " ".join("".join(pieces).split())


def _normalise(s: str) -> str:
    s = s.strip()
    for prefix in _ANSWER_PREFIXES:
        if s.lower().startswith(prefix):
            s = s[len(prefix) :].strip()
    for prefix in _CHOICE_PREFIXES:
        if s.lower().startswith(prefix):
            s = s[len(prefix) :].lstrip(" :.-)")
    return s


def _option_letter(text: str) -> str | None:
    cleaned = _normalise(text)
    stripped = cleaned.strip()
    if stripped and _is_letter(stripped[0]):
        return stripped[0].upper()
    lone = _LONE_LETTER.search(cleaned)
    return lone.group(1).upper() if lone else None


def _choice_map(choices: object) -> dict[str, str]:
    if isinstance(choices, str):
        try:
            choices = json.loads(choices) if choices.strip() else None
        except json.JSONDecodeError:
            return {}
    if isinstance(choices, Mapping):
        return {str(k).strip().upper(): str(v).strip() for k, v in choices.items()}
    if isinstance(choices, (list, tuple)):
        return {chr(ord("A") + i): str(v).strip() for i, v in enumerate(choices)}
    return {}


def _plain_answer(text: str, multiple_choice: bool, choices: object) -> str | None:
    cleaned = _without_tags(text)
    if not cleaned:
        return None
    keyword = _PLAIN_ANSWER.search(cleaned)
    if keyword:
        cleaned = keyword.group(1).strip()
    if multiple_choice:
        letter = _option_letter(cleaned)
        if letter:
            return letter
        lowered = cleaned.lower()
        labels = [label for label, value in _choice_map(choices).items() if value and value.lower() in lowered]
        if len(labels) == 1:
            return labels[0]
    return cleaned or None


def _option_match(prediction: str, truth: str, choices: object) -> bool:
    p, g = _option_letter(prediction), _option_letter(truth)
    if p and g:
        return p == g
    p_norm, g_norm = _normalise(prediction).strip().lower(), _normalise(truth).strip().lower()
    if p_norm == g_norm:
        return True
    mapping = _choice_map(choices)
    return bool(g) and g in mapping and p_norm == mapping[g].strip().lower()


def _freeform_match(prediction: str, truth: str) -> bool:
    p, g = _normalise(prediction), _normalise(truth)
    if p.lower() == g.lower():
        return True
    try:
        return math.isclose(float(p.replace(",", "")), float(g.replace(",", "")), rel_tol=1e-6, abs_tol=1e-8)
    except ValueError:
        return False


def _format_coef(step: int | None, coef: float, warmup_steps: int, start: float) -> float:
    if warmup_steps <= 0 or step is None:
        return coef
    progress = min(max(float(step), 0.0), float(warmup_steps)) / warmup_steps
    return start + (coef - start) * progress


def paper_reward(
    solution: str,
    ground_truth: str,
    *,
    is_multiple_choice: bool = True,
    choices: Sequence[str] | Mapping[str, str] | str | None = None,
    step: int | None = None,
    format_coef: float = 0.3,
    format_warmup_steps: int = 10,
    format_warmup_start: float = 1.0,
    tail_penalty_coef: float = 0.2,
) -> PaperReward:
    """Score one response as RAC's official release does (see the module docstring for every rule).

    Args:
        solution: the response text.
        ground_truth: the reference answer (an option letter for multiple choice, or its text).
        is_multiple_choice: whether the question has options (the release's default: True).
        choices: the options, as a list (labelled A, B, ...), a ``{letter: text}`` mapping or its JSON.
        step: the training step, for the format coefficient's warm-up; ``None`` uses ``format_coef``.
        format_coef: the penalty for a response off the schema after the warm-up.
        format_warmup_steps: steps over which the penalty goes from ``format_warmup_start`` to ``format_coef``.
        format_warmup_start: the penalty at step 0.
        tail_penalty_coef: the penalty for 128 or more characters after the last ``</confidence>``.

    Returns:
        :class:`PaperReward`.

    Raises:
        TypeError: ``solution`` or ``ground_truth`` not a str, a coefficient not a number, ``step`` or
            ``format_warmup_steps`` not an int.
        ValueError: a negative or non-finite coefficient, a negative ``format_warmup_steps``.
    """
    for name, value in (("solution", solution), ("ground_truth", ground_truth)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    for name, value in (("step", step), ("format_warmup_steps", format_warmup_steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if format_warmup_steps < 0:
        raise ValueError(f"format_warmup_steps must be >= 0, got {format_warmup_steps}")
    format_coef = check_number(format_coef, "format_coef")
    format_warmup_start = check_number(format_warmup_start, "format_warmup_start")
    tail_penalty_coef = check_number(tail_penalty_coef, "tail_penalty_coef")

    multiple_choice = bool(is_multiple_choice)
    answer_tag, confidence_tag = first_tag(solution, "answer"), first_tag(solution, "confidence")
    payload = _answer_tag(solution)
    confidence = parse_verbalized_confidence(solution, style="paper")
    spans = tag_spans(solution, "confidence")
    tail = len(solution[spans[-1].end :].strip()) if spans else 0
    format_ok = (
        answer_tag is not None
        and confidence_tag is not None
        and confidence is not None
        and _payload_ok(payload, multiple_choice)
        and answer_tag.start <= confidence_tag.start
        and tail == 0
    )

    prediction = payload if payload is not None else _plain_answer(solution, multiple_choice, choices)
    acc = 0.0
    if prediction is not None:
        matched = _option_match(prediction, ground_truth, choices) if multiple_choice else _freeform_match(prediction, ground_truth)
        acc = 1.0 if matched else 0.0
    reward_acc = acc if format_ok else 0.0

    coef = _format_coef(step, format_coef, format_warmup_steps, format_warmup_start)
    tail_penalty = tail_penalty_coef * min(1.0, tail / 128.0) if tail else 0.0
    score_raw = reward_acc - coef * (1.0 - float(format_ok)) - tail_penalty
    score = (max(-1.0, min(1.0, score_raw)) + 1.0) / 2.0
    return PaperReward(score, score_raw, acc, reward_acc, confidence, format_ok)


def _append(text: str) -> str:
    text = text.strip()
    return text if RESPONSE_SCHEMA in text else text + RESPONSE_SCHEMA


def with_response_schema(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A copy of a chat prompt with :data:`RESPONSE_SCHEMA` appended to its last user turn.

    The turn's text is stripped and the instruction appended once (a prompt that already holds it is
    returned unchanged). A turn whose content is a list of parts (``{"type": "text", "text": ...}``,
    ``{"type": "image"}`` ...) gets it on its last text part. The input is never modified.

    Raises:
        TypeError: ``messages`` is not a sequence of mappings.
        ValueError: there is no user turn, or the last one has no text to append to.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of chat turns (dicts), got {type(messages).__name__}")
    if not all(isinstance(m, Mapping) for m in messages):
        raise TypeError("messages must be a list of chat turns (dicts with 'role' and 'content')")
    out = [dict(m) for m in messages]
    users = [i for i, m in enumerate(out) if m.get("role") == "user"]
    if not users:
        raise ValueError("messages must contain a user turn to append the response schema to")
    turn = out[users[-1]]
    content = turn.get("content")
    if isinstance(content, str):
        turn["content"] = _append(content)
        return out
    if isinstance(content, Sequence):
        parts = [dict(p) if isinstance(p, Mapping) else p for p in content]
        texts = [i for i, p in enumerate(parts) if isinstance(p, dict) and p.get("type") == "text"]
        if texts:
            parts[texts[-1]]["text"] = _append(str(parts[texts[-1]].get("text", "")))
            turn["content"] = parts
            return out
    raise ValueError("the last user turn of messages has no text content to append the response schema to")
