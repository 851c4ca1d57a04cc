"""Speed of the paper formulation's core: the reward bonuses and the confidence readers.

- Bonuses: :func:`rac_losses.rac_bonus` (ranking + clean-corrupted, vectorised) against the release's
  loop shape (per group and per pair, one Python pass over rows, re-implemented here from the formulas;
  the release's own code is not importable: it lives in a fork of verl), on batches of ``P`` prompts x ``n``
  rollouts (``N = P n`` rows), half of them clean and half their corrupted copies.
- Readers: :func:`rac_losses.rewards.parse_verbalized_confidence` (both styles) and
  :func:`rac_losses.rewards.paper_reward` on adversarial responses (a 32k-digit tag, 8,000 open tags),
  side by side with a backtracking regex of the kind the readers replaced, capped at one run.

Usage::

    python benchmarks_perf/bench_shaping.py            # full table, writes benchmarks_perf/results/shaping.json
    python benchmarks_perf/bench_shaping.py --quick    # a small smoke run

Times are medians (and minima) over ``--repeats`` runs on one torch thread (``--threads``); ratios use the
minima.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from rac_losses import rac_bonus
from rac_losses.rewards import paper_reward, parse_verbalized_confidence

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def release_loop(conf, acc, uid, pair_id, is_noisy, level, rank_coef=0.2, corr_coef=0.3, margin=0.05, alpha=0.1):
    """The release's computation shape: dicts of row lists per uid, Python loops over rows and pairs,
    reading numpy float64 arrays element by element."""
    conf, acc, is_noisy, level = (np.asarray(x, dtype=np.float64) for x in (conf, acc, is_noisy, level))
    pair_id = np.asarray(pair_id, dtype=np.int64)
    n = len(conf)
    groups: dict = {}
    for i, u in enumerate(uid):
        groups.setdefault(u, []).append(i)
    rank = np.zeros(n)
    for rows in groups.values():
        g_acc, g_conf = acc[rows], conf[rows]
        for a, i in enumerate(rows):
            if g_conf[a] < 0:
                continue
            total, count = 0.0, 0
            for b in range(len(rows)):
                if a == b or g_conf[b] < 0 or abs(g_acc[a] - g_acc[b]) < 1e-8:
                    continue
                s = 1.0 if g_acc[a] > g_acc[b] else -1.0
                total += max(0.0, -s * (g_conf[a] - g_conf[b]) + margin)
                count += 1
            if count:
                rank[i] = -total / count
    pair = np.zeros(n)
    buckets: dict = {}
    for rows in groups.values():
        if pair_id[rows[0]] >= 0:
            buckets.setdefault(pair_id[rows[0]], ([], []))[int(is_noisy[rows[0]] >= 0.5)].append(rows)
    for clean_groups, noisy_groups in buckets.values():
        for c_rows, n_rows in zip(sorted(clean_groups), sorted(noisy_groups)):
            for i, j in zip(c_rows, n_rows):
                if acc[i] <= 0.5 or conf[i] < 0 or conf[j] < 0:
                    continue
                loss = max(0.0, conf[j] - conf[i] + margin + alpha * level[j])
                phi = (conf[i] - conf[j]) - loss
                pair[i] += phi
                pair[j] -= phi
    return rank_coef * rank + corr_coef * pair


def make_batch(prompts: int, n: int, seed: int = 0):
    """``prompts`` groups of ``n`` rows: the first half clean prompts, the second half their corrupted copies."""
    g = torch.Generator().manual_seed(seed)
    rows = prompts * n
    prompts //= 2
    conf = torch.randint(0, 11, (rows,), generator=g).double() / 10
    conf[torch.rand(rows, generator=g) < 0.05] = -1.0  # some missing
    acc = torch.randint(0, 2, (rows,), generator=g).double()
    prompt = torch.arange(2 * prompts).repeat_interleave(n)
    pair = prompt % prompts
    level = torch.where(prompt >= prompts, 0.4, 0.0).double()
    return conf, acc, prompt, pair, level


def bench_bonuses(sizes, repeats):
    out = []
    for prompts, n in tqdm(sizes, desc="bonuses"):
        conf, acc, group, pair, level = make_batch(prompts, n)
        lists = [t.tolist() for t in (conf, acc, group, pair, (level > 0).double(), level)]
        ours = rac_bonus(conf, acc, group, pair, level).bonus
        expected = release_loop(*lists)
        assert np.allclose(ours.numpy(), expected, atol=1e-12), "vectorised bonus differs from the loop"
        fast = _time(lambda: rac_bonus(conf, acc, group, pair, level), repeats)
        slow = _time(lambda: release_loop(*lists), max(1, repeats // 3))
        out.append(dict(prompts=prompts, n=n, rows=conf.numel(), ours_ms=1e3 * fast[1], ours_median_ms=1e3 * fast[0],
                        loop_ms=1e3 * slow[1], speedup=slow[1] / fast[1]))
    return out


def bench_readers(repeats):
    answer = "<think>t</think><answer>A</answer>"
    cases = {
        "32k-digit tag": answer + "<confidence>" + "9" * 32_000 + "x</confidence>",
        "8,000 open tags": answer + "<confidence>" * 8_000,
        "plain response": answer + "<confidence>0.8</confidence>",
    }
    backtracking = re.compile(r"<confidence>\s*([-+]?(?:\d+\.?\d*|\.\d+))\s*(%?)\s*</confidence>", re.I)
    lazy_tag = re.compile(r"<confidence>(.*?)</confidence>", re.I | re.S)
    out = []
    for name, text in tqdm(cases.items(), desc="readers"):
        row = dict(case=name, chars=len(text))
        for style in ("strict", "paper"):
            row[f"{style}_ms"] = 1e3 * _time(lambda: parse_verbalized_confidence(text, style=style), repeats)[1]
        row["paper_reward_ms"] = 1e3 * _time(lambda: paper_reward(text, "A"), repeats)[1]
        old = lambda: [backtracking.fullmatch(m.group(0)) for m in lazy_tag.finditer(text)]  # noqa: E731
        row["old_patterns_ms"] = 1e3 * _time(old, 1)[1]
        out.append(row)
    return out


def _table(rows):
    keys = list(rows[0])
    lines = [" | ".join(keys), " | ".join("---" for _ in keys)]
    for r in rows:
        lines.append(" | ".join(f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: a reward worker's share)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks_perf" / "results" / "shaping.json")
    args = parser.parse_args()
    sizes = [(64, 8)] if args.quick else [(512, 8), (1024, 16)]
    torch.set_num_threads(args.threads)
    bonuses = bench_bonuses(sizes, 3 if args.quick else args.repeats)
    readers = bench_readers(3 if args.quick else args.repeats)
    print("Bonuses (rac_bonus vs the release's loop shape; N = prompts x n rows, half clean, half corrupted copies)")
    print(_table(bonuses))
    print("\nReaders on adversarial responses")
    print(_table(readers))
    result = dict(
        machine=dict(platform=platform.platform(), processor=platform.processor(), threads=torch.get_num_threads(),
                     torch=torch.__version__),
        bonuses=bonuses,
        readers=readers,
    )
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(args.out)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
