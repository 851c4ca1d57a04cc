"""The synthetic task: deterministic per seed, balanced, and scored as documented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rac_losses.demo.task import (
    ANSWERS,
    CANDIDATE_MASK,
    CONFIDENCE_TOKENS,
    CONFIDENCE_VALUES,
    EOS,
    MISSING,
    IMAGE_SIZE,
    PAD,
    QTYPES,
    QUESTION_LEN,
    SEP,
    TOKEN,
    VOCAB,
    decode,
    generate,
    render_response,
    score_responses,
)


def test_deterministic_per_seed() -> None:
    a, b, c = generate(64, 3), generate(64, 3), generate(64, 4)
    for field in ("images", "questions", "answers", "qtypes"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.images, c.images)
    # a prefix of a longer stream is the shorter stream
    assert np.array_equal(generate(100, 3).images[:64], a.images)


def test_does_not_touch_global_rng() -> None:
    np.random.seed(0)
    before = np.random.random()
    np.random.seed(0)
    generate(8, 1)
    assert np.random.random() == before


def test_shapes_and_dtypes() -> None:
    b = generate(32, 0)
    assert b.images.shape == (32, IMAGE_SIZE, IMAGE_SIZE, 3) and b.images.dtype == np.uint8
    assert b.questions.shape == (32, QUESTION_LEN) and b.questions.dtype == np.int64
    assert (b.questions[:, -1] == SEP).all()
    for q, text in zip(b.qtypes, map(decode, b.questions)):
        assert text.endswith("? <sep>")
    assert CANDIDATE_MASK[b.qtypes, b.answers].all()  # every answer is a valid answer of its type


def test_balanced() -> None:
    n = 4000
    b = generate(n, 0)
    counts = np.bincount(b.qtypes, minlength=len(QTYPES))
    assert np.all(np.abs(counts / n - 1 / len(QTYPES)) < 0.03), counts
    for q, name in enumerate(QTYPES):
        answers = b.answers[b.qtypes == q]
        share = np.array([(answers == TOKEN[a]).mean() for a in ANSWERS[name]])
        assert np.all(np.abs(share - 1 / len(ANSWERS[name])) < 0.06), (name, share)


def test_images_depend_on_answers() -> None:
    """Count questions: more shapes -> more saturated (shape-coloured) pixels."""
    b = generate(800, 1)
    sel = b.qtypes == QTYPES.index("count")
    img = b.images[sel].astype(int)
    saturation = (img.max(-1) - img.min(-1) > 100).mean((1, 2))
    n = np.array([int(VOCAB[a]) for a in b.answers[sel]])
    means = [saturation[n == k].mean() for k in (1, 2, 3, 4)]
    assert means == sorted(means)


def test_score_responses() -> None:
    qtypes = np.array([0, 0, 1, 1, 3, 3, 0])
    answers = np.array([TOKEN["2"], TOKEN["3"], TOKEN["red"], TOKEN["red"], TOKEN["yes"], TOKEN["yes"], TOKEN["1"]])
    c9, c3 = TOKEN["0.9"], TOKEN["0.3"]
    responses = np.array(
        [
            [TOKEN["2"], c9, EOS, PAD],  # correct
            [TOKEN["2"], c3, EOS, PAD],  # well formed, wrong
            [TOKEN["red"], TOKEN["red"], EOS, PAD],  # malformed (no confidence)
            [TOKEN["circle"], c9, EOS, PAD],  # malformed (not a colour)
            [TOKEN["yes"], EOS, PAD, PAD],  # malformed (confidence missing)
            [c9, TOKEN["yes"], EOS, PAD],  # malformed (confidence out of place)
            [TOKEN["1"], c9, c9, EOS],  # malformed (extra token)
        ]
    )
    lengths = np.array([3, 3, 3, 3, 2, 3, 4])
    scored = score_responses(responses, lengths, answers, qtypes)
    assert scored.correct.tolist() == [True, False, False, False, False, False, False]
    assert scored.well_formed.tolist() == [True, True, False, False, False, False, False]
    assert scored.answer_token.tolist() == [TOKEN["2"], TOKEN["2"], -1, -1, -1, -1, -1]
    assert scored.confidence.tolist() == [0.9, 0.3, MISSING, MISSING, MISSING, MISSING, MISSING]
    with pytest.raises(ValueError, match="L >= 3"):
        score_responses(responses[:, :2], lengths, answers, qtypes)


def test_confidence_tokens() -> None:
    assert [VOCAB[t] for t in CONFIDENCE_TOKENS] == [f"{k / 10:.1f}" for k in range(11)]
    assert np.array_equal(CONFIDENCE_VALUES[CONFIDENCE_TOKENS], np.arange(11) / 10)
    assert np.isnan(np.delete(CONFIDENCE_VALUES, CONFIDENCE_TOKENS)).all()
    assert not CANDIDATE_MASK[:, CONFIDENCE_TOKENS].any()  # a confidence is never an answer


def test_render_response_in_the_papers_schema() -> None:
    tok = lambda *words: np.array([TOKEN[w] for w in words] + [PAD] * 2)  # noqa: E731
    assert render_response(tok("red", "0.9", "<eos>"), 3) == "<answer>red</answer><confidence>0.9</confidence>"
    assert render_response(tok("0.9", "red", "<eos>"), 3) == "<confidence>0.9</confidence><answer>red</answer>"
    assert render_response(tok("how", "0.0", "<eos>"), 3) == " how <confidence>0.0</confidence>"
    assert render_response(tok("2", "1.0", "<eos>"), 2) == "<answer>2</answer><confidence>1.0</confidence>"  # length cuts


def test_rejects_negative_n() -> None:
    with pytest.raises(ValueError, match="n must be"):
        generate(-1, 0)


def test_core_never_imports_the_demo() -> None:
    import subprocess
    import sys

    code = (
        "import sys, rac_losses, rac_losses.metrics, rac_losses.rewards, rac_losses.candidates; "
        "assert not any(m.startswith('rac_losses.demo') for m in sys.modules), sorted(sys.modules)"
    )
    # cwd outside the repository root, whose source folder rac_losses/ would shadow the installed package
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)
