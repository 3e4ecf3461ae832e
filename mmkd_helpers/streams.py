"""What every network of the package returns and shares: the output record, the mean filling of missing
modalities' features, and skip dropout (used by :mod:`mmkd_helpers.models` and :mod:`mmkd_helpers.backbones`)."""

from dataclasses import dataclass

import torch


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (N, out_channels, *spatial)
    features: list  # per level, (N, M, C, *spatial) encoder features before filling (level -1 = bottleneck)
    fused: torch.Tensor  # (N, M, C, *spatial) bottleneck after missing-feature generation
    present: torch.Tensor  # (N, M) bool
    decoded: torch.Tensor | None = None  # (N, C0, *spatial) last decoder features, at label resolution (ProtoKD)
    latent_mean: torch.Tensor | None = None  # gaussian latent: (N, M, C, *spatial) μ of each modality's latent
    latent_logvar: torch.Tensor | None = None  # gaussian latent: log σ² of the same

    @property
    def bottleneck(self) -> torch.Tensor:
        return self.features[-1]


def fill_missing(features: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Replace missing modalities' features by the mean of the present ones (LCKD Eq. 5, MetaKD Eq. 2).

    ``features`` (N, M, C, *spatial), ``present`` (N, M) bool. The mean is not detached, as in the
    official code: the decoder's gradient reaches the present modalities through the generated features.
    """
    if not present.any(dim=1).all():
        raise ValueError("every sample needs at least one present modality")
    weight = present.to(features.dtype).view(*present.shape, *([1] * (features.dim() - 2)))
    mean = (features * weight).sum(dim=1, keepdim=True) / weight.sum(dim=1, keepdim=True)
    return torch.where(weight.bool(), features, mean)


def skip_keep(config, x: torch.Tensor, training: bool):
    """(N, 1, 1, ...) 0/1 multipliers that switch each sample's skip connections off with probability
    ``config.skip_dropout`` in training (None otherwise): the decoder must then segment from the bottleneck
    alone, so it cannot learn to ignore it."""
    if not training or not config.skip_dropout:
        return None
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    return (torch.rand(shape, device=x.device) >= config.skip_dropout).to(x.dtype)
