"""The ranking-aware group loss: within a prompt's group, a better rollout gets higher confidence."""

from __future__ import annotations

from typing import Final

import torch

from rac_losses._dtypes import working_dtype
from rac_losses._validation import check_choice, check_number
from rac_losses.comparison import (
    REDUCTIONS,
    ComparisonTable,
    check_loss_options,
    check_rows,
    comparison_loss,
    group_members,
)
from rac_losses.partners import Partners

__all__ = ["PAIR_WEIGHTS", "ranking_group_loss", "ranking_partners", "ranking_table"]

PAIR_WEIGHTS: Final = ("uniform", "reward_gap")


def ranking_table(
    reward: torch.Tensor,
    group: torch.Tensor,
    valid: torch.Tensor,
    *,
    pair_weight: str,
    tie_tolerance: float,
) -> ComparisonTable:
    """Comparisons of the ranking pairing: rows ``a``, ``b`` of one group with ``r_a - r_b > tie_tolerance``.

    Args:
        reward: ``[N]`` real, group: ``[N]`` integer ids, valid: ``[N]`` bool (already validated).
    """
    check_choice(pair_weight, "pair_weight", PAIR_WEIGHTS)
    check_number(tie_tolerance, "tie_tolerance")
    members = group_members(group, valid)
    present = members >= 0
    partner = members.clamp_min(0)
    r = reward.to(working_dtype(reward))
    r = torch.where(valid, r, r.new_zeros(()))  # invalid rows may hold NaN; they have no members anyway
    diff = torch.where(present, r.unsqueeze(1) - r[partner], r.new_zeros(()))
    sign = ((diff > tie_tolerance).to(r.dtype) - (diff < -tie_tolerance).to(r.dtype)) * present
    if pair_weight == "reward_gap" and not bool(torch.isfinite(diff).all()):
        raise ValueError(f"reward gaps overflow {r.dtype} with pair_weight='reward_gap'; rescale the rewards")
    weight = sign.abs() if pair_weight == "uniform" else diff.abs() * sign.abs()
    return ComparisonTable(partner=partner, sign=sign, weight=weight, extra_margin=torch.zeros_like(weight))


def ranking_group_loss(
    confidence: torch.Tensor,
    reward: torch.Tensor,
    group: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
    link: str = "logistic",
    scale: float = 2.0,
    margin: float = 0.0,
    pair_weight: str = "uniform",
    tie_tolerance: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Ranking-aware group loss over all rows at once (the batch form).

    For every pair of valid rows ``a``, ``b`` in the same group with ``reward[a] - reward[b] > tie_tolerance``
    the comparison loss is ``w * phi(scale * (c_a - c_b) - margin)``. Groups are padded into one
    ``[N, G_max]`` table (no Python loop over groups). Groups of one row, or whose rewards all tie, add
    nothing, like GRPO's zero-advantage groups.

    Args:
        confidence: ``[N]`` float sequence confidence (any float dtype; computed in float32, or float64).
        reward: ``[N]`` real rewards, higher is better; finite on valid rows.
        group: ``[N]`` integer group ids (any values; rows of one prompt share one).
        valid: ``[N]`` bool or 0/1; invalid rows (padding, corrupted twins) take part in no comparison.
        link: ``"logistic"`` (``softplus(-x)``), ``"hinge"`` (``relu(-x)``) or ``"squared_hinge"``.
        scale: inverse temperature ``> 0`` applied to the confidence gap (default 2, as
            :class:`rac_losses.RACConfig`'s ``rank_scale``).
        margin: ``>= 0``, the gap the better row must clear.
        pair_weight: ``"uniform"`` (every comparison weighs 1) or ``"reward_gap"`` (weight ``r_a - r_b``).
        tie_tolerance: ``>= 0``; reward differences up to it are ties and make no comparison.
        reduction: ``"mean"`` (weighted mean over comparisons, 0 when there are none) or ``"sum"``.

    Returns:
        0-d tensor (float32, or float64 for float64 confidence). Differentiable in ``confidence``.

    Raises:
        TypeError: non-tensor input, non-float ``confidence``, non-integer ``group``, bool ``reward``.
        ValueError: a shape other than ``[N]``, tensors on different devices, non-finite confidence or
            reward on a valid row, unknown ``link`` / ``pair_weight`` / ``reduction`` (the message lists the
            valid names), ``scale <= 0``, ``margin < 0``, ``tie_tolerance < 0``.
    """
    check_loss_options(link, scale, margin)
    check_choice(reduction, "reduction", REDUCTIONS)
    confidence, reward, group, valid = check_rows(confidence, reward, "reward", group, "group", valid)
    table = ranking_table(reward, group, valid, pair_weight=pair_weight, tie_tolerance=tie_tolerance)
    loss, _, _ = comparison_loss(confidence, table, link=link, scale=scale, margin=margin, reduction=reduction)
    return loss


def ranking_partners(
    confidence: torch.Tensor,
    reward: torch.Tensor,
    group: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
    link: str = "logistic",
    scale: float = 2.0,
    margin: float = 0.0,
    pair_weight: str = "uniform",
    tie_tolerance: float = 0.0,
    reduction: str = "mean",
) -> Partners:
    """Detached partner tables for the row form of :func:`ranking_group_loss`.

    Call once per batch, before the update, with the batch's confidences (for example from the old
    log-probs); then, per micro-batch of row indices ``idx``, ``partner_loss(confidence[idx], partners[idx])``.
    Arguments are as in :func:`ranking_group_loss`; the tables record ``link``, ``scale`` and ``margin``, and
    have ``N`` rows.
    """
    check_loss_options(link, scale, margin)
    check_choice(reduction, "reduction", REDUCTIONS)
    confidence, reward, group, valid = check_rows(confidence, reward, "reward", group, "group", valid)
    table = ranking_table(reward, group, valid, pair_weight=pair_weight, tie_tolerance=tie_tolerance)
    return Partners.from_table(confidence, table, reduction, link=link, scale=scale, margin=margin)
