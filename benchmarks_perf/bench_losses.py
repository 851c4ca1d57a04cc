"""Speed of the RAC ranking loss (forward + backward), side by side with two yardsticks, in one run.

- ``loop``: the slow, obviously-correct reference of the tests (a Python loop over the pairs of every
  group; ``tests/reference.py``), timed once per configuration where it finishes in reasonable time.
- ``grpo_adv``: GRPO's advantage step on the same rows. verl 0.9.1's ``compute_grpo_outcome_advantage``
  is used when verl is importable in this environment; otherwise a re-implementation of its loop shape
  (one Python pass over rows to collect scores per uid, per-group mean/std from tensors built from those
  lists, a second pass writing normalised scores row by row). The table says which one ran.

Usage::

    python benchmarks_perf/bench_losses.py            # full table, writes benchmarks_perf/results/losses.json
    python benchmarks_perf/bench_losses.py --quick    # a small smoke run

Times are medians (and minima) over ``--repeats`` runs (the loop reference: one run), on CPU unless
``--device cuda``. The ratios use the minima, the least disturbed by other processes on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from rac_losses import ranking_group_loss

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import reference  # noqa: E402  (the tests' loop reference)

T_RESPONSE = 256  # response length for GRPO's token-level rewards


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, repeats: int, device: str) -> tuple[float, float]:
    """(median, min) wall time of ``fn`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def _grpo_advantage_loop_shape(token_level_rewards, response_mask, index, epsilon=1e-6):
    """GRPO outcome advantage with verl 0.9.1's loop shape (see the module docstring)."""
    scores = token_level_rewards.sum(dim=-1)
    scores_of = defaultdict(list)
    with torch.no_grad():
        for i in range(scores.shape[0]):
            scores_of[index[i]].append(scores[i])
        mean, std = {}, {}
        for uid, values in scores_of.items():
            group_scores = torch.stack(values)
            mean[uid] = group_scores.mean() if len(values) > 1 else torch.tensor(0.0)
            std[uid] = group_scores.std() if len(values) > 1 else torch.tensor(1.0)
        for i in range(scores.shape[0]):
            scores[i] = (scores[i] - mean[index[i]]) / (std[index[i]] + epsilon)
        return scores.unsqueeze(-1) * response_mask


def _grpo_advantage():
    try:
        from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage  # type: ignore[import-not-found]

        return "verl 0.9.1", lambda r, m, idx: compute_grpo_outcome_advantage(r, m, idx)
    except ImportError:
        return "verl loop shape (re-implemented; verl not installed here)", _grpo_advantage_loop_shape


def _batch(n: int, group_size: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    confidence = torch.randn(n, generator=g)
    reward = torch.randint(0, 2, (n,), generator=g).float()
    group = torch.arange(n // group_size).repeat_interleave(group_size)
    group = group[torch.randperm(n, generator=g)]  # rows of a group are scattered, as after shuffling
    return confidence.to(device), reward.to(device), group.to(device)


def bench(sizes, group_sizes, repeats: int, loop_limit: int, device: str) -> list[dict]:
    grpo_name, grpo_fn = _grpo_advantage()
    rows = []
    for n in sizes:
        for group_size in group_sizes:
            confidence, reward, group = _batch(n, group_size, device)

            def rac():
                c = confidence.clone().requires_grad_(True)
                ranking_group_loss(c, reward, group, scale=2.0).backward()

            rac()  # warm-up
            rac_s, rac_min = _time(rac, repeats, device)

            token_rewards = torch.zeros(n, T_RESPONSE)
            token_rewards[:, -1] = reward.cpu()
            response_mask = torch.ones(n, T_RESPONSE)
            uids = np.array([f"uid-{int(x)}" for x in group.cpu()], dtype=object)
            grpo_s, grpo_min = _time(lambda: grpo_fn(token_rewards.clone(), response_mask, uids), max(1, repeats // 2), "cpu")

            loop_s = None
            if n * group_size <= loop_limit:
                c64, r64, g64 = confidence.double().cpu(), reward.double().cpu(), group.cpu()

                def loop():
                    c = c64.clone().requires_grad_(True)
                    reference.ranking_loss(c, r64, g64, scale=2.0).backward()

                loop_s, _ = _time(loop, 1, "cpu")
            row = dict(
                n=n, group_size=group_size, rac_ms=rac_s * 1e3, rac_min_ms=rac_min * 1e3,
                grpo_adv_ms=grpo_s * 1e3, grpo_adv_min_ms=grpo_min * 1e3,
                loop_ms=None if loop_s is None else loop_s * 1e3,
                speedup_vs_loop=None if loop_s is None else loop_s / rac_min, rac_over_grpo=rac_min / grpo_min,
            )
            rows.append(row)
            _print_row(row)
    return rows, grpo_name


def _print_row(row: dict) -> None:
    loop = "-" if row["loop_ms"] is None else f"{row['loop_ms']:.0f}"
    speed = "-" if row["speedup_vs_loop"] is None else f"{row['speedup_vs_loop']:.0f}x"
    rac = f"{row['rac_ms']:.2f} ({row['rac_min_ms']:.2f})"
    grpo = f"{row['grpo_adv_ms']:.1f} ({row['grpo_adv_min_ms']:.1f})"
    print(f"{row['n']:>6} {row['group_size']:>4} {rac:>17} {loop:>10} {speed:>9} {grpo:>15} {row['rac_over_grpo']:>9.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--loop-limit", type=int, default=16384 * 16, help="largest N*G timed with the loop reference")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks_perf" / "results" / "losses.json")
    args = parser.parse_args()
    sizes, group_sizes = ([256, 1024], [4, 16]) if args.quick else ([1024, 4096, 16384], [4, 8, 16, 64])
    print(f"ranking_group_loss forward+backward on {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'N':>6} {'G':>4} {'rac ms med (min)':>17} {'loop ms':>10} {'vs loop':>9} {'grpo ms med (min)':>15} {'rac/grpo':>9}")
    rows, grpo_name = bench(sizes, group_sizes, args.repeats, args.loop_limit, args.device)
    print(f"grpo adv = {grpo_name}")
    result = dict(
        benchmark="ranking_group_loss", device=args.device, torch=torch.__version__, threads=torch.get_num_threads(),
        machine=platform.machine(), processor=platform.processor(), grpo_advantage=grpo_name, rows=rows,
    )
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
