"""The ``mmkd`` command line as a user meets it: phantom -> train -> evaluate, and clear errors."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from mmkd_helpers.cli import main


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "phantom"
    assert main(["phantom", "--out", str(out), "--n", "5", "--size", "32", "--seed", "3"]) == 0
    return out


@pytest.fixture(autouse=True)
def private_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKD_DATA_DIR", str(tmp_path / "mmkd-data"))


def test_phantom_writes_brats_layout(phantom_dir):
    cases = sorted(p.name for p in phantom_dir.iterdir())
    assert cases == [f"Phantom_{i:03d}" for i in range(5)]
    names = sorted(p.name for p in (phantom_dir / "Phantom_000").iterdir())
    assert names == [f"Phantom_000_{m}.nii.gz" for m in ("flair", "seg", "t1", "t1ce", "t2")]


def test_train_resume_and_evaluate(phantom_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--fast", "--data", str(phantom_dir), "--out", str(run), "--steps", "3",
                 "--device", "cpu"]) == 0
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["step"] == 3 and state["config"]["method"] == "baseline"
    split = state["config"]["split"]
    assert sorted(split["train"] + split["val"] + split["test"]) == [f"Phantom_{i:03d}" for i in range(5)]
    assert main(["train", "--fast", "--data", str(phantom_dir), "--out", str(run)]) == 2  # would overwrite
    assert "already holds a run" in capsys.readouterr().err

    results = tmp_path / "results.csv"
    assert main(["evaluate", "--checkpoint", str(run / "last.pt"), "--out", str(results), "--device", "cpu"]) == 0
    df = pd.read_csv(results)
    assert set(df.case) == set(split["test"]) and len(df) == len(split["test"]) * 15 * 3
    assert df.dice.between(0, 1).all()
    out = capsys.readouterr().out
    assert "Average" in out and "HD95 (mm" in out
    # HD95 is in mm of the case's grid: the same case scored in voxels, times the phantom's voxel size
    import nibabel as nib
    from mmkd_helpers.cli import load_run
    from mmkd_helpers.course import load_data
    from mmkd_helpers.evaluation import BRATS_HD95_PENALTY, evaluate

    case = split["test"][0]
    voxel_mm = nib.load(phantom_dir / case / f"{case}_flair.nii.gz").header.get_zooms()[0]
    model, config, _ = load_run(run / "last.pt")
    in_voxels = evaluate(model, [(case, *load_data(phantom_dir, config, progress=False)["volumes"][case])],
                         config.roi_size, overlap=config.eval_overlap, progress=False, hd95=True)
    in_mm = df[df.case == case].reset_index(drop=True)
    measured = ~in_voxels.hd95.isin([0.0, BRATS_HD95_PENALTY])
    assert measured.any() and voxel_mm != 1.0
    assert in_mm.hd95[measured].to_numpy() == pytest.approx(in_voxels.hd95[measured].to_numpy() * voxel_mm, rel=1e-4)
    assert (in_mm.hd95[~measured] == in_voxels.hd95[~measured]).all()


def test_a_protokd_teacher_then_a_single_modality_student(phantom_dir, tmp_path):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    common = ["--fast", "--data", str(phantom_dir), "--steps", "2", "--device", "cpu", "--fusion", "early",
              "--head", "classes"]
    assert main(["train", *common, "--out", str(teacher), "--modalities", "flair,t1,t1ce,t2"]) == 0
    assert main(["train", *common, "--out", str(student), "--modalities", "T1", "--method", "protokd",
                 "--option", f"teacher={teacher / 'last.pt'}"]) == 0
    state = torch.load(student / "last.pt", weights_only=True)
    assert tuple(state["config"]["course"]["model"]["input_modalities"]) == ("t1",)
    assert state["config"]["course"]["drop_policy"] == "none"
    assert state["method"]["options"]["teacher"] == str(teacher / "last.pt")
    assert {"kd", "proto"} <= set(pd.read_csv(student / "history.csv").columns)
    results = tmp_path / "results.csv"
    assert main(["evaluate", "--checkpoint", str(student / "last.pt"), "--out", str(results), "--device", "cpu"]) == 0
    assert set(pd.read_csv(results).combination) == {"T1"}  # a student is scored on its own modality only


def test_a_pmix_teacher_with_gaussian_latents_then_a_logit_kd_student(phantom_dir, tmp_path):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    common = ["--fast", "--data", str(phantom_dir), "--steps", "2", "--device", "cpu", "--head", "classes"]
    assert main(["train", *common, "--out", str(teacher), "--latent", "gaussian", "--stem", "per_modality",
                 "--drop-policy", "none", "--optimizer", "adamw", "--method", "pmix", "--option", "anchor=normal",
                 "--option", "lam=0.5"]) == 0
    state = torch.load(teacher / "last.pt", weights_only=True)
    assert state["config"]["model"]["latent"] == "gaussian" and state["config"]["model"]["stem"] == "per_modality"
    assert state["method"]["options"]["lam"] == 0.5 and state["config"]["train"]["optimizer"] == "adamw"
    assert "align" in pd.read_csv(teacher / "history.csv").columns
    assert main(["train", *common, "--out", str(student), "--fusion", "early", "--modalities", "t2",
                 "--method", "protokd", "--option", f"teacher={teacher / 'last.pt'}", "--option", "beta=0"]) == 0
    assert set(pd.read_csv(student / "history.csv").columns) >= {"kd"}


def test_unknown_modality_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--out", "x", "--fusion", "early", "--modalities", "t1,pd"])
    assert "modalities must be among" in capsys.readouterr().err


def test_resume_continues_to_more_steps_with_the_schedule_of_the_flags(phantom_dir, tmp_path, capsys):
    """nanoGPT's rule: the model, data and method come from the checkpoint, the schedule from the flags."""
    run = tmp_path / "run"
    first = ["train", "--fast", "--data", str(phantom_dir), "--out", str(run), "--device", "cpu"]
    assert main([*first, "--steps", "2"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 2
    assert main(["train", "--out", str(run), "--resume", "--steps", "5", "--lr", "0.5", "--device", "cpu"]) == 0
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["step"] == 5 and state["config"]["train"]["lr"] == 0.5 == state["config"]["course"]["train"]["lr"]
    assert state["config"]["train"]["steps"] == 5
    history = pd.read_csv(run / "history.csv")
    assert list(history.step) == [1, 2, 3, 4, 5]
    # Steps 3-5 follow the poly schedule of 5 steps at lr 0.5: 0.5 * (1 - step / 5) ** 0.9 after each step.
    assert history.lr.iloc[2:].tolist() == pytest.approx([0.5 * (1 - k / 5) ** 0.9 for k in (3, 4, 5)])
    # The same command again, with --resume added: its unchanged flags are accepted, and the run is complete.
    assert main([*first, "--steps", "5", "--resume"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 5
    capsys.readouterr()


def _broken_copy(phantom_dir, tmp_path, breaker):
    data = tmp_path / "broken"
    shutil.copytree(phantom_dir, data)
    breaker(data / "Phantom_001")
    return data


def _truncate(folder):
    path = folder / "Phantom_001_t2.nii.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _unknown_label(folder):
    import nibabel as nib
    import numpy as np

    path = folder / "Phantom_001_seg.nii.gz"
    image = nib.load(path)
    data = np.asanyarray(image.dataobj).copy()
    data[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(data, image.affine), path)


@pytest.mark.parametrize("breaker, expected", [
    (lambda f: (f / "Phantom_001_t1ce.nii.gz").unlink(), "Phantom_001_t1ce.nii.gz: file missing"),
    (_truncate, "Phantom_001_t2.nii.gz: cannot be read"),
    (_unknown_label, "Phantom_001_seg.nii.gz: unknown label values [3]"),
])
def test_bad_input_gives_one_clear_line_and_leaves_nothing(phantom_dir, tmp_path, capsys, breaker, expected):
    data = _broken_copy(phantom_dir, tmp_path, breaker)
    run = tmp_path / "run"
    assert main(["train", "--fast", "--data", str(data), "--out", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mmkd: error: ") and expected in err[0], err
    assert not run.exists()


@pytest.fixture(scope="module")
def short_run(phantom_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("short") / "run"
    assert main(["train", "--fast", "--data", str(phantom_dir), "--out", str(run), "--steps", "2", "--device",
                 "cpu"]) == 0
    return run


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _checkpoint_with(short_run, tmp_path, change):
    state = torch.load(short_run / "last.pt", weights_only=True)
    change(state)
    torch.save(state, tmp_path / "changed.pt")
    return tmp_path / "changed.pt"


def _nan_weights(state):
    name = next(iter(state["model"]))
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))


def _library_checkpoint(short_run, tmp_path):
    """A checkpoint of the library Trainer: a model and its config, none of the course record mmkd train adds."""
    import numpy as np

    from mmkd_helpers.dataset import PatchDataset
    from mmkd_helpers.models import ModelConfig, build_model
    from mmkd_helpers.training import TrainConfig, Trainer

    label = np.zeros((16, 16, 16), np.uint8)
    label[4:10, 4:10, 4:10] = 2
    volume = (np.random.default_rng(0).normal(size=(4, 16, 16, 16)).astype(np.float32), label)
    model = build_model(ModelConfig(base_channels=2, depth=2))
    trainer = Trainer(model, PatchDataset([volume], (8, 8, 8)), TrainConfig(steps=1, batch_size=1),
                      out_dir=tmp_path / "library", device="cpu", progress=False)
    trainer.fit()
    return trainer.checkpoint_path


def _data_without_seg(phantom_dir, short_run, tmp_path, split):
    case = torch.load(short_run / "last.pt", weights_only=True)["config"]["split"][split][0]
    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    (data / case / f"{case}_seg.nii.gz").unlink()
    return data


def _resumable(short_run, tmp_path):
    shutil.copytree(short_run, tmp_path / "resumed")
    return tmp_path / "resumed"


def _case_without(phantom_dir, tmp_path, modality):
    case = tmp_path / "Phantom_000"
    shutil.copytree(phantom_dir / case.name, case)
    (case / f"{case.name}_{modality}.nii.gz").unlink()
    return case


def _early_fusion_run(phantom_dir, tmp_path, modalities):
    run = tmp_path / f"early-{modalities}"
    assert main([*TRAIN, "--data", str(phantom_dir), "--steps", "1", "--fusion", "early", "--modalities", modalities,
                 "--out", str(run)]) == 0
    return run / "last.pt"


EVALUATE, TRAIN = ["evaluate", "--device", "cpu"], ["train", "--fast", "--device", "cpu"]
PREDICT = ["predict", "--device", "cpu"]
CATALOGUE = {
    # name: (arguments, given the phantom folder, a finished 2-step run and a scratch folder -> words in the one line)
    "random bytes as checkpoint": (lambda d, r, t: [*EVALUATE, "--checkpoint", _write(t / "x.pt", bytes(range(256)) * 9)],
                                   "x.pt: not a PyTorch checkpoint"),
    "empty checkpoint": (lambda d, r, t: [*EVALUATE, "--checkpoint", _write(t / "x.pt", b"")],
                         "x.pt: not a PyTorch checkpoint (0 bytes"),
    "truncated checkpoint": (lambda d, r, t: [*EVALUATE, "--checkpoint",
                                              _write(t / "x.pt", (r / "last.pt").read_bytes()[:5000])],
                             "not a complete zip archive"),
    "pickle refused by weights_only": (lambda d, r, t: [*EVALUATE, "--checkpoint", _checkpoint_with(
        r, t, lambda s: s.update(config=Path("anything")))], "refused by torch.load(weights_only=True)"),
    "NaN weights": (lambda d, r, t: [*EVALUATE, "--checkpoint", _checkpoint_with(r, t, _nan_weights)],
                    "hold NaN or infinite values"),
    "library Trainer checkpoint": (lambda d, r, t: [*EVALUATE, "--checkpoint", _library_checkpoint(r, t)],
                                   "no course record"),
    "missing checkpoint": (lambda d, r, t: [*EVALUATE, "--checkpoint", t / "nope.pt"], "nope.pt: no such checkpoint"),
    "evaluate unlabelled cases": (lambda d, r, t: [*EVALUATE, "--checkpoint", r / "last.pt", "--cases", "all",
                                                   "--data", _data_without_seg(d, r, t, "test")],
                                  "no label map, so there is nothing to score"),
    "evaluate another window": (lambda d, r, t: [*EVALUATE, "--checkpoint", r / "last.pt", "--window", "32"],
                                "differs from the training crop (16, 16, 16)"),
    "training case without seg": (lambda d, r, t: [*TRAIN, "--data", _data_without_seg(d, r, t, "train")],
                                  "has no label map (seg); every training and validation case needs one"),
    "empty data folder": (lambda d, r, t: [*TRAIN, "--data", (t / "empty").mkdir() or t / "empty"], "no cases found"),
    "missing data folder": (lambda d, r, t: [*TRAIN, "--data", t / "nowhere"], "nowhere: no such folder"),
    "--roi too small for the depth": (lambda d, r, t: [*TRAIN, "--data", d, "--roi", "10"],
                                      "--roi 10,10,10: every side must be a multiple of 4"),
    "--roi not a number": (lambda d, r, t: [*TRAIN, "--roi", "big"], "argument --roi: expected N or X,Y,Z"),
    "--device cuda without CUDA": (lambda d, r, t: ["train", "--fast", "--data", d, "--device", "cuda"],
                                   "device 'cuda': this PyTorch has no usable CUDA GPU"),
    "--device nonsense": (lambda d, r, t: ["train", "--fast", "--data", d, "--device", "gpu0"],
                          "device 'gpu0' is not a device name"),
    "unknown --option": (lambda d, r, t: [*TRAIN, "--data", d, "--method", "lckd", "--option", "foo=1"], "foo"),
    "--option to a method without options": (lambda d, r, t: [*TRAIN, "--data", d, "--option", "alpha=1"], "alpha"),
    "unknown --method": (lambda d, r, t: [*TRAIN, "--data", d, "--method", "distill"], "unknown method 'distill'"),
    "--steps 0": (lambda d, r, t: [*TRAIN, "--steps", "0"], "argument --steps: must be at least 1, got 0"),
    "--lr nan": (lambda d, r, t: [*TRAIN, "--lr", "nan"], "argument --lr"),
    "--val-fraction 1.5": (lambda d, r, t: [*TRAIN, "--val-fraction", "1.5"], "must be in [0, 1), got 1.5"),
    "--modalities without --fusion early": (lambda d, r, t: [*TRAIN, "--data", d, "--modalities", "t1"],
                                            "--modalities t1 needs --fusion early"),
    "diverging loss": (lambda d, r, t: [*TRAIN, "--data", d, "--steps", "6", "--lr", "1e30", "--optimizer", "sgd"],
                       "the loss is not finite at step"),
    "--out already holds a run": (lambda d, r, t: [*TRAIN, "--data", d, "--out", _resumable(r, t)],
                                  "already holds a run; use --resume"),
    "--resume that changes the crop": (lambda d, r, t: [*TRAIN, "--resume", "--roi", "32", "--out", _resumable(r, t)],
                                       "--resume: --roi would change the run's roi_size"),
    "--resume that changes the method": (lambda d, r, t: [*TRAIN, "--resume", "--method", "lckd", "--out",
                                                          _resumable(r, t)], "--resume: --method would change"),
    "--resume to fewer steps": (lambda d, r, t: [*TRAIN, "--resume", "--steps", "1", "--out", _resumable(r, t)],
                                "--steps 1: the run in"),
    "--resume without a run": (lambda d, r, t: [*TRAIN, "--resume", "--out", t / "fresh"], "no such checkpoint"),
    "phantom --out below a file": (lambda d, r, t: ["phantom", "--n", "1", "--size", "16", "--out",
                                                    _write(t / "file", b"x") / "phantoms"],
                                   "file/phantoms: Not a directory"),
    "download --dest below a file": (lambda d, r, t: ["download", "msd", "--dest", _write(t / "file", b"x") / "msd"],
                                     "file/msd: Not a directory"),
    "predict a modality the case lacks": (lambda d, r, t: [*PREDICT, "--checkpoint", r / "last.pt", "--case",
                                                           _case_without(d, t, "t1ce"), "--modalities", "t1ce,t2",
                                                           "--out", t / "seg.nii.gz"],
                                          "case Phantom_000 has no t1ce image"),
    "predict with an early-fusion model lacking its input": (
        lambda d, r, t: [*PREDICT, "--checkpoint", _early_fusion_run(d, t, "t1,t1ce"), "--case",
                         _case_without(d, t, "t1ce"), "--out", t / "seg.nii.gz"],
        "early-fusion network of t1, t1ce and needs every one of them"),
    "predict a case into a folder": (lambda d, r, t: [*PREDICT, "--checkpoint", r / "last.pt", "--case",
                                                      d / "Phantom_000", "--out", t / "out"],
                                     "out: the output of one case is a NIfTI file"),
    "predict an unknown modality": (lambda d, r, t: [*PREDICT, "--checkpoint", r / "last.pt", "--case",
                                                     d / "Phantom_000", "--modalities", "pd", "--out", t / "s.nii.gz"],
                                    "--modalities"),
}


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_bad_input_catalogue(name, phantom_dir, short_run, tmp_path, capsys):
    """Every bad input ends with exit code 2 and one line that names the file or option and what is wrong, and
    leaves nothing written: no results file, no new or changed checkpoint, no temporary file."""
    arguments, words = CATALOGUE[name]
    before = (short_run / "last.pt").read_bytes()
    argv = [str(a) for a in arguments(phantom_dir, short_run, tmp_path)]
    if argv[0] in ("evaluate", "train") and "--out" not in argv:
        argv += ["--out", str(tmp_path / ("results.csv" if argv[0] == "evaluate" else "run"))]
    out = Path(argv[argv.index("--out" if "--out" in argv else "--dest") + 1])
    resumed = out.exists()
    resumed_bytes = (out / "last.pt").read_bytes() if resumed else None
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and words in lines[0], (code, lines)
    assert lines[0].startswith(("mmkd: error: ", f"mmkd {argv[0]}: error: ")), lines[0]  # the command the user typed
    assert "Traceback" not in lines[0]
    if resumed:
        assert (out / "last.pt").read_bytes() == resumed_bytes and not (out / "history.csv").read_text() == ""
    else:
        assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())
    assert (short_run / "last.pt").read_bytes() == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_predict_writes_brats_labels_in_the_cases_own_grid(phantom_dir, short_run, tmp_path, capsys):
    """``mmkd predict`` on one case and on a folder of cases: label maps in the case's shape and affine, BraTS
    labels, and the Dice of the written file against the case's seg equal to ``mmkd evaluate``'s for that case."""
    import nibabel as nib
    import numpy as np

    from mmkd_helpers.evaluation import region_dice

    case = torch.load(short_run / "last.pt", weights_only=True)["config"]["split"]["test"][0]
    one = tmp_path / "one.nii.gz"
    assert main(["predict", "--checkpoint", str(short_run / "last.pt"), "--case", str(phantom_dir / case),
                 "--out", str(one), "--device", "cpu"]) == 0
    assert "1 label map -> " in capsys.readouterr().out
    seg = nib.load(phantom_dir / case / f"{case}_seg.nii.gz")
    written = nib.load(one)
    assert written.shape == seg.shape and np.allclose(written.affine, seg.affine)
    labels = np.asarray(written.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 4} and labels.dtype == np.uint8
    assert len(np.unique(labels)) > 1  # background and tumour: the Dice comparison below is not empty against empty

    results = tmp_path / "results.csv"
    assert main(["evaluate", "--checkpoint", str(short_run / "last.pt"), "--out", str(results), "--device", "cpu",
                 "--cases", "all"]) == 0
    table = pd.read_csv(results)
    evaluated = table[(table.case == case) & (table.n_present == 4)].set_index("region").dice
    dice = region_dice(labels, np.asarray(seg.dataobj))
    assert dice == pytest.approx(evaluated[["ET", "TC", "WT"]].to_numpy(), abs=1e-6)

    folder = tmp_path / "all"
    assert main(["predict", "--checkpoint", str(short_run / "last.pt"), "--case", str(phantom_dir),
                 "--out", str(folder), "--device", "cpu", "--modalities", "t1,t2"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == [f"Phantom_{i:03d}.nii.gz" for i in range(5)]
    t1_t2 = np.asarray(nib.load(folder / f"{case}.nii.gz").dataobj)
    evaluated = table[(table.case == case) & (table.combination == "T1+T2")].set_index("region").dice
    assert region_dice(t1_t2, np.asarray(seg.dataobj)) == pytest.approx(evaluated[["ET", "TC", "WT"]].to_numpy(), abs=1e-6)


def test_evaluate_uses_the_runs_training_crop_and_refuses_another_window(phantom_dir, tmp_path, capsys):
    """A model is evaluated with windows of the crop it was trained on (instance norm sees at test what it saw
    in training): that is the default, and any other window is refused before anything is written."""
    from mmkd_helpers.cli import load_run
    from mmkd_helpers.course import load_data
    from mmkd_helpers.evaluation import evaluate

    run = tmp_path / "run"
    assert main(["train", "--fast", "--data", str(phantom_dir), "--out", str(run), "--steps", "4", "--roi", "16",
                 "--device", "cpu"]) == 0
    default, explicit, refused = (tmp_path / f"{n}.csv" for n in ("default", "explicit", "refused"))
    assert main(["evaluate", "--checkpoint", str(run / "last.pt"), "--out", str(default), "--device", "cpu"]) == 0
    assert main(["evaluate", "--checkpoint", str(run / "last.pt"), "--out", str(explicit), "--device", "cpu",
                 "--window", "16"]) == 0
    assert pd.read_csv(default).equals(pd.read_csv(explicit))
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run / "last.pt"), "--out", str(refused), "--device", "cpu",
                 "--window", "32"]) == 2
    error = capsys.readouterr().err
    assert "training crop (16, 16, 16)" in error and len(error.strip().splitlines()) == 1 and not refused.exists()
    model, config, saved = load_run(run / "last.pt")
    data = load_data(phantom_dir, config, progress=False)
    volumes = [(c, *data["volumes"][c]) for c in saved["split"]["test"]]
    by_hand = evaluate(model, volumes, (16, 16, 16), overlap=config.eval_overlap, progress=False)
    assert list(by_hand.dice.round(6)) == list(pd.read_csv(default).dice.round(6))


def test_early_fusion_trains_without_skip_dropout_unless_asked():
    """The CLI's early-fusion networks are the course's ProtoKD networks (checkpoints._early_fusion): no skip dropout."""
    from mmkd_helpers.checkpoints import run_config
    from mmkd_helpers.cli import _course_config, build_parser

    def model(*flags):
        return _course_config(build_parser().parse_args(["train", "--out", "x", *flags])).model

    assert model("--fusion", "early", "--modalities", "t1").skip_dropout == 0.0 == run_config("protokd_t1").model.skip_dropout
    assert model("--fusion", "early", "--skip-dropout", "0.3").skip_dropout == 0.3
    assert model().skip_dropout == 0.5 == run_config("baseline").model.skip_dropout
