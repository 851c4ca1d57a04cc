"""The paper's formulation in the ``rac`` trainer (``+rac.formulation=reward``, the default): start-up on verl's
Hydra config, the reward function verl will load, and the rows the bonuses read (the shaping itself runs
through the real TransferQueue in ``test_transfer_queue.py``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from verl.trainer.ppo.reward import get_custom_reward_fn
from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls

import hydra_config
from rac_losses import rac_bonus
from rac_losses.integrations.paper_settings import PaperSettings
from rac_losses.integrations.verl.paper import paper_rows, shape_scores
from rac_losses.integrations.verl.trainer import RACTrainer

RIGHT = "<think>t</think><answer>B</answer><confidence>0.8</confidence>"


def _trainer(*overrides: str) -> RACTrainer:
    return get_trainer_cls("rac")(hydra_config.compose_ppo("trainer.v1.trainer_mode=rac", *overrides))


def test_the_flag_alone_runs_the_papers_method_with_its_reward_and_verls_loss():
    trainer = _trainer()
    assert trainer.formulation == "reward"
    assert trainer.rac == PaperSettings()  # the release's coefficients, corrupted copies made on the fly
    config = trainer.config
    hook = OmegaConf.to_container(config.reward.custom_reward_function)
    assert hook == {
        "path": "pkg://rac_losses.integrations.verl.paper_reward", "name": "compute_score",
        "reward_kwargs": {"format_coef": 0.3, "format_warmup_steps": 10, "format_warmup_start": 1.0,
                          "tail_penalty_coef": 0.2, "multiple_choice": True},
    }
    # no twin agent loop, no entropy: rollouts and the update are verl's own
    assert config.actor_rollout_ref.rollout.agent.default_agent_loop == "single_turn_agent"
    assert config.actor_rollout_ref.actor.calculate_entropy is False


def test_rac_reward_options_reach_the_reward_function_verl_loads():
    trainer = _trainer("+rac.reward.format_coef=0.5", "+rac.reward.multiple_choice=false", "+rac.rank_coef=0.4")
    assert trainer.rac.rank_coef == 0.4 and trainer.rac.format_coef == 0.5
    fn = get_custom_reward_fn(trainer.config)  # what verl's reward loop calls per response
    out = fn("mmmu", "<think>t</think>B<confidence>0.8</confidence>", "B", {})  # off-schema: the format penalty
    assert out["score_raw"] == pytest.approx(-0.5)


def test_the_users_reward_function_is_kept():
    trainer = _trainer("reward.custom_reward_function.path=/my/reward.py", "reward.custom_reward_function.name=score")
    hook = trainer.config.reward.custom_reward_function
    assert hook.path == "/my/reward.py" and hook.name == "score" and "reward_kwargs" not in hook


def test_the_reward_formulation_installs_no_rac_loss(monkeypatch):
    monkeypatch.setattr(PPOTrainerSync, "_setup", lambda self: None)  # verl's workers: not on this machine
    trainer = _trainer()

    class Workers:
        def set_loss_fn(self, fn):
            raise AssertionError("the reward formulation trains with verl's own loss")

    trainer.actor_rollout_wg = Workers()
    trainer._setup()


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["+rac.formulation=paper"], "rac.formulation: expected one of reward, loss, got 'paper'"),
        (["+rac.rank_confidence=prob"], r"\+rac.rank_confidence: not option\(s\) of rac.formulation=reward.*"
                                        r"need \+rac.formulation=loss"),
        (["+rac.rank_cof=1"], r"\+rac.rank_cof: not option"),
        (["+rac.rank_coef=-1"], "rac.rank_coef: expected a finite number >= 0"),
        (["+rac.schema=maybe"], "rac.schema: expected true or false"),
        (["+rac.reward.format_warmup_steps=2.5"], "rac.reward.format_warmup_steps: expected an integer"),
        (["+rac.corruption.source=elsewhere"], "rac.corruption.source: expected one of generate, dataset, off"),
        (["+rac.corruption.fraction=1.5"], r"rac.corruption.fraction: expected a share in \[0, 1\]"),
        (["+rac.corruption.names=[fgo]"], "rac.corruption: .*fgo"),
        (["reward.custom_reward_function.path=/my/reward.py", "+rac.reward.format_coef=0.1"],
         "rac.reward.format_coef configure the default reward function.*set its reward_kwargs"),
    ],
)
def test_a_bad_option_of_the_reward_formulation_fails_at_start_up_naming_it(overrides, match):
    with pytest.raises(ValueError, match=match):
        _trainer(*overrides)


def _info(confidence, correct, key="reward_acc"):
    return {"reward_extra_info": {"confidence": confidence, key: correct}}


def test_a_users_function_without_confidence_fails_loudly_naming_the_key():
    extras = [{"reward_extra_info": {"acc": 1.0}}, _info(0.5, 0.0)]
    with pytest.raises(KeyError, match="returned no 'confidence' for 1 of 2 responses"):
        paper_rows(["a", "a"], [0, 1], extras, [False, False])
    with pytest.raises(KeyError, match="no 'reward_acc' or 'acc'"):
        paper_rows(["a", "a"], [0, 1], [{"reward_extra_info": {"confidence": 0.3}}] * 2, [False, False])


def test_acc_stands_in_for_reward_acc_and_padding_rows_read_nothing():
    # a padding row copies a real row's extra info (verl's template): it must not count twice
    extras = [_info(0.9, 1.0, "acc"), _info(0.2, 0.0, "acc"), _info(0.9, 1.0, "acc")]
    rows = paper_rows(["a", "a", "pad"], [0, 1, 0], extras, [False, False, True])
    assert rows.correct.tolist() == [1.0, 0.0, 0.0] and rows.confidence.tolist() == [0.9, 0.2, -1.0]
    assert rows.valid.tolist() == [True, True, False] and rows.pair is None


def test_without_pair_columns_only_the_ranking_bonus_is_added():
    extras = [_info(0.2, 1.0), _info(0.9, 0.0), _info(0.5, 1.0), _info(0.4, 0.0)]
    rows = paper_rows(["a", "a", "b", "b"], [0, 1, 0, 1], extras, [False] * 4)
    scores = torch.zeros(4, 3)
    lengths = torch.tensor([3, 1, 2, 3])
    shaped, metrics = shape_scores(scores, lengths, rows, PaperSettings(source="dataset"))
    want = rac_bonus(rows.confidence, rows.correct, rows.group)
    assert torch.count_nonzero(shaped) == 2  # group b is ordered right by more than the margin: no bonus
    torch.testing.assert_close(shaped[torch.arange(4), lengths - 1], want.bonus.float())
    assert want.corruption.abs().sum() == 0 and metrics["rac/pair/bonus_mean"] == 0.0
    assert "rac/pair/clean_prompts" not in metrics


def test_pair_columns_must_agree_with_each_other():
    extras = [_info(0.5, 1.0)] * 2
    with pytest.raises(ValueError, match="corruption_level must be > 0 on rows with is_noisy=true"):
        paper_rows(["a", "b"], [0, 0], extras, [False] * 2,
                   {"pair_id": [1, 1], "is_noisy": [False, True], "corruption_level": [0.0, 0.0]})


def _parquet(path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    prompts = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
               [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Red."},
                {"role": "user", "content": "Another one."}]]
    table = pa.table({
        "prompt": prompts, "data_source": ["x", "x"], "reward_model": [{"ground_truth": "4"}, {"ground_truth": "blue"}],
        "pair_id": [0, 0], "is_noisy": [False, True], "corruption_level": [0.0, 0.4],
    })
    pq.write_table(table, path / "train.parquet")
    return str(path / "train.parquet")


def test_the_schema_is_appended_to_every_prompts_last_user_turn_by_verls_dataset(tmp_path):
    from verl.trainer.ppo.utils import create_rl_dataset

    from rac_losses.rewards import RESPONSE_SCHEMA

    files = _parquet(tmp_path)
    trainer = _trainer(f"data.train_files={files}", "data.filter_overlong_prompts=false")
    assert trainer.config.data.custom_cls.path == "pkg://rac_losses.integrations.verl.dataset"
    dataset = create_rl_dataset(files, trainer.config.data, tokenizer=None, processor=None)  # as verl builds it
    first, second = dataset[0], dataset[1]
    assert first["raw_prompt"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?" + RESPONSE_SCHEMA},
    ]
    assert [m["content"] for m in second["raw_prompt"]] == ["Name a colour.", "Red.", "Another one." + RESPONSE_SCHEMA]
    # the pair columns ride along as per-row values (verl puts them into TransferQueue beside the outputs)
    assert (second["pair_id"], second["is_noisy"], second["corruption_level"]) == (0, True, 0.4)

    plain = _trainer(f"data.train_files={files}", "data.filter_overlong_prompts=false", "+rac.schema=false")
    assert plain.config.data.custom_cls.path is None
    assert create_rl_dataset(files, plain.config.data, None, None)[0]["raw_prompt"][-1]["content"] == "What is 2+2?"


def test_the_schema_with_the_users_own_dataset_class_is_refused():
    with pytest.raises(ValueError, match=r"data.custom_cls.path names your own .*set \+rac.schema=false"):
        _trainer("data.custom_cls.path=/my/data.py", "data.custom_cls.name=Mine")
    _trainer("data.custom_cls.path=/my/data.py", "data.custom_cls.name=Mine", "+rac.schema=false")


def _paired_parquet(path, pairs: int = 8) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [(p, noisy) for p in range(pairs) for noisy in (False, True)]  # as rac-corrupt pairs writes them
    table = pa.table({
        "prompt": [[{"role": "user", "content": f"question {p}"}] for p, _ in rows],
        "data_source": ["x"] * len(rows), "reward_model": [{"ground_truth": "a"}] * len(rows),
        "pair_id": [p for p, _ in rows], "is_noisy": [n for _, n in rows], "corruption_level": [0.4 * n for _, n in rows],
    })
    pq.write_table(table, path / "pairs.parquet")
    return str(path / "pairs.parquet")


def _batches(mode: str, files: str, *overrides: str, steps: int = 12) -> list[list[tuple[int, bool]]]:
    config = hydra_config.compose_ppo(
        f"trainer.v1.trainer_mode={mode}", f"data.train_files={files}", f"data.val_files={files}",
        "data.train_batch_size=4", "data.filter_overlong_prompts=false", "data.dataloader_num_workers=0", *overrides,
    )
    trainer = get_trainer_cls(mode)(config)
    trainer.tokenizer = trainer.processor = None
    trainer._init_dataloader()
    out, it = [], iter(trainer.train_dataloader)
    for _ in range(steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(trainer.train_dataloader)
            batch = next(it)
        out.append(sorted(zip(batch["pair_id"].tolist(), batch["is_noisy"].tolist())))
    return out


def test_every_clean_prompt_meets_its_corrupted_copy_in_its_batch_over_several_steps(tmp_path):
    files = _paired_parquet(tmp_path)
    batches = _batches("rac", files, "+rac.corruption.source=dataset")  # 3 epochs of 4 batches, shuffled
    for batch in batches:
        assert batch == sorted((p, noisy) for p in {p for p, _ in batch} for noisy in (False, True))
    assert len({tuple(b) for b in batches}) > 4  # a fresh order of pairs every epoch
    # verl's own shuffled sampler splits pairs across batches (what the pair sampler is for)
    split = [b for b in _batches("sync", files) if len({p for p, _ in b}) != 2]
    assert split


def test_the_pair_sampler_refuses_batches_that_would_split_a_pair():
    from rac_losses.integrations.verl.sampler import PairSampler

    with pytest.raises(ValueError, match="data.train_batch_size=3 is not a multiple of the pair size"):
        PairSampler([0, 0, 1, 1], 3)
    with pytest.raises(ValueError, match="pairs of 2 and 3 rows"):
        PairSampler([0, 0, 1, 1, 1], 2)
    assert list(PairSampler([1, 0, 1, 0], 2, shuffle=False)) == [0, 2, 1, 3]
    # rows without pair come two at a time (never pushing a pair across a batch boundary); a lone one last
    assert list(PairSampler([-1, 0, 0, -1, -1], 2, shuffle=False)) == [0, 3, 1, 2, 4]


def test_validation_reports_the_calibration_metrics_per_data_source_beside_verls():
    from rac_losses.metrics import auroc, calibration_summary

    sources = ["mmmu", "mmmu", "mmmu", "mmmu_T0.4", "mmmu_T0.4", "mmmu_T0.4"]
    conf = [0.9, 0.2, 0.7, 0.8, -1.0, 0.6]
    acc = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # mmmu_T0.4: the one correct answer stated no confidence
    infos = {"reward": [0.5] * 6, "acc": acc, "confidence": conf, "format_ok": [1.0, 1.0, 1.0, 1.0, 0.0, 1.0]}
    got = _trainer()._val_metrics_update(sources, [f"u{i}" for i in range(6)], infos, [1] * 6)
    assert "val-core/mmmu/acc/mean@1" in got  # verl's own
    for name, rows in (("mmmu", [0, 1, 2]), ("mmmu_T0.4", [3, 4, 5]), ("all", range(6))):
        c, a = (torch.tensor([x[i] for i in rows], dtype=torch.float64) for x in (conf, acc))  # verl's floats
        want = calibration_summary(c, a, format_ok=torch.tensor([infos["format_ok"][i] for i in rows]))
        for k, v in want.items():
            assert got[f"val-rac/{name}/{k}"] == pytest.approx(v), k
        assert got[f"val-rac/{name}/accuracy"] == pytest.approx(float(a.mean()))
        keep = c >= 0
        if 0 < a[keep].sum() < keep.sum():
            assert got[f"val-rac/{name}/auroc"] == pytest.approx(auroc(c[keep], a[keep]))
    assert "val-rac/mmmu_T0.4/auroc" not in got  # one outcome among its stated confidences: undefined
    assert not any(k.startswith("val-rac") for k in _trainer("+rac.formulation=loss")._val_metrics_update(
        sources, [f"u{i}" for i in range(6)], infos, [1] * 6))


@given(
    units=st.lists(st.sampled_from(["pair", "single"]), min_size=1, max_size=30),
    batch_pairs=st.integers(1, 4), seed=st.integers(0, 2**16), epoch=st.integers(0, 3), cut=st.integers(0, 60),
)
@settings(max_examples=60, deadline=None)
def test_the_pair_sampler_emits_every_row_once_keeps_pairs_in_batches_and_resumes_anywhere(
    units, batch_pairs, seed, epoch, cut
):
    from rac_losses.integrations.verl.sampler import PairSampler

    ids = []
    for k, unit in enumerate(units):  # pairs' rows apart in the dataset, as a paired file may order them
        ids += [k] if unit == "single" else [100 + k]
    ids += [100 + k for k, unit in enumerate(units) if unit == "pair"]
    ids = [-1 if i < 100 else i for i in ids]
    batch = 2 * batch_pairs
    sampler = PairSampler(ids, batch, seed=seed)
    order = sampler.order(epoch)
    assert sorted(order) == list(range(len(ids)))  # a permutation of the rows
    for start in range(0, len(order) - batch + 1, batch):  # every whole batch holds whole pairs
        pairs = [ids[r] for r in order[start : start + batch] if ids[r] >= 0]
        assert all(pairs.count(p) == 2 for p in pairs)
    # an iterator restored from any position continues exactly where the first one was
    first = iter(sampler)
    for _ in range(min(cut, len(ids))):
        next(first)
    state = first.state_dict()
    restored = iter(PairSampler(ids, batch, seed=seed))
    restored.load_state_dict(state)
    assert list(restored) == list(first)


def test_prompts_whose_partner_is_missing_from_the_batch_are_counted():
    extras = [_info(0.6, 1.0), _info(0.3, 0.0)] * 3
    uid, session = ["c", "c", "n", "n", "alone", "alone"], [0, 1] * 3
    columns = {"pair_id": [1, 1, 1, 1, 2, 2], "is_noisy": [False, False, True, True, False, False],
               "corruption_level": [0.0, 0.0, 0.4, 0.4, 0.0, 0.0]}
    rows = paper_rows(uid, session, extras, [False] * 6, columns)
    _, metrics = shape_scores(torch.zeros(6, 2), torch.full((6,), 2), rows, PaperSettings())
    assert metrics["rac/pair/unmatched_prompts"] == 1 and metrics["rac/pair/clean_prompts"] == 2
    whole = paper_rows(uid[:4], session[:4], extras[:4], [False] * 4, {k: v[:4] for k, v in columns.items()})
    assert shape_scores(torch.zeros(4, 2), torch.full((4,), 2), whole, PaperSettings())[1]["rac/pair/unmatched_prompts"] == 0


def test_a_paired_file_beside_an_unpaired_one_keeps_its_pairs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    paired = _paired_parquet(tmp_path, pairs=4)  # 8 rows
    table = pa.table({"prompt": [[{"role": "user", "content": f"plain {i}"}] for i in range(4)],
                      "data_source": ["x"] * 4, "reward_model": [{"ground_truth": "a"}] * 4})
    pq.write_table(table, tmp_path / "plain.parquet")
    files = f"[{paired},{tmp_path / 'plain.parquet'}]"  # verl fills the missing pair columns with None
    config = hydra_config.compose_ppo(
        "trainer.v1.trainer_mode=rac", f"data.train_files={files}", f"data.val_files={paired}",
        "data.train_batch_size=4", "data.filter_overlong_prompts=false", "data.dataloader_num_workers=0",
        "+rac.corruption.source=dataset",
    )
    trainer = get_trainer_cls("rac")(config)
    trainer.tokenizer = trainer.processor = None
    trainer._init_dataloader()
    seen = []
    for batch in trainer.train_dataloader:  # one epoch: 12 rows, 3 batches
        pairs = [p for p in batch["pair_id"] if p is not None]
        assert all(pairs.count(p) == 2 for p in pairs)
        seen += list(batch["pair_id"])
    assert len(seen) == 12 and seen.count(None) == 4
    rows = paper_rows(["a", "b"], [0, 0], [_info(0.5, 1.0)] * 2, [False] * 2,
                      {"pair_id": [3, None], "is_noisy": [False, None], "corruption_level": [0.0, None]})
    assert rows.pair.tolist() == [3, -1] and rows.level.tolist() == [0.0, 0.0]
