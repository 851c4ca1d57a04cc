"""A reward file for ``--reward.remote_url path/to/reward.py``: correctness plus a calibrated confidence.

OpenRLHF loads ``reward_func(queries, prompts, labels, **kwargs)`` from this file and calls it with lists
of one sample each (query = the decoded prompt + response). Which reward depends on the run's formulation
(the launcher's environment variables, see :mod:`.options`):

- ``--rac.formulation reward`` (the default, and any run not started by ``rac-openrlhf``):
  :func:`paper_reward_func`, RAC's release's :func:`~rac_losses.rewards.paper_reward` with the run's
  ``--rac.reward.*`` options; the label's :class:`~.paper.RACLabel` attributes give the training step
  (format warm-up), the answer options and whether the question is multiple choice.
- ``--rac.formulation loss``: :func:`verbalized_reward_func`, below.

The loss formulation's reward is RLCR's
``correct + (1 - (correct - confidence)^2)`` (:func:`rac_losses.rewards.verbalized_reward`), in ``[0, 2]``;
a response without a readable ``<confidence>x</confidence>`` gets no Brier part.

Correctness, a deliberately simple rule: the response's answer is the content of its last ``\\boxed{...}``,
or else of its last ``<answer>...</answer>``; the label gets the same treatment (a bare label is taken as
is). Both are normalised (surrounding ``$`` and spaces, a trailing ``.``, case, inner spaces dropped) and
compared as numbers when both read as numbers (``0.50`` matches ``.5``; ``1/2`` does not), else as
strings. Replace the file's ``is_correct`` for anything richer (math-verify, an LLM judge).
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from rac_losses.integrations.openrlhf.options import formulation_from_env, paper_from_env
from rac_losses.integrations.openrlhf.paper import PaperSettings
from rac_losses.rewards import MISSING_CONFIDENCE, paper_reward, strip_verbalized_confidence, verbalized_reward

__all__ = ["extract_answer", "is_correct", "paper_reward_func", "response_text", "reward_func", "verbalized_reward_func"]

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_ASSISTANT = "<|im_start|>assistant"
_END_TOKENS = re.compile(r"(?:\s|<\|[A-Za-z_]+\|>|</s>)+\Z")  # <|im_end|>, <|endoftext|>, <|eot_id|>, </s>


def response_text(query: str, prompt: str) -> str:
    """The response part of ``query``: after ``prompt`` when the query starts with it, else after the last
    ``<|im_start|>assistant`` (Qwen's chat template; a VLM prompt's image tokens are expanded in the query),
    else the whole query."""
    if query.startswith(prompt):
        return query[len(prompt):]
    _, marker, tail = query.rpartition(_ASSISTANT)
    return tail if marker else query


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None  # unbalanced: no answer


def extract_answer(text: str) -> str | None:
    """The last ``\\boxed{...}`` content, else the last ``<answer>...</answer>`` content, else ``None``."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    tags = _ANSWER_TAG.findall(text)
    return tags[-1] if tags else None


def _normalise(answer: str) -> str:
    return re.sub(r"\s+", "", answer.strip().strip("$").strip().rstrip(".")).lower()


def is_correct(response: str, label: str) -> bool:
    """Whether the response's answer matches ``label`` (see the module docstring for the rule)."""
    answer = extract_answer(strip_verbalized_confidence(response))  # a stated confidence is never the answer
    if answer is None:
        return False
    expected = extract_answer(label)
    a, b = _normalise(answer), _normalise(label if expected is None else expected)
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)
    except ValueError:
        return a == b


def _check_lengths(queries: list, prompts: list, labels: list) -> None:
    if not len(queries) == len(prompts) == len(labels):
        raise ValueError(f"queries, prompts and labels differ in length: {len(queries)}, {len(prompts)}, {len(labels)}")


def _column(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def paper_reward_func(
    queries: list[str], prompts: list[str], labels: list[str], settings: PaperSettings | None = None
) -> dict[str, Any]:
    """The reward formulation's reward: :func:`~rac_losses.rewards.paper_reward` of each response.

    ``rewards`` = ``score`` (in ``[0, 1]``), ``scores`` = ``acc`` (what OpenRLHF's dynamic filtering reads);
    ``extra_logs``: ``acc``, ``reward_acc`` (what the bonuses compare), ``confidence``
    (``MISSING_CONFIDENCE``, -1, when none reads), ``format_ok`` and ``score_raw``. ``settings`` defaults to
    the run's (or the release's defaults outside ``rac-openrlhf``).

    Raises:
        ValueError: lists of different lengths.
    """
    _check_lengths(queries, prompts, labels)
    if settings is None:
        settings = paper_from_env() if formulation_from_env() == "reward" else PaperSettings()
    options = settings.reward_options()
    results = []
    for query, prompt, label in zip(queries, prompts, labels):
        mc = getattr(label, "multiple_choice", None)
        text = _END_TOKENS.sub("", response_text(query, prompt))  # the release scores the decoded text
        results.append(paper_reward(
            text, str(label), is_multiple_choice=settings.multiple_choice if mc is None else mc,
            choices=getattr(label, "choices", None), step=getattr(label, "step", None), **options,
        ))
    return {
        "rewards": _column([r.score for r in results]),
        "scores": _column([r.acc for r in results]),
        "extra_logs": {
            "acc": _column([r.acc for r in results]),
            "reward_acc": _column([r.reward_acc for r in results]),
            "confidence": _column([MISSING_CONFIDENCE if r.confidence is None else r.confidence for r in results]),
            "format_ok": _column([float(r.format_ok) for r in results]),
            "score_raw": _column([r.score_raw for r in results]),
        },
    }


def reward_func(queries: list[str], prompts: list[str], labels: list[str], **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's entry point: :func:`verbalized_reward_func` for a loss-formulation run, else :func:`paper_reward_func`."""
    if formulation_from_env() == "loss":
        return verbalized_reward_func(queries, prompts, labels)
    return paper_reward_func(queries, prompts, labels)


def verbalized_reward_func(queries: list[str], prompts: list[str], labels: list[str], **kwargs: Any) -> dict[str, Any]:
    """The loss formulation's reward, OpenRLHF's contract: ``{"rewards": [B], "scores": [B], "extra_logs": {name: [B]}}``.

    ``rewards`` = correct + Brier (in ``[0, 2]``), ``scores`` = correctness (0/1, what OpenRLHF's dynamic
    filtering reads); ``extra_logs``: ``correct``, ``confidence`` (``MISSING_CONFIDENCE``, -1, when missing), ``confidence_valid``
    (1 when a readable confidence was stated) and ``brier``.

    Raises:
        ValueError: lists of different lengths.
    """
    _check_lengths(queries, prompts, labels)
    results = [
        verbalized_reward(text, is_correct(text, str(label)))
        for text, label in ((response_text(q, p), lab) for q, p, lab in zip(queries, prompts, labels))
    ]
    column = _column
    return {
        "rewards": column([r.score for r in results]),
        "scores": column([r.correct for r in results]),
        "extra_logs": {
            "correct": column([r.correct for r in results]),
            "confidence": column([MISSING_CONFIDENCE if r.confidence is None else r.confidence for r in results]),
            "confidence_valid": column([float(r.confidence is not None) for r in results]),
            "brier": column([r.brier for r in results]),
        },
    }
