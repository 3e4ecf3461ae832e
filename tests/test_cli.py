"""The ``mmkd`` command line as a user meets it: phantom -> train -> evaluate, and clear errors."""

import gzip
import shutil

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
    assert "Average" in capsys.readouterr().out


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


def test_resume_continues_to_more_steps(phantom_dir, tmp_path):
    run = tmp_path / "run"
    main(["train", "--fast", "--data", str(phantom_dir), "--out", str(run), "--steps", "2", "--device", "cpu"])
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["step"] == 2
    # --resume reads everything (config, data, method) from the run folder.
    assert main(["train", "--out", str(run), "--resume", "--device", "cpu"]) == 0
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 2  # the run was already complete


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


def test_empty_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "--fast", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run")]) == 2
    assert "no cases found" in capsys.readouterr().err


def test_evaluate_missing_checkpoint(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "r.csv")]) == 2
    assert "nope.pt: no such checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()


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
