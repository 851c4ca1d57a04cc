"""A placeholder ``rac`` trainer mode that re-raises the plugin's import error when RAC is asked for."""

from __future__ import annotations

from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer


def register_failure(error: BaseException) -> None:
    """Register trainer mode ``rac`` as a class whose construction raises ``RuntimeError`` from ``error``."""
    class RACPluginImportFailed(PPOTrainerSync):
        def __init__(self, *args, **kwargs):
            raise RuntimeError(
                f"trainer.v1.trainer_mode=rac was asked for, but rac-losses' verl plugin failed to import: {error!r}"
            ) from error

    register_trainer("rac")(RACPluginImportFailed)
