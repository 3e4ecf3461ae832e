"""Mind the Gap (arXiv 2409.19366): the P_mix alignment losses and the gap measures, on tensors small
enough to check by hand. Latents are (N, M, C, *spatial); most tests use C = 1 and one position."""

import math

import numpy as np
import pytest
import torch

from mmkd_helpers.constants import MODALITIES
from mmkd_helpers.analysis import linear_probe_accuracy, modality_gap
from mmkd_helpers.losses.pmix import (gaussian_kl_standard_normal, paper_reported_weights, pmix_mixture_loss,
                                      pmix_modality_loss, pmix_normal_loss, pmix_weights, reparameterise)


def latents_of(values):
    """(N, M) nested list of scalars -> latents (N, M, C=1, 1 position), requiring grad."""
    return torch.tensor(values, dtype=torch.float64)[..., None, None].requires_grad_()


# -- P^N_mix -----------------------------------------------------------------------------------------------
def test_kl_to_the_standard_normal_matches_the_closed_form_by_hand():
    zero = torch.zeros(3)
    assert gaussian_kl_standard_normal(zero, zero).item() == pytest.approx(0.0, abs=1e-7)
    # μ = 1, σ² = 1: ½ (1 + 1 − 0 − 1) = 0.5
    assert gaussian_kl_standard_normal(torch.ones(3), zero).item() == pytest.approx(0.5, rel=1e-6)
    # μ = 0, σ² = 4: ½ (4 − log 4 − 1) ≈ 0.8069
    by_hand = 0.5 * (4 - math.log(4) - 1)
    assert gaussian_kl_standard_normal(zero, torch.full((3,), math.log(4))).item() == pytest.approx(by_hand, rel=1e-6)
    # the reduction is the mean over elements: the three cases above side by side
    mean = torch.tensor([0.0, 1.0, 0.0])
    logvar = torch.tensor([0.0, 0.0, math.log(4)])
    assert gaussian_kl_standard_normal(mean, logvar).item() == pytest.approx((0 + 0.5 + by_hand) / 3, rel=1e-6)


def test_reparameterise_is_mean_plus_std_times_noise_and_differentiable():
    mean = torch.tensor([1.0, -2.0], requires_grad=True)
    logvar = torch.full((2,), math.log(4.0), requires_grad=True)  # σ = 2
    eps = torch.randn(2, generator=torch.Generator().manual_seed(3))
    z = reparameterise(mean, logvar, generator=torch.Generator().manual_seed(3))
    assert z.tolist() == pytest.approx((mean.detach() + 2 * eps).tolist(), rel=1e-6)
    z.sum().backward()
    assert mean.grad.tolist() == [1.0, 1.0]
    assert logvar.grad.tolist() == pytest.approx(eps.tolist(), rel=1e-6)  # d/dlogvar of e^{lv/2} ε = ½ · 2 · ε


def test_pmix_normal_loss_averages_over_present_modalities_only():
    means = latents_of([[1.0, 3.0]])  # KLs 0.5 and ½ · 9 = 4.5 at logvar 0
    logvars = torch.zeros_like(means)
    assert pmix_normal_loss(means, logvars).item() == pytest.approx((0.5 + 4.5) / 2)
    assert pmix_normal_loss(means, logvars, present=torch.tensor([[True, False]])).item() == pytest.approx(0.5)
    none = pmix_normal_loss(means, logvars, present=torch.tensor([[False, False]]))
    assert none.item() == 0.0 and none.requires_grad


# -- P^k_mix -----------------------------------------------------------------------------------------------
def test_the_anchor_gets_no_gradient_when_detached_and_some_otherwise():
    latents = latents_of([[0.0, 2.0]])  # anchor 0: MSE (2 − 0)² = 4
    loss = pmix_modality_loss(latents, anchor=0)
    assert loss.item() == pytest.approx(4.0)
    loss.backward()
    assert latents.grad[0, :, 0, 0].tolist() == [0.0, 4.0]  # d/dZ1 (Z1 − Z0)² = 2 · 2
    latents.grad = None
    pmix_modality_loss(latents, anchor=0, detach_anchor=False).backward()
    assert latents.grad[0, :, 0, 0].tolist() == [-4.0, 4.0]


def test_pmix_modality_ignores_absent_modalities_per_sample():
    latents = latents_of([[0.0, 2.0, 10.0],    # modality 2 absent: only (1 → 0): 4
                          [0.0, 1.0, 3.0],     # all present: 1 and 9
                          [100.0, 0.0, 5.0],   # the anchor is absent: nothing
                          [0.0, 50.0, 50.0]])  # only the anchor present: nothing
    present = torch.tensor([[True, True, False], [True, True, True], [False, True, True], [True, False, False]])
    assert pmix_modality_loss(latents, 0, present).item() == pytest.approx((4 + 1 + 9) / 3)
    # all present, 8 pairs: (4 + 100) + (1 + 9) + (100² + 95²) + (50² + 50²) = 24139
    assert pmix_modality_loss(latents, 0).item() == pytest.approx(24139 / 8)
    none = pmix_modality_loss(latents, 0, present=torch.tensor([[False, True, True]] * 4))
    assert none.item() == 0.0 and none.requires_grad
    with pytest.raises(ValueError, match=r"anchor must be a modality index in \[0, 3\)"):
        pmix_modality_loss(latents, 3)
    with pytest.raises(TypeError, match="anchor must be a modality index"):
        pmix_modality_loss(latents, "t1ce")
    with pytest.raises(ValueError, match=r"present must be \(N, M\) = \(4, 3\)"):
        pmix_modality_loss(latents, 0, present=torch.ones(4, 2, dtype=torch.bool))


# -- P*_mix ------------------------------------------------------------------------------------------------
def test_the_weights_are_a_softmax_and_the_paper_values_are_not():
    w = pmix_weights(torch.tensor([0.0, math.log(3.0)]))
    assert w.tolist() == pytest.approx([0.25, 0.75])  # e^0 : e^{log 3} = 1 : 3
    w4 = pmix_weights(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)))
    assert w4.sum(-1).tolist() == pytest.approx([1.0] * 5) and bool((w4 > 0).all())
    paper = paper_reported_weights()
    assert tuple(paper) == MODALITIES and paper["t1ce"] == 2.2055 and paper["flair"] == 0.3055
    assert sum(paper.values()) == pytest.approx(4.1846)  # not a softmax output


def test_paper_and_code_forms_on_two_one_dimensional_modalities():
    latents = latents_of([[0.0, 2.0]])
    w = torch.tensor([0.25, 0.75], dtype=torch.float64)
    # paper, k = 0: 0.25 · 0 + 0.75 · (2 − 0)² = 3; k = 1: 0.25 · 4 + 0.75 · 0 = 1
    assert pmix_mixture_loss(latents, w, "paper", anchor=0).item() == pytest.approx(3.0)
    assert pmix_mixture_loss(latents, w, "paper", anchor=1).item() == pytest.approx(1.0)
    # code: P = 0.25 · 0 + 0.75 · 2 = 1.5; mean of (0 − 1.5)² and (2 − 1.5)² = (2.25 + 0.25) / 2
    assert pmix_mixture_loss(latents, w, "code").item() == pytest.approx(1.25)
    with pytest.raises(ValueError, match="needs the anchor modality"):
        pmix_mixture_loss(latents, w, "paper")
    with pytest.raises(ValueError, match="takes no anchor"):
        pmix_mixture_loss(latents, w, "code", anchor=0)
    with pytest.raises(ValueError, match="form must be one of"):
        pmix_mixture_loss(latents, w, "other")
    with pytest.raises(ValueError, match=r"weights must be \(M,\)"):
        pmix_mixture_loss(latents, w[:1], "code")
    with pytest.raises(ValueError, match="non-negative"):
        pmix_mixture_loss(latents, torch.tensor([-1.0, 2.0], dtype=torch.float64), "code")


def test_the_code_form_renormalises_over_each_samples_present_modalities():
    latents = latents_of([[0.0, 2.0, 4.0],     # all present: P = 0 + 0.5 + 2 = 2.5 -> (6.25 + 0.25 + 2.25) / 3
                          [0.0, 2.0, 100.0]])  # modality 2 absent: w̃ = (½, ½), P = 1 -> (1 + 1) / 2
    present = torch.tensor([[True, True, True], [True, True, False]])
    w = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    by_hand = (8.75 / 3 + 1.0) / 2
    assert pmix_mixture_loss(latents, w, "code", present=present).item() == pytest.approx(by_hand)
    # the paper form, k = 0: sample 1 gives 0.25 · 4 + 0.5 · 16 = 9, sample 2 0.25 · 4 = 1 (no renormalising)
    assert pmix_mixture_loss(latents, w, "paper", anchor=0, present=present).item() == pytest.approx(5.0)


def test_the_weights_learn_through_a_detached_target_paper_toward_the_anchor_code_toward_uniform():
    latents = latents_of([[0.0, 2.0]])
    raw = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    # L = w1 · 4 with w = softmax(raw) = (½, ½): dL/draw1 = 4 w1 (1 − w1) = 1, dL/draw0 = −4 w0 w1 = −1
    pmix_mixture_loss(latents, pmix_weights(raw), "paper", anchor=0).backward()
    assert raw.grad.tolist() == pytest.approx([-1.0, 1.0])  # descent moves the mass onto the anchor
    assert latents.grad[0, 0].item() == 0.0  # the anchor's features are detached
    # code form: at uniform weights P = 1 is the plain mean, where L = ½ Σ_m (Z_m − P)² is stationary in P
    raw.grad = None
    pmix_mixture_loss(latents, pmix_weights(raw), "code").backward()
    assert raw.grad.tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    # at w = (¼, ¾): P = 2 w1 = 1.5, dL/dP = (P − 0) + (P − 2) = 1, dP/draw1 = 2 w0 w1 = 0.375
    raw = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64, requires_grad=True)
    latents.grad = None
    pmix_mixture_loss(latents, pmix_weights(raw), "code").backward()
    assert raw.grad.tolist() == pytest.approx([-0.375, 0.375])  # descent pulls the weights back to uniform
    assert latents.grad[0, :, 0, 0].tolist() == pytest.approx([-1.5, 0.5])  # target detached: dL/dZ_m = Z_m − P


# -- measuring the gap -------------------------------------------------------------------------------------
def test_modality_gap_by_hand_and_on_random_clusters():
    # modality 0 at {−1, 1}, modality 1 at {9, 11}: centroids 0 and 10, spreads 1 -> gap 10
    latents = torch.tensor([[[-1.0], [9.0]], [[1.0], [11.0]]])[..., None]  # (N=2, M=2, C=1, 1)
    gap, distances = modality_gap(latents, return_distances=True)
    assert gap == pytest.approx(10.0) and distances.tolist() == [[0.0, 10.0], [10.0, 0.0]]

    generator = torch.Generator().manual_seed(0)
    one = torch.randn(64, 1, 4, 8, generator=generator)
    assert modality_gap(one.expand(64, 4, 4, 8)) == pytest.approx(0.0, abs=1e-9)  # identical copies
    same = torch.randn(64, 4, 4, 8, generator=generator)  # independent draws from one distribution
    assert modality_gap(same) < 0.2
    offsets = 10 * torch.eye(4)[None, :, :, None]  # modality m shifted by 10 along channel m
    assert modality_gap(same + offsets) > 3.0
    # an absent modality is left out: its row is NaN
    present = torch.tensor([[True, True, True, False]] * 64)
    _, distances = modality_gap(same + offsets, present=present, return_distances=True)
    assert np.isnan(distances[3]).all() and distances[0, 1] == pytest.approx(10 * math.sqrt(2), rel=0.05)


def test_linear_probe_accuracy_is_high_for_gapped_features_and_chance_for_aligned_ones():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 200)
    noise = rng.normal(size=(800, 8))
    separable = noise + 5 * np.eye(8)[labels]
    assert linear_probe_accuracy(separable, labels) > 0.95
    assert linear_probe_accuracy(noise, labels) < 0.4  # chance 0.25, test set of 240
    with pytest.raises(ValueError, match="labels"):
        linear_probe_accuracy(noise, labels[:10])


# -- the Gaussian latent heads and the PMix method in the engine -------------------------------------------
from mmkd_helpers.dataset import PatchDataset  # noqa: E402
from mmkd_helpers.methods import build_method  # noqa: E402
from mmkd_helpers.methods.pmix import BottleneckScaled, PMix, WeightScaled  # noqa: E402
from mmkd_helpers.models import ModelConfig, ModelOutput, build_model  # noqa: E402
from mmkd_helpers.training import TrainConfig, Trainer  # noqa: E402
from test_training import toy_volumes  # noqa: E402


def small(**changes):
    return ModelConfig(base_channels=4, depth=3, head="classes", **changes)


def test_the_gaussian_latent_samples_in_training_and_is_the_mean_in_evaluation():
    torch.manual_seed(0)
    image = torch.randn(2, 4, 16, 16, 16)
    for level, shape in ((0, (2, 4, 4, 16, 16, 16)), (-1, (2, 4, 16, 4, 4, 4))):  # first stage; bottleneck
        model = build_model(small(latent="gaussian", latent_level=level))
        train = model.train()(image)
        assert train.latent_mean.shape == train.latent_logvar.shape == train.features[level].shape == shape
        assert not torch.allclose(train.features[level], train.latent_mean)  # a reparameterised sample
        evaluation = model.eval()(image)
        assert torch.equal(evaluation.features[level], evaluation.latent_mean)
        assert model.latent_mean.weight.shape[0] == shape[2]
    # the deeper blocks encode the sample: the features below the Gaussian level are random in training too
    first = build_model(small(latent="gaussian")).train()
    assert not torch.equal(first(image).bottleneck, first(image).bottleneck)
    plain = build_model(small())
    assert plain(image).latent_mean is None and not any("latent" in key for key in plain.state_dict())
    with pytest.raises(ValueError, match="fusion='shared'"):
        ModelConfig(fusion="early", latent="gaussian")
    with pytest.raises(ValueError, match="latent_level must index"):
        ModelConfig(depth=3, latent_level=3)


def test_a_per_modality_stem_encodes_each_modality_with_its_own_first_block():
    torch.manual_seed(0)
    image = torch.randn(1, 4, 16, 16, 16)
    image[:, 1] = image[:, 0]  # T1 shows the same volume as FLAIR
    shared, own = build_model(small()).eval(), build_model(small(stem="per_modality")).eval()
    with torch.no_grad():
        assert torch.equal(shared(image).features[0][:, 0], shared(image).features[0][:, 1])  # one encoder
        features = own(image).features
        assert not torch.allclose(features[0][:, 0], features[0][:, 1])  # two encoders
        changed = image.clone()
        changed[:, 3] = torch.randn(16, 16, 16)  # only T2 differs: only T2's latents move, at every level
        moved = [(a - b).abs().flatten(2).amax(-1)[0] > 1e-6 for a, b in zip(own(changed).features, features)]
        assert all(m.tolist() == [False, False, False, True] for m in moved)
    stem = own.encoder[0].conv1.conv
    assert stem.groups == 4 and stem.weight.shape == (4 * 4, 1, 3, 3, 3)  # 4 modalities x 4 channels, 1 input each
    with pytest.raises(ValueError, match="stem must be one of"):
        ModelConfig(stem="separate")
    with pytest.raises(ValueError, match="fusion='shared'"):
        ModelConfig(fusion="early", stem="per_modality")


def output_with_bottleneck(values, logvars=None):
    """A ModelOutput whose (N, M) bottleneck latents are the given scalars (C = 1, one position)."""
    z = torch.tensor(values, dtype=torch.float32)[..., None, None].requires_grad_()
    present = torch.ones(z.shape[:2], dtype=torch.bool)
    mean = logvar = None
    if logvars is not None:
        mean, logvar = z, torch.tensor(logvars, dtype=torch.float32)[..., None, None]
    return ModelOutput(logits=None, features=[z], fused=z, present=present, latent_mean=mean, latent_logvar=logvar)


def test_pmix_terms_by_hand_for_each_anchor():
    output = output_with_bottleneck([[0.0, 1.0, 2.0, 3.0]])  # FLAIR, T1, T1ce, T2; anchor T1ce = 2
    # P^k: MSE to T1ce of FLAIR, T1, T2 = 4, 1, 1 -> mean 2; times λ
    assert PMix("modality", lam=0.5).loss_terms(None, {}, output)["align"].item() == pytest.approx(1.0)
    # P* paper form, uniform start: Σ_j 0.25 · (4, 1, 0, 1) = 1.5
    assert PMix("mixture").loss_terms(None, {}, output)["align"].item() == pytest.approx(1.5)
    # P* code form: the mixture is the mean 1.5; MSEs 2.25, 0.25, 0.25, 2.25 -> mean 1.25
    assert PMix("mixture", form="code").loss_terms(None, {}, output)["align"].item() == pytest.approx(1.25)
    # P^N: KL of N(μ, σ²) to N(0, 1) = ½(μ² + σ² − log σ² − 1); σ² = 1 -> μ²/2: (0, 0.5, 2, 4.5) -> mean 1.75
    normal = output_with_bottleneck([[0.0, 1.0, 2.0, 3.0]], logvars=[[0.0] * 4])
    assert PMix("normal").loss_terms(None, {}, normal)["align"].item() == pytest.approx(1.75)
    assert PMix("none").loss_terms(None, {}, output) == {}


def pmix_trainer(tmp_path, method, steps=4, seed=0, latent="deterministic"):
    torch.manual_seed(seed)
    dataset = PatchDataset(toy_volumes(2), (16, 16, 16), drop_policy="none")
    return Trainer(build_model(small(latent=latent)), dataset, TrainConfig(steps=steps, batch_size=2), method,
                   out_dir=tmp_path, device="cpu", progress=False)


def test_the_mixture_weights_train_with_the_network_and_resume_exactly(tmp_path):
    straight = pmix_trainer(tmp_path / "a", PMix("mixture", log_every=2))
    no_decay = straight.optimizer.param_groups[1]  # a method's own parameters are not decayed
    assert no_decay["weight_decay"] == 0 and any(p is straight.method.raw for p in no_decay["params"])
    history = straight.fit()
    weights = straight.method.weights()
    assert not torch.allclose(weights, torch.full((4,), 0.25))  # learned from uniform
    assert weights.sum().item() == pytest.approx(1.0)
    assert {f"w_{m}" for m in MODALITIES} <= set(history.columns) and history.loc[0, "w_t1ce"] == pytest.approx(0.25)
    assert "align" in history.columns
    paused = pmix_trainer(tmp_path / "b", PMix("mixture", log_every=2))
    paused.fit(stop_at=2)
    resumed = pmix_trainer(tmp_path / "b", PMix("mixture", log_every=2), seed=7)
    resumed.fit(resume=True)
    assert torch.equal(resumed.method.raw.detach(), straight.method.raw.detach())
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(),
                                                 straight.model.state_dict().values()))


def test_pmix_checks_the_network_it_aligns(tmp_path):
    with pytest.raises(ValueError, match="latent='gaussian'"):
        pmix_trainer(tmp_path, PMix("normal"))
    pmix_trainer(tmp_path, PMix("normal"), latent="gaussian").fit()
    with pytest.raises(ValueError, match="anchor must be one of"):
        build_method("pmix", anchor="vae")
    with pytest.raises(ValueError, match="level must index one of the 3 encoder levels"):
        pmix_trainer(tmp_path, PMix("modality", level=3))
    early = build_model(ModelConfig(base_channels=4, depth=3, fusion="early", input_modalities=("t1",)))
    dataset = PatchDataset(toy_volumes(1), (16, 16, 16), drop_policy="none")
    with pytest.raises(ValueError, match="needs per-modality latents"):
        Trainer(early, dataset, TrainConfig(steps=1), PMix("modality"), progress=False)


def test_pmix_options_are_checked():
    for bad, message in [({"form": "draft"}, "form must be one of"), ({"modality": "pd"}, "modality must be one of"),
                         ({"lam": -1.0}, "lam must be >= 0"), ({"log_every": 0}, "log_every must be >= 1")]:
        with pytest.raises(ValueError, match=message):
            build_method("pmix", **bad)
    with pytest.raises(RuntimeError, match="only anchor='mixture' has weights"):
        PMix("modality").weights()
    with pytest.raises(ValueError, match="scale must hold 4 numbers"):
        BottleneckScaled(build_model(small()), [1.0, 1.0])


def test_weight_scaling_at_test_time_scales_the_aligned_latents_and_is_identity_for_uniform_weights():
    torch.manual_seed(0)
    image = torch.randn(1, 4, 16, 16, 16)
    for stem in ("shared", "per_modality"):
        model = build_model(small(stem=stem)).eval()
        with torch.no_grad():
            plain = model(image)
            assert torch.allclose(WeightScaled(model, [0.25] * 4)(image).logits, plain.logits, atol=1e-6)
            skewed = WeightScaled(model, [0.1, 0.1, 0.7, 0.1])
            assert torch.allclose(skewed.scale, torch.tensor([0.4, 0.4, 2.8, 0.4]))
            scaled = skewed(image)
            expected = plain.features[0] * torch.tensor([0.4, 0.4, 2.8, 0.4]).view(1, 4, 1, 1, 1, 1)
            assert torch.allclose(scaled.features[0], expected, atol=1e-6)
            assert not torch.allclose(scaled.logits, plain.logits)
            assert torch.equal(model(image).logits, plain.logits)  # the hook is gone afterwards
    with pytest.raises(ValueError, match="non-negative"):
        WeightScaled(model, [1.0, -1.0, 0.0, 0.0])


def test_latent_features_of_whole_volumes_at_any_level_feed_the_gap_and_tsne():
    from mmkd_helpers.analysis import latent_features
    from mmkd_helpers.visualisation import tsne_2d

    torch.manual_seed(0)
    volumes = [(f"case{i}", images, label) for i, (images, label) in enumerate(toy_volumes(2, size=18))]
    model = build_model(small(latent="gaussian", latent_level=-1)).train()
    latents = latent_features(model, volumes, level=-1)  # 18 is cut to 16 (stride 4): 4^3 positions per case
    assert latents.shape == (4, 16, 2 * 4 ** 3) and model.training  # the mode is restored
    image = torch.as_tensor(volumes[0][1][:, :16, :16, :16]).float()[None]
    with torch.no_grad():
        expected = model.eval()(image).latent_mean[0].flatten(2)
    assert torch.allclose(latents[..., :64], expected, atol=1e-5)
    sampled = latent_features(model, volumes, level=0, max_positions=10)
    assert sampled.shape == (4, 4, 20)
    assert torch.equal(sampled, latent_features(model, volumes, level=0, max_positions=10))  # seeded
    assert modality_gap(latents[None]) >= 0
    vectors = latents.permute(0, 2, 1).reshape(-1, 16).numpy()
    assert tsne_2d(vectors[:40]).shape == (40, 2)


def test_latent_features_leave_out_positions_outside_the_brain():
    from mmkd_helpers.analysis import latent_features

    torch.manual_seed(0)
    model = build_model(small())
    images, label = toy_volumes(1, size=16)[0]
    images = images.copy()
    images[:, :, :, 8:] = 0  # the back half of the volume is "outside the head" in every modality
    volumes = [("case", images, label)]
    kept = latent_features(model, volumes, level=-1)  # bottleneck 4^3: blocks of 4^3 voxels, 2 columns empty
    assert kept.shape == (4, 16, 4 * 4 * 2)
    everything = latent_features(model, volumes, level=-1, brain_fraction=0)
    assert everything.shape == (4, 16, 4 ** 3)
    assert torch.equal(kept, everything.view(4, 16, 4, 4, 4)[..., :2].flatten(2))
    assert latent_features(model, volumes, level=-1, brain_fraction=1).shape[-1] == 4 * 4 * 2  # whole blocks
    assert latent_features(model, volumes).shape == (4, 4, 16 * 16 * 8)  # level 0: voxel by voxel


def test_tsne_refuses_identical_vectors_with_a_clear_error():
    from mmkd_helpers.visualisation import tsne_2d

    with pytest.raises(ValueError, match="identical"):
        tsne_2d(np.zeros((50, 8)))  # scikit-learn itself would crash the kernel here


def test_switching_the_bottleneck_off_changes_nothing_when_the_decoder_does_not_read_it():
    torch.manual_seed(0)
    model = build_model(small()).eval()
    image = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        plain = model(image).logits
        off = BottleneckScaled(model, [0.0] * 4)
        assert not torch.allclose(off(image).logits, plain)
        model.upsample[-1].weight.zero_()  # what Adam's coupled weight decay did to the P_mix teachers
        assert torch.allclose(off(image).logits, model(image).logits)
