"""Fixtures for the rac-demo tests: one ``--quick`` run shared by the tests that read its output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run ``rac-demo --quick`` once (about 10-20 s on one core) and return its output folder."""
    import torch

    from rac_losses.demo.cli import main

    out = tmp_path_factory.mktemp("rac-demo-quick")
    threads = torch.get_num_threads()
    try:
        assert main(["--quick", "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def quick_metrics(quick_run: Path) -> dict:
    return json.loads((quick_run / "metrics.json").read_text())
