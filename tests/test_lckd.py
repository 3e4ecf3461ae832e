"""LCKD (Wang et al., MICCAI 2023): the KD loss (Eq. 4), the teacher election (Eqs. 1-2) and the method
plug-in in the training engine."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from mmkd_helpers.analysis import feature_distance
from mmkd_helpers.constants import MODALITY_NAMES
from mmkd_helpers.dataset import PatchDataset
from mmkd_helpers.losses import cross_modal_kd_loss
from mmkd_helpers.methods import METHODS, build_method
from mmkd_helpers.methods.lckd import LCKD, elect, single_modality_dice, teacher_names
from mmkd_helpers.models import ModelConfig, build_model
from mmkd_helpers.training import TrainConfig, Trainer

FLAIR, T1, T1CE, T2 = range(4)


# -- Eq. 4: the cross-modal KD loss -------------------------------------------------------------------------
def hand_features(requires_grad=False):
    """N=1, M=4, C=1, two voxels: FLAIR [1, 3], T1 [2, 2], T1ce [0, 0], T2 [5, 1]."""
    return torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]], [[0.0, 0.0]], [[5.0, 1.0]]]], requires_grad=requires_grad)


ALL = torch.ones(1, 4, dtype=torch.bool)


def test_kd_loss_one_teacher_by_hand():
    # teacher FLAIR [1, 3] -> T1: |1-2|,|3-2| mean 1; T1ce: 1, 3 mean 2; T2: 4, 2 mean 3; summed over pairs
    assert cross_modal_kd_loss(hand_features(), ALL, [FLAIR], p=1).item() == pytest.approx(6.0)
    # squared: T1 (1 + 1)/2 = 1; T1ce (1 + 9)/2 = 5; T2 (16 + 4)/2 = 10
    assert cross_modal_kd_loss(hand_features(), ALL, [FLAIR], p=2).item() == pytest.approx(16.0)


def test_kd_loss_teach_students_vs_all_by_hand():
    teachers = [FLAIR, T1CE]
    # students only (paper): FLAIR->T1 1 + FLAIR->T2 3 + T1ce->T1 2 + T1ce->T2 (5+1)/2=3
    assert cross_modal_kd_loss(hand_features(), ALL, teachers, teach="students").item() == pytest.approx(9.0)
    # all (code): plus FLAIR->FLAIR 0, FLAIR->T1ce 2, T1ce->FLAIR 2, T1ce->T1ce 0
    assert cross_modal_kd_loss(hand_features(), ALL, teachers, teach="all").item() == pytest.approx(13.0)


def test_kd_loss_missing_teachers_and_students_contribute_nothing():
    no_flair = torch.tensor([[False, True, True, True]])
    # FLAIR (a teacher) is missing: only T1ce->T1 2 and T1ce->T2 3 remain
    assert cross_modal_kd_loss(hand_features(), no_flair, [FLAIR, T1CE]).item() == pytest.approx(5.0)
    only_teacher = torch.tensor([[True, False, False, False]])
    assert cross_modal_kd_loss(hand_features(), only_teacher, [FLAIR]).item() == 0.0
    assert cross_modal_kd_loss(hand_features(), ALL, [T1], teach="students", p=1).item() == pytest.approx(
        1.0 + 2.0 + (3 + 1) / 2)  # teacher T1 [2, 2] -> FLAIR 1, T1ce 2, T2 2


def test_kd_loss_respects_per_sample_presence_and_reduction():
    features = hand_features().repeat(2, 1, 1, 1)
    present = torch.tensor([[True, True, True, True], [True, True, False, False]])
    per_sample = cross_modal_kd_loss(features, present, [FLAIR], reduction="none")
    assert per_sample.tolist() == pytest.approx([6.0, 1.0])  # sample 2 keeps only FLAIR->T1
    assert cross_modal_kd_loss(features, present, [FLAIR]).item() == pytest.approx(3.5)
    assert cross_modal_kd_loss(features, present, [FLAIR], reduction="sum").item() == pytest.approx(7.0)


def test_kd_loss_gradient_reaches_students_only():
    features = hand_features(requires_grad=True)
    present = torch.tensor([[True, True, True, False]])  # T2 missing: its (bogus) feature must not move
    cross_modal_kd_loss(features, present, [FLAIR, T1CE], p=1).backward()
    grad = features.grad[0, :, 0]
    assert grad[FLAIR].tolist() == [0, 0] and grad[T1CE].tolist() == [0, 0] and grad[T2].tolist() == [0, 0]
    # T1 [2, 2]: d/df mean|f_t - f| = sign(f - f_t)/2 -> from FLAIR [1, 3]: [0.5, -0.5]; from T1ce [0, 0]: [0.5, 0.5]
    assert grad[T1].tolist() == [1.0, 0.0]


def test_kd_loss_teach_all_lets_teachers_pull_each_other():
    features = hand_features(requires_grad=True)
    cross_modal_kd_loss(features, ALL, [FLAIR, T1CE], teach="all").backward()
    # FLAIR [1, 3] as a student of T1ce [0, 0]: sign(f - 0)/2 = [0.5, 0.5]; its own zero term adds nothing
    assert features.grad[0, FLAIR, 0].tolist() == [0.5, 0.5]


def test_kd_loss_rejects_bad_options():
    with pytest.raises(ValueError, match="p must be"):
        cross_modal_kd_loss(hand_features(), ALL, [0], p=3)
    with pytest.raises(ValueError, match="teach must be"):
        cross_modal_kd_loss(hand_features(), ALL, [0], teach="teachers")
    with pytest.raises(ValueError, match="reduction"):
        cross_modal_kd_loss(hand_features(), ALL, [0], reduction="max")
    with pytest.raises(ValueError, match=r"present must be \(N, M\) = \(1, 4\)"):
        cross_modal_kd_loss(hand_features(), ALL[:, :3], [0])
    with pytest.raises(ValueError, match=r"teachers must be modality indices in \[0, 4\), got \[0, 4\]"):
        cross_modal_kd_loss(hand_features(), ALL, [0, 4])


# -- Eqs. 1-2: teacher election ------------------------------------------------------------------------------
def dice_frame(rows, columns=MODALITY_NAMES):
    return pd.DataFrame(rows, index=["ET", "TC", "WT"], columns=list(columns))


def test_elect_unique_and_most_frequent():
    table = dice_frame([[0.2, 0.1, 0.8, 0.3],   # ET -> T1ce
                        [0.5, 0.2, 0.7, 0.6],   # TC -> T1ce
                        [0.9, 0.4, 0.6, 0.8]])  # WT -> FLAIR
    assert elect(table, "unique") == ({"ET": T1CE, "TC": T1CE, "WT": FLAIR}, [FLAIR, T1CE])  # the paper's {T1c, Fl}
    assert elect(table, "most_frequent") == ({"ET": T1CE, "TC": T1CE, "WT": FLAIR}, [T1CE])


def test_elect_ties_go_to_the_lower_modality_index():
    table = dice_frame([[0.5, 0.5, 0.5, 0.5],   # four-way tie -> FLAIR
                        [0.1, 0.7, 0.2, 0.7],   # T1 = T2 -> T1
                        [0.3, 0.2, 0.1, 0.9]])  # T2
    assert elect(table, "unique") == ({"ET": FLAIR, "TC": T1, "WT": T2}, [FLAIR, T1, T2])
    assert elect(table, "most_frequent")[1] == [FLAIR]  # one vote each -> the lowest index
    shuffled = dice_frame([[0.7, 0.7, 0.1, 0.1]] * 3, columns=["T2", "FLAIR", "T1ce", "T1"])
    assert elect(shuffled)[1] == [FLAIR]  # the tie is broken by modality index, not by column position


def test_elect_rejects_unknown_columns_and_phi():
    with pytest.raises(ValueError, match="modality names"):
        elect(dice_frame([[1, 0, 0, 0]] * 3, columns=["a", "b", "c", "d"]))
    with pytest.raises(ValueError, match="phi"):
        elect(dice_frame([[1, 0, 0, 0]] * 3), "majority")


class EchoModel(torch.nn.Module):
    """Predicts every region where the sum of the present modalities' images is 1: a model whose
    single-modality Dice can be worked out by hand."""

    def __init__(self):
        super().__init__()
        self.config = ModelConfig()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, image, present=None):
        shown = (image * present.view(*present.shape, 1, 1, 1)).sum(1, keepdim=True)
        return SimpleNamespace(logits=(100 * shown - 50 + self.weight).repeat(1, 3, 1, 1, 1))


def echo_case():
    """8 voxels in a row: ED ED NCR ET ET -> ET 2 voxels, TC 3, WT 5. FLAIR shows WT, T1 nothing,
    T1ce ET, T2 TC (the paper's story: T1c for ET/TC, FLAIR for WT)."""
    label = np.array([0, 0, 2, 2, 1, 4, 4, 0], np.uint8).reshape(1, 1, 8)
    images = np.stack([np.isin(label, v) for v in [(1, 2, 4), (), (4,), (1, 4)]]).astype(np.float32)
    return "case", images, label


def empty_case():
    return "empty", np.zeros((4, 1, 1, 8), np.float32), np.zeros((1, 1, 8), np.uint8)


HARD = dice_frame([[4 / 7, 0, 1, 2 * 2 / 5],      # ET: FLAIR 2*2/(5+2), T1ce exact, T2 2*2/(3+2)
                   [6 / 8, 0, 2 * 2 / 5, 1],      # TC: FLAIR 2*3/(5+3), T1ce 2*2/(2+3)
                   [1, 0, 4 / 7, 6 / 8]])         # WT: T1ce 2*2/(2+5), T2 2*3/(3+5)
SOFT = dice_frame([[4 / 8, 0, 4 / 5, 4 / 6],      # 2|P∩Y| / (|P| + |Y| + 1)
                   [6 / 9, 0, 4 / 6, 6 / 7],
                   [10 / 11, 0, 4 / 8, 6 / 9]])


def test_single_modality_dice_hard_and_soft_by_hand():
    model = EchoModel()
    hard = single_modality_dice(model, [echo_case()], (1, 1, 8), dice="hard")
    soft = single_modality_dice(model, [echo_case()], (1, 1, 8), dice="soft")
    assert list(hard.index) == ["ET", "TC", "WT"] and list(hard.columns) == list(MODALITY_NAMES)
    assert np.allclose(hard, HARD, atol=1e-6) and np.allclose(soft, SOFT, atol=1e-6)
    assert elect(hard)[1] == elect(soft)[1] == [FLAIR, T1CE, T2]


def test_single_modality_dice_averages_cases_and_hard_scores_empty_as_one():
    model = EchoModel()
    hard = single_modality_dice(model, [echo_case(), empty_case()], (1, 1, 8), dice="hard")
    soft = single_modality_dice(model, [echo_case(), empty_case()], (1, 1, 8), dice="soft")
    assert np.allclose(hard, (HARD + 1) / 2, atol=1e-6)  # empty prediction of an empty case: Dice 1
    assert np.allclose(soft, SOFT / 2, atol=1e-6)  # soft Dice: 0 / (0 + 0 + 1)


def fake_trainer(val=(), train=(), roi=(16, 16, 16)):
    return SimpleNamespace(model=EchoModel(), val_volumes=list(val), dataset=SimpleNamespace(volumes=list(train), roi_size=roi))


def test_election_updates_teachers_and_logs_the_table():
    method = LCKD(election_every=5, election_roi=[1, 1, 8])
    assert method.teachers == [FLAIR]  # the code's default until the first election
    row = method.run_election(fake_trainer(val=[echo_case()]), step=5)
    assert method.teachers == [FLAIR, T1CE, T2] and row["teachers"] == "FLAIR,T1ce,T2"
    assert row["elect_ET_T1ce"] == pytest.approx(1.0) and row["elect_WT_T1ce"] == pytest.approx(4 / 7)
    assert len([k for k in row if k.startswith("elect_")]) == 12
    entry = method.election_log[-1]
    assert entry["step"] == 5 and entry["winners"] == {"ET": T1CE, "TC": T2, "WT": FLAIR}
    assert np.allclose(pd.DataFrame.from_dict(entry["dice"], orient="index"), HARD)
    single = LCKD(phi="most_frequent", election_roi=[1, 1, 8])
    assert single.run_election(fake_trainer(val=[echo_case()]), 5)["teachers"] == "FLAIR"  # 1 vote each


def test_election_data_and_roi():
    val_case, other = echo_case(), empty_case()
    train = [val_case[1:], other[1:], other[1:]]
    trainer = fake_trainer(val=[other], train=train)
    method = LCKD(election_data="train", election_roi=[1, 1, 8])
    # "train": as many training cases as there are validation cases, taken from the training list
    assert [c for c, *_ in method.election_volumes(trainer)] == ["train0"]
    method.run_election(trainer, 1)
    assert method.teachers == [FLAIR, T1CE, T2]  # the first training case, not the (empty) validation case
    assert len(method.election_volumes(fake_trainer(train=train))) == 3  # no validation cases: all
    assert LCKD().election_roi(fake_trainer()) == (16, 16, 16)  # the training crop, the course's evaluation window
    assert LCKD().election_roi(fake_trainer(roi=(24, 24, 24))) == (24, 24, 24)
    assert LCKD(election_roi=[8, 8, 8]).election_roi(fake_trainer()) == (8, 8, 8)


def test_lckd_options_are_checked():
    for bad in [{"p": 3}, {"teach": "teachers"}, {"phi": "majority"}, {"election_dice": "medium"},
                {"election_data": "test"}, {"initial_teachers": [4]}, {"initial_teachers": []},
                {"election_every": -1}]:
        with pytest.raises(ValueError, match=f"LCKD option {next(iter(bad))} must be"):
            LCKD(**bad)
    with pytest.raises(ValueError, match="no val_volumes"):
        LCKD().setup(fake_trainer())
    LCKD(election_every=0).setup(fake_trainer())  # fixed teachers: no election, no cases needed
    assert METHODS["lckd"] is LCKD and teacher_names([FLAIR, T1CE]) == "FLAIR,T1ce"


def test_build_method_names_an_unknown_option_and_what_the_method_accepts():
    """An option the method does not have is a one-line ValueError, not __init__'s TypeError."""
    with pytest.raises(ValueError, match=r"^unknown option 'foo' for method 'baseline'; it takes no options$"):
        build_method("baseline", foo=1)
    with pytest.raises(ValueError, match=r"^unknown options 'alpah', 'tech' for method 'lckd'; it accepts: alpha, p, "
                                         r"teach, phi, election_every, .*, election_roi$"):
        build_method("lckd", alpha=0.1, alpah=0.2, tech="all")
    with pytest.raises(ValueError, match="unknown method 'kd'; available: baseline, lckd"):
        build_method("kd")
    assert type(build_method("baseline")) is METHODS["baseline"]


# -- the method in the training engine -----------------------------------------------------------------------
SMALL = ModelConfig(base_channels=4, depth=3)
ROI = (16, 16, 16)


def toy_volumes(n, seed):
    """16^3 cubes: FLAIR shows the whole tumour, T1ce the enhancing core, T2 the core, T1 only noise."""
    rng = np.random.default_rng(seed)
    volumes = []
    for _ in range(n):
        label = np.zeros((16,) * 3, np.uint8)
        a = rng.integers(1, 7)
        label[a:a + 8, a:a + 8, a:a + 8] = 2
        label[a + 2:a + 6, a + 2:a + 6, a + 2:a + 6] = 1
        label[a + 3:a + 5, a + 3:a + 5, a + 3:a + 5] = 4
        shown = np.stack([np.isin(label, v) for v in [(1, 2, 4), (), (4,), (1, 4)]])
        images = (rng.normal(0, 0.3, shown.shape) + 2.0 * shown).astype(np.float32)
        volumes.append((images, label))
    return volumes


def lckd_trainer(path, method, steps=4, seed=0, drop_policy="uniform15"):
    torch.manual_seed(seed)
    dataset = PatchDataset(toy_volumes(3, seed=0), ROI, seed=0, drop_policy=drop_policy)
    val = [(f"val{i}", *v) for i, v in enumerate(toy_volumes(2, seed=1))]
    return Trainer(build_model(SMALL), dataset, TrainConfig(steps=steps, batch_size=2), method, out_dir=path,
                   device="cpu", progress=False, val_volumes=val)


def table_of(entry):
    return pd.DataFrame.from_dict(entry["dice"], orient="index")


def test_lckd_trains_elects_and_resumes_exactly(tmp_path):
    straight = lckd_trainer(tmp_path / "a", LCKD(election_every=2))
    history = straight.fit()
    # the hook ran after steps 2 and 4, and its columns are in the history
    assert [e["step"] for e in straight.method.election_log] == [2, 4]
    assert history["teachers"].notna().tolist() == [False, True, False, True]
    assert {f"elect_{r}_{m}" for r in ("ET", "TC", "WT") for m in MODALITY_NAMES} <= set(history.columns)
    # every elected set is what its Dice table implies, and the last table is what the final model measures
    for entry, names in zip(straight.method.election_log, history["teachers"].dropna()):
        assert elect(table_of(entry)) == (entry["winners"], entry["teachers"])
        assert teacher_names(entry["teachers"]) == names
    measured = single_modality_dice(straight.model, straight.val_volumes, ROI)
    assert np.allclose(measured, table_of(straight.method.election_log[-1]).loc[measured.index, measured.columns])
    assert straight.method.teachers == elect(measured)[1]

    # interrupted after step 3 (between two elections) and resumed: the same run
    paused = lckd_trainer(tmp_path / "b", LCKD(election_every=2))
    paused.fit(stop_at=3)
    assert paused.method.teachers == straight.method.election_log[0]["teachers"]
    # the KD term of step 4 is alpha x Eq. 4 on the output of the model after step 3, with step 2's teachers,
    # re-derived pair by pair: per sample, the sum over present teachers t and present non-teachers s of
    # mean |f_t - f_s|, then the mean over the batch
    batch = torch.utils.data.default_collate([paused.dataset[i] for i in (6, 7)])  # step 4's samples
    with torch.no_grad():
        features = paused.model(batch["image"], batch["present"]).bottleneck.double()
    teachers, present = paused.method.teachers, batch["present"].tolist()
    per_sample = [sum((features[n, t] - features[n, s]).abs().mean().item()
                      for t in teachers for s in range(4) if present[n][t] and present[n][s] and s not in teachers)
                  for n in range(2)]
    assert history["kd"].iloc[3] == pytest.approx(0.1 * sum(per_sample) / 2, rel=1e-5)
    resumed = lckd_trainer(tmp_path / "b", build_method("lckd", election_every=2), seed=123)
    resumed_history = resumed.fit(resume=True)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.method.teachers == straight.method.teachers
    assert resumed.method.election_log == straight.method.election_log
    assert resumed_history["kd"].tolist() == history["kd"].tolist()


def test_lckd_elect_at_start_elects_on_the_untrained_model(tmp_path):
    method = LCKD(elect_at_start=True, election_every=0, teach="all", initial_teachers=[T1])
    trainer = lckd_trainer(tmp_path, method, steps=2, drop_policy="none")
    assert method.election_log == []  # building the trainer elects nothing: fit() starts the run
    untrained = single_modality_dice(trainer.model, trainer.val_volumes, ROI)
    history = trainer.fit()
    assert [e["step"] for e in method.election_log] == [0]
    assert np.allclose(untrained, table_of(method.election_log[0]).loc[untrained.index, untrained.columns])
    assert method.teachers == elect(untrained)[1]
    assert history["teachers"].dropna().tolist() == [teacher_names(method.teachers)]  # logged as step 0 only
    assert history.loc[history.step == 0].index.size == 1 and history.step.max() == 2
    assert (history["kd"].dropna() > 0).all()  # all modalities present, so every teacher has students
    state = torch.load(tmp_path / "last.pt", weights_only=True)["method"]
    assert state["state"]["election_log"][0]["step"] == 0 and state["state"]["teachers"] == method.teachers


def test_build_method_round_trips_through_a_checkpoint(tmp_path):
    options = {"alpha": 0.5, "p": 2, "teach": "all", "phi": "most_frequent", "election_every": 3,
               "election_dice": "soft", "elect_at_start": False, "election_data": "train",
               "initial_teachers": [T1CE, T2], "election_roi": [16, 16, 16]}
    method = build_method("lckd", **options)
    assert method.options == options and json.loads(json.dumps(method.options)) == options
    lckd_trainer(tmp_path, method, steps=1).fit()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["method"]
    assert saved["name"] == "lckd" and saved["options"] == options
    rebuilt = build_method(saved["name"], **saved["options"])
    rebuilt.load_state_dict(saved["state"])
    assert rebuilt.options == options and rebuilt.teachers == [T1CE, T2] and rebuilt.election_log == []


# -- feature distance ----------------------------------------------------------------------------------------
def test_feature_distance_by_pair():
    torch.manual_seed(0)
    model = build_model(SMALL)
    same = torch.randn(2, 1, *ROI).expand(-1, 4, -1, -1, -1)  # four identical modalities: identical features
    table = feature_distance(model, same, [T1CE])
    assert list(table.student) == ["FLAIR", "T1", "T2"] and set(table.teacher) == {"T1ce"}
    assert np.allclose(table[["l1", "mse"]], 0) and np.allclose(table.cosine, 1)
    patches = torch.randn(3, 4, *ROI)
    table = feature_distance(model, patches, [FLAIR, T2], batch_size=2)
    assert len(table) == 6
    with torch.no_grad():
        f = model(patches).bottleneck
    row = table[(table.teacher == "T2") & (table.student == "T1")].iloc[0]
    assert row.l1 == pytest.approx((f[:, T2] - f[:, T1]).abs().mean().item(), rel=1e-5)
    assert row.mse == pytest.approx((f[:, T2] - f[:, T1]).square().mean().item(), rel=1e-5)
    scale = 0.5 * (f[:, T2].abs().mean() + f[:, T1].abs().mean()).item()
    assert row.relative_l1 == pytest.approx(row.l1 / scale, rel=1e-5)
    from_volumes = feature_distance(model, toy_volumes(2, seed=0), [T1CE], roi_size=ROI, n_patches=2)
    assert len(from_volumes) == 3 and (from_volumes.l1 > 0).all()
