"""ProtoKD (ICASSP 2023): Eq. 1-4 on tensors small enough to check by hand, and the method in the engine."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmkd_helpers.checkpoints import RUNS, run_config, train_run
from mmkd_helpers.course import CourseConfig
from mmkd_helpers.dataset import PatchDataset
from mmkd_helpers.evaluation import evaluate
from mmkd_helpers.losses import class_prototypes, pixel_kd_loss, prototype_kd_loss, similarity_maps
from mmkd_helpers.methods import build_method
from mmkd_helpers.methods.protokd import ProtoKD, load_teacher
from mmkd_helpers.models import ModelConfig, build_model
from mmkd_helpers.training import TrainConfig, Trainer
from test_training import toy_volumes


# -- Eq. 1: pixel-wise KD ------------------------------------------------------------------------------
def one_voxel_logits():
    """Student uniform (0.5, 0.5); teacher (0.75, 0.25) at T = 1: logits (ln 3, 0)."""
    student = torch.zeros(1, 2, 1, requires_grad=True)
    teacher = torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1).requires_grad_()
    return student, teacher


def test_the_code_form_is_kl_teacher_to_student_averaged_over_classes():
    student, teacher = one_voxel_logits()
    by_hand = (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)) / 2  # mean over the 2 classes
    assert pixel_kd_loss(student, teacher, temperature=1.0).item() == pytest.approx(by_hand, rel=1e-6)
    the_code = F.kl_div(F.log_softmax(student, 1), F.softmax(teacher, 1), reduction="none").mean()
    assert pixel_kd_loss(student, teacher, temperature=1.0).item() == pytest.approx(the_code.item(), rel=1e-6)


def test_the_paper_form_is_the_reverse_kl():
    student, teacher = one_voxel_logits()
    by_hand = (0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)) / 2
    assert pixel_kd_loss(student, teacher, temperature=1.0, form="paper").item() == pytest.approx(by_hand, rel=1e-6)
    assert by_hand != pytest.approx(pixel_kd_loss(student, teacher, temperature=1.0).item(), rel=1e-3)


def test_temperature_softens_and_t_squared_rescales():
    """Eq. 1 at T = 2: the logits are divided by T before the softmax, and ``t_squared`` multiplies by T² = 4."""
    student, teacher = one_voxel_logits()
    doubled = teacher.detach() * 2  # (2 ln 3, 0) / 2 = (ln 3, 0): the teacher is again (0.75, 0.25); student (0.5, 0.5)
    by_hand = (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)) / 2  # (0.30410 − 0.17329) / 2 = 0.06541
    assert pixel_kd_loss(student, doubled, temperature=2.0).item() == pytest.approx(by_hand, rel=1e-6)
    assert pixel_kd_loss(student, doubled, temperature=2.0, t_squared=True).item() == pytest.approx(4 * by_hand, rel=1e-6)
    # unsoftened, the doubled teacher is (0.9, 0.1): (0.9 ln 1.8 + 0.1 ln 0.2) / 2 = (0.52901 − 0.16094) / 2
    unsoftened = (0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)) / 2
    assert pixel_kd_loss(student, doubled, temperature=1.0).item() == pytest.approx(unsoftened, rel=1e-6)


def test_kd_is_zero_for_equal_logits_and_never_trains_the_teacher():
    student, teacher = one_voxel_logits()
    assert pixel_kd_loss(teacher.detach(), teacher).item() == pytest.approx(0.0, abs=1e-7)
    pixel_kd_loss(student, teacher).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="form must be one of"):
        pixel_kd_loss(student, teacher, form="other")
    with pytest.raises(ValueError, match="logits differ in shape"):
        pixel_kd_loss(student, torch.zeros(1, 3, 1))


# -- Eq. 2-3: prototypes and I²FV maps -------------------------------------------------------------------
def test_prototypes_are_class_means_and_absent_classes_are_flagged():
    features = torch.tensor([[1.0, 3.0, 0.0, 0.0], [0.0, 0.0, 2.0, 4.0]])[None]  # (1, C=2, 4 voxels)
    classes = torch.tensor([[0, 0, 1, 1]])
    prototypes, present = class_prototypes(features, classes, num_classes=3)
    assert prototypes[0, 0].tolist() == pytest.approx([2.0, 0.0], rel=1e-4)
    assert prototypes[0, 1].tolist() == pytest.approx([0.0, 3.0], rel=1e-4)
    assert prototypes[0, 2].tolist() == [0.0, 0.0] and present.tolist() == [[True, True, False]]
    with pytest.raises(ValueError, match="must share N and spatial size"):
        class_prototypes(features, torch.tensor([[0, 0, 1]]), num_classes=3)


def test_similarity_maps_are_cosines_to_each_prototype():
    features = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])[None]  # voxels (1,0), (0,1), (1,1)
    prototypes = torch.tensor([[[2.0, 0.0], [0.0, 5.0]]])
    maps = similarity_maps(features, prototypes)
    s = 1 / math.sqrt(2)
    assert maps[0].tolist() == [pytest.approx([1.0, 0.0, s]), pytest.approx([0.0, 1.0, s])]


# -- Eq. 4: the prototype loss -----------------------------------------------------------------------------
def two_voxels():
    """Teacher features (1,0), (0,1); student (1,0), (1,1); voxel 0 is class 0, voxel 1 class 1.

    Teacher maps M0 = [1, 0], M1 = [0, 1]; student prototypes c0 = (1,0), c1 = (1,1), so its maps are
    M0 = [1, 1/√2], M1 = [1/√2, 1]: squared differences [0, 1/2] and [1/2, 0].
    """
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])[None]  # (1, C=2, 2 voxels)
    student = torch.tensor([[1.0, 1.0], [0.0, 1.0]])[None].requires_grad_()
    return student, teacher, torch.tensor([[0, 1]])


def test_the_prototype_loss_is_the_mse_of_the_two_maps():
    student, teacher, classes = two_voxels()
    assert prototype_kd_loss(student, teacher, classes, num_classes=2).item() == pytest.approx(0.25, abs=1e-4)
    assert prototype_kd_loss(teacher, teacher, classes, num_classes=2).item() == pytest.approx(0.0, abs=1e-7)


def test_intra_class_only_and_no_background():
    student, teacher, classes = two_voxels()
    # intra-class only (Table 3): voxel 0 against c0 and voxel 1 against c1 -- both agree
    assert prototype_kd_loss(student, teacher, classes, 2, inter_class=False).item() == pytest.approx(0.0, abs=1e-4)
    # without the background class only M1 counts: [1/2, 0] -> 1/4
    assert prototype_kd_loss(student, teacher, classes, 2, include_background=False).item() == pytest.approx(0.25, abs=1e-4)


def test_a_class_missing_from_one_sample_is_skipped_for_the_batch_by_default():
    student, teacher, classes = two_voxels()
    # second sample: both voxels class 0, so class 1 is missing there
    student2 = torch.cat([student, torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])])
    teacher2 = torch.cat([teacher, torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])])
    classes2 = torch.cat([classes, torch.tensor([[0, 0]])])
    # "batch": only class 0 is kept, in both samples: sample 1 gives [0, 1/2]; sample 2: the student equals
    # the teacher, 0 -> (0 + 1/2 + 0 + 0) / 4
    batch = prototype_kd_loss(student2, teacher2, classes2, 2, absent="batch")
    assert batch.item() == pytest.approx(0.125, abs=1e-4)
    # "sample": sample 1 keeps both classes (sum 1), sample 2 class 0 (sum 0): 1 / 6 kept entries
    sample = prototype_kd_loss(student2, teacher2, classes2, 2, absent="sample")
    assert sample.item() == pytest.approx(1 / 6, abs=1e-4)


def test_the_teacher_side_gets_no_gradient_and_nothing_kept_gives_zero():
    student, teacher, classes = two_voxels()
    teacher.requires_grad_()
    prototype_kd_loss(student, teacher, classes, 2).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    none = prototype_kd_loss(student, teacher.detach(), torch.tensor([[0, 0]]), 2, include_background=False)
    assert none.item() == 0.0 and none.requires_grad
    with pytest.raises(ValueError, match="absent must be one of"):
        prototype_kd_loss(student, teacher, classes, 2, absent="class")
    with pytest.raises(ValueError, match="features must share N and spatial size"):
        prototype_kd_loss(student, teacher[..., :1], classes, 2)


# -- the method in the engine ------------------------------------------------------------------------------
def early(*modalities):
    return ModelConfig(base_channels=4, depth=3, head="classes", fusion="early", input_modalities=modalities)


def test_protokd_adds_weighted_terms_and_freezes_the_teacher(tmp_path):
    torch.manual_seed(0)
    teacher = build_model(early("flair", "t1", "t1ce", "t2"))
    student = build_model(early("t1"))
    dataset = PatchDataset(toy_volumes(2), (16, 16, 16), drop_policy="none")
    method = ProtoKD(teacher=teacher, alpha=10.0, beta=0.1)
    trainer = Trainer(student, dataset, TrainConfig(steps=2, batch_size=2), method, progress=False)
    before = [p.clone() for p in teacher.parameters()]
    history = trainer.fit()
    assert {"seg", "kd", "proto"} <= set(history.columns)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters())), "the teacher changed"
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    output = student(batch["image"], batch["present"])
    terms = method.loss_terms(student, batch, output)
    with torch.no_grad():
        t = teacher(batch["image"])
    # α · Eq. 1 (code form, T = 10), re-derived in numpy: mean over (N, C, voxels) of p_t (log p_t − log p_s)
    def log_softmax(logits):
        z = logits.detach().double().numpy() / 10.0
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    log_p_s, log_p_t = log_softmax(output.logits), log_softmax(t.logits)
    assert terms["kd"].item() == pytest.approx(10 * (np.exp(log_p_t) * (log_p_t - log_p_s)).mean(), rel=1e-5)
    no_proto = ProtoKD(teacher=teacher, beta=0.0)
    no_proto.teacher = load_teacher(teacher)
    assert set(no_proto.loss_terms(student, batch, output)) == {"kd"}


def test_protokd_needs_a_teacher_and_class_heads(tmp_path):
    with pytest.raises(ValueError, match="needs the option teacher"):
        build_method("protokd")
    teacher = build_model(early("t1"))
    for bad, message in [({"kd_form": "hinton"}, "kd_form must be one of"), ({"absent": "class"}, "absent must be"),
                         ({"alpha": -1.0}, "alpha must be >= 0"), ({"beta": -0.1}, "beta must be >= 0"),
                         ({"temperature": 0.0}, "temperature must be > 0")]:
        with pytest.raises(ValueError, match=message):
            build_method("protokd", teacher=teacher, **bad)
    regions = build_model(ModelConfig(base_channels=4, depth=3, fusion="early", input_modalities=("t1",)))
    dataset = PatchDataset(toy_volumes(1), (16, 16, 16), drop_policy="none")
    with pytest.raises(ValueError, match="need head='classes'"):
        Trainer(regions, dataset, TrainConfig(steps=1), ProtoKD(teacher=teacher), progress=False)


def test_a_teacher_checkpoint_file_is_loaded_and_named_in_the_options(tmp_path):
    teacher = build_model(early("flair", "t1", "t1ce", "t2"))
    dataset = PatchDataset(toy_volumes(1), (16, 16, 16), drop_policy="none")
    Trainer(teacher, dataset, TrainConfig(steps=1, batch_size=1), out_dir=tmp_path / "teacher", progress=False).fit()
    loaded = load_teacher(str(tmp_path / "teacher" / "last.pt"))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), teacher.state_dict().values()))
    assert not any(p.requires_grad for p in loaded.parameters())
    method = ProtoKD(teacher=str(tmp_path / "teacher" / "last.pt"))
    assert method.options["teacher"].endswith("last.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a PyTorch checkpoint"):
        load_teacher(str(tmp_path / "junk.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_teacher(str(tmp_path / "missing.pt"))


def test_the_course_runs_train_a_teacher_then_students_evaluated_on_their_modality():
    config = CourseConfig.fast()
    volumes = dict(zip("abcde", toy_volumes(5, size=32)))
    data = {"volumes": volumes, "split": {"train": ["a", "b", "c"], "val": ["d"], "test": ["e"]}}
    student, trainer = train_run("protokd_t1", config, data, device="cpu", progress=False)
    assert student.config.input_modalities == ("t1",) and trainer.method.teacher.config.input_modalities == (
        "flair", "t1", "t1ce", "t2")
    results = evaluate(student, [("e", *volumes["e"])], config.roi_size, progress=False)
    assert set(results.combination) == {"T1"} and len(results) == 3
    assert run_config("protokd_t1").model.fusion == "early" and run_config("protokd_t1").drop_policy == "none"
    assert {RUNS[f"{kind}_{m}"]["method"] for kind in ("unimodal", "protokd")
            for m in ("flair", "t1", "t1ce", "t2")} == {"baseline", "protokd"}
