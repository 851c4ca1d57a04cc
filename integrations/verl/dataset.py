"""verl's dataset with the paper's response schema appended to every prompt (``+rac.schema=true``, the default).

The ``rac`` trainer's reward formulation sets ``data.custom_cls`` to :class:`RACSchemaDataset` (path
``pkg://rac_losses.integrations.verl.dataset``) unless the user named a dataset class of their own. verl
builds the training and validation datasets from it (and its agent loops take their multi-modal helpers
from it), so every prompt, validation included, ends its last user turn with
:data:`~rac_losses.rewards.RESPONSE_SCHEMA`, as the release's prompts do. Prompt-length filtering
(``data.filter_overlong_prompts``) counts the schema's tokens.
"""

from __future__ import annotations

from typing import Any

from verl.utils.dataset.rl_dataset import RLHFDataset

from rac_losses.rewards import with_response_schema

__all__ = ["DATASET_CLASS", "RACSchemaDataset"]

#: ``(data.custom_cls.path, data.custom_cls.name)`` of :class:`RACSchemaDataset`.
DATASET_CLASS = ("pkg://rac_losses.integrations.verl.dataset", "RACSchemaDataset")


class RACSchemaDataset(RLHFDataset):
    """verl's :class:`~verl.utils.dataset.rl_dataset.RLHFDataset` whose prompts end with the response schema."""

    def _build_messages(self, example: dict, key: str) -> list:
        """verl's chat messages of ``example`` with the schema appended to the last user turn (once).

        Raises:
            ValueError: the prompt has no user turn with text (see :func:`~rac_losses.rewards.with_response_schema`).
        """
        messages: Any = example[key]
        return super()._build_messages({**example, key: with_response_schema(list(messages))}, key)
