"""The Ray worker setup hook: ``install()`` puts RAC into OpenRLHF in the worker process, lazily.

``rac-openrlhf`` starts Ray with ``worker_process_setup_hook="rac_losses.integrations.openrlhf.hook.install"``,
so every Ray worker runs it before any task. It checks OpenRLHF's version, then patches OpenRLHF's modules
only when the worker first imports them (an import hook on ``sys.meta_path``), reading the settings then: a
worker that never imports OpenRLHF's trainer (vLLM engines, the reference model, Ray's own workers) loads
neither it, DeepSpeed nor torch because of RAC, and keeps the thread settings Ray gives it. A failure
raises: in the hook, Ray fails the worker; in the patch, the worker's import of OpenRLHF fails. It never
trains without RAC.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rac_losses.integrations.import_patch import Patch, patch_on_import
from rac_losses.integrations.openrlhf.options import (
    ENV_VAR, PAPER_ENV_VAR, formulation_from_env, paper_from_env, settings_from_env,
)

if TYPE_CHECKING:
    from rac_losses.integrations.openrlhf.paper import PaperSettings
    from rac_losses.integrations.settings import RACSettings

__all__ = ["CONFIDENCES", "HOOK", "SUPPORTED", "check_supported", "check_version", "install"]

logger = logging.getLogger(__name__)

#: The hook's import path, as Ray's ``worker_process_setup_hook`` takes it.
HOOK = f"{__name__}.install"

#: Confidences the adapter can compute: OpenRLHF exposes log-probs and entropy, not the top-k log-probs.
CONFIDENCES = ("mean_logprob", "prob", "neg_entropy")

#: The OpenRLHF releases the adapter was tested against (its patch points are private names).
SUPPORTED = ("0.11.2",)

_TRAINER_MODULE = "openrlhf.trainer.ray.ppo_actor"
_MAKER_MODULE = "openrlhf.trainer.ppo_utils.experience_maker"
_DATASET_MODULE = "openrlhf.datasets.prompts_dataset"
_CONTROLLER_MODULE = "openrlhf.trainer.ppo_trainer"
_GENERATOR_MODULE = "openrlhf.trainer.ppo_utils.samples_generator"


def check_supported(settings: RACSettings) -> None:
    """Raise ``ValueError`` for settings this adapter cannot honour (a confidence outside :data:`CONFIDENCES`)."""
    settings.check_confidences(CONFIDENCES, "the OpenRLHF adapter")


def check_version(version: str) -> None:
    """Raise ``RuntimeError`` unless ``version`` (OpenRLHF's) is one of :data:`SUPPORTED`."""
    if version not in SUPPORTED:
        raise RuntimeError(
            f"rac: OpenRLHF {version} is not supported (tested: {', '.join(SUPPORTED)}); RAC patches OpenRLHF's "
            f"trainer internals and could silently not run: pip install 'rac-losses[openrlhf]'"
        )


def _openrlhf_version() -> str:
    return importlib.metadata.version("openrlhf")


def _patches(read: Callable[[], RACSettings]) -> dict[str, Patch]:
    def trainer(ppo_actor: ModuleType) -> None:
        from rac_losses.integrations.openrlhf.trainer import rac_trainer_class

        settings = read()
        if not hasattr(ppo_actor.ActorPPOTrainer, "rac_settings"):
            ppo_actor.ActorPPOTrainer = rac_trainer_class(ppo_actor.ActorPPOTrainer, settings)
            logger.info("rac: installed in OpenRLHF's ActorPPOTrainer (%s)", settings)

    def maker(module: ModuleType) -> None:
        from rac_losses.integrations.openrlhf.groups import with_group_ids

        cls = module.RemoteExperienceMaker
        cls.compute_advantages_and_returns = with_group_ids(cls.compute_advantages_and_returns)

    return {_TRAINER_MODULE: trainer, _MAKER_MODULE: maker}


def _paper_patches(read: Callable[[], PaperSettings]) -> dict[str, Patch]:
    """The reward formulation: schema and labels, paired prompts, bonuses, metrics (all in the controller)."""

    def dataset(module: ModuleType) -> None:
        from rac_losses.integrations.openrlhf.prompts import with_schema_and_labels

        module.preprocess_data = with_schema_and_labels(module.preprocess_data, read())

    def controller(module: ModuleType) -> None:
        from rac_losses.integrations.openrlhf.bonus import with_rac_metrics
        from rac_losses.integrations.openrlhf.prompts import with_paired_loader, with_training_step

        module.prepare_datasets = with_paired_loader(module.prepare_datasets, read())
        cls = module.BasePPOTrainer
        cls._compute_rollout_stats = with_rac_metrics(cls._compute_rollout_stats)
        with_training_step(cls)

    def generator(module: ModuleType) -> None:
        from rac_losses.integrations.openrlhf.prompts import collect_units, with_joined_units

        module._collect_prompt_batch = collect_units(module._collect_prompt_batch)
        cls = module.SamplesGenerator
        cls._dispatch_prompts_to_vllm = with_joined_units(cls._dispatch_prompts_to_vllm)

    def maker(module: ModuleType) -> None:
        from rac_losses.integrations.openrlhf.bonus import with_rac_bonus

        cls = module.RemoteExperienceMaker
        cls.compute_advantages_and_returns = with_rac_bonus(cls.compute_advantages_and_returns, read())

    return {_DATASET_MODULE: dataset, _CONTROLLER_MODULE: controller, _GENERATOR_MODULE: generator, _MAKER_MODULE: maker}


def _checked_settings() -> RACSettings:
    settings = settings_from_env()
    check_supported(settings)
    return settings


def install() -> None:
    """Patch OpenRLHF for the run's formulation, lazily.

    ``loss``: ``ppo_actor.ActorPPOTrainer`` (the RAC subclass) and the advantage step (group ids).
    ``reward``: the prompts (schema, labels), the training dataloader (paired prompts), the sample generator
    (units collected and dispatched whole), the advantage step (the bonuses) and the rollout metrics
    (see :mod:`.prompts` and :mod:`.bonus`); the actor's training is OpenRLHF's own.

    Modules already imported are patched now; the others when first imported. Idempotent. Imports neither
    OpenRLHF, DeepSpeed nor torch: Ray sets a worker's thread count (``OMP_NUM_THREADS``) after its setup
    hook, and torch reads it when first imported. The settings (from the launcher's environment variable,
    checked by the launcher before Ray started) are read and checked at the first patch: invalid ones make
    the worker's import of OpenRLHF's module fail, so it never trains without RAC.

    Raises:
        RuntimeError: no RAC settings in the environment (the worker was not started by ``rac-openrlhf``),
            or OpenRLHF's release is not supported (:func:`check_version`). At the first patch, invalid or
            unsupported settings (:func:`~rac_losses.integrations.openrlhf.options.settings_from_env`,
            :func:`check_supported`).
        importlib.metadata.PackageNotFoundError: OpenRLHF is not installed.
    """
    formulation = formulation_from_env()
    if formulation is None:
        raise RuntimeError(
            f"{ENV_VAR} and {PAPER_ENV_VAR} are not set: the RAC setup hook runs only in workers started by "
            "rac-openrlhf"
        )
    check_version(_openrlhf_version())
    if formulation == "reward":
        patches = _paper_patches(functools.cache(paper_from_env))
    else:
        patches = _patches(functools.cache(_checked_settings))
    patch_on_import(__name__, patches)
    logger.info("rac: RAC (%s formulation) will be installed when OpenRLHF's trainer modules are imported", formulation)
