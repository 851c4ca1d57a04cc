"""``rac-demo --quick`` end to end, the report against metrics.json, determinism and option errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from rac_losses.demo import report
from rac_losses.demo.cli import build_parser, main, run_experiment
from rac_losses.demo.train import ARMS, TrainConfig

FILES = ("report.md", "metrics.json", "reliability.png", "confidence_vs_severity.png")


def test_quick_writes_every_file(quick_run: Path) -> None:
    for name in FILES:
        path = quick_run / name
        assert path.is_file() and path.stat().st_size > 0, name
    assert (quick_run / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert list(metrics["arms"]) == list(ARMS)
    for arm in ARMS:
        for seed in metrics["seeds"]:
            ev = metrics["runs"][arm][str(seed)]["eval"]
            assert sorted(ev) == ["0", "1", "2", "3", "4", "5"]
            for res in ev.values():
                for key in ("accuracy", "ece", "auroc", "brier", "conf", "ece_seq", "conf_seq", "malformed", "agreement"):
                    assert key in res


def _expected(metrics: dict, arm: str, sev: str, field: str) -> tuple[float, float]:
    """Mean and ddof=1 std over seeds, straight from the per-seed results (not via report.summarize)."""
    values = np.array([metrics["runs"][arm][str(s)]["eval"][sev][field] for s in metrics["seeds"]], dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _tables(text: str) -> list[list[list[str]]]:
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if current is None:
                current = [cells]
                tables.append(current)
            elif not set("".join(cells)) <= set("- "):
                current.append(cells)
        else:
            current = None
    return tables


def _check_report(text: str, metrics: dict) -> int:
    by_label = {label: (sev, field) for _, label, sev, field, _ in report.METRICS}
    checked = 0
    for table in _tables(text):
        head, rows = table[0], table[1:]
        if head[0] != "arm" or head[1] not in by_label:
            continue
        for row in rows:
            arm = row[0]
            for label, cell in zip(head[1:], row[1:]):
                sev, field = by_label[label]
                mean, std = _expected(metrics, arm, sev, field)
                if math.isnan(mean):
                    assert cell == "nan"
                else:
                    m, s = (float(x) for x in re.fullmatch(r"(\S+) ± (\S+)", cell).groups())
                    assert m == pytest.approx(mean, abs=5e-4) and s == pytest.approx(std, abs=5e-4), (arm, label)
                checked += 1
    return checked


def test_report_numbers_equal_a_recomputation_from_metrics_json(quick_run: Path, quick_metrics: dict) -> None:
    text = (quick_run / "report.md").read_text()
    assert _check_report(text, quick_metrics) == len(ARMS) * len(report.METRICS)
    # the summary stored in metrics.json is the same recomputation
    for arm in quick_metrics["arms"]:
        for key, _, sev, field, _ in report.METRICS:
            mean, std = _expected(quick_metrics, arm, sev, field)
            stored = quick_metrics["summary"][arm][key]
            assert (math.isnan(mean) and math.isnan(stored["mean"])) or stored["mean"] == pytest.approx(mean)
            assert (math.isnan(std) and math.isnan(stored["std"])) or stored["std"] == pytest.approx(std, abs=1e-12)


def _fake_metrics(seeds=(0, 1, 2)) -> dict:
    """A metrics dict with 3 seeds and made-up numbers, to test the report's arithmetic and sentences."""
    rng = np.random.default_rng(0)
    curve = {"count": [1] * 15, "conf_sum": [0.5] * 15, "correct_sum": [0.5] * 15}
    runs = {}
    for a, arm in enumerate(("grpo", "rank", "pair", "rac")):
        runs[arm] = {}
        for s in seeds:
            ev = {}
            for sev in range(6):
                ev[str(sev)] = {
                    **{k: float(rng.uniform()) for k in ("accuracy", "ece", "auroc", "brier", "conf", "ece_seq", "auroc_seq",
                                                         "brier_seq", "conf_seq", "malformed", "agreement", "conf_same")},
                    "reliability": curve, "reliability_seq": curve,
                }
            ev["0"]["accuracy"] = 0.5 + 0.1 * a  # rac highest accuracy
            ev["5"]["ece"] = 0.4 - 0.05 * a  # rac lowest severity-5 ECE
            runs[arm][str(s)] = {"eval": ev}
    return {
        "config": {"warmup_steps": 1, "steps": 1, "prompts": 1, "group_size": 1, "eval_size": 1, "corruptions": ["x"]},
        "arms": {a: {"description": a} for a in runs},
        "seeds": list(seeds),
        "severities": list(range(6)),
        "warmup": {str(s): runs["grpo"][str(s)]["eval"] for s in seeds},
        "runs": runs,
    }


def test_report_arithmetic_and_sentences_with_three_seeds(tmp_path: Path) -> None:
    metrics = _fake_metrics()
    text = report.render_report(metrics)
    assert _check_report(text, metrics) == 4 * len(report.METRICS)
    assert "- clean acc: `rac` (highest, 0.800)" in text
    assert "- sev-5 ECE: `rac` (lowest, 0.250)" in text
    assert "1. The ranking loss raises accuracy: **reproduced**" in text
    report.write_metrics(metrics, tmp_path / "metrics.json")
    assert json.loads((tmp_path / "metrics.json").read_text())["summary"]["rac"]["clean_accuracy"]["std"] == pytest.approx(0.0, abs=1e-12)
    report.plot_all(metrics, tmp_path)
    assert (tmp_path / "reliability.png").is_file()


def test_same_seed_same_metrics() -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kw = dict(seeds=[3], arms=["rac", "pair_logprob"], config=TrainConfig(warmup_steps=4, steps=2, prompts=4),
                  pool_size=64, eval_size=16, progress=False)
        a, b = run_experiment(**kw), run_experiment(**kw)
    finally:
        torch.set_num_threads(threads)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize(
    "argv, message",
    [(["--arms", "grpo,nope"], "unknown arm"), (["--seeds", "x"], "--seeds"), (["--seeds", "1,1"], "--seeds"), (["--steps", "-1"], "--steps")],
)
def test_bad_options(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        main(argv + ["--no-progress"])
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_parser_defaults() -> None:
    args = build_parser().parse_args([])
    assert args.arms == list(ARMS) and args.out == Path("rac-demo-out") and args.seeds is None
