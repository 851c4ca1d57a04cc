"""verl's batch -> the RAC row contract, and the per-row partner fields the loss function reads.

verl keeps a step's rows as per-row fields (TransferQueue keys, or ``TensorDict`` rows): ``uid`` (the
prompt group), ``rm_scores`` (token-level reward), ``response_mask``, ``old_log_probs``, ``entropy``, and
the ``extra_fields`` dict of each agent-loop output, where the twin agent loop puts ``rac_pair`` (shared by
a clean row and its corrupted twin), ``rac_severity`` (0 clean, 1..5 twin) and ``rac_corruption``, and
verl's reward loop puts ``reward_extra_info`` (the reward function's dict; verl's own ``acc`` for a float
score). The ranking target is the correctness there (``correct``, else ``acc``) when every row has it:
ranking by the shipped hook's ``correct + Brier`` score would order two correct answers by their stated
confidence, the very quantity the ranking loss is meant to calibrate.
Nothing here imports verl: it is plain torch/numpy over those fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rac_losses import rac_loss, rac_partners
from rac_losses.integrations.settings import RACSettings

__all__ = [
    "CORRUPTION_FIELD",
    "PAIR_FIELD",
    "PARTNER_PREFIX",
    "RANK_TARGET_KEYS",
    "SEVERITY_FIELD",
    "TWIN_KEY",
    "Rows",
    "partner_fields",
    "rows_from_verl",
]

#: ``extra_fields`` keys of the twin agent loop's outputs: the clean/twin pair id, severity, corruption name.
PAIR_FIELD = "rac_pair"
SEVERITY_FIELD = "rac_severity"
CORRUPTION_FIELD = "rac_corruption"

#: ``reward_extra_info`` keys read as the ranking target, in order of preference (the hook's, then verl's own).
RANK_TARGET_KEYS = ("correct", "acc")

#: Prefix of the partner-table fields written per row (see :meth:`rac_losses.RACPartners.to_fields`).
PARTNER_PREFIX = "rac_"
#: Per-row bool field: the row is a corrupted twin (no policy-gradient, KL or entropy term).
TWIN_KEY = "rac_twin"


@dataclass(frozen=True)
class Rows:
    """One step's rows in the RAC row contract.

    Attributes:
        group: ``[N]`` int64 prompt-group ids (from ``uid``).
        reward: ``[N]`` float64 ranking target: ``reward_extra_info["correct"]`` (else ``["acc"]``) when every
            row carries it, else the sequence reward (``rm_scores`` summed over the response).
        valid: ``[N]`` bool, false for verl's synthetic padding rows.
        twin: ``[N]`` bool, the row is a corrupted twin (``rac_severity > 0``).
        pair: ``[N]`` int64 clean/twin pair ids, or ``None`` when the step has no twin.
        severity: ``[N]`` int64 severities (0 clean), or ``None`` when the step has no twin.
    """

    group: torch.Tensor
    reward: torch.Tensor
    valid: torch.Tensor
    twin: torch.Tensor
    pair: torch.Tensor | None
    severity: torch.Tensor | None


def rows_from_verl(
    uid: Sequence[Any],
    rm_scores: torch.Tensor,
    extra_fields: Sequence[Mapping[str, Any] | None],
    padding: Sequence[bool],
) -> Rows:
    """Read the row contract from verl's per-row fields.

    Args:
        uid: ``N`` prompt ids (any hashable; rows of one prompt share it).
        rm_scores: ``[N, T]`` token-level rewards (padded), summed per row into the sequence reward (the ranking
            target when the rows carry no correctness, see :data:`RANK_TARGET_KEYS`).
        extra_fields: ``N`` agent-loop ``extra_fields`` dicts (``None`` or missing keys: a clean row
            without twins).
        padding: ``N`` flags, true for verl's synthetic padding rows (``tag["is_padding"]``).

    Raises:
        TypeError: ``rm_scores`` is not a float tensor.
        ValueError: lengths differ, a ``rac_severity`` outside ``0..5``, or a correctness key that some rows'
            ``reward_extra_info`` carry and others lack.
    """
    if not isinstance(rm_scores, torch.Tensor) or not rm_scores.is_floating_point():
        raise TypeError(f"rm_scores must be a float tensor [N, T], got {type(rm_scores).__name__}")
    n = len(uid)
    if rm_scores.ndim != 2 or rm_scores.shape[0] != n or len(extra_fields) != n or len(padding) != n:
        raise ValueError(
            f"uid ({n}), rm_scores {tuple(rm_scores.shape)}, extra_fields ({len(extra_fields)}) and "
            f"padding ({len(padding)}) must describe the same rows"
        )
    _, group = np.unique(np.asarray([str(u) for u in uid], dtype=object), return_inverse=True)
    extras = [e or {} for e in extra_fields]
    severity = torch.tensor([int(e.get(SEVERITY_FIELD, 0)) for e in extras], dtype=torch.long)
    if bool(((severity < 0) | (severity > 5)).any()):
        raise ValueError(f"{SEVERITY_FIELD} must lie in 0..5, got {sorted(set(severity.tolist()))}")
    valid = ~torch.tensor([bool(p) for p in padding], dtype=torch.bool)
    twin = (severity > 0) & valid
    pair = None
    if bool(twin.any()):
        # rows without a pair id (other agent loops) are their own pair: they compare with nothing
        keys = [str(e[PAIR_FIELD]) if PAIR_FIELD in e else f"row:{i}" for i, e in enumerate(extras)]
        _, pair_ids = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
        pair = torch.from_numpy(pair_ids.astype(np.int64))
    return Rows(
        group=torch.from_numpy(group.astype(np.int64)),
        reward=_rank_target(extras, rm_scores),
        valid=valid,
        twin=twin,
        pair=pair,
        severity=severity if pair is not None else None,
    )


def _rank_target(extras: Sequence[Mapping[str, Any]], rm_scores: torch.Tensor) -> torch.Tensor:
    infos = [e.get("reward_extra_info") or {} for e in extras]
    for key in RANK_TARGET_KEYS:
        have = [key in info for info in infos]
        if all(have):
            return torch.tensor([float(info[key]) for info in infos], dtype=torch.float64)
        if any(have):
            raise ValueError(
                f"reward_extra_info[{key!r}] is on {sum(have)} of {len(have)} rows: the ranking target must be "
                "the same quantity for every row (return it from the reward function for every response)"
            )
    return rm_scores.detach().to(torch.float64).sum(-1)


def partner_fields(
    rows: Rows,
    old_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    settings: RACSettings,
    *,
    entropy: torch.Tensor | None = None,
    mini_batches: int = 1,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Per-row fields for the RAC loss function, and the step's RAC metrics, from the old log-probs.

    Args:
        rows: the step's rows.
        old_log_probs: ``[N, T]`` log-probs of the sampled tokens, each row under its own image.
        response_mask: ``[N, T]`` bool or 0/1.
        settings: the run's RAC settings.
        entropy: ``[N, T]`` per-token entropy, needed by a ``neg_entropy`` confidence.
        mini_batches: how many optimiser steps (mini-batches) share the rows per epoch. Each mini-batch's
            RAC term is scaled by it (:meth:`~rac_losses.RACPartners.scaled`), so it is on the scale of the
            batch loss as verl's per-mini-batch means are; with one mini-batch the sum over micro-batches
            is exactly the batch loss.

    Returns:
        ``(fields, metrics)``: ``fields`` maps ``rac_twin`` and the partner tables
        (:meth:`~rac_losses.RACPartners.to_fields`, prefix ``rac_``) to ``[N, ...]`` tensors;
        ``metrics`` are :func:`~rac_losses.rac_loss`'s metrics at the old policy, keyed ``rac/...``.

    Raises:
        ValueError: ``mini_batches < 1``, or anything :func:`~rac_losses.rac_partners` rejects.
    """
    if isinstance(mini_batches, bool) or not isinstance(mini_batches, int) or mini_batches < 1:
        raise ValueError(f"mini_batches must be an int >= 1, got {mini_batches!r}")
    twins = settings.uses_twins and rows.pair is not None  # without a pairwise loss, twins only leave the PG term
    inputs = dict(
        token_logprobs=old_log_probs.detach(),
        mask=response_mask,
        reward=rows.reward,
        group=rows.group,
        token_entropy=None if entropy is None else entropy.detach(),
        pair=rows.pair if twins else None,
        severity=rows.severity if twins else None,
        valid=rows.valid,
        config=settings.config,
    )
    partners = rac_partners(**inputs)
    if mini_batches > 1:
        partners = partners.scaled(mini_batches)
    fields = partners.to_fields(prefix=PARTNER_PREFIX)
    fields[TWIN_KEY] = rows.twin.clone()
    metrics = {f"rac/{k}": v for k, v in rac_loss(**inputs).metrics.items()}
    return fields, metrics

