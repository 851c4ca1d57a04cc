"""verl reward hook of the paper's formulation: RAC's release's per-sample reward (:func:`~rac_losses.rewards.paper_reward`).

Use it as ``reward.custom_reward_function.path=pkg://rac_losses.integrations.verl.paper_reward`` and
``reward.custom_reward_function.name=compute_score``; the reward's options go in
``reward.custom_reward_function.reward_kwargs`` (``format_coef``, ``format_warmup_steps``,
``format_warmup_start``, ``tail_penalty_coef``, ``multiple_choice``; defaults: the release's).

Per row, from its ``extra_info`` (the dataset's, as verl's reward loop hands it on): ``is_multiple_choice``
(else the ``multiple_choice`` option), ``choices`` (the options, for answers given as option text),
``global_steps`` (the training step of the format warm-up, the key the release reads; the ``rac`` trainer
puts it there; without it the penalty is ``format_coef`` from the start) and ``corruption_level`` (a
validation row's, put there by the ``rac`` trainer; returned as is, so that validation reports per level).

The returned dict becomes the row's ``reward_extra_info`` in verl: ``score`` is what verl trains on,
``reward_acc`` what the ranking and corruption bonuses compare, ``confidence`` what they compare it with
(``MISSING_CONFIDENCE``, -1, when none reads).
"""

from __future__ import annotations

from typing import Any

from rac_losses.rewards import MISSING_CONFIDENCE, paper_reward

__all__ = ["REWARD_OPTIONS", "compute_score"]

#: The reward's options (``reward_kwargs``), as :func:`~rac_losses.rewards.paper_reward` names them.
REWARD_OPTIONS = ("format_coef", "format_warmup_steps", "format_warmup_start", "tail_penalty_coef", "multiple_choice")


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **reward_kwargs: Any
) -> dict[str, float]:
    """verl's ``compute_score`` signature (``data_source`` is not read: one rule for every benchmark).

    Returns:
        ``{"score", "score_raw", "acc", "reward_acc", "confidence", "format_ok"}``, all floats
        (``format_ok`` 0 or 1, ``confidence`` -1 when missing), and ``corruption_level`` when ``extra_info``
        has one.

    Raises:
        TypeError: an unknown option in ``reward_kwargs`` (naming it), or a value :func:`paper_reward`
            refuses; ValueError: likewise (see :func:`~rac_losses.rewards.paper_reward`).
    """
    unknown = sorted(set(reward_kwargs) - set(REWARD_OPTIONS))
    if unknown:
        raise TypeError(
            f"unknown paper reward option(s) {', '.join(unknown)} in reward_kwargs; expected some of {', '.join(REWARD_OPTIONS)}"
        )
    info = extra_info or {}
    options = dict(reward_kwargs)
    multiple_choice = options.pop("multiple_choice", True)
    if info.get("is_multiple_choice") is not None:
        multiple_choice = info["is_multiple_choice"]
    step = info.get("global_steps")
    result = paper_reward(
        solution_str, str(ground_truth), is_multiple_choice=bool(multiple_choice), choices=info.get("choices"),
        step=None if step is None else int(step), **options,
    )
    out = {
        "score": result.score,
        "score_raw": result.score_raw,
        "acc": result.acc,
        "reward_acc": result.reward_acc,
        "confidence": MISSING_CONFIDENCE if result.confidence is None else result.confidence,
        "format_ok": float(result.format_ok),
    }
    if info.get("corruption_level") is not None:
        out["corruption_level"] = float(info["corruption_level"])
    return out
