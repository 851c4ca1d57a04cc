"""Contact sheets: rows = corruptions, columns = clean + severities 1..5, labelled."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from ._api import corrupt
from ._registry import SEVERITIES, get

__all__ = ["contact_sheet"]

_BG = (255, 255, 255)
_FG = (20, 20, 20)
_MUTED = (110, 110, 110)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def _fit(image: Image.Image, cell: int) -> Image.Image:
    w, h = image.size
    scale = cell / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.LANCZOS if image.mode in ("L", "RGB", "RGBA", "LA") else Image.Resampling.NEAREST
    return image.resize(size, resample)


def _display(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I"):  # 16/32-bit grey: scale to 8 bits for display
        return image.point(lambda v: v / 257).convert("L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (200, 200, 200, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return image.convert("RGB")


def contact_sheet(image: Image.Image, names: Sequence[str], *, cell: int = 192, seed: int = 0) -> Image.Image:
    """Render ``names`` x (clean + severities 1..5) as one RGB image.

    The image is first resized so that its longer side is ``cell`` pixels (corruptions are defined
    relative to ImageNet-sized inputs, so the sheet shows them at the size a model would see), then
    corrupted with ``seed``.

    Raises:
        ValueError: on an unknown name (listing the valid ones) or ``cell < 32``.
    """
    if cell < 32:
        raise ValueError(f"cell must be >= 32 pixels, got {cell}")
    for n in names:
        get(n)
    small = _fit(image, cell)
    label_font, head_font, fam_font = _font(max(14, cell // 9)), _font(max(14, cell // 9)), _font(max(11, cell // 14))
    pad = max(6, cell // 24)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(probe.textlength(n, font=label_font) for n in [*names, "corruption"]) + 3 * pad
    head_h = int(max(14, cell // 9) * 1.8) + pad
    cols = 1 + len(SEVERITIES)
    tw, th = small.size  # tile box: the fitted image's own size (no empty bands for non-square images)
    width = int(label_w + cols * (tw + pad) + pad)
    height = int(head_h + len(names) * (th + pad) + pad)
    sheet = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(["clean", *[f"severity {s}" for s in SEVERITIES]]):
        x = label_w + j * (tw + pad) + tw / 2
        draw.text((x, head_h / 2), title, fill=_FG, font=head_font, anchor="mm")
    for i, name in enumerate(names):
        y = head_h + i * (th + pad)
        draw.text((pad, y + th / 2), name, fill=_FG, font=label_font, anchor="lb")
        draw.text((pad, y + th / 2 + pad / 2), get(name).family, fill=_MUTED, font=fam_font, anchor="lt")
        tiles = [small, *[corrupt(small, name, s, seed=seed) for s in SEVERITIES]]
        for j, tile in enumerate(tiles):
            t = _display(tile)
            sheet.paste(t, (int(label_w + j * (tw + pad)), int(y)))
    return sheet
