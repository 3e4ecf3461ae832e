import pytest
import torch

from mmkd_helpers.models import ModelConfig, build_model, count_parameters, fill_missing


def test_fill_missing_by_hand():
    # N=1, M=3 modalities, C=1, one voxel: values 2, 4, 9; modality 1 missing -> mean of 2 and 9.
    features = torch.tensor([2.0, 4.0, 9.0]).view(1, 3, 1, 1)
    present = torch.tensor([[True, False, True]])
    filled = fill_missing(features, present)
    assert filled.flatten().tolist() == [2.0, 5.5, 9.0]


def test_fill_missing_per_sample_and_gradient_flows_to_present():
    features = torch.tensor([[1.0, 3.0], [5.0, 7.0]]).view(2, 2, 1)
    present = torch.tensor([[True, False], [False, True]])
    assert fill_missing(features, present).flatten().tolist() == [1.0, 1.0, 7.0, 7.0]
    # The generated feature is not detached (official code): the present feature receives its gradient
    # once as itself and once through the generated copy.
    leaf = torch.tensor([1.0, 3.0], requires_grad=True)
    fill_missing(leaf.view(1, 2, 1), torch.tensor([[True, False]])).sum().backward()
    assert leaf.grad.tolist() == [2.0, 0.0]


def test_fill_missing_refuses_empty_mask():
    with pytest.raises(ValueError, match="at least one present modality"):
        fill_missing(torch.zeros(1, 4, 2), torch.zeros(1, 4, dtype=torch.bool))


def test_teaching_size_is_under_half_a_million_parameters():
    n = count_parameters(build_model(ModelConfig()))
    assert 300_000 < n < 450_000, n
    assert count_parameters(build_model(ModelConfig(skip_levels=None))) > n  # a skip at every level costs more


def test_shapes_and_exposed_features():
    config = ModelConfig(base_channels=4, depth=3)
    model = build_model(config)
    out = model(torch.randn(2, 4, 16, 16, 16), torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1]]).bool())
    assert out.logits.shape == (2, 3, 16, 16, 16)
    assert [tuple(f.shape) for f in out.features] == [(2, 4, 4, 16, 16, 16), (2, 4, 8, 8, 8, 8), (2, 4, 16, 4, 4, 4)]
    assert torch.allclose(out.fused[0, 1], (out.bottleneck[0, 0] + out.bottleneck[0, 2]) / 2)
    assert torch.equal(out.fused[1], out.bottleneck[1])


def test_encoder_is_shared_across_modalities():
    model = build_model(ModelConfig(base_channels=4, depth=3)).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    out = model(x.repeat(1, 4, 1, 1, 1))
    for m in range(1, 4):
        assert torch.allclose(out.bottleneck[0, 0], out.bottleneck[0, m])


@pytest.mark.parametrize("fill_skips", ["zero", "mean"])
def test_missing_modality_content_is_ignored(fill_skips):
    torch.manual_seed(0)
    model = build_model(ModelConfig(base_channels=4, depth=3, fill_skips=fill_skips)).eval()
    x = torch.randn(1, 4, 16, 16, 16)
    present = torch.tensor([[True, False, True, True]])
    y = x.clone()
    y[:, 1] = torch.randn(16, 16, 16) * 10
    assert torch.allclose(model(x, present).logits, model(y, present).logits)


def test_fill_skips_option_changes_the_output():
    torch.manual_seed(0)
    zero = build_model(ModelConfig(base_channels=4, depth=3, fill_skips="zero")).eval()
    mean = build_model(ModelConfig(base_channels=4, depth=3, fill_skips="mean")).eval()
    mean.load_state_dict(zero.state_dict())
    x, present = torch.randn(1, 4, 16, 16, 16), torch.tensor([[True, False, False, False]])
    assert not torch.allclose(zero(x, present).logits, mean(x, present).logits)
    full = torch.ones(1, 4, dtype=torch.bool)  # nothing missing: both variants agree
    assert torch.allclose(zero(x, full).logits, mean(x, full).logits)


def test_bottleneck_scale_multiplies_each_modality():
    model = build_model(ModelConfig(base_channels=4, depth=3)).eval()
    x = torch.randn(2, 4, 16, 16, 16)
    scale = torch.tensor([0.0, 1.0, 2.0, 3.0])
    out = model(x, bottleneck_scale=scale)
    assert torch.allclose(out.fused, out.bottleneck * scale.view(1, 4, 1, 1, 1, 1))
    per_sample = model(x, bottleneck_scale=scale.expand(2, 4))
    assert torch.allclose(per_sample.logits, out.logits)


def test_two_dimensional_variant_and_class_head():
    model = build_model({"spatial_dims": 2, "base_channels": 4, "depth": 3, "head": "classes"})
    assert model(torch.randn(3, 4, 32, 32)).logits.shape == (3, 4, 32, 32)


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="head must be one of"):
        ModelConfig(head="softmax")
    with pytest.raises(ValueError, match="must divide by 4"):
        build_model(ModelConfig(depth=3))(torch.randn(1, 4, 10, 16, 16))


def early(*modalities, **changes):
    """An early-fusion network in eval mode: in training mode skip dropout draws a new mask for every call."""
    config = ModelConfig(base_channels=4, depth=3, fusion="early", input_modalities=modalities, **changes)
    return build_model(config).eval()


def test_early_fusion_reads_only_its_input_modalities():
    from mmkd_helpers.models import EarlyFusionUNet

    torch.manual_seed(0)
    student = early("t1")
    assert isinstance(student, EarlyFusionUNet) and student.encoder[0].conv1.conv.in_channels == 1
    image = torch.randn(2, 4, 16, 16, 16)
    other = image.clone()
    other[:, [0, 2, 3]] = torch.randn(2, 3, 16, 16, 16)  # everything but T1 changes
    out = student(image)
    assert torch.equal(out.logits, student(other).logits)
    assert out.decoded.shape == (2, 4, 16, 16, 16) and out.bottleneck.shape == (2, 1, 16, 4, 4, 4)
    with pytest.raises(ValueError, match="needs one of .'t1',. present"):
        student(image, torch.tensor([[True, False, True, True]] * 2))


def test_early_fusion_teacher_zero_fills_a_missing_modality():
    torch.manual_seed(0)
    teacher = early("flair", "t1", "t1ce", "t2", head="classes")
    assert teacher.encoder[0].conv1.conv.in_channels == 4 and teacher.head.out_channels == 4
    image = torch.randn(1, 4, 16, 16, 16)
    zeroed = image.clone()
    zeroed[:, 2] = 0
    present = torch.tensor([[True, True, False, True]])
    assert torch.equal(teacher(image, present).logits, teacher(zeroed).logits)
    with pytest.raises(ValueError, match="input_modalities must be a non-empty subset"):
        ModelConfig(fusion="early", input_modalities=("pd",))
    assert ModelConfig(fusion="early", input_modalities=["t1"]).input_modalities == ("t1",)  # from JSON


@pytest.mark.parametrize("changes", [{}, {"stem": "per_modality", "head": "classes"}, {"fill_skips": "mean"},
                                     {"latent": "gaussian", "latent_level": 1}],
                         ids=["shared", "per-modality stem", "mean skips", "gaussian latent"])
def test_forward_combinations_equals_one_forward_per_combination(changes):
    from mmkd_helpers.constants import COMBINATIONS

    torch.manual_seed(0)
    model = build_model(ModelConfig(base_channels=4, depth=3, **changes)).eval()
    image = torch.randn(2, 4, 16, 16, 16)
    with torch.no_grad():
        batched = model.forward_combinations(image, COMBINATIONS)
        single = torch.stack([model(image, torch.tensor(c).expand(2, 4)).logits for c in COMBINATIONS], dim=1)
    assert batched.shape == (2, 15, model.config.out_channels, 16, 16, 16)
    assert torch.allclose(batched, single, atol=1e-5)


def test_feature_scaled_zeroes_one_level_for_both_families():
    from mmkd_helpers.models import FeatureScaled

    torch.manual_seed(0)
    image = torch.randn(1, 4, 16, 16, 16)
    for config in (ModelConfig(base_channels=4, depth=3), ModelConfig(base_channels=4, depth=3, fusion="early")):
        model = build_model(config).eval()
        streams = 4 if config.fusion == "shared" else 1
        with torch.no_grad():
            zeroed = FeatureScaled(model, [0.0] * streams, level=-1)(image)
            intact = model(image)
            same = FeatureScaled(model, [1.0] * streams, level=-1)(image)
        assert torch.count_nonzero(zeroed.bottleneck) == 0 and torch.equal(same.logits, intact.logits)
        assert not torch.allclose(zeroed.logits, intact.logits)
        assert torch.equal(model(image).logits, intact.logits)  # the hook is gone afterwards
    with pytest.raises(ValueError, match="4 numbers"):
        FeatureScaled(build_model(ModelConfig(base_channels=4, depth=3)), [0.0])
    with pytest.raises(ValueError, match="level"):
        FeatureScaled(build_model(ModelConfig(base_channels=4, depth=3)), [0.0] * 4, level=3)


def test_skip_dropout_switches_whole_samples_skips_off_in_training_only():
    """With skip_dropout = 1 - ε every sample's skip is off: the training output equals that of a model
    without skip connections reading the same weights; in evaluation the skips are always on."""
    torch.manual_seed(0)
    config = ModelConfig(base_channels=4, depth=3, skip_dropout=0.999999)
    model = build_model(config)
    image = torch.randn(2, 4, 16, 16, 16)
    model.train()
    with torch.no_grad():
        dropped = model(image).decoded
        features = model.encode(image, torch.ones(2, 4, dtype=torch.bool))
        x = model.upsample[1](features[-1].flatten(1, 2))
        x = model.decoder[1](x)
        x = model.upsample[0](x)
        by_hand = model.decoder[0](torch.cat([x, torch.zeros_like(features[0].flatten(1, 2))], dim=1))
    assert torch.allclose(dropped, by_hand, atol=1e-5)
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(image).decoded, by_hand.detach(), atol=1e-3)
    with pytest.raises(ValueError, match="skip_dropout"):
        ModelConfig(skip_dropout=1.0)


@pytest.mark.parametrize("spatial_dims, stride, groups", [(3, 1, 1), (3, 2, 1), (2, 2, 1), (3, 1, 4)])
def test_conv_block_is_the_lckd_codes_block_and_reads_checkpoints_of_the_earlier_layout(spatial_dims, stride, groups):
    """MONAI's UnetBasicBlock, configured as the LCKD code's block, computes exactly what the block written out in
    torch primitives computes (bias-free 3^d conv, affine InstanceNorm, LeakyReLU 0.01, twice), and a state dict of
    that written-out block (the layout of the course's checkpoints before it used MONAI's block) loads into it."""
    from torch import nn

    from mmkd_helpers.models import ConvBlock

    conv = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]
    norm = (nn.InstanceNorm2d, nn.InstanceNorm3d)[spatial_dims - 2]
    torch.manual_seed(0)
    written_out = nn.Sequential(
        conv(4, 8, 3, stride=stride, padding=1, bias=False, groups=groups), norm(8, affine=True), nn.LeakyReLU(0.01),
        conv(8, 8, 3, padding=1, bias=False, groups=groups), norm(8, affine=True), nn.LeakyReLU(0.01))
    for module in written_out:  # non-trivial affine parameters, so a swapped key would show
        if isinstance(module, norm):
            nn.init.normal_(module.weight)
            nn.init.normal_(module.bias)
    block = ConvBlock(spatial_dims, 4, 8, stride=stride, groups=groups)
    block.load_state_dict(written_out.state_dict())  # strict: every key renamed, none left over
    x = torch.randn(2, 4, *(8,) * spatial_dims)
    assert torch.equal(block(x), written_out(x))
    assert block(x).shape[2:] == (8 // stride,) * spatial_dims
    assert not any(name.endswith("bias") and "conv" in name for name, _ in block.named_parameters())
