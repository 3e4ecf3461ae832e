"""The ``mmkd`` command line: phantom data, training, evaluation, downloads and benchmarks.

Heavy libraries (torch, MONAI) are imported inside the commands, so ``mmkd --help`` answers at once.
Bad input ends with one line ``mmkd: error: <file>: <what is wrong>`` and a non-zero exit code, and
leaves nothing half-written behind.
"""

import argparse
import json
import sys
from pathlib import Path

from .constants import MODALITIES
from .fileio import one_line


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad option reported on one line (``--help`` still shows the usage)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _roi(text: str) -> tuple:
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or X,Y,Z in voxels, got {text!r}") from None
    if len(parts) not in (1, 3) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected N or X,Y,Z with positive sizes, got {text!r}")
    return tuple(parts * 3) if len(parts) == 1 else tuple(parts)


def _at_least(minimum, kind=int):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value >= minimum or value != value:  # the second test refuses NaN
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value
    return parse


def _positive_float(text: str) -> float:
    value = _at_least(0.0, float)(text)
    if value == 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _at_least(0.0, float)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _modalities(text: str) -> tuple:
    names = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    unknown = [m for m in names if m not in MODALITIES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"modalities must be among {', '.join(MODALITIES)}, got {text!r}")
    return names


def _option(text: str):
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mmkd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="write BraTS-format phantom cases")
    p.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per case)")
    p.add_argument("--n", type=_at_least(1), default=24, help="number of cases")
    p.add_argument("--size", type=_at_least(8), default=64, help="voxels per axis")
    p.add_argument("--spacing", type=_positive_float, default=None,
                   help="voxel size in mm (default: brain fills the volume)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train", help="train a method on a BraTS- or MSD-layout folder (or on phantoms)")
    p.add_argument("--method", default=None, help="baseline (default), lckd, metakd, pmix, protokd")
    p.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                   help="a method option (repeatable), e.g. --option alpha=0.1")
    p.add_argument("--data", type=Path, default=None, help="data folder; default: the course's phantom cases")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoint last.pt, history.csv)")
    p.add_argument("--steps", type=_at_least(1), default=None,
                   help="training steps; with --resume, a larger number extends the run")
    p.add_argument("--batch-size", type=_at_least(1), default=None)
    p.add_argument("--roi", type=_roi, default=None, help="training crop, e.g. 32 or 32,32,32")
    p.add_argument("--spacing", type=_positive_float, default=None, help="resample real data to this many mm (2 or 3)")
    p.add_argument("--base-channels", type=_at_least(1), default=None, help="backbone width (8 = teaching size)")
    p.add_argument("--backbone", choices=["unet", "lckd_resnet50_aspp", "protokd_vnet"], default=None,
                   help="unet: the course's teaching UNet (default, 0.37 M parameters); lckd_resnet50_aspp: the LCKD/"
                        "MetaKD code's WS-ResNet-50 + ASPP (43.7 M; crop sides multiples of 32, 32, 16); protokd_vnet: "
                        "ProtoKD's VNet (9.4 M, early fusion; multiples of 16). The papers' networks train without "
                        "skip dropout unless --skip-dropout is given")
    p.add_argument("--fusion", choices=["shared", "early"], default=None,
                   help="shared: one encoder per modality (LCKD, MetaKD; default); early: modalities as input "
                        "channels (ProtoKD's teacher and students)")
    p.add_argument("--modalities", type=_modalities, default=None, metavar="M[,M...]",
                   help="early fusion: the input modalities, e.g. t1 (a student) or flair,t1,t1ce,t2 (a teacher)")
    p.add_argument("--head", choices=["regions", "classes"], default=None,
                   help="regions: ET/TC/WT sigmoids (default); classes: 4-class softmax (ProtoKD)")
    p.add_argument("--latent", choices=["deterministic", "gaussian"], default=None,
                   help="gaussian: mean / log-variance heads on the first encoder stage (Mind the Gap's P^N_mix)")
    p.add_argument("--stem", choices=["shared", "per_modality"], default=None,
                   help="per_modality: each modality's own first encoder block (Mind the Gap's teachers)")
    p.add_argument("--skip-dropout", type=float, default=None,
                   help="probability that a training sample's skip connection is switched off (default 0.5 with "
                        "shared encoders, where it makes the distilled bottleneck drive the prediction; 0 with "
                        "--fusion early, as for the course's ProtoKD networks)")
    p.add_argument("--drop-policy", default=None, help="uniform15 | keep1to3 | keep1to4 | none")
    p.add_argument("--val-fraction", type=_fraction, default=None, help="share of the training cases held out (0.2)")
    p.add_argument("--test-fraction", type=_fraction, default=None, help="share of all cases held out for testing (0.2)")
    p.add_argument("--lr", type=_positive_float, default=None, help="peak learning rate (may change on --resume)")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default=None,
                   help="adamw (the course's: decoupled weight decay on >= 2-D weights), adam (L2 decay in the "
                        "gradient), sgd (Nesterov, momentum 0.99: the LCKD/MetaKD code)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--checkpoint-every", type=_at_least(0), default=None, help="steps between checkpoints (0: at the end)")
    p.add_argument("--workers", type=_at_least(0), default=None, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out: model, data and method come from its checkpoint, the schedule "
                        "(--steps, --lr, --checkpoint-every) from the flags")
    p.add_argument("--fast", action="store_true", help="tiny sizes (smoke test)")

    p = sub.add_parser("evaluate", help="Dice per case, region and modality combination of a checkpoint")
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--data", type=Path, default=None, help="data folder; default: the run's own data")
    p.add_argument("--out", required=True, type=Path, help="results CSV (long format)")
    p.add_argument("--cases", default="test", choices=["test", "val", "train", "all"],
                   help="which split of the run's data to evaluate ('all' for a different data set)")
    p.add_argument("--window", type=_roi, default=None,
                   help="sliding window; default and only accepted value: the run's training crop")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("predict", help="segment a patient (or a folder of them) with whichever modalities it has")
    p.add_argument("--checkpoint", required=True, type=Path, help="a run's last.pt")
    p.add_argument("--case", required=True, type=Path,
                   help="a BraTS-layout case folder (<case>_<modality>.nii.gz files) or a folder of cases")
    p.add_argument("--out", required=True, type=Path,
                   help="label map (.nii.gz, BraTS labels 0/1/2/4 in the case's own grid); a folder for many cases")
    p.add_argument("--modalities", type=_modalities, default=None, metavar="M[,M...]",
                   help="use only these of the case's modalities (default: all it has)")
    p.add_argument("--device", default="auto")

    p = sub.add_parser("calibrate", help="per region: volume fraction of the brain and each modality's voxel-wise AUC")
    p.add_argument("data", type=Path, help="a BraTS- or MSD-layout folder with label maps")
    p.add_argument("--spacing", type=float, default=2.0, help="resample finer data to this many mm first (2: the course's)")
    p.add_argument("--out", type=Path, default=None, help="write the summary table (mean, SD over cases) to this CSV")

    sub.add_parser("download", help="download and verify real data sets (see data_download/README.md)",
                   add_help=False).add_argument("args", nargs=argparse.REMAINDER)
    p = sub.add_parser("checkpoints", help="retrain the course's checkpoints (into $MMKD_DATA_DIR/pretrained)")
    p.add_argument("names", nargs="*", help="only these runs (default: all)")
    p.add_argument("--device", default="auto")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=None,
                       help="folder for the checkpoints and their manifest (default: $MMKD_DATA_DIR/pretrained); "
                            "read them with MMKD_PRETRAINED=<folder>")
    where.add_argument("--into-package", action="store_true",
                       help="maintainers: rewrite the shipped set in a source checkout's mmkd_helpers/pretrained")
    p = sub.add_parser("bench", help="measure phantom generation, training step time and memory, and what a "
                                     "paper-sized run costs beside the LCKD paper's figures")
    p.add_argument("--repeats", type=_at_least(1), default=5)
    p.add_argument("--backbone", action="append", choices=["unet", "lckd_resnet50_aspp", "protokd_vnet"],
                   default=None, help="networks whose training step is measured against the paper's (repeatable; "
                                      "default: unet and lckd_resnet50_aspp)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (32^3 crop, batch 1, a 96x96x64 volume): a smoke test, not a measurement")
    p.add_argument("--paper-only", action="store_true", help="skip the course's own benchmarks")
    p.add_argument("--data", type=Path, default=None,
                   help="data folder for the loading throughput (default: 8 of the course's phantom cases)")
    p = sub.add_parser("student-copies", help="write the notebooks without their solutions, for learners")
    p.add_argument("out", type=Path, help="folder for the copies (same file names)")
    p.add_argument("--notebooks", type=Path, default=Path("notebooks"),
                   help="the course's notebooks (default: %(default)s, in a clone of the repository)")
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["download"]:  # data_download has its own parser, --help included
        import data_download

        return data_download.main(argv[1:], prog="mmkd download")
    args = build_parser().parse_args(argv)
    from .data import DataError

    try:
        return COMMANDS[args.command](args) or 0
    except (DataError, OSError, ValueError) as exc:
        print(f"mmkd: error: {one_line(exc)}", file=sys.stderr)
        return 2


def cmd_phantom(args) -> int:
    from .phantom import generate_dataset

    if args.n < 1 or args.size < 8:
        raise ValueError(f"--n must be >= 1 and --size >= 8, got {args.n} and {args.size}")
    paths = generate_dataset(args.out, args.n, size=args.size, spacing=args.spacing, seed=args.seed)
    print(f"wrote {len(paths)} cases to {args.out}")


def _course_config(args, base=None):
    """The course configuration of ``mmkd train``'s flags, applied to ``base`` (default: the course's)."""
    from dataclasses import replace

    from .backbones import size_multiple
    from .course import course_config

    early = args.fusion == "early" or args.backbone == "protokd_vnet"  # the VNet is an early-fusion network
    if args.modalities is not None and not early and (base.model.fusion if base else "shared") != "early":
        raise ValueError(f"--modalities {','.join(args.modalities)} needs --fusion early: the shared-encoder model "
                         f"takes all four modalities and learns to cope with any of them missing")
    config = base or course_config(fast=args.fast, real_data=args.data is not None)
    train = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                               "optimizer": args.optimizer, "checkpoint_every": args.checkpoint_every,
                               "num_workers": args.workers}.items() if v is not None}
    if args.no_amp:
        train["amp"] = False
    changes = {"train": replace(config.train, **train)}
    model = {k: v for k, v in {"base_channels": args.base_channels, "fusion": args.fusion, "head": args.head,
                               "input_modalities": args.modalities, "latent": args.latent,
                               "stem": args.stem, "skip_dropout": args.skip_dropout,
                               "backbone": args.backbone}.items() if v is not None}
    if args.backbone not in (None, "unet"):  # the network fixes these: from the defaults, not --fast's tiny UNet's
        from dataclasses import fields

        from .backbones import FIXED
        from .models import ModelConfig

        defaults = {f.name: f.default for f in fields(ModelConfig)}
        model = {**{name: defaults[name] for name in FIXED[args.backbone]}, **model}
    if (early or args.backbone not in (None, "unet")) and args.skip_dropout is None:
        model["skip_dropout"] = 0.0  # the course's early-fusion networks (checkpoints._early_fusion); the papers'
    if model:
        changes["model"] = replace(config.model, **model)
    if early and args.drop_policy is None:
        changes["drop_policy"] = "none"  # an early-fusion network is trained on the inputs it will be given
    for key, value in {"roi_size": args.roi, "spacing": args.spacing, "drop_policy": args.drop_policy,
                       "val_fraction": args.val_fraction, "test_fraction": args.test_fraction}.items():
        if value is not None:
            changes[key] = value
    config = replace(config, **changes)
    multiple = size_multiple(config.model)
    if any(side % m for side, m in zip(config.roi_size, multiple)):
        what = (f"every side must be a multiple of {multiple[0]}" if len(set(multiple)) == 1
                else f"the sides must be multiples of {','.join(map(str, multiple))}")
        raise ValueError(f"--roi {','.join(map(str, config.roi_size))}: {what} (the network halves the crop "
                         f"{config.model.depth - 1} times{' or more' if len(set(multiple)) > 1 else ''})")
    if config.val_fraction + config.test_fraction >= 1:
        raise ValueError(f"--val-fraction {config.val_fraction} and --test-fraction {config.test_fraction} "
                         f"leave no training cases")
    return config


RESUMABLE = {"train.steps": "--steps", "train.lr": "--lr", "train.checkpoint_every": "--checkpoint-every",
             "train.num_workers": "--workers", "train.amp": "--no-amp"}
"""What ``--resume`` takes from the flags (the schedule and how it runs); all else comes from the checkpoint."""

FLAG_OF = {"roi_size": "--roi", "spacing": "--spacing", "drop_policy": "--drop-policy",
           "val_fraction": "--val-fraction", "test_fraction": "--test-fraction", "train.batch_size": "--batch-size",
           "train.seed": "--seed", "train.optimizer": "--optimizer", "model.base_channels": "--base-channels",
           "model.backbone": "--backbone", "model.depth": "--backbone",
           "model.fusion": "--fusion", "model.head": "--head", "model.input_modalities": "--modalities",
           "model.latent": "--latent", "model.stem": "--stem", "model.skip_dropout": "--skip-dropout"}


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = tuple(value) if isinstance(value, list) else value
    return flat


def _resumed_run(args, state: dict):
    """(course config, data folder, method) of the run in ``--out``, with the schedule of the flags; a flag that
    would change the model, the data or the method is refused, naming it."""
    from .course import CourseConfig
    from .methods import build_method

    path = args.out / "last.pt"
    saved = state["config"]
    if "course" not in saved:
        raise ValueError(f"{path}: no course record (written by the library Trainer, not by mmkd train); "
                         f"resume it from Python with Trainer.fit(resume=True)")
    before = CourseConfig.from_dict(saved["course"])
    after = _course_config(args, base=before)
    old, new = _flatten(before.to_dict()), _flatten(after.to_dict())
    changed = [key for key in old if old[key] != new[key] and key not in RESUMABLE]
    data_dir = Path(saved["data"]) if saved["data"] else None
    if args.data is not None and (data_dir is None or args.data.resolve() != data_dir.resolve()):
        changed.insert(0, "data")
    if args.method is not None and args.method != state["method"]["name"]:
        changed.insert(0, "method")
    options = {**state["method"]["options"], **dict(args.option)}
    if options != state["method"]["options"]:
        changed.insert(0, "option")
    if changed:
        key = changed[0]
        flag = {"data": "--data", "method": "--method", "option": "--option"}.get(key, FLAG_OF.get(key, key))
        was = {"data": data_dir or "the course's phantoms", "method": state["method"]["name"],
               "option": state["method"]["options"]}.get(key, old.get(key))
        raise ValueError(f"--resume: {flag} would change the run's {key} (it is {was}); a resumed run keeps its "
                         f"model, data and method, and takes only {', '.join(RESUMABLE.values())} from the flags")
    if after.train.steps < state["step"]:
        raise ValueError(f"--steps {after.train.steps}: the run in {args.out} is already at step {state['step']}")
    return after, data_dir, build_method(state["method"]["name"], **state["method"]["options"])


def cmd_train(args) -> int:
    from .course import course_trainer, ensure_phantom, load_data
    from .fileio import atomic_path
    from .methods import build_method
    from .models import read_checkpoint
    from .training import resolve_device

    resolve_device(args.device)  # a device this machine lacks is refused before any work
    if args.resume:
        state = read_checkpoint(args.out / "last.pt")
        config, data_dir, method = _resumed_run(args, state)
    else:
        if (args.out / "last.pt").exists():
            raise ValueError(f"{args.out}: already holds a run; use --resume or another --out")
        config, data_dir = _course_config(args), args.data
        method = build_method(args.method or "baseline", **dict(args.option))
    # All input checks happen here, before anything is written to --out.
    folder = data_dir or ensure_phantom(config)
    data = load_data(folder, config, progress=sys.stderr.isatty())
    unlabelled = [c for c in data["split"]["train"] + data["split"]["val"] if data["volumes"][c][1] is None]
    if unlabelled:
        raise ValueError(f"{folder}: case {unlabelled[0]} has no label map (seg); every training and validation "
                         f"case needs one ({len(unlabelled)} lack it)")
    extra = {"data": str(data_dir) if data_dir else None, "split": data["split"], "method": method.name}
    trainer = course_trainer(config, data, method, out_dir=args.out, device=args.device, extra=extra,
                             progress=sys.stderr.isatty())
    if trainer.rank == 0:
        print(f"{method.name}: {len(data['split']['train'])} training cases, {config.train.steps} steps on "
              f"{trainer.device}" + (f", {trainer.world} processes" if trainer.world > 1 else ""))
    history = trainer.fit(resume=args.resume)
    if trainer.rank == 0:  # under torchrun every process trains; the first writes, as it writes the checkpoint
        with atomic_path(args.out / "history.csv") as tmp:
            history.to_csv(tmp, index=False)
        print(f"checkpoint: {trainer.checkpoint_path}; final loss {history['loss'].iloc[-5:].mean():.4f}")


def load_run(checkpoint, device="cpu"):
    """(model, course config, saved config dict) of a training checkpoint written by ``mmkd train``."""
    from .course import CourseConfig
    from .models import load_trained_model

    model, saved = load_trained_model(checkpoint, device)
    missing = [key for key in ("course", "split", "data", "method") if key not in saved]
    if missing:
        raise ValueError(f"{checkpoint}: no course record ({', '.join(missing)}): written by the library Trainer, "
                         f"not by mmkd train; evaluate it from Python with mmkd_helpers.evaluation.evaluate")
    return model, CourseConfig.from_dict(saved["course"]), saved


def cmd_evaluate(args) -> int:
    from .course import ensure_phantom, load_data
    from .data import find_cases
    from .evaluation import BRATS_HD95_PENALTY, check_window, dice_table, evaluate
    from .fileio import atomic_path
    from .prediction import grid_spacing
    from .training import resolve_device

    model, config, saved = load_run(args.checkpoint, resolve_device(args.device))
    if args.window:  # refused before any data is read
        check_window(args.window, config.roi_size)
    data_dir = args.data or (Path(saved["data"]) if saved["data"] else ensure_phantom(config))
    data = load_data(data_dir, config, progress=sys.stderr.isatty())
    if args.cases == "all":
        cases = sorted(data["volumes"])
    else:
        cases = [c for c in saved["split"][args.cases] if c in data["volumes"]]
        if not cases:
            raise ValueError(f"{data_dir}: none of the run's {args.cases} cases are here; use --cases all")
    volumes = [(c, *data["volumes"][c]) for c in cases]  # any subset, not only a split
    window = check_window(args.window or config.roi_size, config.roi_size)
    refs = {ref.case_id: ref for ref in find_cases(data_dir)}
    spacing = {c: grid_spacing(refs[c], config) for c in cases}  # HD95 in mm of the grid the network saw
    results = evaluate(model, volumes, window, overlap=config.eval_overlap, progress=sys.stderr.isatty(), hd95=True,
                       spacing=spacing)
    with atomic_path(args.out) as tmp:
        results.to_csv(tmp, index=False)
    print(dice_table({saved["method"]: results}).round(1).to_string())
    hd95 = results.groupby("region", sort=False).hd95.median()
    print("HD95 (mm, median over cases and combinations; an empty prediction of a present region counts "
          f"{BRATS_HD95_PENALTY}): " + " / ".join(f"{region} {value:.1f}" for region, value in hd95.items()))
    print(f"{len(cases)} cases x {results.combination.nunique()} combinations -> {args.out}")


def cmd_predict(args) -> int:
    from .prediction import predict_path

    written = predict_path(args.checkpoint, args.case, args.out, modalities=args.modalities, device=args.device,
                           progress=sys.stderr.isatty())
    print(f"{len(written)} label map{'s' if len(written) > 1 else ''} -> {args.out}")


def cmd_calibrate(args) -> int:
    import pandas as pd

    from .calibration import calibrate, comparison_table, modality_ranking, summarise
    from .fileio import atomic_path

    summary = summarise(calibrate(args.data, spacing=args.spacing, progress=sys.stderr.isatty()))
    with pd.option_context("display.width", 160, "display.max_rows", 100):
        print(f"{args.data.name}: {int(summary.cases.max())} cases; 'real' = the shipped BraTS 2018 sample, z = (ours - real) / real SD")
        print(comparison_table(summary).to_string())
    for region, order in modality_ranking(summary).items():
        print(f"{region}: {' > '.join(order)}")
    if args.out:
        with atomic_path(args.out) as tmp:
            summary.to_csv(tmp, index=False, float_format="%.4f")
        print(f"summary -> {args.out}")


def cmd_checkpoints(args) -> int:
    from .checkpoints import RUNS, build_all
    from .store import PRETRAINED_DIR

    unknown = [name for name in args.names if name not in RUNS]
    if unknown:
        raise ValueError(f"checkpoints: no run named {', '.join(map(repr, unknown))}; the runs: {', '.join(RUNS)}")
    out_dir = args.out
    if args.into_package:
        if not (PRETRAINED_DIR.parents[1] / "pyproject.toml").is_file():
            raise ValueError(f"--into-package: {PRETRAINED_DIR} belongs to an installed package, not a source checkout; "
                             f"use --out")
        out_dir = PRETRAINED_DIR
    out_dir = build_all(device=args.device, names=args.names, out_dir=out_dir)
    if out_dir != PRETRAINED_DIR:
        print(f"checkpoints -> {out_dir}; to use them instead of the shipped ones: export MMKD_PRETRAINED={out_dir}")


def cmd_student_copies(args) -> int:
    from .teaching import write_student_copies

    written = write_student_copies(args.notebooks, args.out)
    print(f"{len(written)} student copies (solutions removed, outputs cleared) -> {args.out}")


def cmd_bench(args) -> int:
    from .bench import run_benchmarks, run_paper_benchmarks
    from .course import CourseConfig, ensure_phantom

    if not args.paper_only:
        run_benchmarks(repeats=args.repeats)
    folder = args.data or ensure_phantom(CourseConfig(phantom_cases=8))
    run_paper_benchmarks(tuple(args.backbone or ("unet", "lckd_resnet50_aspp")), quick=args.quick,
                         repeats=2 if args.quick else min(args.repeats, 3), data_folder=folder)


COMMANDS = {"phantom": cmd_phantom, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "calibrate": cmd_calibrate, "checkpoints": cmd_checkpoints, "bench": cmd_bench,
            "student-copies": cmd_student_copies}

if __name__ == "__main__":
    sys.exit(main())
