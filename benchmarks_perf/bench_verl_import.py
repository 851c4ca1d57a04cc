"""What rac-losses' verl plugin adds to ``import verl`` (wall time, modules loaded, peak memory).

verl loads every ``verl.plugins`` entry point at ``import verl``: in the driver and in every Ray worker,
rollout server, reward and agent-loop process. Each run is a fresh interpreter (``python -c "import
verl"``, outside the repository, after one untimed warm-up of each case so both read warm file caches),
with the plugin loaded (``VERL_USE_EXTERNAL_PLUGINS=rac``) and without any
(``VERL_USE_EXTERNAL_PLUGINS=none``), the two cases interleaved so both see the same machine load.
Reported: medians over ``--repeats`` runs, the plugin's cost as the difference of medians.

Usage (in the verl environment)::

    .nox/verl/bin/python benchmarks_perf/bench_verl_import.py   # writes benchmarks_perf/results/verl_import.json
    .nox/verl/bin/python benchmarks_perf/bench_verl_import.py --repeats 1 --out ''   # a smoke run

Target (issue 12): the plugin adds at most 1 s to ``import verl``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 1.0

#: the child: time ``import verl`` itself and report what it loaded
_CHILD = """
import json, resource, sys, time
start = time.perf_counter()
import verl
seconds = time.perf_counter() - start
heavy = [m for m in ("verl.trainer.ppo.v1", "transfer_queue", "cv2", "albumentations") if m in sys.modules]
print(json.dumps({"seconds": seconds, "modules": len(sys.modules), "heavy": heavy,
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CASES = {"without plugin": "none", "with plugin": "rac"}


def _run(policy: str, cwd: str) -> dict:
    env = {**os.environ, "VERL_USE_EXTERNAL_PLUGINS": policy, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", _CHILD], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks_perf" / "results" / "verl_import.json"),
                        help="JSON output path ('' for none)")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = {name: [] for name in CASES}
    with tempfile.TemporaryDirectory() as cwd:  # outside the repository: the installed package is imported
        for policy in CASES.values():
            _run(policy, cwd)  # warm-up, not timed
        for _ in range(args.repeats):
            for name, policy in CASES.items():
                runs[name].append(_run(policy, cwd))
    summary = {
        name: {
            "median_s": statistics.median(r["seconds"] for r in rs),
            "min_s": min(r["seconds"] for r in rs),
            "modules": statistics.median(r["modules"] for r in rs),
            "max_rss_mib": statistics.median(r["max_rss_mib"] for r in rs),
            "heavy_modules_loaded": rs[-1]["heavy"],
        }
        for name, rs in runs.items()
    }
    added = summary["with plugin"]["median_s"] - summary["without plugin"]["median_s"]
    result = {
        "what": "python -c 'import verl' in a fresh interpreter, with and without rac-losses' verl plugin",
        "command": "python benchmarks_perf/bench_verl_import.py" + (f" --repeats {args.repeats}" if args.repeats != 5 else ""),
        "repeats": args.repeats,
        "verl": importlib.metadata.version("verl"),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "cases": summary,
        "plugin_adds_s": added,
        "target_s": TARGET_S,
        "within_target": added <= TARGET_S,
        "runs": runs,
    }
    print(f"{'case':<16} {'median s':>9} {'min s':>7} {'modules':>8} {'max RSS MiB':>12}  heavy modules loaded")
    for name, s in summary.items():
        heavy = ", ".join(s["heavy_modules_loaded"]) or "-"
        print(f"{name:<16} {s['median_s']:>9.2f} {s['min_s']:>7.2f} {s['modules']:>8.0f} {s['max_rss_mib']:>12.0f}  {heavy}")
    print(f"the plugin adds {added:+.2f} s to import verl (median of {args.repeats}; target <= {TARGET_S:.0f} s)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
