"""The launcher: OpenRLHF's arguments pass unchanged, ``--rac.*`` is validated before Ray starts, help."""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys

import pytest
import ray

from rac_losses.corruption import CorruptionPolicy
from rac_losses.integrations.openrlhf import launcher
from rac_losses.integrations.openrlhf.options import ENV_VAR, PAPER_ENV_VAR, paper_from_env, settings_from_env
from rac_losses.integrations.openrlhf.paper import PaperSettings, paper_option_names
from rac_losses.integrations.settings import OPTION_NAMES, RACSettings

# A GRPO run on a VLM as OpenRLHF's examples write it (dotted 0.11 flags, store_true flags, nargs, a negative
# number, a comma-separated list).
STOCK = [
    "--ref.num_nodes", "1", "--ref.num_gpus_per_node", "2",
    "--actor.num_nodes", "1", "--actor.num_gpus_per_node", "2",
    "--vllm.num_engines", "2", "--vllm.tensor_parallel_size", "1",
    "--train.colocate_all", "--vllm.gpu_memory_utilization", "0.6",
    "--actor.model_name_or_path", "Qwen/Qwen2.5-VL-3B-Instruct",
    "--reward.remote_url", "reward.py,other.py",
    "--ckpt.output_dir", "/tmp/out", "--train.micro_batch_size", "2", "--train.batch_size", "64",
    "--rollout.micro_batch_size", "8", "--rollout.batch_size", "64", "--rollout.n_samples_per_prompt", "8",
    "--train.max_epochs", "1", "--data.max_len", "4096", "--rollout.max_new_tokens", "1024",
    "--actor.adam.lr", "1e-6", "--algo.advantage.estimator", "group_norm",
    "--algo.kl.init_coef", "0.001", "--algo.kl.use_loss", "--algo.kl.estimator", "k3",
    "--data.prompt_dataset", "hiyouga/geometry3k", "--data.input_key", "problem", "--data.label_key", "answer",
    "--data.image_key", "images", "--data.max_images_per_prompt", "1", "--data.apply_chat_template",
    "--algo.dynamic_filtering_enable", "--algo.dynamic_filtering_range", "-0.5", "1.5",
    "--actor.gradient_checkpointing_enable", "--ds.zero_stage", "2",
]


#: The loss formulation (the default is the paper's reward formulation).
LOSS = ["--rac.formulation", "loss"]


class _Parsed(Exception):
    """Raised in place of OpenRLHF's training once its parser has run."""


@pytest.fixture
def openrlhf_parse(monkeypatch):
    """Run ``train_ppo_ray`` as ``__main__`` up to its own ``parse_args``; return the parsed namespace."""
    parsed = []
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        parsed.append(original(self, args, namespace))
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    monkeypatch.setattr(sys, "argv", list(sys.argv))

    def direct(args: list[str]) -> dict:
        sys.argv = [launcher.TRAIN_MODULE, *args]
        with pytest.raises(_Parsed):
            runpy.run_module(launcher.TRAIN_MODULE, run_name="__main__", alter_sys=True)
        return vars(parsed.pop())

    def through_launcher(args: list[str]) -> dict:
        with pytest.raises(_Parsed):
            launcher.main(args)
        return vars(parsed.pop())

    return direct, through_launcher


@pytest.fixture
def fake_ray_init(monkeypatch):
    """Record ``ray.init``'s keyword arguments instead of starting Ray."""
    calls = []
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    return calls


def test_stock_arguments_reach_openrlhf_unchanged(openrlhf_parse, fake_ray_init):
    direct, through_launcher = openrlhf_parse
    stock = [*STOCK, "--actor.entropy_coef", "0.001"]
    rac = ["--rac.rank_coef", "0.5", "--rac.corruption.names=gaussian_noise,defocus_blur", "--rac.rank_margin", "-0"]
    expected = direct(stock)
    # RAC flags anywhere: before, between and after OpenRLHF's
    got = through_launcher(rac[:2] + stock[:6] + rac[2:3] + stock[6:] + rac[3:] + LOSS)
    assert got == expected
    assert expected["actor.entropy_coef"] == 0.001 and expected["algo.dynamic_filtering_range"] == [-0.5, 1.5]
    (call,) = fake_ray_init
    env = call["runtime_env"]
    assert env["worker_process_setup_hook"] == "rac_losses.integrations.openrlhf.hook.install"
    settings = settings_from_env(env["env_vars"])
    assert settings.config.rank_coef == 0.5
    assert settings.corruption.names == ("gaussian_noise", "defocus_blur")
    assert settings.corruption.fraction == 0.5  # the default
    assert env["env_vars"]["NCCL_DEBUG"] == os.environ.get("NCCL_DEBUG", "WARN")  # OpenRLHF's own default kept


def test_entropy_flag_added_only_when_a_confidence_reads_entropy(openrlhf_parse, fake_ray_init):
    direct, through_launcher = openrlhf_parse
    expected = direct(STOCK)
    assert expected["actor.entropy_coef"] is None
    # default settings: the pairwise loss's confidence is neg_entropy -> --actor.entropy_coef 0 is added
    got = through_launcher([*STOCK, *LOSS])
    assert got == {**expected, "actor.entropy_coef": 0.0}
    # ranking only, on mean log-prob: nothing added
    got = through_launcher([*STOCK, "--rac.pair_coef", "0", *LOSS])
    assert got == expected


@pytest.mark.parametrize(
    ("rac", "message"),
    [
        (["--rac.rank_coef", "abc"], "rac.rank_coef"),
        (["--rac.rank_coef", "-1"], "rank_coef"),
        (["--rac.rank_cof", "1"], "rank_cof"),
        (["--rac.pair_confidence", "vibes"], "pair_confidence"),
        (["--rac.corruption.names", "gaussian_noise,nope"], "nope"),
        (["--rac.corruption.fraction", "2"], "fraction"),
        (["--rac.rank_confidence", "topk"], "topk"),
        (["--rac.rank_coef"], "--rac.rank_coef needs a value"),
        (["--rac.rank_coef", "1", "--rac.rank_coef", "2"], "twice"),
    ],
)
def test_bad_rac_value_fails_before_ray(rac, message, monkeypatch, capsys):
    def no_ray(**kwargs):
        raise AssertionError("ray.init was called")

    monkeypatch.setattr(ray, "init", no_ray)
    assert launcher.main([*STOCK, *LOSS, *rac]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rac-openrlhf: error: ") and message in err
    assert not ray.is_initialized()


def test_default_options_on_a_text_only_run_turn_the_pairwise_part_off(fake_ray_init, monkeypatch, caplog):
    monkeypatch.setattr(launcher, "_run_openrlhf", lambda args: None)
    args = list(STOCK)
    i = args.index("--data.max_images_per_prompt")
    del args[i : i + 2]  # OpenRLHF's default: no images
    with caplog.at_level("WARNING"):
        assert launcher.main([*args, *LOSS]) == 0  # used to exit 2 with the default options
    assert "text-only run" in caplog.text and "pairwise" in caplog.text
    settings = settings_from_env(fake_ray_init[0]["runtime_env"]["env_vars"])
    assert settings.config.pair_coef == 0 and not settings.uses_twins
    assert settings.config.rank_coef == RACSettings().config.rank_coef  # the ranking part runs


def test_dynamic_batching_fails_before_ray(monkeypatch, capsys):
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail("ray.init was called"))
    assert launcher.main([*STOCK, "--train.dynamic_batch_enable", "--rac.pair_coef", "0", *LOSS]) == 2
    assert "dynamic_batch_enable" in capsys.readouterr().err


def test_zero3_with_twins_is_refused_before_ray(monkeypatch, capsys):
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail("ray.init was called"))
    zero3 = [*STOCK, "--ds.zero_stage", "3"]
    assert launcher.main([*zero3, *LOSS]) == 2
    err = capsys.readouterr().err
    assert "--ds.zero_stage 3" in err and "hang" in err and "--rac.pair_coef 0" in err
    # without twins every rank runs the same forwards: ZeRO-3 is fine
    settings, _ = launcher.prepare_run(RACSettings.from_options({"pair_coef": 0}), zero3)
    assert not settings.uses_twins
    settings, _ = launcher.prepare_run(RACSettings.from_options({"corruption.fraction": 0}), zero3)
    assert not settings.uses_twins


def test_help_lists_rac_and_openrlhf_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        launcher.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in (*OPTION_NAMES, *paper_option_names(), "formulation"):
        assert f"--rac.{name} " in out
    assert "--actor.model_name_or_path" in out and "--rollout.n_samples_per_prompt" in out  # OpenRLHF's own


def test_module_entry_point_reports_errors_in_a_fresh_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rac_losses.integrations.openrlhf", "--rac.corruption.severities", "7"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "rac-openrlhf: error: rac.corruption" in result.stderr and "severit" in result.stderr


def test_settings_round_trip_through_the_environment():
    settings = RACSettings.from_options({"pair_link": "hinge", "corruption.severities": [2, 4], "corruption.seed": 3})
    env = launcher.runtime_env(settings)["env_vars"]
    assert settings_from_env(env) == settings
    assert json.loads(env[ENV_VAR])["pair_link"] == "hinge"
    with pytest.raises(RuntimeError, match="not set"):
        settings_from_env({})
    with pytest.raises(RuntimeError, match="valid RAC options"):
        settings_from_env({ENV_VAR: json.dumps({"rank_coef": "x"})})


def test_group_split_warning_only_when_the_rollout_batch_does_not_divide_over_ranks(caplog):
    settings = RACSettings.from_options({"pair_coef": 0})
    with caplog.at_level("WARNING"):
        launcher.prepare_run(settings, STOCK)  # 2 actor ranks, 64 prompts: each rank gets 32 whole groups
        # OpenRLHF's default rollout micro-batch (1) does not split groups: each rank's share is contiguous
        launcher.prepare_run(settings, [*STOCK, "--rollout.micro_batch_size", "1"])
    assert not caplog.records
    with caplog.at_level("WARNING"):
        launcher.prepare_run(settings, [*STOCK, "--rollout.batch_size", "63"])
    assert "split across ranks" in caplog.text and "--rollout.batch_size 63" in caplog.text


def test_the_default_formulation_is_the_papers(openrlhf_parse, fake_ray_init):
    direct, through_launcher = openrlhf_parse
    got = through_launcher([*STOCK, "--rac.rank_coef", "0.25", "--rac.reward.format_coef=0.5"])
    assert got == direct(STOCK)  # OpenRLHF's arguments unchanged (a reward is named: nothing added)
    env = fake_ray_init[0]["runtime_env"]["env_vars"]
    assert ENV_VAR not in env  # the workers read the formulation from which variable is set
    settings = paper_from_env(env)
    assert settings == PaperSettings(rank_coef=0.25, format_coef=0.5)
    assert settings.pair_coef == 0.3 and settings.schema and settings.source == "generate" and settings.fraction == 1.0
    assert set(settings.policy.severities) == {1, 2, 3} and len(settings.policy.names) == 8


def test_reward_formulation_adds_the_shipped_reward_file_when_none_is_named(openrlhf_parse, fake_ray_init):
    direct, through_launcher = openrlhf_parse
    args = list(STOCK)
    i = args.index("--reward.remote_url")
    del args[i : i + 2]
    got = through_launcher(args)
    assert got == {**direct(args), "reward.remote_url": launcher.REWARD_FILE}
    assert launcher.REWARD_FILE.endswith("integrations/openrlhf/reward.py") and os.path.exists(launcher.REWARD_FILE)


@pytest.mark.parametrize(
    ("rac", "message"),
    [
        (["--rac.formulation", "both"], "--rac.formulation"),
        (["--rac.rank_confidence", "prob"], "rank_confidence are not options of --rac.formulation reward"),
        (["--rac.alpha", "-1"], "rac.alpha"),
        (["--rac.schema", "maybe"], "rac.schema"),
        (["--rac.corruption.source", "web"], "rac.corruption.source"),
        (["--rac.corruption.weights", "1,1"], "one weight per severity (3)"),
        (["--rac.corruption.names", "nope"], "nope"),
        (["--rac.corruption.fraction", "1.5"], "fraction"),
        (["--rollout.batch_size", "63"], "must be even"),
        (["--rollout.n_samples_per_prompt", "1"], "needs 2 or more"),
    ],
)
def test_bad_reward_formulation_options_fail_before_ray(rac, message, monkeypatch, capsys):
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail("ray.init was called"))
    assert launcher.main([*STOCK, *rac]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rac-openrlhf: error: ") and message in err


def test_reward_formulation_on_a_text_only_run_has_no_pairs(caplog):
    args = list(STOCK)
    i = args.index("--data.max_images_per_prompt")
    del args[i : i + 2]
    with caplog.at_level("WARNING"):
        settings, _ = launcher.prepare_paper_run(PaperSettings(), [*args, "--rollout.batch_size", "63"])  # odd: fine
    assert "text-only run" in caplog.text and settings.source == "off" and not settings.pairs
    settings, _ = launcher.prepare_paper_run(PaperSettings(source="dataset"), args)  # a dataset's pairs stay
    assert settings.pairs


def test_paper_settings_round_trip_through_the_environment():
    settings = PaperSettings.from_options({"corruption.weights": "1,1,2", "corruption.source": "dataset", "schema": "false"})
    assert (settings.policy.severities, settings.policy.severity_weights) == ((1, 2, 3), (1.0, 1.0, 2.0))
    env = launcher.runtime_env(settings)["env_vars"]
    assert paper_from_env(env) == settings and PAPER_ENV_VAR in env and ENV_VAR not in env
    assert PaperSettings().policy == CorruptionPolicy.paper()  # the paper's 8 corruptions, 50/40/10


@pytest.mark.parametrize("argv", [["--help"], [*STOCK]])
def test_without_openrlhf_installed_the_command_says_how_to_install(argv, monkeypatch, capsys):
    real = launcher.importlib.util.find_spec
    monkeypatch.setattr(launcher.importlib.util, "find_spec", lambda name, *a: None if name == "openrlhf" else real(name, *a))
    monkeypatch.setattr(ray, "init", lambda **kw: pytest.fail("ray.init was called"))
    assert launcher.main(argv) == 2
    assert "openrlhf not installed: pip install 'rac-losses[openrlhf]'" in capsys.readouterr().err
