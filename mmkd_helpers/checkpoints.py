"""Shipped pretrained checkpoints: "load the shipped checkpoint if present, else train".

Each checkpoint is a plain model ``state_dict`` in ``mmkd_helpers/pretrained/<name>.pt`` (loaded with
``weights_only=True``) with an entry in ``pretrained/manifest.json``: method and options, the course
configuration, the data (phantom generator version and seed), steps, device, wall time, code commit,
sha256 and the validation Dice it reached. They are trained on phantom data only: checkpoints trained
on real BraTS may not be redistributed.

``mmkd checkpoints`` (:func:`build_all`) regenerates every entry of :data:`RUNS`.
"""

import contextlib
import hashlib
import io
import json
import subprocess
import time
from pathlib import Path

from .constants import MODALITIES

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
MANIFEST = PRETRAINED_DIR / "manifest.json"

RUNS = {
    "baseline": {"method": "baseline", "options": {}},
    "lckd": {"method": "lckd", "options": {}},  # LCKD-m: alpha 0.1, L1, teach students (the paper)
    "lckd_s": {"method": "lckd", "options": {"phi": "most_frequent"}},  # LCKD-s, Table 2
    # MetaKD: 2 validation patches per meta step (batch 1 takes a slow CPU path) and 10 steps per phase.
    "metakd": {"method": "metakd", "options": {"meta_batch_size": 2, "meta_steps": 10}},  # alternating (code)
    "metakd_bilevel": {"method": "metakd", "options": {"meta": "bilevel", "meta_every": 20,  # look-ahead (paper)
                                                        "meta_batch_size": 2}},
    # Ablations (LCKD Fig. 3) at a third of the step budget, compared only among themselves.
    "ablation_alpha0": {"method": "lckd", "options": {"alpha": 0.0}, "step_fraction": 1 / 3},
    "ablation_alpha0.1": {"method": "lckd", "options": {"alpha": 0.1}, "step_fraction": 1 / 3},
    "ablation_alpha0.5": {"method": "lckd", "options": {"alpha": 0.5}, "step_fraction": 1 / 3},
    "ablation_alpha1": {"method": "lckd", "options": {"alpha": 1.0}, "step_fraction": 1 / 3},
    "ablation_alpha0.1_l2": {"method": "lckd", "options": {"alpha": 0.1, "p": 2}, "step_fraction": 1 / 3},
    # The same for MetaKD (alpha 0 is the same run as LCKD's: no distillation term at all).
    "ablation_metakd_alpha0.1": {"method": "metakd", "options": {"alpha": 0.1, "meta_batch_size": 2, "meta_steps": 10},
                                 "step_fraction": 1 / 3},
    "ablation_metakd_alpha0.5": {"method": "metakd", "options": {"alpha": 0.5, "meta_batch_size": 2, "meta_steps": 10},
                                 "step_fraction": 1 / 3},
    "ablation_metakd_alpha1": {"method": "metakd", "options": {"alpha": 1.0, "meta_batch_size": 2, "meta_steps": 10},
                               "step_fraction": 1 / 3},
    "ablation_metakd_alpha0.1_l2": {"method": "metakd", "options": {"alpha": 0.1, "p": 2, "meta_batch_size": 2,
                                                                    "meta_steps": 10}, "step_fraction": 1 / 3},
}


def _early_fusion(*modalities) -> dict:
    """Course changes for ProtoKD's networks: early fusion of ``modalities``, 4-class head, no dropping."""
    return {"model": {"fusion": "early", "head": "classes", "input_modalities": list(modalities)},
            "drop_policy": "none"}


# ProtoKD (its Table 1): a full-modality teacher with the course's budget; per modality a unimodal baseline,
# pixel KD only and ProtoKD, each at half the budget (14 single-modality runs had to fit a CPU day), so the
# students compare among themselves.
RUNS["protokd_teacher"] = {"method": "baseline", "options": {}, "changes": _early_fusion(*MODALITIES)}
_HALF = {"step_fraction": 1 / 2}
_STUDENT = {"teacher": "protokd_teacher", **_HALF}
for _m in MODALITIES:
    RUNS[f"unimodal_{_m}"] = {"method": "baseline", "options": {}, "changes": _early_fusion(_m), **_HALF}
    RUNS[f"pixelkd_{_m}"] = {"method": "protokd", "options": {"beta": 0.0}, "changes": _early_fusion(_m), **_STUDENT}
    RUNS[f"protokd_{_m}"] = {"method": "protokd", "options": {}, "changes": _early_fusion(_m), **_STUDENT}
# ProtoKD's Tables 2 and 3 on T1: prototype KD only; intra-class similarities only.
RUNS["protokd_t1_proto_only"] = {"method": "protokd", "options": {"alpha": 0.0}, "changes": _early_fusion("t1"),
                                 **_STUDENT}
RUNS["protokd_t1_intra"] = {"method": "protokd", "options": {"inter_class": False}, "changes": _early_fusion("t1"),
                            **_STUDENT}

# Mind the Gap (its Tables IV and I): full-modality teachers of the course's shared-encoder family with a
# first encoder block of their own per modality (its outputs are the latents Z_j that get aligned) and a
# 4-class head for the students, one per anchor; then a student per modality, on ProtoKD's student budget:
# logit KD in KD-Net's style (ProtoKD's Eq. 1 alone) from every teacher, and ProtoKD from the teacher
# without alignment and from the paper's best anchor P*_mix.
PMIX_TEACHERS = {"none": {"anchor": "none"}, "normal": {"anchor": "normal"},
                 "t1ce": {"anchor": "modality", "modality": "t1ce"}, "mixture": {"anchor": "mixture"}}
for _anchor, _options in PMIX_TEACHERS.items():
    RUNS[f"pmix_teacher_{_anchor}"] = {
        "method": "pmix", "options": _options, "changes": {
            "model": {"head": "classes", "stem": "per_modality",
                      "latent": "gaussian" if _anchor == "normal" else "deterministic"},
            "drop_policy": "none"}}
# The unaligned teacher once more with another seed: how far two runs differing only in chance lie apart.
RUNS["pmix_teacher_none_seed1"] = {**RUNS["pmix_teacher_none"],
                                   "changes": {**RUNS["pmix_teacher_none"]["changes"], "train": {"seed": 1}}}
# How strong the alignment should be: P^k_mix with smaller λ (λ = 0 is the unaligned teacher), for validation.
for _lam in (0.01, 0.1):
    RUNS[f"pmix_teacher_t1ce_lam{_lam}"] = {**RUNS["pmix_teacher_t1ce"],
                                           "options": {**PMIX_TEACHERS["t1ce"], "lam": _lam}}
PMIX_RECIPES = {"kdnet": ({"beta": 0.0}, tuple(PMIX_TEACHERS)), "protokd": ({}, ("none", "mixture"))}
for _recipe, (_options, _anchors) in PMIX_RECIPES.items():
    for _anchor in _anchors:
        for _m in MODALITIES:
            RUNS[f"pmix_{_recipe}_{_anchor}_{_m}"] = {"method": "protokd", "options": _options,
                                                      "changes": _early_fusion(_m),
                                                      "teacher": f"pmix_teacher_{_anchor}", **_HALF}
# KD-Net-style students of the P^k teacher at the λ that ranked first on the validation cases (0.1).
for _m in MODALITIES:
    RUNS[f"pmix_kdnet_t1ce_lam0.1_{_m}"] = {**RUNS[f"pmix_kdnet_t1ce_{_m}"], "teacher": "pmix_teacher_t1ce_lam0.1"}
"""Name -> method, options, changes to the course configuration (ProtoKD's networks, a training seed), teacher run, and a
fraction of the course's step budget where it is not all of it, of every shipped checkpoint. All use the
course configuration otherwise, so their tables compare like with like."""


def run_config(name: str, config=None):
    """The course configuration of the run ``name``: the course's, with the run's share of the step budget
    and its own network and data changes (ProtoKD's early-fusion networks see all four modalities)."""
    from dataclasses import replace

    from .course import CourseConfig

    config = config or CourseConfig()
    run = RUNS[name]
    changes = dict(run.get("changes", {}))
    model = replace(config.model, **changes.pop("model", {}))
    fraction = run.get("step_fraction", 1)
    train = replace(config.train, steps=max(1, round(config.train.steps * fraction)), **changes.pop("train", {}))
    return replace(config, model=model, train=train, **changes)


def _same_config(entry: dict, config) -> bool:
    """Whether a manifest entry was trained with ``config`` (fields added to the code since take their defaults)."""
    from .course import CourseConfig

    normalised = lambda c: json.loads(json.dumps(c.to_dict()))  # noqa: E731
    return normalised(CourseConfig.from_dict(entry["config"])) == normalised(config)


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def manifest() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def available() -> list:
    return sorted(name for name in manifest() if (PRETRAINED_DIR / manifest()[name]["file"]).exists())


def load_pretrained(name: str, device="cpu"):
    """(model, manifest entry) of a shipped checkpoint; the file's sha256 is checked first."""
    import torch

    from .course import CourseConfig
    from .models import build_model

    entries = manifest()
    if name not in entries:
        raise KeyError(f"no shipped checkpoint {name!r}; available: {', '.join(sorted(entries)) or 'none'}")
    entry = entries[name]
    path = PRETRAINED_DIR / entry["file"]
    if sha256(path) != entry["sha256"]:
        raise ValueError(f"{path}: sha256 does not match the manifest; the file is damaged or was replaced")
    model = build_model(CourseConfig.from_dict(entry["config"]).model)
    model.load_state_dict(torch.load(path, map_location=device, weights_only=True))
    return model.to(device).eval(), entry


def validation_dice(model, data: dict, config) -> dict:
    """Mean Dice per region over the validation cases and the 15 combinations."""
    from .course import split_volumes
    from .evaluation import evaluate

    results = evaluate(model, split_volumes(data, "val"), config.eval_roi_size, overlap=config.eval_overlap, progress=False)
    return {region: round(float(v), 4) for region, v in results.groupby("region").dice.mean().items()}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build(name: str, config=None, device: str = "auto", progress: bool = True) -> dict:
    """Train the run ``name`` of :data:`RUNS` with the course configuration and ship its weights."""
    import torch

    from .course import ensure_phantom, load_data
    from .fileio import atomic_path, atomic_write_text
    from .phantom import PHANTOM_VERSION

    run = RUNS[name]
    course = config
    config = run_config(name, course)
    data = load_data(ensure_phantom(config), config, progress=progress)
    teacher = manifest().get(run.get("teacher"), {}).get("sha256")  # the shipped teacher train_run will load
    started = time.perf_counter()
    model, trainer = train_run(name, course, data, device, progress)
    wall = time.perf_counter() - started
    model = model.cpu().eval()
    history = trainer.history_frame()
    hook_rows = history.drop(columns=[c for c in ("loss", "seg", "kd", "proto", "lr", "seconds") if c in history]).notna()
    keep = (history["step"] % 10 == 0) | hook_rows.drop(columns="step").any(axis=1)
    with atomic_path(PRETRAINED_DIR / f"{name}_history.csv") as tmp:
        history[keep].to_csv(tmp, index=False, float_format="%.5g")
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    path = PRETRAINED_DIR / f"{name}.pt"
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    entry = {"file": path.name, "method": run["method"], "options": run["options"], "teacher": run.get("teacher"),
             "teacher_sha256": teacher, "config": config.to_dict(),
             "data": {"source": "phantom", "phantom_version": PHANTOM_VERSION, "cases": config.phantom_cases,
                      "size": config.phantom_size, "seed": config.phantom_seed, "split": data["split"]},
             "steps": config.train.steps, "device": str(trainer.device), "torch": torch.__version__,
             "wall_time_s": round(wall, 1), "commit": _commit(), "sha256": sha256(path),
             "val_dice": validation_dice(model, data, config)}
    with _manifest_lock():  # several `mmkd checkpoints` processes may finish at once
        entries = manifest()
        entries[name] = entry
        atomic_write_text(MANIFEST, json.dumps(entries, indent=1) + "\n")
    return entry


@contextlib.contextmanager
def _manifest_lock():
    """An exclusive lock around the manifest's read-modify-write (POSIX; elsewhere, run builds one at a time)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(PRETRAINED_DIR / ".manifest.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_history(name: str):
    """The training history of a shipped checkpoint (every 10th step, and every step a hook logged)."""
    import pandas as pd

    return pd.read_csv(PRETRAINED_DIR / f"{name}_history.csv")


def build_all(device: str = "auto", names=None) -> None:
    for name in names or RUNS:
        entry = build(name, device=device)
        print(f"{name}: {entry['steps']} steps in {entry['wall_time_s']} s on {entry['device']}, "
              f"val Dice {entry['val_dice']}, {(PRETRAINED_DIR / entry['file']).stat().st_size / 2**20:.2f} MiB")


def train_run(name: str, course, data: dict, device: str = "auto", progress: bool = True, teacher=None):
    """(model, trainer) after training the run ``name`` of :data:`RUNS` on ``data``'s training split.

    ``course`` is the course configuration (``None``: the default one); the run applies its own changes.
    A run distilled from a teacher run (ProtoKD's students) takes ``teacher`` if given, else the teacher
    run's shipped checkpoint, else trains the teacher first.
    """
    import torch

    from .course import CourseConfig, make_dataset, split_volumes
    from .methods import build_method
    from .models import build_model
    from .training import Trainer

    run = RUNS[name]
    course = course or CourseConfig()
    config = run_config(name, course)
    options = dict(run["options"])
    if "teacher" in run:
        if teacher is None:
            teacher, _ = pretrained_or_train(run["teacher"], course, data, device, progress)
        options["teacher"] = teacher
    torch.manual_seed(config.train.seed)
    model = build_model(config.model)
    trainer = Trainer(model, make_dataset(data["volumes"], data["split"]["train"], config), config.train,
                      build_method(run["method"], **options), device=device, progress=progress,
                      val_volumes=split_volumes(data, "val"), extra={"course": config.to_dict()})
    trainer.fit()
    return model.eval(), trainer


def pretrained_or_train(name: str, config, data: dict, device: str = "auto", progress: bool = True, teacher=None):
    """Load the shipped checkpoint ``name`` if it was trained with exactly ``config`` on this data, else train.

    Returns ``(model, info)``; ``info["source"]`` says which happened; ``info["history"]`` is the training
    history (for a shipped checkpoint, the thinned one shipped beside it); ``info["entry"]`` its manifest
    entry (None when trained here). ``config`` is the course's: a run with its own step budget or network
    (the ablations and ProtoKD runs of :data:`RUNS`) applies it itself. ``teacher``: see :func:`train_run`.
    """
    from .training import resolve_device

    course, config = config, run_config(name, config)
    entries = manifest()
    entry = entries.get(name)
    same_config = entry is not None and _same_config(entry, config)
    if same_config and "teacher" in RUNS[name]:  # a student distilled from another teacher file is another run
        same_config = entry.get("teacher_sha256") == entries.get(RUNS[name]["teacher"], {}).get("sha256")
    if same_config and entry["data"]["split"] == data["split"] and (PRETRAINED_DIR / entry["file"]).exists():
        model, entry = load_pretrained(name, device=resolve_device(device))
        return model, {"source": "shipped checkpoint", "entry": entry, "history": load_history(name)}
    model, trainer = train_run(name, course, data, device, progress, teacher)
    return model, {"source": f"trained now ({config.train.steps} steps)", "entry": None,
                   "history": trainer.history_frame()}
