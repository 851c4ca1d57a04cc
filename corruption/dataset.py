"""Corrupted twins of a verl-style parquet dataset (the engine behind ``rac-corrupt dataset``).

The image column may hold encoded image bytes (``binary``), a ``{"bytes": ...}`` struct (Hugging Face
``Image`` feature) or a list of either (verl's multi-image ``images`` column). Every output row is a
copy of one input row with each of its images corrupted, plus four columns: ``corruption`` (name),
``severity``, ``corruption_seed`` and ``source_row`` (0-based row index in the input). Corrupted images
are re-encoded losslessly as PNG (modes PNG cannot hold keep their source format); a struct's ``path``
is set to null, since it named the clean file.

The output is written to a temporary file in the output's directory and renamed over ``out`` only
when complete, so an interrupted run never leaves a partial ``out``. The input is only read.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import multiprocessing as mp
import os
import signal
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ._api import corrupt
from .policy import CorruptionPolicy

__all__ = ["DatasetError", "DatasetJob", "corrupt_dataset", "decode_image", "resolve_workers"]

log = logging.getLogger(__name__)

META_COLUMNS = ("corruption", "severity", "corruption_seed", "source_row")
_PNG_MODES = {"1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"}


class DatasetError(Exception):
    """A problem with the input or output files (reported without a traceback by the CLI)."""


@dataclasses.dataclass(frozen=True)
class DatasetJob:
    """What to produce for each input row.

    Attributes:
        names: corruption names.
        severities: severities.
        seed: corruption seed (``all`` mode) or policy seed (``sample`` mode).
        sample: ``False``: one twin per (name, severity) per row; ``True``: one twin per row, chosen by
            :class:`CorruptionPolicy` keyed by the source row index.
    """

    names: tuple[str, ...]
    severities: tuple[int, ...]
    seed: int = 0
    sample: bool = False

    def combos(self, row: int) -> list[tuple[str, int, int]]:
        if self.sample:
            return [CorruptionPolicy(self.names, self.severities, self.seed).choose(row)]
        return [(n, s, self.seed) for n in self.names for s in self.severities]


def decode_image(data: bytes, where: str) -> Image.Image:
    """Decode image bytes, raising :class:`DatasetError` that names ``where`` (file, row, column) on failure."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # noqa: BLE001 - any decoder failure is reported with its location
        raise DatasetError(f"{where}: cannot decode image ({type(e).__name__}: {e})") from None
    return img


def _decode(data: object, row: int, column: str, k: int | None) -> Image.Image:
    where = f"row {row}, column {column!r}" + (f", image {k}" if k is not None else "")
    if not isinstance(data, (bytes, bytearray)):
        raise DatasetError(f"{where}: expected image bytes, got {type(data).__name__}")
    return decode_image(data, where)


def _encode(img: Image.Image, source_format: str | None) -> bytes:
    buf = io.BytesIO()
    if img.mode in _PNG_MODES:
        img.save(buf, format="PNG", compress_level=3)
    else:
        img.save(buf, format=source_format or "TIFF")
    return buf.getvalue()


def _corrupt_cell(cell: Any, row: int, column: str, name: str, severity: int, seed: int, cache: dict) -> Any:
    """Corrupt every image in one cell, keeping the cell's structure."""

    def one(data: object, k: int | None) -> bytes:
        key = (id(data), k)
        if key not in cache:
            cache[key] = _decode(data, row, column, k)
        img = cache[key]
        return _encode(corrupt(img, name, severity, seed=seed), img.format)

    def item(x: Any, k: int | None) -> Any:
        if isinstance(x, dict):
            if "bytes" not in x:
                raise DatasetError(f"row {row}, column {column!r}: struct has no 'bytes' field (fields: {sorted(x)})")
            out = dict(x)
            out["bytes"] = one(x["bytes"], k)
            if "path" in out:
                out["path"] = None
            return out
        return one(x, k)

    if cell is None:
        raise DatasetError(f"row {row}, column {column!r}: image is null")
    if isinstance(cell, list):
        return [item(x, k) for k, x in enumerate(cell)]
    return item(cell, None)


def _work(task: tuple[int, Any, str, DatasetJob]) -> tuple[int, list[tuple[str, int, int, Any]]]:
    row, cell, column, job = task
    cache: dict = {}
    out = [(n, s, sd, _corrupt_cell(cell, row, column, n, s, sd, cache)) for n, s, sd in job.combos(row)]
    return row, out


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles interruption


def _check_paths(src: str, dst: str, overwrite: bool) -> None:
    if not os.path.isfile(src):
        raise DatasetError(f"input file not found: {src}")
    if os.path.exists(dst):
        if os.path.samefile(src, dst):
            raise DatasetError(f"refusing to overwrite the input file {src} (choose another OUT)")
        if not overwrite:
            raise DatasetError(f"output file {dst} exists (pass --overwrite to replace it)")
    out_dir = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(out_dir):
        raise DatasetError(f"output directory does not exist: {out_dir}")


def corrupt_dataset(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    image_column: str,
    job: DatasetJob,
    workers: int | None = None,
    overwrite: bool = False,
    batch_rows: int = 64,
    progress: bool = True,
) -> int:
    """Write the corrupted twins of ``src`` to ``dst`` (see module docstring). Returns the row count.

    Args:
        workers: processes (default: CPU count); 0 or 1 processes in this process.

    Raises:
        DatasetError: missing input, ``dst`` is the input (or exists without ``overwrite``), missing
            image column, metadata column name clash, an undecodable image (row and column named).
    """
    src, dst = os.fspath(src), os.fspath(dst)
    _check_paths(src, dst, overwrite)
    try:
        pf = pq.ParquetFile(src)
    except Exception as e:  # noqa: BLE001
        raise DatasetError(f"cannot read parquet file {src}: {e}") from None
    schema = pf.schema_arrow
    if image_column not in schema.names:
        raise DatasetError(f"column {image_column!r} not found in {src}; columns: {', '.join(schema.names)}")
    clash = [c for c in META_COLUMNS if c in schema.names]
    if clash:
        raise DatasetError(f"{src} already has column(s) {clash}; they would be overwritten")
    out_schema = schema
    for name, typ in zip(META_COLUMNS, (pa.string(), pa.int8(), pa.int64(), pa.int64())):
        out_schema = out_schema.append(pa.field(name, typ))
    col_type = schema.field(image_column).type
    n_rows = pf.metadata.num_rows
    per_row = len(job.combos(0))
    workers = resolve_workers(workers)

    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dst)), prefix=f".{os.path.basename(dst)}.", suffix=".tmp")
    os.close(fd)
    old_term = signal.getsignal(signal.SIGTERM)

    def _on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading_is_main():
        signal.signal(signal.SIGTERM, _on_term)
    pool = None
    written = 0
    try:
        from tqdm import tqdm

        bar = tqdm(total=n_rows * per_row, unit="img", desc="corrupting", disable=not progress, file=sys.stderr)
        if workers > 1:
            # spawn, not fork: forking a process that has started threads (OpenCV, torch, tqdm) can deadlock
            pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker)
        with pq.ParquetWriter(tmp, out_schema) as writer:
            row0 = 0
            for batch in pf.iter_batches(batch_size=batch_rows):
                cells = batch.column(image_column).to_pylist()
                tasks = [(row0 + i, c, image_column, job) for i, c in enumerate(cells)]
                results: Iterator = pool.imap(_work, tasks, chunksize=1) if pool else map(_work, tasks)
                take, images, meta = [], [], ([], [], [], [])
                for row, twins in results:
                    for n, s, sd, new_cell in twins:
                        take.append(row - row0)
                        images.append(new_cell)
                        for lst, v in zip(meta, (n, s, sd, row)):
                            lst.append(v)
                    bar.update(len(twins))
                rows = batch.take(pa.array(take, pa.int64()))
                arrays = [pa.array(images, type=col_type) if f.name == image_column else rows.column(f.name) for f in schema]
                arrays += [pa.array(v, type=t) for v, t in zip(meta, (pa.string(), pa.int8(), pa.int64(), pa.int64()))]
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=out_schema))
                written += len(take)
                row0 += batch.num_rows
        bar.close()
        if pool:
            pool.close()
            pool.join()
            pool = None
        os.replace(tmp, dst)
        tmp = None
        log.info("wrote %d rows to %s", written, dst)
        return written
    finally:
        if pool:
            pool.terminate()
            pool.join()
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if threading_is_main():
            signal.signal(signal.SIGTERM, old_term)


def resolve_workers(workers: int | None) -> int:
    """``None`` -> the CPU count (at least 1); otherwise ``workers`` (0 and 1 both mean this process).

    Raises:
        ValueError: if ``workers`` is negative or not an int.
    """
    if workers is None:
        return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative int or None (all CPUs), got {workers!r}")
    return workers


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def parse_severities(text: str) -> tuple[int, ...]:
    """``"1-5"``, ``"3"``, ``"1,3,5"`` or ``"1-2,5"`` -> sorted unique severities.

    Raises:
        ValueError: on malformed text or values outside 1..5.
    """
    out: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(v) for v in part.split("-", 1))
                out.update(range(a, b + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise ValueError(f"severities must look like '1-5', '3' or '1,3,5', got {text!r}") from None
    if not out or not out <= {1, 2, 3, 4, 5}:
        raise ValueError(f"severities must be within 1..5, got {text!r}")
    return tuple(sorted(out))


def names_from(values: Sequence[str] | None, default: Sequence[str]) -> tuple[str, ...]:
    """Split comma/space separated names; ``None`` -> ``default``."""
    if not values:
        return tuple(default)
    return tuple(n for v in values for n in v.replace(",", " ").split())
