"""The paper's formulation (``rac.formulation=reward``, the default of both adapters): its validated options.

RAC's release trains on a per-sample reward (:func:`rac_losses.rewards.paper_reward`) plus the ranking and
clean-corrupted bonuses of :mod:`rac_losses.shaping`, added to the scalar reward before the advantage
estimator. :class:`PaperSettings` holds the options (OpenRLHF: ``--rac.NAME VALUE``; verl:
``+rac.NAME=VALUE``; defaults are the release's):

- ``schema`` (true): append :data:`~rac_losses.rewards.RESPONSE_SCHEMA` to every prompt's last user turn;
- ``rank_coef`` 0.2, ``pair_coef`` 0.3, ``rank_margin`` 0.05, ``pair_margin`` 0.05, ``alpha`` 0.1: the
  arguments of :func:`rac_losses.rac_bonus`;
- ``reward.format_coef`` 0.3, ``reward.format_warmup_steps`` 10, ``reward.format_warmup_start`` 1.0,
  ``reward.tail_penalty_coef`` 0.2, ``reward.multiple_choice`` (true; a dataset column
  ``is_multiple_choice`` overrides it per row): the options of :func:`~rac_losses.rewards.paper_reward`;
- ``corruption.source``: ``generate`` (a corrupted copy of a prompt's images, made on the fly), ``dataset``
  (the dataset's own pairs: columns ``pair_id``, ``is_noisy``, ``corruption_level``) or ``off``;
- ``corruption.fraction`` (1.0): the share of clean rollouts with a corrupted counterpart, drawn per image
  prompt (a generated copy, whose k-th rollout is the counterpart of the prompt's k-th; the loss
  formulation's option of that name has the same meaning, drawn per rollout);
- ``corruption.names`` (the release's 8 with its own definitions, the ``paper`` preset of
  :mod:`rac_losses.corruption`), ``corruption.severities`` (1,2,3), ``corruption.weights``
  (0.5,0.4,0.1: the paper's mix of levels 0.2/0.4/0.6), ``corruption.seed`` (0).

Each adapter says which of them it implements (verl: see :mod:`rac_losses.integrations.verl.paper`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from rac_losses.corruption import PAPER_CORRUPTIONS, CorruptionPolicy

__all__ = ["FORMULATIONS", "PaperSettings", "paper_option_names"]

#: ``rac.formulation`` values; the first is the default.
FORMULATIONS = ("reward", "loss")

_SOURCES = ("generate", "dataset", "off")
_REWARD_KEYS = ("format_coef", "format_warmup_steps", "format_warmup_start", "tail_penalty_coef", "multiple_choice")
_BONUS_KEYS = ("rank_coef", "pair_coef", "rank_margin", "pair_margin", "alpha")


def _bool(text: Any, name: str) -> bool:
    if isinstance(text, bool):
        return text
    if isinstance(text, str) and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    raise ValueError(f"rac.{name}: expected true or false, got {text!r}")


def _number(text: Any, name: str, kind: type = float) -> Any:
    if isinstance(text, bool):
        raise ValueError(f"rac.{name}: expected a number, got {text!r}")
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"rac.{name}: expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"rac.{name}: expected a finite number >= 0, got {text!r}")
    if kind is int:
        if not value.is_integer():
            raise ValueError(f"rac.{name}: expected an integer, got {text!r}")
        return int(value)
    return value


def _items(text: Any) -> list[str]:
    if isinstance(text, str):
        text = text.strip().removeprefix("[").removesuffix("]")
        return [v.strip().strip("'\"") for v in text.split(",") if v.strip()]
    if isinstance(text, Sequence):
        return [str(v) for v in text]
    raise ValueError(f"expected a comma-separated list, got {text!r}")


@dataclasses.dataclass(frozen=True)
class PaperSettings:
    """Validated options of the reward formulation (see the module docstring)."""

    schema: bool = True
    rank_coef: float = 0.2
    pair_coef: float = 0.3
    rank_margin: float = 0.05
    pair_margin: float = 0.05
    alpha: float = 0.1
    format_coef: float = 0.3
    format_warmup_steps: int = 10
    format_warmup_start: float = 1.0
    tail_penalty_coef: float = 0.2
    multiple_choice: bool = True
    source: str = "generate"
    fraction: float = 1.0
    names: tuple[str, ...] = PAPER_CORRUPTIONS
    severities: tuple[int, ...] = (1, 2, 3)
    weights: tuple[float, ...] = (0.5, 0.4, 0.1)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in _SOURCES:
            raise ValueError(f"rac.corruption.source: expected one of {', '.join(_SOURCES)}, got {self.source!r}")
        try:
            self.policy  # noqa: B018  (validates names, severities, fraction, seed)
        except (TypeError, ValueError) as e:
            raise ValueError(f"rac.corruption: {e}") from e

    @property
    def policy(self) -> CorruptionPolicy:
        """The generated copies' corruption: a name drawn uniformly, a severity by weight (as
        ``rac-corrupt pairs`` draws them for the same seed)."""
        return CorruptionPolicy(
            names=self.names, severities=self.severities, severity_weights=self.weights, fraction=self.fraction,
            seed=self.seed,
        )

    @property
    def pairs(self) -> bool:
        """Whether the run has clean-corrupted pairs (a source, and a corruption bonus that is not 0)."""
        return self.source != "off" and self.pair_coef > 0

    def reward_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~rac_losses.rewards.paper_reward` (``multiple_choice`` excluded)."""
        return {k: getattr(self, k) for k in _REWARD_KEYS if k != "multiple_choice"}

    def bonus_options(self) -> dict[str, float]:
        """The keyword arguments of :func:`~rac_losses.rac_bonus`."""
        return {k: getattr(self, k) for k in _BONUS_KEYS}

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> PaperSettings:
        """Read flat dotted options (strings as on the command line, or typed values).

        Raises:
            ValueError: an unknown option (naming the loss formulation's options as such), or a bad value
                (the message names the option).
        """
        names = set(paper_option_names())
        unknown = sorted(set(options) - names)
        if unknown:
            raise ValueError(
                f"rac option(s) {', '.join(unknown)} are not options of --rac.formulation reward (some are options "
                f"of --rac.formulation loss); expected some of {', '.join(paper_option_names())}"
            )
        kw: dict[str, Any] = {}
        for name, value in options.items():
            key = name.split(".", 1)[1] if "." in name else name
            if name == "schema" or name == "reward.multiple_choice":
                kw[key] = _bool(value, name)
            elif name in ("reward.format_warmup_steps", "corruption.seed"):
                kw[key] = _number(value, name, int)
            elif name == "corruption.source":
                kw[key] = str(value)
            elif name == "corruption.names":
                kw[key] = tuple(_items(value))
            elif name == "corruption.severities":
                kw[key] = tuple(_number(v, name, int) for v in _items(value))
            elif name == "corruption.weights":
                kw[key] = tuple(_number(v, name) for v in _items(value))
            else:
                kw[key] = _number(value, name)
        if kw.get("fraction", 0.0) > 1:
            raise ValueError(f"rac.corruption.fraction: expected a share in [0, 1], got {kw['fraction']}")
        return cls(**kw)

    def as_options(self) -> dict[str, Any]:
        """Flat dotted options (``from_options(s.as_options()) == s``)."""
        out: dict[str, Any] = {"schema": self.schema, **self.bonus_options()}
        out.update({f"reward.{k}": getattr(self, k) for k in _REWARD_KEYS})
        for key in ("source", "fraction", "names", "severities", "weights", "seed"):
            value = getattr(self, key)
            out[f"corruption.{key}"] = list(value) if isinstance(value, tuple) else value
        return out

    def to_json(self) -> str:
        return json.dumps(self.as_options(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PaperSettings:
        return cls.from_options(json.loads(text))


def paper_option_names() -> tuple[str, ...]:
    """Every option of the reward formulation, dotted, in documentation order."""
    return (
        "schema", *_BONUS_KEYS, *(f"reward.{k}" for k in _REWARD_KEYS),
        *(f"corruption.{k}" for k in ("source", "fraction", "names", "severities", "weights", "seed")),
    )
