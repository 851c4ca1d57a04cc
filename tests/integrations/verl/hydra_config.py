"""Test-only: verl 0.9.1's own ``ppo_trainer`` Hydra config, composed with overrides as ``main_ppo`` does."""

from __future__ import annotations

import os

import verl
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

GRPO = (
    "algorithm.adv_estimator=grpo",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
)


def compose_ppo(*overrides: str, base: tuple[str, ...] = GRPO) -> DictConfig:
    """verl's ``ppo_trainer`` config with ``base`` then ``overrides`` applied (later ones win)."""
    config_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=[*base, *overrides])
