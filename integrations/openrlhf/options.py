"""The RAC settings of a run, carried from the launcher to every Ray worker in an environment variable.

The loss formulation's settings go in :data:`ENV_VAR`, the reward formulation's in :data:`PAPER_ENV_VAR`;
a run sets exactly one of them, which also tells the workers the formulation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: reading which formulation a worker runs must not load torch
    from rac_losses.integrations.openrlhf.paper import PaperSettings
    from rac_losses.integrations.settings import RACSettings

__all__ = ["ENV_VAR", "PAPER_ENV_VAR", "formulation_from_env", "paper_from_env", "paper_to_env", "settings_from_env",
           "settings_to_env"]

#: The environment variable holding the run's RAC options (JSON of ``RACSettings.as_options()``).
ENV_VAR = "RAC_OPENRLHF_OPTIONS"
#: The environment variable holding the reward formulation's options (JSON of ``PaperSettings.as_options()``).
PAPER_ENV_VAR = "RAC_OPENRLHF_PAPER"


def settings_to_env(settings: RACSettings) -> dict[str, str]:
    """``{ENV_VAR: json}`` for a Ray ``runtime_env["env_vars"]``."""
    return {ENV_VAR: json.dumps(settings.as_options(), sort_keys=True)}


def settings_from_env(environ: Mapping[str, str] = os.environ) -> RACSettings:
    """The settings the launcher put in ``environ``.

    Raises:
        RuntimeError: the variable is missing (the process was not started by ``rac-openrlhf``), or it does
            not hold valid RAC options. Either way RAC would not run as asked, so nothing may go on.
    """
    from rac_losses.integrations.settings import RACSettings

    text = environ.get(ENV_VAR)
    if text is None:
        raise RuntimeError(
            f"{ENV_VAR} is not set: the RAC setup hook runs only in workers started by rac-openrlhf"
        )
    try:
        return RACSettings.from_options(json.loads(text))
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise RuntimeError(f"{ENV_VAR} does not hold valid RAC options: {e}") from e



def paper_to_env(settings: PaperSettings) -> dict[str, str]:
    """``{PAPER_ENV_VAR: json}`` for a Ray ``runtime_env["env_vars"]``."""
    return {PAPER_ENV_VAR: settings.to_json()}


def formulation_from_env(environ: Mapping[str, str] = os.environ) -> str | None:
    """``"reward"``, ``"loss"``, or None when the process was not started by ``rac-openrlhf``.

    Raises:
        RuntimeError: both variables are set.
    """
    if PAPER_ENV_VAR in environ and ENV_VAR in environ:
        raise RuntimeError(f"both {ENV_VAR} and {PAPER_ENV_VAR} are set: one run has one formulation")
    if PAPER_ENV_VAR in environ:
        return "reward"
    return "loss" if ENV_VAR in environ else None


def paper_from_env(environ: Mapping[str, str] = os.environ) -> PaperSettings:
    """The reward formulation's settings the launcher put in ``environ``.

    Raises:
        RuntimeError: the variable is missing or does not hold valid options.
    """
    from rac_losses.integrations.openrlhf.paper import PaperSettings

    text = environ.get(PAPER_ENV_VAR)
    if text is None:
        raise RuntimeError(f"{PAPER_ENV_VAR} is not set: the RAC setup hook runs only in workers started by rac-openrlhf")
    try:
        return PaperSettings.from_json(text)
    except (ValueError, TypeError) as e:
        raise RuntimeError(f"{PAPER_ENV_VAR} does not hold valid RAC options: {e}") from e
