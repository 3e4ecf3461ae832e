"""Sets of trained checkpoints: where a set lives, and reading it with every file's sha256 checked.

A set is a folder (or a URL serving the same files) with ``manifest.json`` -- ``{name: entry}``, each entry naming
its weights file (a float16 ``state_dict``), its sha256, its configuration and the Dice it reached -- and, per
checkpoint, ``<name>_history.csv`` and ``<name>_eval.csv.gz``. The package ships one set in ``pretrained/``
(:mod:`mmkd_helpers.checkpoints` says how it was trained); ``source=`` or ``$MMKD_PRETRAINED`` names another. A
URL's files are downloaded once into ``$MMKD_DATA_DIR/pretrained-cache`` and checked against the manifest, so a
set can be hosted anywhere without a code change. This module sits below the methods and the training engine
(ProtoKD loads its teacher through it), so it imports only the network definitions.
"""

import functools
import hashlib
import json
import os
import shutil
import urllib.request
from pathlib import Path

import pandas as pd
import torch

from .fileio import atomic_path, file_lock
from .models import build_model
from .paths import default_data_dir

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
"""The checkpoints shipped with the package."""
MANIFEST = PRETRAINED_DIR / "manifest.json"
PRETRAINED_ENV = "MMKD_PRETRAINED"
"""Names another set of checkpoints (a folder or a URL) that replaces the shipped one wherever none is passed."""

def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def user_pretrained_dir() -> Path:
    """Where ``mmkd checkpoints`` writes the checkpoints a user rebuilds: ``$MMKD_DATA_DIR/pretrained``."""
    return default_data_dir() / "pretrained"


def pretrained_source(source=None):
    """The set of checkpoints to read: ``source``, else ``$MMKD_PRETRAINED``, else the shipped folder."""
    return source or os.environ.get(PRETRAINED_ENV) or PRETRAINED_DIR


def _is_url(source) -> bool:
    return isinstance(source, str) and "://" in source


def _download(url: str, path: Path, expected_sha256=None) -> Path:
    """``url`` into ``path``, atomically; refused (nothing kept) when its sha256 is not the expected one."""
    try:
        with atomic_path(path) as tmp:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
            if expected_sha256 is not None and sha256(tmp) != expected_sha256:
                raise ValueError(f"{url}: sha256 does not match the manifest; the file was not kept")
    except OSError as error:  # urllib's URLError and HTTPError are OSErrors
        raise OSError(f"{url}: cannot download it ({error})") from None
    return path


@functools.lru_cache(maxsize=None)
def _remote_manifest(url: str) -> Path:  # once per process: a later run sees a newer manifest
    return _download(f"{url.rstrip('/')}/manifest.json", _cache_dir(url) / "manifest.json")


def _cache_dir(url: str) -> Path:
    return default_data_dir() / "pretrained-cache" / hashlib.sha256(url.encode()).hexdigest()[:16]


def _local_file(source, filename: str, expected_sha256=None) -> Path:
    """The local path of ``filename`` in the set ``source``: in the folder, or downloaded once from the URL."""
    if not _is_url(source):
        return Path(source) / filename
    path = _cache_dir(source) / filename
    if not (path.exists() and expected_sha256 is not None and sha256(path) == expected_sha256):
        _download(f"{source.rstrip('/')}/{filename}", path, expected_sha256)
    return path


def manifest(source=None) -> dict:
    """``{name: entry}`` of a set of checkpoints (default: :func:`pretrained_source`); ``{}`` where there is none."""
    source = pretrained_source(source)
    path = _remote_manifest(source) if _is_url(source) else Path(source) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def available(source=None) -> list:
    source = pretrained_source(source)
    entries = manifest(source)
    return sorted(name for name, entry in entries.items() if _is_url(source) or (Path(source) / entry["file"]).exists())


def load_pretrained(name: str, device="cpu", source=None):
    """(model, manifest entry) of a checkpoint of a set (default: :func:`pretrained_source`); the file's sha256 is
    checked first."""
    source = pretrained_source(source)
    entries = manifest(source)
    if name not in entries:
        raise KeyError(f"no checkpoint {name!r} in {source}; available: {', '.join(sorted(entries)) or 'none'}")
    entry = entries[name]
    path = _local_file(source, entry["file"], entry["sha256"])
    if sha256(path) != entry["sha256"]:
        raise ValueError(f"{path}: sha256 does not match the manifest; the file is damaged or was replaced")
    model = build_model(entry["config"]["model"])
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({key: value.float() if value.is_floating_point() else value for key, value in state.items()})
    return model.to(device).eval(), entry


def half_precision(state: dict) -> dict:
    """A state dict with its floating-point tensors in float16: half the file, Dice within 0.1 points."""
    return {key: value.half() if value.is_floating_point() else value for key, value in state.items()}


def manifest_lock(folder: Path):
    """An exclusive lock around the manifest's read-modify-write: several builds may finish at once."""
    return file_lock(Path(folder) / ".manifest.lock", waiting=f"{folder}: waiting for another build to write the manifest")


def load_history(name: str, source=None):
    """The training history of a checkpoint (every 10th step, and every step a hook logged)."""
    return pd.read_csv(_local_file(pretrained_source(source), f"{name}_history.csv"))


def shipped_results(name: str, split: str = "test", source=None):
    """The Dice table a checkpoint's build measured on ``split`` (``evaluate``'s long format), or None when the
    set (default: :func:`pretrained_source`) has no such table."""
    source = pretrained_source(source)
    entry = manifest(source).get(name)
    if not entry or not entry.get("eval_file") or not (_is_url(source) or (Path(source) / entry["eval_file"]).exists()):
        return None
    path = _local_file(source, entry["eval_file"], entry["eval_sha256"])
    if sha256(path) != entry["eval_sha256"]:
        raise ValueError(f"{path}: sha256 does not match the manifest")
    table = pd.read_csv(path)
    return table[table.split == split].drop(columns="split").reset_index(drop=True)
