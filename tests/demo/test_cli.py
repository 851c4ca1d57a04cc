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
from rac_losses.demo.train import ARMS, DEFAULT_ARMS, TrainConfig

FILES = ("report.md", "metrics.json", "reliability.png", "confidence_vs_severity.png")


def test_quick_writes_every_file(quick_run: Path) -> None:
    for name in FILES:
        path = quick_run / name
        assert path.is_file() and path.stat().st_size > 0, name
    assert (quick_run / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert list(metrics["arms"]) == list(DEFAULT_ARMS)
    assert set(metrics["environment"]) >= {"torch", "numpy", "cpu", "python"}
    for arm in DEFAULT_ARMS:
        for seed in metrics["seeds"]:
            ev = metrics["runs"][arm][str(seed)]["eval"]
            assert sorted(ev) == ["0", "1", "2", "3", "4", "5"]
            for res in ev.values():
                for key in ("accuracy", "malformed", "agreement", "ece", "ece10", "auroc", "brier", "conf", "ece_tok",
                            "ece10_tok", "auroc_tok", "brier_tok", "conf_tok", "ece_exp", "auroc_exp", "conf_exp"):
                    assert key in res, key
                assert {"count", "ece", "brier", "kendall_tau", "format_rate"} <= set(res["summary"])
                assert res["summary"]["format_rate"] == pytest.approx(1 - res["malformed"])
    text = (quick_run / "report.md").read_text()
    assert "Its numbers mean nothing" in text and "Claims per formulation" not in text
    assert "±" not in text  # one seed: no std
    for key in ("torch", "numpy", "cpu"):
        assert f"{key} {metrics['environment'][key]}" in text


def _expected(metrics: dict, arm: str, sev: str, field: str) -> tuple[float, float]:
    """Mean and ddof=1 std over seeds, straight from the per-seed results (not via report.summarize)."""
    def read(res: dict) -> float:
        if field.startswith("summary/"):
            return res["summary"].get(field[8:], float("nan"))
        return res[field]

    values = np.array([read(metrics["runs"][arm][str(s)]["eval"][sev]) for s in metrics["seeds"]], dtype=float)
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
                elif len(metrics["seeds"]) == 1:
                    assert float(cell) == pytest.approx(mean, abs=5e-4), (arm, label)
                else:
                    m, s = (float(x) for x in re.fullmatch(r"(\S+) ± (\S+)", cell).groups())
                    assert m == pytest.approx(mean, abs=5e-4) and s == pytest.approx(std, abs=5e-4), (arm, label)
                checked += 1
    return checked


def test_report_numbers_equal_a_recomputation_from_metrics_json(quick_run: Path, quick_metrics: dict) -> None:
    text = (quick_run / "report.md").read_text()
    assert _check_report(text, quick_metrics) == len(DEFAULT_ARMS) * len(report.METRICS)
    # the summary stored in metrics.json is the same recomputation
    for arm in quick_metrics["arms"]:
        for key, _, sev, field, _ in report.METRICS:
            mean, std = _expected(quick_metrics, arm, sev, field)
            stored = quick_metrics["summary"][arm][key]
            assert (math.isnan(mean) and math.isnan(stored["mean"])) or stored["mean"] == pytest.approx(mean)
            assert (math.isnan(std) and math.isnan(stored["std"])) or stored["std"] == pytest.approx(std, abs=1e-12)


FIELDS = ("accuracy", "malformed", "agreement", "ece", "ece10", "auroc", "brier", "conf", "ece_tok", "ece10_tok", "auroc_tok",
          "brier_tok", "conf_tok", "ece_exp", "auroc_exp", "conf_exp")
FAKE_ARMS = {"grpo": ("binary", "token", False), "rlcr": ("rlcr", "token", False), "rac_paper": ("paper", "token", False),
             "rac_loss": ("binary", "token", True)}


def _fake_metrics(seeds=(0, 1, 2)) -> dict:
    """A metrics dict with made-up numbers, to test the report's arithmetic and sentences."""
    rng = np.random.default_rng(0)
    curve = {"count": [1] * 15, "conf_sum": [0.5] * 15, "correct_sum": [0.5] * 15}
    runs = {}
    for a, arm in enumerate(FAKE_ARMS):
        runs[arm] = {}
        for s in seeds:
            ev = {}
            for sev in range(6):
                ev[str(sev)] = {
                    **{k: float(rng.uniform()) for k in FIELDS},
                    "summary": {"overconfidence_rate": float(rng.uniform()), "high_conf_error_ratio": 0.5, "kendall_tau": 0.1},
                    "reliability": curve, "reliability_tok": curve,
                }
            ev["0"]["accuracy"] = 0.5 + 0.1 * a + 0.01 * s  # rac_loss highest accuracy, in every seed
            ev["5"]["ece"] = 0.4 - 0.05 * a  # rac_loss lowest severity-5 ECE (stated)
            ev["5"]["ece_tok"] = 0.4 + 0.05 * a - (0.2 if (arm == "rac_loss" and s == 0) else 0.0)
            runs[arm][str(s)] = {"eval": ev}
    return {
        "config": {"warmup_steps": 1, "steps": 1, "prompts": 1, "group_size": 1, "eval_size": 1, "corruptions": ["x"], "quick": False},
        "environment": {"torch": "t", "numpy": "n", "cpu": "c"},
        "arms": {a: {"description": a, "reward": r, "confidence": c, "uses_losses": u} for a, (r, c, u) in FAKE_ARMS.items()},
        "seeds": list(seeds),
        "severities": list(range(6)),
        "warmup": {str(s): runs["grpo"][str(s)]["eval"] for s in seeds},
        "runs": runs,
    }


def test_report_arithmetic_and_sentences_with_three_seeds(tmp_path: Path) -> None:
    metrics = _fake_metrics()
    text = report.render_report(metrics)
    assert _check_report(text, metrics) == len(FAKE_ARMS) * len(report.METRICS)
    assert "- clean acc: `rac_loss` (highest, 0.810; best in 3 of 3 seeds)" in text
    assert "- sev-5 ECE: `rac_loss` (lowest, 0.250; best in 3 of 3 seeds)" in text
    # claims: on the arm's own confidence (rac_loss: token probability), paired differences per seed
    assert "| `rac_loss` (token prob) | raises clean accuracy | 0.510 | 0.810 | 0.300 ± 0.000 | 3 of 3 |" in text
    d = np.array([0.15 - 0.2, 0.15, 0.15])
    assert (f"| `rac_loss` (token prob) | lowers calibration error at severity 5 | 0.400 | {0.55 - 0.2 / 3:.3f} | "
            f"{d.mean():.3f} ± {d.std(ddof=1):.3f} | 1 of 3 |") in text
    assert "| `rac_paper` (stated) | lowers calibration error at severity 5 | 0.400 | 0.300 | -0.100 ± 0.000 | 3 of 3 |" in text
    assert "## Against RLCR" in text and "claim vs `rlcr`" in text
    assert "Environment: torch t, numpy n, cpu c" in text
    report.write_metrics(metrics, tmp_path / "metrics.json")
    stored = json.loads((tmp_path / "metrics.json").read_text())["summary"]
    assert stored["rac_loss"]["clean_accuracy"]["std"] == pytest.approx(0.01)
    report.plot_all(metrics, tmp_path)
    assert (tmp_path / "reliability.png").is_file() and (tmp_path / "confidence_vs_severity.png").is_file()


def test_single_seed_report_has_no_std() -> None:
    metrics = _fake_metrics(seeds=(4,))
    text = report.render_report(metrics)
    assert "±" not in text and "One seed: no std." in text
    assert _check_report(text, metrics) == len(FAKE_ARMS) * len(report.METRICS)


def test_same_seed_same_metrics() -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kw = dict(seeds=[3], arms=["rac_paper", "rac_loss_stated", "rac_loss"], config=TrainConfig(warmup_steps=4, steps=2, prompts=4),
                  pool_size=64, eval_size=16, progress=False)
        a, b = run_experiment(**kw), run_experiment(**kw)
    finally:
        torch.set_num_threads(threads)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_seeds_in_worker_processes_give_the_same_metrics() -> None:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kw = dict(seeds=[0, 1], arms=["rac_paper", "rac_loss_stated"], config=TrainConfig(warmup_steps=3, steps=2, prompts=4),
                  pool_size=64, eval_size=16, progress=False)
        a, b = run_experiment(**kw, workers=1), run_experiment(**kw, workers=2)
    finally:
        torch.set_num_threads(threads)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--arms", "grpo,nope"], "unknown arm"),
        (["--seeds", "x"], "--seeds"),
        (["--seeds", "1,1"], "--seeds"),
        (["--steps", "-1"], "--steps"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--device", "foo"], "--device 'foo' is not a torch device"),
    ],
)
def test_bad_options(argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rac_losses.demo.cli.run_experiment", _must_not_run)
    with pytest.raises(SystemExit) as err:
        main(argv + ["--no-progress"])
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def _must_not_run(**kwargs):  # pragma: no cover - reached only when a check is missing
    raise AssertionError("the run started before the options were checked")


def test_cuda_on_a_cpu_build_fails_before_the_run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("rac_losses.demo.cli.run_experiment", _must_not_run)
    with pytest.raises(SystemExit) as err:
        main(["--device", "cuda", "--no-progress"])
    assert err.value.code == 2 and "sees no CUDA device; use --device cpu" in capsys.readouterr().err


def test_unwritable_out_fails_before_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr("rac_losses.demo.cli.run_experiment", _must_not_run)
    with pytest.raises(SystemExit) as err:
        main(["--out", str(blocker / "sub"), "--no-progress"])
    assert err.value.code == 2 and "is not a writable folder" in capsys.readouterr().err


def test_parser_defaults() -> None:
    args = build_parser().parse_args([])
    assert args.arms == list(DEFAULT_ARMS) and args.out == Path("rac-demo-out") and args.seeds is None
    assert args.threads == 1 and args.workers is None
    assert set(DEFAULT_ARMS) <= set(ARMS)
