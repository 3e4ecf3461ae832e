"""AV-MNIST for the classification part of the course: MNIST digits paired with spoken digits.

Ingredients, from their public sources:

* MNIST (LeCun et al. 1998): the four canonical ``*-idx?-ubyte.gz`` files, checked against their
  well-known md5s (the ones torchvision lists).
* Free Spoken Digit Dataset (FSDD, Jackson et al.): the GitHub release archive. GitHub builds its
  archives on the fly, so the archive's own hash is not stable; instead each of the 3,000 recordings
  is checked against the sha256 manifest shipped beside this module (``fsdd_sha256.txt``).

The recipe (:func:`build`) pairs every MNIST image with an FSDD recording of the same digit, as in
the AV-MNIST setup of SMIL (Ma et al., AAAI 2021) and MetaKD: the image stays 28x28 and the audio
becomes a 20x20 log-magnitude spectrogram (20 frequency bands x 20 time steps), the audio input size
SMIL uses. Recordings are split by FSDD's official rule (takes 0-4 are the test set), so no
recording is heard in both training and test. MNIST's training images pair with the FSDD training
takes, its test images with the test takes; each recording is reused for many images (there are far
fewer recordings than images), in a seeded order. Unlike CentralNet's original AV-MNIST we add no
noise and do not degrade the images: the course removes whole modalities instead.
"""

import gzip
import json
import re
from pathlib import Path

from mmkd_helpers.fileio import atomic_path, file_lock

from .archive import safe_extract
from .fetch import DownloadError, download, hash_file

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_FILES = {  # name: (size in bytes, md5)
    "train-images-idx3-ubyte.gz": (9_912_422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte.gz": (28_881, "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte.gz": (1_648_877, "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte.gz": (4_542, "ec29112dd5afa0611ce80d1b7f02629c"),
}
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz"
FSDD_SUBDIR = "free-spoken-digit-dataset-1.0.10/recordings"
FSDD_MANIFEST = Path(__file__).with_name("fsdd_sha256.txt")
FSDD_TEST_TAKES = range(0, 5)  # FSDD's official split

# Audio -> 20x20: FSDD is 8 kHz mono. 6,000 samples (0.75 s) hold ~97% of the recordings whole;
# longer ones lose their tail, shorter ones are padded with silence. A standard spectrogram (32 ms Hann
# windows, 16 ms hop: 129 frequencies x 45 frames) is averaged into 20 equal frequency bands (200 Hz
# each) x 20 equal time segments, then log-compressed. Not standardised: the training code does that.
SAMPLE_RATE = 8000
CLIP_SAMPLES = 6000
NPERSEG, NOVERLAP = 256, 128
AUDIO_SHAPE = (20, 20)
LOG_EPS = 1e-6
TEST_FRACTION_WITHOUT_TRAIN_IMAGES = 0.2
_RECORDING = re.compile(r"(\d)_([a-z]+)_(\d+)\.wav")


def fetch_mnist(dest, mirrors=MNIST_MIRRORS, progress=True, **download_options) -> Path:
    """The four MNIST files into ``dest/mnist``, trying the mirrors in turn; returns that folder."""
    folder = Path(dest) / "mnist"
    for name, (size, md5) in MNIST_FILES.items():
        errors = []
        for mirror in mirrors:
            try:
                download(mirror + name, folder / name, size=size, md5=md5, progress=progress, **download_options)
                break
            except DownloadError as exc:
                errors.append(str(exc))
        else:
            raise DownloadError(f"{name}: no mirror worked:\n  " + "\n  ".join(errors))
    return folder


def fetch_fsdd(dest, url=FSDD_URL, subdir=FSDD_SUBDIR, manifest=FSDD_MANIFEST, progress=True,
               **download_options) -> Path:
    """FSDD recordings into ``dest/fsdd/recordings``, each checked against ``manifest``; returns that folder."""
    folder = Path(dest) / "fsdd" / "recordings"
    # One extraction at a time: the archive is deleted after it, so a second one would find it gone.
    with file_lock(folder.with_name("recordings.lock"),
                   waiting=f"{folder}: another process is fetching it; waiting for it to finish"):
        if folder.is_dir():
            check_recordings(folder, manifest)
            return folder
        archive = download(url, folder.parent / Path(url).name, progress=progress, **download_options)
        try:
            safe_extract(archive, folder, subdir=subdir, check=lambda tmp: check_recordings(tmp, manifest),
                         progress=progress)
        finally:
            archive.unlink()  # unverifiable by itself: never reuse it
    return folder


def read_manifest(manifest=FSDD_MANIFEST) -> dict:
    """``sha256sum``-style lines ``<hex>  <name>`` -> {name: hex}."""
    lines = Path(manifest).read_text().splitlines()
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines if line.strip())}


def check_recordings(folder, manifest=FSDD_MANIFEST) -> None:
    """Every recording of the manifest present with its sha256, and nothing else; else DownloadError."""
    folder = Path(folder)
    expected = read_manifest(manifest)
    present = {p.name for p in folder.glob("*.wav")}
    missing = sorted(set(expected) - present)
    extra = sorted(present - set(expected))
    wrong = sorted(name for name in set(expected) & present if hash_file(folder / name, "sha256") != expected[name])
    found = ((missing, "missing"), (extra, "not in the manifest"), (wrong, "with a wrong sha256"))
    problems = [f"{len(names)} {what}, e.g. {', '.join(names[:3])}" for names, what in found if names]
    if problems:
        raise DownloadError(f"{folder}: FSDD recordings do not match {Path(manifest).name}: " + "; ".join(problems))


def read_idx(path):
    """An MNIST ``idx`` file (gzipped) as a uint8 numpy array."""
    import numpy as np

    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    if data[:3] != b"\x00\x00\x08" or len(data) < 4 + 4 * ndim:
        raise DownloadError(f"{path}: not an MNIST idx file of unsigned bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _read_mnist(folder: Path, prefix: str):
    """(images, labels) of ``train`` or ``t10k``."""
    return read_idx(folder / f"{prefix}-images-idx3-ubyte.gz"), read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")


def spectrogram(wave):
    """int16 8 kHz waveform -> float32 (20 bands, 20 time steps) log-magnitude spectrogram."""
    import numpy as np
    from scipy import signal

    x = wave[:CLIP_SAMPLES].astype(np.float32) / 32768.0
    x = np.pad(x, (0, CLIP_SAMPLES - len(x)))
    _, _, magnitude = signal.spectrogram(x, fs=SAMPLE_RATE, window="hann", nperseg=NPERSEG, noverlap=NOVERLAP,
                                         mode="magnitude")
    bands = np.stack([block.mean(axis=0) for block in np.array_split(magnitude, AUDIO_SHAPE[0], axis=0)])
    pooled = np.stack([block.mean(axis=1) for block in np.array_split(bands, AUDIO_SHAPE[1], axis=1)], axis=1)
    return np.log(pooled + LOG_EPS).astype(np.float32)


def _read_wave(path):
    from scipy.io import wavfile

    rate, wave = wavfile.read(path)
    if rate != SAMPLE_RATE or wave.ndim != 1:
        raise DownloadError(f"{path}: expected {SAMPLE_RATE} Hz mono, got {rate} Hz with shape {wave.shape}")
    return wave


def _pair(labels, recording_digits, rng):
    """For each image, the index of a recording of the same digit, cycling through a shuffled pool."""
    import numpy as np

    chosen = np.empty(len(labels), dtype=np.int32)
    for digit in range(10):
        images = np.flatnonzero(labels == digit)
        pool = rng.permutation(np.flatnonzero(recording_digits == digit))
        if len(images) and not len(pool):
            raise DownloadError(f"no recording of the digit {digit} to pair with {len(images)} images")
        if len(images):
            chosen[images] = pool[np.arange(len(images)) % len(pool)]
    return chosen


def build(source, out, *, seed=0, manifest=FSDD_MANIFEST) -> Path:
    """Pair ``source/mnist`` with ``source/fsdd/recordings`` into the folder ``out`` (written atomically).

    Writes ``{train,test}_{image,audio,label,recording}.npy`` and ``manifest.json``. Without the 60k
    MNIST training images (offline), the 10k test images are split 80/20 into train and test instead.
    """
    import numpy as np

    source, out = Path(source), Path(out)
    mnist, recordings_dir = source / "mnist", source / "fsdd" / "recordings"
    full = (mnist / "train-images-idx3-ubyte.gz").exists()
    needed = list(MNIST_FILES) if full else ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    for name in needed:
        md5 = MNIST_FILES[name][1]
        if not (mnist / name).is_file():
            raise DownloadError(f"{mnist / name}: file missing (run `python -m data_download avmnist` first)")
        actual = hash_file(mnist / name)
        if actual != md5:
            raise DownloadError(f"{mnist / name}: md5 {actual}, expected {md5}")
    check_recordings(recordings_dir, manifest)

    rng = np.random.default_rng(seed)
    names = sorted(read_manifest(manifest))
    parsed = [_RECORDING.fullmatch(name).groups() for name in names]
    digits = np.array([int(d) for d, _, _ in parsed])
    is_test_take = np.array([int(take) in FSDD_TEST_TAKES for _, _, take in parsed])
    audio = np.stack([spectrogram(_read_wave(recordings_dir / name)) for name in names])

    if full:
        splits = {"train": _read_mnist(mnist, "train"), "test": _read_mnist(mnist, "t10k")}
        counts = {split: len(labels) for split, (_, labels) in splits.items()}
        mnist_source = f"MNIST train ({counts['train']}) -> train, MNIST t10k ({counts['test']}) -> test"
    else:
        images, labels = _read_mnist(mnist, "t10k")
        order = rng.permutation(len(labels))
        n_test = int(len(labels) * TEST_FRACTION_WITHOUT_TRAIN_IMAGES)
        splits = {"train": (images[order[n_test:]], labels[order[n_test:]]),
                  "test": (images[order[:n_test]], labels[order[:n_test]])}
        mnist_source = (f"MNIST t10k only (train images absent): {len(labels) - n_test} -> train, "
                        f"{n_test} -> test (seeded shuffle)")
        print(f"{mnist}: no train-images-idx3-ubyte.gz, building from the 10k test images ({mnist_source})")

    info = {"format": "mmkd-avmnist-1", "seed": seed, "mnist_source": mnist_source,
            "image": {"shape": [28, 28], "dtype": "uint8"},
            "audio": {"shape": list(AUDIO_SHAPE), "dtype": "float32", "sample_rate": SAMPLE_RATE,
                      "clip_samples": CLIP_SAMPLES, "nperseg": NPERSEG, "noverlap": NOVERLAP,
                      "window": "hann", "value": f"log(mean magnitude over band and time segment + {LOG_EPS})"},
            "fsdd_test_takes": [FSDD_TEST_TAKES.start, FSDD_TEST_TAKES.stop - 1],
            "recordings": names, "splits": {}}
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for split, (images, labels) in splits.items():
            allowed = is_test_take if split == "test" else ~is_test_take
            pool = np.flatnonzero(allowed)
            chosen = pool[_pair(labels, digits[pool], rng)]
            np.save(tmp / f"{split}_image.npy", images)
            np.save(tmp / f"{split}_audio.npy", audio[chosen])
            np.save(tmp / f"{split}_label.npy", labels.astype(np.int64))
            np.save(tmp / f"{split}_recording.npy", chosen.astype(np.int32))
            info["splits"][split] = {"count": int(len(labels)), "recordings_used": int(len(np.unique(chosen)))}
        (tmp / "manifest.json").write_text(json.dumps(info, indent=1) + "\n")
    return out
