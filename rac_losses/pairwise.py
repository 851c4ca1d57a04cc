"""The clean-corrupted pairwise loss: the same response is less confident on a more corrupted image."""

from __future__ import annotations

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

__all__ = ["check_severity", "corruption_partners", "corruption_table", "pairwise_corruption_loss"]


def corruption_table(
    severity: torch.Tensor,
    pair: torch.Tensor,
    valid: torch.Tensor,
    *,
    severity_margin: float,
    detach_clean: bool,
) -> ComparisonTable:
    """Comparisons of the corruption pairing: rows ``a``, ``b`` of one pair with ``severity_a < severity_b``.

    The extra margin of a comparison is ``severity_margin * (severity_b - severity_a)``. With
    ``detach_clean`` the less corrupted side of every comparison is treated as a constant.
    """
    check_number(severity_margin, "severity_margin")
    if not isinstance(detach_clean, bool):
        raise TypeError(f"detach_clean must be a bool, got {type(detach_clean).__name__}")
    s = severity.to(working_dtype(severity))
    s = torch.where(valid, s, s.new_zeros(()))
    # only pairs holding two severities compare anything: a pair id shared by many clean rows without
    # twins (a sentinel) would otherwise widen the table to [N, N]
    _, pair_index = torch.unique(pair, return_inverse=True)
    lowest = torch.full((int(pair_index.max()) + 1 if pair.numel() else 0,), float("inf"), dtype=s.dtype, device=s.device)
    highest = torch.full_like(lowest, -float("inf"))
    lowest = lowest.scatter_reduce(0, pair_index[valid], s[valid], "amin")
    highest = highest.scatter_reduce(0, pair_index[valid], s[valid], "amax")
    members = group_members(pair, valid & (highest[pair_index] > lowest[pair_index]))
    present = members >= 0
    partner = members.clamp_min(0)
    gap = torch.where(present, s[partner] - s.unsqueeze(1), s.new_zeros(()))  # > 0: the row is the cleaner side
    sign = (gap > 0).to(s.dtype) - (gap < 0).to(s.dtype)
    return ComparisonTable(
        partner=partner,
        sign=sign,
        weight=sign.abs(),
        extra_margin=severity_margin * gap.abs(),
        winner_grad=not detach_clean,
        loser_grad=True,
    )


def check_severity(severity: torch.Tensor, valid: torch.Tensor) -> None:
    if bool(((severity < 0) & valid).any()):
        raise ValueError("severity must be >= 0 (0 for the clean row, > 0 for corrupted twins)")


def pairwise_corruption_loss(
    confidence: torch.Tensor,
    severity: torch.Tensor,
    pair: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
    link: str = "logistic",
    scale: float = 1.0,
    margin: float = 0.0,
    severity_margin: float = 0.0,
    detach_clean: bool = True,
    reduction: str = "mean",
) -> torch.Tensor:
    """Clean-corrupted pairwise loss over all rows at once (the batch form).

    Rows sharing ``pair`` hold the same prompt and response under images of different ``severity``
    (0 = clean). For every two valid rows of a pair with ``severity_a < severity_b`` the comparison loss is
    ``phi(scale * (c_a - c_b) - margin - severity_margin * (severity_b - severity_a))``: the cleaner row must
    be the more confident, by a margin that may grow with the severity gap. Several severities form a
    monotone chain (every ordered couple is compared). Rows of equal severity are not compared.

    Args:
        confidence: ``[N]`` float sequence confidence (any float dtype; computed in float32, or float64).
        severity: ``[N]`` int or float, ``>= 0``, finite on valid rows.
        pair: ``[N]`` integer ids shared by a clean row and its corrupted twins.
        valid: ``[N]`` bool or 0/1; invalid rows take part in no comparison.
        link, scale, margin, reduction: as in :func:`rac_losses.ranking_group_loss`.
        severity_margin: ``>= 0``, extra margin per unit of severity gap.
        detach_clean: if true (default) only the more corrupted side of a comparison receives gradient,
            so the loss never raises the confidence of the clean answer (right or wrong) to win.

    Returns:
        0-d tensor (float32, or float64 for float64 confidence).

    Raises:
        TypeError / ValueError: as :func:`rac_losses.ranking_group_loss`, plus negative severities.
    """
    check_loss_options(link, scale, margin)
    check_choice(reduction, "reduction", REDUCTIONS)
    confidence, severity, pair, valid = check_rows(confidence, severity, "severity", pair, "pair", valid)
    check_severity(severity, valid)
    table = corruption_table(severity, pair, valid, severity_margin=severity_margin, detach_clean=detach_clean)
    loss, _, _ = comparison_loss(confidence, table, link=link, scale=scale, margin=margin, reduction=reduction)
    return loss


def corruption_partners(
    confidence: torch.Tensor,
    severity: torch.Tensor,
    pair: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
    link: str = "logistic",
    scale: float = 1.0,
    margin: float = 0.0,
    severity_margin: float = 0.0,
    detach_clean: bool = True,
    reduction: str = "mean",
) -> Partners:
    """Detached partner tables for the row form of :func:`pairwise_corruption_loss`.

    Use as :func:`rac_losses.ranking_partners`; arguments as in :func:`pairwise_corruption_loss`.
    """
    check_loss_options(link, scale, margin)
    check_choice(reduction, "reduction", REDUCTIONS)
    confidence, severity, pair, valid = check_rows(confidence, severity, "severity", pair, "pair", valid)
    check_severity(severity, valid)
    table = corruption_table(severity, pair, valid, severity_margin=severity_margin, detach_clean=detach_clean)
    return Partners.from_table(confidence, table, reduction, link=link, scale=scale, margin=margin)
