"""The papers' own networks (mmkd_helpers.backbones): sizes, the shared interface, weight standardisation.

The LCKD network is 43.7 M parameters: one forward/backward at the smallest crop it takes (32^3; its bottleneck
is then 1x1x2) is about 10-20 s on a loaded 2-core CPU. These tests run it as few times as they can."""

import numpy as np
import pytest
import torch

from mmkd_helpers.backbones import ASPP, CHANNELS, Bottleneck, LCKDResNetASPP, ProtoKDVNet, WS_EPS, WSConv3d, \
    size_multiple, standardise_weight
from mmkd_helpers.dataset import PatchDataset
from mmkd_helpers.methods import build_method
from mmkd_helpers.models import ModelConfig, SharedEncoderUNet, build_model, count_parameters
from mmkd_helpers.training import TrainConfig, Trainer

LCKD = ModelConfig(backbone="lckd_resnet50_aspp", skip_dropout=0.0)
VNET = ModelConfig(backbone="protokd_vnet", head="classes", skip_dropout=0.0)


def within(count, official, tolerance=0.02):
    return abs(count - official) / official <= tolerance


def test_lckd_network_has_the_official_parameter_count():
    model = build_model(LCKD)
    assert within(count_parameters(model), 43.66e6), count_parameters(model)
    # By hand. A WS conv has no bias; an affine InstanceNorm has 2 per channel.
    stem = 7 ** 3 * 64 + 2 * 64
    assert count_parameters(model.encoder[0]) == stem == 22_080
    first_block = 64 * 64 + 27 * 64 * 64 + 64 * 256 + 64 * 256 + 2 * (64 + 64 + 256 + 256)  # 1x1, 3x3, 1x1, shortcut
    assert count_parameters(Bottleneck(64, 64, project=True)) == first_block == 148_736
    reduce = 1280 * 256 + 2 * 256
    aspp = (256 * 256 + 3 * 27 * 256 * 256 + 256 * 256) + 4 * 2 * 256 + 2 * 256 + (5 * 256 * 256 + 2 * 256)
    assert count_parameters(model.encoder[4][1]) == reduce == 328_192
    assert count_parameters(ASPP(256)) == aspp == 5_770_240
    resnet = count_parameters(model.encoder) - reduce - aspp
    assert within(resnet, 29.03e6, 0.005) and within(reduce + aspp, 6.10e6, 0.005)
    assert within(count_parameters(model.encoder), 35.13e6, 0.005)
    # Decoder stage 3: 2x transposed conv of the 4 concatenated bottlenecks, 1x1 projection of the 4 layer-3 maps,
    # a residual block of two 3x3 WS convs at 256 channels.
    stage3 = 4 * 256 * 256 * 8 + (4 * 1024 * 256 + 2 * 256) + 2 * (27 * 256 * 256 + 2 * 256)
    assert (count_parameters(model.upsample[0]) + count_parameters(model.skip[0])
            + count_parameters(model.decoder[0])) == stage3
    assert within(count_parameters(model) - count_parameters(model.encoder), 8.53e6, 0.005)


def test_vnet_has_the_official_parameter_count():
    teacher = build_model(VNET)
    student = build_model(ModelConfig(backbone="protokd_vnet", head="classes", input_modalities=("t1",)))
    assert within(count_parameters(teacher), 9.448e6, 0.001) and within(count_parameters(teacher), 9.45e6)
    assert count_parameters(teacher) - count_parameters(student) == 3 * 27 * 16  # 4 input channels instead of 1
    first = 27 * 4 * 16 + 2 * 16  # 3x3 conv without bias, BatchNorm
    assert count_parameters(teacher.encoder[0]) == first
    down = 8 * 16 * 32 + 32 + 2 * 32  # 2x2x2 stride-2 conv with bias, BatchNorm
    assert count_parameters(teacher.encoder[1]) == down + 2 * (27 * 32 * 32 + 2 * 32)
    assert count_parameters(teacher.head) == 16 * 4 + 4


def test_weight_standardisation_on_a_hand_made_weight():
    conv = WSConv3d(2, 1, (1, 1, 2), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 1, 2))
    # mean 2.5; centred -1.5, -0.5, 0.5, 1.5; unbiased variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3
    expected = torch.tensor([-1.5, -0.5, 0.5, 1.5]) / np.sqrt(5 / 3 + WS_EPS)
    standard = standardise_weight(conv.weight)
    torch.testing.assert_close(standard.flatten(), expected)
    x = torch.zeros(1, 2, 1, 1, 2)
    x[0, 1, 0, 0, 1] = 1.0  # picks the weight 4 -> 1.5 / sqrt(5/3)
    torch.testing.assert_close(conv(x).flatten(), expected[3:])
    # each filter separately; scale-free; a constant filter gives zeros, not NaN
    weight = torch.randn(3, 4, 3, 3, 3)
    torch.testing.assert_close(standardise_weight(weight * 7 + 2), standardise_weight(weight), rtol=1e-4, atol=1e-5)
    assert torch.allclose(standardise_weight(weight).flatten(1).std(1), torch.ones(3))
    assert torch.equal(standardise_weight(torch.ones(1, 2, 1, 1, 1)), torch.zeros(1, 2, 1, 1, 1))


def test_aspp_pooling_branch_is_the_norm_shift_and_every_parameter_is_used():
    aspp = ASPP(8)
    with torch.no_grad():
        aspp.pool_norm.bias.copy_(torch.linspace(-1, 1, 8))
    x = torch.randn(2, 8, 3, 3, 2)
    aspp.merge = torch.nn.Identity()  # look at the branches themselves
    out = aspp(x)
    pooled = out[:, 32:]
    expected = torch.nn.functional.leaky_relu(torch.linspace(-1, 1, 8), 0.01).view(1, 8, 1, 1, 1)
    torch.testing.assert_close(pooled, expected.expand_as(pooled))
    out.sum().backward()
    assert aspp.pool_conv.weight.grad is not None  # in the graph (DDP needs every parameter used), gradient 0
    assert float(aspp.pool_conv.weight.grad.abs().max()) == 0.0


def test_lckd_network_forward_backward_with_missing_modalities():
    torch.manual_seed(0)
    model = build_model(LCKD)
    assert isinstance(model, LCKDResNetASPP) and size_multiple(LCKD) == (32, 32, 16)
    image = torch.randn(1, 4, 32, 32, 32)
    present = torch.tensor([[True, False, True, False]])
    output = model(image, present)
    assert output.logits.shape == (1, 3, 32, 32, 32)
    shapes = [(16, 16, 32), (8, 8, 16), (4, 4, 8), (2, 2, 4), (1, 1, 2)]  # stem stride (2, 2, 1), then halvings
    assert [tuple(f.shape) for f in output.features] == [(1, 4, c, *s) for c, s in zip(CHANNELS[LCKD.backbone], shapes)]
    bottleneck = output.features[-1]
    torch.testing.assert_close(output.fused[0, 1], (bottleneck[0, 0] + bottleneck[0, 2]) / 2)  # Eq. 5: the mean
    torch.testing.assert_close(output.fused[0, 3], output.fused[0, 1])
    assert torch.equal(output.fused[0, 2], bottleneck[0, 2])
    (output.logits.mean() + output.bottleneck.mean()).backward()
    stem = model.encoder[0][0].weight.grad
    assert stem is not None and stem.abs().sum() > 0  # the shared encoder learns
    assert model.upsample[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"divide by \(32, 32, 16\)"):
        model(torch.randn(1, 4, 32, 32, 24))


def test_vnet_forward_backward_as_teacher_and_student():
    torch.manual_seed(0)
    teacher = build_model(VNET)
    assert isinstance(teacher, ProtoKDVNet) and VNET.fusion == "early" and VNET.depth == 5
    image = torch.randn(2, 4, 32, 32, 32)
    output = teacher(image)
    assert output.logits.shape == (2, 4, 32, 32, 32) and output.decoded.shape == (2, 16, 32, 32, 32)
    assert [tuple(f.shape) for f in output.features] == [(2, 1, c, 32 // 2 ** i, 32 // 2 ** i, 32 // 2 ** i)
                                                          for i, c in enumerate(CHANNELS[VNET.backbone])]
    output.logits.mean().backward()
    assert teacher.encoder[0][0].weight.grad.abs().sum() > 0
    student = build_model(ModelConfig(backbone="protokd_vnet", head="classes", input_modalities=("t1ce",)))
    missing_others = torch.tensor([[False, False, True, False]] * 2)
    student.eval()
    with torch.no_grad():  # reads its own channel only: the others, present or not, change nothing
        torch.testing.assert_close(student(image, missing_others).logits, student(image).logits)
    with pytest.raises(ValueError, match="needs one of"):
        student(image, torch.tensor([[True, True, False, True]] * 2))


def test_config_validation_and_the_default_unet():
    assert ModelConfig().backbone == "unet" and isinstance(build_model(ModelConfig()), SharedEncoderUNet)
    assert count_parameters(build_model(ModelConfig())) == 370_603  # the teaching UNet, unchanged
    old = {k: v for k, v in ModelConfig().to_dict().items() if k != "backbone"}  # a checkpoint before the field
    assert ModelConfig(**old) == ModelConfig()
    assert ModelConfig(**LCKD.to_dict()) == LCKD  # a saved backbone config reads back the same
    for bad, match in (({"backbone": "resnet"}, "backbone must be one of"),
                       ({"backbone": "lckd_resnet50_aspp", "base_channels": 16}, "fixes base_channels=64"),
                       ({"backbone": "lckd_resnet50_aspp", "fusion": "early"}, "fixes fusion='shared'"),
                       ({"backbone": "protokd_vnet", "stem": "per_modality"}, "fixes stem='shared'"),
                       ({"backbone": "lckd_resnet50_aspp", "depth": 3}, "fixes depth=5")):
        with pytest.raises(ValueError, match=match):
            ModelConfig(**bad)


def toy_volumes(n=3, size=32, seed=0):
    rng = np.random.default_rng(seed)
    volumes = []
    for _ in range(n):
        label = np.zeros((size,) * 3, np.uint8)
        label[8:20, 8:20, 8:20] = 2
        label[11:17, 11:17, 11:17] = 4
        images = rng.normal(0, 0.3, (4, size, size, size)).astype(np.float32) + (label[None] > 0) * 2.0
        volumes.append((images, label))
    return volumes


def test_lckd_trains_two_steps_on_the_paper_network():
    """LCKD's KD term on the ASPP bottleneck, through the one Trainer (no checkpoint: 43.7 M weights and their
    momentum are 350 MB to write); 15-30 s on 2 busy cores."""
    torch.manual_seed(0)
    dataset = PatchDataset(toy_volumes(), (32, 32, 32), seed=0)
    model = build_model(LCKD)
    method = build_method("lckd", election_every=0, initial_teachers=[0, 2])
    trainer = Trainer(model, dataset, TrainConfig(steps=2, batch_size=1, optimizer="sgd", lr=1e-3), method,
                      device="cpu", progress=False)
    before = model.encoder[0][0].weight.detach().clone()
    history = trainer.fit()
    assert list(history.step) == [1, 2] and np.isfinite(history.loss).all() and "kd" in history
    assert not torch.equal(before, model.encoder[0][0].weight)
    assert trainer.state_dict()["config"]["model"]["backbone"] == "lckd_resnet50_aspp"


def test_the_cli_backbone_flag(tmp_path, monkeypatch, capsys):
    """``mmkd train --backbone``: the papers' networks train without skip dropout unless asked, the VNet is early
    fusion without --fusion, crops are checked per axis, and the checkpoint records the backbone."""
    from mmkd_helpers.cli import _course_config, build_parser, main

    def config(*flags):
        return _course_config(build_parser().parse_args(["train", "--out", "x", *flags]))

    lckd = config("--backbone", "lckd_resnet50_aspp", "--roi", "64,64,32").model
    assert (lckd.backbone, lckd.skip_dropout, lckd.depth, lckd.base_channels) == ("lckd_resnet50_aspp", 0.0, 5, 64)
    asked = config("--backbone", "lckd_resnet50_aspp", "--roi", "64,64,32", "--skip-dropout", "0.5")
    assert asked.model.skip_dropout == 0.5
    vnet = config("--backbone", "protokd_vnet", "--modalities", "t1", "--roi", "32")
    assert (vnet.model.fusion, vnet.model.input_modalities, vnet.drop_policy) == ("early", ("t1",), "none")
    assert config().model.backbone == "unet" and config().model.skip_dropout == 0.5

    monkeypatch.setenv("MMKD_DATA_DIR", str(tmp_path / "mmkd-data"))
    assert main(["train", "--fast", "--backbone", "lckd_resnet50_aspp", "--out", str(tmp_path / "bad")]) == 2
    assert "--roi 16,16,16: the sides must be multiples of 32,32,16" in capsys.readouterr().err
    assert main(["train", "--fast", "--backbone", "unet", "--base-channels", "16", "--out", str(tmp_path / "u"),
                 "--steps", "1", "--device", "cpu"]) == 0
    assert main(["train", "--fast", "--backbone", "lckd_resnet50_aspp", "--base-channels", "16", "--roi", "32",
                 "--out", str(tmp_path / "bad2")]) == 2
    assert "fixes base_channels=64" in capsys.readouterr().err
    run = tmp_path / "vnet"
    assert main(["train", "--fast", "--backbone", "protokd_vnet", "--modalities", "flair,t1,t1ce,t2", "--head",
                 "classes", "--roi", "32", "--batch-size", "2", "--steps", "1", "--device", "cpu",
                 "--out", str(run)]) == 0
    saved = torch.load(run / "last.pt", weights_only=True)["config"]["course"]["model"]
    assert (saved["backbone"], saved["fusion"], saved["base_channels"]) == ("protokd_vnet", "early", 16)
