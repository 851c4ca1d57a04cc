"""rac_losses.metrics against torchmetrics, scikit-learn and slow loop references."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import brier_score_loss, roc_auc_score
from torchmetrics.functional.classification import binary_calibration_error

from rac_losses.metrics import (
    ReliabilityCurve,
    auroc,
    brier_score,
    expected_calibration_error,
    maximum_calibration_error,
    plot_reliability_diagram,
    reliability_curve,
)

BINNED = [expected_calibration_error, maximum_calibration_error, reliability_curve]
ALL_METRICS = [expected_calibration_error, maximum_calibration_error, brier_score, auroc]


# ----------------------------------------------------------------------------------------- helpers / references


def _random_data(seed: int, n: int, dtype: torch.dtype, n_bins: int, with_one: bool = False):
    """Uniform confidences mixed with values exactly on the uniform bin edges (0 included, 1 optional)."""
    gen = torch.Generator().manual_seed(seed)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=dtype)
    on_edge = edges[torch.randint(0, n_bins + int(with_one), (n // 3,), generator=gen)]
    conf = torch.cat([torch.rand(n - n // 3, generator=gen, dtype=dtype), on_edge])
    correct = torch.rand(n, generator=gen, dtype=torch.float64) < conf.double()
    return conf, correct


def _torchmetrics(conf: torch.Tensor, correct: torch.Tensor, n_bins: int, norm: str) -> float:
    return float(binary_calibration_error(conf, correct.long(), n_bins=n_bins, norm=norm))


def _loop_bins(conf: list[float], edges: list[float]) -> list[int]:
    """Bin of each value: the last bin whose left edge is <= the value (the last bin is closed at 1)."""
    inner = edges[1:-1]
    return [sum(1 for e in inner if e <= c) for c in conf]


def _loop_curve(conf: list[float], correct: list[bool], edges: list[float]) -> tuple[list[int], list, list]:
    n_bins = len(edges) - 1
    members: list[list[int]] = [[] for _ in range(n_bins)]
    for i, b in enumerate(_loop_bins(conf, edges)):
        members[b].append(i)
    count = [len(m) for m in members]
    mean_conf = [sum(conf[i] for i in m) / len(m) if m else float("nan") for m in members]
    mean_acc = [sum(correct[i] for i in m) / len(m) if m else float("nan") for m in members]
    return count, mean_conf, mean_acc


def _loop_ece(conf: list[float], correct: list[bool], edges: list[float]) -> float:
    count, mean_conf, mean_acc = _loop_curve(conf, correct, edges)
    return sum(k / len(conf) * abs(a - c) for k, c, a in zip(count, mean_conf, mean_acc) if k)


def _quantile_edges_reference(conf: list[float], n_bins: int) -> list[float]:
    ordered = sorted(conf)
    return [0.0] + [ordered[b * len(conf) // n_bins] for b in range(1, n_bins)] + [1.0]


def _chunk_quantile_ece(conf: list[float], correct: list[bool], n_bins: int) -> float:
    """Equal-mass ECE for distinct confidences: sort, cut into n_bins consecutive chunks, average each."""
    order = sorted(range(len(conf)), key=lambda i: conf[i])
    n = len(conf)
    total = 0.0
    for b in range(n_bins):
        chunk = order[b * n // n_bins : (b + 1) * n // n_bins]
        if chunk:
            mean_conf = sum(conf[i] for i in chunk) / len(chunk)
            mean_acc = sum(correct[i] for i in chunk) / len(chunk)
            total += len(chunk) / n * abs(mean_acc - mean_conf)
    return total


@st.composite
def samples(draw, tied: bool | None = None, min_size: int = 1, max_size: int = 60):
    """(confidence, correct) lists; with ties drawn from a few values (including 0 and 1) when ``tied``."""
    tied = draw(st.booleans()) if tied is None else tied
    n = draw(st.integers(min_size, max_size))
    if tied:
        pool = draw(st.lists(st.sampled_from([0.0, 0.25, 0.5, 0.6, 1 / 3, 0.9, 1.0]), min_size=1, max_size=4))
        conf = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    else:
        conf = draw(st.lists(st.floats(0, 1, allow_subnormal=False), min_size=n, max_size=n))
    correct = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return conf, correct


def _close(a, b) -> bool:
    """Equal up to float64 summation-order rounding (NaN equal to NaN; bin counts exactly equal)."""
    if isinstance(a, ReliabilityCurve):
        return np.array_equal(a.bin_count, b.bin_count) and all(
            np.allclose(x, y, rtol=1e-12, atol=1e-15, equal_nan=True) for x, y in zip(a, b)
        )
    return bool(np.isclose(a, b, rtol=1e-12, atol=1e-15, equal_nan=True))


def _same(a, b) -> bool:
    """Bit-for-bit equal (NaN equal to NaN)."""
    if isinstance(a, ReliabilityCurve):
        return all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b))
    return a == b or (np.isnan(a) and np.isnan(b))


# ----------------------------------------------------------------------------------------- vs torchmetrics


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_bins", [1, 3, 10, 15, 37])
@pytest.mark.parametrize("seed", range(3))
def test_uniform_ece_and_mce_match_torchmetrics(dtype: torch.dtype, n_bins: int, seed: int) -> None:
    conf, correct = _random_data(seed, 600, dtype, n_bins)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    ece = expected_calibration_error(conf, correct, n_bins=n_bins)
    mce = maximum_calibration_error(conf, correct, n_bins=n_bins)
    assert ece == pytest.approx(_torchmetrics(conf, correct, n_bins, "l1"), abs=tol)
    assert mce == pytest.approx(_torchmetrics(conf, correct, n_bins, "max"), abs=tol)


@given(
    n_bins=st.integers(1, 20),
    data=st.data(),
)
def test_uniform_bin_assignment_matches_torchmetrics_on_edges(n_bins: int, data: st.DataObject) -> None:
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)[:-1].tolist()
    value = st.one_of(st.sampled_from(edges), st.floats(0, 1, exclude_max=True, allow_subnormal=False))
    conf = data.draw(st.lists(value, min_size=1, max_size=40))
    correct = data.draw(st.lists(st.booleans(), min_size=len(conf), max_size=len(conf)))
    conf_t, correct_t = torch.tensor(conf, dtype=torch.float64), torch.tensor(correct)
    assert expected_calibration_error(conf, correct, n_bins=n_bins) == pytest.approx(
        _torchmetrics(conf_t, correct_t, n_bins, "l1"), abs=1e-12
    )
    assert maximum_calibration_error(conf, correct, n_bins=n_bins) == pytest.approx(
        _torchmetrics(conf_t, correct_t, n_bins, "max"), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(3))
def test_confidence_one_shares_the_last_uniform_bin(seed: int) -> None:
    """Documented divergence from torchmetrics: 1.0 lies in the closed last bin, not in an extra one."""
    conf, correct = _random_data(seed, 300, torch.float64, 15, with_one=True)
    assert bool((conf == 1).any())
    edges = torch.linspace(0, 1, 16, dtype=torch.float64).tolist()
    assert expected_calibration_error(conf, correct) == pytest.approx(
        _loop_ece(conf.tolist(), correct.tolist(), edges), abs=1e-12
    )
    curve = reliability_curve(conf, correct)
    assert curve.bin_count[-1] == int((conf >= edges[-2]).sum())
    # one over-confident sample at 0.95 and a wrong one at exactly 1.0 share bin 14: |0.5 - 0.975|
    assert expected_calibration_error([0.95, 1.0], [1, 0]) == pytest.approx(0.475)
    assert maximum_calibration_error([0.95, 1.0], [1, 0]) == pytest.approx(0.475)


# ----------------------------------------------------------------------------------------- vs scikit-learn


@pytest.mark.parametrize("decimals", [None, 1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_auroc_matches_sklearn_with_ties(decimals: int | None, seed: int) -> None:
    rng = np.random.default_rng(seed)
    conf = rng.random(500)
    if decimals is not None:
        conf = np.round(conf, decimals)
    correct = rng.random(500) < conf
    assert auroc(conf, correct) == pytest.approx(roc_auc_score(correct, conf), abs=1e-12)


@given(samples())
def test_auroc_matches_sklearn_property(sample) -> None:
    conf, correct = sample
    if len(set(correct)) < 2:
        return
    assert auroc(conf, correct) == pytest.approx(roc_auc_score(correct, conf), abs=1e-12)


def test_auroc_extremes() -> None:
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert auroc([0.5, 0.5, 0.5], [1, 0, 1]) == 0.5


@pytest.mark.parametrize("seed", range(3))
def test_brier_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    conf = rng.random(400)
    correct = rng.random(400) < conf
    assert brier_score(conf, correct) == pytest.approx(brier_score_loss(correct, conf), abs=1e-15)


@pytest.mark.parametrize("correct", [[1, 1, 1], [0, 0, 0], [True], [0.0, 0.0]])
def test_auroc_single_class_is_nan_with_warning(correct: list) -> None:
    with pytest.warns(RuntimeWarning, match="single class"):
        value = auroc([0.3] * len(correct), correct)
    assert isinstance(value, float) and np.isnan(value)


# ----------------------------------------------------------------------------------------- quantile bins, curves


@given(
    conf=st.lists(st.floats(0, 1, allow_subnormal=False), min_size=1, max_size=60, unique=True),
    data=st.data(),
    n_bins=st.integers(1, 20),
)
def test_quantile_ece_equals_sorted_chunk_reference(conf: list[float], data: st.DataObject, n_bins: int) -> None:
    correct = data.draw(st.lists(st.booleans(), min_size=len(conf), max_size=len(conf)))
    got = expected_calibration_error(conf, correct, n_bins=n_bins, strategy="quantile")
    assert got == pytest.approx(_chunk_quantile_ece(conf, correct, n_bins), abs=1e-12)


@given(samples(tied=True), st.integers(1, 12))
def test_quantile_keeps_ties_together(sample, n_bins: int) -> None:
    conf, correct = sample
    curve = reliability_curve(conf, correct, n_bins=n_bins, strategy="quantile")
    np.testing.assert_array_equal(curve.bin_edges, _quantile_edges_reference(conf, n_bins))
    bins = _loop_bins(conf, curve.bin_edges.tolist())
    for value in set(conf):
        assert len({b for b, c in zip(bins, conf) if c == value}) == 1
    assert expected_calibration_error(conf, correct, n_bins=n_bins, strategy="quantile") == pytest.approx(
        _loop_ece(conf, correct, _quantile_edges_reference(conf, n_bins)), abs=1e-12
    )


def test_quantile_bins_hold_equal_mass() -> None:
    conf = np.random.default_rng(0).random(1003)
    counts = reliability_curve(conf, conf > 0.5, n_bins=10, strategy="quantile").bin_count
    assert counts.sum() == 1003 and counts.max() - counts.min() <= 1


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@given(sample=samples(), n_bins=st.integers(1, 25))
def test_reliability_curve_matches_loop_reference(strategy: str, sample, n_bins: int) -> None:
    conf, correct = sample
    curve = reliability_curve(conf, correct, n_bins=n_bins, strategy=strategy)
    assert curve.bin_edges.shape == (n_bins + 1,) and curve.bin_edges.dtype == np.float64
    for field in (curve.bin_confidence, curve.bin_accuracy):
        assert field.shape == (n_bins,) and field.dtype == np.float64
    assert curve.bin_count.dtype == np.int64 and curve.bin_count.sum() == len(conf)
    assert curve.bin_edges[0] == 0.0 and curve.bin_edges[-1] == 1.0 and np.all(np.diff(curve.bin_edges) >= 0)
    count, mean_conf, mean_acc = _loop_curve(conf, correct, curve.bin_edges.tolist())
    np.testing.assert_array_equal(curve.bin_count, count)
    np.testing.assert_allclose(curve.bin_confidence, mean_conf, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(curve.bin_accuracy, mean_acc, rtol=1e-12, atol=1e-15)


def test_uniform_edges_and_one_bin() -> None:
    curve = reliability_curve([0.0, 0.2, 0.5, 1.0], [0, 1, 1, 1], n_bins=4)
    np.testing.assert_allclose(curve.bin_edges, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(curve.bin_count, [2, 0, 1, 1])  # 0.5 is on an edge: the bin on its right
    assert np.isnan(curve.bin_confidence[1]) and np.isnan(curve.bin_accuracy[1])
    conf, correct = [0.1, 0.7, 0.9], [1, 0, 1]
    assert expected_calibration_error(conf, correct, n_bins=1) == pytest.approx(abs(2 / 3 - 1.7 / 3))


# ----------------------------------------------------------------------------------------- invariants, inputs


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@given(sample=samples(min_size=2), data=st.data())
def test_permutation_invariance(strategy: str, sample, data: st.DataObject) -> None:
    conf, correct = sample
    order = data.draw(st.permutations(range(len(conf))))
    shuffled = ([conf[i] for i in order], [correct[i] for i in order])
    for metric in BINNED:
        assert _close(metric(*sample, n_bins=7, strategy=strategy), metric(*shuffled, n_bins=7, strategy=strategy))
    assert _close(brier_score(*shuffled), brier_score(*sample))
    if len(set(correct)) == 2:
        assert _close(auroc(*shuffled), auroc(*sample))


@given(samples())
def test_bounds_and_ordering(sample) -> None:
    conf, correct = sample
    for strategy in ("uniform", "quantile"):
        ece = expected_calibration_error(conf, correct, strategy=strategy)
        mce = maximum_calibration_error(conf, correct, strategy=strategy)
        assert 0.0 <= ece <= mce + 1e-12 <= 1.0 + 1e-12
    assert 0.0 <= brier_score(conf, correct) <= 1.0


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_calibrated_data_has_small_ece_and_miscalibrated_large(strategy: str) -> None:
    rng = np.random.default_rng(0)
    conf = rng.random(200_000)
    calibrated = rng.random(conf.size) < conf
    overconfident = rng.random(conf.size) < conf**2
    assert expected_calibration_error(conf, calibrated, strategy=strategy) < 0.01
    assert maximum_calibration_error(conf, calibrated, strategy=strategy) < 0.03
    assert expected_calibration_error(conf, overconfident, strategy=strategy) > 0.15


@pytest.mark.parametrize("metric", [*BINNED, brier_score, auroc])
def test_numpy_torch_and_list_inputs_agree(metric) -> None:
    rng = np.random.default_rng(1)
    conf = np.round(rng.random(300), 2)
    correct = rng.random(300) < conf
    kwargs = {} if metric in (brier_score, auroc) else {"n_bins": 9}
    reference = metric(conf, correct, **kwargs)
    variants = [
        (torch.tensor(conf), torch.tensor(correct)),
        (torch.tensor(conf, requires_grad=True), torch.tensor(correct).long()),
        (conf.tolist(), correct.tolist()),
        (conf, correct.astype(np.float32)),
        (conf[::-1].copy()[::-1], correct.astype(np.int8)),
    ]
    for conf_in, correct_in in variants:
        assert _same(metric(conf_in, correct_in, **kwargs), reference)
    single = metric(conf.astype(np.float32), correct, **kwargs)
    assert _same(single, metric(torch.tensor(conf).float(), correct, **kwargs))
    assert isinstance(reference, ReliabilityCurve if metric is reliability_curve else float)


def test_half_precision_confidence_is_accepted() -> None:
    conf = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float16)
    assert expected_calibration_error(conf, [0, 1, 1], n_bins=3) == pytest.approx(
        expected_calibration_error(conf.float(), [0, 1, 1], n_bins=3)
    )


_GOOD = [0.2, 0.8, 0.5]
_BAD_INPUTS = [
    # (confidence, correct, kwargs, error type, message fragment)
    ([[0.2, 0.8]], [1, 0], {}, ValueError, "confidence must have shape"),
    (_GOOD, [[1, 0, 1]], {}, ValueError, "correct must have shape"),
    (_GOOD, [1, 0], {}, ValueError, r"correct must have the same length as confidence: expected shape \(3,\), got"),
    ([], [], {}, ValueError, "confidence must be non-empty"),
    (torch.tensor(0.5), [1], {}, ValueError, r"confidence must have shape \[\*\], got \(\)"),
    ([0.2, 1.5, -0.1], [1, 0, 1], {}, ValueError, r"confidence must lie in \[0, 1\], got 2 value"),
    ([0.2, float("nan"), 0.5], [1, 0, 1], {}, ValueError, "confidence must be finite"),
    ([0.2, float("inf"), 0.5], [1, 0, 1], {}, ValueError, "confidence must be finite"),
    (_GOOD, [1, 2, 0], {}, ValueError, "correct must hold only 0 and 1"),
    (_GOOD, [1.0, 0.5, 0.0], {}, ValueError, "correct must hold only 0 and 1"),
    ([1, 0, 1], [1, 0, 1], {}, TypeError, "confidence must be a floating-point tensor"),
    (torch.tensor([True, False]), [1, 0], {}, TypeError, "confidence must be a floating-point tensor"),
    (["a", "b"], [1, 0], {}, TypeError, "confidence must hold bools or real numbers"),
    ([[0.1], [0.2, 0.3]], [1, 0], {}, ValueError, "confidence must be a 1-D array"),
    (0.5, [1], {}, TypeError, "confidence must be a torch.Tensor, numpy array or list, got float"),
    (_GOOD, {1, 0, 1}, {}, TypeError, "correct must be a torch.Tensor, numpy array or list"),
    (_GOOD, torch.tensor([1 + 0j, 0j, 0j]), {}, TypeError, "correct must be a bool or 0/1 tensor"),
]
_BAD_OPTIONS = [
    ({"n_bins": 0}, ValueError, "n_bins must be >= 1, got 0"),
    ({"n_bins": 2.5}, TypeError, "n_bins must be an int, got float"),
    ({"n_bins": True}, TypeError, "n_bins must be an int, got bool"),
    ({"strategy": "equal_width"}, ValueError, "unknown strategy 'equal_width'; expected one of 'uniform', 'quantile'"),
]


@pytest.mark.parametrize("metric", ALL_METRICS + [reliability_curve])
@pytest.mark.parametrize(("confidence", "correct", "kwargs", "error", "match"), _BAD_INPUTS)
def test_bad_inputs_raise_naming_the_argument(metric, confidence, correct, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        metric(confidence, correct, **kwargs)


@pytest.mark.parametrize("metric", BINNED)
@pytest.mark.parametrize(("kwargs", "error", "match"), _BAD_OPTIONS)
def test_bad_options_raise_naming_the_argument(metric, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        metric(_GOOD, [1, 0, 1], **kwargs)


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        expected_calibration_error(_GOOD, [1, 0, 1], 10)  # type: ignore[misc]


def test_import_does_not_load_plotting_or_sklearn() -> None:
    code = "import sys, rac_losses.metrics; print(sorted({'matplotlib', 'sklearn'} & set(sys.modules)))"
    out = subprocess.run(  # cwd outside the repository root: test the installed package
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
    ).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------------------- plotting


@pytest.fixture
def pyplot():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


def _curves() -> dict[str, ReliabilityCurve]:
    rng = np.random.default_rng(0)
    conf = rng.random(500)
    return {
        "baseline": reliability_curve(conf, rng.random(500) < conf**2),
        "rac": reliability_curve(conf, rng.random(500) < conf, strategy="quantile", n_bins=8),
    }


def _curve_ece(curve: ReliabilityCurve) -> float:
    filled = curve.bin_count > 0
    gaps = np.abs(curve.bin_accuracy[filled] - curve.bin_confidence[filled])
    return float(np.sum(curve.bin_count[filled] * gaps) / curve.bin_count.sum())


def test_plot_returns_figure_with_two_panels(pyplot) -> None:
    from matplotlib.figure import Figure

    curves = _curves()
    fig = plot_reliability_diagram(curves, title="before / after")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    main = fig.axes[0]
    labels = [t.get_text() for t in main.get_legend().get_texts()]
    expected = [f"{name}: ECE {_curve_ece(curve):.3f}" for name, curve in curves.items()]
    assert labels == ["perfect calibration", *expected]
    assert main.get_title() == "before / after"


def test_plot_single_curve_into_given_axes(pyplot) -> None:
    fig, axes = pyplot.subplots(1, 2)
    returned = plot_reliability_diagram(_curves()["baseline"], ax=axes[1])
    assert returned is fig and len(fig.axes) == 3


def test_plot_rejects_bad_curves(pyplot) -> None:
    with pytest.raises(TypeError, match="curves must be a ReliabilityCurve"):
        plot_reliability_diagram({})
    with pytest.raises(TypeError, match=r"curves\['x'\] must be a ReliabilityCurve"):
        plot_reliability_diagram({"x": (1, 2)})


def test_plot_without_matplotlib_says_how_to_install(monkeypatch) -> None:
    for module in ("matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ImportError, match=r"pip install rac-losses\[plot\]"):
        plot_reliability_diagram(_curves()["baseline"])
