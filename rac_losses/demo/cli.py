"""``rac-demo`` (also ``python -m rac_losses.demo``): GRPO vs GRPO + RAC, offline, on a CPU, in minutes.

For each seed: generate the task's training pool and a held-out set (plus its corrupted copies), warm the
policy up with supervised training, then run every arm from that same checkpoint with the same data and
budget, and evaluate it on clean and corrupted held-out images. Writes ``report.md``, ``metrics.json``,
``reliability.png`` and ``confidence_vs_severity.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from rac_losses.demo.corrupt import CORRUPTIONS, TwinCache
from rac_losses.demo.evaluate import SEVERITIES, EvalSet, evaluate
from rac_losses.demo.report import HEADLINE, format_table, plot_all, write_metrics, write_report
from rac_losses.demo.task import generate
from rac_losses.demo.train import ARMS, TrainConfig, grpo_train, make_policy, warm_up

__all__ = ["main", "run_experiment", "DEFAULTS", "QUICK"]

#: Default sizes (about 6-9 minutes on one core of a busy 2-core machine).
DEFAULTS = dict(seeds=3, warmup_steps=TrainConfig.warmup_steps, steps=TrainConfig.steps, pool=4096, eval_size=1000)
#: ``--quick``: the whole pipeline in well under a minute (CI); numbers are not meaningful.
QUICK = dict(seeds=1, warmup_steps=60, steps=8, pool=512, eval_size=200)


def _parse_seeds(text: str) -> list[int]:
    """``"3"`` -> seeds 0, 1, 2; ``"0,5,7"`` -> those seeds."""
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--seeds must be a count (3) or a comma list (0,1,2), got {text!r}") from err
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds must name at least one distinct seed >= 0, got {text!r}")
    return seeds


def _parse_arms(text: str) -> list[str]:
    arms = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise argparse.ArgumentTypeError(f"unknown arm(s) {bad}; valid arms: {', '.join(ARMS)}")
    return arms


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rac-demo",
        description="GRPO vs GRPO + RAC (ranking-aware calibration) on a synthetic visual question task, "
        "offline on a CPU. Writes report.md, metrics.json and figures.",
    )
    p.add_argument("--out", type=Path, default=Path("rac-demo-out"), help="output folder (default: ./rac-demo-out)")
    p.add_argument("--quick", action="store_true", help="a tiny run of the whole pipeline (< 1 minute; for CI)")
    p.add_argument("--seeds", type=_parse_seeds, default=None, help=f"number of seeds or a comma list (default {DEFAULTS['seeds']})")
    p.add_argument("--steps", type=int, default=None, help=f"GRPO steps per arm (default {DEFAULTS['steps']})")
    p.add_argument("--warmup-steps", type=int, default=None, help=f"supervised warm-up steps (default {DEFAULTS['warmup_steps']})")
    p.add_argument("--arms", type=_parse_arms, default=list(ARMS), help=f"comma list of arms (default: all: {','.join(ARMS)})")
    p.add_argument("--eval-size", type=int, default=None, help=f"held-out questions per severity (default {DEFAULTS['eval_size']})")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1: the model is tiny, and one thread is fastest on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run_experiment(
    *,
    seeds: Sequence[int],
    arms: Sequence[str],
    config: TrainConfig,
    pool_size: int,
    eval_size: int,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Run every arm for every seed; return the metrics dict written to ``metrics.json``."""
    from tqdm.auto import tqdm

    total = len(seeds) * (config.warmup_steps + len(arms) * config.steps)
    bar = tqdm(total=total, disable=not progress, desc="rac-demo", unit="step", dynamic_ncols=True)
    metrics: dict[str, Any] = {
        "config": {
            **{k: v for k, v in asdict(config).items() if k != "policy"},
            "policy": asdict(config.policy),
            "pool": pool_size,
            "eval_size": eval_size,
            "corruptions": list(CORRUPTIONS),
        },
        "arms": {a: {"description": ARMS[a].description, "pair_confidence": ARMS[a].pair_confidence,
                     "rac": asdict(ARMS[a].rac)} for a in arms},
        "seeds": list(seeds),
        "severities": list(SEVERITIES),
        "warmup": {},
        "runs": {a: {} for a in arms},
    }
    for seed in seeds:
        bar.set_description(f"seed {seed}: data")
        pool = generate(pool_size, seed)
        eval_set = EvalSet(generate(eval_size, 1_000_000 + seed), seed)
        twins = TwinCache(pool.images, seed)
        base = make_policy(seed, config.policy).to(device)
        bar.set_description(f"seed {seed}: warm-up")
        warm_up(base, pool, config, seed, progress=lambda: bar.update(1))
        metrics["warmup"][str(seed)] = evaluate(base, eval_set)
        state = {k: v.clone() for k, v in base.state_dict().items()}
        for arm in arms:
            bar.set_description(f"seed {seed}: {arm}")
            policy = make_policy(seed, config.policy).to(device)
            policy.load_state_dict(state)

            def tick(log: dict[str, float]) -> None:
                bar.update(1)
                bar.set_postfix(reward=f"{log['reward']:.2f}", refresh=False)

            logs = grpo_train(policy, pool, twins, ARMS[arm], config, seed, progress=tick)
            last = logs[-min(20, len(logs)) :] if logs else []
            train_summary = {k: float(sum(l.get(k, 0.0) for l in last) / len(last)) for k in (last[-1] if last else {})}
            metrics["runs"][arm][str(seed)] = {"eval": evaluate(policy, eval_set), "train_last20": train_summary}
    bar.close()
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:  # fail now, not after minutes of training
        build_parser().error("the figures need matplotlib: pip install 'rac-losses[plot]'")
    sizes = dict(QUICK if args.quick else DEFAULTS)
    seeds = args.seeds if args.seeds is not None else list(range(sizes["seeds"]))
    config = TrainConfig(
        warmup_steps=args.warmup_steps if args.warmup_steps is not None else sizes["warmup_steps"],
        steps=args.steps if args.steps is not None else sizes["steps"],
    )
    eval_size = args.eval_size if args.eval_size is not None else sizes["eval_size"]
    for name, value, low in (("--steps", config.steps, 0), ("--warmup-steps", config.warmup_steps, 0), ("--eval-size", eval_size, 8)):
        if value < low:
            build_parser().error(f"{name} must be >= {low}, got {value}")
    torch.set_num_threads(args.threads or 1)
    start = time.perf_counter()
    metrics = run_experiment(
        seeds=seeds, arms=args.arms, config=config, pool_size=sizes["pool"], eval_size=eval_size,
        device=args.device, progress=not args.no_progress,
    )
    wall = time.perf_counter() - start
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    command = "rac-demo" + ("" if argv is None and len(sys.argv) <= 1 else " " + shlex.join(list(argv if argv is not None else sys.argv[1:])))
    write_metrics(metrics, out / "metrics.json")
    write_report(metrics, out / "report.md", command=command, wall_s=wall)
    plot_all(metrics, out)
    print()
    print(format_table(metrics, HEADLINE))
    print(f"\nwrote {out}/report.md, metrics.json, reliability.png, confidence_vs_severity.png ({wall:.0f} s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
