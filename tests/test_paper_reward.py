"""The paper-style confidence reader and paper_reward, on real-looking responses and against regex oracles."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rac_losses.rewards import RESPONSE_SCHEMA, paper_reward, parse_verbalized_confidence, with_response_schema

# --- a regex oracle of the paper-style reader, written from the description (fine on short text) ---
_TAG = re.compile(r"<confidence>\s*(.*?)\s*</confidence>", re.I | re.S)
_NUM = r"[0-9]+(?:\.[0-9]+)?\s*%?"
_RANGE = re.compile(rf"({_NUM})\s*(?:to|[-~\u2013\u2014]|and)\s*({_NUM})", re.I)
_PHRASE = re.compile(rf"(?:confidence|conf|certainty|probability)\s*[:\uff1a=\-]?\s*({_NUM})", re.I)


def _oracle_float(v):
    v = v.strip().replace(",", "")
    if not v:
        return None
    m = _RANGE.search(v)
    if m:
        lo, hi = _oracle_float(m.group(1)), _oracle_float(m.group(2))
        if lo is not None and hi is not None:
            return (lo + hi) / 2
    scale = 1.0
    if v.endswith("%"):
        v, scale = v[:-1].strip(), 100.0
        if not v:
            return None
    try:
        return float(v) / scale
    except ValueError:
        return None


def oracle(text):
    m = _TAG.search(text)
    raw = _oracle_float(m.group(1)) if m else (_oracle_float(_PHRASE.search(text).group(1)) if _PHRASE.search(text) else None)
    if raw is None:
        return None
    if raw > 1:
        raw /= 100
    return 1.0 if raw != raw else max(0.0, min(1.0, raw))


pieces = st.sampled_from(
    ["<confidence>", "</confidence>", "<CONFIDENCE>", "0", "8", "5", ".", ",", "%", " ", "\n", "to", "-", "~",
     "\u2013", "and", "confidence", "Conf", "certainty", ":", "=", "\uff1a", "x", "nan", "1e2", "70", "0.6"]
)


@settings(max_examples=600, deadline=None)
@given(st.lists(pieces, max_size=14).map("".join))
def test_paper_reader_equals_the_regex_oracle(text):
    assert parse_verbalized_confidence(text, style="paper") == oracle(text)


@pytest.mark.parametrize(
    "text,paper,strict",
    [
        ("<think>t</think><answer>A</answer><confidence>0.8</confidence>", 0.8, 0.8),
        ("<confidence>0.2</confidence><confidence>0.9</confidence>", 0.2, 0.9),  # paper: first; strict: last
        ("<confidence>0.6 to 0.8</confidence>", 0.7, None),
        ("<confidence>60%-80%</confidence>", 0.7, None),
        ("<confidence>85%</confidence>", 0.85, 0.85),
        ("<confidence>85</confidence>", 0.85, None),
        ("<confidence>150</confidence>", 1.0, None),
        ("<confidence>0.8 %</confidence>", 0.008, None),  # the release's reading; strict refuses the ambiguity
        ("<confidence>high</confidence> Confidence: 0.9", None, None),  # a tag that does not read: no fall-back
        ("I am fairly sure. Confidence: 70%", 0.7, None),
        ("conf=0.35", 0.35, None),
        ("<confidence>-0.3</confidence>", 0.0, None),
        ("<confidence>0,9</confidence>", 0.09, None),  # commas dropped: "09" = 9 > 1 -> 0.09
        ("no confidence stated", None, None),
        ("<confidence>0.7", None, None),
        ("", None, None),
    ],
)
def test_reader_corpus(text, paper, strict):
    for style, expected in (("paper", paper), ("strict", strict)):
        got = parse_verbalized_confidence(text, style=style)
        assert got == (None if expected is None else pytest.approx(expected)), (style, text)


def test_reader_bad_style():
    with pytest.raises(ValueError, match="unknown style 'loose'; expected one of 'strict', 'paper'"):
        parse_verbalized_confidence("x", style="loose")


@pytest.mark.parametrize(
    "text,strict,paper",
    [
        ("<confidence>" + "9" * 32_000 + "x</confidence>", None, None),
        ("<confidence>" * 8_000, None, None),
        ("<confidence>" * 4_000 + "</confidence>", None, None),
        ("confidence" + " " * 50_000 + ":" + " " * 50_000, None, None),
        ("confidence" + " " * 50_000 + ":" + " " * 50_000 + "40%", None, 0.4),
        ("<confidence>" + "1 to " * 10_000 + "</confidence>", None, 1.0),  # the first range, "1 to 1"
        ("<confidence>" + " " * 50_000 + "0.3" + " " * 50_000 + "</confidence>", 0.3, 0.3),
    ],
)
def test_adversarial_text(text, strict, paper):
    # the old patterns backtracked for seconds to minutes here; the readers are linear (timings: benchmarks_perf)
    assert parse_verbalized_confidence(text, style="strict") == strict
    assert parse_verbalized_confidence(text, style="paper") == paper
    assert oracle(text[:300]) == parse_verbalized_confidence(text[:300], style="paper")  # a prefix the oracle can afford


# --- paper_reward ---
MC = "<think>the bar is red</think>\n<answer>{a}</answer>\n<confidence>{c}</confidence>"


@pytest.mark.parametrize(
    "solution,truth,kw,acc,fmt,conf",
    [
        (MC.format(a="B", c="0.9"), "B", {}, 1.0, True, 0.9),
        (MC.format(a="(B)", c="0.9"), "B", {}, 1.0, True, 0.9),
        (MC.format(a="B.", c="0.4"), "C", {}, 0.0, True, 0.4),
        (MC.format(a="B because red", c="0.9"), "B", {}, 1.0, False, 0.9),  # correct letter, not one letter
        (MC.format(a="42", c="0.9"), "B", {"choices": ["17", "42"]}, 1.0, False, 0.9),  # the choice's text
        (MC.format(a="red", c="0.9"), "B", {"choices": ["blue", "red"]}, 0.0, False, 0.9),  # read as letter R
        (MC.format(a="B", c="high"), "B", {}, 1.0, False, None),
        (MC.format(a="B", c="0.9") + " extra words", "B", {}, 1.0, False, 0.9),
        ("<confidence>0.9</confidence><answer>B</answer>", "B", {}, 1.0, False, 0.9),  # answer after confidence
        ("The answer: B. Confidence: 80%", "B", {}, 1.0, False, 0.8),  # no tags: plain reading
        (MC.format(a="42", c="0.7"), "42.0", {"is_multiple_choice": False}, 1.0, True, 0.7),
        (MC.format(a="1,000", c="0.7"), "1000", {"is_multiple_choice": False}, 1.0, True, 0.7),
        (MC.format(a="x = 3", c="0.7"), "4", {"is_multiple_choice": False}, 0.0, True, 0.7),
        ("<answer></answer><confidence>0.5</confidence>", "A", {}, 0.0, False, 0.5),
    ],
)
def test_paper_reward_corpus(solution, truth, kw, acc, fmt, conf):
    r = paper_reward(solution, truth, **kw)
    assert (r.acc, r.format_ok) == (acc, fmt)
    assert r.confidence == (None if conf is None else pytest.approx(conf))
    assert r.reward_acc == (acc if fmt else 0.0)
    tail = solution.rsplit("</confidence>", 1)[1].strip() if "</confidence>" in solution else ""
    raw = r.reward_acc - 0.3 * (not fmt) - (0.2 * min(1, len(tail) / 128) if tail else 0.0)
    assert r.score_raw == pytest.approx(raw)
    assert r.score == pytest.approx((max(-1, min(1, raw)) + 1) / 2)


def test_format_coefficient_warms_up_linearly():
    bad = "<answer>B</answer>"  # no confidence: off the schema
    got = [paper_reward(bad, "B", step=s).score_raw for s in (0, 5, 10, 20)]
    assert got == pytest.approx([-1.0, -0.65, -0.3, -0.3])
    assert paper_reward(bad, "B").score_raw == pytest.approx(-0.3)  # no step: the final coefficient
    assert paper_reward(bad, "B", step=3, format_warmup_steps=0).score_raw == pytest.approx(-0.3)


def test_tail_penalty_grows_to_its_cap():
    base = MC.format(a="B", c="0.9")
    short, long = paper_reward(base + "x" * 64, "B"), paper_reward(base + "x" * 500, "B")
    assert short.score_raw == pytest.approx(-0.3 - 0.1)
    assert long.score_raw == pytest.approx(-0.3 - 0.2)


def test_paper_reward_errors():
    with pytest.raises(TypeError, match="solution must be a str"):
        paper_reward(None, "A")
    with pytest.raises(ValueError, match="format_coef must be a finite number"):
        paper_reward("x", "A", format_coef=-1)
    with pytest.raises(TypeError, match="step must be an int"):
        paper_reward("x", "A", step=1.5)


def test_with_response_schema_copies_and_appends_once():
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q? "}]}]
    out = with_response_schema(messages)
    assert messages[1]["content"][1]["text"] == "Q? "  # input untouched
    assert out[1]["content"][1]["text"] == "Q?" + RESPONSE_SCHEMA
    assert with_response_schema(out) == out
    assert with_response_schema([{"role": "user", "content": "Q"}])[0]["content"] == "Q" + RESPONSE_SCHEMA
    with pytest.raises(ValueError, match="must contain a user turn"):
        with_response_schema([{"role": "system", "content": "s"}])
    with pytest.raises(TypeError, match="messages must be a list of chat turns"):
        with_response_schema("Q")
