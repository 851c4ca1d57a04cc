"""verl reward hook: correctness from verl's default scorer plus RLCR's Brier term on a stated confidence.

Use it as ``reward.custom_reward_function.path=pkg://rac_losses.integrations.verl.reward`` and
``reward.custom_reward_function.name=compute_score``. The model must end its answer with
``<confidence>x</confidence>`` (``x`` in ``[0, 1]`` or a percentage such as ``85%``): say so in the prompt.

Correctness: every ``<confidence>...</confidence>`` span is removed from the response, the rest goes to
``verl.utils.reward_score.default_compute_score`` (so a stated ``0.9`` is never read as the answer), and
its result is mapped to 0 or 1: the ``acc`` entry of a dict result when present, else its ``score`` (or the
float result), counts as correct when ``>= 0.5``. That recovers the accuracy of every built-in scorer
(geo3k's ``0.9 * accuracy + 0.1 * format``, gsm8k's and MATH's 0/1, DAPO's ±1 with ``acc``); any format
bonus is dropped. The score is :func:`rac_losses.rewards.verbalized_reward`'s ``correct + brier``, in
``[0, 2]``, with a Brier term of 0 when the tag is missing or malformed. verl's reward loop keeps the returned
dict as each row's ``reward_extra_info``; the ``rac`` trainer ranks rollouts by its ``correct`` entry, not by
the score (see :mod:`.rows`).
"""

from __future__ import annotations

from typing import Any

from verl.utils.reward_score import default_compute_score

from rac_losses.rewards import MISSING_CONFIDENCE, strip_verbalized_confidence, verbalized_reward

__all__ = ["compute_score"]

_CORRECT_AT = 0.5


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **kwargs: Any
) -> dict[str, float]:
    """verl's ``compute_score`` signature; ``kwargs`` go on to ``default_compute_score``.

    Returns:
        ``{"score": correct + brier, "correct": 0.0 | 1.0, "confidence": x or -1.0, "confidence_valid":
        0.0 | 1.0, "brier": 1 - (correct - x)^2 or 0.0}``, all floats.

    Raises:
        NotImplementedError: verl has no default scorer for ``data_source``.
    """
    answer = strip_verbalized_confidence(solution_str)
    correct = _correctness(default_compute_score(data_source, answer, ground_truth, extra_info, **kwargs))
    reward = verbalized_reward(solution_str, correct)
    return {
        "score": reward.score,
        "correct": reward.correct,
        "confidence": MISSING_CONFIDENCE if reward.confidence is None else reward.confidence,
        "confidence_valid": float(reward.confidence is not None),
        "brier": reward.brier,
    }


def _correctness(result: float | dict[str, Any]) -> float:
    if isinstance(result, dict):
        value = result["acc"] if "acc" in result else result["score"]
    else:
        value = result
    return float(float(value) >= _CORRECT_AT)
