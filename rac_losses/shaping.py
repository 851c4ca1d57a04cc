"""The paper's formulation of RAC: reward bonuses on stated confidence, added before the advantage estimator.

As RAC's official release computes them (rows are rollouts; ``c`` the stated confidence, ``a`` the
accuracy the bonuses compare, the release's ``reward_acc``):

- :func:`ranking_bonus`: within each prompt's ``group``, row ``i`` (valid confidence) against every other
  row ``j`` of the group with a valid confidence and ``|a_i - a_j| >= 1e-8``:
  ``bonus_i = -mean_j max(0, -sign(a_i - a_j) * (c_i - c_j) + margin)``; 0 without comparisons.
- :func:`corruption_bonus`: a corrupted copy of a prompt is a prompt (group) of its own, ``level > 0``,
  sharing a ``pair`` id with the clean prompt (``level == 0``). Within one pair id the clean groups and
  the corrupted groups are each ordered by their first row and matched one to one in that order (a second
  corrupted copy of one clean prompt in the same batch finds no partner, as in the release); inside a
  matched couple the k-th clean row meets the k-th corrupted row. For each such (clean ``i``, corrupted
  ``j``) with ``a_i > 0.5`` and both confidences valid: ``delta = margin + alpha * level_j``,
  ``loss = max(0, c_j - c_i + delta)``, ``phi = (c_i - c_j) - loss``; ``bonus_i += phi``, ``bonus_j -= phi``.
- :func:`rac_bonus`: ``rank_coef * ranking_bonus + pair_coef * corruption_bonus`` (the release's 0.2 and
  0.3) and the metrics the release logs with them.

A missing confidence is a negative number or NaN (the reward hooks' ``-1``). Every function is vectorised
(no Python loop over groups or rows) and works on any device; float64 input gives float64 output, other
float input float32. Nothing is differentiable: these are rewards.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from rac_losses._dtypes import working_dtype
from rac_losses._validation import check_finite, check_float_tensor, check_index_tensor, check_number, check_same_device
from rac_losses.comparison import GroupLayout

__all__ = ["RACBonus", "corruption_bonus", "rac_bonus", "ranking_bonus"]

#: Accuracy differences below this are ties, as in the release.
ACCURACY_TIE = 1e-8


def _check_confidence(confidence: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N]`` float confidences as float64 and ``[N]`` bool: whether each is valid (finite, ``>= 0``)."""
    confidence = check_float_tensor(confidence, "confidence", [None])
    c = confidence.detach().to(torch.float64)
    valid = torch.isfinite(c) & (c >= 0)
    if bool((c == float("inf")).any()) or bool((valid & (c > 1)).any()):
        raise ValueError("confidence must lie in [0, 1] (a negative number or NaN marks a missing one), got values above 1")
    return torch.where(valid, c, c.new_zeros(())), valid


def _check_real(x: object, name: str, n: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name} must be a real tensor, got dtype {x.dtype}")
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape [{n}] (one value per row of confidence), got {tuple(x.shape)}")
    x = x.detach().to(torch.float64)
    check_finite(x, name)
    return x


#: Elements of a ``[groups, W, W]`` comparison chunk (float64: 256 KiB, within a core's L2 cache).
_CHUNK_ELEMENTS = 32768


def _hinge_sums(conf: torch.Tensor, correct: torch.Tensor, present: torch.Tensor, margin: float):
    """``[G, W]`` lines of groups -> each slot's ``(sum of hinges [G, W], comparisons [G, W])``."""
    # better[g, a, b]: row a beats row b by more than a tie (padding slots compare with nothing; a mask,
    # not NaN padding: NaN arithmetic is several times slower on CPUs). Row a's hinges against worse rows
    # are line a of `hinge`; against better rows, column a (the same pair seen from b).
    better = ((correct.unsqueeze(2) - correct.unsqueeze(1)) >= ACCURACY_TIE).logical_and_(present.unsqueeze(2))
    better.logical_and_(present.unsqueeze(1))
    hinge = (conf.unsqueeze(1) - conf.unsqueeze(2)).add_(margin).clamp_min_(0).mul_(better)
    return hinge.sum(2).add_(hinge.sum(1)), torch.count_nonzero(better, 2).add_(torch.count_nonzero(better, 1))


def _ranking(c: torch.Tensor, valid: torch.Tensor, acc: torch.Tensor, groups: GroupLayout, margin: float):
    """``(bonus [N], comparisons [N])``. Each group's valid rows are laid out in one line of a ``[K, W]``
    table and compared all against all by broadcasting, ``[G, W, W]`` for chunks of ``G`` groups."""
    layout = groups.restrict(valid)
    bonus, count = c.new_zeros(c.shape), torch.zeros(c.shape, dtype=torch.long, device=c.device)
    if layout.groups == 0:
        return bonus, count
    conf = layout.scatter(c[layout.rows], 0.0)
    correct = layout.scatter(acc[layout.rows], 0.0)
    present = layout.scatter(torch.ones_like(layout.rows, dtype=torch.bool), False)
    total = torch.empty_like(conf)
    n = torch.empty(conf.shape, dtype=torch.long, device=c.device)
    step = max(1, _CHUNK_ELEMENTS // layout.width**2)  # groups per chunk: [step, W, W] stays in cache
    for lo in range(0, layout.groups, step):
        sl = slice(lo, lo + step)
        total[sl], n[sl] = _hinge_sums(conf[sl], correct[sl], present[sl], margin)
    mean = torch.where(n > 0, -total / n.clamp_min(1), total.new_zeros(()))
    bonus[layout.rows] = layout.gather(mean)
    count[layout.rows] = layout.gather(n).long()
    return bonus, count


def _couples(groups: GroupLayout, pair: torch.Tensor, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (clean row, corrupted row) the release pairs, before the accuracy and confidence filter."""
    n = pair.shape[0]
    index = torch.arange(n, device=pair.device)
    order, k = groups.rows, groups.groups
    gid, rank = torch.empty_like(index), torch.empty_like(index)
    gid[order], rank[order] = groups.group, groups.position
    size = torch.bincount(groups.group, minlength=k)
    start = torch.cumsum(size, 0) - size
    first = order[start]  # [K] first row of each group
    g_pair, g_noisy = pair[first], level[first] > 0
    same = (pair == g_pair[gid]) & ((level > 0) == g_noisy[gid])
    if not bool(same.all()):
        bad = int((~same).nonzero()[0, 0])
        raise ValueError(
            f"rows of one group must share pair and clean/corrupted level; row {bad} differs from the first "
            f"row of its group (row {int(first[gid[bad]])})"
        )
    paired = g_pair >= 0
    # ordinal of each group among the groups of its (pair id, clean/corrupted) in order of first row
    bucket_key = g_pair * 2 + g_noisy.long()
    by_first = torch.argsort(first)
    _, bucket = torch.unique(bucket_key[by_first], return_inverse=True)
    in_bucket = torch.argsort(bucket, stable=True)
    bucket_sorted = bucket[in_bucket]
    bucket_start = torch.searchsorted(bucket_sorted, bucket_sorted, right=False)
    ordinal = torch.empty(k, dtype=torch.long, device=pair.device)
    ordinal[by_first[in_bucket]] = torch.arange(k, device=pair.device) - bucket_start
    # couple key: (pair id, ordinal); each clean group's key is unique, look corrupted groups' keys up
    _, pair_index = torch.unique(g_pair, return_inverse=True)
    key = pair_index * (k + 1) + ordinal
    clean_groups = (paired & ~g_noisy).nonzero().squeeze(1)
    clean_keys, clean_order = torch.sort(key[clean_groups])
    noisy_groups = (paired & g_noisy).nonzero().squeeze(1)
    if clean_groups.numel() == 0 or noisy_groups.numel() == 0:
        empty = index[:0]
        return empty, empty
    at = torch.searchsorted(clean_keys, key[noisy_groups]).clamp_max(clean_keys.numel() - 1)
    found = clean_keys[at] == key[noisy_groups]
    match = torch.full((k,), -1, dtype=torch.long, device=pair.device)
    match[noisy_groups[found]] = clean_groups[clean_order[at[found]]]
    # the k-th corrupted row meets the k-th row of the matched clean group
    partner_group = match[gid]
    has = (level > 0) & (partner_group >= 0)
    has = has & (rank < size[partner_group.clamp_min(0)])
    corrupted = index[has]
    clean = order[start[partner_group[has]] + rank[has]]
    return clean, corrupted


def _corruption(c, valid, acc, groups, pair, level, margin, alpha):
    clean, corrupted = _couples(groups, pair, level)
    counted = (acc[clean] > 0.5) & valid[clean] & valid[corrupted]
    clean, corrupted = clean[counted], corrupted[counted]
    gap = c[clean] - c[corrupted]
    loss = (-gap + margin + alpha * level[corrupted]).clamp_min(0)
    phi = gap - loss
    bonus = torch.zeros_like(c)
    bonus.index_add_(0, clean, phi)
    bonus.index_add_(0, corrupted, -phi)
    return bonus, gap


def _check_rows(confidence, correct, group):
    c, valid = _check_confidence(confidence)
    n = c.shape[0]
    acc = _check_real(correct, "correct", n)
    group = check_index_tensor(group, "group", [n])
    return c, valid, acc, group


def _check_pairs(pair, level, n):
    pair = check_index_tensor(pair, "pair", [n])
    level = _check_real(level, "level", n)
    if bool((level < 0).any()):
        raise ValueError("level must be >= 0 (0 for a clean prompt, the corruption level of a corrupted one)")
    return pair, level


def ranking_bonus(
    confidence: torch.Tensor, correct: torch.Tensor, group: torch.Tensor, *, margin: float = 0.05
) -> torch.Tensor:
    """The release's ranking bonus of every row (see the module docstring).

    Args:
        confidence: ``[N]`` float, stated confidences in ``[0, 1]``; negative or NaN = missing.
        correct: ``[N]`` real, the accuracy compared (0/1 or graded; the release's ``reward_acc``).
        group: ``[N]`` integer prompt ids (any values).
        margin: the hinge margin (0.05 in the release).

    Returns:
        ``[N]`` float (float64 for float64 ``confidence``, else float32), ``<= 0``; 0 for rows with a
        missing confidence or without comparisons.

    Raises:
        TypeError, ValueError: wrong types or shapes, non-finite ``correct``, a confidence above 1, a
        negative or non-finite ``margin``, inputs on different devices.
    """
    c, valid, acc, group = _check_rows(confidence, correct, group)
    margin = check_number(margin, "margin")
    check_same_device([("confidence", confidence), ("correct", correct), ("group", group)])
    bonus, _ = _ranking(c, valid, acc, GroupLayout.of(group), margin)
    return bonus.to(working_dtype(confidence))


def corruption_bonus(
    confidence: torch.Tensor,
    correct: torch.Tensor,
    group: torch.Tensor,
    pair: torch.Tensor,
    level: torch.Tensor,
    *,
    margin: float = 0.05,
    alpha: float = 0.1,
) -> torch.Tensor:
    """The release's clean-corrupted bonus of every row (see the module docstring).

    Args:
        confidence, correct, group: as in :func:`ranking_bonus`.
        pair: ``[N]`` integer ids shared by a clean prompt's rows and its corrupted copy's rows; negative =
            no pair.
        level: ``[N]`` real ``>= 0``: 0 on a clean prompt's rows, the corruption level (the release's
            ``severity / 5``) on a corrupted one's. All rows of one group share ``pair`` and clean/corrupted.
        margin, alpha: ``delta = margin + alpha * level`` (0.05 and 0.1 in the release).

    Returns:
        ``[N]`` float (dtype as in :func:`ranking_bonus`); 0 for rows without a counted pair.

    Raises:
        TypeError, ValueError: as :func:`ranking_bonus`, plus a negative or non-finite ``level``, rows of
        one group that disagree on ``pair`` or on being clean.
    """
    c, valid, acc, group = _check_rows(confidence, correct, group)
    pair, level = _check_pairs(pair, level, c.shape[0])
    margin, alpha = check_number(margin, "margin"), check_number(alpha, "alpha")
    check_same_device([("confidence", confidence), ("correct", correct), ("group", group), ("pair", pair), ("level", level)])
    bonus, _ = _corruption(c, valid, acc, GroupLayout.of(group), pair, level, margin, alpha)
    return bonus.to(working_dtype(confidence))


class RACBonus(NamedTuple):
    """What :func:`rac_bonus` returns; tensors ``[N]`` in the dtype of :func:`ranking_bonus`.

    Attributes:
        bonus: ``rank_coef * ranking + pair_coef * corruption``, to add to each row's reward (at the
            response's last token) before the advantage estimator.
        ranking: :func:`ranking_bonus`.
        corruption: :func:`corruption_bonus` (zeros when ``pair`` is not given).
        metrics: floats: ``rank/bonus_mean``, ``rank/comparisons`` (rows with at least one),
            ``pair/bonus_mean``, ``pair/count`` (pairs counted), ``pair/clean_minus_corrupted_confidence``
            (mean over counted pairs, 0 without any), ``bonus_mean``.
    """

    bonus: torch.Tensor
    ranking: torch.Tensor
    corruption: torch.Tensor
    metrics: dict[str, float]


def rac_bonus(
    confidence: torch.Tensor,
    correct: torch.Tensor,
    group: torch.Tensor,
    pair: torch.Tensor | None = None,
    level: torch.Tensor | None = None,
    *,
    rank_coef: float = 0.2,
    pair_coef: float = 0.3,
    rank_margin: float = 0.05,
    pair_margin: float = 0.05,
    alpha: float = 0.1,
) -> RACBonus:
    """Both bonuses with their coefficients, as the release adds them to the reward (defaults: its values).

    Args:
        confidence, correct, group: as in :func:`ranking_bonus`.
        pair, level: as in :func:`corruption_bonus`; both or neither (no corruption bonus).
        rank_coef, pair_coef: the coefficients of the two bonuses (``>= 0``).
        rank_margin, pair_margin, alpha: the margins of :func:`ranking_bonus` and :func:`corruption_bonus`.

    Returns:
        :class:`RACBonus`.

    Raises:
        TypeError, ValueError: as the two bonuses; only one of ``pair`` and ``level`` given.
    """
    if (pair is None) != (level is None):
        raise ValueError("pair and level must be given together (or neither, for no corruption bonus)")
    rank_coef, pair_coef = check_number(rank_coef, "rank_coef"), check_number(pair_coef, "pair_coef")
    c, valid, acc, group = _check_rows(confidence, correct, group)
    rank_margin = check_number(rank_margin, "rank_margin")
    check_same_device([("confidence", confidence), ("correct", correct), ("group", group)])
    groups = GroupLayout.of(group)
    ranking, comparisons = _ranking(c, valid, acc, groups, rank_margin)
    corruption, gap = torch.zeros_like(c), c[:0]
    if pair is not None:
        pair, level = _check_pairs(pair, level, c.shape[0])
        pair_margin, alpha = check_number(pair_margin, "pair_margin"), check_number(alpha, "alpha")
        check_same_device([("confidence", confidence), ("correct", correct), ("group", group), ("pair", pair), ("level", level)])
        corruption, gap = _corruption(c, valid, acc, groups, pair, level, pair_margin, alpha)
    bonus = rank_coef * ranking + pair_coef * corruption
    metrics = {
        "rank/bonus_mean": float(ranking.mean()) if ranking.numel() else 0.0,
        "rank/comparisons": float((comparisons > 0).sum()),
        "pair/bonus_mean": float(corruption.mean()) if corruption.numel() else 0.0,
        "pair/count": float(gap.numel()),
        "pair/clean_minus_corrupted_confidence": float(gap.mean()) if gap.numel() else 0.0,
        "bonus_mean": float(bonus.mean()) if bonus.numel() else 0.0,
    }
    dtype = working_dtype(confidence)
    return RACBonus(bonus.to(dtype), ranking.to(dtype), corruption.to(dtype), metrics)
