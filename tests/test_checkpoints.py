"""The shipped checkpoints: intact, loadable with weights_only, and as good as their manifest says."""

import json

import pytest
import torch

from mmkd_helpers.checkpoints import MANIFEST, PRETRAINED_DIR, RUNS, _same_config, load_pretrained, manifest, \
    run_config, sha256, validation_dice
from mmkd_helpers.course import CourseConfig, ensure_phantom, load_data

ENTRIES = manifest()
names = pytest.mark.parametrize("name", sorted(ENTRIES), ids=sorted(ENTRIES))


def test_every_run_is_shipped_and_small():
    assert MANIFEST.exists(), "no manifest: run `mmkd checkpoints`"
    assert set(ENTRIES) == set(RUNS), f"manifest and RUNS differ: {set(ENTRIES) ^ set(RUNS)}"
    for name, entry in ENTRIES.items():
        assert (PRETRAINED_DIR / entry["file"]).stat().st_size < 5 * 2**20, name


@names
def test_checkpoint_file_matches_its_manifest(name):
    entry = ENTRIES[name]
    assert sha256(PRETRAINED_DIR / entry["file"]) == entry["sha256"]
    state = torch.load(PRETRAINED_DIR / entry["file"], weights_only=True)
    assert all(torch.is_tensor(v) for v in state.values())
    assert _same_config(entry, run_config(name)), "trained with another configuration"
    for key in ("method", "options", "data", "steps", "device", "wall_time_s", "commit", "val_dice"):
        assert key in entry, f"{name}: manifest entry lacks {key}"
    assert entry["method"] == RUNS[name]["method"] and entry["options"] == RUNS[name]["options"]
    assert entry.get("teacher") == RUNS[name].get("teacher")
    if "teacher" in RUNS[name]:  # distilled from the teacher file that is shipped now, not an earlier one
        assert entry["teacher_sha256"] == ENTRIES[RUNS[name]["teacher"]]["sha256"]


def test_an_entry_from_before_a_new_config_field_still_matches():
    """Fields added to the code later take their defaults: old checkpoints stay usable, other configs do not."""
    entry = {"config": json.loads(json.dumps(run_config("baseline").to_dict()))}
    del entry["config"]["model"]["fusion"]
    assert _same_config(entry, run_config("baseline"))
    assert not _same_config(entry, run_config("protokd_t1"))


def test_a_damaged_checkpoint_is_refused(tmp_path, monkeypatch):
    import mmkd_helpers.checkpoints as checkpoints

    name = sorted(ENTRIES)[0]
    damaged = tmp_path / ENTRIES[name]["file"]
    damaged.write_bytes((PRETRAINED_DIR / ENTRIES[name]["file"]).read_bytes()[:-10] + b"0123456789")
    monkeypatch.setattr(checkpoints, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(ValueError, match="sha256"):
        load_pretrained(name)


@pytest.fixture(scope="module")
def course_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("course-data")
    config = CourseConfig()
    return load_data(ensure_phantom(config, root), config, cache_dir=root / "cache", progress=False)


@names
def test_checkpoint_reproduces_its_validation_dice(name, course_data):
    entry = ENTRIES[name]
    assert entry["data"]["split"] == course_data["split"], "the phantom data or split changed since training"
    model, _ = load_pretrained(name)
    measured = validation_dice(model, course_data, CourseConfig.from_dict(entry["config"]))
    for region, value in entry["val_dice"].items():
        assert measured[region] == pytest.approx(value, abs=0.01), (name, region, measured, entry["val_dice"])


def test_a_run_can_change_the_training_configuration():
    replicate, original = run_config("pmix_teacher_none_seed1"), run_config("pmix_teacher_none")
    assert replicate.train.seed == 1 and original.train.seed == 0
    assert replicate.model == original.model and replicate.train.steps == original.train.steps


def test_a_student_of_a_retrained_teacher_is_trained_again(monkeypatch):
    import mmkd_helpers.checkpoints as checkpoints

    class Trained(Exception):
        pass

    def train_run(name, *args, **kwargs):
        raise Trained(name)

    monkeypatch.setattr(checkpoints, "train_run", train_run)
    name = next(n for n in sorted(ENTRIES) if "teacher" in RUNS[n])
    data = {"split": ENTRIES[name]["data"]["split"]}
    _, info = checkpoints.pretrained_or_train(name, CourseConfig(), data, device="cpu")
    assert info["source"] == "shipped checkpoint"
    stale = json.loads(json.dumps(ENTRIES))
    stale[name]["teacher_sha256"] = "0" * 64  # distilled from a teacher file that is no longer shipped
    monkeypatch.setattr(checkpoints, "manifest", lambda: stale)
    with pytest.raises(Trained):
        checkpoints.pretrained_or_train(name, CourseConfig(), data, device="cpu")
