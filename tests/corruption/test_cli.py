"""``rac-corrupt`` preview and dataset round trips (subprocess where process behaviour matters)."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from _images import natural_image
from rac_losses.corruption.cli import main


def _png(seed: int, h: int = 40, w: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(natural_image(seed, h, w)).save(buf, "PNG")
    return buf.getvalue()


def _write(path: Path, n: int, *, nested: bool, h: int = 40, w: int = 48) -> None:
    imgs = [_png(i, h, w) for i in range(n)]
    col = pa.array([[{"bytes": b, "path": f"img{i}.png"}] for i, b in enumerate(imgs)]) if nested else pa.array(imgs, pa.binary())
    pq.write_table(pa.table({"prompt": [f"q{i}" for i in range(n)], "images": col, "answer": list(range(n))}), path)


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_preview(tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(natural_image(1, 60, 80)).save(src)
    out = tmp_path / "sheet.png"
    assert main(["preview", str(src), "-o", str(out), "--names", "gaussian_noise,fog", "patch_mask", "--cell", "64"]) == 0
    sheet = Image.open(out)
    assert sheet.mode == "RGB" and sheet.height > 3 * 48 and sheet.width > 6 * 64
    assert main(["preview", str(src), "-o", str(out), "--names", "nope"]) == 2


def test_preview_into_a_missing_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(natural_image(1, 20, 20)).save(src)
    assert main(["preview", str(src), "-o", str(tmp_path / "no" / "sheet.png"), "--names", "fog"]) == 2
    assert "cannot write" in capsys.readouterr().err and not (tmp_path / "no").exists()


@pytest.mark.parametrize("nested", [False, True])
def test_dataset_round_trip(tmp_path: Path, nested: bool) -> None:
    src, dst = tmp_path / "in.parquet", tmp_path / "out.parquet"
    _write(src, 5, nested=nested)
    before = _sha(src)
    argv = ["dataset", str(src), str(dst), "--image-column", "images", "--names", "gaussian_noise", "patch_mask",
            "--severities", "2,5", "--seed", "3", "--workers", "2", "--no-progress"]
    assert main(argv) == 0
    assert _sha(src) == before
    t = pq.read_table(dst).to_pydict()
    assert len(t["prompt"]) == 5 * 2 * 2
    assert t["source_row"] == [r for r in range(5) for _ in range(4)]
    assert t["corruption"][:4] == ["gaussian_noise", "gaussian_noise", "patch_mask", "patch_mask"]
    assert t["severity"][:4] == [2, 5, 2, 5] and set(t["corruption_seed"]) == {3}
    assert t["answer"] == [r for r in range(5) for _ in range(4)]
    from rac_losses.corruption import corrupt

    for i, cell in enumerate(t["images"]):
        data = cell[0]["bytes"] if nested else cell
        if nested:
            assert cell[0]["path"] is None
        img = Image.open(io.BytesIO(data))
        assert img.size == (48, 40)
        r = t["source_row"][i]
        ref = corrupt(Image.open(io.BytesIO(_png(r))), t["corruption"][i], t["severity"][i], seed=3)
        assert np.array_equal(np.asarray(img), np.asarray(ref))
    # same bytes again -> identical file content (determinism through the pool)
    dst2 = tmp_path / "out2.parquet"
    assert main(["dataset", str(src), str(dst2), *argv[3:]]) == 0
    assert pq.read_table(dst2).equals(pq.read_table(dst))


def test_dataset_sample_mode(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.parquet", tmp_path / "out.parquet"
    _write(src, 6, nested=False)
    assert main(["dataset", str(src), str(dst), "--sample", "--workers", "0", "--no-progress"]) == 0
    t = pq.read_table(dst).to_pydict()
    assert t["source_row"] == list(range(6))


def test_dataset_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in.parquet"
    _write(src, 3, nested=False)
    before = _sha(src)
    assert main(["dataset", str(src), str(src), "--no-progress"]) == 2
    assert "refusing to overwrite the input" in capsys.readouterr().err
    assert main(["dataset", str(src), str(tmp_path / "o.parquet"), "--image-column", "img", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "column 'img' not found" in err and "columns: prompt, images, answer" in err
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"images": [_png(0), b"not an image", _png(1)]}), bad)
    out = tmp_path / "o.parquet"
    assert main(["dataset", str(bad), str(out), "--workers", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "row 1, column 'images': cannot decode image" in err
    assert not out.exists() and not list(tmp_path.glob(".o.parquet.*"))
    out.write_bytes(b"x")
    assert main(["dataset", str(src), str(out), "--no-progress"]) == 2
    assert "exists (pass --overwrite" in capsys.readouterr().err
    assert main(["dataset", str(src), str(out), "--no-progress", "--severities", "0-2"]) == 2
    assert _sha(src) == before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_leaves_no_output(tmp_path: Path, sig: int) -> None:
    src, dst = tmp_path / "in.parquet", tmp_path / "out.parquet"
    _write(src, 160, nested=False, h=160, w=200)  # long enough that it is still running when killed
    before = _sha(src)
    cmd = [sys.executable, "-m", "rac_losses.corruption.cli", "dataset", str(src), str(dst), "--names", "glass_blur",
           "zoom_blur", "--workers", "2", "--no-progress"]
    # cwd outside the repository: from its root, `python -m` would import the source folder rac_losses/,
    # which does not hold the installed rac_losses.corruption
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, cwd=tmp_path)
    deadline = time.time() + 120
    while not list(tmp_path.glob(".out.parquet.*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)
    assert proc.poll() is None, "run finished before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    if sig == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)  # the orphaned workers of this test's own run
    assert not dst.exists()
    if sig == signal.SIGTERM:
        assert proc.returncode == 130
        assert not list(tmp_path.glob(".out.parquet.*"))  # temp file cleaned up
    assert _sha(src) == before


def test_workers_zero_runs_in_this_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `os.cpu_count() or 1 if workers is None else workers` read as `cpu_count or (...)`: workers=0 started a pool
    from rac_losses.corruption import dataset as D

    src = tmp_path / "in.parquet"
    _write(src, 2, nested=False)
    monkeypatch.setattr(D.os, "cpu_count", lambda: 4)

    def no_pool(*a, **k):
        raise AssertionError("a process pool was started")

    monkeypatch.setattr(D.mp, "get_context", no_pool)
    job = D.DatasetJob(("gaussian_noise",), (1,))
    assert D.corrupt_dataset(src, tmp_path / "o.parquet", image_column="images", job=job, workers=0, progress=False) == 2
    assert D.resolve_workers(None) == 4 and D.resolve_workers(0) == 0 and D.resolve_workers(3) == 3
    monkeypatch.setattr(D.os, "cpu_count", lambda: None)
    assert D.resolve_workers(None) == 1
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="workers must be a non-negative int"):
            D.resolve_workers(bad)
