"""Prompt-group ids for the ranking loss, added where OpenRLHF computes advantages.

OpenRLHF numbers a rollout batch's samples prompt by prompt (``index``, ``n_samples_per_prompt`` samples
per prompt, as its group baselines assume) and drops that index when the replay buffer splits experiences.
The wrapper stores ``rollout * 2**32 + index // n_samples_per_prompt`` as ``info["rac_group"]``, a
per-sample entry that survives the replay buffer's split and shuffle (it comes back as a list of 0-d
tensors). ``rollout`` counts the maker's calls, so ids never collide when the actor's buffer holds several
rollouts (a GAE critic with ``--critic.freezing_steps > 0`` skips the actor's ``fit`` while the buffer grows).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["GROUP_KEY", "with_group_ids"]

GROUP_KEY = "rac_group"
_ROLLOUT_SHIFT = 32  # groups per rollout < 2**32


def with_group_ids(compute: Callable[[Any, list], list]) -> Callable[[Any, list], list]:
    """Wrap ``RemoteExperienceMaker.compute_advantages_and_returns`` to add ``info["rac_group"]`` ``[B]``.

    Raises:
        ValueError: an experience without ``index`` (OpenRLHF sets it when it splits a rollout batch).
    """
    if getattr(compute, "rac_groups", False):
        return compute

    @functools.wraps(compute)
    def compute_with_groups(self: Any, experiences: list) -> list:
        n = int(self.args.rollout.n_samples_per_prompt)
        rollout = getattr(self, "_rac_rollouts", 0)
        self._rac_rollouts = rollout + 1
        for experience in experiences:
            if experience.index is None:
                raise ValueError("rac: an experience has no index; the prompt groups of the ranking loss are unknown")
            group = torch.as_tensor(experience.index, dtype=torch.long) // n
            experience.info[GROUP_KEY] = group + (rollout << _ROLLOUT_SHIFT)
        return compute(self, experiences)

    compute_with_groups.rac_groups = True  # type: ignore[attr-defined]
    return compute_with_groups
