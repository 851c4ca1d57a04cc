"""The paper's formulation in OpenRLHF (``--rac.formulation reward``, the default): the per-prompt label.

The formulation's options are :class:`~rac_losses.integrations.paper_settings.PaperSettings` (re-exported
here with :data:`FORMULATIONS` and :func:`paper_option_names`).

:class:`RACLabel` carries each prompt's pair id, corruption level, training step and answer options through
OpenRLHF's rollout (vLLM engines, the reward function, the experiences) as the prompt's label: it *is* the
label string, so any reward function reads it as before.
"""

from __future__ import annotations

from typing import Any

from rac_losses.integrations.paper_settings import FORMULATIONS, PaperSettings, paper_option_names

__all__ = ["FORMULATIONS", "PaperSettings", "RACLabel", "paper_option_names"]


class RACLabel(str):
    """A prompt's label (the dataset's string) with RAC's facts about the prompt as attributes.

    Attributes:
        pair: id shared by a clean prompt and its corrupted copy; negative = no pair.
        level: 0 for a clean prompt, the corruption level (severity / 5) of a corrupted one.
        unit: prompts with one unit id are dispatched and collected together (one rollout batch); None
            outside the training rollout.
        step: the training step of the rollout (the reward's format warm-up); None outside training.
        choices: the answer options (a list, a mapping or its JSON), or None.
        multiple_choice: whether the question has options; None = the run's default.
    """

    pair: int
    level: float
    unit: int | None
    step: int | None
    choices: Any
    multiple_choice: bool | None

    def __new__(cls, text: str, **attrs: Any) -> RACLabel:
        if not isinstance(text, str):
            raise TypeError(f"a label must be a str (the column --data.label_key names), got {type(text).__name__}")
        self = super().__new__(cls, text)
        base = text.__dict__ if isinstance(text, RACLabel) else {}
        fields = {"pair": -1, "level": 0.0, "unit": None, "step": None, "choices": None, "multiple_choice": None}
        unknown = set(attrs) - set(fields)
        if unknown:
            raise TypeError(f"unknown RACLabel attribute(s) {', '.join(sorted(unknown))}")
        self.__dict__.update({**fields, **base, **attrs})
        return self

    def but(self, **attrs: Any) -> RACLabel:
        """A copy with ``attrs`` changed."""
        return RACLabel(self, **attrs)

    def __reduce__(self) -> tuple:  # Ray pickles labels to the vLLM engines and back
        return (_label, (str(self), dict(self.__dict__)))


def _label(text: str, attrs: dict) -> RACLabel:
    return RACLabel(text, **attrs)
