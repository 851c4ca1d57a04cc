"""verl's entry point (``[project.entry-points."verl.plugins"] rac``): registers the RAC trainer mode and agent loop.

verl swallows a plugin's import error (it only logs it at DEBUG level) and would then train without RAC,
or fail later with an unrelated message. So if the real modules fail to import, a placeholder is
registered under the trainer mode ``rac`` that raises the original error as soon as a run asks for RAC.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

try:
    from . import agent_loop, trainer  # noqa: F401  (importing registers them)
except Exception as import_error:
    logger.error("rac-losses' verl plugin failed to import: %r", import_error)
    from ._failed import register_failure

    register_failure(import_error)
    raise
