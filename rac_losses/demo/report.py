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

__all__ = [
    "CLAIMS", "HEADLINE", "METRICS", "claim_rows", "format_table", "plot_all", "read_field", "render_report", "summarize",
    "write_metrics", "write_report",
]

# (key, column label, severity, field, better): better = +1 higher is better, -1 lower, 0 no ranking. A
# field "summary/x" reads calibration_summary's x.
METRICS: tuple[tuple[str, str, str, str, int], ...] = (
    ("clean_accuracy", "clean acc", "0", "accuracy", +1),
    ("clean_ece", "clean ECE", "0", "ece", -1),
    ("clean_ece10", "clean ECE-10", "0", "ece10", -1),
    ("clean_auroc", "clean AUROC", "0", "auroc", +1),
    ("clean_brier", "clean Brier", "0", "brier", -1),
    ("clean_conf", "clean conf", "0", "conf", 0),
    ("clean_malformed", "clean malformed", "0", "malformed", -1),
    ("clean_ece_tok", "clean ECE (tok p)", "0", "ece_tok", -1),
    ("clean_ece10_tok", "clean ECE-10 (tok p)", "0", "ece10_tok", -1),
    ("clean_auroc_tok", "clean AUROC (tok p)", "0", "auroc_tok", +1),
    ("clean_brier_tok", "clean Brier (tok p)", "0", "brier_tok", -1),
    ("clean_conf_tok", "clean conf (tok p)", "0", "conf_tok", 0),
    ("clean_ece_exp", "clean ECE (E stated)", "0", "ece_exp", -1),
    ("clean_auroc_exp", "clean AUROC (E stated)", "0", "auroc_exp", +1),
    ("clean_overconf", "clean overconfident", "0", "summary/overconfidence_rate", -1),
    ("clean_high_err", "clean high-conf error", "0", "summary/high_conf_error_ratio", -1),
    ("clean_tau", "clean Kendall tau", "0", "summary/kendall_tau", +1),
    ("sev5_accuracy", "sev-5 acc", "5", "accuracy", +1),
    ("sev5_ece", "sev-5 ECE", "5", "ece", -1),
    ("sev5_ece10", "sev-5 ECE-10", "5", "ece10", -1),
    ("sev5_auroc", "sev-5 AUROC", "5", "auroc", +1),
    ("sev5_brier", "sev-5 Brier", "5", "brier", -1),
    ("sev5_conf", "sev-5 conf", "5", "conf", 0),
    ("sev5_malformed", "sev-5 malformed", "5", "malformed", -1),
    ("sev5_ece_tok", "sev-5 ECE (tok p)", "5", "ece_tok", -1),
    ("sev5_auroc_tok", "sev-5 AUROC (tok p)", "5", "auroc_tok", +1),
    ("sev5_conf_tok", "sev-5 conf (tok p)", "5", "conf_tok", 0),
    ("sev5_agreement", "sev-5 agreement", "5", "agreement", +1),
)
#: Columns of the main table (the rest go in the second table).
HEADLINE = ("clean_accuracy", "clean_ece", "clean_ece10", "clean_auroc", "clean_brier", "clean_ece_tok", "sev5_accuracy",
            "sev5_ece", "sev5_malformed")
_BY_KEY = {m[0]: m for m in METRICS}


def read_field(result: dict[str, Any], field: str) -> float:
    """One per-severity result's ``field`` (``"summary/x"``: its calibration_summary's ``x``; NaN if absent)."""
    if field.startswith("summary/"):
        return float(result["summary"].get(field.split("/", 1)[1], float("nan")))
    return float(result[field])


def seed_values(metrics: dict[str, Any], arm: str, key: str) -> list[float]:
    """The per-seed values of one summary metric, in seed order."""
    _, _, sev, field, _ = _BY_KEY[key]
    runs = metrics["runs"][arm]
    return [read_field(runs[str(s)]["eval"][sev], field) for s in metrics["seeds"]]


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


def _fmt(mean: float, std: float, n_seeds: int) -> str:
    if math.isnan(mean):
        return "nan"
    return f"{mean:.3f}" if n_seeds == 1 else f"{mean:.3f} ± {std:.3f}"


def format_table(metrics: dict[str, Any], keys: tuple[str, ...]) -> str:
    """A markdown table: one row per arm, ``mean ± std`` over seeds per metric (the mean alone for one seed)."""
    summary = summarize(metrics)
    n = len(metrics["seeds"])
    head = "| arm | " + " | ".join(_BY_KEY[k][1] for k in keys) + " |"
    rule = "| --- | " + " | ".join("---" for _ in keys) + " |"
    rows = [head, rule]
    for arm in metrics["arms"]:
        cells = [_fmt(summary[arm][k]["mean"], summary[arm][k]["std"], n) for k in keys]
        rows.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def best_sentences(metrics: dict[str, Any]) -> list[str]:
    """One computed sentence per ranked metric naming the best arm (by the mean over seeds), and in how
    many seeds it was the best."""
    summary = summarize(metrics)
    arms = list(metrics["arms"])
    n = len(metrics["seeds"])
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
        wins = 0
        for i in range(n):
            vals = {a: summary[a][key]["values"][i] for a in means}
            if not any(math.isnan(v) for v in vals.values()):
                target = (max if better > 0 else min)(vals.values())
                wins += abs(vals[best] - target) < 5e-4
        lines.append(f"- {label}: {who} ({word}, {means[best]:.3f}; best in {wins} of {n} seeds)")
    return lines


def own_confidence(spec: dict[str, Any]) -> str:
    """``""`` (stated) or ``"_tok"``: the confidence an arm trains, the one its claims are checked on."""
    return "_tok" if spec.get("confidence") == "token" and spec.get("uses_losses") else ""


#: (claim, metric key without the confidence suffix, better)
CLAIMS: tuple[tuple[str, str, int], ...] = (
    ("raises clean accuracy", "clean_accuracy", +1),
    ("lowers clean calibration error (ECE, 15 bins)", "clean_ece", -1),
    ("lowers calibration error at severity 5", "sev5_ece", -1),
    ("separates right from wrong answers better (clean AUROC)", "clean_auroc", +1),
)


def _key(base: str, suffix: str) -> str:
    return base if base.endswith("accuracy") else base + suffix


def claim_rows(metrics: dict[str, Any], baseline: str) -> list[str]:
    """A markdown table: per calibration arm and claim, the paired difference to ``baseline`` over seeds
    (mean ± std) and the number of seeds in which the claim held, each on the arm's own confidence."""
    s = summarize(metrics)
    n = len(metrics["seeds"])
    rows = [f"| arm (confidence) | claim vs `{baseline}` | {baseline} | arm | difference | held in |", "| --- | --- | --- | --- | --- | --- |"]
    for arm, spec in metrics["arms"].items():
        if arm == baseline:
            continue
        suffix = own_confidence(spec)
        for claim, base, better in CLAIMS:
            key = _key(base, suffix)
            a, b = np.asarray(s[arm][key]["values"]), np.asarray(s[baseline][key]["values"])
            d = a - b
            held = int(np.sum(d * better > 0))
            mean, std = mean_std(d.tolist())
            label = "stated" if suffix == "" else "token prob"
            rows.append(
                f"| `{arm}` ({label}) | {claim} | {b.mean():.3f} | {a.mean():.3f} | {_fmt(mean, std, n).replace('nan', 'n/a')} "
                f"| {held} of {n} |"
            )
    return rows


def render_report(metrics: dict[str, Any], command: str | None = None, wall_s: float | None = None) -> str:
    cfg = metrics["config"]
    n_seeds = len(metrics["seeds"])
    env = metrics.get("environment", {})
    lines = [
        "# rac-demo report",
        "",
    ]
    if cfg.get("quick"):
        lines += ["**`--quick` run: a smoke test of the pipeline with tiny budgets. Its numbers mean nothing; "
                  "no claim is checked.**", ""]
    lines += [
        f"Calibration methods compared on a synthetic visual question task: {n_seeds} seed(s) per arm "
        f"({', '.join(str(s) for s in metrics['seeds'])}), {cfg['warmup_steps']} warm-up steps, "
        f"{cfg['steps']} GRPO steps of {cfg['prompts']} prompts x {cfg['group_size']} samples, "
        f"{cfg['eval_size']} held-out questions per severity. "
        + ("Values are mean ± std over seeds (std with ddof=1). " if n_seeds > 1 else "One seed: no std. ")
        + "The policy answers `answer confidence <eos>` (greedy). **Stated** confidence = the confidence token's "
        "value (0 for a malformed response); **tok p** = the answer token's probability; **E stated** = the "
        "expected stated value (`stated_confidence`). ECE: 15 equal-width bins; ECE-10: the paper's 10 "
        "right-closed bins. Severity 5: the same questions on images corrupted at severity 5 "
        f"({', '.join(cfg['corruptions'])}, one per question in turn).",
        "",
    ]
    if command:
        lines += [f"Command: `{command}`" + (f" (wall time {wall_s:.0f} s)" if wall_s is not None else ""), ""]
    if env:
        lines += ["Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + ". Numbers can differ on "
                  "another CPU or torch build (floating-point summation order); the seeds' spread is the margin.", ""]
    lines += ["## Arms", ""]
    for arm, spec in metrics["arms"].items():
        lines.append(f"- `{arm}`: {spec['description']}")
    lines += ["", "## Results", "", format_table(metrics, HEADLINE), "", format_table(
        metrics, tuple(k for k, *_ in METRICS if k not in HEADLINE)), ""]
    lines += ["Warm-up checkpoint (before RL), mean over seeds: " + ", ".join(
        f"{label} {np.mean([read_field(metrics['warmup'][str(s)][sev], field) for s in metrics['seeds']]):.3f}"
        for key, label, sev, field, _ in METRICS if key in HEADLINE) + ".", ""]
    lines += ["## Best arm per metric (by mean)", "", *best_sentences(metrics), ""]
    if not cfg.get("quick") and "grpo" in metrics["arms"] and len(metrics["arms"]) > 1:
        lines += ["## Claims per formulation, against GRPO", "",
                  "Each arm on the confidence it trains (stated, or token probability for the token-probability "
                  "losses); difference = arm - grpo per seed" + (", mean ± std over seeds." if n_seeds > 1 else " (one seed).")
                  + " A claim holds in a seed when the difference has the claimed sign.", "", *claim_rows(metrics, "grpo"), ""]
        if "rlcr" in metrics["arms"] and len(metrics["arms"]) > 2:
            lines += ["## Against RLCR", "", *claim_rows({**metrics, "arms": {a: v for a, v in metrics["arms"].items() if a != "grpo"}}, "rlcr"), ""]
    for title, field in (("Stated confidence", "conf"), ("Token-probability confidence", "conf_tok"), ("Accuracy", "accuracy"),
                         ("ECE of the stated confidence", "ece"), ("ECE of the token probability", "ece_tok"),
                         ("Malformed rate", "malformed"), ("Agreement with the clean answer", "agreement")):
        lines += [f"## {title} vs severity", "", severity_table(metrics, field), ""]
    lines += ["## Figures", "", "![reliability](reliability.png)", "", "![confidence vs severity](confidence_vs_severity.png)", ""]
    return "\n".join(lines)


def severity_table(metrics: dict[str, Any], field: str) -> str:
    """Mean over seeds of one per-severity field, one row per arm, one column per severity."""
    sevs = [str(s) for s in metrics["severities"]]
    rows = ["| arm | " + " | ".join(f"sev {s}" for s in sevs) + " |", "| --- | " + " | ".join("---" for _ in sevs) + " |"]
    for arm in metrics["arms"]:
        runs = metrics["runs"][arm]
        vals = [np.mean([read_field(runs[str(seed)]["eval"][s], field) for seed in metrics["seeds"]]) for s in sevs]
        rows.append(f"| {arm} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    return "\n".join(rows)


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
    """``reliability.png`` (per arm: the stated confidence, clean and severity 5, pooled over seeds) and
    ``confidence_vs_severity.png`` (stated and token confidence, accuracy, ECE, malformed rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rac_losses.metrics import plot_reliability_diagram

    arms = list(metrics["arms"])
    fig, axes = plt.subplots(1, len(arms), figsize=(4.2 * len(arms), 5.6), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        curves = {"clean": _pooled_curve(metrics, arm, "0"), "severity 5": _pooled_curve(metrics, arm, "5")}
        plot_reliability_diagram(curves, ax=ax, title=arm)
    fig.suptitle("Reliability of the stated confidence (all seeds pooled)")
    fig.tight_layout()
    paths = [out / "reliability.png"]
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    sevs = [str(s) for s in metrics["severities"]]
    panels = (("conf", "stated confidence"), ("accuracy", "accuracy"), ("conf_tok", "answer-token probability"),
              ("ece", "ECE of stated confidence"), ("malformed", "malformed rate"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4))
    for (field, label), ax in zip(panels, axes):
        for arm in arms:
            runs = metrics["runs"][arm]
            vals = np.array([[read_field(runs[str(seed)]["eval"][s], field) for s in sevs] for seed in metrics["seeds"]])
            ax.errorbar([int(s) for s in sevs], vals.mean(0), yerr=vals.std(0), marker="o", capsize=3, label=arm)
        ax.set(xlabel="corruption severity (0 = clean)", ylabel=label, title=label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "confidence_vs_severity.png")
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)
    return paths
