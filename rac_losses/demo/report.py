"""``report.md``, ``metrics.json`` and the figures, all computed from the runs' metrics.

:func:`summarize` is the one place where per-seed numbers become the reported mean and std; the report's
tables and its "best arm" sentences are generated from it, never written by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["HEADLINE", "METRICS", "summarize", "write_metrics", "render_report", "write_report", "plot_all", "format_table"]

# (key, column label, severity, field, better): better = +1 higher is better, -1 lower, 0 no ranking
METRICS: tuple[tuple[str, str, str, str, int], ...] = (
    ("clean_accuracy", "clean acc", "0", "accuracy", +1),
    ("clean_ece", "clean ECE", "0", "ece", -1),
    ("clean_auroc", "clean AUROC", "0", "auroc", +1),
    ("clean_brier", "clean Brier", "0", "brier", -1),
    ("clean_conf", "clean conf", "0", "conf", 0),
    ("clean_ece_seq", "clean ECE (seq p)", "0", "ece_seq", -1),
    ("clean_malformed", "clean malformed", "0", "malformed", -1),
    ("sev5_accuracy", "sev-5 acc", "5", "accuracy", +1),
    ("sev5_ece", "sev-5 ECE", "5", "ece", -1),
    ("sev5_auroc", "sev-5 AUROC", "5", "auroc", +1),
    ("sev5_brier", "sev-5 Brier", "5", "brier", -1),
    ("sev5_conf", "sev-5 conf", "5", "conf", 0),
    ("sev5_ece_seq", "sev-5 ECE (seq p)", "5", "ece_seq", -1),
    ("sev5_malformed", "sev-5 malformed", "5", "malformed", -1),
    ("sev5_agreement", "sev-5 agreement", "5", "agreement", +1),
    ("sev5_conf_same", "sev-5 conf of clean answer", "5", "conf_same", 0),
)
#: Columns of the main table (the rest go in the second table).
HEADLINE = ("clean_accuracy", "clean_ece", "clean_auroc", "clean_brier", "sev5_ece", "sev5_malformed", "sev5_agreement")
_BY_KEY = {m[0]: m for m in METRICS}


def seed_values(metrics: dict[str, Any], arm: str, key: str) -> list[float]:
    """The per-seed values of one summary metric, in seed order."""
    _, _, sev, field, _ = _BY_KEY[key]
    runs = metrics["runs"][arm]
    return [float(runs[str(s)]["eval"][sev][field]) for s in metrics["seeds"]]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single seed). NaNs propagate."""
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return mean, std


def summarize(metrics: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{arm: {metric: {"mean", "std", "values"}}}`` over seeds, for every metric of :data:`METRICS`."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for arm in metrics["arms"]:
        out[arm] = {}
        for key, *_ in METRICS:
            values = seed_values(metrics, arm, key)
            mean, std = mean_std(values)
            out[arm][key] = {"mean": mean, "std": std, "values": values}
    return out


def _fmt(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "nan"
    return f"{mean:.3f} ± {std:.3f}"


def format_table(metrics: dict[str, Any], keys: tuple[str, ...]) -> str:
    """A markdown table: one row per arm, ``mean ± std`` over seeds per metric."""
    summary = summarize(metrics)
    head = "| arm | " + " | ".join(_BY_KEY[k][1] for k in keys) + " |"
    rule = "| --- | " + " | ".join("---" for _ in keys) + " |"
    rows = [head, rule]
    for arm in metrics["arms"]:
        cells = [_fmt(summary[arm][k]["mean"], summary[arm][k]["std"]) for k in keys]
        rows.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def best_sentences(metrics: dict[str, Any]) -> list[str]:
    """One computed sentence per ranked metric naming the best arm (by the mean over seeds)."""
    summary = summarize(metrics)
    arms = list(metrics["arms"])
    lines = []
    for key, label, _, _, better in METRICS:
        if better == 0 or len(arms) < 2:
            continue
        means = {a: summary[a][key]["mean"] for a in arms if not math.isnan(summary[a][key]["mean"])}
        if not means:
            continue
        best = (max if better > 0 else min)(means, key=means.get)
        ties = sorted(a for a in means if abs(means[a] - means[best]) < 5e-4)
        word = "highest" if better > 0 else "lowest"
        who = " and ".join(f"`{a}`" for a in ties) if len(ties) > 1 else f"`{best}`"
        lines.append(f"- {label}: {who} ({word}, {means[best]:.3f})")
    return lines


def claims(metrics: dict[str, Any]) -> list[str]:
    """The paper's three claims, each checked against this run's means (only for arms that ran)."""
    s = summarize(metrics)
    arms = metrics["arms"]
    out = []

    def m(arm: str, key: str) -> float:
        return s[arm][key]["mean"]

    if "grpo" in arms and "rank" in arms:
        d = m("rank", "clean_accuracy") - m("grpo", "clean_accuracy")
        per_seed = np.subtract(s["rank"]["clean_accuracy"]["values"], s["grpo"]["clean_accuracy"]["values"])
        verdict = "reproduced" if d > 0 else "not reproduced"
        out.append(
            f"1. The ranking loss raises accuracy: **{verdict}** here (clean accuracy {m('grpo', 'clean_accuracy'):.3f} -> "
            f"{m('rank', 'clean_accuracy'):.3f}, {d:+.3f}; higher in {int((per_seed > 0).sum())} of {len(per_seed)} seeds)."
        )
    if "grpo" in arms and "pair" in arms:
        d = m("pair", "sev5_ece") - m("grpo", "sev5_ece")
        da = m("pair", "sev5_accuracy") - m("grpo", "sev5_accuracy")
        per_seed = np.subtract(s["pair"]["sev5_ece"]["values"], s["grpo"]["sev5_ece"]["values"])
        verdict = "reproduced" if d < 0 else "not reproduced"
        out.append(
            f"2. The pairwise loss lowers calibration error under corruption: **{verdict}** here (severity-5 ECE "
            f"{m('grpo', 'sev5_ece'):.3f} -> {m('pair', 'sev5_ece'):.3f}, {d:+.3f}, lower in {int((per_seed < 0).sum())} of "
            f"{len(per_seed)} seeds; severity-5 accuracy {da:+.3f}, malformed {m('pair', 'sev5_malformed'):.3f}, "
            f"agreement {m('grpo', 'sev5_agreement'):.3f} -> {m('pair', 'sev5_agreement'):.3f})."
        )
    if "rac" in arms and len(arms) > 1:
        others = [a for a in arms if a != "rac"]
        clean_best = all(m("rac", "clean_ece") <= m(a, "clean_ece") for a in others)
        sev_best = all(m("rac", "sev5_ece") <= m(a, "sev5_ece") for a in others)
        verdict = "reproduced" if clean_best and sev_best else ("partly reproduced" if clean_best or sev_best else "not reproduced")
        out.append(
            f"3. Both together calibrate best: **{verdict}** here (`rac` clean ECE {m('rac', 'clean_ece'):.3f}, "
            f"{'lowest' if clean_best else 'not the lowest'}; severity-5 ECE {m('rac', 'sev5_ece'):.3f}, "
            f"{'lowest' if sev_best else 'not the lowest'} of {len(arms)} arms)."
        )
    return out


def severity_table(metrics: dict[str, Any], field: str) -> str:
    """Mean over seeds of one per-severity field, one row per arm, one column per severity."""
    sevs = [str(s) for s in metrics["severities"]]
    rows = ["| arm | " + " | ".join(f"sev {s}" for s in sevs) + " |", "| --- | " + " | ".join("---" for _ in sevs) + " |"]
    for arm in metrics["arms"]:
        runs = metrics["runs"][arm]
        vals = [np.mean([runs[str(seed)]["eval"][s][field] for seed in metrics["seeds"]]) for s in sevs]
        rows.append(f"| {arm} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    return "\n".join(rows)


def render_report(metrics: dict[str, Any], command: str | None = None, wall_s: float | None = None) -> str:
    cfg = metrics["config"]
    n_seeds = len(metrics["seeds"])
    lines = [
        "# rac-demo report",
        "",
        f"GRPO vs GRPO + RAC on a synthetic visual question task: {n_seeds} seed(s) per arm "
        f"({', '.join(str(s) for s in metrics['seeds'])}), {cfg['warmup_steps']} warm-up steps, "
        f"{cfg['steps']} GRPO steps of {cfg['prompts']} prompts x {cfg['group_size']} samples, "
        f"{cfg['eval_size']} held-out questions per severity. Values are mean ± std over seeds (std with ddof=1). "
        "Confidence = exp(mean token log-prob) of the greedy answer (`sequence_confidence(..., method=\"prob\")`); "
        "\"seq p\" columns use the sequence probability exp(sum of token log-probs) instead. ECE: 15 equal-width bins. "
        "Severity 5: the same questions on images corrupted at severity 5 "
        f"({', '.join(cfg['corruptions'])}, one per question in turn).",
        "",
    ]
    if command:
        lines += [f"Command: `{command}`" + (f" (wall time {wall_s:.0f} s)" if wall_s is not None else ""), ""]
    lines += ["## Arms", ""]
    for arm, spec in metrics["arms"].items():
        lines.append(f"- `{arm}`: {spec['description']}")
    lines += ["", "## Results", "", format_table(metrics, HEADLINE), "", format_table(
        metrics, tuple(k for k, *_ in METRICS if k not in HEADLINE)), ""]
    lines += ["Warm-up checkpoint (before GRPO), mean over seeds: " + ", ".join(
        f"{label} {np.mean([metrics['warmup'][str(s)][sev][field] for s in metrics['seeds']]):.3f}"
        for key, label, sev, field, _ in METRICS if key in HEADLINE) + ".", ""]
    lines += ["## Best arm per metric (by mean)", "", *best_sentences(metrics), ""]
    lines += ["## The paper's claims, checked", "", *claims(metrics), ""]
    lines += ["## Confidence vs severity (mean confidence of the greedy answer)", "", severity_table(metrics, "conf"), ""]
    lines += ["## Accuracy vs severity", "", severity_table(metrics, "accuracy"), ""]
    lines += ["## ECE vs severity", "", severity_table(metrics, "ece"), ""]
    lines += ["## Agreement with the clean answer vs severity", "", severity_table(metrics, "agreement"), ""]
    lines += ["## Figures", "", "![reliability](reliability.png)", "", "![confidence vs severity](confidence_vs_severity.png)", ""]
    return "\n".join(lines)


def write_metrics(metrics: dict[str, Any], path: Path) -> None:
    full = dict(metrics)
    full["summary"] = summarize(metrics)
    path.write_text(json.dumps(full, indent=1, sort_keys=False, allow_nan=True) + "\n")


def write_report(metrics: dict[str, Any], path: Path, command: str | None = None, wall_s: float | None = None) -> None:
    path.write_text(render_report(metrics, command, wall_s))


def _pooled_curve(metrics: dict[str, Any], arm: str, sev: str, key: str = "reliability"):
    from rac_losses.metrics import ReliabilityCurve

    runs = metrics["runs"][arm]
    parts = [runs[str(s)]["eval"][sev][key] for s in metrics["seeds"]]
    count = np.sum([p["count"] for p in parts], axis=0).astype(np.int64)
    conf = np.sum([p["conf_sum"] for p in parts], axis=0)
    corr = np.sum([p["correct_sum"] for p in parts], axis=0)
    n_bins = len(count)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ReliabilityCurve(np.linspace(0, 1, n_bins + 1), conf / count, corr / count, count)


def plot_all(metrics: dict[str, Any], out: Path) -> list[Path]:
    """``reliability.png`` (per arm: clean and severity 5, pooled over seeds) and ``confidence_vs_severity.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rac_losses.metrics import plot_reliability_diagram

    arms = list(metrics["arms"])
    fig, axes = plt.subplots(1, len(arms), figsize=(4.2 * len(arms), 5.6), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        curves = {"clean": _pooled_curve(metrics, arm, "0"), "severity 5": _pooled_curve(metrics, arm, "5")}
        plot_reliability_diagram(curves, ax=ax, title=arm)
    fig.suptitle("Reliability (confidence = exp(mean token log-prob), all seeds pooled)")
    fig.tight_layout()
    paths = [out / "reliability.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    sevs = [str(s) for s in metrics["severities"]]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    for field, ax, label in zip(("conf", "accuracy", "ece", "agreement"), axes, ("mean confidence", "accuracy", "ECE", "agreement with clean answer")):
        for arm in arms:
            runs = metrics["runs"][arm]
            vals = np.array([[runs[str(seed)]["eval"][s][field] for s in sevs] for seed in metrics["seeds"]])
            ax.errorbar([int(s) for s in sevs], vals.mean(0), yerr=vals.std(0), marker="o", capsize=3, label=arm)
        ax.set(xlabel="corruption severity (0 = clean)", ylabel=label, title=label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    paths.append(out / "confidence_vs_severity.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths
