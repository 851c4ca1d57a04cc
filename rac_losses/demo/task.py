"""A synthetic visual question task, generated on the fly and deterministic per seed.

Each example is a 32x32 RGB image (``uint8``, ``H x W x 3``) holding 1 to 4 coloured shapes (square,
circle, triangle; red, green, blue, yellow) on a textured background, a question and its one-word answer.
Four question types, equally likely, each with its answers equally likely:

- ``count``: "how many shapes ?" -> ``1`` .. ``4``
- ``colour``: "what colour is the circle ?" (exactly one circle in the image) -> a colour
- ``shape``: "what shape is the red one ?" (exactly one red shape) -> a shape
- ``exist``: "is there a red circle ?" -> ``yes`` / ``no`` (a "no" image may hold red shapes and circles,
  just not a red circle: the question needs colour-shape binding)

A response is tokens ending in ``<eos>``; it is *well formed* when it is exactly one answer token of the
question's type followed by ``<eos>``, and *correct* when that token is the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    "Batch",
    "answer_candidates",
    "decode",
    "generate",
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
VOCAB: tuple[str, ...] = _SPECIAL + _WORDS + SHAPES + COLOURS + COUNTS + ("yes", "no")
TOKEN = {w: i for i, w in enumerate(VOCAB)}
PAD, EOS, SEP = TOKEN["<pad>"], TOKEN["<eos>"], TOKEN["<sep>"]
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


def score_responses(responses: np.ndarray, lengths: np.ndarray, answers: np.ndarray, qtypes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse responses.

    Args:
        responses: ``[n, L]`` int token ids (anything after the response's length is ignored).
        lengths: ``[n]`` number of response tokens (including ``<eos>`` when one was produced).
        answers: ``[n]`` correct answer token ids.
        qtypes: ``[n]`` question type indices.

    Returns:
        ``(correct, well_formed, answer_token)``: ``[n]`` bool, ``[n]`` bool, ``[n]`` int64 (the answer
        token of a well-formed response, ``-1`` otherwise).
    """
    responses = np.asarray(responses)
    lengths = np.asarray(lengths)
    first = responses[:, 0]
    second = responses[:, 1] if responses.shape[1] > 1 else np.full_like(first, -1)
    well = (lengths == 2) & (second == EOS) & CANDIDATE_MASK[np.asarray(qtypes), first]
    token = np.where(well, first, -1)
    correct = well & (first == np.asarray(answers))
    return correct, well, token
