"""``RACActorPPOTrainer``: OpenRLHF's ``ActorPPOTrainer`` with the RAC terms in its policy loss.

Only three methods are extended, each calling OpenRLHF's own:

- ``__init__`` wraps ``actor_loss_fn`` (:class:`~rac_losses.integrations.openrlhf.loss.RACPolicyLoss`);
- ``ppo_train`` computes the batch's partner tables from the replay buffer before the update
  (:func:`~rac_losses.integrations.openrlhf.rows.prepare_batch`);
- ``training_step`` hands the micro-batch's rows to the loss and adds the ``rac/*`` metrics (measured on
  the whole batch before the update); the logged ``policy_loss`` stays OpenRLHF's own, without RAC.

Scale: DeepSpeed divides each micro-batch loss by its gradient-accumulation steps ``gas`` (OpenRLHF
pre-compensates its own policy loss), and a buffer may hold several optimizer steps. The partner tables are
scaled (:meth:`rac_losses.RACPartners.scaled`) by ``gas * optimizer steps per epoch``: with one optimizer
step per buffer the gradient is exactly the batch loss's; with several, each step's RAC term is on the
scale of the batch loss, and summed over an epoch at fixed parameters the steps' gradients are ``steps``
times the batch gradient (as for OpenRLHF's own per-step mean losses). The tables are those of the parameters
before the update, unless ``refresh_partners``: then they are rebuilt at the current parameters at the start
of every optimiser step after the first (a no-grad forward over the buffer each), so every step compares its
rows with their partners' current confidences. Data-parallel ranks each compute their own batch loss (rows
of their own buffer); DeepSpeed averages them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import torch

from rac_losses.integrations.openrlhf.groups import GROUP_KEY
from rac_losses.integrations.openrlhf.loss import MicroBatch, RACPolicyLoss
from rac_losses.integrations.openrlhf.rows import ROW_KEY, TWIN_ROW_KEY, RACBatch, prepare_batch
from rac_losses.integrations.settings import RACSettings

__all__ = ["rac_trainer_class"]

logger = logging.getLogger(__name__)


def _per_sample(value: Any) -> torch.Tensor:
    """``[b]`` int64 from a batched ``info`` entry (a tensor, or a list of 0-d tensors / ints)."""
    if isinstance(value, list):
        return torch.stack([torch.as_tensor(v).reshape(()) for v in value]).long()
    return torch.as_tensor(value).reshape(-1).long()


def rac_trainer_class(base: type, settings: RACSettings) -> type:
    """A subclass of OpenRLHF's ``ActorPPOTrainer`` (``base``) that trains with ``settings``.

    Raises (when the trainer is built or trains):
        RuntimeError: a ``ppo_train`` over a non-empty buffer returned without ``rac/*`` metrics.
        ValueError: dynamic batching (``--train.dynamic_batch_enable``, not supported), or a confidence
            method needing entropy while ``--actor.entropy_coef`` is unset.
    """
    with_entropy = settings.needs_entropy

    class RACActorPPOTrainer(base):  # type: ignore[valid-type, misc]
        """``ActorPPOTrainer`` with RAC; see :mod:`rac_losses.integrations.openrlhf.trainer`."""

        rac_settings = settings

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.actor_loss_fn = RACPolicyLoss(self.actor_loss_fn, settings, with_entropy=with_entropy)
            logger.info("rac: ActorPPOTrainer with RAC (%s)", settings)

        def ppo_train(self, kl_ctl: float) -> dict:
            """OpenRLHF's ``ppo_train``, with the partner tables of its replay buffer computed first."""
            if self.args.train.dynamic_batch_enable:
                raise ValueError("rac: --train.dynamic_batch_enable is not supported with RAC")
            if with_entropy and self.args.actor.entropy_coef is None:
                raise ValueError("rac: a neg_entropy confidence needs the entropy; pass --actor.entropy_coef 0")
            buffer = self.replay_buffer
            if not buffer.items:
                return super().ppo_train(kl_ctl)
            micro_batches = len(buffer.items) // buffer.sample_batch_size  # OpenRLHF drops the last partial one
            gas = max(int(self.strategy.accumulated_gradient), 1)
            scale = gas * math.ceil(micro_batches / gas)

            def prepare(current: bool) -> RACBatch:
                prepared = prepare_batch(
                    buffer.items, actor=self.actor, settings=settings, processor=self.tokenizer,
                    chunk_size=buffer.sample_batch_size, ring_attn_group=self.strategy.ring_attn_group,
                    current=current,
                )
                return dataclasses.replace(prepared, partners=prepared.partners.scaled(scale))

            self._rac_batch, self._rac_prepare, self._rac_gas = prepare(False), prepare, gas
            self._rac_stepped = False  # no training step yet: the tables are fresh
            try:
                status = super().ppo_train(kl_ctl)
            finally:
                self._rac_batch = self._rac_prepare = None
            if not any(str(k).startswith("rac/") for k in status):
                raise RuntimeError(
                    "rac: OpenRLHF's ppo_train returned without rac/* metrics: its training steps did not go "
                    "through the RAC trainer (an unsupported OpenRLHF release?), RAC did not train"
                )
            return status

        def training_step(self, experience: Any, kl_ctl: float, step: int, loss_batch_info: dict | None = None) -> dict:
            """OpenRLHF's ``training_step`` on ``experience``, its loss seeing the rows' partner tables."""
            loss_fn = self.actor_loss_fn
            batch = getattr(self, "_rac_batch", None)
            if not isinstance(loss_fn, RACPolicyLoss) or batch is None:
                raise RuntimeError("rac: training_step outside ppo_train, or the RAC policy loss was replaced")
            if settings.refresh_partners and self._rac_stepped and step % self._rac_gas == 0:
                # a new optimiser step (step restarts at 0 each epoch): partners at the current parameters
                batch = self._rac_batch = self._rac_prepare(True)
            self._rac_stepped = True
            info = experience.info
            if ROW_KEY not in info or TWIN_ROW_KEY not in info:
                raise RuntimeError(
                    f"rac: samples without info[{ROW_KEY!r}]: they did not pass through this trainer's ppo_train"
                )
            rows, twins = _per_sample(info.pop(ROW_KEY)), _per_sample(info.pop(TWIN_ROW_KEY))
            info.pop(GROUP_KEY, None)
            info.update({f"rac/{k}": torch.tensor(float(v)) for k, v in batch.metrics.items()})
            micro = MicroBatch(
                batch=batch, rows=rows, twins=twins, sequences=experience.sequences,
                attention_mask=experience.attention_mask, actor=self.actor, ring_attn_group=self.strategy.ring_attn_group,
            )

            def keep_first_output(module: Any, args: Any, output: Any) -> None:
                if micro.output is None:
                    micro.output = output

            handle = self.actor.register_forward_hook(keep_first_output) if with_entropy else None
            loss_fn.step = micro
            try:
                status = super().training_step(experience, kl_ctl, step, loss_batch_info)
                # OpenRLHF logs the loss element the RAC term was added to: log the stock policy loss
                status["metrics"]["policy_loss"] = status["metrics"]["policy_loss"] - loss_fn.last_value
                return status
            finally:
                loss_fn.step = None
                if handle is not None:
                    handle.remove()

    return RACActorPPOTrainer
