"""A synthetic visual question task, generated on the fly and deterministic per seed.

Each example is a 32x32 RGB image (``uint8``, ``H x W x 3``) holding 1 to 4 coloured shapes (square,
circle, triangle; red, green, blue, yellow) on a textured background, a question and its one-word answer.
Four question types, equally likely, each with its answers equally likely:

- ``count``: "how many shapes ?" -> ``1`` .. ``4``
- ``colour``: "what colour is the circle ?" (exactly one circle in the image) -> a colour
- ``shape``: "what shape is the red one ?" (exactly one red shape) -> a shape
- ``exist``: "is there a red circle ?" -> ``yes`` / ``no`` (a "no" image may hold red shapes and circles,
  just not a red circle: the question needs colour-shape binding)

A response states its answer and then its confidence: ``answer confidence <eos>``, the confidence one of
11 tokens ``0.0`` ... ``1.0`` (:data:`CONFIDENCE_VALUES`). It is *well formed* when it is exactly one answer
token of the question's type, one confidence token and ``<eos>`` (a missing or misplaced confidence is
malformed, as in the paper's format check), and *correct* when it is well formed and its answer token is
the answer. :func:`render_response` writes a response in the paper's ``<answer>/<confidence>`` schema,
for :func:`rac_losses.rewards.paper_reward`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "ANSWERS",
    "COLOURS",
    "EOS",
    "IMAGE_SIZE",
    "PAD",
    "QUESTION_LEN",
    "QTYPES",
    "SEP",
    "SHAPES",
    "VOCAB",
    "CONFIDENCE_TOKENS",
    "CONFIDENCE_VALUES",
    "MISSING",
    "Batch",
    "Scored",
    "answer_candidates",
    "decode",
    "generate",
    "render_response",
    "score_responses",
]

IMAGE_SIZE = 32
SHAPES = ("square", "circle", "triangle")
COLOURS = ("red", "green", "blue", "yellow")
COUNTS = ("1", "2", "3", "4")
QTYPES = ("count", "colour", "shape", "exist")
ANSWERS = {"count": COUNTS, "colour": COLOURS, "shape": SHAPES, "exist": ("yes", "no")}

_SPECIAL = ("<pad>", "<eos>", "<sep>")
_WORDS = ("how", "many", "shapes", "what", "colour", "shape", "is", "the", "one", "there", "a", "?")
_CONFIDENCES = tuple(f"{k / 10:.1f}" for k in range(11))
VOCAB: tuple[str, ...] = _SPECIAL + _WORDS + SHAPES + COLOURS + COUNTS + ("yes", "no") + _CONFIDENCES
TOKEN = {w: i for i, w in enumerate(VOCAB)}
PAD, EOS, SEP = TOKEN["<pad>"], TOKEN["<eos>"], TOKEN["<sep>"]
#: Token ids of the 11 confidence tokens ``0.0`` ... ``1.0``, in order of value.
CONFIDENCE_TOKENS = np.array([TOKEN[c] for c in _CONFIDENCES], dtype=np.int64)
#: ``[V]`` float64: each token's value as a stated confidence, NaN for the other tokens (the table
#: :func:`rac_losses.stated_confidence` takes).
CONFIDENCE_VALUES = np.full(len(VOCAB), np.nan)
CONFIDENCE_VALUES[CONFIDENCE_TOKENS] = np.arange(11) / 10
#: The stated confidence of a response without a well-formed one (as the reward hooks log it).
MISSING = -1.0
#: Index of the answer token and of the confidence token in a well-formed response.
ANSWER_POSITION, CONFIDENCE_POSITION = 0, 1
QUESTION_LEN = 8  # left-padded question tokens, the last one is <sep>

_RGB = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
}


def answer_candidates(qtype: str) -> list[int]:
    """Token ids of the valid answers of a question type."""
    return [TOKEN[a] for a in ANSWERS[qtype]]


#: ``[4, V]`` bool: which tokens are valid answers, per question type (row = index in :data:`QTYPES`).
CANDIDATE_MASK = np.zeros((len(QTYPES), len(VOCAB)), dtype=bool)
for _q, _name in enumerate(QTYPES):
    CANDIDATE_MASK[_q, answer_candidates(_name)] = True


@dataclass(frozen=True)
class Batch:
    """A set of examples (``n`` of them).

    Attributes:
        images: ``[n, 32, 32, 3]`` uint8.
        questions: ``[n, QUESTION_LEN]`` int64 token ids (left-padded, ending with ``<sep>``).
        answers: ``[n]`` int64 token id of the correct answer.
        qtypes: ``[n]`` int64 index into :data:`QTYPES`.
    """

    images: np.ndarray
    questions: np.ndarray
    answers: np.ndarray
    qtypes: np.ndarray

    def __len__(self) -> int:
        return len(self.answers)

    def subset(self, index: np.ndarray) -> Batch:
        return Batch(self.images[index], self.questions[index], self.answers[index], self.qtypes[index])


def _question(qtype: str, target_colour: str | None, target_shape: str | None) -> list[str]:
    if qtype == "count":
        words = ["how", "many", "shapes", "?"]
    elif qtype == "colour":
        words = ["what", "colour", "is", "the", target_shape, "?"]
    elif qtype == "shape":
        words = ["what", "shape", "is", "the", target_colour, "one", "?"]
    else:
        words = ["is", "there", "a", target_colour, target_shape, "?"]
    return words


def _background(rng: np.random.Generator) -> np.ndarray:
    """A dim textured background: a base grey-ish tint, stripes or blotches, and pixel noise."""
    size = IMAGE_SIZE
    base = rng.uniform(40, 110, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:  # stripes at a random angle
        angle = rng.uniform(0, np.pi)
        freq = rng.uniform(0.3, 0.9)
        tex = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    elif kind == 1:  # checker
        cell = int(rng.integers(3, 7))
        tex = (((xx // cell) + (yy // cell)) % 2) * 2.0 - 1.0
    else:  # smooth blotches
        coarse = rng.normal(size=(5, 5))
        idx = (np.arange(size) * 4 // size).astype(int)
        tex = coarse[idx][:, idx]
        tex = tex / (np.abs(tex).max() + 1e-6)
    amp = rng.uniform(8, 25)
    img = base[None, None, :] + amp * tex[..., None] + rng.normal(0, 6, size=(size, size, 3))
    return img


def _draw(img: np.ndarray, shape: str, colour: str, cy: float, cx: float, r: float, rng: np.random.Generator) -> None:
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5
    dy, dx = yy - cy, xx - cx
    if shape == "square":
        inside = (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    elif shape == "circle":
        inside = dy**2 + dx**2 <= r**2
    else:  # upward triangle with apex at the top
        top, bottom = cy - r, cy + r * 0.8
        frac = (yy - top) / (bottom - top)
        inside = (yy >= top) & (yy <= bottom) & (np.abs(dx) <= frac * r * 1.05)
    rgb = np.asarray(_RGB[colour], dtype=np.float64) + rng.normal(0, 12, size=3)
    img[inside] = rgb


def _place(rng: np.random.Generator, n: int) -> list[tuple[float, float, float]]:
    """``n`` non-overlapping (cy, cx, r) inside the image (rejection sampling, deterministic per rng)."""
    for _ in range(1000):
        spots: list[tuple[float, float, float]] = []
        for _ in range(n):
            for _ in range(100):
                r = rng.uniform(3.5, 5.5)
                cy, cx = rng.uniform(r + 1, IMAGE_SIZE - r - 1, size=2)
                if all((cy - y) ** 2 + (cx - x) ** 2 > (r + q + 1.5) ** 2 for y, x, q in spots):
                    spots.append((cy, cx, r))
                    break
        if len(spots) == n:
            return spots
    raise RuntimeError("could not place shapes")  # pragma: no cover - 4 small shapes always fit


def _example(rng: np.random.Generator) -> tuple[np.ndarray, list[str], str, int]:
    q = int(rng.integers(len(QTYPES)))
    qtype = QTYPES[q]
    answer = ANSWERS[qtype][int(rng.integers(len(ANSWERS[qtype])))]
    combos = [(s, c) for s in SHAPES for c in COLOURS]
    target_colour = target_shape = None
    if qtype == "count":
        n = int(answer)
        objects = [combos[i] for i in rng.integers(len(combos), size=n)]
    else:
        n = int(rng.integers(1, 5))
        if qtype == "colour":
            target_shape = SHAPES[int(rng.integers(len(SHAPES)))]
            first = (target_shape, answer)
            pool = [(s, c) for s, c in combos if s != target_shape]
        elif qtype == "shape":
            target_colour = COLOURS[int(rng.integers(len(COLOURS)))]
            first = (answer, target_colour)
            pool = [(s, c) for s, c in combos if c != target_colour]
        else:
            target_shape = SHAPES[int(rng.integers(len(SHAPES)))]
            target_colour = COLOURS[int(rng.integers(len(COLOURS)))]
            pool = [(s, c) for s, c in combos if (s, c) != (target_shape, target_colour)]
            if answer == "yes":
                first = (target_shape, target_colour)
            else:  # a distractor sharing the colour or the shape, so binding is needed
                near = [(s, c) for s, c in pool if s == target_shape or c == target_colour]
                first = near[int(rng.integers(len(near)))]
        objects = [first] + [pool[i] for i in rng.integers(len(pool), size=n - 1)]
        objects = [objects[i] for i in rng.permutation(n)]
    img = _background(rng)
    for (cy, cx, r), (shape, colour) in zip(_place(rng, n), objects):
        _draw(img, shape, colour, cy, cx, r, rng)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return img, _question(qtype, target_colour, target_shape), answer, q


def generate(n: int, seed: int) -> Batch:
    """``n`` examples, deterministic in ``seed`` (a private ``numpy.random.Generator``; no global state)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.Generator(np.random.PCG64(seed))
    images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    questions = np.full((n, QUESTION_LEN), PAD, dtype=np.int64)
    answers = np.zeros(n, dtype=np.int64)
    qtypes = np.zeros(n, dtype=np.int64)
    for i in range(n):
        img, words, answer, q = _example(rng)
        ids = [TOKEN[w] for w in words] + [SEP]
        images[i] = img
        questions[i, QUESTION_LEN - len(ids) :] = ids
        answers[i] = TOKEN[answer]
        qtypes[i] = q
    return Batch(images, questions, answers, qtypes)


def decode(tokens: np.ndarray) -> str:
    """Token ids to text (padding dropped)."""
    return " ".join(VOCAB[int(t)] for t in tokens if int(t) != PAD)


class Scored(NamedTuple):
    """What :func:`score_responses` returns, all ``[n]``.

    Attributes:
        correct: bool, well formed and the answer token is the answer.
        well_formed: bool, ``answer confidence <eos>`` with an answer of the question's type.
        answer_token: int64, the first token of a well-formed response, ``-1`` otherwise.
        confidence: float64, the stated confidence of a well-formed response, :data:`MISSING` otherwise.
    """

    correct: np.ndarray
    well_formed: np.ndarray
    answer_token: np.ndarray
    confidence: np.ndarray


def score_responses(responses: np.ndarray, lengths: np.ndarray, answers: np.ndarray, qtypes: np.ndarray) -> Scored:
    """Parse responses.

    Args:
        responses: ``[n, L]`` int token ids, ``L >= 3`` (anything after the response's length is ignored).
        lengths: ``[n]`` number of response tokens (including ``<eos>`` when one was produced).
        answers: ``[n]`` correct answer token ids.
        qtypes: ``[n]`` question type indices.

    Raises:
        ValueError: ``responses`` with fewer than 3 columns.
    """
    responses = np.asarray(responses)
    lengths = np.asarray(lengths)
    if responses.ndim != 2 or responses.shape[1] < 3:
        raise ValueError(f"responses must have shape [n, L >= 3], got {responses.shape}")
    first, second, third = responses[:, 0], responses[:, 1], responses[:, 2]
    value = CONFIDENCE_VALUES[second]
    well = (lengths == 3) & (third == EOS) & ~np.isnan(value) & CANDIDATE_MASK[np.asarray(qtypes), first]
    token = np.where(well, first, -1)
    correct = well & (first == np.asarray(answers))
    return Scored(correct, well, token, np.where(well, value, MISSING))


def render_response(tokens: np.ndarray, length: int) -> str:
    """One response as text in the paper's schema: an answer word as ``<answer>w</answer>``, a confidence
    token as ``<confidence>0.9</confidence>``, any other token as its word; ``<eos>`` ends it.

    ``red 0.9 <eos>`` -> ``<answer>red</answer><confidence>0.9</confidence>``.
    """
    parts = []
    for t in np.asarray(tokens)[: int(length)].tolist():
        if t == EOS:
            break
        word = VOCAB[t]
        if not np.isnan(CONFIDENCE_VALUES[t]):
            parts.append(f"<confidence>{word}</confidence>")
        elif CANDIDATE_MASK[:, t].any():
            parts.append(f"<answer>{word}</answer>")
        else:
            parts.append(f" {word} ")
    return "".join(parts)
