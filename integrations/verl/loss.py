"""The top-level verl loss function with RAC: verl's ``ppo_loss`` on clean rows plus the RAC row form.

Installed by the ``rac`` trainer with ``actor_rollout_wg.set_loss_fn(partial(rac_ppo_loss, config=...,
settings=...))``; verl calls it once per micro-batch as ``loss_fn(config, model_output, data, dp_group)``.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict
from verl.utils.metric import AggregationType, Metric
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

from rac_losses import RACPartners, rac_partner_loss
from rac_losses.integrations.settings import RACSettings

from .rows import PARTNER_PREFIX, TWIN_KEY

__all__ = ["dense_fields", "rac_ppo_loss", "without_twins"]


def without_twins(mask: torch.Tensor, twin: torch.Tensor) -> torch.Tensor:
    """``mask`` (``[n, T]``, regular or jagged nested) with every twin row's tokens zeroed, in the same layout.

    Raises:
        ValueError: ``twin`` is not ``[n]``.
    """
    keep = ~twin.to(torch.bool).to(mask.device)
    if keep.shape != (mask.size(0),):
        raise ValueError(f"{TWIN_KEY} must have shape [{mask.size(0)}], got {tuple(twin.shape)}")
    if not mask.is_nested:
        return mask * keep.unsqueeze(1).to(mask.dtype)
    # rebuilt from its rows: a jagged tensor made from values and offsets alone pads to the total length
    rows = [row * k.to(row.dtype) for row, k in zip(mask.unbind(), keep)]
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def dense_fields(data: TensorDict, prefix: str) -> dict[str, torch.Tensor]:
    """Every ``{prefix}*`` tensor field of ``data`` as a regular ``[n, ...]`` tensor, values and dtype kept.

    TransferQueue hands back every per-row field that is not a scalar as a jagged nested tensor (even when
    all rows have the same width), and verl's mini- and micro-batching keep it nested; the partner tables
    are ``[n, W]`` with one ``W`` per batch, so their rows stack exactly (no padding value is invented).

    Raises:
        ValueError: a nested field whose rows differ in width (not a table written by the ``rac`` trainer).
    """
    out = {}
    for key in data.keys():
        if not (isinstance(key, str) and key.startswith(prefix)):
            continue
        value = data.get(key)
        if not isinstance(value, torch.Tensor):
            continue
        if value.is_nested:
            rows = value.unbind()
            if len({row.shape for row in rows}) > 1:
                raise ValueError(f"{key} rows differ in width: {sorted({tuple(r.shape) for r in rows})}")
            value = torch.stack(rows)
        out[key] = value
    return out


def _padded(x: torch.Tensor, width: int) -> torch.Tensor:
    x = x.to_padded_tensor(0) if x.is_nested else x
    return torch.nn.functional.pad(x, (0, width - x.shape[1])) if x.shape[1] < width else x[:, :width]


def rac_ppo_loss(
    config: Any,
    model_output: dict[str, torch.Tensor],
    data: TensorDict,
    dp_group: Any = None,
    *,
    settings: RACSettings,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """verl's ``ppo_loss`` on the micro-batch's clean rows, plus its share of ``rank_coef * L_rank + pair_coef * L_pair``.

    Args:
        config: verl's actor config (as for ``ppo_loss``).
        model_output: the engine's output: ``log_probs`` (and ``entropy`` when a used confidence is
            ``neg_entropy``), nested over prompt + response.
        data: the micro-batch, carrying the fields :func:`~rac_losses.integrations.verl.rows.partner_fields`
            wrote for its rows (``rac_twin`` and the ``rac_*`` partner tables).
        dp_group: verl's data-parallel group (passed through).
        settings: the run's RAC settings.

    Returns:
        ``(loss, metrics)`` as ``ppo_loss``; ``metrics["actor/rac_loss"]`` is this micro-batch's RAC share.
        The RAC term is scaled by ``dp_size`` like verl's own terms, whose gradients are averaged over ranks.

    Raises:
        KeyError: the micro-batch lacks the RAC fields (the ``rac`` trainer writes them each step).
        ValueError: a ``neg_entropy`` confidence is configured but the engine returned no entropy.
    """
    if TWIN_KEY not in data.keys():
        raise KeyError(f"the batch has no {TWIN_KEY!r} field: run with trainer.v1.trainer_mode=rac, which writes the RAC fields")
    twin = data[TWIN_KEY].to(torch.bool)
    policy_data = data.clone(recurse=False)
    policy_data["response_mask"] = without_twins(data["response_mask"], twin)
    loss, metrics = ppo_loss(config, model_output, policy_data, dp_group)

    token_logprobs = no_padding_2_padding(model_output["log_probs"], data)
    width = token_logprobs.shape[1]
    mask = _padded(data["response_mask"], width).to(torch.bool)
    token_entropy = None
    if model_output.get("entropy") is not None:
        token_entropy = no_padding_2_padding(model_output["entropy"], data)
    elif settings.needs_entropy:
        raise ValueError("a neg_entropy confidence needs the engine's entropy: set actor.calculate_entropy=True")
    partners = RACPartners.from_fields(dense_fields(data, PARTNER_PREFIX), prefix=PARTNER_PREFIX)
    partners = partners.to(token_logprobs.device)
    rac = rac_partner_loss(token_logprobs, mask, partners, token_entropy=token_entropy, config=settings.config)
    rac = rac * data["dp_size"]
    metrics["actor/rac_loss"] = Metric(value=rac.detach(), aggregation=AggregationType.SUM)
    return loss + rac.to(loss.dtype), metrics
