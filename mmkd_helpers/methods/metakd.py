"""MetaKD (Wang et al., arXiv 2405.07155): meta-learned modality-weighted knowledge distillation.

A raw importance weight vector (IWV) w, one entry per modality, is owned by the method (not by the
network's optimiser). The network is trained with the segmentation loss plus the modality-weighted
distillation of Eq. 4/5 at the bottleneck, with the IWV ratio held constant; the IWV is learned from a
meta loss on held-out patches with all modalities present, whose bottleneck features are scaled by the
normalised IWV (Eq. 4, outer problem). Two ways of learning w are offered:

``meta="alternating"`` -- the released code, the default::

    network loop (every step)            meta loop (every `meta_every` steps, network frozen)
    ---------------------------          -------------------------------------------------------
    batch from the training stream       repeat `meta_steps` (20) times:
    L = seg + α·Σ sg(w_i/w_j)·d_ij   -->     validation patch, all 4 modalities
    SGD/Adam step on θ                      ℓ_meta = seg(f_ζ(⊕ w_i·f_i))   (network detached)
                                            Adam step on w only (lr 1e-2, wd 5e-4)

    First-order and alternating: w sees the network as a constant, the network sees w as a constant.

``meta="bilevel"`` -- Eq. 4 as written, with the usual one-step look-ahead for the inner argmin::

    w* = argmin_w Σ_{D_v} ℓ_meta(y, f_ζ'(⊕ w_i·f_i'))         outer, on validation patches
    θ'(w) = θ − η ∇_θ L_train(θ, w)                           inner argmin, one SGD step (η = current lr)
    L_train(θ, w) = ℓ_task + α Σ_{i≠j} (w_i / w_j) ℓ_kd^(i,j)  ratio NOT detached here

    network loop (every step)            meta step (every `meta_every` steps)
    ---------------------------          -------------------------------------------------------
    same as above                        training batch (a fresh index) --> θ'(w), create_graph
                                         validation patch --> ℓ_meta at θ', scaled by w
                                         dℓ_meta/dw through both the scaling and θ'(w)
                                         one Adam step on w; the real network is not updated

    θ is every network parameter (the paper's encoder θ and decoder ζ). One Adam step per hook gives w
    1/20 of the alternating scheme's updates at the same ``meta_every``; ``meta_every=1`` is the usual
    per-step bi-level schedule.

Inference never uses w (as in the code): the IWV shapes the model only through the distillation weights.

**Beyond segmentation** (the paper's classification experiments, Sec. 4.2-4.3): nothing here is specific to
BraTS. The distilled features are the model output's ``bottleneck`` (the per-modality features before filling,
(N, M, C, ...)), the task and meta loss is the trainer's (the model's own when it brings one: cross-entropy for
:class:`mmkd_helpers.avmnist.AVMNISTNet`), and the meta samples come from the trainer's ``val_dataset`` when it
has one -- any stream of ``image``/``label``/``present`` dicts whose item ``i`` is a function of ``i``, with all
modalities present, as the code's meta patches -- and are cropped from ``val_volumes`` otherwise.
``modalities`` names the IWV's entries (the four MRI modalities by default; ``("image", "audio")`` for AV-MNIST).
"""

import time

import numpy as np
import torch
from torch.func import functional_call
from torch.utils.data import default_collate

from ..constants import MODALITY_NAMES, NUM_MODALITIES
from ..dataset import PatchDataset
from ..losses.metakd import IWV_NORMALISATIONS, normalise_iwv, weighted_kd_loss
from .base import Hook, Method

META_SCHEMES = ("alternating", "bilevel")
IWV_INITS = ("uniform", "ones")


def initial_iwv(init: str = "uniform", seed: int = 0, size: int = NUM_MODALITIES) -> torch.Tensor:
    """The raw IWV before training: U[0, 1) as the code's ``torch.rand``, or ones.

    Drawn from its own generator, so building the method does not move the global torch RNG.
    """
    if init == "uniform":
        return torch.rand(size, generator=torch.Generator().manual_seed(seed))
    if init == "ones":
        return torch.ones(size)
    raise ValueError(f"unknown IWV init {init!r}; choose from {IWV_INITS}")


def derived_seed(seed: int, stream: int) -> int:
    """An independent dataset seed for one of the method's data streams (1: meta patches)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def collate(dataset, start: int, count: int, device) -> dict:
    """Items ``start .. start+count-1`` of a sample stream (a :class:`PatchDataset`, an AV-MNIST stream) as a batch
    on ``device``."""
    batch = default_collate([dataset[index] for index in range(start, start + count)])
    return {key: batch[key].to(device) for key in ("image", "label", "present")}


def processes(trainer) -> tuple:
    """(rank, world size) of the training run (1 process when the trainer does not say)."""
    return getattr(trainer, "rank", 0), getattr(trainer, "world", 1)


class MetaKD(Method):
    """MetaKD as a plug-in: the weighted KD term, the IWV and its meta step.

    Options (JSON values, saved in checkpoints):

    * ``alpha`` (0.1): weight of the KD term, Eq. 4. ``p`` (1): 1 = mean absolute error (code), 2 = MSE.
    * ``normalisation`` ("softmax"): Eq. 6; "relu" / "sigmoid" for the ablation (:func:`normalise_iwv`).
    * ``meta`` ("alternating"): the code's scheme, or "bilevel" for Eq. 4 with a one-step look-ahead.
    * ``meta_every`` (100): steps between meta steps (the code: 100 in stage 1, 500 in stage 2).
    * ``meta_steps`` (20): Adam steps on w per alternating phase; the bilevel step takes one.
    * ``meta_lr`` (1e-2): Adam on w, as the code. ``meta_weight_decay`` (0): the course decays no method's
      own parameters (the IWV's size is what is learned, not a capacity to regularise); the code uses 5e-4
      and the paper says 5e-5. Adam's coupled L2 pulls every raw weight toward 0, i.e. the softmax toward
      uniform, by about ``meta_lr`` per step whenever the meta-gradient is smaller than the decay term;
      notebook 05 has an exercise that measures what the code's value does.
    * ``init`` ("uniform"): U[0, 1) as the code, or "ones"; ``seed`` (0): for the init and the meta patches.
    * ``meta_batch_size`` (1): validation patches (samples) per meta forward (the code: 1).
    * ``meta_roi`` (None): validation patch size; None takes the training crop (BraTS only).
    * ``modalities`` (None): the names of the IWV's entries, in the model's modality order; None: the four MRI
      modalities. Saved in the options only when given, so the MRI runs' options are as before.
    """

    name = "metakd"

    def __init__(self, alpha: float = 0.1, p: int = 1, normalisation: str = "softmax", meta: str = "alternating",
                 meta_every: int = 100, meta_steps: int = 20, meta_lr: float = 1e-2, meta_weight_decay: float = 0.0,
                 init: str = "uniform", seed: int = 0, meta_batch_size: int = 1, meta_roi=None, modalities=None):
        if normalisation not in IWV_NORMALISATIONS:
            raise ValueError(f"unknown normalisation {normalisation!r}; choose from {IWV_NORMALISATIONS}")
        if meta not in META_SCHEMES:
            raise ValueError(f"unknown meta scheme {meta!r}; choose from {META_SCHEMES}")
        if p not in (1, 2):
            raise ValueError(f"p must be 1 (L1, the code) or 2 (MSE), got {p!r}")
        if min(meta_every, meta_steps, meta_batch_size) < 1:
            raise ValueError("meta_every, meta_steps and meta_batch_size must be at least 1")
        if modalities is not None and (isinstance(modalities, str) or len(modalities) < 2
                                       or len(set(modalities)) != len(modalities)):
            raise ValueError(f"modalities must name two or more distinct modalities, got {modalities!r}")
        self.modality_names = tuple(modalities) if modalities is not None else MODALITY_NAMES
        self.alpha, self.p, self.normalisation, self.meta = alpha, p, normalisation, meta
        self.meta_every, self.meta_steps, self.meta_batch_size = meta_every, meta_steps, meta_batch_size
        self.seed = seed
        self.meta_roi = tuple(meta_roi) if meta_roi is not None else None
        self.options = {"alpha": alpha, "p": p, "normalisation": normalisation, "meta": meta,
                        "meta_every": meta_every, "meta_steps": meta_steps, "meta_lr": meta_lr,
                        "meta_weight_decay": meta_weight_decay, "init": init, "seed": seed,
                        "meta_batch_size": meta_batch_size, "meta_roi": self.meta_roi and list(self.meta_roi)}
        if modalities is not None:
            self.options["modalities"] = list(self.modality_names)
        self.raw = torch.nn.Parameter(initial_iwv(init, seed, len(self.modality_names)))
        self.meta_optimizer = torch.optim.Adam([self.raw], lr=meta_lr, weight_decay=meta_weight_decay)
        self.meta_index = 0  # next item of the meta (validation) patch stream
        self.lookahead_index = 0  # bilevel: next item past the training stream, for the look-ahead batches
        self.log = [self.log_entry(0)]  # the IWV at every meta step, from the start (Fig. 5a)
        self.meta_data = None

    # -- the IWV ----------------------------------------------------------------------------------------
    def iwv(self) -> torch.Tensor:
        """The normalised IWV (Eq. 6 or the chosen ablation), differentiable in the raw weights."""
        return normalise_iwv(self.raw, self.normalisation)

    def log_entry(self, step: int) -> dict:
        weights = self.iwv().detach().cpu().tolist()
        return {"step": step, **{f"w_{name}": w for name, w in zip(self.modality_names, weights)}}

    # -- the Method API ---------------------------------------------------------------------------------
    def setup(self, trainer) -> None:
        """Builds the meta sample stream and moves the IWV to the device.

        ``trainer.val_dataset`` when given is the stream itself. Otherwise, as the code: held-out cases
        (``trainer.val_volumes``), cropped and augmented like the training patches, always with all four modalities.
        """
        modalities = getattr(trainer.model.config, "num_modalities", len(self.modality_names))
        if modalities != len(self.modality_names):
            raise ValueError(f"the model has {modalities} modalities, the IWV {len(self.modality_names)} "
                             f"({', '.join(self.modality_names)}): give MetaKD(modalities=...) the model's")
        if getattr(trainer, "val_dataset", None) is not None:
            self.meta_data = trainer.val_dataset
        elif not trainer.val_volumes:
            raise ValueError("MetaKD's meta step needs held-out data: give the Trainer val_volumes (BraTS cases) "
                             "or a val_dataset (a sample stream with all modalities present)")
        else:
            source = trainer.dataset
            self.meta_data = PatchDataset([(images, label) for _, images, label in trainer.val_volumes],
                                          self.meta_roi or source.roi_size, fg_prob=source.fg_prob, flip=source.flip,
                                          intensity=source.intensity, drop_policy="none",
                                          seed=derived_seed(self.seed, 1))
        self.raw.data = self.raw.data.to(trainer.device)
        # Reloading casts any Adam state already there (a state loaded before setup) to the new device.
        self.meta_optimizer.load_state_dict(self.meta_optimizer.state_dict())

    def start(self, trainer) -> dict:
        """Logs the initial IWV as step 0 of the history, where the curves of Fig. 5a start.

        The code also runs a meta phase at its iteration 0 (after the first training step); here the
        first one comes after ``meta_every`` steps, one phase of hundreds.
        """
        return {key: value for key, value in self.log_entry(0).items() if key != "step"}

    def loss_terms(self, model, batch: dict, output) -> dict:
        """α · the weighted KD of Eq. 4/5 on the bottleneck before filling; w is a constant for the network
        in both schemes (the code detaches the ratio)."""
        weights = self.iwv().detach()
        kd = weighted_kd_loss(output.bottleneck.float(), batch["present"], weights, self.p)
        return {"kd": self.alpha * kd}

    def hooks(self) -> list:
        return [Hook(every=self.meta_every, fn=self.meta_hook, name=f"metakd-{self.meta}")]

    def meta_hook(self, trainer, step: int) -> dict:
        """One meta phase (alternating) or look-ahead step (bilevel); logs the normalised IWV and the meta
        loss (Fig. 5a, c), and the hook's time, which the engine's ``seconds`` column leaves out."""
        started = time.perf_counter()
        update = self.alternating_phase if self.meta == "alternating" else self.bilevel_step
        meta_loss = update(trainer)
        entry = {**self.log_entry(step), "meta_loss": meta_loss}
        self.log.append(entry)
        row = {key: value for key, value in entry.items() if key != "step"}
        return {**row, "meta_seconds": time.perf_counter() - started}

    # -- the meta steps ---------------------------------------------------------------------------------
    def next_meta_batch(self, device, rank: int = 0, world: int = 1) -> dict:
        """The next meta patches; with several processes (``torchrun``) each takes its own share of the stream,
        as the training batches: the meta batch is ``meta_batch_size`` per process."""
        batch = collate(self.meta_data, self.meta_index * world + rank * self.meta_batch_size, self.meta_batch_size,
                        device)
        self.meta_index += self.meta_batch_size
        return batch

    def meta_loss(self, trainer, params: dict) -> torch.Tensor:
        """ℓ_meta of Eq. 4 (outer): the task loss (the trainer's) on a validation patch (sample) with all
        modalities, each bottleneck feature scaled by w_i, with the network's parameters ``params``.

        Runs in float32: the meta step has no gradient scaler, and it is rare enough not to matter.
        """
        batch = self.next_meta_batch(trainer.device, *processes(trainer))
        output = functional_call(trainer.model, params, (batch["image"], batch["present"]),
                                 {"bottleneck_scale": self.iwv()})
        return trainer.seg_loss(output.logits.float(), batch["label"])

    def step_iwv(self, grad: torch.Tensor, trainer=None) -> None:
        """One Adam step on the raw IWV along ``grad``, averaged over the processes of a multi-process run
        (each computed it on its own meta patches), so that every process keeps the same IWV."""
        rank, world = processes(trainer)
        if world > 1:
            grad = grad.clone()
            torch.distributed.all_reduce(grad)
            grad /= world
        self.meta_optimizer.zero_grad(set_to_none=True)
        self.raw.grad = grad
        self.meta_optimizer.step()

    def alternating_phase(self, trainer) -> float:
        """The code's meta phase: ``meta_steps`` Adam steps on w, the network frozen.

        The code back-propagates into the network too and throws those gradients away; here the network's
        parameters are detached, so they are never computed and the network's ``.grad`` is not touched.
        """
        frozen = {name: theta.detach() for name, theta in trainer.model.named_parameters()}
        losses = []
        for _ in range(self.meta_steps):
            loss = self.meta_loss(trainer, frozen)
            self.step_iwv(torch.autograd.grad(loss, self.raw)[0], trainer)
            losses.append(loss.item())
        return float(np.mean(losses))

    def next_lookahead_batch(self, trainer) -> dict:
        """A training batch the network never trains on: indices past the end of the training stream."""
        size = trainer.config.batch_size
        rank, world = processes(trainer)
        start = trainer.first_unseen_sample + self.lookahead_index * world + rank * size
        self.lookahead_index += size
        return collate(trainer.dataset, start, size, trainer.device)

    def bilevel_step(self, trainer) -> float:
        """Eq. 4 as written: one Adam step on w along the look-ahead hypergradient; the network is untouched."""
        loss, grad = self.hypergradient(trainer)
        self.step_iwv(grad, trainer)
        return loss.item()

    def hypergradient(self, trainer) -> tuple:
        """(ℓ_meta, dℓ_meta/dw) with a one-step look-ahead: θ'(w) = θ − η ∇_θ L_train(θ, w), and ℓ_meta
        evaluated at θ' on a validation patch scaled by w, so w's gradient has two paths: the scaling and
        θ'(w). η is the network's current learning rate (the scheduler has already moved it to the next
        step's); the look-ahead is plain gradient descent, not the network optimiser's momentum/Adam
        update, as in DARTS-style look-aheads.

        Only the KD term of L_train depends on w, so only its gradient is taken with a second-order graph;
        the segmentation gradient enters θ' as a constant (the same hypergradient, less memory).
        """
        params = {name: theta for name, theta in trainer.model.named_parameters() if theta.requires_grad}
        batch = self.next_lookahead_batch(trainer)
        output = functional_call(trainer.model, params, (batch["image"], batch["present"]))
        seg = trainer.seg_loss(output.logits.float(), batch["label"])
        kd = self.alpha * weighted_kd_loss(output.bottleneck.float(), batch["present"], self.iwv(), self.p,
                                           detach_ratio=False)
        seg_grads = torch.autograd.grad(seg, list(params.values()), retain_graph=True)
        kd_grads = torch.autograd.grad(kd, list(params.values()), create_graph=True, allow_unused=True,
                                       materialize_grads=True)  # the decoder does not reach the bottleneck
        lr = trainer.lr
        lookahead = {name: theta.detach() - lr * (g_seg + g_kd)
                     for (name, theta), g_seg, g_kd in zip(params.items(), seg_grads, kd_grads)}
        loss = self.meta_loss(trainer, lookahead)
        return loss, torch.autograd.grad(loss, self.raw)[0]

    # -- checkpoints ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"w": self.raw.detach().cpu().clone(), "optimizer": self.meta_optimizer.state_dict(),
                "meta_index": self.meta_index, "lookahead_index": self.lookahead_index,
                "log": [dict(entry) for entry in self.log]}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.raw.copy_(state["w"])
        self.meta_optimizer.load_state_dict(state["optimizer"])
        self.meta_index, self.lookahead_index = state["meta_index"], state["lookahead_index"]
        self.log = [dict(entry) for entry in state["log"]]
