"""Calibration and discrimination metrics for confidence scores against correctness.

Every metric takes ``confidence`` (1-D floats in ``[0, 1]``) and ``correct`` (1-D bools or 0/1 numbers of
the same length) as numpy arrays, torch tensors (any device; detached and copied to the CPU) or Python
lists, and returns a Python ``float``. Statistics are accumulated in float64.

Binning conventions (shared by ECE, MCE and :func:`reliability_curve`, all computed from one routine):

* ``strategy="uniform"``: ``n_bins`` equal-width bins. The edges are ``torch.linspace(0, 1, n_bins + 1)``
  in the confidence's floating dtype (float32 for float16/bfloat16 input), and bin ``b`` holds
  ``edges[b] <= c < edges[b + 1]``, exactly as torchmetrics' ``binary_calibration_error`` assigns them
  (a confidence lying exactly on an inner edge goes to the bin on its right; 0 goes to the first bin).
  The last bin is closed, ``edges[-2] <= c <= 1``. This is the one place where the values differ from
  torchmetrics: torchmetrics puts confidences exactly equal to 1 in an extra, hidden ``(n_bins + 1)``-th
  bin of their own; here they share the last bin, so that ``n_bins`` bins partition ``[0, 1]``.
* ``strategy="quantile"``: equal-mass bins. Sort the ``n`` confidences ascending into ``s``; inner edge
  ``b`` (``1 <= b < n_bins``) is ``s[(b * n) // n_bins]``, the outer edges are 0 and 1, and values are
  assigned with the same rule as above. With distinct confidences bin ``b`` is exactly the sorted chunk
  ``s[(b * n) // n_bins : ((b + 1) * n) // n_bins]`` (sizes differ by at most one). Tied confidences are
  always kept together, in the highest bin whose left edge equals them, so a bin may hold more than its
  share and some bins may be empty; the result never depends on the order of the inputs.

* ``strategy="uniform_right"``: equal-width bins closed on the right, as RAC's release bins them: the
  edges are ``numpy.linspace(0, 1, n_bins + 1)`` in float64, the first bin is ``[0, edges[1]]`` and bin ``b``
  holds ``edges[b] < c <= edges[b + 1]``. Stated confidences sit on the edges (0.1, 0.2, ...), so the two
  uniform conventions give different ECEs on them.

Empty bins have NaN mean confidence and accuracy, and are skipped by ECE and MCE.

:func:`calibration_summary` returns every metric RAC's release logs during training, in one dict.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from rac_losses._dtypes import working_dtype
from rac_losses._validation import (
    check_choice,
    check_finite,
    check_float_tensor,
    check_index_tensor,
    check_mask,
    check_shape,
)
from rac_losses.comparison import group_members

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "ReliabilityCurve",
    "auroc",
    "brier_score",
    "calibration_summary",
    "kendall_tau",
    "pearson_r",
    "rank_violation_rate",
    "expected_calibration_error",
    "maximum_calibration_error",
    "plot_reliability_diagram",
    "reliability_curve",
]

ArrayLike = torch.Tensor | np.ndarray | Sequence[float] | Sequence[bool]

_STRATEGIES = ("uniform", "quantile", "uniform_right")


class ReliabilityCurve(NamedTuple):
    """Per-bin calibration statistics (``B = n_bins``); all fields are numpy arrays.

    Attributes:
        bin_edges: ``[B + 1]`` float64, non-decreasing, from 0 to 1.
        bin_confidence: ``[B]`` float64, mean confidence per bin (NaN for an empty bin).
        bin_accuracy: ``[B]`` float64, fraction correct per bin (NaN for an empty bin).
        bin_count: ``[B]`` int64, number of samples per bin (sums to ``n``).
    """

    bin_edges: np.ndarray
    bin_confidence: np.ndarray
    bin_accuracy: np.ndarray
    bin_count: np.ndarray


class _Inputs(NamedTuple):
    """Validated inputs on the CPU: ``confidence`` as float32/float64 and ``correct`` as bool, both ``[n]``."""

    confidence: torch.Tensor
    correct: torch.Tensor


def _to_tensor(x: object, name: str) -> torch.Tensor:
    """A CPU tensor from a tensor, numpy array or (nested) list; raise naming ``name`` otherwise."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if not isinstance(x, (np.ndarray, list, tuple)):
        raise TypeError(f"{name} must be a torch.Tensor, numpy array or list, got {type(x).__name__}")
    try:
        array = np.asarray(x)
    except ValueError as err:
        raise ValueError(f"{name} must be a 1-D array, got a ragged {type(x).__name__}") from err
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold bools or real numbers, got numpy dtype {array.dtype}")
    return torch.tensor(np.ascontiguousarray(array))


def _check_unit_interval(x: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` unless every entry of ``x`` lies in ``[0, 1]``."""
    outside = (x < 0) | (x > 1)
    if bool(outside.any()):
        raise ValueError(
            f"{name} must lie in [0, 1], got {int(outside.sum())} value(s) outside "
            f"(min {float(x.min())}, max {float(x.max())})"
        )


def _validate(confidence: object, correct: object) -> _Inputs:
    """Convert and check the two metric inputs; see the module docstring for what is accepted."""
    conf = check_float_tensor(_to_tensor(confidence, "confidence"), "confidence", [None])
    if conf.numel() == 0:
        raise ValueError("confidence must be non-empty, got shape (0,)")
    conf = conf.to(working_dtype(conf))
    check_finite(conf, "confidence")
    _check_unit_interval(conf, "confidence")
    corr = _to_tensor(correct, "correct")
    check_shape(corr, "correct", [None])
    if corr.shape != conf.shape:
        raise ValueError(
            f"correct must have the same length as confidence: expected shape {tuple(conf.shape)}, "
            f"got {tuple(corr.shape)}"
        )
    return _Inputs(conf, check_mask(corr, "correct", [None]))


def _check_n_bins(n_bins: object) -> int:
    """Raise ``TypeError`` unless ``n_bins`` is an integer, ``ValueError`` unless it is at least 1."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)):
        raise TypeError(f"n_bins must be an int, got {type(n_bins).__name__}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    return int(n_bins)


def _bin_edges(confidence: torch.Tensor, n_bins: int, strategy: str) -> torch.Tensor:
    """``[n_bins + 1]`` edges in the dtype of ``confidence``, per the module docstring's conventions."""
    if strategy == "uniform":
        return torch.linspace(0, 1, n_bins + 1, dtype=confidence.dtype)
    if strategy == "uniform_right":
        return torch.from_numpy(np.linspace(0.0, 1.0, n_bins + 1))
    n = confidence.numel()
    inner = torch.sort(confidence).values[torch.arange(1, n_bins) * n // n_bins]
    ends = torch.tensor([0.0, 1.0], dtype=confidence.dtype)
    return torch.cat([ends[:1], inner, ends[1:]])


def reliability_curve(
    confidence: ArrayLike, correct: ArrayLike, *, n_bins: int = 15, strategy: str = "uniform"
) -> ReliabilityCurve:
    """Bin the samples by confidence and return per-bin mean confidence, accuracy and count.

    Args:
        confidence: ``[n]`` floats in ``[0, 1]`` (tensor, numpy array or list).
        correct: ``[n]`` bools or 0/1 numbers.
        n_bins: number of bins ``B >= 1``.
        strategy: ``"uniform"`` (equal width), ``"quantile"`` (equal mass) or ``"uniform_right"`` (equal
            width, closed on the right, as RAC's release); see the module docstring for the exact conventions.

    Returns:
        :class:`ReliabilityCurve` with ``bin_edges [B + 1]``, ``bin_confidence [B]``, ``bin_accuracy [B]``
        (float64, NaN for empty bins) and ``bin_count [B]`` (int64).

    Raises:
        TypeError: an input of the wrong kind or dtype, or a non-integer ``n_bins``.
        ValueError: an input that is not 1-D or is empty, mismatched lengths, confidence non-finite or
            outside ``[0, 1]``, correct not 0/1, ``n_bins < 1``, an unknown ``strategy``.
    """
    inputs = _validate(confidence, correct)
    n_bins = _check_n_bins(n_bins)
    check_choice(strategy, "strategy", _STRATEGIES)
    edges = _bin_edges(inputs.confidence, n_bins, strategy)
    right_closed = strategy == "uniform_right"
    values = inputs.confidence.double() if right_closed else inputs.confidence
    index = torch.bucketize(values, edges[1:-1], right=not right_closed).numpy()
    count = np.bincount(index, minlength=n_bins).astype(np.int64)
    conf_sum = np.bincount(index, weights=inputs.confidence.double().numpy(), minlength=n_bins)
    correct_sum = np.bincount(index, weights=inputs.correct.double().numpy(), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ReliabilityCurve(
            bin_edges=edges.double().numpy(),
            bin_confidence=conf_sum / count,
            bin_accuracy=correct_sum / count,
            bin_count=count,
        )


def _bin_gaps(curve: ReliabilityCurve) -> tuple[np.ndarray, np.ndarray]:
    """``|accuracy - confidence|`` and sample weight ``count / n`` of the non-empty bins of ``curve``."""
    filled = curve.bin_count > 0
    gaps = np.abs(curve.bin_accuracy[filled] - curve.bin_confidence[filled])
    return gaps, curve.bin_count[filled] / curve.bin_count.sum()


def _ece(curve: ReliabilityCurve) -> float:
    gaps, weights = _bin_gaps(curve)
    return float(np.sum(weights * gaps))


def expected_calibration_error(
    confidence: ArrayLike, correct: ArrayLike, *, n_bins: int = 15, strategy: str = "uniform"
) -> float:
    """Expected calibration error ``sum_b (n_b / n) |acc_b - conf_b|`` over the non-empty bins.

    Arguments, binning and errors as in :func:`reliability_curve`. With ``strategy="uniform"`` this equals
    torchmetrics' ``binary_calibration_error(..., n_bins, norm="l1")`` unless some confidence is exactly 1
    (see the module docstring). Returns a float in ``[0, 1]``.
    """
    return _ece(reliability_curve(confidence, correct, n_bins=n_bins, strategy=strategy))


def maximum_calibration_error(
    confidence: ArrayLike, correct: ArrayLike, *, n_bins: int = 15, strategy: str = "uniform"
) -> float:
    """Maximum calibration error ``max_b |acc_b - conf_b|`` over the non-empty bins.

    Arguments, binning and errors as in :func:`reliability_curve`; with ``strategy="uniform"`` this equals
    torchmetrics' ``binary_calibration_error(..., n_bins, norm="max")`` unless some confidence is exactly 1.
    Returns a float in ``[0, 1]``.
    """
    gaps, _ = _bin_gaps(reliability_curve(confidence, correct, n_bins=n_bins, strategy=strategy))
    return float(gaps.max())


def brier_score(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Mean squared error ``mean((confidence - correct)^2)`` of ``[n]`` confidences against ``[n]`` 0/1 labels.

    Raises:
        TypeError, ValueError: as in :func:`reliability_curve` for the two inputs.
    """
    inputs = _validate(confidence, correct)
    diff = inputs.confidence.double().numpy() - inputs.correct.double().numpy()
    return float(np.mean(diff**2))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` ascending, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[inverse]


def auroc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Area under the ROC curve of ``confidence`` as a score separating correct from incorrect samples.

    Computed as the Mann-Whitney U statistic with average ranks, so a tie between a correct and an incorrect
    sample counts one half. Equal to scikit-learn's ``roc_auc_score(correct, confidence)``.

    Args:
        confidence: ``[n]`` floats in ``[0, 1]``.
        correct: ``[n]`` bools or 0/1 numbers.

    Returns:
        A float in ``[0, 1]``, or ``nan`` (with a ``RuntimeWarning``) when every sample is correct or every
        sample is incorrect, since the AUROC is then undefined.

    Raises:
        TypeError, ValueError: as in :func:`reliability_curve` for the two inputs.
    """
    inputs = _validate(confidence, correct)
    positive = inputs.correct.numpy()
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        warnings.warn(
            f"auroc is undefined when correct holds a single class (got {n_pos} correct and {n_neg} incorrect "
            "samples); returning nan",
            RuntimeWarning,
            stacklevel=2,
        )
        return float("nan")
    ranks = _average_ranks(inputs.confidence.double().numpy())
    u_statistic = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (n_pos * n_neg))


def _kendall(x: np.ndarray, y: np.ndarray, chunk: int = 2048) -> float:
    """Kendall's tau-b of two float64 arrays (NaN when undefined); pairwise in row chunks, O(n^2) time."""
    n = x.size
    concordance, ties_x, ties_y = 0.0, 0.0, 0.0
    for start in range(0, n, chunk):
        dx = np.sign(x[start : start + chunk, None] - x[None, :])
        dy = np.sign(y[start : start + chunk, None] - y[None, :])
        concordance += float((dx * dy).sum())
        ties_x += float((dx == 0).sum())
        ties_y += float((dy == 0).sum())
    pairs = n * (n - 1) / 2.0
    # ordered pairs count each pair twice; the diagonal is n ties of each variable
    denominator = np.sqrt((pairs - (ties_x - n) / 2.0) * (pairs - (ties_y - n) / 2.0))
    return float(concordance / 2.0 / denominator) if denominator > 0 else float("nan")


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r of two float64 arrays (NaN when either is constant)."""
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    return float(np.clip((dx * dy).sum() / np.sqrt((dx * dx).sum() * (dy * dy).sum()), -1.0, 1.0))


def _warn_undefined(value: float, name: str) -> float:
    if np.isnan(value):
        warnings.warn(
            f"{name} is undefined when confidence or correct is constant (or n < 2); returning nan",
            RuntimeWarning,
            stacklevel=3,
        )
    return value


def kendall_tau(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Kendall's tau-b between ``[n]`` confidences and ``[n]`` 0/1 labels (ties corrected), as
    ``scipy.stats.kendalltau``. O(n^2) time, O(n) memory per chunk of 2048 rows.

    Returns:
        A float in ``[-1, 1]``, or ``nan`` (with a ``RuntimeWarning``) when either input is constant.

    Raises:
        TypeError, ValueError: as in :func:`reliability_curve` for the two inputs.
    """
    inputs = _validate(confidence, correct)
    value = _kendall(inputs.confidence.double().numpy(), inputs.correct.double().numpy())
    return _warn_undefined(value, "kendall_tau")


def pearson_r(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Pearson's correlation between ``[n]`` confidences and ``[n]`` 0/1 labels, as ``scipy.stats.pearsonr``.

    Returns:
        A float in ``[-1, 1]``, or ``nan`` (with a ``RuntimeWarning``) when either input is constant.

    Raises:
        TypeError, ValueError: as in :func:`reliability_curve` for the two inputs.
    """
    inputs = _validate(confidence, correct)
    value = _pearson(inputs.confidence.double().numpy(), inputs.correct.double().numpy())
    return _warn_undefined(value, "pearson_r")


def _violations(conf: torch.Tensor, acc: torch.Tensor, group: torch.Tensor) -> tuple[int, int]:
    """(violated, total) over the pairs of rows sharing a group: violated when confidence and accuracy
    are ordered oppositely, ties counted in the total."""
    members = group_members(group, torch.ones_like(group, dtype=torch.bool))
    row = torch.arange(group.shape[0]).unsqueeze(1)
    pairs = members > row  # each unordered pair once
    partner = members.clamp_min(0)
    product = (conf.unsqueeze(1) - conf[partner]) * (acc.unsqueeze(1) - acc[partner])
    return int((pairs & (product < 0)).sum()), int(pairs.sum())


def rank_violation_rate(confidence: ArrayLike, correct: ArrayLike, group: ArrayLike) -> float:
    """The share of same-group pairs whose confidences order them against their correctness.

    Args:
        confidence: ``[n]`` floats in ``[0, 1]``; correct: ``[n]`` 0/1; group: ``[n]`` integer prompt ids.

    Returns:
        A float in ``[0, 1]``; pairs tied in confidence or correctness count in the denominator only (as
        RAC's release logs it). ``nan`` (with a ``RuntimeWarning``) when no group has two rows.

    Raises:
        TypeError, ValueError: as in :func:`reliability_curve`, and ``group`` not integer or of another length.
    """
    inputs = _validate(confidence, correct)
    group_t = check_index_tensor(_to_tensor(group, "group"), "group", [inputs.confidence.shape[0]])
    violated, total = _violations(inputs.confidence.double(), inputs.correct.double(), group_t)
    if total == 0:
        warnings.warn("rank_violation_rate is undefined without a group of two rows; returning nan", RuntimeWarning, stacklevel=2)
        return float("nan")
    return violated / total


def calibration_summary(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    group: ArrayLike | None = None,
    format_ok: ArrayLike | None = None,
) -> dict[str, float]:
    """Every calibration metric RAC's release logs for a batch of rollouts, missing confidences excluded.

    Args:
        confidence: ``[n]`` floats, stated confidences in ``[0, 1]``; a negative number or NaN is missing.
        correct: ``[n]`` 0/1 (the release's ``acc``, not ``reward_acc``).
        group: ``[n]`` integer prompt ids, for the rank-violation rate (optional).
        format_ok: ``[n]`` 0/1, for the format rate over all rows (optional).

    Returns:
        ``count`` (rows with a confidence); with at least one: ``ece`` (10 bins, ``"uniform_right"``),
        ``brier``, ``mean_confidence``, ``confidence_std``, ``mean_accuracy``, ``accuracy_std`` (population
        stds), ``overconfidence_rate`` (wrong and ``c > 0.5``), ``underconfidence_rate`` (correct and
        ``c < 0.5``), ``high_conf_error_ratio`` (wrong among ``c >= 0.8``; 0 without such rows),
        ``kendall_tau``, ``pearson_r`` (0 with fewer than 5 rows or when undefined, as the release logs
        them), ``conf_p10``, ``conf_p50``, ``conf_p90`` (linear percentiles); ``rank_violation_rate`` when
        ``group`` is given and some group has two rows with a confidence; ``format_rate`` when ``format_ok``
        is given.

    Raises:
        TypeError, ValueError: inputs of the wrong kind, length or values (a confidence above 1, correct not 0/1).
    """
    conf = check_float_tensor(_to_tensor(confidence, "confidence"), "confidence", [None]).double()
    n = conf.shape[0]
    acc = check_mask(_to_tensor(correct, "correct"), "correct", [n]).double()
    keep = torch.isfinite(conf) & (conf >= 0)
    if bool((conf == float("inf")).any()) or bool((keep & (conf > 1)).any()):
        raise ValueError("confidence must lie in [0, 1] (a negative number or NaN marks a missing one)")
    out: dict[str, float] = {"count": float(keep.sum())}
    if format_ok is not None:
        out["format_rate"] = float(check_mask(_to_tensor(format_ok, "format_ok"), "format_ok", [n]).double().mean())
    if not bool(keep.any()):
        return out
    c, a = conf[keep], acc[keep]
    cn, an = c.numpy(), a.numpy()
    wrong, right = an < 0.5, an > 0.5
    high = cn >= 0.8
    out.update(
        ece=expected_calibration_error(c, a, n_bins=10, strategy="uniform_right"),
        brier=float(np.mean((cn - an) ** 2)),
        mean_confidence=float(cn.mean()),
        confidence_std=float(cn.std()),
        mean_accuracy=float(an.mean()),
        accuracy_std=float(an.std()),
        overconfidence_rate=float((wrong & (cn > 0.5)).mean()),
        underconfidence_rate=float((right & (cn < 0.5)).mean()),
        high_conf_error_ratio=float(wrong[high].mean()) if high.any() else 0.0,
    )
    for name, fn in (("kendall_tau", _kendall), ("pearson_r", _pearson)):
        value = fn(cn, an) if cn.size >= 5 else float("nan")
        out[name] = 0.0 if np.isnan(value) else value
    for q in (10, 50, 90):
        out[f"conf_p{q}"] = float(np.percentile(cn, q))
    if group is not None:
        group_t = check_index_tensor(_to_tensor(group, "group"), "group", [n])
        violated, total = _violations(c, a, group_t[keep])
        if total:
            out["rank_violation_rate"] = violated / total
    return out


def _named_curves(curves: Mapping[str, ReliabilityCurve] | ReliabilityCurve) -> dict[str, ReliabilityCurve]:
    """The curves to draw keyed by label (``""`` for a single unnamed curve)."""
    named = {"": curves} if isinstance(curves, ReliabilityCurve) else curves
    if not isinstance(named, Mapping) or not named:
        raise TypeError(
            f"curves must be a ReliabilityCurve or a non-empty mapping of names to them, got {type(curves).__name__}"
        )
    for name, curve in named.items():
        if not isinstance(curve, ReliabilityCurve):
            raise TypeError(f"curves[{name!r}] must be a ReliabilityCurve, got {type(curve).__name__}")
    return dict(named)


def _import_pyplot() -> Any:
    """``matplotlib.pyplot``, or an ``ImportError`` saying how to install the optional extra."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "plot_reliability_diagram needs matplotlib: pip install rac-losses[plot]"
        ) from err
    return plt


def _draw_curve(ax: Axes, counts_ax: Axes, name: str, curve: ReliabilityCurve) -> None:
    """One curve: accuracy against mean confidence per non-empty bin, and its sample share per bin."""
    filled = curve.bin_count > 0
    label = f"{name}: ECE {_ece(curve):.3f}" if name else f"ECE {_ece(curve):.3f}"
    (line,) = ax.plot(curve.bin_confidence[filled], curve.bin_accuracy[filled], marker="o", label=label)
    share = curve.bin_count / curve.bin_count.sum()
    counts_ax.stairs(share, curve.bin_edges, color=line.get_color(), linewidth=1.5)


def plot_reliability_diagram(
    curves: Mapping[str, ReliabilityCurve] | ReliabilityCurve,
    *,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Draw a reliability diagram: accuracy vs confidence per bin above, the share of samples per bin below.

    Each curve is a line through its non-empty bins (mean confidence, accuracy), labelled with its ECE; the
    diagonal marks perfect calibration (points below it are over-confident). The lower panel shows the
    fraction of samples per bin as a step histogram on the curve's own bin edges.

    Args:
        curves: one :class:`ReliabilityCurve`, or a mapping of legend names to curves (e.g. before/after RAC).
        ax: axes to draw into; it is split to make room for the lower panel. A new figure when ``None``.
        title: title of the diagram.

    Returns:
        The matplotlib ``Figure`` holding the two panels.

    Raises:
        ImportError: matplotlib is not installed (``pip install rac-losses[plot]``).
        TypeError: ``curves`` is not a curve or a non-empty mapping of curves.
    """
    named = _named_curves(curves)
    plt = _import_pyplot()
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    own_figure = ax is None
    if own_figure:
        _, ax = plt.subplots(figsize=(5.5, 6.5))
    counts_ax = make_axes_locatable(ax).append_axes("bottom", size="30%", pad=0.12, sharex=ax)
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", label="perfect calibration")
    for name, curve in named.items():
        _draw_curve(ax, counts_ax, name, curve)
    ax.set(xlim=(0, 1), ylim=(-0.03, 1.03), ylabel="accuracy", title=title or "")
    ax.tick_params(labelbottom=False)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    top_share = max(float(c.bin_count.max() / c.bin_count.sum()) for c in named.values())
    counts_ax.set(xlabel="confidence", ylabel="share of samples", ylim=(0, 1.15 * top_share))
    counts_ax.grid(alpha=0.3)
    if own_figure:
        ax.figure.tight_layout()
    return ax.figure
