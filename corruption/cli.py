"""``rac-corrupt``: contact-sheet previews, corrupted twins of parquet datasets, the RAC paper's paired
training sets and corrupted test sets.

Examples::

    rac-corrupt preview photo.jpg -o sheet.png
    rac-corrupt preview photo.jpg -o sheet.png --names gaussian_noise,fog,patch_mask --cell 256
    rac-corrupt dataset train.parquet train_corrupted.parquet --image-column images \\
        --names gaussian_noise motion_blur --severities 1-5 --seed 0
    rac-corrupt pairs train.parquet data/train --severities 1-5 --mix 0.2:0.5,0.4:0.4,0.6:0.1 --names paper
    rac-corrupt testsets mathverse/test.parquet data/mathverse --prefix mathverse
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from . import CORRUPTIONS, IMAGENET_C
from ._registry import get

__all__ = ["main"]


def _names(values: Sequence[str] | None, default: Sequence[str]) -> tuple[str, ...]:
    from .dataset import names_from

    from .presets import resolve_names

    names = resolve_names(names_from(values, default))
    for n in names:
        get(n)
    return names


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rac-corrupt", description="Image corruptions (ImageNet-C + VLM calibration).")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True)

    pv = sub.add_parser("preview", help="contact sheet: rows = corruptions, columns = clean + severities 1..5")
    pv.add_argument("image", help="input image file")
    pv.add_argument("-o", "--output", required=True, help="output PNG")
    pv.add_argument("--names", nargs="+", help="corruptions (comma or space separated; default: all)")
    pv.add_argument("--cell", type=int, default=192, help="tile size in pixels (default 192)")
    pv.add_argument("--seed", type=int, default=0)

    ds = sub.add_parser("dataset", help="write corrupted twins of a verl-style parquet")
    ds.add_argument("input", help="input parquet (only read)")
    ds.add_argument("output", help="output parquet (written atomically)")
    ds.add_argument("--image-column", default="images", help="column with image bytes / {'bytes': ...} / lists of them")
    ds.add_argument("--names", nargs="+", help="corruptions (default: the 15 ImageNet-C ones)")
    ds.add_argument("--severities", default="1-5", help="e.g. 1-5, 3, 1,3,5 (default 1-5)")
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--sample", action="store_true",
                    help="one twin per row, (name, severity) drawn per row (CorruptionPolicy keyed by row index)")
    ds.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    ds.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists (never the input)")
    ds.add_argument("--no-progress", action="store_true", help="no progress bar")
    for cmd, help_ in (("pairs", "the paper's paired training sets (one per severity) and the mixed main set"),
                       ("testsets", "the paper's corrupted test sets (one per severity)")):
        c = sub.add_parser(cmd, help=help_)
        c.add_argument("input", help="input parquet (only read)")
        c.add_argument("out_dir", help="output folder (created; must hold nothing but this command's outputs)")
        c.add_argument("--severities", default="1-5", help="e.g. 1-5, 3, 1,3,5 (default 1-5)")
        if cmd == "pairs":
            c.add_argument("--mix", default="0.2:0.5,0.4:0.4,0.6:0.1",
                           help="level:share,... of train_pair_main.parquet's corrupted halves, or 'none' (default: the paper's)")
        else:
            c.add_argument("--prefix", default=None, help="output file-name prefix (default: the input's name)")
        c.add_argument("--names", nargs="+", default=["paper"],
                       help="corruptions or a preset: paper (default: the release's 8), paper-imagenet-c, imagenet-c")
        c.add_argument("--seed", type=int, default=0)
        c.add_argument("--image-column", default="auto",
                       help="column with images: bytes / {'bytes': ...} / paths / chat messages (default: auto)")
        c.add_argument("--image-root", default=None, help="folder for relative image paths (default: the input's folder)")
        c.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
        c.add_argument("--overwrite", action="store_true", help="regenerate every output, replacing files named like them")
        c.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.epilog = "corruptions: " + ", ".join(CORRUPTIONS) + "; presets: paper, paper-imagenet-c, imagenet-c"
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point. Returns the exit status (0 ok, 2 usage or input error)."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    from .dataset import DatasetError, DatasetJob, corrupt_dataset, parse_severities

    try:
        if args.command == "preview":
            from PIL import Image

            from .sheet import contact_sheet

            names = _names(args.names, list(CORRUPTIONS))
            out_dir = os.path.dirname(os.path.abspath(args.output))
            if not os.path.isdir(out_dir):
                raise DatasetError(f"cannot write {args.output}: folder {out_dir} does not exist")
            try:
                img = Image.open(args.image)
                img.load()
            except (OSError, ValueError) as e:
                raise DatasetError(f"cannot read image {args.image}: {e}") from None
            sheet = contact_sheet(img, names, cell=args.cell, seed=args.seed)
            try:
                sheet.save(args.output)
            except (OSError, ValueError) as e:
                raise DatasetError(f"cannot write {args.output}: {e}") from None
            print(f"wrote {args.output} ({len(names)} corruptions x clean + 5 severities)")
            return 0
        if args.command in ("pairs", "testsets"):
            from .pairs import build_pairs, build_testsets

            opts = dict(severities=parse_severities(args.severities), names=_names(args.names, ()), seed=args.seed,
                        image_column=args.image_column, image_root=args.image_root, workers=args.workers,
                        overwrite=args.overwrite, progress=not args.no_progress)
            if args.command == "pairs":
                mix = None if args.mix.strip().lower() == "none" else args.mix
                done = build_pairs(args.input, args.out_dir, mix=mix, **opts)
            else:
                done = build_testsets(args.input, args.out_dir, prefix=args.prefix, **opts)
            for fname, n in done.items():
                print(f"{os.path.join(args.out_dir, fname)}: {n} rows")
            return 0
        job = DatasetJob(_names(args.names, IMAGENET_C), parse_severities(args.severities), args.seed, args.sample)
        n = corrupt_dataset(args.input, args.output, image_column=args.image_column, job=job, workers=args.workers,
                            overwrite=args.overwrite, progress=not args.no_progress)
        print(f"wrote {n} rows to {args.output}")
        return 0
    except (DatasetError, ValueError, TypeError) as e:
        print(f"rac-corrupt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command in ("pairs", "testsets"):
            print("rac-corrupt: interrupted; the file being written was discarded, finished files are kept "
                  "(rerun the command to resume)", file=sys.stderr)
        else:
            print("rac-corrupt: interrupted; no output written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
