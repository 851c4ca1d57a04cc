"""rac-losses: Ranking-Aware Calibration (RAC) losses for group-based RL of vision-language models.

Pure torch functions on rows (one row = one prompt, response and image variant):

- :func:`sequence_confidence`, :func:`token_stats_from_logits`: a confidence per response;
- :func:`candidate_confidence`: a confidence over a question's valid answers (closed answer sets);
- :func:`stated_confidence`: the expected confidence the policy *states* (differentiable, digit by digit);
- :func:`ranking_group_loss`: within a prompt's group, better rollouts must be more confident;
- :func:`pairwise_corruption_loss`: the same response must be less confident on a corrupted image;
- :func:`ranking_partners`, :func:`corruption_partners`, :func:`partner_loss`: the micro-batch (row) form;
- :class:`RACConfig`, :func:`rac_loss`: both losses with one config and a metrics dict;
  :func:`rac_partners`, :func:`rac_partner_loss`: the same in the row form.

The paper's formulation (RAC's official release: reward bonuses on *stated* confidence):

- :func:`ranking_bonus`, :func:`corruption_bonus`, :func:`rac_bonus` (:mod:`rac_losses.shaping`);
- :func:`~rac_losses.rewards.paper_reward` and the response schema in :mod:`rac_losses.rewards`.

Calibration metrics (with the release's :func:`~rac_losses.metrics.calibration_summary`) live in
:mod:`rac_losses.metrics`, reward-side forms in :mod:`rac_losses.rewards`.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# A source checkout keeps integrations/ and corruption/ beside this folder; an installed package holds them
# as rac_losses.integrations and rac_losses.corruption (pyproject's package-dir). A process that imports
# the checkout itself (one started in the repository root: Ray also puts the driver's working directory on
# every worker's sys.path) finds them the same way.
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(__path__[0], "integrations")) and all(
    os.path.isfile(os.path.join(_CHECKOUT, sub, "__init__.py")) for sub in ("integrations", "corruption")
):
    __path__.append(_CHECKOUT)

#: public name -> the module that defines it. Importing ``rac_losses`` loads none of them (nor torch): a
#: framework hook under ``rac_losses.integrations`` can be imported in every worker process at no cost,
#: before the framework sets the process up (thread counts); each name loads its module on first use.
_EXPORTS: dict[str, str] = {
    "CANDIDATE_METHODS": "candidates", "candidate_confidence": "candidates",
    "CONFIDENCE_METHODS": "confidence", "sequence_confidence": "confidence",
    "RACConfig": "objective", "RACOutput": "objective", "RACPartners": "objective", "rac_loss": "objective",
    "rac_partner_loss": "objective", "rac_partners": "objective",
    "corruption_partners": "pairwise", "pairwise_corruption_loss": "pairwise",
    "Partners": "partners", "partner_loss": "partners",
    "ranking_group_loss": "ranking", "ranking_partners": "ranking",
    "RACBonus": "shaping", "corruption_bonus": "shaping", "rac_bonus": "shaping", "ranking_bonus": "shaping",
    "stated_confidence": "stated",
    "TokenStats": "token_stats", "token_stats_from_logits": "token_stats",
}

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from rac_losses.candidates import CANDIDATE_METHODS, candidate_confidence
    from rac_losses.confidence import CONFIDENCE_METHODS, sequence_confidence
    from rac_losses.objective import RACConfig, RACOutput, RACPartners, rac_loss, rac_partner_loss, rac_partners
    from rac_losses.pairwise import corruption_partners, pairwise_corruption_loss
    from rac_losses.partners import Partners, partner_loss
    from rac_losses.ranking import ranking_group_loss, ranking_partners
    from rac_losses.shaping import RACBonus, corruption_bonus, rac_bonus, ranking_bonus
    from rac_losses.stated import stated_confidence
    from rac_losses.token_stats import TokenStats, token_stats_from_logits


#: submodules reachable as attributes of the package once it is imported (``rac_losses.metrics.ece``)
_SUBMODULES = ("metrics", "rewards", "shaping", "verbalized", "corruption", "integrations")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"rac_losses.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rac_losses' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rac_losses.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))


__all__ = [
    "CANDIDATE_METHODS",
    "CONFIDENCE_METHODS",
    "Partners",
    "RACBonus",
    "RACConfig",
    "RACOutput",
    "RACPartners",
    "TokenStats",
    "candidate_confidence",
    "corruption_bonus",
    "corruption_partners",
    "pairwise_corruption_loss",
    "partner_loss",
    "rac_bonus",
    "rac_loss",
    "rac_partner_loss",
    "rac_partners",
    "ranking_bonus",
    "ranking_group_loss",
    "ranking_partners",
    "sequence_confidence",
    "stated_confidence",
    "token_stats_from_logits",
]

__version__ = "0.1.0"
