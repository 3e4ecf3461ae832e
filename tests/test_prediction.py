"""Segmenting a patient's case folder with whichever modalities it has, written as NIfTI in the case's own grid."""

import shutil
from dataclasses import replace
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

from mmkd_helpers.cli import load_run, main
from mmkd_helpers.data import DataError, find_cases, read_case
from mmkd_helpers.evaluation import evaluate, logits_to_label, predict_logits, region_dice
from mmkd_helpers.models import ModelConfig, build_model
from mmkd_helpers.phantom import generate_dataset
from mmkd_helpers.prediction import grid_spacing, predict_case, predict_path
from mmkd_helpers.preprocess import PreprocessConfig, cache_cases, load_cached, preprocess_case

FLAIR_T2 = (True, False, False, True)


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "phantom"
    generate_dataset(out, 4, size=32, seed=3)
    return out


@pytest.fixture(scope="module")
def run(phantom_dir, tmp_path_factory):
    """A 3-step fast run on the phantoms: its predictions are poor but not empty, which is all these tests need."""
    root = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MMKD_DATA_DIR", str(root / "mmkd-data"))
        assert main(["train", "--fast", "--data", str(phantom_dir), "--out", str(root / "run"), "--steps", "3",
                     "--device", "cpu"]) == 0
    model, config, _ = load_run(root / "run" / "last.pt")
    return root / "run" / "last.pt", model, config


def evaluate_dice(model, config, folder, case_id, combination, cache_dir) -> np.ndarray:
    """Dice of ``evaluate`` for one case of ``folder`` and one combination, on the volume the course caches for it
    (as ``course.load_data`` does, which needs two cases to split)."""
    (entry,) = [e for e in cache_cases(find_cases(folder), cache_dir, PreprocessConfig(spacing=config.spacing),
                                       progress=False) if e["case_id"] == case_id]
    table = evaluate(model, [(case_id, *load_cached(entry))], config.roi_size, [combination],
                     overlap=config.eval_overlap, progress=False)
    return table.dice.to_numpy()


def written(path):
    image = nib.load(str(path))
    return image, np.asanyarray(image.dataobj)


def test_the_written_file_is_what_evaluate_scores(run, phantom_dir, tmp_path):
    checkpoint, model, config = run
    case = phantom_dir / "Phantom_000"
    out = predict_path(checkpoint, case, tmp_path / "pred.nii.gz", device="cpu")
    assert out == [tmp_path / "pred.nii.gz"]
    image, label = written(out[0])
    source = nib.load(str(case / "Phantom_000_flair.nii.gz"))
    assert image.shape == source.shape and np.allclose(image.affine, source.affine)
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 4} and len(np.unique(label)) > 1
    truth = read_case(find_cases(case)[0]).label
    expected = evaluate_dice(model, config, phantom_dir, "Phantom_000", (True,) * 4, tmp_path / "cache")
    assert np.allclose(region_dice(label, truth), expected, atol=1e-6)


def test_a_case_without_t1_and_t1ce(run, phantom_dir, tmp_path):
    """FLAIR and T2 only, the T1 and T1ce files deleted: the same Dice as evaluate's FLAIR+T2 row of the full case."""
    _, model, config = run
    folder = tmp_path / "partial"
    shutil.copytree(phantom_dir / "Phantom_001", folder / "Phantom_001")
    for kind in ("t1", "t1ce"):
        (folder / "Phantom_001" / f"Phantom_001_{kind}.nii.gz").unlink()
    image, info = predict_case(model, config, folder / "Phantom_001")
    assert info["modalities"] == info["available"] == ("flair", "t2") and info["combination"] == "FLAIR+T2"
    label = np.asanyarray(image.dataobj)
    truth = read_case(find_cases(phantom_dir / "Phantom_001")[0]).label
    expected = evaluate_dice(model, config, phantom_dir, "Phantom_001", FLAIR_T2, tmp_path / "cache")
    assert np.allclose(region_dice(label, truth), expected, atol=1e-6)
    # asking for the two of a full case gives the same map as the case without the other files
    restricted, _ = predict_case(model, config, phantom_dir / "Phantom_001", modalities=("FLAIR", "t2"))
    assert np.array_equal(np.asanyarray(restricted.dataobj), label)
    with pytest.raises(DataError, match=r"Phantom_001 has no t1ce image"):
        predict_case(model, config, folder / "Phantom_001", modalities=("flair", "t1ce"))
    with pytest.raises(ValueError, match="modalities must be a non-empty subset"):
        predict_case(model, config, folder / "Phantom_001", modalities=("pd",))
    for kind in ("flair", "t2"):
        (folder / "Phantom_001" / f"Phantom_001_{kind}.nii.gz").unlink()
    with pytest.raises(DataError, match="Phantom_001 has none of the modality files"):  # the label map alone
        predict_case(model, config, folder / "Phantom_001")


def test_the_brain_crop_is_undone_in_a_grid_with_an_offset(run, phantom_dir, tmp_path):
    """A phantom case with a 2-voxel background rim (the crop margin, so that its crop is not clipped), and the same
    case padded further (unevenly) under a flipped, shifted affine with coded qform and sform: the crop removes voxels,
    the network sees the same volume, and the written map is the first case's map, padded."""
    _, model, config = run
    original = find_cases(phantom_dir / "Phantom_002")[0]
    pad = ((5, 3), (1, 7), (4, 2))
    affine = np.diag([-6.0, 6.0, 6.0, 1.0])
    affine[:3, 3] = (100.0, -40.0, 25.0)
    for name, widths, grid in (("rim", 2, np.diag([6.0, 6.0, 6.0, 1.0])), ("padded", np.add(pad, 2), affine)):
        folder = tmp_path / name / "Phantom_002"
        folder.mkdir(parents=True)
        for path in (*original.image_paths, original.label_path):
            image = nib.Nifti1Image(np.pad(np.asanyarray(nib.load(str(path)).dataobj), widths), grid)
            image.header.set_qform(grid, 1)
            image.header.set_sform(grid, 4)
            nib.save(image, str(folder / path.name))

    image, info = predict_case(model, config, folder)
    assert not info["resampled"] and all(start > 0 for start, _ in info["crop"])
    assert np.prod([stop - start for start, stop in info["crop"]]) < np.prod(image.shape)
    out = tmp_path / "out.nii.gz"
    nib.save(image, str(out))
    reloaded, label = written(out)
    assert np.allclose(reloaded.affine, affine)
    assert (int(reloaded.header["qform_code"]), int(reloaded.header["sform_code"])) == (1, 4)
    rim = np.asanyarray(predict_case(model, config, tmp_path / "rim" / "Phantom_002")[0].dataobj)
    assert len(np.unique(rim)) > 1 and np.array_equal(label, np.pad(rim, pad))
    truth = read_case(find_cases(folder)[0]).label
    expected = evaluate_dice(model, config, folder.parent, "Phantom_002", (True,) * 4, tmp_path / "cache")
    assert np.allclose(region_dice(label, truth), expected, atol=1e-6)


class Bright(torch.nn.Module):
    """A per-voxel model, as smooth as the image: WT where the z-scored FLAIR is above 1, TC above 2, ET above 2.5."""

    def __init__(self):
        super().__init__()
        self.config = ModelConfig()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, image, present):
        flair = image[:, :1]
        return SimpleNamespace(logits=torch.cat([flair - 2.5, flair - 2.0, flair - 1.0], 1) + self.weight)


def test_a_finer_case_is_resampled_and_written_back_in_its_own_grid(run, phantom_dir):
    """The phantom's 6.2-mm grid under a run whose spacing is 9 mm: the network sees about 2/3 of the voxels per axis
    and the written map has the original shape. Sampled at the centres of the network's voxels, it is the network's
    map (WT Dice > 0.9, up to the voxels that interpolation moves across a boundary); one voxel off, it is not."""
    _, _, config = run
    coarse = replace(config, spacing=9.0)
    ref = find_cases(phantom_dir / "Phantom_003")[0]
    model = Bright()
    image, info = predict_case(model, coarse, phantom_dir / "Phantom_003")
    assert info["resampled"] and image.shape == nib.load(str(ref.image_paths[0])).shape
    assert all(n < stop - start for n, (start, stop) in zip(info["grid_shape"], info["crop"]))
    assert np.allclose(grid_spacing(ref, coarse), info["grid_spacing"], rtol=0.05)
    assert np.allclose(grid_spacing(ref, config), nib.load(str(ref.image_paths[0])).header.get_zooms())
    label = np.asanyarray(image.dataobj)
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 4}

    images, _ = preprocess_case(read_case(ref), PreprocessConfig(spacing=9.0))
    network = logits_to_label(predict_logits(model, images, (True,) * 4, coarse.roi_size, coarse.eval_overlap))
    box = tuple(slice(start, stop) for start, stop in info["crop"])

    def wt_dice(shift):
        centres = [np.floor((np.arange(g) + 0.5) * (b.stop - b.start) / g).astype(int) for g, b in zip(network.shape, box)]
        centres[0] = np.clip(centres[0] + shift, 0, box[0].stop - box[0].start - 1)
        return region_dice(label[box][np.ix_(*centres)], network)[2]

    assert len(np.unique(network)) == 4 and wt_dice(0) > 0.9 and wt_dice(0) > max(wt_dice(1), wt_dice(-1)) + 0.05


def test_an_early_fusion_network_gets_its_own_modalities(run, phantom_dir, tmp_path):
    _, _, config = run
    student = build_model(ModelConfig(base_channels=2, depth=3, fusion="early", input_modalities=("t1",))).eval()
    _, info = predict_case(student, config, phantom_dir / "Phantom_000")
    assert info["modalities"] == ("t1",) and info["available"] == ("flair", "t1", "t1ce", "t2")
    folder = tmp_path / "no_t1"
    shutil.copytree(phantom_dir / "Phantom_000", folder / "Phantom_000")
    (folder / "Phantom_000" / "Phantom_000_t1.nii.gz").unlink()
    with pytest.raises(ValueError, match="early-fusion network of t1 and needs every one of them; the case gives "
                                         "flair, t1ce, t2"):
        predict_case(student, config, folder / "Phantom_000")


def test_predict_path_on_a_folder_of_cases(run, phantom_dir, tmp_path):
    checkpoint, _, _ = run
    files = predict_path(checkpoint, phantom_dir, tmp_path / "predictions", modalities=["flair", "t2"], device="cpu")
    assert files == [tmp_path / "predictions" / f"Phantom_{i:03d}.nii.gz" for i in range(4)]
    assert all(written(f)[1].shape == (32, 32, 32) for f in files)
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == [f.name for f in files]  # no temporaries

    # one case without T1ce among complete ones: refused before any file is written
    folder = tmp_path / "cases"
    shutil.copytree(phantom_dir, folder)
    (folder / "Phantom_002" / "Phantom_002_t1ce.nii.gz").unlink()
    with pytest.raises(DataError, match="case Phantom_002 has no t1ce image"):
        predict_path(checkpoint, folder, tmp_path / "refused", modalities=["t1ce"], device="cpu")
    assert not (tmp_path / "refused").exists()
    with pytest.raises(ValueError, match="ending in .nii.gz or .nii"):
        predict_path(checkpoint, phantom_dir / "Phantom_000", tmp_path / "pred", device="cpu")
    with pytest.raises(DataError, match="not one case folder"):
        predict_case(load_run(checkpoint)[0], load_run(checkpoint)[1], phantom_dir)
