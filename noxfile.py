"""The project's test command: ``pip install nox && nox`` (what CI's ``.ci/run`` calls).

Each session builds its own virtual environment from the project's files, so a fresh clone needs
nothing else. Torch is pinned (``RAC_TORCH`` overrides the spec): an unpinned torch would pull a
multi-GB CUDA build on a CPU-only machine.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True

TORCH = os.environ.get("RAC_TORCH", "torch==2.13.0")


@nox.session
def tests(session: nox.Session) -> None:
    """Core losses, metrics, rewards and corruptions (pytest + hypothesis)."""
    session.install(TORCH)
    session.install(".[test,plot]")
    session.run("pytest", *session.posargs)
