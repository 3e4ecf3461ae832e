"""The papers' own networks, behind the same interface as the teaching UNet (``ModelConfig(backbone=...)``).

* ``"lckd_resnet50_aspp"``: the network of the LCKD (Wang et al., MICCAI 2023) and MetaKD (Wang et al.,
  arXiv 2405.07155) code (billhhh/LCKD and billhhh/MetaKD, ``Res50.py`` and ``DualNet.py``; both inherit it
  from ShaSpec). A modality-shared encoder, a 3D ResNet-50 with weight-standardised convolutions, projection
  ("B") shortcuts and stage widths 64/128/256/**320** (outputs 256/512/1024/1280 channels), then a 1×1 reduction
  to 256 channels and ASPP (1×1; 3×3 at dilations 2, 4 and 8; image pooling), all with affine InstanceNorm and
  LeakyReLU(0.01). The decoder takes the four modalities' features concatenated at every level: four stages of
  a 2× transposed convolution, plus a 1×1 projection of the concatenated skip, then a residual block of two
  3×3 convolutions; a 1×1 convolution gives the logits at half the in-plane resolution, upsampled trilinearly.
  About 43.7 M parameters (35.1 M encoder, 8.5 M decoder). Distillation happens on the ASPP output, 256
  channels at 1/32 in-plane and 1/16 through-plane (5×5×5 for the code's 80×160×160 crops).
* ``"protokd_vnet"``: the network of the ProtoKD code (Wang et al., ICASSP 2023; SakurajimaMaiii/ProtoKD,
  ``networks.py``), the VNet of the UA-MT code: 16 filters doubling to 256 over five stages of 1, 2, 3, 3, 3
  convolutions (3×3, BatchNorm, ReLU), stride-2 2×2 convolutions down, stride-2 transposed convolutions up,
  skips *added* to the upsampled features, decoder stages of 3, 3, 2, 1 convolutions and a 1×1 output. About
  9.45 M parameters. An early-fusion network: its ``input_modalities`` are its input channels; the 16-channel
  features of its last decoder stage, at full resolution, are ProtoKD's prototype features.

**Axis order.** This package's volumes are (x, y, z) with z the axial slice axis (155 slices in BraTS); the
LCKD code transposes them to (z, y, x) and keeps the slice axis at full resolution in its first convolution
(stride 1, 2, 2). Here that stride is (2, 2, 1): the code's 80×160×160 crop is 160×160×80 in this package,
and the network needs x, y multiples of 32 and z a multiple of 16 (:func:`size_multiple`).

**Weight standardisation** (Qiao et al., 2019; the LCKD code's ``Conv3d_wd``): each output filter's weights
are centred and divided by their standard deviation over (in channels × kernel) in every forward pass, so
that the loss does not depend on a filter's scale. The variance is the unbiased one, as in the code, and
:data:`WS_EPS` = 1e-12 is added to it before the square root, as in the code: it only keeps a constant filter
(variance 0) from dividing by zero. Every real filter's variance is many orders of magnitude larger (the
smallest at initialisation, the 7×7×7 stem's, is about 9e-5), so the standardisation is exact; a larger
epsilon, such as the 1e-5 of the original WS code, would shrink the stem's filters by about 5 % at the start.
The parameters are float32 even under mixed precision, where 1e-12 is representable.

**The image-pooling branch of ASPP.** Its InstanceNorm sees a 1×1×1 map, whose normalised value is always
0: the branch outputs LeakyReLU(β), the norm's shift, broadcast (recent PyTorch refuses the call; the code
ships a patched ``instance_norm`` without the check). :func:`instance_norm_any_size` computes the same
thing without the check, keeping the branch's convolution in the graph (its gradient is exactly zero), so
DistributedDataParallel sees every parameter used.

**Missing modalities** are handled as in the code and in :class:`mmkd_helpers.models.SharedEncoderUNet`: the
missing input volume is zeroed and still encoded; only the bottleneck (the ASPP output) is filled with the mean
of the present modalities (``fill_skips="mean"`` fills the skips too). One departure: no gradient flows back
into a missing modality's stream. Its maps are constant (the encoder's response to a zero volume), and the
backward pass of an InstanceNorm over a constant map multiplies the gradient's varying part by 1/sqrt(eps)
≈ 316; through the fifty-odd norms of the ResNet it overflows to inf and NaN within one step (measured here at
a 32×32×32 crop with one modality missing). The forward values are unchanged; only the gradient through
those streams, whose activations are constant, is left out. ``skip_dropout`` (0 in the papers; the
CLI's default for these backbones) switches a training sample's skip connections off, as in the teaching UNet.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .constants import MODALITIES
from .streams import (ModelOutput, early_fusion_combinations, early_fusion_input, fill_missing,
                      shared_encoder_combinations, skip_keep)


BACKBONES = ("unet", "lckd_resnet50_aspp", "protokd_vnet")

FIXED = {  # what each paper network fixes of ModelConfig (the rest, e.g. the head, stays the user's)
    "lckd_resnet50_aspp": {"base_channels": 64, "depth": 5, "fusion": "shared", "skip_levels": None,
                           "stem": "shared", "latent": "deterministic", "spatial_dims": 3},
    "protokd_vnet": {"base_channels": 16, "depth": 5, "fusion": "early", "skip_levels": None,
                     "stem": "shared", "latent": "deterministic", "spatial_dims": 3},
}
"""Per backbone, the ModelConfig fields it fixes. Left at the dataclass's default, a field is set to the
backbone's value (so a saved config describes the network); any other value is refused."""

CHANNELS = {"lckd_resnet50_aspp": (64, 256, 512, 1024, 256), "protokd_vnet": (16, 32, 64, 128, 256)}
"""Channels of each encoder level's features (the last: the bottleneck)."""

WS_EPS = 1e-12
"""Added to each filter's weight variance before the square root (the LCKD code's value; see the module doc)."""

RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (320, 3, 2))
"""(planes, Bottleneck blocks, stride) of the four ResNet-50 stages; outputs 4 × planes channels."""

VNET_STAGES = (1, 2, 3, 3, 3)
"""Convolutions per VNet encoder stage; the decoder's stages have 3, 3, 2, 1."""


def size_multiple(config) -> tuple:
    """What every side of the input must be a multiple of, per axis (x, y, z)."""
    if config.backbone == "lckd_resnet50_aspp":
        return (32, 32, 16)  # stem (2, 2, 1), max-pool and three stride-2 stages
    return (2 ** (config.depth - 1),) * config.spatial_dims


def check_size(config, shape) -> None:
    multiple = size_multiple(config)
    if any(s % m for s, m in zip(shape, multiple)):
        raise ValueError(f"spatial size {tuple(shape)} must divide by {multiple} per axis "
                         f"(backbone {config.backbone!r})")


# -- building blocks ------------------------------------------------------------------------------------------
def standardise_weight(weight: torch.Tensor, eps: float = WS_EPS) -> torch.Tensor:
    """Each output filter (``weight[o]``) centred and divided by its unbiased standard deviation over the
    remaining dimensions (in channels × kernel), with ``eps`` added to the variance."""
    flat = weight.reshape(weight.shape[0], -1)
    centred = flat - flat.mean(dim=1, keepdim=True)
    return (centred / torch.sqrt(centred.var(dim=1, keepdim=True) + eps)).reshape(weight.shape)


class WSConv3d(nn.Conv3d):
    """A 3D convolution whose filters are weight-standardised in every forward pass (:func:`standardise_weight`)."""

    def forward(self, x):
        return F.conv3d(x, standardise_weight(self.weight), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


def norm_act(channels: int) -> list:
    """Affine InstanceNorm and LeakyReLU(0.01), the LCKD code's ``IN`` and ``LeakyReLU``."""
    return [nn.InstanceNorm3d(channels, affine=True), nn.LeakyReLU(0.01, inplace=True)]


def ws_unit(cin: int, cout: int, kernel: int = 1, **conv) -> nn.Sequential:
    """WS convolution (no bias), InstanceNorm, LeakyReLU."""
    return nn.Sequential(WSConv3d(cin, cout, kernel, bias=False, **conv), *norm_act(cout))


def instance_norm_any_size(x: torch.Tensor, norm: nn.InstanceNorm3d) -> torch.Tensor:
    """Affine instance normalisation without PyTorch's "more than 1 spatial element" check: for a 1×1×1 map
    the centred value is 0 and the output is the norm's shift β, as in the LCKD code's patched norm."""
    dims = tuple(range(2, x.dim()))
    centred = x - x.mean(dim=dims, keepdim=True)
    variance = centred.pow(2).mean(dim=dims, keepdim=True)
    shape = (1, -1) + (1,) * len(dims)
    return centred / torch.sqrt(variance + norm.eps) * norm.weight.view(shape) + norm.bias.view(shape)


class Bottleneck(nn.Module):
    """ResNet bottleneck (1×1, 3×3 with the stride, 1×1 to 4 × planes), WS convolutions, IN, LeakyReLU;
    ``project``: a 1×1 WS convolution + IN on the shortcut (every stage's first block, as in the code)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, project: bool = False):
        super().__init__()
        out = planes * self.expansion
        self.conv1, (self.norm1, _) = WSConv3d(inplanes, planes, 1, bias=False), norm_act(planes)
        self.conv2 = WSConv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm3d(planes, affine=True)
        self.conv3, self.norm3 = WSConv3d(planes, out, 1, bias=False), nn.InstanceNorm3d(out, affine=True)
        self.act = nn.LeakyReLU(0.01)
        self.shortcut = (nn.Sequential(WSConv3d(inplanes, out, 1, stride=stride, bias=False),
                                       nn.InstanceNorm3d(out, affine=True)) if project else nn.Identity())

    def forward(self, x):
        y = self.act(self.norm1(self.conv1(x)))
        y = self.act(self.norm2(self.conv2(y)))
        return self.act(self.norm3(self.conv3(y)) + self.shortcut(x))


class BasicBlock(nn.Module):
    """Residual block of two 3×3 WS convolutions with IN (LeakyReLU after the first and after the sum): the
    LCKD decoder's stage block."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = WSConv3d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm3d(channels, affine=True)
        self.conv2 = WSConv3d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm3d(channels, affine=True)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x):
        return self.act(self.norm2(self.conv2(self.act(self.norm1(self.conv1(x))))) + x)


def resnet_stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    stride = (2, 2, 2) if stride == 2 else 1
    return nn.Sequential(Bottleneck(inplanes, planes, stride, project=True),
                         *[Bottleneck(planes * 4, planes) for _ in range(blocks - 1)])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as in the LCKD code: 1×1, 3×3 at dilations 2, 4, 8 and image pooling
    (global mean, 1×1, IN, LeakyReLU, broadcast), concatenated and reduced by a 1×1; WS convolutions, IN, LReLU."""

    DILATIONS = (2, 4, 8)

    def __init__(self, channels: int = 256):
        super().__init__()
        self.branches = nn.ModuleList([ws_unit(channels, channels, 1)] + [
            ws_unit(channels, channels, 3, padding=d, dilation=d) for d in self.DILATIONS])
        self.pool_conv = WSConv3d(channels, channels, 1, bias=False)
        self.pool_norm = nn.InstanceNorm3d(channels, affine=True)
        self.merge = ws_unit(5 * channels, channels, 1)

    def forward(self, x):
        pooled = self.pool_conv(x.mean(dim=(2, 3, 4), keepdim=True))
        pooled = F.leaky_relu(instance_norm_any_size(pooled, self.pool_norm), 0.01)
        branches = [branch(x) for branch in self.branches] + [pooled.expand(-1, -1, *x.shape[2:])]
        return self.merge(torch.cat(branches, dim=1))


def lckd_encoder() -> nn.ModuleList:
    """The five levels of the LCKD encoder, each a module whose output is that level's feature: the stem
    (7×7×7 WS conv, stride (2, 2, 1)), max-pool + ResNet stage 1, stages 2 and 3, stage 4 + reduction + ASPP."""
    stem = nn.Sequential(WSConv3d(1, 64, 7, stride=(2, 2, 1), padding=3, bias=False), *norm_act(64))
    stages, inplanes = [], 64
    for planes, blocks, stride in RESNET50_STAGES:
        stages.append(resnet_stage(inplanes, planes, blocks, stride))
        inplanes = planes * Bottleneck.expansion
    return nn.ModuleList([
        stem, nn.Sequential(nn.MaxPool3d(3, stride=2, padding=1), stages[0]), stages[1], stages[2],
        nn.Sequential(stages[3], ws_unit(inplanes, 256, 1), ASPP(256))])


def init_like_lckd(module: nn.Module) -> None:
    """Kaiming-normal (fan_out) convolutions, norms' scale 1 and shift 0, as the LCKD code."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.InstanceNorm3d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# -- the networks -----------------------------------------------------------------------------------------------
class LCKDResNetASPP(nn.Module):
    """The LCKD/MetaKD network: modality-shared WS-ResNet-50 + ASPP encoder, concatenating decoder.

    Same interface as the teaching ``SharedEncoderUNet``: ``forward(image, present,
    bottleneck_scale)`` returns a :class:`~mmkd_helpers.models.ModelOutput` whose ``features`` are the
    per-modality (N, M, C, *spatial) maps of the five encoder levels (:data:`CHANNELS`; level -1, the ASPP
    output, is where LCKD and MetaKD distil), and ``forward_combinations`` scores several present-masks with
    one encoder pass. ``decoded`` is the last decoder stage (32 channels) at half the in-plane resolution.
    """

    DECODER = (256, 128, 64, 32)  # decoder stage widths, from the bottleneck up

    def __init__(self, config):
        super().__init__()
        if config.backbone != "lckd_resnet50_aspp" or config.fusion != "shared":
            raise ValueError("LCKDResNetASPP needs ModelConfig(backbone='lckd_resnet50_aspp')")
        self.config = config
        m, enc = config.num_modalities, CHANNELS["lckd_resnet50_aspp"]
        self.encoder = lckd_encoder()
        inputs = [m * enc[-1]] + list(self.DECODER[:-1])  # the bottleneck arrives as M concatenated streams
        self.upsample = nn.ModuleList([nn.ConvTranspose3d(cin, cout, 2, stride=2, bias=False)
                                       for cin, cout in zip(inputs, self.DECODER)])
        self.skip = nn.ModuleList([ws_unit(m * c, cout, 1) for c, cout in zip(enc[-2::-1], self.DECODER)])
        self.decoder = nn.ModuleList([BasicBlock(c) for c in self.DECODER])
        self.head = nn.Sequential(nn.Conv3d(self.DECODER[-1], config.out_channels, 1, bias=False),
                                  nn.Upsample(scale_factor=(2, 2, 1), mode="trilinear"))
        init_like_lckd(self)

    def encode(self, image: torch.Tensor, present: torch.Tensor) -> list:
        """Per-modality features at every level, each (N, M, C, *spatial); missing inputs are zeroed."""
        n, m = image.shape[:2]
        if m != self.config.num_modalities:
            raise ValueError(f"expected {self.config.num_modalities} modalities, got {m}")
        x = image * present.to(image.dtype).view(n, m, *([1] * (image.dim() - 2)))
        x = x.reshape(n * m, 1, *image.shape[2:])
        features = []
        keep = present.view(n, m, *([1] * (image.dim() - 1)))
        for block in self.encoder:
            x = block(x)
            feature = x.reshape(n, m, *x.shape[1:])
            # A missing stream's values are the code's; its gradient is cut: see the module docstring.
            features.append(feature if bool(present.all()) else torch.where(keep, feature, feature.detach()))
        return features

    def decode(self, features: list, fused: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The last decoder stage's features (N, 32, *spatial at half in-plane resolution)."""
        x = fused.flatten(1, 2)
        keep = skip_keep(self.config, x, self.training)
        for stage, level in enumerate(reversed(range(len(features) - 1))):
            skip = features[level]
            if self.config.fill_skips == "mean":
                skip = fill_missing(skip, present)
            skip = self.skip[stage](skip.flatten(1, 2))
            x = self.upsample[stage](x) + (skip if keep is None else skip * keep)
            x = self.decoder[stage](x)
        return x

    def forward(self, image: torch.Tensor, present: torch.Tensor | None = None,
                bottleneck_scale: torch.Tensor | None = None) -> ModelOutput:
        """``image`` (N, M, x, y, z); ``present`` (N, M) bool, all True when omitted; ``bottleneck_scale`` (M,)
        or (N, M) multiplies each modality's bottleneck after filling (MetaKD's meta step)."""
        if present is None:
            present = torch.ones(image.shape[:2], dtype=torch.bool, device=image.device)
        present = present.to(image.device).bool()
        check_size(self.config, image.shape[2:])
        features = self.encode(image, present)
        fused = fill_missing(features[-1], present)
        if bottleneck_scale is not None:
            fused = fused * bottleneck_scale.view(*bottleneck_scale.shape, *([1] * (fused.dim() - 2)))
        decoded = self.decode(features, fused, present)
        return ModelOutput(self.head(decoded), features, fused, present, decoded)

    def forward_combinations(self, image: torch.Tensor, combinations) -> torch.Tensor:
        """Logits (N, K, out_channels, *spatial) under each of the K present-masks, as K evaluation-mode calls:
        one encoder pass of the image and one of a zero volume serve every mask (as the teaching UNet's)."""
        return shared_encoder_combinations(self, image, combinations)


def vnet_convs(stages: int, cin: int, cout: int) -> nn.Sequential:
    """``stages`` × (3×3 convolution without bias, BatchNorm, ReLU): the UA-MT VNet's ``ConvBlock``."""
    layers = []
    for i in range(stages):
        layers += [nn.Conv3d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def vnet_resample(cin: int, cout: int, up: bool) -> nn.Sequential:
    """2×2×2 stride-2 (transposed) convolution with bias, BatchNorm, ReLU."""
    conv = (nn.ConvTranspose3d if up else nn.Conv3d)(cin, cout, 2, stride=2)
    return nn.Sequential(conv, nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class ProtoKDVNet(nn.Module):
    """The ProtoKD VNet (UA-MT style, 16 filters, BatchNorm, ReLU, additive skips), early fusion.

    Same interface as the teaching ``EarlyFusionUNet``: it reads its ``input_modalities`` from
    the (N, 4, ...) image in canonical order, zero-fills a missing one, and reports its features as one stream
    (N, 1, C, *spatial) at the five encoder levels; ``decoded`` is the last decoder stage (16 channels at full
    resolution), ProtoKD's prototype features. The official network's dropout is off in ProtoKD and is left out.
    """

    def __init__(self, config):
        super().__init__()
        if config.backbone != "protokd_vnet" or config.fusion != "early":
            raise ValueError("ProtoKDVNet needs ModelConfig(backbone='protokd_vnet')")
        self.config = config
        self.channel_index = [MODALITIES.index(m) for m in config.input_modalities]
        ch = CHANNELS["protokd_vnet"]
        self.encoder = nn.ModuleList([vnet_convs(VNET_STAGES[0], len(self.channel_index), ch[0])] + [
            nn.Sequential(vnet_resample(ch[i - 1], ch[i], up=False), vnet_convs(VNET_STAGES[i], ch[i], ch[i]))
            for i in range(1, len(ch))])
        self.upsample = nn.ModuleList([vnet_resample(ch[i + 1], ch[i], up=True) for i in reversed(range(len(ch) - 1))])
        self.decoder = nn.ModuleList([vnet_convs(n, ch[i], ch[i]) for n, i in zip((3, 3, 2, 1), (3, 2, 1, 0))])
        self.head = nn.Conv3d(ch[0], config.out_channels, 1)

    def forward(self, image: torch.Tensor, present: torch.Tensor | None = None,
                bottleneck_scale: torch.Tensor | None = None) -> ModelOutput:
        x = early_fusion_input(self, image, present, bottleneck_scale)
        check_size(self.config, image.shape[2:])
        features = []
        for block in self.encoder:
            x = block(x)
            features.append(x)
        keep = skip_keep(self.config, x, self.training)
        for stage, level in enumerate(reversed(range(len(features) - 1))):
            skip = features[level] if keep is None else features[level] * keep
            x = self.decoder[stage](self.upsample[stage](x) + skip)
        stream = torch.ones(image.shape[0], 1, dtype=torch.bool, device=image.device)
        features = [f.unsqueeze(1) for f in features]
        return ModelOutput(self.head(x), features, features[-1], stream, x)

    def forward_combinations(self, image: torch.Tensor, combinations) -> torch.Tensor:
        """Logits (N, K, out_channels, *spatial) under each present-mask of ``combinations`` (one pass each)."""
        return early_fusion_combinations(self, image, combinations)


def settle(config) -> None:
    """ModelConfig's hook: check ``config.backbone`` and set the fields the backbone fixes (:data:`FIXED`)."""
    from dataclasses import fields

    if config.backbone not in BACKBONES:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {config.backbone!r}")
    if config.backbone == "unet":
        return
    defaults = {f.name: f.default for f in fields(config)}
    for name, value in FIXED[config.backbone].items():
        given = getattr(config, name)
        if given != value and given != defaults[name]:
            raise ValueError(f"backbone {config.backbone!r} fixes {name}={value!r} (the paper's network), "
                             f"got {name}={given!r}")
        object.__setattr__(config, name, value)


def build_backbone(config) -> nn.Module:
    """The paper network of ``config.backbone`` (not the teaching UNet)."""
    if config.backbone == "lckd_resnet50_aspp":
        return LCKDResNetASPP(config)
    if config.backbone == "protokd_vnet":
        return ProtoKDVNet(config)
    raise ValueError(f"backbone {config.backbone!r} is not a paper network; choose from {BACKBONES[1:]}")
