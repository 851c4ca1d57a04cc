"""The pre-update pass: a replay buffer's samples as RAC rows, with partner tables and metrics.

Rows ``0..N-1`` are the buffer's samples (clean), rows ``N..N+M-1`` their corrupted twins. Each sample is
stamped with its row and its twin's row (``info["rac_row"]``, ``info["rac_twin_row"]``, ``-1`` without twin):
per-sample entries that survive the replay buffer's shuffle and any micro-batch split, so each micro-batch
finds its rows' slice of the partner tables.

Confidences come from the parameters before the update: the old log-probs OpenRLHF keeps
(``action_log_probs``) for clean rows; a no-grad actor forward for the per-token entropy (of the samples
whose confidence reads it: every sample for a ``neg_entropy`` ranking, else those with a twin) and for twins.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from rac_losses import RACPartners, rac_loss, rac_partners
from rac_losses.integrations.openrlhf.groups import GROUP_KEY
from rac_losses.integrations.openrlhf.twins import corrupted_inputs, sample_key
from rac_losses.integrations.settings import RACSettings

__all__ = ["ROW_KEY", "TWIN_ROW_KEY", "RACBatch", "prepare_batch"]

logger = logging.getLogger(__name__)

ROW_KEY = "rac_row"
TWIN_ROW_KEY = "rac_twin_row"


@dataclasses.dataclass(frozen=True)
class RACBatch:
    """One training batch's RAC state, fixed before the update.

    Attributes:
        partners: partner tables of the ``N + M`` rows (clean samples, then twins), on the CPU.
        twin_inputs: twin row -> its corrupted images' model inputs (``pixel_values``, ``image_grid_thw``).
        metrics: :func:`rac_losses.rac_loss`'s metrics at the pre-update parameters, plus ``twins`` (``M``).
    """

    partners: RACPartners
    twin_inputs: dict[int, dict[str, torch.Tensor]]
    metrics: dict[str, float]


def _merge(inputs: Sequence[Any], device: torch.device) -> dict[str, torch.Tensor]:
    from openrlhf.utils.vlm_utils import merge_mm_train_inputs

    return merge_mm_train_inputs(list(inputs), device)


def _forward(
    actor: Any, batch: Any, rows: torch.Tensor, mm_inputs: dict[str, torch.Tensor], ring_attn_group: Any, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(log-probs, entropy or None)`` ``[b, A]`` of ``batch``'s ``rows`` under ``mm_inputs`` (no grad)."""
    mask = batch.action_mask[rows]
    log_probs, output = actor(
        batch.sequences[rows], mask, attention_mask=batch.attention_mask[rows], return_output=True,
        ring_attn_group=ring_attn_group, return_entropy=with_entropy, **mm_inputs,
    )
    return log_probs, output.entropy[:, -mask.shape[1]:] if with_entropy else None


def _twins(items: Sequence[Any], settings: RACSettings, processor: Any) -> tuple[list[int], list[dict], list[int]]:
    """Per sample the twin's index (or -1), and the twins' model inputs and severities."""
    twin_of, inputs, severities = [-1] * len(items), [], []
    if not settings.uses_twins:
        return twin_of, inputs, severities
    for i, item in enumerate(items):
        images = item.images[0] if item.images else None
        clean = item.mm_train_inputs[0] if item.mm_train_inputs else None
        if not images or not clean:
            continue  # a text-only sample (mixed datasets): no twin
        grid = clean.get("image_grid_thw")
        if grid is not None and len(grid) != len(images):
            # a multi-turn agent (--train.agent_func_path) added images the prompt's list does not hold
            logger.warning(
                "rac: a sample carries %d images but its prompt lists %d (images returned by a multi-turn "
                "agent?): no corrupted twin for it", len(grid), len(images),
            )
            continue
        key = sample_key(item.sequences, item.attention_mask)
        if not settings.corruption.selects(key):
            continue
        mm, severity = corrupted_inputs(processor, images, clean, key, settings.corruption)
        twin_of[i] = len(inputs)
        inputs.append(mm)
        severities.append(severity)
    return twin_of, inputs, severities


def _pre_update_scores(
    items: Sequence[Any],
    twin_of: list[int],
    twin_inputs: list[dict],
    *,
    actor: Any,
    chunk_size: int,
    ring_attn_group: Any,
    with_entropy: bool,
    entropy_of_all: bool,
    current: bool,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """No-grad actor forwards: ``(clean log-probs, clean entropies, twin log-probs, twin entropies)``, 1-D
    ``[A_i]`` each.

    Clean log-probs only when ``current`` (else empty: OpenRLHF's old ones are used). Clean entropies only
    when ``with_entropy`` (else empty), of every sample when ``entropy_of_all`` (the ranking reads them) or
    ``current``, else of the samples with a twin only (zeros for the others, which nothing reads); twin
    entropies when ``with_entropy``.
    """
    from openrlhf.trainer.ppo_utils.experience import make_experience_batch

    device = next(actor.parameters()).device
    widths = [len(item.action_mask) for item in items]
    log_probs: list[torch.Tensor] = []
    entropy: list[torch.Tensor] = []
    twin_log_probs: list[torch.Tensor] = [torch.empty(0)] * len(twin_inputs)
    twin_entropy: list[torch.Tensor] = [torch.empty(0)] * (len(twin_inputs) if with_entropy else 0)
    was_training = actor.training
    actor.eval()
    try:
        for start in range(0, len(items) if (with_entropy or twin_inputs or current) else 0, chunk_size):
            chunk = list(items[start : start + chunk_size])
            batch = make_experience_batch(chunk).to_device(device)
            if with_entropy or current:
                needed = [j for j in range(len(chunk)) if current or entropy_of_all or twin_of[start + j] >= 0]
                found: dict[int, torch.Tensor | None] = dict.fromkeys(range(len(chunk)))
                if needed:
                    vlm = getattr(actor, "is_vlm", False)
                    clean_mm = _merge([batch.mm_train_inputs[j] for j in needed], device) if vlm else {}
                    rows = torch.tensor(needed, device=device)
                    lp, ent = _forward(actor, batch, rows, clean_mm, ring_attn_group, with_entropy)
                    if current:
                        log_probs.extend(lp[k, : widths[start + j]].cpu() for k, j in enumerate(needed))
                    if ent is not None:
                        found.update({j: ent[k, : widths[start + j]].cpu() for k, j in enumerate(needed)})
                if with_entropy:
                    entropy.extend(torch.zeros(widths[start + j]) if e is None else e for j, e in found.items())
            twins = [(j, twin_of[start + j]) for j in range(len(chunk)) if twin_of[start + j] >= 0]
            if twins:
                rows = torch.tensor([j for j, _ in twins], device=device)
                twin_mm = _merge([twin_inputs[t] for _, t in twins], device)
                lp, ent = _forward(actor, batch, rows, twin_mm, ring_attn_group, with_entropy)
                for k, (j, t) in enumerate(twins):
                    twin_log_probs[t] = lp[k, : widths[start + j]].cpu()
                    if ent is not None:
                        twin_entropy[t] = ent[k, : widths[start + j]].cpu()
    finally:
        actor.train(was_training)
    return log_probs, entropy, twin_log_probs, twin_entropy


@torch.no_grad()
def prepare_batch(
    items: Sequence[Any],
    *,
    actor: Any,
    settings: RACSettings,
    processor: Any,
    chunk_size: int,
    ring_attn_group: Any = None,
    current: bool = False,
) -> RACBatch:
    """Stamp ``items`` with their rows and compute the batch's partner tables (before the update, or, with
    ``current``, at the actor's current parameters: clean log-probs from a forward, not OpenRLHF's old ones).

    Args:
        items: the replay buffer's single-sample ``Experience`` objects, each with ``info["rac_group"]``,
            ``rewards`` and ``action_log_probs``; modified: ``info["rac_row"]`` / ``info["rac_twin_row"]`` added.
        actor: OpenRLHF's ``Actor`` (forwards for entropy and twins only).
        settings: the run's RAC settings.
        processor: the model's processor (for twins).
        chunk_size: samples per forward.
        ring_attn_group: passed to the actor's forward.

    Raises:
        ValueError: a sample without ``info["rac_group"]`` (the group-id wrapper is not installed), and as
            :func:`~rac_losses.integrations.openrlhf.twins.corrupted_inputs` and :func:`rac_losses.rac_loss`.
    """
    n = len(items)
    if any(GROUP_KEY not in item.info for item in items):
        raise ValueError(
            f"rac: samples without info[{GROUP_KEY!r}]; the RAC setup hook did not wrap compute_advantages_and_returns"
        )
    twin_of, twin_inputs, severities = _twins(items, settings, processor)
    with_entropy = settings.needs_entropy
    current_log_probs, entropy, twin_log_probs, twin_entropy = _pre_update_scores(
        items, twin_of, twin_inputs, actor=actor, chunk_size=chunk_size, ring_attn_group=ring_attn_group,
        with_entropy=with_entropy, entropy_of_all=settings.config.rank_confidence == "neg_entropy", current=current,
    )
    clean_of_twin = torch.tensor([i for i in range(n) if twin_of[i] >= 0], dtype=torch.long)
    masks = [item.action_mask.bool() for item in items]
    if current:
        clean_log_probs = [x.float() for x in current_log_probs]
    else:
        clean_log_probs = [item.action_log_probs.float() for item in items]  # OpenRLHF's, before the update
    log_probs = pad_sequence(clean_log_probs + [x.float() for x in twin_log_probs], batch_first=True)
    mask = pad_sequence(masks + [masks[i] for i in clean_of_twin.tolist()], batch_first=True)
    group = torch.stack([torch.as_tensor(item.info[GROUP_KEY]).reshape(()) for item in items]).long()
    reward = torch.stack([item.rewards.reshape(()) for item in items]).float()
    row_args: dict[str, Any] = dict(
        reward=torch.cat([reward, reward[clean_of_twin]]),
        group=torch.cat([group, group[clean_of_twin]]),
        token_entropy=pad_sequence([x.float() for x in entropy + twin_entropy], batch_first=True)
        if with_entropy
        else None,
        config=settings.config,
    )
    if settings.uses_twins:
        row_args.update(
            pair=torch.cat([torch.arange(n), clean_of_twin]),
            severity=torch.cat([torch.zeros(n), torch.tensor(severities, dtype=torch.float32)]),
        )
    partners = rac_partners(log_probs, mask, **row_args)
    metrics = dict(rac_loss(log_probs, mask, **row_args).metrics, twins=float(len(twin_inputs)))
    for i, item in enumerate(items):
        item.info[ROW_KEY] = i
        item.info[TWIN_ROW_KEY] = n + twin_of[i] if twin_of[i] >= 0 else -1
    logger.info("rac: %d rows, %d corrupted twins; %s", n, len(twin_inputs), metrics)
    return RACBatch(partners=partners, twin_inputs={n + t: mm for t, mm in enumerate(twin_inputs)}, metrics=metrics)
