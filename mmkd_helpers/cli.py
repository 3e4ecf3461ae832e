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


def _roi(text: str) -> tuple:
    parts = [int(p) for p in text.split(",")]
    return tuple(parts * 3) if len(parts) == 1 else tuple(parts)


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
    parser = argparse.ArgumentParser(prog="mmkd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="write BraTS-format phantom cases")
    p.add_argument("--out", required=True, type=Path, help="output folder (one sub-folder per case)")
    p.add_argument("--n", type=int, default=24, help="number of cases")
    p.add_argument("--size", type=int, default=64, help="voxels per axis")
    p.add_argument("--spacing", type=float, default=None, help="voxel size in mm (default: brain fills the volume)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train", help="train a method on a BraTS- or MSD-layout folder (or on phantoms)")
    p.add_argument("--method", default="baseline")
    p.add_argument("--option", action="append", type=_option, default=[], metavar="KEY=VALUE",
                   help="a method option (repeatable), e.g. --option alpha=0.1")
    p.add_argument("--data", type=Path, default=None, help="data folder; default: the course's phantom cases")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoint last.pt, history.csv)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--roi", type=_roi, default=None, help="training crop, e.g. 32 or 32,32,32")
    p.add_argument("--spacing", type=float, default=None, help="resample real data to this many mm (2 or 3)")
    p.add_argument("--base-channels", type=int, default=None, help="backbone width (8 = teaching size)")
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
    p.add_argument("--val-fraction", type=float, default=None, help="share of the training cases held out (0.2)")
    p.add_argument("--test-fraction", type=float, default=None, help="share of all cases held out for testing (0.2)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default=None,
                   help="adamw (the course's: decoupled weight decay on >= 2-D weights), adam (L2 decay in the "
                        "gradient), sgd (Nesterov, momentum 0.99: the LCKD/MetaKD code)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
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
    p = sub.add_parser("bench", help="measure phantom generation, training step time and memory")
    p.add_argument("--repeats", type=int, default=5)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["download"]:  # data_download has its own parser, --help included
        import data_download

        return data_download.main(argv[1:])
    args = build_parser().parse_args(argv)
    from .data import DataError

    try:
        return COMMANDS[args.command](args) or 0
    except (DataError, FileNotFoundError, ValueError) as exc:
        print(f"mmkd: error: {exc}", file=sys.stderr)
        return 2


def cmd_phantom(args) -> int:
    from .phantom import generate_dataset

    if args.n < 1 or args.size < 8:
        raise ValueError(f"--n must be >= 1 and --size >= 8, got {args.n} and {args.size}")
    paths = generate_dataset(args.out, args.n, size=args.size, spacing=args.spacing, seed=args.seed)
    print(f"wrote {len(paths)} cases to {args.out}")


def _course_config(args):
    from dataclasses import replace

    from .course import course_config

    config = course_config(fast=args.fast, real_data=args.data is not None)
    train = {k: v for k, v in {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                               "optimizer": args.optimizer, "checkpoint_every": args.checkpoint_every,
                               "num_workers": args.workers}.items() if v is not None}
    if args.no_amp:
        train["amp"] = False
    changes = {"train": replace(config.train, **train)}
    model = {k: v for k, v in {"base_channels": args.base_channels, "fusion": args.fusion, "head": args.head,
                               "input_modalities": args.modalities, "latent": args.latent,
                               "stem": args.stem, "skip_dropout": args.skip_dropout}.items() if v is not None}
    if args.fusion == "early" and args.skip_dropout is None:
        model["skip_dropout"] = 0.0  # the course's early-fusion networks (checkpoints._early_fusion)
    if model:
        changes["model"] = replace(config.model, **model)
    if args.fusion == "early" and args.drop_policy is None:
        changes["drop_policy"] = "none"  # an early-fusion network is trained on the inputs it will be given
    for key, value in {"roi_size": args.roi, "spacing": args.spacing, "drop_policy": args.drop_policy,
                       "val_fraction": args.val_fraction, "test_fraction": args.test_fraction}.items():
        if value is not None:
            changes[key] = value
    return replace(config, **changes)


def cmd_train(args) -> int:
    import torch

    from .course import CourseConfig, course_trainer, ensure_phantom, load_data
    from .methods import build_method

    if args.resume:
        state = torch.load(args.out / "last.pt", map_location="cpu", weights_only=True)
        config = CourseConfig.from_dict(state["config"]["course"])
        data_dir = Path(state["config"]["data"]) if state["config"]["data"] else None
        method = build_method(state["method"]["name"], **state["method"]["options"])
    else:
        if (args.out / "last.pt").exists():
            raise ValueError(f"{args.out}: already holds a run; use --resume or another --out")
        config, data_dir = _course_config(args), args.data
        method = build_method(args.method, **dict(args.option))
    # All input checks happen here, before anything is written to --out.
    data = load_data(data_dir or ensure_phantom(config), config, progress=sys.stderr.isatty())
    extra = {"data": str(data_dir) if data_dir else None, "split": data["split"], "method": method.name}
    trainer = course_trainer(config, data, method, out_dir=args.out, device=args.device, extra=extra,
                             progress=sys.stderr.isatty())
    print(f"{method.name}: {len(data['split']['train'])} training cases, {config.train.steps} steps "
          f"on {trainer.device}")
    history = trainer.fit(resume=args.resume)
    history.to_csv(args.out / "history.csv", index=False)
    print(f"checkpoint: {trainer.checkpoint_path}; final loss {history['loss'].iloc[-5:].mean():.4f}")


def load_run(checkpoint, device="cpu"):
    """(model, course config, saved config dict) of a training checkpoint written by ``mmkd train``."""
    from .course import CourseConfig
    from .models import load_trained_model

    model, saved = load_trained_model(checkpoint, device)
    return model, CourseConfig.from_dict(saved["course"]), saved


def cmd_evaluate(args) -> int:
    from .course import ensure_phantom, load_data
    from .evaluation import check_window, dice_table, evaluate
    from .fileio import atomic_path
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
    results = evaluate(model, volumes, window, overlap=config.eval_overlap, progress=sys.stderr.isatty())
    with atomic_path(args.out) as tmp:
        results.to_csv(tmp, index=False)
    print(dice_table({saved["method"]: results}).round(1).to_string())
    print(f"{len(cases)} cases x {results.combination.nunique()} combinations -> {args.out}")


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


def cmd_bench(args) -> int:
    from .bench import run_benchmarks

    run_benchmarks(repeats=args.repeats)


COMMANDS = {"phantom": cmd_phantom, "train": cmd_train, "evaluate": cmd_evaluate, "calibrate": cmd_calibrate,
            "checkpoints": cmd_checkpoints, "bench": cmd_bench}

if __name__ == "__main__":
    sys.exit(main())
