"""The ``rac`` options both adapters share: loss knobs (:class:`~rac_losses.RACConfig`) and corrupted twins.

verl takes them as Hydra overrides (``+rac.rank_coef=0.5 +rac.corruption.fraction=0.5``), OpenRLHF's
launcher as flags (``--rac.rank_coef 0.5 --rac.corruption.fraction 0.5``). Both hand a mapping to
:meth:`RACSettings.from_options`, which accepts nested mappings or dotted keys, typed values or strings,
and raises a ``ValueError`` naming the option on anything it does not know or cannot read.

Options:
    every :class:`~rac_losses.RACConfig` field (``rank_coef``, ``pair_coef``, ``rank_confidence``, ...);
    ``corruption.names``: corruption names (default: the 15 ImageNet-C corruptions);
    ``corruption.severities``: severities to draw from (default ``1..5``);
    ``corruption.fraction``: share of clean rollouts with a corrupted counterpart, drawn per rollout (its
    twin; default 0.5; the reward formulation's option of that name has the same meaning, drawn per prompt);
    ``corruption.seed``: seed of the per-rollout choice (default 0);
    ``refresh_partners``: rebuild the partner tables at the current parameters before every optimiser step
    after the first (default false: fixed before the update). Costs a no-grad forward over the whole batch
    per optimiser step; only OpenRLHF's adapter implements it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from rac_losses import RACConfig
from rac_losses.corruption import CorruptionPolicy

__all__ = ["OPTION_NAMES", "RACSettings", "flatten_options"]

_CORRUPTION_OPTIONS = ("names", "severities", "fraction", "seed")
#: Every option name, dotted, in the order the adapters document them.
OPTION_NAMES: tuple[str, ...] = (
    RACConfig.field_names() + tuple(f"corruption.{k}" for k in _CORRUPTION_OPTIONS) + ("refresh_partners",)
)
_DEFAULT_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class RACSettings:
    """Validated RAC options of one training run.

    Attributes:
        config: the loss knobs.
        corruption: which rollouts get a corrupted twin, and which corruption (``fraction`` included).
        refresh_partners: rebuild the partner tables before every optimiser step (see the module docstring).
    """

    config: RACConfig = RACConfig()
    corruption: CorruptionPolicy = CorruptionPolicy(fraction=_DEFAULT_FRACTION)
    refresh_partners: bool = False

    @property
    def uses_twins(self) -> bool:
        """Whether the run needs corrupted twins (a pairwise loss with a non-zero fraction)."""
        return self.config.pair_coef > 0 and self.corruption.fraction > 0

    @property
    def needs_entropy(self) -> bool:
        """Whether a confidence method the run computes reads per-token entropy."""
        used = [self.config.rank_confidence] + ([self.config.pair_confidence] if self.uses_twins else [])
        return "neg_entropy" in used

    def check_confidences(self, available: Sequence[str], framework: str) -> None:
        """Raise ``ValueError`` if a confidence the run computes is not among those ``framework`` provides.

        The ranking confidence is always computed; the pairwise one only with twins (:attr:`uses_twins`).
        """
        used = [("rank_confidence", self.config.rank_confidence)]
        if self.uses_twins:
            used.append(("pair_confidence", self.config.pair_confidence))
        for name, value in used:
            if value not in available:
                raise ValueError(f"rac.{name}={value!r} is not available in {framework}; expected one of {', '.join(available)}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> RACSettings:
        """Read the options (nested or dotted keys; strings such as ``"0.5"`` or ``"[1,2]"`` are parsed).

        Raises:
            ValueError: an unknown option (the message lists the valid ones), or a value the option cannot
                take (the message names the option: ``rac.rank_coef: ...``).
        """
        flat = flatten_options(options or {})
        unknown = sorted(set(flat) - set(OPTION_NAMES))
        if unknown:
            raise ValueError(f"unknown rac option(s) {', '.join(unknown)}; expected some of {', '.join(OPTION_NAMES)}")
        hints = typing.get_type_hints(RACConfig)
        loss = {}
        for name in RACConfig.field_names():
            if name in flat:
                loss[name] = _parse(flat[name], hints[name], name)
        corruption: dict[str, Any] = {"fraction": _DEFAULT_FRACTION}
        kinds = {"names": list[str], "severities": list[int], "fraction": float, "seed": int}
        for key, kind in kinds.items():
            name = f"corruption.{key}"
            if name in flat:
                corruption[key] = _parse(flat[name], kind, name)
        try:
            config = RACConfig(**loss)
        except (TypeError, ValueError) as e:
            raise ValueError(f"rac: {e}") from e
        try:
            policy = CorruptionPolicy(**corruption)
        except (TypeError, ValueError) as e:
            raise ValueError(f"rac.corruption: {e}") from e
        refresh = _parse(flat["refresh_partners"], bool, "refresh_partners") if "refresh_partners" in flat else False
        return cls(config=config, corruption=policy, refresh_partners=refresh)

    def as_options(self) -> dict[str, Any]:
        """The settings as flat dotted options (``from_options(s.as_options()) == s``)."""
        out: dict[str, Any] = dataclasses.asdict(self.config)
        for key in _CORRUPTION_OPTIONS:
            value = getattr(self.corruption, key)
            out[f"corruption.{key}"] = list(value) if isinstance(value, tuple) else value
        out["refresh_partners"] = self.refresh_partners
        return out


def flatten_options(options: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested options as flat dotted names: ``{"corruption": {"seed": 1}} -> {"corruption.seed": 1}``.

    Raises:
        ValueError: ``options`` (or a nested value under ``prefix``) is not a mapping.
    """
    if not isinstance(options, Mapping):
        raise ValueError(f"rac{'.' + prefix[:-1] if prefix else ''} must be a mapping of options, got {type(options).__name__}")
    flat: dict[str, Any] = {}
    for key, value in options.items():
        name = prefix + str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_options(value, name + "."))
        else:
            flat[name] = value
    return flat


def _parse(value: Any, kind: Any, name: str) -> Any:
    """``value`` as ``kind`` (bool, int, float, str, list[str], list[int]); strings are read as CLI text."""
    try:
        if typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            if isinstance(value, str):
                text = value.strip()
                if text.startswith("[") and text.endswith("]"):
                    text = text[1:-1]
                value = [v.strip().strip("'\"") for v in text.split(",") if v.strip()]
            if not isinstance(value, Sequence) or isinstance(value, str):
                raise TypeError(f"expected a list, got {type(value).__name__}")
            return [_parse_scalar(v, item) for v in value]
        return _parse_scalar(value, kind)
    except (TypeError, ValueError) as e:
        raise ValueError(f"rac.{name}: {e}") from None


def _parse_scalar(value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError(f"expected true or false, got {value!r}")
    if kind is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a name, got {type(value).__name__} {value!r}")
        return value
    if isinstance(value, bool):
        raise TypeError(f"expected a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value) if kind is float else int(value)
        except ValueError:
            raise ValueError(f"expected {'a number' if kind is float else 'an integer'}, got {value!r}") from None
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"expected an integer, got {value!r}")
        value = int(value)
    if not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return kind(value)
