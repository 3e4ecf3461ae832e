"""The one training engine. Every method (baseline, LCKD, MetaKD, ...) runs through :class:`Trainer`.

Read top to bottom, one step is: take the batch for this step, forward the model, segmentation loss plus
the method's extra terms, backward, optimiser and schedule step, log, run the method's hooks when due,
checkpoint when due. Around it: device choice (cuda > mps > cpu), mixed precision on CUDA only, atomic
checkpoints with an exact resume, and multi-GPU through ``torchrun`` + DistributedDataParallel.
"""

import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .evaluation import evaluate
from .fileio import atomic_path
from .losses import segmentation_loss
from .methods import Method
from .models import read_checkpoint


OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("poly", "cosine", "constant")


RESUME_FIXED = ("batch_size", "optimizer", "weight_decay", "seed", "seg_loss")
"""Training settings a resumed run must keep: they define its data stream and its optimiser state."""


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite: the run stopped there, and its checkpoint holds the last finite state."""


@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 2  # per process
    optimizer: str = "adamw"  # "adamw" (decoupled decay), "adam" (L2 decay in the gradient), or "sgd"
    # (Nesterov, momentum 0.99: the LCKD/MetaKD code); decay on >= 2-D weights only (configure_optimizer)
    lr: float = 1e-3
    weight_decay: float = 1e-2
    schedule: str = "poly"  # "poly" (power 0.9, the official codes), "cosine" (the LCKD paper), "constant"
    amp: bool = True  # mixed precision; used on CUDA only (bf16 autocast is slower on CPUs)
    seed: int = 0
    checkpoint_every: int = 0  # steps; 0 saves only at the end (when an output folder is given)
    num_workers: int = 0  # DataLoader workers; 0 is the safe default in notebooks and on Windows
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    validate_every: int = 0  # steps between validation Dice measurements (val_ET/TC/WT in the history); 0: never
    seg_loss: str = "dice_ce"  # "dice_ce" (MONAI Dice + CE/BCE) or "protokd_code" (losses.segmentation.protokd_code_loss)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("checkpoint_every", "num_workers", "validate_every", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {self.lr}")

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu; anything else is passed to :class:`torch.device`."""
    if device != "auto":
        try:
            chosen = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"device {device!r} is not a device name (auto, cpu, cuda, cuda:1, mps): {exc}") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this PyTorch has no usable CUDA GPU "
                             f"(CUDA build: {torch.version.cuda or 'no'}); use cpu or auto")
        if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
        if chosen.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {device!r}: MPS (Apple GPU) is not available here; use cpu or auto")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)



def parameter_groups(model: torch.nn.Module, extra=(), weight_decay: float = 0.0) -> list:
    """Two optimiser groups, as nanoGPT's ``configure_optimizers``: weight decay on the weights of
    convolutions and linear layers (tensors of 2 or more dimensions), none on norms' scales and shifts, biases
    and ``extra`` (a method's own parameters: MetaKD's IWV, P*_mix's weights), whose size is not a capacity to
    regularise but the quantity being learned."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2] + list(extra), "weight_decay": 0.0}]


def configure_optimizer(model: torch.nn.Module, config: TrainConfig, extra=()) -> torch.optim.Optimizer:
    """AdamW (the default), Adam or SGD over :func:`parameter_groups`.

    AdamW decays by ``lr · weight_decay · w``, independent of the gradient's scale (Loshchilov & Hutter,
    ICLR 2019). Adam adds ``weight_decay · w`` to the gradient instead, and its normalisation turns that into
    a step of about ``lr`` toward 0 for any weight whose loss gradient is smaller still: a path the loss
    barely uses is switched off within a few hundred steps (notebook 02 measures it: the decoder stops
    reading the bottleneck, where LCKD and MetaKD distil). SGD is the LCKD/MetaKD code's (Nesterov, 0.99).
    """
    groups = parameter_groups(model, extra, config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.99, nesterov=True)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose from {OPTIMIZERS}")


def lr_factor(step: int, total: int, schedule: str) -> float:
    """Learning-rate multiplier at ``step`` of ``total``."""
    progress = min(step / max(total, 1), 1.0)
    if schedule == "poly":
        return (1 - progress) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {schedule!r}")


class StepSampler(torch.utils.data.Sampler):
    """Sample indices for steps ``start .. steps-1``: index = (step * world + rank) * batch + k.

    The dataset draws sample ``i`` from a generator seeded by ``i``, so this stream is the same whether
    the run is resumed or not, and processes of a multi-GPU run see disjoint samples.
    """

    def __init__(self, start: int, steps: int, batch_size: int, rank: int = 0, world: int = 1):
        self.start, self.steps, self.batch_size, self.rank, self.world = start, steps, batch_size, rank, world

    def __iter__(self):
        for step in range(self.start, self.steps):
            base = (step * self.world + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)

    def __len__(self) -> int:
        return max(self.steps - self.start, 0) * self.batch_size


def init_distributed():
    """(rank, world size); initialises the process group when launched by ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return (torch.distributed.get_rank() if world > 1 else 0), world


def task_loss(model, form: str = "dice_ce"):
    """The task loss ``loss(logits, label)`` the engine trains ``model`` with: the model's own when it defines
    ``task_loss()`` (the AV-MNIST classifier: cross-entropy), else the segmentation loss of its head in the form
    ``form`` (:func:`mmkd_helpers.losses.segmentation_loss`)."""
    own = getattr(model, "task_loss", None)
    return own() if own is not None else segmentation_loss(model.config.head, form)


class Trainer:
    """Trains ``model`` on ``dataset`` with ``method``'s extra terms and hooks.

    ``dataset`` yields dicts with ``image`` (M, *spatial), ``label`` and ``present`` (M,): BraTS patches
    (:class:`mmkd_helpers.dataset.PatchDataset`: (4, *roi), label map (*roi)), or any stream of the same keys whose
    item ``i`` is a function of ``i`` (:class:`mmkd_helpers.avmnist.AVMNISTStream`: packed image and audio, a
    digit). The model is called as ``model(image, present)`` and returns a
    :class:`~mmkd_helpers.models.ModelOutput`; the task loss is :func:`task_loss`'s, logged as ``seg`` (or the
    model's ``task_term``). ``out_dir`` receives ``last.pt`` checkpoints; ``fit(resume=True)`` continues from it
    exactly.

    Held-out data for the methods' hooks: ``val_volumes`` (BraTS cases: teacher election, MetaKD's meta patches,
    ``validate_every``), or ``val_dataset``, a stream like ``dataset`` (MetaKD's meta samples for a model that is
    not a segmentation network).
    """

    def __init__(self, model, dataset, config: TrainConfig = TrainConfig(), method: Method | None = None,
                 out_dir=None, device: str = "auto", progress: bool = True, extra: dict | None = None,
                 val_volumes=None, val_dataset=None):
        self.rank, self.world = init_distributed()
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.dataset, self.config, self.progress = dataset, config, progress
        self.method = method or Method()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.extra = extra or {}  # plain values saved with every checkpoint (e.g. the data split)
        self.val_volumes = list(val_volumes or [])  # (case_id, images, label): for hooks (teacher election, meta steps)
        self.val_dataset = val_dataset  # a sample stream like `dataset`, for hooks of models without volumes
        self.seg_loss = task_loss(model, config.seg_loss)  # the task loss (segmentation for the MRI networks)
        self.task_term = getattr(model, "task_term", "seg")
        self.use_amp = config.amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.step, self.history = 0, []
        self.method.setup(self)
        self.optimizer = configure_optimizer(self.model, config, self.method.parameters())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, config.steps, config.schedule))
        self.train_model = self.model
        if self.world > 1:
            for parameter in self.model.parameters():  # a 1x1x1 kernel's channels-last strides are not the ones its
                if parameter.dim() == 5 and parameter.shape[2:] == (1, 1, 1):  # gradient gets: DDP warns each step
                    parameter.data = parameter.data.clone(memory_format=torch.contiguous_format)  # (same layout)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    # -- the loop -------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_at: int | None = None):
        """Train until ``config.steps`` (or pause after step ``stop_at``); returns the history as a DataFrame.

        The schedule always spans ``config.steps``: a run paused with ``stop_at`` and resumed later is
        the same run as an uninterrupted one.
        """

        if resume:
            self.load_checkpoint(self.checkpoint_path)
        elif self.step == 0:  # a new run; a paused one (fit(stop_at=...)) simply continues
            torch.manual_seed(self.config.seed)
            started = self.method.start(self)
            if started:
                self.history.append({"step": 0, **started})
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.config.batch_size, num_workers=self.config.num_workers,
            sampler=StepSampler(self.step, min(stop_at or self.config.steps, self.config.steps),
                                self.config.batch_size, self.rank, self.world),
            pin_memory=self.device.type == "cuda", persistent_workers=False)
        hooks = self.method.hooks()
        bar = tqdm(total=self.config.steps, initial=self.step, desc=self.method.name,
                   disable=not self.progress or self.rank != 0)
        self.model.train()
        rng = torch.get_rng_state()
        batches = iter(loader)
        if self.step > 0:  # the loader drew its base seed from the global RNG, which skip dropout also draws from:
            torch.set_rng_state(rng)  # a continued run takes the stream where it stopped, as if never interrupted
        for batch in batches:
            started = time.perf_counter()
            batch = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                output = self.train_model(batch["image"], batch["present"])
                terms = {self.task_term: self.seg_loss(output.logits.float(), batch["label"])}
                terms.update(self.method.loss_terms(self.model, batch, output))
                loss = sum(terms.values())
            if not self.all_finite(loss):
                self.stop_diverged(terms)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.average_method_gradients()
            if self.config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.step += 1

            row = {"step": self.step, "loss": loss.item(), **{k: v.item() for k, v in terms.items()},
                   "lr": self.lr, "seconds": time.perf_counter() - started}
            for hook in hooks:
                if self.step % hook.every == 0:
                    row.update(hook.fn(self, self.step) or {})
                    self.model.train()
            if self.config.validate_every and (self.step % self.config.validate_every == 0
                                               or self.step == self.config.steps):
                row.update(self.validate())
            self.history.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()
        self.save_checkpoint()
        if self.world > 1:  # only rank 0 writes: when fit returns, in every process, the checkpoint is on disk
            torch.distributed.barrier()
        return self.history_frame()

    @property
    def lr(self) -> float:
        """The learning rate of the current step (after the schedule)."""
        return self.optimizer.param_groups[0]["lr"]

    @property
    def first_unseen_sample(self) -> int:
        """The index, in the training dataset, of the first sample this run never trains on (the stream of all
        processes ends there): where a method's look-ahead batches (MetaKD's bi-level step) start."""
        return self.config.steps * self.config.batch_size * self.world

    def validate(self) -> dict:
        """Mean Dice per region (``val_ET``, ``val_TC``, ``val_WT``, in [0, 1]) of the model on the validation
        volumes, over the combinations it is evaluated on, with sliding windows of the training crop: the
        validation curve that shows whether the step budget reached a plateau."""

        if not self.val_volumes:
            raise ValueError("validate_every needs validation volumes: give the Trainer val_volumes")
        results = evaluate(self.model, self.val_volumes, self.dataset.roi_size, progress=False)
        self.model.train()
        return {f"val_{region}": float(v) for region, v in results.groupby("region").dice.mean().items()}

    def all_finite(self, loss) -> bool:
        """Whether the loss is finite in every process (all must stop together, or the others would hang)."""
        finite = torch.isfinite(loss.detach()).float()
        if self.world > 1:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        return bool(finite.item())

    def stop_diverged(self, terms: dict):
        """Stop at the first non-finite loss without saving: the checkpoint on disk stays the last finite state
        (a mean over the history would skip the NaN and report a loss that looks fine)."""
        values = ", ".join(f"{name} {value.item():.4g}" for name, value in terms.items())
        path = self.checkpoint_path
        if path is not None and path.exists():
            kept = f"{path} still holds the last checkpointed step"
        else:
            kept = "no checkpoint was written (checkpoint_every saves intermediate steps)"
        raise TrainingDiverged(f"the loss is not finite at step {self.step + 1} ({values}) with learning rate "
                               f"{self.lr:.3g}; training stopped and {kept}; try a smaller lr")

    def average_method_gradients(self) -> None:
        """Average the gradients of the method's own parameters over processes (DDP averages only the model's)."""
        if self.world == 1:
            return
        for parameter in self.method.parameters():
            # A parameter without a gradient in this process (its term was 0 for this batch: P*_mix when the anchor
            # modality is missing) still joins the all-reduce with zeros, as DDP does for the model's unused
            # parameters: a process that skipped it while another did not would leave the collectives mismatched.
            grad = parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)
            torch.distributed.all_reduce(grad)
            parameter.grad = grad / self.world

    def history_frame(self):

        return pd.DataFrame(self.history)

    # -- checkpoints ----------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / "last.pt" if self.out_dir is not None else None

    def state_dict(self) -> dict:
        return {
            "step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "method": {"name": self.method.name, "options": dict(self.method.options), "state": self.method.state_dict()},
            "history": self.history, "world": self.world,
            "config": {"model": self.model.config.to_dict(), "train": self.config.to_dict(), **self.extra},
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }

    def save_checkpoint(self, path=None) -> Path | None:
        path = Path(path) if path is not None else self.checkpoint_path
        if path is None or self.rank != 0:
            return None
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)
        return path

    def load_checkpoint(self, path) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no checkpoint to resume from")
        state = read_checkpoint(path, map_location=self.device)
        if state["world"] != self.world:
            raise ValueError(f"{path}: saved with {state['world']} processes, resumed with {self.world}")
        saved = state["config"].get("train", {})
        fixed = [k for k in RESUME_FIXED if k in saved and saved[k] != getattr(self.config, k)]
        if fixed:
            raise ValueError(f"{path}: a resumed run keeps its {', '.join(fixed)} "
                             f"({', '.join(f'{k}={saved[k]!r}' for k in fixed)}); only the schedule may change")
        if state["method"]["name"] != self.method.name:
            raise ValueError(f"{path}: a {state['method']['name']} run cannot resume as {self.method.name}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.method.load_state_dict(state["method"]["state"])
        self.step, self.history = state["step"], list(state["history"])
        if self.step > self.config.steps:
            raise ValueError(f"{path}: the run is at step {self.step}, beyond steps={self.config.steps}")
        # The schedule is this Trainer's, not the checkpoint's (as in nanoGPT): a finished run can be extended to
        # more steps or continued with another learning rate. Unchanged settings give back the saved rates exactly.
        self.scheduler.base_lrs = [self.config.lr] * len(self.optimizer.param_groups)
        for group in self.optimizer.param_groups:
            group["initial_lr"] = self.config.lr
            group["lr"] = self.config.lr * lr_factor(self.step, self.config.steps, self.config.schedule)
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])
