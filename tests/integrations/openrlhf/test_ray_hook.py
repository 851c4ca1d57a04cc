"""The setup hook in real Ray workers: the trainer is the RAC subclass, bystanders keep Ray's threads, broken
settings fail the trainer's import."""

from __future__ import annotations

import json
import os

import pytest
import ray

from rac_losses.integrations.openrlhf.options import ENV_VAR, settings_to_env
from rac_losses.integrations.settings import RACSettings

SETTINGS = RACSettings.from_options({"rank_coef": 0.25, "pair_coef": 0.0})


@pytest.fixture(scope="module")
def local_ray():
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(
        num_cpus=1, include_dashboard=False, log_to_driver=False,
        runtime_env={
            "env_vars": {**settings_to_env(SETTINGS), "PYTHONPATH": path},
            # the test-only hook installs the CPU stubs, then calls the package's hook
            "worker_process_setup_hook": "ray_setup_hook.install",
        },
    )
    yield
    ray.shutdown()


@ray.remote(num_cpus=0)
class Probe:
    def trainer(self) -> dict:
        import openrlhf.trainer.ray.ppo_actor as ppo_actor
        from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

        cls = ppo_actor.ActorPPOTrainer
        return {
            "name": cls.__name__,
            "base": f"{cls.__mro__[1].__module__}.{cls.__mro__[1].__name__}",
            "settings": cls.rac_settings,
            "groups": getattr(RemoteExperienceMaker.compute_advantages_and_returns, "rac_groups", False),
            "pid": os.getpid(),
        }


def test_hook_replaces_the_trainer_in_a_ray_actor(local_ray):
    got = ray.get(Probe.remote().trainer.remote(), timeout=120)
    assert got["name"] == "RACActorPPOTrainer"
    assert got["base"] == "openrlhf.trainer.ray.ppo_actor.ActorPPOTrainer"
    assert got["settings"] == SETTINGS
    assert got["groups"] is True
    assert got["pid"] != os.getpid()


@ray.remote(num_cpus=0.5)
class Bystander:
    """A fractional-CPU actor that never imports OpenRLHF's trainer (like a vLLM engine or the reference)."""

    def state(self) -> dict:
        import sys

        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("deepspeed", "openrlhf", "torch"))
        import torch  # now, as the actor's own code would

        return {"modules": loaded, "omp": os.environ.get("OMP_NUM_THREADS"), "threads": torch.get_num_threads()}

    def import_trainer(self) -> str:
        import openrlhf.trainer.ray.ppo_actor as ppo_actor

        return ppo_actor.ActorPPOTrainer.__name__


def test_hook_is_lazy_in_an_actor_that_never_imports_the_trainer(local_ray):
    # before: the hook imported OpenRLHF's trainer (and DeepSpeed) in every worker, before Ray's thread setup
    actor = Bystander.remote()
    got = ray.get(actor.state.remote(), timeout=120)
    assert got["modules"] == []  # flash_attn and vllm: the test's stubs
    # Ray's setting for a fractional-CPU actor, and torch follows it (torch imported by the setup hook, before
    # Ray set the variable, kept every core)
    assert got["omp"] == "1" and got["threads"] == 1
    # the same worker, once it does import the trainer, trains with RAC
    assert ray.get(actor.import_trainer.remote(), timeout=120) == "RACActorPPOTrainer"


def test_broken_settings_fail_the_trainer_import_loudly(local_ray):
    bad = Probe.options(runtime_env={"env_vars": {ENV_VAR: json.dumps({"rank_coef": "x"})}}).remote()
    with pytest.raises(ray.exceptions.RayTaskError, match="does not hold valid RAC options") as error:
        ray.get(bad.trainer.remote(), timeout=120)
    assert "rac.rank_coef" in str(error.value)  # the import of OpenRLHF's trainer failed naming the option
