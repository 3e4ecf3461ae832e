"""MetaKD (Wang et al., arXiv 2405.07155): the IWV, the weighted KD loss, both meta schemes, Fig. 6."""

from dataclasses import replace
import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from mmkd_helpers.analysis import feature_generation_quality
from mmkd_helpers.dataset import PatchDataset
from mmkd_helpers.losses import normalise_iwv, weighted_kd_loss
from mmkd_helpers.methods import build_method
from mmkd_helpers.methods.metakd import MetaKD, initial_iwv
from mmkd_helpers.models import ModelConfig, build_model
from mmkd_helpers.training import TrainConfig, Trainer
from test_training import toy_volumes

SMALL = ModelConfig(base_channels=4, depth=3)
ROI = (16, 16, 16)
W_COLUMNS = ["w_FLAIR", "w_T1", "w_T1ce", "w_T2"]
SCHEMES = ["alternating", "bilevel"]


# -- normalise_iwv: Eq. 6 and the ablation ---------------------------------------------------------------
def test_softmax_normalisation_is_eq6():
    raw = torch.log(torch.tensor([1.0, 2.0, 1.0, 4.0]))
    assert torch.allclose(normalise_iwv(raw), torch.tensor([1, 2, 1, 4]) / 8.0)


def test_relu_and_sigmoid_are_divided_by_their_sum():
    relu = normalise_iwv(torch.tensor([1.0, -1.0, 3.0, 0.0]), "relu")
    assert torch.allclose(relu, torch.tensor([0.25, 0.0, 0.75, 0.0]), atol=1e-5)
    assert (relu > 0).all(), "a killed weight is floored, so every ratio w_i / w_j stays finite"
    sigmoid = normalise_iwv(torch.tensor([0.0, math.log(3.0)]), "sigmoid")  # sigmoid: 1/2, 3/4
    assert torch.allclose(sigmoid, torch.tensor([0.4, 0.6]))
    with pytest.raises(ValueError, match="normalisation"):
        normalise_iwv(torch.zeros(4), "tanh")


# -- weighted_kd_loss: Eq. 5 inside Eq. 4 ----------------------------------------------------------------
def two_modalities(requires_grad=False):
    """One sample, two modalities, one voxel: f_0 = 1, f_1 = 3; w = (1/4, 3/4)."""
    features = torch.tensor([[[1.0], [3.0]]], requires_grad=requires_grad)  # (N=1, M=2, C=1)
    return features, torch.ones(1, 2, dtype=torch.bool), torch.tensor([0.25, 0.75])


def test_both_directions_of_a_pair_are_weighted_by_the_ratio():
    features, present, w = two_modalities()
    # (0 -> 1): w0/w1 * |1 - 3| = 2/3; (1 -> 0): w1/w0 * 2 = 6
    assert weighted_kd_loss(features, present, w).item() == pytest.approx(2 / 3 + 6)
    # p = 2 is the paper's MSE variant: the squared difference, 4
    assert weighted_kd_loss(features, present, w, p=2).item() == pytest.approx(4 / 3 + 12)


def test_missing_modalities_are_excluded_per_sample():
    # f_0 = (0, 0), f_1 = (2, 0), f_2 = (0, 4): d_01 = 1, d_02 = 2, d_12 = 3 (mean over the 2 voxels)
    one = torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]], [[0.0, 4.0]]])  # (M=3, C=1, 2 voxels)
    features = torch.stack([one, one, one])  # (N=3, ...)
    present = torch.tensor([[True, True, True], [True, False, True], [False, True, False]])
    w = torch.tensor([0.5, 0.25, 0.25])  # ratios: r01 = r02 = 2, r10 = r20 = 1/2, r12 = r21 = 1
    all_three = 2 * 1 + 0.5 * 1 + 2 * 2 + 0.5 * 2 + 1 * 3 + 1 * 3  # 13.5
    without_1 = 2 * 2 + 0.5 * 2  # only (0, 2) and (2, 0): 5
    only_1 = 0.0  # one modality: no pair
    expected = (all_three + without_1 + only_1) / 3
    assert weighted_kd_loss(features, present, w).item() == pytest.approx(expected)
    # a per-sample IWV (N, M) gives the same as the shared one when it is the same for every sample
    assert weighted_kd_loss(features, present, w.expand(3, 3)).item() == pytest.approx(expected)


def test_the_teacher_side_is_stop_gradient():
    features, present, w = two_modalities(requires_grad=True)
    weighted_kd_loss(features, present, w).backward()
    # f_0 is the student only in (1 -> 0): d/df_0 [3 * |3 - f_0|] = -3; f_1 only in (0 -> 1): +1/3
    assert torch.allclose(features.grad, torch.tensor([[[-3.0], [1 / 3]]]))
    features.grad = None
    weighted_kd_loss(features, present, w, detach_teacher=False).backward()
    assert torch.allclose(features.grad, torch.tensor([[[-10 / 3], [10 / 3]]]))


def test_a_missing_modality_gets_no_gradient():
    features = torch.tensor([[[1.0], [3.0], [5.0]]], requires_grad=True)
    weighted_kd_loss(features, torch.tensor([[True, False, True]]), torch.ones(3) / 3).backward()
    assert features.grad[0, 1].item() == 0 and features.grad[0, 0].item() != 0


def test_the_ratio_is_detached_unless_asked():
    features, present, _ = two_modalities()
    w = torch.tensor([0.25, 0.75], requires_grad=True)
    assert not weighted_kd_loss(features, present, w).requires_grad  # the code: no gradient to w
    weighted_kd_loss(features, present, w, detach_ratio=False).backward()
    # L = 2 w0/w1 + 2 w1/w0: dL/dw0 = 2/w1 - 2 w1/w0^2, dL/dw1 = 2/w0 - 2 w0/w1^2
    assert torch.allclose(w.grad, torch.tensor([2 / 0.75 - 2 * 0.75 / 0.0625, 2 / 0.25 - 2 * 0.25 / 0.5625]))


# -- the method: options, IWV, loss term ---------------------------------------------------------------
def test_options_are_checked_and_json_values():
    method = build_method("metakd", meta_roi=(8, 8, 8))
    assert isinstance(method, MetaKD) and method.options["meta_roi"] == [8, 8, 8]
    assert method.options["meta"] == "alternating" and method.options["meta_lr"] == 1e-2
    for bad, message in [({"normalisation": "tanh"}, "unknown normalisation 'tanh'"),
                         ({"meta": "unrolled"}, "unknown meta scheme 'unrolled'"), ({"p": 3}, "p must be 1"),
                         ({"meta_every": 0}, "meta_every, meta_steps and meta_batch_size must be at least 1"),
                         ({"init": "zeros"}, "unknown IWV init 'zeros'")]:
        with pytest.raises(ValueError, match=message):
            build_method("metakd", **bad)


def test_initial_iwv_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    first = initial_iwv("uniform", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, initial_iwv("uniform", seed=3)) and ((first >= 0) & (first < 1)).all()
    assert not torch.equal(first, initial_iwv("uniform", seed=4))
    assert torch.equal(initial_iwv("ones"), torch.ones(4))


def test_the_kd_term_treats_w_as_a_constant():
    """α · Eq. 4 with Eq. 5 inside, by hand: raw w = log(1, 1, 2, 4), so the IWV (Eq. 6) is (1, 1, 2, 4) / 8."""
    method = MetaKD(alpha=0.5)
    with torch.no_grad():
        method.raw.copy_(torch.log(torch.tensor([1.0, 1.0, 2.0, 4.0])))
    features = torch.tensor([[0.0, 1.0, 3.0, 7.0]] * 2)[..., None].requires_grad_()  # (N=2, M=4, C=1)
    present = torch.tensor([[True, False, True, True], [True, True, False, False]])
    output = type("Output", (), {"bottleneck": features})()
    term = method.loss_terms(None, {"present": present}, output)["kd"]
    # sample 1, pairs of FLAIR, T1ce, T2 (w 1/8, 2/8, 4/8): (1/2 + 2)·3 + (1/4 + 4)·7 + (1/2 + 2)·4 = 47.25;
    # sample 2, FLAIR and T1 (equal w): (1 + 1)·1 = 2; mean 24.625, times α = 0.5
    assert term.item() == pytest.approx(0.5 * (47.25 + 2) / 2)
    term.backward()
    assert method.raw.grad is None and features.grad.abs().sum() > 0


# -- the method in the engine ---------------------------------------------------------------------------
def make_trainer(tmp_path, meta="alternating", steps=4, seed=0, model=SMALL, **options):
    torch.manual_seed(seed)
    dataset = PatchDataset(toy_volumes(3, seed=0), ROI, seed=0)
    val = [(f"val{i}", *v) for i, v in enumerate(toy_volumes(2, seed=1))]
    method = build_method("metakd", meta=meta, meta_every=2, meta_steps=2, **options)
    return Trainer(build_model(model), dataset, TrainConfig(steps=steps, batch_size=2), method, out_dir=tmp_path,
                   device="cpu", progress=False, val_volumes=val)


def test_the_meta_step_needs_held_out_cases(tmp_path):
    with pytest.raises(ValueError, match="val_volumes"):
        Trainer(build_model(SMALL), PatchDataset(toy_volumes(1), ROI), TrainConfig(steps=1), MetaKD(),
                device="cpu", progress=False)


@pytest.mark.parametrize("meta", SCHEMES)
def test_w_changes_at_the_hook_and_only_then(tmp_path, meta):
    trainer = make_trainer(tmp_path, meta, steps=3)
    method = trainer.method
    start = method.raw.detach().clone()
    trainer.fit(stop_at=1)
    assert torch.equal(method.raw.detach(), start), "a training step must not move w"
    history = trainer.fit(resume=True)
    assert not torch.equal(method.raw.detach(), start)
    logged = history.dropna(subset=W_COLUMNS)  # the initial IWV at step 0, then every hook
    assert logged["step"].tolist() == [0, 2] and logged["meta_loss"].isna().tolist() == [True, False]
    assert logged[W_COLUMNS].iloc[0].tolist() == pytest.approx(normalise_iwv(start).tolist())
    assert logged[W_COLUMNS].sum(axis=1).tolist() == pytest.approx([1.0, 1.0]) and "meta_seconds" in logged
    assert [entry["step"] for entry in method.log] == [0, 2]
    assert method.log[1]["w_T1ce"] == pytest.approx(method.iwv()[2].item())


@pytest.mark.parametrize("meta", SCHEMES)
def test_a_hook_alone_leaves_the_network_alone(tmp_path, meta):
    trainer = make_trainer(tmp_path, meta)
    method = trainer.method
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    w = method.raw.detach().clone()
    row = method.hooks()[0].fn(trainer, 2)
    assert set(W_COLUMNS) <= set(row) and not torch.equal(method.raw.detach(), w)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in trainer.model.parameters())
    assert method.meta_index == (2 if meta == "alternating" else 1)  # meta_steps patches, or one
    assert method.lookahead_index == (0 if meta == "alternating" else 2)


def naive_hypergradient(trainer, method, through_lookahead=True):
    """dℓ_meta/dw with the whole inner gradient differentiated (second order through seg + KD alike);
    ``through_lookahead=False`` cuts θ'(w), leaving only the scaling path f_i · w_i at θ'."""
    params = dict(trainer.model.named_parameters())
    batch = method.next_lookahead_batch(trainer)
    output = functional_call(trainer.model, params, (batch["image"], batch["present"]))
    inner = trainer.seg_loss(output.logits, batch["label"]) + method.alpha * weighted_kd_loss(
        output.bottleneck, batch["present"], method.iwv(), detach_ratio=False)
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=through_lookahead)
    lr = trainer.optimizer.param_groups[0]["lr"]
    lookahead = {name: theta - lr * g for (name, theta), g in zip(params.items(), grads)}
    if not through_lookahead:
        lookahead = {name: theta.detach() for name, theta in lookahead.items()}
    return torch.autograd.grad(method.meta_loss(trainer, lookahead), method.raw)[0]


def test_the_bilevel_hypergradient_goes_through_the_look_ahead(tmp_path):
    # without skip dropout: each forward pass compared here would otherwise draw its own skip mask
    trainer = make_trainer(tmp_path, "bilevel", model=replace(SMALL, skip_dropout=0.0))
    method = trainer.method

    def hypergradient(lr, how="method"):
        method.meta_index = method.lookahead_index = 0  # the same patches every time
        trainer.optimizer.param_groups[0]["lr"] = lr
        if how == "method":
            return method.hypergradient(trainer)[1]
        return naive_hypergradient(trainer, method, through_lookahead=how == "naive")

    # η = 0: θ' = θ, and the hypergradient is the alternating scheme's gradient
    method.meta_index = 0
    frozen = {name: theta.detach() for name, theta in trainer.model.named_parameters()}
    alternating = torch.autograd.grad(method.meta_loss(trainer, frozen), method.raw)[0]
    assert torch.allclose(hypergradient(0.0), alternating)
    # η = 1e-2 (the code's SGD lr): θ'(w) adds a path as large as the scaling one, and the split
    # second-order graph gives the same hypergradient as differentiating the whole inner gradient
    full, scaling_only = hypergradient(1e-2), hypergradient(1e-2, "scaling only")
    assert scaling_only.abs().sum() > 0 and (full - scaling_only).abs().sum() > 0.1 * scaling_only.abs().sum()
    assert torch.allclose(full, hypergradient(1e-2, "naive"), rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("meta", SCHEMES)
def test_an_interrupted_run_resumes_exactly(tmp_path, meta):
    straight = make_trainer(tmp_path / "a", meta, steps=4)
    straight.fit()
    paused = make_trainer(tmp_path / "b", meta, steps=4)
    paused.fit(stop_at=3)
    resumed = make_trainer(tmp_path / "b", meta, steps=4, seed=123)  # a different init: overwritten
    history = resumed.fit(resume=True)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(straight.method.raw, resumed.method.raw)
    assert straight.method.log == resumed.method.log
    columns = ["step", "loss"] + W_COLUMNS + ["meta_loss"]  # NaN where a step has no hook: .equals
    assert history[columns].equals(straight.history_frame()[columns])


def test_the_method_round_trips_through_a_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, "alternating", steps=2, alpha=0.2, normalisation="sigmoid", seed=7)
    trainer.fit()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["method"]
    assert saved["name"] == "metakd" and saved["options"] == trainer.method.options
    rebuilt = build_method(saved["name"], **saved["options"])
    rebuilt.load_state_dict(saved["state"])
    assert rebuilt.options == trainer.method.options
    assert torch.equal(rebuilt.raw.detach(), trainer.method.raw.detach())
    assert rebuilt.log == trainer.method.log and rebuilt.meta_index == trainer.method.meta_index
    state = rebuilt.meta_optimizer.state_dict()["state"][0]
    assert torch.equal(state["exp_avg"], trainer.method.meta_optimizer.state_dict()["state"][0]["exp_avg"])


# -- Fig. 6: quality of the generated features ----------------------------------------------------------
def test_identical_modalities_generate_their_own_features():
    torch.manual_seed(0)
    model = build_model(SMALL)
    images = torch.randn(2, 1, *ROI).expand(2, 4, *ROI)
    table = feature_generation_quality(model, images)
    assert table["n_missing"].tolist() == [1, 2, 3]
    assert np.allclose(table["l2"], 0, atol=1e-5) and np.allclose(table["cosine"], 1, atol=1e-5)
    assert len(feature_generation_quality(model, images, per_subset=True)) == 14


def test_generated_feature_quality_by_hand():
    class Encoder:  # one sample, features f_FLAIR = (1, 0), f_T1 = (0, 1), f_T1ce = (1, 1), f_T2 = (-1, 0)
        def encode(self, images, present):
            return [torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]])]

    table = feature_generation_quality(Encoder(), torch.zeros(1, 4), missing=[("T2",), (0, 3)], per_subset=True)
    assert table["missing"].tolist() == ["T2", "FLAIR+T2"]
    # T2 missing: generated = mean(f_FLAIR, f_T1, f_T1ce) = (2/3, 2/3); true (-1, 0)
    assert table["l2"][0] == pytest.approx(math.sqrt(29) / 3)
    assert table["cosine"][0] == pytest.approx(-1 / math.sqrt(2))
    # FLAIR and T2 missing: generated = (1/2, 1); FLAIR: |(-1/2, 1)| and cos 1/√5; T2: |(3/2, 1)| and -1/√5
    assert table["l2"][1] == pytest.approx((math.sqrt(1.25) + math.sqrt(3.25)) / 2)
    assert table["cosine"][1] == pytest.approx(0.0, abs=1e-7)
