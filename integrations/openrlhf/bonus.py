"""The paper's bonuses where OpenRLHF computes advantages, and their ``rac/*`` metrics.

:func:`with_rac_bonus` wraps ``RemoteExperienceMaker.compute_advantages_and_returns``: before OpenRLHF's
own code runs (length penalties, the estimator's baseline, KL, returns, advantages), every sample's scalar
reward gets :func:`rac_losses.rac_bonus` of the whole rollout batch:
``reward + rank_coef * ranking_bonus + pair_coef * corruption_bonus``. So every estimator OpenRLHF offers
(``gae``, ``reinforce``, ``reinforce_baseline``, ``rloo``, ``group_norm``, ``dr_grpo``, ``flash_reinforce``)
sees the shaped reward, exactly as the release adds its bonuses before its estimators.

Per sample it reads: the stated confidence and ``reward_acc`` from the reward function's ``extra_logs``
(``info["confidence"]``, ``info["reward_acc"]``; the shipped reward file gives both, and ``acc`` and
``format_ok`` for the metrics), the prompt group ``index // n_samples_per_prompt`` (OpenRLHF's own numbering,
which its group baselines use), and the pair id and corruption level from the sample's label
(:class:`~.paper.RACLabel`; a plain label = a clean prompt without pair).

:func:`with_rac_metrics` wraps ``BasePPOTrainer._compute_rollout_stats`` to add the maker's ``rac/*``
metrics of the batch to OpenRLHF's logs: the bonuses, pair counts, the clean-minus-corrupted confidence and
:func:`rac_losses.metrics.calibration_summary` of the rollout (``rac/calibration/*``, clean prompts only,
and ``rac/corrupted/calibration/*``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from rac_losses import rac_bonus
from rac_losses.integrations.openrlhf.paper import PaperSettings
from rac_losses.metrics import calibration_summary

__all__ = ["METRICS_ATTR", "rollout_rows", "with_rac_bonus", "with_rac_metrics"]

#: The maker's attribute holding the last batch's ``rac/*`` metrics.
METRICS_ATTR = "rac_metrics"
_NEEDED = ("confidence", "reward_acc")


def _column(experiences: list, key: str) -> torch.Tensor:
    parts = []
    for e in experiences:
        if key not in e.info:
            raise KeyError(
                f"rac: the reward function returned no extra_logs[{key!r}]; the paper's bonuses need "
                f"{' and '.join(_NEEDED)} per sample (the reward file shipped with rac-losses gives them: "
                "--reward.remote_url $(python -c 'import rac_losses.integrations.openrlhf.reward as r; print(r.__file__)'))"
            )
        value = e.info[key]
        parts.append(torch.stack(list(value)) if isinstance(value, list) else torch.as_tensor(value))
    return torch.cat([p.reshape(-1) for p in parts]).double()


def _decimal(values: torch.Tensor) -> torch.Tensor:
    """float32 values back as float64 decimals: each the shortest decimal float32 rounds to it.

    OpenRLHF stores every ``extra_logs`` value as float32, and a stated ``0.3`` comes back as 0.30000001: on
    the far side of the release's right-closed ECE bin edge. Read back this way it is 0.3 again (as the
    release, which never leaves float64, has it); values finer than float32 keep float32's precision.
    """
    return torch.tensor(
        [float(np.format_float_positional(np.float32(v), unique=True)) for v in values.tolist()], dtype=torch.float64
    )


def rollout_rows(experiences: list, n: int) -> dict[str, torch.Tensor]:
    """The rollout batch's per-sample inputs of :func:`rac_losses.rac_bonus`, in the experiences' order.

    ``index`` is each row's position in OpenRLHF's numbering (prompt by prompt, ``n`` samples each).
    """
    index = torch.tensor(list(itertools.chain.from_iterable(e.index for e in experiences)), dtype=torch.long)
    labels = list(itertools.chain.from_iterable(e.labels for e in experiences))
    if len(labels) != index.numel():
        raise ValueError(f"rac: {len(labels)} labels for {index.numel()} samples")
    return {
        "index": index,
        "confidence": _decimal(_column(experiences, "confidence")),
        "correct": _column(experiences, "reward_acc"),
        "group": index // n,
        "pair": torch.tensor([int(getattr(lab, "pair", -1)) for lab in labels], dtype=torch.long),
        "level": torch.tensor([float(getattr(lab, "level", 0.0)) for lab in labels], dtype=torch.float64),
    }


def _calibration(prefix: str, rows: dict, keep: torch.Tensor, acc: torch.Tensor | None, fmt: torch.Tensor | None) -> dict:
    if not bool(keep.any()) or acc is None:
        return {}
    summary = calibration_summary(
        rows["confidence"][keep], acc[keep], group=rows["group"][keep], format_ok=None if fmt is None else fmt[keep]
    )
    return {f"{prefix}{k}": v for k, v in summary.items()}


def _metrics(rows: dict, result: Any, experiences: list, order: torch.Tensor) -> dict[str, float]:
    out = {f"rac/{k}": v for k, v in result.metrics.items()}
    corrupted = rows["level"] > 0
    clean_paired = (rows["pair"] >= 0) & ~corrupted
    out["rac/pair/clean_prompts"] = float(len(set(rows["group"][clean_paired].tolist())))
    out["rac/pair/corrupted_prompts"] = float(len(set(rows["group"][corrupted].tolist())))
    out["rac/bonus/ranking_mean"] = float(result.ranking.mean())
    out["rac/bonus/corruption_mean"] = float(result.corruption.mean())
    has = rows["confidence"] >= 0
    for name, mask in (("clean", ~corrupted), ("corrupted", corrupted)):
        m = mask & has
        if bool(m.any()):
            out[f"rac/{name}/confidence_mean"] = float(rows["confidence"][m].mean())
    acc = _column(experiences, "acc")[order] if all("acc" in e.info for e in experiences) else None
    fmt = _column(experiences, "format_ok")[order] if all("format_ok" in e.info for e in experiences) else None
    out.update(_calibration("rac/calibration/", rows, ~corrupted, acc, fmt))
    out.update(_calibration("rac/corrupted/calibration/", rows, corrupted, acc, fmt))
    return out


def with_rac_bonus(compute: Callable[[Any, list], list], settings: PaperSettings) -> Callable[[Any, list], list]:
    """Wrap ``RemoteExperienceMaker.compute_advantages_and_returns`` (see the module docstring).

    Raises:
        KeyError: the reward function gave no ``confidence`` or ``reward_acc`` per sample.
        ValueError: an experience without ``index`` or rewards.
    """
    if getattr(compute, "rac_bonus", False):
        return compute
    options = settings.bonus_options()
    with_pairs = settings.pairs

    @functools.wraps(compute)
    def compute_with_bonus(self: Any, experiences: list) -> list:
        if any(e.index is None or e.rewards is None for e in experiences):
            raise ValueError("rac: an experience has no index or no rewards; the paper's bonuses cannot be placed")
        unordered = rollout_rows(experiences, int(self.args.rollout.n_samples_per_prompt))
        # in OpenRLHF's numbering: the k-th sample of a clean prompt meets the k-th of its corrupted copy
        order = torch.argsort(unordered["index"])
        rows = {k: v[order] for k, v in unordered.items()}
        pair, level = (rows["pair"], rows["level"]) if with_pairs else (None, None)
        result = rac_bonus(rows["confidence"], rows["correct"], rows["group"], pair, level, **options)
        bonuses = torch.empty_like(result.bonus)
        bonuses[order] = result.bonus
        for experience, bonus in zip(experiences, bonuses.split([len(e.index) for e in experiences])):
            rewards = experience.rewards.to(torch.promote_types(experience.rewards.dtype, torch.float32))
            experience.rewards = rewards + bonus.to(rewards.dtype)
        metrics = _metrics(rows, result, experiences, order)
        metrics["rac/shaped_reward_mean"] = float(torch.cat([e.rewards.reshape(-1) for e in experiences]).double().mean())
        setattr(self, METRICS_ATTR, metrics)
        return compute(self, experiences)

    compute_with_bonus.rac_bonus = True  # type: ignore[attr-defined]
    return compute_with_bonus


def with_rac_metrics(stats: Callable[[Any, list], dict]) -> Callable[[Any, list], dict]:
    """Wrap ``BasePPOTrainer._compute_rollout_stats``: add the experience maker's ``rac/*`` metrics.

    Raises:
        RuntimeError: the maker has none (its advantage step did not go through :func:`with_rac_bonus`:
            RAC would be silently off).
    """
    if getattr(stats, "rac_metrics", False):
        return stats

    @functools.wraps(stats)
    def compute_rollout_stats(self: Any, experiences: list) -> dict:
        out = stats(self, experiences)
        metrics = getattr(self.experience_maker, METRICS_ATTR, None)
        if metrics is None:
            raise RuntimeError(
                "rac: OpenRLHF's advantage step ran without the RAC bonuses (an unsupported OpenRLHF release?)"
            )
        setattr(self.experience_maker, METRICS_ATTR, None)
        return {**out, **metrics}

    compute_rollout_stats.rac_metrics = True  # type: ignore[attr-defined]
    return compute_rollout_stats
