"""The policy-loss wrapper: OpenRLHF's ``PolicyLoss`` plus one micro-batch's share of the RAC terms."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from rac_losses import rac_partner_loss
from rac_losses.integrations.openrlhf.rows import RACBatch
from rac_losses.integrations.settings import RACSettings

__all__ = ["MicroBatch", "RACPolicyLoss"]


@dataclasses.dataclass
class MicroBatch:
    """What the loss needs of the micro-batch ``training_step`` is processing.

    Attributes:
        batch: the training batch's :class:`~rac_losses.integrations.openrlhf.rows.RACBatch`.
        rows: ``[b]`` the samples' rows in ``batch.partners``; twins: ``[b]`` their twins' rows or ``-1``.
        sequences, attention_mask: ``[b, T]`` the micro-batch's tokens (for the twins' forward).
        actor: OpenRLHF's ``Actor``; ring_attn_group: passed to its forward.
        output: the actor's first forward output in this step (``(log_probs, output)``), kept by a forward
            hook when entropy is read; ``None`` otherwise.
    """

    batch: RACBatch
    rows: torch.Tensor
    twins: torch.Tensor
    sequences: torch.Tensor
    attention_mask: torch.Tensor
    actor: Any
    ring_attn_group: Any = None
    output: Any = None


class RACPolicyLoss(nn.Module):
    """``PolicyLoss`` with the RAC terms added to its loss (element 0); same call signature and tuple.

    The corrupted twins of the micro-batch's samples are scored by a second actor forward (same tokens,
    corrupted images) that enters the RAC pairwise term only, never the policy-gradient term.

    Attributes:
        policy_loss: the wrapped ``PolicyLoss``.
        settings: the run's RAC settings.
        step: the current :class:`MicroBatch`, set by the trainer around ``training_step``.
        last_value: the last RAC term added (detached 0-d tensor, on the scale of the partner tables).
    """

    def __init__(self, policy_loss: nn.Module, settings: RACSettings, *, with_entropy: bool) -> None:
        super().__init__()
        self.policy_loss = policy_loss
        self.settings = settings
        self.with_entropy = with_entropy
        self.step: MicroBatch | None = None
        self.last_value: torch.Tensor | None = None

    def forward(
        self,
        log_probs: torch.Tensor,
        old_log_probs: torch.Tensor,
        advantages: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        rollout_log_probs: torch.Tensor | None = None,
        dp_size: int = 1,
        batch_num_tokens: Any = None,
        global_batch_size: Any = None,
    ) -> tuple:
        """OpenRLHF's ``(loss, clip_ratio, ppo_kl, vllm_kl, is_filter_ratio)``, RAC added to ``loss``.

        Args: as ``PolicyLoss.forward`` (``log_probs`` ``[b, A]`` with gradient, ``action_mask`` ``[b, A]``).

        Raises:
            RuntimeError: called outside a RAC training step (no :attr:`step`), or without the entropy a
                confidence method needs.
        """
        out = self.policy_loss(
            log_probs, old_log_probs, advantages, action_mask=action_mask, rollout_log_probs=rollout_log_probs,
            dp_size=dp_size, batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size,
        )
        if self.step is None:
            raise RuntimeError("rac: the RAC policy loss was called outside a RAC training step")
        if action_mask is None:
            raise RuntimeError("rac: the RAC policy loss needs the action mask")
        rac = self._rac_term(self.step, log_probs, action_mask)
        self.last_value = rac.detach()
        return (out[0] + rac, *out[1:])

    def _entropy(self, output: Any, width: int) -> torch.Tensor:
        entropy = getattr(output[1] if isinstance(output, tuple) else output, "entropy", None)
        if entropy is None:
            raise RuntimeError("rac: a confidence method needs per-token entropy; run with --actor.entropy_coef 0")
        return entropy[:, -width:]

    def _rac_term(self, step: MicroBatch, log_probs: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
        from openrlhf.utils.vlm_utils import merge_mm_train_inputs

        width, device = action_mask.shape[1], log_probs.device
        parts_lp, parts_mask, rows = [log_probs], [action_mask], [step.rows.to(device)]
        parts_ent = [self._entropy(step.output, width)] if self.with_entropy else []
        has_twin = step.twins >= 0
        if bool(has_twin.any()):
            twin_rows = step.twins[has_twin]
            select = has_twin.to(step.sequences.device)
            mm = merge_mm_train_inputs([step.batch.twin_inputs[int(r)] for r in twin_rows], device)
            twin_lp, twin_out = step.actor(
                step.sequences[select], action_mask[select.to(action_mask.device)],
                attention_mask=step.attention_mask[select], return_output=True,
                ring_attn_group=step.ring_attn_group, return_entropy=self.with_entropy, **mm,
            )
            parts_lp.append(twin_lp)
            parts_mask.append(action_mask[select.to(action_mask.device)])
            rows.append(twin_rows.to(device))
            if self.with_entropy:
                parts_ent.append(self._entropy(twin_out, width))
        partners = step.batch.partners[torch.cat(rows).cpu()].to(device)
        term = rac_partner_loss(
            torch.cat(parts_lp), torch.cat(parts_mask), partners,
            token_entropy=torch.cat(parts_ent) if self.with_entropy else None, config=self.settings.config,
        )
        return term
