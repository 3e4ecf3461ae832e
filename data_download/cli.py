"""The one entry point: ``python -m data_download <command>`` (``mmkd download <command>`` calls :func:`main`).

Every command prints where its result is and how to point the course at it. Errors are one line on
stderr, ``python -m data_download: error: <URL or file>: <what is wrong>``, never a traceback: exit code 1
when getting or checking the data failed, 2 when the local disk or folder is the problem (full,
read-only, not writable), as for a wrong option.
"""

import argparse
import sys
from pathlib import Path

from mmkd_helpers.fileio import one_line
from mmkd_helpers.paths import DATA_DIR_ENV, default_data_dir

from .fetch import DownloadError


def _parser(prog: str) -> argparse.ArgumentParser:
    root = default_data_dir()
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"Download, verify and prepare the course's datasets. Data folder: ${DATA_DIR_ENV} if set, "
                    f"else ~/.cache/mmkd (now: {root}).")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    msd = commands.add_parser("msd", help="MSD Task01_BrainTumour: 484 labelled cases, 7.6 GB, no registration")
    msd.add_argument("--dest", type=Path, default=root / "msd", help="folder to put it in (default: %(default)s)")
    msd.add_argument("--url", default=None, help="a mirror of the same tar (same size and md5)")
    msd.add_argument("--keep-archive", action="store_true", help="keep the 7.6 GB tar after extraction")
    msd.add_argument("--force", action="store_true", help="fetch and extract again even if the folder exists")

    commands.add_parser("brats-instructions", help="how to get BraTS 2018-2021 (registration required)")

    verify = commands.add_parser("verify", help="check a BraTS (or MSD) folder case by case with the course's reader")
    verify.add_argument("dir", type=Path, help="the folder holding the cases")

    av = commands.add_parser("avmnist", help="MNIST + Free Spoken Digit Dataset, and the AV-MNIST pairing recipe")
    av.add_argument("--dest", type=Path, default=root / "avmnist", help="folder to put it in (default: %(default)s)")
    av.add_argument("--build", action="store_true", help="also pair them into DEST/paired (.npy + manifest.json)")
    av.add_argument("--source", type=Path, default=None,
                    help="build from this local copy (mnist/ + fsdd/recordings/) instead of downloading")
    return parser


def main(argv=None, prog: str = "python -m data_download") -> int:
    """``prog``: the name errors and ``--help`` give the command (``mmkd download`` when called from there)."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    progress = not args.quiet
    try:
        if args.command == "msd":
            from . import msd

            mirror = {"url": args.url} if args.url else {}
            folder = msd.fetch(args.dest, keep_archive=args.keep_archive, force=args.force, progress=progress,
                               **mirror)
            _point_at(folder)
        elif args.command == "brats-instructions":
            from .brats import instructions

            print(instructions(default_data_dir()))
        elif args.command == "verify":
            from .brats import verify

            return verify(args.dir)
        elif args.command == "avmnist":
            from . import avmnist

            if args.source is None:
                avmnist.fetch_mnist(args.dest, progress=progress)
                avmnist.fetch_fsdd(args.dest, progress=progress)
                print(f"MNIST and FSDD in {args.dest}")
            if args.build or args.source is not None:
                _point_at(avmnist.build(args.source or args.dest, args.dest / "paired"), segmentation=False)
    except DownloadError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{parser.prog}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def _point_at(folder, segmentation=True) -> None:
    print(f"Ready: {folder}\n  notebooks: DATA_DIR={folder}")
    if segmentation:
        print(f"  CLI:       mmkd train --data {folder}")
