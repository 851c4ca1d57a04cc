"""The ``rac`` trainer's per-step work: after verl's advantages, the RAC fields are written for every row.

TransferQueue (a Ray service) is replaced by an in-memory key-value store holding the fields in the
layouts verl reads them back in (nested response tensors, list-like non-tensor fields).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from verl.trainer.ppo.v1 import PPOTrainerSync
from verl.utils import tensordict_utils as tu

import rac_losses.integrations.verl.trainer as trainer_module
from rac_losses import RACPartners, rac_loss, rac_partner_loss
from rac_losses.integrations.settings import RACSettings
from rac_losses.integrations.verl.trainer import RACTrainer


class FakeQueue:
    """``kv_batch_get`` / ``kv_batch_put`` over a dict of per-row fields."""

    def __init__(self, rows: dict[str, dict]):
        self.rows = rows

    def kv_batch_get(self, keys, partition_id, select_fields):
        values = {}
        for f in select_fields:
            column = [self.rows[k][f] for k in keys]
            if isinstance(column[0], torch.Tensor):
                values[f] = torch.nested.as_nested_tensor(column, layout=torch.jagged)
            else:
                values[f] = np.empty(len(keys), dtype=object)
                values[f][:] = column
        return tu.get_tensordict(values)

    def kv_batch_put(self, keys, partition_id, fields):
        for name in fields.keys():
            column = fields[name]
            for i, k in enumerate(keys):
                self.rows[k][name] = column[i]
        return "meta"


class Meta:
    def __init__(self, keys, tags):
        self.keys, self.tags, self.partition_id = keys, tags, "train"

    def __len__(self):
        return len(self.keys)


def _step_rows(seed=0):
    """2 prompts x 2 rollouts, a twin of rollout 0 of prompt 0, and one verl padding row: a copy of the
    twin (verl copies the batch's first key, often a twin) with a padding uid."""
    g = torch.Generator().manual_seed(seed)
    spec = [("a", 0, 1.0, 0), ("a", 1, 0.0, 0), ("b", 0, 0.0, 0), ("b", 1, 1.0, 0), ("a", 0, 1.0, 4)]
    rows, keys = {}, []
    for uid, session, reward, severity in spec:
        n = 2 + session + (uid == "b")
        key = f"{uid}_{session}_{0 if severity else 1}"
        keys.append(key)
        rows[key] = dict(
            uid=uid, rm_scores=torch.tensor([0.0] * (n - 1) + [reward]), response_mask=torch.ones(n, dtype=torch.long),
            loss_mask=torch.ones(n, dtype=torch.long),
            old_log_probs=-torch.rand(n, generator=g), entropy=torch.rand(n, generator=g),
            extra_fields={"rac_pair": f"{uid}/{session}", "rac_severity": severity, "rac_corruption": "fog" if severity else ""},
        )
    rows["pad_0_0"] = dict(rows[keys[4]], uid="pad0")  # the template keeps the twin's rac_pair and severity
    keys.append("pad_0_0")
    tags = [{}] * (len(keys) - 1) + [{"is_padding": True}]
    return rows, keys, tags


def test_compute_advantage_writes_partner_fields_twin_flags_and_a_clean_loss_mask(monkeypatch):
    rows, keys, tags = _step_rows()
    queue = FakeQueue(rows)
    monkeypatch.setattr(trainer_module, "tq", queue)
    monkeypatch.setattr(PPOTrainerSync, "_compute_advantage", lambda self, batch, metrics: batch)  # verl's GRPO
    trainer = object.__new__(RACTrainer)  # no Ray: set what the step reads
    trainer.rac = RACSettings.from_options({"rank_coef": 0.5, "pair_coef": 0.25})
    trainer.config = type("C", (), {})()
    trainer.config.actor_rollout_ref = type("A", (), {})()
    trainer.config.actor_rollout_ref.actor = type("P", (), {"ppo_mini_batch_size": 1})()
    trainer.config.actor_rollout_ref.rollout = type("R", (), {"n": 2})()
    metrics: dict = {}
    trainer._compute_advantage(Meta(keys, tags), metrics)

    twin = [bool(rows[k]["rac_twin"]) for k in keys]
    assert twin == [False, False, False, False, True, False]
    for k in keys:  # twins: no tokens in verl's policy-gradient normaliser
        assert torch.equal(rows[k]["loss_mask"], rows[k]["response_mask"] * int(not rows[k]["rac_twin"]))
    # the per-row fields rebuild the tables the core builds from the same rows (padding row invalid)
    width = max(len(rows[k]["old_log_probs"]) for k in keys)
    pad = lambda t: torch.nn.functional.pad(t, (0, width - len(t)))  # noqa: E731
    logp = torch.stack([pad(rows[k]["old_log_probs"]) for k in keys])
    mask = torch.stack([pad(rows[k]["response_mask"]) for k in keys]).bool()
    want = rac_loss(
        logp, mask, torch.tensor([rows[k]["rm_scores"].sum().item() for k in keys]), torch.tensor([0, 0, 1, 1, 0, 2]),
        token_entropy=torch.stack([pad(rows[k]["entropy"]) for k in keys]),
        pair=torch.tensor([0, 1, 2, 3, 0, 0]), severity=torch.tensor([0, 0, 0, 0, 4, 4]),
        valid=torch.tensor([True] * 5 + [False]), config=trainer.rac.config,
    )
    fields = {name: torch.stack([torch.as_tensor(rows[k][name]) for k in keys]) for name in rows[keys[0]] if name.startswith("rac_") and name != "rac_twin"}
    partners = RACPartners.from_fields(fields)
    # 6 rows at 2 rows per mini-batch: 3 optimiser steps share the batch, each sees the loss scaled by 3
    total = rac_partner_loss(logp, mask, partners, token_entropy=torch.stack([pad(rows[k]["entropy"]) for k in keys]), config=trainer.rac.config)
    torch.testing.assert_close(total, 3 * want.loss)
    assert metrics["rac/rank_pairs"] == want.metrics["rank_pairs"] == 2
    assert metrics["rac/pair_pairs"] == 1 and metrics["rac/twins"] == 1
    assert metrics["rac/conf_gap"] == pytest.approx(want.metrics["conf_gap"])


def test_rows_from_verl_refuses_bad_input_naming_it():
    from rac_losses.integrations.verl.rows import rows_from_verl

    with pytest.raises(TypeError, match=r"rm_scores must be a float tensor \[N, T\], got list"):
        rows_from_verl(["a"], [[1.0]], [{}], [False])
    with pytest.raises(ValueError, match=r"uid \(2\), rm_scores \(1, 3\).*must describe the same rows"):
        rows_from_verl(["a", "b"], torch.zeros(1, 3), [{}], [False])
    with pytest.raises(ValueError, match="rac_severity must lie in 0..5"):
        rows_from_verl(["a"], torch.zeros(1, 3), [{"rac_severity": 9}], [False])


def _scored(infos: list[dict]) -> tuple[torch.Tensor, list[dict]]:
    """verl's ``rm_scores`` (the score on the last token) and ``extra_fields`` for the reward loop's results."""
    rm = torch.zeros(len(infos), 4)
    rm[:, -1] = torch.tensor([info["score"] for info in infos])
    return rm, [{"reward_extra_info": info} for info in infos]


def test_the_ranking_target_is_the_reward_hooks_correctness_not_its_score():
    from rac_losses.integrations.verl import reward
    from rac_losses.integrations.verl.rows import rows_from_verl

    answers = ["#### 42 <confidence>0.9</confidence>", "#### 42 <confidence>0.6</confidence>", "#### 41 <confidence>0.2</confidence>"]
    infos = [reward.compute_score("openai/gsm8k", a, "42") for a in answers]
    rm, extras = _scored(infos)
    assert rm.sum(1).tolist() == pytest.approx([1.99, 1.84, 0.96])  # correct + Brier: the two right answers differ
    rows = rows_from_verl(["p"] * 3, rm, extras, [False] * 3)
    assert rows.reward.tolist() == [1.0, 1.0, 0.0]
    # the two correct answers tie: each is ranked above the wrong one only (the score would add a third pair)
    logp, mask = -torch.rand(3, 4, generator=torch.Generator().manual_seed(0)), torch.ones(3, 4, dtype=torch.bool)
    config = RACSettings.from_options({"pair_coef": 0}).config
    assert rac_loss(logp, mask, rows.reward, rows.group, config=config).metrics["rank_pairs"] == 2
    assert rac_loss(logp, mask, rm.sum(1).double(), rows.group, config=config).metrics["rank_pairs"] == 3


def test_the_ranking_target_falls_back_to_verls_acc_then_to_the_sequence_reward():
    from rac_losses.integrations.verl.rows import rows_from_verl

    # a float reward function: verl's reward loop records it as acc
    rm, extras = _scored([{"score": 0.9, "acc": 0.9}, {"score": 0.1, "acc": 0.1}])
    assert rows_from_verl(["p", "p"], rm, extras, [False] * 2).reward.tolist() == pytest.approx([0.9, 0.1])
    # DAPO-like: a ±1 score with a boolean acc
    rm, extras = _scored([{"score": 1.0, "acc": True}, {"score": -1.0, "acc": False}])
    assert rows_from_verl(["p", "p"], rm, extras, [False] * 2).reward.tolist() == [1.0, 0.0]
    # no reward extra info at all: the summed token rewards
    assert rows_from_verl(["p", "p"], rm, [{}, {}], [False] * 2).reward.tolist() == [1.0, -1.0]


def test_a_correctness_on_some_rows_only_is_refused():
    from rac_losses.integrations.verl.rows import rows_from_verl

    rm, extras = _scored([{"score": 1.0, "correct": 1.0}, {"score": 0.5}])
    with pytest.raises(ValueError, match=r"reward_extra_info\['correct'\] is on 1 of 2 rows"):
        rows_from_verl(["p", "p"], rm, extras, [False] * 2)


def _jagged(rows):
    return torch.nested.as_nested_tensor(list(rows), layout=torch.jagged)


def test_dense_fields_stacks_transfer_queues_nested_tables_exactly():
    from tensordict import TensorDict

    from rac_losses.integrations.verl.loss import dense_fields

    table = torch.rand(3, 4, dtype=torch.float64)
    data = TensorDict(
        {"rac_table": _jagged(table), "rac_norm": torch.ones(3), "responses": _jagged([torch.ones(n) for n in (1, 2, 3)])},
        batch_size=3,
    )
    out = dense_fields(data, "rac_")
    assert sorted(out) == ["rac_norm", "rac_table"]  # other fields are left alone
    assert not out["rac_table"].is_nested and out["rac_table"].dtype == torch.float64
    assert torch.equal(out["rac_table"], table)
    ragged = TensorDict({"rac_table": _jagged([torch.ones(2), torch.ones(3)])}, batch_size=2)
    with pytest.raises(ValueError, match=r"rac_table rows differ in width: \[\(2,\), \(3,\)\]"):
        dense_fields(ragged, "rac_")


def test_without_twins_zeroes_twin_rows_of_a_nested_mask_in_its_layout():
    from rac_losses.integrations.verl.loss import without_twins

    mask = _jagged([torch.ones(n, dtype=torch.long) for n in (5, 6, 2)])
    out = without_twins(mask, torch.tensor([False, True, False]))
    assert out.is_nested and out.to_padded_tensor(0).tolist() == [[1] * 5 + [0], [0] * 6, [1, 1, 0, 0, 0, 0]]
