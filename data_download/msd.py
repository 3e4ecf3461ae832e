"""Medical Segmentation Decathlon, Task01_BrainTumour: 484 labelled BraTS 2016/2017 cases, no registration.

One public tar (7.6 GB) holds ``Task01_BrainTumour/`` with ``dataset.json``, ``imagesTr/*.nii.gz``
(4D: FLAIR, T1w, T1gd, T2w), ``labelsTr/*.nii.gz`` and ``imagesTs/`` (unlabelled), plus macOS ``._*``
junk files that we skip. The course reads that folder as it is (``mmkd_helpers.data`` understands
the layout), so all we do is download, verify, extract safely and check ``dataset.json`` against
the files.
"""

import json
from pathlib import Path, PurePosixPath

from mmkd_helpers.fileio import file_lock

from .archive import safe_extract
from .fetch import DownloadError, ensure_free_space, download

URL = "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task01_BrainTumour.tar"
SIZE = 7_608_266_240
MD5 = "240a19d752f0d9e9101544901065d872"
NAME = "Task01_BrainTumour"


def training_files(folder) -> list:
    """The (image, label) pairs that ``dataset.json`` lists, after checking that every one exists.

    Raises :class:`DownloadError` naming the missing files, so an incomplete archive is refused
    before it replaces anything.
    """
    folder = Path(folder)
    meta_path = folder / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text())
        entries = [(entry["image"], entry["label"]) for entry in meta["training"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DownloadError(f"{meta_path}: missing or not a valid MSD dataset.json ({type(exc).__name__}: {exc})")
    if meta.get("numTraining", len(entries)) != len(entries):
        raise DownloadError(f"{meta_path}: numTraining is {meta['numTraining']} but {len(entries)} cases are listed")
    pairs = [(_inside(folder, image, meta_path), _inside(folder, label, meta_path)) for image, label in entries]
    missing = [str(path.relative_to(folder)) for pair in pairs for path in pair if not path.is_file()]
    if missing:
        raise DownloadError(f"{meta_path}: {len(missing)} listed files are missing, e.g. {', '.join(missing[:3])}")
    return pairs


def _inside(folder: Path, relative: str, meta_path: Path) -> Path:
    """``./imagesTr/x.nii.gz`` -> ``folder/imagesTr/x.nii.gz``; a path leaving ``folder`` is an error."""
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise DownloadError(f"{meta_path}: refusing the path {relative!r}, which leaves {folder}")
    return folder / path


def fetch(dest, *, url=URL, size=SIZE, md5=MD5, keep_archive=False, force=False, progress=True,
          **download_options) -> Path:
    """Download, verify and extract Task01 into ``dest/Task01_BrainTumour``; return that folder.

    A complete earlier extraction is kept unless ``force``. The verified tar is deleted after
    extraction unless ``keep_archive`` (it is as large as the data).
    """
    dest = Path(dest)
    folder = dest / NAME
    # A second fetch waits for the first to finish (the first deletes the archive after extracting it), then
    # finds the folder in place.
    with file_lock(dest / f"{NAME}.lock", waiting=f"{folder}: another process is fetching it; waiting for it "
                                                   "to finish"):
        if folder.is_dir() and not force:
            try:
                count = len(training_files(folder))
            except DownloadError as exc:
                raise DownloadError(f"{exc}; run with --force to fetch and extract it again") from None
            print(f"{folder} already exists ({count} training cases); --force to fetch it again")
            return folder
        archive = download(url, dest / f"{NAME}.tar", size=size, md5=md5, progress=progress, **download_options)
        ensure_free_space(dest, archive.stat().st_size, f"extracting {archive.name}")
        safe_extract(archive, folder, subdir=NAME, check=training_files, progress=progress)
        if not keep_archive:
            archive.unlink()
        print(f"MSD {NAME}: {len(training_files(folder))} labelled cases in {folder}")
        return folder
