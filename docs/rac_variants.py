"""Regenerate ``docs/rac_variants.png``: ImageNet-C's fog, elastic transform and impulse noise beside the RAC
release's variants (``fog_rac``, ``elastic_transform_rac``, ``impulse_noise_rac``), clean + severities 1..5,
on one synthetic math-style figure (axes, a curve, a labelled triangle, a shaded disc).

Usage::

    python docs/rac_variants.py [-o docs/rac_variants.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from rac_losses.corruption.sheet import contact_sheet

NAMES = ("fog", "fog_rac", "elastic_transform", "elastic_transform_rac", "impulse_noise", "impulse_noise_rac")


def math_figure(size: int = 256) -> np.ndarray:
    """uint8 ``(size, size, 3)``: the kind of image the paper's benchmarks hold (diagrams with text)."""
    img = np.full((size, size, 3), 250, np.uint8)
    for v in range(0, size, size // 8):  # light grid
        cv2.line(img, (v, 0), (v, size), (225, 225, 235), 1)
        cv2.line(img, (0, v), (size, v), (225, 225, 235), 1)
    o = (size // 8, size * 7 // 8)
    cv2.arrowedLine(img, o, (size - 8, o[1]), (30, 30, 30), 2, tipLength=0.03)
    cv2.arrowedLine(img, o, (o[0], 8), (30, 30, 30), 2, tipLength=0.03)
    xs = np.linspace(0, 1, 200)
    pts = np.stack([o[0] + xs * (size * 0.8), o[1] - (0.5 + 0.4 * np.sin(6 * xs)) * size * 0.7], 1).astype(np.int32)
    cv2.polylines(img, [pts], False, (200, 40, 40), 2, cv2.LINE_AA)
    tri = np.array([[size * 0.45, size * 0.75], [size * 0.8, size * 0.75], [size * 0.8, size * 0.45]], np.int32)
    cv2.fillPoly(img, [tri], (120, 170, 230))
    cv2.polylines(img, [tri], True, (20, 60, 140), 2, cv2.LINE_AA)
    cv2.circle(img, (size * 3 // 10, size * 3 // 10), size // 10, (90, 180, 90), -1, cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, "a=3", (int(size * 0.58), int(size * 0.82)), font, size / 640, (20, 20, 20), 1, cv2.LINE_AA)
    cv2.putText(img, "b=4", (int(size * 0.82), int(size * 0.62)), font, size / 640, (20, 20, 20), 1, cv2.LINE_AA)
    cv2.putText(img, "y=sin(6x)", (int(size * 0.5), int(size * 0.12)), font, size / 600, (160, 30, 30), 1, cv2.LINE_AA)
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=str(Path(__file__).with_suffix(".png")))
    args = ap.parse_args()
    sheet = contact_sheet(Image.fromarray(math_figure()), NAMES, cell=144, seed=0)
    sheet.save(args.output, optimize=True)
    print(f"wrote {args.output} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
