"""The project's test command: ``pip install nox && nox`` (what CI's ``.ci/run`` calls).

Three sessions, each in its own virtual environment built from the project's files, so a fresh clone
needs nothing else:

- ``tests``: the core (losses, metrics, rewards, corruptions, demo);
- ``verl``: the verl 0.9.x adapter, in an environment with ``rac-losses[verl]``;
- ``openrlhf``: the OpenRLHF 0.11.x adapter, in its own environment (verl and OpenRLHF pin conflicting
  transformers releases and cannot share one).

Torch is pinned (``RAC_TORCH`` overrides the spec): an unpinned torch would pull a multi-GB CUDA build on
a CPU-only machine.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "verl", "openrlhf"]
nox.options.error_on_missing_interpreters = True

TORCH = os.environ.get("RAC_TORCH", "torch==2.13.0")

# `pip install openrlhf` fails without CUDA (flash-attn builds against it). On CPU the session installs
# OpenRLHF's runtime requirements that its training step needs, then OpenRLHF itself --no-deps; the tests
# stub flash_attn and vllm at import time (test-only, never shipped).
OPENRLHF_CPU = [
    "openrlhf==0.11.2",
    "transformers==5.15.0",
    "peft",
    "deepspeed==0.19.6",
    "ray==2.55.0",
    "pylatexenc",
    "torchdata",
    "aiohttp",
    "datasets",  # openrlhf.trainer.ppo_trainer (the controller the reward formulation patches) imports it
]


@nox.session
def tests(session: nox.Session) -> None:
    """Core losses, metrics, rewards, corruptions and the demo (pytest + hypothesis)."""
    session.install(TORCH)
    session.install(".[test,plot]")
    session.run("pytest", "--ignore=tests/integrations", *session.posargs)


@nox.session
def verl(session: nox.Session) -> None:
    """The verl adapter against verl's real engine on a tiny random model (CPU)."""
    session.install(TORCH)
    session.install(".[verl,test]")
    session.run("pytest", "tests/integrations/verl", *session.posargs, env={"RAC_FRAMEWORK_TESTS": "verl"})


@nox.session
def openrlhf(session: nox.Session) -> None:
    """The OpenRLHF adapter against OpenRLHF's real training step on tiny random models (CPU)."""
    session.install(TORCH)
    session.install(*OPENRLHF_CPU[1:])
    session.install("--no-deps", OPENRLHF_CPU[0])
    session.install(".[test]")
    session.run("pytest", "tests/integrations/openrlhf", *session.posargs, env={"RAC_FRAMEWORK_TESTS": "openrlhf"})
