"""The ``rac`` v1 trainer mode: verl's synchronous PPO trainer with RAC, in one of two formulations.

Wherever verl's trainer asks for its mode it is told ``sync`` (:attr:`RACTrainer.trainer_mode`): a ``rac``
run is a ``sync`` run in every code path verl selects by mode.

Turn it on with ``trainer.v1.trainer_mode=rac``; knobs go under ``+rac.*``. ``+rac.formulation`` picks:

- ``reward`` (the default, the paper's method; options :mod:`.paper`): the paper's per-sample reward is
  the default reward function, the response schema is appended to every prompt (:mod:`.dataset`), each
  image prompt of the training set gets a corrupted copy (:mod:`.copies`; or a paired training set's rows
  are the pairs), the training set is sampled pair by pair (:mod:`.sampler`: a clean prompt and its copy in
  one batch), every prompt's ``extra_info`` carries the training step (the format warm-up), and each step,
  after verl's rewards and before its advantage estimator, the ranking and corruption bonuses are added to
  every response's reward at its last token (``rm_scores``, the field verl's advantage step reads). The
  actor trains with verl's own loss; any estimator works. Validation adds the calibration metrics per data
  source and corruption level.
- ``loss`` (this package's differentiable losses; options :mod:`rac_losses.integrations.settings`): at
  construction it asks verl for per-token entropy when a ``neg_entropy`` confidence is used and routes
  rollouts through the twin agent loop (``rac_single_turn``) when corrupted twins are wanted. Each step,
  after verl's advantages, it computes the RAC partner tables from the old log-probs verl already
  recomputed for every row (each under its own image) and writes them, the twin flags and a clean-only
  ``loss_mask`` back as per-row fields; the loss function
  (:func:`~rac_losses.integrations.verl.loss.rac_ppo_loss`) reads them in every micro-batch.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import numpy as np
import torch
import transfer_queue as tq
from omegaconf import DictConfig, OmegaConf, open_dict
from tensordict import TensorDict
from torchdata.stateful_dataloader import StatefulDataLoader
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer
from verl.utils.config import omega_conf_to_dataclass

from rac_losses.integrations.paper_settings import FORMULATIONS, PaperSettings
from rac_losses.integrations.settings import RACSettings, flatten_options

from .copies import CorruptedCopies
from .dataset import DATASET_CLASS
from .loss import rac_ppo_loss, without_twins
from .paper import LEVEL_KEY, PAIR_COLUMNS, REWARD_FUNCTION, paper_rows, paper_settings, shape_scores, validation_metrics
from .plugin import AGENT_LOOP_NAME, TRAINER_MODE
from .rows import partner_fields, rows_from_verl
from .sampler import PairSampler

__all__ = ["TRAINER_MODE", "RACTrainer", "prepare_config", "prepare_reward_config", "settings_from_config"]

logger = logging.getLogger(__name__)

_VERL_CONFIDENCES = ("mean_logprob", "prob", "neg_entropy")  # verl exposes log-probs and entropy only


def settings_from_config(config: DictConfig) -> RACSettings | PaperSettings:
    """The run's settings from the top-level ``rac`` node of verl's config (absent: defaults).

    ``rac.formulation`` (``reward``, the default, or ``loss``) picks :class:`PaperSettings` (checked by
    :func:`.paper.paper_settings`) or :class:`RACSettings` (checked here).

    Raises:
        ValueError: an unknown formulation; an unknown or invalid ``rac`` option (named); in the reward
            formulation, see :func:`.paper.paper_settings`; in the loss formulation: a confidence verl cannot
            provide (``topk``); ``refresh_partners`` (not implemented here); rollout-correction
            ``bypass_mode`` (it skips the per-row log-prob recomputation RAC reads); ``loss_agg_mode=token-sum``
            with a RAC term on; or, with twins, an advantage estimator other than ``grpo``, a ``seq-mean-*``
            loss aggregation, or rollout importance weights / rejection sampling (see the messages).
    """
    node = config.get("rac")
    options: Any = flatten_options(OmegaConf.to_container(node, resolve=True) if node is not None else {})
    formulation = str(options.pop("formulation", FORMULATIONS[0]))
    if formulation not in FORMULATIONS:
        raise ValueError(f"rac.formulation: expected one of {', '.join(FORMULATIONS)}, got {formulation!r}")
    if formulation == "reward":
        own = OmegaConf.select(config, "reward.custom_reward_function.path") is not None
        return paper_settings(options, own_reward_function=own)
    settings = RACSettings.from_options(options)
    settings.check_confidences(_VERL_CONFIDENCES, "verl")
    if settings.refresh_partners:
        raise ValueError(
            "rac.refresh_partners is not implemented in the verl adapter (the partner tables are fixed before "
            "the update); remove it, or use one optimiser step per batch (actor.ppo_mini_batch_size = "
            "data.train_batch_size)"
        )
    correction = config.algorithm.get("rollout_correction") or {}
    if correction.get("bypass_mode", False):
        raise ValueError(
            "rac needs verl to recompute the old log-probs and entropy of every row (each under its own image); "
            "algorithm.rollout_correction.bypass_mode=true reuses the rollout's instead: turn it off"
        )
    mode = config.actor_rollout_ref.actor.loss_agg_mode
    if mode == "token-sum" and (settings.config.rank_coef > 0 or settings.config.pair_coef > 0):
        # verl's token-sum term is a raw sum over the batch's tokens (times dp_size); RAC's terms are means over
        # comparisons. Scaling them by a token count would make rank_coef / pair_coef weigh differently at every
        # batch size and response length, a weighting neither the losses nor the paper define: refuse instead.
        raise ValueError(
            "rac's ranking and pairwise terms are means over comparisons, but "
            "actor_rollout_ref.actor.loss_agg_mode=token-sum makes verl's policy term a sum over tokens, so "
            "rac.rank_coef / rac.pair_coef would weigh differently at every batch size and response length: "
            "use loss_agg_mode=token-mean (verl's default)"
        )
    if settings.uses_twins:
        _check_twins_supported(config)
    return settings


def _check_twins_supported(config: DictConfig) -> None:
    """Twins are extra rows in verl's batch: refuse the settings where verl would count them."""
    off = "set +rac.pair_coef=0 or +rac.corruption.fraction=0 to train without twins"
    estimator = config.algorithm.adv_estimator
    if estimator != "grpo":
        # verl v1's GRPO computes group statistics from each rollout's final output only (the clean row,
        # emitted after its twin); other estimators would count twins as extra samples.
        raise ValueError(f"corrupted twins need algorithm.adv_estimator=grpo (got {estimator!r}); {off}")
    mode = config.actor_rollout_ref.actor.loss_agg_mode
    if mode.startswith("seq-mean"):
        # seq-mean modes divide by verl's fixed mini-batch row count, which twins fill: the policy term shrinks
        raise ValueError(f"corrupted twins need a token loss aggregation (got loss_agg_mode={mode!r}); {off}")
    correction = config.algorithm.get("rollout_correction") or {}
    for key in ("rollout_is", "rollout_rs"):
        if correction.get(key) is not None:
            # a twin carries its clean rollout's sampling log-probs but is scored under another image
            raise ValueError(f"corrupted twins cannot take part in algorithm.rollout_correction.{key}; {off}")


def prepare_config(config: DictConfig, settings: RACSettings) -> None:
    """Adjust verl's config in place for RAC: entropy when needed, the twin agent loop when twins are wanted."""
    with open_dict(config):
        if settings.needs_entropy:
            config.actor_rollout_ref.actor.calculate_entropy = True
        agent = config.actor_rollout_ref.rollout.agent
        if settings.uses_twins:
            if agent.default_agent_loop not in ("single_turn_agent", AGENT_LOOP_NAME):
                logger.warning(
                    "rac: default_agent_loop=%s emits no corrupted twins; the pairwise loss will see none",
                    agent.default_agent_loop,
                )
            else:
                agent.default_agent_loop = AGENT_LOOP_NAME
    if config.get("distillation") and config.distillation.get("enabled", False):
        raise ValueError("rac does not support verl's distillation loss; disable distillation or RAC")


def prepare_reward_config(config: DictConfig, settings: PaperSettings) -> None:
    """Adjust verl's config in place for the reward formulation.

    The paper's reward (:mod:`.paper_reward`, options ``rac.reward.*``) becomes the reward function unless
    ``reward.custom_reward_function.path`` names the user's own; with ``rac.schema`` (the default) the dataset
    class is :class:`.dataset.RACSchemaDataset`, which appends the response schema to every prompt.

    Raises:
        ValueError: ``rac.schema`` with a dataset class of the user's own (``data.custom_cls.path``).
    """
    hook = config.reward.custom_reward_function
    dataset = config.data.get("custom_cls") or {}
    if settings.schema and dataset.get("path") is not None:
        raise ValueError(
            f"+rac.schema=true appends the response schema through rac's dataset class, but data.custom_cls.path "
            f"names your own ({dataset.get('path')}): set +rac.schema=false and append "
            "rac_losses.rewards.RESPONSE_SCHEMA to your prompts (rac_losses.rewards.with_response_schema)"
        )
    with open_dict(config):
        if hook.get("path") is None:
            hook.path, hook.name = REWARD_FUNCTION
            hook.reward_kwargs = settings.reward_options() | {"multiple_choice": settings.multiple_choice}
        if settings.schema:
            config.data.custom_cls = {"path": DATASET_CLASS[0], "name": DATASET_CLASS[1]}


class _WithLevels:
    """verl's validation dataloader whose rows carry their ``corruption_level`` in ``extra_info`` (0 where the
    column is null), where the reward function sees it (the default one returns it: per-level metrics)."""

    def __init__(self, loader: StatefulDataLoader) -> None:
        self.loader = loader

    def __iter__(self):
        for batch in self.loader:
            infos, levels = batch.get("extra_info"), batch[LEVEL_KEY]
            infos = [None] * len(levels) if infos is None else infos
            batch["extra_info"] = np.array(
                [{**(info or {}), LEVEL_KEY: float(level or 0.0)} for info, level in zip(infos, levels)], dtype=object
            )
            yield batch

    def __len__(self) -> int:
        return len(self.loader)


@register_trainer(TRAINER_MODE)
class RACTrainer(PPOTrainerSync):
    """verl's ``sync`` trainer with the paper's reward bonuses, or the RAC loss function and partner tables."""

    def __init__(self, config: DictConfig):
        self.rac = settings_from_config(config)
        if self.formulation == "reward":
            prepare_reward_config(config, self.rac)
        else:
            prepare_config(config, self.rac)
        super().__init__(config)
        logger.info("rac (%s formulation): %s", self.formulation, self.rac)

    @property
    def formulation(self) -> str:
        """``"reward"`` (the paper's bonuses) or ``"loss"`` (the RAC losses), from the run's settings."""
        return "reward" if isinstance(self.rac, PaperSettings) else "loss"

    @property
    def trainer_mode(self) -> str:
        """``"sync"``: verl's v1 trainer compares ``trainer_mode == "sync"`` literally (the replay buffer class
        and its options under ``trainer.v1.sync``, single-prompt dataloader fetches, the prompt fields kept in
        TransferQueue, the TransferQueue state in checkpoints); the ``rac`` mode is the sync trainer in each."""
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, mode: str) -> None:
        """verl's constructor assigns ``config.trainer.v1.trainer_mode`` (``rac``); the mode stays ``sync``."""

    def _init_dataloader(self) -> None:
        """verl's dataloaders; in the reward formulation with pairs, the training set gets its corrupted copies
        (``corruption.source=generate``: :class:`.copies.CorruptedCopies`; ``dataset``: the ``pair_id`` column's
        pairs) and the sampler :class:`.sampler.PairSampler`, so a clean prompt and its copies share a batch.

        Raises:
            ValueError: ``corruption.source=generate`` with a training set that has a ``pair_id`` column (it is
                paired already).
        """
        super()._init_dataloader()
        if self.formulation != "reward":
            return
        if LEVEL_KEY in (getattr(getattr(self.val_dataset, "dataframe", None), "column_names", None) or []):
            self.val_dataloader = _WithLevels(self.val_dataloader)
        if not self.rac.pairs:
            return
        columns = getattr(getattr(self.train_dataset, "dataframe", None), "column_names", None) or []
        if self.rac.source == "generate":
            if PAIR_COLUMNS[0] in columns:
                raise ValueError(
                    f"rac.corruption.source=generate makes corrupted copies, but the training set has a "
                    f"{PAIR_COLUMNS[0]} column (a paired dataset, e.g. from rac-corrupt pairs): set "
                    "+rac.corruption.source=dataset to train on its pairs"
                )
            self.train_dataset = CorruptedCopies(self.train_dataset, self.rac.policy)
            if not self.train_dataset.copies:
                logger.warning("rac: no training prompt has an image: no corrupted copies, the ranking bonus only")
            pair_ids = self.train_dataset.pair_ids
        elif PAIR_COLUMNS[0] in columns:
            # None: rows of a file without the column, concatenated with a paired one
            pair_ids = [-1 if p is None else p for p in self.train_dataset.dataframe[PAIR_COLUMNS[0]]]
        else:
            return  # no pairs: verl's sampler (the bonuses step warns once)
        loader = self.train_dataloader
        if loader.batch_size != self.config.data.train_batch_size:
            logger.warning(
                "rac: prompts are fetched %d at a time (data.gen_batch_size, filter_groups): a group that verl "
                "filters out or refills can leave its clean or corrupted partner without the other in the batch "
                "(counted in rac/pair/unmatched_prompts)",
                loader.batch_size,
            )
        sampler = PairSampler(
            pair_ids, self.config.data.train_batch_size,
            shuffle=bool(self.config.data.shuffle), seed=int(self.config.data.get("seed") or 0),
        )
        self.train_dataloader = StatefulDataLoader(
            dataset=self.train_dataset, batch_size=loader.batch_size, num_workers=loader.num_workers, drop_last=True,
            collate_fn=loader.collate_fn, sampler=sampler,
        )
        if len(self.train_dataset) != len(loader.dataset):
            self._count_steps()

    def _count_steps(self) -> None:
        """verl's step counts (``steps_per_epoch``, ``total_training_steps`` unless the user set it, and the
        optimisers' schedule length), as ``_init_dataloader`` computes them, for the training set with copies."""
        config = self.config
        self.steps_per_epoch = len(self.train_dataset) // config.data.train_batch_size
        if config.trainer.total_training_steps is None:
            self.total_training_steps = self.steps_per_epoch * config.trainer.total_epochs
        optim_steps = self.total_training_steps * self.parameter_sync_step
        with open_dict(config):
            for node in ("actor_rollout_ref.actor.optim", "critic.optim"):
                if OmegaConf.select(config, node):
                    OmegaConf.select(config, node).total_training_steps = optim_steps
        logger.info(
            "rac: %d prompts per epoch with the corrupted copies: %d steps per epoch, %d training steps",
            len(self.train_dataset), self.steps_per_epoch, self.total_training_steps,
        )

    def _fetch_one_gen_batch(self):
        """verl's next prompts; in the reward formulation each row's ``extra_info["global_steps"]`` is the step
        they are trained in (verl's counter, 1 at the first step): the paper reward's format warm-up reads it
        (:mod:`.paper_reward`), and stock verl hands the reward function no step."""
        batch = super()._fetch_one_gen_batch()
        if self.formulation == "reward" and "extra_info" in batch.keys():
            batch["extra_info"] = [{**(info or {}), "global_steps": self.global_steps} for info in batch["extra_info"]]
        return batch

    def _val_metrics_update(self, data_sources, sample_uids, reward_extra_infos_dict, sample_turns, **kwargs) -> dict:
        """verl's validation metrics; in the reward formulation also the calibration metrics per data source and
        corruption level (``val-rac/*``, :func:`.paper.validation_metrics`)."""
        metrics = super()._val_metrics_update(
            data_sources, sample_uids, reward_extra_infos_dict, sample_turns, **kwargs
        )
        if self.formulation == "reward":
            metrics.update(validation_metrics(data_sources, reward_extra_infos_dict))
        return metrics

    def _setup(self) -> None:
        super()._setup()
        if self.formulation == "reward":
            return  # the actor trains with verl's own loss
        actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
        self.actor_rollout_wg.set_loss_fn(partial(rac_ppo_loss, config=actor_config, settings=self.rac))

    def _compute_advantage(self, batch, metrics: dict):
        if self.formulation == "reward":
            self._add_bonuses(batch, metrics)
            return super()._compute_advantage(batch, metrics=metrics)
        batch = super()._compute_advantage(batch, metrics=metrics)
        fields = ["uid", "rm_scores", "response_mask", "loss_mask", "old_log_probs", "entropy", "extra_fields"]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        padded = data.select("rm_scores", "response_mask", "old_log_probs", "entropy").to_padded_tensor()
        rows = rows_from_verl(
            # non-tensor fields come back as a list subclass, a NonTensorStack or an array: list() reads them all
            uid=list(data["uid"]),
            rm_scores=padded["rm_scores"],
            extra_fields=list(data["extra_fields"]),
            padding=[tag.get("is_padding", False) for tag in batch.tags],
        )
        rows_per_mini_batch = self.config.actor_rollout_ref.actor.ppo_mini_batch_size * self.config.actor_rollout_ref.rollout.n
        fields, rac_metrics = partner_fields(
            rows,
            padded["old_log_probs"],
            padded["response_mask"],
            self.rac,
            entropy=padded["entropy"],
            mini_batches=max(1, int(np.ceil(len(batch) / rows_per_mini_batch))),
        )
        metrics.update(rac_metrics)
        metrics["rac/twins"] = float(rows.twin.sum())
        if self.rac.uses_twins and not bool(rows.twin.any()):
            logger.warning(
                "rac: no corrupted twin in this step (rows from an agent loop other than %s, e.g. a dataset "
                "agent_name column, get none); the pairwise loss is 0", AGENT_LOOP_NAME,
            )
        fields["loss_mask"] = without_twins(data["loss_mask"], rows.twin)  # verl's token normaliser: clean tokens
        return tq.kv_batch_put(
            keys=batch.keys, partition_id=batch.partition_id, fields=TensorDict(fields, batch_size=len(batch))
        )

    def _add_bonuses(self, batch, metrics: dict) -> None:
        """Add the paper's bonuses to every row's ``rm_scores`` in TransferQueue (see :func:`.paper.shape_scores`)."""
        fields = ["uid", "session_id", "rm_scores", "extra_fields", *PAIR_COLUMNS]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        # TransferQueue returns a field only when every row has it: a batch without the pair columns has none
        have = [c for c in PAIR_COLUMNS if c in data.keys()]
        if have and len(have) < len(PAIR_COLUMNS):
            missing = sorted(set(PAIR_COLUMNS) - set(have))
            raise ValueError(
                f"rac: the dataset has {', '.join(have)} but not {', '.join(missing)} (all three, or none)"
            )
        if not have and self.rac.pairs and not getattr(self, "_said_no_pairs", False):
            logger.warning("rac: the batch has no %s columns: the ranking bonus only", "/".join(PAIR_COLUMNS))
            self._said_no_pairs = True  # once per run, not every step
        rows = paper_rows(
            uid=list(data["uid"]),
            session=list(data["session_id"]),
            extra_fields=list(data["extra_fields"]),
            padding=[tag.get("is_padding", False) for tag in batch.tags],
            pair_columns={c: list(data[c]) for c in PAIR_COLUMNS} if have else None,
        )
        scores = data["rm_scores"]
        lengths = scores.offsets().diff()
        shaped, rac_metrics = shape_scores(scores.to_padded_tensor(0.0), lengths, rows, self.rac)
        metrics.update(rac_metrics)
        rows_scores = [shaped[i, : lengths[i]] for i in range(len(batch))]
        nested = torch.nested.as_nested_tensor(rows_scores, layout=torch.jagged)  # as verl writes rm_scores
        fields = TensorDict({"rm_scores": nested}, batch_size=len(batch))
        tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=fields)
