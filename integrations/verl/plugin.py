"""verl's entry point (``[project.entry-points."verl.plugins"] rac``): registers RAC in verl, lazily.

verl imports every plugin at ``import verl``: in the driver and in every Ray worker, rollout server, reward
and agent-loop process. So this module imports nothing of verl's and nothing heavy (the cost is measured by
``benchmarks_perf/bench_verl_import.py``). It patches three of verl's modules when, and in the processes
where, they are first imported (:func:`rac_losses.integrations.import_patch.patch_on_import`):

- ``verl.trainer.ppo.v1`` (the v1 trainer): registers the trainer mode ``rac`` (:mod:`.trainer`). If that
  module fails to import, ``rac`` is registered as a placeholder that raises the error as soon as a run asks
  for RAC, instead of verl's "Unknown trainer 'rac'". If ``verl.trainer.ppo.v1`` itself fails to import
  (TransferQueue missing, say), nothing of the plugin runs and the importer sees verl's own error.
- ``verl.experimental.agent_loop.agent_loop``: registers the agent loop ``rac_single_turn`` by its import
  path (verl imports the class where a worker builds the loop, so an import error is raised there, in full).
- ``verl.trainer.ppo.ray_trainer`` (the legacy trainer, ``trainer.use_v1=false``): its trainer refuses a
  config that asks for RAC, which it would otherwise ignore, training plain GRPO.
"""

from __future__ import annotations

import functools
import importlib
import logging
from types import ModuleType
from typing import Any

from rac_losses.integrations.import_patch import Patch, patch_on_import

__all__ = ["AGENT_LOOP_NAME", "TRAINER_MODE", "asks_for_rac", "check_not_legacy", "install"]

logger = logging.getLogger(__name__)

#: ``trainer.v1.trainer_mode`` value that turns RAC on.
TRAINER_MODE = "rac"
#: ``actor_rollout_ref.rollout.agent.default_agent_loop`` value of the corrupted-twin agent loop.
AGENT_LOOP_NAME = "rac_single_turn"

_TRAINER = "rac_losses.integrations.verl.trainer"
_AGENT_LOOP_CLASS = "rac_losses.integrations.verl.agent_loop.RACSingleTurnAgentLoop"


def asks_for_rac(config: Any) -> bool:
    """Whether verl's ``config`` asks for RAC: ``trainer.v1.trainer_mode=rac`` or a top-level ``rac`` node."""
    from omegaconf import OmegaConf

    mode = OmegaConf.select(config, "trainer.v1.trainer_mode")
    return OmegaConf.select(config, "rac") is not None or mode == TRAINER_MODE


def check_not_legacy(config: Any) -> None:
    """Refuse a config that asks for RAC in verl's legacy trainer.

    Raises:
        ValueError: :func:`asks_for_rac` (the legacy trainer ignores ``trainer.v1.trainer_mode`` and ``rac``).
    """
    if asks_for_rac(config):
        raise ValueError(
            "rac runs in verl's v1 trainer only: trainer.use_v1=false selects the legacy trainer, which ignores "
            "trainer.v1.trainer_mode=rac and the rac options and would train without RAC; set trainer.use_v1=true "
            "(verl's default)"
        )


def _register_trainer(v1: ModuleType) -> None:
    try:
        importlib.import_module(_TRAINER)
    except Exception as error:
        logger.error("rac-losses' verl trainer failed to import: %r", error)
        from ._failed import register_failure

        register_failure(error)


def _register_agent_loop(agent_loop: ModuleType) -> None:
    # what verl's own ``register`` decorator records: the class's import path, imported when a loop is built
    agent_loop._agent_loop_registry.setdefault(AGENT_LOOP_NAME, {"_target_": _AGENT_LOOP_CLASS})


def _refuse_in_legacy_trainer(ray_trainer: ModuleType) -> None:
    cls = ray_trainer.RayPPOTrainer
    init = cls.__init__
    if getattr(init, "_rac_refuses", False):
        return

    @functools.wraps(init)
    def checked_init(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        check_not_legacy(config)
        init(self, config, *args, **kwargs)

    checked_init._rac_refuses = True  # type: ignore[attr-defined]
    cls.__init__ = checked_init


_PATCHES: dict[str, Patch] = {
    "verl.trainer.ppo.v1": _register_trainer,
    "verl.experimental.agent_loop.agent_loop": _register_agent_loop,
    "verl.trainer.ppo.ray_trainer": _refuse_in_legacy_trainer,
}


def install() -> None:
    """Patch the modules of :data:`_PATCHES` already imported, and the others when first imported. Idempotent."""
    patch_on_import(__name__, _PATCHES)


install()
