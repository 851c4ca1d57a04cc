"""The paper's formulation in verl (``+rac.formulation=reward``, the default of ``trainer.v1.trainer_mode=rac``).

RAC's release shapes the reward: each response's reward (by default :mod:`.paper_reward`'s per-sample
reward) gets ``rank_coef * ranking_bonus + pair_coef * corruption_bonus`` (:func:`rac_losses.rac_bonus`)
at its last token, after verl's reward and before its advantage estimator; the actor then trains with
verl's own loss. This module reads the options and does the shaping on plain tensors and lists (the
trainer moves them to and from TransferQueue); it imports nothing of verl's.

Options: :class:`~rac_losses.integrations.paper_settings.PaperSettings`, with these differences in verl:

- ``corruption.source``: ``generate`` (the default) puts a corrupted copy after each selected image prompt
  of the training set (:mod:`.copies`; ``corruption.fraction``, ``names``, ``severities``, ``weights``,
  ``seed``); ``dataset`` reads a paired dataset's rows, columns ``pair_id`` (shared by a clean row and its
  corrupted copy; negative: no pair), ``is_noisy`` and ``corruption_level`` (``severity / 5``), as
  ``rac-corrupt pairs`` writes them. Either way the rows of a pair are sampled into one batch
  (:mod:`.sampler`) and verl hands the pair columns to TransferQueue as per-row fields; a batch whose rows
  lack them gets the ranking bonus only. Validation sets are never given copies.
- ``reward.*`` go to the default reward function as its ``reward_kwargs``; with a reward function of the
  user's own (``reward.custom_reward_function.path`` set) they are refused (set that function's
  ``reward_kwargs`` instead). A user's function must return ``confidence`` and ``reward_acc`` (or ``acc``)
  in its dict for every response.
- ``schema`` (true) appends the schema through verl's dataset class (:mod:`.dataset`); a dataset class of
  the user's own (``data.custom_cls``) then needs ``+rac.schema=false`` and the schema in its prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rac_losses import rac_bonus
from rac_losses.integrations.paper_settings import PaperSettings, paper_option_names
from rac_losses.metrics import auroc, calibration_summary

__all__ = [
    "CONFIDENCE_KEY",
    "CORRECT_KEYS",
    "LEVEL_KEY",
    "PAIR_COLUMNS",
    "REWARD_FUNCTION",
    "PaperRows",
    "level_name",
    "paper_rows",
    "paper_settings",
    "shape_scores",
    "validation_metrics",
]

#: The default reward function: (``reward.custom_reward_function.path``, ``.name``).
REWARD_FUNCTION = ("pkg://rac_losses.integrations.verl.paper_reward", "compute_score")
#: The dataset columns of a paired dataset (``rac-corrupt pairs``), read as per-row TransferQueue fields.
PAIR_COLUMNS = ("pair_id", "is_noisy", "corruption_level")
#: ``reward_extra_info`` keys: the stated confidence, and the accuracy the bonuses compare (in order).
CONFIDENCE_KEY = "confidence"
CORRECT_KEYS = ("reward_acc", "acc")
#: The ``extra_info`` and ``reward_extra_info`` key of a validation row's corruption level.
LEVEL_KEY = "corruption_level"


def paper_settings(options: Mapping[str, Any], *, own_reward_function: bool) -> PaperSettings:
    """The run's :class:`PaperSettings` from the flat dotted ``rac`` options (``formulation`` removed).

    Args:
        options: e.g. ``{"rank_coef": 0.2, "corruption.source": "off"}``.
        own_reward_function: the user set ``reward.custom_reward_function.path``.

    Raises:
        ValueError: an option the reward formulation does not take (named, with the valid ones), a bad value
            (named), ``reward.*`` with the user's own reward function.
    """
    names = paper_option_names()
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(
            f"+rac.{', +rac.'.join(unknown)}: not option(s) of rac.formulation=reward (the default); options of the "
            f"loss formulation need +rac.formulation=loss. The reward formulation's options: {', '.join(names)}"
        )
    reward = sorted(k for k in options if k.startswith("reward."))
    if reward and own_reward_function:
        raise ValueError(
            f"rac.{', rac.'.join(reward)} configure the default reward function, but "
            "reward.custom_reward_function.path names your own: set its reward_kwargs instead"
        )
    return PaperSettings.from_options(options)


@dataclass(frozen=True)
class PaperRows:
    """One step's rows as :func:`rac_losses.rac_bonus` reads them, in the batch's order.

    Attributes:
        confidence: ``[N]`` float64 stated confidences, -1 when missing and on verl's padding rows.
        correct: ``[N]`` float64, ``reward_acc`` (else ``acc``): what the bonuses compare.
        group: ``[N]`` int64 prompt ids (from ``uid``).
        order: ``[N]`` int64, a permutation putting each group's rows in session order (``session_id``: the
            k-th rollout of a clean prompt meets the k-th of its corrupted copy), groups by first row.
        pair: ``[N]`` int64 pair ids (-1: none, and on padding rows), or ``None`` without pair columns.
        level: ``[N]`` float64 corruption levels (0 clean), or ``None`` without pair columns.
        valid: ``[N]`` bool, false on verl's padding rows.
        acc: ``[N]`` float64 0/1 correctness for the calibration metrics (``acc``, else a 0/1
            ``reward_acc``), or ``None``.
        format_ok: ``[N]`` float64 0/1 or ``None``.
    """

    confidence: torch.Tensor
    correct: torch.Tensor
    group: torch.Tensor
    order: torch.Tensor
    pair: torch.Tensor | None
    level: torch.Tensor | None
    valid: torch.Tensor
    acc: torch.Tensor | None
    format_ok: torch.Tensor | None


def _info_column(infos: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> torch.Tensor | None:
    for key in keys:
        if all(key in info for info in infos):
            return torch.tensor([float(info[key]) for info in infos], dtype=torch.float64)
    return None


def _required(infos: Sequence[Mapping[str, Any]], keys: Sequence[str], valid: torch.Tensor) -> torch.Tensor:
    real = [info for info, v in zip(infos, valid.tolist()) if v]
    for key in keys:
        missing = sum(key not in info for info in real)
        if missing == 0:
            return torch.tensor([float(info.get(key, -1.0)) for info in infos], dtype=torch.float64)
    raise KeyError(
        f"rac: the reward function returned no {' or '.join(repr(k) for k in keys)} for {missing} of {len(real)} "
        "responses; the paper's bonuses need 'confidence' and 'reward_acc' (or 'acc') in every response's dict "
        f"(the default reward function, {REWARD_FUNCTION[0]}, returns them)"
    )


def paper_rows(
    uid: Sequence[Any],
    session: Sequence[Any],
    extra_fields: Sequence[Mapping[str, Any] | None],
    padding: Sequence[bool],
    pair_columns: Mapping[str, Sequence[Any]] | None = None,
) -> PaperRows:
    """Read the rows from verl's per-row fields.

    Args:
        uid: ``N`` prompt ids; session: ``N`` rollout indices within the prompt (``session_id``).
        extra_fields: ``N`` agent-loop ``extra_fields`` dicts with verl's ``reward_extra_info`` (the reward
            function's dict).
        padding: ``N`` flags, true for verl's synthetic padding rows (copies of a real row: read nothing).
        pair_columns: ``pair_id``, ``is_noisy`` and ``corruption_level`` per row (``None`` values: a row without
            pair), or ``None``.

    Raises:
        KeyError: a real row's ``reward_extra_info`` lacks ``confidence``, or both ``reward_acc`` and ``acc``.
        ValueError: lengths differ; a noisy row with ``corruption_level <= 0``, or a clean one with a level.
    """
    n = len(uid)
    if len(session) != n or len(extra_fields) != n or len(padding) != n:
        raise ValueError(f"uid ({n}), session ({len(session)}), extra_fields ({len(extra_fields)}) and padding "
                         f"({len(padding)}) must describe the same rows")
    valid = ~torch.tensor([bool(p) for p in padding], dtype=torch.bool).reshape(n)
    infos = [(e or {}).get("reward_extra_info") or {} for e in extra_fields]
    confidence = torch.where(valid, _required(infos, (CONFIDENCE_KEY,), valid), -1.0)
    correct = torch.where(valid, _required(infos, CORRECT_KEYS, valid), 0.0)
    keys = np.asarray([str(u) for u in uid], dtype=object)
    _, first, group = np.unique(keys, return_index=True, return_inverse=True)
    order = np.lexsort((np.asarray([int(s) for s in session]), first[group]))
    pair = level = None
    if pair_columns is not None:
        # None: a row of a file without the columns, concatenated with a paired one (verl fills them with None)
        pair = torch.tensor([-1 if p is None else int(p) for p in pair_columns["pair_id"]], dtype=torch.long)
        noisy = torch.tensor([bool(x) for x in pair_columns["is_noisy"]], dtype=torch.bool)
        stated = torch.tensor([float(x or 0.0) for x in pair_columns["corruption_level"]], dtype=torch.float64)
        if bool((noisy & (stated <= 0) & valid).any()) or bool((~noisy & (stated != 0) & valid).any()):
            raise ValueError(
                "the dataset's corruption_level must be > 0 on rows with is_noisy=true and 0 on the others "
                "(as rac-corrupt pairs writes them)"
            )
        pair = torch.where(valid, pair, -1)
        level = torch.where(noisy & valid, stated, 0.0)
    acc = _info_column(infos, ("acc",))
    if acc is None and bool(((correct == 0) | (correct == 1)).all()):
        acc = correct
    return PaperRows(
        confidence=confidence, correct=correct, group=torch.from_numpy(group.astype(np.int64)).reshape(n),
        order=torch.from_numpy(order.astype(np.int64)), pair=pair, level=level, valid=valid,
        acc=None if acc is None else torch.where(valid, acc, 0.0), format_ok=_info_column(infos, ("format_ok",)),
    )


def _calibration(prefix: str, rows: PaperRows, keep: torch.Tensor) -> dict[str, float]:
    if rows.acc is None or not bool(keep.any()):
        return {}
    summary = calibration_summary(
        rows.confidence[keep], rows.acc[keep], group=rows.group[keep],
        format_ok=None if rows.format_ok is None else rows.format_ok[keep],
    )
    return {f"{prefix}{k}": v for k, v in summary.items()}


def shape_scores(
    scores: torch.Tensor, lengths: torch.Tensor, rows: PaperRows, settings: PaperSettings
) -> tuple[torch.Tensor, dict[str, float]]:
    """The token-level rewards with the paper's bonuses at each response's last token, and ``rac/*`` metrics.

    Args:
        scores: ``[N, T]`` float token-level rewards (verl's ``rm_scores``, right-padded).
        lengths: ``[N]`` response lengths; row ``i``'s bonus goes to ``scores[i, lengths[i] - 1]`` (where verl
            puts the reward); a row of length 0 gets none.
        rows: :func:`paper_rows` of the same rows.
        settings: the run's options (pairs only when ``rows`` has pair columns and :attr:`PaperSettings.pairs`).

    Returns:
        ``(shaped, metrics)``: ``shaped`` like ``scores`` (same dtype), ``metrics`` floats keyed ``rac/...``:
        :func:`rac_losses.rac_bonus`'s, ``pair/clean_prompts``, ``pair/corrupted_prompts``,
        ``pair/unmatched_prompts`` (prompts of a pair whose other side is not in the batch),
        ``bonus/ranking_mean``, ``bonus/corruption_mean``, ``clean|corrupted/confidence_mean``,
        ``reward_mean``, ``shaped_reward_mean`` and :func:`~rac_losses.metrics.calibration_summary` of the
        clean rows (``calibration/*``) and of the corrupted ones (``corrupted/calibration/*``); padding rows
        excluded.

    Raises:
        ValueError: shapes that disagree, or what :func:`rac_losses.rac_bonus` refuses (e.g. rows of one
            prompt with different pair ids).
    """
    n = rows.group.shape[0]
    if scores.ndim != 2 or scores.shape[0] != n or lengths.shape != (n,):
        raise ValueError(f"scores {tuple(scores.shape)} and lengths {tuple(lengths.shape)} must describe {n} rows")
    o = rows.order
    with_pairs = settings.pairs and rows.pair is not None
    result = rac_bonus(
        rows.confidence[o], rows.correct[o], rows.group[o],
        rows.pair[o] if with_pairs else None, rows.level[o] if with_pairs else None, **settings.bonus_options(),
    )
    bonus, ranking, corruption = (torch.empty_like(t) for t in (result.bonus, result.ranking, result.corruption))
    bonus[o], ranking[o], corruption[o] = result.bonus, result.ranking, result.corruption
    last = lengths.long() - 1
    placed = rows.valid & (last >= 0)
    idx = torch.nonzero(placed).squeeze(1)
    shaped = scores.clone()
    shaped[idx, last[idx]] = (scores[idx, last[idx]].double() + bonus[idx].double()).to(scores.dtype)

    valid = rows.valid
    corrupted = rows.level > 0 if with_pairs else torch.zeros(n, dtype=torch.bool)
    metrics = {f"rac/{k}": v for k, v in result.metrics.items()}
    if with_pairs:
        clean_paired = valid & (rows.pair >= 0) & ~corrupted
        metrics["rac/pair/clean_prompts"] = float(rows.group[clean_paired].unique().numel())
        metrics["rac/pair/corrupted_prompts"] = float(rows.group[corrupted].unique().numel())
        clean_pairs, corrupted_pairs = set(rows.pair[clean_paired].tolist()), set(rows.pair[corrupted].tolist())
        unmatched = clean_pairs ^ corrupted_pairs  # a pair id with only its clean or only its corrupted side here
        alone = (clean_paired | corrupted) & torch.isin(rows.pair, torch.tensor(sorted(unmatched), dtype=torch.long))
        metrics["rac/pair/unmatched_prompts"] = float(rows.group[alone].unique().numel())
    metrics["rac/bonus/ranking_mean"] = float(ranking[valid].mean()) if bool(valid.any()) else 0.0
    metrics["rac/bonus/corruption_mean"] = float(corruption[valid].mean()) if bool(valid.any()) else 0.0
    has = valid & (rows.confidence >= 0)
    for name, mask in (("clean", has & ~corrupted), ("corrupted", has & corrupted)):
        if bool(mask.any()):
            metrics[f"rac/{name}/confidence_mean"] = float(rows.confidence[mask].mean())
    if bool(valid.any()):
        metrics["rac/reward_mean"] = float(scores[valid].double().sum(-1).mean())
        metrics["rac/shaped_reward_mean"] = float(shaped[valid].double().sum(-1).mean())
    metrics.update(_calibration("rac/calibration/", rows, valid & ~corrupted))
    metrics.update(_calibration("rac/corrupted/calibration/", rows, valid & corrupted))
    return shaped, metrics


def level_name(level: float) -> str:
    """``0 -> "clean"``, ``0.4 -> "T0.4"``: a corruption level as the paper's test-set files label it."""
    if level <= 0:
        return "clean"
    return f"T{level:.1f}" if round(level, 1) == level else f"T{level:g}"


def validation_metrics(data_sources: Sequence[str], infos: Mapping[str, Sequence[Any]]) -> dict[str, float]:
    """The release's calibration metrics of a validation run, per data source, per corruption level and overall.

    Args:
        data_sources: ``n`` data sources (verl's ``data_source`` of each validation response).
        infos: verl's validation ``reward_extra_infos_dict``: per key, ``n`` values (``None`` where a response
            lacked the key); read: ``confidence`` and ``acc`` (else a 0/1 ``reward_acc``), ``format_ok``, and
            ``corruption_level`` (the row's, which the trainer puts into ``extra_info`` and the default reward
            function returns; ``None`` or absent: clean).

    Returns:
        For each group of responses, ``val-rac/{group}/{metric}``: :func:`~rac_losses.metrics.calibration_summary`
        (responses with a confidence), ``auroc`` where both outcomes occur, and ``accuracy`` over every
        response. Groups: each data source, ``all``, and when any response is corrupted, each
        ``{source}@{level}`` and ``all@{level}`` (levels named by :func:`level_name`: ``clean``, ``T0.2``, ...).
        Empty without ``confidence`` and a 0/1 accuracy.
    """
    n = len(data_sources)
    acc_key = next((k for k in ("acc", "reward_acc") if k in infos and len(infos[k]) == n), None)
    if acc_key is None or CONFIDENCE_KEY not in infos or len(infos[CONFIDENCE_KEY]) != n:
        return {}
    known = [i for i in range(n) if infos[CONFIDENCE_KEY][i] is not None and infos[acc_key][i] is not None]
    confidence = torch.tensor([float(infos[CONFIDENCE_KEY][i]) for i in known], dtype=torch.float64)
    acc = torch.tensor([float(infos[acc_key][i]) for i in known], dtype=torch.float64)
    if not bool(((acc == 0) | (acc == 1)).all()):
        return {}
    fmt = infos.get("format_ok")
    fmt_t = None
    if fmt is not None and len(fmt) == n and all(fmt[i] is not None for i in known):
        fmt_t = torch.tensor([float(fmt[i]) for i in known], dtype=torch.float64)
    sources = np.asarray([str(data_sources[i]) for i in known], dtype=object)
    groups = {name: np.flatnonzero(sources == name) for name in sorted(set(sources.tolist()))}
    groups["all"] = np.arange(len(known))
    stated = infos.get(LEVEL_KEY)
    if stated is not None and len(stated) == n:
        levels = np.asarray([level_name(float(stated[i] or 0.0)) for i in known], dtype=object)
        if bool((levels != "clean").any()):
            for name, rows in list(groups.items()):
                for level in sorted(set(levels[rows].tolist())):
                    groups[f"{name}@{level}"] = rows[levels[rows] == level]
    out: dict[str, float] = {}
    for name, index in groups.items():
        rows = torch.from_numpy(index)
        if rows.numel() == 0:
            continue
        summary = calibration_summary(confidence[rows], acc[rows], format_ok=None if fmt_t is None else fmt_t[rows])
        summary["accuracy"] = float(acc[rows].mean())
        has = rows[confidence[rows] >= 0]
        if has.numel() and 0 < float(acc[has].sum()) < has.numel():
            summary["auroc"] = auroc(confidence[has], acc[has])
        out.update({f"val-rac/{name}/{k}": v for k, v in summary.items()})
    return out
