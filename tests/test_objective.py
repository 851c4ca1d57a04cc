"""rac_loss and RACConfig: composition of the two losses, twin handling, metrics, validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rac_losses import (
    Partners,
    RACConfig,
    RACPartners,
    pairwise_corruption_loss,
    rac_loss,
    rac_partner_loss,
    rac_partners,
    ranking_group_loss,
    sequence_confidence,
)


def _batch(seed: int = 0, prompts: int = 4, rollouts: int = 4, t: int = 7):
    """Prompts x rollouts clean rows, then one twin for every other clean row (severity 1..5)."""
    g = torch.Generator().manual_seed(seed)
    n_clean = prompts * rollouts
    group = torch.arange(prompts).repeat_interleave(rollouts) * 101 + 7
    reward = torch.randint(0, 2, (n_clean,), generator=g).double()
    twin_of = torch.arange(0, n_clean, 2)
    n = n_clean + len(twin_of)
    logp = -torch.rand(n, t, generator=g, dtype=torch.float64) * 3
    entropy = torch.rand(n, t, generator=g, dtype=torch.float64) * 2
    lengths = torch.randint(1, t + 1, (n_clean,), generator=g)
    lengths = torch.cat([lengths, lengths[twin_of]])  # a twin has its clean row's response
    mask = torch.arange(t) < lengths.unsqueeze(1)
    pair = torch.cat([torch.arange(n_clean), twin_of]) * 3 + 1
    severity = torch.cat([torch.zeros(n_clean, dtype=torch.long), torch.randint(1, 6, (len(twin_of),), generator=g)])
    return dict(
        token_logprobs=logp, mask=mask, reward=torch.cat([reward, reward[twin_of]]),
        group=torch.cat([group, group[twin_of]]), token_entropy=entropy, pair=pair, severity=severity,
    )


def test_equals_the_weighted_sum_of_the_batch_losses():
    b = _batch()
    config = RACConfig(rank_coef=0.7, pair_coef=0.3, rank_margin=0.1, pair_link="hinge", pair_margin=0.05, pair_severity_margin=0.02)
    leaves = {k: b[k].clone().requires_grad_(True) for k in ("token_logprobs", "token_entropy")}
    out = rac_loss(**{**b, **leaves}, config=config)

    ref = {k: b[k].clone().requires_grad_(True) for k in ("token_logprobs", "token_entropy")}
    clean = b["severity"] == 0
    rank_c = sequence_confidence(ref["token_logprobs"], b["mask"])
    pair_c = sequence_confidence(ref["token_logprobs"], b["mask"], method="neg_entropy", token_entropy=ref["token_entropy"])
    rank = ranking_group_loss(rank_c, b["reward"], b["group"], valid=clean, scale=2.0, margin=0.1)
    pair = pairwise_corruption_loss(pair_c, b["severity"], b["pair"], link="hinge", margin=0.05, severity_margin=0.02)
    want = 0.7 * rank + 0.3 * pair

    torch.testing.assert_close(out.rank_loss, rank)
    torch.testing.assert_close(out.pair_loss, pair)
    torch.testing.assert_close(out.loss, want)
    got_grads = torch.autograd.grad(out.loss, list(leaves.values()))
    want_grads = torch.autograd.grad(want, list(ref.values()))
    for a, w in zip(got_grads, want_grads):
        torch.testing.assert_close(a, w)


def test_twins_take_no_part_in_ranking():
    b = _batch(1)
    twins = b["severity"] > 0
    changed = dict(b, reward=torch.where(twins, torch.tensor(100.0, dtype=torch.float64), b["reward"]))
    a, c = rac_loss(**b), rac_loss(**changed)
    torch.testing.assert_close(a.rank_loss, c.rank_loss)
    assert a.metrics["rank_pairs"] == c.metrics["rank_pairs"]


def test_metrics_are_what_they_say():
    b = _batch(2)
    out = rac_loss(**b)
    m = out.metrics
    clean = b["severity"] == 0
    pair_c = sequence_confidence(b["token_logprobs"], b["mask"], method="neg_entropy", token_entropy=b["token_entropy"])
    with_twin = clean & torch.isin(b["pair"], b["pair"][~clean])
    assert m["conf_clean"] == pytest.approx(pair_c[with_twin].mean().item())
    assert m["conf_corrupted"] == pytest.approx(pair_c[~clean].mean().item())
    assert m["conf_gap"] == pytest.approx(m["conf_clean"] - m["conf_corrupted"])
    assert m["conf_mean"] == pytest.approx(out.confidence[clean].mean().item())
    assert m["pair_pairs"] == float((~clean).sum())  # one twin per pair: one comparison each
    # satisfied fraction by brute force
    c, r, g = out.confidence, b["reward"], b["group"]
    idx = clean.nonzero().squeeze(1).tolist()
    comps = [(i, j) for i in idx for j in idx if g[i] == g[j] and r[i] > r[j]]
    assert m["rank_pairs"] == len(comps)
    assert m["rank_satisfied"] == pytest.approx(sum(bool(2.0 * (c[i] - c[j]) > 0) for i, j in comps) / len(comps))
    assert m["rank_loss"] == pytest.approx(out.rank_loss.item())


def test_without_twins_only_ranking_runs_and_entropy_is_not_needed():
    b = _batch(3)
    clean = b["severity"] == 0
    out = rac_loss(b["token_logprobs"][clean], b["mask"][clean], b["reward"][clean], b["group"][clean])
    assert out.pair_loss.item() == 0.0
    assert set(out.metrics) == {"rank_loss", "rank_pairs", "rank_satisfied", "conf_mean"}


def test_empty_mask_rows_and_invalid_rows_take_part_in_nothing():
    b = _batch(4)
    base = rac_loss(**b)
    n, t = b["mask"].shape
    padded = {k: torch.cat([v, v[:3]]) for k, v in b.items()}
    padded["mask"][n:] = False  # empty-mask padding rows (their log-probs hold garbage)
    padded["token_logprobs"][n:] = float("nan")
    padded["reward"][n:] = float("nan")
    out = rac_loss(**padded)
    torch.testing.assert_close(out.loss, base.loss)
    flagged = {k: torch.cat([v, v[:3]]) for k, v in b.items()}
    flagged["token_logprobs"][n:] = float("nan")  # rows flagged invalid may hold anything
    flagged["token_entropy"][n:] = float("inf")
    flagged["reward"][n:] = float("nan")
    out2 = rac_loss(**flagged, valid=torch.arange(n + 3) < n)
    torch.testing.assert_close(out2.loss, base.loss)


def test_missing_entropy_raises_saying_so():
    b = _batch()
    b.pop("token_entropy")
    with pytest.raises(ValueError, match="needs token_entropy"):
        rac_loss(**b)
    rac_loss(**b, config=RACConfig(pair_confidence="mean_logprob"))  # fine without it


def test_pair_without_severity_raises():
    b = _batch()
    b.pop("severity")
    with pytest.raises(ValueError, match="pair and severity must be given together"):
        rac_loss(**b)


@pytest.mark.parametrize(
    "field,value,error,pattern",
    [
        ("rank_coef", -0.1, ValueError, "rank_coef must be a finite number >= 0"),
        ("pair_coef", float("nan"), ValueError, "pair_coef must be a finite number >= 0"),
        ("rank_confidence", "entropy", ValueError, "unknown rank_confidence 'entropy'; expected one of"),
        ("pair_link", "relu", ValueError, "unknown pair_link 'relu'; expected one of 'logistic', 'hinge', 'squared_hinge'"),
        ("rank_scale", 0.0, ValueError, "rank_scale must be a finite number > 0"),
        ("rank_scale", True, TypeError, "rank_scale must be a number, got bool"),
        ("pair_margin", -1.0, ValueError, "pair_margin must be a finite number >= 0"),
        ("rank_pair_weight", "gap", ValueError, "unknown rank_pair_weight 'gap'"),
        ("pair_detach_clean", 1, TypeError, "pair_detach_clean must be a bool"),
    ],
)
def test_config_validation(field, value, error, pattern):
    with pytest.raises(error, match=pattern):
        RACConfig(**{field: value})


def test_config_is_frozen_and_lists_its_fields():
    config = RACConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rank_coef = 2.0  # type: ignore[misc]
    assert "pair_confidence" in RACConfig.field_names()


def test_config_argument_must_be_a_config():
    b = _batch()
    with pytest.raises(TypeError, match="config must be a RACConfig, got dict"):
        rac_loss(**b, config={"rank_coef": 1.0})


@given(st.integers(0, 50), st.randoms(use_true_random=False), st.sampled_from(["hinge", "logistic"]))
def test_row_form_sums_to_rac_loss_over_any_micro_batch_split(seed, rnd, pair_link):
    b = _batch(seed)
    config = RACConfig(rank_coef=0.6, pair_coef=0.4, pair_link=pair_link, pair_margin=0.1, pair_severity_margin=0.05)
    partners = rac_partners(**b, config=config)

    live = {k: b[k].clone().requires_grad_(True) for k in ("token_logprobs", "token_entropy")}
    order = list(range(len(b["mask"])))
    rnd.shuffle(order)
    cuts = sorted(rnd.randint(0, len(order)) for _ in range(rnd.randint(0, 6)))
    total = torch.zeros((), dtype=torch.float64)
    for lo, hi in zip([0, *cuts], [*cuts, len(order)]):
        rows = torch.tensor(order[lo:hi], dtype=torch.long)
        part = rac_partner_loss(
            live["token_logprobs"][rows], b["mask"][rows], partners[rows], token_entropy=live["token_entropy"][rows], config=config
        )
        part.backward()
        total = total + part.detach()

    whole = {k: b[k].clone().requires_grad_(True) for k in ("token_logprobs", "token_entropy")}
    want = rac_loss(**{**b, **whole}, config=config).loss
    want.backward()
    torch.testing.assert_close(total, want.detach())
    for name in live:
        torch.testing.assert_close(live[name].grad, whole[name].grad)


def test_row_form_without_twins_and_its_errors():
    b = _batch(5)
    clean = b["severity"] == 0
    plain = {k: b[k][clean] for k in ("token_logprobs", "mask", "reward", "group")}
    partners = rac_partners(**plain)
    assert partners.pair is None and len(partners) == int(clean.sum())
    value = rac_partner_loss(plain["token_logprobs"], plain["mask"], partners)
    torch.testing.assert_close(value, rac_loss(**plain).loss)
    with pytest.raises(TypeError, match="partners must be a RACPartners table, got Partners"):
        rac_partner_loss(plain["token_logprobs"], plain["mask"], partners.rank)
    with pytest.raises(ValueError, match=r"confidence must have shape \[2\], got \(3,\)"):
        rac_partner_loss(plain["token_logprobs"][:3], plain["mask"][:3], partners[torch.tensor([0, 1])])


@given(st.integers(0, 30), st.randoms(use_true_random=False), st.booleans())
def test_partner_fields_round_trip_through_any_row_selection(seed, rnd, twins):
    b = _batch(seed)
    if not twins:
        keep = b["severity"] == 0
        b = {k: v[keep] for k, v in b.items() if k not in ("pair", "severity")}
    partners = rac_partners(**b)
    fields = partners.to_fields()
    assert all(v.shape[0] == len(partners) for v in fields.values())
    assert ("rac_pair_sign" in fields) == twins
    rows = torch.tensor(rnd.sample(range(len(partners)), rnd.randint(1, len(partners))))
    # a framework selects rows of every per-row field (shuffled micro-batch), then rebuilds the tables
    back = RACPartners.from_fields({k: v[rows] for k, v in fields.items()})
    want = partners[rows]
    assert back.config == partners.config
    for loss in ("rank", "pair"):
        a, w = getattr(back, loss), getattr(want, loss)
        assert (a is None) == (w is None)
        if a is not None:
            for name in Partners.TABLES:
                torch.testing.assert_close(getattr(a, name), getattr(w, name))
            assert (a.link, a.scale, a.margin) == (w.link, w.scale, w.margin)


def _other_config() -> RACConfig:
    return RACConfig(
        rank_coef=0.3, rank_confidence="prob", rank_link="hinge", rank_scale=1.5, rank_margin=0.05,
        rank_pair_weight="reward_gap", rank_tie_tolerance=0.1, pair_coef=0.7, pair_confidence="mean_logprob",
        pair_link="squared_hinge", pair_scale=0.5, pair_margin=0.2, pair_severity_margin=0.03, pair_detach_clean=False,
    )


def test_partners_record_their_config_through_fields_and_the_row_form_uses_it():
    b = _batch(2)
    config = _other_config()
    partners = rac_partners(**b, config=config)
    assert partners.config == config
    back = RACPartners.from_fields(partners.to_fields())
    assert back.config == config
    assert (back.rank.link, back.rank.scale, back.pair.link, back.pair.margin) == ("hinge", 1.5, "squared_hinge", 0.2)
    strip = {k: b[k] for k in ("token_logprobs", "mask", "token_entropy")}
    torch.testing.assert_close(rac_partner_loss(**strip, partners=back), rac_loss(**b, config=config).loss)


def test_rac_partner_loss_refuses_a_config_the_tables_were_not_built_for():
    # before: tables of mean log-prob confidences were compared with entropy confidences, silently
    b = _batch(3)
    partners = rac_partners(**b)
    strip = {k: b[k] for k in ("token_logprobs", "mask", "token_entropy")}
    for changed in (dict(rank_confidence="neg_entropy"), dict(rank_scale=1.0), dict(pair_link="hinge"), dict(rank_pair_weight="reward_gap")):
        name = next(iter(changed))
        with pytest.raises(ValueError, match=rf"built with in {name}="):
            rac_partner_loss(**strip, partners=partners, config=RACConfig(**changed))
    # the loss weights do not enter the tables: changing them scales the terms
    weights = dataclasses.replace(RACConfig(), rank_coef=0.0, pair_coef=2.0)
    got = rac_partner_loss(**strip, partners=partners, config=weights)
    torch.testing.assert_close(got, rac_loss(**b, config=weights).loss)


def test_partner_config_field_errors():
    fields = rac_partners(**_batch()).to_fields()
    with pytest.raises(KeyError, match="rac_config"):
        RACPartners.from_fields({k: v for k, v in fields.items() if k != "rac_config"})
    mixed = fields["rac_config"].clone()
    mixed[1, 0] += 1.0
    with pytest.raises(ValueError, match="rac_config differs between rows"):
        RACPartners.from_fields(dict(fields, rac_config=mixed))
    with pytest.raises(ValueError, match="another rac-losses version"):
        RACPartners.from_fields(dict(fields, rac_config=fields["rac_config"][:, :3]))


def test_rac_partner_loss_takes_valid_rows_as_rac_loss_does():
    # before: a padding row rac_loss accepts (valid=False, garbage log-probs) made rac_partner_loss raise
    b = _batch(6)
    valid = torch.ones(len(b["mask"]), dtype=torch.bool)
    valid[[1, 5]] = False
    b["token_logprobs"] = b["token_logprobs"].clone()
    b["token_logprobs"][[1, 5]] = float("nan")
    partners = rac_partners(**b, valid=valid)
    strip = {k: b[k] for k in ("token_logprobs", "mask", "token_entropy")}
    got = rac_partner_loss(**strip, partners=partners, valid=valid)
    torch.testing.assert_close(got, rac_loss(**b, valid=valid).loss)
    with pytest.raises(ValueError, match="token_logprobs must be finite"):
        rac_partner_loss(**strip, partners=partners)


def test_conf_clean_is_over_the_clean_rows_that_have_a_twin():
    b = _batch(7)
    out = rac_loss(**b)
    conf = -b["token_entropy"].where(b["mask"], 0).sum(1) / b["mask"].sum(1)
    clean_with_twin = torch.isin(b["pair"], b["pair"][b["severity"] > 0]) & (b["severity"] == 0)
    assert int(clean_with_twin.sum()) < int((b["severity"] == 0).sum())  # some clean rows have no twin
    assert out.metrics["conf_clean"] == pytest.approx(float(conf[clean_with_twin].mean()))
    assert out.metrics["conf_corrupted"] == pytest.approx(float(conf[b["severity"] > 0].mean()))


def test_partner_fields_errors():
    fields = rac_partners(**_batch()).to_fields(prefix="x_")
    with pytest.raises(KeyError, match="x_rank_sign"):
        RACPartners.from_fields({k: v for k, v in fields.items() if k != "x_rank_sign"}, prefix="x_")
    other = dict(fields, x_rank_normaliser=fields["x_rank_normaliser"] + torch.arange(len(fields["x_rank_normaliser"])))
    with pytest.raises(ValueError, match="x_rank_normaliser differs between rows"):
        RACPartners.from_fields(other, prefix="x_")
    with pytest.raises(ValueError, match="non-empty"):
        RACPartners.from_fields({k: v[:0] for k, v in fields.items()}, prefix="x_")


@pytest.mark.parametrize("factor", [1.0, 3.0, 0.25])
def test_scaled_partners_scale_the_loss_value_and_gradient(factor):
    b = _batch(4)
    partners = rac_partners(**b)
    live = b["token_logprobs"].clone().requires_grad_(True)
    base = rac_partner_loss(live, b["mask"], partners, token_entropy=b["token_entropy"])
    base.backward()
    want = live.grad.clone()
    live.grad = None
    scaled = rac_partner_loss(live, b["mask"], partners.scaled(factor), token_entropy=b["token_entropy"])
    scaled.backward()
    torch.testing.assert_close(scaled, factor * base)
    torch.testing.assert_close(live.grad, factor * want)
    for bad in (0, -1.0, float("inf"), True):
        with pytest.raises((ValueError, TypeError), match="factor"):
            partners.scaled(bad)
