"""verl's entry point (``[project.entry-points."verl.plugins"] rac``): registers RAC in verl, lazily.

verl imports every plugin at ``import verl``: in the driver and in every Ray worker, rollout server, reward
and agent-loop process. So this module imports nothing of verl's and nothing heavy (the cost is measured by
``benchmarks_perf/bench_verl_import.py``). It puts a finder on ``sys.meta_path`` that completes three of
verl's modules when, and in the processes where, they are first imported:

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
import importlib.abc
import logging
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

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

    return OmegaConf.select(config, "rac") is not None or OmegaConf.select(config, "trainer.v1.trainer_mode") == TRAINER_MODE


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

    @functools.wraps(init)
    def checked_init(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        check_not_legacy(config)
        init(self, config, *args, **kwargs)

    cls.__init__ = checked_init


_PATCHES: dict[str, Callable[[ModuleType], None]] = {
    "verl.trainer.ppo.v1": _register_trainer,
    "verl.experimental.agent_loop.agent_loop": _register_agent_loop,
    "verl.trainer.ppo.ray_trainer": _refuse_in_legacy_trainer,
}


class _ThenPatch(importlib.abc.Loader):
    """A module's own loader, then the patch for it."""

    def __init__(self, loader: Any, patch: Callable[[ModuleType], None]) -> None:
        self.loader, self.patch = loader, patch

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        self.patch(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ... of the real loader
        return getattr(self.loader, name)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader the other finders return for the modules in :data:`_PATCHES`."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ThenPatch(spec.loader, patch)
                return spec
        return None


def install() -> None:
    """Patch the modules of :data:`_PATCHES` already imported, and the others when first imported. Idempotent."""
    if any(isinstance(finder, _PatchOnImport) for finder in sys.meta_path):
        return
    for name, patch in _PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _PatchOnImport())


install()
