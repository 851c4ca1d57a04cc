"""Reward-side forms of RAC, for verbalized confidence or frameworks where only rewards can change.

- :func:`parse_verbalized_confidence` reads a response's stated confidence (``style="strict"``: the last
  ``<confidence>`` tag; ``"paper"``: as RAC's release reads it); :func:`strip_verbalized_confidence` removes
  every such tag (before an answer checker reads the text). Both live in :mod:`rac_losses.verbalized`.
- :func:`paper_reward`, :data:`RESPONSE_SCHEMA`, :func:`with_response_schema`: RAC's release's per-sample
  reward and response schema (:mod:`rac_losses.paper_reward`); its bonuses are in :mod:`rac_losses.shaping`.
- :func:`brier_reward`: ``1 - (correct - confidence)^2`` (RLCR's calibration reward).
- :func:`verbalized_reward`: correctness plus the Brier reward of a response's stated confidence, the
  reward the verl and OpenRLHF hooks return.
- :func:`rank_consistency_reward`: how well a rollout's confidence orders it against its group.
- :func:`corruption_consistency_reward`: the same for a clean row and its corrupted twins.

The consistency rewards are ``(right - wrong) / comparisons`` in ``[-1, 1]`` per row: ``+1`` when every
comparison the row takes part in is ordered the right way by confidence, ``-1`` when every one is
reversed, ``0`` for a row without comparisons; a confidence tie counts as neither. They are not
differentiable (rewards) and use the same pairings as the losses.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from rac_losses._dtypes import working_dtype
from rac_losses.comparison import ComparisonTable, check_rows
from rac_losses.pairwise import check_severity, corruption_table
from rac_losses.paper_reward import RESPONSE_SCHEMA, PaperReward, paper_reward, with_response_schema
from rac_losses.ranking import ranking_table
from rac_losses.verbalized import parse_verbalized_confidence, strip_verbalized_confidence

__all__ = [
    "MISSING_CONFIDENCE",
    "RESPONSE_SCHEMA",
    "PaperReward",
    "VerbalizedReward",
    "brier_reward",
    "corruption_consistency_reward",
    "paper_reward",
    "parse_verbalized_confidence",
    "rank_consistency_reward",
    "strip_verbalized_confidence",
    "verbalized_reward",
    "with_response_schema",
]

def brier_reward(confidence: float | torch.Tensor, correct: float | bool | torch.Tensor) -> float | torch.Tensor:
    """RLCR's calibration reward ``1 - (correct - confidence)^2``, in ``[0, 1]``.

    Args:
        confidence: a float in ``[0, 1]``, or a float tensor ``[N]`` of them.
        correct: 0/1 (bool, int or float; a graded score in ``[0, 1]`` is accepted too), the same shape.

    Returns:
        A float for scalar input, else a float tensor ``[N]``.

    Raises:
        TypeError / ValueError: mixed scalar and tensor input, mismatched shapes, values outside ``[0, 1]``.
    """
    if isinstance(confidence, torch.Tensor) or isinstance(correct, torch.Tensor):
        if not (isinstance(confidence, torch.Tensor) and isinstance(correct, torch.Tensor)):
            raise TypeError("confidence and correct must both be tensors or both be numbers")
        if confidence.shape != correct.shape:
            raise ValueError(f"correct must have the shape of confidence {tuple(confidence.shape)}, got {tuple(correct.shape)}")
        conf = confidence.to(working_dtype(confidence))
        target = correct.to(conf.dtype)
        for name, x in (("confidence", conf), ("correct", target)):
            if not bool(((x >= 0) & (x <= 1)).all()):
                raise ValueError(f"{name} must lie in [0, 1]")
        return 1.0 - (target - conf).square()
    for name, x in (("confidence", confidence), ("correct", correct)):
        if not isinstance(x, (int, float)) or not 0.0 <= float(x) <= 1.0:
            raise ValueError(f"{name} must be a number in [0, 1], got {x!r}")
    return 1.0 - (float(correct) - float(confidence)) ** 2


#: What reward hooks log as the confidence of a response without a readable one: frameworks stack each
#: logged value into a float column, and 0 is a valid confidence.
MISSING_CONFIDENCE = -1.0


class VerbalizedReward(NamedTuple):
    """What :func:`verbalized_reward` returns.

    Attributes:
        score: ``correct + brier``, in ``[0, 2]``.
        correct: the correctness score given, in ``[0, 1]``.
        confidence: the stated confidence, or ``None`` when missing or malformed.
        brier: ``1 - (correct - confidence)^2``, or 0 (the worst Brier reward) without a valid confidence.
    """

    score: float
    correct: float
    confidence: float | None
    brier: float


def verbalized_reward(text: str, correct: float | bool) -> VerbalizedReward:
    """Correctness plus the Brier reward of the last ``<confidence>`` tag in ``text`` (RLCR's reward; strict reading).

    A response without a readable confidence (see :func:`parse_verbalized_confidence`) gets a Brier term of
    0, the worst a stated confidence can earn, so leaving the tag out never pays.

    Args:
        text: the response (solution) string.
        correct: its correctness, 0/1 or a graded score in ``[0, 1]``.

    Raises:
        TypeError / ValueError: ``text`` not a str, ``correct`` not a number in ``[0, 1]``.
    """
    if isinstance(correct, bool):
        correct = float(correct)
    if not isinstance(correct, (int, float)) or not 0.0 <= float(correct) <= 1.0:
        raise ValueError(f"correct must be a number in [0, 1], got {correct!r}")
    confidence = parse_verbalized_confidence(text)
    brier = 0.0 if confidence is None else float(brier_reward(confidence, float(correct)))
    return VerbalizedReward(float(correct) + brier, float(correct), confidence, brier)


def _consistency(confidence: torch.Tensor, table: ComparisonTable) -> torch.Tensor:
    c = confidence.detach().to(working_dtype(confidence))
    order = torch.sign(c.unsqueeze(1) - c[table.partner])
    has = table.sign != 0
    agreement = torch.where(has, table.sign.to(c.dtype) * order, c.new_zeros(())).sum(1)
    count = has.sum(1)
    return torch.where(count > 0, agreement / count.clamp_min(1), c.new_zeros(()))


def rank_consistency_reward(
    confidence: torch.Tensor,
    reward: torch.Tensor,
    group: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
    tie_tolerance: float = 0.0,
) -> torch.Tensor:
    """Per row, how consistently its confidence orders it against the other rows of its group.

    Args:
        confidence: ``[N]`` float (for example verbalized confidences), reward: ``[N]`` real,
        group: ``[N]`` integer ids, valid: ``[N]`` bool or ``None``; ``tie_tolerance`` as in the loss.

    Returns:
        ``[N]`` float32 in ``[-1, 1]``, 0 for rows without comparisons.
    """
    confidence, reward, group, valid = check_rows(confidence, reward, "reward", group, "group", valid)
    table = ranking_table(reward, group, valid, pair_weight="uniform", tie_tolerance=tie_tolerance)
    return _consistency(confidence, table)


def corruption_consistency_reward(
    confidence: torch.Tensor,
    severity: torch.Tensor,
    pair: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per row, how consistently its confidence falls with corruption against its pair's other rows.

    Args:
        confidence: ``[N]`` float, severity: ``[N]`` int or float ``>= 0`` (0 = clean),
        pair: ``[N]`` integer ids, valid: ``[N]`` bool or ``None``.

    Returns:
        ``[N]`` float32 in ``[-1, 1]``, 0 for rows without comparisons.
    """
    confidence, severity, pair, valid = check_rows(confidence, severity, "severity", pair, "pair", valid)
    check_severity(severity, valid)
    table = corruption_table(severity, pair, valid, severity_margin=0.0, detach_clean=False)
    return _consistency(confidence, table)
