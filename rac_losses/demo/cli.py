"""``rac-demo`` (also ``python -m rac_losses.demo``): the paper's RAC, this package's losses and RLCR, offline.

For each seed: generate the task's training pool and a held-out set (plus its corrupted copies), warm the
policy up with supervised training (answer, then an overconfident stated confidence), then run every arm
from that same checkpoint with the same data and budget, and evaluate it on clean and corrupted held-out
images. Writes ``report.md``, ``metrics.json``,
``reliability.png`` and ``confidence_vs_severity.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import multiprocessing
import os
import platform
import shlex
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from rac_losses.demo.corrupt import CORRUPTIONS, TwinCache
from rac_losses.demo.evaluate import SEVERITIES, EvalSet, evaluate
from rac_losses.demo.report import HEADLINE, format_table, plot_all, write_metrics, write_report
from rac_losses.demo.task import generate
from rac_losses.demo.train import ARMS, DEFAULT_ARMS, TrainConfig, grpo_train, make_policy, warm_up

__all__ = ["main", "run_experiment", "environment", "DEFAULTS", "QUICK"]

#: Default sizes (see the README for the measured time).
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
        description="GRPO, RLCR, RAC as the paper (reward bonuses on stated confidence) and this package's RAC "
        "losses (on token probabilities and on the stated confidence) on a synthetic visual question task, "
        "offline on a CPU. Writes report.md, metrics.json and figures.",
    )
    p.add_argument("--out", type=Path, default=Path("rac-demo-out"), help="output folder (default: ./rac-demo-out)")
    p.add_argument("--quick", action="store_true", help="a tiny run of the whole pipeline (< 1 minute; for CI)")
    p.add_argument("--seeds", type=_parse_seeds, default=None, help=f"number of seeds or a comma list (default {DEFAULTS['seeds']})")
    p.add_argument("--steps", type=int, default=None, help=f"GRPO steps per arm (default {DEFAULTS['steps']})")
    p.add_argument("--warmup-steps", type=int, default=None, help=f"supervised warm-up steps (default {DEFAULTS['warmup_steps']})")
    p.add_argument("--arms", type=_parse_arms, default=list(DEFAULT_ARMS),
                   help=f"comma list of arms (default: {','.join(DEFAULT_ARMS)}; all: {','.join(ARMS)})")
    p.add_argument("--eval-size", type=int, default=None, help=f"held-out questions per severity (default {DEFAULTS['eval_size']})")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, >= 1 (default 1: the model is tiny, and one thread is fastest on a busy machine)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes running seeds in parallel, >= 1 (default: min(seeds, CPU cores)); the numbers do not depend on it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _train_summary(logs: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each logged value over the last 20 steps (NaN-free mean of the steps that logged it)."""
    last = logs[-min(20, len(logs)) :]
    keys = sorted({k for log in last for k in log})
    out = {}
    for k in keys:
        vals = [log[k] for log in last if k in log and not math.isnan(log[k])]
        out[k] = float(sum(vals) / len(vals)) if vals else float("nan")
    return out


def run_seed(
    seed: int, arms: Sequence[str], config: TrainConfig, pool_size: int, eval_size: int, device: str,
    tick: Callable[[str, dict[str, float] | None], None] | None = None,
) -> dict[str, Any]:
    """One seed: data, warm-up, every arm from the warm-up checkpoint, evaluation.

    ``tick(stage, log)`` is called after every warm-up step (``log`` None) and every GRPO step.
    Returns ``{"warmup": eval, "runs": {arm: {"eval", "train_last20"}}}``.
    """
    pool = generate(pool_size, seed)
    eval_set = EvalSet(generate(eval_size, 1_000_000 + seed), seed)
    twins = TwinCache(pool.images, seed)
    base = make_policy(seed, config.policy).to(device)
    warm_up(base, pool, config, seed, progress=None if tick is None else (lambda: tick(f"seed {seed}: warm-up", None)))
    out: dict[str, Any] = {"warmup": evaluate(base, eval_set), "runs": {}}
    state = {k: v.clone() for k, v in base.state_dict().items()}
    for arm in arms:
        policy = make_policy(seed, config.policy).to(device)
        policy.load_state_dict(state)
        stage = f"seed {seed}: {arm}"
        logs = grpo_train(policy, pool, twins, ARMS[arm], config, seed,
                          progress=None if tick is None else (lambda log, stage=stage: tick(stage, log)))
        out["runs"][arm] = {"eval": evaluate(policy, eval_set), "train_last20": _train_summary(logs)}
    return out


_COUNTER: Any = None


def _init_worker(counter: Any, threads: int) -> None:
    global _COUNTER
    _COUNTER = counter
    torch.set_num_threads(threads)


def _count(stage: str, log: dict[str, float] | None) -> None:
    with _COUNTER.get_lock():
        _COUNTER.value += 1


def _run_seed_in_worker(args: tuple) -> dict[str, Any]:
    return run_seed(*args, tick=_count)


def run_experiment(
    *,
    seeds: Sequence[int],
    arms: Sequence[str],
    config: TrainConfig,
    pool_size: int,
    eval_size: int,
    device: str = "cpu",
    progress: bool = True,
    quick: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Run every arm for every seed; return the metrics dict written to ``metrics.json``.

    ``workers > 1`` runs seeds in that many processes (each with this process's torch thread count); a
    seed's numbers do not depend on where it ran.
    """
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
            "quick": quick,
        },
        "environment": environment(),
        "arms": {a: {"description": ARMS[a].description, "reward": ARMS[a].reward, "confidence": ARMS[a].confidence,
                     "uses_losses": ARMS[a].uses_losses, "pair_anchor": ARMS[a].pair_anchor,
                     "rac": asdict(ARMS[a].rac)} for a in arms},
        "seeds": list(seeds),
        "severities": list(SEVERITIES),
        "warmup": {},
        "runs": {a: {} for a in arms},
    }
    results: dict[int, dict[str, Any]] = {}
    if workers <= 1 or len(seeds) == 1:
        def tick(stage: str, log: dict[str, float] | None) -> None:
            bar.update(1)
            bar.set_description(stage, refresh=False)
            if log is not None:
                bar.set_postfix(reward=f"{log['reward']:.2f}", refresh=False)

        for seed in seeds:
            results[seed] = run_seed(seed, arms, config, pool_size, eval_size, device, tick)
    else:
        context = multiprocessing.get_context("spawn")
        counter = context.Value("q", 0)
        bar.set_description(f"{len(seeds)} seeds in {min(workers, len(seeds))} processes")
        with ProcessPoolExecutor(min(workers, len(seeds)), mp_context=context, initializer=_init_worker,
                                 initargs=(counter, torch.get_num_threads())) as ex:
            futures = {ex.submit(_run_seed_in_worker, (s, list(arms), config, pool_size, eval_size, device)): s for s in seeds}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                bar.update(counter.value - bar.n)
                for f in done:
                    results[futures[f]] = f.result()
    for seed in seeds:
        metrics["warmup"][str(seed)] = results[seed]["warmup"]
        for arm in arms:
            metrics["runs"][arm][str(seed)] = results[seed]["runs"][arm]
    bar.close()
    return metrics


def environment() -> dict[str, str]:
    """What the numbers depend on beyond the options and seeds: library versions, the CPU, threads."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__, "cpu": cpu,
            "torch_threads": str(torch.get_num_threads())}


def _check_out(parser: argparse.ArgumentParser, out: Path) -> None:
    """Fail now, not after the run, when ``out`` cannot be created or written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".rac-demo-write-test-"):
            pass
    except OSError as err:
        parser.error(f"--out {str(out)!r} is not a writable folder: {err.strerror or err}")


def _check_device(parser: argparse.ArgumentParser, device: str) -> None:
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        parser.error(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1, mps): {err}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {device!r}: this torch build ({torch.__version__}) sees no CUDA device; use --device cpu")
    try:
        torch.zeros(1, device=dev)
    except (RuntimeError, AssertionError) as err:
        parser.error(f"--device {device!r} cannot be used here: {str(err).splitlines()[0]}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:  # fail now, not after minutes of training
        parser.error("the figures need matplotlib: pip install 'rac-losses[plot]'")
    sizes = dict(QUICK if args.quick else DEFAULTS)
    seeds = args.seeds if args.seeds is not None else list(range(sizes["seeds"]))
    config = TrainConfig(
        warmup_steps=args.warmup_steps if args.warmup_steps is not None else sizes["warmup_steps"],
        steps=args.steps if args.steps is not None else sizes["steps"],
    )
    eval_size = args.eval_size if args.eval_size is not None else sizes["eval_size"]
    for name, value, low in (("--steps", config.steps, 0), ("--warmup-steps", config.warmup_steps, 0), ("--eval-size", eval_size, 8),
                             ("--threads", args.threads, 1), ("--workers", args.workers if args.workers is not None else 1, 1)):
        if value < low:
            parser.error(f"{name} must be >= {low}, got {value}")
    _check_device(parser, args.device)
    out: Path = args.out
    _check_out(parser, out)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    metrics = run_experiment(
        seeds=seeds, arms=args.arms, config=config, pool_size=sizes["pool"], eval_size=eval_size,
        device=args.device, progress=not args.no_progress, quick=args.quick,
        workers=args.workers if args.workers is not None else min(len(seeds), os.cpu_count() or 1),
    )
    wall = time.perf_counter() - start
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
