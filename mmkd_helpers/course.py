"""The one course configuration, shared by every method, so that every table compares like with like.

Data (which cases, which split), preprocessing, backbone size, crop, step budget and evaluation live in
:class:`CourseConfig`. The CLI and the notebooks both build runs from it; a method changes only its own
options. ``CourseConfig.fast()`` is the tiny variant the tests and ``FAST=True`` notebooks use.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .data import find_cases
from .dataset import PatchDataset
from .evaluation import OVERLAP
from .fileio import atomic_path, file_lock
from .models import ModelConfig, build_model
from .paths import default_data_dir
from .phantom import PHANTOM_VERSION, generate_dataset
from .preprocess import PreprocessConfig, cache_cases, load_cached
from .training import TrainConfig, Trainer


@dataclass
class CourseConfig:
    # data: phantom cases generated on the fly unless a data folder is given
    phantom_cases: int = 60
    phantom_size: int = 64
    phantom_seed: int = 0
    spacing: float | None = None  # resample real data to this many mm (2 or 3 fits a CPU); None keeps it
    val_fraction: float = 0.2  # of the training cases: teacher election, meta steps, model selection
    test_fraction: float = 0.2
    split_seed: int = 0
    # model and training
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1000, batch_size=2, lr=6e-3))
    roi_size: tuple = (32, 32, 32)
    fg_prob: float = 0.5
    drop_policy: str = "uniform15"
    full_modality_steps: int = 0  # first steps with all four modalities (the LCKD/MetaKD code's warm-up stage)
    # evaluation: sliding windows of the training crop (roi_size), so that the network sees at test what it saw
    # in training (evaluation.check_window says why); overlap between neighbouring windows
    eval_overlap: float = OVERLAP

    @classmethod
    def fast(cls, **changes) -> "CourseConfig":
        """Tiny sizes for tests and ``FAST=True`` notebooks: seconds, not minutes. Numbers are meaningless."""
        base = cls(phantom_cases=6, phantom_size=32, model=ModelConfig(base_channels=4, depth=3),
                   train=TrainConfig(steps=4, batch_size=1), roi_size=(16, 16, 16))
        return replace(base, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "CourseConfig":
        values = dict(values)
        values.pop("eval_roi_size", None)  # before 2026-12 the window was a setting; it is now the training crop
        values["model"] = ModelConfig(**values.get("model", {}))
        values["train"] = TrainConfig(**values.get("train", {}))
        if "roi_size" in values:
            values["roi_size"] = tuple(values["roi_size"])
        return cls(**values)


REAL_DATA_SPACING = 2.0
"""Real BraTS cases (1 mm, 240x240x155) are resampled to this spacing in the course so they fit a CPU."""


def course_config(fast: bool = False, real_data: bool = False, **changes) -> CourseConfig:
    """The course configuration a notebook or the CLI starts from: tiny when ``fast``, resampled when real."""
    config = CourseConfig.fast() if fast else CourseConfig()
    if real_data:
        changes.setdefault("spacing", 4.0 if fast else REAL_DATA_SPACING)  # FAST: 4 mm volumes, about 40^3
    return replace(config, **changes)


def split_cases(case_ids, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> dict:
    """Seeded split into ``train`` / ``val`` / ``test`` lists of case ids.

    ``test`` takes ``test_fraction`` of all cases (at least one), ``val`` takes ``val_fraction`` of the
    rest (at least one when there are three or more cases): the validation cases are held out from
    training, as the LCKD paper's teacher-election set (20 % of the training data).
    """
    ids = sorted(case_ids)
    if len(ids) < 2:
        raise ValueError(f"need at least 2 cases to split, got {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_test = max(1, int(round(test_fraction * len(ids)))) if test_fraction > 0 else 0
    rest = len(ids) - n_test
    n_val = max(1 if rest >= 2 else 0, int(round(val_fraction * rest))) if val_fraction > 0 else 0
    pick = lambda idx: sorted(ids[i] for i in idx)  # noqa: E731
    return {"train": pick(order[n_test + n_val:]), "val": pick(order[n_test:n_test + n_val]),
            "test": pick(order[:n_test])}


def phantom_dir(config: CourseConfig, root=None) -> Path:
    """Where the course's phantom cases live (generated on first use, then reused)."""

    root = Path(root) if root is not None else default_data_dir()
    return root / f"phantom-v{PHANTOM_VERSION}-n{config.phantom_cases}-s{config.phantom_size}-seed{config.phantom_seed}"


def ensure_phantom(config: CourseConfig, root=None) -> Path:
    """Generate the phantom data set of ``config`` unless it is already there; returns its folder.

    The folder appears complete or not at all; a second process asking meanwhile waits for it."""

    folder = phantom_dir(config, root)
    marker = folder / "phantom.json"
    if marker.exists():
        return folder
    with file_lock(folder.with_name(folder.name + ".lock"),
                   waiting=f"{folder}: another process is generating it; waiting for it to finish"):
        if not marker.exists():  # unless the process we waited for generated it
            with atomic_path(folder) as tmp:
                generate_dataset(tmp, config.phantom_cases, size=config.phantom_size, seed=config.phantom_seed)
                (tmp / marker.name).write_text(json.dumps({"n": config.phantom_cases, "size": config.phantom_size,
                                                           "seed": config.phantom_seed}))
    return folder


def load_data(data_dir, config: CourseConfig, cache_dir=None, progress: bool = True) -> dict:
    """Read, check, preprocess (cached) and split a data folder.

    Returns ``{"split": {train, val, test: [case ids]}, "volumes": {case_id: (images, label)}}`` with
    memory-mapped arrays.
    """

    refs = find_cases(data_dir)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_data_dir() / "cache"
    source = Path(data_dir).resolve()
    tag = f"{source.name}-{hashlib.sha256(str(source).encode()).hexdigest()[:8]}"
    entries = cache_cases(refs, cache_dir / tag, PreprocessConfig(spacing=config.spacing), progress=progress)
    volumes = {entry["case_id"]: load_cached(entry) for entry in entries}
    split = split_cases(list(volumes), config.val_fraction, config.test_fraction, config.split_seed)
    return {"split": split, "volumes": volumes}


def split_volumes(data: dict, split: str) -> list:
    """``[(case_id, images, label), ...]`` of one split (``train``, ``val`` or ``test``) of :func:`load_data`."""
    return [(case_id, *data["volumes"][case_id]) for case_id in data["split"][split]]


def course_trainer(config: CourseConfig, data: dict, method, **options):
    """The one way a course run is set up (CLI, shipped checkpoints, benchmarks): the network of ``config.model``
    initialised from ``config.train.seed``, training patches of ``data``'s training cases, its validation cases
    for the hooks and curves, and the course configuration recorded in ``extra["course"]`` (saved in every
    checkpoint; LCKD and MetaKD read their crop from it). ``options`` go to :class:`~mmkd_helpers.training.Trainer`
    (``device``, ``out_dir``, ``progress``, more ``extra``)."""

    torch.manual_seed(config.train.seed)
    model = build_model(config.model)
    extra = {"course": config.to_dict(), **options.pop("extra", {})}
    return Trainer(model, make_dataset(data["volumes"], data["split"]["train"], config), config.train, method,
                   val_volumes=split_volumes(data, "val"), extra=extra, **options)


def make_dataset(volumes: dict, case_ids, config: CourseConfig, seed: int | None = None):
    """The training :class:`~mmkd_helpers.dataset.PatchDataset` of the course for ``case_ids``."""

    return PatchDataset([volumes[c] for c in case_ids], config.roi_size, fg_prob=config.fg_prob,
                        drop_policy=config.drop_policy, seed=config.train.seed if seed is None else seed,
                        full_modality_samples=config.full_modality_steps * config.train.batch_size)
