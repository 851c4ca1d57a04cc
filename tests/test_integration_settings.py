"""``RACSettings``: the ``rac`` options both framework adapters read (no framework needed)."""

from __future__ import annotations

import dataclasses

import pytest

from rac_losses import RACConfig
from rac_losses.corruption import CorruptionPolicy
from rac_losses.integrations.settings import OPTION_NAMES, RACSettings


def test_defaults():
    s = RACSettings.from_options(None)
    assert s.config == RACConfig()
    assert s.corruption == CorruptionPolicy(fraction=0.5)
    assert s.uses_twins and s.needs_entropy  # default pair confidence is neg_entropy


def test_nested_dotted_and_string_values_agree():
    nested = {"rank_coef": 0.5, "pair_detach_clean": False, "corruption": {"names": ["blank", "fog"], "severities": [3, 5], "fraction": 0.25, "seed": 4}}
    dotted = {"rank_coef": "0.5", "pair_detach_clean": "false", "corruption.names": "[blank, fog]", "corruption.severities": "3,5", "corruption.fraction": "0.25", "corruption.seed": "4"}
    a, b = RACSettings.from_options(nested), RACSettings.from_options(dotted)
    assert a == b
    assert a.config == RACConfig(rank_coef=0.5, pair_detach_clean=False)
    assert a.corruption == CorruptionPolicy(names=("blank", "fog"), severities=(3, 5), fraction=0.25, seed=4)
    assert RACSettings.from_options(a.as_options()) == a


def test_every_config_field_is_an_option():
    assert set(RACConfig.field_names()) < set(OPTION_NAMES)
    for f in dataclasses.fields(RACConfig):
        value = getattr(RACConfig(), f.name)
        assert RACSettings.from_options({f.name: value}).config == RACConfig()


def test_entropy_and_twins_follow_the_coefficients():
    assert not RACSettings.from_options({"pair_coef": 0}).uses_twins
    assert not RACSettings.from_options({"pair_coef": 0}).needs_entropy
    assert not RACSettings.from_options({"corruption.fraction": 0}).uses_twins
    assert RACSettings.from_options({"pair_coef": 0, "rank_confidence": "neg_entropy"}).needs_entropy
    assert not RACSettings.from_options({"pair_confidence": "topk", "rank_confidence": "prob"}).needs_entropy


@pytest.mark.parametrize(
    "options, match",
    [
        ({"rank_cof": 1}, "unknown rac option.*rank_cof.*rank_coef"),
        ({"corruption": {"nmes": ["fog"]}}, "corruption.nmes"),
        ({"rank_coef": "lots"}, r"rac.rank_coef: expected a number"),
        ({"rank_coef": -1}, "rank_coef"),
        ({"rank_coef": True}, "rac.rank_coef"),
        ({"rank_confidence": "vibes"}, "rank_confidence.*mean_logprob"),
        ({"pair_detach_clean": "maybe"}, "rac.pair_detach_clean: expected true or false"),
        ({"corruption.names": ["fgo"]}, "rac.corruption.*fgo"),
        ({"corruption.severities": [0]}, "rac.corruption.*severit"),
        ({"corruption.severities": "2.5"}, "rac.corruption.severities: expected an integer"),
        ({"corruption.fraction": 2}, "rac.corruption.*fraction"),
        ({"corruption.names": 3}, "rac.corruption.names: expected a list"),
        ({"corruption": 3}, "unknown rac option.*corruption; expected"),
    ],
)
def test_bad_options_raise_naming_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        RACSettings.from_options(options)


def test_check_confidences_covers_what_the_run_computes():
    s = RACSettings.from_options({"rank_confidence": "topk"})
    with pytest.raises(ValueError, match=r"rac.rank_confidence='topk' is not available in verl; expected one of mean_logprob, prob"):
        s.check_confidences(("mean_logprob", "prob"), "verl")
    pair = RACSettings.from_options({"pair_confidence": "topk"})
    with pytest.raises(ValueError, match="rac.pair_confidence='topk'"):
        pair.check_confidences(("mean_logprob", "neg_entropy"), "OpenRLHF")
    # without twins the pairwise confidence is never computed
    RACSettings.from_options({"pair_confidence": "topk", "pair_coef": 0}).check_confidences(("mean_logprob",), "verl")


def test_refresh_partners_option():
    assert not RACSettings.from_options(None).refresh_partners
    on = RACSettings.from_options({"refresh_partners": "true"})
    assert on.refresh_partners and RACSettings.from_options(on.as_options()) == on
    with pytest.raises(ValueError, match="rac.refresh_partners"):
        RACSettings.from_options({"refresh_partners": "sometimes"})
