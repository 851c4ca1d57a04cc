"""The RAC settings of a run, carried from the launcher to every Ray worker in one environment variable."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from rac_losses.integrations.settings import RACSettings

__all__ = ["ENV_VAR", "settings_from_env", "settings_to_env"]

#: The environment variable holding the run's RAC options (JSON of ``RACSettings.as_options()``).
ENV_VAR = "RAC_OPENRLHF_OPTIONS"


def settings_to_env(settings: RACSettings) -> dict[str, str]:
    """``{ENV_VAR: json}`` for a Ray ``runtime_env["env_vars"]``."""
    return {ENV_VAR: json.dumps(settings.as_options(), sort_keys=True)}


def settings_from_env(environ: Mapping[str, str] = os.environ) -> RACSettings:
    """The settings the launcher put in ``environ``.

    Raises:
        RuntimeError: the variable is missing (the process was not started by ``rac-openrlhf``), or it does
            not hold valid RAC options. Either way RAC would not run as asked, so nothing may go on.
    """
    text = environ.get(ENV_VAR)
    if text is None:
        raise RuntimeError(
            f"{ENV_VAR} is not set: the RAC setup hook runs only in workers started by rac-openrlhf"
        )
    try:
        return RACSettings.from_options(json.loads(text))
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise RuntimeError(f"{ENV_VAR} does not hold valid RAC options: {e}") from e

