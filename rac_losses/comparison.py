"""The one comparison kernel both RAC losses share.

A *comparison* says "row a should be more confident than row b". Its loss is
``phi(scale * (c_a - c_b) - margin)`` with ``phi`` the link: ``softplus(-x)`` ("logistic", RankNet),
``relu(-x)`` ("hinge") or ``relu(-x) ** 2`` ("squared_hinge").

Comparisons are stored per row in a :class:`ComparisonTable`: for row ``i`` and slot ``j``,
``partner[i, j]`` is another row of the same group (or pair), ``sign[i, j]`` is ``+1`` when row ``i``
should be the more confident one, ``-1`` when it should be the less confident one and ``0`` when the slot
holds no comparison. Every comparison therefore appears twice, once from each side. The batch form reads
the ``+1`` slots only (each comparison once); the row form (:mod:`rac_losses.partners`) reads both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import torch
import torch.nn.functional as F

from rac_losses._dtypes import working_dtype
from rac_losses._validation import (
    check_choice,
    check_finite,
    check_float_tensor,
    check_index_tensor,
    check_mask,
    check_number,
    check_same_device,
    check_shape,
)

__all__ = ["LINKS", "REDUCTIONS", "ComparisonTable", "GroupLayout", "apply_link", "comparison_loss", "group_members"]

LINKS: Final = ("logistic", "hinge", "squared_hinge")
REDUCTIONS: Final = ("mean", "sum")


def apply_link(x: torch.Tensor, link: str) -> torch.Tensor:
    """Elementwise ``phi(x)``: the loss of a comparison whose scaled, margin-shifted gap is ``x``."""
    if link == "logistic":
        return F.softplus(-x)
    if link == "hinge":
        return F.relu(-x)
    if link == "squared_hinge":
        return F.relu(-x).square()
    check_choice(link, "link", LINKS)
    raise AssertionError("unreachable")


def check_loss_options(link: str, scale: float, margin: float) -> None:
    """Validate the options every comparison loss takes."""
    check_choice(link, "link", LINKS)
    check_number(scale, "scale", positive=True)
    check_number(margin, "margin")


@dataclass(frozen=True)
class ComparisonTable:
    """Every comparison of a batch, seen from each of its two rows.

    Attributes:
        partner: ``[N, P]`` int64 row index of the partner in each slot (``0`` where the slot is empty).
        sign: ``[N, P]`` float, ``+1`` / ``-1`` / ``0`` as described in the module docstring.
        weight: ``[N, P]`` float, the comparison's weight, ``0`` where the slot is empty.
        extra_margin: ``[N, P]`` float, margin added to the loss's own ``margin`` for this comparison.
        winner_grad: whether the more-confident-to-be side receives gradient.
        loser_grad: whether the less-confident-to-be side receives gradient.
    """

    partner: torch.Tensor
    sign: torch.Tensor
    weight: torch.Tensor
    extra_margin: torch.Tensor
    winner_grad: bool = True
    loser_grad: bool = True

    def grad_mask(self) -> torch.Tensor:
        """``[N, P]`` bool: whether the slot's own row receives gradient from its comparison."""
        wins = self.sign > 0
        return (wins & self.winner_grad) | ((self.sign < 0) & self.loser_grad)

    def normaliser(self, reduction: str) -> torch.Tensor:
        """The sum of comparison weights (``"mean"``; 1 when there are none) or 1 (``"sum"``)."""
        check_choice(reduction, "reduction", REDUCTIONS)
        one = torch.ones((), dtype=self.weight.dtype, device=self.weight.device)
        if reduction == "sum":
            return one
        total = (self.weight * (self.sign > 0)).sum()
        return torch.where(total > 0, total, one)


def group_members(key: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
    """For each eligible row, the indices of all eligible rows sharing its key (itself included).

    Vectorised: rows are sorted by key and scattered into a padded ``[K, P]`` table, ``P`` the size of
    the largest group, then each row reads its group's line.

    Args:
        key: ``[N]`` integer group (or pair) ids, any values.
        eligible: ``[N]`` bool; ineligible rows belong to no group and have no members.

    Returns:
        ``[N, P]`` int64, ``-1`` in padding slots and on every slot of ineligible rows. ``P`` is 0 when
        no row is eligible.
    """
    n = key.shape[0]
    layout = GroupLayout.of(key).restrict(eligible)
    table = layout.scatter(layout.rows, -1)
    members = torch.full((n, layout.width), -1, dtype=torch.long, device=key.device)
    members[layout.rows] = table[layout.group, :]
    return members


@dataclass(frozen=True)
class GroupLayout:
    """Where each row sits in a padded ``[K, W]`` table of its group (``K`` groups, ``W`` the size of the
    largest), rows of a group in row order.

    Attributes:
        rows: ``[M]`` int64, the rows laid out, grouped (by key, then row index).
        group: ``[M]`` int64, each of those rows' group, ``0..K-1`` (in key order).
        position: ``[M]`` int64, its slot in the group's line.
        groups: ``K``; width: ``W`` (both 0 when no row is laid out).
    """

    rows: torch.Tensor
    group: torch.Tensor
    position: torch.Tensor
    groups: int
    width: int

    @classmethod
    def of(cls, key: torch.Tensor) -> GroupLayout:
        """The layout of all rows by ``key`` ``[N]`` integer ids (any values): one stable sort."""
        order = torch.argsort(key, stable=True)
        return cls._grouped(order, key[order])

    def restrict(self, eligible: torch.Tensor) -> GroupLayout:
        """The same layout over the ``eligible`` ``[N]`` bool rows only (groups left empty are dropped,
        the others renumbered in order); no sort."""
        keep = eligible[self.rows]
        return self._grouped(self.rows[keep], self.group[keep])

    @classmethod
    def _grouped(cls, rows: torch.Tensor, key: torch.Tensor) -> GroupLayout:
        """From ``rows`` ``[M]`` already grouped and their ``key`` ``[M]`` (equal keys adjacent)."""
        m = rows.numel()
        if m == 0:
            return cls(rows, rows, rows, 0, 0)
        starts = torch.ones(m, dtype=torch.bool, device=rows.device)
        starts[1:] = key[1:] != key[:-1]
        group = torch.cumsum(starts, 0) - 1
        counts = torch.bincount(group)
        position = torch.arange(m, device=rows.device) - (torch.cumsum(counts, 0) - counts)[group]
        return cls(rows, group, position, counts.numel(), int(counts.max()))

    def scatter(self, values: torch.Tensor, fill: float | int) -> torch.Tensor:
        """``[K, W]``: ``values`` ``[M]`` (one per row of :attr:`rows`) in their slots, ``fill`` elsewhere."""
        table = values.new_full((self.groups, self.width), fill)
        table[self.group, self.position] = values
        return table

    def gather(self, table: torch.Tensor) -> torch.Tensor:
        """``[M]``: each row's slot of a ``[K, W]`` table (the inverse of :meth:`scatter`)."""
        return table[self.group, self.position]


def comparison_loss(
    confidence: torch.Tensor,
    table: ComparisonTable,
    *,
    link: str,
    scale: float,
    margin: float,
    reduction: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch form: every comparison of ``table`` once, gradient to the sides the table allows.

    Args:
        confidence: ``[N]`` float (upcast to at least float32).

    Returns:
        ``(loss, comparisons, satisfied)``: the reduced loss, the number of comparisons, and how many of
        them already clear the margin (``scale * (c_a - c_b) - margin > 0``); all 0-d tensors (no host
        synchronisation).
    """
    c = confidence.to(working_dtype(confidence))
    wins = table.sign > 0
    c_winner = c if table.winner_grad else c.detach()
    c_loser = c if table.loser_grad else c.detach()
    gap = torch.where(wins, c_winner.unsqueeze(1) - c_loser[table.partner], c.new_zeros(()))
    x = scale * gap - (margin + table.extra_margin.to(c.dtype))
    # normalise the weights before they meet the loss: dividing the sum by a tiny normaliser (reward
    # gaps near 0) would overflow the gradient
    weight = (table.weight * wins / table.normaliser(reduction)).to(c.dtype)
    loss = (weight * apply_link(x, link)).sum()
    return loss, wins.sum(), (wins & (x > 0)).sum()


def check_rows(
    confidence: object,
    values: object,
    values_name: str,
    key: object,
    key_name: str,
    valid: object,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate the per-row inputs of a comparison loss and return ``(confidence, values, key, valid)``.

    ``confidence`` ``[N]`` float, ``values`` ``[N]`` real (rewards or severities), ``key`` ``[N]`` integer
    ids, ``valid`` ``[N]`` bool/0-1 or ``None`` (all rows valid). Confidence and values must be finite on
    valid rows; invalid rows may hold anything.
    """
    confidence = check_float_tensor(confidence, "confidence", [None])
    n = confidence.shape[0]
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{values_name} must be a torch.Tensor, got {type(values).__name__}")
    if values.dtype == torch.bool or values.is_complex():
        raise TypeError(f"{values_name} must be a real-valued tensor, got dtype {values.dtype}")
    check_shape(values, values_name, [n])
    key = check_index_tensor(key, key_name, [n])
    valid = torch.ones(n, dtype=torch.bool, device=confidence.device) if valid is None else check_mask(valid, "valid", [n])
    check_same_device([("confidence", confidence), (values_name, values), (key_name, key), ("valid", valid)])
    unscored = torch.isnan(confidence) & valid
    if bool(unscored.any()):
        first = int(unscored.nonzero()[0])
        raise ValueError(
            f"confidence must be finite on valid rows, got NaN at row {first} (a row without response tokens, "
            "an empty mask, has no confidence: mark such rows invalid with valid=mask.any(-1))"
        )
    check_finite(confidence, "confidence", valid)
    if values.is_floating_point():
        check_finite(values, values_name, valid)
    # reward gaps and severity margins in at least the confidence's precision; never differentiated (a
    # reward with a graph would get a gradient through reward_gap weights, and partner tables would hold it)
    values = values.detach().to(torch.promote_types(values.dtype, working_dtype(confidence)))
    return confidence, values, key, valid
