"""Benchmark: chunked ``token_stats_from_logits`` against the naive ``log_softmax(logits.float())`` path.

Usage::

    python benchmarks_perf/bench_token_stats.py              # full run on CPU (several minutes)
    python benchmarks_perf/bench_token_stats.py --quick      # small smoke run
    python benchmarks_perf/bench_token_stats.py --device cuda

Each configuration (rows ``N*T``, vocabulary ``V``, bfloat16 logits) is timed forward + backward for
both implementations:

* ``naive``: ``lp = torch.log_softmax(logits.float(), -1)``; token log-prob ``lp.gather(-1, tok)``;
  entropy ``-(lp.exp() * lp).sum(-1)``; backward through autograd.
* ``chunked``: ``token_stats_from_logits(logits, tokens)`` (default chunk size unless ``--chunk-size``).

The scalar backpropagated is ``(w1 * logprobs + w2 * entropy).sum()`` with fixed random weights, so both
outputs receive a gradient; the gradient w.r.t. the logits is taken with ``torch.autograd.grad`` (and
dropped after each repeat). Time is the median over ``--repeats`` runs after one warm-up run (the
minimum is reported too: on a shared 2-core machine other processes make single runs several times
slower, and both statistics are affected alike; the load average at the start is recorded in the JSON).
Both timings include allocating and first-touching the bfloat16 logits gradient (page faults), which
any implementation has to pay.

Peak extra memory is measured honestly per implementation and configuration in a *fresh subprocess*
(so one measurement cannot hide in memory the allocator kept from another):

* CPU: the process first allocates the logits, the tokens and the weights and runs the implementation
  once on a tiny input (loading kernels and libraries). It then records its current resident set size
  (``VmRSS``) as the baseline and resets the kernel's peak-RSS counter (writing ``5`` to
  ``/proc/self/clear_refs`` resets ``VmHWM``). After the warm-up and all timed repeats it reads
  ``VmHWM``; peak extra memory = ``VmHWM - baseline``. This is everything the forward + backward
  allocated on top of its inputs, including the logits gradient (bfloat16, same size as the logits) that
  both implementations must produce. (PyTorch's CPU allocator returns large blocks to the OS on free,
  so RSS follows live tensors.) If ``clear_refs`` is not writable, the fallback is
  ``ru_maxrss`` (peak RSS of the process lifetime) minus the baseline, which is also honest because
  the setup's peak is below the baseline plus the run's peak only if the run never exceeded the setup.
* CUDA: ``torch.cuda.max_memory_allocated() - memory_allocated()`` after ``reset_peak_memory_stats()``
  at the same baseline point.

Targets (issue 2): chunked peak extra memory <= 1/4 of naive, chunked time <= 1.3x naive. Results are
printed as a table and written to ``benchmarks_perf/results/token_stats.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

FULL_CONFIGS = [(4096, 32000), (16384, 32000), (4096, 152064)]
QUICK_CONFIGS = [(256, 32000), (512, 8192)]
RESULTS = Path(__file__).resolve().parent / "results" / "token_stats.json"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _worker(args: argparse.Namespace) -> dict:
    import torch

    from rac_losses.token_stats import token_stats_from_logits

    torch.manual_seed(0)
    dev = torch.device(args.device)
    rows, vocab = args.rows, args.vocab
    logits = torch.empty(1, rows, vocab, dtype=torch.bfloat16, device=dev).normal_(0.0, 2.0)
    logits.requires_grad_(True)
    tokens = torch.randint(0, vocab, (1, rows), device=dev)
    w1 = torch.randn(1, rows, device=dev)
    w2 = torch.randn(1, rows, device=dev)

    def naive(x: torch.Tensor, tok: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        lp = torch.log_softmax(x.float(), -1)
        tok_lp = lp.gather(-1, tok.unsqueeze(-1)).squeeze(-1)
        ent = -(lp.exp() * lp).sum(-1)
        (g,) = torch.autograd.grad((a * tok_lp + b * ent).sum(), x)
        return g

    def chunked(x: torch.Tensor, tok: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        st = token_stats_from_logits(x, tok, chunk_size=args.chunk_size)
        (g,) = torch.autograd.grad((a * st.logprobs + b * st.entropy).sum(), x)
        return g

    fn = naive if args.impl == "naive" else chunked

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    # Tiny warm-up: loads kernels / libraries so the baseline below includes them.
    tiny = torch.randn(1, 4, 16, device=dev).to(torch.bfloat16).requires_grad_(True)
    fn(tiny, torch.zeros(1, 4, dtype=torch.long, device=dev), w1[:, :4], w2[:, :4])
    del tiny
    sync()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        method = "cuda max_memory_allocated - memory_allocated at baseline"
    else:
        base = _status_kib("VmRSS") * 1024
        if _reset_peak_rss():
            method = "VmHWM (reset via /proc/self/clear_refs) - VmRSS at baseline"
        else:
            method = "ru_maxrss - VmRSS at baseline (clear_refs unavailable)"

    times = []
    for i in range(args.repeats + 1):
        sync()
        t0 = time.perf_counter()
        g = fn(logits, tokens, w1, w2)
        sync()
        dt = time.perf_counter() - t0
        del g
        if i > 0:  # first run is the warm-up
            times.append(dt)

    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) - base
    elif method.startswith("VmHWM"):
        peak = _status_kib("VmHWM") * 1024 - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {
        "impl": args.impl,
        "rows": rows,
        "vocab": vocab,
        "device": str(dev),
        "chunk_size": args.chunk_size,
        "times_s": times,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "peak_extra_bytes": int(peak),
        "memory_method": method,
        "logits_bytes": logits.numel() * logits.element_size(),
    }


def _run_one(impl: str, rows: int, vocab: int, device: str, repeats: int, chunk_size: int | None) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--impl",
        impl,
        "--rows",
        str(rows),
        "--vocab",
        str(vocab),
        "--device",
        device,
        "--repeats",
        str(repeats),
    ]
    if chunk_size is not None:
        cmd += ["--chunk-size", str(chunk_size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="small smoke run (seconds)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 2)")
    ap.add_argument("--chunk-size", type=int, default=None, help="rows per chunk (default: library default)")
    ap.add_argument("--output", type=Path, default=None, help=f"JSON path (default {RESULTS}; quick: no file)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(_worker(args)))
        return 0

    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    configs = QUICK_CONFIGS if args.quick else FULL_CONFIGS
    rows_out = []
    header = (
        f"{'N*T':>6} {'V':>7} | {'naive s':>16} {'chunked s':>16} {'ratio':>6} | "
        f"{'naive MiB':>9} {'chunked MiB':>11} {'ratio':>6} | targets (time<=1.3x, mem<=0.25x)"
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device={args.device}; bfloat16 logits; forward+backward; median (min) of {repeats}; load avg {load:.2f}")
    print(header)
    print("-" * len(header))
    ok_all = True
    for rows, vocab in configs:
        res = {
            impl: _run_one(impl, rows, vocab, args.device, repeats, args.chunk_size) for impl in ("naive", "chunked")
        }
        t_ratio = res["chunked"]["median_s"] / res["naive"]["median_s"]
        m_ratio = res["chunked"]["peak_extra_bytes"] / max(1, res["naive"]["peak_extra_bytes"])
        ok = t_ratio <= 1.3 and m_ratio <= 0.25
        ok_all &= ok
        mib = 2.0**20
        print(
            f"{rows:>6} {vocab:>7} | {res['naive']['median_s']:>7.3f} ({res['naive']['min_s']:>6.3f}) "
            f"{res['chunked']['median_s']:>7.3f} ({res['chunked']['min_s']:>6.3f}) "
            f"{t_ratio:>6.2f} | {res['naive']['peak_extra_bytes'] / mib:>9.1f} "
            f"{res['chunked']['peak_extra_bytes'] / mib:>11.1f} {m_ratio:>6.3f} | {'met' if ok else 'MISSED'}"
        )
        rows_out.append(
            {
                "rows": rows,
                "vocab": vocab,
                "time_ratio": t_ratio,
                "time_ratio_min": res["chunked"]["min_s"] / res["naive"]["min_s"],
                "memory_ratio": m_ratio,
                "targets_met": ok,
                **res,
            }
        )
    if args.quick:
        print("(smoke run: the targets are judged on the full configurations, run without --quick)")
    else:
        print(f"all targets met: {ok_all}")

    output = args.output if args.output is not None else (None if args.quick else RESULTS)
    if output is not None:
        import torch

        output.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": "token_stats_from_logits forward+backward vs naive log_softmax(logits.float())",
            "command": " ".join(["python", "benchmarks_perf/bench_token_stats.py", *sys.argv[1:]]),
            "device": args.device,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "dtype": "bfloat16",
            "repeats": repeats,
            "load_average_at_start": load,
            "targets": {"time_ratio_max": 1.3, "memory_ratio_max": 0.25},
            "all_targets_met": ok_all,
            "results": rows_out,
        }
        output.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
