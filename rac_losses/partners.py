"""The row (micro-batch) form of the RAC losses.

verl and OpenRLHF split a prompt's rows across micro-batches and shuffle them, so a group loss cannot see
a whole group at once. Before the update, :func:`rac_losses.ranking_partners` /
:func:`rac_losses.corruption_partners` turn the batch's fresh confidences into a :class:`Partners` table:
for every row, its partners' (detached) confidences, the direction and weight of each comparison, and the
batch-global normaliser, and the loss options (link, scale, margin) the batch loss uses. Each micro-batch
then calls :func:`partner_loss` on its own rows only, with those recorded options.

Invariant (tested): for any split of the rows into micro-batches, the summed values of ``partner_loss``
equal the batch loss, and the summed gradients equal the batch loss's gradient, when the partners were
computed from the same confidences. Each comparison appears in the tables of both its rows; each side
reports half of its value and takes the gradient for its own row only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from rac_losses._validation import check_finite, check_float_tensor, check_same_device
from rac_losses._dtypes import working_dtype
from rac_losses.comparison import ComparisonTable, apply_link, check_loss_options

__all__ = ["Partners", "partner_loss"]


@dataclass(frozen=True)
class Partners:
    """Detached partner tables for ``N`` rows with up to ``P`` comparisons each.

    Attributes:
        confidence: ``[N, P]`` float, the partners' confidences (detached).
        sign: ``[N, P]`` float: ``+1`` the row should be more confident than the partner, ``-1`` less,
            ``0`` no comparison in this slot.
        weight: ``[N, P]`` float comparison weights (``0`` in empty slots), in the rewards' precision.
        extra_margin: ``[N, P]`` float, added to ``partner_loss``'s ``margin`` (severity-dependent margin).
        grad: ``[N, P]`` bool, whether the row itself receives gradient from the comparison.
        normaliser: 0-d float, the batch-global normaliser (sum of comparison weights for a mean, 1 for
            a sum). It is shared by every slice, so that micro-batch losses add up to the batch loss.
        link, scale, margin: the comparison loss the tables are a share of (as in
            :func:`rac_losses.ranking_group_loss`); :func:`partner_loss` applies exactly these.

    Index with a ``LongTensor`` of row indices, a bool mask ``[N]`` or a slice to get the rows of one
    micro-batch; ``.to(device)`` moves every table.
    """

    confidence: torch.Tensor
    sign: torch.Tensor
    weight: torch.Tensor
    extra_margin: torch.Tensor
    grad: torch.Tensor
    normaliser: torch.Tensor
    link: str
    scale: float
    margin: float

    #: the per-row tables (what :meth:`__getitem__` slices and ``to`` moves), in declaration order
    TABLES: ClassVar[tuple[str, ...]] = ("confidence", "sign", "weight", "extra_margin", "grad", "normaliser")

    def __post_init__(self) -> None:
        check_loss_options(self.link, self.scale, self.margin)

    @classmethod
    def from_table(
        cls, confidence: torch.Tensor, table: ComparisonTable, reduction: str, *, link: str, scale: float, margin: float
    ) -> Partners:
        """Partner tables for ``table``'s comparisons, with partner confidences read from ``confidence``."""
        c = confidence.detach().to(working_dtype(confidence))
        has = table.sign != 0
        return cls(
            confidence=torch.where(has, c[table.partner], c.new_zeros(())),
            sign=table.sign.to(c.dtype),
            weight=table.weight,
            extra_margin=table.extra_margin.to(c.dtype),
            grad=table.grad_mask(),
            normaliser=table.normaliser(reduction),
            link=link,
            scale=float(scale),
            margin=float(margin),
        )

    def __len__(self) -> int:
        return self.confidence.shape[0]

    def __getitem__(self, rows: torch.Tensor | slice) -> Partners:
        if not isinstance(rows, (torch.Tensor, slice)):
            raise TypeError(f"rows must be a 1-D LongTensor, a bool mask or a slice, got {type(rows).__name__}")
        if isinstance(rows, torch.Tensor) and rows.dtype == torch.bool and rows.shape != (len(self),):
            raise ValueError(f"a bool row mask must have shape [{len(self)}], got {tuple(rows.shape)}")
        if isinstance(rows, torch.Tensor) and (rows.is_floating_point() or rows.ndim != 1):
            raise TypeError(f"rows must be a 1-D LongTensor or bool mask, got {rows.dtype} of shape {tuple(rows.shape)}")
        if isinstance(rows, torch.Tensor):
            rows = rows.to(self.confidence.device)
        sliced = {name: getattr(self, name)[rows] for name in self.TABLES if name != "normaliser"}
        return replace(self, **sliced)

    def to(self, device: torch.device | str) -> Partners:
        """A copy with every table on ``device``."""
        return replace(self, **{name: getattr(self, name).to(device) for name in self.TABLES})


def partner_loss(confidence: torch.Tensor, partners: Partners) -> torch.Tensor:
    """The RAC loss of some rows against their detached partners (the micro-batch form).

    The comparison loss is the one the tables record (``partners.link``, ``.scale``, ``.margin``), so the
    micro-batch shares always add up to the batch loss they were built for.

    Args:
        confidence: ``[n]`` float, live confidences of the micro-batch's rows (any float dtype), of the
            same kind as the confidences the tables were built from.
        partners: the same rows' slice of a :class:`Partners` table (``partners_all[rows]``).

    Returns:
        0-d float32 (float64 for float64 input) tensor. Its value is this micro-batch's share of the batch
        loss (each comparison counts half on each side); its gradient is the batch loss's gradient with
        respect to these rows' confidences.

    Raises:
        TypeError / ValueError: non-float or non-1-D ``confidence``, a length other than ``len(partners)``,
        different devices, non-finite confidences on rows with comparisons.
    """
    if not isinstance(partners, Partners):
        raise TypeError(f"partners must be a Partners table, got {type(partners).__name__}")
    confidence = check_float_tensor(confidence, "confidence", [len(partners)])
    check_same_device([("confidence", confidence), ("partners", partners.confidence)])
    has = partners.sign != 0
    compared = has.any(1)  # rows without comparisons (padding, twins in the ranking table) may hold anything
    check_finite(confidence, "confidence", compared)
    c = confidence.to(working_dtype(confidence))
    c = torch.where(compared, c, c.new_zeros(()))
    gap = torch.where(has, partners.sign.to(c.dtype) * (c.unsqueeze(1) - partners.confidence.to(c.dtype)), c.new_zeros(()))
    weight = (partners.weight / partners.normaliser).to(c.dtype)  # normalised first, as in the batch form
    x = partners.scale * gap - (partners.margin + partners.extra_margin.to(c.dtype))
    term = torch.where(has, weight * apply_link(x, partners.link), c.new_zeros(()))
    grad = partners.grad.to(c.dtype)
    # value: half of each comparison on each side; gradient: the row's own side only
    return (grad * term + (0.5 - grad) * term.detach()).sum()
