"""Conversion between user images (PIL images of several modes, uint8/uint16 numpy arrays) and the
working representation of :mod:`._registry` (float32 ``(H, W, C)``, ``C`` in ``{1, 3}``, in ``[0, 1]``).

Each input is split into its *native* pixel array (what region compositing and the determinism digest
use), the colour part to corrupt, and an untouched alpha part. After corruption the colour is encoded
back into the native layout and the output object is rebuilt with the input's type, size and mode:

==============  =====================================================================================
input           handling
==============  =====================================================================================
``L``, ``RGB``  8-bit channels, corrupted directly
``LA``/``RGBA`` colour channels corrupted, alpha copied unchanged
``1``           processed as 0/1 grey, thresholded at 0.5 on the way back
``I;16*``       16-bit grey (``I;16``, ``I;16L``, ``I;16B``), full 16-bit precision kept
``I``           32-bit grey, processed on the 16-bit range 0..65535 (values outside are clipped where
                the corruption applies)
``P``           palette: corrupted in RGB, mapped back to the original palette extended with up to
                ``256 - len(palette)`` colours fitted to the result; pixels of transparent entries keep
                their index (their alpha is untouched)
``CMYK``        converted to RGB and back by PIL
``YCbCr``       converted to RGB and back by PIL
ndarray         ``uint8``/``uint16``, ``(H, W)``, ``(H, W, 1)`` grey, ``(H, W, 2)`` grey+alpha,
                ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA
==============  =====================================================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from ._ops import luma

__all__ = ["Working", "to_working", "SUPPORTED_MODES"]

SUPPORTED_MODES: tuple[str, ...] = ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I", "CMYK", "YCbCr")
_ARRAY_TAGS = {(2, 1): "L", (3, 1): "L", (3, 2): "LA", (3, 3): "RGB", (3, 4): "RGBA"}


@dataclasses.dataclass
class Working:
    """An image prepared for corruption.

    Attributes:
        make_color: returns the float32 colour ``(H, W, C)``, ``C`` in ``{1, 3}``, values in ``[0, 1]``
            (a fresh array; built only when asked for, see :attr:`color`).
        native: the input's native pixel array (``(H, W)`` or ``(H, W, K)``; indices for ``P``).
        max_value: 255 or 65535 (the source's precision).
        tag: layout tag for the determinism digest (PIL mode, or the mode an array implies).
        digest_extra: extra bytes for the digest (the palette of ``P`` images).
        encode: float32 colour ``(H, W, C)`` -> native array (clips to ``[0, 1]``, reattaches alpha).
        build: native array -> output object of the input's type and mode.
        u8: for 8-bit grey/RGB sources without alpha, the colour as ``uint8`` ``(H, W, C)`` (a view of
            ``native``); ``None`` otherwise.
        encode_u8: ``uint8`` colour ``(H, W, C)`` -> native array (with :attr:`u8`).
    """

    make_color: Callable[[], np.ndarray]
    native: np.ndarray
    max_value: int
    tag: str
    digest_extra: bytes
    encode: Callable[[np.ndarray], np.ndarray]
    build: Callable[[np.ndarray], Any]
    u8: np.ndarray | None = None
    encode_u8: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def color(self) -> np.ndarray:
        """The float32 working colour (a fresh array per access)."""
        return self.make_color()

    @property
    def height(self) -> int:
        return int(self.native.shape[0])

    @property
    def width(self) -> int:
        return int(self.native.shape[1])


def _to_float(a: np.ndarray, max_value: int) -> np.ndarray:
    return np.multiply(a, np.float32(1.0 / max_value), dtype=np.float32)


def _const(color: np.ndarray) -> Callable[[], np.ndarray]:
    """``make_color`` for a colour array built eagerly (handed out once: the caller may consume it)."""
    return lambda: color


def _quantise(y: np.ndarray, max_value: int, dtype: np.dtype) -> np.ndarray:
    """float32 in [0, 1] (clipped here, in place: ``y`` is consumed) -> integer ``dtype``, round-half-up."""
    np.clip(y, 0.0, 1.0, out=y)
    y *= np.float32(max_value)
    y += np.float32(0.5)
    return y.astype(dtype)


def _channel_codec(native: np.ndarray, max_value: int, squeeze: bool) -> dict[str, Any]:
    """Split ``native`` (``(H, W)`` or ``(H, W, K)``) into colour and alpha; return the
    :class:`Working` fields ``make_color``, ``encode``, ``u8`` and ``encode_u8``."""
    arr = native if native.ndim == 3 else native[:, :, None]
    k = arr.shape[2]
    nc = 1 if k in (1, 2) else 3
    src = arr[:, :, :nc]
    alpha = arr[:, :, nc:] if k in (2, 4) else None
    dtype = native.dtype
    fast = dtype == np.uint8 and max_value == 255 and alpha is None

    def make_color() -> np.ndarray:
        return _to_float(src, max_value)

    def encode_u8(y8: np.ndarray) -> np.ndarray:
        return y8[:, :, 0] if squeeze else y8

    def encode(y: np.ndarray) -> np.ndarray:
        out = _quantise(y, max_value, dtype)
        if alpha is not None:
            out = np.concatenate([out, alpha], axis=2)
        return out[:, :, 0] if squeeze else out

    return {"make_color": make_color, "encode": encode, "u8": src if fast else None,
            "encode_u8": encode_u8 if fast else None}


def _from_array(image: np.ndarray) -> Working:
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"image array must have dtype uint8 or uint16, got {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(f"image array must have shape (H, W) or (H, W, C) with C in 1..4, got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image must be at least 1x1, got shape {image.shape}")
    max_value = 255 if image.dtype == np.uint8 else 65535
    native = np.ascontiguousarray(image)
    tag = _ARRAY_TAGS[(native.ndim, native.shape[2] if native.ndim == 3 else 1)]
    if max_value == 65535:
        tag = {"L": "I;16"}.get(tag, tag + ";16")
    codec = _channel_codec(native, max_value, squeeze=native.ndim == 2)
    return Working(native=native, max_value=max_value, tag=tag, digest_extra=b"", build=lambda a: a, **codec)


def _frombytes(mode: str, size: tuple[int, int], native: np.ndarray, info: dict) -> Image.Image:
    out = Image.frombytes(mode, size, np.ascontiguousarray(native).tobytes())
    out.info.update(info)
    return out


def _palette_working(img: Image.Image) -> Working:
    native = np.asarray(img, dtype=np.uint8).copy()
    raw_pal = img.getpalette() or list(range(256)) * 3  # no palette: PIL treats P as grey
    n = max(1, len(raw_pal) // 3)
    pal = np.asarray(raw_pal[: 3 * n], dtype=np.uint8).reshape(n, 3)
    entry_alpha = np.full(n, 255, dtype=np.uint8)
    if img.palette is not None and img.palette.mode == "RGBA":
        entry_alpha = np.asarray(img.getpalette("RGBA"), dtype=np.uint8).reshape(-1, 4)[:n, 3].copy()
    tr = img.info.get("transparency")
    if isinstance(tr, int) and 0 <= tr < n:
        entry_alpha[tr] = 0
    elif isinstance(tr, (bytes, bytearray)):
        m = min(len(tr), n)
        entry_alpha[:m] = np.frombuffer(bytes(tr[:m]), dtype=np.uint8)
    opaque = entry_alpha == 255
    rgb = np.asarray(img.convert("RGB"))
    color = _to_float(rgb, 255)
    state: dict[str, Any] = {"palette": pal}
    frozen = ~opaque[np.minimum(native, n - 1)] | (native >= n)

    def encode(y: np.ndarray) -> np.ndarray:
        if not opaque.any():
            return native.copy()
        y8 = _quantise(y, 255, np.uint8)
        first = int(np.flatnonzero(opaque)[0])
        extra = np.zeros((0, 3), dtype=np.uint8)
        if n < 256:
            q = Image.fromarray(y8).quantize(colors=256 - n, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
            extra = np.asarray(q.getpalette()[: 3 * (256 - n)], dtype=np.uint8).reshape(-1, 3)
        full_pal = np.concatenate([pal, extra], axis=0)
        lookup = full_pal.copy()
        lookup[:n][~opaque] = pal[first]  # never map onto a transparent entry
        remap = np.arange(256)
        remap[:n][~opaque] = first
        remap[len(full_pal):] = first
        padded = np.concatenate([lookup, np.repeat(pal[first][None], 256 - len(lookup), axis=0)], axis=0)
        pimg = Image.new("P", (1, 1))
        pimg.putpalette(padded.reshape(-1).tolist())
        idx = np.asarray(Image.fromarray(y8).quantize(palette=pimg, dither=Image.Dither.NONE))
        idx = remap[idx].astype(np.uint8)
        idx[frozen] = native[frozen]
        state["palette"] = full_pal
        return idx

    def build(a: np.ndarray) -> Image.Image:
        out = _frombytes("P", img.size, a, img.info)
        out.putpalette(state["palette"].reshape(-1).tolist())
        return out

    return Working(_const(color), native, 255, "P", pal.tobytes() + entry_alpha.tobytes(), encode, build)


def _from_pil(img: Image.Image) -> Working:
    mode = img.mode
    if mode not in SUPPORTED_MODES:
        raise TypeError(f"unsupported PIL image mode {mode!r}; supported modes: {', '.join(SUPPORTED_MODES)}")
    if img.width == 0 or img.height == 0:
        raise ValueError(f"image must be at least 1x1, got size {img.size}")
    info = dict(img.info)
    if mode == "P":
        return _palette_working(img)
    if mode in ("L", "LA", "RGB", "RGBA"):
        native = np.asarray(img).copy()
        codec = _channel_codec(native, 255, squeeze=native.ndim == 2)
        return Working(native=native, max_value=255, tag=mode, digest_extra=b"",
                       build=lambda a: _frombytes(mode, img.size, a, info), **codec)
    if mode.startswith("I;16"):
        native = np.asarray(img).copy()
        codec = _channel_codec(native, 65535, squeeze=True)
        return Working(native=native, max_value=65535, tag=mode, digest_extra=b"",
                       build=lambda a: _frombytes(mode, img.size, a, info), **codec)
    if mode == "1":
        native = np.asarray(img).copy()  # bool (H, W)
        color = native.astype(np.float32)[:, :, None]

        def encode1(y: np.ndarray) -> np.ndarray:
            return y[:, :, 0] >= 0.5

        def build1(a: np.ndarray) -> Image.Image:
            out = Image.fromarray(np.ascontiguousarray(a, dtype=np.uint8) * 255).convert("1", dither=Image.Dither.NONE)
            out.info.update(info)
            return out

        return Working(_const(color), native, 255, "1", b"", encode1, build1)
    if mode == "I":
        native = np.asarray(img).astype(np.int32)
        color = _to_float(np.clip(native, 0, 65535)[:, :, None], 65535)

        def encode_i(y: np.ndarray) -> np.ndarray:
            return _quantise(y[:, :, 0], 65535, np.int32)

        def build_i(a: np.ndarray) -> Image.Image:
            return _frombytes("I", img.size, a.astype(np.int32), info)

        return Working(_const(color), native, 65535, "I", b"", encode_i, build_i)
    # CMYK, YCbCr: through RGB
    native = np.asarray(img).copy()
    color = _to_float(np.asarray(img.convert("RGB")), 255)

    def encode_conv(y: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(_quantise(y, 255, np.uint8)).convert(mode)).copy()

    return Working(_const(color), native, 255, mode, b"", encode_conv, lambda a: _frombytes(mode, img.size, a, info))


def to_working(image: object, *, argname: str = "image") -> Working:
    """Prepare ``image`` (a PIL image or a uint8/uint16 ndarray) for corruption.

    Raises:
        TypeError: for other types, dtypes or unsupported PIL modes (the message lists the supported ones).
        ValueError: for bad array shapes or empty images.
    """
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_array(image)
    raise TypeError(f"{argname} must be a PIL.Image.Image or a uint8/uint16 numpy array, got {type(image).__name__}")


def to_grey_if(y: np.ndarray, channels: int) -> np.ndarray:
    """Return ``y`` (3-channel) converted to ``channels`` (1: ITU-R 601 luma, 3: unchanged)."""
    return luma(y) if channels == 1 else y
