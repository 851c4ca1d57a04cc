"""The verl plugin: registration at ``import verl``, the ``rac`` trainer mode on verl's Hydra config, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from verl.trainer.ppo.v1 import get_trainer_cls
from verl.utils.config import omega_conf_to_dataclass

import hydra_config
from rac_losses import RACConfig
from rac_losses.corruption import CorruptionPolicy
from rac_losses.integrations.verl.trainer import RACTrainer

_compose = hydra_config.compose_ppo
LOSS = "+rac.formulation=loss"  # the loss formulation's options (the default is the paper's reward formulation)


def _run(code: str, tmp_path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter outside the repository (so the installed package is imported)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_import_verl_loads_nothing_heavy_and_registers_on_first_use(tmp_path):
    done = _run(
        """
        import sys
        import verl
        heavy = [m for m in ("rac_losses.integrations.verl.trainer", "rac_losses.corruption", "verl.trainer.ppo.v1",
                             "verl.experimental.agent_loop", "cv2", "albumentations") if m in sys.modules]
        print("AT IMPORT", heavy)
        from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY
        from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
        print("REGISTERED", TRAINER_REGISTRY["rac"].__module__, _agent_loop_registry["rac_single_turn"])
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "AT IMPORT []" in done.stdout
    assert (
        "REGISTERED rac_losses.integrations.verl.trainer "
        "{'_target_': 'rac_losses.integrations.verl.agent_loop.RACSingleTurnAgentLoop'}"
    ) in done.stdout


def test_the_flag_and_rac_overrides_build_the_trainer_settings():
    config = _compose(
        "trainer.v1.trainer_mode=rac", LOSS, "+rac.rank_coef=0.3", "+rac.pair_coef=0.2", "+rac.rank_confidence=prob",
        "+rac.corruption.names=[gaussian_noise,patch_mask]", "+rac.corruption.severities=[1,3,5]",
        "+rac.corruption.fraction=0.25",
    )
    trainer_cls = get_trainer_cls(config.trainer.v1.trainer_mode)
    assert trainer_cls is RACTrainer
    trainer = trainer_cls(config)
    assert trainer.rac.config == RACConfig(rank_coef=0.3, pair_coef=0.2, rank_confidence="prob")
    assert trainer.rac.corruption == CorruptionPolicy(names=("gaussian_noise", "patch_mask"), severities=(1, 3, 5), fraction=0.25)
    # the default pairwise confidence is neg_entropy: verl is asked for entropy; twins need the twin agent loop
    assert config.actor_rollout_ref.actor.calculate_entropy is True
    assert config.actor_rollout_ref.rollout.agent.default_agent_loop == "rac_single_turn"
    assert omega_conf_to_dataclass(config.actor_rollout_ref.actor).calculate_entropy  # verl's own schema accepts it


def test_without_twins_the_twin_only_restrictions_do_not_apply():
    for override in ("actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean", "algorithm.adv_estimator=gae",
                     "+rac.pair_confidence=topk"):
        RACTrainer(_compose("trainer.v1.trainer_mode=rac", LOSS, "+rac.pair_coef=0", override))


def test_the_flag_alone_uses_the_defaults_and_leaves_verl_alone_without_twins():
    trainer = RACTrainer(_compose("trainer.v1.trainer_mode=rac", LOSS))
    assert trainer.rac.config == RACConfig() and trainer.rac.corruption.fraction == 0.5
    config = _compose("trainer.v1.trainer_mode=rac", LOSS, "+rac.pair_coef=0")
    RACTrainer(config)
    assert config.actor_rollout_ref.actor.calculate_entropy is False
    assert config.actor_rollout_ref.rollout.agent.default_agent_loop == "single_turn_agent"


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["+rac.rank_cof=1"], "unknown rac option.*rank_cof"),
        (["+rac.rank_coef=-1"], "rank_coef"),
        (["+rac.pair_link=cubic"], "pair_link.*logistic"),
        (["+rac.corruption.names=[fgo]"], "rac.corruption.*fgo"),
        (["+rac.corruption.fraction=1.5"], "fraction"),
        (["+rac.rank_confidence=topk"], "rac.rank_confidence='topk' is not available in verl"),
        (["+rac.refresh_partners=true"], "refresh_partners is not implemented in the verl adapter"),
        (["algorithm.adv_estimator=gae"], "corrupted twins need algorithm.adv_estimator=grpo"),
        (["algorithm.rollout_correction.bypass_mode=true"], "bypass_mode=true reuses the rollout's"),
        (["actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean"], "twins need a token loss aggregation"),
        (["algorithm.rollout_correction.rollout_is=token"], "cannot take part in algorithm.rollout_correction.rollout_is"),
        (["actor_rollout_ref.actor.loss_agg_mode=token-sum"], "loss_agg_mode=token-sum makes verl's policy term a sum"),
        (["actor_rollout_ref.actor.loss_agg_mode=token-sum", "+rac.pair_coef=0"], "use loss_agg_mode=token-mean"),
    ],
)
def test_a_bad_rac_value_fails_at_start_up_naming_it(overrides, match):
    config = _compose("trainer.v1.trainer_mode=rac", LOSS, *overrides)
    with pytest.raises(ValueError, match=match):
        get_trainer_cls("rac")(config)


def test_a_broken_plugin_makes_the_rac_flag_fail_loudly(tmp_path):
    done = _run(
        """
        import sys
        sys.modules["rac_losses.integrations.verl.loss"] = None  # the trainer's import now raises ImportError
        import verl
        from verl.trainer.ppo.v1 import get_trainer_cls  # registers rac, as a placeholder
        try:
            get_trainer_cls("rac")(config=None)
        except RuntimeError as e:
            print("RAISED", e, "| CAUSE", type(e.__cause__).__name__)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RAISED trainer.v1.trainer_mode=rac was asked for, but rac-losses' verl plugin failed to import" in done.stdout
    assert "CAUSE ModuleNotFoundError" in done.stdout  # the original error is chained


def test_without_transfer_queue_the_user_sees_the_real_import_error(tmp_path):
    done = _run(
        """
        import sys
        sys.modules["transfer_queue"] = None  # TransferQueue missing: verl's v1 trainer cannot import
        import verl
        print("IMPORTED")
        try:
            from verl.trainer.ppo.v1 import get_trainer_cls
        except ImportError as e:
            print("RAISED", type(e).__name__, e)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "IMPORTED" in done.stdout and "failed to import" not in done.stderr  # import verl: nothing to report
    assert "RAISED ModuleNotFoundError import of transfer_queue halted" in done.stdout


@pytest.mark.parametrize("rac", [["trainer.v1.trainer_mode=rac"], ["+rac.rank_coef=0.5"]], ids=["flag", "options"])
def test_the_legacy_trainer_refuses_rac(rac):
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    config = _compose("trainer.use_v1=false", *rac)
    with pytest.raises(ValueError, match="rac runs in verl's v1 trainer only: trainer.use_v1=false selects the legacy"):
        RayPPOTrainer(config=config, tokenizer=None, role_worker_mapping={}, resource_pool_manager=None)
    with pytest.raises(ValueError, match="rac runs in verl's v1 trainer only"):  # positional, as subclasses call it
        RayPPOTrainer(config, None, {}, None)


def test_the_legacy_trainer_without_rac_is_verls():
    from rac_losses.integrations.verl.plugin import asks_for_rac, check_not_legacy

    config = _compose("trainer.use_v1=false")
    assert not asks_for_rac(config)
    check_not_legacy(config)
