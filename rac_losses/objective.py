"""The RAC objective: both comparison losses on one batch of rows, with one config and one metrics dict.

``L = L_policy + rank_coef * L_rank + pair_coef * L_pair``. :func:`rac_loss` returns the RAC part
(``rank_coef * L_rank + pair_coef * L_pair``); a trainer adds it to its own policy loss, computed on the
clean rows only (corrupted twins take no part in the policy gradient).

Trainers that split a batch into micro-batches use the row form: :func:`rac_partners` once per batch,
then :func:`rac_partner_loss` per micro-batch; summed, they equal :func:`rac_loss` exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import NamedTuple

import torch

from rac_losses._validation import check_choice, check_float_tensor, check_mask, check_number, check_same_device
from rac_losses.comparison import LINKS, ComparisonTable, check_rows, comparison_loss
from rac_losses.confidence import CONFIDENCE_METHODS, sequence_confidence
from rac_losses.pairwise import check_severity, corruption_table
from rac_losses.partners import Partners, partner_loss
from rac_losses.ranking import PAIR_WEIGHTS, ranking_table

__all__ = ["RACConfig", "RACOutput", "RACPartners", "rac_loss", "rac_partner_loss", "rac_partners"]


@dataclass(frozen=True)
class RACConfig:
    """Every RAC knob, with defaults; validated on construction (``ValueError``/``TypeError``).

    Ranking loss (within a prompt's group, better reward -> higher confidence):
        rank_coef: weight of the ranking loss (``>= 0``; 0 turns it off).
        rank_confidence: confidence method of the ranking loss (see :func:`rac_losses.sequence_confidence`).
        rank_link, rank_scale, rank_margin: the comparison's link, inverse temperature and margin.
        rank_pair_weight: ``"uniform"`` or ``"reward_gap"``.
        rank_tie_tolerance: reward differences up to this are ties.

    Pairwise corruption loss (same response, corrupted image -> lower confidence):
        pair_coef: weight of the pairwise loss (``>= 0``).
        pair_confidence: its confidence method. The default, ``"neg_entropy"``, lowers confidence by
            spreading the token distribution; ``"mean_logprob"`` of the sampled response was seen to make the
            policy flip its answer under corruption instead (see the project's DESIGN notes).
        pair_link, pair_scale, pair_margin: as for the ranking loss.
        pair_severity_margin: extra margin per unit of severity gap.
        pair_detach_clean: only the more corrupted side of a comparison gets gradient.

    The defaults follow the project's prototype experiment (ranking: logistic, scale 2, coefficient 1,
    mean log-prob confidence; pairwise: negative entropy at coefficient 0.1).
    """

    rank_coef: float = 1.0
    rank_confidence: str = "mean_logprob"
    rank_link: str = "logistic"
    rank_scale: float = 2.0
    rank_margin: float = 0.0
    rank_pair_weight: str = "uniform"
    rank_tie_tolerance: float = 0.0

    pair_coef: float = 0.1
    pair_confidence: str = "neg_entropy"
    pair_link: str = "logistic"
    pair_scale: float = 1.0
    pair_margin: float = 0.0
    pair_severity_margin: float = 0.0
    pair_detach_clean: bool = True

    def __post_init__(self) -> None:
        for name in ("rank_coef", "pair_coef", "rank_tie_tolerance", "pair_severity_margin"):
            check_number(getattr(self, name), name)
        for prefix in ("rank", "pair"):
            check_choice(getattr(self, f"{prefix}_confidence"), f"{prefix}_confidence", CONFIDENCE_METHODS)
            check_choice(getattr(self, f"{prefix}_link"), f"{prefix}_link", LINKS)
            check_number(getattr(self, f"{prefix}_margin"), f"{prefix}_margin")
            check_number(getattr(self, f"{prefix}_scale"), f"{prefix}_scale", positive=True)
        check_choice(self.rank_pair_weight, "rank_pair_weight", PAIR_WEIGHTS)
        if not isinstance(self.pair_detach_clean, bool):
            raise TypeError(f"pair_detach_clean must be a bool, got {type(self.pair_detach_clean).__name__}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of every knob, in declaration order."""
        return tuple(f.name for f in fields(cls))


class RACOutput(NamedTuple):
    """What :func:`rac_loss` returns.

    Attributes:
        loss: 0-d, ``rank_coef * rank_loss + pair_coef * pair_loss``; add it to the policy loss.
        rank_loss: 0-d, the (unweighted) ranking loss.
        pair_loss: 0-d, the (unweighted) pairwise corruption loss; 0 when no twins were given.
        confidence: ``[N]``, every row's confidence under ``config.rank_confidence``.
        metrics: floats for logging: ``rank_loss``, ``rank_pairs`` (comparisons), ``rank_satisfied``
            (fraction already clearing the margin, 0 without comparisons), ``conf_mean`` (mean ranking
            confidence of valid clean rows); with twins also ``pair_loss``, ``pair_pairs``,
            ``pair_satisfied``, and, in ``config.pair_confidence``, ``conf_clean`` and ``conf_corrupted``
            (means over the clean rows and the twins that take part in a clean/corrupted comparison; a
            trainer may therefore pass any finite ``token_entropy`` on rows without twins) and
            ``conf_gap`` (their difference).
    """

    loss: torch.Tensor
    rank_loss: torch.Tensor
    pair_loss: torch.Tensor
    confidence: torch.Tensor
    metrics: dict[str, float]


def _mean_or_zero(x: torch.Tensor, where: torch.Tensor) -> float:
    count = int(where.sum())
    return float(x.detach()[where].sum()) / count if count else 0.0


@dataclass(frozen=True)
class _Prepared:
    """A validated batch: both losses' confidences and comparison tables."""

    rows: torch.Tensor  # [N] bool, rows that take part in anything
    clean: torch.Tensor  # [N] bool, severity == 0 (all rows without twins)
    rank_confidence: torch.Tensor  # [N]
    rank_table: ComparisonTable
    pair_confidence: torch.Tensor | None  # [N], with twins only
    pair_table: ComparisonTable | None


def _check_rows_inputs(
    token_logprobs: torch.Tensor, mask: torch.Tensor, config: RACConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(config, RACConfig):
        raise TypeError(f"config must be a RACConfig, got {type(config).__name__}")
    token_logprobs = check_float_tensor(token_logprobs, "token_logprobs", [None, None])
    mask = check_mask(mask, "mask", list(token_logprobs.shape))
    check_same_device([("token_logprobs", token_logprobs), ("mask", mask)])
    return token_logprobs, mask


def _confidences(
    token_logprobs: torch.Tensor,
    mask: torch.Tensor,
    token_entropy: torch.Tensor | None,
    topk_logprobs: torch.Tensor | None,
    config: RACConfig,
    *,
    with_pair: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(rank confidence, pair confidence or None)``, computing a shared method once."""

    def confidence_for(method: str) -> torch.Tensor:
        return sequence_confidence(
            token_logprobs, mask, method=method, token_entropy=token_entropy, topk_logprobs=topk_logprobs
        )

    rank = confidence_for(config.rank_confidence)
    if not with_pair:
        return rank, None
    return rank, rank if config.pair_confidence == config.rank_confidence else confidence_for(config.pair_confidence)


def _prepare(
    token_logprobs: torch.Tensor,
    mask: torch.Tensor,
    reward: torch.Tensor,
    group: torch.Tensor,
    token_entropy: torch.Tensor | None,
    topk_logprobs: torch.Tensor | None,
    pair: torch.Tensor | None,
    severity: torch.Tensor | None,
    valid: torch.Tensor | None,
    config: RACConfig,
) -> _Prepared:
    token_logprobs, mask = _check_rows_inputs(token_logprobs, mask, config)
    if valid is not None:  # invalid rows may hold anything: their tokens count for nothing
        mask = mask & check_mask(valid, "valid", [token_logprobs.shape[0]]).unsqueeze(1)
    rows = mask.any(-1)
    if (pair is None) != (severity is None):
        raise ValueError("pair and severity must be given together (twins need both), or neither")
    rank_confidence, pair_confidence = _confidences(
        token_logprobs, mask, token_entropy, topk_logprobs, config, with_pair=pair is not None
    )
    pair_table = None
    if pair is not None:
        _, severity, pair, _ = check_rows(rank_confidence, severity, "severity", pair, "pair", rows)
        check_severity(severity, rows)
        clean = severity == 0
        pair_table = corruption_table(
            severity, pair, rows, severity_margin=config.pair_severity_margin, detach_clean=config.pair_detach_clean
        )
    else:
        clean = torch.ones_like(rows)
    _, reward, group, rank_rows = check_rows(rank_confidence, reward, "reward", group, "group", rows & clean)
    rank_table = ranking_table(
        reward, group, rank_rows, pair_weight=config.rank_pair_weight, tie_tolerance=config.rank_tie_tolerance
    )
    return _Prepared(rows, clean, rank_confidence, rank_table, pair_confidence, pair_table)


def rac_loss(
    token_logprobs: torch.Tensor,
    mask: torch.Tensor,
    reward: torch.Tensor,
    group: torch.Tensor,
    *,
    token_entropy: torch.Tensor | None = None,
    topk_logprobs: torch.Tensor | None = None,
    pair: torch.Tensor | None = None,
    severity: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    config: RACConfig = RACConfig(),
) -> RACOutput:
    """Both RAC losses on one batch of rows (the batch form, for custom trainers).

    A row is one (prompt, response, image). Clean rows (``severity == 0``, or every row when no twins are
    given) take part in the ranking loss; rows sharing ``pair`` take part in the pairwise loss. Rows with
    an empty mask or ``valid == False`` take part in nothing.

    Args:
        token_logprobs: ``[N, T]`` float log-probs of the sampled response tokens.
        mask: ``[N, T]`` bool or 0/1 response mask.
        reward: ``[N]`` real rewards (finite on valid rows). Twins may carry their clean row's reward.
        group: ``[N]`` integer prompt-group ids.
        token_entropy: ``[N, T]`` per-token entropy, needed when a used confidence is ``"neg_entropy"``.
        topk_logprobs: ``[N, T, k]``, needed when a used confidence is ``"topk"``.
        pair: ``[N]`` integer ids linking a clean row with its corrupted twins; give with ``severity``.
        severity: ``[N]`` int or float, 0 for clean rows, ``> 0`` for twins.
        valid: ``[N]`` bool or 0/1, extra row validity (padding rows).
        config: the knobs.

    Returns:
        :class:`RACOutput`.

    Raises:
        ValueError / TypeError: bad shapes, dtypes or devices (named), non-finite values on valid rows,
        only one of ``pair`` / ``severity`` given, a confidence method whose input was not passed.
    """
    batch = _prepare(token_logprobs, mask, reward, group, token_entropy, topk_logprobs, pair, severity, valid, config)
    confidence = batch.rank_confidence
    rank, rank_count, rank_ok_count = comparison_loss(
        confidence, batch.rank_table, link=config.rank_link, scale=config.rank_scale, margin=config.rank_margin,
        reduction="mean",
    )
    rank_pairs, rank_ok = int(rank_count), int(rank_ok_count)
    metrics = {
        "rank_loss": float(rank.detach()),
        "rank_pairs": float(rank_pairs),
        "rank_satisfied": rank_ok / rank_pairs if rank_pairs else 0.0,
        "conf_mean": _mean_or_zero(confidence, batch.rows & batch.clean),
    }
    pair_term = rank.new_zeros(())
    if batch.pair_table is not None and batch.pair_confidence is not None:
        pair_term, pair_count, pair_ok_count = comparison_loss(
            batch.pair_confidence, batch.pair_table, link=config.pair_link, scale=config.pair_scale,
            margin=config.pair_margin, reduction="mean",
        )
        pair_pairs, pair_ok = int(pair_count), int(pair_ok_count)
        paired = (batch.pair_table.sign != 0).any(1)  # rows in at least one clean/corrupted comparison
        conf_clean = _mean_or_zero(batch.pair_confidence, paired & batch.clean)
        conf_corrupted = _mean_or_zero(batch.pair_confidence, paired & ~batch.clean)
        metrics.update(
            pair_loss=float(pair_term.detach()),
            pair_pairs=float(pair_pairs),
            pair_satisfied=pair_ok / pair_pairs if pair_pairs else 0.0,
            conf_clean=conf_clean,
            conf_corrupted=conf_corrupted,
            conf_gap=conf_clean - conf_corrupted,
        )
    loss = config.rank_coef * rank + config.pair_coef * pair_term
    return RACOutput(loss=loss, rank_loss=rank, pair_loss=pair_term, confidence=confidence, metrics=metrics)


@dataclass(frozen=True)
class RACPartners:
    """Both losses' detached partner tables for ``N`` rows (the row form of :func:`rac_loss`).

    Attributes:
        rank: the ranking loss's :class:`~rac_losses.Partners`.
        pair: the pairwise loss's :class:`~rac_losses.Partners`, or ``None`` without twins.

        config: the :class:`RACConfig` the tables were built with; :func:`rac_partner_loss` uses it and
            refuses another one.

    Index with a ``LongTensor``, bool mask or slice for one micro-batch's rows; ``.to(device)`` moves both.
    Frameworks that carry per-row batch keys across processes use :meth:`to_fields` / :meth:`from_fields`.
    """

    rank: Partners
    pair: Partners | None
    config: RACConfig

    def __len__(self) -> int:
        return len(self.rank)

    def __getitem__(self, rows: torch.Tensor | slice) -> RACPartners:
        return RACPartners(self.rank[rows], None if self.pair is None else self.pair[rows], self.config)

    def to(self, device: torch.device | str) -> RACPartners:
        """A copy with every table on ``device``."""
        return RACPartners(self.rank.to(device), None if self.pair is None else self.pair.to(device), self.config)

    def scaled(self, factor: float) -> RACPartners:
        """The same tables with every loss ``factor`` times larger (the normalisers divided by ``factor``).

        A trainer that takes several optimiser steps per batch (``M`` mini-batches, or gradient accumulation
        that divides each micro-batch's loss) uses it so each step's RAC term is on the scale of the batch
        loss, as its own per-step mean losses are: summed over one pass at fixed parameters, the ``M``
        steps' gradients are ``M`` times the batch gradient.

        Raises:
            ValueError: ``factor`` is not a finite number ``> 0``.
        """
        factor = check_number(factor, "factor", positive=True)

        def scale(table: Partners | None) -> Partners | None:
            return None if table is None else replace(table, normaliser=table.normaliser / factor)

        return RACPartners(scale(self.rank), scale(self.pair), self.config)  # type: ignore[arg-type]

    def to_fields(self, prefix: str = "rac_") -> dict[str, torch.Tensor]:
        """Every table as a per-row tensor with leading dimension ``N``, keyed ``{prefix}{rank|pair}_{name}``,
        and the config as ``{prefix}config``, an ``[N, K]`` float64 copy per row.

        The shared normaliser becomes an ``[N]`` copy per row, so any selection of rows (a framework's
        shuffled micro-batch) still carries it. :meth:`from_fields` inverts this.
        """
        out: dict[str, torch.Tensor] = {}
        for loss, table in (("rank", self.rank), ("pair", self.pair)):
            if table is None:
                continue
            for name in Partners.TABLES:
                value = getattr(table, name)
                out[f"{prefix}{loss}_{name}"] = value.expand(len(table)) if name == "normaliser" else value
        code = torch.tensor(_encode_config(self.config), dtype=torch.float64, device=self.rank.confidence.device)
        out[f"{prefix}config"] = code.expand(len(self), -1)
        return out

    @classmethod
    def from_fields(cls, batch: Mapping[str, torch.Tensor], prefix: str = "rac_") -> RACPartners:
        """The tables of some rows from their per-row fields (any ``n >= 1`` rows of :meth:`to_fields`).

        Raises:
            KeyError: a ranking-table or the config field is missing (the message names it).
            ValueError: no rows, or rows whose normalisers or configs differ (fields of different batches
                mixed), or a config field of another shape (written by another rac-losses version).
        """
        key = f"{prefix}config"
        if key not in batch:
            raise KeyError(f"partner table field {key} missing from the batch")
        config = _decode_config(_one_per_batch(batch[key], key, 2))
        tables: dict[str, Partners | None] = {}
        for loss, link, scale, margin in (
            ("rank", config.rank_link, config.rank_scale, config.rank_margin),
            ("pair", config.pair_link, config.pair_scale, config.pair_margin),
        ):
            names = [f"{prefix}{loss}_{name}" for name in Partners.TABLES]
            if loss == "pair" and names[0] not in batch:
                tables[loss] = None
                continue
            missing = [n for n in names if n not in batch]
            if missing:
                raise KeyError(f"partner table field(s) {', '.join(missing)} missing from the batch")
            values = {name: batch[n] for name, n in zip(Partners.TABLES, names)}
            values["normaliser"] = _one_per_batch(values["normaliser"], f"{prefix}{loss}_normaliser", 1)
            tables[loss] = Partners(**values, link=link, scale=scale, margin=margin)
        return cls(tables["rank"], tables["pair"], config)  # type: ignore[arg-type]


#: how each choice-valued knob is written as a number in :meth:`RACPartners.to_fields`
_CHOICES: dict[str, tuple[str, ...]] = {
    "rank_confidence": CONFIDENCE_METHODS, "pair_confidence": CONFIDENCE_METHODS,
    "rank_link": LINKS, "pair_link": LINKS, "rank_pair_weight": PAIR_WEIGHTS,
}


def _encode_config(config: RACConfig) -> list[float]:
    """Every knob as a float: a choice by its index, a bool as 0/1."""
    out = []
    for name in RACConfig.field_names():
        value = getattr(config, name)
        out.append(float(_CHOICES[name].index(value)) if name in _CHOICES else float(value))
    return out


def _decode_config(code: torch.Tensor) -> RACConfig:
    names = RACConfig.field_names()
    if code.shape != (len(names),):
        raise ValueError(
            f"the config field holds {tuple(code.shape)} values per row, expected {len(names)}: the partner "
            "fields were written by another rac-losses version"
        )
    values: dict[str, object] = {}
    for name, number in zip(names, code.tolist()):
        default = getattr(RACConfig(), name)
        if name in _CHOICES:
            values[name] = _CHOICES[name][int(number)]
        else:
            values[name] = bool(number) if isinstance(default, bool) else number
    return RACConfig(**values)  # type: ignore[arg-type]


def _one_per_batch(values: torch.Tensor, name: str, ndim: int) -> torch.Tensor:
    """The one value every row carries (row 0 of ``values``), after checking all rows agree."""
    if values.ndim != ndim or values.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty per-row tensor with {ndim} dim(s), got shape {tuple(values.shape)}")
    if not bool((values == values[0]).all()):
        raise ValueError(f"{name} differs between rows: fields of different batches were mixed")
    return values[0]


#: knobs that do not enter the partner tables: a config may change them after the tables were built
_LOSS_WEIGHTS = ("rank_coef", "pair_coef")


def _check_same_tables(config: RACConfig, built: RACConfig) -> None:
    differ = [
        f"{name}={getattr(config, name)!r} (tables: {getattr(built, name)!r})"
        for name in RACConfig.field_names()
        if name not in _LOSS_WEIGHTS and getattr(config, name) != getattr(built, name)
    ]
    if differ:
        raise ValueError(
            "config differs from the RACConfig the partner tables were built with in "
            + ", ".join(differ)
            + "; pass the same config to rac_partners and rac_partner_loss (or leave config out here)"
        )


def rac_partners(
    token_logprobs: torch.Tensor,
    mask: torch.Tensor,
    reward: torch.Tensor,
    group: torch.Tensor,
    *,
    token_entropy: torch.Tensor | None = None,
    topk_logprobs: torch.Tensor | None = None,
    pair: torch.Tensor | None = None,
    severity: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    config: RACConfig = RACConfig(),
) -> RACPartners:
    """Partner tables of a whole batch for the row form of :func:`rac_loss`.

    Call once per batch before the update, with the batch's log-probs (for example the old log-probs a PPO
    trainer recomputes for every row); arguments as in :func:`rac_loss`. Then, for each micro-batch of row
    indices ``idx``, ``rac_partner_loss(token_logprobs[idx], mask[idx], partners[idx], ...)``: summed over
    any split of the batch, the values and gradients equal :func:`rac_loss`'s when the partner tables come
    from the same parameters.
    """
    batch = _prepare(token_logprobs, mask, reward, group, token_entropy, topk_logprobs, pair, severity, valid, config)
    rank = Partners.from_table(
        batch.rank_confidence, batch.rank_table, "mean",
        link=config.rank_link, scale=config.rank_scale, margin=config.rank_margin,
    )
    if batch.pair_table is None or batch.pair_confidence is None:
        return RACPartners(rank, None, config)
    pair = Partners.from_table(
        batch.pair_confidence, batch.pair_table, "mean",
        link=config.pair_link, scale=config.pair_scale, margin=config.pair_margin,
    )
    return RACPartners(rank, pair, config)


def rac_partner_loss(
    token_logprobs: torch.Tensor,
    mask: torch.Tensor,
    partners: RACPartners,
    *,
    token_entropy: torch.Tensor | None = None,
    topk_logprobs: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    config: RACConfig | None = None,
) -> torch.Tensor:
    """One micro-batch's share of :func:`rac_loss` (``rank_coef * L_rank + pair_coef * L_pair``).

    Args:
        token_logprobs: ``[n, T]`` the micro-batch rows' live log-probs; ``mask`` ``[n, T]``;
            ``token_entropy`` / ``topk_logprobs`` as the configured confidence methods need; ``valid``
            ``[n]`` as in :func:`rac_loss` (padding rows, which take part in no comparison).
        partners: the same rows' slice of :func:`rac_partners`'s result (``partners_all[idx]``).
        config: by default the config the tables were built with (``partners.config``). Another config
            may only change ``rank_coef`` / ``pair_coef``, which do not enter the tables.

    Returns:
        0-d tensor, differentiable in the float inputs.

    Raises:
        TypeError / ValueError: as :func:`rac_loss`; ``partners`` not a :class:`RACPartners` or of another
        length than the rows; a ``config`` that differs from ``partners.config`` in any other knob (the
        message names them); a row with comparisons but no tokens (or marked invalid).
    """
    if not isinstance(partners, RACPartners):
        raise TypeError(f"partners must be a RACPartners table, got {type(partners).__name__}")
    if config is None:
        config = partners.config
    token_logprobs, mask = _check_rows_inputs(token_logprobs, mask, config)
    _check_same_tables(config, partners.config)
    if valid is not None:
        mask = mask & check_mask(valid, "valid", [token_logprobs.shape[0]]).unsqueeze(1)
    rank_confidence, pair_confidence = _confidences(
        token_logprobs, mask, token_entropy, topk_logprobs, config, with_pair=partners.pair is not None
    )
    loss = config.rank_coef * partner_loss(rank_confidence, partners.rank)
    if partners.pair is not None and pair_confidence is not None:
        loss = loss + config.pair_coef * partner_loss(pair_confidence, partners.pair)
    return loss
