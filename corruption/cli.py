"""``rac-corrupt``: contact-sheet previews and corrupted twins of parquet datasets.

Examples::

    rac-corrupt preview photo.jpg -o sheet.png
    rac-corrupt preview photo.jpg -o sheet.png --names gaussian_noise,fog,patch_mask --cell 256
    rac-corrupt dataset train.parquet train_corrupted.parquet --image-column images \\
        --names gaussian_noise motion_blur --severities 1-5 --seed 0
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from . import CORRUPTIONS, IMAGENET_C
from ._registry import get

__all__ = ["main"]


def _names(values: Sequence[str] | None, default: Sequence[str]) -> tuple[str, ...]:
    from .dataset import names_from

    names = names_from(values, default)
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
    p.epilog = "corruptions: " + ", ".join(CORRUPTIONS)
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
            try:
                img = Image.open(args.image)
                img.load()
            except (OSError, ValueError) as e:
                raise DatasetError(f"cannot read image {args.image}: {e}") from None
            contact_sheet(img, names, cell=args.cell, seed=args.seed).save(args.output)
            print(f"wrote {args.output} ({len(names)} corruptions x clean + 5 severities)")
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
        print("rac-corrupt: interrupted; no output written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
