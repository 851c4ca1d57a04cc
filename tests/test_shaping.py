"""The paper's reward bonuses (rac_losses.shaping) against slow loops written from the issue's formulas."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rac_losses.shaping import corruption_bonus, rac_bonus, ranking_bonus


def _valid(c: float) -> bool:
    return not math.isnan(c) and c >= 0


def ranking_loop(conf, acc, group, margin=0.05):
    out = [0.0] * len(conf)
    for i in range(len(conf)):
        if not _valid(conf[i]):
            continue
        terms = []
        for j in range(len(conf)):
            if j == i or group[j] != group[i] or not _valid(conf[j]) or abs(acc[i] - acc[j]) < 1e-8:
                continue
            sign = 1.0 if acc[i] > acc[j] else -1.0
            terms.append(max(0.0, -sign * (conf[i] - conf[j]) + margin))
        if terms:
            out[i] = -sum(terms) / len(terms)
    return out


def corruption_loop(conf, acc, group, pair, level, margin=0.05, alpha=0.1):
    out = [0.0] * len(conf)
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(group):
        groups.setdefault(g, []).append(i)
    by_pair: dict[int, dict[bool, list[list[int]]]] = {}
    for rows in groups.values():
        p = pair[rows[0]]
        if p >= 0:
            by_pair.setdefault(p, {False: [], True: []})[level[rows[0]] > 0].append(rows)
    for sides in by_pair.values():
        clean_groups = sorted(sides[False], key=lambda r: r[0])
        noisy_groups = sorted(sides[True], key=lambda r: r[0])
        for clean_rows, noisy_rows in zip(clean_groups, noisy_groups):
            for i, j in zip(clean_rows, noisy_rows):
                if acc[i] <= 0.5 or not _valid(conf[i]) or not _valid(conf[j]):
                    continue
                loss = max(0.0, conf[j] - conf[i] + margin + alpha * level[j])
                phi = (conf[i] - conf[j]) - loss
                out[i] += phi
                out[j] -= phi
    return out


confidences = st.one_of(
    st.sampled_from([i / 10 for i in range(11)]), st.floats(0, 1), st.just(-1.0), st.just(float("nan"))
)


@st.composite
def shaping_batches(draw):
    """Rollouts of a few prompts, some with corrupted copies (several per prompt at times), ragged groups,
    shuffled rows, graded or binary accuracy, ties and missing confidences."""
    n_prompts = draw(st.integers(1, 5))
    graded = draw(st.booleans())
    rows = []
    gid = 0
    for prompt in range(n_prompts):
        pair_id = draw(st.sampled_from([prompt * 7 + 3, -1]))
        copies = [0.0] + draw(st.lists(st.sampled_from([0.2, 0.4, 0.6, 1.0]), max_size=2))
        if draw(st.booleans()):
            copies.append(0.0)  # the clean prompt twice in the batch
        for lvl in copies:
            size = draw(st.integers(1, 5))
            for _ in range(size):
                acc = draw(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]) if graded else st.sampled_from([0.0, 1.0]))
                rows.append((draw(confidences), acc, gid * 13 - 5, pair_id, lvl))
            gid += 1
    rows = draw(st.permutations(rows))
    return [list(col) for col in zip(*rows)]


@settings(max_examples=300, deadline=None)
@given(shaping_batches(), st.sampled_from([torch.float64, torch.float32]))
def test_bonuses_equal_the_loops(batch, dtype):
    conf, acc, group, pair, level = batch
    args = (
        torch.tensor(conf, dtype=dtype),
        torch.tensor(acc, dtype=torch.float64),
        torch.tensor(group),
        torch.tensor(pair),
        torch.tensor(level, dtype=torch.float64),
    )
    conf_used = torch.tensor(conf, dtype=dtype).double().tolist()  # what the function sees
    rank = ranking_bonus(*args[:3])
    pair_bonus = corruption_bonus(*args)
    assert rank.dtype == dtype and pair_bonus.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(rank.double(), torch.tensor(ranking_loop(conf_used, acc, group), dtype=torch.float64), rtol=0, atol=tol)
    expected = torch.tensor(corruption_loop(conf_used, acc, group, pair, level), dtype=torch.float64)
    torch.testing.assert_close(pair_bonus.double(), expected, rtol=0, atol=tol)
    out = rac_bonus(*args)
    torch.testing.assert_close(out.bonus, 0.2 * rank + 0.3 * pair_bonus)
    assert all(math.isfinite(v) for v in out.metrics.values())


def test_worked_example():
    # one prompt, 4 rollouts: correct/confident, correct/unsure, wrong/confident, missing confidence
    conf = torch.tensor([0.9, 0.4, 0.8, -1.0], dtype=torch.float64)
    acc = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    group = torch.zeros(4, dtype=torch.long)
    got = ranking_bonus(conf, acc, group)
    # row 0 vs row 2: max(0, -(0.9-0.8)+0.05) = 0; row 1 vs 2: max(0, -(0.4-0.8)+0.05) = 0.45
    # row 2 vs 0: max(0, (0.8-0.9)+0.05) = 0; vs 1: max(0, (0.8-0.4)+0.05) = 0.45 -> mean 0.225
    torch.testing.assert_close(got, torch.tensor([0.0, -0.45, -0.225, 0.0], dtype=torch.float64))


def test_corrupted_copy_pairs_kth_rows_and_needs_a_correct_clean_row():
    conf = torch.tensor([0.9, 0.7, 0.5, 0.95], dtype=torch.float64)
    acc = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    group = torch.tensor([0, 0, 1, 1])
    pair = torch.tensor([4, 4, 4, 4])
    level = torch.tensor([0.0, 0.0, 0.4, 0.4], dtype=torch.float64)
    got = corruption_bonus(conf, acc, group, pair, level)
    # (0, 2): delta 0.09, loss max(0, 0.5-0.9+0.09)=0, phi 0.4; (1, 3) skipped: the clean row is wrong
    torch.testing.assert_close(got, torch.tensor([0.4, 0.0, -0.4, 0.0], dtype=torch.float64))


def test_no_pair_no_partner_group_and_empty_batch():
    conf = torch.tensor([0.9, 0.5], dtype=torch.float64)
    acc = torch.ones(2, dtype=torch.float64)
    # a clean prompt whose copy is not in the batch, and a copy without pair id
    got = corruption_bonus(conf, acc, torch.tensor([0, 1]), torch.tensor([3, -1]), torch.tensor([0.0, 0.6]))
    assert got.tolist() == [0.0, 0.0]
    empty = torch.zeros(0)
    out = rac_bonus(empty, empty, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), empty)
    assert out.bonus.shape == (0,) and out.metrics["pair/count"] == 0.0


def test_large_batch_matches_loop_and_no_quadratic_table():
    g = torch.Generator().manual_seed(0)
    prompts, n = 64, 8
    conf = torch.randint(0, 11, (2 * prompts * n,), generator=g).double() / 10
    acc = torch.randint(0, 2, conf.shape, generator=g).double()
    group = torch.arange(2 * prompts).repeat_interleave(n)
    pair = (torch.arange(2 * prompts) % prompts).repeat_interleave(n)
    level = torch.where(torch.arange(2 * prompts) >= prompts, 0.4, 0.0).double().repeat_interleave(n)
    perm = torch.randperm(conf.numel(), generator=g)
    args = [t[perm] for t in (conf, acc, group, pair, level)]
    got = corruption_bonus(*args)
    expected = corruption_loop(*(t.tolist() for t in args))
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk_elements", [1, 50, 32768])
def test_ranking_in_chunks_equals_the_loop(monkeypatch, chunk_elements):
    """The comparisons run over chunks of groups (1 group per chunk, a few, all at once): same result."""
    from rac_losses import shaping

    monkeypatch.setattr(shaping, "_CHUNK_ELEMENTS", chunk_elements)
    g = torch.Generator().manual_seed(1)
    group = torch.randint(0, 40, (300,), generator=g)
    conf = torch.randint(-1, 11, (300,), generator=g).double() / 10  # -0.1: missing
    acc = torch.randint(0, 5, (300,), generator=g).double() / 4
    got = ranking_bonus(conf, acc, group)
    expected = ranking_loop(conf.tolist(), acc.tolist(), group.tolist())
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        (dict(confidence=torch.tensor([1.5, 0.2])), ValueError, "confidence must lie in"),
        (dict(confidence=torch.tensor([1, 0])), TypeError, "confidence must be a floating-point"),
        (dict(correct=torch.tensor([float("nan"), 1.0])), ValueError, "correct must be finite"),
        (dict(correct=torch.tensor([1.0])), ValueError, r"correct must have shape \[2\]"),
        (dict(group=torch.tensor([0.0, 1.0])), TypeError, "group must be an integer tensor"),
        (dict(level=torch.tensor([-0.2, 0.0])), ValueError, "level must be >= 0"),
        (dict(pair=torch.tensor([1, 2])), ValueError, "rows of one group must share pair"),
        (dict(margin=-1.0), ValueError, "margin must be a finite number"),
    ],
)
def test_bad_input(kwargs, err, match):
    args = dict(
        confidence=torch.tensor([0.5, 0.2]),
        correct=torch.tensor([1.0, 0.0]),
        group=torch.tensor([0, 0]),
        pair=torch.tensor([1, 1]),
        level=torch.tensor([0.0, 0.0]),
    )
    args.update(kwargs)
    with pytest.raises(err, match=match):
        corruption_bonus(**args)


def test_rac_bonus_needs_pair_and_level_together():
    c = torch.tensor([0.5])
    with pytest.raises(ValueError, match="pair and level must be given together"):
        rac_bonus(c, c, torch.tensor([0]), pair=torch.tensor([0]))
