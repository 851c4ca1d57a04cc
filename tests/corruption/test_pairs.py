"""``rac-corrupt pairs`` / ``testsets``: round trips on small generated parquets of each image layout, the
mix, determinism across row order and workers, inputs untouched, interrupted and resumed runs, errors."""

from __future__ import annotations

import collections
import hashlib
import io
import json
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
from rac_losses.corruption import PAPER_CORRUPTIONS, corrupt
from rac_losses.corruption import pairs as P
from rac_losses.corruption.cli import main

ADDED = [n for n, _ in P.PAIR_FIELDS]
LAYOUTS = ["bytes", "structs", "messages", "message_lists"]


def _png(seed: int, h: int = 20, w: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(natural_image(seed, h, w)).save(buf, "PNG")
    return buf.getvalue()


def _dataset(tmp: Path, layout: str, n: int, *, h: int = 20, w: int = 24, seeds: list[int] | None = None) -> Path:
    """A verl-style parquet with ``n`` rows; images inline or as files under ``tmp/imgs``."""
    seeds = seeds if seeds is not None else list(range(n))
    cols: dict = {"question": [f"q{s}" for s in seeds], "answer": [str(s % 4) for s in seeds]}
    if layout == "bytes":
        cols["images"] = pa.array([_png(s, h, w) for s in seeds], pa.binary())
    elif layout == "structs":  # two images per row, the second one shared by every row
        cols["images"] = [[{"bytes": _png(s, h, w), "path": f"img{s}.png"}, {"bytes": _png(999, h, w), "path": "shared.png"}] for s in seeds]
    else:
        (tmp / "imgs").mkdir(exist_ok=True)
        msgs = []
        for s in seeds:
            p = tmp / "imgs" / f"{s}.png"
            if not p.exists():
                p.write_bytes(_png(s, h, w))
            # absolute file:// URI for even rows, a path relative to the parquet's folder for odd ones
            uri = f"file://{p}" if s % 2 == 0 else f"imgs/{s}.png"
            msgs.append([{"role": "user", "content": [{"type": "image", "image": uri, "text": None},
                                                      {"type": "text", "image": None, "text": f"q{s}"}]}])
        cols["message_qwenvl"] = [json.dumps(m) for m in msgs] if layout == "messages" else msgs
    src = tmp / "train.parquet"
    pq.write_table(pa.table(cols), src)
    return src


def _digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _images_of(cell_row: dict, layout: str) -> list[Image.Image]:
    if layout == "bytes":
        return [Image.open(io.BytesIO(cell_row["images"]))]
    if layout == "structs":
        return [Image.open(io.BytesIO(x["bytes"])) for x in cell_row["images"]]
    msgs = cell_row["message_qwenvl"]
    msgs = json.loads(msgs) if isinstance(msgs, str) else msgs
    uris = [it["image"] for m in msgs for it in m["content"] if it["type"] == "image"]
    return [Image.open(u[len("file://"):] if u.startswith("file://") else u) for u in uris]


def _src_images(src: Path, row: dict, layout: str) -> list[Image.Image]:
    if layout in ("messages", "message_lists"):
        cwd = os.getcwd()
        os.chdir(src.parent)  # relative paths are relative to the input's folder
        try:
            return [im.copy() for im in _images_of(row, layout)]
        finally:
            os.chdir(cwd)
    return _images_of(row, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pairs_round_trip(tmp_path: Path, layout: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    src = _dataset(data, layout, 6)
    before = _digest_tree(data)
    out = tmp_path / "out"
    done = P.build_pairs(src, out, severities=(1, 2, 3), seed=5, workers=0, progress=False)
    assert _digest_tree(data) == before  # the input and its images are only read
    files = ["train_pair_T0.2.parquet", "train_pair_T0.4.parquet", "train_pair_T0.6.parquet", "train_pair_main.parquet"]
    assert list(done) == files and set(done.values()) == {12}
    inp = pq.read_table(src)
    names_by_row = collections.defaultdict(set)
    for f, sev in zip(files[:3], (1, 2, 3)):
        t = pq.read_table(out / f)
        assert t.column_names == [*inp.column_names, *ADDED]
        d = t.to_pydict()
        assert d["pair_id"] == [r for r in range(6) for _ in (0, 1)] and d["source_row"] == d["pair_id"]
        assert d["view"] == ["clean", "noisy"] * 6 and d["is_noisy"] == [False, True] * 6
        assert d["severity"] == [0, sev] * 6 and d["corruption_level"] == [0.0, sev / 5] * 6
        clean = t.take(list(range(0, 12, 2))).select(inp.column_names)
        assert clean.equals(inp)  # clean rows are the input's, value for value
        assert d["corruption"][0::2] == [None] * 6 and d["noise_type"][0::2] == ["clean"] * 6
        noisy = t.take(list(range(1, 12, 2))).to_pylist()
        for r, row in enumerate(noisy):
            assert row["corruption"] in PAPER_CORRUPTIONS  # the release's name for its variants
            assert row["noise_type"] == row["corruption"].removesuffix("_rac")
            assert row["question"] == f"q{r}"
            names_by_row[r].add(row["corruption"])
            got = _images_of(row, layout)
            want = _src_images(src, inp.slice(r, 1).to_pylist()[0], layout)
            assert len(got) == len(want)
            for g, w in zip(got, want):
                assert g.size == w.size and g.mode == w.mode
                ref = corrupt(w, row["corruption"], sev, seed=row["corruption_seed"])
                assert np.array_equal(np.asarray(g), np.asarray(ref))
            if layout == "structs":
                assert [x["path"] for x in row["images"]] == [None, None]
            if layout in ("messages", "message_lists"):
                uri = json.dumps(row["message_qwenvl"]) if layout == "message_lists" else row["message_qwenvl"]
                assert f"file://{out}/images_T{sev / 5:.1f}/" in uri
    assert all(len(v) == 1 for v in names_by_row.values())  # a row keeps its corruption across severities


def test_main_mix_counts_and_rows(tmp_path: Path) -> None:
    src = _dataset(tmp_path, "bytes", 23, h=8, w=8)
    out = tmp_path / "out"
    P.build_pairs(src, out, severities=(1, 2, 3), workers=0, progress=False, batch_rows=5)
    main_t = pq.read_table(out / "train_pair_main.parquet")
    d = main_t.to_pydict()
    assert d["pair_id"] == [r for r in range(23) for _ in (0, 1)] and d["view"] == ["clean", "noisy"] * 23
    sev = collections.Counter(d["severity"][1::2])
    assert [sev[1], sev[2], sev[3]] == P.mix_counts(23, [0.5, 0.4, 0.1]) == [12, 9, 2]
    for s, share in ((1, 0.5), (2, 0.4), (3, 0.1)):
        assert abs(sev[s] - 23 * share) <= 1
    per = {s: pq.read_table(out / f"train_pair_T{s / 5:.1f}.parquet") for s in (1, 2, 3)}
    for r in range(23):
        assert main_t.slice(2 * r, 1).equals(per[1].slice(2 * r, 1))  # clean row
        assert main_t.slice(2 * r + 1, 1).equals(per[d["severity"][2 * r + 1]].slice(2 * r + 1, 1))


def test_mix_counts_and_parse_mix() -> None:
    for total in (0, 1, 7, 10, 101):
        c = P.mix_counts(total, [0.5, 0.4, 0.1])
        assert sum(c) == total and all(abs(k - total * w) < 1 for k, w in zip(c, [0.5, 0.4, 0.1]))
    assert P.parse_mix("0.2:0.5,0.4:0.4,0.6:0.1") == ((1, 0.5), (2, 0.4), (3, 0.1))
    assert P.parse_mix([(1.0, 1)]) == ((5, 1.0),)
    for bad, msg in [("0.2:0.5,0.4:0.4", "sum to 1"), ("0.3:1", "level must be one of"), ("0:1", "levels must be"),
                     ("0.2:1.5,0.4:-0.5", "shares must be > 0"), ("0.2-1", "must look like"), ("0.2:0.5,0.2:0.5", "repeats")]:
        with pytest.raises(ValueError, match=msg):
            P.parse_mix(bad)


def test_same_output_for_any_row_order_and_worker_count(tmp_path: Path) -> None:
    n = 10
    perm = list(np.random.default_rng(0).permutation(n))
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir(), b_dir.mkdir()
    src_a = _dataset(a_dir, "bytes", n)
    src_b = _dataset(b_dir, "bytes", n, seeds=perm)
    P.build_pairs(src_a, a_dir / "out", severities=(1, 2, 3), seed=1, workers=0, progress=False)
    P.build_pairs(src_b, b_dir / "out", severities=(1, 2, 3), seed=1, workers=2, progress=False, batch_rows=3)
    for f in ("train_pair_T0.2.parquet", "train_pair_T0.6.parquet", "train_pair_main.parquet"):
        ta = pq.read_table(a_dir / "out" / f).drop_columns(["pair_id", "source_row"])
        tb = pq.read_table(b_dir / "out" / f).drop_columns(["pair_id", "source_row"])
        for pos_b, r in enumerate(perm):  # row r of a is row pos_b of b
            assert ta.slice(2 * r, 2).equals(tb.slice(2 * pos_b, 2)), (f, r)


def test_resumed_run_reuses_finished_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _dataset(tmp_path, "messages", 8)
    out = tmp_path / "out"
    real = P._corrupt_row
    calls = collections.Counter()

    def dies_in_the_second_file(task):
        sev = task[2].policy.severities[0]
        calls[sev] += 1
        if sev == 2 and calls[sev] == 5:
            raise KeyboardInterrupt  # as a SIGTERM (or Ctrl-C) mid-file
        return real(task)

    monkeypatch.setattr(P, "_corrupt_row", dies_in_the_second_file)
    with pytest.raises(KeyboardInterrupt):
        P.build_pairs(src, out, severities=(1, 2), mix=None, workers=0, progress=False, batch_rows=2)
    assert sorted(p.name for p in out.iterdir()) == [P._LOCK, "images_T0.2", "images_T0.4", P.MANIFEST, "train_pair_T0.2.parquet"]
    first = (out / "train_pair_T0.2.parquet").stat()
    monkeypatch.setattr(P, "_corrupt_row", real)
    calls.clear()
    done = P.build_pairs(src, out, severities=(1, 2), mix=None, workers=0, progress=False)
    assert done == {"train_pair_T0.2.parquet": 16, "train_pair_T0.4.parquet": 16}
    again = (out / "train_pair_T0.2.parquet").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # reused, not rewritten
    manifest = json.loads((out / P.MANIFEST).read_text())["outputs"]
    assert {k: v["status"] for k, v in manifest.items()} == {"train_pair_T0.2.parquet": "done", "train_pair_T0.4.parquet": "done"}
    # other options (a new seed) redo the file; a damaged finished file is redone too
    (out / "train_pair_T0.4.parquet").write_bytes(b"damaged")
    P.build_pairs(src, out, severities=(1, 2), mix=None, workers=0, progress=False)
    assert pq.read_table(out / "train_pair_T0.4.parquet").num_rows == 16
    assert (out / "train_pair_T0.2.parquet").stat().st_mtime_ns == first.st_mtime_ns
    P.build_pairs(src, out, severities=(1,), mix=None, seed=9, workers=0, progress=False)
    assert (out / "train_pair_T0.2.parquet").stat().st_mtime_ns != first.st_mtime_ns


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_leaves_no_partial_file_and_a_rerun_finishes(tmp_path: Path, sig: int) -> None:
    src = _dataset(tmp_path, "bytes", 48, h=128, w=160)
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rac_losses.corruption.cli", "pairs", str(src), str(out), "--severities", "1",
           "--mix", "none", "--names", "elastic_transform_rac", "--workers", "0", "--no-progress"]
    # cwd outside the repository: from its root `python -m` would import the source folder rac_losses/
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.time() + 60
    while not (out.exists() and [p for p in out.iterdir() if p.name.endswith(".tmp")]) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    if sig == signal.SIGKILL:
        assert proc.wait(timeout=30) == -signal.SIGKILL  # killed mid-run, not finished
    else:  # SIGTERM: stops cleanly, removing its temp file
        assert proc.wait(timeout=30) == 130, proc.communicate()
        assert "interrupted; the file being written was discarded" in proc.stderr.read().decode()
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert not (out / "train_pair_T0.2.parquet").exists()  # at most the hidden temp file
    assert main(["pairs", str(src), str(out), "--severities", "1", "--mix", "none", "--names", "fog",
                 "--workers", "0", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [P._LOCK, P.MANIFEST, "train_pair_T0.2.parquet"]  # temp file removed
    assert pq.read_table(out / "train_pair_T0.2.parquet").num_rows == 96
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before


def test_testsets(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = _dataset(tmp_path, "structs", 4)
    out = tmp_path / "tests"
    assert main(["testsets", str(src), str(out), "--severities", "1-5", "--prefix", "mathverse", "--names",
                 "paper-imagenet-c", "--workers", "0", "--no-progress"]) == 0
    assert "mathverse_T1.0.parquet: 4 rows" in capsys.readouterr().out
    inp = pq.read_table(src)
    for s in range(1, 6):
        t = pq.read_table(out / f"mathverse_T{s / 5:.1f}.parquet")
        assert t.column_names == [*inp.column_names, *(n for n, _ in P.TEST_FIELDS)]
        d = t.to_pydict()
        assert d["severity"] == [s] * 4 and d["is_noisy"] == [True] * 4 and d["source_row"] == [0, 1, 2, 3]
        assert d["question"] == inp.column("question").to_pylist()
        assert all(img["bytes"] != orig["bytes"] for row, orig_row in zip(d["images"], inp.column("images").to_pylist())
                   for img, orig in zip(row, orig_row))


def test_errors_name_the_file_row_and_column(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    noimg = tmp_path / "noimg.parquet"
    pq.write_table(pa.table({"question": ["a"], "answer": ["b"]}), noimg)
    with pytest.raises(P.DatasetError, match=r"noimg.parquet: no image column.*columns: question, answer"):
        P.build_pairs(noimg, out, workers=0, progress=False)
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"images": pa.array([_png(0), b"not an image"], pa.binary())}), bad)
    with pytest.raises(P.DatasetError, match=r"bad.parquet: row 1, column 'images', image 0: cannot decode image"):
        P.build_pairs(bad, tmp_path / "o1", severities=(1,), mix=None, workers=0, progress=False)
    assert not [p for p in (tmp_path / "o1").iterdir() if p.suffix in (".parquet", ".tmp")]
    msgs = tmp_path / "m" / "m.parquet"
    msgs.parent.mkdir()
    pq.write_table(pa.table({"message_qwenvl": [json.dumps([{"role": "user", "content": [{"type": "image", "image": "gone.png"}]}])]}), msgs)
    with pytest.raises(P.DatasetError, match=r"m.parquet: row 0, column 'message_qwenvl': cannot read image 'gone.png'"):
        P.build_pairs(msgs, tmp_path / "o2", severities=(1,), mix=None, workers=0, progress=False)
    pq.write_table(pa.table({"message_qwenvl": [json.dumps([{"role": "user", "content": [{"type": "image", "image": "https://x/y.png"}]}])]}), msgs)
    with pytest.raises(P.DatasetError, match="remote image"):
        P.build_pairs(msgs, tmp_path / "o3", severities=(1,), mix=None, workers=0, progress=False)
    src = _dataset(tmp_path, "bytes", 2)
    with pytest.raises(ValueError, match="unknown corruption name 'nope'"):
        P.build_pairs(src, out, names=["nope"], workers=0, progress=False)
    with pytest.raises(ValueError, match="sum to 1"):
        P.build_pairs(src, out, mix="0.2:0.5,0.4:0.4", workers=0, progress=False)
    with pytest.raises(ValueError, match=r"mix uses level\(s\) \[0.6\]"):
        P.build_pairs(src, out, severities=(1, 2), workers=0, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(P.DatasetError, match="holds files this command did not write: notes.txt"):
        P.build_pairs(src, other, workers=0, progress=False)
    with pytest.raises(P.DatasetError, match="is inside the output folder"):
        P.build_pairs(src, tmp_path, workers=0, progress=False)
    P.build_pairs(src, out, severities=(1,), mix=None, workers=0, progress=False)
    with pytest.raises(P.DatasetError, match="already has column"):
        P.build_pairs(out / "train_pair_T0.2.parquet", tmp_path / "o4", workers=0, progress=False)
    with pytest.raises(P.DatasetError, match="column 'img' not found"):
        P.build_pairs(src, tmp_path / "o5", image_column="img", workers=0, progress=False)
    with pytest.raises(P.DatasetError, match="input file not found"):
        P.build_pairs(tmp_path / "missing.parquet", tmp_path / "o6", workers=0, progress=False)
    # through the CLI: exit status 2 and the message, no traceback
    assert main(["pairs", str(src), str(tmp_path / "o7"), "--mix", "0.2:0.7,0.4:0.4", "--no-progress"]) == 2
    assert "rac-corrupt: error: mix shares must sum to 1" in capsys.readouterr().err
    assert main(["pairs", str(noimg), str(tmp_path / "o8"), "--no-progress"]) == 2
    assert "no image column" in capsys.readouterr().err


def test_text_only_rows_get_an_unchanged_noisy_copy(tmp_path: Path) -> None:
    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"images": [[{"bytes": _png(0)}], [], None]}), src)
    P.build_pairs(src, tmp_path / "o", severities=(1,), mix=None, workers=0, progress=False)
    d = pq.read_table(tmp_path / "o" / "train_pair_T0.2.parquet").to_pydict()
    assert d["noise_type"] == ["clean", d["corruption"][1], "clean", "none", "clean", "none"]
    assert d["images"][2:] == [[], [], None, None] and d["corruption_seed"][3] is None


def test_structs_with_only_a_path_are_read_from_it(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(_png(3))
    src = tmp_path / "s.parquet"
    typ = pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"images": pa.array([[{"bytes": None, "path": "a.png"}]], typ)}), src)
    P.build_pairs(src, tmp_path / "o", severities=(1,), mix=None, workers=0, progress=False)
    clean, noisy = pq.read_table(tmp_path / "o" / "train_pair_T0.2.parquet").to_pylist()
    assert clean["images"] == [{"bytes": None, "path": "a.png"}] and noisy["images"][0]["path"] is None
    ref = corrupt(Image.open(io.BytesIO(_png(3))), noisy["corruption"], 1, seed=noisy["corruption_seed"])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(noisy["images"][0]["bytes"]))), np.asarray(ref))


def test_image_folders_are_the_same_for_any_row_order(tmp_path: Path) -> None:
    n = 6
    perm = [3, 0, 5, 1, 4, 2]
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir(), b_dir.mkdir()
    P.build_pairs(_dataset(a_dir, "messages", n), a_dir / "out", severities=(1, 2, 3), workers=0, progress=False)
    P.build_pairs(_dataset(b_dir, "messages", n, seeds=perm), b_dir / "out", severities=(1, 2, 3), workers=0, progress=False)
    assert _digest_tree(a_dir / "out" / "images_T0.2") == _digest_tree(b_dir / "out" / "images_T0.2")  # content-addressed
    for f in ("train_pair_T0.2.parquet", "train_pair_main.parquet"):
        _same_rows(pq.read_table(a_dir / "out" / f).to_pylist(), pq.read_table(b_dir / "out" / f).to_pylist(), perm, a_dir, b_dir)


def _same_rows(ta: list[dict], tb: list[dict], perm: list[int], a_dir: Path, b_dir: Path) -> None:
    for pos_b, r in enumerate(perm):
        for k in (0, 1):
            ra, rb = dict(ta[2 * r + k]), dict(tb[2 * pos_b + k])
            for d, root in ((ra, a_dir), (rb, b_dir)):
                d.pop("pair_id"), d.pop("source_row")
                d["message_qwenvl"] = d["message_qwenvl"].replace(str(root), "ROOT")
            assert ra == rb


def test_one_run_per_output_folder(tmp_path: Path) -> None:
    src = _dataset(tmp_path, "bytes", 2)
    out = tmp_path / "out"
    out.mkdir()
    held = P._lock(str(out))  # as a run in progress holds it
    try:
        with pytest.raises(P.DatasetError, match="another rac-corrupt run is writing to"):
            P.build_pairs(src, out, severities=(1,), mix=None, workers=0, progress=False)
    finally:
        held.close()
    assert P.build_pairs(src, out, severities=(1,), mix=None, workers=0, progress=False) == {"train_pair_T0.2.parquet": 4}


def test_a_dead_worker_fails_the_run_with_a_hint() -> None:
    from concurrent.futures.process import BrokenProcessPool

    def results():
        yield 1
        raise BrokenProcessPool("gone")

    it = P._broken_pool_as_error(results())
    assert next(it) == 1
    with pytest.raises(P.DatasetError, match="a worker process died .*__main__"):
        next(it)
