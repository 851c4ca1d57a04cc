"""The RAC paper's data: paired training sets, the mixed main set and corrupted test sets
(the engine behind ``rac-corrupt pairs`` and ``rac-corrupt testsets``).

``pairs`` writes, for each severity ``s``, ``train_pair_T{s/5}.parquet``: every input row (the clean view,
its values unchanged) followed by a corrupted copy with the same ``pair_id``; then
``train_pair_main.parquet``, whose corrupted halves are taken from the per-severity files by a mix
(default :data:`~.presets.PAPER_MIX`: 50% level 0.2, 40% level 0.4, 10% level 0.6, counts exact to one
row). ``testsets`` writes ``{prefix}_T{s/5}.parquet``: every row corrupted at severity ``s``.

Columns added (the paper's names, as its release writes them and the verl / OpenRLHF adapters read them):
``pair_id`` (int64, the input row; pairs only), ``view`` (``"clean"`` / ``"noisy"``, the release's values;
pairs only), ``is_noisy`` (bool), ``corruption_level`` (``severity / 5``, 0 when clean), ``severity``
(0 when clean), ``noise_type`` (the release's name column, in its vocabulary: ``fog`` for ``fog_rac``;
``"clean"``, or ``"none"`` for a row without images), ``corruption`` (the name, null when clean), ``corruption_seed`` (null when clean)
and ``source_row`` (0-based input row).

Images are found where verl-style datasets keep them (:class:`ImageLayout`): a column of encoded bytes,
of ``{"bytes": ...}`` structs or of lists of them (corrupted images are written back as bytes), a column of
image paths / ``file://`` URIs, or chat-message columns (the release's ``message_qwenvl``: content items
``{"type": "image", "image": uri}``), whose corrupted images go to an image folder beside the output and
whose URIs are rewritten to them (``file://`` + absolute path).

Choices: each row's corruption name and seed come from :class:`~.policy.CorruptionPolicy` keyed by a
digest of the row's image bytes, so the output is a pure function of (images, names, severity, seed):
the same in any row order, with any number of workers, on any machine; a row keeps its corruption name
across severities. The main set's mix orders rows by a keyed hash of their content.

Files are written to a temporary file in the output folder and renamed when complete; a manifest
(:data:`MANIFEST`) records each finished file with a digest of the input and the options, so a rerun
(after a kill, say) reuses the finished files and redoes the rest. Inputs are only read.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ._api import corrupt, check_severity
from ._registry import corruption_level, get, severity_for_level
from ._seeding import check_seed, derive_seed
from .dataset import _PNG_MODES, DatasetError, _init_worker, decode_image, resolve_workers
from .policy import CorruptionPolicy
from .presets import PAPER_MIX, resolve_names

__all__ = [
    "ImageLayout", "detect_layout", "column_layout", "row_images", "row_image_count", "build_pairs",
    "build_testsets", "parse_mix", "mix_counts", "level_tag", "image_key",
    "PAIR_FIELDS", "TEST_FIELDS", "MANIFEST", "MESSAGE_COLUMNS",
]

log = logging.getLogger(__name__)

#: Columns added to paired files, with their types.
PAIR_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("pair_id", pa.int64()), ("view", pa.string()), ("is_noisy", pa.bool_()), ("corruption_level", pa.float64()),
    ("severity", pa.int64()), ("noise_type", pa.string()), ("corruption", pa.string()),
    ("corruption_seed", pa.int64()), ("source_row", pa.int64()),
)
#: Columns added to corrupted test sets.
TEST_FIELDS: tuple[tuple[str, pa.DataType], ...] = tuple(f for f in PAIR_FIELDS if f[0] not in ("pair_id", "view"))
#: Chat-message columns searched for image URIs (the release's).
MESSAGE_COLUMNS: tuple[str, ...] = ("message_qwenvl", "message_internvl")
#: The manifest file in the output folder.
MANIFEST = "rac_corrupt_manifest.json"
_LOCK = ".rac_corrupt.lock"
_FORMAT = 1  # bump when the output of the same options changes


def level_tag(severity: int) -> str:
    """``1 -> "T0.2"`` ... ``5 -> "T1.0"`` (the paper's file-name labels)."""
    return f"T{corruption_level(severity):.1f}"


# --- where the images are ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageLayout:
    """Where a dataset keeps its images.

    Attributes:
        kind: ``"bytes"`` (``columns[0]`` holds encoded bytes, ``{"bytes": ...}`` structs or lists of them),
            ``"paths"`` (``columns[0]`` holds a path / ``file://`` URI or a list of them) or ``"messages"``
            (``columns`` are chat-message columns, JSON text or lists of messages; an ``image_uris`` column
            of paths may be among them).
        columns: the columns read and rewritten.
        image_root: folder that relative image paths are resolved against.
    """

    kind: str
    columns: tuple[str, ...]
    image_root: str = "."


def _is_bytes_type(t: pa.DataType) -> bool:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        t = t.value_type
    if pa.types.is_struct(t):
        return t.get_field_index("bytes") >= 0
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _is_text_type(t: pa.DataType) -> bool:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_message_type(t: pa.DataType) -> bool:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        return False
    return pa.types.is_struct(t.value_type) and t.value_type.get_field_index("content") >= 0


def _looks_like_messages(pf: pq.ParquetFile, column: str) -> bool:
    for batch in pf.iter_batches(batch_size=16, columns=[column]):
        for v in batch.column(0).to_pylist():
            if isinstance(v, str) and v.strip():
                return v.lstrip().startswith("[")
            if isinstance(v, list) and v:
                return not isinstance(v[0], str)
    return False


def detect_layout(src: str | os.PathLike, image_column: str | None = None, image_root: str | os.PathLike | None = None) -> ImageLayout:
    """Find the images of the parquet file ``src``.

    Args:
        image_column: a column name, or ``None`` / ``"auto"``: ``images``, else ``image``, else the chat-message
            columns :data:`MESSAGE_COLUMNS` present (with ``image_uris`` if present), else ``image_uris``.
        image_root: folder for relative image paths (default: the folder of ``src``).

    Raises:
        DatasetError: unreadable file, unknown column, no image column, a column that holds no images.
    """
    src = os.fspath(src)
    pf = _open(src)
    schema = pf.schema_arrow
    root = os.path.abspath(os.fspath(image_root) if image_root is not None else os.path.dirname(os.path.abspath(src)))
    names = schema.names
    if image_column in (None, "auto"):
        found = [c for c in ("images", "image") if c in names]
        if found:
            image_column = found[0]
        else:
            msgs = [c for c in MESSAGE_COLUMNS if c in names]
            extra = ["image_uris"] if "image_uris" in names else []
            if msgs:
                return ImageLayout("messages", tuple(msgs + extra), root)
            if extra:
                return ImageLayout("paths", ("image_uris",), root)
            raise DatasetError(
                f"{src}: no image column: expected 'images' or 'image' (bytes, {{'bytes': ...}} structs or paths) or "
                f"chat messages ({', '.join(repr(c) for c in MESSAGE_COLUMNS)}); columns: {', '.join(names)}; "
                "name one with --image-column"
            )
    if image_column not in names:
        raise DatasetError(f"{src}: column {image_column!r} not found; columns: {', '.join(names)}")
    t = schema.field(image_column).type
    json_messages = (pa.types.is_string(t) or pa.types.is_large_string(t)) and _looks_like_messages(pf, image_column)
    return column_layout(schema, image_column, root, json_messages=json_messages, where=src)


def column_layout(schema: pa.Schema, column: str, image_root: str, *, json_messages: bool = False,
                  where: str = "dataset") -> ImageLayout:
    """The layout of a dataset whose images are in ``column`` (by its arrow type).

    Args:
        schema: the dataset's arrow schema (a parquet file's, or a ``datasets.Dataset``'s).
        column: a column of image bytes (or ``{"bytes": ...}`` structs, or lists of them), image paths, or chat
            messages (lists of ``{"content": ...}`` structs; JSON text when ``json_messages``).
        image_root: folder that relative image paths are resolved against.
        where: the dataset's name in error messages.

    Raises:
        DatasetError: ``column`` is missing, or of a type that holds no images.
    """
    if column not in schema.names:
        raise DatasetError(f"{where}: column {column!r} not found; columns: {', '.join(schema.names)}")
    t = schema.field(column).type
    if _is_bytes_type(t):
        return ImageLayout("bytes", (column,), image_root)
    if _is_message_type(t) or json_messages:
        return ImageLayout("messages", (column,), image_root)
    if _is_text_type(t):
        return ImageLayout("paths", (column,), image_root)
    raise DatasetError(
        f"{where}: column {column!r} of type {t} holds no images (expected bytes, {{'bytes': ...}} structs, "
        "paths or chat messages, or lists of them)"
    )


def _open(src: str) -> pq.ParquetFile:
    if not os.path.isfile(src):
        raise DatasetError(f"input file not found: {src}")
    try:
        return pq.ParquetFile(src)
    except Exception as e:  # noqa: BLE001 - any reader failure is reported with the file
        raise DatasetError(f"cannot read parquet file {src}: {e}") from None


def _where(src: str, row: int, column: str) -> str:
    return f"{src}: row {row}, column {column!r}"


def _message_items(value: Any, where: str) -> tuple[Any, list[dict]]:
    """``(parsed messages, the content items of type image)`` of one message cell."""
    if value is None:
        return None, []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: not JSON chat messages ({e})") from None
    if not isinstance(value, list):
        raise DatasetError(f"{where}: expected a list of chat messages, got {type(value).__name__}")
    items = []
    for msg in value:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            items += [it for it in content if isinstance(it, dict) and it.get("type") == "image" and isinstance(it.get("image"), str)]
    return value, items


def _uris(layout: ImageLayout, cells: dict[str, Any], src: str, row: int) -> dict[str, str]:
    """Distinct image URIs of a row, in order of first appearance -> the column each first appears in."""
    out: dict[str, str] = {}
    for col in layout.columns:
        v = cells[col]
        if layout.kind == "paths" or col == "image_uris":
            vals = [] if v is None else [v] if isinstance(v, str) else list(v)
            for u in vals:
                if not isinstance(u, str):
                    raise DatasetError(f"{_where(src, row, col)}: expected image paths, got {type(u).__name__}")
                out.setdefault(u, col)
        else:
            for it in _message_items(v, _where(src, row, col))[1]:
                out.setdefault(it["image"], col)
    return out


def _read_uri(uri: str, root: str, where: str) -> bytes:
    if uri.startswith(("http://", "https://")):
        raise DatasetError(f"{where}: remote image {uri!r} (download the images first; nothing is fetched)")
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    path = path if os.path.isabs(path) else os.path.join(root, path)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DatasetError(f"{where}: cannot read image {uri!r} -> {path} ({e.strerror or e})") from None


def _bytes_items(cell: Any, where: str, root: str) -> list[bytes]:
    """The images of a bytes-layout cell; a struct with null ``bytes`` and a ``path`` is read from the path."""
    items = [] if cell is None else cell if isinstance(cell, list) else [cell]
    out = []
    for k, x in enumerate(items):
        data = x.get("bytes") if isinstance(x, dict) else x
        if isinstance(x, dict) and "bytes" not in x:
            raise DatasetError(f"{where}, image {k}: struct has no 'bytes' field (fields: {sorted(x)})")
        if data is None and isinstance(x, dict) and isinstance(x.get("path"), str):
            data = _read_uri(x["path"], root, f"{where}, image {k}")
        if not isinstance(data, (bytes, bytearray)):
            raise DatasetError(f"{where}, image {k}: expected image bytes, got {type(data).__name__}")
        out.append(bytes(data))
    return out


def row_images(layout: ImageLayout, cells: dict[str, Any], src: str, row: int) -> list[bytes]:
    """The encoded bytes of every image of a row (distinct URIs once each), in order.

    Raises:
        DatasetError: a cell of the wrong kind, an unreadable image file (file, row and column named).
    """
    col = layout.columns[0]
    if layout.kind == "bytes":
        return _bytes_items(cells[col], _where(src, row, col), layout.image_root)
    return [_read_uri(u, layout.image_root, _where(src, row, c)) for u, c in _uris(layout, cells, src, row).items()]


def row_image_count(layout: ImageLayout, cells: dict[str, Any], src: str, row: int) -> int:
    """How many images :func:`row_images` would return for the row, without reading any image file.

    Raises:
        DatasetError: a cell of the wrong kind (file, row and column named).
    """
    if layout.kind == "bytes":
        cell = cells[layout.columns[0]]
        return 0 if cell is None else len(cell) if isinstance(cell, list) else 1
    return len(_uris(layout, cells, src, row))


def image_key(images: Sequence[bytes]) -> str:
    """The choice key of a row: a hex digest of its images' bytes (``""`` for a row without images)."""
    if not images:
        return ""
    h = hashlib.blake2b(digest_size=16)
    for data in images:
        h.update(hashlib.blake2b(data, digest_size=16).digest())
    return h.hexdigest()


# --- one row ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _RowJob:
    src: str
    layout: ImageLayout
    policy: CorruptionPolicy  # names, one severity, seed
    image_dir: str | None  # for paths / messages layouts


def _encode(img: Image.Image, source_format: str | None) -> tuple[bytes, str]:
    """Losslessly encoded bytes and their file extension (PNG where PNG holds the mode)."""
    buf = io.BytesIO()
    fmt = "PNG" if img.mode in _PNG_MODES else (source_format or "TIFF")
    img.save(buf, format=fmt, **({"compress_level": 1} if fmt == "PNG" else {}))  # 1: ~1.4x faster than 3, ~10% larger
    return buf.getvalue(), fmt.lower()


def _atomic_write(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".img.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _corrupt_row(task: tuple[int, dict[str, Any], _RowJob]) -> tuple[int, dict[str, Any], str | None, int | None]:
    """``(row, new image cells, corruption name or None, corruption seed or None)``."""
    row, cells, job = task
    layout, src = job.layout, job.src
    images = row_images(layout, cells, src, row)
    if not images:
        return row, cells, None, None
    name, severity, seed = job.policy.choose(image_key(images))
    col = layout.columns[0]

    def corrupted(data: bytes, where: str) -> tuple[bytes, str]:
        img = decode_image(data, where)
        return _encode(corrupt(img, name, severity, seed=seed), img.format)

    if layout.kind == "bytes":
        where = _where(src, row, col)
        cell = cells[col]
        items = cell if isinstance(cell, list) else [cell]
        new = []
        for k, (x, data) in enumerate(zip(items, images)):
            data = corrupted(data, f"{where}, image {k}")[0]
            new.append({**x, "bytes": data, **({"path": None} if "path" in x else {})} if isinstance(x, dict) else data)
        return row, {col: new if isinstance(cell, list) else new[0]}, name, seed
    uris = _uris(layout, cells, src, row)
    mapping = {}
    for (uri, c), data in zip(uris.items(), images):
        out, ext = corrupted(data, f"{_where(src, row, c)}, image {uri!r}")
        path = os.path.join(job.image_dir, f"{hashlib.blake2b(out, digest_size=12).hexdigest()}.{ext}")
        if not os.path.exists(path):
            _atomic_write(path, out)
        mapping[uri] = "file://" + path
    new_cells = {}
    for c in layout.columns:
        v = cells[c]
        if layout.kind == "paths" or c == "image_uris":
            new_cells[c] = None if v is None else mapping[v] if isinstance(v, str) else [mapping[u] for u in v]
            continue
        parsed, items = _message_items(v, _where(src, row, c))
        for it in items:
            it["image"] = mapping[it["image"]]
        new_cells[c] = json.dumps(parsed, ensure_ascii=False) if isinstance(v, str) else parsed
    return row, new_cells, name, seed


# --- options -------------------------------------------------------------------------------------------


def parse_mix(text: str | Sequence[tuple[float, float]]) -> tuple[tuple[int, float], ...]:
    """``"0.2:0.5,0.4:0.4,0.6:0.1"`` (level:share, ...) or ``((level, share), ...)`` -> ``((severity, share), ...)``.

    Raises:
        ValueError: malformed text, a level not in 0.2..1.0, a repeated level, a share <= 0, shares not
            summing to 1 (within 1e-6).
    """
    if isinstance(text, str):
        try:
            pairs = [tuple(float(v) for v in part.split(":")) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"mix must look like '0.2:0.5,0.4:0.4,0.6:0.1' (level:share, ...), got {text!r}") from None
        if not pairs or any(len(p) != 2 for p in pairs):
            raise ValueError(f"mix must look like '0.2:0.5,0.4:0.4,0.6:0.1' (level:share, ...), got {text!r}")
    else:
        pairs = [tuple(p) for p in text]
    out = []
    for level, share in pairs:
        sev = severity_for_level(level)
        if sev == 0:
            raise ValueError(f"mix levels must be 0.2, 0.4, 0.6, 0.8 or 1.0, got {level!r}")
        if not share > 0:
            raise ValueError(f"mix shares must be > 0, got {share!r} for level {level}")
        out.append((sev, float(share)))
    sevs = [s for s, _ in out]
    if len(set(sevs)) != len(sevs):
        raise ValueError(f"mix repeats a level: {text!r}")
    total = sum(w for _, w in out)
    if abs(total - 1) > 1e-6:
        raise ValueError(f"mix shares must sum to 1, got {total:.6g} ({text!r})")
    return tuple(out)


def mix_counts(total: int, shares: Sequence[float]) -> list[int]:
    """Rows per share: ``floor(total * share)``, the rest to the largest remainders (earlier first on
    ties), so each count is within one row of ``total * share`` and they sum to ``total``."""
    raw = [total * w for w in shares]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))[: total - sum(counts)]:
        counts[i] += 1
    return counts


# --- files, manifest, output folder --------------------------------------------------------------------


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


class _Outputs:
    """The output folder: its manifest, which files are finished, atomic manifest updates."""

    def __init__(self, out_dir: str, planned: dict[str, str | None], overwrite: bool) -> None:
        self.dir = out_dir
        self.path = os.path.join(out_dir, MANIFEST)
        self.overwrite = overwrite
        os.makedirs(out_dir, exist_ok=True)
        self._lock = _lock(out_dir)
        try:
            with open(self.path) as f:
                self.manifest = json.load(f)
            if not isinstance(self.manifest.get("outputs"), dict):
                raise ValueError("no 'outputs'")
        except FileNotFoundError:
            self.manifest = {"format": _FORMAT, "outputs": {}}
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.path}: unreadable manifest ({e}); remove it or use an empty folder") from None
        owned = {MANIFEST, _LOCK}
        for name, entry in self.manifest["outputs"].items():
            owned.add(name)
            owned.update(entry.get("dirs", []))
        if overwrite:
            owned.update(planned)
            owned.update(d for d in planned.values() if d)
        stray = sorted(n for n in os.listdir(out_dir) if n not in owned and not _is_temp(n))
        if stray:
            more = f" and {len(stray) - 5} more" if len(stray) > 5 else ""
            raise DatasetError(
                f"output folder {out_dir} holds files this command did not write: {', '.join(stray[:5])}{more} "
                "(use an empty folder; --overwrite replaces files named like its outputs)"
            )
        for n in os.listdir(out_dir):  # temp files of a killed run
            if _is_temp(n) and os.path.isfile(os.path.join(out_dir, n)):
                os.unlink(os.path.join(out_dir, n))

    def close(self) -> None:
        """Release the folder's lock."""
        self._lock.close()

    def finished(self, name: str, key: str) -> bool:
        entry = self.manifest["outputs"].get(name)
        path = os.path.join(self.dir, name)
        if self.overwrite or not entry or entry.get("key") != key or entry.get("status") != "done" or not os.path.isfile(path):
            return False
        return os.path.getsize(path) == entry.get("size") and _sha256(path) == entry.get("sha256")

    def record(self, name: str, key: str, image_dir: str | None, done: bool) -> None:
        entry: dict[str, Any] = {"key": key, "status": "done" if done else "writing", "dirs": [image_dir] if image_dir else []}
        if done:
            path = os.path.join(self.dir, name)
            entry.update(size=os.path.getsize(path), sha256=_sha256(path))
        self.manifest["outputs"][name] = entry
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{MANIFEST}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(self.manifest, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


def _lock(out_dir: str) -> Any:
    """An open, exclusively locked ``.rac_corrupt.lock`` in ``out_dir`` (one run per folder at a time:
    a second one would take the first one's temp files for a killed run's and remove them)."""
    f = open(os.path.join(out_dir, _LOCK), "a+")
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return f
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise DatasetError(f"another rac-corrupt run is writing to {out_dir} (wait for it, or use another folder)") from None
    return f


def _options_key(**options: Any) -> str:
    return hashlib.sha256(json.dumps({"format": _FORMAT, **options}, sort_keys=True, default=str).encode()).hexdigest()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the main thread (so temp files are cleaned up)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class _Runner:
    """Runs rows through a lazily started process pool (or in this process).

    A ``ProcessPoolExecutor``, not a ``multiprocessing.Pool``: a worker that dies (killed, out of memory,
    or a calling script without the ``if __name__ == "__main__":`` guard that spawned workers need) fails
    the run instead of being replaced and leaving it waiting forever."""

    def __init__(self, workers: int | None) -> None:
        self.workers = resolve_workers(workers)
        self.pool: ProcessPoolExecutor | None = None

    def map(self, fn: Callable, tasks: list) -> Iterator:
        if self.workers <= 1:
            return map(fn, tasks)
        if self.pool is None:
            # spawn, not fork: forking a process that has started threads (OpenCV, tqdm) can deadlock
            self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)
        return _broken_pool_as_error(self.pool.map(fn, tasks, chunksize=max(1, min(8, len(tasks) // (4 * self.workers)))))

    def close(self, ok: bool) -> None:
        if self.pool is not None:
            if not ok:  # stop the workers now rather than after their queued rows
                for p in list(getattr(self.pool, "_processes", {}).values()):
                    p.terminate()
            self.pool.shutdown(wait=True, cancel_futures=not ok)
            self.pool = None


def _broken_pool_as_error(results: Iterator) -> Iterator:
    try:
        yield from results
    except BrokenProcessPool:
        raise DatasetError(
            "a worker process died (killed, out of memory, or the calling script lacks the "
            "'if __name__ == \"__main__\":' guard that spawned workers need); rerun with workers=0 to see more"
        ) from None


def _write_atomic(dst: str, schema: pa.Schema, batches: Iterator[pa.Table]) -> int:
    """Write tables to ``dst`` through a temp file renamed when complete; returns the row count."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), prefix=f".{os.path.basename(dst)}.", suffix=".tmp")
    os.close(fd)
    n = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for t in batches:
                writer.write_table(t)
                n += t.num_rows
        os.replace(tmp, dst)
        tmp = None
        return n
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _meta(fields: Sequence[tuple[str, pa.DataType]], values: dict[str, list]) -> list[pa.Array]:
    return [pa.array(values[n], type=t) for n, t in fields]


def _corrupted_tables(pf: pq.ParquetFile, job: _RowJob, runner: _Runner, fields, paired: bool, severity: int,
                      batch_rows: int, bar: Any) -> Iterator[pa.Table]:
    """Per input batch: its corrupted rows (``paired``: interleaved after their clean rows) with ``fields``."""
    schema = pf.schema_arrow
    cols = job.layout.columns

    def submit(batch: pa.RecordBatch, row0: int) -> tuple[pa.RecordBatch, int, Iterator]:
        values = {c: batch.column(c).to_pylist() for c in cols}
        tasks = [(row0 + i, {c: values[c][i] for c in cols}, job) for i in range(batch.num_rows)]
        return batch, row0, runner.map(_corrupt_row, tasks)

    # with a pool, the next batch is already being corrupted while this one is collected and written
    pending: collections.deque = collections.deque()
    start = 0
    for batch in pf.iter_batches(batch_size=batch_rows):
        pending.append(submit(batch, start))
        start += batch.num_rows
        if len(pending) > 1 or runner.workers <= 1:
            yield from _finish(pending.popleft(), schema, cols, fields, paired, severity, bar)
    while pending:
        yield from _finish(pending.popleft(), schema, cols, fields, paired, severity, bar)


def _noise_type(name: str | None) -> str:
    """The release's ``noise_type``: its own name for the corruption (``fog`` for ``fog_rac``), ``none``
    for a row without images."""
    if name is None:
        return "none"
    return name.removesuffix("_rac") if get(name).source == "rac-release" else name


def _finish(item: tuple[pa.RecordBatch, int, Iterator], schema: pa.Schema, cols: tuple[str, ...], fields, paired: bool,
            severity: int, bar: Any) -> Iterator[pa.Table]:
    """Collect one batch's corrupted rows and build its output table."""
    batch, row0, results = item
    n = batch.num_rows
    new = {c: [None] * n for c in cols}
    names, seeds = [None] * n, [None] * n
    for row, cells, name, seed in results:
        i = row - row0
        for c in cols:
            new[c][i] = cells[c]
        names[i], seeds[i] = name, seed
        bar.update(1)
    rows = list(range(row0, row0 + n))
    noisy_cols = [pa.array(new[f.name], type=f.type) if f.name in cols else batch.column(f.name) for f in schema]
    noisy_meta = {
        "pair_id": rows, "view": ["noisy"] * n, "is_noisy": [True] * n, "corruption_level": [corruption_level(severity)] * n,
        "severity": [severity] * n, "noise_type": [_noise_type(nm) for nm in names], "corruption": names,
        "corruption_seed": seeds, "source_row": rows,
    }
    noisy = pa.Table.from_arrays(noisy_cols + _meta(fields, noisy_meta), names=[*schema.names, *(f for f, _ in fields)])
    if paired:
        clean_meta = {
            "pair_id": rows, "view": ["clean"] * n, "is_noisy": [False] * n, "corruption_level": [0.0] * n,
            "severity": [0] * n, "noise_type": ["clean"] * n, "corruption": [None] * n, "corruption_seed": [None] * n,
            "source_row": rows,
        }
        clean = pa.Table.from_arrays(list(batch.columns) + _meta(fields, clean_meta), names=noisy.column_names)
        both = pa.concat_tables([clean, noisy])
        yield both.take(pa.array([k for i in range(n) for k in (i, n + i)], pa.int64()))
    else:
        yield noisy


def _out_schema(src: str, schema: pa.Schema, fields) -> pa.Schema:
    clash = [n for n, _ in fields if n in schema.names]
    if clash:
        raise DatasetError(f"{src} already has column(s) {', '.join(clash)} (is it an output of this command?)")
    for n, t in fields:
        schema = schema.append(pa.field(n, t))
    return schema


def _prepare(src: str | os.PathLike, out_dir: str | os.PathLike, names: str | Sequence[str], severities: Sequence[int],
             seed: int, image_column: str | None, image_root: str | os.PathLike | None):
    src, out_dir = os.path.abspath(os.fspath(src)), os.path.abspath(os.fspath(out_dir))
    layout = detect_layout(src, image_column, image_root)
    names = resolve_names(names if isinstance(names, str) else tuple(names))
    CorruptionPolicy(names=names, seed=seed)  # validates the names and the seed
    severities = tuple(sorted({check_severity(s, argname="severities") for s in severities}))
    if not severities:
        raise ValueError("severities must not be empty")
    if os.path.dirname(src) == out_dir:
        raise DatasetError(f"the input {src} is inside the output folder {out_dir} (choose another folder)")
    return src, out_dir, layout, names, severities, check_seed(seed)


def _run_files(src: str, out_dir: str, layout: ImageLayout, names: tuple[str, ...], seed: int,
               files: list[tuple[str, int | None, str | None]], fields, paired: bool, main: tuple | None,
               workers: int | None, overwrite: bool, batch_rows: int, progress: bool, command: str) -> dict[str, int]:
    """Write each ``(file name, severity, image dir)``; then the main file ``main = (name, mix)`` if given."""
    planned = {f: d for f, _, d in files}
    if main:
        planned[main[0]] = None
    outputs = _Outputs(out_dir, planned, overwrite)
    try:
        return _run_locked(outputs, src, out_dir, layout, names, seed, files, fields, paired, main, workers,
                           batch_rows, progress, command)
    finally:
        outputs.close()


def _run_locked(outputs: _Outputs, src: str, out_dir: str, layout: ImageLayout, names: tuple[str, ...], seed: int,
                files: list[tuple[str, int | None, str | None]], fields, paired: bool, main: tuple | None,
                workers: int | None, batch_rows: int, progress: bool, command: str) -> dict[str, int]:
    from tqdm import tqdm

    input_sha = _sha256(src)
    pf = _open(src)
    schema = _out_schema(src, pf.schema_arrow, fields)
    n_rows = pf.metadata.num_rows
    base = dict(command=command, input=input_sha, layout=dataclasses.asdict(layout), names=names, seed=seed)
    runner = _Runner(workers)
    written: dict[str, int] = {}
    ok = False
    try:
        with _sigterm_as_interrupt():
            for fname, sev, img_dir in files:
                key = _options_key(**base, file=fname, severity=sev)
                dst = os.path.join(out_dir, fname)
                if outputs.finished(fname, key):
                    log.info("%s: finished earlier, reused", fname)
                    written[fname] = pq.ParquetFile(dst).metadata.num_rows
                    continue
                outputs.record(fname, key, img_dir, done=False)
                image_dir = None
                if img_dir:
                    image_dir = os.path.join(out_dir, img_dir)
                    shutil.rmtree(image_dir, ignore_errors=True)
                    os.makedirs(image_dir)
                job = _RowJob(src, layout, CorruptionPolicy(names=names, severities=(sev,), seed=seed), image_dir)
                with tqdm(total=n_rows, unit="row", desc=fname, disable=not progress, file=sys.stderr) as bar:
                    written[fname] = _write_atomic(dst, schema, _corrupted_tables(pf, job, runner, fields, paired, sev, batch_rows, bar))
                outputs.record(fname, key, img_dir, done=True)
                log.info("wrote %d rows to %s", written[fname], dst)
            if main:
                fname, mix = main
                sources = {s: f for f, s, _ in files}
                key = _options_key(**base, file=fname, mix=mix, sources={s: outputs.manifest["outputs"][sources[s]]["sha256"] for s, _ in mix})
                dst = os.path.join(out_dir, fname)
                if outputs.finished(fname, key):
                    written[fname] = pq.ParquetFile(dst).metadata.num_rows
                else:
                    outputs.record(fname, key, None, done=False)
                    assign = _mix_assignment(pf, layout, src, mix, seed)
                    written[fname] = _write_atomic(dst, schema, _main_tables(out_dir, sources, assign, batch_rows))
                    outputs.record(fname, key, None, done=True)
                    log.info("wrote %d rows to %s", written[fname], dst)
        ok = True
        return written
    finally:
        runner.close(ok)


def _mix_assignment(pf: pq.ParquetFile, layout: ImageLayout, src: str, mix: tuple[tuple[int, float], ...], seed: int) -> list[int]:
    """The severity of each row's corrupted half in the main set: rows ordered by a keyed hash of their
    content (image bytes and the values of the other columns; not image paths, which depend on where the
    data lies), then cut into consecutive blocks of :func:`mix_counts` rows."""
    keys = []
    row0 = 0
    others = [n for n in pf.schema_arrow.names if n not in layout.columns]
    for batch in pf.iter_batches(batch_size=256):
        vals = batch.to_pylist()
        for i, row in enumerate(vals):
            img = image_key(row_images(layout, {c: row[c] for c in layout.columns}, src, row0 + i))
            rest = hashlib.blake2b(repr([row[n] for n in others]).encode(), digest_size=16).hexdigest()
            keys.append((derive_seed(seed, "mix", img, rest), rest, row0 + i))
        row0 += batch.num_rows
    order = [k[2] for k in sorted(keys)]
    assign = [0] * len(order)
    start = 0
    for (sev, _), count in zip(mix, mix_counts(len(order), [w for _, w in mix])):
        for r in order[start:start + count]:
            assign[r] = sev
        start += count
    return assign


def _rechunk(pf: pq.ParquetFile, size: int) -> Iterator[pa.Table]:
    """The file's rows in tables of exactly ``size`` rows (the last one shorter), whatever its row groups."""
    buf: list[pa.RecordBatch] = []
    have = 0
    for batch in pf.iter_batches(batch_size=size):
        buf.append(batch)
        have += batch.num_rows
        while have >= size:
            t = pa.Table.from_batches(buf)
            yield t.slice(0, size)
            rest = t.slice(size)
            buf, have = rest.to_batches(), rest.num_rows
    if have:
        yield pa.Table.from_batches(buf)


def _main_tables(out_dir: str, sources: dict[int, str], assign: list[int], batch_rows: int) -> Iterator[pa.Table]:
    """The main set from the per-severity files: row pairs read in lockstep, the clean row from the first
    file (clean rows are the same in all), the corrupted one from the file of the pair's severity."""
    sevs = sorted(set(assign))
    readers = {}
    for s in sevs:
        pf = pq.ParquetFile(os.path.join(out_dir, sources[s]))
        if pf.metadata.num_rows != 2 * len(assign):
            raise DatasetError(f"{sources[s]} has {pf.metadata.num_rows} rows, expected {2 * len(assign)} (2 per input row)")
        readers[s] = _rechunk(pf, 2 * batch_rows)
    pair0 = 0
    while pair0 < len(assign):
        parts = {s: next(readers[s]) for s in sevs}
        n = parts[sevs[0]].num_rows // 2
        offsets, tables, off = {}, [], 0
        for s in sevs:
            offsets[s] = off
            off += parts[s].num_rows
            tables.append(parts[s])
        idx = []
        for j in range(n):
            idx += [offsets[sevs[0]] + 2 * j, offsets[assign[pair0 + j]] + 2 * j + 1]
        yield pa.concat_tables(tables).take(pa.array(idx, pa.int64()))
        pair0 += n


# --- the two commands --------------------------------------------------------------------------------


def build_pairs(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    mix: str | Sequence[tuple[float, float]] | None = tuple((corruption_level(s), w) for s, w in PAPER_MIX),
    names: str | Sequence[str] = "paper",
    seed: int = 0,
    image_column: str | None = None,
    image_root: str | os.PathLike | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    batch_rows: int = 64,
    progress: bool = True,
) -> dict[str, int]:
    """Write the paired training sets (see module docstring). Returns ``file name -> rows``.

    Args:
        severities: one ``train_pair_T{s/5}.parquet`` per severity.
        mix: ``((level, share), ...)`` or ``"0.2:0.5,..."`` for ``train_pair_main.parquet`` (``None``: no
            main file); its levels must be among ``severities``.
        names: corruption names or a preset (``"paper"``: the release's 8, with its variants).
        image_column / image_root: see :func:`detect_layout`.
        workers: processes (default: all CPUs); 0 or 1: this process.
        overwrite: regenerate every output, replacing files named like them.

    Raises:
        DatasetError: missing or unreadable input, no image column, an unreadable image, an output folder
            holding other files, an input already carrying the added columns (file, row and column named).
        ValueError: unknown corruption, bad severities, seed or mix (the mix must sum to 1).
    """
    src, out_dir, layout, names, severities, seed = _prepare(src, out_dir, names, severities, seed, image_column, image_root)
    main = None
    if mix is not None:
        mix = parse_mix(mix)
        missing = [s for s, _ in mix if s not in severities]
        if missing:
            raise ValueError(f"mix uses level(s) {[corruption_level(s) for s in missing]} that severities {severities} leave out "
                             "(include them, or pass mix=None / --mix none for no main file)")
        main = ("train_pair_main.parquet", mix)
    files = [(f"train_pair_{level_tag(s)}.parquet", s, None if layout.kind == "bytes" else f"images_{level_tag(s)}") for s in severities]
    return _run_files(src, out_dir, layout, names, seed, files, PAIR_FIELDS, True, main, workers, overwrite,
                      batch_rows, progress, "pairs")


def build_testsets(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    names: str | Sequence[str] = "paper",
    seed: int = 0,
    prefix: str | None = None,
    image_column: str | None = None,
    image_root: str | os.PathLike | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    batch_rows: int = 64,
    progress: bool = True,
) -> dict[str, int]:
    """Write ``{prefix}_T{s/5}.parquet`` per severity (every row corrupted; the clean set is the input).

    Args:
        prefix: file-name prefix (default: the input's file name without ``.parquet``).
        Others: as :func:`build_pairs`.

    Raises:
        As :func:`build_pairs`.
    """
    src, out_dir, layout, names, severities, seed = _prepare(src, out_dir, names, severities, seed, image_column, image_root)
    prefix = prefix or Path(src).stem
    if not prefix or os.sep in prefix or prefix.startswith("."):
        raise ValueError(f"prefix must be a plain file-name prefix, got {prefix!r}")
    files = [(f"{prefix}_{level_tag(s)}.parquet", s, None if layout.kind == "bytes" else f"{prefix}_images_{level_tag(s)}") for s in severities]
    return _run_files(src, out_dir, layout, names, seed, files, TEST_FIELDS, False, None, workers, overwrite,
                      batch_rows, progress, "testsets")
