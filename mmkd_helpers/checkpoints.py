"""Shipped pretrained checkpoints: "load the shipped checkpoint if present, else train".

Each checkpoint is a plain model ``state_dict`` in ``mmkd_helpers/pretrained/<name>.pt``, stored in half
precision (loaded with ``weights_only=True`` and cast back to float32; the manifest records the validation
Dice of both, which agree within 0.1 points), with an entry in ``pretrained/manifest.json``: method and
options, the course configuration, the data (phantom generator version and seed), steps, device, wall time,
code commit, sha256, the validation Dice it reached and, for the shared-encoder models, how much their
prediction relies on the features their method distils (:func:`mmkd_helpers.analysis.feature_reliance`).
Beside it: ``<name>_history.csv`` (the training history, thinned) and ``<name>_eval.csv.gz``, the Dice of
the shipped weights on every validation and test case and combination, computed when the checkpoint was
built, so that a notebook comparing many models and seeds reads them instead of re-running inference
(:func:`results_of`; the tests re-evaluate them). They are trained on phantom data only: checkpoints
trained on real BraTS may not be redistributed.

They are read through :mod:`mmkd_helpers.store` (which also reads a set you rebuilt, or one hosted at a URL).

``mmkd checkpoints`` (:func:`build_all`) regenerates every entry of :data:`RUNS`, into ``$MMKD_DATA_DIR/pretrained``
(:func:`user_pretrained_dir`; never into an installed package); ``--into-package`` rewrites the source tree's set. The headline runs are
trained with three seeds (``<name>``, ``<name>_seed1``, ``<name>_seed2``; :func:`seed_variants`), so that
every comparison can be told apart from run-to-run chance.
"""

import io
import json
import platform
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from .analysis import feature_reliance
from .constants import MODALITIES
from .course import CourseConfig, course_trainer, ensure_phantom, load_data, split_volumes
from .evaluation import evaluate
from .fileio import atomic_path, atomic_write_text
from .methods import build_method
from .models import build_model
from .phantom import PHANTOM_VERSION
from .store import (available, half_precision, load_history, load_pretrained, manifest, manifest_lock,
                    pretrained_source, sha256, shipped_results, user_pretrained_dir)
from .training import resolve_device


SEEDS = (0, 1, 2)
"""Training seeds of the headline runs: each comparison of the course is reported as mean ± SD over them."""

# LCKD elects every 250 steps (4 elections in the course's budget; the code: 23 in 115 000 steps) and MetaKD takes
# 2 validation patches per meta step (batch 1 takes a slow CPU path) and 10 steps per phase.
_LCKD = {"election_every": 250}
_METAKD = {"meta_batch_size": 2, "meta_steps": 10}
RUNS = {
    "baseline": {"method": "baseline", "options": {}},
    "lckd": {"method": "lckd", "options": {**_LCKD}},  # LCKD-m: alpha 0.1, L1, teach students (the paper)
    "lckd_s": {"method": "lckd", "options": {**_LCKD, "phi": "most_frequent"}},  # LCKD-s, Table 2
    "metakd": {"method": "metakd", "options": {**_METAKD}},  # alternating (code)
    "metakd_bilevel": {"method": "metakd", "options": {"meta": "bilevel", "meta_every": 20,  # look-ahead (paper)
                                                        "meta_batch_size": 2}},
}
# The baseline logs its validation Dice every 200 steps: the curve that shows whether the budget is enough.
RUNS["baseline"]["changes"] = {"train": {"validate_every": 200}}
# Is the course's budget enough? The README's main job must stay under 5 min on 2 cores, which bounds the course to
# 1000 steps; the baseline trained with 2000 and 4000 steps (the same schedule, stretched) shows how far from its
# plateau that leaves every method. Notebook 02 draws the three validation curves; these runs are not compared.
BUDGET_DEMOS = {f"baseline_{steps}_steps": steps for steps in (2000, 4000)}
for _name, _steps in BUDGET_DEMOS.items():
    RUNS[_name] = {"method": "baseline", "options": {}, "changes": {"train": {"steps": _steps, "validate_every": 200}}}
# Why the course's network has one skip connection, dropped for half the samples: the baseline as a classic UNet (a
# skip at every level, no skip dropout), and with the course's one skip but no skip dropout. Notebook 02 measures
# how much each relies on its bottleneck; they are shipped to show that, and are not compared as methods.
BYPASS_DEMOS = ("baseline_unet", "baseline_one_skip")
# Shipped shared-encoder runs whose prediction leans on the distilled level by less than the course's 10 Dice points,
# measured when they were built and reported as such by their notebook (not dropped, so the finding stays visible).
RELIANCE_SHORTFALLS = {
    "metakd_bilevel": "the first seed of the look-ahead MetaKD run: zeroing its bottleneck costs about 3 points (its two "
                      "other seeds pass)"}
RUNS["baseline_unet"] = {"method": "baseline", "options": {},
                         "changes": {"model": {"skip_levels": None, "skip_dropout": 0.0}}}
RUNS["baseline_one_skip"] = {"method": "baseline", "options": {}, "changes": {"model": {"skip_dropout": 0.0}}}


def _early_fusion(*modalities) -> dict:
    """Course changes for ProtoKD's networks: early fusion of ``modalities``, 4-class head, no dropping, and no
    skip dropout. ProtoKD distils at the output (logits, last-decoder features), which the full-resolution skip
    feeds; skip dropout is there to make a shared-encoder bottleneck drive the prediction, and on a one-channel
    student it only prolongs the all-background start: on validation, the T1ce student at seed 0 is still at
    WT Dice 0.00 after 200 steps either way and ends its 500 steps at WT 0.07 with skip dropout, 0.33 without."""
    return {"model": {"fusion": "early", "head": "classes", "input_modalities": list(modalities), "skip_dropout": 0.0},
            "drop_policy": "none"}


# ProtoKD (its Table 1): a full-modality teacher; per modality a unimodal baseline and ProtoKD student, each with
# the teacher's budget (the course's), as the paper trains its students as long as its teacher.
RUNS["protokd_teacher"] = {"method": "baseline", "options": {}, "changes": _early_fusion(*MODALITIES)}
_STUDENT = {"teacher": "protokd_teacher"}
for _m in MODALITIES:
    RUNS[f"unimodal_{_m}"] = {"method": "baseline", "options": {}, "changes": _early_fusion(_m)}
    RUNS[f"protokd_{_m}"] = {"method": "protokd", "options": {}, "changes": _early_fusion(_m), **_STUDENT}

# Mind the Gap (its Tables IV and I): full-modality teachers of the course's shared-encoder family with a
# first encoder block of their own per modality (its outputs are the latents Z_j that get aligned) and a
# 4-class head for the students: without alignment and with the paper's best anchor P*_mix; then a student per
# modality and teacher, as ProtoKD's students, with logit KD in KD-Net's style (ProtoKD's Eq. 1 alone).
PMIX_TEACHERS = {"none": {"anchor": "none"}, "mixture": {"anchor": "mixture"}}
for _anchor, _options in PMIX_TEACHERS.items():
    RUNS[f"pmix_teacher_{_anchor}"] = {
        "method": "pmix", "options": _options, "changes": {
            "model": {"head": "classes", "stem": "per_modality", "latent": "deterministic"},
            "drop_policy": "none"}}
    for _m in MODALITIES:
        RUNS[f"pmix_kdnet_{_anchor}_{_m}"] = {"method": "protokd", "options": {"beta": 0.0},
                                              "changes": _early_fusion(_m),
                                              "teacher": f"pmix_teacher_{_anchor}"}


def _add_seeds(name: str, seeds=SEEDS[1:]) -> None:
    """Replicates ``<name>_seed<s>`` of a run that differ only in the training seed (the network's
    initialisation and the sample stream; MetaKD's importance-weight initialisation and meta patches too).
    A student of a teacher that has replicates of its own learns from the teacher of the same seed."""
    run = RUNS[name]
    for seed in seeds:
        changes = dict(run.get("changes", {}))
        changes["train"] = {**changes.get("train", {}), "seed": seed}
        replicate = {**run, "changes": changes}
        if run["method"] == "metakd":
            replicate["options"] = {**run["options"], "seed": seed}
        if f"{run.get('teacher')}_seed{seed}" in RUNS:
            replicate["teacher"] = f"{run['teacher']}_seed{seed}"
        RUNS[f"{name}_seed{seed}"] = replicate


# Three seeds for every method of the side-by-side table (notebook 09): the baseline, LCKD-m and LCKD-s, MetaKD in
# the code's and the paper's scheme, and the students of every modality (ProtoKD's, Mind the Gap's with the P*_mix
# teacher) against the unimodal network: students of the one seed-0 teacher, so the seeds measure the student's own
# spread. The other runs have one seed (Mind the Gap's teachers and its students of the unaligned teacher, the
# demonstrations): the CPU budget and the size of the shipped set did not allow more, and the notebooks say so.
for _name in ("baseline", "lckd", "lckd_s", "metakd", "metakd_bilevel",
              *(f"{kind}_{m}" for m in MODALITIES for kind in ("unimodal", "protokd", "pmix_kdnet_mixture"))):
    _add_seeds(_name)
for _s in SEEDS[1:]:  # the validation curve is drawn once
    RUNS[f"baseline_seed{_s}"]["changes"]["train"].pop("validate_every")
"""Name -> method, options, changes to the course configuration (ProtoKD's networks, a training seed) and teacher run
of every shipped checkpoint. All use the
course configuration otherwise, so their tables compare like with like."""


def seed_variants(name: str, seeds: int = len(SEEDS)) -> list:
    """``name`` and its seed replicates in :data:`RUNS`, at most ``seeds`` of them: ``["lckd", "lckd_seed1", ...]``."""
    if name not in RUNS:
        raise KeyError(f"no run {name!r}")
    return [name] + [f"{name}_seed{s}" for s in SEEDS[1:seeds] if f"{name}_seed{s}" in RUNS]


def run_config(name: str, config=None):
    """The course configuration of the run ``name``: the course's, with the run's own network, data and training
    changes (ProtoKD's early-fusion networks, a training seed)."""

    config = config or CourseConfig()
    run = RUNS[name]
    changes = dict(run.get("changes", {}))
    model = replace(config.model, **changes.pop("model", {}))
    train = replace(config.train, **changes.pop("train", {}))
    return replace(config, model=model, train=train, **changes)


def _same_config(entry: dict, config) -> bool:
    """Whether a manifest entry was trained with ``config`` (fields added to the code since take their defaults)."""

    normalised = lambda c: json.loads(json.dumps(c.to_dict()))  # noqa: E731
    return normalised(CourseConfig.from_dict(entry["config"])) == normalised(config)


def evaluate_splits(model, data: dict, config, splits=("val", "test"), cases=None):
    """Dice of ``model`` on every case of ``splits`` (or only ``cases``) and every combination it is evaluated
    on, with the course's evaluation (windows of the training crop): :func:`~mmkd_helpers.evaluation.evaluate`'s
    long table with a ``split`` column."""

    tables = []
    for split in splits:
        volumes = [(c, *data["volumes"][c]) for c in data["split"][split] if cases is None or c in cases]
        if volumes:
            tables.append(evaluate(model, volumes, config.roi_size, overlap=config.eval_overlap, progress=False)
                          .assign(split=split))
    return pd.concat(tables, ignore_index=True)


def mean_dice(results) -> dict:
    """``{region: mean Dice}`` over the cases and combinations of ``results``, rounded to 4 decimals."""
    return {region: round(float(v), 4) for region, v in results.groupby("region").dice.mean().items()}


def validation_dice(model, data: dict, config) -> dict:
    """Mean Dice per region over the validation cases and the combinations the model is evaluated on."""
    return mean_dice(evaluate_splits(model, data, config, ("val",)))


DISTILLED_LEVEL = {"baseline": -1, "lckd": -1, "metakd": -1}
"""The encoder level each shared-encoder method distils at (the bottleneck; the baseline is measured there too,
where the mean filling of Eq. 5 acts); Mind the Gap aligns its own ``level`` option."""


def distilled_level(run: dict) -> int | None:
    """The encoder level whose reliance is measured for a run (None: not a shared-encoder model)."""
    if run.get("changes", {}).get("model", {}).get("fusion", "shared") != "shared":
        return None
    if run["method"] == "pmix":
        return int(run["options"].get("level", 0))
    return DISTILLED_LEVEL[run["method"]]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build(name: str, config=None, device: str = "auto", progress: bool = True, out_dir=None) -> dict:
    """Train the run ``name`` of :data:`RUNS` with the course configuration and write its weights, its history,
    its Dice on every validation and test case, and its manifest entry into ``out_dir`` (default:
    :func:`user_pretrained_dir`). A student learns from its teacher in ``out_dir`` if that holds one, else from
    the set that is read by default."""

    run = RUNS[name]
    out_dir = Path(out_dir) if out_dir is not None else user_pretrained_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    course = config
    config = run_config(name, course)
    data = load_data(ensure_phantom(config), config, progress=progress)
    source = out_dir if run.get("teacher") in manifest(out_dir) else pretrained_source()
    teacher = manifest(source).get(run.get("teacher"), {}).get("sha256")  # the teacher train_run will load
    started = time.perf_counter()
    model, trainer = train_run(name, course, data, device, progress, source=source)
    wall = time.perf_counter() - started
    model = model.cpu().eval()
    history = trainer.history_frame()
    hook_rows = history.drop(columns=[c for c in ("loss", "seg", "kd", "proto", "align", "lr", "seconds")
                                      if c in history]).notna()
    keep = (history["step"] % 10 == 0) | hook_rows.drop(columns="step").any(axis=1)
    fp32_cases = data["split"]["val"][:3]  # the half-precision check: three validation cases are enough
    val_fp32 = mean_dice(evaluate_splits(model, data, config, ("val",), cases=fp32_cases))
    state = half_precision(model.state_dict())
    shipped = build_model(config.model)  # what a user will load: the half-precision weights, cast back
    shipped.load_state_dict({key: value.float() if value.is_floating_point() else value for key, value in state.items()})
    shipped.eval()
    results = evaluate_splits(shipped, data, config)
    reliance = None
    if distilled_level(run) is not None:
        reliance = feature_reliance(shipped, split_volumes(data, "val"), config.roi_size, distilled_level(run),
                                    overlap=config.eval_overlap, intact=results[results.split == "val"])
        reliance = {key: (round(v, 4) if isinstance(v, float) else v) for key, v in reliance.items()}
    with atomic_path(out_dir / f"{name}_history.csv") as tmp:
        history[keep].to_csv(tmp, index=False, float_format="%.5g")
    with atomic_path(out_dir / f"{name}_eval.csv.gz") as tmp:
        results.to_csv(tmp, index=False, float_format="%.5f", compression={"method": "gzip", "mtime": 0})
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = out_dir / f"{name}.pt"
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    entry = {"file": path.name, "method": run["method"], "options": run["options"], "teacher": run.get("teacher"),
             "teacher_sha256": teacher, "config": config.to_dict(),
             "data": {"source": "phantom", "phantom_version": PHANTOM_VERSION, "cases": config.phantom_cases,
                      "size": config.phantom_size, "seed": config.phantom_seed, "split": data["split"]},
             "steps": config.train.steps, "device": str(trainer.device),
             "device_name": _device_name(trainer.device), "torch": torch.__version__,
             "wall_time_s": round(wall, 1), "commit": _commit(), "sha256": sha256(path), "precision": "float16",
             "val_dice": mean_dice(results[results.split == "val"]), "val_dice_fp32": val_fp32,
             "val_dice_fp32_cases": fp32_cases,
             "test_dice": mean_dice(results[results.split == "test"]),
             "eval_file": f"{name}_eval.csv.gz", "eval_sha256": sha256(out_dir / f"{name}_eval.csv.gz"),
             "reliance": reliance}
    with manifest_lock(out_dir):  # several `mmkd checkpoints` processes may finish at once
        entries = manifest(out_dir)
        entries[name] = entry
        atomic_write_text(out_dir / "manifest.json", json.dumps(entries, indent=1) + "\n")
    return entry


def _device_name(device) -> str:
    """What the checkpoint was trained on, in words (a GPU's model name; else the CPU's)."""

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def build_all(device: str = "auto", names=None, out_dir=None) -> Path:
    """Build the runs ``names`` (default: all of :data:`RUNS`) into ``out_dir`` (see :func:`build`); returns it."""
    out_dir = Path(out_dir) if out_dir is not None else user_pretrained_dir()
    for name in names or RUNS:
        entry = build(name, device=device, out_dir=out_dir)
        print(f"{name}: {entry['steps']} steps in {entry['wall_time_s']} s on {entry['device']}, "
              f"val Dice {entry['val_dice']}, {(out_dir / entry['file']).stat().st_size / 2**20:.2f} MiB")
    return out_dir


def train_run(name: str, course, data: dict, device: str = "auto", progress: bool = True, teacher=None,
              source=None):
    """(model, trainer) after training the run ``name`` of :data:`RUNS` on ``data``'s training split.

    ``course`` is the course configuration (``None``: the default one); the run applies its own changes.
    A run distilled from a teacher run (ProtoKD's students) takes ``teacher`` if given, else the teacher
    run's checkpoint in ``source`` (default: :func:`pretrained_source`), else trains the teacher first.
    """

    run = RUNS[name]
    course = course or CourseConfig()
    config = run_config(name, course)
    options = dict(run["options"])
    if "teacher" in run:
        if teacher is None:
            teacher, _ = pretrained_or_train(run["teacher"], course, data, device, progress, source=source)
        options["teacher"] = teacher
    trainer = course_trainer(config, data, build_method(run["method"], **options), device=device, progress=progress)
    trainer.fit()
    return trainer.model.eval(), trainer


def shipped_matches(name: str, config, data: dict, source=None) -> bool:
    """Whether the set ``source`` (default: :func:`pretrained_source`) holds the run ``name`` trained with the course
    configuration ``config`` (the run's own changes applied) on the split of ``data``, and, for a student, distilled
    from the teacher file that set holds now."""
    source = pretrained_source(source)
    entries = manifest(source)
    entry = entries.get(name)
    if entry is None or name not in available(source) or not _same_config(entry, run_config(name, config)):
        return False
    if "teacher" in RUNS[name] and entry.get("teacher_sha256") != entries.get(RUNS[name]["teacher"], {}).get("sha256"):
        return False  # a student distilled from another teacher file is another run
    return entry["data"]["split"] == data["split"]


def pretrained_or_train(name: str, config, data: dict, device: str = "auto", progress: bool = True, teacher=None,
                        source=None):
    """Load the shipped checkpoint ``name`` if it was trained with exactly ``config`` on this data, else train.

    Returns ``(model, info)``; ``info["source"]`` says which happened; ``info["history"]`` is the training
    history (for a shipped checkpoint, the thinned one shipped beside it); ``info["entry"]`` its manifest
    entry (None when trained here). ``config`` is the course's: a run with its own network or seed
    (the ablations and ProtoKD runs of :data:`RUNS`) applies it itself. ``teacher``: see :func:`train_run`;
    ``source``: the set of checkpoints (default: :func:`pretrained_source`).
    """
    course, config = config, run_config(name, config)
    source = pretrained_source(source)
    if shipped_matches(name, course, data, source):
        model, entry = load_pretrained(name, device=resolve_device(device), source=source)
        return model, {"source": "shipped checkpoint", "entry": entry, "history": load_history(name, source)}
    model, trainer = train_run(name, course, data, device, progress, teacher, source)
    return model, {"source": f"trained now ({config.train.steps} steps)", "entry": None,
                   "history": trainer.history_frame()}


def results_of(name: str, config, data: dict, split="test", device: str = "auto", progress: bool = False,
               teacher=None, source=None):
    """(model, Dice table on ``split``, info) of the run ``name``: the shipped checkpoint and the Dice its build
    measured when both match ``config`` and ``data`` (see :func:`pretrained_or_train`), else a model trained
    and evaluated now. ``split`` may also be a tuple of splits: the tables then come as ``{split: table}``
    (one training, when it has to train). ``info["results_source"]`` says where the tables come from; the tests
    re-evaluate the shipped ones."""

    model, info = pretrained_or_train(name, config, data, device, progress, teacher, source)
    run = run_config(name, config)
    tables, sources = {}, set()
    for one in ([split] if isinstance(split, str) else list(split)):
        cases = list(data["split"][one])
        table = shipped_results(name, one, source) if info["entry"] is not None else None
        if table is not None and sorted(table.case.unique()) == sorted(cases):
            sources.add("measured when the checkpoint was built")
        else:
            volumes = [(c, *data["volumes"][c]) for c in cases]
            table = evaluate(model, volumes, run.roi_size, overlap=run.eval_overlap, progress=progress)
            sources.add("evaluated now")
        tables[one] = table
    info["results_source"] = " and ".join(sorted(sources))
    return model, (tables[split] if isinstance(split, str) else tables), info
