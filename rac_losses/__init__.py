"""rac-losses: Ranking-Aware Calibration (RAC) losses for group-based RL of vision-language models.

Pure torch functions on rows (one row = one prompt, response and image variant):

- :func:`sequence_confidence`, :func:`token_stats_from_logits`: a confidence per response;
- :func:`candidate_confidence`: a confidence over a question's valid answers (closed answer sets);
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

from rac_losses.candidate_confidence import CANDIDATE_METHODS, candidate_confidence
from rac_losses.confidence import CONFIDENCE_METHODS, sequence_confidence
from rac_losses.objective import RACConfig, RACOutput, RACPartners, rac_loss, rac_partner_loss, rac_partners
from rac_losses.pairwise import corruption_partners, pairwise_corruption_loss
from rac_losses.partners import Partners, partner_loss
from rac_losses.ranking import ranking_group_loss, ranking_partners
from rac_losses.shaping import RACBonus, corruption_bonus, rac_bonus, ranking_bonus
from rac_losses.token_stats import TokenStats, token_stats_from_logits

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
    "token_stats_from_logits",
]

__version__ = "0.1.0"
