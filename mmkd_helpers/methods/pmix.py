"""Mind the Gap (Tianyi Liu et al., arXiv 2409.19366) as a plug-in: a teacher aligned to an anchor P_mix.

Stage A of the paper trains a full-modality teacher whose encoder puts every modality in one latent space,
with L = L_seg + λ·L_align (Eq. 7: the segmentation cross-entropy plus the divergence of each modality's
latent P(Z_j) to the anchor). This method adds λ·L_align to the engine's segmentation loss; the anchor is
one of Table IV's:

* ``anchor="none"`` -- no alignment (Table IV's first row; the method adds nothing).
* ``anchor="normal"`` -- P^N_mix = N(0, 1): KL of each modality's Gaussian to N(0, 1); the model needs the
  mean / log-variance heads at the aligned level (``ModelConfig(latent="gaussian", latent_level=level)``).
* ``anchor="modality"`` -- P^k_mix: MSE of every Z_j to Z_k, ``modality`` = k (T1ce, Table V).
* ``anchor="mixture"`` -- P*_mix: learnable weights, softmax of a raw vector owned by this method and
  trained with the network by the engine's optimiser (the paper: "the teacher is not frozen during
  training"). ``form="paper"``: Σ_j w_j ‖Z_j − Z_k‖² with k = ``modality``; ``form="code"``: the released
  draft's pull of every Z_m to Σ_j w_j Z_j.

Stage B (students distilled from the frozen teacher) reuses :class:`~mmkd_helpers.methods.protokd.ProtoKD`:
``beta=0`` is logit KD in the style of KD-Net, the default is ProtoKD. Notebook 07 trains and checks the teachers,
notebook 08 their students.

Choices the paper leaves open, each an option:

* ``lam`` (λ, 1.0): not published, and not tuned here; notebook 07 prints both terms at the start of
  training, so you can see the scale it gives.
* ``level`` (0, the first encoder stage): which encoder output is Z_j. The paper encodes every modality into
  one latent space and predicts with a 3D U-Net from the latents; the draft v2 aligns the first-stage
  encoder features of RFNet/mmFormer. In the course's UNet every deeper feature of modality j is computed
  from level 0, while the bottleneck can be bypassed through the skip connections (notebook 07, §5a, measures
  how little the teachers' Dice depends on it), so aligning the bottleneck could leave the prediction
  untouched. Pair it with ``ModelConfig(stem="per_modality")``: a shared first block cannot tell the
  modalities apart, so it could align them only by discarding them.
* ``detach_anchor`` (True): Z_k (P^k, paper form of P*) or the features inside the mixture (code form)
  carry no gradient, so the anchor stays the chosen modality instead of meeting the others half-way.
* Test-time rescaling of features by w (the draft's inference rule, absent from its training rule): not
  done by default; :class:`WeightScaled` evaluates a teacher with it, to show what it does.

The draft's bugs are not copied (see :mod:`mmkd_helpers.losses.pmix`).
"""

import numpy as np
import torch

from ..constants import MODALITIES, NUM_MODALITIES
from ..losses.pmix import PMIX_FORMS, pmix_mixture_loss, pmix_modality_loss, pmix_normal_loss, pmix_weights
from .base import Hook, Method

ANCHORS = ("none", "normal", "modality", "mixture")


class PMix(Method):
    """L_seg + λ·L_align toward the anchor P_mix (Mind the Gap, Eq. 7 and Sec. III-B)."""

    name = "pmix"

    def __init__(self, anchor: str = "mixture", lam: float = 1.0, modality: str = "t1ce", form: str = "paper",
                 detach_anchor: bool = True, level: int = 0, log_every: int = 50):
        if anchor not in ANCHORS:
            raise ValueError(f"pmix option anchor must be one of {ANCHORS}, got {anchor!r}")
        if form not in PMIX_FORMS:
            raise ValueError(f"pmix option form must be one of {PMIX_FORMS}, got {form!r}")
        if modality not in MODALITIES:
            raise ValueError(f"pmix option modality must be one of {MODALITIES}, got {modality!r}")
        if lam < 0:
            raise ValueError(f"pmix option lam must be >= 0, got {lam!r}")
        if log_every < 1:
            raise ValueError(f"pmix option log_every must be >= 1, got {log_every!r}")
        self.anchor, self.lam, self.form, self.detach_anchor, self.level = anchor, lam, form, detach_anchor, level
        self.k = MODALITIES.index(modality)
        self.log_every = log_every
        self.options = {"anchor": anchor, "lam": lam, "modality": modality, "form": form,
                        "detach_anchor": detach_anchor, "level": level, "log_every": log_every}
        # softmax of zeros: the weights start uniform, so any ranking they end with was learned
        self.raw = torch.nn.Parameter(torch.zeros(NUM_MODALITIES)) if anchor == "mixture" else None

    def setup(self, trainer) -> None:
        config = trainer.model.config
        if config.fusion != "shared":
            raise ValueError(f"alignment needs per-modality latents Z_j: ModelConfig(fusion='shared'), "
                             f"got fusion={config.fusion!r}")
        if not -config.depth <= self.level < config.depth:
            raise ValueError(f"pmix option level must index one of the {config.depth} encoder levels, "
                             f"got {self.level}")
        if self.anchor == "normal" and not (config.latent == "gaussian"
                                            and config.latent_level % config.depth == self.level % config.depth):
            raise ValueError(f"P^N_mix needs mean / log-variance heads at the aligned level: "
                             f"ModelConfig(latent='gaussian', latent_level={self.level})")
        if self.raw is not None:  # before the engine builds its optimiser around it
            self.raw = torch.nn.Parameter(self.raw.detach().to(trainer.device))

    def parameters(self) -> list:
        return [self.raw] if self.raw is not None else []

    def weights(self) -> torch.Tensor:
        """The current P*_mix weights (softmax), canonical modality order, on the CPU."""
        if self.raw is None:
            raise RuntimeError(f"only anchor='mixture' has weights, this PMix has anchor={self.anchor!r}")
        return pmix_weights(self.raw.detach()).cpu()

    def alignment_loss(self, output) -> torch.Tensor:
        """L_align of the anchor on one model output (unweighted)."""
        if self.anchor == "normal":
            return pmix_normal_loss(output.latent_mean.float(), output.latent_logvar.float(), output.present)
        latents = output.features[self.level].float()
        if self.anchor == "modality":
            return pmix_modality_loss(latents, self.k, output.present, self.detach_anchor)
        anchor = self.k if self.form == "paper" else None
        return pmix_mixture_loss(latents, pmix_weights(self.raw), self.form, anchor, output.present, self.detach_anchor)

    def loss_terms(self, model, batch: dict, output) -> dict:
        if self.anchor == "none" or not self.lam:
            return {}
        return {"align": self.lam * self.alignment_loss(output)}

    def log_weights(self, trainer=None, step=None) -> dict:
        return {f"w_{name}": float(w) for name, w in zip(MODALITIES, self.weights())}

    def start(self, trainer) -> dict | None:
        return self.log_weights() if self.raw is not None else None

    def hooks(self) -> list:
        return [Hook(self.log_every, self.log_weights, "P*_mix weights")] if self.raw is not None else []

    def state_dict(self) -> dict:
        return {"raw": self.raw.detach().cpu().clone()} if self.raw is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.raw is not None:
            with torch.no_grad():  # in place: the optimiser holds this tensor
                self.raw.copy_(state["raw"].to(self.raw.device))


class BottleneckScaled(torch.nn.Module):
    """A shared-encoder model whose bottleneck feature of modality m is multiplied by ``scale[m]`` (after the
    missing ones are filled, the course's Eq. 5). ``scale`` of zeros switches the bottleneck off: the Dice
    lost then is how much the prediction depends on the bottleneck at all, i.e. whether aligning it could
    change what the model predicts."""

    def __init__(self, model: torch.nn.Module, scale):
        super().__init__()
        self.model, self.config = model, model.config
        scale = torch.tensor(np.array(scale, dtype=np.float32))  # a copy: the caller may pass a read-only array
        if scale.shape != (model.config.num_modalities,):
            raise ValueError(f"scale must hold {model.config.num_modalities} numbers, got {scale.tolist()}")
        self.register_buffer("scale", scale)

    def forward(self, image: torch.Tensor, present: torch.Tensor | None = None):
        return self.model(image, present, bottleneck_scale=self.scale.to(image.device))


class WeightScaled(torch.nn.Module):
    """A teacher evaluated with the draft's inference rule: each modality's aligned latent scaled by its weight.

    The released draft (v2) multiplies every modality's aligned feature by w_m at
    inference but not in training. Here the scale is M·w_m (M modalities), so uniform weights change
    nothing; the draft's raw w_m (summing to 1) would shrink every feature M-fold. The scaling is applied to
    the output of encoder block ``level`` (the latents Z_j of :class:`PMix`), before anything reads it.
    """

    def __init__(self, model: torch.nn.Module, weights, level: int = 0):
        super().__init__()
        self.model, self.config = model, model.config
        weights = np.array(weights, dtype=np.float32)  # a copy: the caller may pass a read-only array
        if not (weights.shape == (model.config.num_modalities,) and bool((weights >= 0).all()) and weights.sum() > 0):
            raise ValueError(f"weights must be {model.config.num_modalities} non-negative numbers, not all 0, "
                             f"got {weights.tolist()}")
        self.level = level % model.config.depth
        self.register_buffer("scale", torch.from_numpy(weights / weights.sum() * len(weights)))

    def _scale_latents(self, module, inputs, output):
        m, c = self.config.num_modalities, self.config.channels[self.level]
        # (N·M, C, ...) for a shared block, (N, M·C, ...) for the per-modality stem: both are (N, M, C, ...)
        latents = output.reshape(-1, m, c, *output.shape[2:])
        return (latents * self.scale.view(1, m, *([1] * (latents.dim() - 2)))).reshape(output.shape)

    def forward(self, image: torch.Tensor, present: torch.Tensor | None = None):
        handle = self.model.encoder[self.level].register_forward_hook(self._scale_latents)
        try:
            return self.model(image, present)
        finally:
            handle.remove()
