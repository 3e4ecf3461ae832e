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


def shared_encoder_combinations(model, image: torch.Tensor, combinations) -> torch.Tensor:
    """Logits (N, K, out_channels, *spatial) of a shared-encoder ``model`` (``encode``, ``decode``, ``head``) under
    each of the K present-masks ``combinations``, the same as K evaluation-mode forward passes.

    The encoder sees every modality alone, so a modality's features are the same whichever others are present,
    and a missing one's are the encoder's response to a zero volume, which depends on nothing but the size: one
    encoder pass of the image and one of a zero volume serve every combination; only the filling and the decoder
    run K times (about a quarter of the cost for the 15 combinations).
    """
    n, m = image.shape[:2]
    real = model.encode(image, torch.ones(n, m, dtype=torch.bool, device=image.device))
    empty = model.encode(torch.zeros_like(image[:1]), torch.zeros(1, m, dtype=torch.bool, device=image.device))
    logits = []
    for combination in combinations:
        present = torch.as_tensor(combination, dtype=torch.bool, device=image.device).expand(n, m)
        keep = present.view(n, m, *([1] * (real[0].dim() - 2)))
        features = [torch.where(keep, r, e) for r, e in zip(real, empty)]
        logits.append(model.head(model.decode(features, fill_missing(features[-1], present), present)))
    return torch.stack(logits, dim=1)


def early_fusion_input(model, image: torch.Tensor, present, bottleneck_scale) -> torch.Tensor:
    """The input of an early-fusion ``model`` (``config``, ``channel_index``): its ``input_modalities`` read from
    the (N, 4, *spatial) image in canonical order, a missing one zero-filled; wrong calls refused."""
    n, m = image.shape[:2]
    if m != model.config.num_modalities:
        raise ValueError(f"expected {model.config.num_modalities} modalities, got {m}")
    if bottleneck_scale is not None:
        raise ValueError("early fusion has one bottleneck stream: nothing to scale per modality")
    if present is None:
        present = torch.ones(image.shape[:2], dtype=torch.bool, device=image.device)
    present = present.to(image.device).bool()[:, model.channel_index]
    if not present.any(dim=1).all():
        raise ValueError(f"every sample needs one of {model.config.input_modalities} present")
    return image[:, model.channel_index] * present.to(image.dtype).view(n, -1, *([1] * (image.dim() - 2)))


def early_fusion_combinations(model, image: torch.Tensor, combinations) -> torch.Tensor:
    """Logits (N, K, out_channels, *spatial) of an early-fusion ``model`` under each present-mask (one pass each:
    its input channels mix the modalities from the first layer on, so nothing can be shared)."""
    n, m = image.shape[:2]
    return torch.stack([model(image, torch.as_tensor(c, dtype=torch.bool, device=image.device).expand(n, m)).logits
                        for c in combinations], dim=1)
