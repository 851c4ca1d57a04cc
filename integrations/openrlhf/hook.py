"""The Ray worker setup hook: ``install()`` puts RAC into OpenRLHF in the worker process.

``rac-openrlhf`` starts Ray with ``worker_process_setup_hook="rac_losses.integrations.openrlhf.hook.install"``,
so every Ray worker (the PPO controller and each actor rank) runs it before any task. A failure raises, and
Ray then fails the worker instead of letting it train without RAC.
"""

from __future__ import annotations

import logging

from rac_losses.integrations.openrlhf.groups import with_group_ids
from rac_losses.integrations.openrlhf.options import settings_from_env
from rac_losses.integrations.openrlhf.trainer import rac_trainer_class
from rac_losses.integrations.settings import RACSettings

__all__ = ["CONFIDENCES", "HOOK", "check_supported", "install"]

logger = logging.getLogger(__name__)

#: The hook's import path, as Ray's ``worker_process_setup_hook`` takes it.
HOOK = f"{__name__}.install"


#: Confidences the adapter can compute: OpenRLHF exposes log-probs and entropy, not the top-k log-probs.
CONFIDENCES = ("mean_logprob", "prob", "neg_entropy")


def check_supported(settings: RACSettings) -> None:
    """Raise ``ValueError`` for settings this adapter cannot honour (a confidence outside :data:`CONFIDENCES`)."""
    settings.check_confidences(CONFIDENCES, "the OpenRLHF adapter")


def install() -> None:
    """Replace ``ppo_actor.ActorPPOTrainer`` with the RAC subclass and add group ids at advantage time.

    Idempotent. Reads the settings from the launcher's environment variable.

    Raises:
        RuntimeError: the settings are missing or invalid (see
            :func:`~rac_losses.integrations.openrlhf.options.settings_from_env`).
        ValueError: unsupported settings (:func:`check_supported`).
        ImportError: OpenRLHF cannot be imported.
    """
    settings = settings_from_env()
    check_supported(settings)
    import openrlhf.trainer.ray.ppo_actor as ppo_actor
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    if not hasattr(ppo_actor.ActorPPOTrainer, "rac_settings"):
        ppo_actor.ActorPPOTrainer = rac_trainer_class(ppo_actor.ActorPPOTrainer, settings)
    RemoteExperienceMaker.compute_advantages_and_returns = with_group_ids(
        RemoteExperienceMaker.compute_advantages_and_returns
    )
    logger.info("rac: installed in OpenRLHF (%s)", settings)
